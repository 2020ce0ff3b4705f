"""A hypothesis state machine over credit holds: place, settle, release, expire, grant.

After every step the database agrees with a pure-Python model: `held` equals the
sum of the active holds, the balance equals the ledger, a hold is placed only
when `balance - held` covers it, and no hold is settled or released twice (a
second close changes nothing).
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from billing.models import CreditHold, CreditWallet
from billing.selectors import wallet_drifts, wallets_with_ledger_totals
from billing.services import (
    DebitLine,
    InsufficientCredits,
    hold_place,
    hold_release,
    holds_release_expired,
    wallet_debit_many,
    wallet_grant,
)

amounts = st.decimals(
    min_value=Decimal("0.0001"), max_value=Decimal("400"), places=4, allow_nan=False, allow_infinity=False
)
_users = itertools.count()


class HoldMachine(RuleBasedStateMachine):
    holds = Bundle("holds")

    @initialize()
    def fresh_wallet(self):
        user = get_user_model().objects.create(username=f"holds-sm-{next(_users)}")
        self.user_id = user.pk
        self.wallet = CreditWallet.objects.get(user=user)
        self.balance = self.wallet.balance
        self.active: dict[int, Decimal] = {}
        self.closed: set[int] = set()

    @property
    def held(self) -> Decimal:
        return sum(self.active.values(), Decimal(0))

    @rule(target=holds, amount=amounts)
    def place(self, amount):
        if self.balance - self.held >= amount:
            hold = hold_place(user_id=self.user_id, amount=amount)
            self.active[hold.pk] = amount
            return hold.pk
        with pytest.raises(InsufficientCredits) as refused:
            hold_place(user_id=self.user_id, amount=amount)
        assert Decimal(refused.value.extra["available"]) == self.balance - self.held
        return -1  # no hold

    @rule(hold_id=holds, charged=amounts)
    def settle(self, hold_id, charged):
        if hold_id < 0:
            return
        with transaction.atomic():
            wallet_debit_many(user_id=self.user_id, lines=[DebitLine(amount=charged)], settle_hold_id=hold_id)
        self.balance -= charged
        if hold_id in self.active:
            del self.active[hold_id]
        self.closed.add(hold_id)

    @rule(hold_id=holds)
    def release(self, hold_id):
        if hold_id < 0:
            return
        released = hold_release(hold_id=hold_id)
        assert released == (hold_id in self.active)
        self.active.pop(hold_id, None)
        self.closed.add(hold_id)

    @rule()
    def expire_all(self):
        # Every active hold's lease has run out (a worker died holding each of them).
        released = holds_release_expired(now=timezone.now() + timedelta(days=1))
        assert released >= len(self.active)
        self.closed.update(self.active)
        self.active.clear()

    @rule(amount=amounts)
    def grant(self, amount):
        wallet_grant(wallet_id=self.wallet.pk, amount=amount)
        self.balance += amount

    @invariant()
    def database_agrees(self):
        if not hasattr(self, "wallet"):
            return
        wallet = CreditWallet.objects.get(pk=self.wallet.pk)
        assert (wallet.balance, wallet.held) == (self.balance, self.held)
        statuses = dict(CreditHold.objects.filter(wallet=wallet).values_list("id", "status"))
        assert {pk for pk, status in statuses.items() if status == "active"} == set(self.active)
        assert all(statuses[pk] != "active" for pk in self.closed)
        annotated = wallets_with_ledger_totals().get(pk=wallet.pk)
        assert wallet_drifts(annotated) == []


@pytest.mark.django_db
def test_holds_state_machine():
    run_state_machine_as_test(
        HoldMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
