"""The one JSON parser every API endpoint uses: bounded nesting, only storable text.

Python's `json` accepts things no endpoint can use and some that used to
answer 500 further in: nesting thousands of levels deep (a `RecursionError`
in the decoder), and `\\ud800`-style escapes that decode to a lone surrogate
(a `str` that cannot be encoded as UTF-8, so neither stored nor rendered).
A NUL character (`\\u0000`) cannot be stored in a PostgreSQL text column.
All three are refused here, once, for every view — a 400 with a clear
message — instead of in each serializer or service.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from decimal import Decimal, DecimalException
from typing import Any

from rest_framework import parsers as drf_parsers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

# DRF's charset check refuses byte-to-byte codecs (bz2_codec); the stubs do not know it yet.
get_encoding = drf_parsers.get_encoding  # type: ignore[attr-defined]

# Our bodies are at most three levels deep ({"agents": ["gpt-4o"]}); 32 leaves room for any
# client while staying far below the interpreter's recursion limit.
MAX_JSON_DEPTH = 32
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _problem(text: str) -> str:
    char = UNSTORABLE.search(text).group()  # type: ignore[union-attr]
    if char == "\x00":
        return "Null characters (\\u0000) are not allowed."
    return f"Lone surrogate escapes (\\u{ord(char):04x}) are not allowed: send valid UTF-16 pairs or UTF-8."


def check_json_value(data: object, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise a 400 for nesting deeper than `max_depth` or a string (or key) no column can hold.

    Iterative, so a deep value cannot exhaust the stack here either. The error
    names the top-level field that holds the problem, like a serializer would.
    """
    stack: list[tuple[object, int, str]] = [(data, 1, "non_field_errors")]
    while stack:
        value, depth, field = stack.pop()
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                raise ValidationError({field: [_problem(value)]})
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > max_depth:
            raise ParseError(f"JSON parse error - nested more than {max_depth} levels deep.")
        if isinstance(value, dict):
            for key, item in value.items():
                if UNSTORABLE.search(key):
                    raise ValidationError({"non_field_errors": [f"A key: {_problem(key)}"]})
                stack.append((item, depth + 1, key if depth == 1 else field))
        else:
            stack.extend((item, depth + 1, field) for item in value)


class SafeJSONParser(JSONParser):
    """DRF's JSON parser (text charsets only, NaN/Infinity refused) plus `check_json_value`."""

    parse_float: Callable[[str], Any] | None = None  # the json module's default (float)

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = get_encoding(parser_context or {})
        try:
            data = json.load(
                codecs.getreader(encoding)(stream),
                parse_float=self.parse_float,
                parse_constant=_reject_constant,
            )
        except RecursionError as exc:
            raise ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep.") from exc
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise ParseError(f"JSON parse error - {exc}") from exc
        check_json_value(data)
        return data


def _exact_decimal(text: str) -> Decimal:
    """A JSON number as the Decimal it spells; one the decimal module cannot hold is a parse error.

    `Decimal("1e-99999999999999999999")` raises InvalidOperation (an ArithmeticError,
    not a ValueError): its exponent is beyond what the module represents.
    """
    try:
        return Decimal(text)
    except DecimalException as exc:
        raise ValueError(f"the number {text[:40]} is out of range") from exc


class DecimalJSONParser(SafeJSONParser):
    """JSON whose numbers with a fraction or exponent become Decimal exactly as written."""

    parse_float = staticmethod(_exact_decimal)
