"""Errors the chat services raise; each carries the HTTP status and code the API answers with.

Bad input is a `django.core.exceptions.ValidationError` (the project exception
handler turns it into a 400); everything here is a refusal or a failure with
its own status.
"""

from __future__ import annotations

from decimal import Decimal

from pantheon.errors import AppError


class ChatError(AppError):
    """A chat service's refusal or failure (see `pantheon.errors.AppError`)."""


class NotFound(ChatError):
    status_code = 404
    code = "not_found"


class UploadTooLarge(ChatError):
    status_code = 413
    code = "file_too_large"


class InsufficientCredits(ChatError):
    status_code = 402
    code = "insufficient_credits"

    def __init__(self, *, balance: Decimal, estimated_credits: Decimal):
        super().__init__(
            f"The wallet balance {balance} cannot cover this turn's estimated {estimated_credits} credits.",
            balance=str(balance),
            estimated_credits=str(estimated_credits),
        )


class IdempotencyMismatch(ChatError):
    status_code = 409
    code = "idempotency_key_reused"


class IdempotencyInProgress(ChatError):
    status_code = 409
    code = "idempotency_in_progress"


class ProviderFailed(ChatError):
    """A model provider errored, timed out or answered without token usage."""

    status_code = 502
    code = "provider_error"


class ToolFailed(ChatError):
    """A tool crashed (a bug, not a tool error the model can read)."""

    status_code = 500
    code = "tool_failed"
