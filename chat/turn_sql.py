"""The turn's two hot statements in SQL: its one read and, on PostgreSQL, its one write.

A turn used to cost nine statements of its own (room, history, BEGIN, four
INSERTs, the wallet UPDATE, COMMIT), each compiled by the ORM; on a busy
2-core machine that compilation, not PostgreSQL, was most of a turn's CPU
(docs/performance.md). Here:

- `turn_context` reads the room, its owner's wallet and the recent history in
  one portable statement (PostgreSQL and SQLite).
- `write_turn` writes the turn, its files, messages, usage and tool events,
  the wallet debit and the ledger rows in one PostgreSQL statement of
  data-modifying CTEs. One statement is one transaction: all of it commits or
  none of it does, the wallet row is locked from its UPDATE to the commit, and
  `balance_after` comes from the UPDATE's RETURNING, as in
  `billing.services.wallet_debit_many`. SQLite has no data-modifying CTEs; it
  keeps the ORM write in `chat.services`, which is also the reference this
  statement is tested against (tests/chat/test_turn_sql.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from django.db import connection
from django.db.backends.utils import CursorDebugWrapper
from django.utils import timezone

from billing.models import CreditTransaction, CreditWallet
from billing.services import credits_from_db
from chat.models import LLMCallEvent, Message, Room, ToolCallEvent, Turn


@dataclass(frozen=True)
class TurnContext:
    room: Room
    wallet_id: int | None
    balance: Decimal | None
    # (role, model_alias, content) of the last turns' messages, oldest first.
    history: list[tuple[str, str, str]]


class _PreparedCursor(psycopg.Cursor):
    """A server-side-binding cursor that prepares every statement it runs.

    psycopg prepares a statement on its first run and reuses it on that
    connection (the pool keeps connections, so each is planned once per
    connection, not once per turn). Planning the write below took about
    as much PostgreSQL CPU as running it. The ORM keeps Django's default
    client-side binding without prepared statements.
    """

    def execute(self, query, params=None, *, prepare=True, binary=None):
        return super().execute(query, params, prepare=prepare, binary=binary)


class _DebugWrapper(CursorDebugWrapper):
    """Django's query log for these statements, with their text as written.

    Django reads the executed query back from psycopg's client-side-binding
    cursor; a server-side-binding one keeps no copy, so the log would say None.
    """

    def debug_sql(self, sql=None, params=None, use_last_executed_query=False, many=False):
        return super().debug_sql(sql, params, use_last_executed_query=False, many=many)


@contextmanager
def _cursor() -> Iterator:
    """A Django cursor (query logging, execute wrappers, Django's exceptions) for these statements."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    raw = _PreparedCursor(connection.connection)
    cursor = _DebugWrapper(raw, connection) if connection.queries_logged else connection.make_cursor(raw)
    with cursor:
        yield cursor


_CONTEXT_SQL = f"""
SELECT r.agents, w.id, w.balance, m.role, m.model_alias, m.content
FROM {Room._meta.db_table} r
LEFT JOIN {CreditWallet._meta.db_table} w ON w.user_id = r.owner_id
LEFT JOIN {Message._meta.db_table} m ON m.turn_id IN (
    SELECT t.id FROM {Turn._meta.db_table} t WHERE t.room_id = %s ORDER BY t.id DESC LIMIT {{turns:d}}
)
WHERE r.id = %s AND r.owner_id = %s
ORDER BY m.turn_id, m.position
"""


def turn_context(*, user_id: int, room_id: int, turns: int) -> TurnContext | None:
    """The user's room, its wallet and the last `turns` turns' messages; None if not theirs."""
    with _cursor() as cursor:
        # The limit is part of the statement, so its prepared plan is generic: a parameter there
        # made PostgreSQL plan it again for every turn.
        cursor.execute(_CONTEXT_SQL.format(turns=max(0, turns)), [room_id, room_id, user_id])
        rows = cursor.fetchall()
    if not rows:
        return None
    agents, wallet_id, balance = rows[0][:3]
    agents = Room._meta.get_field("agents").from_db_value(agents, None, connection)
    room = Room(id=room_id, owner_id=user_id, agents=agents)
    room._state.adding = False
    room._state.db = connection.alias
    history = [(role, alias, content) for *_, role, alias, content in rows if role is not None]
    return TurnContext(
        room=room,
        wallet_id=wallet_id,
        balance=None if balance is None else credits_from_db(balance),
        history=history,
    )


_WRITE_SQL = f"""
WITH turn AS (
    INSERT INTO {Turn._meta.db_table} (room_id, user_id, content, credits_burned, created_at)
    VALUES (%(room)s, %(user)s, %(content)s, %(credits)s, %(now)s)
    RETURNING id
), files AS (
    INSERT INTO {Turn.files.through._meta.db_table} (turn_id, uploadedfile_id)
    SELECT turn.id, f.id FROM turn, unnest(%(files)s::bigint[]) AS f(id)
), messages AS (
    INSERT INTO {Message._meta.db_table} (turn_id, position, role, model_alias, content, created_at)
    SELECT turn.id, m.position, m.role, m.model_alias, m.content, %(now)s
    FROM turn, jsonb_to_recordset(%(messages)s::jsonb)
        AS m(position smallint, role text, model_alias text, content text)
), calls AS MATERIALIZED (
    -- Ids drawn here, in call order, so each ledger row can name its usage row.
    SELECT nextval(pg_get_serial_sequence('{LLMCallEvent._meta.db_table}', 'id')) AS id, c.*
    FROM jsonb_to_recordset(%(calls)s::jsonb)
        AS c(n integer, model_alias text, provider_model text, purpose text, input_tokens integer,
             output_tokens integer, multiplier numeric, pricing_version text, credits_burned numeric,
             metered boolean, latency_ms integer)
    ORDER BY c.n
), usage AS (
    INSERT INTO {LLMCallEvent._meta.db_table} (id, user_id, room_id, turn_id, model_alias, provider_model,
        purpose, input_tokens, output_tokens, multiplier, pricing_version, credits_burned, metered,
        latency_ms, created_at)
    SELECT calls.id, %(user)s, %(room)s, turn.id, calls.model_alias, calls.provider_model,
        calls.purpose, calls.input_tokens, calls.output_tokens, calls.multiplier, calls.pricing_version,
        calls.credits_burned, calls.metered, calls.latency_ms, %(now)s
    FROM calls, turn
), tools AS (
    INSERT INTO {ToolCallEvent._meta.db_table} (user_id, room_id, turn_id, model_alias, tool_name,
        arguments, status, error, latency_ms, created_at)
    SELECT %(user)s, %(room)s, turn.id, t.model_alias, t.tool_name, t.arguments, t.status, t.error,
        t.latency_ms, %(now)s
    FROM turn, jsonb_to_recordset(%(tools)s::jsonb)
        AS t(n integer, model_alias text, tool_name text, arguments jsonb, status text, error text,
             latency_ms integer)
    ORDER BY t.n
), wallet AS (
    UPDATE {CreditWallet._meta.db_table}
    SET balance = balance - %(debit)s, lifetime_burned = lifetime_burned + %(debit)s, updated_at = %(now)s
    WHERE id = %(wallet)s AND %(debit)s > 0
    RETURNING balance
), ledger AS (
    -- One debit per metered call with credits, in call order; balance_after runs down from the
    -- balance before this turn to the one the UPDATE returned, as in wallet_debit_many.
    INSERT INTO {CreditTransaction._meta.db_table} (wallet_id, kind, amount, balance_after,
        usage_event_id, idempotency_key, description, created_at)
    SELECT %(wallet)s, %(kind)s, -calls.credits_burned,
        wallet.balance + %(debit)s - sum(calls.credits_burned) OVER (ORDER BY calls.n),
        calls.id, NULL, left(calls.model_alias || ' · turn ' || turn.id, 255), %(now)s
    FROM calls, wallet, turn
    WHERE calls.metered AND calls.credits_burned > 0
)
SELECT turn.id,
    COALESCE((SELECT balance FROM wallet),
             (SELECT balance FROM {CreditWallet._meta.db_table} WHERE id = %(wallet)s)),
    (SELECT COALESCE(array_agg(calls.id ORDER BY calls.n), '{{}}') FROM calls),
    -- A turn that costs credits must not commit without its debit: no wallet row updated fails
    -- the whole statement (plain SQL has no RAISE; the failing cast carries the message).
    CASE WHEN %(debit)s > 0 AND NOT EXISTS (SELECT 1 FROM wallet)
         THEN ('no wallet ' || %(wallet)s || ' to charge this turn to')::integer END
FROM turn
"""


def _json(rows: list[dict]) -> str:
    # Decimals travel as their exact text; PostgreSQL casts them back to numeric.
    return json.dumps(rows, default=str, ensure_ascii=False)


def write_turn(
    *,
    turn: Turn,
    file_ids: list[int],
    messages: list[Message],
    events: list[LLMCallEvent],
    tool_events: list[ToolCallEvent],
    wallet_id: int,
) -> Decimal:
    """Write everything in one statement; set the new primary keys; return the wallet's balance.

    Every metered call with credits gets one debit ledger row, in call order,
    like `wallet_debit_many`; the caller has already priced the calls.
    """
    now = timezone.now()
    debit = sum((e.credits_burned for e in events if e.metered and e.credits_burned > 0), Decimal(0))
    params = {
        "room": turn.room_id,
        "user": turn.user_id,
        "content": turn.content,
        "credits": turn.credits_burned,
        "now": now,
        "files": file_ids,
        "messages": _json(
            [
                {"position": m.position, "role": m.role, "model_alias": m.model_alias, "content": m.content}
                for m in messages
            ]
        ),
        "calls": _json(
            [
                {
                    "n": n,
                    "model_alias": e.model_alias,
                    "provider_model": e.provider_model,
                    "purpose": e.purpose,
                    "input_tokens": e.input_tokens,
                    "output_tokens": e.output_tokens,
                    "multiplier": e.multiplier,
                    "pricing_version": e.pricing_version,
                    "credits_burned": e.credits_burned,
                    "metered": e.metered,
                    "latency_ms": e.latency_ms,
                }
                for n, e in enumerate(events)
            ]
        ),
        "tools": _json(
            [
                {
                    "n": n,
                    "model_alias": t.model_alias,
                    "tool_name": t.tool_name,
                    "arguments": t.arguments,
                    "status": t.status,
                    "error": t.error,
                    "latency_ms": t.latency_ms,
                }
                for n, t in enumerate(tool_events)
            ]
        ),
        "wallet": wallet_id,
        "debit": debit,
        "kind": CreditTransaction.Kind.DEBIT,
    }
    with _cursor() as cursor:
        cursor.execute(_WRITE_SQL, params)
        turn_id, balance, event_ids, _ = cursor.fetchone()
    turn.pk = turn_id
    turn.created_at = now
    for event, event_id in zip(events, event_ids, strict=True):
        event.pk = event_id
    for row in [turn, *events]:
        row._state.adding = False
        row._state.db = connection.alias
    for row in [*messages, *events, *tool_events]:
        row.created_at = now
    return balance  # PostgreSQL only: already a Decimal
