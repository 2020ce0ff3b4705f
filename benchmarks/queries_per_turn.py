"""SQL queries per turn: 1 and 3 agents, short and long room history, and the multiplier lookup.

A turn is posted through the real stack (Django test client, bearer token,
`POST /api/v1/rooms/{id}/turns/`, offline models) and every SQL statement it
sends is counted with `CaptureQueriesContext`. The count must not depend on
the room's history (the agents see the last CHAT_HISTORY_TURNS turns through
one query) nor on the number of agents (one bulk INSERT for the events, one
wallet UPDATE and one bulk ledger INSERT for all debits), and pricing a call
must read nothing (the multiplier comes from the per-process cache).

    .venv/bin/python benchmarks/queries_per_turn.py [--history 200] [--show-sql]
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from _support import database_url, row, setup_django

HISTORY_TURNS = 200
AGENTS_ONE = ["gpt-4o"]
AGENTS_THREE = ["gpt-4o", "deepseek", "claude-haiku"]
LOOKUPS = 1000


def _seed_history(room, *, turns: int) -> None:
    """`turns` earlier turns with their messages, written in bulk (only the history matters here)."""
    from chat.models import Message, Turn

    made = Turn.objects.bulk_create(
        [Turn(room=room, user_id=room.owner_id, content=f"earlier question {n}") for n in range(turns)]
    )
    messages = []
    for turn in made:
        messages.append(Message(turn=turn, position=0, role="user", content=turn.content))
        for position, alias in enumerate(room.agents, start=1):
            messages.append(
                Message(
                    turn=turn, position=position, role="assistant", model_alias=alias, content="an answer."
                )
            )
    Message.objects.bulk_create(messages, batch_size=1000)


def _count(client, room_id: int, token: str) -> tuple[int, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = client.post(
            f"/api/v1/rooms/{room_id}/turns/",
            data=json.dumps({"content": "How many queries does this take?"}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    if response.status_code != 201:
        raise RuntimeError(f"turn answered {response.status_code}: {response.content[:300]!r}")
    return len(captured), [query["sql"] for query in captured.captured_queries]


def measure(*, history: int = HISTORY_TURNS) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from knox.models import AuthToken

    from billing import meter
    from billing.services import wallet_get_or_create
    from chat.models import Room

    user = get_user_model().objects.create(username=f"bench-queries-{uuid.uuid4().hex[:8]}")
    wallet_get_or_create(user=user)
    _, token = AuthToken.objects.create(user=user)
    client = Client()
    meter.get_pricing_snapshot()  # loaded once per process, as a worker does at its first turn

    counts: dict[str, int] = {}
    sql: dict[str, list[str]] = {}
    for label, agents in (("1 agent", AGENTS_ONE), ("3 agents", AGENTS_THREE)):
        short = Room.objects.create(owner=user, title=f"{label} short", agents=agents)
        long = Room.objects.create(owner=user, title=f"{label} long", agents=agents)
        _seed_history(short, turns=1)
        _seed_history(long, turns=history)
        _count(client, short.pk, token)  # first turn of the process: imports, model set-up
        counts[f"{label}, short"], sql[f"{label}, short"] = _count(client, short.pk, token)
        counts[f"{label}, long"], sql[f"{label}, long"] = _count(client, long.pk, token)

    # Enforce mode: the same turn, with its hold placed (one statement) and settled (in the debit's UPDATE).
    from django.test import override_settings

    with override_settings(CREDIT_ENFORCEMENT="enforce"):
        enforce_room = Room.objects.create(owner=user, title="enforce", agents=AGENTS_ONE)
        _seed_history(enforce_room, turns=1)
        counts["1 agent, short, enforce"], sql["1 agent, short, enforce"] = _count(
            client, enforce_room.pk, token
        )

    with CaptureQueriesContext(connection) as lookups:
        for _ in range(LOOKUPS):
            meter.get_model_multiplier("gpt-4o")
            meter.compute_credits_burned(1200, 300, "claude-sonnet")
    with CaptureQueriesContext(connection) as wallet_read:
        response = client.get("/api/v1/users/me/wallet", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 200, response.content
    return {"counts": counts, "sql": sql, "lookup_queries": len(lookups), "wallet_queries": len(wallet_read)}


def run(*, history: int = HISTORY_TURNS, show_sql: bool = False) -> list[dict]:
    setup_django(database_url())
    found = measure(history=history)
    counts = found["counts"]
    if show_sql:
        for label, statements in found["sql"].items():
            print(f"--- {label}: {len(statements)} queries")
            for statement in statements:
                print("   ", statement[:160])
    results = []
    for label in ("1 agent", "3 agents"):
        short, long = counts[f"{label}, short"], counts[f"{label}, long"]
        results.append(
            row(
                measure=f"queries/turn, {label}, {history}-turn history vs 1",
                figure=long,
                baseline=short,
                unit="queries",
                ratio=long / short,
                goal="= short history",
                ok=long == short,
            )
        )
    one, three = counts["1 agent, short"], counts["3 agents, short"]
    results.append(
        row(
            measure="queries/turn, 3 agents vs 1 agent",
            figure=three,
            baseline=one,
            unit="queries",
            ratio=three / one,
            goal="= 1 agent",
            ok=three == one,
            note=f"GET wallet takes {found['wallet_queries']}",
        )
    )
    enforce = counts["1 agent, short, enforce"]
    results.append(
        row(
            measure="queries/turn, enforce mode (credit hold) vs observe",
            figure=enforce,
            baseline=one,
            unit="queries",
            ratio=enforce / one,
            goal="≤ observe + 1",
            ok=enforce <= one + 1,
        )
    )
    results.append(
        row(
            measure=f"queries for {LOOKUPS} multiplier lookups",
            figure=found["lookup_queries"],
            baseline=None,
            unit="queries",
            ratio=None,
            goal="0",
            ok=found["lookup_queries"] == 0,
        )
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=HISTORY_TURNS, help="earlier turns in the long room")
    parser.add_argument("--show-sql", action="store_true", help="print every statement of each turn")
    args = parser.parse_args()
    results = run(history=args.history, show_sql=args.show_sql)
    for result in results:
        baseline = "-" if result["baseline"] is None else result["baseline"]
        print(
            f"{result['measure']:<48} {result['figure']:>5} vs {baseline:>5}"
            f"  goal {result['goal']:<16} {'ok' if result['pass'] else 'MISSED'}  {result['note']}"
        )
    return 0 if all(result["pass"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
