"""What a tool is, independent of any model library.

A tool is a name, a description and a JSON schema for its arguments (the
OpenAI function format, which every LangChain provider accepts) plus a plain
function. Expected failures (a missing file, a bad format, a search API error)
are `ToolError`s: the model reads them as an error result and carries on. Any
other exception is a crash and fails the turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class ToolError(Exception):
    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


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
