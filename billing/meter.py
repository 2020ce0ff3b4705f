"""The process-wide multiplier cache and the one credit formula.

`get_model_multiplier` never reads the database once the cache is loaded: the
turn path prices every call from memory. The cache knows which pricing version
and which audited edit (`PricingChange.id`) it holds, so an operator (and the
safety-net check in `billing.propagation`) can tell whether it is current.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

DEFAULT_ALIAS = "default"
CREDIT_QUANTUM = Decimal("0.0001")
TOKENS_PER_UNIT = Decimal(1000)


@dataclass(frozen=True)
class PricingSnapshot:
    """An immutable view of the active prices; swapped whole, never mutated."""

    version: str
    version_id: int | None
    change_seq: int
    multipliers: dict[str, Decimal] = field(default_factory=dict)
    loaded_at: float = 0.0

    def multiplier_for(self, model_alias: str | None) -> Decimal:
        if model_alias is None:
            return Decimal(1)
        found = self.multipliers.get(model_alias)
        if found is None:
            found = self.multipliers.get(DEFAULT_ALIAS, Decimal(1))
        return found


_lock = threading.Lock()
_snapshot: PricingSnapshot | None = None


def load_snapshot(cursor) -> PricingSnapshot:
    """The active prices through any DB-API cursor, in one statement so the edit
    sequence and the rows agree. Django's connection reloads in place; the
    listener in `billing.propagation` uses its own psycopg connection."""
    from billing.models import ModelPricing, PricingChange, PricingVersion

    # `(SELECT 1)` keeps one row (with the edit sequence) even when no version is active.
    cursor.execute(
        f"SELECT (SELECT COALESCE(MAX(id), 0) FROM {PricingChange._meta.db_table}), "
        "v.id, v.version, m.model_alias, m.multiplier FROM (SELECT 1) AS one "
        f"LEFT JOIN {PricingVersion._meta.db_table} v ON v.is_active "
        f"LEFT JOIN {ModelPricing._meta.db_table} m ON m.pricing_version_id = v.id"
    )
    rows = cursor.fetchall()
    change_seq, version_id, version = rows[0][:3]
    return PricingSnapshot(
        version=version or "",
        version_id=version_id,
        change_seq=int(change_seq),
        # str() first: SQLite hands back floats from a raw cursor, PostgreSQL Decimals.
        multipliers={
            alias: Decimal(str(multiplier)).quantize(CREDIT_QUANTUM)
            for *_, alias, multiplier in rows
            if alias is not None
        },
        loaded_at=time.time(),
    )


def _load_snapshot() -> PricingSnapshot:
    from django.db import connection

    with connection.cursor() as cursor:
        return load_snapshot(cursor)


def reload_pricing_cache(*, force: bool = False) -> PricingSnapshot:
    """Read the active prices from the database and swap them in atomically.

    `force` takes the database's state even if its edit sequence is lower than
    ours (audit rows removed, database restored); only the safety-net check uses it.
    """
    return install_pricing_snapshot(_load_snapshot(), force=force)


def install_pricing_snapshot(fresh: PricingSnapshot, *, force: bool = False) -> PricingSnapshot:
    """Swap in a snapshot loaded elsewhere (the listener loads over its own connection)."""
    global _snapshot
    with _lock:
        # Never go backwards: a slow reload must not overwrite a newer edit.
        if force or _snapshot is None or fresh.change_seq >= _snapshot.change_seq:
            _snapshot = fresh
        return _snapshot


def peek_pricing_snapshot() -> PricingSnapshot | None:
    """The snapshot held now, or None when not loaded; never loads."""
    return _snapshot


def pricing_is_current(*, version_id: int | None, change_seq: int) -> bool:
    """Whether the cache holds this active version and this edit sequence (no DB read)."""
    snapshot = _snapshot
    return snapshot is not None and snapshot.version_id == version_id and snapshot.change_seq == change_seq


def _reinit_lock_after_fork() -> None:
    # A lock held by another thread at fork time would stay locked forever in the child.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reinit_lock_after_fork)


def clear_pricing_cache() -> None:
    """Forget the cache (tests, and after a database is recreated)."""
    global _snapshot
    with _lock:
        _snapshot = None


def get_pricing_snapshot() -> PricingSnapshot:
    snapshot = _snapshot
    if snapshot is None:
        snapshot = reload_pricing_cache()
    return snapshot


def get_model_multiplier(model_alias: str | None) -> Decimal:
    """Multiplier for an alias; unknown aliases fall back to `default`. No DB read."""
    return get_pricing_snapshot().multiplier_for(model_alias)


def _check_tokens(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def credits_for(input_tokens: int, output_tokens: int, multiplier: Decimal) -> Decimal:
    """The formula, with the only ROUND_HALF_UP in the code base."""
    tokens = _check_tokens("input_tokens", input_tokens) + _check_tokens("output_tokens", output_tokens)
    raw = Decimal(tokens) / TOKENS_PER_UNIT * settings.CREDITS_PER_1K_TOKENS * multiplier
    return raw.quantize(CREDIT_QUANTUM, rounding=ROUND_HALF_UP)


def compute_credits_burned(input_tokens: int, output_tokens: int, model_alias: str | None = None) -> Decimal:
    """(in + out) / 1000 × CREDITS_PER_1K_TOKENS × multiplier, to 0.0001 half-up."""
    multiplier = Decimal(1) if model_alias is None else get_model_multiplier(model_alias)
    return credits_for(input_tokens, output_tokens, multiplier)


def cache_state() -> dict:
    """What this process holds, for /healthz and logs. Never touches the database."""
    snapshot = _snapshot
    if snapshot is None:
        return {"loaded": False, "pid": os.getpid()}
    return {
        "loaded": True,
        "pid": os.getpid(),
        "pricing_version": snapshot.version,
        "change_seq": snapshot.change_seq,
        "loaded_at": snapshot.loaded_at,
        "multipliers": {alias: str(m) for alias, m in sorted(snapshot.multipliers.items())},
    }
