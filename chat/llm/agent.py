"""The manager call and the agent loop. No database access happens here.

Every model invocation becomes an `LLMCall` and every tool call a
`ToolCallRecord`, held in memory until the turn service commits them all in
one transaction. Token counts come only from the response's `usage_metadata`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from dataclasses import dataclass

from django.conf import settings
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from chat.errors import ProviderFailed, ToolFailed
from chat.llm import prompts
from chat.llm.registry import ResolvedModel, resolve
from chat.tools.base import Tool, ToolError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMCall:
    model_alias: str
    provider_model: str
    purpose: str
    input_tokens: int
    output_tokens: int
    latency_ms: int


@dataclass(frozen=True)
class ToolCallRecord:
    model_alias: str
    tool_name: str
    arguments: dict
    status: str  # "ok" or "error"
    error: str
    latency_ms: int


@dataclass(frozen=True)
class ChatLine:
    """One earlier message of the room, given to the agents as context."""

    role: str  # "user" or "assistant"
    model_alias: str
    content: str


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


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _token_count(usage: dict, name: str) -> int:
    value = usage.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} is {value!r}")
    return value


def invoke(model: ResolvedModel, runnable, messages: list[BaseMessage], *, purpose: str):
    """One model call → (reply, LLMCall). Any provider failure is a `ProviderFailed`."""
    started = time.monotonic()
    try:
        reply = runnable.invoke(messages)
    except Exception as exc:
        # The exception text may quote request details; log its type only.
        logger.warning(
            "model call failed alias=%s provider_model=%s error=%s",
            model.alias,
            model.provider_model,
            type(exc).__name__,
        )
        raise ProviderFailed(
            f"The model provider for {model.alias} failed ({type(exc).__name__}).", model_alias=model.alias
        ) from exc
    usage = getattr(reply, "usage_metadata", None) or {}
    try:
        input_tokens = _token_count(usage, "input_tokens")
        output_tokens = _token_count(usage, "output_tokens")
    except ValueError as exc:
        # We bill only what the provider reports; a reply without usage cannot be billed.
        raise ProviderFailed(
            f"The model provider for {model.alias} returned no token usage.", model_alias=model.alias
        ) from exc
    call = LLMCall(
        model_alias=model.alias,
        provider_model=model.provider_model,
        purpose=purpose,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_ms=_elapsed_ms(started),
    )
    return reply, call


def parse_routing(text: str, agents: list[str]) -> list[str]:
    """The agents named by the manager's JSON array, in room order; [] when unreadable."""
    match = re.search(r"\[.*?\]", text, re.DOTALL)
    if match is None:
        return []
    try:
        named = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    if not isinstance(named, list):
        return []
    return [agent for agent in agents if agent in {str(name) for name in named}]


def route_turn(*, content: str, agents: list[str]) -> Routing:
    """The manager's (unmetered) call: which agents answer. Unreadable → all of them."""
    manager = resolve(settings.CHAT_MANAGER_ALIAS)
    messages = [SystemMessage(prompts.routing_system(agents)), HumanMessage(content)]
    reply, call = invoke(manager, manager.chat_model, messages, purpose="manager")
    return Routing(agents=parse_routing(reply.text, agents) or list(agents), llm_call=call)


def _history_messages(history: list[ChatLine]) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for line in history:
        if line.role == "user":
            messages.append(HumanMessage(line.content))
        else:
            messages.append(AIMessage(f"[{line.model_alias}] {line.content}"))
    return messages


def _run_tool(alias: str, tools: dict[str, Tool], tool_call: dict) -> tuple[ToolCallRecord, str]:
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


def run_agent(
    *, alias: str, agents: list[str], history: list[ChatLine], prompt: str, tools: list[Tool]
) -> AgentAnswer:
    """Invoke the agent, run the tools it asks for, feed the results back; bounded steps."""
    model = resolve(alias)
    runnable = model.chat_model.bind_tools([tool.spec() for tool in tools]) if tools else model.chat_model
    by_name = {tool.name: tool for tool in tools}
    messages = [
        SystemMessage(prompts.agent_system(alias, agents)),
        *_history_messages(history),
        HumanMessage(prompt),
    ]
    llm_calls: list[LLMCall] = []
    tool_calls: list[ToolCallRecord] = []
    reply = None
    for _step in range(max(1, settings.CHAT_MAX_AGENT_STEPS)):
        reply, call = invoke(model, runnable, messages, purpose="agent")
        llm_calls.append(call)
        messages.append(reply)
        if not reply.tool_calls:
            break
        for index, tool_call in enumerate(reply.tool_calls):
            record, content = _run_tool(alias, by_name, tool_call)
            tool_calls.append(record)
            messages.append(
                ToolMessage(
                    content=content,
                    tool_call_id=tool_call.get("id") or f"call_{len(llm_calls)}_{index}",
                    name=record.tool_name,
                    status="error" if record.status == "error" else "success",
                )
            )
    content = reply.text.strip() if reply is not None else ""
    if not content:
        content = f"({alias} stopped after {len(llm_calls)} model calls without a final answer.)"
    return AgentAnswer(model_alias=alias, content=content, llm_calls=llm_calls, tool_calls=tool_calls)
