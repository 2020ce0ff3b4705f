"""Small typed values passed between chat's layers (no model instances, no LangChain types)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatLine:
    """One earlier message of the room, given to the agents as context."""

    role: str  # "user" or "assistant"
    model_alias: str
    content: str


@dataclass(frozen=True)
class TurnContext:
    """What a turn reads before its models run: the room's agents and recent history."""

    room_id: int
    agents: list[str]
    history: list[ChatLine]  # the last turns' messages, oldest first
