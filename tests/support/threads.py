"""Real threads released together, for concurrency tests against real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.db import connection

# Generous: a thread that has not finished by then is stuck, and the test says so.
DEADLINE_SECONDS = 60.0


def run_in_threads(target: Callable[[int], object], count: int) -> list:
    """Run target(i) for i in range(count), each in its own thread, all released at once by a barrier.

    Returns the results in order and re-raises the first error. Each thread closes its
    database connection before it ends, so the test database can be flushed afterwards.
    """
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=DEADLINE_SECONDS)
            results[i] = target(i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,), name=f"test-thread-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_SECONDS
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stuck = [thread.name for thread in threads if thread.is_alive()]
    if stuck:
        raise AssertionError(f"threads still running after {DEADLINE_SECONDS}s: {stuck}")
    if errors:
        raise errors[0]
    return results
