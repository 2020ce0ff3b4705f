"""Billing writes, one module per reason to change:

- `ledger`: wallets and the append-only ledger (grant, debit, refund, adjust);
- `pricing`: multiplier edits, audited and announced after commit;
- `usage`: metering — which calls are charged, pricing them at commit, writing
  usage rows with their debits (settling the turn's hold), the most calls can cost;
- `holds`: enforce-mode credit holds, placed before a turn, settled or released once.

The names below are billing's public write API; other apps import them from here.
"""

from billing.services.holds import (
    InsufficientCredits,
    hold_place,
    hold_release,
    holds_release_expired,
)
from billing.services.ledger import (
    CREDIT_QUANTUM,
    MAX_CREDITS,
    DebitLine,
    IdempotencyConflict,
    LedgerError,
    beta_grant_key,
    credits_from_db,
    parse_credits,
    wallet_adjust,
    wallet_create,
    wallet_debit,
    wallet_debit_many,
    wallet_get_or_create,
    wallet_grant,
    wallet_refund,
)
from billing.services.pricing import (
    MULTIPLIER_MAX,
    MULTIPLIER_QUANTUM,
    PRICING_EDIT_LOCK_KEY,
    PricingError,
    PricingUpdate,
    parse_multiplier,
    pricing_update_multiplier,
)
from billing.services.usage import (
    CallBound,
    CallRecord,
    PricedUsage,
    RecordedUsage,
    is_metered,
    usage_bound,
    usage_price,
    usage_record,
)

__all__ = [
    "CREDIT_QUANTUM",
    "MAX_CREDITS",
    "MULTIPLIER_MAX",
    "MULTIPLIER_QUANTUM",
    "PRICING_EDIT_LOCK_KEY",
    "CallBound",
    "CallRecord",
    "DebitLine",
    "IdempotencyConflict",
    "InsufficientCredits",
    "LedgerError",
    "PricedUsage",
    "PricingError",
    "PricingUpdate",
    "RecordedUsage",
    "beta_grant_key",
    "credits_from_db",
    "hold_place",
    "hold_release",
    "holds_release_expired",
    "is_metered",
    "parse_credits",
    "parse_multiplier",
    "pricing_update_multiplier",
    "usage_bound",
    "usage_price",
    "usage_record",
    "wallet_adjust",
    "wallet_create",
    "wallet_debit",
    "wallet_debit_many",
    "wallet_get_or_create",
    "wallet_grant",
    "wallet_refund",
]
