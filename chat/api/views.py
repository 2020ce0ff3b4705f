"""Thin views: validate the request shape, call one service or selector, render.

Every lookup is scoped to `request.user`, so another user's room, turn or
file is a 404, never a 403 that would confirm it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, cast

from django.conf import settings
from django.core import signing
from django.db.models import QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from accounts.http import SignedInRequest
from chat import payloads, selectors, services
from chat.api import serializers as s
from chat.api import sse

MULTIPART_OVERHEAD_BYTES = 64 * 1024
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Replays with the same key and body return the first response and charge nothing.",
)
ERRORS = {
    400: s.ErrorSerializer,
    401: s.ErrorSerializer,
    404: s.ErrorSerializer,
}


def page_of(item: type[serializers.Serializer], name: str) -> serializers.Serializer:
    """The schema of one cursor page: `{next, previous, results}`."""
    return inline_serializer(
        name=name,
        fields={
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item(many=True),
        },
    )


class NewestFirst(CursorPagination):
    """DRF's cursor pagination with signed cursors, bound to the user and the list.

    DRF's own cursor is base64 of `o=…&r=…&p=…`: anyone can write one, and a
    made-up position (`p=%00`, `p=abc`, a number past bigint) reached the
    database as a 500. The cursor is now signed with SECRET_KEY like the billing
    lists' (billing/api/pagination.py): one we did not issue, or issued to
    someone else or for another list, is a 400 before any query runs.
    """

    ordering = "-id"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    invalid_cursor = "Invalid cursor."

    request: Request

    def _salt(self) -> str:
        match = self.request.resolver_match
        return f"chat.api.cursor.{match.url_name if match else ''}"

    def encode_cursor(self, cursor: Cursor) -> str:
        payload = {
            "u": self.request.user.pk,
            "o": cursor.offset,
            "r": int(cursor.reverse),
            "p": cursor.position,
        }
        token = signing.dumps(payload, salt=self._salt())
        return replace_query_param(self.base_url or "", self.cursor_query_param, token)

    def decode_cursor(self, request: Request) -> Cursor | None:
        raw = request.query_params.get(self.cursor_query_param)
        if not raw:
            return None
        invalid = ValidationError({self.cursor_query_param: [self.invalid_cursor]})
        try:
            payload = signing.loads(raw, salt=self._salt())
        except signing.BadSignature as exc:
            raise invalid from exc
        if not isinstance(payload, dict) or payload.get("u") != request.user.pk:
            raise invalid
        offset, reverse, position = payload.get("o"), payload.get("r"), payload.get("p")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= self.offset_cutoff:
            raise invalid
        if reverse not in (0, 1) or isinstance(reverse, bool):
            raise invalid
        well_formed = isinstance(position, str) and position.isascii() and position.isdigit()
        if position is not None and not well_formed:
            raise invalid
        return Cursor(offset=offset, reverse=bool(reverse), position=position)


class ChatView(GenericAPIView):
    """Service errors (402, 404, 409, 413, 502, …) become JSON in `pantheon.api.exception_handler`."""

    pagination_class = NewestFirst

    @property
    def signed_in_user_id(self) -> int:
        return cast(SignedInRequest, self.request).user.pk

    def paginated(self, queryset: QuerySet[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
        page = self.paginate_queryset(queryset) or []
        return self.get_paginated_response([render(item) for item in page])


@extend_schema_view(
    get=extend_schema(
        operation_id="rooms_list",
        summary="Your rooms, newest first",
        responses={200: page_of(s.RoomSerializer, "RoomPage"), **ERRORS},
    ),
    post=extend_schema(
        operation_id="rooms_create",
        summary="Create a room",
        request=s.RoomCreateSerializer,
        responses={201: s.RoomSerializer, **ERRORS},
    ),
)
class RoomListView(ChatView):
    def get_queryset(self):
        return selectors.room_list(user_id=self.signed_in_user_id)

    def get(self, request: SignedInRequest) -> Response:
        return self.paginated(self.get_queryset(), payloads.room_payload)

    def post(self, request: SignedInRequest) -> Response:
        body = s.RoomCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        room = services.room_create(owner=request.user, **body.validated_data)
        return Response(payloads.room_payload(room), status=status.HTTP_201_CREATED)


class RoomDetailView(ChatView):
    @extend_schema(
        operation_id="rooms_retrieve",
        summary="One of your rooms",
        responses={200: s.RoomSerializer, **ERRORS},
    )
    def get(self, request: SignedInRequest, pk: int) -> Response:
        room = selectors.room_get(user_id=request.user.pk, room_id=pk)
        if room is None:
            raise NotFound("Room not found.")
        return Response(payloads.room_payload(room))


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isascii() or not key.isprintable():
        raise ValidationError({"Idempotency-Key": ["Use 1 to 255 printable ASCII characters."]})
    return key


class TurnFields(TypedDict):
    content: object
    model_alias: object
    agents: object
    file_ids: object


def _turn_fields(request: Request) -> TurnFields:
    """A turn body's fields as the client sent them; the service checks them, types included
    (TurnCreateSerializer only documents the body: binding a DRF serializer cost a turn more
    CPU than its database write)."""
    body = request.data
    if not isinstance(body, dict):
        raise ValidationError({"non_field_errors": ['Send a JSON object, e.g. {"content": "Hello"}.']})
    return TurnFields(
        content=body.get("content"),
        model_alias=body.get("model_alias"),
        agents=body.get("agents"),
        file_ids=body.get("files"),
    )


class TurnListView(ChatView):
    throttle_scope = "turn"  # POST only (pantheon.throttling counts unsafe methods)
    # `Accept: text/event-stream` streams the turn (POST); refusals and everything else are JSON.
    content_negotiation_class = sse.JSONOrEventStreamNegotiation

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return super().dispatch(request, *args, **kwargs)
        # A posted turn is turn work from its first byte: authentication and parsing too.
        with services.turn_work.inside():
            return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        operation_id="rooms_turns_list",
        summary="A room's turns, newest first",
        responses={200: page_of(s.TurnSerializer, "TurnPage"), **ERRORS},
    )
    def get(self, request: SignedInRequest, pk: int) -> Response:
        if selectors.room_get(user_id=request.user.pk, room_id=pk) is None:
            raise NotFound("Room not found.")
        turns = selectors.turn_list(user_id=request.user.pk, room_id=pk)
        return self.paginated(turns, payloads.stored_turn_payload)

    @extend_schema(
        operation_id="rooms_turns_create",
        summary="Post a turn: the agents answer and every metered call is charged",
        request=s.TurnCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: s.TurnResultSerializer,
            **ERRORS,
            402: OpenApiResponse(
                s.InsufficientCreditsSerializer, description="CREDIT_ENFORCEMENT=enforce only"
            ),
            409: OpenApiResponse(s.ErrorSerializer, description="Idempotency-Key reused or still running"),
            429: OpenApiResponse(s.ErrorSerializer, description="Too many turns; see Retry-After"),
            500: s.ErrorSerializer,
            502: OpenApiResponse(
                s.ErrorSerializer,
                description=(
                    "A model provider failed. If no model call had run, nothing was written or "
                    "charged; otherwise the body's `turn` is the recorded `failed` turn, charged "
                    "for the calls that ran."
                ),
            ),
        },
    )
    def post(self, request: SignedInRequest, pk: int) -> HttpResponseBase:
        key = _idempotency_key(request)
        fields = _turn_fields(request)
        post_turn = services.turn_stream if sse.wants_event_stream(request) else services.turn_post
        result = post_turn(user=request.user, room_id=pk, idempotency_key=key, **fields)
        if isinstance(result, services.TurnStream):
            return sse.event_stream_response(result)
        headers = {"Idempotent-Replayed": "true"} if result.replayed else {}
        return Response(result.payload, status=result.http_status, headers=headers)


class TurnQuoteView(ChatView):
    @extend_schema(
        operation_id="rooms_quote",
        summary="What a turn with this body would cost: low and high, per answering agent",
        description=(
            "No model is called. `credits_high` is a true upper bound and exactly the hold the turn "
            "would place in enforce mode; `credits_low` assumes no tool round and a typical answer "
            "(`assumptions`)."
        ),
        request=s.TurnCreateSerializer,
        responses={200: s.TurnQuoteSerializer, **ERRORS},
    )
    def post(self, request: SignedInRequest, pk: int) -> Response:
        quote = services.turn_quote_for(user=request.user, room_id=pk, **_turn_fields(request))
        return Response(quote.payload())


class TurnCancelView(ChatView):
    @extend_schema(
        operation_id="rooms_turns_cancel",
        summary="Stop a running turn: its model calls end, it commits as `cancelled`",
        request=s.TurnCancelSerializer,
        responses={
            202: s.TurnCancelResultSerializer,
            **ERRORS,
            409: OpenApiResponse(s.ErrorSerializer, description="The turn already finished"),
        },
    )
    def post(self, request: SignedInRequest, pk: int) -> Response:
        body = s.TurnCancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.turn_cancel(
            user=request.user, room_id=pk, idempotency_key=body.validated_data["idempotency_key"]
        )
        return Response({"status": "cancelling"}, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    get=extend_schema(
        operation_id="files_list",
        summary="Your uploads, newest first",
        responses={200: page_of(s.FileSerializer, "FilePage"), **ERRORS},
    ),
    post=extend_schema(
        operation_id="files_create",
        summary="Upload a file (multipart, field `file`)",
        request={"multipart/form-data": s.FileUploadSerializer},
        responses={
            201: s.FileSerializer,
            **ERRORS,
            413: OpenApiResponse(
                s.ErrorSerializer, description="Over UPLOAD_MAX_BYTES, or over the UPLOAD_QUOTA_BYTES quota"
            ),
            429: OpenApiResponse(s.ErrorSerializer, description="Too many uploads; see Retry-After"),
        },
    ),
)
class FileListView(ChatView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_scope = "upload"  # POST only (pantheon.throttling counts unsafe methods)

    def get_queryset(self):
        return selectors.file_list(user_id=self.signed_in_user_id)

    def get(self, request: SignedInRequest) -> Response:
        return self.paginated(self.get_queryset(), payloads.file_payload)

    def post(self, request: SignedInRequest) -> Response:
        # Refuse an oversized body before reading it.
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > settings.UPLOAD_MAX_BYTES + MULTIPART_OVERHEAD_BYTES:
            return Response(
                {"error": "file_too_large", "detail": f"The limit is {settings.UPLOAD_MAX_BYTES} bytes."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        body = s.FileUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        uploaded = services.file_upload(owner=request.user, upload=body.validated_data["file"])
        return Response(payloads.file_payload(uploaded), status=status.HTTP_201_CREATED)


class FileDetailView(ChatView):
    @extend_schema(
        operation_id="files_retrieve",
        summary="One of your uploads",
        responses={200: s.FileSerializer, **ERRORS},
    )
    def get(self, request: SignedInRequest, pk: int) -> Response:
        uploaded = selectors.file_get(user_id=request.user.pk, file_id=pk)
        if uploaded is None:
            raise NotFound("File not found.")
        return Response(payloads.file_payload(uploaded))
