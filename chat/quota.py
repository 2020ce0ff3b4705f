"""Per-user storage quota for uploads (UPLOAD_QUOTA_BYTES).

`file_upload` calls `upload_quota_check` before it writes anything to storage,
so a refused upload stores nothing. Two uploads of one user racing each other
can both pass the check: the overshoot is bounded by UPLOAD_MAX_BYTES per
upload in flight, and THROTTLE_UPLOAD_RATE bounds how many there can be.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Sum

from chat.errors import ChatError
from chat.models import UploadedFile


class QuotaExceeded(ChatError):
    status_code = 413
    code = "quota_exceeded"


def upload_bytes_used(*, owner_id: int) -> int:
    return UploadedFile.objects.filter(owner_id=owner_id).aggregate(total=Sum("size"))["total"] or 0


def upload_quota_check(*, owner_id: int, size: int) -> None:
    """Raise QuotaExceeded (413) when `size` more bytes would take the owner over the quota."""
    quota = settings.UPLOAD_QUOTA_BYTES
    if not quota:
        return
    used = upload_bytes_used(owner_id=owner_id)
    if used + size > quota:
        raise QuotaExceeded(
            f"This upload ({size} bytes) would exceed your storage quota of {quota} bytes "
            f"({used} bytes used).",
            quota_bytes=quota,
            used_bytes=used,
        )
