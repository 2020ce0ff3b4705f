from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_save

        from billing import signals

        post_save.connect(
            signals.create_wallet_for_new_user,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="billing.create_wallet_for_new_user",
        )
        signals.pricing_changed.connect(signals.reload_and_notify, dispatch_uid="billing.reload_and_notify")
