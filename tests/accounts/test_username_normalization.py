"""Look-alike usernames: one name per NFKC case-folded spelling, enforced in the database.

Hypothesis generates names and look-alikes of them (case swaps, full-width
forms, compatibility ligatures) and tries every door: the sign-up API, the
sign-up page, the Django admin, `createsuperuser`, and a direct insert that
skips every check. Only the first spelling is ever stored.
"""

from __future__ import annotations

import io
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from accounts.models import username_key
from accounts.services import SignupError, user_create
from tests.factories import DEFAULT_PASSWORD, UserFactory

User = get_user_model()
PASSWORD = "a-long-pass phrase 42"
PROPERTY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=3, max_size=20
)


@contextmanager
def rolled_back():
    """One hypothesis example in a savepoint that is undone: each example starts from no user."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def _full_width(text: str) -> str:
    """ASCII letters and digits as their full-width forms (U+FF01–FF5E)."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


@st.composite
def look_alike(draw, name: str) -> str:
    """Another spelling of `name`: per character, its case swapped and/or its full-width form."""
    out = []
    for char in name:
        if draw(st.booleans()):
            char = char.swapcase()
        if draw(st.booleans()):
            char = _full_width(char)
        out.append(char)
    spelled = "".join(out)
    return spelled if spelled != name else _full_width(name)


@st.composite
def name_and_look_alike(draw) -> tuple[str, str]:
    name = draw(names)
    return name, draw(look_alike(name))


def test_the_key_is_nfkc_casefold():
    assert username_key("Alice") == username_key("ＡＬＩＣＥ") == username_key("aLiCe") == "alice"
    assert username_key("Straße") == username_key("STRASSE") == "strasse"
    assert username_key("ﬁsh") == username_key("FISH")  # the ligature is two letters


@pytest.mark.django_db
@PROPERTY
@given(pair=name_and_look_alike())
def test_a_look_alike_cannot_sign_up_through_the_service(pair):
    name, other = pair
    with rolled_back():
        user_create(username=name, password=PASSWORD)
        with pytest.raises(SignupError) as refused:
            user_create(username=other, password=PASSWORD)
        assert refused.value.errors == {"username": ["A user with that username already exists."]}
        assert User.objects.filter(username_key=username_key(name)).count() == 1


@pytest.mark.django_db
@PROPERTY
@given(pair=name_and_look_alike())
def test_a_look_alike_is_a_400_on_the_api_and_the_page(pair):
    name, other = pair
    with rolled_back():
        assert UserFactory(username=name).username == name
        api = APIClient().post(
            "/api/v1/auth/register", {"username": other, "password": PASSWORD}, format="json"
        )
        assert api.status_code == 400, api.content
        assert api.json()["detail"]["username"] == ["A user with that username already exists."]
        page = Client().post("/signup/", {"username": other, "password1": PASSWORD, "password2": PASSWORD})
        assert page.status_code == 200
        assert b"already exists" in page.content
        assert User.objects.filter(username_key=username_key(name)).count() == 1


@pytest.mark.django_db
@PROPERTY
@given(pair=name_and_look_alike())
def test_the_database_refuses_a_look_alike_that_skips_every_check(pair):
    name, other = pair
    with rolled_back():
        UserFactory(username=name)
        with pytest.raises(IntegrityError), transaction.atomic():
            User.objects.create(username=other)  # save() sets the key; only the unique index stops it
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO accounts_user (password, is_superuser, username, username_key, first_name, "
                "last_name, email, is_staff, is_active, date_joined) "
                "VALUES ('', false, %s, %s, '', '', '', false, true, now())",
                [other, username_key(other)],
            )


@pytest.mark.django_db
def test_the_admin_add_form_refuses_a_look_alike():
    UserFactory(username="Alice")
    staff = Client()
    staff.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = staff.post(
        "/admin/accounts/user/add/",
        {"username": "ａｌｉｃｅ", "password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 200  # the form again, with the error
    assert "already exists" in response.content.decode()
    assert User.objects.filter(username_key="alice").count() == 1


@pytest.mark.django_db
def test_createsuperuser_refuses_a_look_alike(monkeypatch):
    UserFactory(username="Alice")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    with pytest.raises(CommandError, match="already taken"):
        call_command(
            "createsuperuser",
            "--noinput",
            "--username",
            "ＡＬＩＣＥ",
            "--email",
            "a@example.test",
            stdout=io.StringIO(),
        )
    assert User.objects.filter(username_key="alice").count() == 1


@pytest.mark.django_db
def test_log_in_accepts_any_spelling_of_the_one_name():
    user = UserFactory(username="Alice")
    for spelling in ("Alice", "alice", "ＡＬＩＣＥ"):
        response = APIClient().post(
            "/api/v1/auth/token", {"username": spelling, "password": DEFAULT_PASSWORD}, format="json"
        )
        assert response.status_code == 200, spelling
    assert Client().login(username="aLiCe", password=DEFAULT_PASSWORD)
    assert user.username == "Alice"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_migration_keys_existing_users_and_parks_older_look_alikes():
    executor = MigrationExecutor(connection)
    executor.migrate([("accounts", "0002_cache_table")])
    try:
        old_user = executor.loader.project_state([("accounts", "0002_cache_table")]).apps.get_model(
            "accounts", "User"
        )
        first = old_user.objects.create(username="Bob", password="!")
        second = old_user.objects.create(username="ＢＯＢ", password="!")  # stored before the fix
        other = old_user.objects.create(username="carol", password="!")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    keys = dict(User.objects.values_list("pk", "username_key"))
    assert keys[first.pk] == "bob"
    assert keys[second.pk] == f"bob#{second.pk}"
    assert keys[other.pk] == "carol"
    # Both old accounts still log in by their exact names; nobody can take a third spelling.
    assert User.objects.get_by_natural_key("ＢＯＢ").pk == second.pk
    assert User.objects.get_by_natural_key("Bob").pk == first.pk
    with pytest.raises(SignupError):
        user_create(username="bob", password=PASSWORD)
