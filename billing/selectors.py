"""Billing reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, TypedDict

from django.db.models import Count, DecimalField, F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import User

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

from billing.models import (
    CreditHold,
    CreditTransaction,
    CreditWallet,
    ModelPricing,
    PricingVersion,
    UsageEvent,
)

ZERO = Value(Decimal(0), output_field=DecimalField(max_digits=20, decimal_places=4))


@dataclass(frozen=True)
class WalletDrift:
    wallet_id: int
    user_id: int
    problem: str
    expected: Decimal | None
    found: Decimal | None

    def __str__(self) -> str:
        return (
            f"wallet {self.wallet_id} (user {self.user_id}): {self.problem}: "
            f"wallet says {self.found}, ledger says {self.expected}"
        )


def wallets_with_ledger_totals():
    newest = (
        CreditTransaction.objects.filter(wallet=OuterRef("pk")).order_by("-id").values("balance_after")[:1]
    )
    active_holds = (
        CreditHold.objects.filter(wallet=OuterRef("pk"), status=CreditHold.Status.ACTIVE)
        .values("wallet")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return CreditWallet.objects.annotate(
        holds_total=Coalesce(Subquery(active_holds), ZERO),
        ledger_total=Coalesce(Sum("transactions__amount"), ZERO),
        ledger_granted=Coalesce(Sum("transactions__amount", filter=Q(transactions__kind="grant")), ZERO),
        ledger_burned=Coalesce(Sum("transactions__amount", filter=Q(transactions__kind="debit")), ZERO),
        newest_balance_after=Subquery(newest),
    ).order_by("pk")


class LedgerTotals(TypedDict):
    holds_total: Decimal
    ledger_total: Decimal
    ledger_granted: Decimal
    ledger_burned: Decimal
    newest_balance_after: Decimal | None


def wallet_drifts(wallet: WithAnnotations[CreditWallet, LedgerTotals]) -> list[WalletDrift]:
    """Every way one annotated wallet disagrees with its ledger."""
    drifts = []

    def add(problem: str, expected, found) -> None:
        drifts.append(WalletDrift(wallet.pk, wallet.user_id, problem, expected, found))

    if wallet.balance != wallet.ledger_total:
        add("balance != sum of ledger amounts", wallet.ledger_total, wallet.balance)
    if wallet.newest_balance_after is None:
        if wallet.balance != 0:
            add("non-zero balance with an empty ledger", Decimal(0), wallet.balance)
    elif wallet.newest_balance_after != wallet.balance:
        add("newest balance_after != balance", wallet.newest_balance_after, wallet.balance)
    if wallet.lifetime_granted != wallet.ledger_granted:
        add("lifetime_granted != sum of grants", wallet.ledger_granted, wallet.lifetime_granted)
    if wallet.lifetime_burned != -wallet.ledger_burned:
        add("lifetime_burned != sum of debits", -wallet.ledger_burned, wallet.lifetime_burned)
    if wallet.held != wallet.holds_total:
        add("held != sum of active holds", wallet.holds_total, wallet.held)
    return drifts


def ledger_drifts(*, chunk_size: int = 2000) -> Iterator[tuple[CreditWallet, list[WalletDrift]]]:
    """Walk every wallet once, yielding it with its drifts (empty when consistent)."""
    for wallet in wallets_with_ledger_totals().iterator(chunk_size=chunk_size):
        yield wallet, wallet_drifts(wallet)


def wallet_for_user(*, user) -> CreditWallet | None:
    return CreditWallet.objects.filter(user_id=user.pk).first()


@dataclass(frozen=True)
class DailyBurn:
    """Credits burned per day per model: `days` oldest first, one value per day in each series."""

    days: list[date]
    series: dict[str, list[Decimal]]

    def chart_data(self) -> dict:
        """Plain JSON for a chart; amounts stay decimal strings (the page parses them)."""
        return {
            "labels": [day.isoformat() for day in self.days],
            "datasets": [
                {"label": alias, "data": [str(amount) for amount in amounts]}
                for alias, amounts in self.series.items()
            ],
        }


def usage_daily_by_model(*, user, days: int = 30, today: date | None = None) -> DailyBurn:
    """Credits per (day, model) for the last `days` days, today included, zeros filled.

    The same aggregate as the usage summary API (`usage_summary` by day and model);
    models that burned nothing in the window (the unmetered manager) get no series.
    """
    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    # A datetime bound (not created_at__date) so the (user, -created_at) index is used.
    since = timezone.make_aware(datetime.combine(first, time.min))
    day_list = [first + timedelta(days=offset) for offset in range(days)]
    index = {day: position for position, day in enumerate(day_list)}
    series: dict[str, list[Decimal]] = {}
    for row in usage_summary(user=user, group_by=("model", "day"), since=since):
        position = index.get(row["day"])
        # Nothing burned, or an event dated after `today` (clock skew): not on the chart.
        if position is None or not row["credits_burned"]:
            continue
        series.setdefault(row["model_alias"], [Decimal("0.0000")] * days)[position] = row["credits_burned"]
    return DailyBurn(days=day_list, series=series)


# --- Usage, ledger and pricing reads for the API ------------------------------------
#
# Lists are keyset-paginated, newest first: a page is "the `limit` rows just older
# (or newer) than a position", answered from the (user, -created_at, -id) and
# (user, model_alias, -created_at, -id) usage indexes and the (wallet, -id) ledger
# index, so page 10 000 costs what page 1 costs.

USAGE_GROUPS = ("day", "model")


@dataclass(frozen=True)
class KeysetPage:
    rows: list
    # More rows exist beyond this page in the direction of travel.
    has_more: bool


def usage_queryset(
    *,
    user,
    model_alias: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet:
    """The user's usage events; `since` inclusive, `until` exclusive; each with its turn's status."""
    rows = UsageEvent.objects.filter(user_id=user.pk).annotate(
        turn_status=F("turn__status"), turn_routed_by=F("turn__routed_by")
    )
    if model_alias:
        rows = rows.filter(model_alias=model_alias)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    if until is not None:
        rows = rows.filter(created_at__lt=until)
    return rows


def _usage_keyset(rows: QuerySet, *, after: tuple[datetime, int] | None, newer: bool) -> QuerySet:
    if after is None:
        return rows
    created_at, pk = after
    if newer:
        # The plain range bound lets the planner start the index scan at the position.
        return rows.filter(created_at__gte=created_at).filter(
            Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=pk)
        )
    return rows.filter(created_at__lte=created_at).filter(
        Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=pk)
    )


def usage_list(
    *,
    user,
    limit: int,
    model_alias: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    older_than: tuple[datetime, int] | None = None,
    newer_than: tuple[datetime, int] | None = None,
) -> KeysetPage:
    """One page of usage events, newest first, just older (or newer) than a (created_at, id)."""
    rows = usage_queryset(user=user, model_alias=model_alias, since=since, until=until)
    if newer_than is not None:
        found = list(
            _usage_keyset(rows, after=newer_than, newer=True).order_by("created_at", "id")[: limit + 1]
        )
        return KeysetPage(rows=found[:limit][::-1], has_more=len(found) > limit)
    found = list(
        _usage_keyset(rows, after=older_than, newer=False).order_by("-created_at", "-id")[: limit + 1]
    )
    return KeysetPage(rows=found[:limit], has_more=len(found) > limit)


def usage_iter(
    *,
    user,
    model_alias: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 2000,
) -> Iterator:
    """Every matching usage event, newest first, in keyset batches (for CSV export).

    Batches instead of one server-side cursor: no transaction or cursor stays
    open while a slow client reads the stream.
    """
    position = None
    while True:
        page = usage_list(
            user=user,
            limit=batch_size,
            model_alias=model_alias,
            since=since,
            until=until,
            older_than=position,
        )
        yield from page.rows
        if not page.has_more:
            return
        last = page.rows[-1]
        position = (last.created_at, last.pk)


def usage_summary(
    *,
    user,
    group_by: Sequence[str],
    model_alias: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict]:
    """Calls, tokens and credits per day (in TIME_ZONE) and/or per model, oldest day first."""
    unknown = set(group_by) - set(USAGE_GROUPS)
    if unknown or not group_by:
        raise ValueError(f"group_by must be made of {USAGE_GROUPS}")
    keys = ["day" if key == "day" else "model_alias" for key in group_by]
    rows = usage_queryset(user=user, model_alias=model_alias, since=since, until=until)
    if "day" in keys:
        rows = rows.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
    return list(
        rows.values(*keys)
        .annotate(
            calls=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            credits_burned=Sum("credits_burned"),
        )
        .order_by(*keys)
    )


def transaction_list(
    *,
    user,
    limit: int,
    older_than: int | None = None,
    newer_than: int | None = None,
) -> KeysetPage:
    """One page of the user's ledger, newest first (ledger order is id order)."""
    wallet_id = CreditWallet.objects.filter(user_id=user.pk).values_list("id", flat=True).first()
    if wallet_id is None:
        return KeysetPage(rows=[], has_more=False)
    rows = CreditTransaction.objects.filter(wallet_id=wallet_id)
    if newer_than is not None:
        found = list(rows.filter(id__gt=newer_than).order_by("id")[: limit + 1])
        return KeysetPage(rows=found[:limit][::-1], has_more=len(found) > limit)
    if older_than is not None:
        rows = rows.filter(id__lt=older_than)
    found = list(rows.order_by("-id")[: limit + 1])
    return KeysetPage(rows=found[:limit], has_more=len(found) > limit)


def pricing_list() -> tuple[PricingVersion | None, list[ModelPricing]]:
    """The active pricing version and its multipliers, by alias (read from the database)."""
    version = PricingVersion.objects.filter(is_active=True).first()
    if version is None:
        return None, []
    return version, list(ModelPricing.objects.filter(pricing_version=version).order_by("model_alias"))


def pricing_get(*, model_alias: str) -> ModelPricing | None:
    """One alias of the active version, or None."""
    return (
        ModelPricing.objects.filter(pricing_version__is_active=True, model_alias=model_alias)
        .select_related("pricing_version")
        .first()
    )


def holds_active(*, user: User) -> QuerySet[CreditHold]:
    """The user's active holds, newest first (expired ones included until they are released)."""
    return CreditHold.objects.filter(wallet__user_id=user.pk, status=CreditHold.Status.ACTIVE).order_by("-id")
