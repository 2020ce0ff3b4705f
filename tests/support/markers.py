"""The markers `make test-fast` selects by, enforced where the slow things start.

`make test-fast` runs `-m "not browser and not gunicorn and not fuzz"`: a test
that starts gunicorn or Chromium without its marker would slip into the fast
loop unseen. The helpers that start them call `require()`, which fails such a
test at once. Outside pytest (benchmarks reuse `gunicorn_server`) it does nothing.
"""

from __future__ import annotations

import pytest

# The markers of the test running now; None when no test is running (e.g. a benchmark).
running: frozenset[str] | None = None


def require(marker: str, what: str) -> None:
    if running is not None and marker not in running:
        pytest.fail(
            f"{what} needs @pytest.mark.{marker}: `make test-fast` leaves tests out by that marker",
            pytrace=False,
        )
