"""Ledger writes (billing/services.py), single-threaded and under real concurrency."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import CreditTransaction, CreditWallet
from billing.selectors import ledger_drifts
from billing.services import (
    DebitLine,
    IdempotencyConflict,
    LedgerError,
    parse_credits,
    wallet_adjust,
    wallet_debit,
    wallet_debit_many,
    wallet_grant,
    wallet_refund,
)
from tests.factories import UsageEventFactory, UserFactory
from tests.support.threads import run_in_threads

THREADS = 8
DEBITS_PER_THREAD = 50


@pytest.fixture
def wallet(db) -> CreditWallet:
    return CreditWallet.objects.get(user=UserFactory())


def assert_ledger_consistent(wallet_id: int) -> None:
    """balance == Σ amount, each balance_after is the running sum, lifetime totals match."""
    wallet = CreditWallet.objects.get(pk=wallet_id)
    running = Decimal(0)
    granted = burned = Decimal(0)
    for row in CreditTransaction.objects.filter(wallet_id=wallet_id).order_by("id"):
        running += row.amount
        assert row.balance_after == running, f"row {row.pk}: balance_after {row.balance_after} != {running}"
        if row.kind == "grant":
            granted += row.amount
        elif row.kind == "debit":
            burned -= row.amount
    assert wallet.balance == running
    assert wallet.lifetime_granted == granted
    assert wallet.lifetime_burned == burned
    assert [drifts for w, drifts in ledger_drifts() if w.pk == wallet_id] == [[]]


# --- single-threaded behaviour ---------------------------------------------------------


@pytest.mark.django_db
def test_each_kind_writes_one_row_with_balance_after(wallet):
    grant = wallet_grant(wallet_id=wallet.pk, amount=Decimal("10"), description="top up")
    debit = wallet_debit(wallet_id=wallet.pk, amount=Decimal("2.5"), description="turn")
    refund = wallet_refund(wallet_id=wallet.pk, amount=Decimal("1.25"))
    adjust_down = wallet_adjust(wallet_id=wallet.pk, amount=Decimal("-0.75"))
    adjust_up = wallet_adjust(wallet_id=wallet.pk, amount="0.0001")

    assert [(r.kind, r.amount, r.balance_after) for r in (grant, debit, refund, adjust_down, adjust_up)] == [
        ("grant", Decimal("10"), Decimal("510")),
        ("debit", Decimal("-2.5"), Decimal("507.5")),
        ("refund", Decimal("1.25"), Decimal("508.75")),
        ("adjustment", Decimal("-0.75"), Decimal("508")),
        ("adjustment", Decimal("0.0001"), Decimal("508.0001")),
    ]
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("508.0001")
    assert wallet.lifetime_granted == Decimal("510")
    assert wallet.lifetime_burned == Decimal("2.5")
    assert grant.description == "top up"
    assert_ledger_consistent(wallet.pk)


@pytest.mark.django_db
def test_returned_row_is_exactly_what_the_database_holds(wallet):
    event = UsageEventFactory(turn__room__owner=wallet.user)
    returned = wallet_debit(
        wallet_id=wallet.pk,
        amount=Decimal("0.3"),
        usage_event_id=event.pk,
        description="d" * 300,
        idempotency_key="k-1",
    )
    stored = CreditTransaction.objects.get(pk=returned.pk)
    fields = [f.attname for f in CreditTransaction._meta.concrete_fields]
    assert {f: getattr(returned, f) for f in fields} == {f: getattr(stored, f) for f in fields}
    assert stored.description == "d" * 255
    assert stored.created_at == CreditWallet.objects.get(pk=wallet.pk).updated_at
    assert returned._state.adding is False


@pytest.mark.django_db
def test_balance_may_go_negative_in_observe_mode(wallet):
    row = wallet_debit(wallet_id=wallet.pk, amount=Decimal("600"))
    assert row.balance_after == Decimal("-100")
    assert_ledger_consistent(wallet.pk)


@pytest.mark.django_db
def test_debit_links_its_usage_event(wallet):
    event = UsageEventFactory(turn__room__owner=wallet.user)
    row = wallet_debit(wallet_id=wallet.pk, amount=event.credits_burned, usage_event_id=event.pk)
    assert event.debit == row


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("service", "amount"),
    [
        (wallet_debit, "0"),
        (wallet_debit, "-1"),
        (wallet_grant, "0"),
        (wallet_grant, "-5"),
        (wallet_refund, "0"),
        (wallet_refund, "-0.0001"),
        (wallet_adjust, "0"),
        (wallet_adjust, "0.0000"),
        (wallet_debit, 1.5),
        (wallet_grant, True),
        (wallet_debit, "0.00001"),
        (wallet_grant, "abc"),
        (wallet_grant, "NaN"),
        (wallet_grant, "Infinity"),
        (wallet_grant, "1e15"),
        (wallet_grant, "1e30"),
        (wallet_adjust, "-1e30"),
        (wallet_grant, "9" * 40),
    ],
)
def test_bad_amounts_are_refused_and_write_nothing(wallet, service, amount):
    with pytest.raises(LedgerError):
        service(wallet_id=wallet.pk, amount=amount)
    assert wallet.transactions.count() == 1  # only the beta grant
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("500")


def test_parse_credits_accepts_strings_and_decimals_with_up_to_four_places():
    assert parse_credits(" 12.5 ") == Decimal("12.5000")
    assert parse_credits(Decimal("0.0001")) == Decimal("0.0001")
    assert parse_credits(7) == Decimal("7")
    assert parse_credits("1E+2") == Decimal("100")
    assert parse_credits("999999999999999.9999") == Decimal("999999999999999.9999")


@pytest.mark.django_db
def test_unknown_wallet_is_a_ledger_error():
    with pytest.raises(LedgerError, match="does not exist"):
        wallet_debit(wallet_id=987654321, amount=Decimal("1"))
    assert not CreditTransaction.objects.filter(wallet_id=987654321).exists()


@pytest.mark.django_db
def test_idempotency_key_repeat_is_a_no_op_returning_the_first_row(wallet):
    first = wallet_debit(wallet_id=wallet.pk, amount=Decimal("3"), idempotency_key="turn-42")
    again = wallet_debit(wallet_id=wallet.pk, amount=Decimal("3"), idempotency_key="turn-42")
    assert again.pk == first.pk
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("497")
    assert wallet.transactions.filter(kind="debit").count() == 1


@pytest.mark.django_db
def test_idempotency_key_with_a_different_write_is_a_conflict(wallet):
    other = CreditWallet.objects.get(user=UserFactory())
    wallet_debit(wallet_id=wallet.pk, amount=Decimal("3"), idempotency_key="turn-42")
    with pytest.raises(IdempotencyConflict):
        wallet_debit(wallet_id=wallet.pk, amount=Decimal("4"), idempotency_key="turn-42")
    with pytest.raises(IdempotencyConflict):
        wallet_refund(wallet_id=wallet.pk, amount=Decimal("3"), idempotency_key="turn-42")
    with pytest.raises(IdempotencyConflict):
        wallet_debit(wallet_id=other.pk, amount=Decimal("3"), idempotency_key="turn-42")
    wallet.refresh_from_db()
    other.refresh_from_db()
    assert (wallet.balance, other.balance) == (Decimal("497"), Decimal("500"))
    assert_ledger_consistent(wallet.pk)
    assert_ledger_consistent(other.pk)


@pytest.mark.django_db
def test_debit_many_writes_one_row_per_line_with_a_running_balance(wallet, django_assert_max_num_queries):
    events = [UsageEventFactory(turn__room__owner=wallet.user) for _ in range(3)]
    lines = [
        DebitLine(amount=Decimal("1.5"), usage_event_id=events[0].pk, description="agent"),
        DebitLine(amount=Decimal("0.0001"), usage_event_id=events[1].pk),
        DebitLine(amount=Decimal("2"), usage_event_id=events[2].pk),
    ]
    # One wallet UPDATE and one bulk INSERT (plus savepoint statements), whatever the line count.
    with django_assert_max_num_queries(4):
        rows = wallet_debit_many(wallet_id=wallet.pk, lines=lines)
    assert [(r.amount, r.balance_after) for r in rows] == [
        (Decimal("-1.5"), Decimal("498.5")),
        (Decimal("-0.0001"), Decimal("498.4999")),
        (Decimal("-2"), Decimal("496.4999")),
    ]
    assert [r.usage_event_id for r in rows] == [e.pk for e in events]
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("496.4999")
    assert wallet.lifetime_burned == Decimal("3.5001")
    assert_ledger_consistent(wallet.pk)


@pytest.mark.django_db
def test_debit_many_with_no_lines_or_a_bad_line_writes_nothing(wallet):
    assert wallet_debit_many(wallet_id=wallet.pk, lines=[]) == []
    with pytest.raises(LedgerError):
        wallet_debit_many(wallet_id=wallet.pk, lines=[DebitLine(amount=Decimal("1")), DebitLine(amount=0)])
    assert wallet.transactions.count() == 1
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("500")


# --- concurrency: real threads, real PostgreSQL -------------------------------------------


def reconcile() -> str:
    out, err = StringIO(), StringIO()
    call_command("reconcile_wallets", stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue()


def amount_for(thread: int, step: int) -> Decimal:
    # Distinct, 4-decimal amounts so a lost or doubled update cannot cancel out.
    return Decimal(thread + 1) + Decimal(step) / 10000


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_debits_on_one_wallet_lose_no_update():
    wallet = CreditWallet.objects.get(user=UserFactory())

    def debit_many_times(thread: int) -> None:
        for step in range(DEBITS_PER_THREAD):
            wallet_debit(wallet_id=wallet.pk, amount=amount_for(thread, step), description=f"t{thread}")

    run_in_threads(debit_many_times, THREADS)

    expected_burn = sum(
        (amount_for(t, s) for t in range(THREADS) for s in range(DEBITS_PER_THREAD)), Decimal(0)
    )
    wallet.refresh_from_db()
    assert wallet.transactions.filter(kind="debit").count() == THREADS * DEBITS_PER_THREAD
    assert wallet.balance == Decimal("500") - expected_burn
    assert wallet.lifetime_burned == expected_burn
    for thread in range(THREADS):
        assert wallet.transactions.filter(description=f"t{thread}").count() == DEBITS_PER_THREAD
    assert_ledger_consistent(wallet.pk)
    assert "1 wallets reconciled, no drift" in reconcile()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_repeats_of_one_idempotency_key_charge_once():
    wallet = CreditWallet.objects.get(user=UserFactory())

    def debit_same_key(thread: int) -> list[int]:
        ids = []
        for step in range(10):
            row = wallet_debit(wallet_id=wallet.pk, amount=Decimal("7.1234"), idempotency_key=f"turn-{step}")
            ids.append(row.pk)
        return ids

    results = run_in_threads(debit_same_key, THREADS)

    # Every thread got the same row for each key.
    assert all(ids == results[0] for ids in results)
    wallet.refresh_from_db()
    assert wallet.transactions.filter(kind="debit").count() == 10
    assert wallet.balance == Decimal("500") - 10 * Decimal("7.1234")
    assert_ledger_consistent(wallet.pk)
    reconcile()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_conflicting_writes_on_one_key_charge_once_and_conflict_for_the_rest():
    wallet = CreditWallet.objects.get(user=UserFactory())

    def debit_own_amount(thread: int) -> str:
        try:
            wallet_debit(wallet_id=wallet.pk, amount=Decimal(thread + 1), idempotency_key="contested")
        except IdempotencyConflict:
            return "conflict"
        return "charged"

    outcomes = run_in_threads(debit_own_amount, THREADS)

    assert sorted(outcomes) == ["charged"] + ["conflict"] * (THREADS - 1)
    row = CreditTransaction.objects.get(idempotency_key="contested")
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("500") + row.amount
    assert_ledger_consistent(wallet.pk)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_debit_many_and_single_debits_lose_no_update():
    wallet = CreditWallet.objects.get(user=UserFactory())
    lines = [DebitLine(amount=Decimal("0.0101") * (n + 1)) for n in range(5)]
    per_batch = sum((line.amount for line in lines), Decimal(0))

    def mixed(thread: int) -> None:
        for step in range(20):
            if thread % 2:
                wallet_debit_many(wallet_id=wallet.pk, lines=lines)
            else:
                wallet_debit(wallet_id=wallet.pk, amount=amount_for(thread, step))

    run_in_threads(mixed, THREADS)

    batches = (THREADS // 2) * 20
    singles = sum((amount_for(t, s) for t in range(0, THREADS, 2) for s in range(20)), Decimal(0))
    wallet.refresh_from_db()
    assert wallet.transactions.filter(kind="debit").count() == batches * len(lines) + (THREADS // 2) * 20
    assert wallet.balance == Decimal("500") - batches * per_batch - singles
    assert_ledger_consistent(wallet.pk)
    reconcile()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_writers_on_many_wallets_stay_consistent():
    wallets = [CreditWallet.objects.get(user=UserFactory()) for _ in range(3)]

    def spread(thread: int) -> None:
        for step in range(30):
            target = wallets[(thread + step) % len(wallets)]
            if step % 3 == 0:
                wallet_grant(wallet_id=target.pk, amount=Decimal("1.0001"))
            elif step % 3 == 1:
                wallet_debit(wallet_id=target.pk, amount=amount_for(thread, step))
            else:
                wallet_adjust(wallet_id=target.pk, amount=Decimal("-0.5"))

    run_in_threads(spread, THREADS)

    for wallet in wallets:
        assert_ledger_consistent(wallet.pk)
    assert "3 wallets reconciled, no drift" in reconcile()
