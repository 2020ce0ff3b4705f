"""Rate limits for the doors an abuser would hammer: sign-up, token (and log-in), turns, uploads.

One counter per (scope, client, time window) is shared by every worker and
every host: in Redis when the cache is Redis (`REDIS_URL`), else in the
database table `pantheon_rate_limit_counter` (accounts.RateLimitCounter). The
window is part of the key, so a window closes when the clock says so, not when
a cache entry happens to expire. Both increments are atomic — Redis `INCR`;
one `INSERT … ON CONFLICT DO UPDATE … RETURNING` in the database — so a limit
is exact under any concurrency. (The database *cache* is not used for this:
its `incr` is a read and a write, which loses counts under concurrency, and
the write resets the entry's expiry to the cache default of 300 s, which let
an hourly limit start again every five minutes. See docs/decisions.md.)

Rates come from `settings.THROTTLE_RATES` when a request arrives (DRF's own
throttles read theirs at import time), in DRF's `<count>/<period>` syntax;
an empty rate turns a scope off. Only unsafe methods are counted: reading a
room's history is not what these limits are for.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import cast

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
clock = time.time  # tests move it to the next window


@functools.lru_cache(maxsize=64)
def parse_rate(rate: str) -> tuple[int, int] | None:
    """`"20/minute"` → (20, 60); an empty rate → None (not throttled)."""
    if not rate:
        return None
    try:
        count, period = rate.split("/")
        limit, seconds = int(count), PERIODS[period.strip()[0].lower()]
    except (ValueError, KeyError, IndexError) as exc:
        raise ImproperlyConfigured(
            f"Bad throttle rate {rate!r}: use <count>/<second|minute|hour|day>, e.g. 20/minute."
        ) from exc
    if limit < 1:
        raise ImproperlyConfigured(f"Bad throttle rate {rate!r}: the count must be at least 1.")
    return limit, seconds


def scope_rate(scope: str) -> tuple[int, int] | None:
    try:
        rate = settings.THROTTLE_RATES[scope]
    except KeyError as exc:
        raise ImproperlyConfigured(f"No rate for throttle scope {scope!r} in THROTTLE_RATES.") from exc
    return parse_rate(rate)


def client_ident(request: HttpRequest) -> str:
    """The user for a signed-in request, else the client address.

    The address is REMOTE_ADDR, or the entry `NUM_PROXIES` from the right of
    X-Forwarded-For when that many trusted proxies sit in front (DRF's rule);
    with NUM_PROXIES=0 a client cannot pick its own address by sending the header.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"addr:{BaseThrottle().get_ident(cast(Request, request))}"


def hit(*, scope: str, ident: str) -> float | None:
    """Count one request; None when it is allowed, else the seconds until the window ends."""
    rate = scope_rate(scope)
    if rate is None:
        return None
    limit, period = rate
    now = clock()
    window = math.floor(now / period)
    key = f"throttle:{scope}:{period}:{window}:{ident}"
    try:
        count = _increment(key, timeout=period + 1, window_end=(window + 1) * period)
    except Exception:
        # A cache outage must not take sign-up and turns down with it: let the request through.
        logger.exception("throttle cache unavailable; scope=%s not enforced", scope)
        return None
    if count <= limit:
        return None
    return (window + 1) * period - now


def _increment(key: str, *, timeout: int, window_end: int) -> int:
    """+1 on the window's counter; creates it (with its expiry) on the window's first request.

    On Redis one round trip: `SET key 0 EX timeout NX` then `INCR`, pipelined
    (Django's `incr` would send EXISTS and INCR one after the other). Elsewhere
    one upsert in the database.
    """
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        name = backend.make_key(key)  # our keys are short ASCII: no validation needed
        pipeline = _redis_client(settings.CACHES["default"]["LOCATION"]).pipeline(transaction=False)
        pipeline.set(name, 0, ex=timeout, nx=True)
        pipeline.incr(name)
        return pipeline.execute()[1]
    return _database_increment(key, window_end=window_end)


_COUNTER_TABLE = "pantheon_rate_limit_counter"
# PostgreSQL and SQLite (3.35+) both speak this upsert; it is one atomic statement.
_UPSERT = (
    f"INSERT INTO {_COUNTER_TABLE} (key, count, window_end) VALUES (%s, 1, %s) "
    f"ON CONFLICT (key) DO UPDATE SET count = {_COUNTER_TABLE}.count + 1 RETURNING count"
)
PURGE_EVERY_SECONDS = 60.0
_last_purge = 0.0


def _database_increment(key: str, *, window_end: int) -> int:
    """+1 on the window's row in one statement; every few calls, drop the rows of ended windows."""
    global _last_purge
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [key, window_end])
        count = cursor.fetchone()[0]
        now = clock()
        if now - _last_purge > PURGE_EVERY_SECONDS:
            _last_purge = now
            cursor.execute(f"DELETE FROM {_COUNTER_TABLE} WHERE window_end < %s", [int(now)])
    return count


def reset_counters() -> None:
    """Forget every count (tests; an operator lifting a limit at once)."""
    cache_backend = caches["default"]
    if isinstance(cache_backend, RedisCache):
        cache_backend.clear()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {_COUNTER_TABLE}")


def _redis_client(location: str | list[str]) -> redis.Redis:
    """The cache's Redis (its primary, when LOCATION lists several) as one client per process.

    Django's cache builds a new redis-py client for every operation, and
    building one costs more CPU than the round trip to Redis.
    """
    primary = location[0] if isinstance(location, list | tuple) else location.split(",")[0]
    return _client_for_url(primary.strip())


@functools.lru_cache(maxsize=8)
def _client_for_url(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


class ScopedRateThrottle(BaseThrottle):
    """DRF throttle for views that set `throttle_scope`; counts unsafe methods only."""

    scope_attr = "throttle_scope"

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        scope = getattr(view, self.scope_attr, None)
        if not scope or request.method in SAFE_METHODS:
            return True
        self._wait = hit(scope=scope, ident=client_ident(request))
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait


def throttle_page(scope: str) -> Callable:
    """The same limit for a page's POST (the HTML doors to sign-up and log-in)."""

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in SAFE_METHODS:
                wait = hit(scope=scope, ident=client_ident(request))
                if wait is not None:
                    seconds = max(1, math.ceil(wait))
                    response = render(request, "errors/429.html", {"retry_after": seconds}, status=429)
                    response["Retry-After"] = str(seconds)
                    return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
