"""Chat writes, one module per concern:

- `rooms`: creating rooms;
- `uploads`: checking, extracting, storing and recording uploads;
- `idempotency`: the `Idempotency-Key` lease protocol;
- `turns`: validating, running and committing a metered turn;
- `capacity`: the bulkhead that paces the turns' CPU work (TURN_CPU_SLOTS).

The names below are chat's public write API; views and commands import them from here.
"""

from chat.services.cancellation import turn_cancel
from chat.services.capacity import turn_work
from chat.services.idempotency import idempotency_keys_purge
from chat.services.rooms import agent_aliases, room_create
from chat.services.turns import (
    TurnOutcome,
    TurnStream,
    turn_fingerprint,
    turn_post,
    turn_quote_for,
    turn_stream,
)
from chat.services.uploads import afile_upload, file_extract, file_upload

__all__ = [
    "TurnOutcome",
    "TurnStream",
    "afile_upload",
    "agent_aliases",
    "file_extract",
    "file_upload",
    "idempotency_keys_purge",
    "room_create",
    "turn_cancel",
    "turn_fingerprint",
    "turn_post",
    "turn_quote_for",
    "turn_stream",
    "turn_work",
]
