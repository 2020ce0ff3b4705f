"""Reading the active price list and making the users allowed to change it."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from billing.models import ModelPricing
from tests.factories import UserFactory


def stored_multiplier(alias: str = "gpt-4o") -> Decimal:
    """The multiplier the active pricing version holds in the database for `alias`."""
    return ModelPricing.objects.get(pricing_version__is_active=True, model_alias=alias).multiplier


def staff_with_pricing_permission(**extra):
    """A staff user holding `billing.change_modelpricing`, read back so its permission cache is fresh."""
    user = UserFactory(is_staff=True, **extra)
    user.user_permissions.add(Permission.objects.get(codename="change_modelpricing"))
    return get_user_model().objects.get(pk=user.pk)
