"""Shared by `file_read` and `file_parse`: one of the user's uploads and its stored text.

The text was extracted once, at upload, within bounds (`chat.extraction`); a turn
never opens or parses the file itself. A file the extractor could not read is a
tool error that tells the model why.
"""

from __future__ import annotations

from chat import selectors
from chat.extraction import PAGE_BREAK, is_pdf
from chat.models import UploadedFile
from chat.tools.base import ToolError

FILE_ID_SCHEMA = {
    "type": "object",
    "properties": {"file_id": {"type": "integer", "description": "id of an uploaded file"}},
    "required": ["file_id"],
}


def readable_file(*, user_id: int, file_id: int) -> UploadedFile:
    """The file row with its extracted text, only if `user_id` uploaded it and it is readable."""
    uploaded = selectors.file_get(user_id=user_id, file_id=file_id)
    if uploaded is None:
        raise ToolError("not_found", f"no uploaded file with id {file_id}")
    if uploaded.extraction_status == UploadedFile.Extraction.PENDING:
        # Imported here: chat.services imports the tools (a turn runs them).
        from chat.services.uploads import file_extract

        try:
            uploaded = file_extract(uploaded=uploaded)
        except FileNotFoundError as exc:
            raise ToolError("not_found", f"file {file_id} is missing from storage") from exc
    if uploaded.extraction_status != UploadedFile.Extraction.OK:
        raise ToolError(
            "unreadable", f"file {file_id} ({uploaded.name}) is unreadable: {uploaded.extraction_note}"
        )
    return uploaded


def file_is_pdf(uploaded: UploadedFile) -> bool:
    return is_pdf(name=uploaded.name, content_type=uploaded.content_type)


def pdf_pages(uploaded: UploadedFile) -> list[str]:
    return uploaded.extracted_text.split(PAGE_BREAK)
