"""Release every credit hold whose lease ran out (its worker died mid-turn). Run it from cron."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from billing.services import holds_release_expired


class Command(BaseCommand):
    help = "Release expired credit holds (enforce mode); prints how many."

    def handle(self, *args: Any, **options: Any) -> None:
        released = holds_release_expired()
        self.stdout.write(f"{released} expired hold(s) released")
