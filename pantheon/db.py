"""Database connection hygiene for slow requests.

A turn spends seconds waiting for model providers; a database connection held
that long caps the host's concurrent turns at the pool size and the whole
cluster at PostgreSQL's `max_connections`. Code that is about to wait on the
network hands its connection back first.
"""

from __future__ import annotations

from django.db import connection


def release_connection() -> None:
    """Give this thread's connection back to the pool (or close it) unless a transaction is open.

    The next query takes one again. Inside a transaction (a caller's `atomic()`,
    a test case) the connection must stay: releasing it would end the transaction.
    """
    if not connection.in_atomic_block:
        connection.close()
