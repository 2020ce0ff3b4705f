from django.conf import settings
from django.core.management.base import BaseCommand

from chat.services import idempotency_keys_purge


class Command(BaseCommand):
    help = "Delete turn Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS (never less than 24 h)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--older-than-hours", type=int, default=settings.IDEMPOTENCY_KEY_TTL_HOURS)

    def handle(self, *args, **options) -> None:
        deleted = idempotency_keys_purge(older_than_hours=options["older_than_hours"])
        self.stdout.write(self.style.SUCCESS(f"{deleted} idempotency key(s) deleted"))
