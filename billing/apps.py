from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from billing import signals

        signals.pricing_changed.connect(signals.reload_and_notify, dispatch_uid="billing.reload_and_notify")
