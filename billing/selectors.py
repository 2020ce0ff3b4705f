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


def wallet_available(*, user, wallet: CreditWallet | None = None) -> Decimal | None:
    """What the user can spend now (balance − credits held by running turns), or None without a
    wallet. Pages (the low-balance banner) read it here and nowhere else. `wallet` is the user's
    wallet if already read.
    """
    if wallet is None:
        wallet = wallet_for_user(user=user)
    return None if wallet is None else wallet.available


@dataclass(frozen=True)
class DailyBurn:
    """Credits burned per day per model: `days` oldest first, one value per day in each series."""

    days: list[date]
    series: dict[str, list[Decimal]]

    @property
    def today(self) -> date:
        return self.days[-1]

    @property
    def day_totals(self) -> list[Decimal]:
        """Credits per day over every model (exact Decimal sums of the series)."""
        return [
            sum((amounts[position] for amounts in self.series.values()), Decimal("0.0000"))
            for position in range(len(self.days))
        ]

    def chart_data(self) -> dict:
        """Plain JSON for a chart; amounts stay decimal strings (the page shows them as given)."""
        return {
            "labels": [day.isoformat() for day in self.days],
            "today": self.today.isoformat(),
            "totals": [str(amount) for amount in self.day_totals],
            "datasets": [
                {"label": alias, "data": [str(amount) for amount in amounts]}
                for alias, amounts in self.series.items()
            ],
        }


def usage_window_start(*, days: int, today: date | None = None) -> datetime:
    """The start of the first of the last `days` days (today included), in TIME_ZONE.

    A datetime bound (not created_at__date) so the (user, -created_at) index is used.
    """
    first = (today or timezone.localdate()) - timedelta(days=days - 1)
    return timezone.make_aware(datetime.combine(first, time.min))


def usage_daily_by_model(*, user, days: int = 30, today: date | None = None) -> DailyBurn:
    """Credits per (day, model) for the last `days` days, today included, zeros filled.

    The same aggregate as the usage summary API (`usage_summary` by day and model);
    models that burned nothing in the window (the unmetered manager) get no series.
    """
    today = today or timezone.localdate()
    since = usage_window_start(days=days, today=today)
    first = since.date()
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


class UsageTotals(TypedDict):
    calls: int
    input_tokens: int
    output_tokens: int
    credits_burned: Decimal


def usage_totals(
    *,
    user,
    model_alias: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> UsageTotals:
    """Calls, tokens and credits of every usage event matching the filter (one aggregate)."""
    rows = usage_queryset(user=user, model_alias=model_alias, since=since, until=until)
    found = rows.aggregate(
        calls=Count("id"),
        input_tokens=Coalesce(Sum("input_tokens"), 0),
        output_tokens=Coalesce(Sum("output_tokens"), 0),
        credits_burned=Sum("credits_burned"),
    )
    return UsageTotals(
        calls=found["calls"],
        input_tokens=found["input_tokens"],
        output_tokens=found["output_tokens"],
        # No rows: zero written as every other credit figure is (4 places).
        credits_burned=found["credits_burned"] if found["credits_burned"] is not None else Decimal("0.0000"),
    )


# --- The ledger as the wallet page reads it: a turn's debits on one line ---------------


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger row, with the usage event it paid for (through the FKs; billing never imports chat)."""

    id: int
    kind: str
    amount: Decimal
    balance_after: Decimal
    description: str
    created_at: datetime
    turn_id: int | None
    room_id: int | None
    room_title: str
    model_alias: str
    purpose: str


@dataclass(frozen=True)
class LedgerLine:
    """What the wallet page shows as one line: one ledger row, or every debit of one turn.

    `entries` are newest first. A turn's debits are written together under the wallet's
    row lock, so they are neighbours in the wallet's ledger; only neighbours are grouped.
    """

    entries: list[LedgerEntry]

    @property
    def newest(self) -> LedgerEntry:
        return self.entries[0]

    @property
    def oldest(self) -> LedgerEntry:
        return self.entries[-1]

    @property
    def is_turn(self) -> bool:
        return self.newest.turn_id is not None

    @property
    def kind(self) -> str:
        return self.newest.kind

    @property
    def created_at(self) -> datetime:
        return self.newest.created_at

    @property
    def turn_id(self) -> int | None:
        return self.newest.turn_id

    @property
    def room_id(self) -> int | None:
        return self.newest.room_id

    @property
    def room_title(self) -> str:
        return self.newest.room_title

    @property
    def description(self) -> str:
        return self.newest.description

    @property
    def amount(self) -> Decimal:
        """The line's signed total: the exact sum of its rows' amounts."""
        return sum((entry.amount for entry in self.entries), Decimal("0.0000"))

    @property
    def balance_after(self) -> Decimal:
        return self.newest.balance_after


_LEDGER_ENTRY_FIELDS = {
    "turn_id": F("usage_event__turn_id"),
    "room_id": F("usage_event__room_id"),
    "room_title": Coalesce(F("usage_event__room__title"), Value("")),
    "model_alias": Coalesce(F("usage_event__model_alias"), Value("")),
    "purpose": Coalesce(F("usage_event__purpose"), Value("")),
}


def _same_line(line: list[LedgerEntry], entry: LedgerEntry) -> bool:
    last = line[-1]
    return (
        entry.turn_id is not None
        and entry.turn_id == last.turn_id
        and entry.kind == last.kind == CreditTransaction.Kind.DEBIT
    )


def ledger_lines(
    *,
    user,
    limit: int,
    older_than: int | None = None,
    newer_than: int | None = None,
    batch_size: int | None = None,
) -> KeysetPage:
    """One page of `LedgerLine`s, newest first, just older (or newer) than a ledger row id.

    Rows are read in keyset batches over the (wallet, -id) index, so a page costs what
    page 1 costs. Cursors are row ids: older pages start below the oldest row of the
    last line shown, newer pages above the newest row of the first line shown.
    """
    wallet_id = CreditWallet.objects.filter(user_id=user.pk).values_list("id", flat=True).first()
    if wallet_id is None:
        return KeysetPage(rows=[], has_more=False)
    newer = newer_than is not None
    base = CreditTransaction.objects.filter(wallet_id=wallet_id).annotate(**_LEDGER_ENTRY_FIELDS)
    # A turn has at most a few dozen calls: a batch this size usually fills a page at once.
    batch_size = batch_size or limit * 2 + 20
    position = newer_than if newer else older_than
    lines: list[list[LedgerEntry]] = []
    has_more = False
    while True:
        if newer:
            batch = base.order_by("id") if position is None else base.filter(id__gt=position).order_by("id")
        else:
            batch = base.order_by("-id") if position is None else base.filter(id__lt=position).order_by("-id")
        found = [
            LedgerEntry(**values)
            for values in batch.values(
                "id", "kind", "amount", "balance_after", "description", "created_at", *_LEDGER_ENTRY_FIELDS
            )[:batch_size]
        ]
        for entry in found:
            if lines and _same_line(lines[-1], entry):
                lines[-1].append(entry)
            elif len(lines) == limit:
                # The next line begins: the page's last line is complete.
                has_more = True
                break
            else:
                lines.append([entry])
        if has_more or len(found) < batch_size:
            break
        position = found[-1].id
    if newer:
        lines = [line[::-1] for line in reversed(lines)]
    return KeysetPage(rows=[LedgerLine(entries=line) for line in lines], has_more=has_more)


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
