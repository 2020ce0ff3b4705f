from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from billing.services import LedgerError, parse_credits, wallet_get_or_create, wallet_grant


class Command(BaseCommand):
    help = "Grant credits to a user's wallet (one ledger row of kind 'grant')."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", required=True, help="username or numeric user id")
        parser.add_argument("--amount", required=True, help="credits, e.g. 100 or 12.5 (max 4 decimals)")
        parser.add_argument("--reason", default="Manual grant", help="description stored on the ledger row")
        parser.add_argument("--idempotency-key", default=None, help="makes a repeated command a no-op")

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        ident = options["user"].strip()
        lookup = {"pk": int(ident)} if ident.isdigit() else {"username": ident}
        try:
            user = User.objects.get(**lookup)
        except User.DoesNotExist as exc:
            raise CommandError(f"no user {ident!r}") from exc
        try:
            amount = parse_credits(options["amount"])
        except LedgerError as exc:
            raise CommandError(f"--amount: {exc}") from exc
        if amount <= 0:
            raise CommandError("--amount must be positive")
        wallet = wallet_get_or_create(user=user)
        try:
            row = wallet_grant(
                wallet_id=wallet.pk,
                amount=amount,
                description=options["reason"],
                idempotency_key=options["idempotency_key"],
            )
        except LedgerError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(f"granted {row.amount} to {user.username}; balance now {row.balance_after}")
        )
