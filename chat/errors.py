"""Errors the chat services raise; each carries the HTTP status and code the API answers with.

Bad input is a `django.core.exceptions.ValidationError` (the project exception
handler turns it into a 400); everything here is a refusal or a failure with
its own status.
"""

from __future__ import annotations

from pantheon.errors import AppError


class ChatError(AppError):
    """A chat service's refusal or failure (see `pantheon.errors.AppError`)."""


class NotFound(ChatError):
    status_code = 404
    code = "not_found"


class UploadTooLarge(ChatError):
    status_code = 413
    code = "file_too_large"


class IdempotencyMismatch(ChatError):
    status_code = 409
    code = "idempotency_key_reused"


class TurnFinished(ChatError):
    status_code = 409
    code = "turn_finished"


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
