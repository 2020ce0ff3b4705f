"""The Django admin console: multipliers editable (through the service), everything else read-only."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from billing import meter, services
from billing.models import CreditTransaction, CreditWallet, ModelPricing, PricingChange, PricingVersion
from tests.factories import UserFactory
from tests.support.gunicorn_server import gunicorn_server
from tests.support.pricing import stored_multiplier

CHANGELIST = "/admin/billing/modelpricing/"


def admin_client(user=None) -> tuple[Client, object]:
    user = user or UserFactory(username="boss", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client, user


def changelist_post(changes: dict[str, str]) -> dict:
    """The list_editable formset as the changelist page posts it, with `changes` applied."""
    rows = list(ModelPricing.objects.order_by("pricing_version", "model_alias"))
    data = {
        "form-TOTAL_FORMS": str(len(rows)),
        "form-INITIAL_FORMS": str(len(rows)),
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
        "_save": "Save",
    }
    for index, row in enumerate(rows):
        data[f"form-{index}-id"] = str(row.pk)
        data[f"form-{index}-multiplier"] = changes.get(row.model_alias, str(row.multiplier))
    return data


@pytest.mark.django_db
def test_list_editable_edit_goes_through_the_service(django_capture_on_commit_callbacks):
    client, boss = admin_client()
    meter.reload_pricing_cache()
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert b'name="form-0-multiplier"' in page.content
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(CHANGELIST, changelist_post({"gpt-4o": "2.25", "deepseek": "0.55"}))
    assert response.status_code == 302, response.content[:2000]
    assert stored_multiplier("gpt-4o") == Decimal("2.2500") and stored_multiplier("deepseek") == Decimal(
        "0.5500"
    )
    changes = {c.model_alias: c for c in PricingChange.objects.all()}
    assert set(changes) == {"gpt-4o", "deepseek"}  # unchanged rows write nothing
    assert all(c.source == "admin" and c.changed_by == boss for c in changes.values())
    assert (changes["gpt-4o"].old_multiplier, changes["gpt-4o"].new_multiplier) == (
        Decimal("2.0000"),
        Decimal("2.2500"),
    )
    assert len(callbacks) == 2
    assert meter.get_model_multiplier("gpt-4o") == Decimal("2.2500")
    assert meter.get_pricing_snapshot().change_seq == max(c.pk for c in changes.values())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "greater than 0"),
        ("-2", "greater than 0"),
        ("101", "at most 100"),
        ("1.00001", "decimal places"),
        ("abc", "Enter a number"),
        ("NaN", "Enter a number"),
        ("", "This field is required"),
    ],
)
def test_list_editable_bad_value_is_a_form_error(value, message):
    client, _ = admin_client()
    response = client.post(CHANGELIST, changelist_post({"gpt-4o": value}))
    assert response.status_code == 200
    assert message.encode() in response.content
    assert b"errorlist" in response.content
    assert stored_multiplier("gpt-4o") == Decimal("2.0000")
    assert not PricingChange.objects.exists()


@pytest.mark.django_db
def test_change_form_edits_only_the_multiplier(django_capture_on_commit_callbacks):
    client, boss = admin_client()
    row = ModelPricing.objects.get(model_alias="claude-haiku")
    url = f"/admin/billing/modelpricing/{row.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert b'name="multiplier"' in page.content and b'name="model_alias"' not in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"multiplier": "0.9", "model_alias": "hacked", "pricing_version": "999"})
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.model_alias, row.pricing_version.version, row.multiplier) == (
        "claude-haiku",
        "2026-02-20",
        Decimal("0.9000"),
    )
    change = PricingChange.objects.get()
    assert (change.source, change.changed_by, change.new_multiplier) == ("admin", boss, Decimal("0.9000"))
    assert meter.get_model_multiplier("claude-haiku") == Decimal("0.9000")


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["0", "100.5", "0.12345", "Infinity", "x"])
def test_change_form_bad_value_shows_the_error(value):
    client, _ = admin_client()
    row = ModelPricing.objects.get(model_alias="claude-haiku")
    response = client.post(f"/admin/billing/modelpricing/{row.pk}/change/", {"multiplier": value})
    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert stored_multiplier("claude-haiku") == Decimal("0.8000")


@pytest.mark.django_db
def test_pricing_rows_cannot_be_added_or_deleted():
    client, _ = admin_client()
    row = ModelPricing.objects.get(model_alias="gpt-4o")
    assert client.get("/admin/billing/modelpricing/add/").status_code == 403
    assert client.post(f"/admin/billing/modelpricing/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ModelPricing.objects.filter(pk=row.pk).exists()
    assert b"delete_selected" not in client.get(CHANGELIST).content


@pytest.mark.django_db
def test_staff_without_the_permission_cannot_edit_prices():
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_modelpricing"))
    client, _ = admin_client(viewer)
    assert client.get(CHANGELIST).status_code == 200
    assert b'name="form-0-multiplier"' not in client.get(CHANGELIST).content
    response = client.post(CHANGELIST, changelist_post({"gpt-4o": "9"}))
    assert stored_multiplier("gpt-4o") == Decimal("2.0000"), response.status_code
    nobody, _ = admin_client(UserFactory(is_staff=True))
    assert nobody.get(CHANGELIST).status_code == 403


@pytest.mark.django_db
def test_versions_audit_wallets_and_ledger_are_read_only():
    client, _ = admin_client()
    alice = UserFactory(username="alice")
    UserFactory(username="bob")
    services.pricing_update_multiplier(model_alias="gpt-4o", multiplier="3", changed_by=alice, source="api")
    wallet = CreditWallet.objects.get(user=alice)
    entry = CreditTransaction.objects.filter(wallet=wallet).first()
    version = PricingVersion.objects.get(is_active=True)
    change = PricingChange.objects.get()
    for model, obj in [
        ("pricingversion", version),
        ("pricingchange", change),
        ("creditwallet", wallet),
        ("credittransaction", entry),
    ]:
        base = f"/admin/billing/{model}/"
        assert client.get(base).status_code == 200, model
        assert b"delete_selected" not in client.get(base).content, model
        view = client.get(f"{base}{obj.pk}/change/")
        assert view.status_code == 200, model
        assert b'name="_save"' not in view.content, model  # a view page, not a form
        assert client.post(f"{base}{obj.pk}/change/", {}).status_code == 403, model
        assert client.get(f"{base}add/").status_code == 403, model
        assert client.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403, model
    assert CreditTransaction.objects.filter(pk=entry.pk).exists()
    assert b"gpt-4o" in client.get(f"/admin/billing/pricingversion/{version.pk}/change/").content


@pytest.mark.django_db
def test_wallets_and_ledger_search_by_username():
    client, _ = admin_client()
    UserFactory(username="alice")
    UserFactory(username="bob")
    wallets = client.get("/admin/billing/creditwallet/?q=alice").content.decode()
    assert "alice" in wallets and "bob" not in wallets
    ledger = client.get("/admin/billing/credittransaction/?q=bob").context["cl"].result_list
    assert [entry.wallet.user.username for entry in ledger] == ["bob"]


@pytest.mark.gunicorn
@pytest.mark.serial
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_admin_edit_reaches_every_worker_within_one_second():
    client, boss = admin_client()
    with gunicorn_server(workers=2, env={"PRICING_VERSION_CHECK_SECONDS": "60"}) as server:
        server.wait_for_workers(
            2, lambda h: h["pricing_listener"]["connected"] and h["pricing_cache"]["loaded"]
        )
        started = time.time()
        response = client.post(CHANGELIST, changelist_post({"gemini-pro": "1.3"}))
        assert response.status_code == 302
        change = PricingChange.objects.get()
        assert (change.source, change.changed_by_id) == ("admin", boss.pk)
        workers = server.wait_for_workers(2, lambda h: h["pricing_cache"]["change_seq"] == change.pk)
    for health in workers.values():
        assert health["pricing_cache"]["multipliers"]["gemini-pro"] == "1.3000"
        assert health["pricing_cache"]["current"] is True
        assert health["pricing_cache"]["loaded_at"] - started < 1.0, health
