"""Helpers shared by the chat tests."""

from __future__ import annotations

from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from billing.models import CreditTransaction, CreditWallet
from chat import services
from chat.models import LLMCallEvent, Message, ToolCallEvent, Turn, TurnIdempotencyKey, UploadedFile


def logged_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)  # a real session, as the browser uses
    return client


def upload(user, name: str = "notes.txt", data: bytes = b"hello file", content_type: str = "text/plain"):
    return services.file_upload(owner=user, upload=SimpleUploadedFile(name, data, content_type=content_type))


def db_state(user) -> dict:
    """Everything a turn may write, and the user's balance; compare before/after a failure."""
    return {
        "turns": Turn.objects.count(),
        "messages": Message.objects.count(),
        "llm_calls": LLMCallEvent.objects.count(),
        "tool_calls": ToolCallEvent.objects.count(),
        "ledger": CreditTransaction.objects.count(),
        "keys": TurnIdempotencyKey.objects.count(),
        "files": UploadedFile.objects.count(),
        "balance": CreditWallet.objects.get(user=user).balance,
    }


def balance_of(user) -> Decimal:
    return CreditWallet.objects.get(user=user).balance
