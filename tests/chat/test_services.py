"""chat.services: the metered turn — routing, metering, one commit, and nothing on failure."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import DatabaseError, transaction

from billing import meter
from billing.meter import credits_for
from billing.models import CreditTransaction, CreditWallet, UsageEvent
from billing.services import pricing_update_multiplier
from chat import llm, services
from chat.llm.tokens import text_tokens
from chat.models import Message, Turn
from tests.chat.helpers import balance_of, db_state, failing_insert, upload
from tests.factories import RoomFactory, UserFactory, UserWithoutWalletFactory
from tests.support.clients import logged_in

pytestmark = pytest.mark.django_db


def post_turn(client, room, **body):
    return client.post(f"/api/v1/rooms/{room.pk}/turns/", body, format="json")


def test_a_single_agent_turn_is_metered_debited_and_linked(user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = balance_of(user)

    payload = services.turn_post(user=user, room_id=room.pk, content="  Hello there  ").payload

    [event] = UsageEvent.objects.filter(turn_id=payload["id"])
    assert (event.purpose, event.model_alias, event.provider_model) == ("agent", "gpt-4o", "offline/gpt-4o")
    assert event.metered and event.input_tokens > 0 and event.output_tokens > 0
    assert (event.multiplier, event.pricing_version) == (Decimal("2.0000"), "2026-02-20")
    assert event.credits_burned == credits_for(event.input_tokens, event.output_tokens, Decimal(2))
    assert (event.user_id, event.room_id) == (user.pk, room.pk)
    [debit] = CreditTransaction.objects.filter(kind="debit")
    assert debit.usage_event_id == event.pk and debit.amount == -event.credits_burned
    turn = Turn.objects.get(pk=payload["id"])
    assert turn.content == "Hello there" and turn.credits_burned == event.credits_burned
    assert balance_of(user) == before - event.credits_burned == Decimal(payload["balance"])
    assert [(m.role, m.model_alias) for m in Message.objects.filter(turn=turn)] == [
        ("user", ""),
        ("assistant", "gpt-4o"),
    ]
    assert payload["messages"][1]["content"].startswith("gpt-4o (offline)")


def test_a_user_without_a_wallet_gets_one_with_the_beta_grant_at_the_first_turn(settings):
    # The turn reads the wallet joined to the room; with no wallet yet it creates one.
    settings.BETA_GRANT_CREDITS = Decimal("500")
    owner = UserWithoutWalletFactory()
    room = RoomFactory(owner=owner, agents=["gpt-4o"])

    payload = services.turn_post(user=owner, room_id=room.pk, content="first words").payload

    wallet = CreditWallet.objects.get(user=owner)
    [event] = UsageEvent.objects.filter(turn_id=payload["id"])
    assert list(wallet.transactions.order_by("id").values_list("kind", "amount")) == [
        ("grant", Decimal("500.0000")),
        ("debit", -event.credits_burned),
    ]
    assert wallet.balance == Decimal("500") - event.credits_burned == Decimal(payload["balance"])


def test_a_multi_agent_turn_has_an_unmetered_manager_and_one_debit_per_agent_call(user):
    room = RoomFactory(owner=user, agents=["gpt-4o", "claude-haiku", "deepseek"])
    before = balance_of(user)

    payload = services.turn_post(user=user, room_id=room.pk, content="What do you all think of tea?").payload

    events = list(UsageEvent.objects.filter(turn_id=payload["id"]).order_by("id"))
    manager, *agents = events
    assert (manager.purpose, manager.metered, manager.credits_burned) == ("manager", False, Decimal(0))
    assert [(e.purpose, e.model_alias, e.metered) for e in agents] == [
        ("agent", "gpt-4o", True),
        ("agent", "claude-haiku", True),
        ("agent", "deepseek", True),
    ]
    for event in agents:
        expected = credits_for(
            event.input_tokens, event.output_tokens, meter.get_model_multiplier(event.model_alias)
        )
        assert event.credits_burned == expected
    debits = list(CreditTransaction.objects.filter(kind="debit").order_by("id"))
    assert [d.usage_event_id for d in debits] == [e.pk for e in agents]
    assert [-d.amount for d in debits] == [e.credits_burned for e in agents]
    burned = sum((e.credits_burned for e in events), Decimal(0))
    assert Decimal(payload["credits_burned"]) == burned
    assert balance_of(user) == before - burned == Decimal(payload["balance"])
    assert debits[-1].balance_after == balance_of(user)
    assert [m["model_alias"] for m in payload["messages"]] == ["", "gpt-4o", "claude-haiku", "deepseek"]
    assert [u["purpose"] for u in payload["usage"]] == ["manager", "agent", "agent", "agent"]
    call_command("reconcile_wallets")  # exits 1 on any drift


def test_an_explicit_alias_and_a_mention_both_skip_the_routing_call(user):
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])

    explicit = services.turn_post(user=user, room_id=room.pk, content="Hi", model_alias="deepseek").payload
    mentioned = services.turn_post(user=user, room_id=room.pk, content="@gpt-4o only you please").payload

    assert [(u["purpose"], u["model_alias"]) for u in explicit["usage"]] == [("agent", "deepseek")]
    assert [(u["purpose"], u["model_alias"]) for u in mentioned["usage"]] == [("agent", "gpt-4o")]
    assert (explicit["routing"]["by"], mentioned["routing"]["by"]) == ("explicit", "mention")


def test_tokens_and_credits_come_from_the_providers_usage_block(api, user, openai_server):
    server = openai_server(prompt_tokens=123, completion_tokens=45, reply="Bonjour.")
    room = RoomFactory(owner=user, agents=["gpt-4o"])

    response = post_turn(api, room, content="Say hello in French")

    assert response.status_code == 201, response.json()
    body = response.json()
    [usage] = body["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (123, 45)
    assert usage["provider_model"] == "openai/gpt-4o"
    # (123 + 45) / 1000 × 1 credit × multiplier 2.0
    assert usage["credits_burned"] == body["credits_burned"] == "0.3360"
    assert body["balance"] == "499.6640" == str(balance_of(user))
    assert body["messages"][1] == {"role": "assistant", "model_alias": "gpt-4o", "content": "Bonjour."}
    event = UsageEvent.objects.get(turn_id=body["id"])
    assert (event.input_tokens, event.output_tokens, event.credits_burned) == (123, 45, Decimal("0.3360"))
    assert len(server.completions()) == 1


def test_agents_see_the_rooms_recent_history(user, openai_server, settings):
    settings.CHAT_HISTORY_TURNS = 2
    server = openai_server(reply="Noted.")
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    for text in ("first", "second", "third", "fourth"):
        services.turn_post(user=user, room_id=room.pk, content=text)

    last = server.completions()[-1]["messages"]

    assert last[0]["role"] == "system"
    assert [(m["role"], m["content"]) for m in last[1:]] == [
        ("user", "second"),
        ("assistant", "[gpt-4o] Noted."),
        ("user", "third"),
        ("assistant", "[gpt-4o] Noted."),
        ("user", "fourth"),
    ]


def test_a_zero_token_call_is_recorded_without_a_debit_row(api, user, openai_server):
    openai_server(prompt_tokens=0, completion_tokens=0)
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = db_state(user)

    response = post_turn(api, room, content="Nothing to count")

    assert response.status_code == 201
    assert response.json()["credits_burned"] == "0.0000"
    assert UsageEvent.objects.get(turn_id=response.json()["id"]).credits_burned == Decimal(0)
    assert db_state(user)["ledger"] == before["ledger"]
    assert balance_of(user) == before["balance"] == Decimal(response.json()["balance"])


def test_the_price_is_the_one_in_force_at_commit(user, monkeypatch):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    real_run_agent = llm.run_agent

    def run_agent_then_reprice(**kwargs):
        answer = real_run_agent(**kwargs)
        # Staff edit the price while the model is answering.
        pricing_update_multiplier(model_alias="gpt-4o", multiplier="3.5", changed_by=None, source="command")
        meter.reload_pricing_cache()
        return answer

    monkeypatch.setattr(llm, "run_agent", run_agent_then_reprice)

    payload = services.turn_post(user=user, room_id=room.pk, content="Price me").payload

    [usage] = payload["usage"]
    assert usage["multiplier"] == "3.5000"
    event = UsageEvent.objects.get(pk=usage["id"])
    assert event.credits_burned == credits_for(event.input_tokens, event.output_tokens, Decimal("3.5"))


def test_one_agent_failing_fails_the_turn_and_bills_the_calls_that_ran(user, openai_server):
    server = openai_server(fail_models={"gpt-4o"})
    room = RoomFactory(owner=user, agents=["gpt-4o-mini", "gpt-4o"])
    api = logged_in(user)
    before = balance_of(user)

    response = post_turn(api, room, content="Both of you, please", agents=["gpt-4o-mini", "gpt-4o"])

    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "provider_error" and body["model_alias"] == "gpt-4o"
    turn = body["turn"]
    assert turn["status"] == "failed" and turn["error"]["code"] == "provider_error"
    # gpt-4o-mini answered: recorded and charged; gpt-4o failed before answering: nothing to bill.
    assert sorted(body["model"] for body in server.completions()) == ["gpt-4o", "gpt-4o-mini"]
    assert [(u["purpose"], u["model_alias"], u["usage_source"]) for u in turn["usage"]] == [
        ("agent", "gpt-4o-mini", "provider"),
    ]
    charged = UsageEvent.objects.get(turn_id=turn["id"], model_alias="gpt-4o-mini").credits_burned
    assert charged > 0 and Decimal(turn["credits_burned"]) == charged
    assert balance_of(user) == before - charged == Decimal(turn["balance"])
    assert Turn.objects.get(pk=turn["id"]).status == "failed"


def test_a_provider_stream_without_usage_is_counted_and_marked_estimated(api, user, openai_server):
    openai_server(omit_usage=True, reply="An answer without a usage block")
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = balance_of(user)

    response = post_turn(api, room, content="hi")

    assert response.status_code == 201
    [usage] = response.json()["usage"]
    assert usage["usage_source"] == "estimated"
    assert usage["output_tokens"] == text_tokens("gpt-4o", "An answer without a usage block")
    assert balance_of(user) == before - Decimal(usage["credits_burned"])


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_database_error_at_commit_rolls_back_the_turn_and_the_debit():
    # A real commit (no test transaction around it): every statement of the turn runs, the
    # wallet UPDATE and the ledger INSERT included, then PostgreSQL refuses the COMMIT.
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    api = logged_in(user)
    before = db_state(user)

    with failing_insert("billing_credittransaction", "connection lost at commit", at_commit=True):
        response = post_turn(api, room, content="Commit me", model_alias="deepseek")
        assert response.status_code == 500
        assert response.json() == {"error": "server_error", "detail": "Internal server error."}
        assert db_state(user) == before

    # The same turn, once the fault is gone, commits and charges once.
    assert post_turn(api, room, content="Commit me", model_alias="deepseek").status_code == 201
    assert CreditTransaction.objects.filter(wallet__user=user, kind="debit").count() == 1


def test_a_failing_insert_inside_the_transaction_leaves_nothing(user):
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    notes = upload(user, "n.txt", b"notes")
    before = db_state(user)

    with failing_insert("chat_llmcallevent", "disk full"), pytest.raises(DatabaseError, match="disk full"):
        services.turn_post(user=user, room_id=room.pk, content="Read it", file_ids=[notes.pk])

    # Inside the caller's (here the test's) transaction, the failure rolled back to a savepoint.
    assert db_state(user) == before


def test_a_tool_crash_after_a_model_call_fails_the_turn_and_bills_the_call(api, user, monkeypatch):
    from chat.tools import file_read

    room = RoomFactory(owner=user, agents=["gpt-4o"])
    notes = upload(user, "n.txt", b"notes")

    def crash(payload: dict) -> str:
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(file_read, "tool_result", crash)
    before = db_state(user)

    response = post_turn(api, room, content="Read my notes", files=[notes.pk])

    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "tool_failed" and body["tool_name"] == "file_read"
    # The model call that asked for the tool ran: recorded and charged with the failed turn.
    [usage] = body["turn"]["usage"]
    assert body["turn"]["status"] == "failed" and usage["usage_source"] == "provider"
    assert balance_of(user) == before["balance"] - Decimal(usage["credits_burned"])


def test_enforcement_refuses_with_402_before_any_model_call(api, user, openai_server, settings):
    settings.CREDIT_ENFORCEMENT = "enforce"
    settings.CREDIT_HOLD_OUTPUT_TOKENS = 1_000_000  # 1000 credits × 2.0 per gpt-4o call, at most
    server = openai_server()
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    before = db_state(user)

    response = post_turn(api, room, content="Expensive question")

    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "insufficient_credits"
    assert body["available"] == "500.0000"
    assert Decimal(body["needed"]) > Decimal(2000)
    assert server.requests == []
    assert db_state(user) == before

    settings.CREDIT_HOLD_OUTPUT_TOKENS = 100
    assert post_turn(api, room, content="Cheap question").status_code == 201


def test_observe_mode_never_blocks_even_a_negative_balance(api, user, settings):
    settings.CREDIT_ENFORCEMENT = "observe"
    settings.CREDIT_HOLD_OUTPUT_TOKENS = 10**9
    room = RoomFactory(owner=user, agents=["gpt-4o"])

    assert post_turn(api, room, content="Go").status_code == 201


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_no_transaction_is_open_while_models_run(user, monkeypatch):
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    seen = []
    real_route, real_run = llm.route_turn, llm.run_agent

    def route(**kwargs):
        seen.append(transaction.get_connection().in_atomic_block)
        return real_route(**kwargs)

    def run(**kwargs):
        seen.append(transaction.get_connection().in_atomic_block)
        return real_run(**kwargs)

    monkeypatch.setattr(llm, "route_turn", route)
    monkeypatch.setattr(llm, "run_agent", run)

    services.turn_post(user=user, room_id=room.pk, content="Anyone?", idempotency_key="k-1")

    assert seen == [False, False, False]
    call_command("reconcile_wallets")
