"""GET /healthz: 200 when the database answers and every migration is applied, else 503."""

import pytest

from billing import meter
from tests.support.migrations import migrate_to


@pytest.mark.django_db
def test_healthy(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["migrations"] == "ok"
    assert "pending" not in body


@pytest.mark.django_db
def test_reports_the_pricing_cache_this_process_holds(client):
    assert client.get("/healthz").json()["pricing_cache"]["loaded"] is False
    meter.reload_pricing_cache()
    cache = client.get("/healthz").json()["pricing_cache"]
    assert cache["loaded"] is True
    assert cache["pricing_version"] == "2026-02-20"
    assert cache["multipliers"]["gpt-4o"] == "2.0000"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_pending_migration_is_a_503(client):
    # Unapply billing's newest migration for real, then put it back.
    migrate_to([("billing", "0003_beta_grant")])
    try:
        response = client.get("/healthz")
    finally:
        migrate_to()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["migrations"] == "pending"
    assert "billing.0004_ledger_append_only" in body["pending"]
    # Restored: healthy again.
    assert client.get("/healthz").status_code == 200
