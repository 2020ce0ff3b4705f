"""Enforce mode over HTTP: holds never let a wallet be overspent, under concurrency or crashes.

gunicorn (gthread workers, as the Procfile runs it) on the test database, the
real LangChain OpenAI client in front of a local OpenAI-compatible server that
takes a moment to answer, so many turns hold credits at the same time.
"""

from __future__ import annotations

import http.client
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from decimal import Decimal

import pytest
from django.core.management import call_command
from knox.models import AuthToken

from billing.models import CreditHold, CreditTransaction, CreditWallet
from billing.services import wallet_adjust, wallet_grant
from chat.services import turn_quote_for
from tests.factories import RoomFactory, UserFactory
from tests.reliability.audit import assert_books_balance
from tests.support.fake_openai import FakeOpenAI
from tests.support.faults import HeldOpenAI, gunicorn_workers
from tests.support.gunicorn_server import gunicorn_server

pytestmark = [pytest.mark.gunicorn, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
GTHREAD = ("--worker-class", "gthread", "--threads", "16")
CONTENT = "How many credits will this cost?"


def enforce_env(provider: FakeOpenAI, **extra: object) -> dict:
    return {
        "CREDIT_ENFORCEMENT": "enforce",
        "OPENAI_API_KEY": "sk-test-openai-not-a-real-key",
        "OPENAI_BASE_URL": provider.base_url,
        "ANTHROPIC_API_KEY": "",
        "GOOGLE_API_KEY": "",
        "DEEPSEEK_API_KEY": "",
        "TAVILY_API_KEY": "",
        "LLM_MAX_RETRIES": 0,
        "PRICING_VERSION_CHECK_SECONDS": 60,
        **extra,
    }


def customer_with_turns_left(settings, provider: FakeOpenAI, turns: float, **extra: object):
    """A user whose wallet covers about `turns` holds of the test turn (quoted as the server will)."""
    for name, value in enforce_env(provider, **extra).items():
        setattr(settings, name, value)
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    hold = turn_quote_for(user=user, room_id=room.pk, content=CONTENT).credits_high
    wallet = CreditWallet.objects.get(user=user)
    keep = (hold * Decimal(str(turns))).quantize(Decimal("0.0001"))
    if keep > wallet.balance:
        wallet_grant(wallet_id=wallet.pk, amount=keep - wallet.balance, description="test: a few turns")
    else:
        wallet_adjust(wallet_id=wallet.pk, amount=keep - wallet.balance, description="test: a few turns")
    _, token = AuthToken.objects.create(user)
    return user, room, token, hold, keep


def test_64_concurrent_turns_never_overspend_and_refuse_only_what_cannot_be_held(settings):
    # No history in the prompt: every turn of the room is quoted alike, however many have
    # committed by the time it is checked (the bulkhead admits the 64 one after another).
    same_quote = {"CHAT_HISTORY_TURNS": 0}
    with FakeOpenAI(delay=0.3, token_interval=0.01, reply="A short answer.") as provider:
        user, room, token, hold, start = customer_with_turns_left(settings, provider, 10.5, **same_quote)
        env = enforce_env(provider, **same_quote)
        with gunicorn_server(workers=3, env=env, extra_args=GTHREAD) as server:

            def post(n: int):
                return server.request(
                    "POST",
                    f"/api/v1/rooms/{room.pk}/turns/",
                    {"content": CONTENT},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )

            with ThreadPoolExecutor(max_workers=32) as pool:
                results = list(pool.map(post, range(64)))

    statuses = [status for status, _ in results]
    assert set(statuses) <= {201, 402}, results
    completed = [body for status, body in results if status == 201]
    refused = [body for status, body in results if status == 402]
    assert completed and refused, statuses
    for body in refused:
        # Each refusal happened while what was available could not cover that turn's hold.
        assert Decimal(body["needed"]) == hold
        assert Decimal(body["available"]) < Decimal(body["needed"])
    debits = CreditTransaction.objects.filter(wallet__user=user, kind="debit", usage_event__isnull=False)
    spent = -sum((d.amount for d in debits), Decimal(0))
    assert spent <= start
    # The balance never went below zero: not at the end, not after any debit.
    wallet = CreditWallet.objects.get(user=user)
    assert wallet.balance >= 0 and wallet.held == 0
    assert all(d.balance_after >= 0 for d in debits)
    assert not CreditHold.objects.filter(status="active").exists()
    assert CreditHold.objects.filter(wallet=wallet, status="settled").count() == len(completed)
    assert_books_balance()


def test_a_worker_killed_mid_turn_leaves_a_hold_that_expires_and_is_released(settings):
    with HeldOpenAI() as provider:
        user, room, token, hold, start = customer_with_turns_left(settings, provider, 3)
        env = enforce_env(provider, HOLD_LEASE_SECONDS="2")
        with gunicorn_server(workers=2, env=env, extra_args=GTHREAD) as server, ThreadPoolExecutor(1) as pool:
            provider.hold()
            pending = pool.submit(
                server.request,
                "POST",
                f"/api/v1/rooms/{room.pk}/turns/",
                {"content": CONTENT},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            provider.wait_for_arrivals(1)
            assert CreditWallet.objects.get(user=user).held == hold
            for worker in gunicorn_workers(server.process.pid):
                os.kill(worker, signal.SIGKILL)  # the turn dies with its worker, its hold stays
            provider.release()
            with suppress(OSError, http.client.HTTPException):
                pending.result(timeout=30)  # the connection died with the worker

    wallet = CreditWallet.objects.get(user=user)
    if wallet.held:
        time.sleep(2.1)  # the hold's lease runs out
        call_command("release_expired_holds")
        wallet.refresh_from_db()
    assert wallet.held == 0
    assert not CreditHold.objects.filter(status="active").exists()
    assert wallet.balance == start  # the killed turn committed nothing, so charged nothing
    assert_books_balance()
