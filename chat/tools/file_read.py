"""`file_read`: the text of one of the user's uploads, as extracted at upload."""

from __future__ import annotations

from django.conf import settings

from chat.tools.base import Tool, require_int, tool_result
from chat.tools.files import FILE_ID_SCHEMA, file_is_pdf, pdf_pages, readable_file

NAME = "file_read"


def make_tool(*, user_id: int) -> Tool:
    def run(arguments: dict) -> str:
        uploaded = readable_file(user_id=user_id, file_id=require_int(arguments, "file_id"))
        text = "\n\n".join(pdf_pages(uploaded)) if file_is_pdf(uploaded) else uploaded.extracted_text
        limit = settings.FILE_READ_MAX_CHARS
        result = {
            "file_id": uploaded.pk,
            "name": uploaded.name,
            "content_type": uploaded.content_type,
            "text": text[:limit],
            "truncated": len(text) > limit or bool(uploaded.extraction_note),
        }
        if uploaded.extraction_note:
            result["note"] = uploaded.extraction_note
        return tool_result(result)

    return Tool(
        name=NAME,
        description="Read the text of a file the user uploaded (text, CSV, JSON, Markdown or PDF).",
        parameters=FILE_ID_SCHEMA,
        run=run,
    )
