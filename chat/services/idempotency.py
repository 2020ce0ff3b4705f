"""The `Idempotency-Key` lease protocol for turns.

A key is reserved (committed at once) before any model runs, so a key runs a
turn once. A duplicate that finds the key pending waits for the first request
to finish (then replays its response), fail (then runs the turn itself) or
lose its lease (then takes it over). The turn's own transaction marks the key
done with the response, so a replay answers exactly what the first request did.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError
from django.utils import timezone

from chat.errors import IdempotencyInProgress, IdempotencyMismatch
from chat.models import TurnIdempotencyKey
from chat.services.capacity import turn_work
from pantheon.db import release_connection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reservation:
    key_id: int
    # Our lease; the key row is ours only while it still holds this exact value.
    locked_until: datetime


@dataclass(frozen=True)
class StoredResponse:
    response: dict[str, Any]
    status: int


class ReservationLost(Exception):
    """Our stale reservation was taken over by another request; it runs the turn."""


def key_reserve(
    *, user_id: int, key: str, fingerprint: str
) -> tuple[Reservation | None, StoredResponse | None]:
    """Reserve `key` for this request (committed at once) or return the stored response.

    After IDEMPOTENCY_WAIT_SECONDS of waiting on a pending key it answers 409 "in progress".
    """
    deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
    delay = 0.02
    while True:
        now = timezone.now()
        lease = now + timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
        row: TurnIdempotencyKey | None
        try:
            # get_or_create's own short transaction: the reservation commits before any model runs.
            row, created = TurnIdempotencyKey.objects.get_or_create(
                user_id=user_id, key=key, defaults={"request_fingerprint": fingerprint, "locked_until": lease}
            )
        except IntegrityError:
            row, created = None, False  # the winner's row vanished between our insert and our read
        if row is not None and created:
            return Reservation(row.pk, row.locked_until), None
        if row is not None:
            if row.request_fingerprint != fingerprint:
                raise IdempotencyMismatch("This Idempotency-Key was already used with a different request.")
            if row.status == TurnIdempotencyKey.Status.DONE:
                return None, StoredResponse(row.response or {}, row.response_status)
            # A pending key whose lease ran out: its worker died. Take it over, atomically, once.
            if row.locked_until <= now and _take_over(row, lease):
                return Reservation(row.pk, lease), None
        if time.monotonic() >= deadline:
            raise IdempotencyInProgress(
                "A request with this Idempotency-Key is still running; retry shortly."
            )
        release_connection()  # not while we wait
        with turn_work.outside():
            time.sleep(delay)
        delay = min(delay * 2, 0.25)


def key_has_response(*, user_id: int, key: str, fingerprint: str) -> bool:
    """Whether `key` already holds the finished response to this same request (a replay)."""
    return TurnIdempotencyKey.objects.filter(
        user_id=user_id, key=key, request_fingerprint=fingerprint, status=TurnIdempotencyKey.Status.DONE
    ).exists()


def _take_over(row: TurnIdempotencyKey, lease: datetime) -> bool:
    taken = TurnIdempotencyKey.objects.filter(
        pk=row.pk, status=TurnIdempotencyKey.Status.PENDING, locked_until=row.locked_until
    ).update(locked_until=lease)
    return taken == 1


def key_complete(reservation: Reservation, *, turn_id: int, response: dict[str, Any], status: int) -> None:
    """Store the turn's response on its key; runs inside the turn's transaction.

    Raises ReservationLost (rolling the turn back) if another request took the key over.
    """
    claimed = TurnIdempotencyKey.objects.filter(
        pk=reservation.key_id,
        status=TurnIdempotencyKey.Status.PENDING,
        locked_until=reservation.locked_until,
    ).update(
        status=TurnIdempotencyKey.Status.DONE, turn_id=turn_id, response=response, response_status=status
    )
    if not claimed:
        raise ReservationLost()


def key_release(reservation: Reservation) -> None:
    """Forget a failed request's reservation so a retry can run the turn."""
    try:
        TurnIdempotencyKey.objects.filter(
            pk=reservation.key_id,
            status=TurnIdempotencyKey.Status.PENDING,
            locked_until=reservation.locked_until,
        ).delete()
    except DatabaseError:
        # The lease expires on its own; a retry then takes the key over.
        logger.warning("could not release idempotency key %s", reservation.key_id)


def idempotency_keys_purge(*, older_than_hours: int | None = None) -> int:
    """Delete keys older than IDEMPOTENCY_KEY_TTL_HOURS (never less than 24 h)."""
    hours = max(24, older_than_hours or settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = TurnIdempotencyKey.objects.filter(
        created_at__lt=timezone.now() - timedelta(hours=hours)
    ).delete()
    return deleted
