"""Keep every process's multiplier cache current: PostgreSQL LISTEN/NOTIFY plus a safety net.

A committed pricing edit reloads the editing process's cache and sends
`NOTIFY billing_pricing_changed, '<change_seq>'` (`notify_pricing_changed`).
Every process that serves turns runs one `PricingListener`: a daemon thread
with its own autocommit psycopg 3 connection that LISTENs and, when a
notification names an edit it has not seen yet, reloads the cache over that
same connection. The thread never uses a Django connection (nor the pool),
so it holds nothing that a fork (gunicorn --preload) could share with a worker.

The safety net: every `PRICING_VERSION_CHECK_SECONDS` (and right after every
(re)connect, which is what catches notifications sent while the connection
was down) the listener compares the database's active version id and
max(PricingChange.id) with what the cache holds, and reloads on any
difference. The listener connection itself runs that query, so a dead
connection is noticed within one check interval and reconnected with backoff.

The turn path never queries pricing: it reads `billing.meter`'s snapshot.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

import psycopg
from django.conf import settings
from django.db import connection, connections

from billing import meter

logger = logging.getLogger(__name__)

CHANNEL = "billing_pricing_changed"
# Set on the listener's backend so operators (and tests) can find it in pg_stat_activity.
APPLICATION_NAME_PREFIX = "pantheon-pricing-listener"


def notify_pricing_changed(*, change_seq: int) -> None:
    """Tell every listening process that edit `change_seq` is committed (PostgreSQL only).

    Called after COMMIT, in autocommit, so the notification is delivered at once.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(change_seq)])


def database_pricing_state(cursor) -> tuple[int | None, int]:
    """(active PricingVersion id, max PricingChange id) through any DB-API cursor."""
    from billing.models import PricingChange, PricingVersion

    cursor.execute(
        f"SELECT (SELECT id FROM {PricingVersion._meta.db_table} WHERE is_active), "
        f"(SELECT COALESCE(MAX(id), 0) FROM {PricingChange._meta.db_table})"
    )
    version_id, change_seq = cursor.fetchone()
    return version_id, int(change_seq)


