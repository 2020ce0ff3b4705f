"""Sign-up, bearer tokens (knox: hashed, expiring, revocable) and session auth."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import include, path
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import BearerTokenAuthentication
from billing.models import CreditWallet
from tests.factories import DEFAULT_PASSWORD, UserFactory

REGISTER = "/api/v1/auth/register"
TOKEN = "/api/v1/auth/token"
LOGOUT = "/api/v1/auth/logout"
STRONG = "amber-quartz-violin-42"


class WhoAmI(APIView):
    """A probe using the project's default authentication and permission classes."""

    def get(self, request):
        return Response(
            {"username": request.user.username, "auth": type(request.successful_authenticator).__name__}
        )


# This module doubles as a URLconf: the real routes plus the probe.
urlpatterns = [path("probe/whoami", WhoAmI.as_view()), path("", include("pantheon.urls"))]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def post_json(client, url: str, body, **headers):
    return client.post(url, body, content_type="application/json", headers=headers)


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail"}
    return body


def issue_token(client, username: str, password: str = DEFAULT_PASSWORD) -> str:
    response = post_json(client, TOKEN, {"username": username, "password": password})
    assert response.status_code == 200, response.content
    return response.json()["token"]


# --- register ----------------------------------------------------------------------------


def test_register_creates_user_and_wallet_with_beta_grant(client):
    response = post_json(
        client, REGISTER, {"username": "ada", "password": STRONG, "email": "ada@example.test"}
    )
    assert response.status_code == 201
    body = response.json()
    user = get_user_model().objects.get(username="ada")
    assert body == {"id": user.pk, "username": "ada"}
    assert user.email == "ada@example.test"
    assert user.check_password(STRONG)
    wallet = CreditWallet.objects.get(user=user)
    assert wallet.balance == Decimal("500")
    assert list(wallet.transactions.values_list("kind", "amount")) == [("grant", Decimal("500"))]


def test_register_without_email(client):
    response = post_json(client, REGISTER, {"username": "grace", "password": STRONG})
    assert response.status_code == 201
    assert response.json()["username"] == "grace"


@pytest.mark.parametrize(
    ("password", "fragment"),
    [("short1", "too short"), ("password123", "too common"), ("83920174652", "entirely numeric")],
)
def test_weak_password_is_a_400_with_the_reason(client, password, fragment):
    response = post_json(client, REGISTER, {"username": "weakling", "password": password})
    body = assert_json_error(response, 400)
    assert any(fragment in message for message in body["detail"]["password"])
    assert not get_user_model().objects.filter(username="weakling").exists()
    assert not CreditWallet.objects.exists()


def test_password_too_similar_to_username_is_refused(client):
    response = post_json(
        client, REGISTER, {"username": "margaret-hamilton", "password": "margaret-hamilton1"}
    )
    body = assert_json_error(response, 400)
    assert "password" in body["detail"]


@pytest.mark.parametrize("username", ["taken", "TAKEN"])
def test_duplicate_username_is_a_400(client, username):
    UserFactory(username="taken")
    response = post_json(client, REGISTER, {"username": username, "password": STRONG})
    body = assert_json_error(response, 400)
    assert body["detail"]["username"] == ["A user with that username already exists."]
    assert get_user_model().objects.filter(username__iexact="taken").count() == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"password": STRONG}, "username"),
        ({"username": "nopass"}, "password"),
        ({"username": "bad name!", "password": STRONG}, "username"),
        ({"username": "x" * 151, "password": STRONG}, "username"),
        ({"username": "mail", "password": STRONG, "email": "not-an-email"}, "email"),
    ],
)
def test_missing_or_invalid_fields_are_a_400(client, payload, field):
    body = assert_json_error(post_json(client, REGISTER, payload), 400)
    assert field in body["detail"]


@pytest.mark.parametrize("raw", ["{not json", "", "[1, 2]", '"just a string"'])
def test_malformed_json_is_a_400(client, raw):
    response = client.post(REGISTER, raw, content_type="application/json")
    assert_json_error(response, 400)
    assert not get_user_model().objects.exists()


def test_signup_closed_is_a_403(client, settings):
    settings.ALLOW_SIGNUP = False
    body = assert_json_error(post_json(client, REGISTER, {"username": "late", "password": STRONG}), 403)
    assert body["detail"] == "Sign-up is closed."
    assert not get_user_model().objects.filter(username="late").exists()


# --- tokens ------------------------------------------------------------------------------


