"""Faults under the real server: gunicorn workers, PostgreSQL, an OpenAI-protocol provider.

Each fault must leave no partial turn, no charge without a usage event and no
usage event without its charge (`assert_books_balance`), answer JSON when
there is anyone left to answer, and let the same request succeed afterwards.

How each fault is made (all on 127.0.0.1, no mocks inside the app):
- the database connection dropping: `pg_terminate_backend` on the backends
  that belong to the very worker running the turn (found by the worker's
  socket in /proc), either while the provider holds the model call, or while
  the turn's transaction is stopped *inside* its commit by a trigger that
  waits on an advisory lock (turn, messages, events and the wallet UPDATE done,
  nothing committed) — a failover or a network cut at the worst moment;
  and, separately, while the worker is idle between requests, which kills the
  connection parked in its pool;
- a provider timing out: the fake provider holds its answer past
  LLM_TIMEOUT_SECONDS;
- a worker killed mid-turn: SIGKILL of the worker whose socket the fake
  provider (or PostgreSQL) sees, inside the model call or inside the commit.
The NOTIFY listener losing its connection is covered by
tests/billing/test_propagation.py (in-process and across gunicorn workers).
"""

from __future__ import annotations

import http.client
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from chat.models import Turn, TurnIdempotencyKey
from tests.factories import RoomFactory, UserFactory
from tests.reliability.audit import assert_books_balance, snapshot
from tests.support.clients import token_for
from tests.support.faults import (
    POSTGRES_PORT,
    HeldOpenAI,
    backends_of_process,
    commit_gate,
    gunicorn_workers,
    socket_owner,
)
from tests.support.gunicorn_server import GunicornServer, gunicorn_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.gunicorn
transactional = pytest.mark.django_db(transaction=True, serialized_rollback=True)
LEASE_SECONDS = 2


def server_env(provider: HeldOpenAI, **extra) -> dict:
    return {
        # gpt-4o (and the manager) call the fake provider; the other aliases stay offline.
        "OPENAI_API_KEY": "sk-test-openai-not-a-real-key",
        "OPENAI_BASE_URL": provider.base_url,
        "ANTHROPIC_API_KEY": "",
        "GOOGLE_API_KEY": "",
        "DEEPSEEK_API_KEY": "",
        "TAVILY_API_KEY": "",
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT_SECONDS": "30",
        "IDEMPOTENCY_LEASE_SECONDS": str(LEASE_SECONDS),
        "PRICING_VERSION_CHECK_SECONDS": "60",
        **extra,
    }


class Customer:
    """One user with a one-agent room, talking to the server over HTTP with a bearer token."""

    def __init__(self, server: GunicornServer) -> None:
        self.user = UserFactory()
        self.room = RoomFactory(owner=self.user, agents=["gpt-4o"])
        self.token = token_for(self.user)
        self.server = server

    def post_turn(self, content: str, *, key: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {self.token}"}
        if key:
            headers["Idempotency-Key"] = key
        return self.server.request(
            "POST",
            f"/api/v1/rooms/{self.room.pk}/turns/",
            {"content": content},
            headers=headers,
            timeout=timeout,
        )


def terminate(backends: list[int]) -> None:
    with connection.cursor() as cursor:
        for backend in backends:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])


def backend_alive(backend: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend])
        return cursor.fetchone() is not None


def assert_retry_runs_once(customer: Customer, key: str, before: dict) -> dict:
    """The same request again, same key: 201, exactly one more turn, charged once."""
    status, body = customer.post_turn("Please answer now.", key=key)
    assert status == 201, body
    after = snapshot()
    assert after["turns"] == before["turns"] + 1
    assert Turn.objects.filter(pk=body["id"]).exists()
    stored = TurnIdempotencyKey.objects.get(user=customer.user, key=key)
    assert (stored.status, stored.turn_id) == (TurnIdempotencyKey.Status.DONE, body["id"])
    # A replay now is free.
    status, replay = customer.post_turn("Please answer now.", key=key)
    assert (status, replay["id"], replay["balance"]) == (201, body["id"], body["balance"])
    assert snapshot() == after
    assert_books_balance()
    return body


# --- the database connection drops ------------------------------------------------


@transactional
@pytest.mark.parametrize("moment", ["model_call", "commit"])
def test_database_connection_dropping_mid_turn_fails_cleanly_and_the_retry_works(moment):
    """While the model runs the turn holds no connection: cutting the worker's connections then
    costs nothing (the commit takes a fresh, health-checked one). Cut inside the commit's
    transaction, nothing is written or charged and the retry runs once."""
    with HeldOpenAI() as provider, gunicorn_server(workers=2, env=server_env(provider)) as server:
        customer = Customer(server)
        status, body = customer.post_turn("A first turn that works.")
        assert status == 201, body
        before = snapshot()
        key = f"db-drop-{moment}"
        with ThreadPoolExecutor(max_workers=1) as pool:
            if moment == "model_call":
                provider.hold()
                pending = pool.submit(customer.post_turn, "Please answer now.", key=key)
                caller = provider.wait_for_arrivals(2)["client"]
                worker = socket_owner(local_port=caller[1], candidates=gunicorn_workers(server.process.pid))
                assert worker is not None, "no worker holds the provider call's socket"
                with connection.cursor() as cursor:
                    cut = backends_of_process(cursor, worker)
                assert cut, f"worker {worker} has no database connection"
                terminate(cut)
                provider.release()
                status, body = pending.result(timeout=30)
                assert status == 201, body
                assert body["status"] == "completed" and len(body["usage"]) == 1
                assert snapshot()["ledger"] == before["ledger"] + 1
                assert_books_balance()
                return
            else:
                with commit_gate(wallet_id=customer.user.wallet.pk) as gate:
                    pending = pool.submit(customer.post_turn, "Please answer now.", key=key)
                    backend, _ = gate.wait_for_waiter()
                    # Stopped inside the transaction: rows written, wallet updated, nothing committed.
                    assert gate.waiter_in_transaction(backend)
                    terminate([backend])
                    status, body = pending.result(timeout=30)
        assert status == 503, body
        assert body["error"] == "database_unavailable", body
        # Nothing of the turn is left, nothing was charged, and the key was released.
        assert snapshot() == before, server.log()
        assert_books_balance()
        assert_retry_runs_once(customer, key, before)
        assert "OperationalError" in server.log()  # the failure was logged, not swallowed


