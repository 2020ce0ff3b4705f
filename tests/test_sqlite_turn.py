"""The SQLite build (`make run` without DATABASE_URL), end to end, in subprocesses.

The suite itself runs on PostgreSQL, where the turn is written by one SQL
statement (chat/turn_sql.py `write_turn`). On SQLite the turn is written
through the ORM (chat/services.py `_write_turn_orm`) and read by the same
portable `turn_context` statement. Here a fresh process with a clean
environment (no DATABASE_URL of the suite's, no provider keys, no Redis,
DEBUG=true) migrates a SQLite file under tmp_path, then a second process
(tests/support/sqlite_turn.py) signs up through the API, creates a two-agent
room, posts two turns (the second with an Idempotency-Key), replays the
second, and prints every answer as JSON. The tests below judge that summary
and then read the SQLite file itself.

Nothing is skipped: a failed migrate or a crashed script fails the module.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from billing.models import CreditTransaction, CreditWallet
from chat.llm.tokens import count_tokens
from chat.models import LLMCallEvent, Turn
from tests.support import sqlite_turn

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MONEY = re.compile(r"-?\d+\.\d{4}")
GRANT = Decimal("500.0000")
# Only what a shell needs from the pytest process; everything the app reads is set below.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT")


def sqlite_env(tmp: Path) -> dict[str, str]:
    """A newcomer's environment on SQLite; empty values also shadow a developer's `.env`."""
    environment = {name: os.environ[name] for name in INHERITED if name in os.environ}
    environment.update(
        {
            "DJANGO_SETTINGS_MODULE": "pantheon.settings",
            # settings default to BASE_DIR/db.sqlite3; django-environ reads four slashes as an
            # absolute path, so the file lives under tmp_path and the checkout is left alone.
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "DEBUG": "true",
            "SECRET_KEY": "sqlite-turn-test-secret-key-not-for-production-0123456789",
            "REDIS_URL": "",
            "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "",
            "ANTHROPIC_API_KEY": "",
            "GOOGLE_API_KEY": "",
            "DEEPSEEK_API_KEY": "",
            "TAVILY_API_KEY": "",
            "AWS_STORAGE_BUCKET_NAME": "",
            "MEDIA_ROOT": str(tmp / "media"),
            "BETA_GRANT_CREDITS": "500",
            "CREDITS_PER_1K_TOKENS": "1",
            "CREDIT_ENFORCEMENT": "observe",
            "ALLOW_SIGNUP": "true",
            "CHAT_MANAGER_ALIAS": "default",
            "CHAT_HISTORY_TURNS": "10",
            # The app's own defaults (the database cache counts them on SQLite).
            "THROTTLE_SIGNUP_RATE": "10/hour",
            "THROTTLE_TOKEN_RATE": "20/minute",
            "THROTTLE_TURN_RATE": "30/minute",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return environment


def run(args: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory) -> tuple[Path, dict]:
    """(the SQLite file, the script's summary) of one migrate and one scripted session."""
    tmp = tmp_path_factory.mktemp("sqlite_turn")
    environment = sqlite_env(tmp)
    migrate = run(["manage.py", "migrate", "--noinput"], environment)
    assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}"
    session = run(["-m", "tests.support.sqlite_turn"], environment)
    assert session.returncode == 0, f"the SQLite session failed:\n{session.stdout}\n{session.stderr}"
    try:
        summary = json.loads(session.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"the SQLite session printed no JSON:\n{session.stdout}\n{session.stderr}")
    return tmp / "db.sqlite3", summary


@pytest.fixture
def summary(sqlite_run) -> dict:
    return sqlite_run[1]


def money(value: object) -> Decimal:
    """A money value from the API: a decimal string with exactly 4 places."""
    assert isinstance(value, str) and MONEY.fullmatch(value), f"not a 4-place decimal string: {value!r}"
    return Decimal(value)


def usage_of(turn: dict, alias: str) -> dict:
    (row,) = [row for row in turn["usage"] if row["model_alias"] == alias and row["purpose"] == "agent"]
    return row


def ledger_rows(page: dict) -> list[dict]:
    """The ledger page's rows in id order (the API lists newest first); it must be one page."""
    assert page["status"] == 200, page
    assert page["body"]["next"] is None, "the ledger does not fit one page"
    return sorted(page["body"]["results"], key=lambda row: row["id"])


def turn_bodies(summary: dict) -> list[dict]:
    return [turn["body"] for turn in summary["turns"]]


def metered_usage(summary: dict) -> list[dict]:
    """Usage rows that must each have one debit, in the order they were charged."""
    return [
        row
        for body in turn_bodies(summary)
        for row in sorted(body["usage"], key=lambda row: row["id"])
        if row["metered"] and money(row["credits_burned"]) > 0
    ]


def test_the_session_ran_on_its_own_sqlite_file(sqlite_run):
    path, summary = sqlite_run
    assert summary["vendor"] == "sqlite"
    assert Path(summary["database"]) == path
    assert path.is_file()
    assert summary["debug"] is True
    assert Decimal(summary["grant"]) == GRANT


