"""API-wide plumbing: one JSON error shape for every failure."""

import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from pantheon.errors import AppError

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """Every API error becomes `{"error": code, "detail": ...}`; nothing leaks as HTML."""
    if isinstance(exc, AppError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, RequestDataTooBig):
        # Django raises it when DRF reads a body over DATA_UPLOAD_MAX_MEMORY_SIZE.
        return Response(
            {
                "error": "request_too_large",
                "detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            },
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        # Too many fields or files, a malformed multipart body: the client's fault.
        return Response(
            {"error": "bad_request", "detail": "The request body could not be accepted."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database went away (restart, failover, a dropped connection). Nothing was
        # committed; the pool's health check replaces the connection, so a retry is safe.
        logger.exception("database unavailable", exc_info=exc)
        return Response(
            {"error": "database_unavailable", "detail": "The database is unavailable; retry shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled API error", exc_info=exc)
        return Response(
            {"error": "server_error", "detail": "Internal server error."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, Http404):
        code = "not_found"
    elif isinstance(exc, PermissionDenied):
        code = "permission_denied"
    data = response.data
    if isinstance(data, dict) and set(data) == {"detail"}:
        body = {"error": code, "detail": data["detail"]}
    else:
        body = {"error": code, "detail": data}
    response.data = body
    return response


class APIMetadata(SimpleMetadata):
    """OPTIONS answers name, description and media types; request shapes live in /api/schema/.

    DRF's default also describes the POST/PUT serializer, which needs a
    `serializer_class` our views do not declare (they validate explicitly), so
    OPTIONS on them was a 500.
    """

    def determine_actions(self, request, view) -> dict:
        return {}


def document_api_conventions(result: dict, generator, request, public) -> dict:
    """drf-spectacular hook: write down two rules that hold for every operation.

    - An operation with a body may answer 413 (DATA_UPLOAD_MAX_MEMORY_SIZE, see `exception_handler`).
    - Any operation may answer 503 when the database is unreachable (retry after `Retry-After`).
    - An optional query parameter sent empty (`?format=`, as HTML forms do) means "not given".
    - Any operation may answer 400 for a NUL character in its path or query (pantheon/middleware.py).
    """
    bad_url = {
        "description": "A bad parameter or body (a NUL character in the URL is refused for every operation).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    too_large = {
        "description": "The request body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    unavailable = {
        "description": "The database is unavailable; nothing was written. Retry after `Retry-After`.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            if "requestBody" in operation:
                operation["responses"].setdefault("413", too_large)
            if "responses" in operation:
                operation["responses"].setdefault("400", bad_url)
                operation["responses"].setdefault("503", unavailable)
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and not parameter.get("required"):
                    parameter["allowEmptyValue"] = True
    return result


def json_error(status_code: int, error: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": error, "detail": detail}, status=status_code)
