"""Credit holds (enforce mode): reserve the most a turn can cost, then settle or release it once.

TigerBeetle's pending transfers are the model. A hold is placed by one
statement whose wallet UPDATE reserves only if `balance - held` covers the
amount: two turns racing for the last credits are serialised by the wallet's
row lock, and PostgreSQL re-checks the condition on the row the first one
committed, so the second sees its reservation. The wallet's `held` column
always equals the sum of its active holds; each statement below changes both
together (holds first, then the wallet row: one lock order everywhere).

Each hold is closed exactly once (`WHERE status = 'active'`): settled by its
turn's commit (`usage_record`, in the same UPDATE as the debits), or released
when its turn ran no model or its lease expired (a killed worker). Expired
holds are released by `release_expired_holds` and whenever a new hold is
placed on the same wallet.

Holds are not ledger rows: the ledger records what was spent, at settlement.
Enforce mode runs on PostgreSQL only (these are data-modifying CTEs; SQLite is
the zero-setup `make run` database and observes).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.models import CreditHold, CreditWallet
from billing.services.ledger import credits_from_db, parse_credits, wallet_create
from pantheon.errors import AppError

logger = logging.getLogger(__name__)

HOLDS = CreditHold._meta.db_table
WALLETS = CreditWallet._meta.db_table
ACTIVE, RELEASED = CreditHold.Status.ACTIVE, CreditHold.Status.RELEASED


class InsufficientCredits(AppError):
    status_code = 402
    code = "insufficient_credits"

    def __init__(self, *, needed: Decimal, available: Decimal, balance: Decimal) -> None:
        missing = needed - available
        super().__init__(
            f"This turn may cost up to {needed} credits and {available} are available: "
            f"{missing} more credits are needed. Ask an administrator to grant you credits, "
            "or ask fewer agents, or attach fewer files.",
            needed=str(needed),
            available=str(available),
            missing=str(missing),
            balance=str(balance),
        )


_PLACE_SQL = f"""
WITH expired AS (
    UPDATE {HOLDS} h SET status = '{RELEASED}', closed_at = %(now)s
    FROM {WALLETS} w
    WHERE w.user_id = %(user)s AND h.wallet_id = w.id AND h.status = '{ACTIVE}' AND h.expires_at <= %(now)s
    RETURNING h.amount
), freed AS (
    SELECT COALESCE(SUM(amount), 0) AS total FROM expired
), reserved AS (
    UPDATE {WALLETS} w SET held = w.held - freed.total + %(amount)s, updated_at = %(now)s
    FROM freed
    WHERE w.user_id = %(user)s AND w.balance - (w.held - freed.total) >= %(amount)s
    RETURNING w.id
), refused AS (
    -- No reservation, but the expired holds were closed: their credits leave `held` all the same.
    UPDATE {WALLETS} w SET held = w.held - freed.total
    FROM freed
    WHERE w.user_id = %(user)s AND freed.total > 0 AND NOT EXISTS (SELECT 1 FROM reserved)
    RETURNING w.id
), hold AS (
    INSERT INTO {HOLDS} (wallet_id, amount, status, expires_at, description, created_at)
    SELECT reserved.id, %(amount)s, '{ACTIVE}', %(expires)s, %(description)s, %(now)s FROM reserved
    RETURNING id
)
SELECT (SELECT id FROM hold), (SELECT count(*) FROM refused)
FROM {WALLETS} w WHERE w.user_id = %(user)s
"""


def hold_place(*, user_id: int, amount: Decimal, description: str = "") -> CreditHold:
    """Reserve `amount` on the user's wallet for HOLD_LEASE_SECONDS, or refuse with 402.

    One statement, a transaction by itself: it releases the wallet's expired
    holds, reserves the amount if what is then available covers it, and records
    the hold. Only a refusal reads the wallet again, to report what is available
    now (the statement's snapshot may predate turns it waited for).
    """
    amount = parse_credits(amount)
    if amount <= 0:
        raise ValueError("a hold must be positive")
    now = timezone.now()
    expires = now + timedelta(seconds=settings.HOLD_LEASE_SECONDS)
    params: dict[str, Any] = {
        "user": user_id,
        "amount": amount,
        "now": now,
        "expires": expires,
        "description": description[:255],
    }
    with connection.cursor() as cursor:
        for _attempt in range(3):
            cursor.execute(_PLACE_SQL, params)
            row = cursor.fetchone()
            if row is None:  # no wallet yet: create it (with its grant) and try again
                wallet_create(user_id=user_id)
                continue
            hold_id = row[0]
            if hold_id is not None:
                break
            cursor.execute(f"SELECT balance, held FROM {WALLETS} WHERE user_id = %s", [user_id])
            balance, held = (credits_from_db(value) for value in cursor.fetchone())
            if balance - held < amount:
                raise InsufficientCredits(needed=amount, available=balance - held, balance=balance)
            # Credits came back (a turn settled below its hold) after the statement's snapshot.
        else:
            raise InsufficientCredits(needed=amount, available=Decimal(0), balance=Decimal(0))
    hold = CreditHold(id=hold_id, amount=amount, status=ACTIVE, expires_at=expires, description=description)
    hold._state.adding = False
    return hold


_RELEASE_SQL = f"""
WITH released AS (
    UPDATE {HOLDS} SET status = '{RELEASED}', closed_at = %s WHERE id = %s AND status = '{ACTIVE}'
    RETURNING wallet_id, amount
)
UPDATE {WALLETS} w SET held = w.held - released.amount FROM released WHERE w.id = released.wallet_id
RETURNING w.id
"""


def hold_release(*, hold_id: int) -> bool:
    """Give a hold's credits back (its turn ran no model); False if it was already closed."""
    with connection.cursor() as cursor:
        cursor.execute(_RELEASE_SQL, [timezone.now(), hold_id])
        return cursor.fetchone() is not None


_EXPIRE_SQL = f"""
WITH expired AS (
    UPDATE {HOLDS} SET status = '{RELEASED}', closed_at = %(now)s
    WHERE status = '{ACTIVE}' AND expires_at <= %(now)s
    RETURNING wallet_id, amount
), per_wallet AS (
    SELECT wallet_id, SUM(amount) AS total FROM expired GROUP BY wallet_id
), unheld AS (
    UPDATE {WALLETS} w SET held = w.held - per_wallet.total FROM per_wallet WHERE w.id = per_wallet.wallet_id
    RETURNING w.id
)
SELECT (SELECT count(*) FROM expired), (SELECT count(*) FROM unheld)
"""


def holds_release_expired(*, now: datetime | None = None) -> int:
    """Release every expired active hold (a killed worker's) in one statement; returns how many."""
    with connection.cursor() as cursor:
        cursor.execute(_EXPIRE_SQL, {"now": now or timezone.now()})
        row = cursor.fetchone()
    released = int(row[0]) if row else 0
    if released:
        logger.info("expired holds released count=%d", released)
    return released
