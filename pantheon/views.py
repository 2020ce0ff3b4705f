"""Project-level views: health check and friendly error pages."""

import hmac
from functools import cache

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.http import HttpRequest, JsonResponse

from billing import meter, propagation


@cache
def _migrations_on_disk() -> frozenset[tuple[str, str]]:
    """Every migration this code ships; read once per process (the files cannot change under it)."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)


def pending_migrations() -> list[str]:
    """Migrations on disk that the database has not applied: one query per call."""
    applied = set(MigrationRecorder(connection).applied_migrations())
    return [f"{app}.{name}" for app, name in sorted(_migrations_on_disk() - applied)]


def _health() -> tuple[int, dict]:
    """(status, detail): 200 when the database answers and no migration is pending, else 503."""
    body: dict = {"database": "ok", "migrations": "ok"}
    status = 200
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        pending = pending_migrations()
        if pending:
            body["migrations"] = "pending"
            body["pending"] = pending
            status = 503
    except DatabaseError as exc:
        body = {"database": "unavailable", "detail": str(exc).splitlines()[0]}
        status = 503
    body["pricing_cache"] = meter.cache_state()
    body["pricing_listener"] = propagation.listener_state()
    if status == 200:
        # Lets an operator spot a stale worker: does this cache hold the database's newest edit?
        try:
            with connection.cursor() as cursor:
                version_id, change_seq = propagation.database_pricing_state(cursor)
            body["pricing_cache"]["database_change_seq"] = change_seq
            body["pricing_cache"]["current"] = meter.pricing_is_current(
                version_id=version_id, change_seq=change_seq
            )
        except DatabaseError:
            body["pricing_cache"]["current"] = None
    body["status"] = "ok" if status == 200 else "unavailable"
    return status, body


def healthz(request: HttpRequest) -> JsonResponse:
    """Public: 200 `{"status": "ok"}` or 503 `{"status": "unavailable"}`, nothing else.

    A load balancer needs only the status; process ids, multipliers and the
    driver's error text (host, port, role) are for operators: `/healthz/detail`.
    """
    status, _detail = _health()
    return JsonResponse({"status": "ok" if status == 200 else "unavailable"}, status=status)


def _may_see_detail(request: HttpRequest) -> bool:
    """A staff session, or `Authorization: Bearer <HEALTHZ_TOKEN>` when that setting is set."""
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    expected = settings.HEALTHZ_TOKEN
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)


def healthz_detail(request: HttpRequest) -> JsonResponse:
    """The same check with its detail: pending migrations, this process's pricing cache and listener."""
    if not _may_see_detail(request):
        return JsonResponse(
            {"error": "not_authenticated", "detail": "Staff or the HEALTHZ_TOKEN bearer only."},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="healthz"'},
        )
    status, detail = _health()
    return JsonResponse(detail, status=status)


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def not_found(request: HttpRequest, exception: Exception | None = None):
    from django.shortcuts import render

    if wants_json(request):
        return JsonResponse({"error": "not_found", "detail": "Not found."}, status=404)
    return render(request, "errors/404.html", status=404)


def server_error(request: HttpRequest):
    from django.shortcuts import render

    if wants_json(request):
        return JsonResponse({"error": "server_error", "detail": "Internal server error."}, status=500)
    return render(request, "errors/500.html", status=500)
