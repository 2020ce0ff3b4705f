"""Ledger write throughput: the `wallet_debit` service against the raw psycopg floor.

The floor is the least work a debit can be: one transaction with
`UPDATE wallet SET balance = balance + x … RETURNING balance` and the ledger
`INSERT`, sent with psycopg 3 directly. The service does the same work through
Django (`billing.services.wallet_debit`). Both run with 8 threads, first on 8
distinct wallets, then all on one hot wallet, and every run is checked for lost
updates (balance == expected == Σ ledger).

    .venv/bin/python benchmarks/ledger.py [--ops 300] [--repeat 3]

Database: BENCH_DATABASE_URL, else DATABASE_URL, else
postgres://postgres@127.0.0.1:5432/pantheon_bench (created and migrated if needed).
`run()` returns the rows as dicts for benchmarks/run_all.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/pantheon_bench"
THREADS = 8
OPS_PER_THREAD = 300
REPEAT = 3
GOAL_RATIO = 0.5
AMOUNT = Decimal("0.0123")


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_URL


def _ensure_database(url: str) -> None:
    """CREATE DATABASE if it does not exist (connecting to the server's `postgres` db)."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django() -> str:
    """Configure Django on the benchmark database and migrate it; return the psycopg conninfo."""
    url = database_url()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pantheon.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-not-for-production")
    # A pool big enough for every thread at once, so no thread waits for a connection.
    os.environ.setdefault("DATABASE_POOL_MAX_SIZE", str(THREADS + 4))
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    _ensure_database(url)

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return url.replace("postgres://", "postgresql://", 1)


# --- the two implementations of one debit ------------------------------------------------


def _floor_worker(conninfo: str) -> Callable[[int, int], None]:
    """A psycopg connection doing the minimal debit: UPDATE … RETURNING, INSERT, COMMIT."""
    import psycopg

    conn = psycopg.connect(conninfo)

    def debit(wallet_id: int, ops: int) -> None:
        try:
            with conn.cursor() as cursor:
                for _ in range(ops):
                    cursor.execute(
                        "UPDATE billing_creditwallet SET balance = balance + %s, "
                        "lifetime_burned = lifetime_burned + %s, updated_at = now() "
                        "WHERE id = %s RETURNING balance",
                        [-AMOUNT, AMOUNT, wallet_id],
                    )
                    (balance,) = cursor.fetchone()
                    cursor.execute(
                        "INSERT INTO billing_credittransaction "
                        "(wallet_id, kind, amount, balance_after, description, created_at) "
                        "VALUES (%s, 'debit', %s, %s, 'bench floor', now()) RETURNING id",
                        [wallet_id, -AMOUNT, balance],
                    )
                    cursor.fetchone()
                    conn.commit()
        finally:
            conn.close()

    return debit


def _service_worker() -> Callable[[int, int], None]:
    from django.db import connection

    from billing.services import wallet_debit

    # Take this thread's pooled connection before the clock starts, like the floor does.
    connection.ensure_connection()

    def debit(wallet_id: int, ops: int) -> None:
        try:
            for _ in range(ops):
                wallet_debit(wallet_id=wallet_id, amount=AMOUNT, description="bench service")
        finally:
            connection.close()

    return debit


# --- one timed run -----------------------------------------------------------------------


def _timed(make_worker: Callable[[], Callable[[int, int], None]], wallet_ids: list[int], ops: int) -> float:
    """Run one worker per wallet id in its own thread, released together; return seconds."""
    ready = threading.Barrier(len(wallet_ids) + 1)
    go = threading.Event()
    errors: list[BaseException] = []

    def body(wallet_id: int) -> None:
        try:
            work = make_worker()
        except BaseException as exc:
            errors.append(exc)
            ready.abort()
            return
        ready.wait()
        go.wait()
        try:
            work(wallet_id, ops)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(wallet_id,)) for wallet_id in wallet_ids]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def _ledger_state(wallet_ids: set[int]) -> dict[int, tuple[Decimal, Decimal, int]]:
    """(balance, Σ ledger amount, ledger rows) per wallet."""
    from django.db.models import Count, Sum

    from billing.models import CreditWallet

    rows = CreditWallet.objects.filter(pk__in=wallet_ids).annotate(
        total=Sum("transactions__amount"), rows=Count("transactions")
    )
    return {w.pk: (w.balance, w.total or Decimal(0), w.rows) for w in rows}


