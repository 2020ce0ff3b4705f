"""tests/support/fake_openai.py speaks OpenAI's protocol as the real clients read it.

Driven by the real `openai` client and by `langchain-openai`'s `ChatOpenAI`
(whole answers and streams, `stream_usage=True`). Timing is checked by order
and lower bounds only (the server must not answer before its delay), never by
how fast this machine is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_openai import ChatOpenAI

from tests.support.fake_openai import FakeOpenAI, in_flight_peak, reply_of, split_tokens

KEY = "sk-test-fake-openai-protocol"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def chat_model(server: FakeOpenAI, **options) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o", api_key=KEY, base_url=server.base_url, max_retries=0, **options)


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing of every event on the way."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
    return [event.removeprefix("data: ") for event in events]


def stream_raw(server: FakeOpenAI, body: dict) -> httpx.Response:
    response = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": QUESTION, **body},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert response.status_code == 200
    return response


def test_whole_answer_through_langchain_reports_usage_after_the_delay():
    delay = 0.3
    with FakeOpenAI(
        reply="Paris is the capital.", prompt_tokens=17, completion_tokens=5, delay=delay
    ) as server:
        started = time.monotonic()
        reply = chat_model(server).invoke([HumanMessage("Capital of France?")])
        elapsed = time.monotonic() - started

    assert reply.text == "Paris is the capital."
    assert reply.usage_metadata["input_tokens"] == 17
    assert reply.usage_metadata["output_tokens"] == 5
    assert reply.response_metadata["finish_reason"] == "stop"
    [timing] = server.settled_timings()
    assert timing["stream"] is False
    assert timing["time_to_first_chunk"] >= delay
    assert elapsed >= delay


def test_langchain_stream_with_stream_usage_gets_every_token_in_order_then_the_usage():
    reply = reply_of(8)
    delay, interval = 0.25, 0.05
    options = {"prompt_tokens": 11, "completion_tokens": None, "delay": delay, "token_interval": interval}
    with FakeOpenAI(reply=reply, **options) as server:
        started = time.monotonic()
        arrivals: list[tuple[float, AIMessageChunk]] = []
        for chunk in chat_model(server, stream_usage=True).stream([HumanMessage("hi")]):
            arrivals.append((time.monotonic() - started, chunk))

    texts = [chunk.text for _, chunk in arrivals if chunk.text]
    assert texts == split_tokens(reply)
    merged = arrivals[0][1]
    for _, chunk in arrivals[1:]:
        merged += chunk
    assert merged.text == reply
    assert merged.usage_metadata["input_tokens"] == 11
    assert merged.usage_metadata["output_tokens"] == len(split_tokens(reply))
    # Usage arrives last, after every token.
    with_usage = [index for index, (_, chunk) in enumerate(arrivals) if chunk.usage_metadata]
    last_text = max(index for index, (_, chunk) in enumerate(arrivals) if chunk.text)
    assert with_usage and min(with_usage) > last_text
    # The first token came no sooner than the delay, the last no sooner than the interval after
    # each one before it. (Not the gaps between arrivals: a client slow to start reading gets the
    # first chunks together, which says nothing about how the server paced them.)
    token_times = [at for at, chunk in arrivals if chunk.text]
    assert token_times[0] >= delay
    assert token_times[-1] >= delay + (len(token_times) - 1) * interval * 0.9
    [timing] = server.settled_timings()
    assert timing["stream"] is True and timing["include_usage"] is True
    assert timing["time_to_first_chunk"] >= delay
    assert timing["duration"] / timing["time_to_first_chunk"] > 1


def test_stream_frames_are_openai_chunks_role_first_then_finish_then_usage_then_done():
    with FakeOpenAI(reply="One two three.", completion_tokens=None, prompt_tokens=9) as server:
        response = stream_raw(server, {"stream": True, "stream_options": {"include_usage": True}})

    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    first, *middle, finish, usage = chunks
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(chunk["choices"][0]["delta"]["content"] for chunk in middle) == "One two three."
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in [first, *middle])
    assert all(chunk["usage"] is None for chunk in [first, *middle, finish])
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


def test_stream_without_include_usage_or_with_usage_omitted_has_no_usage_chunk():
    with FakeOpenAI(reply="One two.") as server:
        events = sse_events(stream_raw(server, {"stream": True}).content)
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)

    with FakeOpenAI(reply="One two.", omit_usage=True) as server:
        events = sse_events(
            stream_raw(server, {"stream": True, "stream_options": {"include_usage": True}}).content
        )
        merged = None
        for chunk in chat_model(server, stream_usage=True).stream([HumanMessage("hi")]):
            merged = chunk if merged is None else merged + chunk
    assert events[-1] == "[DONE]"
    assert all(json.loads(event)["choices"] for event in events[:-1])
    assert merged.text == "One two."
    assert not merged.usage_metadata


def test_max_tokens_caps_the_answer_unless_the_provider_ignores_it():
    reply = reply_of(10)
    with FakeOpenAI(reply=reply, completion_tokens=None) as server:
        capped = chat_model(server, max_tokens=3).invoke([HumanMessage("hi")])
        merged = None
        for chunk in chat_model(server, max_tokens=4, stream_usage=True).stream([HumanMessage("hi")]):
            merged = chunk if merged is None else merged + chunk
    assert capped.text == "".join(split_tokens(reply)[:3])
    assert capped.usage_metadata["output_tokens"] == 3
    assert capped.response_metadata["finish_reason"] == "length"
    assert merged.text == "".join(split_tokens(reply)[:4])
    assert merged.usage_metadata["output_tokens"] == 4
    assert merged.response_metadata["finish_reason"] == "length"
    # langchain-openai sends the cap as max_completion_tokens; the older name counts too.
    limits = [body.get("max_completion_tokens", body.get("max_tokens")) for body in server.completions()]
    assert limits == [3, 4]

    with FakeOpenAI(reply=reply, completion_tokens=None, ignore_max_tokens=True) as server:
        overdrawn = chat_model(server, max_tokens=3).invoke([HumanMessage("hi")])
        events = sse_events(stream_raw(server, {"stream": True, "max_tokens": 2}).content)
    assert overdrawn.text == reply
    assert overdrawn.usage_metadata["output_tokens"] == 10
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
def test_tool_calls_whole_and_streamed_as_openai_sends_them(streaming):
    search = {
        "type": "function",
        "function": {
            "name": "web_search",
            "description": "search the web",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
    arguments = {"query": "capital of France", "max_results": 3}
    with FakeOpenAI(tool_calls=[("web_search", arguments)], prompt_tokens=20, completion_tokens=6) as server:
        model = chat_model(server, stream_usage=True).bind_tools([search])
        if streaming:
            reply = None
            pieces = 0
            for chunk in model.stream([HumanMessage("search it")]):
                reply = chunk if reply is None else reply + chunk
                pieces += bool(chunk.tool_call_chunks)
            assert pieces > 2  # the arguments really came in several pieces
        else:
            reply = model.invoke([HumanMessage("search it")])

    [call] = reply.tool_calls
    assert call["name"] == "web_search"
    assert call["args"] == arguments
    assert call["id"].startswith("call_")
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert reply.usage_metadata["input_tokens"] == 20 and reply.usage_metadata["output_tokens"] == 6


def test_openai_client_streams_and_fails_as_configured():
    client_options = {"api_key": KEY, "max_retries": 0}
    with FakeOpenAI(reply="a b c d e f", fail_models={"gpt-4o-mini"}, drop_after_chunks=2) as server:
        client = openai.OpenAI(base_url=server.base_url, **client_options)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True)
        received = []
        with pytest.raises((httpx.HTTPError, openai.APIError)):
            for chunk in client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True):
                received.extend(choice.delta.content for choice in chunk.choices if choice.delta.content)
    # The two tokens before the drop arrived; the stream then broke instead of ending.
    assert received == ["a ", "b "]


def test_a_client_that_goes_away_mid_stream_is_recorded():
    with FakeOpenAI(reply=reply_of(40), token_interval=0.02) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)
        next(iter(stream))
        stream.close()
        [timing] = server.settled_timings()
    assert timing["disconnected"] is True
    assert 1 <= timing["chunks"] < 40


def test_hundreds_of_streams_are_served_at_once():
    count, delay = 200, 2.0
    done: list[str] = []
    errors: list[BaseException] = []
    with FakeOpenAI(reply="ok then", delay=delay, token_interval=0.01) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=120)

        def one() -> None:
            try:
                stream = client.chat.completions.create(model="gpt-4o", messages=QUESTION, stream=True)
                done.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        timings = server.settled_timings()

    assert errors == []
    assert done == ["ok then"] * count
    assert len(timings) == count
    # Concurrent, not queued: each request waited its own delay, and at the busiest moment most of
    # them were open together (a server answering one at a time, or from a small pool, peaks at 1 or
    # at the pool's size). Not "all arrived before the first answer": how fast 200 client threads
    # send depends on the machine, and under a loaded test run their arrival spread past the delay.
    assert min(t["time_to_first_chunk"] for t in timings) >= delay
    assert in_flight_peak(timings) >= count // 2


def test_runs_as_its_own_process_and_reports_its_timings():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.fake_openai",
            *["--port", "0", "--delay", "0.2", "--reply-tokens", "4"],
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        base_url = banner.split(" on ", 1)[1].split()[0]
        client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o", messages=QUESTION, stream=True, stream_options={"include_usage": True}
            )
        )
        timings = httpx.get(base_url.removesuffix("/v1") + "/_fake/requests", timeout=10).json()["requests"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply_of(4)
    assert chunks[-1].usage.completion_tokens == 4
    [timing] = timings
    assert timing["time_to_first_chunk"] >= 0.2 and timing["stream"] is True
