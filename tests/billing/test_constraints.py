"""Every billing rule is a database constraint: bad rows written straight through the ORM fail."""

from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from billing.models import CreditTransaction, CreditWallet, ModelPricing, PricingChange, PricingVersion
from tests.factories import UsageEventFactory, UserFactory

pytestmark = pytest.mark.django_db


@contextmanager
def rejected():
    """Expect an IntegrityError, inside a savepoint so the test transaction survives."""
    with pytest.raises(IntegrityError) as excinfo, transaction.atomic():
        yield excinfo


@pytest.fixture
def wallet() -> CreditWallet:
    return CreditWallet.objects.get(user=UserFactory())


@pytest.fixture
def version() -> PricingVersion:
    return PricingVersion.objects.get(is_active=True)


def ledger_row(wallet: CreditWallet, **fields) -> CreditTransaction:
    values = {"kind": "grant", "amount": Decimal("1"), "balance_after": Decimal("0")} | fields
    return CreditTransaction.objects.create(wallet=wallet, **values)


# --- pricing -------------------------------------------------------------------------


def test_only_one_pricing_version_can_be_active(version):
    with rejected() as excinfo:
        PricingVersion.objects.create(version="2026-03-01", is_active=True)
    assert "billing_one_active_pricing_version" in str(excinfo.value)
    # Any number of inactive versions is fine.
    PricingVersion.objects.create(version="2026-03-02", is_active=False)
    PricingVersion.objects.create(version="2026-03-03", is_active=False)


def test_activating_a_second_version_by_update_is_refused(version):
    other = PricingVersion.objects.create(version="2026-03-01", is_active=False)
    with rejected():
        PricingVersion.objects.filter(pk=other.pk).update(is_active=True)


@pytest.mark.parametrize("multiplier", ["0", "-1", "-0.0001", "100.0001", "1000"])
def test_multiplier_out_of_range_is_refused(version, multiplier):
    with rejected() as excinfo:
        ModelPricing.objects.create(pricing_version=version, model_alias="new-model", multiplier=multiplier)
    assert "billing_multiplier_range" in str(excinfo.value)


def test_multiplier_update_out_of_range_is_refused():
    with rejected():
        ModelPricing.objects.filter(model_alias="gpt-4o").update(multiplier=Decimal("0"))
    assert ModelPricing.objects.get(model_alias="gpt-4o").multiplier == Decimal("2.0")


@pytest.mark.parametrize("multiplier", ["0.0001", "100"])
def test_multiplier_bounds_are_inclusive_of_100_and_exclusive_of_0(version, multiplier):
    row = ModelPricing.objects.create(pricing_version=version, model_alias="edge", multiplier=multiplier)
    assert row.pk


def test_alias_is_unique_per_version(version):
    with rejected() as excinfo:
        ModelPricing.objects.create(pricing_version=version, model_alias="gpt-4o", multiplier=Decimal("1"))
    assert "billing_unique_alias_per_version" in str(excinfo.value)
    # The same alias in another version is fine.
    other = PricingVersion.objects.create(version="2026-03-01")
    ModelPricing.objects.create(pricing_version=other, model_alias="gpt-4o", multiplier=Decimal("1"))


def test_pricing_change_source_is_checked():
    pricing = ModelPricing.objects.get(model_alias="gpt-4o")
    with rejected():
        PricingChange.objects.create(
            model_pricing=pricing,
            model_alias="gpt-4o",
            pricing_version="2026-02-20",
            old_multiplier=Decimal("2"),
            new_multiplier=Decimal("3"),
            source="shell",
        )


# --- wallet and ledger ---------------------------------------------------------------


def test_ledger_kind_must_be_known(wallet):
    with rejected() as excinfo:
        ledger_row(wallet, kind="bonus", amount=Decimal("5"))
    # The sign-by-kind check also names every kind, so either check may fire first.
    assert "billing_ledger_kind" in str(excinfo.value) or "billing_ledger_amount_sign" in str(excinfo.value)


@pytest.mark.parametrize(
    ("kind", "amount"),
    [
        ("grant", "0"),
        ("grant", "-1"),
        ("refund", "0"),
        ("refund", "-0.0001"),
        ("debit", "0"),
        ("debit", "1"),
        ("adjustment", "0"),
    ],
)
def test_amount_sign_by_kind_is_enforced(wallet, kind, amount):
    with rejected() as excinfo:
        ledger_row(wallet, kind=kind, amount=Decimal(amount))
    assert "billing_ledger_amount_sign" in str(excinfo.value)


@pytest.mark.parametrize(
    ("kind", "amount"),
    [("grant", "0.0001"), ("refund", "3"), ("debit", "-0.0001"), ("adjustment", "-2"), ("adjustment", "2")],
)
def test_amount_with_the_right_sign_is_accepted(wallet, kind, amount):
    assert ledger_row(wallet, kind=kind, amount=Decimal(amount)).pk


def test_idempotency_key_is_unique_across_wallets(wallet):
    ledger_row(wallet, idempotency_key="turn-1")
    other = CreditWallet.objects.get(user=UserFactory())
    with rejected():
        ledger_row(other, idempotency_key="turn-1")
    # NULL keys never collide.
    ledger_row(wallet, idempotency_key=None)
    ledger_row(wallet, idempotency_key=None)


@pytest.mark.parametrize(("kind", "amount"), [("grant", "1"), ("refund", "1"), ("adjustment", "-1")])
def test_usage_event_only_on_a_debit(wallet, kind, amount):
    event = UsageEventFactory(turn__room__owner=wallet.user)
    with rejected() as excinfo:
        ledger_row(wallet, kind=kind, amount=Decimal(amount), usage_event=event)
    assert "billing_ledger_usage_only_on_debit" in str(excinfo.value)
    assert ledger_row(wallet, kind="debit", amount=Decimal("-0.3"), usage_event=event).pk


def test_a_usage_event_is_paid_by_one_debit_only(wallet):
    event = UsageEventFactory(turn__room__owner=wallet.user)
    ledger_row(wallet, kind="debit", amount=Decimal("-0.3"), usage_event=event)
    with rejected():
        ledger_row(wallet, kind="debit", amount=Decimal("-0.3"), usage_event=event)


def test_one_wallet_per_user(wallet):
    with rejected():
        CreditWallet.objects.create(user=wallet.user)


def test_wallet_lifetime_totals_cannot_go_negative(wallet):
    with rejected() as excinfo:
        CreditWallet.objects.filter(pk=wallet.pk).update(lifetime_burned=Decimal("-1"))
    assert "billing_wallet_lifetime_non_negative" in str(excinfo.value)


# --- append-only trigger ---------------------------------------------------------------


def test_ledger_rows_cannot_be_updated(wallet):
    row = wallet.transactions.get()
    with rejected() as excinfo:
        CreditTransaction.objects.filter(pk=row.pk).update(description="rewritten")
    assert "append-only" in str(excinfo.value)
    with rejected():
        row.amount = Decimal("1000000")
        row.save()
    with rejected(), connection.cursor() as cursor:
        cursor.execute("UPDATE billing_credittransaction SET amount = 1 WHERE id = %s", [row.pk])
    row.refresh_from_db()
    assert row.amount == Decimal("500") and row.description == "Beta grant"


def test_ledger_rows_cannot_be_deleted(wallet):
    row = wallet.transactions.get()
    with rejected() as excinfo:
        row.delete()
    assert "append-only" in str(excinfo.value)
    with rejected(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_credittransaction")
    assert CreditTransaction.objects.filter(pk=row.pk).exists()
