"""GET /api/v1/admin/pricing and PATCH /api/v1/admin/pricing/{model_alias}."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.test import APIClient

from billing import meter
from billing.models import PricingChange
from tests.factories import UserFactory
from tests.support.clients import client_for
from tests.support.pricing import staff_with_pricing_permission, stored_multiplier

LIST = "/api/v1/admin/pricing"
SEEDED = {
    "claude-haiku": "0.8000",
    "claude-sonnet": "1.5000",
    "deepseek": "0.5000",
    "default": "1.0000",
    "gemini-flash": "0.8000",
    "gemini-pro": "1.2000",
    "gpt-4o": "2.0000",
    "gpt-4o-mini": "1.0000",
}

pytestmark = pytest.mark.django_db


def detail(alias: str = "gpt-4o") -> str:
    return f"{LIST}/{alias}"


def patch(client: APIClient, body, alias: str = "gpt-4o", *, raw: bool = False):
    data = body if raw else json.dumps(body)
    return client.patch(detail(alias), data=data, content_type="application/json")


@pytest.fixture
def admin_client():
    return client_for(staff_with_pricing_permission())


# --- who may ----------------------------------------------------------------------


def test_anonymous_is_401_on_both():
    client = APIClient()
    for response in (client.get(LIST), patch(client, {"multiplier": "3"})):
        assert response.status_code == 401
        assert response.json()["error"] == "not_authenticated"
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert stored_multiplier() == Decimal("2.0000")


@pytest.mark.parametrize(
    "make_user",
    [
        pytest.param(lambda: UserFactory(), id="plain user"),
        pytest.param(lambda: UserFactory(is_staff=True), id="staff without the permission"),
        pytest.param(lambda: UserFactory(is_staff=False, is_superuser=True), id="superuser who is not staff"),
        pytest.param(lambda: _with_permission(UserFactory(is_staff=False)), id="permission but not staff"),
    ],
)
def test_non_admins_are_403_on_both(make_user):
    client = client_for(make_user())
    for response in (client.get(LIST), patch(client, {"multiplier": "3"})):
        assert response.status_code == 403
        assert response.json() == {
            "error": "permission_denied",
            "detail": "Only pricing administrators can do this.",
        }
    assert stored_multiplier() == Decimal("2.0000")
    assert not PricingChange.objects.exists()


def _with_permission(user):
    user.user_permissions.add(Permission.objects.get(codename="change_modelpricing"))
    return user


@pytest.mark.parametrize("with_permission", [False, True])
def test_inactive_staff_is_refused(with_permission):
    user = UserFactory(is_staff=True, is_active=False)
    if with_permission:
        _with_permission(user)
    token_client = client_for(user)  # a token issued before the account was disabled
    for response in (token_client.get(LIST), patch(token_client, {"multiplier": "3"})):
        assert response.status_code == 401
    session_client = APIClient()
    session_client.force_authenticate(user)  # even if something authenticated it
    for response in (session_client.get(LIST), patch(session_client, {"multiplier": "3"})):
        assert response.status_code == 403
    assert stored_multiplier() == Decimal("2.0000")


@pytest.mark.parametrize(
    "make_user",
    [
        pytest.param(staff_with_pricing_permission, id="staff with the permission"),
        pytest.param(lambda: UserFactory(is_staff=True, is_superuser=True), id="staff superuser"),
        pytest.param(lambda: _in_group_with_permission(UserFactory(is_staff=True)), id="staff via a group"),
    ],
)
def test_admins_by_permission(make_user):
    client = client_for(make_user())
    assert client.get(LIST).status_code == 200
    assert patch(client, {"multiplier": "3"}).status_code == 200


def _in_group_with_permission(user):
    group = Group.objects.create(name="pricing")
    group.permissions.add(Permission.objects.get(codename="change_modelpricing"))
    user.groups.add(group)
    return user


def test_admin_by_admin_user_ids(settings):
    user = UserFactory()  # not staff, no permission
    settings.ADMIN_USER_IDS = [user.pk]
    client = client_for(user)
    assert client.get(LIST).status_code == 200
    assert patch(client, {"multiplier": "3"}).status_code == 200
    settings.ADMIN_USER_IDS = []
    assert client.get(LIST).status_code == 403


# --- list ---------------------------------------------------------------------------


def test_list_shape(admin_client):
    body = admin_client.get(LIST).json()
    assert body["pricing_version"] == "2026-02-20"
    assert [row["model_alias"] for row in body["models"]] == sorted(SEEDED)
    assert {row["model_alias"]: row["multiplier"] for row in body["models"]} == SEEDED
    assert all(list(row) == ["model_alias", "multiplier", "updated_at"] for row in body["models"])
    dt.datetime.fromisoformat(body["models"][0]["updated_at"])


# --- patch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_body", "expected"),
    [
        ('{"multiplier": "2.5"}', "2.5000"),
        ('{"multiplier": " 2.5 "}', "2.5000"),
        ('{"multiplier": 2.5}', "2.5000"),
        ('{"multiplier": 3}', "3.0000"),
        ('{"multiplier": 1.2345}', "1.2345"),
        ('{"multiplier": 100}', "100.0000"),
        ('{"multiplier": "0.0001"}', "0.0001"),
        ('{"multiplier": 1e1}', "10.0000"),
        ('{"multiplier": "1.23450"}', "1.2345"),
    ],
)
def test_patch_accepts_decimal_strings_and_json_numbers(
    admin_client, raw_body, expected, django_capture_on_commit_callbacks
):
    meter.reload_pricing_cache()
    with django_capture_on_commit_callbacks(execute=True):
        response = patch(admin_client, raw_body, raw=True)
    assert response.status_code == 200, response.content
    body = response.json()
    assert list(body) == ["model_alias", "multiplier", "updated_at"]
    assert body["model_alias"] == "gpt-4o" and body["multiplier"] == expected
    assert stored_multiplier() == Decimal(expected)
    assert meter.get_model_multiplier("gpt-4o") == Decimal(expected)


def test_patch_writes_the_audit_row(django_capture_on_commit_callbacks):
    editor = staff_with_pricing_permission(username="pricer")
    with django_capture_on_commit_callbacks(execute=True):
        patch(client_for(editor), {"multiplier": "1.75"}, alias="claude-sonnet")
    change = PricingChange.objects.get()
    assert change.changed_by == editor
    assert change.source == "api"
    assert (change.model_alias, change.pricing_version) == ("claude-sonnet", "2026-02-20")
    assert (change.old_multiplier, change.new_multiplier) == (Decimal("1.5000"), Decimal("1.7500"))
    assert meter.get_pricing_snapshot().change_seq == change.pk


def test_patch_with_the_current_value_is_200_without_audit(admin_client):
    response = patch(admin_client, {"multiplier": "2.0000"})
    assert response.status_code == 200
    assert response.json()["multiplier"] == "2.0000"
    assert not PricingChange.objects.exists()


BAD_BODIES = [
    pytest.param("{}", "multiplier", id="empty object"),
    pytest.param("", "multiplier", id="empty body"),
    pytest.param('{"multiplier": "3", "model_alias": "gpt-4o"}', "model_alias", id="model_alias"),
    pytest.param('{"multiplier": "3", "pricing_version": "x"}', "pricing_version", id="pricing_version"),
    pytest.param('{"multiplier": "3", "id": 1}', "id", id="id"),
    pytest.param('{"multiplier": "3", "updated_at": null}', "updated_at", id="updated_at"),
    pytest.param('{"model_alias": "deepseek"}', "multiplier", id="only another field"),
    pytest.param('{"multiplier": "abc"}', "multiplier", id="not a number"),
    pytest.param('{"multiplier": "1e2"}', "multiplier", id="exponent string"),
    pytest.param('{"multiplier": ""}', "multiplier", id="empty string"),
    pytest.param('{"multiplier": "NaN"}', "multiplier", id="NaN string"),
    pytest.param('{"multiplier": NaN}', None, id="NaN literal"),
    pytest.param('{"multiplier": "Infinity"}', "multiplier", id="Infinity string"),
    pytest.param('{"multiplier": Infinity}', None, id="Infinity literal"),
    pytest.param('{"multiplier": -Infinity}', None, id="-Infinity literal"),
    pytest.param('{"multiplier": 0}', "multiplier", id="zero"),
    pytest.param('{"multiplier": "0.00"}', "multiplier", id="zero string"),
    pytest.param('{"multiplier": -1}', "multiplier", id="negative"),
    pytest.param('{"multiplier": "-0.5"}', "multiplier", id="negative string"),
    pytest.param('{"multiplier": 100.0001}', "multiplier", id="over 100"),
    pytest.param('{"multiplier": 1e400}', "multiplier", id="huge"),
    pytest.param('{"multiplier": 1.00001}', "multiplier", id="5 places number"),
    pytest.param('{"multiplier": "1.00001"}', "multiplier", id="5 places string"),
    pytest.param('{"multiplier": null}', "multiplier", id="null"),
    pytest.param('{"multiplier": true}', "multiplier", id="boolean"),
    pytest.param('{"multiplier": [3]}', "multiplier", id="list value"),
    pytest.param('{"multiplier": {"value": 3}}', "multiplier", id="object value"),
    pytest.param('[{"multiplier": "3"}]', "non_field_errors", id="array body"),
    pytest.param('"3"', "non_field_errors", id="string body"),
    pytest.param("3", "non_field_errors", id="number body"),
    pytest.param("null", "non_field_errors", id="null body"),
    pytest.param('{"multiplier": "3"', None, id="broken json"),
    pytest.param('{"multiplier": ' + "9" * 5000 + "}", None, id="5000-digit integer"),
]


@pytest.mark.parametrize(("raw_body", "field"), BAD_BODIES)
def test_every_bad_body_is_400_and_changes_nothing(
    admin_client, raw_body, field, django_capture_on_commit_callbacks
):
    meter.reload_pricing_cache()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = patch(admin_client, raw_body, raw=True)
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error", "detail"}
    if field is None:
        assert body["error"] == "parse_error" and "JSON parse error" in body["detail"]
    else:
        assert body["error"] == "invalid"
        assert body["detail"][field][0]  # a message naming the problem
    assert callbacks == []
    assert stored_multiplier() == Decimal("2.0000")
    assert meter.get_model_multiplier("gpt-4o") == Decimal("2.0000")
    assert not PricingChange.objects.exists()


def test_messages_say_what_is_wrong(admin_client):
    def message(body) -> str:
        return patch(admin_client, body).json()["detail"]

    assert message({"multiplier": "0"}) == {"multiplier": ["The multiplier must be greater than 0."]}
    assert message({"multiplier": "101"}) == {"multiplier": ["The multiplier must be at most 100."]}
    assert message({"multiplier": "1.00001"}) == {
        "multiplier": ["The multiplier can have at most 4 decimal places."]
    }
    assert message({"multiplier": "3", "model_alias": "x"}) == {
        "model_alias": ["Only `multiplier` can be changed; this field is not accepted."]
    }
    assert message({"multiplier": None}) == {"multiplier": ["This field may not be null."]}


def test_unknown_alias_is_404(admin_client):
    for alias in ["no-such-model", "GPT-4O", "gpt-4o%20", "..."]:
        response = patch(admin_client, {"multiplier": "3"}, alias=alias)
        assert response.status_code == 404, alias
        assert response.json()["error"] == "not_found"
    assert not PricingChange.objects.exists()


def test_other_methods_and_media_types_are_refused(admin_client):
    assert admin_client.get(detail()).status_code == 405
    assert admin_client.put(detail(), {"multiplier": "3"}, format="json").status_code == 405
    assert admin_client.delete(detail()).status_code == 405
    assert admin_client.post(LIST, {"multiplier": "3"}, format="json").status_code == 405
    form = admin_client.patch(detail(), "multiplier=3", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    assert form.json()["error"] == "unsupported_media_type"
    assert stored_multiplier() == Decimal("2.0000")
