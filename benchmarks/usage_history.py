"""Usage history at scale: the same API reads at 1,000 and at 1,000,000 usage events.

Two databases hold the same shape of data: `<bench>_usage_1k` with 1,000
`UsageEvent` rows and `<bench>_usage_1m` with 1,000,000, spread over a year
in arrival order, across many users, one heavy user holding 20 % (200 and
200,000 rows). Each is seeded once with `COPY` and reused by later runs (a
marker table records what was seeded; `--reseed` or BENCH_RESEED=1 starts over).

For the heavy user the script times, through the real views
(`UsageListView`, `UsageSummaryView`: selectors, signed cursors, serializers
and JSON rendering; authentication is forced, it is not what grows):

- the first page (50 rows, newest first);
- a deep page: a cursor built exactly as the API builds its `next` link,
  positioned 75 % of the way into the user's history (row 150,000 of 200,000);
- a filtered page (`model_alias`, `since`, `until`; 10 rows);
- the 30-day summary grouped by day.

Each read runs REPEAT times at both scales, interleaved, and the figure is the
p95. Goal for the list pages: p95 at 1M ≤ 1.5 × p95 at 1k. The summary adds
up every row of the window (≈16,000 at 1M, ≈16 at 1k), so it is reported,
not held to that goal. `EXPLAIN (ANALYZE, BUFFERS)` of every statement the
views send at 1M is printed and must use an index, never a sequential scan of
the events table.

    .venv/bin/python benchmarks/usage_history.py [--repeat 200] [--reseed] [--plans]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from _support import (
    ROOT,
    SECRET_KEY,
    conninfo,
    database_name,
    database_url,
    ensure_database,
    percentile,
    row,
    setup_django,
    with_database_name,
)

BIG_ROWS = 1_000_000
SMALL_ROWS = 1_000
HEAVY_SHARE = 5  # every 5th event belongs to the heavy user: 20 %
SPAN = timedelta(days=365)
# A fixed "newest event" so a database seeded months ago still answers the same reads.
NEWEST = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
REPEAT = 200
WARMUP = 5
DEEP_FRACTION = 0.75
GOAL_RATIO = 1.5
MARKER = "bench_usage_seed"
EVENTS_TABLE = "chat_llmcallevent"
# alias, multiplier in 1/10 000, provider model; gpt-4o is every 4th call (the filtered read).
ALIASES = [
    ("gpt-4o", 20000, "offline/gpt-4o"),
    ("deepseek", 5000, "offline/deepseek"),
    ("claude-sonnet", 15000, "offline/claude-sonnet"),
    ("gemini-flash", 8000, "offline/gemini-flash"),
]


# --- seeding --------------------------------------------------------------------------


def _marker_rows(url: str) -> int | None:
    """Rows recorded by the seed marker, or None when the database is missing or unseeded."""
    import psycopg

    try:
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            found = conn.execute("SELECT to_regclass(%s)", [MARKER]).fetchone()[0]
            if found is None:
                return None
            seeded = conn.execute(f"SELECT rows FROM {MARKER}").fetchone()
            return None if seeded is None else int(seeded[0])
    except psycopg.OperationalError:
        return None


def _recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(with_database_name(conninfo(url), "postgres"), autocommit=True) as conn:
        name = sql.Identifier(database_name(url))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def _migrate(url: str) -> None:
    """`manage.py migrate` in its own process: the data migrations write to the default database."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "pantheon.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or SECRET_KEY,
        "DEBUG": "false",
        "SECURE_HTTPS": "false",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )


