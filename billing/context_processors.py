"""The wallet balance shown in every page header."""

from __future__ import annotations

from decimal import Decimal

from django.http import HttpRequest
from django.utils.functional import cached_property

from billing.selectors import wallet_for_user


class HeaderWallet:
    """Reads the wallet only if a template asks for it (error pages never do)."""

    def __init__(self, user) -> None:
        self._user = user

    @cached_property
    def balance(self) -> Decimal | None:
        wallet = wallet_for_user(user=self._user)
        return None if wallet is None else wallet.balance


def header_wallet(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}  # no query for anonymous visitors
    return {"header_wallet": HeaderWallet(user)}
