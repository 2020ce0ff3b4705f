"""Rate limits on sign-up, token (and the log-in page) and turn creation.

In-process tests set small rates through `settings.THROTTLE_RATES` (read per
request); the cross-process tests start two separate gunicorn servers with
the rates in their environment and prove that they count against one shared
limit, in Redis and in the database counter table. Day-long windows keep a window
boundary from falling inside a test.
"""

from __future__ import annotations

import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import timedelta

import pytest
import redis
from django.contrib.auth import get_user_model
from django.core.cache.backends import db as django_db_cache
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import RateLimitCounter
from billing.models import CreditWallet
from chat.models import Turn
from pantheon import throttling
from tests.factories import DEFAULT_PASSWORD, RoomFactory, UserFactory
from tests.support.clients import logged_in
from tests.support.gunicorn_server import gunicorn_server

User = get_user_model()
REDIS_TEST_URL = "redis://127.0.0.1:6379/12"  # a database of its own, flushed before and after


@pytest.fixture
def rates(settings):
    """Set small rates on a clean counter store; `rates(token="3/day")`."""
    throttling.reset_counters()

    def set_rates(**small: str) -> None:
        settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, **small}

    yield set_rates
    throttling.reset_counters()


def _register(client: APIClient, username: str, **extra):
    return client.post(
        "/api/v1/auth/register",
        {"username": username, "password": DEFAULT_PASSWORD},
        format="json",
        **extra,
    )


def _token(client: APIClient, username: str, password: str, **extra):
    return client.post(
        "/api/v1/auth/token", {"username": username, "password": password}, format="json", **extra
    )


def _assert_throttled(response, *, at_most: int) -> None:
    assert response.status_code == 429, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "throttled"
    assert "Expected available in" in body["detail"]
    assert 1 <= int(response["Retry-After"]) <= at_most


@pytest.mark.django_db
def test_sign_up_over_the_limit_is_429_with_retry_after_and_creates_nobody(rates):
    rates(signup="3/hour")
    client = APIClient()
    assert [_register(client, f"new{i}").status_code for i in range(3)] == [201, 201, 201]

    refused = _register(client, "one-too-many")

    _assert_throttled(refused, at_most=3600)
    assert not User.objects.filter(username="one-too-many").exists()


@pytest.mark.django_db
def test_token_attempts_are_limited_so_a_password_cannot_be_guessed_further(rates):
    rates(token="3/day")
    user = UserFactory()
    client = APIClient()
    for guess in ("guess-1", "guess-2", "guess-3"):
        assert _token(client, user.username, guess).status_code == 401

    # Even the right password is refused once the limit is reached.
    _assert_throttled(_token(client, user.username, DEFAULT_PASSWORD), at_most=86400)


