"""`file_parse`: one of the user's uploads as structured data.

CSV → {"header": [...], "rows": [[...], ...]}; JSON → {"data": ...};
PDF → {"pages": [...]}; other text → {"lines": [...]}.
"""

from __future__ import annotations

import csv
import io
import json

from django.conf import settings

from chat.models import UploadedFile
from chat.tools.base import Tool, ToolError, require_int
from chat.tools.files import FILE_ID_SCHEMA, decode_text, is_pdf, load_user_file, pdf_pages

NAME = "file_parse"
MAX_ROWS = 1000


def parse_csv(text: str) -> dict:
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if row]
    except csv.Error as exc:
        raise ToolError("bad_format", f"the CSV could not be parsed: {exc}") from exc
    if not rows:
        raise ToolError("bad_format", "the CSV is empty")
    header, body = rows[0], rows[1:]
    return {
        "header": header,
        "rows": body[:MAX_ROWS],
        "row_count": len(body),
        "truncated": len(body) > MAX_ROWS,
    }


def parse(uploaded: UploadedFile, data: bytes) -> dict:
    if is_pdf(uploaded):
        return {"pages": pdf_pages(data)}
    text = decode_text(data)
    name = uploaded.name.lower()
    if uploaded.content_type == "text/csv" or name.endswith(".csv"):
        return parse_csv(text)
    if uploaded.content_type == "application/json" or name.endswith(".json"):
        try:
            return {"data": json.loads(text)}
        except json.JSONDecodeError as exc:
            raise ToolError("bad_format", f"the JSON could not be parsed: {exc}") from exc
    return {"lines": text.splitlines()}


def make_tool(*, user_id: int) -> Tool:
    def run(arguments: dict) -> str:
        file_id = require_int(arguments, "file_id")
        uploaded, data = load_user_file(user_id=user_id, file_id=file_id)
        result = {"file_id": uploaded.pk, "name": uploaded.name, **parse(uploaded, data)}
        encoded = json.dumps(result)
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
