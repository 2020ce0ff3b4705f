"""The turn's write is built from the models, never from a hand-kept column list.

A turn writes rows of six tables. For each of them, a column the model gains
(NOT NULL with a Python default: the case that once took every PostgreSQL
turn down) must reach every row the turn writes with nothing but the model and
its migration changed. The test adds such a column for real (ALTER TABLE in the
test's transaction, the field on the model class), posts a rich turn (routing,
two agents, a tool call each, an attached file, debits) and walks every
concrete field of every row the turn wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import connection, models

from billing.models import CreditTransaction, UsageEvent
from chat import services
from chat.models import Message, ToolCallEvent, Turn
from tests.chat.helpers import upload
from tests.factories import RoomFactory, UserFactory

PROBE_DEFAULT = 7
TurnFiles = Turn.files.through


@contextmanager
def probe_column(model: type[models.Model]) -> Iterator[None]:
    """A NOT NULL integer column with a Python default, on the table and on the model class."""
    field = models.IntegerField(default=PROBE_DEFAULT)
    field.set_attributes_from_name("probe")
    with connection.schema_editor() as editor:
        field.contribute_to_class(model, "probe")
        editor.add_field(model, field)
    model._meta._expire_cache()
    try:
        yield
    finally:
        model._meta.local_fields.remove(field)
        model._meta._expire_cache()
        delattr(model, "probe")


def rows_of_turn(model: type[models.Model], turn_id: int) -> list[models.Model]:
    if model is Turn:
        return list(Turn.objects.filter(pk=turn_id))
    if model is TurnFiles:
        return list(TurnFiles.objects.filter(turn_id=turn_id))
    if model is CreditTransaction:
        return list(CreditTransaction.objects.filter(usage_event__turn_id=turn_id))
    return list(model.objects.filter(turn_id=turn_id))


@pytest.mark.django_db
@pytest.mark.parametrize("model", [Turn, TurnFiles, Message, UsageEvent, ToolCallEvent, CreditTransaction])
def test_a_new_defaulted_column_reaches_every_row_the_turn_writes(model):
    # The column comes first: PostgreSQL refuses ALTER TABLE on a table with pending trigger
    # events (the ledger's append-only trigger fires for the new user's beta grant).
    with probe_column(model):
        user = UserFactory()
        room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
        attached = upload(user, name="notes.txt", data=b"alpha,beta\n1,2\n")
        payload = services.turn_post(
            user=user, room_id=room.pk, content="@all please read my notes", file_ids=[attached.pk]
        ).payload
        rows = rows_of_turn(model, payload["id"])

        assert rows, f"the turn wrote no {model.__name__} row"
        for row in rows:
            assert row.probe == PROBE_DEFAULT
            for field in model._meta.concrete_fields:
                value = getattr(row, field.attname)
                assert value is not None or field.null, f"{model.__name__}.{field.name} is NULL"


@pytest.mark.django_db
def test_every_field_of_every_row_matches_what_the_turn_answered(user):
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    attached = upload(user, name="notes.txt", data=b"alpha,beta\n1,2\n")

    payload = services.turn_post(
        user=user, room_id=room.pk, content="@all please read my notes", file_ids=[attached.pk]
    ).payload

    turn = Turn.objects.get(pk=payload["id"])
    assert (turn.room_id, turn.user_id, turn.content) == (room.pk, user.pk, "@all please read my notes")
    assert turn.credits_burned == Decimal(payload["credits_burned"])
    linked = TurnFiles.objects.filter(turn=turn).values_list("uploadedfile_id", flat=True)
    assert list(linked) == [attached.pk]

    messages = list(Message.objects.filter(turn=turn).order_by("position"))
    assert [(m.position, m.role, m.model_alias, m.content) for m in messages] == [
        (n, m["role"], m["model_alias"], m["content"]) for n, m in enumerate(payload["messages"])
    ]

    usage = list(UsageEvent.objects.filter(turn=turn).order_by("id"))
    # @all names both agents: no routing call; each agent reads the file, then answers.
    assert [row["purpose"] for row in payload["usage"]] == ["agent", "agent", "agent", "agent"]
    for event, row in zip(usage, payload["usage"], strict=True):
        assert (event.user_id, event.room_id) == (user.pk, room.pk)
        for field in UsageEvent._meta.concrete_fields:
            if field.name in row and field.name != "id":
                shown = row[field.name]
                stored = getattr(event, field.attname)
                assert (str(stored) if isinstance(stored, Decimal) else stored) == shown, field.name

    tools = list(ToolCallEvent.objects.filter(turn=turn).order_by("id"))
    for event, row in zip(tools, payload["tool_calls"], strict=True):
        assert (event.user_id, event.room_id) == (user.pk, room.pk)
        assert {name: getattr(event, name) for name in row} == row

    debits = list(CreditTransaction.objects.filter(usage_event__turn=turn).order_by("id"))
    charged = [event for event in usage if event.metered and event.credits_burned > 0]
    assert [d.usage_event_id for d in debits] == [event.pk for event in charged]
    assert [d.amount for d in debits] == [-event.credits_burned for event in charged]
    assert debits[-1].balance_after == Decimal(payload["balance"])
    assert all(d.kind == "debit" and d.description.endswith(f"turn {turn.pk}") for d in debits)
