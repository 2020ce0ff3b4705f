"""The offline model's tokenizer: words and punctuation marks, counted exactly.

It is a real tokenizer of its own (not an estimate of someone else's): the
offline model reports these counts as its usage, and the enforcement gate uses
them to estimate a turn before any model runs. No vocabulary file is needed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from langchain_core.messages import BaseMessage

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))


def text_tokens(alias: str, text: str) -> int:
    """Tokens of `text` for `alias`'s model (placeholder: the offline counter)."""
    return count_tokens(text)


def prompt_tokens(alias: str, messages: Sequence[BaseMessage]) -> int:
    """Tokens of a prompt for `alias`'s model (placeholder: the offline counter)."""
    return sum(text_tokens(alias, str(message.text)) for message in messages)


def message_tokens(alias: str, message: BaseMessage) -> int:
    """Tokens a model wrote in `message`: its text and the arguments of its tool calls."""
    written = str(message.text)
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        written += " " + json.dumps([{"name": c["name"], "args": c["args"]} for c in calls])
    return text_tokens(alias, written)