def test_token_for_valid_credentials(client):
    user = UserFactory()
    response = post_json(client, TOKEN, {"username": user.username, "password": DEFAULT_PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert len(body["token"]) >= 32
    assert body["expiry"]
    assert AuthToken.objects.filter(user=user).count() == 1


@pytest.mark.parametrize(
    "credentials",
    [{"username": "ghost", "password": DEFAULT_PASSWORD}, {"username": "real", "password": "wrong-password"}],
)
def test_bad_credentials_are_a_401(client, credentials):
    UserFactory(username="real")
    response = post_json(client, TOKEN, credentials)
    body = assert_json_error(response, 401)
    assert body["error"] == "authentication_failed"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not AuthToken.objects.exists()


def test_inactive_user_gets_no_token(client):
    UserFactory(username="gone", is_active=False)
    assert_json_error(post_json(client, TOKEN, {"username": "gone", "password": DEFAULT_PASSWORD}), 401)


def test_token_request_without_password_is_a_400(client):
    body = assert_json_error(post_json(client, TOKEN, {"username": "someone"}), 400)
    assert "password" in body["detail"]


def test_bearer_token_authenticates_and_logout_revokes_it(client):
    user = UserFactory()
    token = issue_token(client, user.username)
    auth = {"Authorization": f"Bearer {token}"}

    probe = client.get("/probe/whoami", headers=auth)
    assert probe.json() == {"username": user.username, "auth": "BearerTokenAuthentication"}

    assert client.post(LOGOUT, headers=auth).status_code == 204
    assert not AuthToken.objects.filter(user=user).exists()
    assert_json_error(client.post(LOGOUT, headers=auth), 401)
    assert_json_error(client.get("/probe/whoami", headers=auth), 401)


def test_logout_revokes_only_the_token_used(client):
    user = UserFactory()
    first, second = issue_token(client, user.username), issue_token(client, user.username)
    assert client.post(LOGOUT, headers={"Authorization": f"Bearer {first}"}).status_code == 204
    assert client.get("/probe/whoami", headers={"Authorization": f"Bearer {second}"}).status_code == 200


@pytest.mark.parametrize("header", ["Bearer not-a-real-token", "Bearer ", "Token abc", "Bearer a b"])
def test_bad_bearer_headers_are_a_401(client, header):
    assert_json_error(client.post(LOGOUT, headers={"Authorization": header}), 401)


def test_no_credentials_is_a_401(client):
    response = client.post(LOGOUT)
    assert_json_error(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_token_is_stored_hashed(client):
    user = UserFactory()
    token = issue_token(client, user.username)
    # Look at every column of the token table as the database stores it.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {AuthToken._meta.db_table}")
        stored = [str(value) for row in cursor.fetchall() for value in row]
    assert stored
    assert not any(token in value for value in stored)
    row = AuthToken.objects.get(user=user)
    assert row.digest != token and len(row.digest) == 128  # a SHA-512 hex digest
    assert len(row.token_key) < len(token)  # only a short lookup prefix is kept in clear


def test_expired_token_is_refused(client):
    user = UserFactory()
    token = issue_token(client, user.username)
    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))
    assert_json_error(client.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"}), 401)
    # Knox deletes an expired token when it sees it.
    assert not AuthToken.objects.filter(user=user).exists()


def test_a_bearer_request_authenticates_in_one_query(client, django_assert_num_queries):
    user = UserFactory()
    token = issue_token(client, user.username)
    issue_token(client, user.username)  # a second token of the same user is not read
    with django_assert_num_queries(1):
        answer = client.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"})
    assert answer.json() == {"username": user.username, "auth": "BearerTokenAuthentication"}


def test_the_request_carries_the_token_and_user_as_the_orm_loads_them(client):
    """The one-statement check builds both objects from raw columns: every field must come back typed."""
    user = UserFactory(email="ada@example.test", is_staff=True)
    token = issue_token(client, user.username)
    found_user, found_token = BearerTokenAuthentication().authenticate_credentials(token.encode())

    stored = AuthToken.objects.select_related("user").get(user=user)
    for field in AuthToken._meta.concrete_fields:
        assert getattr(found_token, field.attname) == getattr(stored, field.attname), field.name
    for field in get_user_model()._meta.concrete_fields:
        assert getattr(found_user, field.attname) == getattr(stored.user, field.attname), field.name
    assert found_token.user is found_user
    assert found_token.expiry.tzinfo is not None and found_user.date_joined.tzinfo is not None


def test_an_inactive_users_token_is_refused(client):
    user = UserFactory()
    token = issue_token(client, user.username)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    assert_json_error(client.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"}), 401)


def test_signing_in_deletes_the_users_expired_tokens(client):
    user, other = UserFactory(), UserFactory()
    stale = issue_token(client, user.username)
    kept = issue_token(client, other.username)
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    fresh = issue_token(client, user.username)
    assert AuthToken.objects.filter(user=user).count() == 1  # the expired one is gone, the new one stays
    assert AuthToken.objects.filter(user=other).count() == 1  # another user's tokens are not touched
    assert client.get("/probe/whoami", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    for token in (stale, kept):
        assert_json_error(client.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"}), 401)


def test_token_expiry_follows_the_configured_ttl(client):
    user = UserFactory()
    before = timezone.now()
    issue_token(client, user.username)
    expiry = AuthToken.objects.get(user=user).expiry
    assert timedelta(days=6, hours=23) < expiry - before <= timedelta(days=7, seconds=5)


# --- session auth ------------------------------------------------------------------------


def test_session_login_still_authenticates_api_requests(client):
    user = UserFactory()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    response = client.get("/probe/whoami")
    assert response.json() == {"username": user.username, "auth": "SessionAuthentication"}


def test_force_login_session_authenticates(client):
    user = UserFactory()
    client.force_login(user)
    assert client.get("/probe/whoami").json()["username"] == user.username
    client.logout()
    assert_json_error(client.get("/probe/whoami"), 401)
