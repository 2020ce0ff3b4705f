"""The one base class of application errors, and the JSON error shape.

A service raises an `AppError` subclass for a refusal or a failure with its own
status (402, 404, 409, 413, 502, …); `pantheon.api.exception_handler` turns any
of them into `{"error": code, "detail": …, **extra}` in one place. Bad input is
a `django.core.exceptions.ValidationError` (a 400 naming each field).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


class ErrorSerializer(serializers.Serializer):
    """The schema of every error body."""

    error = serializers.CharField()
    detail = serializers.JSONField()