@pytest.mark.django_db
def test_a_forged_x_forwarded_for_does_not_escape_the_limit(rates, settings):
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0  # the default: no proxy is trusted
    rates(token="2/day")
    user = UserFactory()
    client = APIClient()
    statuses = [
        _token(client, user.username, "wrong", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code
        for i in range(4)
    ]
    assert statuses == [401, 401, 429, 429]


@pytest.mark.django_db
def test_behind_one_proxy_each_client_address_has_its_own_limit(rates, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    rates(token="1/day")
    user = UserFactory()
    client = APIClient()

    def attempt(chain: str) -> int:
        return _token(client, user.username, "wrong", HTTP_X_FORWARDED_FOR=chain).status_code

    # The proxy appends the address it saw: the last entry; anything before it is the client's claim.
    assert attempt("198.51.100.7") == 401
    assert attempt("10.0.0.1, 198.51.100.7") == 429
    assert attempt("198.51.100.8") == 401


@pytest.mark.django_db
def test_turns_are_limited_per_user_and_a_refused_turn_charges_nothing(rates):
    rates(turn="2/day")
    alice, bob = UserFactory(), UserFactory()
    room = RoomFactory(owner=alice, agents=["gpt-4o"])
    client = logged_in(alice)
    url = f"/api/v1/rooms/{room.pk}/turns/"
    assert [client.post(url, {"content": f"q{i}"}, format="json").status_code for i in range(2)] == [201, 201]
    balance = CreditWallet.objects.get(user=alice).balance

    _assert_throttled(client.post(url, {"content": "third"}, format="json"), at_most=86400)

    assert Turn.objects.filter(user=alice).count() == 2
    assert CreditWallet.objects.get(user=alice).balance == balance
    assert client.get(url).status_code == 200  # reading the history is not counted
    other = logged_in(bob)
    bobs_room = RoomFactory(owner=bob, agents=["gpt-4o"])
    assert (
        other.post(f"/api/v1/rooms/{bobs_room.pk}/turns/", {"content": "hi"}, format="json").status_code
        == 201
    )


@pytest.mark.django_db
def test_the_limit_resets_in_the_next_window(rates, monkeypatch):
    rates(token="1/minute")
    user = UserFactory()
    client = APIClient()
    start = 1_800_000_000.0  # a window boundary is a multiple of 60
    monkeypatch.setattr(throttling, "clock", lambda: start + 10)
    assert _token(client, user.username, "wrong").status_code == 401
    refused = _token(client, user.username, "wrong")
    _assert_throttled(refused, at_most=60)
    assert refused["Retry-After"] == "50"

    monkeypatch.setattr(throttling, "clock", lambda: start + 61)
    assert _token(client, user.username, DEFAULT_PASSWORD).status_code == 200


@pytest.mark.django_db
def test_an_empty_rate_turns_a_scope_off(rates):
    rates(signup="")
    client = APIClient()
    assert {_register(client, f"free{i}").status_code for i in range(5)} == {201}


@pytest.mark.django_db
def test_the_sign_up_and_log_in_pages_share_the_api_limits(rates):
    rates(signup="1/day", token="1/day")
    client = APIClient()
    assert _register(client, "via-api").status_code == 201
    page = client.post(
        "/signup/",
        {"username": "via-page", "password1": DEFAULT_PASSWORD, "password2": DEFAULT_PASSWORD},
    )
    assert page.status_code == 429
    assert page["Content-Type"].startswith("text/html")
    assert 1 <= int(page["Retry-After"]) <= 86400
    assert b"Too many attempts" in page.content
    assert not User.objects.filter(username="via-page").exists()

    user = UserFactory()
    assert _token(client, user.username, "wrong").status_code == 401
    login = client.post("/login/", {"username": user.username, "password": DEFAULT_PASSWORD})
    assert login.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/login/").status_code == 200  # showing the form is not counted


@pytest.mark.django_db
def test_a_cache_outage_lets_requests_through_and_is_logged(settings, caplog):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
        }
    }
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "signup": "1/day"}
    client = APIClient()
    with caplog.at_level(logging.ERROR, logger="pantheon.throttling"):
        assert [_register(client, f"outage{i}").status_code for i in range(2)] == [201, 201]
    assert "throttle cache unavailable; scope=signup not enforced" in caplog.text


def test_the_schema_documents_429_where_limits_apply():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    assert "429" in paths["/api/v1/auth/register"]["post"]["responses"]
    assert "429" in paths["/api/v1/auth/token"]["post"]["responses"]
    assert "429" in paths["/api/v1/rooms/{id}/turns/"]["post"]["responses"]
    assert "429" not in paths["/api/v1/rooms/{id}/turns/"]["get"]["responses"]


# --- across processes -------------------------------------------------------------


@contextmanager
def two_servers(env: dict):
    """Two separate gunicorn masters (no shared memory: only the cache connects them), started together."""
    managers = [gunicorn_server(workers=2, env=env), gunicorn_server(workers=2, env=env)]
    with ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        for manager, future in zip(managers, futures, strict=True):
            if future.exception() is None:  # stop whatever started, even if the other failed
                stack.push(manager.__exit__)
        servers = [future.result() for future in futures]
        assert servers[0].port != servers[1].port
        yield servers


def _attempt(server, username: str) -> int:
    status, _body = server.request("POST", "/api/v1/auth/token", {"username": username, "password": "wrong"})
    return status


