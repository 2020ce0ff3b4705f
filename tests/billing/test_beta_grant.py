"""The beta grant: by data migration for existing users, once for every new wallet."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from billing.models import CreditTransaction, CreditWallet
from billing.services import beta_grant_key, wallet_debit, wallet_get_or_create
from tests.factories import UserFactory, UserWithoutWalletFactory
from tests.support.migrations import migrate_to
from tests.support.threads import run_in_threads

BEFORE_GRANT = [("billing", "0002_seed_pricing")]


@pytest.fixture
def before_beta_grant_migration():
    """Historical models as they were before 0003_beta_grant; migrates back to latest afterwards."""
    executor = migrate_to(BEFORE_GRANT)
    try:
        yield executor.loader.project_state(BEFORE_GRANT).apps
    finally:
        migrate_to()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@pytest.mark.parametrize(("grant", "expected_rows"), [("500", 1), ("0", 0)])
def test_migration_grants_users_that_existed_before_it(
    before_beta_grant_migration, settings, grant, expected_rows
):
    settings.BETA_GRANT_CREDITS = Decimal(grant)
    old_apps = before_beta_grant_migration
    OldUser = old_apps.get_model("accounts", "User")
    OldWallet = old_apps.get_model("billing", "CreditWallet")
    no_wallet = OldUser.objects.create(username="early-bird", password="!")
    empty_wallet = OldUser.objects.create(username="early-wallet", password="!")
    OldWallet.objects.create(user_id=empty_wallet.pk)

    migrate_to()

    for user in (no_wallet, empty_wallet):
        wallet = CreditWallet.objects.get(user_id=user.pk)
        rows = list(CreditTransaction.objects.filter(wallet=wallet))
        assert len(rows) == expected_rows
        assert wallet.balance == Decimal(grant)
        assert wallet.lifetime_granted == Decimal(grant)
        if expected_rows:
            (row,) = rows
            assert (row.kind, row.amount, row.balance_after) == ("grant", Decimal(grant), Decimal(grant))
            assert row.idempotency_key == beta_grant_key(user.pk)
            assert row.description == "Beta grant"
    # The migration left the schema complete: the append-only trigger is back.
    assert _trigger_exists()

    # A wallet made by the migration never gets a second grant from the service.
    user = get_user_model().objects.get(pk=no_wallet.pk)
    assert wallet_get_or_create(user=user).balance == Decimal(grant)
    assert CreditTransaction.objects.filter(wallet__user=user).count() == expected_rows


def _trigger_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'billing_ledger_append_only'")
        return cursor.fetchone() is not None


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_migration_does_not_grant_twice_to_a_user_that_already_has_it(before_beta_grant_migration, settings):
    settings.BETA_GRANT_CREDITS = Decimal("500")
    old_apps = before_beta_grant_migration
    OldUser = old_apps.get_model("accounts", "User")
    OldWallet = old_apps.get_model("billing", "CreditWallet")
    OldTransaction = old_apps.get_model("billing", "CreditTransaction")
    user = OldUser.objects.create(username="already-granted", password="!")
    wallet = OldWallet.objects.create(
        user_id=user.pk,
        balance=Decimal("480"),
        lifetime_granted=Decimal("500"),
        lifetime_burned=Decimal("20"),
    )
    OldTransaction.objects.create(
        wallet=wallet,
        kind="grant",
        amount=Decimal("500"),
        balance_after=Decimal("500"),
        idempotency_key=f"beta-grant:{user.pk}",
    )
    OldTransaction.objects.create(
        wallet=wallet, kind="debit", amount=Decimal("-20"), balance_after=Decimal("480")
    )

    migrate_to()

    wallet = CreditWallet.objects.get(user_id=user.pk)
    assert wallet.balance == Decimal("480")
    assert CreditTransaction.objects.filter(wallet=wallet, kind="grant").count() == 1


@pytest.mark.django_db
def test_new_wallet_gets_the_grant_once():
    user = UserWithoutWalletFactory()
    first = wallet_get_or_create(user=user)
    wallet_debit(wallet_id=first.pk, amount=Decimal("1"))
    second = wallet_get_or_create(user=user)
    assert second.pk == first.pk
    assert second.balance == Decimal("499")
    grants = CreditTransaction.objects.filter(wallet=first, kind="grant")
    assert [(g.amount, g.balance_after, g.idempotency_key) for g in grants] == [
        (Decimal("500"), Decimal("500"), beta_grant_key(user.pk))
    ]
    assert second.lifetime_granted == Decimal("500")


@pytest.mark.django_db
def test_grant_follows_the_setting(settings):
    settings.BETA_GRANT_CREDITS = Decimal("42.5")
    wallet = wallet_get_or_create(user=UserWithoutWalletFactory())
    assert wallet.balance == Decimal("42.5")
    assert wallet.transactions.get().amount == Decimal("42.5")


@pytest.mark.django_db
def test_no_grant_when_disabled(settings):
    settings.BETA_GRANT_CREDITS = Decimal("0")
    user = UserWithoutWalletFactory()
    wallet = wallet_get_or_create(user=user)
    assert wallet.balance == Decimal("0")
    assert wallet.lifetime_granted == Decimal("0")
    assert not wallet.transactions.exists()
    # Turning it back on later does not grant an existing wallet.
    settings.BETA_GRANT_CREDITS = Decimal("500")
    assert wallet_get_or_create(user=user).balance == Decimal("0")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_wallet_creation_grants_once():
    users = [UserWithoutWalletFactory() for _ in range(3)]
    threads_per_user = 6
    callers = [user for user in users for _ in range(threads_per_user)]

    wallet_ids = run_in_threads(lambda i: wallet_get_or_create(user=callers[i]).pk, len(callers))

    assert len(wallet_ids) == threads_per_user * len(users)
    for user in users:
        wallet = CreditWallet.objects.get(user=user)
        assert wallet_ids.count(wallet.pk) == threads_per_user
        assert wallet.balance == Decimal("500")
        assert wallet.lifetime_granted == Decimal("500")
        assert wallet.transactions.count() == 1


@pytest.mark.django_db
def test_every_door_gives_a_new_user_the_beta_grant_at_once(monkeypatch):
    """Accounts never imports billing: billing hears of each new user row and funds its wallet."""
    from django.core.management import call_command
    from django.test import Client

    from accounts.services import user_create

    password = "a-long-pass phrase 42"
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    staff.post(
        "/admin/accounts/user/add/",
        {"username": "by-admin", "password1": password, "password2": password, "usable_password": "true"},
    )
    Client().post("/signup/", {"username": "by-page", "password1": password, "password2": password})
    user_create(username="by-api", password=password)
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", password)
    call_command("createsuperuser", "--noinput", "--username", "by-command", "--email", "c@example.test")

    for name in ("by-admin", "by-page", "by-api", "by-command"):
        user = get_user_model().objects.get(username=name)
        wallet = CreditWallet.objects.get(user=user)
        assert wallet.balance == Decimal("500"), name
        [grant] = CreditTransaction.objects.filter(wallet=wallet)
        assert (grant.kind, grant.idempotency_key) == ("grant", beta_grant_key(user.pk)), name
