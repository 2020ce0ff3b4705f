"""Streamed turns over real HTTP: a live server on PostgreSQL, the real LangChain OpenAI
client, and a local OpenAI-compatible server that streams with realistic delays.

What must hold: events arrive in order (routing, deltas, agent_done, then exactly one
final event), the `turn` event is sent only after the commit, agents run side by side,
Stop and a client that goes away end the provider streams and the turn commits as
`cancelled`, charged for what ran (counted, `estimated`), and every ledger stays exact.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from billing.models import CreditTransaction, UsageEvent
from chat.llm.tokens import text_tokens
from chat.models import Turn, TurnIdempotencyKey
from tests.chat.helpers import balance_of
from tests.factories import DEFAULT_PASSWORD, RoomFactory, UserFactory
from tests.reliability.audit import assert_books_balance
from tests.support.fake_openai import reply_of
from tests.support.sse import all_events, streamed_turn, token_for

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def account(live_server):
    user = UserFactory()
    return user, token_for(live_server.url, user.username, DEFAULT_PASSWORD)


def wait_for(condition, *, seconds: float = 20.0):
    """Poll until `condition()` is truthy (something another thread or process does)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition never held")


def test_events_arrive_in_order_and_the_turn_event_follows_the_commit(live_server, account, openai_server):
    user, token = account
    openai_server(delay=0.2, token_interval=0.01, reply=reply_of(12))
    room = RoomFactory(owner=user, agents=["gpt-4o", "gpt-4o-mini"])
    committed_when_announced: list[bool] = []

    events = []
    with streamed_turn(live_server.url, token, room.pk, {"content": "@all Hello both"}) as (response, stream):
        assert response.status_code == 200
        for name, data in stream:
            if name == "turn":
                # Read at the moment the event arrives: the turn must already be in the database.
                committed_when_announced.append(Turn.objects.filter(pk=data["id"]).exists())
            events.append((name, data))

    names = [name for name, _ in events]
    assert names[0] == "routing" and set(events[0][1]["agents"]) == {"gpt-4o", "gpt-4o-mini"}
    assert names[-1] == "turn" and names.count("turn") == 1 and "error" not in names
    assert committed_when_announced == [True]
    turn = events[-1][1]
    assert turn["status"] == "completed"
    for alias in ("gpt-4o", "gpt-4o-mini"):
        streamed = "".join(d["text"] for n, d in events if n == "delta" and d["model_alias"] == alias)
        [message] = [m for m in turn["messages"] if m["model_alias"] == alias]
        assert streamed.strip() == message["content"]
        [done] = [d for n, d in events if n == "agent_done" and d["model_alias"] == alias]
        [usage] = [u for u in turn["usage"] if u["model_alias"] == alias]
        assert (done["input_tokens"], done["output_tokens"], done["credits_burned"]) == (
            usage["input_tokens"],
            usage["output_tokens"],
            usage["credits_burned"],
        )
        # Every delta of an agent comes before its agent_done.
        assert max(i for i, (n, d) in enumerate(events) if n == "delta" and d["model_alias"] == alias) < min(
            i for i, (n, d) in enumerate(events) if n == "agent_done" and d["model_alias"] == alias
        )
    assert Decimal(turn["balance"]) == balance_of(user)
    assert_books_balance()


def test_the_agents_of_one_turn_run_side_by_side(live_server, account, openai_server):
    user, token = account
    server = openai_server(delay=0.4, token_interval=0.01, reply=reply_of(5))
    # deepseek speaks the OpenAI protocol too; point it at the same local server.
    room = RoomFactory(owner=user, agents=["gpt-4o", "gpt-4o-mini"])

    events = all_events(
        live_server.url, token, room.pk, {"content": "All at once", "agents": ["gpt-4o", "gpt-4o-mini"]}
    )

    assert events[0] == ("routing", {"agents": ["gpt-4o", "gpt-4o-mini"], "by": "explicit"})
    calls = server.settled_timings()
    assert sorted(call["model"] for call in calls) == ["gpt-4o", "gpt-4o-mini"]  # no routing call
    # Each agent's request reached the provider before the other's answer was finished.
    assert max(call["received_at"] for call in calls) < min(call["done_at"] for call in calls)
    assert events[-1][1]["status"] == "completed"


