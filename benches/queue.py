#!/usr/bin/env python3
"""Queue benchmark: claim+complete throughput of Rota's stores against
graphile-worker on the same PostgreSQL, and Rota's bulk enqueue against a raw
COPY, side by side in one run.

Usage:
  python3 benches/queue.py [--tasks N] [--workers K] [--batch B]
                           [--database URL] [--target-dir DIR]

It builds nothing; build and install first:
  CARGO_TARGET_DIR=DIR cargo build --release -p rota-bench --bin rota-bench-queue
  npm ci --prefix benches/graphile        # graphile-worker, pinned in its package.json

DIR defaults to $CARGO_TARGET_DIR, else ./target. URL is a PostgreSQL
database the runs may create and drop schemas in (default
postgres://postgres@127.0.0.1:5432/test?sslmode=disable: both Rota and
graphile-worker's node-postgres then talk to it without TLS, as node-postgres
does by default); each Rota run works in a schema of
its own (rota_bench_...), graphile-worker in graphile_worker, dropped before
and after.

In one run, each on a fresh store, with N tasks (default 200 000):
  pg drain      rota-bench-queue drain on PostgreSQL: N one-row tasks added
                and released (untimed), then K (default 8) concurrent loops
                each claiming up to B (default 64) tasks and reporting them
                all as succeeded in one call, until none is left
  sqlite drain  the same on a SQLite file in a temporary directory
  graphile      graphile-worker (benches/graphile/bench.mjs): N no-op jobs
                added (untimed), then run() with concurrency K, a local
                queue of K*B jobs and completions batched
                (completeJobBatchDelay 0), timed until no job is left
  pg enqueue    a held job, N tasks added in calls of 1 000, released; then
                a binary COPY of the same rows (tasks and payloads) into
                tables shaped like the store's, in one transaction
It prints a table of tasks/s and the ratios: PG drain / graphile, SQLite
drain / graphile, PG enqueue / COPY. It exits with an error if any run's
check fails (a task not succeeded, a count that disagrees).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAPHILE = os.path.join(ROOT, "benches", "graphile")


def run_json(name, cmd, cwd=ROOT):
    """Runs `cmd`, echoes its output, and returns the JSON object its last
    line holds (or None when it failed)."""
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    for line in lines[:-1]:
        print("   " + line)
    if p.stderr.strip():
        for line in p.stderr.strip().splitlines():
            print("   (stderr) " + line)
    print(f"   [{time.monotonic() - start:.1f}s wall]", flush=True)
    if p.returncode != 0 or not lines:
        print(f"   {name} failed (exit {p.returncode})", flush=True)
        if lines:
            print("   " + lines[-1])
        return None
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        print(f"   {name}: no JSON on its last line: {lines[-1]}")
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    a = ap.parse_args()

    bench = os.path.join(a.target_dir, "release", "rota-bench-queue")
    if not os.access(bench, os.X_OK):
        sys.exit(f"{bench} is missing: build it with\n"
                 f"  CARGO_TARGET_DIR={a.target_dir} cargo build --release -p rota-bench --bin rota-bench-queue")
    if not os.path.isdir(os.path.join(GRAPHILE, "node_modules", "graphile-worker")):
        sys.exit("graphile-worker is not installed: npm ci --prefix benches/graphile")
    node = shutil.which("node")
    if node is None:
        sys.exit("node is not on PATH")

    sizes = ["--tasks", str(a.tasks), "--workers", str(a.workers), "--batch", str(a.batch)]
    results = {}
    work = tempfile.mkdtemp(prefix="rota-bench-queue-")
    try:
        results["pg drain"] = run_json("pg drain", [bench, "drain", "--store", a.database] + sizes)
        results["sqlite drain"] = run_json(
            "sqlite drain", [bench, "drain", "--store", os.path.join(work, "queue.db")] + sizes)
        results["graphile"] = run_json("graphile", [
            node, os.path.join(GRAPHILE, "bench.mjs"), "--database", a.database,
            "--jobs", str(a.tasks), "--concurrency", str(a.workers),
            "--local-queue", str(a.workers * a.batch), "--batch-delay", "0",
        ], cwd=GRAPHILE)
        results["pg enqueue"] = run_json(
            "pg enqueue", [bench, "enqueue", "--store", a.database, "--tasks", str(a.tasks)])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(name, key="tasks_per_sec"):
        r = results.get(name)
        return r.get(key) if r else None

    def fmt(x, digits=0):
        return "-" if x is None else f"{x:,.{digits}f}"

    def ratio(x, y):
        return None if x is None or not y else x / y

    print()
    print(f"{a.tasks:,} tasks; {a.workers} claim loops of {a.batch} (graphile: concurrency {a.workers}, "
          f"localQueue {a.workers * a.batch}, completeJobBatchDelay 0)")
    rows = [
        ("Rota PostgreSQL drain", rate("pg drain"), (results.get("pg drain") or {}).get("seconds")),
        ("Rota SQLite drain", rate("sqlite drain"), (results.get("sqlite drain") or {}).get("seconds")),
        ("graphile-worker", rate("graphile", "jobs_per_sec"), (results.get("graphile") or {}).get("seconds")),
        ("Rota PostgreSQL enqueue", rate("pg enqueue"), (results.get("pg enqueue") or {}).get("seconds")),
        ("  adding alone", rate("pg enqueue", "add_tasks_per_sec"),
         (results.get("pg enqueue") or {}).get("add_seconds")),
        ("COPY (binary) floor", rate("pg enqueue", "copy_rows_per_sec"),
         (results.get("pg enqueue") or {}).get("copy_seconds")),
    ]
    print(f"{'':<26}{'tasks/s':>12}{'seconds':>10}")
    for name, r, secs in rows:
        print(f"{name:<26}{fmt(r):>12}{fmt(secs, 2):>10}")
    print()
    print(f"PG drain / graphile       {fmt(ratio(rate('pg drain'), rate('graphile', 'jobs_per_sec')), 2)}")
    print(f"SQLite drain / graphile   {fmt(ratio(rate('sqlite drain'), rate('graphile', 'jobs_per_sec')), 2)}")
    print(f"PG enqueue / COPY         {fmt(ratio(rate('pg enqueue'), rate('pg enqueue', 'copy_rows_per_sec')), 3)}"
          f"   (adding alone {fmt(ratio(rate('pg enqueue', 'add_tasks_per_sec'), rate('pg enqueue', 'copy_rows_per_sec')), 3)})")

    failed = [name for name, r in results.items()
              if r is None or r.get("ok") is False or (name == "graphile" and r.get("succeeded") != a.tasks)]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
