"""The multiplier cache and the credit formula (billing/meter.py)."""

from decimal import Decimal

import pytest

from billing import meter
from billing.meter import compute_credits_burned, credits_for, get_model_multiplier, reload_pricing_cache
from billing.models import ModelPricing, PricingVersion

SEEDED = {
    "deepseek": Decimal("0.5"),
    "gemini-flash": Decimal("0.8"),
    "gemini-pro": Decimal("1.2"),
    "gpt-4o-mini": Decimal("1.0"),
    "gpt-4o": Decimal("2.0"),
    "claude-haiku": Decimal("0.8"),
    "claude-sonnet": Decimal("1.5"),
    "default": Decimal("1.0"),
}

pytestmark = pytest.mark.django_db


def test_seed_has_exactly_the_eight_aliases_in_one_active_version():
    active = PricingVersion.objects.get(is_active=True)
    assert active.version == "2026-02-20"
    assert dict(active.models.values_list("model_alias", "multiplier")) == SEEDED


@pytest.mark.parametrize(("alias", "multiplier"), sorted(SEEDED.items()))
def test_formula_for_every_seeded_alias(alias, multiplier):
    assert get_model_multiplier(alias) == multiplier
    # 1200 + 800 tokens = 2 units of 1k tokens.
    assert compute_credits_burned(1200, 800, alias) == (2 * multiplier).quantize(Decimal("0.0001"))
    # 1 token is the smallest charge; seeded multipliers have one decimal, so it is exact.
    assert compute_credits_burned(1, 0, alias) == (multiplier / 1000).quantize(Decimal("0.0001"))


def test_results_are_decimal_quantized_to_four_places():
    credits = compute_credits_burned(1234, 567, "gpt-4o")
    assert isinstance(credits, Decimal)
    assert credits == Decimal("3.6020")
    assert credits.as_tuple().exponent == -4


def test_no_alias_means_multiplier_one():
    assert compute_credits_burned(1500, 500) == Decimal("2.0000")
    assert compute_credits_burned(1500, 500, None) == Decimal("2.0000")
    assert get_model_multiplier(None) == Decimal(1)


def test_unknown_alias_falls_back_to_default():
    ModelPricing.objects.filter(model_alias="default").update(multiplier=Decimal("3.25"))
    reload_pricing_cache()
    assert get_model_multiplier("no-such-model") == Decimal("3.25")
    assert compute_credits_burned(1000, 0, "no-such-model") == Decimal("3.2500")
    # Known aliases keep their own price.
    assert get_model_multiplier("deepseek") == Decimal("0.5")


def test_zero_tokens_cost_nothing():
    assert compute_credits_burned(0, 0, "gpt-4o") == Decimal("0.0000")


@pytest.mark.parametrize(
    ("credits_per_1k", "input_tokens", "output_tokens", "alias", "expected"),
    [
        # 5 × 0.1 × 0.5 / 1000 = 0.00025: half-up gives 0.0003 (half-even would give 0.0002).
        ("0.1", 5, 0, "deepseek", Decimal("0.0003")),
        # 3 × 0.1 × 1.5 / 1000 = 0.00045 → 0.0005 (half-even: 0.0004).
        ("0.1", 2, 1, "claude-sonnet", Decimal("0.0005")),
        # 1 × 0.1 × 0.5 / 1000 = 0.00005 → 0.0001: the smallest charge rounds up, not to zero.
        ("0.1", 1, 0, "deepseek", Decimal("0.0001")),
        # Above half rounds up, below half rounds down.
        ("0.07", 1, 0, "default", Decimal("0.0001")),  # 0.00007
        ("0.04", 1, 0, "default", Decimal("0.0000")),  # 0.00004
        # 7 × 0.3 × 0.8 / 1000 = 0.00168 → 0.0017.
        ("0.3", 3, 4, "gemini-flash", Decimal("0.0017")),
    ],
)
def test_rounding_is_half_up_at_the_fifth_decimal(
    settings, credits_per_1k, input_tokens, output_tokens, alias, expected
):
    settings.CREDITS_PER_1K_TOKENS = Decimal(credits_per_1k)
    assert compute_credits_burned(input_tokens, output_tokens, alias) == expected


