"""Metering: the rules that turn model calls into usage rows and debits.

Chat hands billing plain `CallRecord`s (what ran, how many tokens) and gets
priced usage back. Billing decides which calls are metered (the manager's
routing call is not), prices each one with the multiplier and version of the
snapshot in force at commit, and writes the usage rows with one debit per
metered call, the wallet row last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from billing.meter import credits_for, get_pricing_snapshot
from billing.models import CreditWallet, UsageEvent
from billing.services.ledger import DebitLine, wallet_create, wallet_debit_many
from pantheon.errors import AppError

UNMETERED_PURPOSES = frozenset({UsageEvent.Purpose.MANAGER})


@dataclass(frozen=True)
class CallRecord:
    """One model call as chat saw it; no price yet."""

    model_alias: str
    provider_model: str
    purpose: str  # a `UsageEvent.Purpose` value
    input_tokens: int
    output_tokens: int
    latency_ms: int
    # "provider" when the provider reported the counts, "estimated" when we counted them.
    usage_source: str = UsageEvent.UsageSource.PROVIDER


@dataclass(frozen=True)
class PricedUsage:
    """A turn's calls priced with one snapshot, ready to be written."""

    events: list[UsageEvent]  # unsaved, in call order

    @property
    def credits_burned(self) -> Decimal:
        return sum((event.credits_burned for event in self.events), Decimal(0))


@dataclass(frozen=True)
class RecordedUsage:
    events: list[UsageEvent]  # saved, in call order
    # The wallet balance right after the debits (or as it is, when nothing was charged).
    balance: Decimal


def is_metered(purpose: str) -> bool:
    return purpose not in UNMETERED_PURPOSES


def usage_price(*, calls: Iterable[CallRecord]) -> PricedUsage:
    """Price every call with the multipliers in force now (called at commit, not before the models)."""
    snapshot = get_pricing_snapshot()
    events = []
    for call in calls:
        metered = is_metered(call.purpose)
        multiplier = snapshot.multiplier_for(call.model_alias)
        events.append(
            UsageEvent(
                model_alias=call.model_alias,
                provider_model=call.provider_model,
                purpose=call.purpose,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                multiplier=multiplier,
                pricing_version=snapshot.version,
                credits_burned=(
                    credits_for(call.input_tokens, call.output_tokens, multiplier) if metered else Decimal(0)
                ),
                metered=metered,
                usage_source=call.usage_source,
                latency_ms=call.latency_ms,
            )
        )
    return PricedUsage(events=events)


def usage_record(*, user_id: int, room_id: int, turn_id: int, priced: PricedUsage) -> RecordedUsage:
    """Write a turn's usage rows and debit the wallet once per charged call.

    Runs inside the caller's transaction (the turn's), and should be its last
    write: the wallet row is locked from its UPDATE until that transaction
    commits. A user without a wallet gets one, with its beta grant, first.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("usage_record must run inside the turn's transaction")
    for event in priced.events:
        event.user_id = user_id
        event.room_id = room_id
        event.turn_id = turn_id
    events = UsageEvent.objects.bulk_create(priced.events)
    lines = [
        DebitLine(
            amount=event.credits_burned,
            usage_event_id=event.pk,
            description=f"{event.model_alias} · turn {turn_id}",
        )
        for event in events
        if event.metered and event.credits_burned > 0  # a debit is strictly negative: 0 credits, no row
    ]
    if lines:
        balance = wallet_debit_many(user_id=user_id, lines=lines)[-1].balance_after
    else:
        found = CreditWallet.objects.filter(user_id=user_id).values_list("balance", flat=True).first()
        balance = found if found is not None else wallet_create(user_id=user_id).balance
    return RecordedUsage(events=events, balance=balance)


class InsufficientCredits(AppError):
    status_code = 402
    code = "insufficient_credits"

    def __init__(self, *, balance: Decimal, estimated_credits: Decimal) -> None:
        super().__init__(
            f"The wallet balance {balance} cannot cover this turn's estimated {estimated_credits} credits.",
            balance=str(balance),
            estimated_credits=str(estimated_credits),
        )


def usage_estimate(*, model_aliases: Sequence[str], input_tokens: int, output_tokens: int) -> Decimal:
    """An upper-bound guess of a turn's cost: each of these agents reads `input_tokens` and
    writes `output_tokens`."""
    snapshot = get_pricing_snapshot()
    return sum(
        (credits_for(input_tokens, output_tokens, snapshot.multiplier_for(alias)) for alias in model_aliases),
        Decimal(0),
    )


def usage_gate(*, user_id: int, model_aliases: Sequence[str], input_tokens: int) -> None:
    """In `enforce` mode, refuse (402) a turn the balance cannot cover; observe mode never refuses.

    Runs before any model is called. Each agent is assumed to write
    CREDIT_ESTIMATE_OUTPUT_TOKENS.
    """
    if settings.CREDIT_ENFORCEMENT != "enforce":
        return
    estimated = usage_estimate(
        model_aliases=model_aliases,
        input_tokens=input_tokens,
        output_tokens=settings.CREDIT_ESTIMATE_OUTPUT_TOKENS,
    )
    found = CreditWallet.objects.filter(user_id=user_id).values_list("balance", flat=True).first()
    balance = found if found is not None else wallet_create(user_id=user_id).balance
    if balance < estimated:
        raise InsufficientCredits(balance=balance, estimated_credits=estimated)
