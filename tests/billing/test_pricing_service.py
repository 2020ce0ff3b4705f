"""billing.services.pricing_update_multiplier and parse_multiplier, on PostgreSQL."""

import itertools
from decimal import Decimal

import pytest
from django.db import transaction

from billing import meter, services
from billing.models import ModelPricing, PricingChange
from billing.signals import pricing_changed
from tests.factories import UserFactory
from tests.support.pricing import stored_multiplier
from tests.support.threads import run_in_threads


@pytest.fixture
def signals_seen():
    seen = []

    def record(sender, change=None, **kwargs):
        seen.append(change)

    pricing_changed.connect(record, dispatch_uid="test-record")
    yield seen
    pricing_changed.disconnect(dispatch_uid="test-record")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.25", Decimal("1.2500")),
        (" 3 ", Decimal("3.0000")),
        ("100", Decimal("100.0000")),
        ("0.0001", Decimal("0.0001")),
        ("1.50000", Decimal("1.5000")),  # trailing zeros are not extra places
        (Decimal("2.5"), Decimal("2.5000")),
        (7, Decimal("7.0000")),
        (Decimal("1E+1"), Decimal("10.0000")),  # a JSON number written 1e1
    ],
)
def test_parse_multiplier_accepts(value, expected):
    parsed = services.parse_multiplier(value)
    assert parsed == expected
    assert parsed.as_tuple().exponent == -4


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "not a decimal"),
        ("", "not a decimal"),
        ("1e2", "not a decimal"),  # strings are plain decimals, no exponent
        ("1_000", "not a decimal"),
        ("١٢", "not a decimal"),  # non-ASCII digits
        ("NaN", "not a decimal"),
        ("Infinity", "not a decimal"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        ("0", "greater than 0"),
        ("0.0000", "greater than 0"),
        ("-1", "greater than 0"),
        ("100.0001", "at most 100"),
        ("1" + "0" * 400, "at most 100"),
        (Decimal("1E+400"), "at most 100"),
        ("1.00001", "4 decimal places"),
        (Decimal("0.00001"), "4 decimal places"),
        (None, "decimal number"),
        (True, "decimal number"),
        (1.5, "not a float"),
        ([1], "decimal number"),
        ({"value": 1}, "decimal number"),
    ],
)
def test_parse_multiplier_refuses(value, message):
    with pytest.raises(services.PricingError, match=message):
        services.parse_multiplier(value)


@pytest.mark.django_db
def test_update_changes_price_writes_audit_and_signals_after_commit(
    django_capture_on_commit_callbacks, signals_seen
):
    editor = UserFactory(is_staff=True)
    meter.reload_pricing_cache()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        update = services.pricing_update_multiplier(
            model_alias="gpt-4o", multiplier="2.75", changed_by=editor, source="api"
        )
        assert signals_seen == []  # nothing before the commit
    assert len(callbacks) == 1
    assert stored_multiplier("gpt-4o") == Decimal("2.7500")
    assert update.old_multiplier == Decimal("2.0000")
    change = PricingChange.objects.get()
    assert change == update.change
    assert (change.model_alias, change.pricing_version, change.source) == ("gpt-4o", "2026-02-20", "api")
    assert (change.old_multiplier, change.new_multiplier) == (Decimal("2.0000"), Decimal("2.7500"))
    assert change.changed_by == editor
    assert change.model_pricing == update.model_pricing
    assert signals_seen == [change]
    # The receiver reloaded this process's cache.
    assert meter.get_model_multiplier("gpt-4o") == Decimal("2.7500")
    assert meter.get_pricing_snapshot().change_seq == change.pk


@pytest.mark.django_db
def test_same_value_is_a_noop_without_audit_or_signal(django_capture_on_commit_callbacks, signals_seen):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        update = services.pricing_update_multiplier(
            model_alias="gpt-4o", multiplier="2.0", changed_by=None, source="api"
        )
    assert update.change is None
    assert callbacks == []
    assert signals_seen == []
    assert not PricingChange.objects.exists()


@pytest.mark.django_db
def test_unknown_alias_and_bad_value_change_nothing(django_capture_on_commit_callbacks, signals_seen):
    meter.reload_pricing_cache()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(ModelPricing.DoesNotExist):
            services.pricing_update_multiplier(
                model_alias="no-such-model", multiplier="1", changed_by=None, source="api"
            )
        with pytest.raises(services.PricingError):
            services.pricing_update_multiplier(
                model_alias="gpt-4o", multiplier="0", changed_by=None, source="api"
            )
        with pytest.raises(services.PricingError, match="source"):
            services.pricing_update_multiplier(
                model_alias="gpt-4o", multiplier="3", changed_by=None, source="cron"
            )
    assert callbacks == []
    assert stored_multiplier("gpt-4o") == Decimal("2.0000")
    assert meter.get_model_multiplier("gpt-4o") == Decimal("2.0000")
    assert not PricingChange.objects.exists()


@pytest.mark.django_db
def test_edit_of_an_inactive_version_is_audited_and_leaves_active_price(django_capture_on_commit_callbacks):
    from billing.models import PricingVersion

    draft = PricingVersion.objects.create(version="2026-04-01", is_active=False)
    ModelPricing.objects.create(pricing_version=draft, model_alias="gpt-4o", multiplier=Decimal("2"))
    with django_capture_on_commit_callbacks(execute=True):
        update = services.pricing_update_multiplier(
            model_alias="gpt-4o",
            multiplier="3",
            changed_by=None,
            source="admin",
            pricing_version="2026-04-01",
        )
    assert update.model_pricing.pricing_version == draft
    assert update.change.pricing_version == "2026-04-01"
    assert stored_multiplier("gpt-4o") == Decimal("2.0000")
    assert meter.get_model_multiplier("gpt-4o") == Decimal("2.0000")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rolled_back_edit_never_signals_nor_reaches_the_cache(signals_seen):
    meter.reload_pricing_cache()
    with pytest.raises(RuntimeError), transaction.atomic():
        services.pricing_update_multiplier(
            model_alias="gpt-4o", multiplier="9", changed_by=None, source="api"
        )
        raise RuntimeError("abort the surrounding transaction")
    assert signals_seen == []
    assert stored_multiplier("gpt-4o") == Decimal("2.0000")
    assert meter.get_model_multiplier("gpt-4o") == Decimal("2.0000")
    assert not PricingChange.objects.exists()

    # The same edit, committed this time, signals exactly once.
    update = services.pricing_update_multiplier(
        model_alias="gpt-4o", multiplier="9", changed_by=None, source="api"
    )
    assert signals_seen == [update.change]
    assert meter.get_model_multiplier("gpt-4o") == Decimal("9.0000")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_edits_serialise_into_one_audit_chain():
    """Eight threads edit the same alias at once: no edit is lost and the audit rows chain."""
    values = [Decimal(f"{3 + i}.{i}") for i in range(8)]

    def edit(i: int) -> None:
        services.pricing_update_multiplier(
            model_alias="gpt-4o", multiplier=values[i], changed_by=None, source="api"
        )

    run_in_threads(edit, len(values))
    changes = list(PricingChange.objects.order_by("id"))
    assert len(changes) == len(values)
    assert changes[0].old_multiplier == Decimal("2.0000")
    for earlier, later in itertools.pairwise(changes):
        assert later.old_multiplier == earlier.new_multiplier
    assert sorted(change.new_multiplier for change in changes) == sorted(values)
    assert stored_multiplier("gpt-4o") == changes[-1].new_multiplier