@pytest.fixture
def clean_redis():
    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.mark.gunicorn
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_servers_share_one_limit_in_redis_exactly_even_under_a_burst(clean_redis):
    user, other = UserFactory(), UserFactory()
    env = {"REDIS_URL": REDIS_TEST_URL, "THROTTLE_TOKEN_RATE": "4/day"}
    with two_servers(env) as (a, b), ThreadPoolExecutor(max_workers=16) as pool:
        assert [_attempt(a, user.username), _attempt(a, user.username)] == [401, 401]
        assert [_attempt(b, user.username), _attempt(b, user.username)] == [401, 401]
        # Server B saw only two requests; the limit of 4 is reached because A's count is in Redis.
        assert _attempt(b, user.username) == 429
        assert _attempt(a, user.username) == 429
        assert any(key.startswith(b":1:throttle:token:") for key in clean_redis.keys("*"))

        clean_redis.flushdb()  # a fresh window for the burst
        statuses = list(pool.map(lambda server: _attempt(server, other.username), [a, b] * 12))
    # INCR is atomic: of 24 simultaneous attempts on 4 workers in 2 servers, exactly 4 get through.
    assert sorted(statuses) == [401] * 4 + [429] * 20


@pytest.mark.gunicorn
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_servers_share_one_limit_in_the_database_exactly_even_under_a_burst():
    throttling.reset_counters()
    user, other = UserFactory(), UserFactory()
    try:
        with (
            two_servers({"REDIS_URL": "", "THROTTLE_TOKEN_RATE": "3/day"}) as (a, b),
            ThreadPoolExecutor(max_workers=16) as pool,
        ):
            first_three = [_attempt(a, user.username), _attempt(b, user.username), _attempt(a, user.username)]
            assert first_three == [401, 401, 401]
            assert _attempt(b, user.username) == 429
            assert _attempt(a, user.username) == 429
            throttling.reset_counters()  # a fresh window for the burst
            statuses = list(pool.map(lambda server: _attempt(server, other.username), [a, b] * 12))
        # One upsert per request: of 24 simultaneous attempts on 4 workers in 2 servers, exactly 3 pass.
        assert sorted(statuses) == [401] * 3 + [429] * 21
    finally:
        throttling.reset_counters()


# --- the database counter: exact windows, exact counts ---------------------------------------


@pytest.mark.django_db
def test_an_hourly_window_does_not_start_again_when_a_cache_entry_would_have_expired(rates, monkeypatch):
    """The leak of issue 15: the database cache's `incr` reset the entry's expiry to 300 s.

    Three sign-ups at the start of an hour, then six minutes later (every clock
    moved: the throttle's and Django's) the fourth must still be refused.
    """
    rates(signup="3/hour")
    start = 1_800_000_000.0  # a multiple of 3600: an hour window starts here
    monkeypatch.setattr(throttling, "clock", lambda: start + 10)
    client = APIClient()
    assert [_register(client, f"early{i}").status_code for i in range(3)] == [201, 201, 201]

    later = timezone.now() + timedelta(minutes=6)
    monkeypatch.setattr(timezone, "now", lambda: later)
    monkeypatch.setattr(django_db_cache, "tz_now", lambda: later)  # the database cache's own import
    monkeypatch.setattr(throttling, "clock", lambda: start + 370)
    refused = _register(client, "six-minutes-later")

    _assert_throttled(refused, at_most=3600)
    assert refused["Retry-After"] == str(3600 - 370)
    monkeypatch.setattr(throttling, "clock", lambda: start + 3601)  # the next hour
    assert _register(client, "next-hour").status_code == 201


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_database_counter_loses_no_count_under_concurrency(settings):
    """16 threads, each on its own connection, 25 hits each on one key with a limit of 100."""
    settings.THROTTLE_RATES = {**settings.THROTTLE_RATES, "token": "100/day"}
    throttling.reset_counters()

    def hammer(_thread: int) -> int:
        try:
            return sum(throttling.hit(scope="token", ident="addr:198.51.100.1") is None for _ in range(25))
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        allowed = sum(pool.map(hammer, range(16)))

    assert allowed == 100
    assert RateLimitCounter.objects.get().count == 16 * 25
    throttling.reset_counters()


@pytest.mark.django_db
def test_rows_of_ended_windows_are_purged(rates, monkeypatch):
    rates(token="5/minute")
    start = 1_800_000_000.0
    monkeypatch.setattr(throttling, "_last_purge", 0.0)
    monkeypatch.setattr(throttling, "clock", lambda: start)
    throttling.hit(scope="token", ident="addr:a")
    monkeypatch.setattr(throttling, "clock", lambda: start + 3600)
    throttling.hit(scope="token", ident="addr:b")  # more than PURGE_EVERY_SECONDS later: purges
    assert [row.key.rsplit(":", 1)[-1] for row in RateLimitCounter.objects.all()] == ["b"]
