"""The PDF text extractor's child process: PDF bytes on stdin, one JSON object on stdout.

`chat.extraction` runs this file as `python -I pdf_text_child.py CPU_SECONDS MEMORY_BYTES
MAX_PAGES MAX_CHARS` with an empty environment. It imports only the standard library
and pypdf (never Django: no settings, no database, no secrets in this process), limits
itself before it reads a byte of the file, and reports every parser failure as
`{"status": "unreadable", "note": …}`. What it cannot report (the CPU limit's signal,
a crash) the parent reads from its exit status; the parent also kills it at a wall-clock
deadline. Text goes out as ASCII JSON, so a lone surrogate pypdf produced cannot break
the pipe; the parent makes it storable.
"""

from __future__ import annotations

import io
import json
import os
import resource
import sys


def limit_self(*, cpu_seconds: int, memory_bytes: int) -> None:
    # Soft CPU limit: SIGXCPU ends the process; the hard limit a second later is SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # writes no file
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Parsing yields the CPU to the web workers' requests.
    os.nice(10)


def pdf_pages(data: bytes, *, max_pages: int, max_chars: int) -> dict:
    """The text of the first pages, within `max_pages` and `max_chars` in all."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    page_count = len(reader.pages)
    pages: list[str] = []
    chars = 0
    note = ""
    for number, page in enumerate(reader.pages, start=1):
        if number > max_pages:
            note = f"truncated: the text of the first {max_pages} of {page_count} pages"
            break
        # A form feed separates pages in the stored text; none may come from a page.
        text = (page.extract_text() or "").replace("\f", "\n")
        if chars + len(text) > max_chars:
            pages.append(text[: max_chars - chars])
            note = f"truncated: the first {max_chars} characters (page {number} of {page_count})"
            break
        pages.append(text)
        chars += len(text)
    return {"status": "ok", "pages": pages, "page_count": page_count, "note": note}


def main(argv: list[str]) -> int:
    cpu_seconds, memory_bytes, max_pages, max_chars = (int(value) for value in argv[1:5])
    limit_self(cpu_seconds=cpu_seconds, memory_bytes=memory_bytes)
    try:
        data = sys.stdin.buffer.read()
        result = pdf_pages(data, max_pages=max_pages, max_chars=max_chars)
    except MemoryError:
        result = {
            "status": "unreadable",
            "note": f"reading it needs more than {memory_bytes // 2**20} MiB of memory",
        }
    except RecursionError:
        result = {"status": "unreadable", "note": "its structure is nested too deeply to read"}
    except Exception as exc:  # any parser failure is a verdict on the file, not a crash
        detail = " ".join(str(exc).split())[:200]
        result = {
            "status": "unreadable",
            "note": f"the PDF could not be read ({type(exc).__name__}: {detail})",
        }
    sys.stdout.buffer.write(json.dumps(result).encode("ascii"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
