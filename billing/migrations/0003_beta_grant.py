"""Give every existing user a wallet and the beta grant (BETA_GRANT_CREDITS; 0 disables)."""

from decimal import Decimal

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def grant_existing_users(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    CreditWallet = apps.get_model("billing", "CreditWallet")
    CreditTransaction = apps.get_model("billing", "CreditTransaction")
    amount = Decimal(settings.BETA_GRANT_CREDITS)
    for user_id in User.objects.order_by("pk").values_list("pk", flat=True).iterator():
        wallet, _ = CreditWallet.objects.get_or_create(user_id=user_id)
        if amount <= 0:
            continue
        key = f"beta-grant:{user_id}"
        if CreditTransaction.objects.filter(idempotency_key=key).exists():
            continue
        wallet = CreditWallet.objects.select_for_update().get(pk=wallet.pk)
        wallet.balance += amount
        wallet.lifetime_granted += amount
        wallet.updated_at = timezone.now()
        wallet.save(update_fields=["balance", "lifetime_granted", "updated_at"])
        CreditTransaction.objects.create(
            wallet=wallet,
            kind="grant",
            amount=amount,
            balance_after=wallet.balance,
            idempotency_key=key,
            description="Beta grant",
        )


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_seed_pricing"), ("accounts", "0001_initial")]
    operations = [migrations.RunPython(grant_existing_users, migrations.RunPython.noop)]