def listener_connection_params(alias: str = "default") -> dict:
    """psycopg.connect() arguments for a dedicated listener connection to `alias`."""
    params = connections[alias].get_connection_params()
    params.update(
        autocommit=True,
        application_name=f"{APPLICATION_NAME_PREFIX}:{os.getpid()}",
        connect_timeout=5,
        # A silently dropped TCP connection is noticed by the kernel, not never.
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    return params


class PricingListener:
    """One per process: LISTEN on a dedicated connection, reload on NOTIFY, check periodically."""

    def __init__(
        self,
        *,
        alias: str = "default",
        check_seconds: float | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        wait_slice: float = 0.5,
    ) -> None:
        self.alias = alias
        self.check_seconds = float(
            settings.PRICING_VERSION_CHECK_SECONDS if check_seconds is None else check_seconds
        )
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # How long one wait for notifications lasts, so stop() is noticed quickly.
        self.wait_slice = wait_slice
        self.pid = os.getpid()
        self.connected = False
        self.backend_pid: int | None = None
        self.connections_made = 0
        self.notifications = 0
        self.reloads = 0
        self.last_check_at: float | None = None
        self.last_notify_at: float | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> PricingListener:
        self._thread = threading.Thread(target=self.run, name="pricing-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def state(self) -> dict:
        return {
            "running": self.is_alive(),
            "pid": self.pid,
            "connected": self.connected,
            "backend_pid": self.backend_pid,
            "connections_made": self.connections_made,
            "notifications": self.notifications,
            "reloads": self.reloads,
            "check_seconds": self.check_seconds,
            "last_check_at": self.last_check_at,
            "last_notify_at": self.last_notify_at,
            "last_error": self.last_error,
        }

    # --- the thread -----------------------------------------------------------
    def run(self) -> None:
        backoff = self.backoff_initial
        while not self._stop.is_set():
            try:
                with psycopg.connect(**listener_connection_params(self.alias)) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.backend_pid = conn.info.backend_pid
                    self.connections_made += 1
                    self.connected = True
                    backoff = self.backoff_initial
                    # LISTEN first, then check: an edit committed before LISTEN is
                    # caught here, one committed after it is notified.
                    self._check(conn)
                    self._serve(conn)
            except Exception as exc:  # the thread must outlive any failure
                self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
                logger.warning("pricing listener disconnected: %s", self.last_error)
            finally:
                self.connected = False
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.backoff_max)

    def _serve(self, conn: psycopg.Connection) -> None:
        next_check = time.monotonic() + self.check_seconds
        while not self._stop.is_set():
            timeout = max(0.0, min(self.wait_slice, next_check - time.monotonic()))
            # notifies() holds the connection lock: collect, leave the generator, then query.
            payloads = [notify.payload for notify in conn.notifies(timeout=timeout, stop_after=1)]
            if payloads:
                self.notifications += len(payloads)
                self.last_notify_at = time.time()
                if any(self._is_new(payload) for payload in payloads):
                    self._reload(conn)
            if time.monotonic() >= next_check:
                self._check(conn)
                next_check = time.monotonic() + self.check_seconds

    @staticmethod
    def _is_new(payload: str) -> bool:
        try:
            change_seq = int(payload)
        except ValueError:
            return True  # unknown payload: reloading is always safe
        snapshot = meter.peek_pricing_snapshot()
        # Edits are serialised, so holding edit N means holding every edit up to N.
        return snapshot is None or change_seq > snapshot.change_seq

    def _check(self, conn: psycopg.Connection) -> None:
        with conn.cursor() as cursor:
            version_id, change_seq = database_pricing_state(cursor)
        self.last_check_at = time.time()
        if meter.pricing_is_current(version_id=version_id, change_seq=change_seq):
            return
        snapshot = meter.peek_pricing_snapshot()
        # A lower sequence than ours means audit rows went away (restore): take the DB's word.
        self._reload(conn, force=snapshot is not None and change_seq < snapshot.change_seq)

    def _reload(self, conn: psycopg.Connection, *, force: bool = False) -> None:
        with conn.cursor() as cursor:
            snapshot = meter.load_snapshot(cursor)
        meter.install_pricing_snapshot(snapshot, force=force)
        self.reloads += 1


_listener: PricingListener | None = None
_start_lock = threading.Lock()
# Listeners inherited from a parent process: kept referenced so their
# connection (shared with the parent) is never finalised in the child.
_inherited: list[PricingListener] = []


def _is_management_command() -> bool:
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program in ("manage.py", "django-admin"):
        return len(sys.argv) < 2 or sys.argv[1] != "runserver"
    return False


def start_listener() -> PricingListener | None:
    """Start this process's listener once (per pid). No-op off PostgreSQL or when disabled."""
    global _listener
    if not settings.PRICING_LISTENER_ENABLED or _is_management_command():
        return None
    if connections["default"].vendor != "postgresql":
        return None
    with _start_lock:
        if _listener is not None and _listener.pid == os.getpid() and _listener.is_alive():
            return _listener
        # Its first check loads the cache, so this worker's first turn is priced from memory.
        _listener = PricingListener().start()
        return _listener


def current_listener() -> PricingListener | None:
    listener = _listener
    if listener is None or listener.pid != os.getpid():
        return None
    return listener


def listener_state() -> dict:
    """This process's listener, for /healthz; never touches the database."""
    listener = current_listener()
    if listener is None:
        return {"running": False, "pid": os.getpid(), "connected": False}
    return listener.state()


def _after_fork_in_child() -> None:
    # gunicorn --preload imports wsgi.py (and starts a listener) in the master;
    # threads do not survive fork, so each worker starts its own.
    global _listener, _start_lock
    _start_lock = threading.Lock()
    inherited, _listener = _listener, None
    if inherited is not None:
        _inherited.append(inherited)
        start_listener()


os.register_at_fork(after_in_child=_after_fork_in_child)
