"""The metered turn: validate, route, run the agents side by side, then commit and charge once.

A turn reads its room and history in one statement
(`chat.selectors.turn_context`) and gives its database connection back;
routing, the agents (each in its own thread) and their tools run next, outside
any transaction and holding no connection; then one `transaction.atomic()`
writes the turn, its messages and tool events, and hands billing the model
calls: `billing.services.usage_record` writes the usage rows and one debit per
metered call, the wallet row last, so it is locked only until the commit a few
statements later. The same code runs on PostgreSQL and SQLite.

Every model call that ran is billed exactly once, whatever happens:
a turn ends `completed`, `cancelled` (Stop, or the client went away) or
`failed` (a provider error or a tool crash), and in each case the calls that
ran are committed with their debits in the turn's transaction; a call cut
short is counted with the model's tokenizer and marked `estimated`. Only a
failure before any model call ran writes and charges nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction

from accounts.models import User
from billing.models import CreditHold
from billing.services import CallRecord, hold_place, hold_release, usage_price, usage_record
from chat import llm, payloads, selectors
from chat.errors import ChatError, NotFound
from chat.llm import AgentAnswer, Routing
from chat.llm.agent import AgentProgress, TurnCancelled
from chat.mentions import parse_mentions
from chat.models import Message, ToolCallEvent, Turn, UploadedFile
from chat.services import cancellation
from chat.services.cancellation import TurnCancel
from chat.services.capacity import turn_work
from chat.services.idempotency import (
    Reservation,
    ReservationLost,
    key_complete,
    key_has_response,
    key_release,
    key_reserve,
)
from chat.services.quotes import TurnQuote, tool_budget_tokens, turn_quote
from chat.tools import tools_for_turn
from chat.tools.base import storable_values
from chat.values import TurnContext
from pantheon.db import release_connection
from pantheon.errors import AppError
from pantheon.text import storable

logger = logging.getLogger(__name__)

# (event name, data): `routing`, `delta`, `agent_done`, then `turn` or `error`.
Event = tuple[str, dict[str, Any]]
Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class TurnRequest:
    context: TurnContext
    content: str
    model_alias: str | None
    # Agents asked explicitly (`agents` in the body); empty when routing decides.
    agents: list[str]
    # Agents @mentioned in the content (chat.mentions), in the room's order.
    mentioned: list[str]
    files: list[UploadedFile]
    fingerprint: str

    @property
    def named_agents(self) -> list[str]:
        """Who answers without a routing call: explicit agents or alias, @mentions, a one-agent room."""
        if self.agents:
            return self.agents
        if self.model_alias:
            return [self.model_alias]
        if self.mentioned:
            return self.mentioned
        return list(self.context.agents) if len(self.context.agents) == 1 else []

    @property
    def routed_by(self) -> str:
        """How `named_agents` were chosen; a turn that needs the manager is routed at run time."""
        if self.agents or self.model_alias:
            return Turn.RoutedBy.EXPLICIT
        if self.mentioned:
            return Turn.RoutedBy.MENTION
        return Turn.RoutedBy.SINGLE if len(self.context.agents) == 1 else Turn.RoutedBy.MANAGER


@dataclass(frozen=True)
class TurnOutcome:
    payload: dict[str, Any]
    replayed: bool
    # 201 for a recorded turn; a failed turn is recorded and answered with its error's status.
    http_status: int = 201


@dataclass
class _Ran:
    """What the models did: routing, each agent's answer, and how the turn ended."""

    routed_by: str = Turn.RoutedBy.SINGLE
    routing: Routing | None = None
    answers: list[AgentAnswer] = field(default_factory=list)
    cancelled: bool = False
    error: ChatError | None = None

    @property
    def calls(self) -> list[CallRecord]:
        routing = [self.routing.llm_call] if self.routing else []
        return routing + [call for answer in self.answers for call in answer.llm_calls]

    @property
    def status(self) -> str:
        if self.cancelled:
            return Turn.Status.CANCELLED
        return Turn.Status.FAILED if self.error is not None else Turn.Status.COMPLETED


