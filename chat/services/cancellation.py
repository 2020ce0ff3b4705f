"""Stop: a running turn's model calls end at once, and the turn commits as `cancelled`.

The turn registers its `TurnCancel` under its Idempotency-Key's row id while it
runs. `turn_cancel` (the Stop button, `POST …/turns/cancel`) sets the flag on
the key row and, when the turn runs in this process, its cancel at once; for a
turn running in another process or host, one watcher thread per process reads
the flags of all its running turns every TURN_CANCEL_POLL_SECONDS (one query
for all of them, no connection held between reads) and sets theirs.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.models import User
from chat import selectors
from chat.errors import NotFound, TurnFinished
from chat.models import TurnIdempotencyKey
from pantheon.db import release_connection

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_changed = threading.Condition(_lock)
_running: dict[int, TurnCancel] = {}
_watcher: threading.Thread | None = None


class TurnCancel(threading.Event):
    """A turn's Stop. Setting it also sets the events that asked to be woken by it
    (the turn's wait for its agents sleeps until an agent ends or this is set)."""

    def __init__(self) -> None:
        super().__init__()
        self._wakes: list[threading.Event] = []

    def wakes(self, event: threading.Event) -> None:
        self._wakes.append(event)
        if self.is_set():
            event.set()

    def set(self) -> None:
        super().set()
        for event in list(self._wakes):
            event.set()


def register(key_id: int, cancel: TurnCancel) -> None:
    global _watcher
    with _lock:
        _running[key_id] = cancel
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch, daemon=True, name="pantheon-cancel-watcher")
            _watcher.start()
        _changed.notify()


def unregister(key_id: int) -> None:
    with _lock:
        _running.pop(key_id, None)


def cancel_requested(key_id: int) -> bool:
    """Whether a Stop reached the key row (from any process); the connection is given back after."""
    try:
        return TurnIdempotencyKey.objects.filter(pk=key_id, cancel_requested_at__isnull=False).exists()
    finally:
        release_connection()


def _watch() -> None:
    """Every TURN_CANCEL_POLL_SECONDS while turns run here: one read of their flags, their cancels set."""
    while True:
        with _lock:
            while not _running:
                _changed.wait()
        time.sleep(settings.TURN_CANCEL_POLL_SECONDS)
        with _lock:
            ids = list(_running)
        if not ids:
            continue
        try:
            stopped = list(
                TurnIdempotencyKey.objects.filter(pk__in=ids, cancel_requested_at__isnull=False).values_list(
                    "pk", flat=True
                )
            )
        except Exception:  # the database went away, the process is shutting down: try again later
            logger.warning("could not read the Stop flags of %d running turns; retrying", len(ids))
            stopped = []
        finally:
            connection.close()  # this thread's own connection: back to the pool until the next read
        with _lock:
            found = [_running[key_id] for key_id in stopped if key_id in _running]
        for cancel in found:
            cancel.set()


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
