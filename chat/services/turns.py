"""The metered turn: validate, route, run the agents and their tools, then commit and charge once.

A turn is all-or-nothing. It reads its room and history in one statement
(`chat.selectors.turn_context`); routing, agents and tools run next, outside
any transaction and without any lock; then one `transaction.atomic()` writes
the turn, its messages and tool events, and hands billing the model calls:
`billing.services.usage_record` writes the usage rows and one debit per
metered call, the wallet row last, so it is locked only until the commit a
few statements later. The same code runs on PostgreSQL and SQLite. Any
failure before or during that commit leaves nothing behind and charges nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import User
from billing.services import CallRecord, usage_gate, usage_price, usage_record
from chat import llm, payloads, selectors
from chat.errors import NotFound
from chat.llm import AgentAnswer, Routing
from chat.models import Message, ToolCallEvent, Turn, UploadedFile
from chat.services.idempotency import Reservation, ReservationLost, key_complete, key_release, key_reserve
from chat.tools import tools_for_turn
from chat.values import TurnContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnRequest:
    context: TurnContext
    content: str
    model_alias: str | None
    files: list[UploadedFile]
    fingerprint: str


@dataclass(frozen=True)
class TurnOutcome:
    payload: dict[str, Any]
    replayed: bool


def _validate_turn(
    *, user: User, room_id: int, content: object, model_alias: object, file_ids: object
) -> TurnRequest:
    context = _turn_context(user=user, room_id=room_id)
    if context is None:
        raise NotFound("Room not found.")
    errors: dict[str, list[str]] = {}
    if content is not None and not isinstance(content, str):
        errors["content"] = ["Send the message as a string."]
    text = content.strip() if isinstance(content, str) else ""
    if not text:
        errors.setdefault("content", ["Write a message."])
    elif "\x00" in text:
        errors["content"] = ["Null characters are not allowed."]  # PostgreSQL text cannot hold them
    elif len(text) > settings.TURN_MAX_CONTENT_CHARS:
        errors["content"] = [f"A message has at most {settings.TURN_MAX_CONTENT_CHARS} characters."]
    alias = model_alias if isinstance(model_alias, str) and model_alias else None
    if model_alias and (alias is None or alias not in llm.known_aliases()):
        errors["model_alias"] = [f"Unknown model alias {model_alias!r}."]
    elif alias is not None and alias not in context.agents:
        errors["model_alias"] = [f"{alias} is not an agent of this room ({', '.join(context.agents)})."]
    ids = _file_ids(file_ids)
    files: list[UploadedFile] = []
    if ids is None:
        errors["files"] = ["Send a list of your file ids, e.g. [12, 15]."]
    elif len(ids) > settings.TURN_MAX_FILES:
        errors["files"] = [f"Attach at most {settings.TURN_MAX_FILES} files."]
    elif ids:
        found = selectors.files_by_id(user_id=user.pk, file_ids=ids)
        missing = [str(file_id) for file_id in ids if file_id not in found]
        if missing:
            errors["files"] = [f"File(s) not found: {', '.join(missing)}."]
        files = [found[file_id] for file_id in ids if file_id in found]
    if errors or ids is None:
        raise ValidationError(errors)
    fingerprint = turn_fingerprint(room_id=room_id, content=text, model_alias=alias, file_ids=ids)
    return TurnRequest(context=context, content=text, model_alias=alias, files=files, fingerprint=fingerprint)


def _file_ids(value: object) -> list[int] | None:
    """The distinct positive file ids sent, in order; None when the value is not such a list."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in value
    ):
        return None
    return list(dict.fromkeys(value))


def _turn_context(*, user: User, room_id: int) -> TurnContext | None:
    return selectors.turn_context(user_id=user.pk, room_id=room_id, turns=settings.CHAT_HISTORY_TURNS)


