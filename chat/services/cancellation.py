"""Stop: a running turn's model calls end at once, and the turn commits as `cancelled`.

The turn registers its cancel event under its Idempotency-Key's row id while it
runs. `turn_cancel` (the Stop button, `POST …/turns/cancel`) sets the flag on
the key row and, when the turn runs in this process, its event at once; a turn
running in another process or host sees the flag within
TURN_CANCEL_POLL_SECONDS (one primary-key read, no connection held between reads).
"""

from __future__ import annotations

import threading

from django.utils import timezone

from accounts.models import User
from chat import selectors
from chat.errors import NotFound, TurnFinished
from chat.models import TurnIdempotencyKey
from pantheon.db import release_connection

_lock = threading.Lock()
_running: dict[int, threading.Event] = {}


def register(key_id: int, cancel: threading.Event) -> None:
    with _lock:
        _running[key_id] = cancel


def unregister(key_id: int) -> None:
    with _lock:
        _running.pop(key_id, None)


def cancel_requested(key_id: int) -> bool:
    """Whether a Stop reached the key row (from any process); the connection is given back after."""
    try:
        return TurnIdempotencyKey.objects.filter(pk=key_id, cancel_requested_at__isnull=False).exists()
    finally:
        release_connection()


def turn_cancel(*, user: User, room_id: int, idempotency_key: str) -> None:
    """Stop the user's running turn that was posted with `idempotency_key` in this room.

    404 for an unknown key or room, 409 when the turn already finished.
    """
    if selectors.room_get(user_id=user.pk, room_id=room_id) is None:
        raise NotFound("Room not found.")
    row = TurnIdempotencyKey.objects.filter(user_id=user.pk, key=idempotency_key).first()
    if row is None:
        raise NotFound("No turn was posted with this Idempotency-Key.")
    stopped = TurnIdempotencyKey.objects.filter(pk=row.pk, status=TurnIdempotencyKey.Status.PENDING).update(
        cancel_requested_at=timezone.now()
    )
    if not stopped:
        raise TurnFinished("This turn has already finished.")
    with _lock:
        event = _running.get(row.pk)
    if event is not None:
        event.set()
