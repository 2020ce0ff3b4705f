"""The text of a user's file never reaches the log, at any level.

Files holding a unique marker (text, CSV, JSON, Markdown, a PDF, and ones the
parsers refuse) are uploaded and read by the file tools in real turns, with
every logger at DEBUG; then a tool is made to crash with an exception whose
message quotes the file. The marker must appear in no log record: not in a
message, its arguments, nor a formatted traceback.
"""

from __future__ import annotations

import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.factories import RoomFactory, UserFactory
from tests.support.logs import recording_logs
from tests.support.pdf import pdf_with_text

MARKER = "ZQX-private-file-text-7731"


def _rendered(record: logging.LogRecord) -> str:
    formatter = logging.Formatter("%(message)s")
    return " ".join([formatter.format(record), str(record.args), record.exc_text or ""])


@pytest.fixture
def api_user(db):
    user = UserFactory()
    client = APIClient()
    client.force_login(user)
    return client, user


def _upload(client, name: str, data: bytes, content_type: str) -> int:
    response = client.post(
        "/api/v1/files/",
        {"file": SimpleUploadedFile(name, data, content_type=content_type)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_file_text_is_never_logged_at_any_level(api_user, caplog):
    client, user = api_user
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    files = [
        _upload(client, "notes.txt", f"secret notes {MARKER}\n".encode(), "text/plain"),
        _upload(client, "table.csv", f"name,value\n{MARKER},1\n".encode(), "text/csv"),
        _upload(client, "data.json", f'{{"k": "{MARKER}"}}'.encode(), "application/json"),
        _upload(client, "broken.json", f'{{"k": "{MARKER}", '.encode(), "application/json"),
        _upload(client, "doc.md", f"# {MARKER}\n".encode(), "text/markdown"),
        _upload(client, "bad.csv", f'a,"{MARKER}\n'.encode(), "text/csv"),
        _upload(client, "latin1.txt", f"caf\xe9 {MARKER}".encode("latin-1"), "text/plain"),
        _upload(client, "page.pdf", pdf_with_text(f"pdf text {MARKER}"), "application/pdf"),
    ]
    caplog.set_level(logging.DEBUG)
    with recording_logs() as recorder:
        logging.getLogger().setLevel(logging.DEBUG)
        for content in ("Read my files", "Parse the table rows of my files"):
            response = client.post(
                f"/api/v1/rooms/{room.pk}/turns/", {"content": content, "files": files}, format="json"
            )
            assert response.status_code in (201, 400, 500), response.content
    assert recorder.records, "nothing was logged: the test would prove nothing"
    for record in recorder.records:
        assert MARKER not in _rendered(record), f"file text in a {record.name} record"
    assert MARKER not in caplog.text


def test_a_tool_crash_quoting_the_file_logs_no_file_text(api_user, caplog, monkeypatch):
    from chat.models import UploadedFile
    from chat.tools import file_read

    client, user = api_user
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    notes = _upload(client, "n.txt", f"line one {MARKER}".encode(), "text/plain")

    def crash(*, user_id: int, file_id: int):
        text = UploadedFile.objects.get(pk=file_id).extracted_text
        raise ValueError(f"cannot read line {text!r}")  # a parser that echoes its input

    monkeypatch.setattr(file_read, "readable_file", crash)
    caplog.set_level(logging.DEBUG)
    response = client.post(
        f"/api/v1/rooms/{room.pk}/turns/", {"content": "Read my notes", "files": [notes]}, format="json"
    )
    assert response.status_code == 500
    crash_lines = [r for r in caplog.records if r.getMessage().startswith("tool crashed")]
    assert crash_lines and "ValueError" in crash_lines[0].getMessage()  # the crash itself is logged
    assert MARKER not in caplog.text
