"""chat.llm: the offline model, provider resolution, routing and the agent loop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from chat.errors import ProviderFailed, ToolFailed
from chat.llm import attachment_line, count_tokens, resolve, route_turn, run_agent, user_prompt
from chat.llm.agent import parse_routing
from chat.llm.offline import OfflineChatModel
from chat.llm.tokens import text_tokens, tokenize
from chat.tools.base import Tool, ToolError
from tests.chat.conftest import FAKE_OPENAI_KEY

FILE_TOOL = Tool(
    name="file_read",
    description="read a file",
    parameters={"type": "object", "properties": {"file_id": {"type": "integer"}}, "required": ["file_id"]},
    run=lambda arguments: json.dumps({"text": f"contents of {arguments['file_id']}"}),
)


def test_tokenizer_counts_words_and_punctuation():
    assert tokenize("Hello, world! 42 times.") == ["Hello", ",", "world", "!", "42", "times", "."]
    assert count_tokens("Hello, world! 42 times.") == 7
    assert count_tokens("") == 0


def test_offline_model_is_a_langchain_chat_model_with_real_usage():
    model = resolve("gpt-4o").chat_model
    assert isinstance(model, OfflineChatModel) and isinstance(model, BaseChatModel)
    messages = [SystemMessage("Be brief."), HumanMessage("What is the capital of France?")]

    first = model.invoke(messages)
    second = model.invoke(messages)

    assert first.text == second.text  # deterministic
    assert "capital of France" in first.text
    # Input tokens are the tokenizer's count of exactly what the model read.
    read = "system: Be brief.\nhuman: What is the capital of France?"
    assert first.usage_metadata["input_tokens"] == count_tokens(read)
    assert first.usage_metadata["output_tokens"] == count_tokens(first.text)
    assert first.usage_metadata["total_tokens"] == (
        first.usage_metadata["input_tokens"] + first.usage_metadata["output_tokens"]
    )


def test_offline_model_calls_file_tools_for_attached_files_and_search_only_when_asked():
    model = OfflineChatModel(alias="gpt-4o")
    specs = [
        FILE_TOOL.spec(),
        {**FILE_TOOL.spec(), "function": {**FILE_TOOL.spec()["function"], "name": "web_search"}},
    ]
    attached = user_prompt(
        "Summarize this.", [attachment_line(file_id=7, name="a.txt", content_type="text/plain", size=3)]
    )

    reply = model.bind_tools(specs).invoke([HumanMessage(attached)])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("file_read", {"file_id": 7})]

    reply = model.bind_tools(specs).invoke([HumanMessage("Please search the latest news on Mars")])
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [
        ("web_search", {"query": "Please search the latest news on Mars"})
    ]

    # Without tools bound it just answers.
    assert model.invoke([HumanMessage(attached)]).tool_calls == []


def test_parse_routing_reads_json_only_and_keeps_room_order():
    agents = ["gpt-4o", "gpt-4o-mini", "deepseek"]
    assert parse_routing('{"agents": ["deepseek", "gpt-4o"]}', agents) == ["gpt-4o", "deepseek"]
    assert parse_routing('["gpt-4o-mini"]', agents) == ["gpt-4o-mini"]
    assert parse_routing('```json\n{"agents": ["GPT-4o"]}\n```', agents) == ["gpt-4o"]
    # Prose around a list is not a routing reply (the prose may name other agents).
    assert parse_routing('Sure: ["deepseek", "gpt-4o"]', agents) == []
    assert parse_routing("no idea", agents) == []
    assert parse_routing('["nobody"]', agents) == []
    assert parse_routing("[not json", agents) == []


def test_offline_manager_picks_mentioned_agents_or_all():
    agents = ["gpt-4o", "claude-haiku", "deepseek"]

    mentioned = route_turn(content="@deepseek what do you think?", agents=agents)
    everyone = route_turn(content="What do you all think?", agents=agents)

    assert mentioned.agents == ["deepseek"]
    assert everyone.agents == agents
    assert mentioned.llm_call.purpose == "manager"
    assert mentioned.llm_call.model_alias == "default"
    assert mentioned.llm_call.provider_model == "offline/default"
    assert mentioned.llm_call.input_tokens > 0 and mentioned.llm_call.output_tokens > 0


def test_resolve_uses_a_provider_only_when_its_key_is_set(settings):
    assert resolve("claude-sonnet").provider_model == "offline/claude-sonnet"
    settings.ANTHROPIC_API_KEY = "sk-ant-test"
    resolved = resolve("claude-sonnet")
    assert resolved.provider == "anthropic"
    assert resolved.provider_model == "anthropic/claude-sonnet-4-5"
    assert type(resolved.chat_model).__name__ == "ChatAnthropic"
    # The same configuration reuses the same client.
    assert resolve("claude-sonnet").chat_model is resolved.chat_model


def test_agent_reads_tokens_from_the_openai_usage_block(openai_server):
    server = openai_server(prompt_tokens=123, completion_tokens=45, reply="Paris.")

    answer = run_agent(alias="gpt-4o", agents=["gpt-4o"], history=[], prompt="Capital of France?", tools=[])

    assert answer.content == "Paris."
    [call] = answer.llm_calls
    assert (call.input_tokens, call.output_tokens) == (123, 45)
    assert call.provider_model == "openai/gpt-4o"
    [request] = server.requests
    assert request["body"]["model"] == "gpt-4o"
    assert request["headers"]["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"


def test_agent_runs_requested_tools_and_feeds_results_back(openai_server):
    server = openai_server(prompt_tokens=11, completion_tokens=7, tool_calls=[("file_read", {"file_id": 5})])

    answer = run_agent(alias="gpt-4o", agents=["gpt-4o"], history=[], prompt="Read file 5", tools=[FILE_TOOL])

    assert len(answer.llm_calls) == 2
    assert [(t.tool_name, t.arguments, t.status) for t in answer.tool_calls] == [
        ("file_read", {"file_id": 5}, "ok")
    ]
    first, second = server.completions()
    assert [tool["function"]["name"] for tool in first["tools"]] == ["file_read"]
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {"text": "contents of 5"}


def test_a_tool_error_goes_back_to_the_model_and_a_crash_fails_the_turn(openai_server):
    def not_found(arguments: dict) -> str:
        raise ToolError("not_found", "no such file")

    def crash(arguments: dict) -> str:
        raise RuntimeError("bug")

    server = openai_server(tool_calls=[("file_read", {"file_id": 9})])
    failing = Tool("file_read", "read", FILE_TOOL.parameters, not_found)
    answer = run_agent(alias="gpt-4o", agents=["gpt-4o"], history=[], prompt="Read 9", tools=[failing])

    [record] = answer.tool_calls
    assert record.status == "error" and "not_found" in record.error
    assert json.loads(server.completions()[1]["messages"][-1]["content"])["error"] == "not_found"

    crashing = Tool("file_read", "read", FILE_TOOL.parameters, crash)
    with pytest.raises(ToolFailed):
        run_agent(alias="gpt-4o", agents=["gpt-4o"], history=[], prompt="Read 9", tools=[crashing])


def test_agent_loop_is_bounded(openai_server, settings):
    settings.CHAT_MAX_AGENT_STEPS = 3
    openai_server(tool_calls=[("file_read", {"file_id": 1})], repeat_tools=True)

    answer = run_agent(alias="gpt-4o", agents=["gpt-4o"], history=[], prompt="loop", tools=[FILE_TOOL])

    assert len(answer.llm_calls) == 3
    assert len(answer.tool_calls) == 3
    assert "stopped after 3 model calls" in answer.content


def test_a_provider_failure_is_a_provider_error(openai_server):
    openai_server(fail_models={"gpt-4o"})
    with pytest.raises(ProviderFailed) as failed:
        run_agent(alias="gpt-4o", agents=["gpt-4o"], history=[], prompt="hi", tools=[])
    assert failed.value.status_code == 502


def test_a_stream_without_usage_is_counted_with_the_tokenizer_and_marked_estimated(openai_server):
    server = openai_server(omit_usage=True, reply="Four words of answer")
    answer = run_agent(alias="gpt-4o", agents=["gpt-4o"], history=[], prompt="hi", tools=[])

    [call] = answer.llm_calls
    assert call.usage_source == "estimated"
    assert call.output_tokens == text_tokens("gpt-4o", "Four words of answer")
    assert call.input_tokens > 0
    assert server.completions()[-1]["model"] == "gpt-4o"


def test_only_chat_llm_imports_langchain():
    root = Path(__file__).resolve().parents[2]
    imports_langchain = re.compile(r"^\s*(from|import)\s+langchain", re.MULTILINE)
    offenders = [
        str(path.relative_to(root))
        for app in ("chat", "billing", "accounts", "pantheon")
        for path in (root / app).rglob("*.py")
        if imports_langchain.search(path.read_text()) and "chat/llm/" not in path.as_posix()
    ]
    assert offenders == []
