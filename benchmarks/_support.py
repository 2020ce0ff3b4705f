"""What the benchmark scripts share: the database, Django set-up, timing and the result row.

Every measure compares a figure with a baseline measured in the same run on the
same machine, so a busy machine moves both. A result row is a dict with the
keys `run_all.py` prints: measure, figure, baseline, ratio, goal, pass.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/pantheon_bench"
# Rate limits stay on (a turn pays for its counter, as in production) but far above the load
# we generate; the counters live in Redis, the shared cache production uses.
GENEROUS_THROTTLES = {
    "THROTTLE_TURN_RATE": "1000000/minute",
    "THROTTLE_UPLOAD_RATE": "1000000/minute",
    "THROTTLE_SIGNUP_RATE": "1000000/minute",
    "THROTTLE_TOKEN_RATE": "1000000/minute",
}
REDIS_URL = "redis://127.0.0.1:6379/6"
PROVIDER_KEYS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "DEEPSEEK_API_KEY",
    "TAVILY_API_KEY",
)
SECRET_KEY = "benchmark-only-secret-key-not-for-production-0123456789"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def database_url() -> str:
    """The benchmark database: BENCH_DATABASE_URL, else DATABASE_URL, else pantheon_bench."""
    return os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_URL


def with_database_name(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def conninfo(url: str) -> str:
    """A libpq URL psycopg accepts (it does not know the `postgres://` scheme alias for every tool)."""
    return url.replace("postgres://", "postgresql://", 1)


def ensure_database(url: str) -> bool:
    """CREATE DATABASE if it does not exist; True when it was created."""
    import psycopg
    from psycopg import sql

    admin_url = with_database_name(conninfo(url), "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        name = database_name(url)
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def setup_django(
    url: str,
    *,
    pool: bool = True,
    pool_max_size: int = 12,
    migrate: bool = True,
    extra_databases: dict[str, str] | None = None,
) -> None:
    """Configure Django (production settings, plain HTTP, offline models) on `url` and migrate.

    `extra_databases` adds aliases (name → URL) with the same settings but another database.
    """
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "pantheon.settings"
    os.environ.setdefault("SECRET_KEY", SECRET_KEY)
    os.environ["DEBUG"] = "false"
    os.environ["SECURE_HTTPS"] = "false"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1,localhost,testserver"
    os.environ["DATABASE_POOL"] = "true" if pool else "false"
    os.environ["DATABASE_POOL_MAX_SIZE"] = str(pool_max_size)
    # The turn path must run on the offline model: no provider key may leak in from a .env.
    for name in PROVIDER_KEYS:
        os.environ[name] = ""
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("REDIS_URL", REDIS_URL)
    os.environ.update(GENEROUS_THROTTLES)
    ensure_database(url)

    import django
    from django.conf import settings
    from django.core.management import call_command

    for alias, extra_url in (extra_databases or {}).items():
        settings.DATABASES[alias] = {**settings.DATABASES["default"], "NAME": database_name(extra_url)}
    django.setup()
    if migrate:
        call_command("migrate", verbosity=0, interactive=False)


def server_env(url: str) -> dict[str, str]:
    """Environment for a gunicorn server of the app on the benchmark database."""
    return {
        "DATABASE_URL": url,
        "DEBUG": "false",
        "SECURE_HTTPS": "false",
        **dict.fromkeys(PROVIDER_KEYS, ""),
        "REDIS_URL": os.environ.get("REDIS_URL") or REDIS_URL,
        # The production default: a turn writes its log line.
        "LOG_LEVEL": "INFO",
        **GENEROUS_THROTTLES,
    }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a value that was measured)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def timed_ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    name: str  # the command name the kernel keeps (e.g. "postgres")
    parent: int
    cpu_seconds: float  # user + system, so far


def process_stat(pid: int) -> ProcessStat | None:
    """A process's name, parent and CPU so far, from /proc/<pid>/stat; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The name is in parentheses and may itself hold spaces or parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    return ProcessStat(
        pid=pid,
        name=stat[stat.index("(") + 1 : stat.rindex(")")],
        parent=int(fields[1]),
        cpu_seconds=(int(fields[11]) + int(fields[12])) / TICKS,
    )


def all_processes() -> Iterator[ProcessStat]:
    """Every process still there as /proc is walked."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := process_stat(int(entry.name))) is not None:
            yield found


def analyze() -> None:
    """Fresh planner statistics, as autovacuum keeps them in a steady-state database.

    A benchmark database fills in seconds, faster than autovacuum looks at it (and
    this machine's PostgreSQL runs with `autovacuum = off`): with no statistics the
    turn's history read planned a sequential scan of every message instead of an
    index scan of the last turns' (6.5 ms of PostgreSQL CPU per turn at 8,600
    messages, growing with every run). The connection is closed afterwards, so the
    benchmark process holds none while it measures the app's.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    connection.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


def row(
    *,
    measure: str,
    figure: float | int,
    baseline: float | int | None,
    unit: str,
    ratio: float | None,
    goal: str,
    ok: bool | None,
    note: str = "",
) -> dict:
    """One line of the table; `ok` None means "reported, no goal"."""
    return {
        "measure": measure,
        "figure": figure,
        "baseline": baseline,
        "unit": unit,
        "ratio": None if ratio is None else round(ratio, 3),
        "goal": goal,
        "pass": ok,
        "note": note,
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
