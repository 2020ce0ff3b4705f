"""The built-in offline model: a real LangChain chat model that needs no network.

It answers deterministically from the prompt, calls tools the way a real model
would (file tools for attached files, web search when asked to search) and
reports `usage_metadata` counted by its own tokenizer over the exact text it
read and wrote, so a turn is metered the same way as with any provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from chat.llm.prompts import ATTACHMENTS_HEADER, ROUTING_MARKER
from chat.llm.tokens import TOKEN_RE, count_tokens, offline_message_text, offline_prompt_text

FILE_REF_RE = re.compile(r"\[file #(\d+)\]")
MENTION_RE = re.compile(r"@([\w.-]+)")
SEARCH_RE = re.compile(r"\b(search|look up|google|latest|news|current)\b", re.IGNORECASE)
PARSE_RE = re.compile(r"\b(parse|table|rows|columns)\b", re.IGNORECASE)


def _first_tokens(text: str, limit: int) -> str:
    """`text` cut after its first `limit` tokens (the offline tokenizer's)."""
    for index, match in enumerate(TOKEN_RE.finditer(text)):
        if index == limit - 1:
            return text[: match.end()]
    return text


def _tool_names(tools: list[dict]) -> set[str]:
    return {tool["function"]["name"] for tool in tools if "function" in tool}


class OfflineChatModel(BaseChatModel):
    alias: str = "default"
    # Like a provider's max_tokens: the reply is cut after this many tokens (None: no cap).
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "pantheon-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"alias": self.alias}

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any):
        return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        *,
        tools: list[dict] | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = tools or []
        reply = self._reply(messages, tools)
        if self.max_tokens is not None and not reply.tool_calls:
            reply = AIMessage(content=_first_tokens(str(reply.content), self.max_tokens))
        input_tokens = count_tokens(offline_prompt_text(messages, tools))
        output_tokens = count_tokens(offline_message_text(reply).partition(": ")[2])
        reply.usage_metadata = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        *,
        tools: list[dict] | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The same reply, word by word, with the usage on the last chunk (as providers stream it)."""
        reply = self._generate(messages, stop, run_manager, tools=tools, **kwargs).generations[0].message
        assert isinstance(reply, AIMessage)
        words = re.findall(r"\S+\s*", str(reply.content)) or [""]
        for index, word in enumerate(words):
            last = index == len(words) - 1
            chunk = AIMessageChunk(
                content=word,
                tool_call_chunks=(
                    [
                        {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": n}
                        for n, c in enumerate(reply.tool_calls)
                    ]
                    if last
                    else []
                ),
                usage_metadata=reply.usage_metadata if last else None,
            )
            yield ChatGenerationChunk(message=chunk)

    def _reply(self, messages: list[BaseMessage], tools: list[dict]) -> AIMessage:
        system = next((m.text for m in messages if isinstance(m, SystemMessage)), "")
        last_human = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
        question = messages[last_human].text if last_human >= 0 else ""
        if system.startswith(ROUTING_MARKER):
            return AIMessage(content=self._route(system, question))
        results = [m for m in messages[last_human + 1 :] if isinstance(m, ToolMessage)]
        if not results:
            calls = self._plan_tool_calls(question, _tool_names(tools))
            if calls:
                return AIMessage(content="", tool_calls=calls)
        return AIMessage(content=self._answer(question, results))

    def _route(self, system: str, question: str) -> str:
        agents_line = next((line for line in system.splitlines() if line.startswith("Agents: ")), "")
        agents = [a.strip() for a in agents_line.removeprefix("Agents: ").split(",") if a.strip()]
        mentioned = set(MENTION_RE.findall(question))
        chosen = [agent for agent in agents if agent in mentioned] or agents
        return json.dumps(chosen)

    def _plan_tool_calls(self, question: str, names: set[str]) -> list[dict]:
        asked, _, attachments = question.partition(ATTACHMENTS_HEADER)
        calls: list[tuple[str, dict]] = []
        file_tool = "file_parse" if PARSE_RE.search(asked) and "file_parse" in names else "file_read"
        if file_tool in names:
            calls += [(file_tool, {"file_id": int(i)}) for i in FILE_REF_RE.findall(attachments)]
        if "web_search" in names and SEARCH_RE.search(asked):
            calls.append(("web_search", {"query": " ".join(asked.split())[:200]}))
        return [
            {"name": name, "args": args, "id": f"call_{index}", "type": "tool_call"}
            for index, (name, args) in enumerate(calls, start=1)
        ]

    def _answer(self, question: str, results: list[ToolMessage]) -> str:
        asked = " ".join(question.partition(ATTACHMENTS_HEADER)[0].split())
        quoted = asked if len(asked) <= 160 else asked[:157] + "..."
        parts = [f"{self.alias} (offline) on “{quoted}”: I have no network, so this is a canned answer."]
        for result in results:
            status = "failed" if result.status == "error" else "returned"
            parts.append(f"{result.name} {status}: {_summarize(str(result.content))}")
        return "\n".join(parts)


def _summarize(content: str) -> str:
    """A short, readable line for one tool result (the tools answer JSON)."""
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return " ".join(content.split())[:200]
    name = data.get("name", "")
    if "error" in data:
        return f"{data['error']}: {data.get('detail', '')}"
    if "text" in data:
        return f"{name}: {' '.join(str(data['text']).split())[:300]}"
    if "results" in data:
        return " | ".join(
            f"{r.get('title', '')}: {str(r.get('content', ''))[:150]}" for r in data["results"][:3]
        )
    if "header" in data:
        return f"{name}: columns {', '.join(map(str, data['header']))}; {data.get('row_count', 0)} rows"
    if "pages" in data:
        return f"{name}: {len(data['pages'])} page(s): {' '.join(' '.join(data['pages']).split())[:300]}"
    return " ".join(json.dumps(data).split())[:200]
