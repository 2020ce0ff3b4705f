"""`manage.py smoke_check` against a live deployment: gunicorn serving the test database.

The passing run is a real `python manage.py smoke_check` subprocess (its exit
code is what a deploy pipeline sees); the failing runs use `call_command`
where only the step that failed matters, plus one subprocess for the exit code.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing.models import CreditWallet, UsageEvent
from chat.models import Room, Turn
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.reliability.audit import assert_books_balance
from tests.support.gunicorn_server import HEALTHZ_TOKEN, PROJECT_ROOT, database_url, gunicorn_server

pytestmark = pytest.mark.gunicorn
transactional = pytest.mark.django_db(transaction=True, serialized_rollback=True)
OFFLINE = {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "", "GOOGLE_API_KEY": "", "DEEPSEEK_API_KEY": ""}
PASSING_STEPS = [
    "health",
    "migrations",
    "register",
    "auth",
    "wallet before",
    "room",
    "turn",
    "wallet delta",
    "usage",
    "idempotency",
    "logout",
]


def manage_py(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url(), "HEALTHZ_TOKEN": HEALTHZ_TOKEN, **OFFLINE}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def smoke(base_url: str, username: str, password: str, *extra: str) -> tuple[str, str]:
    """call_command; returns (stdout, stderr) or raises CommandError with both attached."""
    out, err = io.StringIO(), io.StringIO()
    args = ["--base-url", base_url, "--username", username, "--password", password]
    args += ["--healthz-token", HEALTHZ_TOKEN, *extra]
    try:
        call_command("smoke_check", *args, stdout=out, stderr=err)
    except CommandError as exc:
        exc.out, exc.err = out.getvalue(), err.getvalue()
        raise
    return out.getvalue(), err.getvalue()


def steps(stdout: str) -> list[str]:
    return [line[5:].split(":", 1)[0] for line in stdout.splitlines() if line.startswith("ok   ")]


@transactional
def test_smoke_check_passes_against_a_live_server_and_its_turn_is_really_charged():
    with gunicorn_server(workers=2, env=OFFLINE) as server:
        first = manage_py(
            "smoke_check",
            "--base-url",
            server.base_url,
            "--username",
            "smoke-user",
            "--password",
            DEFAULT_PASSWORD,
            "--register",
        )
        assert first.returncode == 0, first.stdout + first.stderr
        assert steps(first.stdout) == PASSING_STEPS, first.stdout
        assert first.stdout.rstrip().endswith("smoke check passed")
        assert "register: created" in first.stdout

        # A second run (the user exists now) reuses the check room and charges one more turn.
        out, _ = smoke(server.base_url, "smoke-user", DEFAULT_PASSWORD, "--register")
        assert "register: user exists" in out and "(reused)" in out, out

    turns = Turn.objects.filter(user__username="smoke-user")
    assert turns.count() == 2
    assert Room.objects.filter(owner__username="smoke-user").count() == 1
    wallet = CreditWallet.objects.get(user__username="smoke-user")
    burned = sum((turn.credits_burned for turn in turns), Decimal(0))
    assert burned > 0
    assert wallet.balance == Decimal(500) - burned
    assert UsageEvent.objects.filter(turn__in=turns).count() == 2
    assert_books_balance()
    # Both runs logged out: no token is left alive.
    assert not wallet.user.auth_token_set.exists()


@transactional
def test_smoke_check_stops_at_the_first_failing_step_and_exits_non_zero():
    user = UserFactory()
    with gunicorn_server(workers=1, env=OFFLINE) as server:
        # Wrong password: health and migrations pass, auth fails, nothing after it runs.
        wrong = manage_py(
            "smoke_check", "--base-url", server.base_url, "--username", user.username, "--password", "nope"
        )
        assert wrong.returncode == 1, wrong.stdout + wrong.stderr
        assert steps(wrong.stdout) == ["health", "migrations"], wrong.stdout
        assert "FAIL auth: HTTP 401" in wrong.stderr, wrong.stderr
        assert "smoke check failed at step 'auth'" in wrong.stderr

        # An agent the deployment does not offer: fails at the room, before any turn.
        with pytest.raises(CommandError) as failed:
            smoke(server.base_url, user.username, DEFAULT_PASSWORD, "--agent", "no-such-model")
        assert steps(failed.value.out) == ["health", "migrations", "auth", "wallet before"]
        assert "FAIL room: HTTP 400" in failed.value.err

        # A pending migration: /healthz/detail says which one and the check stops there.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, app, name, applied FROM django_migrations "
                "WHERE app = 'chat' ORDER BY id DESC LIMIT 1"
            )
            row = cursor.fetchone()
            cursor.execute("DELETE FROM django_migrations WHERE id = %s", [row[0]])
        try:
            with pytest.raises(CommandError) as failed:
                smoke(server.base_url, user.username, DEFAULT_PASSWORD)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO django_migrations (id, app, name, applied) VALUES (%s, %s, %s, %s)", row
                )
        assert steps(failed.value.out) == ["health"]
        assert f"FAIL migrations: pending migrations: chat.{row[2]}" in failed.value.err

    # Nothing reachable there: the first step fails, saying so.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(CommandError) as failed:
        smoke(f"http://127.0.0.1:{closed_port}", user.username, DEFAULT_PASSWORD, "--timeout", "5")
    assert steps(failed.value.out) == []
    assert "FAIL health: GET /healthz: cannot reach" in failed.value.err
    # None of the failed runs wrote a turn or charged anything.
    assert not Turn.objects.exists()
    assert_books_balance()
