"""Management commands: reconcile_wallets and grant_credits."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing.models import CreditTransaction, CreditWallet
from billing.services import wallet_debit, wallet_grant
from tests.factories import UserFactory, UserWithoutWalletFactory

pytestmark = pytest.mark.django_db


def run(name: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def reconcile_expecting_drift() -> str:
    err = StringIO()
    with pytest.raises(SystemExit) as excinfo:
        call_command("reconcile_wallets", stdout=StringIO(), stderr=err)
    assert excinfo.value.code == 1
    return err.getvalue()


@pytest.fixture
def wallets() -> list[CreditWallet]:
    found = [CreditWallet.objects.get(user=UserFactory()) for _ in range(3)]
    wallet_debit(wallet_id=found[0].pk, amount=Decimal("12.3456"))
    wallet_grant(wallet_id=found[1].pk, amount=Decimal("10"))
    return found


# --- reconcile_wallets ------------------------------------------------------------------


def test_reconcile_is_clean_on_a_consistent_ledger(wallets):
    out, err = run("reconcile_wallets")
    assert "3 wallets reconciled, no drift" in out
    assert err == ""


def test_reconcile_finds_a_balance_changed_by_raw_sql(wallets):
    drifted = wallets[0]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_creditwallet SET balance = balance + 1 WHERE id = %s", [drifted.pk])
    err = reconcile_expecting_drift()
    assert f"DRIFT wallet {drifted.pk} (user {drifted.user_id}): balance != sum of ledger amounts" in err
    assert "wallet says 488.6544, ledger says 487.6544" in err
    assert "newest balance_after != balance" in err
    assert "1 of 3 wallets drifted" in err
    # The other wallets are not reported.
    assert f"wallet {wallets[1].pk} " not in err


def test_reconcile_finds_a_drift_in_lifetime_totals(wallets):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_creditwallet SET lifetime_granted = 1, lifetime_burned = 2 WHERE id = %s",
            [wallets[1].pk],
        )
    err = reconcile_expecting_drift()
    assert f"wallet {wallets[1].pk} (user {wallets[1].user_id}): lifetime_granted != sum of grants" in err
    assert "wallet says 1.0000, ledger says 510.0000" in err
    assert "lifetime_burned != sum of debits: wallet says 2.0000, ledger says 0" in err
    assert "balance != sum" not in err


def test_reconcile_finds_a_ledger_row_written_without_its_wallet_update(wallets):
    CreditTransaction.objects.create(
        wallet=wallets[2], kind="refund", amount=Decimal("5"), balance_after=Decimal("505")
    )
    err = reconcile_expecting_drift()
    assert (
        f"DRIFT wallet {wallets[2].pk} (user {wallets[2].user_id}): balance != sum of ledger amounts" in err
    )
    assert "wallet says 500.0000, ledger says 505.0000" in err


def test_reconcile_finds_money_in_a_wallet_with_no_ledger():
    user = UserWithoutWalletFactory()
    wallet = CreditWallet.objects.create(user=user)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_creditwallet SET balance = 3 WHERE id = %s", [wallet.pk])
    err = reconcile_expecting_drift()
    assert "non-zero balance with an empty ledger" in err


def test_reconcile_with_no_wallets_is_clean():
    out, _ = run("reconcile_wallets")
    assert "0 wallets reconciled, no drift" in out


# --- grant_credits ---------------------------------------------------------------------


def test_grant_credits_by_username_and_by_id():
    user = UserFactory()
    out, _ = run("grant_credits", "--user", user.username, "--amount", "12.5", "--reason", "support")
    assert f"granted 12.5000 to {user.username}; balance now 512.5000" in out
    out, _ = run("grant_credits", "--user", str(user.pk), "--amount", "0.0001")
    assert "balance now 512.5001" in out
    row = CreditTransaction.objects.filter(wallet__user=user).order_by("-id")[1]
    assert (row.kind, row.amount, row.description) == ("grant", Decimal("12.5"), "support")
    wallet = CreditWallet.objects.get(user=user)
    assert wallet.lifetime_granted == Decimal("512.5001")


def test_grant_credits_creates_the_wallet_with_its_beta_grant_first():
    user = UserWithoutWalletFactory()
    assert not CreditWallet.objects.filter(user=user).exists()
    out, _ = run("grant_credits", "--user", user.username, "--amount", "100")
    assert "balance now 600.0000" in out
    assert list(
        CreditTransaction.objects.filter(wallet__user=user).order_by("id").values_list("kind", "amount")
    ) == [("grant", Decimal("500")), ("grant", Decimal("100"))]


def test_grant_credits_with_an_idempotency_key_runs_once():
    user = UserFactory()
    run("grant_credits", "--user", user.username, "--amount", "5", "--idempotency-key", "ticket-9")
    out, _ = run("grant_credits", "--user", user.username, "--amount", "5", "--idempotency-key", "ticket-9")
    assert "balance now 505.0000" in out
    with pytest.raises(CommandError, match="different ledger write"):
        run("grant_credits", "--user", user.username, "--amount", "6", "--idempotency-key", "ticket-9")
    assert CreditWallet.objects.get(user=user).balance == Decimal("505")


@pytest.mark.parametrize(
    ("user", "amount", "message"),
    [
        ("nobody", "10", "no user 'nobody'"),
        ("999999", "10", "no user '999999'"),
        (None, "ten", "--amount: 'ten' is not a decimal number"),
        (None, "-5", "--amount must be positive"),
        (None, "0", "--amount must be positive"),
        (None, "1.00001", "--amount: '1.00001' has more than 4 decimal places"),
        (None, "NaN", "--amount: 'NaN' is not a finite number"),
        (None, "1e30", "--amount: '1e30' is too large"),
    ],
)
def test_grant_credits_rejects_bad_arguments_clearly(user, amount, message):
    owner = UserFactory()
    with pytest.raises(CommandError) as excinfo:
        run("grant_credits", "--user", user or owner.username, "--amount", amount)
    assert message in str(excinfo.value)
    assert CreditTransaction.objects.filter(wallet__user=owner).count() == 1


def test_grant_credits_requires_user_and_amount():
    with pytest.raises(CommandError, match="--amount"):
        run("grant_credits", "--user", "someone")
    with pytest.raises(CommandError, match="--user"):
        run("grant_credits", "--amount", "5")
