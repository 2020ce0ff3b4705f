"""The backup procedure in docs/deploy.md, drilled: pg_dump the live database, pg_restore it into an
empty one, and the copy is a working Pantheon whose books balance."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from billing import services as billing_services
from billing.models import CreditTransaction, CreditWallet, PricingChange, UsageEvent
from chat import services as chat_services
from chat.models import Turn
from tests.factories import RoomFactory, UserFactory
from tests.support.gunicorn_server import PROJECT_ROOT, database_url


def run(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pg_dump_and_pg_restore_give_a_database_that_reconciles_and_keeps_its_guards(settings):
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GOOGLE_API_KEY",
        "DEEPSEEK_API_KEY",
        "TAVILY_API_KEY",
    ):
        setattr(settings, name, "")  # offline models
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    for number in range(3):
        chat_services.turn_post(
            user=user, room_id=room.pk, content=f"Backup me {number}", idempotency_key=f"k{number}"
        )
    billing_services.pricing_update_multiplier(
        model_alias="gpt-4o", multiplier="2.5", changed_by=None, source="api"
    )
    source = {
        "turns": Turn.objects.count(),
        "events": UsageEvent.objects.count(),
        "ledger": CreditTransaction.objects.count(),
        "balance": str(CreditWallet.objects.get(user=user).balance),
        "changes": PricingChange.objects.count(),
    }

    source_url = database_url()
    restored_name = f"{connection.settings_dict['NAME']}_restore"
    restored_url = database_url({**connection.settings_dict, "NAME": restored_name})
    admin_url = database_url({**connection.settings_dict, "NAME": "postgres"})
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{restored_name}"')
        admin.execute(f'CREATE DATABASE "{restored_name}"')
    try:
        with tempfile.TemporaryDirectory() as scratch:
            dump = Path(scratch) / "pantheon.dump"
            # The commands of docs/deploy.md ("Backups"): the cache table's rows are not worth keeping.
            dumped = run(
                "pg_dump",
                "--format=custom",
                "--exclude-table-data=pantheon_cache",
                f"--file={dump}",
                source_url,
            )
            assert dumped.returncode == 0, dumped.stderr
            restored = run(
                "pg_restore", "--no-owner", "--exit-on-error", f"--dbname={restored_url}", str(dump)
            )
            assert restored.returncode == 0, restored.stderr

        env = {**os.environ, "DATABASE_URL": restored_url}
        pending = run(sys.executable, "manage.py", "migrate", "--check", env=env)
        assert pending.returncode == 0, pending.stdout + pending.stderr
        reconciled = run(sys.executable, "manage.py", "reconcile_wallets", env=env)
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert "no drift" in reconciled.stdout

        with psycopg.connect(restored_url, autocommit=True) as copy:
            copied = {
                "turns": copy.execute("SELECT count(*) FROM chat_turn").fetchone()[0],
                "events": copy.execute("SELECT count(*) FROM chat_llmcallevent").fetchone()[0],
                "ledger": copy.execute("SELECT count(*) FROM billing_credittransaction").fetchone()[0],
                "balance": str(
                    copy.execute(
                        "SELECT balance FROM billing_creditwallet WHERE user_id = %s", [user.pk]
                    ).fetchone()[0]
                ),
                "changes": copy.execute("SELECT count(*) FROM billing_pricingchange").fetchone()[0],
            }
            assert copied == source
            # The database guards came back with the data: the ledger is still append-only...
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="append-only"):
                copy.execute("UPDATE billing_credittransaction SET amount = amount - 1")
            # ...and there is still at most one active pricing version.
            with pytest.raises(psycopg.errors.UniqueViolation):
                copy.execute(
                    "INSERT INTO billing_pricingversion (version, is_active, created_at, updated_at) "
                    "VALUES ('second', true, now(), now())"
                )
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{restored_name}" WITH (FORCE)')
