"""Check a running deployment end to end, the way staging validation was done by hand.

Health and migrations, auth, one metered turn, the wallet delta equal to the
turn's `credits_burned`, the turn's usage rows in the usage listing, and an
idempotent replay that charges nothing. Each step prints one line; the first
failure prints `FAIL <step>: <why>` and exits non-zero. The check user's room
("smoke check") is reused between runs and its token is revoked at the end.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class StepFailed(CommandError):
    pass


class Unreachable(Exception):
    """No HTTP answer at all: refused, timed out, reset."""


CHECK_ROOM_TITLE = "smoke check"


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
        if self.token and not (headers and "Authorization" in headers):
            request.add_header("Authorization", f"Bearer {self.token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise Unreachable(f"{method} {path}: cannot reach {self.base_url}: {exc}") from exc
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
        parser.add_argument(
            "--healthz-token",
            default=settings.HEALTHZ_TOKEN,
            help="bearer for /healthz/detail, which names pending migrations (default: HEALTHZ_TOKEN)",
        )

    def step(self, name: str, detail: str) -> None:
        self.stdout.write(f"ok   {name}: {detail}")

    def fail(self, name: str, detail: str) -> None:
        self.stderr.write(f"FAIL {name}: {detail}")
        raise StepFailed(f"smoke check failed at step '{name}'")

    def call(self, name: str, method: str, path: str, body: dict | None = None, **kwargs):
        """One request of step `name`; no answer at all fails that step."""
        try:
            return self.client.request(method, path, body, **kwargs)
        except Unreachable as exc:
            self.fail(name, str(exc))

    def expect(self, name: str, status: int, payload: Any, wanted: int, *fields: str) -> dict:
        """The step's answer must have status `wanted` and be a JSON object with `fields`."""
        if status != wanted:
            self.fail(name, f"HTTP {status} (wanted {wanted}): {payload}")
        if not isinstance(payload, dict) or any(field not in payload for field in fields):
            self.fail(name, f"HTTP {status} but not the expected JSON ({', '.join(fields)}): {payload}")
        return payload

    def handle(self, *args, **options) -> None:
        if not options["base_url"].startswith(("http://", "https://")):
            raise CommandError("--base-url must start with http:// or https://")
        self.client = Client(options["base_url"], options["timeout"])

        # The public /healthz says only ok (200) or unavailable (503); /healthz/detail says why.
        status, health = self.call("health", "GET", "/healthz")
        if not isinstance(health, dict) or "status" not in health:
            self.fail("health", f"HTTP {status}: {health}")
        if options["healthz_token"]:
            detail_headers = {"Authorization": f"Bearer {options['healthz_token']}"}
            status, health = self.call("health", "GET", "/healthz/detail", headers=detail_headers)
            if not isinstance(health, dict) or health.get("database") != "ok":
                self.fail("health", f"HTTP {status}: {health}")
            self.step("health", "database answers")
            if health.get("migrations") != "ok":
                pending = ", ".join(health.get("pending") or []) or str(health.get("migrations"))
                self.fail("migrations", f"pending migrations: {pending}")
            self.expect("health", status, health, 200)
            self.step("migrations", "all applied")
        else:
            if status != 200:
                self.fail("health", f"HTTP {status}: {health} (pass --healthz-token to see why)")
            self.step("health", "database answers")
            self.step("migrations", "all applied (/healthz answers 200 only then)")

        credentials = {"username": options["username"], "password": options["password"]}
        if options["register"]:
            status, payload = self.call("register", "POST", "/api/v1/auth/register", credentials)
            taken = (
                status == 400
                and isinstance(payload, dict)
                and isinstance(payload.get("detail"), dict)
                and "username" in payload["detail"]
            )
            if status != 201 and not taken:
                self.fail("register", f"HTTP {status}: {payload}")
            self.step("register", "created" if status == 201 else "user exists")
        status, payload = self.call("auth", "POST", "/api/v1/auth/token", credentials)
        self.client.token = self.expect("auth", status, payload, 200, "token")["token"]
        self.step("auth", "bearer token issued")
        try:
            self.check_turn(options["agent"])
        except StepFailed:
            # Leave no live token behind; the step that failed is what gets reported.
            with contextlib.suppress(Unreachable):
                self.client.request("POST", "/api/v1/auth/logout")
            raise
        status, payload = self.call("logout", "POST", "/api/v1/auth/logout")
        if status != 204:
            self.fail("logout", f"HTTP {status} (wanted 204): {payload}")
        self.step("logout", "token revoked")
        self.stdout.write(self.style.SUCCESS("smoke check passed"))

    def check_turn(self, agent: str) -> None:
        status, wallet = self.call("wallet before", "GET", "/api/v1/users/me/wallet")
        before = Decimal(self.expect("wallet before", status, wallet, 200, "balance")["balance"])
        self.step("wallet before", f"balance {before}")

        room = self.check_room(agent)
        key = f"smoke-{uuid.uuid4()}"
        path = f"/api/v1/rooms/{room['id']}/turns/"
        body = {"content": "Smoke check: please answer briefly."}
        status, turn = self.call("turn", "POST", path, body, headers={"Idempotency-Key": key})
        self.expect("turn", status, turn, 201, "id", "usage", "credits_burned", "balance")
        credits = Decimal(turn["credits_burned"])
        usage_sum = sum((Decimal(row["credits_burned"]) for row in turn["usage"]), Decimal(0))
        if usage_sum != credits:
            self.fail("turn", f"usage rows sum to {usage_sum}, turn says {credits}")
        if credits <= 0:
            self.fail("turn", f"turn {turn['id']} burned {credits} credits: metering is not running")
        self.step("turn", f"turn {turn['id']} burned {credits} credits over {len(turn['usage'])} call(s)")

        status, wallet = self.call("wallet after", "GET", "/api/v1/users/me/wallet")
        after = Decimal(self.expect("wallet after", status, wallet, 200, "balance")["balance"])
        if before - after != credits:
            delta = before - after
            self.fail("wallet delta", f"balance {before} → {after} is a delta of {delta}, not {credits}")
        if Decimal(turn["balance"]) != after:
            self.fail("wallet delta", f"turn reported balance {turn['balance']}, wallet says {after}")
        self.step("wallet delta", f"{before} → {after} (−{credits})")

        status, usage = self.call("usage", "GET", "/api/v1/users/me/usage?page_size=50")
        self.expect("usage", status, usage, 200, "results")
        rows = [row for row in usage["results"] if row.get("turn") == turn["id"]]
        if len(rows) != len(turn["usage"]):
            wanted = len(turn["usage"])
            self.fail("usage", f"{len(rows)} usage rows listed for turn {turn['id']}, wanted {wanted}")
        self.step("usage", f"{len(rows)} usage row(s) listed for turn {turn['id']}")

        status, replay = self.call("idempotency", "POST", path, body, headers={"Idempotency-Key": key})
        if status != 201 or not isinstance(replay, dict) or replay.get("id") != turn["id"]:
            self.fail("idempotency", f"replay answered HTTP {status}: {replay}")
        status, wallet = self.call("idempotency", "GET", "/api/v1/users/me/wallet")
        if Decimal(self.expect("idempotency", status, wallet, 200, "balance")["balance"]) != after:
            self.fail("idempotency", f"replay changed the balance to {wallet['balance']}")
        self.step("idempotency", "replay returned the same turn and charged nothing")

    def check_room(self, agent: str) -> dict:
        """The user's check room for `agent`, reused from earlier runs, created the first time."""
        status, rooms = self.call("room", "GET", "/api/v1/rooms/?page_size=100")
        for room in self.expect("room", status, rooms, 200, "results")["results"]:
            if room.get("title") == CHECK_ROOM_TITLE and room.get("agents") == [agent]:
                self.step("room", f"room {room['id']} with agent {agent} (reused)")
                return room
        status, room = self.call(
            "room", "POST", "/api/v1/rooms/", {"title": CHECK_ROOM_TITLE, "agents": [agent]}
        )
        self.expect("room", status, room, 201, "id")
        self.step("room", f"room {room['id']} with agent {agent}")
        return room
