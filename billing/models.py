"""Billing models: pricing versions, multipliers, wallets and the credit ledger.

Models stay small: every write goes through `billing.services`, every read
used by the API through `billing.selectors`. Each rule stated in PRODUCT.md is
also a database constraint, so no code path (admin, shell, raw ORM) can break it.
"""

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q


def credits_field(**options: Any) -> models.DecimalField:
    """A credit amount (or a multiplier): exact Decimal with 4 places, wide enough for any
    balance we sell. One definition, so every money column has the same precision."""
    return models.DecimalField(max_digits=20, decimal_places=4, **options)


class PricingVersion(models.Model):
    version = models.CharField(max_length=32, unique=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # At most one active version; the seed migration makes it exactly one.
            models.UniqueConstraint(
                fields=["is_active"],
                condition=Q(is_active=True),
                name="billing_one_active_pricing_version",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.version}{' (active)' if self.is_active else ''}"


class ModelPricing(models.Model):
    pricing_version = models.ForeignKey(PricingVersion, on_delete=models.PROTECT, related_name="models")
    model_alias = models.SlugField(max_length=64)
    # A price factor, not credits; same precision so the product stays exact Decimal.
    multiplier = credits_field()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_alias"]
        verbose_name = "model pricing"
        verbose_name_plural = "model pricing"
        constraints = [
            models.UniqueConstraint(
                fields=["pricing_version", "model_alias"],
                name="billing_unique_alias_per_version",
            ),
            models.CheckConstraint(
                condition=Q(multiplier__gt=0) & Q(multiplier__lte=100),
                name="billing_multiplier_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_alias} ×{self.multiplier} ({self.pricing_version.version})"


class PricingChange(models.Model):
    """Audit trail of multiplier edits; its id is the cache's edit sequence."""

    class Source(models.TextChoices):
        ADMIN = "admin", "Django admin"
        API = "api", "API"
        COMMAND = "command", "Management command"

    model_pricing = models.ForeignKey(ModelPricing, on_delete=models.PROTECT, related_name="changes")
    # Copies of the identity so the record reads on its own, forever.
    model_alias = models.SlugField(max_length=64)
    pricing_version = models.CharField(max_length=32)
    old_multiplier = credits_field()
    new_multiplier = credits_field()
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="pricing_changes",
    )
    source = models.CharField(max_length=16, choices=Source.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(source__in=["admin", "api", "command"]),
                name="billing_pricing_change_source",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_alias}: {self.old_multiplier} → {self.new_multiplier}"


class UsageEvent(models.Model):
    """One model call with the price it was charged at: the usage row.

    Chat hands billing plain call records (`billing.usage.CallRecord`); billing
    prices them at commit and writes these rows with their debits. The room and
    turn are named by model label, so billing never imports chat. The table
    keeps its first name (`chat_llmcallevent`): the model moved, the data did not.
    """

    class Purpose(models.TextChoices):
        AGENT = "agent"
        MANAGER = "manager"
        SUMMARY = "summary"

    class UsageSource(models.TextChoices):
        PROVIDER = "provider"
        ESTIMATED = "estimated"

    # Indexed by chat_usage_user_newest (user, -created_at, -id).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_events", db_index=False
    )
    room = models.ForeignKey("chat.Room", on_delete=models.CASCADE, related_name="usage_events")
    turn = models.ForeignKey("chat.Turn", on_delete=models.CASCADE, related_name="usage_events")
    model_alias = models.CharField(max_length=64)
    provider_model = models.CharField(max_length=128)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    input_tokens = models.PositiveIntegerField()
    output_tokens = models.PositiveIntegerField()
    # The multiplier in force when the turn was priced, copied so history never moves.
    multiplier = credits_field()
    pricing_version = models.CharField(max_length=32)
    # Credits this call cost; 0 for an unmetered (manager) call.
    credits_burned = credits_field()
    metered = models.BooleanField()
    # Where the token counts come from: the provider's usage report, or our count with the
    # model's tokenizer for a call cut short (Stop, a dropped stream) or reported without usage.
    usage_source = models.CharField(
        max_length=16,
        choices=UsageSource.choices,
        default=UsageSource.PROVIDER,
        db_default=UsageSource.PROVIDER,  # rows written outside the ORM (bulk loads) too
    )
    # Detail the provider reports, already counted in the totals above (priced as part of them):
    # input tokens served from its prompt cache, output tokens spent reasoning.
    cached_input_tokens = models.PositiveIntegerField(default=0, db_default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0, db_default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "chat_llmcallevent"
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
            models.CheckConstraint(
                condition=Q(usage_source__in=["provider", "estimated"]), name="billing_usage_source"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.purpose} {self.model_alias} {self.credits_burned}"


class CreditWallet(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="wallet")
    # The spendable balance; always equals the sum of the wallet's ledger amounts.
    balance = credits_field(default=0)
    # Running totals kept in the same UPDATE as the balance, for a cheap wallet read.
    lifetime_granted = credits_field(default=0)
    lifetime_burned = credits_field(default=0)
    # Credits reserved by active holds (enforce mode); always equals the sum of the active holds.
    # `balance - held` is what a new turn may reserve.
    held = credits_field(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(lifetime_granted__gte=0) & Q(lifetime_burned__gte=0),
                name="billing_wallet_lifetime_non_negative",
            ),
            models.CheckConstraint(condition=Q(held__gte=0), name="billing_wallet_held_non_negative"),
        ]

    def __str__(self) -> str:
        return f"wallet of {self.user} ({self.balance})"

    @property
    def available(self) -> Decimal:
        return self.balance - self.held


class CreditHold(models.Model):
    """Credits reserved for one turn in enforce mode (a pending transfer, not a ledger row).

    Placed `active` for the most the turn can cost, then closed exactly once:
    `settled` by the turn's commit (which debits the real cost), or `released`
    (the turn failed before any model ran, or the hold's lease expired because
    its worker died). The wallet's `held` column moves with every change.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        SETTLED = "settled"
        RELEASED = "released"

    # Indexed by billing_hold_wallet_active (wallet, status, expires_at).
    wallet = models.ForeignKey(CreditWallet, on_delete=models.PROTECT, related_name="holds", db_index=False)
    # The most the turn can cost, reserved against the balance.
    amount = credits_field()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # An active hold past this moment belongs to a dead worker and is released.
    expires_at = models.DateTimeField()
    description = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["wallet", "status", "expires_at"], name="billing_hold_wallet_active"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="billing_hold_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["active", "settled", "released"]), name="billing_hold_status"
            ),
            models.CheckConstraint(
                condition=Q(status="active", closed_at__isnull=True)
                | (~Q(status="active") & Q(closed_at__isnull=False)),
                name="billing_hold_closed_once",
            ),
        ]

    def __str__(self) -> str:
        return f"hold {self.pk} {self.status} {self.amount}"


class CreditTransaction(models.Model):
    """One append-only ledger row per balance change (UPDATE/DELETE refused by trigger)."""

    class Kind(models.TextChoices):
        GRANT = "grant"
        DEBIT = "debit"
        REFUND = "refund"
        ADJUSTMENT = "adjustment"

    # Indexed by billing_ledger_wallet_newest (wallet, -id).
    wallet = models.ForeignKey(
        CreditWallet, on_delete=models.PROTECT, related_name="transactions", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Signed change to the balance: grants/refunds add, debits subtract.
    amount = credits_field()
    # The wallet balance right after this row, written under the wallet's row lock.
    balance_after = credits_field()
    usage_event = models.OneToOneField(
        "billing.UsageEvent",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="debit",
    )
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    description = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["wallet", "-id"], name="billing_ledger_wallet_newest"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind__in=["grant", "debit", "refund", "adjustment"]),
                name="billing_ledger_kind",
            ),
            models.CheckConstraint(
                condition=(
                    (Q(kind__in=["grant", "refund"]) & Q(amount__gt=0))
                    | (Q(kind="debit") & Q(amount__lt=0))
                    | (Q(kind="adjustment") & ~Q(amount=0))
                ),
                name="billing_ledger_amount_sign",
            ),
            models.CheckConstraint(
                condition=Q(usage_event__isnull=True) | Q(kind="debit"),
                name="billing_ledger_usage_only_on_debit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} → {self.balance_after}"
