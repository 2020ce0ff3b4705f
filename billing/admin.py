"""The Django admin console for billing.

Multipliers are the one thing editable here, and every edit (change form or
the changelist's list_editable column) goes through
`services.pricing_update_multiplier(source="admin")`: the same validation,
audit row and live propagation as the API. Wallets, the ledger and the audit
trail are read-only; ledger rows can never be deleted.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from billing import services
from billing.models import (
    CreditTransaction,
    CreditWallet,
    ModelPricing,
    PricingChange,
    PricingVersion,
    UsageEvent,
)
from pantheon.admin import ReadOnlyAdmin


class ModelPricingForm(forms.ModelForm):
    class Meta:
        model = ModelPricing
        fields = ["multiplier"]

    def clean_multiplier(self):
        try:
            return services.parse_multiplier(self.cleaned_data["multiplier"])
        except services.PricingError as exc:
            raise ValidationError(str(exc)) from exc


@admin.register(ModelPricing)
class ModelPricingAdmin(admin.ModelAdmin):
    form = ModelPricingForm
    list_display = ["model_alias", "pricing_version", "multiplier", "updated_at"]
    list_display_links = ["model_alias"]
    list_editable = ["multiplier"]
    list_filter = ["pricing_version"]
    list_select_related = ["pricing_version"]
    search_fields = ["model_alias"]
    ordering = ["pricing_version", "model_alias"]
    # Identity never changes: a different alias or version is a different price.
    readonly_fields = ["pricing_version", "model_alias", "created_at", "updated_at"]
    fields = ["pricing_version", "model_alias", "multiplier", "created_at", "updated_at"]

    def get_changelist_form(self, request, **kwargs):
        kwargs.setdefault("form", ModelPricingForm)
        return super().get_changelist_form(request, **kwargs)

    def has_add_permission(self, request) -> bool:
        # New aliases arrive with a new pricing version (a migration), never one by one.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        update = services.pricing_update_multiplier(
            model_alias=obj.model_alias,
            multiplier=form.cleaned_data["multiplier"],
            changed_by=request.user,
            source=PricingChange.Source.ADMIN,
            pricing_version=obj.pricing_version.version,
        )
        # The admin logs and redirects using `obj`; give it the saved state.
        obj.multiplier = update.model_pricing.multiplier
        obj.updated_at = update.model_pricing.updated_at


class ModelPricingInline(admin.TabularInline):
    model = ModelPricing
    fields = readonly_fields = ("model_alias", "multiplier", "updated_at")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PricingVersion)
class PricingVersionAdmin(ReadOnlyAdmin):
    """Versions are created and activated by migrations; multipliers are edited per row."""

    list_display = ["version", "is_active", "created_at", "updated_at"]
    inlines = [ModelPricingInline]


@admin.register(PricingChange)
class PricingChangeAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "model_alias",
        "pricing_version",
        "old_multiplier",
        "new_multiplier",
        "changed_by",
        "source",
    ]
    list_filter = ["source", "pricing_version", "model_alias"]
    list_select_related = ["changed_by"]
    search_fields = ["model_alias", "changed_by__username"]
    date_hierarchy = "created_at"


@admin.register(CreditWallet)
class CreditWalletAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "lifetime_granted", "lifetime_burned", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__email"]
    ordering = ["-updated_at"]
    show_full_result_count = False


@admin.register(CreditTransaction)
class CreditTransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "wallet_user", "kind", "amount", "balance_after", "usage_event_id", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["wallet__user"]
    search_fields = ["wallet__user__username", "description", "idempotency_key"]
    ordering = ["-id"]
    # The ledger grows without bound; don't count it on every page view.
    show_full_result_count = False
    raw_id_fields = ["wallet", "usage_event"]

    @admin.display(description="user", ordering="wallet__user__username")
    def wallet_user(self, obj: CreditTransaction):
        return obj.wallet.user


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = [
        "id", "user", "model_alias", "provider_model", "purpose", "input_tokens", "output_tokens",
        "multiplier", "credits_burned", "metered", "pricing_version", "created_at",
    ]  # fmt: skip
    list_filter = ["purpose", "metered", "model_alias"]
    list_select_related = ["user"]
    search_fields = ["user__username", "model_alias"]
