"""Fixtures shared by the page tests."""

import pytest


@pytest.fixture
def orm_in_playwright_thread(monkeypatch):
    """Playwright's sync API runs an event loop in the test's thread; the ORM reads a browser test
    makes there (assertions) are plain synchronous calls, so the async guard is lifted for it."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
