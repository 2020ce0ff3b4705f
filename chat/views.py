"""Room pages: the room list (with the create form), the chat page and its turn fragments.

The chat page's composer is a plain form: posted to the room page it runs the
turn through `chat.services.turn_post` and redirects back (it works without
JavaScript). `static/js/chat.js` enhances it: it posts to the JSON API, streams
the answers as plain text, then swaps in the server-rendered turn fragment
(`room_turn`), so turns are rendered here and nowhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import cast

from django import forms
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_http_methods

from accounts.http import SignedInHttpRequest
from billing.explain import ChargeFormula, charge_formula
from billing.meter import get_pricing_snapshot
from billing.models import UsageEvent
from chat import selectors, services
from chat.models import Message, ToolCallEvent, Turn, UploadedFile
from pantheon.errors import AppError
from pantheon.throttling import throttle_page

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
    context = {
        "nav": "rooms",
        "form": form,
        "rooms": room_list,
        "multipliers": multipliers,
        "base_price": settings.CREDITS_PER_1K_TOKENS,
    }
    return render(request, "chat/rooms.html", context)


@dataclass(frozen=True)
class ToolView:
    """A tool call, compactly: its name, the argument that says most, and whether it worked."""

    tool_name: str
    hint: str
    ok: bool
    details: str

    @classmethod
    def of(cls, event: ToolCallEvent, file_names: Mapping[int, str]) -> ToolView:
        arguments = event.arguments if isinstance(event.arguments, dict) else {}
        hint = next((str(arguments[k]) for k in ("query", "file_id", "name") if arguments.get(k)), "")
        file_id = str(arguments.get("file_id", ""))
        if not arguments.get("query") and file_id.isdigit():
            # A file tool: the file's name says more than its id.
            hint = file_names.get(int(file_id), f"file #{file_id}")
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
    # Tokens counted by Pantheon (a call cut short by Stop), not reported by the provider.
    estimated: bool = False
    tools: list[ToolView] = field(default_factory=list)
    # One per model call (a tool round is a call): the formula with that call's own numbers.
    formulas: list[ChargeFormula] = field(default_factory=list)


@dataclass
class TurnView:
    turn: Turn
    question: str
    files: list[UploadedFile]
    answers: list[Answer]
    other_calls: list[UsageEvent]  # manager routing, summaries: shown apart from the answers
    tools_unattributed: list[ToolView]


def present_turn(turn: Turn) -> TurnView:
    """Attach each agent's usage rows and tool calls to its answer (the `_turn.html` fragment's view)."""
    # `attached_files` comes prefetched from selectors.turn_page_list.
    prefetched: list[UploadedFile] | None = getattr(turn, "attached_files", None)
    files = prefetched if prefetched is not None else list(turn.files.only("id", "name").order_by("id"))
    file_names = {f.pk: f.name for f in files}
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
        formula = charge_formula(call)
        charged_to.formulas.append(formula)
        charged_to.estimated |= formula.estimated
    unattributed: list[ToolView] = []
    for tool_call in turn.tool_calls.all():
        owner = by_alias.get(tool_call.model_alias)
        (owner.tools if owner else unattributed).append(ToolView.of(tool_call, file_names))
    return TurnView(
        turn=turn,
        question=question or turn.content,
        files=files,
        answers=answers,
        other_calls=other_calls,
        tools_unattributed=unattributed,
    )


def _draft_key(room_id: int) -> str:
    return f"chat-draft-{room_id}"


def _post_turn(request: SignedInHttpRequest, room_id: int) -> HttpResponse:
    """The composer posted without JavaScript: run the turn, then back to the room (POST/redirect/GET)."""
    content = request.POST.get("content", "")
    model_alias = request.POST.get("model_alias", "")
    # The key is rendered into the form, so a resubmitted form (a double click, a browser
    # retry) replays the first turn instead of charging again.
    key = request.POST.get("idempotency_key", "").strip() or None
    uploads = request.FILES.getlist("files")
    try:
        if key is not None and (len(key) > 255 or not key.isascii() or not key.isprintable()):
            raise ValidationError("The form was damaged: reload the page and send your message again.")
        if len(uploads) > settings.TURN_MAX_FILES:
            raise ValidationError({"files": [f"Attach at most {settings.TURN_MAX_FILES} files."]})
        file_ids = [services.file_upload(owner=request.user, upload=upload).pk for upload in uploads]
        outcome = services.turn_post(
            user=request.user,
            room_id=room_id,
            content=content,
            model_alias=model_alias or None,
            file_ids=file_ids,
            idempotency_key=key,
        )
    except ValidationError as exc:
        for text in _error_texts(exc):
            flash.error(request, text)
    except AppError as exc:
        flash.error(request, exc.detail)
    else:
        request.session.pop(_draft_key(room_id), None)
        return redirect(f"{reverse('room', args=[room_id])}#turn-{outcome.payload['id']}")
    # Nothing was sent: keep what the user wrote for the next try (files must be chosen again).
    request.session[_draft_key(room_id)] = {"content": content, "model_alias": model_alias}
    return redirect("room", room_id=room_id)


def _error_texts(error: ValidationError) -> list[str]:
    if not hasattr(error, "error_dict"):
        return list(error.messages)
    named = {"content": "Message", "model_alias": "Who answers", "files": "Files", "file": "File"}
    return [
        f"{named[name]}: {text}" if name in named else text
        for name, texts in error.message_dict.items()
        for text in texts
    ]


@login_required
@require_http_methods(["GET", "POST"])
@throttle_page("turn")  # the same limit as the turns API: this form is another door to it
def room(request: SignedInHttpRequest, room_id: int) -> HttpResponse:
    room = selectors.room_get(user_id=request.user.pk, room_id=room_id)
    if room is None:
        # Another user's room is a 404, never a 403: its existence is not disclosed.
        raise Http404("Room not found.")
    if request.method == "POST":
        return _post_turn(request, room.pk)
    # The latest turns (the selector gives newest first), shown oldest first.
    latest = list(selectors.turn_page_list(user_id=request.user.pk, room_id=room.pk)[: CHAT_PAGE_TURNS + 1])
    multipliers = get_pricing_snapshot().multipliers
    draft = request.session.pop(_draft_key(room.pk), None) or {}
    context = {
        "nav": "rooms",
        "room": room,
        "turns": [present_turn(turn) for turn in reversed(latest[:CHAT_PAGE_TURNS])],
        "older_turns_hidden": len(latest) > CHAT_PAGE_TURNS,
        "page_turns": CHAT_PAGE_TURNS,
        "agents": [(alias, multipliers.get(alias)) for alias in room.agents],
        "draft_content": draft.get("content", ""),
        "draft_model_alias": draft.get("model_alias", ""),
        "idempotency_key": uuid.uuid4(),
        "max_content_chars": settings.TURN_MAX_CONTENT_CHARS,
        "max_files": settings.TURN_MAX_FILES,
        "accept_types": ",".join(settings.UPLOAD_ALLOWED_CONTENT_TYPES),
    }
    return render(request, "chat/room.html", context)


@login_required
@require_GET
@cache_control(private=True)
def room_turn(request: SignedInHttpRequest, room_id: int, turn_id: int) -> HttpResponse:
    """One turn as the chat page renders it (`_turn.html` alone), for chat.js to swap in."""
    turn = selectors.turn_page_list(user_id=request.user.pk, room_id=room_id).filter(pk=turn_id).first()
    if turn is None:
        raise Http404("Turn not found.")
    return render(request, "chat/_turn.html", {"view": present_turn(turn)})
