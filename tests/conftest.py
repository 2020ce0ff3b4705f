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


PROVIDER_SETTINGS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "DEEPSEEK_API_KEY",
    "TAVILY_API_KEY",
)


@pytest.fixture(autouse=True)
def _offline_local_disk(settings, tmp_path):
    """Offline model everywhere and uploads under a temporary MEDIA_ROOT.

    A developer's real keys in `.env` must never send a test turn to the network;
    tests that want a provider start a local fake server and set its key themselves.
    """
    for name in PROVIDER_SETTINGS:
        setattr(settings, name, "")
    settings.CREDIT_ENFORCEMENT = "observe"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }


@pytest.fixture(autouse=True)
def _fresh_pricing_cache():
    """Each test starts with an unloaded multiplier cache (databases are reset between tests)."""
    meter.clear_pricing_cache()
    yield
    meter.clear_pricing_cache()
