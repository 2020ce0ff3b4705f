import pytest
from django.db import connection

from billing import meter


@pytest.fixture(autouse=True, scope="session")
def _require_postgresql(django_db_setup, django_db_blocker):
    """The suite runs on PostgreSQL only; it fails (never skips) without it."""
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            pytest.fail(
                f"tests need PostgreSQL, got {connection.vendor!r}: set DATABASE_URL=postgres://… "
                "or run `make test`",
                pytrace=False,
            )


@pytest.fixture(autouse=True)
def _fresh_pricing_cache():
    """Each test starts with an unloaded multiplier cache (databases are reset between tests)."""
    meter.clear_pricing_cache()
    yield
    meter.clear_pricing_cache()
