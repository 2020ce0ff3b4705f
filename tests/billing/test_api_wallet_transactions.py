"""GET /api/v1/users/me/wallet and /api/v1/users/me/transactions."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from rest_framework.test import APIClient

from billing import services
from billing.models import CreditTransaction, CreditWallet
from tests.billing.api_helpers import walk
from tests.factories import UsageEventFactory, UserFactory, UserWithoutWalletFactory
from tests.support.clients import bearer, client_for, logged_in

WALLET = "/api/v1/users/me/wallet"
LEDGER = "/api/v1/users/me/transactions"

pytestmark = pytest.mark.django_db


def test_wallet_shape_after_grant_and_debit():
    user = UserFactory()
    wallet = CreditWallet.objects.get(user=user)
    services.wallet_debit(wallet_id=wallet.pk, amount=Decimal("12.3456"))
    body = client_for(user).get(WALLET).json()
    assert body.keys() == {
        "balance",
        "held",
        "available",
        "lifetime_granted",
        "lifetime_burned",
        "updated_at",
    }
    assert (body["held"], body["available"]) == ("0.0000", body["balance"])
    assert body["balance"] == "487.6544"
    assert body["lifetime_granted"] == "500.0000"
    assert body["lifetime_burned"] == "12.3456"
    wallet.refresh_from_db()
    assert dt.datetime.fromisoformat(body["updated_at"]) == wallet.updated_at


def test_one_shared_wallet_serializer_writes_each_wallet_as_a_fresh_one_would_across_threads():
    """The view shares one serializer per process; threads writing different wallets must not mix."""
    from concurrent.futures import ThreadPoolExecutor

    from billing.api.serializers import WalletSerializer
    from billing.api.views import _WALLET_FIELDS

    wallets = []
    for n in range(8):
        wallet = CreditWallet.objects.get(user=UserFactory())
        services.wallet_debit(wallet_id=wallet.pk, amount=Decimal(f"{n + 1}.1234"))
        wallet.refresh_from_db()
        wallets.append(wallet)
    expected = [dict(WalletSerializer(wallet).data) for wallet in wallets]

    def written(index: int) -> list[dict]:
        return [dict(_WALLET_FIELDS.to_representation(wallets[index])) for _ in range(50)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(written, range(8)))
    for index, rows in enumerate(results):
        assert rows == [expected[index]] * 50
    assert len({row["balance"] for row in expected}) == 8


def test_wallet_is_created_lazily_with_the_beta_grant():
    user = UserWithoutWalletFactory()
    assert not CreditWallet.objects.filter(user=user).exists()
    client = client_for(user)
    assert client.get(WALLET).json()["balance"] == "500.0000"
    assert client.get(WALLET).json()["balance"] == "500.0000"  # granted once
    assert CreditTransaction.objects.filter(wallet__user=user).count() == 1


def test_wallet_works_with_a_session_too():
    user = UserFactory()
    assert logged_in(user).get(WALLET).status_code == 200


@pytest.mark.parametrize("path", [WALLET, LEDGER])
def test_anonymous_and_bad_tokens_are_401(path):
    assert APIClient().get(path).status_code == 401
    bad = bearer("not-a-real-token")
    response = bad.get(path)
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


@pytest.fixture
def alice_ledger():
    """Alice: beta grant + 249 more rows (debits tied to usage events, refunds, adjustments)."""
    alice = UserFactory(username="alice")
    wallet = CreditWallet.objects.get(user=alice)
    for index in range(249):
        if index % 3 == 0:
            event = UsageEventFactory(turn__room__owner=alice)
            services.wallet_debit(wallet_id=wallet.pk, amount=Decimal("1.0001"), usage_event_id=event.pk)
        elif index % 3 == 1:
            services.wallet_refund(wallet_id=wallet.pk, amount=Decimal("0.5"), description=f"refund {index}")
        else:
            services.wallet_adjust(wallet_id=wallet.pk, amount=Decimal("-0.25"), description=f"fix {index}")
    return alice


def test_ledger_pages_cover_every_row_newest_first(alice_ledger):
    bob = UserFactory(username="bob")
    services.wallet_grant(wallet_id=CreditWallet.objects.get(user=bob).pk, amount=Decimal(5))
    pages = walk(client_for(alice_ledger), f"{LEDGER}?page_size=60")
    rows = [row for page in pages for row in page["results"]]
    expected = list(
        CreditTransaction.objects.filter(wallet__user=alice_ledger)
        .order_by("-id")
        .values_list("id", flat=True)
    )
    assert [row["id"] for row in rows] == expected
    assert len(expected) == 250
    assert [len(page["results"]) for page in pages] == [60, 60, 60, 60, 10]
    # The balance chain reads back consistently: each row's balance_after follows from the one before.
    for newer, older in itertools.pairwise(rows):
        assert Decimal(newer["balance_after"]) == Decimal(older["balance_after"]) + Decimal(newer["amount"])
    wallet = CreditWallet.objects.get(user=alice_ledger)
    assert Decimal(rows[0]["balance_after"]) == wallet.balance


def test_ledger_row_shape(alice_ledger):
    rows = client_for(alice_ledger).get(f"{LEDGER}?page_size=200").json()["results"]
    assert list(rows[0]) == [
        "id",
        "kind",
        "amount",
        "balance_after",
        "usage_event",
        "description",
        "created_at",
    ]
    debit = next(row for row in rows if row["kind"] == "debit")
    assert debit["amount"] == "-1.0001"
    assert debit["usage_event"] == CreditTransaction.objects.get(pk=debit["id"]).usage_event_id
    assert isinstance(debit["usage_event"], int)
    refund = next(row for row in rows if row["kind"] == "refund")
    assert refund["usage_event"] is None and refund["amount"] == "0.5000"


def test_ledger_previous_links_and_one_query_per_page(alice_ledger, django_assert_num_queries):
    client = APIClient()
    client.force_authenticate(alice_ledger)
    first = client.get(f"{LEDGER}?page_size=100").json()
    assert first["previous"] is None
    with django_assert_num_queries(2):  # the wallet id, then the page
        second = client.get(first["next"]).json()
    back = client.get(second["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]
    assert back["previous"] is None


def test_ledger_query_is_an_index_range_scan(alice_ledger):
    wallet = CreditWallet.objects.get(user=alice_ledger)
    middle = CreditTransaction.objects.filter(wallet=wallet).order_by("id")[120]
    query = CreditTransaction.objects.filter(wallet_id=wallet.pk, id__lt=middle.pk).order_by("-id")[:51]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE billing_credittransaction")
        # Ask whether an index can serve this order (tiny tables would be planned with a sort).
        cursor.execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off"
        )
        sql, params = query.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(line for (line,) in cursor.fetchall())
    # Served in index order (the (wallet, -id) index, or the primary key when one
    # wallet holds most rows, as here): never a sort of the wallet's whole ledger.
    assert "Index Scan" in plan, plan
    assert "Sort" not in plan, plan


def test_bob_reads_none_of_alices_ledger(alice_ledger):
    bob = UserFactory(username="bob")
    bob_client = client_for(bob)
    bob_rows = bob_client.get(LEDGER).json()["results"]
    assert [row["kind"] for row in bob_rows] == ["grant"]
    assert bob_rows[0]["id"] not in set(
        CreditTransaction.objects.filter(wallet__user=alice_ledger).values_list("id", flat=True)
    )
    next_url = client_for(alice_ledger).get(f"{LEDGER}?page_size=5").json()["next"]
    stolen = parse_qs(urlparse(next_url).query)["cursor"][0]
    response = bob_client.get(f"{LEDGER}?cursor={stolen}")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid", "detail": {"cursor": ["Invalid cursor."]}}
    # A usage cursor is not a ledger cursor, even for its owner.
    UsageEventFactory.create_batch(3, turn__room__owner=alice_ledger)
    usage_next = client_for(alice_ledger).get("/api/v1/users/me/usage?page_size=1").json()["next"]
    usage_cursor = parse_qs(urlparse(usage_next).query)["cursor"][0]
    assert client_for(alice_ledger).get(f"{LEDGER}?cursor={usage_cursor}").status_code == 400


def test_user_without_wallet_has_an_empty_ledger():
    user = UserWithoutWalletFactory()
    assert client_for(user).get(LEDGER).json() == {"next": None, "previous": None, "results": []}
