"""Billing's signal receivers: side effects only, never business flow.

A new user row gets its wallet (with the beta grant) in the same transaction,
whichever door created it (API, sign-up page, Django admin, `createsuperuser`):
accounts never imports billing, billing listens.

The pricing-changed signal is cache invalidation only.

`billing.services.pricing_update_multiplier` sends it from `transaction.on_commit`,
so a rolled-back edit never reaches it. Its receiver (connected in
`BillingConfig.ready`) reloads this process's multiplier cache and tells every
other process through PostgreSQL NOTIFY (`billing.propagation`).
"""

from __future__ import annotations

import logging

from django.dispatch import Signal

from billing import meter, propagation

logger = logging.getLogger(__name__)

# Sent with `change=<PricingChange>` after the edit's transaction commits.
pricing_changed = Signal()


def create_wallet_for_new_user(sender, instance, created: bool = False, raw: bool = False, **kwargs) -> None:
    if created and not raw:
        from billing.services import wallet_create

        wallet_create(user_id=instance.pk)


def reload_and_notify(sender, change=None, **kwargs) -> None:
    snapshot = meter.reload_pricing_cache()
    change_seq = change.pk if change is not None else snapshot.change_seq
    # On SQLite (one `make run` process) the reload above is all there is to do.
    propagation.notify_pricing_changed(change_seq=change_seq)
    logger.info("pricing changed: cache reloaded at change_seq=%s and announced", snapshot.change_seq)
