"""The manager call and the agent loop. No database access happens here.

Every model invocation becomes a billing `CallRecord` (`LLMCall` here) and every tool call a
`ToolCallRecord`, held in memory until the turn service commits them all in
one transaction. Token counts come only from the response's `usage_metadata`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import ToolCall
from langchain_core.runnables import Runnable

from billing.services import CallRecord as LLMCall
from chat.errors import ProviderFailed, ToolFailed
from chat.llm import prompts, tokens
from chat.llm.registry import ResolvedModel, resolve
from chat.tools.base import Tool, ToolError
from chat.values import ChatLine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolCallRecord:
    model_alias: str
    tool_name: str
    arguments: dict
    status: str  # "ok" or "error"
    error: str
    latency_ms: int


@dataclass(frozen=True)
class AgentAnswer:
    model_alias: str
    content: str
    llm_calls: list[LLMCall]
    tool_calls: list[ToolCallRecord]


@dataclass(frozen=True)
class Routing:
    agents: list[str]
    llm_call: LLMCall
    # True when the manager's reply could not be read and CHAT_ROUTING_FALLBACK chose.
    fallback: bool = False


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _token_count(usage: Mapping[str, Any], name: str) -> int | None:
    value = usage.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


# Providers whose chat API has a JSON mode (`response_format={"type": "json_object"}`).
JSON_MODE_PROVIDERS = {"openai", "deepseek"}


def _detail(usage: Mapping[str, Any], group: str, name: str) -> int:
    """A token detail from LangChain's `usage_metadata` (e.g. input_token_details.cache_read); 0 if absent."""
    details = usage.get(group)
    value = details.get(name) if isinstance(details, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class TurnCancelled(Exception):
    """The turn was stopped (Stop, or the client went away) while this agent was working."""


@dataclass
class _OpenCall:
    model: ResolvedModel
    purpose: str
    messages: list[BaseMessage]
    tools: list[dict]
    started: float
    text: list[str] = field(default_factory=list)


class AgentProgress:
    """What one agent has done so far, readable from another thread.

    The agent's thread records each model call as it starts, the text that
    streams in, and each call and tool call as it ends. When the turn is
    stopped or fails, the turn's thread `seal`s the progress: it takes what
    ran (a call cut short is counted from its prompt and the text received, with
    the model's tokenizer, and marked `estimated`) and every later update from
    the agent's thread is ignored, so a call is billed once, whoever finishes first.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._lock = threading.Lock()
        self._calls: list[LLMCall] = []
        self._tools: list[ToolCallRecord] = []
        self._open: _OpenCall | None = None
        self._answer = ""
        self._sealed = False

    def call_started(
        self, model: ResolvedModel, messages: list[BaseMessage], purpose: str, tools: Sequence[dict]
    ) -> None:
        with self._lock:
            if not self._sealed:
                self._open = _OpenCall(model, purpose, list(messages), list(tools), time.monotonic())

    def text_received(self, text: str) -> None:
        with self._lock:
            if not self._sealed and self._open is not None:
                self._open.text.append(text)

    def call_finished(self, call: LLMCall, answer: str) -> None:
        with self._lock:
            if not self._sealed:
                self._calls.append(call)
                self._open = None
                self._answer = answer

    def tool_finished(self, record: ToolCallRecord) -> None:
        with self._lock:
            if not self._sealed:
                self._tools.append(record)

    def call_failed(self) -> None:
        """The open call failed; it is billed only if the provider had started answering."""
        with self._lock:
            if not self._sealed and self._open is not None and not self._open.text:
                self._open = None

    def seal(self) -> AgentAnswer:
        """Everything that ran, as an answer; the open call (if any) counted and marked estimated."""
        with self._lock:
            self._sealed = True
            calls = list(self._calls)
            answer = self._answer
            if self._open is not None:
                opened = self._open
                received = "".join(opened.text)
                calls.append(
                    LLMCall(
                        model_alias=opened.model.alias,
                        provider_model=opened.model.provider_model,
                        purpose=opened.purpose,
                        input_tokens=tokens.prompt_tokens(
                            opened.model.alias, opened.messages, tools=opened.tools
                        ),
                        output_tokens=tokens.text_tokens(opened.model.alias, received),
                        latency_ms=_elapsed_ms(opened.started),
                        usage_source="estimated",
                    )
                )
                answer = received or answer
            return AgentAnswer(
                model_alias=self.alias, content=answer.strip(), llm_calls=calls, tool_calls=list(self._tools)
            )


def stream_call(
    model: ResolvedModel,
    runnable: Runnable[Any, Any],
    messages: list[BaseMessage],
    *,
    purpose: str,
    progress: AgentProgress,
    cancel: threading.Event,
    on_text: Callable[[str], None] | None = None,
    tools: Sequence[dict] = (),
) -> tuple[AIMessage, LLMCall]:
    """One model call → (reply, LLMCall), recorded on `progress` as it goes.

    With `on_text` the call streams: each piece of text reaches `on_text` as it
    arrives, and a set `cancel` stops it at the next chunk (closing the
    provider's response) with `TurnCancelled`. Without it nobody is reading the
    text as it comes, so the call is a plain request: one response to parse
    instead of a chunk per token (a third of the CPU). A Stop then abandons the
    call (the turn bills it from its prompt, `estimated`).

    Usage comes from the provider (in a stream: requested with `stream_usage`);
    a reply without it is counted with the model's tokenizer and marked
    `estimated`. Any provider failure is a `ProviderFailed`.
    """
    if cancel.is_set():
        raise TurnCancelled()
    progress.call_started(model, messages, purpose, tools)
    started = time.monotonic()
    merged: AIMessage | AIMessageChunk | None = None
    try:
        if on_text is None:
            merged = runnable.invoke(messages)
            if merged is not None and merged.text:
                progress.text_received(merged.text)
        else:
            for chunk in runnable.stream(messages):
                if cancel.is_set():
                    raise TurnCancelled()
                merged = chunk if merged is None else merged + chunk
                text = chunk.text
                if text:
                    progress.text_received(text)
                    on_text(text)
    except (TurnCancelled, ToolFailed):
        raise
    except Exception as exc:
        # The exception text may quote request details; log its type only.
        logger.warning(
            "model call failed alias=%s provider_model=%s error=%s",
            model.alias,
            model.provider_model,
            type(exc).__name__,
        )
        progress.call_failed()
        raise ProviderFailed(
            f"The model provider for {model.alias} failed ({type(exc).__name__}).", model_alias=model.alias
        ) from exc
    reply = AIMessage(
        content=merged.content if merged is not None else "",
        tool_calls=merged.tool_calls if merged is not None else [],
    )
    usage: Mapping[str, Any] = (merged.usage_metadata if merged is not None else None) or {}
    input_tokens = _token_count(usage, "input_tokens")
    output_tokens = _token_count(usage, "output_tokens")
    source = "provider"
    if input_tokens is None or output_tokens is None:
        # The provider said nothing about usage: count it ourselves rather than not bill a call that ran.
        source = "estimated"
        input_tokens = tokens.prompt_tokens(model.alias, messages, tools=tools)
        output_tokens = tokens.message_tokens(model.alias, reply)
    call = LLMCall(
        model_alias=model.alias,
        provider_model=model.provider_model,
        purpose=purpose,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=_elapsed_ms(started),
        usage_source=source,
        cached_input_tokens=_detail(usage, "input_token_details", "cache_read"),
        reasoning_tokens=_detail(usage, "output_token_details", "reasoning"),
    )
    progress.call_finished(call, reply.text)
    return reply, call


def parse_routing(text: str, agents: list[str]) -> list[str]:
    """The room's agents the manager named, in room order; [] when its reply cannot be read.

    The reply must be JSON: `{"agents": [...]}` (what it is asked for) or a bare list.
    Names match the room's agents case-insensitively; any other name is ignored.
    """
    try:
        reply = json.loads(text.strip().removeprefix("```json").removeprefix("```").removesuffix("```"))
    except (json.JSONDecodeError, RecursionError):
        return []
    named = reply.get("agents") if isinstance(reply, dict) else reply
    if not isinstance(named, list):
        return []
    wanted = {name.lower() for name in named if isinstance(name, str)}
    return [agent for agent in agents if agent.lower() in wanted]


def routing_fallback(agents: list[str]) -> list[str]:
    """Who answers when the manager's reply is unreadable: CHAT_ROUTING_FALLBACK (`first` or `all`)."""
    return list(agents) if settings.CHAT_ROUTING_FALLBACK == "all" else list(agents[:1])


def route_turn(
    *,
    content: str,
    agents: list[str],
    progress: AgentProgress | None = None,
    cancel: threading.Event | None = None,
) -> Routing:
    """The manager's (unmetered) call: which agents answer. Unreadable → CHAT_ROUTING_FALLBACK."""
    manager = resolve(settings.CHAT_MANAGER_ALIAS)
    messages: list[BaseMessage] = [SystemMessage(prompts.routing_system(agents)), HumanMessage(content)]
    runnable: Runnable[Any, Any] = manager.chat_model
    if manager.provider in JSON_MODE_PROVIDERS:
        # Structured output where the provider has it; the reply is still validated below.
        runnable = manager.chat_model.bind(response_format={"type": "json_object"})
    reply, call = stream_call(
        manager,
        runnable,
        messages,
        purpose="manager",
        progress=progress or AgentProgress(manager.alias),
        cancel=cancel or threading.Event(),
    )
    chosen = parse_routing(reply.text, agents)
    if chosen:
        return Routing(agents=chosen, llm_call=call)
    logger.warning("routing reply unreadable manager=%s; falling back", manager.alias)
    return Routing(agents=routing_fallback(agents), llm_call=call, fallback=True)


def _history_messages(history: list[ChatLine]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for line in history:
        if line.role == "user":
            messages.append(HumanMessage(line.content))
        else:
            messages.append(AIMessage(f"[{line.model_alias}] {line.content}"))
    return messages


def _run_tool(alias: str, tools: dict[str, Tool], tool_call: ToolCall) -> tuple[ToolCallRecord, str]:
    name = tool_call.get("name") or ""
    arguments = tool_call.get("args") or {}
    started = time.monotonic()
    tool = tools.get(name)
    try:
        if tool is None:
            raise ToolError("unknown_tool", f"there is no tool named {name!r}")
        content, status, error = tool.run(arguments), "ok", ""
    except ToolError as exc:
        content = json.dumps({"error": exc.code, "detail": exc.detail})
        status, error = "error", str(exc)
    except Exception as exc:
        # The exception's message may quote the user's file (a parser error echoing a line):
        # log its type and where it was raised, never its text.
        logger.error(
            "tool crashed tool=%s alias=%s error=%s\n%s",
            name,
            alias,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        raise ToolFailed(f"The {name} tool failed unexpectedly.", tool_name=name) from exc
    record = ToolCallRecord(alias, name, arguments, status, error, _elapsed_ms(started))
    return record, content


# Tokens a tool message may cost beyond its content (role, id, framing, or the short over-budget
# error that replaces it), and a round's AI message beyond its output tokens: the hold's bound
# counts them (tokens.prompt_tokens stays within these).
TOOL_MESSAGE_OVERHEAD_TOKENS = 48
ROUND_OVERHEAD_TOKENS = 50
OVER_BUDGET_RESULT = '{"error": "budget", "detail": "tool results over this turn\'s budget"}'


def _agent_messages(
    *, alias: str, agents: list[str], history: list[ChatLine], prompt: str
) -> list[BaseMessage]:
    return [
        SystemMessage(prompts.agent_system(alias, agents)),
        *_history_messages(history),
        HumanMessage(prompt),
    ]


def agent_call_bounds(
    *,
    alias: str,
    agents: list[str],
    history: list[ChatLine],
    prompt: str,
    tools: list[Tool],
    tool_budget_tokens: int,
) -> list[tuple[int, int]]:
    """(input tokens, output cap) of every call the agent may make, counted with its tokenizer.

    Step k reads the prompt plus, per earlier step, its reply (at most the output
    cap) and its tool results (at most `tool_budget_tokens`), with their framing.
    Provider calls are made with max_tokens = CREDIT_HOLD_OUTPUT_TOKENS.
    """
    messages = _agent_messages(alias=alias, agents=agents, history=history, prompt=prompt)
    base = tokens.prompt_tokens(alias, messages, tools=[tool.spec() for tool in tools])
    cap = settings.CREDIT_HOLD_OUTPUT_TOKENS
    calls = settings.CHAT_MAX_TOOL_CALLS_PER_STEP
    per_round = cap + tool_budget_tokens + calls * TOOL_MESSAGE_OVERHEAD_TOKENS + ROUND_OVERHEAD_TOKENS
    steps = max(1, settings.CHAT_MAX_AGENT_STEPS) if tools else 1
    return [(base + step * per_round, cap) for step in range(steps)]


def run_agent(
    *,
    alias: str,
    agents: list[str],
    history: list[ChatLine],
    prompt: str,
    tools: list[Tool],
    progress: AgentProgress | None = None,
    cancel: threading.Event | None = None,
    on_text: Callable[[str], None] | None = None,
    tool_budget_tokens: int | None = None,
) -> AgentAnswer:
    """Invoke the agent, run the tools it asks for, feed the results back; bounded steps.

    Each round's tool results together stay within `tool_budget_tokens` (a result
    that would pass it is replaced by a short error), so the turn's hold bounds
    what the next step reads.

    Each step is one streamed model call; `on_text` receives the answer's text as
    it arrives. A provider failure raises `ProviderFailed`, a tool crash
    `ToolFailed`, a set `cancel` `TurnCancelled`; in every case `progress` holds
    what ran so far.
    """
    progress = progress or AgentProgress(alias)
    cancel = cancel or threading.Event()
    model = resolve(alias)
    specs = [tool.spec() for tool in tools]
    runnable = model.chat_model.bind_tools(specs) if specs else model.chat_model
    by_name = {tool.name: tool for tool in tools}
    messages = _agent_messages(alias=alias, agents=agents, history=history, prompt=prompt)
    steps = 0
    reply = None
    for _step in range(max(1, settings.CHAT_MAX_AGENT_STEPS)):
        reply, _call = stream_call(
            model,
            runnable,
            messages,
            purpose="agent",
            progress=progress,
            cancel=cancel,
            on_text=on_text,
            tools=specs,
        )
        steps += 1
        if len(reply.tool_calls) > settings.CHAT_MAX_TOOL_CALLS_PER_STEP:
            # Only the first calls of a step run (the model sees only those it made).
            reply = AIMessage(
                content=reply.content, tool_calls=reply.tool_calls[: settings.CHAT_MAX_TOOL_CALLS_PER_STEP]
            )
        messages.append(reply)
        if not reply.tool_calls:
            break
        budget = tool_budget_tokens
        for index, tool_call in enumerate(reply.tool_calls):
            if cancel.is_set():
                raise TurnCancelled()
            record, content = _run_tool(alias, by_name, tool_call)
            if budget is not None:
                used = tokens.text_tokens(alias, content)
                if used > budget:
                    content, used = OVER_BUDGET_RESULT, 0  # within TOOL_MESSAGE_OVERHEAD_TOKENS
                budget -= used
            progress.tool_finished(record)
            messages.append(
                ToolMessage(
                    content=content,
                    tool_call_id=tool_call.get("id") or f"call_{steps}_{index}",
                    name=record.tool_name,
                    status="error" if record.status == "error" else "success",
                )
            )
    answer = progress.seal()
    content = reply.text.strip() if reply is not None else ""
    if not content:
        content = f"({alias} stopped after {steps} model calls without a final answer.)"
    return AgentAnswer(
        model_alias=alias, content=content, llm_calls=answer.llm_calls, tool_calls=answer.tool_calls
    )
