"""The books must balance: the checks every reliability test ends with.

Read straight from the tables, whatever happened over HTTP:
- every turn is whole (its user message, at least one answer, at least one
  agent call) and its `credits_burned` is the sum of its usage events;
- every usage event's credits follow the formula at the multiplier it records
  (0 for the unmetered manager);
- one debit per metered usage event with credits, for exactly that amount,
  and no debit without a usage event;
- each wallet's ledger is an unbroken chain (`balance_after` of each row is the
  previous one plus its amount) that ends at `wallet.balance`;
- `manage.py reconcile_wallets` exits 0.
"""

from __future__ import annotations

import io
from collections import defaultdict
from decimal import Decimal

from django.core.management import call_command
from django.db.models import Count, Q

from billing.meter import credits_for
from billing.models import CreditTransaction, CreditWallet, UsageEvent
from chat.models import Message, Turn


def assert_books_balance() -> dict:
    """Assert every invariant above; return counts for the caller's own assertions."""
    turns = Turn.objects.annotate(
        user_messages=Count("messages", filter=Q(messages__role=Message.Role.USER), distinct=True),
        answers=Count("messages", filter=Q(messages__role=Message.Role.ASSISTANT), distinct=True),
        agent_calls=Count(
            "usage_events", filter=Q(usage_events__purpose=UsageEvent.Purpose.AGENT), distinct=True
        ),
    )
    for turn in turns:
        assert (turn.user_messages, turn.answers >= 1, turn.agent_calls >= 1) == (1, True, True), (
            f"turn {turn.pk} is partial: {turn.user_messages} user message(s), {turn.answers} answer(s), "
            f"{turn.agent_calls} agent call(s)"
        )

    events = list(UsageEvent.objects.all())
    per_turn: dict[int, Decimal] = defaultdict(Decimal)
    for event in events:
        wanted = (
            credits_for(event.input_tokens, event.output_tokens, event.multiplier)
            if event.metered
            else Decimal(0)
        )
        assert event.credits_burned == wanted, (event.pk, event.credits_burned, wanted)
        assert event.metered == (event.purpose != UsageEvent.Purpose.MANAGER), event.pk
        per_turn[event.turn_id] += event.credits_burned
    for turn in Turn.objects.all():
        assert turn.credits_burned == per_turn[turn.pk], (turn.pk, turn.credits_burned, per_turn[turn.pk])

    debits = list(CreditTransaction.objects.filter(kind=CreditTransaction.Kind.DEBIT))
    assert all(debit.usage_event_id is not None for debit in debits), "a debit without a usage event"
    charged = {debit.usage_event_id: debit for debit in debits}
    assert len(charged) == len(debits), "a usage event charged twice"
    payable = {event.pk: event for event in events if event.metered and event.credits_burned > 0}
    assert set(charged) == set(payable), (
        f"usage events without a debit: {sorted(set(payable) - set(charged))}; "
        f"debits for no payable event: {sorted(set(charged) - set(payable))}"
    )
    for event_id, debit in charged.items():
        assert debit.amount == -payable[event_id].credits_burned, (event_id, debit.amount)
        assert debit.wallet.user_id == payable[event_id].user_id, event_id

    for wallet in CreditWallet.objects.all():
        running = Decimal(0)
        for row in CreditTransaction.objects.filter(wallet=wallet).order_by("id"):
            running += row.amount
            assert row.balance_after == running, (wallet.pk, row.pk, row.balance_after, running)
        assert wallet.balance == running, (wallet.pk, wallet.balance, running)

    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("reconcile_wallets", stdout=out, stderr=err)
    except SystemExit as exc:
        raise AssertionError(f"reconcile_wallets exited {exc.code}: {err.getvalue()}") from exc
    assert "no drift" in out.getvalue(), out.getvalue()
    return {"turns": Turn.objects.count(), "events": len(events), "debits": len(debits)}


def snapshot() -> dict:
    """Row counts a turn may add, and every balance: compare before and after a failure."""
    from chat.models import ToolCallEvent, TurnIdempotencyKey

    return {
        "turns": Turn.objects.count(),
        "messages": Message.objects.count(),
        "llm_calls": UsageEvent.objects.count(),
        "tool_calls": ToolCallEvent.objects.count(),
        "ledger": CreditTransaction.objects.count(),
        "keys": TurnIdempotencyKey.objects.count(),
        "balances": dict(CreditWallet.objects.values_list("user_id", "balance")),
    }
