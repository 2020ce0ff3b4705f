"""Chat writes: rooms, uploads and the metered turn.

A turn is all-or-nothing. It reads its room, wallet and history in one
statement (`chat.turn_sql.turn_context`); routing, agents and tools run next,
outside any transaction and without any lock; then the turn, its messages,
its usage and tool events and one debit per metered call are written
together. On PostgreSQL that is one statement (`chat.turn_sql.write_turn`),
a transaction by itself; elsewhere (SQLite) `_write_turn_orm` does it in one
`transaction.atomic()`, debits last, so the wallet row is locked only until
the commit a few statements later. Any failure before or during that commit
leaves nothing behind and charges nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mimetypes
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation, ValidationError
from django.core.files.uploadedfile import UploadedFile as UploadedContent
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from billing.meter import DEFAULT_ALIAS, credits_for, get_pricing_snapshot
from billing.models import CreditWallet
from billing.services import DebitLine, wallet_debit_many, wallet_get_or_create
from chat import llm, payloads, quota, selectors, storage, turn_sql
from chat.errors import (
    IdempotencyInProgress,
    IdempotencyMismatch,
    InsufficientCredits,
    NotFound,
    UploadTooLarge,
)
from chat.llm import AgentAnswer, ChatLine, Routing
from chat.models import LLMCallEvent, Message, Room, ToolCallEvent, Turn, TurnIdempotencyKey, UploadedFile
from chat.tools import tools_for_turn
from chat.turn_sql import TurnContext

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

# On PostgreSQL the turn is written by one statement (chat/turn_sql.py); tests turn this off to
# run the ORM write, the reference it is checked against.
SINGLE_STATEMENT_WRITE = True


# --- Rooms ---------------------------------------------------------------------


def agent_aliases() -> list[str]:
    """Aliases a room may invite: priced in the active version, mapped to a model, not `default`."""
    priced = get_pricing_snapshot().multipliers
    return sorted(alias for alias in priced if alias != DEFAULT_ALIAS and alias in llm.known_aliases())


def room_create(*, owner: User, title: str, agents: list[str]) -> Room:
    errors: dict[str, list[str]] = {}
    title = (title or "").strip()
    if not title:
        errors["title"] = ["Give the room a title."]
    elif len(title) > Room._meta.get_field("title").max_length:
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


# --- Uploads -------------------------------------------------------------------


def _checked_upload(upload: UploadedContent) -> tuple[str, str]:
    """(safe file name, content type) of an acceptable upload; 400 or 413 otherwise."""
    if upload.size > settings.UPLOAD_MAX_BYTES:
        raise UploadTooLarge(
            f"The file is {upload.size} bytes; the limit is {settings.UPLOAD_MAX_BYTES} bytes.",
            max_bytes=settings.UPLOAD_MAX_BYTES,
        )
    if upload.size == 0:
        raise ValidationError({"file": ["The file is empty."]})
    name = _safe_name(upload.name or "")
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    guessed = mimetypes.guess_type(name)[0] or ""
    allowed = settings.UPLOAD_ALLOWED_CONTENT_TYPES
    content_type = declared if declared in allowed else guessed
    if content_type not in allowed:
        shown = declared or guessed or "unknown"
        raise ValidationError({"file": [f"Unsupported file type {shown!r}. Allowed: {', '.join(allowed)}."]})
    return name, content_type


def _safe_name(raw: str) -> str:
    """The base name, made safe for any storage; the tail is kept so the extension survives."""
    try:
        return get_valid_filename(raw.replace("\\", "/").rsplit("/", 1)[-1])[-200:]
    except SuspiciousFileOperation:
        return "upload"


def _storage_name(owner_id: int, name: str) -> str:
    # A random directory per upload: names never collide and never need a lookup.
    return f"uploads/{owner_id}/{uuid.uuid4().hex}/{name}"


def file_upload(*, owner: User, upload: UploadedContent) -> UploadedFile:
    """Store an upload (network I/O, no transaction open) then record it."""
    name, content_type = _checked_upload(upload)
    quota.upload_quota_check(owner_id=owner.pk, size=upload.size)  # 413 before anything is stored
    stored = storage.upload_storage().save(_storage_name(owner.pk, name), upload)
    try:
        return UploadedFile.objects.create(
            owner=owner, file=stored, name=name, size=upload.size, content_type=content_type
        )
    except DatabaseError:
        storage.upload_storage().delete(stored)
        raise


async def afile_upload(*, owner: User, upload: UploadedContent) -> UploadedFile:
    """`file_upload` for async code: the blocking storage write runs in a worker thread."""
    name, content_type = _checked_upload(upload)
    stored = await storage.asave(_storage_name(owner.pk, name), upload)
    return await UploadedFile.objects.acreate(
        owner=owner, file=stored, name=name, size=upload.size, content_type=content_type
    )


# --- Turns ---------------------------------------------------------------------


@dataclass(frozen=True)
class TurnRequest:
    context: TurnContext
    content: str
    model_alias: str | None
    files: list[UploadedFile]
    fingerprint: str

    @property
    def room(self) -> Room:
        return self.context.room


@dataclass(frozen=True)
class TurnOutcome:
    payload: dict
    replayed: bool


@dataclass(frozen=True)
class Reservation:
    key_id: int
    # Our lease; the key row is ours only while it still holds this exact value.
    locked_until: datetime


class ReservationLost(Exception):
    """Our stale reservation was taken over by another request; it runs the turn."""


def _validate_turn(
    *, user: User, room_id: int, content: object, model_alias: object, file_ids: object
) -> TurnRequest:
    context = _turn_context(user=user, room_id=room_id)
    if context is None:
        raise NotFound("Room not found.")
    room = context.room
    errors: dict[str, list[str]] = {}
    if content is not None and not isinstance(content, str):
        errors["content"] = ["Send the message as a string."]
    content = content.strip() if isinstance(content, str) else ""
    if not content:
        errors.setdefault("content", ["Write a message."])
    elif "\x00" in content:
        errors["content"] = ["Null characters are not allowed."]  # PostgreSQL text cannot hold them
    elif len(content) > settings.TURN_MAX_CONTENT_CHARS:
        errors["content"] = [f"A message has at most {settings.TURN_MAX_CONTENT_CHARS} characters."]
    alias = model_alias or None
    if alias is not None and (not isinstance(alias, str) or alias not in llm.known_aliases()):
        errors["model_alias"] = [f"Unknown model alias {alias!r}."]
    elif alias is not None and alias not in room.agents:
        errors["model_alias"] = [f"{alias} is not an agent of this room ({', '.join(room.agents)})."]
    well_formed = file_ids is None or (
        isinstance(file_ids, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in file_ids)
    )
    ids = list(dict.fromkeys(file_ids or [])) if well_formed else []
    files: list[UploadedFile] = []
    if not well_formed:
        errors["files"] = ["Send a list of your file ids, e.g. [12, 15]."]
    elif len(ids) > settings.TURN_MAX_FILES:
        errors["files"] = [f"Attach at most {settings.TURN_MAX_FILES} files."]
    elif ids:
        found = selectors.files_by_id(user_id=user.pk, file_ids=ids)
        missing = [str(file_id) for file_id in ids if file_id not in found]
        if missing:
            errors["files"] = [f"File(s) not found: {', '.join(missing)}."]
        files = [found[file_id] for file_id in ids if file_id in found]
    if errors:
        raise ValidationError(errors)
    fingerprint = turn_fingerprint(room_id=room.pk, content=content, model_alias=alias, file_ids=ids)
    return TurnRequest(
        context=context, content=content, model_alias=alias, files=files, fingerprint=fingerprint
    )


def _turn_context(*, user: User, room_id: int) -> TurnContext | None:
    return turn_sql.turn_context(user_id=user.pk, room_id=room_id, turns=settings.CHAT_HISTORY_TURNS)


def turn_fingerprint(*, room_id: int, content: str, model_alias: str | None, file_ids: list[int]) -> str:
    """sha256 of the room id and the canonical JSON of the (normalized) request body."""
    body = {"content": content, "model_alias": model_alias or None, "files": list(file_ids)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{room_id}:{canonical}".encode()).hexdigest()


def _estimate_credits(request: TurnRequest, history: list[ChatLine], prompt: str) -> Decimal:
    """Upper-bound guess of a turn's cost for the enforcement gate: every candidate agent answers."""
    snapshot = get_pricing_snapshot()
    agents = [request.model_alias] if request.model_alias else list(request.room.agents)
    input_tokens = llm.count_tokens(prompt) + sum(llm.count_tokens(line.content) for line in history)
    output_tokens = settings.CREDIT_ESTIMATE_OUTPUT_TOKENS
    return sum(
        (credits_for(input_tokens, output_tokens, snapshot.multiplier_for(alias)) for alias in agents),
        Decimal(0),
    )


