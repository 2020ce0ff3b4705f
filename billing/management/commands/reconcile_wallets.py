import sys

from django.core.management.base import BaseCommand

from billing.selectors import ledger_drifts


class Command(BaseCommand):
    help = "Check every wallet against its ledger; exit 1 when any drift is found."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--progress-every", type=int, default=10000, help="print progress every N wallets"
        )

    def handle(self, *args, **options) -> None:
        every = max(1, options["progress_every"])
        checked = drifted = 0
        for _wallet, drifts in ledger_drifts():
            checked += 1
            if drifts:
                drifted += 1
                for drift in drifts:
                    self.stderr.write(f"DRIFT {drift}")
            if checked % every == 0:
                self.stdout.write(f"... {checked} wallets checked, {drifted} drifted")
        if drifted:
            self.stderr.write(self.style.ERROR(f"{drifted} of {checked} wallets drifted"))
            sys.exit(1)
        self.stdout.write(self.style.SUCCESS(f"{checked} wallets reconciled, no drift"))
