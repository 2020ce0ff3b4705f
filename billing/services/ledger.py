"""Wallet and ledger writes. Every balance change is one ledger row, written in
the same transaction as an `UPDATE … RETURNING` of the wallet, so the row lock
taken by that UPDATE serialises concurrent writers and `balance_after` is
always exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.models import CreditHold, CreditTransaction, CreditWallet
from pantheon.errors import AppError

CREDIT_QUANTUM = Decimal("0.0001")
MAX_CREDITS = Decimal("1e15")  # 20 digits, 4 after the point.


class LedgerError(AppError, ValueError):
    """A ledger write that can never succeed (bad amount, conflicting key)."""

    code = "invalid_ledger_write"


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
    *,
    wallet_id: int | None = None,
    user_id: int | None = None,
    delta: Decimal,
    granted: Decimal,
    burned: Decimal,
    settle_hold_id: int | None = None,
    now: datetime | None = None,
) -> tuple[int, Decimal] | None:
    """Change the balance of the wallet with this id (or of this user) in place.

    With `settle_hold_id` the same statement settles that hold (if still active)
    and takes its amount out of `held` (PostgreSQL: enforce mode). Returns
    (wallet id, balance after), or None when there is no such wallet. The row
    stays locked until the caller's transaction commits.
    """
    column, value = ("id", wallet_id) if wallet_id is not None else ("user_id", user_id)
    moment = connection.ops.adapt_datetimefield_value(now or timezone.now())
    settle, unheld, settle_params = "", "", []
    if settle_hold_id is not None:
        settle = (
            f"WITH settled AS (UPDATE {CreditHold._meta.db_table} SET status = 'settled', closed_at = %s "
            "WHERE id = %s AND status = 'active' RETURNING amount) "
        )
        unheld = "held = held - COALESCE((SELECT amount FROM settled), 0), "
        settle_params = [moment, settle_hold_id]
    with connection.cursor() as cursor:
        cursor.execute(
            f"{settle}UPDATE {CreditWallet._meta.db_table} SET balance = balance + %s, "
            "lifetime_granted = lifetime_granted + %s, lifetime_burned = lifetime_burned + %s, "
            f"{unheld}updated_at = %s WHERE {column} = %s RETURNING id, balance",
            [*settle_params, delta, granted, burned, moment, value],
        )
        row = cursor.fetchone()
    return None if row is None else (row[0], credits_from_db(row[1]))


def _append_ledger_row(row: CreditTransaction) -> CreditTransaction:
    """INSERT an unsaved ledger row with one plain statement and return it saved.

    The ORM's `save()` spends more Python time than the INSERT itself, and on a
    hot wallet that time is spent holding the wallet's row lock.
    """
    fields = [field for field in row._meta.concrete_fields if not field.primary_key]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {row._meta.db_table} ({', '.join(str(field.column) for field in fields)}) "
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
            applied = _apply_to_wallet(
                wallet_id=wallet_id,
                delta=amount,
                granted=amount if kind == CreditTransaction.Kind.GRANT else Decimal(0),
                burned=-amount if kind == CreditTransaction.Kind.DEBIT else Decimal(0),
                now=row.created_at,
            )
            if applied is None:
                raise LedgerError(f"wallet {wallet_id} does not exist")
            row.balance_after = applied[1]
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


def wallet_debit_many(
    *,
    wallet_id: int | None = None,
    user_id: int | None = None,
    lines: list[DebitLine],
    settle_hold_id: int | None = None,
) -> list[CreditTransaction]:
    """Several debits (one per metered call of a turn) with one wallet UPDATE.

    The wallet is named by its id or by its user's id (a user without a wallet
    gets one, with its beta grant, first). Must run inside the caller's
    transaction: the wallet row is locked from this UPDATE until that
    transaction commits, which is why the turn calls it last.
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
        applied = _apply_to_wallet(
            wallet_id=wallet_id,
            user_id=user_id,
            delta=-total,
            granted=Decimal(0),
            burned=total,
            settle_hold_id=settle_hold_id,
        )
        if applied is None and wallet_id is None and user_id is not None:
            wallet_create(user_id=user_id)
            applied = _apply_to_wallet(
                user_id=user_id, delta=-total, granted=Decimal(0), burned=total, settle_hold_id=settle_hold_id
            )
        if applied is None:
            named = f"wallet {wallet_id}" if wallet_id is not None else f"the wallet of user {user_id}"
            raise LedgerError(f"{named} does not exist")
        wallet_id, balance_after_all = applied
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


def wallet_settle_hold(*, user_id: int, hold_id: int) -> Decimal:
    """Settle the hold of a turn that cost nothing; returns the balance. In the turn's transaction."""
    applied = _apply_to_wallet(
        user_id=user_id, delta=Decimal(0), granted=Decimal(0), burned=Decimal(0), settle_hold_id=hold_id
    )
    if applied is None:
        raise LedgerError(f"the wallet of user {user_id} does not exist")
    return applied[1]


def beta_grant_key(user_id: int) -> str:
    return f"beta-grant:{user_id}"


def wallet_create(*, user_id: int) -> CreditWallet:
    """The user's wallet, created with its beta grant if it does not exist yet (exactly once)."""
    try:
        with transaction.atomic():
            wallet = CreditWallet.objects.create(user_id=user_id)
            grant = settings.BETA_GRANT_CREDITS
            if grant > 0:
                wallet_grant(
                    wallet_id=wallet.pk,
                    amount=grant,
                    description="Beta grant",
                    idempotency_key=beta_grant_key(user_id),
                )
    except IntegrityError:
        # Another request created it between our read and our insert.
        return CreditWallet.objects.get(user_id=user_id)
    wallet.refresh_from_db()
    return wallet


def wallet_get_or_create(*, user: AbstractBaseUser) -> CreditWallet:
    """The user's wallet; a new one gets the beta grant exactly once."""
    wallet = CreditWallet.objects.filter(user_id=user.pk).first()
    return wallet if wallet is not None else wallet_create(user_id=user.pk)
