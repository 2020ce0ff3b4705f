"""Chat reads. Every query is scoped to its user: another user's object is simply not found."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from chat.models import LLMCallEvent, Message, Room, ToolCallEvent, Turn, UploadedFile


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
            Prefetch("llm_calls", queryset=LLMCallEvent.objects.order_by("id")),
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
