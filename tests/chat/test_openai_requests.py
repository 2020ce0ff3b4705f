"""OpenAI-protocol requests skip the SDK's parameter transform (chat.llm.openai_requests).

The provider must receive what the stock SDK sends — the same JSON document
(the SDK's transform only reorders its keys) and the same headers that
matter — for every kind of request a turn makes, and the answers must read
the same. Real LangChain client, real OpenAI
SDK, a local OpenAI-compatible server.
"""

from __future__ import annotations

import json

import openai
import pytest
from langchain.chat_models import init_chat_model
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from chat.llm.openai_requests import JSONReadyCompletions, send_bodies_as_built
from chat.llm.registry import resolve
from tests.support.fake_openai import FakeOpenAI

# Headers that differ between any two requests, whoever sends them.
PER_REQUEST = {"content-length", "x-stainless-retry-count", "x-stainless-read-timeout", "host"}

HISTORY = [
    SystemMessage("You are one of several agents in a room."),
    HumanMessage("What is 2 + 2? Say it with a date: 2026-12-01T10:00:00Z"),
    AIMessage("4, on 2026-12-01."),
    HumanMessage([{"type": "text", "text": "And in words?"}]),
    AIMessage("", tool_calls=[{"name": "file_read", "args": {"file_id": 7}, "id": "call_1"}]),
    ToolMessage('{"text": "four"}', tool_call_id="call_1"),
    AIMessage("Four."),
    HumanMessage("Thanks — ünïcödé and \u2028 separators too."),
]
TOOL = {
    "type": "function",
    "function": {
        "name": "file_read",
        "description": "Read one of the user's files.",
        "parameters": {
            "type": "object",
            "properties": {"file_id": {"type": "integer"}},
            "required": ["file_id"],
        },
    },
}


def model(server: FakeOpenAI, *, as_built: bool):
    chat = init_chat_model(
        "gpt-4o-mini",
        model_provider="openai",
        api_key="test-key",
        base_url=server.base_url,
        max_tokens=321,
        stream_usage=True,
        max_retries=0,
    )
    return send_bodies_as_built(chat) if as_built else chat


def sent(server: FakeOpenAI, call) -> tuple[dict, dict]:
    """What reached the server for one call: the JSON body and the headers that matter."""
    before = len(server.requests)
    result = call()
    [record] = server.requests[before:]
    headers = {name: value for name, value in record["headers"].items() if name not in PER_REQUEST}
    return json.loads(record["raw"]), {"result": result, "headers": headers}


@pytest.mark.parametrize(
    "kind",
    ["plain", "tools bound", "streamed"],
)
def test_the_provider_receives_what_the_stock_sdk_sends(kind):
    with FakeOpenAI(reply="Four, in words.") as server:
        stock, as_built = model(server, as_built=False), model(server, as_built=True)
        assert isinstance(as_built.client, JSONReadyCompletions)
        assert not isinstance(stock.client, JSONReadyCompletions)

        def run(chat):
            if kind == "tools bound":
                return chat.bind_tools([TOOL]).invoke(HISTORY).content
            if kind == "streamed":
                return "".join(chunk.text for chunk in chat.stream(HISTORY))
            return chat.invoke(HISTORY).content

        stock_body, stock_seen = sent(server, lambda: run(stock))
        built_body, built_seen = sent(server, lambda: run(as_built))

    assert built_body == stock_body
    assert built_seen == stock_seen
    assert built_seen["result"] == "Four, in words."


def test_usage_and_tool_calls_read_the_same():
    calls = [("file_read", {"file_id": 7})]
    with FakeOpenAI(tool_calls=calls, prompt_tokens=77, completion_tokens=5) as server:
        stock, as_built = model(server, as_built=False), model(server, as_built=True)
        question = [HumanMessage("Read file 7")]
        answers = [chat.bind_tools([TOOL]).invoke(question) for chat in (stock, as_built)]
    stock_answer, built_answer = answers
    # (the stand-in numbers its call ids per request)
    assert [{**c, "id": None} for c in built_answer.tool_calls] == [
        {**c, "id": None} for c in stock_answer.tool_calls
    ]
    assert built_answer.tool_calls[0]["args"] == {"file_id": 7}
    assert built_answer.usage_metadata == stock_answer.usage_metadata
    assert built_answer.usage_metadata["input_tokens"] == 77


def test_a_provider_error_raises_the_sdks_error():
    with FakeOpenAI(fail_models={"gpt-4o-mini"}) as server:
        stock, as_built = model(server, as_built=False), model(server, as_built=True)
        errors = []
        for chat in (stock, as_built):
            with pytest.raises(Exception) as caught:
                chat.invoke([HumanMessage("Hello")])
            errors.append(type(caught.value))
    assert errors[0] is errors[1]
    assert issubclass(errors[0], openai.APIStatusError)  # what chat.llm turns into ProviderFailed


def test_the_app_builds_openai_protocol_models_with_it(settings):
    settings.OPENAI_API_KEY = "test-key"
    settings.DEEPSEEK_API_KEY = "test-key"
    for alias in ("gpt-4o", "deepseek"):
        assert isinstance(resolve(alias).chat_model.client, JSONReadyCompletions), alias
