"""Chat test fixtures: fake providers on demand.

Offline models and a temporary upload disk come from `tests/conftest.py`; `user`,
`other_user` and the logged-in `api` client from `tests/support/fixtures.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_tavily import FakeTavily

FAKE_OPENAI_KEY = "sk-test-openai-not-a-real-key"
FAKE_TAVILY_KEY = "tvly-test-not-a-real-key"


@pytest.fixture
def openai_server(settings) -> Callable[..., FakeOpenAI]:
    """Start a local OpenAI-compatible server and point the `openai` provider at it."""
    started: list[FakeOpenAI] = []

    def start(**options) -> FakeOpenAI:
        server = FakeOpenAI(**options).__enter__()
        started.append(server)
        settings.OPENAI_API_KEY = FAKE_OPENAI_KEY
        settings.OPENAI_BASE_URL = server.base_url
        settings.LLM_MAX_RETRIES = 0
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def tavily_server(settings) -> FakeTavily:
    """A local Tavily-protocol server; web search is enabled and pointed at it."""
    with FakeTavily(api_key=FAKE_TAVILY_KEY) as server:
        settings.TAVILY_API_KEY = FAKE_TAVILY_KEY
        settings.TAVILY_BASE_URL = server.url
        yield server
