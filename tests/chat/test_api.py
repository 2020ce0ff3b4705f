"""The chat HTTP API: rooms, turns, files — shapes, errors, object-level access, query counts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing import meter
from chat import services
from chat.models import Room, Turn
from tests.chat.helpers import db_state, upload
from tests.factories import RoomFactory
from tests.support.clients import logged_in

pytestmark = pytest.mark.django_db

TURN_KEYS = {
    "id",
    "room",
    "messages",
    "usage",
    "credits_burned",
    "balance",
    "tool_calls",
    "files",
    "created_at",
    "status",
    "routing",
}
USAGE_KEYS = {
    "model_alias",
    "provider_model",
    "purpose",
    "input_tokens",
    "output_tokens",
    "multiplier",
    "pricing_version",
    "credits_burned",
    "metered",
    "usage_source",
}


def post_turn(client, room_id: int, **body):
    return client.post(f"/api/v1/rooms/{room_id}/turns/", body, format="json")


# --- Rooms -------------------------------------------------------------------


def test_create_list_and_get_rooms(api, user):
    created = api.post("/api/v1/rooms/", {"title": "Tea", "agents": ["gpt-4o", "deepseek"]}, format="json")

    assert created.status_code == 201
    room = created.json()
    assert set(room) == {"id", "title", "agents", "created_at", "updated_at"}
    assert (room["title"], room["agents"]) == ("Tea", ["gpt-4o", "deepseek"])
    Room.objects.create(owner=user, title="Older", agents=["gpt-4o"])
    RoomFactory()  # someone else's

    listed = api.get("/api/v1/rooms/").json()
    assert set(listed) == {"next", "previous", "results"}
    assert sorted(r["title"] for r in listed["results"]) == ["Older", "Tea"]
    assert api.get(f"/api/v1/rooms/{room['id']}/").json() == room


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "agents": ["gpt-5-ultra"]}, "agents"),
        ({"title": "x", "agents": ["default"]}, "agents"),
        ({"title": "x", "agents": ["gpt-4o", "gpt-4o"]}, "agents"),
        ({"title": "x", "agents": []}, "agents"),
        ({"title": "x", "agents": "gpt-4o"}, "agents"),
        ({"title": "   ", "agents": ["gpt-4o"]}, "title"),
        ({"agents": ["gpt-4o"]}, "title"),
    ],
)
def test_room_create_validates_title_and_agents(api, body, field):
    response = api.post("/api/v1/rooms/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert field in response.json()["detail"]
    assert Room.objects.count() == 0


def test_a_room_has_at_most_max_agents(api, settings):
    settings.MAX_AGENTS_PER_ROOM = 2

    response = api.post(
        "/api/v1/rooms/", {"title": "Crowd", "agents": ["gpt-4o", "deepseek", "claude-haiku"]}, format="json"
    )

    assert response.status_code == 400 and "at most 2" in str(response.json()["detail"])


def test_the_agent_list_follows_the_active_pricing_table():
    assert services.agent_aliases() == [
        "claude-haiku",
        "claude-sonnet",
        "deepseek",
        "gemini-flash",
        "gemini-pro",
        "gpt-4o",
        "gpt-4o-mini",
    ]


def test_anonymous_requests_are_refused_with_json(db):
    client = APIClient()

    for response in (
        client.get("/api/v1/rooms/"),
        post_turn(client, 1, content="hi"),
        client.get("/api/v1/files/"),
    ):
        assert response.status_code in (401, 403)
        assert response.json()["error"] == "not_authenticated"


# --- Turns ---------------------------------------------------------------------


def test_a_posted_turn_has_the_documented_shape(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o", "claude-haiku"])

    response = post_turn(api, room.pk, content="Hello, agents")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == TURN_KEYS
    assert body["room"] == room.pk
    assert body["messages"][0] == {"role": "user", "model_alias": "", "content": "Hello, agents"}
    for message in body["messages"]:
        assert set(message) == {"role", "model_alias", "content"}
    for row in body["usage"]:
        assert set(row) >= USAGE_KEYS
        assert isinstance(row["input_tokens"], int) and isinstance(row["metered"], bool)
        for money in ("multiplier", "credits_burned"):
            assert isinstance(row[money], str) and Decimal(row[money]) == Decimal(row[money]).quantize(
                Decimal("0.0001")
            )
    assert isinstance(body["credits_burned"], str) and isinstance(body["balance"], str)
    assert Decimal(body["credits_burned"]) == sum(Decimal(u["credits_burned"]) for u in body["usage"])
    assert Decimal(body["balance"]) == Decimal(500) - Decimal(body["credits_burned"])


def test_history_is_newest_first_paginated_and_has_no_balance(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    notes = upload(user, "n.txt", b"notes")
    posted = [post_turn(api, room.pk, content=f"turn {i}", files=[notes.pk]).json() for i in range(3)]

    page = api.get(f"/api/v1/rooms/{room.pk}/turns/?page_size=2").json()

    assert [t["id"] for t in page["results"]] == [posted[2]["id"], posted[1]["id"]]
    assert page["next"] and page["previous"] is None
    newest = page["results"][0]
    assert set(newest) == TURN_KEYS - {"balance"}
    assert {k: v for k, v in posted[2].items() if k != "balance"} == newest
    older = logged_in(user)
    rest = older.get(page["next"]).json()
    assert [t["id"] for t in rest["results"]] == [posted[0]["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": "   \n "}, "content"),
        ({"content": "x" * 8001}, "content"),
        ({}, "content"),
        ({"content": 42, "files": "seven"}, "files"),
        ({"content": "hi", "model_alias": "gpt-5-ultra"}, "model_alias"),
        ({"content": "hi", "model_alias": "claude-sonnet"}, "model_alias"),  # not in this room
        ({"content": "hi", "files": [10**9]}, "files"),
        ({"content": 42}, "content"),
        ({"content": "a\x00b"}, "content"),
        ({"content": ["hi"]}, "content"),
        ({"content": "hi", "model_alias": 7}, "model_alias"),
        ({"content": "hi", "files": [True]}, "files"),
        ({"content": "hi", "files": [-3]}, "files"),
        ({"content": "hi", "files": {"id": 1}}, "files"),
    ],
)
def test_bad_turn_input_is_a_json_400_and_charges_nothing(api, user, body, field):
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    before = db_state(user)

    response = post_turn(api, room.pk, **body)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid" and field in response.json()["detail"]
    assert db_state(user) == before


def test_a_body_that_is_not_an_object_is_a_json_400(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = db_state(user)

    response = api.post(f"/api/v1/rooms/{room.pk}/turns/", ["hi"], format="json")

    assert response.status_code == 400 and response.json()["error"] == "invalid"
    assert db_state(user) == before


def test_malformed_json_is_a_json_400(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = db_state(user)

    response = api.post(
        f"/api/v1/rooms/{room.pk}/turns/", '{"content": "hi"', content_type="application/json"
    )

    assert response.status_code == 400 and response.json()["error"] == "parse_error"
    assert db_state(user) == before


def test_the_content_limit_is_a_setting(api, user, settings):
    settings.TURN_MAX_CONTENT_CHARS = 10
    room = RoomFactory(owner=user, agents=["gpt-4o"])

    assert post_turn(api, room.pk, content="x" * 11).status_code == 400
    assert post_turn(api, room.pk, content="x" * 10).status_code == 201


# --- Object-level access -------------------------------------------------------------


def test_another_users_rooms_turns_and_files_are_404(user, other_user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    notes = upload(user, "mine.txt", b"private")
    post_turn(logged_in(user), room.pk, content="mine")
    intruder = logged_in(other_user)
    own_room = RoomFactory(owner=other_user, agents=["gpt-4o"])
    before = db_state(other_user)

    responses = [
        intruder.get(f"/api/v1/rooms/{room.pk}/"),
        intruder.get(f"/api/v1/rooms/{room.pk}/turns/"),
        post_turn(intruder, room.pk, content="let me in"),
        intruder.get(f"/api/v1/files/{notes.pk}/"),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert all(r.json()["error"] == "not_found" for r in responses)
    assert intruder.get("/api/v1/rooms/").json()["results"] == [
        intruder.get(f"/api/v1/rooms/{own_room.pk}/").json()
    ]
    # Someone else's file id in a turn of one's own room: refused, and it never reaches a model.
    stolen = post_turn(intruder, own_room.pk, content="read it", files=[notes.pk])
    assert stolen.status_code == 400 and "files" in stolen.json()["detail"]
    assert db_state(other_user) == before
    assert Turn.objects.filter(user=other_user).count() == 0


# --- Query counts ------------------------------------------------------------------


def _turn_queries(api, room_id: int) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = post_turn(api, room_id, content="How many queries?")
    assert response.status_code == 201
    return len(captured)


def test_queries_per_turn_are_bounded_and_independent_of_history(api, user, django_assert_max_num_queries):
    meter.get_pricing_snapshot()  # the cache is loaded once per process, not per turn
    short = RoomFactory(owner=user, agents=["gpt-4o"])
    long = RoomFactory(owner=user, agents=["gpt-4o"])
    post_turn(api, short.pk, content="one earlier turn")
    for i in range(30):
        post_turn(api, long.pk, content=f"earlier turn {i}")

    # Session and user 2, the turn throttle's counter in the database cache 6 (none with Redis), the
    # turn's read 1, its write 5 (turn, messages, usage rows, wallet UPDATE, ledger rows), inside a
    # savepoint here (the test's transaction is open) 2.
    with django_assert_max_num_queries(16):
        post_turn(api, short.pk, content="bounded")

    assert _turn_queries(api, short.pk) == _turn_queries(api, long.pk)


def test_a_multi_agent_turn_adds_no_per_agent_reads(api, user):
    meter.get_pricing_snapshot()
    one = RoomFactory(owner=user, agents=["gpt-4o"])
    three = RoomFactory(owner=user, agents=["gpt-4o", "deepseek", "claude-haiku"])

    assert _turn_queries(api, three.pk) == _turn_queries(api, one.pk)


def test_the_multiplier_lookup_makes_no_query(django_assert_num_queries):
    meter.get_pricing_snapshot()

    with django_assert_num_queries(0):
        assert meter.get_model_multiplier("gpt-4o") == Decimal("2.0000")
        assert meter.get_pricing_snapshot().multiplier_for("claude-sonnet") == Decimal("1.5000")


# --- Schema --------------------------------------------------------------------------


def test_the_openapi_schema_documents_the_chat_endpoints(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    turns = schema["paths"]["/api/v1/rooms/{id}/turns/"]
    assert {"get", "post"} <= set(turns)
    post = turns["post"]
    assert {p["name"] for p in post["parameters"]} >= {"id", "Idempotency-Key"}
    assert {"201", "400", "402", "404", "409", "502"} <= set(post["responses"])
    result = schema["components"]["schemas"]["TurnResult"]
    assert {"balance", "credits_burned", "usage", "messages"} <= set(result["properties"])
    assert "/api/v1/files/" in schema["paths"] and "/api/v1/rooms/" in schema["paths"]