def test_stop_ends_the_provider_stream_and_bills_what_ran_as_estimated(live_server, account, openai_server):
    user, token = account
    server = openai_server(delay=0.1, token_interval=0.15, reply=reply_of(200))
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = balance_of(user)
    received = []

    with streamed_turn(live_server.url, token, room.pk, {"content": "Talk a lot"}, key="stop-1") as (
        _,
        events,
    ):
        for name, data in events:
            if name == "delta":
                received.append(data["text"])
                if len(received) == 3:
                    stop = httpx.post(
                        f"{live_server.url}/api/v1/rooms/{room.pk}/turns/cancel",
                        json={"idempotency_key": "stop-1"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert stop.status_code == 202, stop.text
            elif name == "turn":
                turn = data

    assert turn["status"] == "cancelled"
    [usage] = turn["usage"]
    assert usage["usage_source"] == "estimated"
    # Counted from what this side received (a chunk or two may arrive while the Stop lands).
    [message] = [m for m in turn["messages"] if m["role"] == "assistant"]
    # (the stored message is the text received, stripped; the count includes the trailing space)
    assert usage["output_tokens"] in {text_tokens("gpt-4o", message["content"] + end) for end in ("", " ")}
    assert len(received) <= usage["output_tokens"] < 200
    assert usage["input_tokens"] > 0
    # The provider's stream was closed long before its 200 tokens.
    [call] = server.timings()
    assert call["chunks"] < 200
    assert balance_of(user) == before - Decimal(usage["credits_burned"]) == Decimal(turn["balance"])
    assert CreditTransaction.objects.filter(usage_event_id=usage["id"]).count() == 1
    assert_books_balance()


def test_a_stop_written_by_another_process_reaches_the_turn_through_its_key_row(
    live_server, account, openai_server
):
    """The Stop lands on a worker that does not run the turn: only the key row carries it.
    The running process's cancel watcher reads it and stops the provider stream."""
    user, token = account
    server = openai_server(delay=0.1, token_interval=0.1, reply=reply_of(300))
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = balance_of(user)

    with streamed_turn(live_server.url, token, room.pk, {"content": "Long one"}, key="elsewhere-1") as (
        _,
        events,
    ):
        for name, _data in events:
            if name == "delta":
                # What turn_cancel writes in the other process (its in-process cancel is not there).
                stopped = TurnIdempotencyKey.objects.filter(
                    user=user, key="elsewhere-1", status=TurnIdempotencyKey.Status.PENDING
                ).update(cancel_requested_at=timezone.now())
                assert stopped == 1
                break
        turn = next(data for name, data in events if name == "turn")

    assert turn["status"] == "cancelled"
    [usage] = turn["usage"]
    assert usage["usage_source"] == "estimated" and 0 < usage["output_tokens"] < 300
    [call] = server.timings()
    assert call["chunks"] < 300  # the provider stream was closed, not read to its end
    assert balance_of(user) == before - Decimal(usage["credits_burned"])
    assert_books_balance()


def test_a_client_that_goes_away_cancels_the_turn_and_is_still_billed(live_server, account, openai_server):
    user, token = account
    openai_server(delay=0.1, token_interval=0.1, reply=reply_of(300))
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = balance_of(user)

    with streamed_turn(live_server.url, token, room.pk, {"content": "Then I leave"}) as (_, events):
        for name, _data in events:
            if name == "delta":
                break  # leaving the block closes the connection mid-stream

    turn = wait_for(lambda: Turn.objects.filter(room=room).first())
    assert turn.status == "cancelled"
    [event] = UsageEvent.objects.filter(turn=turn)
    assert event.usage_source == "estimated" and 0 < event.output_tokens < 300
    assert balance_of(user) == before - event.credits_burned
    assert_books_balance()


def test_one_agent_failing_streams_a_failed_turn_with_the_other_agent_billed(
    live_server, account, openai_server
):
    user, token = account
    openai_server(delay=0.05, token_interval=0.01, reply=reply_of(6), fail_models={"gpt-4o"})
    room = RoomFactory(owner=user, agents=["gpt-4o", "gpt-4o-mini"])

    events = all_events(
        live_server.url, token, room.pk, {"content": "Both", "agents": ["gpt-4o", "gpt-4o-mini"]}
    )

    name, turn = events[-1]
    assert name == "turn" and turn["status"] == "failed" and turn["error"]["code"] == "provider_error"
    assert [(u["model_alias"], u["usage_source"]) for u in turn["usage"]] == [("gpt-4o-mini", "provider")]
    assert [n for n, d in events if n == "agent_done"] == ["agent_done"]
    assert_books_balance()


def test_retries_with_one_key_while_streaming_charge_once(live_server, account, openai_server):
    user, token = account
    openai_server(delay=0.3, token_interval=0.01, reply=reply_of(8))
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    barrier = threading.Barrier(3)
    results: list[list] = []

    def post() -> None:
        barrier.wait()
        results.append(all_events(live_server.url, token, room.pk, {"content": "Once"}, key="same-key"))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    finals = [events[-1] for events in results]
    assert [name for name, _ in finals] == ["turn", "turn", "turn"]
    assert len({data["id"] for _, data in finals}) == 1
    # The replays are the final event alone.
    assert sorted(len(events) for events in results)[:2] == [1, 1]
    assert Turn.objects.filter(room=room).count() == 1
    assert CreditTransaction.objects.filter(wallet__user=user, kind="debit").count() == 1
    assert_books_balance()


def test_no_database_connection_is_checked_out_while_the_models_run(live_server, account, openai_server):
    user, token = account
    server = openai_server(delay=1.5, token_interval=0.01, reply=reply_of(4))
    rooms = [RoomFactory(owner=user, agents=["gpt-4o"]) for _ in range(6)]
    connection.ensure_connection()
    pool = connection.pool
    assert pool is not None, "the test database runs with Django's connection pool"
    baseline = pool.get_stats()
    checked_out_before = baseline["pool_size"] - baseline["pool_available"]

    threads = [
        threading.Thread(target=all_events, args=(live_server.url, token, room.pk, {"content": "wait"}))
        for room in rooms
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(server.timings()) == 6)  # every turn is now waiting on its model
    during = pool.get_stats()
    for thread in threads:
        thread.join()

    assert during["pool_size"] - during["pool_available"] <= checked_out_before
    assert Turn.objects.filter(room__in=rooms, status="completed").count() == 6


def test_a_turn_gives_its_cpu_slot_back_while_its_model_answers(
    live_server, account, openai_server, settings
):
    """With one slot per process (the default), turns still wait for their models side by side:
    the slot covers a turn's own work, not the seconds its provider takes."""
    assert settings.TURN_CPU_SLOTS == 1
    user, token = account
    server = openai_server(delay=0.8, token_interval=0.01, reply=reply_of(4))
    rooms = [RoomFactory(owner=user, agents=["gpt-4o"]) for _ in range(3)]
    statuses: list[int] = []

    def post(n: int) -> None:
        answer = httpx.post(
            f"{live_server.url}/api/v1/rooms/{rooms[n].pk}/turns/",
            json={"content": f"turn {n}"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [201, 201, 201]
    calls = server.settled_timings()
    assert len(calls) == 3
    # Every request reached the model before any answer was finished.
    assert max(call["received_at"] for call in calls) < min(call["done_at"] for call in calls)
    assert CreditTransaction.objects.filter(wallet__user=user, kind="debit").count() == 3
    assert_books_balance()
