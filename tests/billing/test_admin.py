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


# --- Staff grant credits: an action on the wallet list, with its own form ------------------

WALLETS = "/admin/billing/creditwallet/"


def grant_form(client: Client, wallets: list[CreditWallet]):
    """Pick the action on the changelist: the intermediate form comes back (nothing granted yet)."""
    response = client.post(
        WALLETS,
        {"action": "grant_credits", "index": "0", "_selected_action": [str(w.pk) for w in wallets]},
    )
    assert response.status_code == 200, response.content[:500]
    return response


def grant_post(form_response, **fields) -> dict:
    """What the rendered form posts back: its token and selection, with these fields."""
    form = form_response.context["form"]
    return {
        "action": "grant_credits",
        "apply": "1",
        "_selected_action": [str(w.pk) for w in form_response.context["wallets"]],
        "grant_token": str(form.initial["grant_token"]),
        **fields,
    }


def grants(wallet: CreditWallet) -> list[CreditTransaction]:
    return list(
        CreditTransaction.objects.filter(wallet=wallet, kind="grant").exclude(description="Beta grant")
    )


def reconcile_is_clean() -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("reconcile_wallets", stdout=out, stderr=out)  # exits 1 (SystemExit) on drift
    assert "no drift" in out.getvalue()


@pytest.mark.django_db
def test_staff_grant_writes_one_audited_ledger_row_and_a_double_submit_grants_once(caplog):
    client, boss = admin_client()
    alice = UserFactory(username="alice")
    wallet = CreditWallet.objects.get(user=alice)
    form = grant_form(client, [wallet])
    html = form.content.decode()
    assert "Grant credits" in html and "alice" in html and 'name="grant_token"' in html
    assert grants(wallet) == []

    data = grant_post(form, amount="12.5", reason="Conference demo")
    with caplog.at_level("INFO", logger="billing.admin"):
        response = client.post(WALLETS, data, follow=True)
    assert response.redirect_chain[-1][0].endswith(WALLETS)
    assert "Granted 12.5000 credits to 1 wallet: alice" in response.content.decode()
    (row,) = grants(wallet)
    assert (row.kind, row.amount, row.balance_after) == ("grant", Decimal("12.5000"), Decimal("512.5000"))
    assert row.description == f"Staff grant by boss (user {boss.pk}): Conference demo"
    assert row.idempotency_key == f"admin-grant:{data['grant_token']}:{wallet.pk}"
    wallet.refresh_from_db()
    assert (wallet.balance, wallet.lifetime_granted) == (Decimal("512.5000"), Decimal("512.5000"))
    # Audited three ways: the ledger row's description, the admin history, a log line.
    from django.contrib.admin.models import LogEntry

    entry = LogEntry.objects.get(object_id=str(wallet.pk))
    assert entry.user == boss
    assert entry.get_change_message() == f"Granted 12.5000 credits (ledger row {row.pk}): Conference demo"
    assert any(
        f"staff grant: 12.5000 credits to wallet={wallet.pk} user={alice.pk} by staff={boss.pk} (boss)"
        in r.message
        for r in caplog.records
    )

    # The same form again (a double click, the back button): nothing more is granted.
    again = client.post(WALLETS, data, follow=True)
    assert "already submitted" in again.content.decode()
    assert grants(wallet) == [row]
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("512.5000")
    assert LogEntry.objects.filter(object_id=str(wallet.pk)).count() == 1

    # The same form with another amount is refused, not granted on top.
    changed = client.post(WALLETS, {**data, "amount": "99"})
    assert changed.status_code == 200
    assert "already submitted with a different amount" in changed.content.decode()
    assert grants(wallet) == [row]

    # A fresh form is a new grant.
    client.post(WALLETS, grant_post(grant_form(client, [wallet]), amount="1", reason="second"))
    assert [g.amount for g in grants(wallet)] == [Decimal("1.0000"), Decimal("12.5000")]
    reconcile_is_clean()


@pytest.mark.django_db
def test_staff_grant_to_several_wallets_at_once():
    client, _ = admin_client()
    wallets = [CreditWallet.objects.get(user=UserFactory(username=name)) for name in ("ann", "ben")]
    data = grant_post(grant_form(client, wallets), amount="5", reason="Beta testers")
    response = client.post(WALLETS, data, follow=True)
    assert "Granted 5.0000 credits to 2 wallets: ann, ben" in response.content.decode()
    for wallet in wallets:
        (row,) = grants(wallet)
        assert (row.amount, row.balance_after) == (Decimal("5.0000"), Decimal("505.0000"))
    reconcile_is_clean()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("abc", "is not a decimal number"),
        ("0", "A grant must be positive."),
        ("-5", "A grant must be positive."),
        ("1.00001", "has more than 4 decimal places"),
        ("1e20", "is too large"),
        ("NaN", "is not a finite number"),
        ("", "This field is required."),
    ],
)
def test_staff_grant_bad_amount_is_a_form_error(amount, message):
    client, _ = admin_client()
    wallet = CreditWallet.objects.get(user=UserFactory())
    response = client.post(WALLETS, grant_post(grant_form(client, [wallet]), amount=amount, reason="x"))
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert message in response.content.decode()
    assert grants(wallet) == []
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("500.0000")


@pytest.mark.django_db
def test_staff_grant_needs_a_reason():
    client, _ = admin_client()
    wallet = CreditWallet.objects.get(user=UserFactory())
    response = client.post(WALLETS, grant_post(grant_form(client, [wallet]), amount="5", reason=""))
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert grants(wallet) == []


@pytest.mark.django_db
def test_staff_without_the_ledger_permission_cannot_grant():
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_creditwallet"))
    client, _ = admin_client(viewer)
    wallet = CreditWallet.objects.get(user=UserFactory())
    page = client.get(WALLETS)
    assert page.status_code == 200
    assert b"grant_credits" not in page.content
    client.post(
        WALLETS,
        {
            "action": "grant_credits",
            "apply": "1",
            "_selected_action": [str(wallet.pk)],
            "grant_token": "0b6f1b7e-6c1e-4a53-9d7e-1c0f4b1f2a3b",
            "amount": "1000",
            "reason": "me",
        },
    )
    assert grants(wallet) == []
    # With the ledger's add permission the action is offered.
    viewer.user_permissions.add(Permission.objects.get(codename="add_credittransaction"))
    assert b"grant_credits" in client.get(WALLETS).content
