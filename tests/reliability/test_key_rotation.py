"""Rotating SECRET_KEY (docs/deploy.md): with the old key in SECRET_KEY_FALLBACKS nobody is logged
out and no signed cursor breaks; once the fallback is dropped, both are refused. API tokens
(knox: stored as a hash, no SECRET_KEY involved) are unaffected either way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.factories import UsageEventFactory, UserFactory
from tests.support.clients import client_for, logged_in
from tests.support.gunicorn_server import PROJECT_ROOT

OLD_KEY = "old-secret-key-for-the-rotation-test-0123456789-abcdefghijkl"
NEW_KEY = "new-secret-key-for-the-rotation-test-9876543210-zyxwvutsrqpo"


def test_secret_key_fallbacks_is_read_from_the_environment():
    env = {**os.environ, "SECRET_KEY": NEW_KEY, "SECRET_KEY_FALLBACKS": f"{OLD_KEY},older-key"}
    shown = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.SECRET_KEY_FALLBACKS)"],
        cwd=PROJECT_ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "pantheon.settings"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.strip() == str([OLD_KEY, "older-key"])


@pytest.mark.django_db
def test_rotating_secret_key_keeps_sessions_and_cursors_only_while_the_old_key_is_a_fallback(settings):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD_KEY, []
    user = UserFactory()
    turn = UsageEventFactory(user=user).turn
    UsageEventFactory(user=user, turn=turn, room=turn.room)
    active, idle = logged_in(user), logged_in(user)  # sessions whose auth hash is signed under the old key
    cursor_url = active.get("/api/v1/users/me/usage?page_size=1").json()["next"]
    assert cursor_url
    api = client_for(user)

    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]
    # Accepted through the fallback, and Django re-signs the visiting session under the new key.
    assert active.get("/api/v1/users/me/wallet").status_code == 200
    assert len(active.get(cursor_url).json()["results"]) == 1
    assert api.get("/api/v1/users/me/wallet").status_code == 200

    settings.SECRET_KEY_FALLBACKS = []
    assert active.get("/api/v1/users/me/wallet").status_code == 200
    # A session that did not come back during the rotation is logged out; old cursors are refused.
    assert idle.get("/api/v1/users/me/wallet").status_code in (401, 403)
    refused = active.get(cursor_url)
    assert refused.status_code == 400 and "cursor" in str(refused.json()["detail"])
    assert api.get("/api/v1/users/me/wallet").status_code == 200
