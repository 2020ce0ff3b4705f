"""Sign-up, log-in, log-out pages and the header balance."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import CreditTransaction, CreditWallet
from billing.services import wallet_debit
from tests.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
User = get_user_model()


def test_signup_creates_user_wallet_with_beta_grant_and_logs_in(client):
    response = client.post(
        "/signup/",
        {
            "username": "ada",
            "email": "",
            "password1": "a-long-pass phrase",
            "password2": "a-long-pass phrase",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/rooms/"
    user = User.objects.get(username="ada")
    wallet = CreditWallet.objects.get(user=user)
    assert wallet.balance == Decimal("500.0000")
    assert list(CreditTransaction.objects.filter(wallet=wallet).values_list("kind", "amount")) == [
        ("grant", Decimal("500.0000"))
    ]
    # Signed in: the rooms page answers and the header shows the beta balance.
    page = client.get("/rooms/")
    assert page.status_code == 200
    assert b'id="header-balance" data-testid="header-balance">500.0000<' in page.content
    assert b"ada" in page.content


def test_signup_shows_password_validation_messages(client):
    response = client.post("/signup/", {"username": "bob", "password1": "12345678", "password2": "12345678"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "This password is too common." in html
    assert "This password is entirely numeric." in html
    assert 'aria-invalid="true"' in html
    assert not User.objects.filter(username="bob").exists()


def test_signup_mismatched_passwords_and_taken_username(client):
    UserFactory(username="taken")
    response = client.post(
        "/signup/", {"username": "taken", "password1": "a-long-pass phrase", "password2": "different phrase!"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "The two passwords do not match." in html
    response = client.post(
        "/signup/",
        {"username": "Taken", "password1": "a-long-pass phrase", "password2": "a-long-pass phrase"},
    )
    assert "A user with that username already exists." in response.content.decode()
    assert User.objects.filter(username__iexact="taken").count() == 1


def test_signup_closed(client, settings):
    settings.ALLOW_SIGNUP = False
    response = client.get("/signup/")
    assert response.status_code == 403
    assert b"Sign-up is closed" in response.content
    response = client.post(
        "/signup/", {"username": "eve", "password1": "a-long-pass phrase", "password2": "a-long-pass phrase"}
    )
    assert response.status_code == 403
    assert not User.objects.filter(username="eve").exists()


def test_signup_requires_csrf():
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/signup/", {"username": "ada", "password1": "a-long-pass phrase", "password2": "a-long-pass phrase"}
    )
    assert response.status_code == 403
    assert not User.objects.filter(username="ada").exists()


def test_login_and_logout(client):
    user = UserFactory()
    response = client.post("/login/", {"username": user.username, "password": "wrong"})
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    response = client.post("/login/", {"username": user.username, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/rooms/"
    assert client.get("/rooms/").status_code == 200
    # Log-out is POST only: a GET (a link, a prefetch) signs nobody out.
    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert client.get("/rooms/")["Location"] == "/login/?next=/rooms/"


def test_login_honours_next(client):
    user = UserFactory()
    response = client.post(
        "/login/?next=/wallet/", {"username": user.username, "password": DEFAULT_PASSWORD, "next": "/wallet/"}
    )
    assert response["Location"] == "/wallet/"


def test_home_redirects(client):
    assert client.get("/")["Location"] == "/login/?next=/"
    client.force_login(UserFactory())
    assert client.get("/")["Location"] == "/rooms/"


def test_header_balance_is_current_and_anonymous_pages_do_not_query(client):
    user = UserFactory()
    wallet_debit(wallet_id=user.wallet.pk, amount=Decimal("12.3456"))
    client.force_login(user)
    assert b">487.6544<" in client.get("/wallet/").content
    client.logout()
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/login/")
    assert response.status_code == 200
    assert b"header-balance" not in response.content
    assert [q["sql"] for q in queries.captured_queries if "billing_" in q["sql"]] == []


def test_not_found_page_uses_the_site_layout(client):
    client.force_login(UserFactory())
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content
    assert b"pantheon.css" in response.content
