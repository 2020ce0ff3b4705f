"""What a tool is, independent of any model library.

A tool is a name, a description and a JSON schema for its arguments (the
OpenAI function format, which every LangChain provider accepts) plus a plain
function. Expected failures (a missing file, a bad format, an unreadable file,
a search API error) are `ToolError`s: the model reads them as an error result and
carries on; every parser a tool runs has its failures turned into one. Any other
exception is a crash and fails the turn.

What a tool answers is written (tool events) and may be quoted back by the model,
so every string in it, and in a tool error, is made `storable`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pantheon.text import storable


class ToolError(Exception):
    def __init__(self, code: str, detail: str):
        detail = storable(detail)
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def storable_values(value: Any) -> Any:
    """`value` (JSON-like, shallow or depth-checked by the caller) with every string storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_values(key): storable_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_values(item) for item in value]
    return value


def tool_result(payload: dict) -> str:
    """A tool's answer: JSON in which no string can carry a NUL or a lone surrogate."""
    return json.dumps(storable_values(payload))


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    run: Callable[[dict], str]

    def spec(self) -> dict:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def require_int(arguments: dict, name: str) -> int:
    value = arguments.get(name)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ToolError("bad_arguments", f"{name} must be a positive integer, got {value!r}")
    return value


def require_text(arguments: dict, name: str, *, max_chars: int = 400) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ToolError("bad_arguments", f"{name} must be a non-empty string")
    return value.strip()[:max_chars]
