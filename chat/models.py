"""Chat models: rooms, turns, messages, usage and tool events, uploads.

A turn and everything it caused (messages, tool call events, and the
usage rows and wallet debits that `billing` writes) is written by one transaction in
`chat.services`; nothing here is ever written piecemeal.
"""

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.models import credits_field


class Room(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rooms")
    TITLE_MAX_LENGTH = 200
    title = models.CharField(max_length=TITLE_MAX_LENGTH)
    # Model aliases taking part, validated against the active pricing table.
    agents = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-id"], name="chat_room_owner_newest")]

    def __str__(self) -> str:
        return self.title


class Turn(models.Model):
    class Status(models.TextChoices):
        COMPLETED = "completed"
        # Stopped by the user (Stop, or the client went away); charged for the calls that ran.
        CANCELLED = "cancelled"
        # A provider or tool failure; charged for the calls that ran.
        FAILED = "failed"

    class RoutedBy(models.TextChoices):
        SINGLE = "single"  # a one-agent room: no choice to make
        EXPLICIT = "explicit"  # `model_alias` or `agents` in the request
        MENTION = "mention"  # @mentions in the message
        MANAGER = "manager"  # the manager's routing call
        FALLBACK = "fallback"  # the manager's reply was unreadable; CHAT_ROUTING_FALLBACK chose

    # Indexed by chat_turn_room_order (room, id); a second index on room alone only costs writes.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="turns", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="turns")
    content = models.TextField()
    # Uploads the user attached to this turn (the agents may read them with the file tools).
    files: "models.ManyToManyField[UploadedFile, Any]" = models.ManyToManyField(
        "UploadedFile", blank=True, related_name="turns"
    )
    # Sum of the metered events' credits; what the wallet was debited for this turn.
    credits_burned = credits_field(default=0)
    # The database defaults serve rows written outside the ORM (bulk loads).
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.COMPLETED, db_default=Status.COMPLETED
    )
    # How the answering agents were chosen (docs: chat.mentions for the @mention grammar).
    routed_by = models.CharField(
        max_length=16, choices=RoutedBy.choices, default=RoutedBy.SINGLE, db_default=RoutedBy.SINGLE
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["room", "id"], name="chat_turn_room_order")]
        constraints = [
            models.CheckConstraint(condition=Q(credits_burned__gte=0), name="chat_turn_credits_non_negative"),
            models.CheckConstraint(
                condition=Q(status__in=["completed", "cancelled", "failed"]), name="chat_turn_status"
            ),
            models.CheckConstraint(
                condition=Q(routed_by__in=["single", "explicit", "mention", "manager", "fallback"]),
                name="chat_turn_routed_by",
            ),
        ]

    def __str__(self) -> str:
        return f"turn {self.pk} in room {self.room_id}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    # Indexed by the unique (turn, position) constraint.
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="messages", db_index=False)
    position = models.PositiveSmallIntegerField(default=0)
    role = models.CharField(max_length=16, choices=Role.choices)
    model_alias = models.CharField(max_length=64, blank=True, default="")
    content = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["turn_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["turn", "position"], name="chat_message_position"),
            models.CheckConstraint(condition=Q(role__in=["user", "assistant"]), name="chat_message_role"),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.model_alias}: {self.content[:40]}"


class ToolCallEvent(models.Model):
    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tool_calls")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="tool_calls")
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="tool_calls")
    model_alias = models.CharField(max_length=64, blank=True, default="")
    tool_name = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.TextField(blank=True, default="")
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["ok", "error"]), name="chat_tool_call_status"),
        ]

    def __str__(self) -> str:
        return f"{self.tool_name} {self.status}"


def upload_path(instance: "UploadedFile", filename: str) -> str:
    return f"uploads/{instance.owner_id}/{filename}"


class UploadedFile(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="files")
    file = models.FileField(upload_to=upload_path, max_length=500)
    name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=128)

    class Extraction(models.TextChoices):
        # Uploaded before text was extracted at upload: the file tools extract it once, bounded.
        PENDING = "pending"
        OK = "ok"
        UNREADABLE = "unreadable"

    # Extracted once, at upload (chat.extraction), so turns never parse the file again.
    extraction_status = models.CharField(
        max_length=16, choices=Extraction.choices, default=Extraction.PENDING
    )
    # Storable text (no NUL, no lone surrogate); a PDF's pages are separated by form feeds.
    extracted_text = models.TextField(blank=True, default="")
    # What the extractor reported: why the file is unreadable, or where its text was cut.
    extraction_note = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-id"], name="chat_file_owner_newest")]
        constraints = [
            models.CheckConstraint(
                condition=Q(extraction_status__in=["pending", "ok", "unreadable"]),
                name="chat_file_extraction_status",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TurnIdempotencyKey(models.Model):
    """Reserves an `Idempotency-Key` before the models run, so a key runs a turn once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="turn_keys")
    key = models.CharField(max_length=255)
    # sha256 of the room id and the request body; a different body under one key is 409.
    request_fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    turn = models.OneToOneField(
        Turn, null=True, blank=True, on_delete=models.CASCADE, related_name="idempotency_key"
    )
    response = models.JSONField(null=True, blank=True)
    # The HTTP status the first request answered with (a failed turn is recorded, and replayed, as 502).
    response_status = models.PositiveSmallIntegerField(default=201)
    # Set by `POST …/turns/cancel`; the process running the turn sees it and stops its model calls.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # A pending reservation whose worker died is released after this moment.
    locked_until = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="chat_idempotency_key_per_user"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "done"]), name="chat_idempotency_status"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"