def test_signup_room_and_both_turns_are_created(summary):
    assert summary["register"]["status"] == 201, summary["register"]
    assert summary["register"]["body"]["username"] == sqlite_turn.USERNAME
    assert summary["token"] == {"status": 200, "has_token": True}
    assert summary["room"]["status"] == 201, summary["room"]
    assert summary["room"]["body"]["agents"] == sqlite_turn.AGENTS
    for turn, content in zip(summary["turns"], [sqlite_turn.FIRST, sqlite_turn.SECOND], strict=True):
        assert turn["status"] == 201, turn
        assert turn["replayed"] is None
        body = turn["body"]
        assert body["room"] == summary["room"]["body"]["id"]
        assert body["messages"][0] == {"role": "user", "model_alias": "", "content": content}
        # No @mention: the (unmetered) manager routes the turn to both agents.
        assert [m["model_alias"] for m in body["messages"][1:]] == sqlite_turn.AGENTS
        assert all(m["role"] == "assistant" and m["content"] for m in body["messages"][1:])
        purposes = sorted((row["purpose"], row["model_alias"], row["metered"]) for row in body["usage"])
        assert purposes == sorted(
            [("manager", "default", False)] + [("agent", alias, True) for alias in sqlite_turn.AGENTS]
        )
        assert money(body["credits_burned"]) == sum(
            (money(row["credits_burned"]) for row in body["usage"]), Decimal(0)
        )
    first, second = turn_bodies(summary)
    assert second["id"] > first["id"]
    listed = summary["turn_list"]
    assert listed["status"] == 200, listed
    assert [turn["id"] for turn in listed["body"]["results"]] == [second["id"], first["id"]]


def test_the_wallet_is_the_grant_minus_every_turns_usage(summary):
    assert summary["wallet_at_signup"]["status"] == 200
    assert money(summary["wallet_at_signup"]["body"]["balance"]) == GRANT
    burned = sum(
        (money(row["credits_burned"]) for body in turn_bodies(summary) for row in body["usage"]), Decimal(0)
    )
    assert burned > 0
    wallet = summary["wallet"]
    assert wallet["status"] == 200, wallet
    assert money(wallet["body"]["balance"]) == GRANT - burned
    assert money(wallet["body"]["lifetime_granted"]) == GRANT
    assert money(wallet["body"]["lifetime_burned"]) == burned
    # Each turn answers the balance after its own charges.
    first, second = turn_bodies(summary)
    assert money(first["balance"]) == GRANT - money(first["credits_burned"])
    assert money(second["balance"]) == money(wallet["body"]["balance"])


def test_the_ledger_is_the_grant_then_one_debit_per_metered_call_chained_exactly(summary):
    rows = ledger_rows(summary["ledger"])
    grant, *debits = rows
    assert grant["kind"] == "grant"
    assert money(grant["amount"]) == GRANT
    assert money(grant["balance_after"]) == GRANT
    assert grant["usage_event"] is None
    charged = metered_usage(summary)
    assert len(charged) == 2 * len(sqlite_turn.AGENTS)
    assert [row["kind"] for row in debits] == ["debit"] * len(charged)
    assert [row["usage_event"] for row in debits] == [row["id"] for row in charged]
    assert [money(row["amount"]) for row in debits] == [-money(row["credits_burned"]) for row in charged]
    for previous, row in itertools.pairwise(rows):
        assert money(row["balance_after"]) == money(previous["balance_after"]) + money(row["amount"]), row
    assert money(rows[-1]["balance_after"]) == money(summary["wallet"]["body"]["balance"])


def test_the_second_turns_agents_read_the_first_turn_as_history(summary):
    first, second = turn_bodies(summary)
    # The manager routes without history and both prompts have the same number of tokens, so the
    # routing call is the control: the same size in both turns.
    assert count_tokens(sqlite_turn.FIRST) == count_tokens(sqlite_turn.SECOND)
    manager = [
        next(row for row in body["usage"] if row["purpose"] == "manager")["input_tokens"]
        for body in (first, second)
    ]
    assert manager[0] == manager[1]
    # Each agent of turn 2 also read turn 1's messages (the question and both answers).
    history_tokens = sum(count_tokens(message["content"]) for message in first["messages"])
    for alias in sqlite_turn.AGENTS:
        before, after = usage_of(first, alias)["input_tokens"], usage_of(second, alias)["input_tokens"]
        assert after - before >= history_tokens, (alias, before, after, history_tokens)


def test_the_replay_returns_the_same_turn_and_charges_nothing(summary):
    replay, second = summary["replay"], summary["turns"][1]
    assert replay["status"] == 201, replay
    assert replay["replayed"] == "true"
    assert replay["body"] == second["body"]
    assert replay["body"]["id"] == second["body"]["id"]
    assert ledger_rows(summary["ledger"]) == ledger_rows(summary["ledger_before_replay"])
    assert summary["wallet"]["body"] == summary["wallet_before_replay"]["body"]
    assert len(summary["turn_list"]["body"]["results"]) == 2


def test_the_sqlite_file_holds_what_the_api_answered(sqlite_run):
    path, summary = sqlite_run
    db = sqlite3.connect(path)

    def count(model) -> int:
        return db.execute(f"SELECT COUNT(*) FROM {model._meta.db_table}").fetchone()[0]

    try:
        assert count(Turn) == 2
        assert count(LLMCallEvent) == sum(len(body["usage"]) for body in turn_bodies(summary))
        assert count(CreditTransaction) == len(ledger_rows(summary["ledger"]))
        (balance,) = db.execute(f"SELECT balance FROM {CreditWallet._meta.db_table}").fetchone()
    finally:
        db.close()
    # SQLite keeps decimals with NUMERIC affinity (a REAL here); compare at the ledger's 4 places.
    assert Decimal(str(balance)).quantize(Decimal("0.0001")) == money(summary["wallet"]["body"]["balance"])
