"""Billing API shapes. Decimals go out as strings (COERCE_DECIMAL_TO_STRING)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing import services
from billing.models import CreditHold, CreditTransaction, CreditWallet, ModelPricing

# OpenAPI for a multiplier in a request: a decimal string, or a JSON number read exactly.
MULTIPLIER_SCHEMA = {
    "oneOf": [
        {"type": "string", "format": "decimal", "pattern": r"^\s*\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*$"},
        {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 100, "multipleOf": 0.0001},
    ],
    "example": "1.25",
}


class WalletSerializer(serializers.ModelSerializer):
    available = serializers.DecimalField(
        max_digits=20,
        decimal_places=4,
        read_only=True,
        help_text="balance − held: what a new turn may reserve (enforce mode).",
    )

    class Meta:
        model = CreditWallet
        fields = ["balance", "held", "available", "lifetime_granted", "lifetime_burned", "updated_at"]
        read_only_fields = fields


class HoldSerializer(serializers.ModelSerializer):
    class Meta:
        model = CreditHold
        fields = ["id", "amount", "status", "description", "created_at", "expires_at"]
        read_only_fields = fields


class UsageRowSerializer(serializers.Serializer):
    """One model call (a `UsageEvent`) with the price it was charged at."""

    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    room = serializers.IntegerField(source="room_id")
    turn = serializers.IntegerField(source="turn_id")
    turn_status = serializers.ChoiceField(
        choices=["completed", "cancelled", "failed"], help_text="How the turn this call belongs to ended."
    )
    turn_routed_by = serializers.ChoiceField(
        choices=["single", "explicit", "mention", "manager", "fallback"],
        help_text="How the turn's answering agents were chosen (see the turn's `routing`).",
    )
    model_alias = serializers.CharField()
    provider_model = serializers.CharField()
    purpose = serializers.ChoiceField(choices=["agent", "manager", "summary"])
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    multiplier = serializers.DecimalField(max_digits=20, decimal_places=4)
    pricing_version = serializers.CharField()
    credits_burned = serializers.DecimalField(max_digits=20, decimal_places=4)
    metered = serializers.BooleanField()
    usage_source = serializers.ChoiceField(choices=["provider", "estimated"])
    cached_input_tokens = serializers.IntegerField(
        help_text="Of input_tokens, served from the provider's cache."
    )
    reasoning_tokens = serializers.IntegerField(help_text="Of output_tokens, spent reasoning.")
    latency_ms = serializers.IntegerField()


# Column order of the CSV export: the JSON row's fields, in the same order.
USAGE_CSV_COLUMNS = list(UsageRowSerializer().fields)


class UsagePageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="Older rows; null on the last page.")
    previous = serializers.URLField(allow_null=True, help_text="Newer rows; null on the first page.")
    results = UsageRowSerializer(many=True)


class UsageSummaryRowSerializer(serializers.Serializer):
    day = serializers.DateField(required=False, help_text="Present when grouped by day (UTC days).")
    model_alias = serializers.CharField(required=False, help_text="Present when grouped by model.")
    calls = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    credits_burned = serializers.DecimalField(max_digits=20, decimal_places=4)


class UsageSummaryTotalsSerializer(serializers.Serializer):
    calls = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    credits_burned = serializers.DecimalField(max_digits=20, decimal_places=4)


class UsageSummarySerializer(serializers.Serializer):
    group_by = serializers.CharField()
    since = serializers.DateTimeField(allow_null=True)
    until = serializers.DateTimeField(allow_null=True)
    results = UsageSummaryRowSerializer(many=True)
    totals = UsageSummaryTotalsSerializer()


class TransactionRowSerializer(serializers.ModelSerializer):
    usage_event = serializers.IntegerField(
        source="usage_event_id", allow_null=True, help_text="The usage row a debit pays for."
    )

    class Meta:
        model = CreditTransaction
        fields = ["id", "kind", "amount", "balance_after", "usage_event", "description", "created_at"]
        read_only_fields = fields


class TransactionPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TransactionRowSerializer(many=True)


class PricingModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelPricing
        fields = ["model_alias", "multiplier", "updated_at"]
        read_only_fields = fields


class PricingListSerializer(serializers.Serializer):
    pricing_version = serializers.CharField(allow_null=True)
    models = PricingModelSerializer(many=True)


@extend_schema_field(MULTIPLIER_SCHEMA)
class MultiplierField(serializers.Field):
    """A multiplier as a decimal string or JSON number; the rules live in `services.parse_multiplier`."""

    default_error_messages = {"invalid": "{message}"}

    def to_internal_value(self, data):
        try:
            return services.parse_multiplier(data)
        except services.PricingError as exc:
            self.fail("invalid", message=str(exc))

    def to_representation(self, value):
        return str(value)


class PricingPatchSerializer(serializers.Serializer):
    """`{"multiplier": "1.25"}` and nothing else."""

    multiplier = MultiplierField(
        help_text=(
            "Decimal string (preferred) or JSON number, 0 < multiplier ≤ 100, at most 4 decimal "
            "places. JSON numbers are read exactly as written (never through a float)."
        )
    )

    def validate(self, attrs):
        extra = sorted(set(self.initial_data) - set(self.fields))
        if extra:
            raise serializers.ValidationError(
                {field: ["Only `multiplier` can be changed; this field is not accepted."] for field in extra}
            )
        return attrs
