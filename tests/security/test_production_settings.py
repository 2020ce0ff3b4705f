"""Production settings, checked in fresh processes with a production environment.

Each test runs `manage.py` (or imports the WSGI module) in a subprocess whose
environment is the test's own minus the test-only switches (`SECURE_HTTPS`,
`DEBUG`), so what is checked is what a deployment gets from the settings.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gunicorn_server import database_url

# The subprocesses read the test database (makemigrations checks its history there), so
# it must exist even when this module runs alone.
pytestmark = pytest.mark.django_db
PROJECT_ROOT = Path(__file__).resolve().parents[2]
REMOVED = ("SECURE_HTTPS", "DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE", "ALLOWED_HOSTS")


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in REMOVED}
    # The test database (this xdist worker's own): the environment's DATABASE_URL names a
    # database the tests never create, and `makemigrations` waits out its pool timeout there.
    environment["DATABASE_URL"] = database_url()
    environment.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _production_env(**overrides: str) -> dict[str, str]:
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "pantheon.example.com",
        **overrides,
    }


def test_check_deploy_is_clean_with_debug_off_and_a_real_secret_key():
    result = _run("manage.py", "check", "--deploy", "--fail-level", "WARNING", **_production_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in output
    assert "WARNING" not in output


def test_the_deploy_check_would_catch_what_secure_https_turns_off():
    """The negative control: the clean run above is not a check that sees nothing."""
    result = _run(
        "manage.py", "check", "--deploy", "--fail-level", "WARNING", **_production_env(SECURE_HTTPS="false")
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in output, check  # HSTS, SSL redirect, secure session and CSRF cookies


def test_production_defaults_are_https_only():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_HTTPONLY, s.X_FRAME_OPTIONS)"
    )
    result = _run("-c", code, DJANGO_SETTINGS_MODULE="pantheon.settings", **_production_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "False",
        "True",
        "True",
        "True",
        "31536000",
        "('HTTP_X_FORWARDED_PROTO',",
        "'https')",
        "True",
        "DENY",
    ]


def test_debug_off_without_a_secret_key_refuses_to_start_with_a_clear_message():
    for secret in (None, ""):
        env = {"DEBUG": "false", "ALLOWED_HOSTS": "pantheon.example.com"}
        if secret is not None:
            env["SECRET_KEY"] = secret
        for command in (
            ("manage.py", "check"),
            ("-c", "import pantheon.wsgi"),  # what gunicorn loads
        ):
            result = _run(*command, DJANGO_SETTINGS_MODULE="pantheon.settings", **env)
            assert result.returncode != 0, (command, result.stdout)
            assert "SECRET_KEY is not set" in result.stderr, (command, result.stderr)
            assert "ImproperlyConfigured" in result.stderr


def test_schema_only_commands_run_without_a_secret_key():
    """`makemigrations`/`migrate` sign nothing, so a missing key does not stop them."""
    env = {
        "DEBUG": "false",
        "ALLOWED_HOSTS": "pantheon.example.com",
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
    }
    result = _run("manage.py", "makemigrations", "--check", "--dry-run", **env)
    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout
    # Serving (and `check`) still refuse: see the test above.


def test_a_malformed_throttle_rate_refuses_to_start():
    result = _run("manage.py", "check", **_production_env(THROTTLE_TURN_RATE="lots"))
    assert result.returncode != 0
    assert "THROTTLE_TURN_RATE='lots'" in result.stderr
