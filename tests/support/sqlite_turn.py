"""Drive the SQLite build of the app through its real API and print what it answered, as JSON.

Run by tests/test_sqlite_turn.py in a subprocess whose environment selects SQLite
(DATABASE_URL=sqlite:////…), after `manage.py migrate` on that file:

    python -m tests.support.sqlite_turn

It signs up, takes a Bearer token, creates a two-agent room, posts two turns
(the second with an Idempotency-Key), replays the second, and reads the
wallet, the ledger and the room's turns along the way. Nothing is judged
here: the test asserts on the summary. Any exception exits non-zero with its
traceback on stderr.
"""

from __future__ import annotations

import json
import os
import sys

USERNAME = "sqlite-newcomer"
PASSWORD = "a-long-enough-passphrase-42"
AGENTS = ["gpt-4o", "claude-sonnet"]
# The same number of tokens (9 each): the agents' prompts differ in size only by the history.
FIRST = "Hello both of you, please introduce yourselves."
SECOND = "Now both of you, please compare yourselves."
IDEMPOTENCY_KEY = "sqlite-turn-2"


def main() -> dict:
    from django.conf import settings
    from django.db import connection
    from rest_framework.test import APIClient

    def call(client: APIClient, method: str, path: str, body: dict | None = None, **meta: str) -> dict:
        if method == "get":
            response = client.get(path, **meta)
        else:
            response = client.post(path, body, format="json", **meta)
        return {
            "status": response.status_code,
            "replayed": response.headers.get("Idempotent-Replayed"),
            "body": response.json(),
        }

    def ledger(client: APIClient) -> dict:
        return call(client, "get", "/api/v1/users/me/transactions?page_size=200")

    # The app's own ALLOWED_HOSTS (127.0.0.1, localhost): present as localhost, not "testserver".
    anonymous = APIClient(SERVER_NAME="localhost")
    credentials = {"username": USERNAME, "password": PASSWORD}
    register = call(anonymous, "post", "/api/v1/auth/register", credentials)
    token = call(anonymous, "post", "/api/v1/auth/token", credentials)

    client = APIClient(SERVER_NAME="localhost")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token['body'].get('token', '')}")
    wallet_at_signup = call(client, "get", "/api/v1/users/me/wallet")
    room = call(client, "post", "/api/v1/rooms/", {"title": "SQLite room", "agents": AGENTS})
    turns_url = f"/api/v1/rooms/{room['body'].get('id')}/turns/"

    first = call(client, "post", turns_url, {"content": FIRST})
    second = call(client, "post", turns_url, {"content": SECOND}, HTTP_IDEMPOTENCY_KEY=IDEMPOTENCY_KEY)
    ledger_before_replay = ledger(client)
    wallet_before_replay = call(client, "get", "/api/v1/users/me/wallet")
    replay = call(client, "post", turns_url, {"content": SECOND}, HTTP_IDEMPOTENCY_KEY=IDEMPOTENCY_KEY)

    return {
        "vendor": connection.vendor,
        "database": str(settings.DATABASES["default"]["NAME"]),
        "debug": settings.DEBUG,
        "grant": str(settings.BETA_GRANT_CREDITS),
        "register": register,
        "token": {"status": token["status"], "has_token": bool(token["body"].get("token"))},
        "wallet_at_signup": wallet_at_signup,
        "room": room,
        "turns": [first, second],
        "replay": replay,
        "ledger_before_replay": ledger_before_replay,
        "wallet_before_replay": wallet_before_replay,
        "ledger": ledger(client),
        "wallet": call(client, "get", "/api/v1/users/me/wallet"),
        "turn_list": call(client, "get", turns_url),
    }


if __name__ == "__main__":
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    django.setup()
    json.dump(main(), sys.stdout)
    sys.stdout.write("\n")
