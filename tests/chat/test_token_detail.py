"""Cached input and reasoning tokens: recorded when the provider reports them, shown and exported,
never priced on their own (the formula stays input + output)."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from billing.meter import credits_for
from billing.models import UsageEvent
from tests.factories import RoomFactory

pytestmark = pytest.mark.django_db


def test_the_providers_token_detail_is_recorded_shown_and_exported(api, user, openai_server):
    openai_server(prompt_tokens=1200, completion_tokens=300, cached_tokens=1024, reasoning_tokens=180)
    room = RoomFactory(owner=user, agents=["gpt-4o"])

    turn = api.post(f"/api/v1/rooms/{room.pk}/turns/", {"content": "think hard"}, format="json").json()

    [usage] = turn["usage"]
    assert (usage["cached_input_tokens"], usage["reasoning_tokens"]) == (1024, 180)
    event = UsageEvent.objects.get(pk=usage["id"])
    assert (event.input_tokens, event.output_tokens) == (1200, 300)
    assert event.credits_burned == credits_for(1200, 300, Decimal("2")) == Decimal(usage["credits_burned"])
    [row] = api.get("/api/v1/users/me/usage").json()["results"]
    assert (row["cached_input_tokens"], row["reasoning_tokens"]) == (1024, 180)
    exported = list(
        csv.DictReader(
            io.StringIO(b"".join(api.get("/api/v1/users/me/usage?format=csv").streaming_content).decode())
        )
    )
    assert (exported[0]["cached_input_tokens"], exported[0]["reasoning_tokens"]) == ("1024", "180")
    page = api.get(f"/rooms/{room.pk}/").content.decode()
    assert "of which 1024 cached input · 180 reasoning" in page


def test_no_detail_reported_is_zero(api, user, openai_server):
    openai_server()
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    turn = api.post(f"/api/v1/rooms/{room.pk}/turns/", {"content": "hi"}, format="json").json()
    [usage] = turn["usage"]
    assert (usage["cached_input_tokens"], usage["reasoning_tokens"]) == (0, 0)
