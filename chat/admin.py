"""Chat in the Django admin: rooms are editable; turns, events and uploads are records, read-only."""

from django.contrib import admin

from chat.models import Message, Room, ToolCallEvent, Turn, TurnIdempotencyKey, UploadedFile
from pantheon.admin import ReadOnlyAdmin


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "owner", "agents", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["title", "owner__username"]
    raw_id_fields = ["owner"]


class MessageInline(admin.TabularInline):
    model = Message
    fields = readonly_fields = ("position", "role", "model_alias", "content")
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = ["id", "room", "user", "credits_burned", "created_at"]
    list_select_related = ["room", "user"]
    search_fields = ["user__username", "content"]
    inlines = [MessageInline]


@admin.register(ToolCallEvent)
class ToolCallEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "tool_name", "model_alias", "status", "latency_ms", "created_at"]
    list_filter = ["tool_name", "status"]
    list_select_related = ["user"]


@admin.register(UploadedFile)
class UploadedFileAdmin(ReadOnlyAdmin):
    list_display = ["id", "owner", "name", "size", "content_type", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["name", "owner__username"]


@admin.register(TurnIdempotencyKey)
class TurnIdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "key", "status", "turn", "locked_until", "created_at"]
    list_filter = ["status"]
    list_select_related = ["user"]
