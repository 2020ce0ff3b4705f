"""Check a running deployment end to end, the way staging validation was done by hand.

Health and migrations, auth, one metered turn, the wallet delta equal to the
turn's `credits_burned`, and the turn's usage rows in the usage listing. Each
step prints one line; the first failure exits non-zero.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class StepFailed(CommandError):
    pass


class Client:
    def __init__(self, base_url: str, timeout: float):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token: str | None = None

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise StepFailed(f"{method} {path}: cannot reach {self.base_url}: {exc}") from exc
        try:
            payload: Any = json.loads(raw or b"null")
        except ValueError:
            payload = raw[:200].decode(errors="replace")
        return status, payload


class Command(BaseCommand):
    help = "Validate a running Pantheon deployment: health, auth, a metered turn, wallet delta, usage."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--base-url", required=True, help="e.g. https://pantheon.example.com")
        parser.add_argument("--username", required=True)
        parser.add_argument("--password", required=True)
        parser.add_argument("--agent", default="gpt-4o-mini", help="model alias for the check room")
        parser.add_argument("--register", action="store_true", help="create the user first if needed")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")

    def step(self, name: str, detail: str) -> None:
        self.stdout.write(f"ok   {name}: {detail}")

    def fail(self, name: str, detail: str) -> None:
        self.stderr.write(f"FAIL {name}: {detail}")
        raise StepFailed(f"smoke check failed at step '{name}'")

    def expect(self, name: str, status: int, payload: Any, wanted: int) -> None:
        if status != wanted:
            self.fail(name, f"HTTP {status} (wanted {wanted}): {payload}")

    def handle(self, *args, **options) -> None:
        if not options["base_url"].startswith(("http://", "https://")):
            raise CommandError("--base-url must start with http:// or https://")
        client = Client(options["base_url"], options["timeout"])

        status, health = client.request("GET", "/healthz")
        self.expect("health", status, health, 200)
        if health.get("database") != "ok":
            self.fail("health", f"database not ok: {health}")
        self.step("health", "database answers")
        if health.get("migrations") != "ok":
            self.fail("migrations", f"pending migrations: {health.get('pending')}")
        self.step("migrations", "all applied")

        credentials = {"username": options["username"], "password": options["password"]}
        if options["register"]:
            status, payload = client.request("POST", "/api/v1/auth/register", credentials)
            if status not in (201, 400):
                self.fail("register", f"HTTP {status}: {payload}")
            self.step("register", "created" if status == 201 else "user exists")
        status, payload = client.request("POST", "/api/v1/auth/token", credentials)
        self.expect("auth", status, payload, 200)
        client.token = payload["token"]
        self.step("auth", "bearer token issued")

        status, wallet = client.request("GET", "/api/v1/users/me/wallet")
        self.expect("wallet before", status, wallet, 200)
        before = Decimal(wallet["balance"])
        self.step("wallet before", f"balance {before}")

        status, room = client.request(
            "POST", "/api/v1/rooms/", {"title": "smoke check", "agents": [options["agent"]]}
        )
        self.expect("room", status, room, 201)
        self.step("room", f"room {room['id']} with agent {options['agent']}")

        key = f"smoke-{uuid.uuid4()}"
        status, turn = client.request(
            "POST",
            f"/api/v1/rooms/{room['id']}/turns/",
            {"content": "Smoke check: please answer briefly."},
            headers={"Idempotency-Key": key},
        )
        self.expect("turn", status, turn, 201)
        credits = Decimal(turn["credits_burned"])
        usage_sum = sum((Decimal(row["credits_burned"]) for row in turn["usage"]), Decimal(0))
        if usage_sum != credits:
            self.fail("turn", f"usage rows sum to {usage_sum}, turn says {credits}")
        self.step("turn", f"turn {turn['id']} burned {credits} credits over {len(turn['usage'])} call(s)")

        status, wallet = client.request("GET", "/api/v1/users/me/wallet")
        self.expect("wallet after", status, wallet, 200)
        after = Decimal(wallet["balance"])
        if before - after != credits:
            delta = before - after
            self.fail("wallet delta", f"balance {before} → {after} is a delta of {delta}, not {credits}")
        if Decimal(turn["balance"]) != after:
            self.fail("wallet delta", f"turn reported balance {turn['balance']}, wallet says {after}")
        self.step("wallet delta", f"{before} → {after} (−{credits})")

        status, usage = client.request("GET", "/api/v1/users/me/usage?page_size=50")
        self.expect("usage", status, usage, 200)
        rows = [row for row in usage["results"] if row.get("turn") == turn["id"]]
        if len(rows) != len(turn["usage"]):
            wanted = len(turn["usage"])
            self.fail("usage", f"{len(rows)} usage rows listed for turn {turn['id']}, wanted {wanted}")
        self.step("usage", f"{len(rows)} usage row(s) listed for turn {turn['id']}")

        status, replay = client.request(
            "POST",
            f"/api/v1/rooms/{room['id']}/turns/",
            {"content": "Smoke check: please answer briefly."},
            headers={"Idempotency-Key": key},
        )
        if status not in (200, 201) or replay.get("id") != turn["id"]:
            self.fail("idempotency", f"replay answered HTTP {status}: {replay}")
        status, wallet = client.request("GET", "/api/v1/users/me/wallet")
        if Decimal(wallet["balance"]) != after:
            self.fail("idempotency", f"replay changed the balance to {wallet['balance']}")
        self.step("idempotency", "replay returned the same turn and charged nothing")
        self.stdout.write(self.style.SUCCESS("smoke check passed"))
