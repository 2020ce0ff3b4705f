"""A bulkhead: at most N threads of a process do one kind of heavy work at once.

Under gthread every request is a thread, and CPython runs one thread of a
process at a time. When 64 turns arrive together, 32 threads per process
want the interpreter for their validation, hold, prompt and (two seconds
later) their commit, and a wallet read that arrives among them waits its turn
behind all of them at every query it makes: 130–180 ms instead of 5 ms.
Letting only `slots` turn threads work at once (the rest wait on a semaphore,
which costs no CPU and no interpreter time) keeps the queue in front of short
requests one turn thread deep; the turns' total work is the same, so they finish as early
as before (docs/decisions.md, "Turn work goes through a bulkhead").

A thread *steps outside* while it waits on something slow — a model call, a
retry waiting for the first request — so the slots only ever count work that
is running. Waiting for a slot never holds a pooled database connection
(outside a transaction): threads waiting to get in must not starve those
inside of connections.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pantheon.db import release_connection


class Bulkhead:
    """`inside()` around heavy work, `outside()` around the waits within it; both per thread.

    `slots()` is called when the bulkhead is first entered (so it can read a
    setting); 0 or less means no limit.
    """

    def __init__(self, slots: Callable[[], int]) -> None:
        self._slots = slots
        self._semaphore: threading.Semaphore | None = None
        self._unlimited = False
        self._setup = threading.Lock()
        self._local = threading.local()

    def _gate(self) -> threading.Semaphore | None:
        if self._semaphore is None and not self._unlimited:
            with self._setup:
                if self._semaphore is None and not self._unlimited:
                    slots = self._slots()
                    if slots > 0:
                        self._semaphore = threading.Semaphore(slots)
                    else:
                        self._unlimited = True
        return self._semaphore

    @property
    def held(self) -> bool:
        """Whether this thread is inside now."""
        return getattr(self._local, "depth", 0) > 0

    def _enter(self) -> None:
        gate = self._gate()
        if gate is not None and not gate.acquire(blocking=False):
            release_connection()  # nobody waits for a slot holding a pooled connection
            gate.acquire()

    def _leave(self) -> None:
        gate = self._gate()
        if gate is not None:
            gate.release()

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Do heavy work: wait for a slot unless this thread already has one."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._enter()
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self._leave()

    @contextmanager
    def outside(self) -> Iterator[None]:
        """Wait on something slow without a slot; this thread gets one back after (if it had one)."""
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            yield
            return
        self._local.depth = 0
        self._leave()
        try:
            yield
        finally:
            self._enter()
            self._local.depth = depth