def _reserve_key(*, user: User, key: str, fingerprint: str) -> tuple[Reservation | None, dict | None]:
    """Reserve `key` for this request (committed at once) or return the stored response.

    A duplicate that finds the key pending polls until the first request
    finishes (then replays its response), fails (then runs the turn itself),
    or its lease expires (then takes it over); after IDEMPOTENCY_WAIT_SECONDS
    it answers 409 "in progress".
    """
    deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
    delay = 0.02
    while True:
        now = timezone.now()
        lease = now + timedelta(seconds=settings.IDEMPOTENCY_LEASE_SECONDS)
        try:
            # get_or_create's own short transaction: the reservation commits before any model runs.
            row, created = TurnIdempotencyKey.objects.get_or_create(
                user_id=user.pk, key=key, defaults={"request_fingerprint": fingerprint, "locked_until": lease}
            )
        except IntegrityError:
            row, created = None, False  # the winner's row vanished between our insert and our read
        if created:
            return Reservation(row.pk, row.locked_until), None
        if row is not None:
            if row.request_fingerprint != fingerprint:
                raise IdempotencyMismatch("This Idempotency-Key was already used with a different request.")
            if row.status == TurnIdempotencyKey.Status.DONE:
                return None, row.response
            # A pending key whose lease ran out: its worker died. Take it over, atomically, once.
            if row.locked_until <= now and _take_over_key(row, lease):
                return Reservation(row.pk, lease), None
        if time.monotonic() >= deadline:
            raise IdempotencyInProgress(
                "A request with this Idempotency-Key is still running; retry shortly."
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _take_over_key(row: TurnIdempotencyKey, lease: datetime) -> bool:
    taken = TurnIdempotencyKey.objects.filter(
        pk=row.pk, status=TurnIdempotencyKey.Status.PENDING, locked_until=row.locked_until
    ).update(locked_until=lease)
    return taken == 1


def _release_key(reservation: Reservation) -> None:
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


def _run_models(
    *, user: User, request: TurnRequest, history: list[ChatLine], prompt: str
) -> tuple[Routing | None, list[AgentAnswer]]:
    """Routing, agents and tools: network I/O only, no transaction, no lock."""
    room_agents = list(request.room.agents)
    routing = None
    if request.model_alias:
        agents = [request.model_alias]
    elif len(room_agents) == 1:
        agents = room_agents
    else:
        routing = llm.route_turn(content=request.content, agents=room_agents)
        agents = routing.agents
    tools = tools_for_turn(user_id=user.pk)
    answers = [
        llm.run_agent(alias=alias, agents=room_agents, history=history, prompt=prompt, tools=tools)
        for alias in agents
    ]
    return routing, answers


def _commit_turn(
    *,
    user: User,
    wallet_id: int,
    request: TurnRequest,
    routing: Routing | None,
    answers: list[AgentAnswer],
    reservation: Reservation | None,
) -> dict:
    """Write the turn and everything it caused, debits last; return the response payload."""
    # Priced now, at commit: the multiplier in force when the turn is charged.
    snapshot = get_pricing_snapshot()
    calls = ([routing.llm_call] if routing else []) + [call for a in answers for call in a.llm_calls]
    room = request.room
    events = []
    for call in calls:
        metered = call.purpose != LLMCallEvent.Purpose.MANAGER
        multiplier = snapshot.multiplier_for(call.model_alias)
        events.append(
            LLMCallEvent(
                user_id=user.pk,
                room_id=room.pk,
                model_alias=call.model_alias,
                provider_model=call.provider_model,
                purpose=call.purpose,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                multiplier=multiplier,
                pricing_version=snapshot.version,
                credits_burned=(
                    credits_for(call.input_tokens, call.output_tokens, multiplier) if metered else Decimal(0)
                ),
                metered=metered,
                latency_ms=call.latency_ms,
            )
        )
    tool_events = [
        ToolCallEvent(
            user_id=user.pk,
            room_id=room.pk,
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
    turn = Turn(
        room=room,
        user_id=user.pk,
        content=request.content,
        credits_burned=sum((event.credits_burned for event in events), Decimal(0)),
    )
    messages = [Message(turn=turn, position=0, role=Message.Role.USER, content=request.content)]
    messages += [
        Message(
            turn=turn,
            position=position,
            role=Message.Role.ASSISTANT,
            model_alias=a.model_alias,
            content=a.content,
        )
        for position, a in enumerate(answers, start=1)
    ]
    for event in [*events, *tool_events]:
        event.turn = turn
    file_ids = [f.pk for f in request.files]
    single_statement = SINGLE_STATEMENT_WRITE and connection.vendor == "postgresql"
    write = turn_sql.write_turn if single_statement else _write_turn_orm
    with _turn_transaction(single_statement=single_statement, reservation=reservation):
        balance = write(
            turn=turn,
            file_ids=file_ids,
            messages=messages,
            events=events,
            tool_events=tool_events,
            wallet_id=wallet_id,
        )
        payload = payloads.turn_payload(
            turn,
            messages=messages,
            llm_calls=events,
            tool_calls=tool_events,
            file_ids=file_ids,
            balance=balance,
        )
        if reservation is not None:
            # Stored with the turn, so a replay answers exactly this; one UPDATE by key.
            claimed = TurnIdempotencyKey.objects.filter(
                pk=reservation.key_id,
                status=TurnIdempotencyKey.Status.PENDING,
                locked_until=reservation.locked_until,
            ).update(status=TurnIdempotencyKey.Status.DONE, turn=turn, response=payload)
            if not claimed:
                raise ReservationLost()
    return payload


def _turn_transaction(*, single_statement: bool, reservation: Reservation | None):
    """The transaction around the turn's write.

    One statement in autocommit mode is a transaction of its own, so the
    single-statement write needs none (a BEGIN and a COMMIT would be two more
    round trips). It does when the key's UPDATE must commit with it, and inside
    a caller's transaction, where a savepoint keeps a failure from aborting it.
    """
    if single_statement and reservation is None and not connection.in_atomic_block:
        return nullcontext()
    return transaction.atomic()


def _write_turn_orm(
    *,
    turn: Turn,
    file_ids: list[int],
    messages: list[Message],
    events: list[LLMCallEvent],
    tool_events: list[ToolCallEvent],
    wallet_id: int,
) -> Decimal:
    """The turn's write through the ORM (SQLite; the reference for `turn_sql.write_turn`).

    Runs inside the caller's transaction; returns the wallet's balance after the debits.
    """
    turn.save(force_insert=True)
    if file_ids:
        Turn.files.through.objects.bulk_create(
            [Turn.files.through(turn_id=turn.pk, uploadedfile_id=file_id) for file_id in file_ids]
        )
    Message.objects.bulk_create(messages)
    LLMCallEvent.objects.bulk_create(events)
    if tool_events:
        ToolCallEvent.objects.bulk_create(tool_events)
    lines = [
        DebitLine(
            amount=e.credits_burned, usage_event_id=e.pk, description=f"{e.model_alias} · turn {turn.pk}"
        )
        for e in events
        if e.metered and e.credits_burned > 0  # a debit is strictly negative: 0 credits, no row
    ]
    if lines:
        return wallet_debit_many(wallet_id=wallet_id, lines=lines)[-1].balance_after
    return CreditWallet.objects.values_list("balance", flat=True).get(pk=wallet_id)


def _run_turn(*, user: User, request: TurnRequest, reservation: Reservation | None) -> dict:
    context = request.context
    if context.wallet_id is None:
        wallet = wallet_get_or_create(user=user)
        wallet_id, balance = wallet.pk, wallet.balance
    else:
        wallet_id, balance = context.wallet_id, context.balance
    history = [
        ChatLine(role=role, model_alias=alias, content=content) for role, alias, content in context.history
    ]
    attachments = [
        llm.attachment_line(file_id=f.pk, name=f.name, content_type=f.content_type, size=f.size)
        for f in request.files
    ]
    prompt = llm.user_prompt(request.content, attachments)
    if settings.CREDIT_ENFORCEMENT == "enforce":
        estimated = _estimate_credits(request, history, prompt)
        if balance < estimated:
            raise InsufficientCredits(balance=balance, estimated_credits=estimated)
    routing, answers = _run_models(user=user, request=request, history=history, prompt=prompt)
    return _commit_turn(
        user=user,
        wallet_id=wallet_id,
        request=request,
        routing=routing,
        answers=answers,
        reservation=reservation,
    )


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
        reservation, stored = _reserve_key(user=user, key=key, fingerprint=request.fingerprint)
        if stored is not None:
            return TurnOutcome(stored, replayed=True)
        try:
            # Read again: the history and balance read before the reservation may be stale by now.
            context = _turn_context(user=user, room_id=request.room.pk)
            if context is None:
                raise NotFound("Room not found.")
            current = dataclasses.replace(request, context=context)
            return TurnOutcome(_run_turn(user=user, request=current, reservation=reservation), replayed=False)
        except ReservationLost:
            continue  # another request owns the key now; wait for its response
        except BaseException:
            _release_key(reservation)
            raise