@transactional
def test_a_connection_dropped_while_idle_in_the_pool_is_not_handed_to_a_request():
    """A database restart kills the connections parked in every worker's pool."""
    with HeldOpenAI() as provider, gunicorn_server(workers=2, env=server_env(provider)) as server:
        customer = Customer(server)
        status, body = customer.post_turn("Before the restart.")
        assert status == 201, body
        # Concurrent /healthz calls reach every worker: each pool now parks a connection.
        workers = set(server.wait_for_workers(2))
        assert workers == gunicorn_workers(server.process.pid)
        with connection.cursor() as cursor:
            # Per worker: the pooled connection(s) and the pricing listener's.
            cut = {worker: backends_of_process(cursor, worker) for worker in workers}
        assert all(len(backends) >= 2 for backends in cut.values()), cut
        terminate([backend for backends in cut.values() for backend in backends])
        wait_until(
            lambda: not any(backend_alive(b) for backends in cut.values() for b in backends),
            message="the terminated backends to be gone",
        )
        # Concurrent again, so every worker's pool is asked for its (dead) parked connection.
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda n: customer.post_turn(f"After the restart {n}."), range(8)))
        assert [status for status, _ in results] == [201] * 8, results
        assert_books_balance()


# --- the provider times out ----------------------------------------------------------


@transactional
def test_a_provider_timeout_is_a_502_that_writes_nothing_and_releases_the_key():
    with (
        HeldOpenAI() as provider,
        gunicorn_server(workers=1, env=server_env(provider, LLM_TIMEOUT_SECONDS="1")) as server,
    ):
        customer = Customer(server)
        before = snapshot()
        provider.hold()  # answers nothing until released: past the 1 s timeout
        status, body = customer.post_turn("Please answer now.", key="timeout-key")
        assert status == 502, body
        assert body["error"] == "provider_error", body
        assert provider.arrivals == 1
        assert snapshot() == before
        assert not TurnIdempotencyKey.objects.filter(key="timeout-key").exists()
        provider.release()
        assert_retry_runs_once(customer, "timeout-key", before)


# --- a worker dies mid-turn -------------------------------------------------------------


def post_expecting_no_answer(customer: Customer, key: str) -> str:
    try:
        status, body = customer.post_turn("Please answer now.", key=key)
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    raise AssertionError(f"a killed worker answered {status} {body}")


@transactional
@pytest.mark.parametrize("moment", ["model_call", "commit"])
def test_a_worker_killed_mid_turn_charges_nothing_and_the_retry_runs_once_after_the_lease(moment):
    with HeldOpenAI() as provider, gunicorn_server(workers=2, env=server_env(provider)) as server:
        customer = Customer(server)
        status, body = customer.post_turn("A first turn that works.")
        assert status == 201, body
        before = snapshot()
        key = f"killed-{moment}"
        workers = gunicorn_workers(server.process.pid)
        with ThreadPoolExecutor(max_workers=1) as pool:
            if moment == "model_call":
                provider.hold()
                pending = pool.submit(post_expecting_no_answer, customer, key)
                caller = provider.wait_for_arrivals(2)["client"]
                worker = socket_owner(local_port=caller[1], candidates=workers)
                assert worker is not None, "no worker holds the provider call's socket"
                os.kill(worker, signal.SIGKILL)
                assert pending.result(timeout=30)
                provider.release()
            else:
                with commit_gate(wallet_id=customer.user.wallet.pk) as gate:
                    pending = pool.submit(post_expecting_no_answer, customer, key)
                    backend, client_port = gate.wait_for_waiter()
                    assert gate.waiter_in_transaction(backend)
                    worker = socket_owner(
                        local_port=client_port, remote_port=POSTGRES_PORT, candidates=workers
                    )
                    assert worker is not None, "no worker holds the turn's database socket"
                    os.kill(worker, signal.SIGKILL)
                    assert pending.result(timeout=30)
                    # Let the orphaned transaction run on: with its client gone it can only roll back.
                    gate.close()
                    wait_until(lambda: not backend_alive(backend), message="the orphaned backend to end")
        # Nothing but the reservation, which still holds its lease.
        after_kill = snapshot()
        assert after_kill == {**before, "keys": before["keys"] + 1}
        reservation = TurnIdempotencyKey.objects.get(user=customer.user, key=key)
        assert reservation.status == TurnIdempotencyKey.Status.PENDING
        assert_books_balance()
        # The retry waits out the dead worker's lease, takes the key over and runs the turn once.
        body = assert_retry_runs_once(customer, key, before)
        assert TurnIdempotencyKey.objects.get(pk=reservation.pk).turn_id == body["id"]
        # gunicorn replaced the dead worker.
        wait_until(
            lambda: (
                len(gunicorn_workers(server.process.pid)) == 2
                and worker not in gunicorn_workers(server.process.pid)
            ),
            message="a replacement worker",
        )
