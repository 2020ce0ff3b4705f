"""`file_read`: the text of one of the user's uploads (PDF text is extracted)."""

from __future__ import annotations

import json

from django.conf import settings

from chat.tools.base import Tool, require_int
from chat.tools.files import FILE_ID_SCHEMA, decode_text, is_pdf, load_user_file, pdf_pages

NAME = "file_read"


def make_tool(*, user_id: int) -> Tool:
    def run(arguments: dict) -> str:
        file_id = require_int(arguments, "file_id")
        uploaded, data = load_user_file(user_id=user_id, file_id=file_id)
        text = "\n\n".join(pdf_pages(data)) if is_pdf(uploaded) else decode_text(data)
        limit = settings.FILE_READ_MAX_CHARS
        return json.dumps(
            {
                "file_id": uploaded.pk,
                "name": uploaded.name,
                "content_type": uploaded.content_type,
                "text": text[:limit],
                "truncated": len(text) > limit,
            }
        )

    return Tool(
        name=NAME,
        description="Read the text of a file the user uploaded (text, CSV, JSON, Markdown or PDF).",
        parameters=FILE_ID_SCHEMA,
        run=run,
    )
