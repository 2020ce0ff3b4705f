"""Request validation and the documented response shapes of the chat API.

Responses are built by `chat.payloads` (the turn response is also stored for
idempotent replays); the output serializers here describe those shapes for
the OpenAPI schema and are kept in step by tests/chat/test_api.py.
"""

from rest_framework import serializers

from pantheon.errors import ErrorSerializer


class InsufficientCreditsSerializer(ErrorSerializer):
    needed = serializers.DecimalField(
        max_digits=20, decimal_places=4, help_text="The turn's hold (its quote)."
    )
    available = serializers.DecimalField(max_digits=20, decimal_places=4, help_text="balance − held")
    missing = serializers.DecimalField(max_digits=20, decimal_places=4)
    balance = serializers.DecimalField(max_digits=20, decimal_places=4)


class RoomCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    agents = serializers.ListField(
        child=serializers.CharField(max_length=64), allow_empty=False, max_length=50
    )


class RoomSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    agents = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TurnCreateSerializer(serializers.Serializer):
    """The turn body, for the OpenAPI schema; `chat.services.turn_post` validates it."""

    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    model_alias = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=64)
    agents = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        max_length=10,
        help_text="Ask these agents of the room at once, without routing (instead of `model_alias`).",
    )
    files = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=50)


class AgentQuoteSerializer(serializers.Serializer):
    model_alias = serializers.CharField()
    multiplier = serializers.DecimalField(max_digits=20, decimal_places=4)
    input_tokens = serializers.IntegerField(help_text="The first call's prompt, history and files included.")
    max_output_tokens = serializers.IntegerField()
    credits_low = serializers.DecimalField(max_digits=20, decimal_places=4)
    credits_high = serializers.DecimalField(max_digits=20, decimal_places=4)


class QuoteRoutingSerializer(serializers.Serializer):
    by = serializers.ChoiceField(choices=["single", "explicit", "mention", "manager"])
    agents = serializers.ListField(child=serializers.CharField())
    upper_bound = serializers.BooleanField(help_text="The manager will pick: every agent is counted.")


class TurnQuoteSerializer(serializers.Serializer):
    routing = QuoteRoutingSerializer()
    agents = AgentQuoteSerializer(many=True)
    credits_low = serializers.DecimalField(max_digits=20, decimal_places=4)
    credits_high = serializers.DecimalField(max_digits=20, decimal_places=4)
    assumptions = serializers.DictField()


class TurnCancelSerializer(serializers.Serializer):
    idempotency_key = serializers.CharField(max_length=255)


class TurnCancelResultSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["cancelling"])


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "assistant"])
    model_alias = serializers.CharField(allow_blank=True)
    content = serializers.CharField()


class UsageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    model_alias = serializers.CharField()
    provider_model = serializers.CharField()
    purpose = serializers.ChoiceField(choices=["agent", "manager", "summary"])
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    multiplier = serializers.DecimalField(max_digits=20, decimal_places=4)
    pricing_version = serializers.CharField()
    credits_burned = serializers.DecimalField(max_digits=20, decimal_places=4)
    metered = serializers.BooleanField()
    usage_source = serializers.ChoiceField(
        choices=["provider", "estimated"],
        help_text="`estimated`: counted with the model's tokenizer (a call cut short, or no usage reported).",
    )
    cached_input_tokens = serializers.IntegerField(
        help_text="Of input_tokens, served from the provider's cache."
    )
    reasoning_tokens = serializers.IntegerField(help_text="Of output_tokens, spent reasoning.")
    latency_ms = serializers.IntegerField()


class ToolCallSerializer(serializers.Serializer):
    model_alias = serializers.CharField()
    tool_name = serializers.CharField()
    arguments = serializers.JSONField()
    status = serializers.ChoiceField(choices=["ok", "error"])
    error = serializers.CharField(allow_blank=True)
    latency_ms = serializers.IntegerField()


class RoutingSerializer(serializers.Serializer):
    by = serializers.ChoiceField(
        choices=["single", "explicit", "mention", "manager", "fallback"],
        help_text="single: a one-agent room; explicit: `model_alias`/`agents`; mention: @mentions; "
        "manager: the routing call; fallback: its reply was unreadable (CHAT_ROUTING_FALLBACK chose).",
    )
    agents = serializers.ListField(child=serializers.CharField())


class TurnSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    room = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    files = serializers.ListField(child=serializers.IntegerField())
    messages = MessageSerializer(many=True)
    usage = UsageSerializer(many=True)
    tool_calls = ToolCallSerializer(many=True)
    credits_burned = serializers.DecimalField(max_digits=20, decimal_places=4)
    status = serializers.ChoiceField(choices=["completed", "cancelled", "failed"])
    routing = RoutingSerializer()


class TurnResultSerializer(TurnSerializer):
    balance = serializers.DecimalField(
        max_digits=20, decimal_places=4, help_text="The wallet balance after this turn."
    )


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True, use_url=False)


class FileSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    size = serializers.IntegerField()
    content_type = serializers.CharField()
    created_at = serializers.DateTimeField()
