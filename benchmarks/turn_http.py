"""Turns over HTTP against the floor of the same app: a bare authenticated DRF read.

gunicorn runs the real app (`pantheon.wsgi`, 4 sync workers, PostgreSQL,
offline models) on 127.0.0.1. A closed-loop load generator (Python threads,
one `http.client` connection each, bearer tokens) posts turns to single-agent
rooms — one room per simulated user, so no single wallet row is the only
bottleneck — and, in alternating windows of the same length, sends the same
load to `GET /api/v1/users/me/wallet` (authentication, one wallet read, JSON).
Both share whatever the machine is doing; the figure is turns/s ÷ wallet reads/s.

    .venv/bin/python benchmarks/turn_http.py [--clients 8] [--window 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from _support import (
    all_processes,
    analyze,
    database_url,
    percentile,
    process_stat,
    row,
    server_env,
    setup_django,
)

WORKERS = 4
CLIENTS = 8
USERS = 16
WINDOW_SECONDS = 4.0
ROUNDS = 5
WARMUP_SECONDS = 2.0
# A floor against regressions, not a target: with real providers a turn is seconds of model latency
# (benchmarks/real_latency.py); this measures the app's CPU per turn against its cheapest read.
GOAL_RATIO = 0.4
# Enforce mode (a credit hold per turn) against observe mode, same load, same machine.
GOAL_ENFORCE_RATIO = 0.8
TURN_BODY = json.dumps({"content": "Summarise the plan for the launch in three short points."}).encode()


@dataclass(frozen=True)
class Identity:
    token: str
    room_id: int


@dataclass
class Window:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # CPU seconds spent during the window by the gunicorn workers and by their PostgreSQL backends.
    worker_cpu: float = 0.0
    database_cpu: float = 0.0


def _cpu_seconds(pid: int) -> float:
    """user + system CPU of a process so far (0 when it is gone)."""
    found = process_stat(pid)
    return found.cpu_seconds if found is not None else 0.0


def _children(pid: int) -> list[int]:
    return [process.pid for process in all_processes() if process.parent == pid]


def _backends(since) -> list[int]:
    """PostgreSQL backends of this database opened since the server started (the workers' pools)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_start >= %s AND application_name NOT LIKE 'pantheon-pricing-listener%%'",
            [since],
        )
        return [pid for (pid,) in cursor.fetchall()]


def _identities(count: int, *, credits: int = 0) -> list[Identity]:
    """`count` users, each with a wallet (plus `credits`), a bearer token and a single-agent room."""
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    from billing.services import wallet_get_or_create, wallet_grant
    from chat.models import Room

    tag = uuid.uuid4().hex[:8]
    made = []
    for n in range(count):
        user = get_user_model().objects.create(username=f"bench-http-{tag}-{n}")
        wallet = wallet_get_or_create(user=user)
        if credits:
            wallet_grant(wallet_id=wallet.pk, amount=credits, description="benchmark")
        _, token = AuthToken.objects.create(user=user)
        room = Room.objects.create(owner=user, title="bench", agents=["gpt-4o"])
        made.append(Identity(token=token, room_id=room.pk))
    return made


def _request(kind: str, identity: Identity) -> tuple[str, str, bytes | None, dict, int]:
    headers = {"Authorization": f"Bearer {identity.token}", "Accept": "application/json"}
    if kind == "turn":
        headers["Content-Type"] = "application/json"
        return "POST", f"/api/v1/rooms/{identity.room_id}/turns/", TURN_BODY, headers, 201
    return "GET", "/api/v1/users/me/wallet", None, headers, 200


def _load(port: int, kind: str, identities: list[Identity], clients: int, seconds: float) -> Window:
    """`clients` threads, each sending requests back to back for `seconds`."""
    window = Window()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        method, path, body, headers, expected = _request(kind, identities[number % len(identities)])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        errors: list[str] = []
        start.wait()
        stop_at = time.perf_counter() + seconds
        try:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                try:
                    connection.request(method, path, body=body, headers=headers)
                    response = connection.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(repr(exc))
                    connection.close()
                    continue
                elapsed = (time.perf_counter() - began) * 1000
                if response.status == expected:
                    mine.append(elapsed)
                else:
                    errors.append(f"{response.status} {payload[:200]!r}")
        finally:
            connection.close()
            with lock:
                window.latencies_ms.extend(mine)
                window.errors.extend(errors)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    window.seconds = time.perf_counter() - began
    return window


def _merge(windows: list[Window]) -> Window:
    merged = Window()
    for window in windows:
        merged.latencies_ms.extend(window.latencies_ms)
        merged.errors.extend(window.errors)
        merged.seconds += window.seconds
        merged.worker_cpu += window.worker_cpu
        merged.database_cpu += window.database_cpu
    return merged


