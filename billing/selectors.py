"""Billing reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import DecimalField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.models import CreditTransaction, CreditWallet

ZERO = Value(Decimal(0), output_field=DecimalField(max_digits=20, decimal_places=4))


@dataclass(frozen=True)
class WalletDrift:
    wallet_id: int
    user_id: int
    problem: str
    expected: Decimal | None
    found: Decimal | None

    def __str__(self) -> str:
        return (
            f"wallet {self.wallet_id} (user {self.user_id}): {self.problem}: "
            f"wallet says {self.found}, ledger says {self.expected}"
        )


def wallets_with_ledger_totals():
    newest = (
        CreditTransaction.objects.filter(wallet=OuterRef("pk")).order_by("-id").values("balance_after")[:1]
    )
    return CreditWallet.objects.annotate(
        ledger_total=Coalesce(Sum("transactions__amount"), ZERO),
        ledger_granted=Coalesce(Sum("transactions__amount", filter=Q(transactions__kind="grant")), ZERO),
        ledger_burned=Coalesce(Sum("transactions__amount", filter=Q(transactions__kind="debit")), ZERO),
        newest_balance_after=Subquery(newest),
    ).order_by("pk")


def wallet_drifts(wallet: CreditWallet) -> list[WalletDrift]:
    """Every way one annotated wallet disagrees with its ledger."""
    drifts = []

    def add(problem: str, expected, found) -> None:
        drifts.append(WalletDrift(wallet.pk, wallet.user_id, problem, expected, found))

    if wallet.balance != wallet.ledger_total:
        add("balance != sum of ledger amounts", wallet.ledger_total, wallet.balance)
    if wallet.newest_balance_after is None:
        if wallet.balance != 0:
            add("non-zero balance with an empty ledger", Decimal(0), wallet.balance)
    elif wallet.newest_balance_after != wallet.balance:
        add("newest balance_after != balance", wallet.newest_balance_after, wallet.balance)
    if wallet.lifetime_granted != wallet.ledger_granted:
        add("lifetime_granted != sum of grants", wallet.ledger_granted, wallet.lifetime_granted)
    if wallet.lifetime_burned != -wallet.ledger_burned:
        add("lifetime_burned != sum of debits", -wallet.ledger_burned, wallet.lifetime_burned)
    return drifts


def ledger_drifts(*, chunk_size: int = 2000) -> Iterator[tuple[CreditWallet, list[WalletDrift]]]:
    """Walk every wallet once, yielding it with its drifts (empty when consistent)."""
    for wallet in wallets_with_ledger_totals().iterator(chunk_size=chunk_size):
        yield wallet, wallet_drifts(wallet)


def wallet_for_user(*, user) -> CreditWallet | None:
    return CreditWallet.objects.filter(user_id=user.pk).first()
