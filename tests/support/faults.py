"""Fault injection for the reliability tests, with real processes and a real database.

- `HeldOpenAI`: the OpenAI-compatible fake whose answers can be held back, so
  a turn is caught inside its model call (or past any client timeout).
- `gunicorn_workers`, `socket_owner`, `backends_of_process`: which gunicorn
  worker sent a request (by the caller's TCP port, read from /proc) and which
  PostgreSQL backends belong to a process, so one exact worker can be killed
  or cut off from its database.
- `commit_gate`: a trigger that makes a turn's first ledger INSERT wait on an
  advisory lock the test holds. The turn is then stopped *inside* its commit
  transaction — turn, messages, usage events written and the wallet row
  updated, nothing committed — for as long as the test likes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from tests.support.fake_openai import FakeOpenAI
from tests.support.gunicorn_server import database_url

POSTGRES_PORT = 5432


class HeldOpenAI(FakeOpenAI):
    """FakeOpenAI whose answers wait while the gate is closed (`hold()` / `release()`)."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._open = threading.Event()
        self._open.set()
        self._arrived = threading.Condition()
        self.arrivals = 0

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_for_arrivals(self, count: int, *, timeout: float = 20.0) -> dict:
        """Block until `count` completion requests arrived; return the last one's record."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self.arrivals >= count, timeout=timeout):
                raise AssertionError(f"only {self.arrivals} of {count} model calls reached the fake provider")
        return self.requests[-1]

    def respond(self, path: str, headers: dict, body: dict | None) -> tuple[int, dict]:
        with self._arrived:
            self.arrivals += 1
            self._arrived.notify_all()
        # Bounded, so a forgotten hold never outlives the test run.
        self._open.wait(timeout=120)
        return super().respond(path, headers, body)

    def __exit__(self, *exc) -> None:
        self.release()
        super().__exit__(*exc)


# --- processes and sockets (Linux /proc) ----------------------------------------------


def gunicorn_workers(master_pid: int) -> set[int]:
    """The pids of the master's live children (its workers)."""
    workers = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, fields[1] the parent pid; a zombie is already dead.
        if int(fields[1]) == master_pid and fields[0] != "Z":
            workers.add(int(entry))
    return workers


def _socket_inodes(*, local_port: int, remote_port: int | None = None) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                rows = lines.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) != local_port:
                continue
            if remote_port is not None and int(remote.rsplit(":", 1)[1], 16) != remote_port:
                continue
            inodes.add(inode)
    return inodes


def socket_owner(*, local_port: int, candidates: set[int], remote_port: int | None = None) -> int | None:
    """Which of `candidates` holds the TCP socket bound to 127.0.0.1:`local_port`."""
    wanted = {f"socket:[{inode}]" for inode in _socket_inodes(local_port=local_port, remote_port=remote_port)}
    for pid in candidates:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
            except OSError:
                continue
    return None


def backends_of_process(cursor, pid: int) -> list[int]:
    """PostgreSQL backend pids whose client socket is held by process `pid` (this database)."""
    cursor.execute(
        "SELECT pid, client_port FROM pg_stat_activity "
        "WHERE datname = current_database() AND client_port IS NOT NULL AND pid <> pg_backend_pid()"
    )
    return [
        backend
        for backend, client_port in cursor.fetchall()
        if socket_owner(local_port=client_port, remote_port=POSTGRES_PORT, candidates={pid}) == pid
    ]


# --- a gate inside the turn's commit transaction -----------------------------------------

GATE_LOCK_KEY = 0x67617465  # "gate"


@dataclass
class CommitGate:
    holder: psycopg.Connection

    def close(self) -> None:
        """Let every waiting (and later) ledger INSERT through."""
        self.holder.execute("SELECT pg_advisory_unlock_all()")

    def wait_for_waiter(self, *, timeout: float = 20.0) -> tuple[int, int]:
        """(backend pid, client port) of the turn transaction waiting at the gate."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # The backend queued on the gate's own advisory lock (the turn's statement text is too
            # long for pg_stat_activity to show where it stopped).
            row = self.holder.execute(
                "SELECT a.pid, a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid = 0 AND l.objid = %s "
                "AND l.objsubid = 1 AND a.datname = current_database()",
                [GATE_LOCK_KEY],
            ).fetchone()
            if row is not None:
                return row
            time.sleep(0.01)
        raise AssertionError("no turn reached the commit gate")

    def waiter_in_transaction(self, backend: int) -> bool:
        row = self.holder.execute(
            "SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = %s", [backend]
        ).fetchone()
        return bool(row and row[0])


@contextmanager
def commit_gate(*, wallet_id: int) -> Iterator[CommitGate]:
    """Closed on entry: the wallet's next ledger INSERT waits until `gate.close()` (or the end)."""
    with psycopg.connect(database_url(), autocommit=True) as holder:
        holder.execute(
            "CREATE OR REPLACE FUNCTION reliability_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF NEW.wallet_id = {int(wallet_id)} THEN PERFORM pg_advisory_xact_lock({GATE_LOCK_KEY}); "
            "END IF; RETURN NEW; END $$"
        )
        holder.execute(
            "CREATE TRIGGER reliability_commit_gate BEFORE INSERT ON billing_credittransaction "
            "FOR EACH ROW EXECUTE FUNCTION reliability_commit_gate()"
        )
        holder.execute("SELECT pg_advisory_lock(%s)", [GATE_LOCK_KEY])
        gate = CommitGate(holder)
        try:
            yield gate
        finally:
            gate.close()
            # Waits for any transaction still inside the table (a killed worker's backend).
            holder.execute("DROP TRIGGER IF EXISTS reliability_commit_gate ON billing_credittransaction")
            holder.execute("DROP FUNCTION IF EXISTS reliability_commit_gate()")
