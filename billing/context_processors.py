"""The wallet figures every page shows: the header balance and the low-balance banner."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.http import HttpRequest
from django.utils.functional import cached_property

from billing.models import CreditWallet
from billing.selectors import wallet_available, wallet_for_user


class HeaderWallet:
    """Reads the wallet only if a template asks for it (error pages never do), and once."""

    def __init__(self, user) -> None:
        self._user = user

    @cached_property
    def _wallet(self) -> CreditWallet | None:
        return wallet_for_user(user=self._user)

    @cached_property
    def balance(self) -> Decimal | None:
        wallet = self._wallet
        return None if wallet is None else wallet.balance

    @cached_property
    def available(self) -> Decimal | None:
        return wallet_available(user=self._user, wallet=self._wallet)

    @property
    def low_balance_threshold(self) -> Decimal:
        return settings.LOW_BALANCE_CREDITS

    @cached_property
    def is_low(self) -> bool:
        """Available credits under LOW_BALANCE_CREDITS (a user without a wallet sees no banner)."""
        available = self.available
        return available is not None and available < settings.LOW_BALANCE_CREDITS


def header_wallet(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}  # no query for anonymous visitors
    return {"header_wallet": HeaderWallet(user)}
