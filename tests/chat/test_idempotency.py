"""Idempotency-Key on POST …/turns/: replay, mismatch, failure, takeover and real concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.core.management import call_command
from django.core.signals import request_started
from django.utils import timezone

from billing.models import CreditTransaction, UsageEvent
from chat import llm, services
from chat.models import Turn, TurnIdempotencyKey
from tests.chat.helpers import balance_of, db_state
from tests.factories import RoomFactory, UserFactory
from tests.support.clients import live_token, logged_in


def post_turn(client, room, key: str, **body):
    return client.post(f"/api/v1/rooms/{room.pk}/turns/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_a_replay_returns_the_first_response_and_charges_nothing(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    first = post_turn(api, room, "key-1", content="Hello both")
    after_first = db_state(user)

    replay = post_turn(api, room, "key-1", content="Hello both")

    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert db_state(user) == after_first
    assert Turn.objects.count() == 1
    key = TurnIdempotencyKey.objects.get(user=user, key="key-1")
    assert key.status == "done" and key.turn_id == first.json()["id"] and key.response == first.json()


@pytest.mark.django_db
def test_the_same_key_with_a_different_body_is_409(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    other_room = RoomFactory(owner=user, agents=["gpt-4o"])
    assert post_turn(api, room, "key-2", content="Hello").status_code == 201
    before = db_state(user)

    for response in (
        post_turn(api, room, "key-2", content="Hello again"),
        post_turn(api, room, "key-2", content="Hello", model_alias="deepseek"),
        post_turn(api, other_room, "key-2", content="Hello"),
    ):
        assert response.status_code == 409
        assert response.json()["error"] == "idempotency_key_reused"
    assert db_state(user) == before


@pytest.mark.django_db
def test_keys_are_scoped_per_user(user, other_user):
    mine = RoomFactory(owner=user, agents=["gpt-4o"])
    theirs = RoomFactory(owner=other_user, agents=["gpt-4o"])

    first = post_turn(logged_in(user), mine, "shared-key", content="Hi")
    second = post_turn(logged_in(other_user), theirs, "shared-key", content="Hi")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


@pytest.mark.django_db
def test_a_failed_turn_releases_its_key_for_a_retry(api, user, openai_server):
    server = openai_server(fail_models={"gpt-4o"})
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = db_state(user)

    failed = post_turn(api, room, "key-3", content="Try me")
    assert failed.status_code == 502
    assert db_state(user) == before  # the reservation is gone too

    server.fail_models.clear()
    retried = post_turn(api, room, "key-3", content="Try me")
    assert retried.status_code == 201
    assert Turn.objects.count() == 1


@pytest.mark.django_db
def test_a_stale_reservation_is_taken_over(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    fingerprint = services.turn_fingerprint(room_id=room.pk, content="Again", model_alias=None, file_ids=[])
    # A worker reserved the key and died: its lease ran out a second ago.
    TurnIdempotencyKey.objects.create(
        user=user,
        key="key-4",
        request_fingerprint=fingerprint,
        locked_until=timezone.now() - timedelta(seconds=1),
    )

    response = post_turn(api, room, "key-4", content="Again")

    assert response.status_code == 201
    key = TurnIdempotencyKey.objects.get(user=user, key="key-4")
    assert key.status == "done" and key.turn_id == response.json()["id"]


@pytest.mark.django_db
def test_a_request_that_lost_its_lease_rolls_back_and_replays_the_new_owner(api, user, monkeypatch):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    real_run_agent = llm.run_agent
    # The response of the request that took the key over.
    winner = {
        "id": 999,
        "room": room.pk,
        "created_at": "2026-01-01T00:00:00Z",
        "files": [],
        "messages": [],
        "usage": [],
        "tool_calls": [],
        "credits_burned": "0.0000",
        "balance": "1.0000",
    }

    def slow_then_overtaken(**kwargs):
        answer = real_run_agent(**kwargs)
        # Our lease ran out mid-turn; another worker took the key over and finished first.
        TurnIdempotencyKey.objects.filter(user=user, key="key-6").update(
            status="done", response=winner, locked_until=timezone.now()
        )
        return answer

    monkeypatch.setattr(llm, "run_agent", slow_then_overtaken)
    before = db_state(user)

    response = post_turn(api, room, "key-6", content="Slow one")

    assert response.status_code == 201 and response.json() == winner
    assert response["Idempotent-Replayed"] == "true"
    assert {**db_state(user), "keys": before["keys"]} == before  # our turn and charge rolled back


@pytest.mark.django_db
def test_a_duplicate_of_a_running_request_answers_409_after_the_wait(api, user, settings):
    settings.IDEMPOTENCY_WAIT_SECONDS = 0
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    fingerprint = services.turn_fingerprint(room_id=room.pk, content="Busy", model_alias=None, file_ids=[])
    TurnIdempotencyKey.objects.create(
        user=user,
        key="key-5",
        request_fingerprint=fingerprint,
        locked_until=timezone.now() + timedelta(minutes=5),
    )
    before = db_state(user)

    response = post_turn(api, room, "key-5", content="Busy")

    assert response.status_code == 409 and response.json()["error"] == "idempotency_in_progress"
    assert db_state(user) == before


@pytest.mark.django_db
def test_a_bad_idempotency_key_is_400(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])

    response = post_turn(api, room, "x" * 256, content="Hi")

    assert response.status_code == 400 and "Idempotency-Key" in response.json()["detail"]
    assert Turn.objects.count() == 0


@pytest.mark.django_db
def test_purge_keeps_keys_for_at_least_a_day(user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    services.turn_post(user=user, room_id=room.pk, content="old", idempotency_key="old")
    services.turn_post(user=user, room_id=room.pk, content="recent", idempotency_key="recent")
    TurnIdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=49))
    TurnIdempotencyKey.objects.filter(key="recent").update(created_at=timezone.now() - timedelta(hours=23))

    assert services.idempotency_keys_purge(older_than_hours=1) == 1  # asked for 1 h, kept 24 h
    assert list(TurnIdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]
    call_command("purge_idempotency_keys")
    assert TurnIdempotencyKey.objects.count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_eight_concurrent_requests_with_one_key_run_one_turn_and_charge_once(live_server, monkeypatch):
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    token = live_token(live_server.url, user)
    real_run_agent = llm.run_agent
    started: list[type] = []  # one entry per request the live server has begun
    all_started = threading.Event()

    def count_request(sender, **kwargs):
        started.append(sender)
        if len(started) >= 8:
            all_started.set()

    def held_run_agent(**kwargs):
        # The first request's model call waits until every duplicate has reached the server.
        if not all_started.wait(timeout=30):
            raise AssertionError(f"only {len(started)} of 8 requests reached the server")
        return real_run_agent(**kwargs)

    monkeypatch.setattr(llm, "run_agent", held_run_agent)
    start = threading.Barrier(8)

    def post(_: int) -> requests.Response:
        start.wait(timeout=30)
        return requests.post(
            f"{live_server.url}/api/v1/rooms/{room.pk}/turns/",
            json={"content": "Charge me once"},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "one-key"},
            timeout=60,
        )

    request_started.connect(count_request)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(post, range(8)))
    finally:
        request_started.disconnect(count_request)

    assert [r.status_code for r in responses] == [201] * 8
    bodies = [r.json() for r in responses]
    assert len({body["id"] for body in bodies}) == 1
    assert len({body["balance"] for body in bodies}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in responses) == 1
    assert Turn.objects.count() == 1
    events = UsageEvent.objects.filter(turn_id=bodies[0]["id"])
    assert events.count() == 3  # manager + two agents
    debits = CreditTransaction.objects.filter(kind="debit")
    assert sorted(d.usage_event_id for d in debits) == sorted(e.pk for e in events if e.metered)
    burned = Decimal(bodies[0]["credits_burned"])
    assert balance_of(user) == Decimal(500) - burned == Decimal(bodies[0]["balance"])
    call_command("reconcile_wallets")
