"""A small Server-Sent Events client for tests: real HTTP against a live server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

Event = tuple[str, dict[str, Any]]


def parse_events(lines: Iterator[str]) -> Iterator[Event]:
    """(event, data) per SSE frame; comment lines (heartbeats) are skipped."""
    name, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def token_for(base_url: str, username: str, password: str) -> str:
    response = httpx.post(f"{base_url}/api/v1/auth/token", json={"username": username, "password": password})
    response.raise_for_status()
    return response.json()["token"]


@contextmanager
def streamed_turn(
    base_url: str, token: str, room_id: int, body: dict[str, Any], *, key: str | None = None
) -> Iterator[tuple[httpx.Response, Iterator[Event]]]:
    """POST a turn with `Accept: text/event-stream`; yields the response and its events as they come."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    if key is not None:
        headers["Idempotency-Key"] = key
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST", f"{base_url}/api/v1/rooms/{room_id}/turns/", json=body, headers=headers
        ) as response,
    ):
        yield response, parse_events(response.iter_lines())


def all_events(base_url: str, token: str, room_id: int, body: dict[str, Any], **kwargs: Any) -> list[Event]:
    with streamed_turn(base_url, token, room_id, body, **kwargs) as (response, events):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(events)
