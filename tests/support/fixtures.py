"""Fixtures shared by test packages (registered in tests/conftest.py through `pytest_plugins`)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.support.clients import logged_in


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def api(user) -> APIClient:
    """`user`'s API client, logged in with a session."""
    return logged_in(user)
