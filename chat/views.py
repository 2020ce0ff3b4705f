"""Room pages: the room list (with the create form) and the chat page.

Turns are posted from the chat page to the JSON API by `static/js/chat.js`;
these views only render. Room creation goes through `chat.services`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import cast

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from accounts.http import SignedInHttpRequest
from billing.meter import get_pricing_snapshot
from billing.models import UsageEvent
from chat import selectors, services
from chat.models import Message, ToolCallEvent, Turn

# Turns rendered on the chat page; older ones stay in the API history.
CHAT_PAGE_TURNS = 100


def agent_choices() -> list[tuple[str, str]]:
    """The aliases a room may invite (active pricing table, not `default`), each with its multiplier."""
    multipliers = get_pricing_snapshot().multipliers
    return [
        (alias, f"{alias} ×{format(multipliers[alias].normalize(), 'f')}")
        for alias in services.agent_aliases()
    ]


class RoomCreateForm(forms.Form):
    title = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    agents = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        help_text="Pick one or more models. The number is each model's price multiplier.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.MultipleChoiceField, self.fields["agents"]).choices = agent_choices()

    def add_service_errors(self, error: ValidationError) -> None:
        """The room service's own checks (agent count, duplicates) shown on their fields."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, messages in error.message_dict.items():
            for message in messages:
                self.add_error(name if name in self.fields else None, message)


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("rooms")


@login_required
@require_http_methods(["GET", "POST"])
def rooms(request: SignedInHttpRequest) -> HttpResponse:
    form = RoomCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            room = services.room_create(
                owner=request.user, title=form.cleaned_data["title"], agents=form.cleaned_data["agents"]
            )
        except ValidationError as exc:
            form.add_service_errors(exc)
        else:
            return redirect("room", room_id=room.pk)
    room_list = selectors.room_list(user_id=request.user.pk)
    multipliers = get_pricing_snapshot().multipliers
    return render(
        request,
        "chat/rooms.html",
        {"nav": "rooms", "form": form, "rooms": room_list, "multipliers": multipliers},
    )


@dataclass(frozen=True)
class ToolView:
    """A tool call, compactly: its name, the argument that says most, and whether it worked."""

    tool_name: str
    hint: str
    ok: bool
    details: str

    @classmethod
    def of(cls, event: ToolCallEvent) -> ToolView:
        arguments = event.arguments if isinstance(event.arguments, dict) else {}
        hint = next((str(arguments[k]) for k in ("query", "file_id", "name") if arguments.get(k)), "")
        details = "; ".join(f"{key}: {value}" for key, value in arguments.items())
        if event.error:
            details = f"{details} — {event.error}" if details else event.error
        return cls(event.tool_name, hint, event.status == ToolCallEvent.Status.OK, details)


@dataclass
class Answer:
    """One agent's answer in a turn, with what its model calls cost."""

    model_alias: str
    content: str
    provider_model: str = ""
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    multiplier: Decimal | None = None
    pricing_version: str = ""
    credits_burned: Decimal = Decimal("0.0000")
    tools: list[ToolView] = field(default_factory=list)


@dataclass
class TurnView:
    turn: Turn
    question: str
    answers: list[Answer]
    other_calls: list[UsageEvent]  # manager routing, summaries: shown apart from the answers
    tools_unattributed: list[ToolView]


def present_turn(turn: Turn) -> TurnView:
    """Attach each agent's usage rows and tool calls to its answer, as chat.js does for a new turn."""
    question = ""
    answers: list[Answer] = []
    by_alias: dict[str, Answer] = {}
    for message in turn.messages.all():
        if message.role == Message.Role.USER:
            question = message.content
            continue
        answer = Answer(model_alias=message.model_alias, content=message.content)
        answers.append(answer)
        by_alias.setdefault(message.model_alias, answer)
    other_calls: list[UsageEvent] = []
    for call in turn.usage_events.all():
        charged_to = by_alias.get(call.model_alias) if call.purpose == UsageEvent.Purpose.AGENT else None
        if charged_to is None:
            other_calls.append(call)
            continue
        charged_to.calls += 1
        charged_to.provider_model = call.provider_model
        charged_to.input_tokens += call.input_tokens
        charged_to.output_tokens += call.output_tokens
        charged_to.multiplier = call.multiplier
        charged_to.pricing_version = call.pricing_version
        charged_to.credits_burned += call.credits_burned
    unattributed: list[ToolView] = []
    for tool_call in turn.tool_calls.all():
        owner = by_alias.get(tool_call.model_alias)
        (owner.tools if owner else unattributed).append(ToolView.of(tool_call))
    return TurnView(
        turn=turn,
        question=question or turn.content,
        answers=answers,
        other_calls=other_calls,
        tools_unattributed=unattributed,
    )


@login_required
@require_GET
def room(request: SignedInHttpRequest, room_id: int) -> HttpResponse:
    room = selectors.room_get(user_id=request.user.pk, room_id=room_id)
    if room is None:
        # Another user's room is a 404, never a 403: its existence is not disclosed.
        raise Http404("Room not found.")
    # The latest turns (the selector gives newest first), shown oldest first.
    latest = list(selectors.turn_list(user_id=request.user.pk, room_id=room.pk)[: CHAT_PAGE_TURNS + 1])
    multipliers = get_pricing_snapshot().multipliers
    context = {
        "nav": "rooms",
        "room": room,
        "turns": [present_turn(turn) for turn in reversed(latest[:CHAT_PAGE_TURNS])],
        "older_turns_hidden": len(latest) > CHAT_PAGE_TURNS,
        "page_turns": CHAT_PAGE_TURNS,
        "agents": [(alias, multipliers.get(alias)) for alias in room.agents],
        "max_content_chars": settings.TURN_MAX_CONTENT_CHARS,
        "max_files": settings.TURN_MAX_FILES,
        "accept_types": ",".join(settings.UPLOAD_ALLOWED_CONTENT_TYPES),
    }
    return render(request, "chat/room.html", context)
