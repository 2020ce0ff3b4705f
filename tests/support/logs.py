"""Record what the server logs during a test (the live server runs in this process)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class LogRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        """Records with a traceback, at ERROR or above, or that print one."""
        return [
            f"{record.levelname} {record.name}: {record.getMessage()[:300]}"
            for record in self.records
            if record.exc_info or record.levelno >= logging.ERROR or "Traceback" in record.getMessage()
        ]


@contextmanager
def recording_logs() -> Iterator[LogRecorder]:
    recorder = LogRecorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    try:
        yield recorder
    finally:
        root.removeHandler(recorder)


def assert_no_traceback(recorder: LogRecorder) -> None:
    errors = recorder.errors()
    assert not errors, "the server logged errors:\n" + "\n".join(errors[:10])
