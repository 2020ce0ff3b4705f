"""API clients logged in the ways the product allows: a session (as the browser) or a knox token."""

from __future__ import annotations

import requests
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.factories import DEFAULT_PASSWORD


def logged_in(user) -> APIClient:
    """An in-process client with a real session, as the browser uses."""
    client = APIClient()
    client.force_login(user)
    return client


def token_for(user) -> str:
    """A fresh knox token for `user`, created directly (no request)."""
    _, token = AuthToken.objects.create(user)
    return token


def bearer(token: str) -> APIClient:
    """An in-process client that sends `Authorization: Bearer <token>`."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def client_for(user) -> APIClient:
    """An in-process client that authenticates the real way: a knox bearer token."""
    return bearer(token_for(user))


def live_token(base_url: str, user, password: str = DEFAULT_PASSWORD) -> str:
    """Log in over HTTP to a running server (live_server.url, gunicorn) and return the token."""
    response = requests.post(
        f"{base_url}/api/v1/auth/token",
        json={"username": user.username, "password": password},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["token"]
