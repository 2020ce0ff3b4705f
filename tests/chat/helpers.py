"""Helpers shared by the chat tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from billing.models import CreditTransaction, CreditWallet, UsageEvent
from chat import services
from chat.models import Message, ToolCallEvent, Turn, TurnIdempotencyKey, UploadedFile


def upload(user, name: str = "notes.txt", data: bytes = b"hello file", content_type: str = "text/plain"):
    return services.file_upload(owner=user, upload=SimpleUploadedFile(name, data, content_type=content_type))


def db_state(user) -> dict:
    """Everything a turn may write, and the user's balance; compare before/after a failure."""
    return {
        "turns": Turn.objects.count(),
        "messages": Message.objects.count(),
        "llm_calls": UsageEvent.objects.count(),
        "tool_calls": ToolCallEvent.objects.count(),
        "ledger": CreditTransaction.objects.count(),
        "keys": TurnIdempotencyKey.objects.count(),
        "files": UploadedFile.objects.count(),
        "balance": CreditWallet.objects.get(user=user).balance,
    }


def balance_of(user) -> Decimal:
    return CreditWallet.objects.get(user=user).balance


@contextmanager
def failing_insert(table: str, message: str, *, at_commit: bool = False) -> Iterator[None]:
    """Make every INSERT into `table` fail inside PostgreSQL: at once, or only when the
    transaction commits (a deferred constraint trigger), after every statement has run."""
    timing = "CONSTRAINT TRIGGER test_fault AFTER INSERT" if at_commit else "TRIGGER test_fault BEFORE INSERT"
    deferral = "DEFERRABLE INITIALLY DEFERRED " if at_commit else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE OR REPLACE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"
        )
        cursor.execute(f"CREATE {timing} ON {table} {deferral}FOR EACH ROW EXECUTE FUNCTION test_fault()")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS test_fault ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS test_fault()")
