"""GET /healthz (public, status only) and GET /healthz/detail (staff or the HEALTHZ_TOKEN bearer)."""

import pytest
from django.db import DatabaseError

from billing import meter
from pantheon import views
from tests.factories import UserFactory
from tests.support.migrations import migrate_to

TOKEN = "a-healthz-token-for-tests-0123456789"
DRIVER_TEXT = (
    'connection to server at "10.1.2.3", port 6543 failed: FATAL: role "pantheon_prod" does not exist'
)


@pytest.fixture
def detail(client, settings):
    """GET /healthz/detail with the bearer token."""
    settings.HEALTHZ_TOKEN = TOKEN
    return lambda: client.get("/healthz/detail", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


@pytest.mark.django_db
def test_public_healthz_says_status_only(client):
    meter.reload_pricing_cache()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_detail_is_for_staff_or_the_token_only(client, settings):
    settings.HEALTHZ_TOKEN = TOKEN
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}):
        refused = client.get("/healthz/detail", **headers)
        assert refused.status_code == 401
        assert "pricing_cache" not in refused.json()
    client.force_login(UserFactory())  # a signed-in user who is not staff
    assert client.get("/healthz/detail").status_code == 401

    assert client.get("/healthz/detail", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    client.force_login(UserFactory(is_staff=True))
    staff = client.get("/healthz/detail")
    assert staff.status_code == 200
    assert staff.json()["database"] == "ok"


@pytest.mark.django_db
def test_without_a_token_setting_no_bearer_opens_the_detail(client, settings):
    settings.HEALTHZ_TOKEN = ""
    assert client.get("/healthz/detail", HTTP_AUTHORIZATION="Bearer ").status_code == 401


@pytest.mark.django_db
def test_detail_reports_the_pricing_cache_this_process_holds(detail):
    assert detail().json()["pricing_cache"]["loaded"] is False
    meter.reload_pricing_cache()
    body = detail().json()
    assert body["status"] == "ok"
    assert body["migrations"] == "ok"
    assert body["pricing_cache"]["loaded"] is True
    assert body["pricing_cache"]["pricing_version"] == "2026-02-20"
    assert body["pricing_cache"]["multipliers"]["gpt-4o"] == "2.0000"


@pytest.mark.django_db
def test_a_database_error_is_a_bare_503_in_public_and_explained_in_the_detail(client, detail, monkeypatch):
    def unreachable():
        raise DatabaseError(DRIVER_TEXT)

    monkeypatch.setattr(views, "pending_migrations", unreachable)
    public = client.get("/healthz")
    assert public.status_code == 503
    assert public.json() == {"status": "unavailable"}
    assert b"10.1.2.3" not in public.content and b"pantheon_prod" not in public.content

    explained = detail()
    assert explained.status_code == 503
    assert explained.json()["database"] == "unavailable"
    assert "pantheon_prod" in explained.json()["detail"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pending_migration_is_a_503(client, detail):
    # Unapply billing's newest migration for real, then put it back.
    migrate_to([("billing", "0003_beta_grant")])
    try:
        public = client.get("/healthz")
        response = detail()
    finally:
        migrate_to()
    assert public.status_code == 503
    assert public.json() == {"status": "unavailable"}
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["migrations"] == "pending"
    assert "billing.0004_ledger_append_only" in body["pending"]
    # Restored: healthy again.
    assert client.get("/healthz").status_code == 200
