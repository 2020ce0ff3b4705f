"""Routing a person can predict: @mentions decide, the manager only routes unnamed turns, and an
unreadable manager reply costs one agent (CHAT_ROUTING_FALLBACK), not all of them.

The manager and the agents are real LangChain OpenAI clients talking to a local
OpenAI-compatible server whose model answers what each test needs: prose, broken
JSON, an unknown alias, or a valid list.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.models import UsageEvent
from chat.mentions import parse_mentions
from chat.models import Turn
from tests.factories import RoomFactory
from tests.support.clients import logged_in

pytestmark = pytest.mark.django_db

ROOM = ["gpt-4o", "gpt-4o-mini"]
KNOWN = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "deepseek"]


@pytest.fixture
def routed(settings, openai_server, user):
    """A two-agent room whose manager (gpt-4o-mini on the local server) answers `reply`."""
    settings.CHAT_MANAGER_ALIAS = "gpt-4o-mini"

    def post(content: str, reply: str, **body):
        server = openai_server(reply=reply)
        room = RoomFactory(owner=user, agents=ROOM)
        response = logged_in(user).post(
            f"/api/v1/rooms/{room.pk}/turns/", {"content": content, **body}, format="json"
        )
        return server, response

    return post


def routing_calls(server) -> list[dict]:
    return [body for body in server.completions() if "You route messages" in body["messages"][0]["content"]]


def charged(turn_id: int) -> list[str]:
    rows = UsageEvent.objects.filter(turn_id=turn_id, metered=True, credits_burned__gt=0)
    return sorted(rows.values_list("model_alias", flat=True))


def test_a_mention_decides_without_any_routing_call_whatever_the_manager_would_say(routed):
    server, response = routed("@gpt-4o hello", reply="I think everyone should answer this one.")

    assert response.status_code == 201, response.content
    turn = response.json()
    assert turn["routing"] == {"by": "mention", "agents": ["gpt-4o"]}
    assert routing_calls(server) == []
    assert [body["model"] for body in server.completions()] == ["gpt-4o"]
    assert charged(turn["id"]) == ["gpt-4o"]


@pytest.mark.parametrize(
    "reply",
    [
        "Both agents could answer, but gpt-4o-mini is cheaper.",  # prose
        '{"agents": ["gpt-4o-mini", ',  # malformed JSON
        '{"agents": ["claude-opus"]}',  # an alias that is not in the room
        "[]",  # nobody
    ],
    ids=["prose", "malformed", "unknown-alias", "empty"],
)
def test_an_unreadable_routing_reply_costs_one_agent_and_says_so(routed, reply):
    server, response = routed("What do you think?", reply=reply)

    assert response.status_code == 201, response.content
    turn = response.json()
    assert turn["routing"] == {"by": "fallback", "agents": ["gpt-4o"]}  # the room's first agent
    assert len(routing_calls(server)) == 1
    assert charged(turn["id"]) == ["gpt-4o"]
    # The manager's call is recorded, unmetered.
    manager = UsageEvent.objects.get(turn_id=turn["id"], purpose="manager")
    assert manager.metered is False and manager.credits_burned == 0
    assert Turn.objects.get(pk=turn["id"]).routed_by == "fallback"


def test_the_fallback_can_be_every_agent(routed, settings):
    settings.CHAT_ROUTING_FALLBACK = "all"
    _server, response = routed("What do you think?", reply="No idea, sorry.")

    assert response.json()["routing"] == {"by": "fallback", "agents": ROOM}


def test_a_valid_routing_reply_is_followed_and_structured_output_was_asked_for(routed):
    server, response = routed("Who is cheapest?", reply=json.dumps({"agents": ["GPT-4o-mini"]}))

    turn = response.json()
    assert turn["routing"] == {"by": "manager", "agents": ["gpt-4o-mini"]}
    [routing] = routing_calls(server)
    assert routing["response_format"] == {"type": "json_object"}
    assert charged(turn["id"]) == ["gpt-4o-mini"]


def test_explicit_agents_win_over_mentions(routed):
    server, response = routed("@gpt-4o-mini hi", reply="ok", model_alias="gpt-4o")

    assert response.json()["routing"] == {"by": "explicit", "agents": ["gpt-4o"]}
    assert routing_calls(server) == []


def test_at_all_asks_every_agent(routed):
    _server, response = routed("@all please, everyone", reply="ok")

    turn = response.json()
    assert turn["routing"] == {"by": "mention", "agents": ROOM}
    assert charged(turn["id"]) == ROOM


def test_a_mention_of_a_model_outside_the_room_is_a_400_naming_the_room_agents(routed):
    server, response = routed("@claude-sonnet what do you think?", reply="ok")

    assert response.status_code == 400
    message = response.json()["detail"]["content"][0]
    assert "@claude-sonnet" in message and "@gpt-4o" in message and "@gpt-4o-mini" in message
    assert server.completions() == []
    assert not Turn.objects.exists()


@pytest.mark.parametrize(
    ("content", "agents"),
    [
        ("@gpt-4o hello", ["gpt-4o"]),
        ("hello @GPT-4o.", ["gpt-4o"]),  # case, and a full stop after the name
        ("@gpt-4o-mini, then @gpt-4o?", ["gpt-4o", "gpt-4o-mini"]),  # room order
        ("@gpt-4o's take", ["gpt-4o"]),
        ("(@gpt-4o-mini)", ["gpt-4o-mini"]),
        ("mail me@gpt-4o.example", []),  # inside a word: an address, not a mention
        ("@@gpt-4o", []),
        ("@dave says hi", []),  # a person, not a model
        ("@all", ["gpt-4o", "gpt-4o-mini"]),
        ("no mention at all", []),
    ],
)
def test_the_mention_grammar(content, agents):
    assert parse_mentions(content, room_agents=ROOM, known_aliases=KNOWN).agents == agents


@given(st.text(alphabet=st.sampled_from(list("@ gpt-4o-mini.,!?ALLdeepk_")), max_size=60))
def test_mentions_only_ever_name_agents_of_the_room_in_room_order(content):
    found = parse_mentions(content, room_agents=ROOM, known_aliases=KNOWN)
    assert found.agents == [agent for agent in ROOM if agent in found.agents]
    assert set(found.outside) <= set(KNOWN) - set(ROOM)
