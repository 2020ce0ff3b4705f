"""Pricing writes: a multiplier edit, validated, audited and announced after commit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction

from accounts.models import User
from billing.models import ModelPricing, PricingChange
from pantheon.errors import AppError

MULTIPLIER_QUANTUM = Decimal("0.0001")
MULTIPLIER_MAX = Decimal(100)
# A plain decimal: no exponent, no underscores, no spaces inside, no "NaN"/"Infinity".
_DECIMAL_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
# Any constant; it names the "pricing edit" advisory lock in pg_locks.
PRICING_EDIT_LOCK_KEY = 0x70726963  # "pric"


class PricingError(AppError, ValueError):
    """A multiplier edit that can never succeed; the message is shown to the editor."""

    code = "invalid_multiplier"


def parse_multiplier(value: object) -> Decimal:
    """A multiplier as an exact Decimal: 0 < m <= 100, at most 4 decimal places.

    Accepts a Decimal, an int, or a decimal string. JSON numbers reach here as
    Decimal (the pricing API parses floats with `parse_float=Decimal`), so the
    4-place check sees exactly what the client sent; a Python float is refused.
    """
    if isinstance(value, bool) or value is None:
        raise PricingError("The multiplier must be a decimal number.")
    if isinstance(value, float):
        raise PricingError("The multiplier must be given as a decimal string or Decimal, not a float.")
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise PricingError(f"{value[:40]!r} is not a decimal number.")
        multiplier = Decimal(text)
    elif isinstance(value, Decimal | int):
        multiplier = Decimal(value)
    else:
        raise PricingError("The multiplier must be a decimal number.")
    if not multiplier.is_finite():
        raise PricingError("The multiplier must be a finite number.")
    # Range before quantize: quantizing a huge value raises instead of answering.
    if multiplier <= 0:
        raise PricingError("The multiplier must be greater than 0.")
    if multiplier > MULTIPLIER_MAX:
        raise PricingError("The multiplier must be at most 100.")
    if multiplier != multiplier.quantize(MULTIPLIER_QUANTUM):
        raise PricingError("The multiplier can have at most 4 decimal places.")
    return multiplier.quantize(MULTIPLIER_QUANTUM)


@dataclass(frozen=True)
class PricingUpdate:
    model_pricing: ModelPricing
    old_multiplier: Decimal
    # None when the edit changed nothing (same value): no audit row, no signal.
    change: PricingChange | None


def _lock_pricing_edits() -> None:
    """Serialise every multiplier edit, so PricingChange ids commit in id order.

    That makes max(PricingChange.id) a faithful edit sequence for the caches:
    a process that has seen edit N has seen every edit before it.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PRICING_EDIT_LOCK_KEY])


def pricing_update_multiplier(
    *,
    model_alias: str,
    multiplier: object,
    changed_by: User | None,
    source: str,
    pricing_version: str | None = None,
) -> PricingUpdate:
    """Change one alias's multiplier (in the active version unless `pricing_version` is given).

    Validated, audited (who, alias, version, old → new, source) and, once the
    transaction commits, announced with the `pricing_changed` signal, whose
    receiver reloads this process's cache and NOTIFYs every other process.
    Raises ModelPricing.DoesNotExist for an unknown alias, PricingError for a bad value.
    """
    from billing.signals import pricing_changed

    new_multiplier = parse_multiplier(multiplier)
    if source not in PricingChange.Source.values:
        raise PricingError(f"unknown pricing change source {source!r}")
    rows = ModelPricing.objects.select_related("pricing_version")
    if pricing_version is None:
        rows = rows.filter(pricing_version__is_active=True)
    else:
        rows = rows.filter(pricing_version__version=pricing_version)
    with transaction.atomic():
        _lock_pricing_edits()
        row = rows.select_for_update(of=("self",)).get(model_alias=model_alias)
        old_multiplier = row.multiplier
        if old_multiplier == new_multiplier:
            return PricingUpdate(model_pricing=row, old_multiplier=old_multiplier, change=None)
        row.multiplier = new_multiplier
        row.save(update_fields=["multiplier", "updated_at"])
        change = PricingChange.objects.create(
            model_pricing=row,
            model_alias=row.model_alias,
            pricing_version=row.pricing_version.version,
            old_multiplier=old_multiplier,
            new_multiplier=new_multiplier,
            changed_by=changed_by if getattr(changed_by, "pk", None) else None,
            source=source,
        )
        # After COMMIT only: a rolled-back edit must never reach any cache.
        transaction.on_commit(
            lambda: pricing_changed.send(sender=PricingChange, change=change),
            robust=True,
        )
    return PricingUpdate(model_pricing=row, old_multiplier=old_multiplier, change=change)
