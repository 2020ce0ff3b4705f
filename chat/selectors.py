"""Chat reads. Every query is scoped to its user: another user's object is simply not found."""

from __future__ import annotations

import json

from django.db import connection
from django.db.models import Prefetch, QuerySet

from billing.models import UsageEvent
from chat.models import Message, Room, ToolCallEvent, Turn, UploadedFile
from chat.values import ChatLine, TurnContext

_CONTEXT_SQL = f"""
SELECT r.agents, m.role, m.model_alias, m.content
FROM {Room._meta.db_table} r
LEFT JOIN {Message._meta.db_table} m ON m.turn_id IN (
    SELECT t.id FROM {Turn._meta.db_table} t WHERE t.room_id = %s ORDER BY t.id DESC LIMIT %s
)
WHERE r.id = %s AND r.owner_id = %s
ORDER BY m.turn_id, m.position
"""


def turn_context(*, user_id: int, room_id: int, turns: int) -> TurnContext | None:
    """The user's room and its last `turns` turns' messages in one statement; None if not theirs."""
    with connection.cursor() as cursor:
        cursor.execute(_CONTEXT_SQL, [room_id, max(0, turns), room_id, user_id])
        rows = cursor.fetchall()
    if not rows:
        return None
    # PostgreSQL's driver decodes the JSON column; SQLite hands back its text.
    agents = rows[0][0] if isinstance(rows[0][0], list) else json.loads(rows[0][0])
    history = [ChatLine(role, alias, content) for _, role, alias, content in rows if role is not None]
    return TurnContext(room_id=room_id, agents=list(agents), history=history)


def room_list(*, user_id: int) -> QuerySet[Room]:
    return Room.objects.filter(owner_id=user_id).order_by("-id")


def room_get(*, user_id: int, room_id: int) -> Room | None:
    return Room.objects.filter(owner_id=user_id, pk=room_id).first()


def turn_list(*, user_id: int, room_id: int) -> QuerySet[Turn]:
    """A room's turns with everything the turn payload shows, in a fixed number of queries."""
    return (
        Turn.objects.filter(room_id=room_id, room__owner_id=user_id)
        .prefetch_related(
            Prefetch("messages", queryset=Message.objects.order_by("position")),
            Prefetch("usage_events", queryset=UsageEvent.objects.order_by("id")),
            Prefetch("tool_calls", queryset=ToolCallEvent.objects.order_by("id")),
            Prefetch("files", queryset=UploadedFile.objects.only("id").order_by("id")),
        )
        .order_by("-id")
    )


def file_list(*, user_id: int) -> QuerySet[UploadedFile]:
    return UploadedFile.objects.filter(owner_id=user_id).order_by("-id")


def file_get(*, user_id: int, file_id: int) -> UploadedFile | None:
    return UploadedFile.objects.filter(owner_id=user_id, pk=file_id).first()


def files_by_id(*, user_id: int, file_ids: list[int]) -> dict[int, UploadedFile]:
    if not file_ids:
        return {}
    return {f.pk: f for f in UploadedFile.objects.filter(owner_id=user_id, pk__in=file_ids)}


def turn_page_list(*, user_id: int, room_id: int) -> QuerySet[Turn]:
    """`turn_list` as the chat page shows it: each turn also has `attached_files` (id and name)."""
    return turn_list(user_id=user_id, room_id=room_id).prefetch_related(
        Prefetch(
            "files",
            queryset=UploadedFile.objects.only("id", "name").order_by("id"),
            to_attr="attached_files",
        )
    )
