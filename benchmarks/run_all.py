"""Run every benchmark and print one table: measure | figure | baseline | ratio | goal | pass.

Each measure runs in its own Python process (each sets Django up on its own
database), one after the other, and hands its rows back as JSON. Every figure
is compared with a baseline measured in the same run on the same machine.

    .venv/bin/python benchmarks/run_all.py [--only ledger,usage_history] [--markdown] [--json out.json]

Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/pantheon_bench;
the usage history adds `_usage_1k` and `_usage_1m` databases next to it, seeded
once and reused; real_latency uses `_latency`), BENCH_RESEED=1 to seed the usage
databases again.
Exits 1 when any goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _support import ROOT, database_url, load_average, row

HERE = Path(__file__).resolve().parent
MEASURES = ["ledger", "queries_per_turn", "turn_http", "usage_history", "propagation", "real_latency"]


def _ledger_rows(results: list[dict]) -> list[dict]:
    """benchmarks/ledger.py reports in its own shape; put it in the table's."""
    return [
        row(
            measure=f"ledger debit, {result['scenario']}: service vs psycopg floor",
            figure=result["service_ops_s"],
            baseline=result["floor_ops_s"],
            unit="ops/s",
            ratio=result["ratio"],
            goal=f"≥ {result['goal_ratio']}, 0 lost",
            ok=result["ok"],
            note=(
                f"{result['threads']} threads × {result['ops_per_thread']} debits, median of "
                f"{result['repeat']}; lost updates: {result['lost_updates']}"
            ),
        )
        for result in results
    ]


def _child(name: str, out: str) -> None:
    """Inside the child process: run one measure and write its rows to `out`."""
    module = __import__(name)
    results = module.run()
    if name == "ledger":
        results = _ledger_rows(results)
    Path(out).write_text(json.dumps(results))


def _run_one(name: str) -> tuple[list[dict], float]:
    with tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".json", delete=False) as handle:
        out = handle.name
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", name, "--out", out],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(HERE)},
            check=False,
        )
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            failed = row(
                measure=f"{name}: crashed (exit {completed.returncode})",
                figure="-",
                baseline=None,
                unit="",
                ratio=None,
                goal="runs",
                ok=False,
                note="see the output above",
            )
            return [failed], seconds
        return json.loads(Path(out).read_text()), seconds
    finally:
        Path(out).unlink(missing_ok=True)


def _cell(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        value = f"{value:,.2f}" if value < 100 else f"{value:,.1f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value} {unit}".strip()


def _verdict(result: dict) -> str:
    return {True: "PASS", False: "MISS", None: "info"}[result["pass"]]


def _lines(results: list[dict]) -> list[list[str]]:
    return [
        [
            result["measure"],
            _cell(result["figure"], result["unit"]),
            _cell(result["baseline"], result["unit"]),
            _cell(result["ratio"]),
            result["goal"],
            _verdict(result),
        ]
        for result in results
    ]


HEADER = ["measure", "figure", "baseline", "ratio", "goal", "pass"]


def print_table(results: list[dict]) -> None:
    lines = [HEADER, *_lines(results)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADER))]
    for number, line in enumerate(lines):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if number == 0:
            print("-+-".join("-" * width for width in widths))


def print_markdown(results: list[dict]) -> None:
    print("| " + " | ".join(HEADER) + " |")
    print("|---|---:|---:|---:|---|---|")
    for line in _lines(results):
        print("| " + " | ".join(line) + " |")


def _machine() -> str:
    memory = "?"
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores, {memory} RAM, {system}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(MEASURES)}")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", default="", help="also write every row (with notes) to this file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.out)
        return 0

    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or MEASURES
    unknown = set(chosen) - set(MEASURES)
    if unknown:
        parser.error(f"unknown measure(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    load_before = load_average()
    print(f"# benchmarks on {database_url()} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# machine: {_machine()}; load average before: {load_before}", flush=True)
    results: list[dict] = []
    for name in chosen:
        print(f"# running {name} …", flush=True)
        rows, seconds = _run_one(name)
        print(f"#   {name} took {seconds:.0f}s", flush=True)
        results.extend(rows)
    total = time.perf_counter() - started
    print()
    print_table(results)
    print()
    for result in results:
        if result["note"]:
            print(f"- {result['measure']}: {result['note']}")
    print(f"\n# total {total:.0f}s; load average before {load_before}, after {load_average()}")
    if args.markdown:
        print()
        print_markdown(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if any(result["pass"] is False for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
