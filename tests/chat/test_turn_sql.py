"""chat.turn_sql: the turn's one read and one write on PostgreSQL, held to the ORM write.

The ORM write (`services._write_turn_orm`, what SQLite runs) is the reference:
the same turns written both ways must leave the same rows, the same ledger and
the same response. Then the single statement under concurrency, and its
prepared, generic plans.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import DataError, connection, connections
from django.test.utils import CaptureQueriesContext

from billing.models import CreditTransaction, CreditWallet
from chat import services, turn_sql
from chat.models import LLMCallEvent, Message, ToolCallEvent, Turn, UploadedFile
from tests.chat.helpers import upload
from tests.factories import RoomFactory, UserFactory
from tests.reliability.audit import assert_books_balance

ROOT = Path(__file__).resolve().parents[2]

# (agents of the room, the turns posted in it, in order: (content, model_alias, attach a file))
SCENARIOS = {
    "one agent, three turns of history": (
        ["gpt-4o"],
        [("Hello there", None, False), ("And then?", None, False), ("Summarise it", None, False)],
    ),
    "three agents and the manager": (
        ["gpt-4o", "claude-haiku", "deepseek"],
        [("What do you all think of tea?", None, False), ("@deepseek only you", None, False)],
    ),
    "an explicit agent, a file and a tool call": (
        ["gpt-4o", "deepseek"],
        [("Read my notes please", "deepseek", True), ("Thanks, and you?", "gpt-4o", False)],
    ),
}


def _write(path: str, monkeypatch, agents: list[str], turns: list[tuple]) -> tuple[list[dict], dict]:
    """Post the turns as a new user with `path`; return the responses and everything written."""
    monkeypatch.setattr(services, "SINGLE_STATEMENT_WRITE", path == "one statement")
    user = UserFactory()
    room = RoomFactory(owner=user, agents=agents)
    payloads = []
    for content, alias, attach in turns:
        files = [upload(user, "notes.txt", b"launch on monday").pk] if attach else []
        payloads.append(
            services.turn_post(
                user=user, room_id=room.pk, content=content, model_alias=alias, file_ids=files
            ).payload
        )
    return payloads, _rows(user)


def _rows(user) -> dict:
    """Every column of every row a user's turns wrote, ids and times replaced by positions.

    All concrete fields, not a list: a column added to these tables that the
    statement does not write shows up here as a difference.
    """
    turns = list(Turn.objects.filter(user=user).order_by("id"))
    turn_no = {turn.pk: n for n, turn in enumerate(turns)}
    events = list(LLMCallEvent.objects.filter(user=user).order_by("id"))
    event_no = {event.pk: n for n, event in enumerate(events)}
    wallet = CreditWallet.objects.get(user=user)
    owner = {"user_id": "the user", "room_id": "the room"}
    return {
        "turns": [{**_columns(t, **owner), "files": t.files.count()} for t in turns],
        "messages": [
            _columns(m, turn_id=turn_no[m.turn_id])
            for m in Message.objects.filter(turn__user=user).order_by("turn_id", "position")
        ],
        "usage": [_columns(e, **owner, turn_id=turn_no[e.turn_id]) for e in events],
        "tool_calls": [
            _columns(t, **owner, turn_id=turn_no[t.turn_id], arguments=_uploads_named(t.arguments))
            for t in ToolCallEvent.objects.filter(user=user).order_by("id")
        ],
        "ledger": [
            _columns(
                row,
                wallet_id="the wallet",
                usage_event_id=None if row.usage_event_id is None else event_no[row.usage_event_id],
                description=_numbered(row.description, turn_no),
                # The beta grant's key names the user.
                idempotency_key=(row.idempotency_key or "").replace(str(user.pk), "<user>") or None,
            )
            for row in CreditTransaction.objects.filter(wallet=wallet).order_by("id")
        ],
        "wallet": _columns(wallet, user_id="the user"),
    }


def _columns(row, **replaced) -> dict:
    """A row's columns but its id and times (they differ between any two writes), with `replaced`."""
    skipped = {"id", "created_at", "updated_at", "latency_ms"}
    fields = [f for f in row._meta.concrete_fields if f.attname not in skipped]
    values = {f.attname: getattr(row, f.attname) for f in fields}
    assert set(replaced) <= set(values) | {"files"}, set(replaced) - set(values)
    return {**values, **replaced}