def turn_fingerprint(*, room_id: int, content: str, model_alias: str | None, file_ids: list[int]) -> str:
    """sha256 of the room id and the canonical JSON of the (normalized) request body."""
    body = {"content": content, "model_alias": model_alias or None, "files": list(file_ids)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{room_id}:{canonical}".encode()).hexdigest()


def _run_models(*, user: User, request: TurnRequest, prompt: str) -> tuple[Routing | None, list[AgentAnswer]]:
    """Routing, agents and tools: network I/O only, no transaction, no lock."""
    room_agents = list(request.context.agents)
    routing = None
    if request.model_alias:
        agents = [request.model_alias]
    elif len(room_agents) == 1:
        agents = room_agents
    else:
        routing = llm.route_turn(content=request.content, agents=room_agents)
        agents = routing.agents
    tools = tools_for_turn(user_id=user.pk)
    history = request.context.history
    answers = [
        llm.run_agent(alias=alias, agents=room_agents, history=history, prompt=prompt, tools=tools)
        for alias in agents
    ]
    return routing, answers


def _commit_turn(
    *,
    user: User,
    request: TurnRequest,
    routing: Routing | None,
    answers: list[AgentAnswer],
    reservation: Reservation | None,
) -> dict[str, Any]:
    """Write the turn and everything it caused in one transaction, debits last; return the payload."""
    room_id = request.context.room_id
    calls: list[CallRecord] = ([routing.llm_call] if routing else []) + [
        call for answer in answers for call in answer.llm_calls
    ]
    # Priced now, at commit: the multiplier in force when the turn is charged.
    priced = usage_price(calls=calls)
    file_ids = [f.pk for f in request.files]
    with transaction.atomic():
        turn = Turn.objects.create(
            room_id=room_id, user_id=user.pk, content=request.content, credits_burned=priced.credits_burned
        )
        if file_ids:
            Turn.files.through.objects.bulk_create(
                [Turn.files.through(turn_id=turn.pk, uploadedfile_id=file_id) for file_id in file_ids]
            )
        messages = Message.objects.bulk_create(
            [Message(turn=turn, position=0, role=Message.Role.USER, content=request.content)]
            + [
                Message(
                    turn=turn,
                    position=position,
                    role=Message.Role.ASSISTANT,
                    model_alias=answer.model_alias,
                    content=answer.content,
                )
                for position, answer in enumerate(answers, start=1)
            ]
        )
        tool_events = [
            ToolCallEvent(
                user_id=user.pk,
                room_id=room_id,
                turn=turn,
                model_alias=record.model_alias,
                tool_name=record.tool_name,
                arguments=record.arguments,
                status=record.status,
                error=record.error[:2000],
                latency_ms=record.latency_ms,
            )
            for answer in answers
            for record in answer.tool_calls
        ]
        if tool_events:
            ToolCallEvent.objects.bulk_create(tool_events)
        # Billing writes the usage rows and the debits; the wallet row is locked from here to COMMIT.
        usage = usage_record(user_id=user.pk, room_id=room_id, turn_id=turn.pk, priced=priced)
        payload = payloads.turn_payload(
            turn,
            messages=messages,
            usage=usage.events,
            tool_calls=tool_events,
            file_ids=file_ids,
            balance=usage.balance,
        )
        if reservation is not None:
            # Stored with the turn, so a replay answers exactly this.
            key_complete(reservation, turn_id=turn.pk, response=payload)
    return payload


def _run_turn(*, user: User, request: TurnRequest, reservation: Reservation | None) -> dict[str, Any]:
    attachments = [
        llm.attachment_line(file_id=f.pk, name=f.name, content_type=f.content_type, size=f.size)
        for f in request.files
    ]
    prompt = llm.user_prompt(request.content, attachments)
    history = request.context.history
    usage_gate(
        user_id=user.pk,
        model_aliases=[request.model_alias] if request.model_alias else request.context.agents,
        input_tokens=llm.count_tokens(prompt) + sum(llm.count_tokens(line.content) for line in history),
    )
    routing, answers = _run_models(user=user, request=request, prompt=prompt)
    return _commit_turn(user=user, request=request, routing=routing, answers=answers, reservation=reservation)


def turn_post(
    *,
    user: User,
    room_id: int,
    content: object,
    model_alias: object = None,
    file_ids: object = None,
    idempotency_key: str | None = None,
) -> TurnOutcome:
    """Post a turn: route, run the agents and their tools, then commit and charge once.

    The fields come as the client sent them and are checked here, types included
    (a ValidationError names each bad field).

    With an `idempotency_key` (scoped to the user) a replay of the same body
    returns the first response and charges nothing; a different body is 409.
    """
    started = time.monotonic()
    try:
        request = _validate_turn(
            user=user, room_id=room_id, content=content, model_alias=model_alias, file_ids=file_ids
        )
        if idempotency_key is None:
            outcome = TurnOutcome(_run_turn(user=user, request=request, reservation=None), replayed=False)
        else:
            outcome = _run_idempotent(user=user, request=request, key=idempotency_key)
    except Exception as exc:
        logger.info(
            "turn failed user=%s room=%s error=%s latency_ms=%d",
            user.pk,
            room_id,
            getattr(exc, "code", type(exc).__name__),
            (time.monotonic() - started) * 1000,
        )
        raise
    payload = outcome.payload
    logger.info(
        "turn %s user=%s room=%s turn=%s agents=%s llm_calls=%d tool_calls=%d credits=%s balance=%s "
        "latency_ms=%d",
        "replayed" if outcome.replayed else "committed",
        user.pk,
        payload["room"],
        payload["id"],
        ",".join(m["model_alias"] for m in payload["messages"] if m["role"] == "assistant"),
        len(payload["usage"]),
        len(payload["tool_calls"]),
        payload["credits_burned"],
        payload["balance"],
        (time.monotonic() - started) * 1000,
    )
    return outcome


def _run_idempotent(*, user: User, request: TurnRequest, key: str) -> TurnOutcome:
    while True:
        reservation, stored = key_reserve(user_id=user.pk, key=key, fingerprint=request.fingerprint)
        if stored is not None:
            return TurnOutcome(stored, replayed=True)
        assert reservation is not None
        try:
            # Read again: the history read before the reservation may be stale by now.
            context = _turn_context(user=user, room_id=request.context.room_id)
            if context is None:
                raise NotFound("Room not found.")
            current = dataclasses.replace(request, context=context)
            return TurnOutcome(_run_turn(user=user, request=current, reservation=reservation), replayed=False)
        except ReservationLost:
            continue  # another request owns the key now; wait for its response
        except BaseException:
            key_release(reservation)
            raise
