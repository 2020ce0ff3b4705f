"""Request checks that hold for every URL, before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from pantheon.views import wants_json

NUL_DETAIL = "Null characters (%00) are not allowed in the URL path or its query parameters."


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path_info:
        return True
    return any(
        "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()
    )


class RejectNulInURLMiddleware:
    """A NUL in the path or in any query parameter is a 400, for every view.

    PostgreSQL text cannot hold a NUL: a filter (`?model_alias=a%00b`) or a path
    parameter (`/api/v1/admin/pricing/a%00b`) holding one made the query fail
    with a DataError, a 500. No URL of ours has a use for it, so it is refused
    here once instead of in every view. (The body is left alone: JSON bodies are
    checked by `pantheon.parsers`, form fields by Django's own validators.)
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            if wants_json(request):
                return JsonResponse({"error": "bad_request", "detail": NUL_DETAIL}, status=400)
            return render(request, "errors/400.html", {"detail": NUL_DETAIL}, status=400)
        return self.get_response(request)
