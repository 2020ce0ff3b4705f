"""Chat models: rooms, turns, messages, usage and tool events, uploads.

A turn and everything it caused (messages, LLM call events, tool call events
and the wallet debits in `billing`) is written by one transaction in
`chat.services`; nothing here is ever written piecemeal.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from billing.models import CREDIT_DIGITS


class Room(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rooms")
    title = models.CharField(max_length=200)
    # Model aliases taking part, validated against the active pricing table.
    agents = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-id"], name="chat_room_owner_newest")]

    def __str__(self) -> str:
        return self.title


class Turn(models.Model):
    # Indexed by chat_turn_room_order (room, id); a second index on room alone only costs writes.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="turns", db_index=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="turns")
    content = models.TextField()
    # Uploads the user attached to this turn (the agents may read them with the file tools).
    files = models.ManyToManyField("UploadedFile", blank=True, related_name="turns")
    # Sum of the metered events' credits; what the wallet was debited for this turn.
    credits_burned = models.DecimalField(**CREDIT_DIGITS, default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["room", "id"], name="chat_turn_room_order")]
        constraints = [
            models.CheckConstraint(condition=Q(credits_burned__gte=0), name="chat_turn_credits_non_negative"),
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


class LLMCallEvent(models.Model):
    """One model call, with the price it was charged at (the usage row)."""

    class Purpose(models.TextChoices):
        AGENT = "agent"
        MANAGER = "manager"
        SUMMARY = "summary"

    # Indexed by chat_usage_user_newest (user, -created_at, -id).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="llm_calls", db_index=False
    )
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="llm_calls")
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="llm_calls")
    model_alias = models.CharField(max_length=64)
    provider_model = models.CharField(max_length=128)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    input_tokens = models.PositiveIntegerField()
    output_tokens = models.PositiveIntegerField()
    # The multiplier in force when the turn was priced, copied so history never moves.
    multiplier = models.DecimalField(**CREDIT_DIGITS)
    pricing_version = models.CharField(max_length=32)
    # Credits this call cost; 0 for an unmetered (manager) call.
    credits_burned = models.DecimalField(**CREDIT_DIGITS)
    metered = models.BooleanField()
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # Usage history: newest first per user, optionally per model.
            models.Index(fields=["user", "-created_at", "-id"], name="chat_usage_user_newest"),
            models.Index(
                fields=["user", "model_alias", "-created_at", "-id"],
                name="chat_usage_user_alias_newest",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(purpose__in=["agent", "manager", "summary"]), name="chat_llm_call_purpose"
            ),
            models.CheckConstraint(
                condition=Q(credits_burned__gte=0), name="chat_llm_call_credits_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(metered=True) | Q(credits_burned=0), name="chat_llm_call_unmetered_is_free"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} {self.model_alias} {self.credits_burned}"


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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-id"], name="chat_file_owner_newest")]

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
