from decimal import Decimal

from django.db import migrations

SEED_VERSION = "2026-02-20"
SEED_MULTIPLIERS = {
    "deepseek": "0.5",
    "gemini-flash": "0.8",
    "gemini-pro": "1.2",
    "gpt-4o-mini": "1.0",
    "gpt-4o": "2.0",
    "claude-haiku": "0.8",
    "claude-sonnet": "1.5",
    "default": "1.0",
}


def seed(apps, schema_editor):
    PricingVersion = apps.get_model("billing", "PricingVersion")
    ModelPricing = apps.get_model("billing", "ModelPricing")
    version, _ = PricingVersion.objects.get_or_create(version=SEED_VERSION, defaults={"is_active": True})
    if not PricingVersion.objects.filter(is_active=True).exists():
        version.is_active = True
        version.save(update_fields=["is_active"])
    for alias, multiplier in SEED_MULTIPLIERS.items():
        ModelPricing.objects.get_or_create(
            pricing_version=version, model_alias=alias, defaults={"multiplier": Decimal(multiplier)}
        )


def unseed(apps, schema_editor):
    PricingVersion = apps.get_model("billing", "PricingVersion")
    ModelPricing = apps.get_model("billing", "ModelPricing")
    ModelPricing.objects.filter(pricing_version__version=SEED_VERSION).delete()
    PricingVersion.objects.filter(version=SEED_VERSION).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