def _uploads_named(arguments: dict) -> dict:
    """Tool arguments with an upload's id replaced by its name (each user has their own upload)."""
    if "file_id" not in arguments:
        return arguments
    return {**arguments, "file_id": UploadedFile.objects.get(pk=arguments["file_id"]).name}


def _numbered(description: str, turn_no: dict[int, int]) -> str:
    """'gpt-4o · turn 812' → 'gpt-4o · turn #0' (the turn's position, not its id)."""
    head, sep, turn_id = description.rpartition(" · turn ")
    return f"{head}{sep}#{turn_no[int(turn_id)]}" if sep else description


def _comparable(payload: dict) -> dict:
    """A turn response without what differs between two users (ids, times, latency)."""
    return {
        **{key: value for key, value in payload.items() if key not in {"id", "room", "created_at", "files"}},
        "files": len(payload["files"]),
        "usage": [{k: v for k, v in u.items() if k not in {"id", "latency_ms"}} for u in payload["usage"]],
        "tool_calls": [
            {**{k: v for k, v in t.items() if k != "latency_ms"}, "arguments": _uploads_named(t["arguments"])}
            for t in payload["tool_calls"]
        ],
    }


@pytest.mark.django_db
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_single_statement_writes_exactly_what_the_orm_writes(scenario, monkeypatch):
    agents, turns = SCENARIOS[scenario]

    orm_payloads, orm_rows = _write("orm", monkeypatch, agents, turns)
    sql_payloads, sql_rows = _write("one statement", monkeypatch, agents, turns)

    assert sql_rows == orm_rows
    assert [_comparable(p) for p in sql_payloads] == [_comparable(p) for p in orm_payloads]
    # The scenario really covers what it says: debits, history, and (where asked) tools and files.
    assert len(sql_rows["ledger"]) > len(turns)
    if any(attach for *_, attach in turns):
        assert sql_rows["tool_calls"] and sql_rows["turns"][0]["files"] == 1
    # The response names the rows that were written.
    for payload in sql_payloads:
        turn = Turn.objects.get(pk=payload["id"])
        assert [u["id"] for u in payload["usage"]] == list(
            turn.llm_calls.order_by("id").values_list("id", flat=True)
        )
        assert (
            Decimal(payload["balance"])
            == CreditTransaction.objects.filter(usage_event__turn=turn).order_by("id").last().balance_after
        )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_turn_costs_two_statements_of_its_own(monkeypatch):
    # Transactional: as in production, no transaction is open around the turn (autocommit).
    monkeypatch.setattr(services, "SINGLE_STATEMENT_WRITE", True)
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek", "claude-haiku"])
    services.turn_post(user=user, room_id=room.pk, content="warm up")

    with CaptureQueriesContext(connection) as captured:
        payload = services.turn_post(user=user, room_id=room.pk, content="How many statements?").payload

    # The read (room, wallet, history) and the write (turn, messages, 4 usage rows, 3 debits).
    assert len(captured) == 2, [q["sql"][:80] for q in captured]
    assert len(payload["usage"]) == 4


@pytest.mark.django_db
def test_a_turn_that_cannot_be_charged_writes_nothing(monkeypatch):
    """Defence in depth: a wallet id that matches no row fails the statement, it is not a free turn."""
    monkeypatch.setattr(services, "SINGLE_STATEMENT_WRITE", True)
    user = UserFactory()
    room = RoomFactory(owner=user)
    real_write = turn_sql.write_turn

    def write_to_a_missing_wallet(**kwargs):
        return real_write(**{**kwargs, "wallet_id": 10**12})

    monkeypatch.setattr(turn_sql, "write_turn", write_to_a_missing_wallet)
    before = (Turn.objects.count(), LLMCallEvent.objects.count(), CreditTransaction.objects.count())

    with pytest.raises(DataError, match="no wallet 1000000000000 to charge this turn to"):
        services.turn_post(user=user, room_id=room.pk, content="charge me")

    assert (Turn.objects.count(), LLMCallEvent.objects.count(), CreditTransaction.objects.count()) == before


@pytest.mark.django_db
def test_a_room_that_is_not_yours_reads_as_none():
    owner, stranger = UserFactory(), UserFactory()
    room = RoomFactory(owner=owner)

    assert turn_sql.turn_context(user_id=stranger.pk, room_id=room.pk, turns=10) is None
    context = turn_sql.turn_context(user_id=owner.pk, room_id=room.pk, turns=10)
    assert context is not None and context.history == [] and context.room.agents == ["gpt-4o"]
    assert context.wallet_id == owner.wallet.pk and context.balance == owner.wallet.balance


