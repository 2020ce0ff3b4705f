"""Room writes."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError

from accounts.models import User
from billing.meter import DEFAULT_ALIAS, get_pricing_snapshot
from chat import llm
from chat.models import Room


def agent_aliases() -> list[str]:
    """Aliases a room may invite: priced in the active version, mapped to a model, not `default`."""
    priced = get_pricing_snapshot().multipliers
    return sorted(alias for alias in priced if alias != DEFAULT_ALIAS and alias in llm.known_aliases())


def room_create(*, owner: User, title: str, agents: list[str]) -> Room:
    errors: dict[str, list[str]] = {}
    title = (title or "").strip()
    if not title:
        errors["title"] = ["Give the room a title."]
    elif len(title) > Room.TITLE_MAX_LENGTH:
        errors["title"] = ["The title is too long."]
    choosable = agent_aliases()
    if not agents:
        errors["agents"] = ["Invite at least one agent."]
    elif len(agents) > settings.MAX_AGENTS_PER_ROOM:
        errors["agents"] = [f"A room has at most {settings.MAX_AGENTS_PER_ROOM} agents."]
    elif len(set(agents)) != len(agents):
        errors["agents"] = ["Each agent can be invited once."]
    elif unknown := [alias for alias in agents if alias not in choosable]:
        errors["agents"] = [
            f"Unknown model alias(es): {', '.join(unknown)}. Choose from: {', '.join(choosable)}."
        ]
    if errors:
        raise ValidationError(errors)
    return Room.objects.create(owner=owner, title=title, agents=list(agents))