def measure(*, clients: int = CLIENTS, window: float = WINDOW_SECONDS, rounds: int = ROUNDS) -> dict:
    from tests.support.gunicorn_server import gunicorn_server

    url = database_url()
    identities = _identities(USERS)
    enforce_identities = _identities(USERS, credits=100_000)
    runs: dict[str, list[Window]] = {"wallet": [], "turn": [], "turn_enforce": []}
    started_at = datetime.now(UTC)
    enforce_env = {**server_env(url), "CREDIT_ENFORCEMENT": "enforce"}
    with (
        gunicorn_server(workers=WORKERS, env=server_env(url)) as server,
        gunicorn_server(workers=WORKERS, env=enforce_env) as enforcing,
    ):
        server.wait_for_workers(WORKERS)
        enforcing.wait_for_workers(WORKERS)
        targets = {
            "wallet": (server, identities),
            "turn": (server, identities),
            "turn_enforce": (enforcing, enforce_identities),
        }
        for kind, (target, who) in targets.items():  # first requests: imports, connections, prices
            _load(target.port, kind.removesuffix("_enforce"), who, clients, WARMUP_SECONDS)
        analyze()
        workers, backends = _children(server.process.pid), _backends(started_at)
        kinds = list(runs)
        for number in range(rounds):
            # Rotate which goes first, so a drift in the machine's load hits each alike.
            order = kinds[number % len(kinds) :] + kinds[: number % len(kinds)]
            for kind in order:
                target, who = targets[kind]
                watched = _children(target.process.pid)
                worker_cpu = sum(map(_cpu_seconds, watched))
                database_cpu = sum(map(_cpu_seconds, backends))
                result = _load(target.port, kind.removesuffix("_enforce"), who, clients, window)
                result.worker_cpu = sum(map(_cpu_seconds, watched)) - worker_cpu
                result.database_cpu = sum(map(_cpu_seconds, backends)) - database_cpu
                runs[kind].append(result)
        del workers
        log = server.log() + enforcing.log()
    merged = {kind: _merge(windows) for kind, windows in runs.items()}
    for kind, result in merged.items():
        if result.errors:
            failed = f"{kind}: {len(result.errors)} failed requests, e.g. {result.errors[:3]}"
            raise RuntimeError(f"{failed}\n{log}")
    return merged


def run(*, clients: int = CLIENTS, window: float = WINDOW_SECONDS, rounds: int = ROUNDS) -> list[dict]:
    setup_django(database_url())
    merged = measure(clients=clients, window=window, rounds=rounds)
    turn, wallet = merged["turn"], merged["wallet"]
    turn_rps = len(turn.latencies_ms) / turn.seconds
    wallet_rps = len(wallet.latencies_ms) / wallet.seconds
    load = f"{WORKERS} workers, {clients} clients, {rounds}×{window:g}s each"
    cpu = "; CPU ms per request (gunicorn workers + PostgreSQL): " + ", ".join(
        f"{name} {result.worker_cpu / len(result.latencies_ms) * 1000:.2f} + "
        f"{result.database_cpu / len(result.latencies_ms) * 1000:.2f}"
        for name, result in (("turn", turn), ("wallet", wallet))
    )
    results = [
        row(
            measure="turn over HTTP: throughput vs GET wallet",
            figure=round(turn_rps, 1),
            baseline=round(wallet_rps, 1),
            unit="req/s",
            ratio=turn_rps / wallet_rps,
            goal=f"≥ {GOAL_RATIO} (floor)",
            ok=turn_rps / wallet_rps >= GOAL_RATIO,
            note=f"{load}; {len(turn.latencies_ms)} turns, {len(wallet.latencies_ms)} reads, 0 errors{cpu}",
        )
    ]
    enforce = merged["turn_enforce"]
    enforce_rps = len(enforce.latencies_ms) / enforce.seconds
    results.append(
        row(
            measure="turn over HTTP: enforce mode (holds) vs observe",
            figure=round(enforce_rps, 1),
            baseline=round(turn_rps, 1),
            unit="req/s",
            ratio=enforce_rps / turn_rps,
            goal=f"≥ {GOAL_ENFORCE_RATIO}",
            ok=enforce_rps / turn_rps >= GOAL_ENFORCE_RATIO,
            note=f"{len(enforce.latencies_ms)} enforce-mode turns, each placing and settling a hold",
        )
    )
    for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        turn_ms = percentile(turn.latencies_ms, fraction)
        wallet_ms = percentile(wallet.latencies_ms, fraction)
        results.append(
            row(
                measure=f"turn over HTTP: {name} latency vs GET wallet",
                figure=round(turn_ms, 1),
                baseline=round(wallet_ms, 1),
                unit="ms",
                ratio=turn_ms / wallet_ms,
                goal="report",
                ok=None,
            )
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent client connections")
    parser.add_argument("--window", type=float, default=WINDOW_SECONDS, help="seconds per measured window")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="windows per endpoint (alternating)")
    args = parser.parse_args()
    results = run(clients=args.clients, window=args.window, rounds=args.rounds)
    for result in results:
        print(
            f"{result['measure']:<44} {result['figure']:>8} vs {result['baseline']:>8} {result['unit']:<6}"
            f" ratio {result['ratio']:.3f}  {result['note']}"
        )
    return 0 if all(result["pass"] is not False for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
