"""The low-balance banner: on every page while the available credits are under LOW_BALANCE_CREDITS."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import context_processors
from billing.services import wallet_adjust
from tests.factories import RoomFactory, UserFactory

pytestmark = pytest.mark.django_db

BANNER = 'data-testid="low-balance"'


def _with_balance(balance: str):
    user = UserFactory()
    wallet = user.wallet
    wallet_adjust(wallet_id=wallet.pk, amount=Decimal(balance) - wallet.balance, description="test")
    return user


def test_no_banner_at_or_above_the_threshold(client):
    client.force_login(_with_balance("50.0000"))
    for path in ("/rooms/", "/wallet/", "/usage/"):
        assert BANNER not in client.get(path).content.decode(), path


def test_banner_on_every_page_under_the_threshold(client):
    user = _with_balance("49.9999")
    room = RoomFactory(owner=user)
    client.force_login(user)
    for path in ("/rooms/", f"/rooms/{room.pk}/", "/wallet/", "/usage/", "/password/"):
        html = client.get(path).content.decode()
        assert BANNER in html, path
        assert 'data-testid="low-balance-available">49.9999<' in html
        assert "under 50." in html
        assert "ask your administrator for more" in html


def test_banner_for_a_negative_balance_and_a_configured_threshold(client, settings):
    client.force_login(_with_balance("-3.2500"))
    assert 'data-testid="low-balance-available">-3.2500<' in client.get("/wallet/").content.decode()
    settings.LOW_BALANCE_CREDITS = Decimal("0")
    assert BANNER in client.get("/wallet/").content.decode()  # still under 0
    client.force_login(_with_balance("0.0000"))
    assert BANNER not in client.get("/wallet/").content.decode()


def test_banner_reads_the_available_balance_from_its_one_selector(client, monkeypatch):
    """Holds will change what is available in `billing.selectors.wallet_available` alone."""
    user = _with_balance("400.0000")
    monkeypatch.setattr(
        context_processors, "wallet_available", lambda *, user, wallet=None: Decimal("12.5000")
    )
    client.force_login(user)
    html = client.get("/rooms/").content.decode()
    assert 'data-testid="low-balance-available">12.5000<' in html
    assert 'data-testid="header-balance">400.0000<' in html  # the balance itself is unchanged


def test_no_banner_and_no_query_for_anonymous_pages(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        html = client.get("/login/").content.decode()
    assert BANNER not in html


def test_header_reads_the_wallet_once_for_balance_and_banner(client):
    user = _with_balance("10.0000")
    client.force_login(user)
    with CaptureQueriesContext(connection) as queries:
        html = client.get("/password/").content.decode()
    assert BANNER in html
    wallet_reads = [q["sql"] for q in queries if 'FROM "billing_creditwallet"' in q["sql"]]
    assert len(wallet_reads) == 1, wallet_reads
