"""Shared by `file_read` and `file_parse`: load one of the user's uploads and decode it."""

from __future__ import annotations

import io

from pypdf import PdfReader
from pypdf.errors import PdfReadError

from chat import selectors
from chat.models import UploadedFile
from chat.tools.base import ToolError

FILE_ID_SCHEMA = {
    "type": "object",
    "properties": {"file_id": {"type": "integer", "description": "id of an uploaded file"}},
    "required": ["file_id"],
}


def load_user_file(*, user_id: int, file_id: int) -> tuple[UploadedFile, bytes]:
    """The file row and its bytes, only if `user_id` uploaded it."""
    uploaded = selectors.file_get(user_id=user_id, file_id=file_id)
    if uploaded is None:
        raise ToolError("not_found", f"no uploaded file with id {file_id}")
    try:
        with uploaded.file.open("rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise ToolError("not_found", f"file {file_id} is missing from storage") from exc
    return uploaded, data


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ToolError("bad_format", "the file is not UTF-8 text") from exc


def pdf_pages(data: bytes) -> list[str]:
    try:
        reader = PdfReader(io.BytesIO(data))
        return [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise ToolError("bad_format", f"the PDF could not be read: {exc}") from exc


def is_pdf(uploaded: UploadedFile) -> bool:
    return uploaded.content_type == "application/pdf" or uploaded.name.lower().endswith(".pdf")
