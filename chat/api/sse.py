"""Server-Sent Events for a streamed turn.

`text/event-stream` frames: `event: <name>` and one `data:` line of JSON per
event, a blank line after each; a comment line (`: ping`) keeps the stream
alive while the models think, and is how a client that went away is noticed
(the write fails, the response is closed, and the turn is stopped).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request

from chat.services import TurnStream


class JSONOrEventStreamNegotiation(DefaultContentNegotiation):
    """`Accept: text/event-stream` is accepted (the view streams the turn itself); every
    response DRF renders, refusals before the stream included, is JSON."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        if wants_event_stream(request):
            json_renderer = next(r for r in renderers if isinstance(r, JSONRenderer))
            return json_renderer, json_renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)


def wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def frame(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _frames(stream: TurnStream) -> Iterator[str]:
    finished = False
    try:
        for item in stream.events(heartbeat_seconds=settings.TURN_STREAM_HEARTBEAT_SECONDS):
            yield ": ping\n\n" if item is None else frame(*item)
        finished = True
    finally:
        if not finished:
            # The client went away (the server closed this generator early): stop the models;
            # the turn still commits, as `cancelled`, charging what ran.
            stream.stop()


def event_stream_response(stream: TurnStream) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_frames(stream), content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response
