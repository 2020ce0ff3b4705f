"""The Django admin console for billing.

Multipliers are the one thing editable here, and every edit (change form or
the changelist's list_editable column) goes through
`services.pricing_update_multiplier(source="admin")`: the same validation,
audit row and live propagation as the API. Wallets, the ledger and the audit
trail are read-only; ledger rows can never be deleted. Staff with the
`billing.add_credittransaction` permission grant credits from the wallet list
(an action with its own form), through `services.wallet_grant`.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

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

logger = logging.getLogger(__name__)


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


GRANT_REASON_MAX_CHARS = 160


class GrantCreditsForm(forms.Form):
    amount = forms.CharField(
        label="Credits to grant",
        max_length=32,
        help_text="Granted to each selected wallet; up to 4 decimal places, e.g. 100 or 12.5.",
    )
    reason = forms.CharField(
        max_length=GRANT_REASON_MAX_CHARS,
        help_text="Stored on the ledger row with your username; the user sees it on their wallet page.",
    )
    # Made when the form is shown: the same form submitted twice (a double click, a browser
    # retry, the back button) carries the same token, so its idempotency keys grant once.
    grant_token = forms.UUIDField(widget=forms.HiddenInput)

    def clean_amount(self) -> Decimal:
        try:
            amount = services.parse_credits(self.cleaned_data["amount"])
        except services.LedgerError as exc:
            raise ValidationError(str(exc)) from exc
        if amount <= 0:
            raise ValidationError("A grant must be positive.")
        return amount


def grant_key(token: uuid.UUID, wallet_id: int) -> str:
    return f"admin-grant:{token}:{wallet_id}"


@admin.register(CreditWallet)
class CreditWalletAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "lifetime_granted", "lifetime_burned", "updated_at"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__email"]
    ordering = ["-updated_at"]
    show_full_result_count = False
    actions = ["grant_credits"]

    def has_grant_permission(self, request: HttpRequest) -> bool:
        # Granting writes a ledger row: the ledger's own add permission, not the wallet's.
        return request.user.has_perm("billing.add_credittransaction")

    @admin.action(description="Grant credits to the selected wallets", permissions=["grant"])
    def grant_credits(
        self, request: HttpRequest, queryset: QuerySet[CreditWallet]
    ) -> TemplateResponse | None:
        wallets = list(queryset.select_related("user").order_by("pk"))
        if "apply" in request.POST:
            form = GrantCreditsForm(request.POST)
            if form.is_valid():
                try:
                    self._grant(request, wallets, **form.cleaned_data)
                except services.IdempotencyConflict:
                    form.add_error(
                        None,
                        "This form was already submitted with a different amount. Nothing more was "
                        "granted: go back to the wallet list and start a new grant.",
                    )
                except services.LedgerError as exc:
                    form.add_error(None, str(exc))
                else:
                    return None  # back to the changelist, with the message
        else:
            form = GrantCreditsForm(initial={"grant_token": uuid.uuid4()})
        context = {
            **self.admin_site.each_context(request),
            "title": "Grant credits",
            "opts": self.model._meta,
            "form": form,
            "wallets": wallets,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/billing/creditwallet/grant_credits.html", context)

    def _grant(
        self,
        request: HttpRequest,
        wallets: list[CreditWallet],
        *,
        amount: Decimal,
        reason: str,
        grant_token: uuid.UUID,
    ) -> None:
        staff = request.user
        # Who granted, first, so a long reason can never cut it off (descriptions hold 255).
        description = f"Staff grant by {staff.get_username()} (user {staff.pk}): {reason}"
        keys = {wallet.pk: grant_key(grant_token, wallet.pk) for wallet in wallets}
        # Only for the message: the keys themselves make a repeated submit grant nothing.
        already = set(
            CreditTransaction.objects.filter(idempotency_key__in=keys.values()).values_list(
                "idempotency_key", flat=True
            )
        )
        granted = []
        with transaction.atomic():
            for wallet in wallets:
                row = services.wallet_grant(
                    wallet_id=wallet.pk,
                    amount=amount,
                    description=description,
                    idempotency_key=keys[wallet.pk],
                )
                if keys[wallet.pk] in already:
                    continue
                granted.append(wallet)
                self.log_change(
                    request, wallet, f"Granted {row.amount} credits (ledger row {row.pk}): {reason}"
                )
                logger.info(
                    "staff grant: %s credits to wallet=%s user=%s by staff=%s (%s) ledger_row=%s reason=%r",
                    row.amount,
                    wallet.pk,
                    wallet.user_id,
                    staff.pk,
                    staff.get_username(),
                    row.pk,
                    reason,
                )
        if granted:
            self.message_user(
                request,
                f"Granted {amount} credits to {len(granted)} wallet{'s' if len(granted) != 1 else ''}: "
                + ", ".join(str(wallet.user) for wallet in granted),
                messages.SUCCESS,
            )
        if len(granted) < len(wallets):
            self.message_user(
                request,
                "This form was already submitted: wallets granted then were not granted again.",
                messages.WARNING,
            )


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
