from decimal import Decimal

import pytest

from billing.models import CreditWallet, ModelPricing
from tests.factories import UsageEventFactory, UserFactory


@pytest.mark.django_db
def test_seeded_pricing_and_factories():
    assert ModelPricing.objects.get(model_alias="gpt-4o").multiplier == Decimal("2.0")
    user = UserFactory()
    assert CreditWallet.objects.get(user=user).balance == Decimal("500")
    event = UsageEventFactory(turn__room__owner=user)
    assert event.user == user
