"""A hypothesis state machine drives the ledger services against a pure-Python model.

After every step the database must agree with the model and with itself:
wallet.balance == Σ amount, the newest balance_after == balance, and the
lifetime totals equal the sums of grants and debits.
"""

import itertools
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing.models import CreditTransaction, CreditWallet
from billing.selectors import wallet_drifts, wallets_with_ledger_totals
from billing.services import (
    IdempotencyConflict,
    LedgerError,
    wallet_adjust,
    wallet_debit,
    wallet_get_or_create,
    wallet_grant,
    wallet_refund,
)

SERVICES = {
    "grant": wallet_grant,
    "debit": wallet_debit,
    "refund": wallet_refund,
    "adjustment": wallet_adjust,
}
BETA = Decimal("500")

amounts = st.decimals(
    min_value=Decimal("0.0001"), max_value=Decimal("10000"), places=4, allow_nan=False, allow_infinity=False
)
signed_amounts = st.tuples(amounts, st.booleans()).map(lambda pair: -pair[0] if pair[1] else pair[0])
keys = st.sampled_from([None, None, "a", "b", "c", "d"])
_users = itertools.count()


def signed(kind: str, amount: Decimal) -> Decimal:
    """The ledger amount a service call writes: debits subtract."""
    return -amount if kind == "debit" else amount


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def fresh_wallet(self):
        # A new wallet per run: rows of earlier runs stay in the test transaction.
        user = get_user_model().objects.create(username=f"sm-{next(_users)}")
        self.wallet = wallet_get_or_create(user=user)
        self.key_prefix = f"w{self.wallet.pk}:"
        self.balance = BETA
        self.granted = BETA
        self.burned = Decimal(0)
        self.rows = 1
        # key -> (kind, amount as passed to the service, ledger row id)
        self.used_keys: dict[str, tuple[str, Decimal, int]] = {}

    def _write(self, kind: str, amount: Decimal, key: str | None) -> None:
        full_key = self.key_prefix + key if key else None
        previous = self.used_keys.get(full_key) if full_key else None
        if previous is not None and (previous[0], previous[1]) != (kind, amount):
            with pytest.raises(IdempotencyConflict):
                SERVICES[kind](wallet_id=self.wallet.pk, amount=amount, idempotency_key=full_key)
            return
        row = SERVICES[kind](wallet_id=self.wallet.pk, amount=amount, idempotency_key=full_key)
        if previous is not None:
            # A replay: the first row comes back, nothing is charged again.
            assert row.pk == previous[2]
            return
        self.balance += signed(kind, amount)
        if kind == "grant":
            self.granted += amount
        if kind == "debit":
            self.burned += amount
        self.rows += 1
        assert row.kind == kind and row.amount == signed(kind, amount)
        assert row.balance_after == self.balance
        if full_key:
            self.used_keys[full_key] = (kind, amount, row.pk)

    @rule(amount=amounts, key=keys)
    def grant(self, amount, key):
        self._write("grant", amount, key)

    @rule(amount=amounts, key=keys)
    def debit(self, amount, key):
        self._write("debit", amount, key)

    @rule(amount=amounts, key=keys)
    def refund(self, amount, key):
        self._write("refund", amount, key)

    @rule(amount=signed_amounts, key=keys)
    def adjustment(self, amount, key):
        self._write("adjustment", amount, key)

    @precondition(lambda self: self.used_keys)
    @rule(data=st.data())
    def repeat_a_key(self, data):
        key = data.draw(st.sampled_from(sorted(self.used_keys)))
        kind, amount, _ = self.used_keys[key]
        self._write(kind, amount, key.removeprefix(self.key_prefix))

    @precondition(lambda self: self.used_keys)
    @rule(data=st.data())
    def repeat_a_key_with_another_amount(self, data):
        key = data.draw(st.sampled_from(sorted(self.used_keys)))
        kind, amount, _ = self.used_keys[key]
        other = amount + Decimal("0.0001") if amount > 0 else amount - Decimal("0.0001")
        with pytest.raises(IdempotencyConflict):
            SERVICES[kind](wallet_id=self.wallet.pk, amount=other, idempotency_key=key)

    @rule(kind=st.sampled_from(sorted(SERVICES)), amount=st.sampled_from(["0", "0.00001", "-0"]))
    def invalid_amount(self, kind, amount):
        with pytest.raises(LedgerError):
            SERVICES[kind](wallet_id=self.wallet.pk, amount=amount)

    @invariant()
    def ledger_matches_model_and_itself(self):
        wallet = CreditWallet.objects.get(pk=self.wallet.pk)
        ledger = CreditTransaction.objects.filter(wallet=wallet)
        newest = ledger.order_by("-id").first()
        assert wallet.balance == self.balance
        assert ledger.aggregate(total=Sum("amount"))["total"] == self.balance
        assert newest.balance_after == self.balance
        assert ledger.count() == self.rows
        assert wallet.lifetime_granted == self.granted
        assert wallet.lifetime_burned == self.burned
        # The reconcile check agrees too.
        assert wallet_drifts(wallets_with_ledger_totals().get(pk=wallet.pk)) == []


@pytest.mark.django_db
def test_ledger_state_machine():
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
