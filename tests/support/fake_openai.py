"""A local OpenAI-compatible server: `POST /v1/chat/completions`, answered whole or streamed.

The real `openai` / `langchain-openai` clients talk to it through
`OPENAI_BASE_URL`. It speaks the protocol as OpenAI does:

- `stream: false`: one `chat.completion` JSON with a `usage` block, sent once
  the whole answer is "generated" (`delay` + `token_interval` per further token);
- `stream: true`: Server-Sent Events, `data: {chat.completion.chunk}` — the
  role and first token after `delay`, one `choices[0].delta.content` token per
  `token_interval`, a last chunk with `finish_reason`, then (when
  `stream_options.include_usage` is true) a chunk with `usage` and empty
  `choices`, then `data: [DONE]`;
- `max_tokens` / `max_completion_tokens` cap the answer (`finish_reason:
  "length"`) unless `ignore_max_tokens` (a provider that overdraws);
- when the request offers tools and no tool result came back yet it can answer
  with `tool_calls` (streamed as OpenAI does: name first, then argument pieces);
- it can fail chosen models (500), omit usage, or drop the connection mid-stream.

Every request is recorded with when it arrived, when its first chunk left and
when it ended (`timings()`, or `GET /_fake/requests` from another process), so
a benchmark can tell the model's own latency from the app's.

Run it as its own process (threads, one per connection; hundreds at once):

    python -m tests.support.fake_openai --port 8765 --delay 2.0 --token-interval 0.02
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.http_fake import DropConnection, JSONServer, Streamed

DEFAULT_REPLY = "Answer from the fake OpenAI server."
# Tool-call arguments are streamed in pieces of this many characters, as OpenAI does.
ARGUMENT_PIECE_CHARS = 8
_TOKEN = re.compile(r"\s*\S+\s*|\s+")
FILLER_TEXT = (
    "The fake model streams this answer one word at a time so that the latency "
    "of every token can be measured at the server and at the client"
)


def reply_of(tokens: int) -> str:
    """A reply of exactly `tokens` word-tokens (as this server counts them)."""
    return " ".join(itertools.islice(itertools.cycle(FILLER_TEXT.split()), tokens)) + ("." if tokens else "")


def split_tokens(text: str) -> list[str]:
    """The server's tokens: words with their surrounding spaces ("".join gives the text back)."""
    return _TOKEN.findall(text)


@dataclass
class _Answer:
    """What one request is answered with, whether streamed or not."""

    message: dict
    finish_reason: str
    # One streamed `delta` per generated token (content pieces, or tool-call pieces).
    deltas: list[dict] = field(default_factory=list)
    usage: dict | None = None


def in_flight_peak(timings: list[dict]) -> int:
    """The most requests open at once in `timings()` rows: each from its arrival to its last byte."""
    events = sorted([(t["received_at"], 1) for t in timings] + [(t["done_at"], -1) for t in timings])
    peak = open_now = 0
    for _, step in events:  # at equal times an end (-1) sorts before an arrival (+1)
        open_now += step
        peak = max(peak, open_now)
    return peak


