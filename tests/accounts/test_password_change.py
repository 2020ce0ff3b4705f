"""Changing the password, through any door, revokes every API token and every other session.

Doors: the /password/ page, the Django admin's password form, `manage.py
changepassword`, and plain `set_password()` + `save()`. After each one the
user's old bearer tokens answer 401 and a second browser session is signed out
at its next request; the page and the admin keep the session that made the
change. A log-in that only re-hashes the password (a newer hasher) revokes nothing.
"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.factories import DEFAULT_PASSWORD, UserFactory

NEW_PASSWORD = "a-brand-new pass phrase 77"
User = get_user_model()
pytestmark = pytest.mark.django_db


def _bearer(user) -> APIClient:
    _instance, token = AuthToken.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _browser(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)
    return client


def _signed_in(client) -> bool:
    response = client.get("/api/v1/users/me/wallet")
    return response.status_code == 200


@pytest.fixture
def user_with_credentials():
    user = UserFactory()
    tokens = [_bearer(user), _bearer(user)]
    other_session = _browser(user)
    assert all(_signed_in(client) for client in [*tokens, other_session])
    bystander = UserFactory()
    bystander_token = _bearer(bystander)
    return user, tokens, other_session, bystander_token


def _assert_revoked(user, tokens, other_session, bystander_token) -> None:
    for client in tokens:
        response = client.get("/api/v1/users/me/wallet")
        assert response.status_code == 401, response.content
    assert not AuthToken.objects.filter(user=user).exists()
    assert not _signed_in(other_session)
    assert _signed_in(bystander_token)  # another user's token is untouched
    assert Client().login(username=user.username, password=NEW_PASSWORD)


def test_the_password_page_revokes_tokens_and_other_sessions_and_keeps_this_one(user_with_credentials):
    user, tokens, other_session, bystander_token = user_with_credentials
    page = _browser(user)
    form = page.get("/password/")
    assert form.status_code == 200

    response = page.post(
        "/password/",
        {"old_password": DEFAULT_PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert response.status_code == 302, response.content
    _assert_revoked(user, tokens, other_session, bystander_token)
    assert _signed_in(page)  # the session that changed it stays signed in
    assert b"Password changed" in page.get(response["Location"]).content


def test_a_wrong_old_password_on_the_page_changes_and_revokes_nothing(user_with_credentials):
    user, _tokens, other_session, _bystander = user_with_credentials
    page = _browser(user)
    response = page.post(
        "/password/", {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    )
    assert response.status_code == 200
    assert AuthToken.objects.filter(user=user).count() == 2
    assert _signed_in(other_session)


def test_the_admin_password_form_revokes_them(user_with_credentials):
    user, tokens, other_session, bystander_token = user_with_credentials
    admin = UserFactory(is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(admin)

    response = staff.post(
        f"/admin/accounts/user/{user.pk}/password/",
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    _assert_revoked(user, tokens, other_session, bystander_token)


def test_manage_py_changepassword_revokes_them(user_with_credentials, monkeypatch):
    user, tokens, other_session, bystander_token = user_with_credentials
    answers = iter([NEW_PASSWORD, NEW_PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))

    call_command("changepassword", user.username, stdout=io.StringIO())

    _assert_revoked(user, tokens, other_session, bystander_token)


def test_set_password_and_save_revokes_them(user_with_credentials):
    user, tokens, other_session, bystander_token = user_with_credentials
    fresh = User.objects.get(pk=user.pk)
    fresh.set_password(NEW_PASSWORD)
    fresh.save()
    _assert_revoked(user, tokens, other_session, bystander_token)


def test_saving_without_a_password_change_revokes_nothing(user_with_credentials):
    user, _tokens, other_session, _bystander = user_with_credentials
    fresh = User.objects.get(pk=user.pk)
    fresh.first_name = "Ada"
    fresh.save()
    assert AuthToken.objects.filter(user=user).count() == 2
    assert _signed_in(other_session)


def test_a_rehash_on_login_is_not_a_password_change(user_with_credentials, settings):
    user, tokens, _other_session, _bystander = user_with_credentials
    # A newer hasher first: the next successful log-in re-hashes the same password and saves it.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        *settings.PASSWORD_HASHERS,
    ]
    assert (
        APIClient()
        .post("/api/v1/auth/token", {"username": user.username, "password": DEFAULT_PASSWORD}, format="json")
        .status_code
        == 200
    )
    assert User.objects.get(pk=user.pk).password.startswith("md5$")  # it was re-hashed
    assert AuthToken.objects.filter(user=user).count() == 3  # two old tokens and the new one
    assert all(client.get("/api/v1/users/me/wallet").status_code == 200 for client in tokens)
