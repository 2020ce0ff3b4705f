"""Metering: the rules that turn model calls into usage rows and debits.

Chat hands billing plain `CallRecord`s (what ran, how many tokens) and gets
priced usage back. Billing decides which calls are metered (the manager's
routing call is not), prices each one with the multiplier and version of the
snapshot in force at commit, and writes the usage rows with one debit per
metered call, the wallet row last.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction

from billing.meter import credits_for, get_pricing_snapshot
from billing.models import CreditHold, CreditWallet, UsageEvent
from billing.services.ledger import DebitLine, wallet_create, wallet_debit_many, wallet_settle_hold

logger = logging.getLogger(__name__)

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
    # Of input_tokens, read from the provider's prompt cache; of output_tokens, reasoning.
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0


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
                cached_input_tokens=call.cached_input_tokens,
                reasoning_tokens=call.reasoning_tokens,
                latency_ms=call.latency_ms,
            )
        )
    return PricedUsage(events=events)


def usage_record(
    *, user_id: int, room_id: int, turn_id: int, priced: PricedUsage, hold: CreditHold | None = None
) -> RecordedUsage:
    """Write a turn's usage rows and debit the wallet once per charged call; settle its hold.

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
    if hold is not None and priced.credits_burned > hold.amount:
        # Possible only if a provider wrote past max_tokens or counted more than our tokenizer.
        logger.warning(
            "hold overdraft hold=%s user=%s turn=%s held=%s charged=%s",
            hold.pk,
            user_id,
            turn_id,
            hold.amount,
            priced.credits_burned,
        )
    settle_hold_id = hold.pk if hold is not None else None
    if lines:
        balance = wallet_debit_many(user_id=user_id, lines=lines, settle_hold_id=settle_hold_id)[
            -1
        ].balance_after
    elif settle_hold_id is not None:
        balance = wallet_settle_hold(user_id=user_id, hold_id=settle_hold_id)
    else:
        found = CreditWallet.objects.filter(user_id=user_id).values_list("balance", flat=True).first()
        balance = found if found is not None else wallet_create(user_id=user_id).balance
    return RecordedUsage(events=events, balance=balance)


@dataclass(frozen=True)
class CallBound:
    """The most one model call of a turn can cost: its input and its output cap, in tokens."""

    model_alias: str
    purpose: str
    input_tokens: int
    output_tokens: int


def usage_bound(*, bounds: Iterable[CallBound]) -> Decimal:
    """Credits the calls would cost at most, priced like `usage_price` (unmetered calls cost 0)."""
    snapshot = get_pricing_snapshot()
    return sum(
        (
            credits_for(bound.input_tokens, bound.output_tokens, snapshot.multiplier_for(bound.model_alias))
            for bound in bounds
            if is_metered(bound.purpose)
        ),
        Decimal(0),
    )