@pytest.mark.django_db
def test_the_read_brings_the_last_turns_oldest_first():
    user = UserFactory()
    room = RoomFactory(owner=user)
    for n in range(5):
        services.turn_post(user=user, room_id=room.pk, content=f"question {n}")

    context = turn_sql.turn_context(user_id=user.pk, room_id=room.pk, turns=2)

    assert [(role, content[:10]) for role, _, content in context.history] == [
        ("user", "question 3"),
        ("assistant", "gpt-4o (of"),
        ("user", "question 4"),
        ("assistant", "gpt-4o (of"),
    ]
    assert turn_sql.turn_context(user_id=user.pk, room_id=room.pk, turns=0).history == []


# --- concurrency ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_turns_on_one_wallet_are_each_charged_once(write_path):
    """8 threads, each on its own connection, post 5 turns each to rooms of one user."""
    user = UserFactory()
    rooms = [RoomFactory(owner=user, agents=["gpt-4o", "deepseek"]) for _ in range(8)]
    start = CreditWallet.objects.get(user=user).balance
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(rooms))

    def post(room) -> None:
        try:
            barrier.wait()
            for n in range(5):
                services.turn_post(user=user, room_id=room.pk, content=f"turn {n} in room {room.pk}")
        except BaseException as exc:  # reported below, with the thread's own traceback
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(room,)) for room in rooms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert Turn.objects.filter(user=user).count() == 40
    burned = sum(LLMCallEvent.objects.filter(user=user).values_list("credits_burned", flat=True), Decimal(0))
    assert CreditWallet.objects.get(user=user).balance == start - burned
    assert CreditTransaction.objects.filter(wallet__user=user, kind="debit").count() == 80
    assert_books_balance()  # every turn whole, one debit per call, an unbroken ledger chain


# --- prepared statements --------------------------------------------------------------


def _prepared() -> dict[str, tuple[int, int]]:
    """Our statements prepared on this connection: first words → (generic plans, custom plans)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        rows = cursor.fetchall()
    ours = {" ".join(sql.split()[:3]) for sql in (turn_sql._WRITE_SQL, turn_sql._CONTEXT_SQL)}
    return {
        " ".join(statement.split()[:3]): (generic, custom)
        for statement, generic, custom in rows
        if " ".join(statement.split()[:3]) in ours
    }


@pytest.mark.django_db
def test_the_turns_statements_are_prepared_once_with_generic_plans(settings):
    settings.CHAT_HISTORY_TURNS = 10
    user = UserFactory()
    room = RoomFactory(owner=user)
    for n in range(4):
        services.turn_post(user=user, room_id=room.pk, content=f"question {n}")

    prepared = _prepared()

    # Planned once per connection, for any room: no custom plan, so no planning per turn.
    assert prepared == {"SELECT r.agents, w.id,": (4, 0), "WITH turn AS": (4, 0)}


@pytest.mark.django_db
def test_without_prepared_statements_the_turn_still_works(monkeypatch):
    """DATABASE_PREPARED_STATEMENTS=false (for a pooler that cannot keep them) leaves psycopg's
    threshold unset: the same statements run unprepared."""
    connection.ensure_connection()
    monkeypatch.setattr(connection.connection, "prepare_threshold", None)
    user = UserFactory()
    room = RoomFactory(owner=user)

    payload = services.turn_post(user=user, room_id=room.pk, content="no prepared statements").payload

    assert Turn.objects.filter(pk=payload["id"]).exists()
    assert _prepared() == {}


@pytest.mark.parametrize(("flag", "prepared"), [(None, True), ("true", True), ("false", False)])
def test_the_prepared_statements_setting(flag, prepared):
    env = {
        **{name: value for name, value in os.environ.items() if name != "DATABASE_PREPARED_STATEMENTS"},
        # An `options` of the operator's own is kept.
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/pantheon?options=-c%20statement_timeout%3D0",
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
    }
    if flag is not None:
        env["DATABASE_PREPARED_STATEMENTS"] = flag
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "o = settings.DATABASES['default']['OPTIONS']; "
        "print(o.get('prepare_threshold'), '|', o.get('options'))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()

    if prepared:
        assert shown == "5 | -c statement_timeout=0 -c plan_cache_mode=force_generic_plan"
    else:
        assert shown == "None | -c statement_timeout=0"
