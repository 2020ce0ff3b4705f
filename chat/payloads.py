"""The JSON shapes of chat objects, built in one place.

The turn service stores the turn response on its idempotency key (inside the
turn's transaction) and the history endpoint renders stored turns; both use
these functions so a replay and a history page show exactly the same fields.
Credits and multipliers are decimal strings with 4 places.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from billing.models import UsageEvent
from chat.models import Message, Room, ToolCallEvent, Turn, UploadedFile

QUANTUM = Decimal("0.0001")


def decimal_str(value: Decimal) -> str:
    return str(Decimal(value).quantize(QUANTUM))


def datetime_str(value: datetime) -> str:
    # The same form as DRF's DateTimeField.
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def room_payload(room: Room) -> dict:
    return {
        "id": room.pk,
        "title": room.title,
        "agents": list(room.agents),
        "created_at": datetime_str(room.created_at),
        "updated_at": datetime_str(room.updated_at),
    }


def file_payload(uploaded: UploadedFile) -> dict:
    return {
        "id": uploaded.pk,
        "name": uploaded.name,
        "size": uploaded.size,
        "content_type": uploaded.content_type,
        "created_at": datetime_str(uploaded.created_at),
    }


def message_payload(message: Message) -> dict:
    return {"role": message.role, "model_alias": message.model_alias, "content": message.content}


def usage_payload(event: UsageEvent) -> dict:
    return {
        "id": event.pk,
        "model_alias": event.model_alias,
        "provider_model": event.provider_model,
        "purpose": event.purpose,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "multiplier": decimal_str(event.multiplier),
        "pricing_version": event.pricing_version,
        "credits_burned": decimal_str(event.credits_burned),
        "metered": event.metered,
        "usage_source": event.usage_source,
        "cached_input_tokens": event.cached_input_tokens,
        "reasoning_tokens": event.reasoning_tokens,
        "latency_ms": event.latency_ms,
    }


def tool_call_payload(event: ToolCallEvent) -> dict:
    return {
        "model_alias": event.model_alias,
        "tool_name": event.tool_name,
        "arguments": event.arguments,
        "status": event.status,
        "error": event.error,
        "latency_ms": event.latency_ms,
    }


def turn_payload(
    turn: Turn,
    *,
    messages: Iterable[Message],
    usage: Iterable[UsageEvent],
    tool_calls: Iterable[ToolCallEvent],
    file_ids: Iterable[int],
    balance: Decimal | None = None,
) -> dict:
    """A turn; `balance` (the wallet after this turn) only in the POST response."""
    payload_messages = [message_payload(message) for message in messages]
    payload = {
        "id": turn.pk,
        "room": turn.room_id,
        "created_at": datetime_str(turn.created_at),
        "files": list(file_ids),
        "messages": payload_messages,
        "usage": [usage_payload(event) for event in usage],
        "tool_calls": [tool_call_payload(event) for event in tool_calls],
        "credits_burned": decimal_str(turn.credits_burned),
        "status": turn.status,
        "routing": {
            "by": turn.routed_by,
            "agents": [m["model_alias"] for m in payload_messages if m["role"] == Message.Role.ASSISTANT],
        },
    }
    if balance is not None:
        payload["balance"] = decimal_str(balance)
    return payload


def stored_turn_payload(turn: Turn) -> dict:
    """A turn from `selectors.turn_list` (its relations prefetched)."""
    return turn_payload(
        turn,
        messages=turn.messages.all(),
        usage=turn.usage_events.all(),
        tool_calls=turn.tool_calls.all(),
        file_ids=[f.pk for f in turn.files.all()],
    )
