"""Access control: tokens expire and are revoked at once, passwords are hashed, admin rights are
checked on every door, and no answer tells one user whether another user's object exists.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password, get_hasher, identify_hasher
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string
from knox.models import AuthToken
from rest_framework.test import APIClient

from billing.api.pagination import CursorCodec
from billing.models import CreditTransaction, ModelPricing, PricingChange
from chat import services as chat_services
from tests.factories import DEFAULT_PASSWORD, RoomFactory, UsageEventFactory, UserFactory
from tests.support.clients import bearer, logged_in
from tests.support.gunicorn_server import gunicorn_server
from tests.support.pricing import staff_with_pricing_permission, stored_multiplier

User = get_user_model()
WALLET = "/api/v1/users/me/wallet"
PRICING = "/api/v1/admin/pricing"
RAW_PASSWORD = "amber-quartz-violin-42"


def _token(username: str, password: str = DEFAULT_PASSWORD) -> str:
    response = APIClient().post(
        "/api/v1/auth/token", {"username": username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()["token"]


# --- tokens ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_expired_token_is_401_json_and_deleted():
    user = UserFactory()
    token = _token(user.username)
    assert bearer(token).get(WALLET).status_code == 200

    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))

    response = bearer(token).get(WALLET)
    assert response.status_code == 401
    assert response.json() == {"error": "authentication_failed", "detail": "Invalid token."}
    assert response["WWW-Authenticate"] == "Bearer"
    assert not AuthToken.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_tokens_expire_after_token_ttl_hours():
    user = UserFactory()
    before = timezone.now()
    _token(user.username)
    lifetime = AuthToken.objects.get(user=user).expiry - before
    ttl = django_settings.REST_KNOX["TOKEN_TTL"]
    assert ttl == timedelta(hours=24 * 7)  # TOKEN_TTL_HOURS default
    assert ttl <= lifetime < ttl + timedelta(seconds=5)


@pytest.mark.gunicorn
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_logout_revokes_the_token_at_once_on_every_worker():
    user = UserFactory()
    with gunicorn_server(workers=3) as server:
        _status, body = server.request(
            "POST", "/api/v1/auth/token", {"username": user.username, "password": DEFAULT_PASSWORD}
        )
        auth = {"Authorization": f"Bearer {body['token']}"}
        with ThreadPoolExecutor(max_workers=12) as pool:
            before = list(pool.map(lambda _: server.request("GET", WALLET, headers=auth)[0], range(12)))
            assert before == [200] * 12

            assert server.request("POST", "/api/v1/auth/logout", headers=auth)[0] == 204

            # No worker holds the token in memory: the very next requests, on any worker, are refused.
            after = list(pool.map(lambda _: server.request("GET", WALLET, headers=auth), range(12)))
    assert {status for status, _ in after} == {401}
    assert all(body["error"] == "authentication_failed" for _, body in after)
    assert not AuthToken.objects.filter(user=user).exists()


@pytest.mark.django_db
def test_a_revoked_token_cannot_log_out_again_and_other_tokens_survive():
    user = UserFactory()
    first, second = _token(user.username), _token(user.username)
    assert bearer(first).post("/api/v1/auth/logout").status_code == 204
    assert bearer(first).post("/api/v1/auth/logout").status_code == 401
    assert bearer(second).get(WALLET).status_code == 200


# --- passwords ---------------------------------------------------------------------------------


def _assert_hashed_with_the_default_hasher(user) -> None:
    stored = user.password
    default = get_hasher("default")
    assert default.algorithm == import_string(django_settings.PASSWORD_HASHERS[0]).algorithm
    assert identify_hasher(stored).algorithm == default.algorithm
    assert stored.startswith(f"{default.algorithm}$")
    assert RAW_PASSWORD not in stored
    assert not default.must_update(stored)  # current work factor
    assert check_password(RAW_PASSWORD, stored)


@pytest.mark.django_db
def test_passwords_are_stored_with_the_default_hasher_through_both_sign_up_doors():
    api = APIClient().post(
        "/api/v1/auth/register", {"username": "via-api", "password": RAW_PASSWORD}, format="json"
    )
    assert api.status_code == 201
    page = Client().post(
        "/signup/", {"username": "via-page", "password1": RAW_PASSWORD, "password2": RAW_PASSWORD}
    )
    assert page.status_code == 302

    for username in ("via-api", "via-page"):
        _assert_hashed_with_the_default_hasher(User.objects.get(username=username))
    assert django_settings.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.PBKDF2PasswordHasher"


# --- admin doors ---------------------------------------------------------------------------------


@pytest.fixture
def staff_without_permission(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def staff_with_permission(db):
    return staff_with_pricing_permission()


@pytest.mark.django_db
def test_the_pricing_api_needs_admin_rights_whatever_the_credentials(
    settings, staff_without_permission, staff_with_permission
):
    plain = UserFactory()
    listed = UserFactory()
    settings.ADMIN_USER_IDS = [listed.pk]
    refused = {
        "anonymous": (APIClient(), 401),
        "user by session": (logged_in(plain), 403),
        "user by token": (bearer(_token(plain.username)), 403),
        "staff without the permission": (logged_in(staff_without_permission), 403),
    }
    for who, (client, status) in refused.items():
        listing = client.get(PRICING)
        patch = client.patch(f"{PRICING}/gpt-4o", {"multiplier": "9"}, format="json")
        assert (listing.status_code, patch.status_code) == (status, status), who
        assert patch.json()["error"] in {"not_authenticated", "permission_denied", "authentication_failed"}
    assert stored_multiplier("gpt-4o") == Decimal("2.0000")
    assert not PricingChange.objects.exists()

    for who, client in {
        "ADMIN_USER_IDS by token": bearer(_token(listed.username)),
        "staff with billing.change_modelpricing": logged_in(staff_with_permission),
    }.items():
        assert client.get(PRICING).status_code == 200, who
        assert client.patch(f"{PRICING}/gpt-4o", {"multiplier": "3"}, format="json").status_code == 200, who
    assert PricingChange.objects.count() == 1  # the second PATCH to 3 was a no-op


@pytest.mark.django_db
def test_a_non_admin_cannot_probe_which_aliases_exist():
    client = logged_in(UserFactory())
    known = client.patch(f"{PRICING}/gpt-4o", {"multiplier": "9"}, format="json")
    unknown = client.patch(f"{PRICING}/no-such-model", {"multiplier": "9"}, format="json")
    assert known.status_code == unknown.status_code == 403
    assert known.json() == unknown.json()


@pytest.mark.django_db
def test_the_django_admin_refuses_non_staff_users_even_api_admins(settings):
    listed = UserFactory()
    settings.ADMIN_USER_IDS = [listed.pk]  # rights on the pricing API, not on the console
    for user in (UserFactory(), listed):
        client = Client()
        client.force_login(user)
        for url in ("/admin/", "/admin/billing/modelpricing/"):
            response = client.get(url)
            assert response.status_code == 302, url
            assert response["Location"].startswith("/admin/login/")
        pricing = ModelPricing.objects.get(model_alias="gpt-4o", pricing_version__is_active=True)
        edit = client.post(f"/admin/billing/modelpricing/{pricing.pk}/change/", {"multiplier": "9"})
        assert edit.status_code == 302 and edit["Location"].startswith("/admin/login/")
    # A bearer token is no way into the console either.
    token_client = Client(headers={"Authorization": f"Bearer {_token(listed.username)}"})
    assert token_client.get("/admin/billing/modelpricing/").status_code == 302
    assert stored_multiplier("gpt-4o") == Decimal("2.0000")


@pytest.mark.django_db
def test_staff_without_the_permission_cannot_see_or_edit_prices_in_the_console(staff_without_permission):
    client = Client()
    client.force_login(staff_without_permission)
    pricing = ModelPricing.objects.get(model_alias="gpt-4o", pricing_version__is_active=True)
    assert client.get("/admin/").status_code == 200  # staff may open the console...
    assert client.get("/admin/billing/modelpricing/").status_code == 403  # ...but not the prices
    change = f"/admin/billing/modelpricing/{pricing.pk}/change/"
    assert client.get(change).status_code == 403
    assert client.post(change, {"multiplier": "9"}).status_code == 403
    changelist = client.post(
        "/admin/billing/modelpricing/",
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(pricing.pk),
            "form-0-multiplier": "9",
            "_save": "Save",
        },
    )
    assert changelist.status_code == 403
    assert stored_multiplier("gpt-4o") == Decimal("2.0000")
    assert not PricingChange.objects.exists()


# --- no answer reveals another user's objects -----------------------------------------------------


@pytest.fixture
def alice_and_bob(db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GOOGLE_API_KEY",
        "DEEPSEEK_API_KEY",
        "TAVILY_API_KEY",
    ):
        setattr(settings, name, "")
    alice, bob = UserFactory(), UserFactory()
    return alice, bob


def _without_csrf(html: bytes) -> bytes:
    html = re.sub(rb'<meta name="csrf-token" content="[^"]*">', b"", html)
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b"", html)


def _same_answer(first, second) -> None:
    assert first.status_code == second.status_code
    assert first.json() == second.json()


@pytest.mark.django_db
def test_someone_elses_room_turns_and_file_answer_exactly_like_missing_ones(alice_and_bob):
    alice, bob = alice_and_bob
    alices_room = RoomFactory(owner=alice, agents=["gpt-4o"])
    alices_file = chat_services.file_upload(
        owner=alice, upload=SimpleUploadedFile("secret.txt", b"private", content_type="text/plain")
    )
    bobs_room = RoomFactory(owner=bob, agents=["gpt-4o"])
    missing = max(alices_room.pk, alices_file.pk, bobs_room.pk) + 1000
    bob_api = logged_in(bob)

    for template in ("/api/v1/rooms/{}/", "/api/v1/rooms/{}/turns/"):
        _same_answer(bob_api.get(template.format(alices_room.pk)), bob_api.get(template.format(missing)))
    turn = "/api/v1/rooms/{}/turns/"
    _same_answer(
        bob_api.post(turn.format(alices_room.pk), {"content": "hi"}, format="json"),
        bob_api.post(turn.format(missing), {"content": "hi"}, format="json"),
    )
    _same_answer(bob_api.get(f"/api/v1/files/{alices_file.pk}/"), bob_api.get(f"/api/v1/files/{missing}/"))
    assert bob_api.get(f"/api/v1/files/{missing}/").status_code == 404

    # Attaching someone else's file to one's own turn: the same 400 as a file that does not exist,
    # apart from the id it names.
    stolen = bob_api.post(
        turn.format(bobs_room.pk), {"content": "x", "files": [alices_file.pk]}, format="json"
    )
    absent = bob_api.post(turn.format(bobs_room.pk), {"content": "x", "files": [missing]}, format="json")
    assert stolen.status_code == absent.status_code == 400
    assert stolen.json()["detail"]["files"] == [f"File(s) not found: {alices_file.pk}."]
    assert absent.json()["detail"]["files"] == [f"File(s) not found: {missing}."]

    # The chat page too.
    bob_page = Client()
    bob_page.force_login(bob)
    seen, unseen = bob_page.get(f"/rooms/{alices_room.pk}/"), bob_page.get(f"/rooms/{missing}/")
    assert seen.status_code == unseen.status_code == 404
    # Identical but for the per-response masking of the CSRF token.
    assert _without_csrf(seen.content) == _without_csrf(unseen.content)


@pytest.mark.django_db
def test_someone_elses_cursor_answers_exactly_like_a_forged_one(alice_and_bob):
    alice, bob = alice_and_bob
    event = UsageEventFactory(user=alice, turn__room__owner=alice)
    grant = CreditTransaction.objects.get(wallet__user=alice)
    cursors = {
        "/api/v1/users/me/usage": CursorCodec("usage", with_timestamp=True).encode(
            user_id=alice.pk, direction="n", row=event
        ),
        "/api/v1/users/me/transactions": CursorCodec("transactions", with_timestamp=False).encode(
            user_id=alice.pk, direction="n", row=grant
        ),
    }
    bob_api, alice_api = logged_in(bob), logged_in(alice)
    for url, alices_cursor in cursors.items():
        assert alice_api.get(url, {"cursor": alices_cursor}).status_code == 200
        stolen = bob_api.get(url, {"cursor": alices_cursor})
        forged = bob_api.get(url, {"cursor": "not-a-cursor"})
        assert stolen.status_code == 400
        _same_answer(stolen, forged)


@pytest.mark.django_db
def test_the_token_endpoint_answers_the_same_for_unknown_users_wrong_and_inactive(db):
    active = UserFactory()
    inactive = UserFactory(is_active=False)
    client = APIClient()
    answers = [
        client.post("/api/v1/auth/token", body, format="json")
        for body in (
            {"username": "nobody-has-this-name", "password": DEFAULT_PASSWORD},
            {"username": active.username, "password": "wrong password"},
            {"username": inactive.username, "password": DEFAULT_PASSWORD},
        )
    ]
    assert {a.status_code for a in answers} == {401}
    assert len({a.content for a in answers}) == 1
    assert len({a["WWW-Authenticate"] for a in answers}) == 1
    assert answers[0].json() == {"error": "authentication_failed", "detail": "Invalid username or password."}


@pytest.mark.django_db
def test_the_log_in_page_answers_the_same_for_unknown_users_and_wrong_passwords(db):
    active = UserFactory()
    unknown = Client().post("/login/", {"username": "nobody-has-this-name", "password": DEFAULT_PASSWORD})
    wrong = Client().post("/login/", {"username": active.username, "password": "wrong password"})
    assert unknown.status_code == wrong.status_code == 200
    unknown_errors = unknown.context["form"].non_field_errors()
    assert unknown_errors == wrong.context["form"].non_field_errors()
    assert unknown_errors


@pytest.mark.django_db
def test_signing_up_with_a_taken_name_is_a_400_saying_so(db):
    """The one deliberate exception (docs/decisions.md): sign-up must say a name is taken."""
    UserFactory(username="taken")
    response = APIClient().post(
        "/api/v1/auth/register", {"username": "TAKEN", "password": RAW_PASSWORD}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["detail"] == {"username": ["A user with that username already exists."]}
