"""Run the real app under gunicorn — several OS processes — against the pytest database
(under pytest-xdist, the worker's own: test_<name>_gw0, test_<name>_gw1, …).

Use it from a transactional test (`@pytest.mark.django_db(transaction=True,
serialized_rollback=True)`), so what the test writes is committed and visible
to the workers, and the seed data comes back for the next test:

    with gunicorn_server(workers=4, env={"PRICING_VERSION_CHECK_SECONDS": "60"}) as server:
        workers = server.wait_for_workers(4, lambda health: health["pricing_listener"]["connected"])
        status, body = server.request("GET", "/api/v1/users/me/wallet", headers=auth)

The server binds 127.0.0.1 port 0 (gunicorn reports the port it got), logs to a
temporary file (`server.log()`, included in every helper's failure message) and
is stopped with SIGTERM (then SIGKILL) when the block ends.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.support import markers

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Every test server gets it: `/healthz/detail` (process ids, pricing cache) answers only to this bearer.
HEALTHZ_TOKEN = "test-healthz-token-0123456789"
HEALTHZ_DETAIL = "/healthz/detail"
DETAIL_HEADERS = {"Authorization": f"Bearer {HEALTHZ_TOKEN}"}
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


def database_url(settings_dict: dict | None = None) -> str:
    """A DATABASE_URL for the database pytest is using now (the test database)."""
    if settings_dict is None:
        from django.db import connection

        settings_dict = connection.settings_dict
    user = quote(settings_dict.get("USER") or "postgres")
    password = settings_dict.get("PASSWORD")
    auth = f"{user}:{quote(password)}" if password else user
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{settings_dict['NAME']}"


@dataclass
class GunicornServer:
    host: str
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        headers: dict | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, object]:
        """One HTTP request (no proxy, a fresh connection); JSON bodies are decoded."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            payload = None
            send_headers = {"Accept": "application/json", **(headers or {})}
            if body is not None:
                payload = json.dumps(body).encode()
                send_headers.setdefault("Content-Type", "application/json")
            connection.request(method, path, body=payload, headers=send_headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        if "json" in (response.getheader("Content-Type") or ""):
            return response.status, json.loads(raw)
        return response.status, raw.decode(errors="replace")

    def healthz(self) -> dict:
        """This worker's `/healthz/detail` (the public `/healthz` says only ok/unavailable)."""
        status, body = self.request("GET", HEALTHZ_DETAIL, headers=DETAIL_HEADERS)
        if not isinstance(body, dict):
            raise AssertionError(f"/healthz answered {status} {body!r}\n{self.log()}")
        return body

    def wait_for_workers(
        self,
        count: int,
        predicate: Callable[[dict], bool] = lambda health: True,
        *,
        timeout: float = 15.0,
        concurrency: int = 16,
    ) -> dict[int, dict]:
        """Hit /healthz/detail concurrently until `count` distinct worker pids satisfy `predicate`.

        Returns {pid: the first /healthz/detail body of that worker that satisfied it}.
        Concurrent requests are what make every worker answer: a sync worker
        serves one request at a time, so a burst spreads over all of them.
        """
        satisfied: dict[int, dict] = {}
        seen: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            while time.monotonic() < deadline:
                for health in pool.map(lambda _: self._try_healthz(), range(concurrency)):
                    if health is None:
                        continue
                    pid = health["pricing_cache"]["pid"]
                    seen[pid] = health
                    if pid not in satisfied and predicate(health):
                        satisfied[pid] = health
                if len(satisfied) >= count:
                    return satisfied
                time.sleep(0.01)
        raise AssertionError(
            f"only {len(satisfied)} of {count} workers satisfied the condition within {timeout}s; "
            f"last seen: {json.dumps(seen, indent=1)}\n--- server log ---\n{self.log()}"
        )

    def _try_healthz(self) -> dict | None:
        try:
            status, body = self.request("GET", HEALTHZ_DETAIL, headers=DETAIL_HEADERS, timeout=5.0)
        except OSError:
            return None
        return body if status == 200 and isinstance(body, dict) else None


def _server_env(extra: dict | None) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "test-only-secret-key-for-gunicorn-0123456789",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_HTTPS": "false",
        "PYTHONUNBUFFERED": "1",
        "HEALTHZ_TOKEN": HEALTHZ_TOKEN,
    }
    env.update({key: str(value) for key, value in (extra or {}).items()})
    return env


@contextmanager
def gunicorn_server(
    *,
    workers: int = 4,
    env: dict | None = None,
    extra_args: tuple[str, ...] = (),
    startup_timeout: float = 60.0,
) -> Iterator[GunicornServer]:
    """Start `gunicorn pantheon.wsgi -w N` on a free 127.0.0.1 port; stop it afterwards."""
    markers.require("gunicorn", "gunicorn_server()")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    log_file = tempfile.NamedTemporaryFile(prefix="gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log_file.name)
    command = [
        str(gunicorn),
        "pantheon.wsgi",
        "--workers",
        str(workers),
        "--bind",
        "127.0.0.1:0",
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
        "--log-level",
        "info",
        "--error-logfile",
        "-",
        *extra_args,
    ]
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=_server_env(env),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log_file.close()
    try:
        port = _wait_for_port(process, log_path, startup_timeout)
        server = GunicornServer("127.0.0.1", port, process, log_path)
        _wait_until_healthy(server, startup_timeout)
        yield server
    finally:
        _stop(process)
        with suppress(OSError):
            log_path.unlink()


def _wait_for_port(process: subprocess.Popen, log_path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"gunicorn did not start listening:\n{log_path.read_text(errors='replace')}")


def _wait_until_healthy(server: GunicornServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            last = server.request("GET", "/healthz", timeout=5.0)
            if last[0] == 200:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"gunicorn never became healthy (last: {last!r}):\n{server.log()}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
