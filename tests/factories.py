"""factory_boy factories shared by every test module."""

from decimal import Decimal
from functools import cache

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db.models.signals import post_save

from billing.models import UsageEvent
from chat.models import Room, Turn

DEFAULT_PASSWORD = "correct horse battery staple"


@cache
def default_password_hash() -> str:
    """DEFAULT_PASSWORD hashed once per process, by the project's real (deliberately slow) hasher.

    Hashing it for every user cost ~0.1 s of CPU each, most of the suite's time; every
    factory user shares this hash and logs in with DEFAULT_PASSWORD, gunicorn included.
    """
    return make_password(DEFAULT_PASSWORD)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.test")
    password = factory.LazyFunction(default_password_hash)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


@factory.django.mute_signals(post_save)
class UserWithoutWalletFactory(UserFactory):
    """A user as the beta-grant migration finds them: billing has not given them a wallet."""


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


class UsageEventFactory(factory.django.DjangoModelFactory):
    """A usage row written directly (no debit); for read-side tests."""

    class Meta:
        model = UsageEvent

    turn = factory.SubFactory(TurnFactory)
    room = factory.LazyAttribute(lambda o: o.turn.room)
    user = factory.LazyAttribute(lambda o: o.turn.user)
    model_alias = "gpt-4o"
    provider_model = "offline:gpt-4o"
    purpose = UsageEvent.Purpose.AGENT
    input_tokens = 100
    output_tokens = 50
    multiplier = Decimal("2.0000")
    pricing_version = "2026-02-20"
    credits_burned = Decimal("0.3000")
    metered = True
    latency_ms = 12
