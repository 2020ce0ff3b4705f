"""A stand-in for the streaming turn API, speaking issue 13's Server-Sent Events contract.

`POST /api/v1/rooms/{id}/turns/` with `Accept: text/event-stream` answers:
`routing` `{agents}`, `delta` `{model_alias, text}` while each agent writes,
`agent_done` `{model_alias, input_tokens, output_tokens, multiplier,
credits_burned}`, then exactly one `turn` (the 201 JSON body) or `error`
`{code, message}`; `:` lines are heartbeats.

This stand-in runs the real turn first (`chat.services.turn_post`, the offline
model: the turn, its charge and its fragment are real), then plays it back as
those events, a word at a time, interleaving the agents, with heartbeats, an
event split across chunks and CRLF line ends. Browser tests use it to pin
chat.js to the contract on its own; `tests/pages/test_browser_streaming.py`
runs the page against the real streaming backend.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer, JSONRenderer

from chat import services
from chat.api.views import TurnListView

WORD_RE = re.compile(r"\s*\S+\s*|\s+")
AGENT_DONE_FIELDS = ("input_tokens", "output_tokens", "multiplier", "credits_burned")


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept `text/event-stream` (the body is streamed by hand)."""

    media_type = "text/event-stream"
    format = "sse"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode()


def sse(event: str, data: dict, *, newline: str = "\n") -> str:
    return f"event: {event}{newline}data: {json.dumps(data)}{newline}{newline}"


@dataclass
class ContractStream:
    """Install with `install(monkeypatch)`; the live server runs in this process, so it takes effect."""

    # Seconds between two rounds of words (one word per agent per round).
    interval: float = 0.05
    # Set (e.g. by a routed cancel request) to end the stream early with a `cancelled` turn.
    cancel: threading.Event = field(default_factory=threading.Event)
    # After this many rounds, end with this `error` event instead of the turn (then clear it).
    fail_after: int | None = None
    error: dict = field(default_factory=lambda: {"code": "internal_error", "message": "Something broke."})
    # What each streamed request carried, in order.
    requests: list[dict] = field(default_factory=list)

    def install(self, monkeypatch) -> None:
        stand_in = self
        original = TurnListView.post

        def post(view, request, pk):
            if request.headers.get("Accept") != "text/event-stream":
                return original(view, request, pk)
            stand_in.requests.append(
                {
                    "idempotency_key": request.headers.get("Idempotency-Key"),
                    "csrf": request.headers.get("X-CSRFToken"),
                    "content_type": request.headers.get("Content-Type"),
                    "body": request.data,
                }
            )
            body = request.data
            outcome = services.turn_post(
                user=request.user,
                room_id=pk,
                content=body.get("content"),
                model_alias=body.get("model_alias"),
                file_ids=body.get("files"),
                idempotency_key=request.headers.get("Idempotency-Key"),
            )
            response = StreamingHttpResponse(
                stand_in._events(outcome.payload), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            return response

        monkeypatch.setattr(TurnListView, "post", post)
        monkeypatch.setattr(TurnListView, "renderer_classes", [JSONRenderer, EventStreamRenderer])

    def _events(self, payload: dict) -> Iterator[bytes]:
        answers = [m for m in payload["messages"] if m["role"] == "assistant"]
        agents = list(dict.fromkeys(m["model_alias"] for m in answers))
        words = {m["model_alias"]: WORD_RE.findall(m["content"]) for m in answers}
        yield b": connected\n\n"
        # One event split across two chunks, with CRLF line ends: the page must reassemble it.
        routing = sse("routing", {"agents": agents}, newline="\r\n")
        yield routing[:9].encode()
        time.sleep(self.interval)
        yield routing[9:].encode()
        stopped = False
        for round_ in range(max((len(w) for w in words.values()), default=0)):
            if self.cancel.is_set():
                stopped = True
                break
            if self.fail_after is not None and round_ >= self.fail_after:
                self.fail_after = None
                yield sse("error", self.error).encode()
                return
            chunk = "".join(
                sse("delta", {"model_alias": alias, "text": words[alias][round_]})
                for alias in agents
                if round_ < len(words[alias])
            )
            if round_ % 4 == 3:
                chunk += ": heartbeat\n\n"
            yield chunk.encode()
            time.sleep(self.interval)
        for alias in agents:
            call = next(u for u in payload["usage"] if u["purpose"] == "agent" and u["model_alias"] == alias)
            done = {
                key: call[key] for key in ("input_tokens", "output_tokens", "multiplier", "credits_burned")
            }
            yield sse("agent_done", {"model_alias": alias, **done}).encode()
        status = "cancelled" if stopped else payload.get("status", "completed")
        yield sse("turn", {**payload, "status": status}).encode()
