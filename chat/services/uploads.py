"""Uploads: checked, their text extracted (bounded), stored (network I/O, no transaction open),
then recorded with that text, so a turn never parses a file."""

from __future__ import annotations

import asyncio
import mimetypes
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation, ValidationError
from django.core.files.uploadedfile import UploadedFile as UploadedContent
from django.db import DatabaseError
from django.utils.text import get_valid_filename

from accounts.models import User
from chat import extraction, quota, storage
from chat.errors import UploadTooLarge
from chat.models import UploadedFile


def _checked_upload(upload: UploadedContent) -> tuple[str, str, int]:
    """(safe file name, content type, size) of an acceptable upload; 400 or 413 otherwise."""
    size = upload.size or 0
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadTooLarge(
            f"The file is {size} bytes; the limit is {settings.UPLOAD_MAX_BYTES} bytes.",
            max_bytes=settings.UPLOAD_MAX_BYTES,
        )
    if size == 0:
        raise ValidationError({"file": ["The file is empty."]})
    name = _safe_name(upload.name or "")
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    guessed = mimetypes.guess_type(name)[0] or ""
    allowed = settings.UPLOAD_ALLOWED_CONTENT_TYPES
    content_type = declared if declared in allowed else guessed
    if content_type not in allowed:
        shown = declared or guessed or "unknown"
        raise ValidationError({"file": [f"Unsupported file type {shown!r}. Allowed: {', '.join(allowed)}."]})
    return name, content_type, size


def _safe_name(raw: str) -> str:
    """The base name, made safe for any storage; the tail is kept so the extension survives."""
    try:
        return get_valid_filename(raw.replace("\\", "/").rsplit("/", 1)[-1])[-200:]
    except SuspiciousFileOperation:
        return "upload"


def _storage_name(owner_id: int, name: str) -> str:
    # A random directory per upload: names never collide and never need a lookup.
    return f"uploads/{owner_id}/{uuid.uuid4().hex}/{name}"


def _extracted(upload: UploadedContent, *, name: str, content_type: str) -> dict[str, str]:
    """The extraction fields of a new row: a file's content never makes the upload fail."""
    found = extraction.extract(b"".join(upload.chunks()), name=name, content_type=content_type)
    return {"extraction_status": found.status, "extracted_text": found.text, "extraction_note": found.note}


def file_upload(*, owner: User, upload: UploadedContent) -> UploadedFile:
    """Extract the text (bounded, see chat.extraction), store the file, then record both."""
    name, content_type, size = _checked_upload(upload)
    quota.upload_quota_check(owner_id=owner.pk, size=size)  # 413 before anything is stored
    extracted = _extracted(upload, name=name, content_type=content_type)
    stored = storage.upload_storage().save(_storage_name(owner.pk, name), upload)
    try:
        return UploadedFile.objects.create(
            owner=owner, file=stored, name=name, size=size, content_type=content_type, **extracted
        )
    except DatabaseError:
        storage.upload_storage().delete(stored)
        raise


async def afile_upload(*, owner: User, upload: UploadedContent) -> UploadedFile:
    """`file_upload` for async code: extraction and the storage write run in worker threads."""
    name, content_type, size = _checked_upload(upload)
    await sync_to_async(quota.upload_quota_check)(owner_id=owner.pk, size=size)
    extracted = await asyncio.to_thread(_extracted, upload, name=name, content_type=content_type)
    stored = await storage.asave(_storage_name(owner.pk, name), upload)
    return await UploadedFile.objects.acreate(
        owner=owner, file=stored, name=name, size=size, content_type=content_type, **extracted
    )


def file_extract(*, uploaded: UploadedFile) -> UploadedFile:
    """Extract the text of a file uploaded before extraction existed, once, with the same bounds.

    Reads the stored bytes (no transaction open); the row is updated only while still
    pending, so two turns racing on one old file write the same result once.
    """
    if uploaded.extraction_status != UploadedFile.Extraction.PENDING:
        return uploaded
    with uploaded.file.open("rb") as handle:
        data = handle.read(settings.UPLOAD_MAX_BYTES + 1)
    if len(data) > settings.UPLOAD_MAX_BYTES:
        found = extraction.unreadable(f"the file is larger than {settings.UPLOAD_MAX_BYTES} bytes")
    else:
        found = extraction.extract(data, name=uploaded.name, content_type=uploaded.content_type)
    uploaded.extraction_status, uploaded.extracted_text, uploaded.extraction_note = (
        found.status,
        found.text,
        found.note,
    )
    UploadedFile.objects.filter(pk=uploaded.pk, extraction_status=UploadedFile.Extraction.PENDING).update(
        extraction_status=found.status, extracted_text=found.text, extraction_note=found.note
    )
    return uploaded
