"""`file_parse`: one of the user's uploads as structured data, from its stored text.

CSV → {"header": [...], "rows": [[...], ...]}; JSON → {"data": ...};
PDF → {"pages": [...]}; other text → {"lines": [...]}.

The text is bounded (`FILE_PARSE_MAX_CHARS`, at upload), so each parser here is too;
whatever a parser refuses (a malformed CSV or JSON, JSON nested deeper than
`MAX_JSON_DEPTH`, an over-long number or field) is a tool error the model reads.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from django.conf import settings

from chat.models import UploadedFile
from chat.tools.base import Tool, ToolError, require_int, tool_result
from chat.tools.files import FILE_ID_SCHEMA, file_is_pdf, pdf_pages, readable_file

NAME = "file_parse"
MAX_ROWS = 1000
MAX_JSON_DEPTH = 64
# The dialect is guessed from the start of the file; csv.Sniffer is quadratic in what it reads.
SNIFF_CHARS = 2048


def parse_csv(text: str) -> dict:
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:SNIFF_CHARS], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if row]
    except csv.Error as exc:
        raise ToolError("bad_format", f"the CSV could not be parsed: {exc}") from exc
    if not rows:
        raise ToolError("bad_format", "the CSV is empty")
    header, body = rows[0], rows[1:]
    # As many rows as the model may be handed, up to MAX_ROWS.
    budget = settings.FILE_READ_MAX_CHARS - len(json.dumps(header)) - 200
    shown = []
    for row in body[:MAX_ROWS]:
        budget -= len(json.dumps(row)) + 2
        if budget < 0:
            break
        shown.append(row)
    return {"header": header, "rows": shown, "row_count": len(body), "truncated": len(shown) < len(body)}


def json_depth(value: Any) -> int:
    """How deeply `value` nests lists and objects (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: str) -> dict:
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise ToolError("bad_format", f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, or a number too long to convert
        raise ToolError("bad_format", f"the JSON could not be parsed: {exc}") from exc
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ToolError("bad_format", f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return {"data": data}


def parse(uploaded: UploadedFile) -> dict:
    if file_is_pdf(uploaded):
        return {"pages": pdf_pages(uploaded)}
    text = uploaded.extracted_text
    name = uploaded.name.lower()
    if uploaded.content_type == "text/csv" or name.endswith(".csv"):
        return parse_csv(text)
    if uploaded.content_type == "application/json" or name.endswith(".json"):
        return parse_json(text)
    return {"lines": text.splitlines()}


def make_tool(*, user_id: int) -> Tool:
    def run(arguments: dict) -> str:
        uploaded = readable_file(user_id=user_id, file_id=require_int(arguments, "file_id"))
        result = {"file_id": uploaded.pk, "name": uploaded.name, **parse(uploaded)}
        if uploaded.extraction_note:
            result["note"] = uploaded.extraction_note
        encoded = tool_result(result)
        if len(encoded) > settings.FILE_READ_MAX_CHARS:
            raise ToolError("too_large", "the parsed file is too large; use file_read for its text")
        return encoded

    return Tool(
        name=NAME,
        description=(
            "Parse a file the user uploaded into structured data: CSV as header and rows, "
            "JSON as data, PDF as pages, text as lines."
        ),
        parameters=FILE_ID_SCHEMA,
        run=run,
    )
