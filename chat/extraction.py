"""The text of an uploaded file, extracted once, at upload, within bounds.

Text files are decoded here (linear in their size, which `UPLOAD_MAX_BYTES` bounds).
A PDF is parsed in a child process (`chat/pdf_text_child.py`) that limits its own CPU
time (`RLIMIT_CPU`) and address space (`RLIMIT_AS`) before reading the file, and that
this process kills at a wall-clock deadline: a hostile PDF costs the web worker one
blocked thread (no CPU, no GIL) for at most `FILE_PARSE_TIMEOUT_SECONDS`, and the
child at most that much CPU. Output is bounded by `FILE_PARSE_MAX_PAGES` and
`FILE_PARSE_MAX_CHARS`: over either, the text is cut and the note says so. A file that
needs more time or memory, or that the parser refuses, is `unreadable` with the reason.
Every text returned is `storable`.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from pantheon.text import storable

CHILD_SCRIPT = Path(__file__).with_name("pdf_text_child.py")
# Separates the pages of a PDF in the stored text; the child keeps it out of page text.
PAGE_BREAK = "\f"
OK = "ok"
UNREADABLE = "unreadable"
# What the note may hold (UploadedFile.extraction_note's max_length).
NOTE_MAX_CHARS = 300


@dataclass(frozen=True)
class Extraction:
    status: str  # OK or UNREADABLE
    text: str
    note: str = ""


def unreadable(reason: str) -> Extraction:
    return Extraction(status=UNREADABLE, text="", note=storable(reason)[:NOTE_MAX_CHARS])


def is_pdf(*, name: str, content_type: str) -> bool:
    return content_type == "application/pdf" or name.lower().endswith(".pdf")


def extract(data: bytes, *, name: str, content_type: str) -> Extraction:
    """The storable text of a file's bytes, or why it is unreadable; never raises for its content."""
    if is_pdf(name=name, content_type=content_type):
        return _pdf_text(data)
    return _plain_text(data)


def _plain_text(data: bytes) -> Extraction:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return unreadable(f"the file is not UTF-8 text (invalid byte at offset {exc.start})")
    limit = settings.FILE_PARSE_MAX_CHARS
    if len(text) > limit:
        return Extraction(
            OK, storable(text[:limit]), f"truncated: the first {limit} of {len(text)} characters"
        )
    return Extraction(OK, storable(text))


def _pdf_text(data: bytes) -> Extraction:
    timeout = settings.FILE_PARSE_TIMEOUT_SECONDS
    command = [
        sys.executable,
        "-I",  # no user site, no PYTHON* variables, not the project on sys.path
        str(CHILD_SCRIPT),
        str(max(1, math.ceil(timeout))),
        str(settings.FILE_PARSE_MEMORY_BYTES),
        str(settings.FILE_PARSE_MAX_PAGES),
        str(settings.FILE_PARSE_MAX_CHARS),
    ]
    # An empty environment: the process reading hostile bytes holds none of our secrets.
    with subprocess.Popen(  # noqa: S603
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={}
    ) as child:
        try:
            output, _ = child.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return unreadable(f"reading it took longer than {timeout:g} s")
    if child.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return unreadable(f"reading it needs more than {timeout:g} s of CPU time")
    try:
        reported = json.loads(output)
        note = str(reported.get("note", ""))
        if reported["status"] != OK:
            return unreadable(note)
        pages = [storable(str(page)) for page in reported["pages"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return unreadable(f"the PDF reader stopped without an answer (exit status {child.returncode})")
    return Extraction(OK, PAGE_BREAK.join(pages), storable(note)[:NOTE_MAX_CHARS])
