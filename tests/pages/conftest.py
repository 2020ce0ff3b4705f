"""Page test fixtures: the offline model everywhere and uploads on a temporary disk."""

from __future__ import annotations

import pytest

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
    """A developer's real keys in `.env` must never send a test turn to the network."""
    for name in PROVIDER_SETTINGS:
        setattr(settings, name, "")
    settings.CREDIT_ENFORCEMENT = "observe"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
