"""Why a charge is what it is: a usage row's own numbers put back into the formula.

Pages show this next to a cost. The figures are the row's stored tokens and
multiplier; the result comes from `billing.meter.credits_for`, the one function
that rounds. The base price is not stored per row, so the formula is written
with today's `CREDITS_PER_1K_TOKENS`; when that no longer reproduces what was
charged (the base price changed since), the explanation says so instead of
pretending, and the charged amount stays the one shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.conf import settings

from billing.meter import TOKENS_PER_UNIT, credits_for
from billing.models import UsageEvent


class PricedCall(Protocol):
    """What a usage row (`UsageEvent`) carries about its price."""

    input_tokens: int
    output_tokens: int
    multiplier: Decimal
    credits_burned: Decimal
    metered: bool
    usage_source: str
    cached_input_tokens: int
    reasoning_tokens: int


@dataclass(frozen=True)
class ChargeFormula:
    """`(input + output) ÷ 1000 × base price × multiplier = credits` for one model call."""

    input_tokens: int
    output_tokens: int
    tokens: int
    tokens_per_unit: Decimal
    base_price: Decimal
    multiplier: Decimal
    # What the formula gives with these numbers (rounded once, in billing.meter).
    formula_credits: Decimal
    # What the wallet was actually debited for this call (0 when unmetered).
    credits_burned: Decimal
    metered: bool
    # Token counts counted by Pantheon with the model's tokenizer, not reported by the provider.
    estimated: bool
    # Provider-reported detail, already inside input_tokens / output_tokens.
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def reproduces_charge(self) -> bool:
        """The formula with today's base price gives exactly what was charged."""
        return not self.metered or self.formula_credits == self.credits_burned


def charge_formula(call: PricedCall) -> ChargeFormula:
    return ChargeFormula(
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        tokens=call.input_tokens + call.output_tokens,
        tokens_per_unit=TOKENS_PER_UNIT,
        base_price=settings.CREDITS_PER_1K_TOKENS,
        multiplier=call.multiplier,
        formula_credits=credits_for(call.input_tokens, call.output_tokens, call.multiplier),
        credits_burned=call.credits_burned,
        metered=call.metered,
        estimated=call.usage_source == UsageEvent.UsageSource.ESTIMATED,
        cached_input_tokens=call.cached_input_tokens,
        reasoning_tokens=call.reasoning_tokens,
    )
