"""Signed keyset cursors for the newest-first lists.

A cursor is a position (the `created_at` and `id` of the last row seen, or the
`id` alone for the ledger), a direction, and the id of the user it was issued
to, signed with SECRET_KEY by `django.core.signing`. A cursor that was tampered
with, made up, issued for another list or issued to someone else is a 400: it
can never be used to read another user's rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core import signing
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.utils.urls import replace_query_param

from accounts.http import SignedInRequest
from billing.selectors import KeysetPage

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
CURSOR_PARAM = "cursor"
PAGE_SIZE_PARAM = "page_size"
NEXT = "n"  # older rows
PREVIOUS = "p"  # newer rows


@dataclass(frozen=True)
class Cursor:
    direction: str
    position: tuple


@dataclass(frozen=True)
class Listed:
    """One page of a list as the API answers it: its rows and the links to the pages beside it."""

    rows: list
    next: str | None
    previous: str | None

    def body(self, serializer: Callable[..., Any]) -> dict:
        results = serializer(self.rows, many=True).data
        return {"next": self.next, "previous": self.previous, "results": results}


def page_size(request: Request) -> int:
    raw = request.query_params.get(PAGE_SIZE_PARAM)
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError({PAGE_SIZE_PARAM: [f"Must be an integer from 1 to {MAX_PAGE_SIZE}."]})
    return size


class CursorCodec:
    """Encodes and checks the cursors of one list (`kind` is part of the signature)."""

    def __init__(self, kind: str, *, with_timestamp: bool) -> None:
        self.salt = f"billing.api.cursor.{kind}"
        self.with_timestamp = with_timestamp

    def encode(self, *, user_id: int, direction: str, row) -> str:
        payload = {"u": user_id, "d": direction, "i": row.pk}
        if self.with_timestamp:
            payload["t"] = row.created_at.isoformat()
        return signing.dumps(payload, salt=self.salt)

    def decode(self, request: Request) -> Cursor | None:
        raw = request.query_params.get(CURSOR_PARAM)
        if raw is None or raw == "":
            return None
        invalid = ValidationError({CURSOR_PARAM: ["Invalid cursor."]})
        try:
            payload = signing.loads(raw, salt=self.salt)
        except signing.BadSignature as exc:
            raise invalid from exc
        if not isinstance(payload, dict) or payload.get("u") != request.user.pk:
            raise invalid
        direction, pk = payload.get("d"), payload.get("i")
        if direction not in (NEXT, PREVIOUS) or isinstance(pk, bool) or not isinstance(pk, int):
            raise invalid
        if not self.with_timestamp:
            return Cursor(direction=direction, position=(pk,))
        try:
            created_at = datetime.fromisoformat(payload["t"])
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid from exc
        return Cursor(direction=direction, position=(created_at, pk))

    def page(self, request: SignedInRequest, *, limit: int, fetch: Callable[..., KeysetPage]) -> Listed:
        """The page at the request's cursor: `fetch(limit=, newer_than=, older_than=)` reads it.

        A selector takes the position as the cursor holds it: `(created_at, id)`, or the
        id alone for a list whose cursors carry no timestamp.
        """
        cursor = self.decode(request)
        newer = cursor is not None and cursor.direction == PREVIOUS
        at = None
        if cursor is not None:
            at = cursor.position if self.with_timestamp else cursor.position[0]
        found = fetch(limit=limit, newer_than=at if newer else None, older_than=None if newer else at)
        next_url, previous_url = self.links(request, rows=found.rows, has_more=found.has_more, cursor=cursor)
        return Listed(rows=found.rows, next=next_url, previous=previous_url)

    def links(
        self, request: SignedInRequest, *, rows: list, has_more: bool, cursor: Cursor | None
    ) -> tuple[str | None, str | None]:
        """(next, previous) absolute URLs for a page of newest-first `rows`."""
        if not rows:
            return None, None
        url = request.build_absolute_uri()
        going_back = cursor is not None and cursor.direction == PREVIOUS
        # Going forward, older rows exist if we fetched one more; going back, the
        # row we came from is older. Newer rows mirror that.
        has_older = True if going_back else has_more
        has_newer = has_more if going_back else cursor is not None
        next_url = previous_url = None
        if has_older:
            token = self.encode(user_id=request.user.pk, direction=NEXT, row=rows[-1])
            next_url = replace_query_param(url, CURSOR_PARAM, token)
        if has_newer:
            token = self.encode(user_id=request.user.pk, direction=PREVIOUS, row=rows[0])
            previous_url = replace_query_param(url, CURSOR_PARAM, token)
        return next_url, previous_url
