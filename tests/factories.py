"""factory_boy factories shared by every test module."""

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from billing.services import wallet_get_or_create
from chat.models import LLMCallEvent, Room, Turn

DEFAULT_PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.test")
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def with_wallet(obj, create, extracted, **kwargs):
        obj.save()
        if create and extracted is not False:
            wallet_get_or_create(user=obj)


class RoomFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Room

    owner = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Room {n}")
    agents = factory.LazyFunction(lambda: ["gpt-4o"])


class TurnFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Turn

    room = factory.SubFactory(RoomFactory)
    user = factory.LazyAttribute(lambda o: o.room.owner)
    content = factory.Sequence(lambda n: f"question {n}")


class LLMCallEventFactory(factory.django.DjangoModelFactory):
    """A usage row written directly (no debit); for read-side tests."""

    class Meta:
        model = LLMCallEvent

    turn = factory.SubFactory(TurnFactory)
    room = factory.LazyAttribute(lambda o: o.turn.room)
    user = factory.LazyAttribute(lambda o: o.turn.user)
    model_alias = "gpt-4o"
    provider_model = "offline:gpt-4o"
    purpose = LLMCallEvent.Purpose.AGENT
    input_tokens = 100
    output_tokens = 50
    multiplier = Decimal("2.0000")
    pricing_version = "2026-02-20"
    credits_burned = Decimal("0.3000")
    metered = True
    latency_ms = 12