def _event_lines(*, rows: int, owners: list[tuple[int, int, int]], heavy: tuple[int, int, int]):
    """COPY text lines in arrival order, in chunks; deterministic (seeded random)."""
    chooser = random.Random(20261101)
    step = SPAN / rows
    first = NEWEST - step * (rows - 1)
    prefixes = [f"{user}\t{room}\t{turn}\t" for user, room, turn in owners]
    heavy_prefix = "{}\t{}\t{}\t".format(*heavy)
    chunk: list[str] = []
    for n in range(rows):
        prefix = heavy_prefix if n % HEAVY_SHARE == 0 else prefixes[chooser.randrange(len(prefixes))]
        alias, multiplier, provider = ALIASES[(n // HEAVY_SHARE + n) % len(ALIASES)]
        input_tokens = 200 + (n * 7919) % 1800
        output_tokens = 50 + (n * 104729) % 900
        if n % 10 == 9:  # a manager call: recorded, unmetered, free
            purpose, metered, units = "manager", "f", 0
        else:
            purpose, metered = "agent", "t"
            # (in + out) / 1000 × multiplier, in 1/10 000 credits, half up.
            units = ((input_tokens + output_tokens) * multiplier * 2 + 1000) // 2000
        created_at = (first + step * n).isoformat()
        chunk.append(
            f"{prefix}{alias}\t{provider}\t{purpose}\t{input_tokens}\t{output_tokens}\t"
            f"{multiplier // 10000}.{multiplier % 10000:04d}\t2026-02-20\t"
            f"{units // 10000}.{units % 10000:04d}\t{metered}\t{50 + n % 900}\t{created_at}\n"
        )
        if len(chunk) == 50_000:
            yield "".join(chunk)
            chunk = []
    if chunk:
        yield "".join(chunk)


def seed(url: str, *, rows: int) -> float:
    """Fill a migrated, empty database: users, one room and turn each, `rows` events. Seconds taken."""
    import psycopg

    started = time.perf_counter()
    users = max(10, rows // 1000)
    with psycopg.connect(conninfo(url)) as conn:
        # The rows are valid by construction; skipping the per-row FK triggers makes COPY fast.
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '256MB'")
        owners = conn.execute(
            "WITH u AS (INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) SELECT '!', false, 'bench-usage-' || n, '', '', '', "
            "false, true, now() FROM generate_series(1, %s) n RETURNING id), "
            "r AS (INSERT INTO chat_room (owner_id, title, agents, created_at, updated_at) "
            "SELECT id, 'usage bench', '[\"gpt-4o\"]', now(), now() FROM u RETURNING id, owner_id) "
            "INSERT INTO chat_turn (room_id, user_id, content, credits_burned, created_at) "
            "SELECT id, owner_id, 'usage bench', 0, now() FROM r RETURNING user_id, room_id, id",
            [users],
        ).fetchall()
        owners.sort()
        heavy, others = owners[0], owners[1:]
        # Secondary indexes are rebuilt once after the load: far faster than 1M incremental inserts.
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE %s",
            [EVENTS_TABLE, "%_pkey"],
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        columns = (
            "user_id, room_id, turn_id, model_alias, provider_model, purpose, input_tokens, output_tokens, "
            "multiplier, pricing_version, credits_burned, metered, latency_ms, created_at"
        )
        with conn.cursor().copy(f"COPY {EVENTS_TABLE} ({columns}) FROM STDIN") as copy:
            for block in _event_lines(rows=rows, owners=others, heavy=heavy):
                copy.write(block)
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute(
            f"CREATE TABLE {MARKER} (rows bigint NOT NULL, heavy_user_id bigint NOT NULL, "
            "newest timestamptz NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            f"INSERT INTO {MARKER} (rows, heavy_user_id, newest) VALUES (%s, %s, %s)",
            [rows, heavy[0], NEWEST],
        )
        conn.commit()
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        # Statistics and the visibility map, as autovacuum leaves a table in steady state.
        conn.execute(f"VACUUM (ANALYZE) {EVENTS_TABLE}")
        conn.execute("ANALYZE")
    return time.perf_counter() - started


def prepare(url: str, *, rows: int, reseed: bool) -> str:
    """Make sure `url` holds exactly `rows` seeded events; return what was done."""
    ensure_database(url)
    if not reseed and _marker_rows(url) == rows:
        _migrate(url)  # a migration added since (an index, say) still applies
        return "reused"
    _recreate_database(url)
    _migrate(url)
    return f"seeded in {seed(url, rows=rows):.1f}s"


# --- measuring ------------------------------------------------------------------------


@dataclass
class Scale:
    label: str
    alias: str
    user: object
    newest: datetime
    deep_cursor: str


def _scale(label: str, alias: str) -> Scale:
    from django.contrib.auth import get_user_model
    from django.db import connections

    from billing.api import pagination
    from billing.api.views import UsageListView
    from billing.selectors import usage_queryset

    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT heavy_user_id, rows, newest FROM {MARKER}")
        heavy_id, rows, newest = cursor.fetchone()
    user = get_user_model().objects.using(alias).get(pk=heavy_id)
    depth = int(rows / HEAVY_SHARE * DEEP_FRACTION) - 1  # 0-based: the cursor sits after this row
    position = usage_queryset(user=user).using(alias).order_by("-created_at", "-id")[depth]
    # What the API puts in a `next` link after showing this row.
    cursor = UsageListView.cursors.encode(user_id=user.pk, direction=pagination.NEXT, row=position)
    return Scale(label=label, alias=alias, user=user, newest=newest, deep_cursor=cursor)


def _reads(scale: Scale) -> dict[str, tuple[str, dict]]:
    iso = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731
    return {
        "first page": ("list", {}),
        "deep page (75% deep)": ("list", {"cursor": scale.deep_cursor}),
        "filtered page": (
            "list",
            {
                "model_alias": "gpt-4o",
                "since": iso(scale.newest - timedelta(days=150)),
                "until": iso(scale.newest - timedelta(days=30)),
                "page_size": "10",
            },
        ),
        "30-day summary": ("summary", {"since": (scale.newest - timedelta(days=29)).date().isoformat()}),
    }


def _call(scale: Scale, kind: str, params: dict):
    from rest_framework.test import APIRequestFactory, force_authenticate

    from billing.api.views import UsageListView, UsageSummaryView

    view, path = {
        "list": (UsageListView.as_view(), "/api/v1/users/me/usage"),
        "summary": (UsageSummaryView.as_view(), "/api/v1/users/me/usage/summary"),
    }[kind]
    request = APIRequestFactory().get(path, params)
    force_authenticate(request, user=scale.user)
    response = view(request)
    response.render()  # JSON rendering is part of the read
    if response.status_code != 200:
        raise RuntimeError(f"{path} {params} answered {response.status_code}: {response.content[:300]!r}")
    return response


_WRAPPERS: dict = {}


def _use(alias: str) -> None:
    """Point the default connection (used by the views) at one scale's database.

    Each database keeps its own open connection (its wrapper is remembered the
    first time), so switching costs nothing and no timed call pays a connect.
    """
    from django.db import connections

    if not _WRAPPERS:
        _WRAPPERS.update({name: connections[name] for name in ("default", "usage_1k")})
    connections["default"] = _WRAPPERS[alias]


def _size(response) -> int:
    data = response.data
    return len(data["results"])


def _explain(scale: Scale, kind: str, params: dict) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement the view sends; returns the plans."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _use(scale.alias)
    with CaptureQueriesContext(connection) as captured:
        _call(scale, kind, params)
    plans = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            if EVENTS_TABLE not in query["sql"]:
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            plans.append("\n".join(line for (line,) in cursor.fetchall()))
    return plans


def _uses_index(plan: str) -> bool:
    return f"Seq Scan on {EVENTS_TABLE}" not in plan and any(
        node in plan for node in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
    )


def measure(*, repeat: int = REPEAT, show_plans: bool = False) -> dict:
    scales = [_scale("1k", "usage_1k"), _scale("1M", "default")]
    reads = {scale.label: _reads(scale) for scale in scales}
    names = list(reads["1k"])
    timings: dict[tuple[str, str], list[float]] = {(s.label, n): [] for s in scales for n in names}
    sizes: dict[tuple[str, str], int] = {}
    for number in range(WARMUP + repeat):
        # Interleaved: both scales see the same moments of a busy machine.
        for scale in scales if number % 2 == 0 else scales[::-1]:
            _use(scale.alias)
            for name in names:
                kind, params = reads[scale.label][name]
                started = time.perf_counter()
                response = _call(scale, kind, params)
                elapsed = (time.perf_counter() - started) * 1000
                if number >= WARMUP:
                    timings[(scale.label, name)].append(elapsed)
                sizes[(scale.label, name)] = _size(response)
    plans = {}
    big = scales[1]
    for name in names:
        kind, params = reads["1M"][name]
        plans[name] = _explain(big, kind, params)
    _use("default")
    if show_plans:
        for name, found in plans.items():
            for plan in found:
                print(f"--- EXPLAIN at 1M: {name}\n{plan}\n")
    return {"names": names, "timings": timings, "sizes": sizes, "plans": plans}


def _plan_summary(plan: str) -> str:
    """The scan nodes of a plan and its execution time, on one line."""
    nodes = [
        line.strip().lstrip("-> ").split("  (")[0]
        for line in plan.splitlines()
        if "Scan" in line and "(" in line
    ]
    executed = next((line.strip() for line in plan.splitlines() if line.startswith("Execution Time")), "")
    return f"{'; '.join(nodes)} [{executed}]"


def run(*, repeat: int = REPEAT, reseed: bool | None = None, show_plans: bool = False) -> list[dict]:
    if reseed is None:
        reseed = os.environ.get("BENCH_RESEED", "") not in ("", "0", "false")
    base = database_url()
    big_url = with_database_name(base, f"{database_name(base)}_usage_1m")
    small_url = with_database_name(base, f"{database_name(base)}_usage_1k")
    prepared = {
        "1k": prepare(small_url, rows=SMALL_ROWS, reseed=reseed),
        "1M": prepare(big_url, rows=BIG_ROWS, reseed=reseed),
    }
    # No pool: the two databases are switched under one alias, each connection kept open.
    setup_django(big_url, pool=False, migrate=False, extra_databases={"usage_1k": small_url})
    found = measure(repeat=repeat, show_plans=show_plans)
    results = []
    for name in found["names"]:
        small = percentile(found["timings"][("1k", name)], 0.95)
        big = percentile(found["timings"][("1M", name)], 0.95)
        rows_shown = (found["sizes"][("1k", name)], found["sizes"][("1M", name)])
        is_list = name != "30-day summary"
        indexed = all(_uses_index(plan) for plan in found["plans"][name])
        note = f"rows in page {rows_shown[0]}/{rows_shown[1]}; 1M plan: " + " | ".join(
            _plan_summary(plan) for plan in found["plans"][name]
        )
        results.append(
            row(
                measure=f"usage {name}: p95 at 1M vs 1k",
                figure=round(big, 2),
                baseline=round(small, 2),
                unit="ms",
                ratio=big / small,
                goal="≤ 1.5, index" if is_list else "report, index",
                ok=(big / small <= GOAL_RATIO and indexed) if is_list else indexed,
                note=note,
            )
        )
        if is_list and rows_shown[0] != rows_shown[1]:
            raise RuntimeError(f"{name}: pages differ in size ({rows_shown}); the comparison would be unfair")
    results.append(
        row(
            measure="usage data set (1M / 1k events)",
            figure=BIG_ROWS,
            baseline=SMALL_ROWS,
            unit="rows",
            ratio=None,
            goal="report",
            ok=None,
            note=f"1M: {prepared['1M']}; 1k: {prepared['1k']}; heavy user 20%; {repeat} reps, p95",
        )
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=REPEAT, help="timed calls per read and scale")
    parser.add_argument("--reseed", action="store_true", help="drop and seed both databases again")
    parser.add_argument("--plans", action="store_true", help="print the full EXPLAIN output")
    args = parser.parse_args()
    results = run(repeat=args.repeat, reseed=args.reseed or None, show_plans=args.plans)
    for result in results:
        ratio = "" if result["ratio"] is None else f"ratio {result['ratio']:.3f}"
        figures = f"{result['figure']:>9} vs {result['baseline']:>7} {result['unit']:<4}"
        print(f"{result['measure']:<44} {figures} {ratio}")
        print(f"    {result['note']}")
    return 0 if all(result["pass"] is not False for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
