from decimal import Decimal

import pytest

from billing.models import ModelPricing


@pytest.mark.django_db
def test_seeded_pricing():
    assert ModelPricing.objects.get(model_alias="gpt-4o").multiplier == Decimal("2.0")
