"""The offline model's tokenizer: words and punctuation marks, counted exactly.

It is a real tokenizer of its own (not an estimate of someone else's): the
offline model reports these counts as its usage, and the enforcement gate uses
them to estimate a turn before any model runs. No vocabulary file is needed.
"""

from __future__ import annotations

import re

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def count_tokens(text: str) -> int:
    return len(TOKEN_RE.findall(text))
