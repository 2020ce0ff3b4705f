"""Errors are JSON for the API and a friendly page for the site; each turn logs one structured
line; no log record carries a token, a password or an API key.

This module doubles as a URLconf: the real routes plus three views that raise.
"""

from __future__ import annotations

import logging
import re

import pytest
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path
from rest_framework.permissions import AllowAny
from rest_framework.test import APIClient
from rest_framework.views import APIView

from pantheon.urls import handler404, handler500  # noqa: F401 - the handlers of this URLconf
from tests.factories import DEFAULT_PASSWORD, RoomFactory, UserFactory
from tests.support.clients import bearer
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_tavily import FakeTavily

OPENAI_KEY = "sk-test-openai-key-that-must-never-be-logged-0123"
TAVILY_KEY = "tvly-test-key-that-must-never-be-logged-4567"


class BoomAPI(APIView):
    permission_classes = [AllowAny]

    def get(self, request):
        raise RuntimeError("a bug in an API view")


class DatabaseGoneAPI(APIView):
    permission_classes = [AllowAny]

    def get(self, request):
        raise OperationalError("server closed the connection unexpectedly")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in a plain view")


urlpatterns = [
    path("api/v1/test-boom", BoomAPI.as_view()),
    path("api/v1/test-db-gone", DatabaseGoneAPI.as_view()),
    path("api/test-plain-boom", boom),
    path("test-boom/", boom),
    path("", include("pantheon.urls")),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def _assert_json(response, status: int, error: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == error


def _assert_friendly_page(response, status: int, heading: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    text = response.content.decode()
    assert heading in text
    assert "Traceback" not in text and "RuntimeError" not in text  # no debug page


# --- error shapes ---------------------------------------------------------------------------


def test_a_lost_database_is_a_retryable_503_json():
    response = Client(raise_request_exception=False).get("/api/v1/test-db-gone")
    _assert_json(response, 503, "database_unavailable")
    assert response["Retry-After"] == "1"


def test_api_errors_are_json(settings):
    assert settings.DEBUG is False
    client = Client(raise_request_exception=False)
    _assert_json(client.get("/api/v1/no-such-endpoint"), 404, "not_found")
    _assert_json(client.delete("/api/v1/users/me/wallet"), 401, "not_authenticated")
    client.force_login(UserFactory())
    _assert_json(client.delete("/api/v1/users/me/wallet"), 405, "method_not_allowed")
    _assert_json(client.get("/api/v1/test-boom"), 500, "server_error")
    _assert_json(client.get("/api/test-plain-boom"), 500, "server_error")


def test_a_500_body_says_nothing_about_the_bug(caplog):
    response = Client(raise_request_exception=False).get("/api/v1/test-boom")
    assert response.json() == {"error": "server_error", "detail": "Internal server error."}
    assert "a bug in an API view" in caplog.text  # logged for the operator, with its traceback


def test_site_errors_are_friendly_pages():
    client = Client(raise_request_exception=False)
    _assert_friendly_page(client.get("/no-such-page/"), 404, "Page not found")
    _assert_friendly_page(client.get("/test-boom/"), 500, "Something went wrong")
    client.force_login(UserFactory())
    _assert_friendly_page(client.get("/rooms/999999/"), 404, "Page not found")


def test_a_json_client_gets_json_errors_outside_api_too():
    client = Client(raise_request_exception=False, headers={"Accept": "application/json"})
    _assert_json(client.get("/no-such-page/"), 404, "not_found")
    _assert_json(client.get("/test-boom/"), 500, "server_error")


# --- the turn log line and secrets -------------------------------------------------------------


def _fields(message: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", message))


@pytest.fixture
def providers(settings, tmp_path):
    """The real OpenAI and Tavily clients against local servers, with keys that must stay secret."""
    settings.MEDIA_ROOT = tmp_path / "media"
    for name in ("ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "DEEPSEEK_API_KEY"):
        setattr(settings, name, "")
    with (
        FakeOpenAI(tool_calls=[("web_search", {"query": "pantheon"})]) as openai,
        FakeTavily(api_key=TAVILY_KEY) as tavily,
    ):
        settings.OPENAI_API_KEY = OPENAI_KEY
        settings.OPENAI_BASE_URL = openai.base_url
        settings.LLM_MAX_RETRIES = 0
        settings.TAVILY_API_KEY = TAVILY_KEY
        settings.TAVILY_BASE_URL = tavily.url
        yield openai, tavily


def test_each_turn_logs_one_structured_line_and_no_secret_is_ever_logged(providers, caplog):
    openai, tavily = providers
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    caplog.set_level(logging.DEBUG)  # everything any library logs, not only what production keeps

    token_response = APIClient().post(
        "/api/v1/auth/token", {"username": user.username, "password": DEFAULT_PASSWORD}, format="json"
    )
    token = token_response.json()["token"]
    client = bearer(token)
    turn = client.post(f"/api/v1/rooms/{room.pk}/turns/", {"content": "Search for pantheon"}, format="json")
    assert turn.status_code == 201, turn.content
    page_login = Client().post("/login/", {"username": user.username, "password": DEFAULT_PASSWORD})
    assert page_login.status_code == 302
    failed_login = APIClient().post(
        "/api/v1/auth/token",
        {"username": user.username, "password": "wrong-" + DEFAULT_PASSWORD},
        format="json",
    )
    assert failed_login.status_code == 401

    # The providers were really called, with the keys.
    assert openai.completions() and tavily.requests

    body = turn.json()
    turn_lines = [
        r for r in caplog.records if r.name == "chat.services.turns" and r.getMessage().startswith("turn ")
    ]
    assert len(turn_lines) == 1
    fields = _fields(turn_lines[0].getMessage())
    assert turn_lines[0].levelno == logging.INFO
    assert fields["user"] == str(user.pk)
    assert fields["turn"] == str(body["id"])
    assert fields["room"] == str(room.pk)
    assert fields["credits"] == body["credits_burned"]
    assert fields["balance"] == body["balance"]
    assert int(fields["latency_ms"]) >= 0
    assert fields["tool_calls"] == "1"

    secrets = {
        "bearer token": token,
        "password": DEFAULT_PASSWORD,
        "OpenAI key": OPENAI_KEY,
        "Tavily key": TAVILY_KEY,
    }
    assert len(caplog.records) > 5  # the libraries did log
    for record in caplog.records:
        rendered = " ".join(
            [
                record.getMessage(),
                str(record.args),
                record.exc_text or "",
                str(getattr(record, "request", "")),
            ]
        )
        for what, secret in secrets.items():
            assert secret not in rendered, f"{what} in a {record.name} log record: {rendered[:300]}"
    for what, secret in secrets.items():
        assert secret not in caplog.text, what
