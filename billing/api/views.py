"""Wallet, usage, ledger and admin pricing endpoints. Thin: parse, call one selector or service, shape.

Every user endpoint reads only `request.user`'s rows: there is no id in any
URL to guess, and cursors are signed and bound to the user they were issued to.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypedDict, cast

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import SignedInRequest
from accounts.models import User
from billing import selectors, services
from billing.api import pagination
from billing.api.serializers import (
    MULTIPLIER_SCHEMA,
    USAGE_CSV_COLUMNS,
    HoldSerializer,
    PricingListSerializer,
    PricingModelSerializer,
    PricingPatchSerializer,
    TransactionPageSerializer,
    TransactionRowSerializer,
    UsagePageSerializer,
    UsageRowSerializer,
    UsageSummarySerializer,
    WalletSerializer,
)
from billing.models import ModelPricing, PricingChange
from pantheon.errors import ErrorSerializer
from pantheon.parsers import DecimalJSONParser

# --- query parameters --------------------------------------------------------------

SINCE_PARAM = OpenApiParameter(
    "since",
    OpenApiTypes.STR,
    description=(
        "Inclusive lower bound on `created_at`: an ISO 8601 date (`2026-03-01`, the start of that "
        "UTC day) or datetime (`2026-03-01T12:00:00Z`; no offset means UTC)."
    ),
)
UNTIL_PARAM = OpenApiParameter(
    "until",
    OpenApiTypes.STR,
    description=(
        "Upper bound on `created_at`: an ISO 8601 datetime is exclusive; a bare date includes that "
        "whole UTC day (`since=2026-03-01&until=2026-03-01` is that one day)."
    ),
)
MODEL_ALIAS_PARAM = OpenApiParameter("model_alias", OpenApiTypes.STR, description="Only this model alias.")
CURSOR_PARAM = OpenApiParameter(
    pagination.CURSOR_PARAM,
    OpenApiTypes.STR,
    description="Opaque cursor from a `next` or `previous` link; valid only for the user it was issued to.",
)
PAGE_SIZE_PARAM = OpenApiParameter(
    pagination.PAGE_SIZE_PARAM,
    OpenApiTypes.INT,
    description=f"Rows per page, 1–{pagination.MAX_PAGE_SIZE} (default {pagination.DEFAULT_PAGE_SIZE}).",
)
FORMAT_PARAM = OpenApiParameter(
    "format",
    OpenApiTypes.STR,
    enum=["json", "csv"],
    description=(
        "`csv` streams every matching row (no pagination) as `text/csv` with the JSON row's fields as "
        "columns, newest first; `cursor` and `page_size` are ignored."
    ),
)
GROUP_BY_PARAM = OpenApiParameter(
    "group_by",
    OpenApiTypes.STR,
    enum=["day", "model", "day,model"],
    description="Group by UTC day, by model alias, or both (default `day`).",
)

ERRORS_401 = {401: OpenApiResponse(ErrorSerializer, description="Not authenticated.")}
ERROR_400 = {400: OpenApiResponse(ErrorSerializer, description="A bad filter, cursor or page size.")}


def _instant(request: Request, name: str, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or datetime query parameter; naive values are UTC."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    invalid = ValidationError(
        {name: ["Use an ISO 8601 date (2026-03-01) or datetime (2026-03-01T12:00:00Z)."]}
    )
    try:
        day = parse_date(raw)
        moment: datetime | None
        if day is not None:
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
        else:
            moment = parse_datetime(raw)
        if moment is None:
            raise invalid
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        # PostgreSQL's range; also catches years the database would refuse.
        moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise invalid from exc
    return moment


class UsageFilters(TypedDict):
    model_alias: str | None
    since: datetime | None
    until: datetime | None


def _usage_filters(request: Request) -> UsageFilters:
    since = _instant(request, "since")
    until = _instant(request, "until", end_of_day=True)
    if since is not None and until is not None and since >= until:
        raise ValidationError({"until": ["`until` must be after `since`."]})
    model_alias = request.query_params.get("model_alias") or None
    if model_alias is not None and len(model_alias) > 64:
        raise ValidationError({"model_alias": ["Too long (64 characters at most)."]})
    return {"model_alias": model_alias, "since": since, "until": until}


# --- user endpoints ----------------------------------------------------------------


class WalletView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="users_me_wallet",
        tags=["billing"],
        summary="Your wallet",
        description="Balance and lifetime totals; the wallet (with its beta grant) is created on first use.",
        responses={200: WalletSerializer, **ERRORS_401},
    )
    def get(self, request: SignedInRequest) -> Response:
        wallet = services.wallet_get_or_create(user=request.user)
        return Response(_WALLET_FIELDS.to_representation(wallet))


# One serializer per process writes every wallet: a ModelSerializer builds its fields from the
# model on each instantiation: about 0.6 ms of the 4.9 ms of CPU of `GET /users/me/wallet` in-process;
# `to_representation` reads the bound fields and keeps no state, so threads can share it.
_WALLET_FIELDS = WalletSerializer()


class HoldListView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="users_me_holds",
        tags=["billing"],
        summary="Your active credit holds",
        description=(
            "In enforce mode each running turn reserves the most it can cost; the hold is settled "
            "(debited at the real cost) or released when the turn ends. Holds are not ledger rows."
        ),
        responses={200: HoldSerializer(many=True), **ERRORS_401},
    )
    def get(self, request: SignedInRequest) -> Response:
        return Response(HoldSerializer(selectors.holds_active(user=request.user), many=True).data)


class JSONOnlyNegotiationMixin:
    """`?format=csv` is ours to handle: DRF would read `format` as a renderer name and 404.

    Responses that are not the CSV stream (pages, and errors even for a CSV
    request) are always JSON.
    """

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        renderer = cast(APIView, self).get_renderers()[0]
        return renderer, renderer.media_type


class UsageListView(JSONOnlyNegotiationMixin, APIView):
    permission_classes = [IsAuthenticated]
    cursors = pagination.CursorCodec("usage", with_timestamp=True)

    @extend_schema(
        operation_id="users_me_usage_list",
        tags=["billing"],
        summary="Your usage events",
        description=(
            "Model calls, newest first, keyset-paginated (`next` = older rows, `previous` = newer). "
            "With `?format=csv` the same rows stream as CSV."
        ),
        parameters=[MODEL_ALIAS_PARAM, SINCE_PARAM, UNTIL_PARAM, CURSOR_PARAM, PAGE_SIZE_PARAM, FORMAT_PARAM],
        responses={
            (200, "application/json"): UsagePageSerializer,
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Header row `" + ",".join(USAGE_CSV_COLUMNS) + "`, then one line per usage row.",
            ),
            **ERROR_400,
            **ERRORS_401,
        },
    )
    def get(self, request: SignedInRequest):
        filters = _usage_filters(request)
        output = request.query_params.get("format") or "json"
        if output not in ("json", "csv"):
            raise ValidationError({"format": ["Must be `json` or `csv`."]})
        limit = pagination.page_size(request)  # checked for CSV too: a bad value is a 400 everywhere
        if output == "csv":
            return _usage_csv_response(request.user, filters)
        listed = self.cursors.page(
            request, limit=limit, fetch=partial(selectors.usage_list, user=request.user, **filters)
        )
        return Response(listed.body(UsageRowSerializer))


class _Echo:
    def write(self, value: str) -> str:
        return value


def _usage_csv_lines(user: User, filters: UsageFilters) -> Iterator[str]:
    as_iso = drf_serializers.DateTimeField().to_representation
    writer = csv.writer(_Echo())
    yield writer.writerow(USAGE_CSV_COLUMNS)
    for row in selectors.usage_iter(user=user, **filters):
        # Same values, same order and same text as the JSON row (USAGE_CSV_COLUMNS).
        yield writer.writerow(
            [
                row.pk,
                as_iso(row.created_at),
                row.room_id,
                row.turn_id,
                row.turn_status,
                row.turn_routed_by,
                row.model_alias,
                row.provider_model,
                row.purpose,
                row.input_tokens,
                row.output_tokens,
                row.multiplier,
                row.pricing_version,
                row.credits_burned,
                "true" if row.metered else "false",
                row.usage_source,
                row.cached_input_tokens,
                row.reasoning_tokens,
                row.latency_ms,
            ]
        )


def _usage_csv_response(user: User, filters: UsageFilters) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_usage_csv_lines(user, filters), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="usage.csv"'
    return response


class UsageSummaryView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="users_me_usage_summary",
        tags=["billing"],
        summary="Your usage, grouped",
        description=(
            "Calls, input/output tokens and credits burned per UTC day (oldest first) and/or per model, "
            "over the same filters as the usage list; `totals` is the sum of `results`."
        ),
        parameters=[GROUP_BY_PARAM, MODEL_ALIAS_PARAM, SINCE_PARAM, UNTIL_PARAM],
        responses={200: UsageSummarySerializer, **ERROR_400, **ERRORS_401},
    )
    def get(self, request: SignedInRequest) -> Response:
        filters = _usage_filters(request)
        raw_group_by = request.query_params.get("group_by") or "day"
        group_by = raw_group_by.split(",")
        if len(set(group_by)) != len(group_by) or not set(group_by) <= set(selectors.USAGE_GROUPS):
            raise ValidationError({"group_by": ["Must be `day`, `model` or `day,model`."]})
        rows = selectors.usage_summary(user=request.user, group_by=group_by, **filters)
        totals = {
            "calls": sum(row["calls"] for row in rows),
            "input_tokens": sum(row["input_tokens"] for row in rows),
            "output_tokens": sum(row["output_tokens"] for row in rows),
            "credits_burned": sum((row["credits_burned"] for row in rows), Decimal("0.0000")),
        }
        body = {
            "group_by": raw_group_by,
            "since": filters["since"],
            "until": filters["until"],
            "results": rows,
            "totals": totals,
        }
        return Response(UsageSummarySerializer(body).data)


class TransactionListView(APIView):
    permission_classes = [IsAuthenticated]
    cursors = pagination.CursorCodec("transactions", with_timestamp=False)

    @extend_schema(
        operation_id="users_me_transactions_list",
        tags=["billing"],
        summary="Your credit ledger",
        description="Every balance change, newest first, keyset-paginated (`next` = older rows).",
        parameters=[CURSOR_PARAM, PAGE_SIZE_PARAM],
        responses={200: TransactionPageSerializer, **ERROR_400, **ERRORS_401},
    )
    def get(self, request: SignedInRequest) -> Response:
        listed = self.cursors.page(
            request,
            limit=pagination.page_size(request),
            fetch=partial(selectors.transaction_list, user=request.user),
        )
        return Response(listed.body(TransactionRowSerializer))


# --- admin endpoints ---------------------------------------------------------------


class IsPricingAdmin(BasePermission):
    """A user listed in ADMIN_USER_IDS, or an active staff user with billing.change_modelpricing."""

    message = "Only pricing administrators can do this."

    def has_permission(self, request: Request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if user.pk in settings.ADMIN_USER_IDS:
            return True
        return user.is_staff and user.has_perm("billing.change_modelpricing")


PRICING_PATCH_SCHEMA = {
    "type": "object",
    "properties": {"multiplier": MULTIPLIER_SCHEMA},
    "required": ["multiplier"],
    "additionalProperties": False,
}

ADMIN_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated."),
    403: OpenApiResponse(ErrorSerializer, description="Not a pricing administrator."),
}


class AdminPricingListView(APIView):
    permission_classes = [IsPricingAdmin]

    @extend_schema(
        operation_id="admin_pricing_list",
        tags=["admin"],
        summary="Active pricing",
        description="The active pricing version and every alias with its multiplier (from the database).",
        responses={200: PricingListSerializer, **ADMIN_ERRORS},
    )
    def get(self, request: SignedInRequest) -> Response:
        version, rows = selectors.pricing_list()
        return Response(
            {
                "pricing_version": version.version if version is not None else None,
                "models": PricingModelSerializer(rows, many=True).data,
            }
        )


class AdminPricingDetailView(APIView):
    permission_classes = [IsPricingAdmin]
    parser_classes = [DecimalJSONParser]

    @extend_schema(
        operation_id="admin_pricing_update",
        tags=["admin"],
        summary="Change one multiplier",
        description=(
            'Body `{"multiplier": "1.25"}` and nothing else: 0 < multiplier ≤ 100, at most 4 decimal '
            "places, as a decimal string or a JSON number. The edit is audited (source `api`) and every "
            "worker charges the new price within a second. Sending the current value changes nothing "
            "and writes no audit row."
        ),
        # Written out rather than derived: spectacular would mark a PATCH body all-optional.
        request={"application/json": PRICING_PATCH_SCHEMA},
        responses={
            200: PricingModelSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Any other field, or a bad multiplier."),
            **ADMIN_ERRORS,
            404: OpenApiResponse(ErrorSerializer, description="No such alias in the active version."),
        },
        examples=[OpenApiExample("new multiplier", value={"multiplier": "1.25"}, request_only=True)],
    )
    def patch(self, request: SignedInRequest, model_alias: str) -> Response:
        if selectors.pricing_get(model_alias=model_alias) is None:
            raise NotFound(f"No model alias {model_alias!r} in the active pricing version.")
        serializer = PricingPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            update = services.pricing_update_multiplier(
                model_alias=model_alias,
                multiplier=serializer.validated_data["multiplier"],
                changed_by=request.user,
                source=PricingChange.Source.API,
            )
        except ModelPricing.DoesNotExist as exc:
            raise NotFound(f"No model alias {model_alias!r} in the active pricing version.") from exc
        except services.PricingError as exc:
            raise ValidationError({"multiplier": [str(exc)]}) from exc
        return Response(PricingModelSerializer(update.model_pricing).data)
