"""Shared helpers for the billing API tests: usage rows at chosen times, page walks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from rest_framework.test import APIClient

from billing.models import UsageEvent
from tests.factories import TurnFactory, UsageEventFactory

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
ALIASES = ["gpt-4o", "claude-sonnet", "deepseek"]


def make_usage(user, count: int, *, start: dt.datetime = T0, step_minutes: int = 37, tie_every: int = 5):
    """`count` usage rows for `user`, spread over days and aliases, oldest first.

    Every `tie_every`-th row shares the previous row's created_at, so the
    keyset's (created_at, id) tie-break is exercised.
    """
    turn = TurnFactory(room__owner=user)
    rows = []
    when = start
    for index in range(count):
        if index % tie_every != 0 or index == 0:
            when = start + dt.timedelta(minutes=step_minutes * index)
        alias = ALIASES[index % len(ALIASES)]
        tokens_in, tokens_out = 100 + index, 10 + index % 7
        metered = index % 11 != 0
        event = UsageEventFactory.build(
            turn=turn,
            model_alias=alias,
            provider_model=f"offline:{alias}",
            purpose="agent" if metered else "manager",
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            multiplier=Decimal("1.5000"),
            credits_burned=(
                (Decimal(tokens_in + tokens_out) / 1000 * Decimal("1.5")).quantize(Decimal("0.0001"))
                if metered
                else Decimal("0.0000")
            ),
            metered=metered,
            latency_ms=index,
        )
        rows.append((event, when))
    # Three queries, not two per row: these fixtures hold hundreds of rows per test.
    events = UsageEvent.objects.bulk_create([event for event, _ in rows])
    for event, when in rows:
        event.created_at = when  # auto_now_add stamped "now" at the insert
    UsageEvent.objects.bulk_update(events, ["created_at"])
    return list(UsageEvent.objects.filter(pk__in=[event.pk for event in events]))


def newest_first(events) -> list[int]:
    return [event.pk for event in sorted(events, key=lambda e: (e.created_at, e.pk), reverse=True)]


def walk(client: APIClient, url: str, *, direction: str = "next") -> list[dict]:
    """Follow `next` (or `previous`) links to the end; returns the pages' bodies."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append(body)
        url = body[direction]
        assert len(pages) < 1000, "pagination does not terminate"
    return pages