def _lost_updates(before: dict, after: dict, per_wallet_ops: dict[int, int]) -> int:
    """Debits missing from a balance or from the ledger (0 when everything adds up)."""
    lost = 0
    for wallet_id, ops in per_wallet_ops.items():
        balance0, _, rows0 = before[wallet_id]
        balance1, total1, rows1 = after[wallet_id]
        expected = balance0 - ops * AMOUNT
        lost += abs(int((balance1 - expected) / AMOUNT))
        lost += abs(ops - (rows1 - rows0))
        if total1 != balance1:
            lost += max(1, abs(int((total1 - balance1) / AMOUNT)))
    return lost


def _bench_wallets(count: int) -> list[int]:
    from django.contrib.auth import get_user_model

    from billing.services import wallet_get_or_create

    tag = uuid.uuid4().hex[:8]
    user_model = get_user_model()
    return [
        wallet_get_or_create(user=user_model.objects.create(username=f"bench-{tag}-{n}")).pk
        for n in range(count)
    ]


def _measure(make_worker, thread_wallets: list[int], ops: int) -> tuple[float, int]:
    per_wallet: dict[int, int] = {}
    for wallet_id in thread_wallets:
        per_wallet[wallet_id] = per_wallet.get(wallet_id, 0) + ops
    before = _ledger_state(set(per_wallet))
    seconds = _timed(make_worker, thread_wallets, ops)
    after = _ledger_state(set(per_wallet))
    return len(thread_wallets) * ops / seconds, _lost_updates(before, after, per_wallet)


def run(*, ops: int = OPS_PER_THREAD, repeat: int = REPEAT, threads: int = THREADS) -> list[dict]:
    """Measure floor and service on distinct and hot wallets; median of `repeat` runs each."""
    conninfo = setup_django()
    distinct = _bench_wallets(threads)
    hot = _bench_wallets(1) * threads
    scenarios = {"distinct wallets": distinct, "one hot wallet": hot}
    makers = {"floor": lambda: _floor_worker(conninfo), "service": _service_worker}

    # Warm-up: first-use costs (connections, plans, imports) stay out of the figures.
    for thread_wallets in scenarios.values():
        for make in makers.values():
            _measure(make, thread_wallets, 10)

    results = []
    for scenario, thread_wallets in scenarios.items():
        samples: dict[str, list[float]] = {"floor": [], "service": []}
        lost = 0
        # Interleaved, so floor and service share whatever the machine is doing.
        for _ in range(repeat):
            for name, make in makers.items():
                ops_per_second, lost_now = _measure(make, thread_wallets, ops)
                samples[name].append(ops_per_second)
                lost += lost_now
        floor = statistics.median(samples["floor"])
        service = statistics.median(samples["service"])
        results.append(
            {
                "benchmark": "ledger",
                "scenario": scenario,
                "threads": threads,
                "ops_per_thread": ops,
                "repeat": repeat,
                "floor_ops_s": round(floor, 1),
                "service_ops_s": round(service, 1),
                "ratio": round(service / floor, 3),
                "goal_ratio": GOAL_RATIO,
                "lost_updates": lost,
                "ok": lost == 0 and service / floor >= GOAL_RATIO,
            }
        )
    return results


def print_table(results: list[dict]) -> None:
    header = f"{'scenario':<18} {'floor ops/s':>12} {'service ops/s':>14} {'ratio':>7} {'lost':>5}  goal"
    print(header)
    print("-" * len(header))
    for row in results:
        print(
            f"{row['scenario']:<18} {row['floor_ops_s']:>12.1f} {row['service_ops_s']:>14.1f} "
            f"{row['ratio']:>7.3f} {row['lost_updates']:>5}  {'ok' if row['ok'] else 'MISSED'}"
        )
    first = results[0]
    print(
        f"({first['threads']} threads × {first['ops_per_thread']} debits, median of {first['repeat']} runs; "
        f"goal: ratio ≥ {GOAL_RATIO}, 0 lost updates)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=OPS_PER_THREAD, help="debits per thread per run")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="runs per measurement (median)")
    args = parser.parse_args()
    results = run(ops=args.ops, repeat=args.repeat)
    print_table(results)
    return 0 if all(row["ok"] for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
