"""Wallet and usage pages. Reads only, through `billing.selectors`."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypedDict, cast
from urllib.parse import urlencode

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing import selectors
from billing.meter import get_pricing_snapshot

LEDGER_PAGE_SIZE = 25
USAGE_PAGE_SIZE = 50
# Days listed in the usage page's by-day breakdown (newest first); the totals cover them all.
USAGE_DAYS_SHOWN = 31
CHART_DAYS = 30
USAGE_API_PATH = "/api/v1/users/me/usage"


def _positive_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and int(value) > 0 else None


@login_required
@require_GET
def wallet(request: HttpRequest) -> HttpResponse:
    wallet = selectors.wallet_for_user(user=request.user)
    # Keyset pages over the ledger (its order is id order): ?before=<id> older, ?after=<id> newer.
    before = _positive_int(request.GET.get("before"))
    after = None if before else _positive_int(request.GET.get("after"))
    # A turn's debits are one line (expandable to its calls); cursors are ledger row ids.
    page = selectors.ledger_lines(
        user=request.user, limit=LEDGER_PAGE_SIZE, older_than=before, newer_than=after
    )
    lines = page.rows
    has_older = page.has_more if after is None else True
    has_newer = page.has_more if after is not None else before is not None
    burn = selectors.usage_daily_by_model(user=request.user, days=CHART_DAYS)
    since = selectors.usage_window_start(days=CHART_DAYS, today=burn.today)
    zero = Decimal("0.0000")
    context = {
        "nav": "wallet",
        "balance": wallet.balance if wallet else zero,
        "held": wallet.held if wallet else zero,
        "available": wallet.available if wallet else zero,
        "lifetime_granted": wallet.lifetime_granted if wallet else zero,
        "lifetime_burned": wallet.lifetime_burned if wallet else zero,
        "ledger": lines,
        "older_url": f"?before={lines[-1].oldest.id}" if lines and has_older else None,
        "newer_url": f"?after={lines[0].newest.id}" if lines and has_newer else None,
        "chart_days": CHART_DAYS,
        "chart_data": burn.chart_data(),
        "chart_has_data": bool(burn.series),
        "recent_by_model": selectors.usage_summary(user=request.user, group_by=("model",), since=since),
        "recent_totals": selectors.usage_totals(user=request.user, since=since),
        "recent_since": since.date(),
    }
    return render(request, "billing/wallet.html", context)


class UsageFilterForm(forms.Form):
    model_alias = forms.ChoiceField(label="Model", required=False)
    since = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Every priced alias, `default` included (the manager's routing calls use it); no query.
        aliases = sorted(get_pricing_snapshot().multipliers)
        choices = [("", "All models")] + [(alias, alias) for alias in aliases]
        cast(forms.ChoiceField, self.fields["model_alias"]).choices = choices

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date is before the start date.")
        return cleaned

    def query(self) -> dict[str, str]:
        """The valid filters as the usage API spells them (dates are whole UTC days)."""
        if not self.is_bound or not self.is_valid():
            return {}
        return {name: str(value) for name, value in self.cleaned_data.items() if value}


class UsageBounds(TypedDict):
    model_alias: str | None
    since: datetime | None
    until: datetime | None


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@login_required
@require_GET
def usage(request: HttpRequest) -> HttpResponse:
    bound = {key: value for key, value in request.GET.items() if key != "page"}
    form = UsageFilterForm(bound or None)
    query = form.query()
    data = form.cleaned_data if query else {}
    # The same bounds as the usage API: `since` from the start of its day, `until` through the end of its day.
    bounds = UsageBounds(
        model_alias=data.get("model_alias") or None,
        since=_day_start(data["since"]) if data.get("since") else None,
        until=_day_start(data["until"] + timedelta(days=1)) if data.get("until") else None,
    )
    events = selectors.usage_queryset(user=request.user, **bounds)
    events = events.select_related("room").order_by("-created_at", "-id")
    page = Paginator(events, USAGE_PAGE_SIZE).get_page(request.GET.get("page"))
    # The same filter, aggregated in SQL: the summary API's groups, newest day first.
    by_day = selectors.usage_summary(user=request.user, group_by=("day",), **bounds)[::-1]
    context = {
        "nav": "usage",
        "form": form,
        "page": page,
        "totals": selectors.usage_totals(user=request.user, **bounds),
        "by_model": selectors.usage_summary(user=request.user, group_by=("model",), **bounds),
        "by_day": by_day[:USAGE_DAYS_SHOWN],
        "days_hidden": max(0, len(by_day) - USAGE_DAYS_SHOWN),
        "days_shown": USAGE_DAYS_SHOWN,
        "filter_query": urlencode(query),
        "csv_url": USAGE_API_PATH + "?" + urlencode({**query, "format": "csv"}),
    }
    return render(request, "billing/usage.html", context)
