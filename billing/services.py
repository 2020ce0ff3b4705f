"""Billing writes. Every balance change is one ledger row, written in the same
transaction as an `UPDATE … RETURNING` of the wallet, so the row lock taken by
that UPDATE serialises concurrent writers and `balance_after` is always exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.models import CreditTransaction, CreditWallet, ModelPricing, PricingChange

CREDIT_QUANTUM = Decimal("0.0001")
MAX_CREDITS = Decimal("1e15")  # 20 digits, 4 after the point.


class LedgerError(ValueError):
    """A ledger write that can never succeed (bad amount, conflicting key)."""


class IdempotencyConflict(LedgerError):
    """The idempotency key was already used for a different ledger write."""


def parse_credits(value: object) -> Decimal:
    """A positive-or-negative credit amount with at most 4 decimal places."""
    if isinstance(value, float | bool):
        raise LedgerError("credit amounts must be given as Decimal or string, not float")
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise LedgerError(f"{value!r} is not a decimal number") from exc
    if not amount.is_finite():
        raise LedgerError(f"{value!r} is not a finite number")
    # Size first: quantizing a huge value raises InvalidOperation instead of answering.
    if abs(amount) >= MAX_CREDITS:
        raise LedgerError(f"{value!r} is too large")
    if amount != amount.quantize(CREDIT_QUANTUM):
        raise LedgerError(f"{value!r} has more than 4 decimal places")
    return amount.quantize(CREDIT_QUANTUM)


def credits_from_db(value: object) -> Decimal:
    """A credit column read through a raw cursor: SQLite hands back floats, PostgreSQL Decimal."""
    return value if isinstance(value, Decimal) else Decimal(str(value)).quantize(CREDIT_QUANTUM)


def _apply_to_wallet(
    wallet_id: int, *, delta: Decimal, granted: Decimal, burned: Decimal, now: datetime | None = None
) -> Decimal:
    """Change the balance in place and return it; the row stays locked until commit."""
    table = CreditWallet._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET balance = balance + %s, "
            "lifetime_granted = lifetime_granted + %s, lifetime_burned = lifetime_burned + %s, "
            "updated_at = %s WHERE id = %s RETURNING balance",
            [
                delta,
                granted,
                burned,
                connection.ops.adapt_datetimefield_value(now or timezone.now()),
                wallet_id,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        raise LedgerError(f"wallet {wallet_id} does not exist")
    return credits_from_db(row[0])


def _append_ledger_row(row: CreditTransaction) -> CreditTransaction:
    """INSERT an unsaved ledger row with one plain statement and return it saved.

    The ORM's `save()` spends more Python time than the INSERT itself, and on a
    hot wallet that time is spent holding the wallet's row lock.
    """
    fields = [field for field in row._meta.concrete_fields if not field.primary_key]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {row._meta.db_table} ({', '.join(field.column for field in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id",
            [field.get_db_prep_save(getattr(row, field.attname), connection) for field in fields],
        )
        row.pk = cursor.fetchone()[0]
    row._state.adding = False
    row._state.db = connection.alias
    return row


def _existing_for_key(*, wallet_id: int, kind: str, amount: Decimal, key: str) -> CreditTransaction | None:
    existing = CreditTransaction.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.wallet_id != wallet_id or existing.kind != kind or existing.amount != amount:
        raise IdempotencyConflict(f"idempotency key {key!r} was used for a different ledger write")
    return existing


def _ledger_write(
    *,
    wallet_id: int,
    kind: str,
    amount: Decimal,
    usage_event_id: int | None = None,
    idempotency_key: str | None = None,
    description: str = "",
) -> CreditTransaction:
    if idempotency_key:
        existing = _existing_for_key(wallet_id=wallet_id, kind=kind, amount=amount, key=idempotency_key)
        if existing is not None:
            return existing
    # Built before the wallet is locked: only the two statements run under the lock.
    row = CreditTransaction(
        wallet_id=wallet_id,
        kind=kind,
        amount=amount,
        usage_event_id=usage_event_id,
        idempotency_key=idempotency_key or None,
        description=description[:255],
        created_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            row.balance_after = _apply_to_wallet(
                wallet_id,
                delta=amount,
                granted=amount if kind == CreditTransaction.Kind.GRANT else Decimal(0),
                burned=-amount if kind == CreditTransaction.Kind.DEBIT else Decimal(0),
                now=row.created_at,
            )
            return _append_ledger_row(row)
    except IntegrityError:
        # A concurrent writer committed the same key first; our savepoint is undone.
        if idempotency_key:
            existing = _existing_for_key(wallet_id=wallet_id, kind=kind, amount=amount, key=idempotency_key)
            if existing is not None:
                return existing
        raise


def wallet_grant(
    *, wallet_id: int, amount: Decimal, description: str = "", idempotency_key: str | None = None
) -> CreditTransaction:
    amount = parse_credits(amount)
    if amount <= 0:
        raise LedgerError("a grant must be positive")
    return _ledger_write(
        wallet_id=wallet_id,
        kind=CreditTransaction.Kind.GRANT,
        amount=amount,
        idempotency_key=idempotency_key,
        description=description,
    )


def wallet_debit(
    *,
    wallet_id: int,
    amount: Decimal,
    usage_event_id: int | None = None,
    description: str = "",
    idempotency_key: str | None = None,
) -> CreditTransaction:
    """Burn `amount` (> 0) credits. Observational billing: the balance may go negative."""
    amount = parse_credits(amount)
    if amount <= 0:
        raise LedgerError("a debit amount must be positive")
    return _ledger_write(
        wallet_id=wallet_id,
        kind=CreditTransaction.Kind.DEBIT,
        amount=-amount,
        usage_event_id=usage_event_id,
        idempotency_key=idempotency_key,
        description=description,
    )


def wallet_refund(
    *, wallet_id: int, amount: Decimal, description: str = "", idempotency_key: str | None = None
) -> CreditTransaction:
    amount = parse_credits(amount)
    if amount <= 0:
        raise LedgerError("a refund must be positive")
    return _ledger_write(
        wallet_id=wallet_id,
        kind=CreditTransaction.Kind.REFUND,
        amount=amount,
        idempotency_key=idempotency_key,
        description=description,
    )


def wallet_adjust(
    *, wallet_id: int, amount: Decimal, description: str = "", idempotency_key: str | None = None
) -> CreditTransaction:
    """A signed correction by staff; zero is refused."""
    amount = parse_credits(amount)
    if amount == 0:
        raise LedgerError("an adjustment cannot be zero")
    return _ledger_write(
        wallet_id=wallet_id,
        kind=CreditTransaction.Kind.ADJUSTMENT,
        amount=amount,
        idempotency_key=idempotency_key,
        description=description,
    )


@dataclass(frozen=True)
class DebitLine:
    amount: Decimal
    usage_event_id: int | None = None
    description: str = ""


def wallet_debit_many(*, wallet_id: int, lines: list[DebitLine]) -> list[CreditTransaction]:
    """Several debits (one per metered call of a turn) with one wallet UPDATE.

    Must run inside the caller's transaction: the wallet row is locked from
    this UPDATE until that transaction commits, which is why the turn service
    calls it last.
    """
    amounts = [parse_credits(line.amount) for line in lines]
    if any(amount <= 0 for amount in amounts):
        raise LedgerError("every debit amount must be positive")
    if not amounts:
        return []
    total = sum(amounts, Decimal(0))
    # No savepoint: it would add two round trips (SAVEPOINT, RELEASE), one of them while the
    # wallet row is locked; any failure here fails the caller's whole transaction anyway.
    with transaction.atomic(savepoint=False):
        balance_after_all = _apply_to_wallet(wallet_id, delta=-total, granted=Decimal(0), burned=total)
        running = balance_after_all + total
        rows = []
        for line, amount in zip(lines, amounts, strict=True):
            running -= amount
            rows.append(
                CreditTransaction(
                    wallet_id=wallet_id,
                    kind=CreditTransaction.Kind.DEBIT,
                    amount=-amount,
                    balance_after=running,
                    usage_event_id=line.usage_event_id,
                    description=line.description[:255],
                )
            )
        return CreditTransaction.objects.bulk_create(rows)


def beta_grant_key(user_id: int) -> str:
    return f"beta-grant:{user_id}"


def wallet_get_or_create(*, user) -> CreditWallet:
    """The user's wallet; a new one gets the beta grant exactly once."""
    wallet = CreditWallet.objects.filter(user_id=user.pk).first()
    if wallet is not None:
        return wallet
    try:
        with transaction.atomic():
            wallet = CreditWallet.objects.create(user_id=user.pk)
            grant = settings.BETA_GRANT_CREDITS
            if grant > 0:
                wallet_grant(
                    wallet_id=wallet.pk,
                    amount=grant,
                    description="Beta grant",
                    idempotency_key=beta_grant_key(user.pk),
                )
    except IntegrityError:
        # Another request created it between our read and our insert.
        return CreditWallet.objects.get(user_id=user.pk)
    wallet.refresh_from_db()
    return wallet


# --- Pricing ---------------------------------------------------------------------

MULTIPLIER_QUANTUM = Decimal("0.0001")
MULTIPLIER_MAX = Decimal(100)
# A plain decimal: no exponent, no underscores, no spaces inside, no "NaN"/"Infinity".
_DECIMAL_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
# Any constant; it names the "pricing edit" advisory lock in pg_locks.
PRICING_EDIT_LOCK_KEY = 0x70726963  # "pric"


class PricingError(ValueError):
    """A multiplier edit that can never succeed; the message is shown to the editor."""


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
    changed_by,
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