# --- Validation ----------------------------------------------------------------------


def _validate_turn(
    *, user: User, room_id: int, content: object, model_alias: object, agents: object, file_ids: object
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
    chosen = _agent_list(agents)
    if chosen is None:
        errors["agents"] = ['Send a list of this room\'s agents, e.g. ["gpt-4o"].']
    elif outside := [a for a in chosen if a not in context.agents]:
        errors["agents"] = [
            f"Not agents of this room: {', '.join(outside)}. The room's agents: {', '.join(context.agents)}."
        ]
    elif chosen and alias is not None:
        errors["agents"] = ["Send either `model_alias` or `agents`, not both."]
    mentions = parse_mentions(text, room_agents=context.agents, known_aliases=llm.known_aliases())
    if mentions.outside and "content" not in errors:
        named = ", ".join(f"@{alias}" for alias in mentions.outside)
        errors["content"] = [
            f"{named}: not an agent of this room. Mention one of: "
            + ", ".join(f"@{agent}" for agent in context.agents)
            + " (or @all)."
        ]
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
    if errors or ids is None or chosen is None:
        raise ValidationError(errors)
    fingerprint = turn_fingerprint(
        room_id=room_id, content=text, model_alias=alias, agents=chosen, file_ids=ids
    )
    return TurnRequest(
        context=context,
        content=text,
        model_alias=alias,
        agents=chosen,
        mentioned=mentions.agents,
        files=files,
        fingerprint=fingerprint,
    )


def _agent_list(value: object) -> list[str] | None:
    """The distinct aliases sent, in order; None when the value is not a list of strings."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(alias, str) and alias for alias in value):
        return None
    return list(dict.fromkeys(value))


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


def turn_fingerprint(
    *,
    room_id: int,
    content: str,
    model_alias: str | None,
    file_ids: list[int],
    agents: list[str] | None = None,
) -> str:
    """sha256 of the room id and the canonical JSON of the (normalized) request body."""
    body: dict[str, Any] = {"content": content, "model_alias": model_alias or None, "files": list(file_ids)}
    if agents:
        body["agents"] = list(agents)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{room_id}:{canonical}".encode()).hexdigest()


# --- Running the models ----------------------------------------------------------------


class _TurnRun:
    """Routing, then every answering agent in its own thread; no database, no lock.

    Stops early, keeping what ran, when `cancel` is set (this process's Stop) or
    when the key's cancel flag is seen (a Stop that reached another process).
    """

    def __init__(
        self,
        *,
        user: User,
        request: TurnRequest,
        prompt: str,
        cancel: TurnCancel,
        reservation: Reservation | None,
        emit: Emit,
    ) -> None:
        self.user = user
        self.request = request
        self.prompt = prompt
        self.cancel = cancel
        self.reservation = reservation
        self.emit = emit

    def run(self) -> _Ran:
        ran = _Ran(routed_by=self.request.routed_by)
        if self.reservation is not None and cancellation.cancel_requested(self.reservation.key_id):
            self.cancel.set()  # Stop arrived before the models started
        agents = self.request.named_agents
        if not agents:
            progress = AgentProgress(settings.CHAT_MANAGER_ALIAS)
            try:
                ran.routing = llm.route_turn(
                    content=self.request.content,
                    agents=list(self.request.context.agents),
                    progress=progress,
                    cancel=self.cancel,
                )
            except (ChatError, TurnCancelled) as exc:
                sealed = progress.seal()
                if sealed.llm_calls:
                    ran.routing = Routing(agents=[], llm_call=sealed.llm_calls[0])
                ran.cancelled = isinstance(exc, TurnCancelled)
                ran.error = exc if isinstance(exc, ChatError) else None
                return ran
            agents = ran.routing.agents
            if ran.routing.fallback:
                ran.routed_by = Turn.RoutedBy.FALLBACK
        self.emit("routing", {"agents": agents, "by": ran.routed_by})
        ran.answers, ran.error = self._run_agents(agents)
        ran.cancelled = self.cancel.is_set()
        return ran

    def _run_agents(self, agents: list[str]) -> tuple[list[AgentAnswer], ChatError | None]:
        tools = tools_for_turn(user_id=self.user.pk, with_files=bool(self.request.files))
        progress = {alias: AgentProgress(alias) for alias in agents}
        finished: dict[str, AgentAnswer] = {}
        errors: dict[str, ChatError] = {}
        done = {alias: threading.Event() for alias in agents}
        wake = threading.Event()  # set by each agent as it ends, so the turn waits no longer

        # Inside a caller's transaction other threads cannot see its rows: the agents run here,
        # one after another. Otherwise each agent runs in its own thread.
        in_caller = connection.in_atomic_block
        caller = threading.current_thread()

        def work(alias: str) -> None:
            try:
                answer = llm.run_agent(
                    alias=alias,
                    agents=list(self.request.context.agents),
                    history=self.request.context.history,
                    prompt=self.prompt,
                    tools=tools,
                    progress=progress[alias],
                    cancel=self.cancel,
                    # Only a streamed turn reads the text as it comes (then the call streams too).
                    on_text=(
                        None
                        if self.emit is _ignore
                        else lambda text: self.emit("delta", {"model_alias": alias, "text": text})
                    ),
                    tool_budget_tokens=tool_budget_tokens(alias, self.request),
                )
                finished[alias] = answer
                self._agent_done(answer)
            except TurnCancelled:
                pass
            except ChatError as exc:
                errors[alias] = exc
            finally:
                done[alias].set()
                wake.set()
                if threading.current_thread() is not caller:
                    connection.close()  # a tool may have read the database on this thread

        for alias in agents:
            if in_caller:
                work(alias)
            else:
                threading.Thread(
                    target=work, args=(alias,), daemon=True, name=f"pantheon-agent-{alias}"
                ).start()
        self._wait(done, wake)
        answers = [finished.get(alias) or progress[alias].seal() for alias in agents]
        first_error = next((errors[alias] for alias in agents if alias in errors), None)
        return answers, first_error

    def _wait(self, done: dict[str, threading.Event], wake: threading.Event) -> None:
        """Until every agent is done, or the turn is stopped (then briefly, for their last chunk).

        An agent ending or a Stop (this process's, or one the cancel watcher read from the
        key row) wakes this wait at once: nothing polls.
        """
        self.cancel.wakes(wake)
        while True:
            wake.clear()
            if all(event.is_set() for event in done.values()):
                return
            if self.cancel.is_set():
                grace = time.monotonic() + settings.TURN_CANCEL_GRACE_SECONDS
                for event in done.values():
                    event.wait(max(0.0, grace - time.monotonic()))
                return
            wake.wait()

    def _agent_done(self, answer: AgentAnswer) -> None:
        priced = usage_price(calls=answer.llm_calls)
        self.emit(
            "agent_done",
            {
                "model_alias": answer.model_alias,
                "input_tokens": sum(call.input_tokens for call in answer.llm_calls),
                "output_tokens": sum(call.output_tokens for call in answer.llm_calls),
                "multiplier": payloads.decimal_str(priced.events[-1].multiplier) if priced.events else None,
                "credits_burned": payloads.decimal_str(priced.credits_burned),
            },
        )


# --- Committing ------------------------------------------------------------------------


def _commit_turn(
    *, user: User, request: TurnRequest, ran: _Ran, reservation: Reservation | None, hold: CreditHold | None
) -> TurnOutcome:
    """Write the turn and everything it caused in one transaction, debits last."""
    room_id = request.context.room_id
    # Priced now, at commit: the multiplier in force when the turn is charged.
    priced = usage_price(calls=ran.calls)
    file_ids = [f.pk for f in request.files]
    status = ran.status
    error = ran.error if status == Turn.Status.FAILED else None
    with transaction.atomic():
        turn = Turn.objects.create(
            room_id=room_id,
            user_id=user.pk,
            content=request.content,
            credits_burned=priced.credits_burned,
            status=status,
            routed_by=ran.routed_by,
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
                    content=storable(answer.content) or _silent_answer(answer.model_alias, status),
                )
                for position, answer in enumerate(ran.answers, start=1)
            ]
        )
        tool_events = [
            ToolCallEvent(
                user_id=user.pk,
                room_id=room_id,
                turn=turn,
                model_alias=record.model_alias,
                tool_name=record.tool_name,
                arguments=storable_values(record.arguments),
                status=record.status,
                error=storable(record.error[:2000]),
                latency_ms=record.latency_ms,
            )
            for answer in ran.answers
            for record in answer.tool_calls
        ]
        if tool_events:
            ToolCallEvent.objects.bulk_create(tool_events)
        # Billing writes the usage rows and the debits; the wallet row is locked from here to COMMIT.
        usage = usage_record(user_id=user.pk, room_id=room_id, turn_id=turn.pk, priced=priced, hold=hold)
        payload = payloads.turn_payload(
            turn,
            messages=messages,
            usage=usage.events,
            tool_calls=tool_events,
            file_ids=file_ids,
            balance=usage.balance,
        )
        outcome = TurnOutcome(payload, replayed=False)
        if error is not None:
            payload["error"] = {"code": error.code, "message": error.detail}
            outcome = TurnOutcome(
                {**error.as_dict(), "turn": payload}, replayed=False, http_status=error.status_code
            )
        if reservation is not None:
            # Stored with the turn, so a replay answers exactly this.
            key_complete(reservation, turn_id=turn.pk, response=outcome.payload, status=outcome.http_status)
    return outcome


def _silent_answer(alias: str, status: str) -> str:
    if status == Turn.Status.CANCELLED:
        return f"({alias} was stopped before answering.)"
    return f"({alias} did not answer.)"


# --- Orchestration ---------------------------------------------------------------------


def _prompt(request: TurnRequest) -> str:
    attachments = [
        llm.attachment_line(file_id=f.pk, name=f.name, content_type=f.content_type, size=f.size)
        for f in request.files
    ]
    return llm.user_prompt(request.content, attachments)


def quote_turn(*, user: User, request: TurnRequest) -> TurnQuote:
    return turn_quote(user=user, request=request, prompt=_prompt(request))


def _place_hold(user: User, request: TurnRequest) -> CreditHold | None:
    """CREDIT_ENFORCEMENT=enforce: reserve the turn's quote (its true upper bound) or refuse with 402,
    before any model runs. Observe mode places none."""
    if settings.CREDIT_ENFORCEMENT != "enforce":
        return None
    amount = quote_turn(user=user, request=request).credits_high
    return hold_place(user_id=user.pk, amount=amount, description=f"turn in room {request.context.room_id}")


def _release(hold: CreditHold | None) -> None:
    if hold is None:
        return
    try:
        hold_release(hold_id=hold.pk)
    except DatabaseError:
        logger.warning("could not release hold %s; its lease will", hold.pk)


def _run_turn(
    *,
    user: User,
    request: TurnRequest,
    reservation: Reservation | None,
    cancel: TurnCancel,
    emit: Emit,
    hold: CreditHold | None,
) -> TurnOutcome:
    """Run and commit the turn; its hold (if any) is settled by the commit or released on failure."""
    try:
        # Nothing below needs the database until the commit: the connection goes back to the pool.
        release_connection()
        prompt = _prompt(request)
        with turn_work.outside():  # seconds of waiting on providers: the slot serves other turns
            ran = _TurnRun(
                user=user, request=request, prompt=prompt, cancel=cancel, reservation=reservation, emit=emit
            ).run()
        if ran.error is not None and not ran.calls and not ran.cancelled:
            raise ran.error  # no model call ran: nothing to record, nothing to charge
        if ran.error is not None:
            logger.warning(
                "turn failed after model calls ran user=%s room=%s error=%s calls=%d",
                user.pk,
                request.context.room_id,
                ran.error.code,
                len(ran.calls),
            )
        with turn_work.inside():
            return _commit_turn(user=user, request=request, ran=ran, reservation=reservation, hold=hold)
    except BaseException:
        _release(hold)  # the commit did not happen: nothing of it was charged
        raise


def _ignore(event: str, data: dict[str, Any]) -> None:
    """The non-streaming turn has nobody to tell."""


def turn_post(
    *,
    user: User,
    room_id: int,
    content: object,
    model_alias: object = None,
    agents: object = None,
    file_ids: object = None,
    idempotency_key: str | None = None,
) -> TurnOutcome:
    """Post a turn: route, run the agents and their tools, then commit and charge once.

    The fields come as the client sent them and are checked here, types included
    (a ValidationError names each bad field).

    With an `idempotency_key` (scoped to the user) a replay of the same body
    returns the first response and charges nothing; a different body is 409.
    """

    def run() -> TurnOutcome:
        with turn_work.inside():
            request = _validate_turn(
                user=user,
                room_id=room_id,
                content=content,
                model_alias=model_alias,
                agents=agents,
                file_ids=file_ids,
            )
            return _execute(
                user=user, request=request, key=idempotency_key, emit=_ignore, cancel=TurnCancel()
            )

    return _logged(user, room_id, run)


def _logged(user: User, room_id: int, run: Callable[[], TurnOutcome]) -> TurnOutcome:
    started = time.monotonic()
    try:
        outcome = run()
    except Exception as exc:
        logger.info(
            "turn failed user=%s room=%s error=%s latency_ms=%d",
            user.pk,
            room_id,
            getattr(exc, "code", type(exc).__name__),
            (time.monotonic() - started) * 1000,
        )
        raise
    payload = outcome.payload.get("turn", outcome.payload)
    logger.info(
        "turn %s user=%s room=%s turn=%s status=%s agents=%s llm_calls=%d tool_calls=%d credits=%s "
        "balance=%s latency_ms=%d",
        "replayed" if outcome.replayed else "committed",
        user.pk,
        payload["room"],
        payload["id"],
        payload.get("status", Turn.Status.COMPLETED),
        ",".join(m["model_alias"] for m in payload["messages"] if m["role"] == "assistant"),
        len(payload["usage"]),
        len(payload["tool_calls"]),
        payload["credits_burned"],
        payload["balance"],
        (time.monotonic() - started) * 1000,
    )
    return outcome


def _execute(
    *,
    user: User,
    request: TurnRequest,
    key: str | None,
    emit: Emit,
    cancel: TurnCancel,
    placed: list[CreditHold | None] | None = None,
) -> TurnOutcome:
    """Run the turn once per key. `placed` holds a hold placed by the caller (a streamed turn's
    402 must come before its stream), used by the first run; otherwise the hold is placed here."""

    def hold_for(current: TurnRequest) -> CreditHold | None:
        return placed.pop() if placed else _place_hold(user, current)

    if key is None:
        return _run_turn(
            user=user, request=request, reservation=None, cancel=cancel, emit=emit, hold=hold_for(request)
        )
    while True:
        reservation, stored = key_reserve(user_id=user.pk, key=key, fingerprint=request.fingerprint)
        if stored is not None:
            if placed:
                _release(placed.pop())  # a replay charges nothing and holds nothing
            return TurnOutcome(stored.response, replayed=True, http_status=stored.status)
        assert reservation is not None
        cancellation.register(reservation.key_id, cancel)
        try:
            # Read again: the history read before the reservation may be stale by now.
            context = _turn_context(user=user, room_id=request.context.room_id)
            if context is None:
                raise NotFound("Room not found.")
            current = dataclasses.replace(request, context=context)
            return _run_turn(
                user=user,
                request=current,
                reservation=reservation,
                cancel=cancel,
                emit=emit,
                hold=hold_for(current),
            )
        except ReservationLost:
            continue  # another request owns the key now; wait for its response
        except BaseException:
            key_release(reservation)
            raise
        finally:
            cancellation.unregister(reservation.key_id)


# --- Streaming -------------------------------------------------------------------------

_DONE: Event = ("", {})


class TurnStream:
    """A turn running on its own thread, its events read as they happen.

    The turn keeps running (and commits, charging what ran) if the reader goes
    away; `stop()` asks it to stop its model calls at once, as Stop does.
    """

    def __init__(self, *, user: User, request: TurnRequest, key: str | None, hold: CreditHold | None) -> None:
        self._placed: list[CreditHold | None] = [hold]
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._cancel = TurnCancel()
        self._user = user
        self._request = request
        self._key = key
        self._thread = threading.Thread(target=self._run, daemon=True, name="pantheon-turn")

    def start(self) -> TurnStream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._cancel.set()

    def events(self, *, heartbeat_seconds: float) -> Iterator[Event | None]:
        """Each event as it happens; None when `heartbeat_seconds` pass without one."""
        while True:
            try:
                event = self._events.get(timeout=heartbeat_seconds)
            except queue.Empty:
                yield None
                continue
            if event is _DONE:
                return
            yield event

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        self._events.put((event, data))

    def _run(self) -> None:
        try:
            with turn_work.inside():
                outcome = _logged(self._user, self._request.context.room_id, self._execute)
            turn = outcome.payload.get("turn", outcome.payload)
            self._emit("turn", turn)
        except AppError as exc:
            self._emit("error", {"code": exc.code, "message": exc.detail})
        except ValidationError as exc:
            self._emit("error", {"code": "invalid", "message": " ".join(exc.messages)})
        except Exception:
            logger.exception("streamed turn crashed user=%s", self._user.pk)
            self._emit("error", {"code": "server_error", "message": "The turn could not be completed."})
        finally:
            self._events.put(_DONE)
            connection.close()  # this thread's connection goes back to the pool

    def _execute(self) -> TurnOutcome:
        return _execute(
            user=self._user,
            request=self._request,
            key=self._key,
            emit=self._emit,
            cancel=self._cancel,
            placed=self._placed,
        )


def turn_quote_for(
    *,
    user: User,
    room_id: int,
    content: object,
    model_alias: object = None,
    agents: object = None,
    file_ids: object = None,
) -> TurnQuote:
    """The quote for the body a turn would have (validated the same way); no model is called."""
    request = _validate_turn(
        user=user, room_id=room_id, content=content, model_alias=model_alias, agents=agents, file_ids=file_ids
    )
    return quote_turn(user=user, request=request)


def turn_stream(
    *,
    user: User,
    room_id: int,
    content: object,
    model_alias: object = None,
    agents: object = None,
    file_ids: object = None,
    idempotency_key: str | None = None,
) -> TurnStream:
    """Validate a turn (errors raise here, before any event) and start it streaming."""
    with turn_work.inside():
        try:
            request = _validate_turn(
                user=user,
                room_id=room_id,
                content=content,
                model_alias=model_alias,
                agents=agents,
                file_ids=file_ids,
            )
        except Exception as exc:
            logger.info(
                "turn failed user=%s room=%s error=%s latency_ms=0", user.pk, room_id, type(exc).__name__
            )
            raise
        if idempotency_key is None or not key_has_response(
            user_id=user.pk, key=idempotency_key, fingerprint=request.fingerprint
        ):
            # A refusal is a plain 402 before the stream starts (a replay is never refused).
            hold = _place_hold(user, request)
        else:
            hold = None
    stream = TurnStream(user=user, request=request, key=idempotency_key, hold=hold)
    release_connection()  # the request thread only relays events from here on
    return stream.start()