class FakeOpenAI(JSONServer):
    # Real clients keep connections alive and read streams chunked.
    protocol_version = "HTTP/1.1"

    def __init__(
        self,
        *,
        prompt_tokens: int | None = 123,
        completion_tokens: int | None = 45,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        reply: str = DEFAULT_REPLY,
        tool_calls: list[tuple[str, dict]] | None = None,
        fail_models: set[str] | frozenset[str] = frozenset(),
        omit_usage: bool = False,
        repeat_tools: bool = False,
        delay: float = 0.0,
        token_interval: float = 0.0,
        ignore_max_tokens: bool = False,
        drop_after_chunks: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """`prompt_tokens` / `completion_tokens` are the usage reported (None: counted here,
        prompt ≈ characters / 4, completion = tokens sent). `delay` is the time to the first
        token, `token_interval` the time between tokens, both in seconds.
        `drop_after_chunks` closes a stream's connection after that many tokens."""
        super().__init__(host=host, port=port)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        # Usage detail as OpenAI reports it (prompt_tokens_details / completion_tokens_details).
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reply = reply
        self.tool_calls = tool_calls or []
        self.fail_models = set(fail_models)
        self.omit_usage = omit_usage
        # Keep asking for tools even after results came back (a runaway model).
        self.repeat_tools = repeat_tools
        self.delay = delay
        self.token_interval = token_interval
        self.ignore_max_tokens = ignore_max_tokens
        self.drop_after_chunks = drop_after_chunks

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def completions(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    def timings(self, *, since: float | None = None) -> list[dict]:
        """Per completion request: arrival, first chunk out, end (wall-clock seconds) and more."""
        with self._lock:
            records = [dict(r) for r in self.requests if r["path"] == "/v1/chat/completions"]
        return [
            {
                "model": r["model"],
                "stream": r["stream"],
                "status": r["status"],
                "max_tokens": r["max_tokens"],
                "include_usage": r["include_usage"],
                "received_at": r["received_at"],
                "first_chunk_at": r["first_chunk_at"],
                "done_at": r["done_at"],
                "time_to_first_chunk": _between(r["received_at"], r["first_chunk_at"]),
                "duration": _between(r["received_at"], r["done_at"]),
                "chunks": r["chunks"],
                "disconnected": r["disconnected"],
                "client": list(r["client"]),
            }
            for r in records
            if since is None or r["received_at"] >= since
        ]

    def settled_timings(self, *, timeout: float = 10.0) -> list[dict]:
        """`timings()` once the server has recorded the end of every request (up to `timeout`).

        A client can read the last byte before the handler that sent it notes the end, so
        a test that reads the timings as soon as its client returns may find `done_at` unset.
        """
        deadline = time.monotonic() + timeout
        timings = self.timings()
        while any(t["done_at"] is None for t in timings) and time.monotonic() < deadline:
            time.sleep(0.02)
            timings = self.timings()
        return timings

    def record_fields(self) -> dict:
        return {"model": None, "stream": None, "max_tokens": None, "include_usage": None}

    def respond_get(self, path: str, query: dict[str, list[str]], headers: dict) -> tuple[int, object]:
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "owned_by": "fake"}]}
        if path == "/_fake/requests":
            since = float(query["since"][0]) if "since" in query else None
            return 200, {"requests": self.timings(since=since)}
        return super().respond_get(path, query, headers)

    def respond(self, path: str, headers: dict, body: dict | None) -> tuple[int, object]:
        started = time.monotonic()
        if path != "/v1/chat/completions" or not isinstance(body, dict):
            return 404, {"error": {"message": "not found", "type": "invalid_request_error"}}
        if headers.get("authorization", "") == "":
            return 401, {"error": {"message": "missing key", "type": "invalid_request_error"}}
        model = body.get("model", "")
        stream = body.get("stream") is True
        include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        record = self.current_request()
        if record is not None:
            record.update(model=model, stream=stream, max_tokens=limit, include_usage=include_usage)
        if model in self.fail_models:
            return 500, {"error": {"message": f"{model} is down", "type": "server_error"}}
        answer = self._answer(body, limit if isinstance(limit, int) and limit > 0 else None)
        identity = {
            "id": f"chatcmpl-{len(self.requests)}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if stream:
            return 200, Streamed(self._stream(answer, identity, started, include_usage))
        _sleep_until(started + self.delay + self.token_interval * max(0, len(answer.deltas) - 1))
        completion = {
            **identity,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": answer.message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
        }
        if answer.usage is not None:
            completion["usage"] = answer.usage
        return 200, completion

    def _answer(self, body: dict, limit: int | None) -> _Answer:
        offered = {tool["function"]["name"] for tool in body.get("tools", [])}
        messages = body.get("messages") or [{}]
        answered_tools = messages[-1].get("role") == "tool"
        calls = [(name, args) for name, args in self.tool_calls if name in offered]
        if calls and (self.repeat_tools or not answered_tools):
            return self._tool_answer(body, calls)
        tokens = split_tokens(self.reply)
        generated = len(tokens) if self.completion_tokens is None else self.completion_tokens
        finish = "stop"
        if limit is not None and generated > limit and not self.ignore_max_tokens:
            tokens, generated, finish = tokens[:limit], limit, "length"
        return _Answer(
            message={"role": "assistant", "content": "".join(tokens), "refusal": None},
            finish_reason=finish,
            deltas=[{"content": token} for token in tokens],
            usage=self._usage(body, generated),
        )

    def _tool_answer(self, body: dict, calls: list[tuple[str, dict]]) -> _Answer:
        tool_calls, deltas = [], []
        for index, (name, args) in enumerate(calls):
            call_id = f"call_{len(self.requests)}_{index + 1}"
            arguments = json.dumps(args)
            tool_calls.append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            )
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            deltas.extend(
                {
                    "tool_calls": [
                        {"index": index, "function": {"arguments": arguments[at : at + ARGUMENT_PIECE_CHARS]}}
                    ]
                }
                for at in range(0, len(arguments), ARGUMENT_PIECE_CHARS)
            )
        generated = len(deltas) if self.completion_tokens is None else self.completion_tokens
        return _Answer(
            message={"role": "assistant", "content": None, "tool_calls": tool_calls, "refusal": None},
            finish_reason="tool_calls",
            deltas=deltas,
            usage=self._usage(body, generated),
        )

    def _usage(self, body: dict, completion_tokens: int) -> dict | None:
        if self.omit_usage:
            return None
        prompt_tokens = self.prompt_tokens
        if prompt_tokens is None:
            text = json.dumps(body.get("messages") or [])
            prompt_tokens = max(1, len(text) // 4)
        usage: dict = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.reasoning_tokens}
        return usage

    def _stream(
        self, answer: _Answer, identity: dict, started: float, include_usage: bool
    ) -> Iterator[bytes]:
        def event(choices: list[dict], **extra) -> bytes:
            chunk = {**identity, "object": "chat.completion.chunk", "choices": choices, **extra}
            if include_usage:
                # With include_usage every chunk carries `usage`: null until the last one.
                chunk.setdefault("usage", None)
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        def delta(content: dict, finish: str | None = None) -> bytes:
            return event([{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}])

        tool_answer = "tool_calls" in answer.message
        role = delta({"role": "assistant", "content": None if tool_answer else "", "refusal": None})
        first_at = started + self.delay
        for index, piece in enumerate(answer.deltas or [None]):
            _sleep_until(first_at + index * self.token_interval)
            if self.drop_after_chunks is not None and index >= self.drop_after_chunks:
                raise DropConnection
            out = b"" if piece is None else delta(piece)
            # The role chunk and the first token leave together: "time to first chunk".
            yield role + out if index == 0 else out
        tail = delta({}, answer.finish_reason)
        if include_usage and answer.usage is not None:
            tail += event([], usage=answer.usage)
        yield tail + b"data: [DONE]\n\n"


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local OpenAI-compatible chat completions server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--token-interval", type=float, default=0.0, help="seconds between tokens")
    parser.add_argument("--reply", default=None, help="the answer text (default: --reply-tokens words)")
    parser.add_argument("--reply-tokens", type=int, default=20, help="length of the generated answer")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="reported (default: ≈ chars / 4)")
    parser.add_argument("--completion-tokens", type=int, default=None, help="reported (default: tokens sent)")
    parser.add_argument("--omit-usage", action="store_true", help="never report usage")
    parser.add_argument("--ignore-max-tokens", action="store_true", help="answer past max_tokens")
    parser.add_argument("--fail-model", action="append", default=[], help="answer 500 for this model")
    args = parser.parse_args(argv)
    server = FakeOpenAI(
        host=args.host,
        port=args.port,
        delay=args.delay,
        token_interval=args.token_interval,
        reply=args.reply if args.reply is not None else reply_of(args.reply_tokens),
        prompt_tokens=args.prompt_tokens,
        completion_tokens=args.completion_tokens,
        omit_usage=args.omit_usage,
        ignore_max_tokens=args.ignore_max_tokens,
        fail_models=set(args.fail_model),
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(
            f"fake OpenAI listening on {server.base_url} "
            f"(delay {args.delay:g}s, token interval {args.token_interval:g}s)",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
