"""The quote before sending, and the hold an enforce-mode turn places: equal, a true upper
bound, settled at the real cost, released when nothing ran, refused (402) with what is missing."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from billing.models import CreditHold, CreditTransaction, CreditWallet
from billing.services import wallet_debit
from tests.chat.helpers import balance_of, upload
from tests.factories import RoomFactory
from tests.reliability.audit import assert_books_balance
from tests.support.clients import logged_in

pytestmark = pytest.mark.django_db


def quote(api, room, **body):
    response = api.post(f"/api/v1/rooms/{room.pk}/quote", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def post_turn(api, room, **body):
    return api.post(f"/api/v1/rooms/{room.pk}/turns/", body, format="json")


@pytest.fixture
def enforce(settings):
    settings.CREDIT_ENFORCEMENT = "enforce"


def test_the_quote_names_each_answering_agent_and_calls_no_model(api, user, openai_server):
    server = openai_server()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])

    body = quote(api, room, content="@gpt-4o what is 2+2?")

    assert server.completions() == []
    assert body["routing"] == {"by": "mention", "agents": ["gpt-4o"], "upper_bound": False}
    [agent] = body["agents"]
    assert agent["model_alias"] == "gpt-4o" and agent["multiplier"] == "2.0000"
    assert agent["max_output_tokens"] == 1000 and agent["input_tokens"] > 0
    assert Decimal(agent["credits_low"]) < Decimal(agent["credits_high"])
    assert (body["credits_low"], body["credits_high"]) == (agent["credits_low"], agent["credits_high"])
    # An unnamed turn in a multi-agent room: the manager picks, so every agent is counted.
    unnamed = quote(api, room, content="what is 2+2?")
    assert unnamed["routing"]["upper_bound"] is True
    assert [a["model_alias"] for a in unnamed["agents"]] == ["gpt-4o", "deepseek"]


def test_files_and_history_raise_the_quote(api, user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    bare = quote(api, room, content="Summarize")
    notes = upload(user, "notes.txt", ("a long line of notes " * 400).encode())
    with_file = quote(api, room, content="Summarize", files=[notes.pk])
    assert with_file["agents"][0]["input_tokens"] > bare["agents"][0]["input_tokens"]
    assert Decimal(with_file["credits_high"]) > Decimal(bare["credits_high"])
    post_turn(api, room, content="An earlier question with many words " * 20)
    later = quote(api, room, content="Summarize")
    assert later["agents"][0]["input_tokens"] > bare["agents"][0]["input_tokens"]


def test_an_enforce_turn_places_a_hold_equal_to_the_quote_and_settles_it_at_the_real_cost(
    api, user, enforce, monkeypatch
):
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    expected = quote(api, room, content="@all hello")["credits_high"]
    seen = []
    from billing.services import holds

    real_place = holds.hold_place

    def spy(**kwargs):
        hold = real_place(**kwargs)
        seen.append(CreditWallet.objects.get(user=user).held)
        return hold

    monkeypatch.setattr("chat.services.turns.hold_place", spy)
    before = balance_of(user)

    response = post_turn(api, room, content="@all hello")

    assert response.status_code == 201, response.content
    [hold] = CreditHold.objects.filter(wallet__user=user)
    assert str(hold.amount) == expected and seen == [Decimal(expected)]
    assert hold.status == "settled" and hold.closed_at is not None
    wallet = CreditWallet.objects.get(user=user)
    assert wallet.held == 0
    charged = Decimal(response.json()["credits_burned"])
    assert 0 < charged <= hold.amount
    assert wallet.balance == before - charged
    assert_books_balance()


def test_a_turn_the_wallet_cannot_cover_is_refused_before_any_model_runs(api, user, enforce, openai_server):
    server = openai_server()
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    wallet = CreditWallet.objects.get(user=user)
    wallet_debit(wallet_id=wallet.pk, amount=wallet.balance - Decimal("0.5"))
    needed = quote(api, room, content="hello")["credits_high"]

    response = post_turn(api, room, content="hello")

    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "insufficient_credits"
    assert (body["needed"], body["available"]) == (needed, "0.5000")
    assert Decimal(body["missing"]) == Decimal(needed) - Decimal("0.5")
    assert "administrator" in body["detail"]
    assert server.completions() == []
    assert not CreditHold.objects.exists()


def test_a_provider_failure_before_any_call_ran_releases_the_hold(api, user, enforce, openai_server):
    openai_server(fail_models={"gpt-4o"})
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = balance_of(user)

    assert post_turn(api, room, content="hello").status_code == 502

    [hold] = CreditHold.objects.all()
    assert hold.status == "released"
    assert CreditWallet.objects.get(user=user).held == 0 and balance_of(user) == before
    assert not CreditTransaction.objects.filter(kind="debit").exists()


def test_a_provider_writing_past_max_tokens_is_billed_in_full_and_logged_as_an_overdraft(
    api, user, enforce, openai_server, settings, caplog
):
    settings.CREDIT_HOLD_OUTPUT_TOKENS = 5
    openai_server(completion_tokens=200_000, ignore_max_tokens=True)
    room = RoomFactory(owner=user, agents=["gpt-4o"])

    with caplog.at_level(logging.WARNING, logger="billing.services.usage"):
        response = post_turn(api, room, content="hello")

    assert response.status_code == 201
    [usage] = response.json()["usage"]
    assert usage["output_tokens"] == 200_000  # billed in full, as reported
    [hold] = CreditHold.objects.all()
    assert Decimal(usage["credits_burned"]) > hold.amount
    assert any("hold overdraft" in r.getMessage() for r in caplog.records)
    assert CreditWallet.objects.get(user=user).held == 0
    assert_books_balance()


def test_provider_calls_are_capped_at_the_hold_output_tokens(api, user, openai_server, settings):
    settings.CREDIT_HOLD_OUTPUT_TOKENS = 321
    server = openai_server()
    room = RoomFactory(owner=user, agents=["gpt-4o"])

    assert post_turn(api, room, content="hello").status_code == 201

    [call] = server.timings()
    assert call["max_tokens"] == 321


def test_the_wallet_shows_held_and_available_and_active_holds_are_listed(user):
    from billing.services import hold_place

    api = logged_in(user)
    hold = hold_place(user_id=user.pk, amount=Decimal("12.5"), description="turn in room 1")

    wallet = api.get("/api/v1/users/me/wallet").json()
    assert (wallet["balance"], wallet["held"], wallet["available"]) == ("500.0000", "12.5000", "487.5000")
    [listed] = api.get("/api/v1/users/me/holds").json()
    assert listed["id"] == hold.pk and listed["amount"] == "12.5000" and listed["status"] == "active"