def test_rounding_edge_with_an_edited_multiplier():
    ModelPricing.objects.filter(model_alias="gpt-4o").update(multiplier=Decimal("0.0125"))
    reload_pricing_cache()
    # 4 tokens × 0.0125 / 1000 = 0.00005 → 0.0001; 3 tokens = 0.0000375 → 0.0000.
    assert compute_credits_burned(4, 0, "gpt-4o") == Decimal("0.0001")
    assert compute_credits_burned(3, 0, "gpt-4o") == Decimal("0.0000")
    # 12 tokens = 0.00015 → 0.0002.
    assert compute_credits_burned(6, 6, "gpt-4o") == Decimal("0.0002")


def test_credits_for_is_the_single_rounding_function():
    assert credits_for(1, 0, Decimal("0.05")) == Decimal("0.0001")  # 0.00005
    assert credits_for(1, 0, Decimal("0.0499")) == Decimal("0.0000")  # 0.0000499
    assert credits_for(10**9, 10**9, Decimal("100")) == Decimal("200000000.0000")


def test_credits_per_1k_tokens_setting_scales_the_price(settings):
    settings.CREDITS_PER_1K_TOKENS = Decimal("2.5")
    assert compute_credits_burned(1000, 1000, "gpt-4o") == Decimal("10.0000")
    assert compute_credits_burned(1000, 0) == Decimal("2.5000")


@pytest.mark.parametrize(
    ("input_tokens", "output_tokens"),
    [(-1, 0), (0, -1), (1.0, 0), (0, 2.5), (None, 0), (0, None), (True, 0), (0, False), ("10", 0)],
)
def test_bad_token_counts_are_value_errors(input_tokens, output_tokens):
    with pytest.raises(ValueError, match="non-negative integer"):
        compute_credits_burned(input_tokens, output_tokens, "gpt-4o")
    with pytest.raises(ValueError, match="non-negative integer"):
        compute_credits_burned(input_tokens, output_tokens)


def test_lookups_make_no_query_once_loaded(django_assert_num_queries):
    reload_pricing_cache()
    with django_assert_num_queries(0):
        for alias in [*SEEDED, "unknown-alias", None]:
            get_model_multiplier(alias)
            compute_credits_burned(100, 200, alias)


def test_first_lookup_loads_the_cache_then_it_stays_in_memory(
    django_assert_num_queries, django_assert_max_num_queries
):
    assert meter.cache_state()["loaded"] is False
    with django_assert_max_num_queries(3):
        assert get_model_multiplier("gpt-4o") == Decimal("2.0")
    assert meter.cache_state()["loaded"] is True
    with django_assert_num_queries(0):
        assert get_model_multiplier("gpt-4o") == Decimal("2.0")


def test_cache_does_not_see_a_db_change_until_reload():
    assert get_model_multiplier("gpt-4o") == Decimal("2.0")
    ModelPricing.objects.filter(model_alias="gpt-4o").update(multiplier=Decimal("4.5"))
    # Still the cached price: lookups never read the database.
    assert get_model_multiplier("gpt-4o") == Decimal("2.0")
    snapshot = reload_pricing_cache()
    assert snapshot.multipliers["gpt-4o"] == Decimal("4.5")
    assert get_model_multiplier("gpt-4o") == Decimal("4.5")
    assert compute_credits_burned(1000, 0, "gpt-4o") == Decimal("4.5000")


def test_reload_follows_a_newly_activated_version():
    PricingVersion.objects.filter(is_active=True).update(is_active=False)
    fresh = PricingVersion.objects.create(version="2026-03-01", is_active=True)
    ModelPricing.objects.create(pricing_version=fresh, model_alias="default", multiplier=Decimal("7"))
    snapshot = reload_pricing_cache()
    assert snapshot.version == "2026-03-01"
    # gpt-4o is not priced in the new version, so it falls back to its default.
    assert get_model_multiplier("gpt-4o") == Decimal("7")
    assert meter.cache_state()["pricing_version"] == "2026-03-01"
