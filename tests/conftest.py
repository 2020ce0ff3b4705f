import pytest
from django.db import connection

from billing import meter
from tests.support import markers

pytest_plugins = ("tests.support.fixtures",)  # user, other_user, api

# Tests that take seconds to tens of seconds each, longest kind first; started first, so
# no worker is left running one of them alone at the end of a parallel run.
LONG_RUNNING = ("fuzz", "browser", "gunicorn")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Start the long-running tests first among the transactional ones.

    Runs after pytest-django's sort (database tests, then transactional ones, then the
    rest), which must hold on every xdist worker: a transactional test leaves the
    database empty, so no plain database test may follow it. `--dist load` hands each
    worker its tests in this order, so the long ones start early instead of leaving
    one worker busy alone at the end. Only transactional tests move, within their block.
    """
    unserialized = [item.nodeid for item in items if _flushes_the_seed(item)]
    if unserialized:
        raise pytest.UsageError(
            "transactional tests must keep the seeded data (pricing, content types) with "
            "serialized_rollback=True; after one without it the next serialized test's setup "
            "collides with what the flush re-created: " + ", ".join(unserialized)
        )
    transactional = {index for index, item in enumerate(items) if _is_transactional(item)}
    if not transactional:
        return
    start = min(transactional)
    first, rest = [], []
    for index, item in enumerate(items[start:], start):
        kinds = [rank for rank, name in enumerate(LONG_RUNNING) if item.get_closest_marker(name)]
        (first if kinds and index in transactional else rest).append((min(kinds, default=0), item))
    first.sort(key=lambda ranked: ranked[0])  # stable: collection order within a kind
    items[start:] = [item for _, item in first + rest]


def _django_db_arguments(item) -> dict | None:
    """The test's `django_db` marker arguments (positional ones named as pytest-django names them)."""
    marker = item.get_closest_marker("django_db")
    if marker is None:
        return None
    return dict(zip(("transaction", "reset_sequences"), marker.args, strict=False)) | marker.kwargs


def _flushes_the_seed(item) -> bool:
    arguments = _django_db_arguments(item) or {}
    return bool(arguments.get("transaction")) and not arguments.get("serialized_rollback")


def _is_transactional(item) -> bool:
    """pytest-django's test: `transaction` or `reset_sequences` on django_db, or a live server."""
    arguments = _django_db_arguments(item) or {}
    if arguments.get("transaction") or arguments.get("reset_sequences"):
        return True
    return bool({"transactional_db", "live_server"} & set(getattr(item, "fixturenames", ())))


@pytest.fixture(autouse=True)
def _running_markers(request):
    """Let the helpers that start gunicorn or Chromium check the test carries their marker."""
    markers.running = frozenset(marker.name for marker in request.node.iter_markers())
    yield
    markers.running = None


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
