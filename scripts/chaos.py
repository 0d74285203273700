#!/usr/bin/env python3
"""Chaos runs: three `rota serve` nodes on one PostgreSQL, workers on each,
and faults while they work; each run must end with nothing lost or doubled.

Usage:
  python3 scripts/chaos.py --rota target/debug/rota [--runs 20]
      [--database postgres://postgres@127.0.0.1:5432/test]
      [--cluster "15 main"] [--work DIR] [--keep]

Needs `pip install pyarrow` (for the Parquet files), `psql` and, for the
database restart, `pg_ctlcluster` run as root (Debian's postgresql-common);
everything listens on 127.0.0.1 only. Each run takes about a minute, each in
a schema of its own (dropped after a passing run unless --keep).

A run schedules, through all three nodes:
  - two batch jobs over one directory of CSV, NDJSON and Parquet files
    (different batch sizes and payload encodings), read by all nodes;
  - 300 plain jobs, each under an idempotency key, scheduled again when a
    request fails (so a fault between commit and answer must not double it);
  - two tus uploads (`rota upload`, run again until it completes).
Two HTTP workers per node (scripts/chaos_worker.py) run them, while:
  1. the node reading most files is SIGKILLed mid-ingest, then restarted;
  2. two workers holding tasks are SIGKILLed (new ones start);
  3. every connection of the nodes is terminated (pg_terminate_backend);
  4. PostgreSQL is restarted (pg_ctlcluster … restart);
  5. a transaction holds the xmin horizon for 8 s (throughput is compared
     with the 8 s before, and dead tuples counted).
Each run then checks:
  - every job succeeded; every task succeeded, with at most one accepted
    completion in the workers' logs, and its stored result is that one's
    (or, when none was seen accepted, that of a completion sent by a worker
    killed before the answer came or left unanswered);
  - no lease was honoured for an older attempt of a task after a newer
    attempt of it was granted (from every worker's timed log: at no moment
    did two workers both hold a live lease on one task);
  - each batch and upload job has exactly the tasks of a clean single-node
    run on SQLite (same keys, same row counts, same SHA-256 of every
    payload): every source row in exactly one succeeded task;
  - each plain job is one job with one task whose result names its params;
  - no node log holds a panic (nor the token).
It prints, per run and as a summary (seconds unless said):
  node_kill     from the kill until no file is held by the dead node (a
                node's claim on a file runs out 15 s after its last renewal)
  worker_kill   from the kill until the tasks the dead workers held can be
                claimed again (their leases, 3 s, ran out and were rescued)
  worker_kill_regrant  ... until another worker claimed them (they queue
                behind the work that was claimable before them)
  terminate     from pg_terminate_backend until a worker of every node had
                a request accepted again
  pg_down       how long pg_ctlcluster restart took
  pg_restart    from the database being up again until a worker of every
                node had a request accepted
  xmin_ratio    tasks completed while the xmin horizon was held, over the
                same time just before (and dead tuples before and after)
  run_s         from scheduling until every job ended
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "chaos-admin-token-0123456789abcdef"
QUEUE = "chaos"
PLAIN_JOBS = 300
FILES_PER_FORMAT = 4
ROWS_PER_FILE = 40_000
UPLOAD_ROWS = 300_000
# Made again (with the clean run) when the data set above changes.
DATA_VERSION = f"{FILES_PER_FORMAT}x{ROWS_PER_FILE}+{UPLOAD_ROWS}"
LEASE_MS = 3000
RUN_LIMIT_S = 300


class Failed(Exception):
    """A check of the run failed."""


def now():
    return time.monotonic()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": "Bearer " + TOKEN,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def http_retrying(method, url, body=None, within=90):
    """`http`, tried again while the node or its database is away."""
    end = now() + within
    while True:
        try:
            return http(method, url, body)
        except urllib.error.HTTPError as e:
            if e.code < 500 or now() > end:
                raise
        except (OSError, ValueError):
            if now() > end:
                raise
        time.sleep(0.25)


def psql(database, sql):
    out = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", database, "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise Failed(f"psql: {out.stderr.strip()}")
    return out.stdout.strip()


def psql_retrying(database, sql, within=60):
    end = now() + within
    while True:
        try:
            return psql(database, sql)
        except Failed:
            if now() > end:
                raise
            time.sleep(0.5)


# ---- data --------------------------------------------------------------------

def make_data(root):
    """The directory the batch jobs read and the files uploaded, made once."""
    data, uploads = root / "data", root / "uploads"
    if (root / "data.done").exists() and (root / "data.done").read_text() == DATA_VERSION:
        return data, uploads
    import pyarrow as pa
    import pyarrow.parquet as pq
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(uploads, ignore_errors=True)
    data.mkdir(parents=True)
    uploads.mkdir(parents=True)
    rng = random.Random(7)

    def rows(start, n):
        for i in range(start, start + n):
            yield {"id": i, "name": f"name {i}, \"quoted\"" if i % 97 == 0 else f"name {i}",
                   "amount": round(rng.uniform(-1000, 1000), 2), "flag": i % 3 == 0}

    def write_csv(path, start, n):
        with open(path, "w", newline="") as f:
            f.write("id,name,amount,flag\n")
            for r in rows(start, n):
                name = '"' + r["name"].replace('"', '""') + '"' if '"' in r["name"] else r["name"]
                f.write(f'{r["id"]},{name},{r["amount"]},{str(r["flag"]).lower()}\n')

    def write_ndjson(path, start, n):
        with open(path, "w") as f:
            for r in rows(start, n):
                f.write(json.dumps(r) + "\n")

    start = 0
    for i in range(FILES_PER_FORMAT):
        write_csv(data / f"part-{i}.csv", start, ROWS_PER_FILE)
        start += ROWS_PER_FILE
        write_ndjson(data / f"part-{i}.ndjson", start, ROWS_PER_FILE)
        start += ROWS_PER_FILE
        table = pa.Table.from_pylist(list(rows(start, ROWS_PER_FILE)))
        pq.write_table(table, data / f"part-{i}.parquet", row_group_size=10_000)
        start += ROWS_PER_FILE
    write_csv(uploads / "up.csv", start, UPLOAD_ROWS)
    write_ndjson(uploads / "up.ndjson", start + UPLOAD_ROWS, UPLOAD_ROWS)
    (root / "clean.json").unlink(missing_ok=True)
    (root / "data.done").write_text(DATA_VERSION)
    return data, uploads


# ---- processes ---------------------------------------------------------------

class Node:
    """One `rota serve` on a fixed port, restartable."""

    def __init__(self, name, rota, store, data, root):
        self.name, self.rota, self.store, self.data = name, rota, store, data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.uploads = root / f"{name}-uploads"
        self.tokens = root / "tokens"
        self.logs = []
        self.root = root
        self.proc = None
        self.id = None

    def start(self):
        log = self.root / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        self.proc = subprocess.Popen(
            [self.rota, "serve", "--listen", f"127.0.0.1:{self.port}", "--tokens", str(self.tokens),
             "--store", self.store, "--allow-source", str(self.data),
             "--upload-dir", str(self.uploads), "--upload-min-free", "1MiB"],
            stdout=open(log, "a"), stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        end = now() + 60
        while now() < end:
            if self.proc.poll() is not None:
                raise Failed(f"{self.name} exited at start:\n{log.read_text()[-3000:]}")
            found = re.search(r"node id.*?(node-[0-9a-f-]{36})", log.read_text())
            if found and "listening on" in log.read_text():
                self.id = found.group(1)
                return
            time.sleep(0.1)
        raise Failed(f"{self.name} did not start:\n{log.read_text()[-3000:]}")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                raise Failed(f"{self.name} did not stop on SIGTERM within 20 s")


class Worker:
    def __init__(self, name, node, root, work_ms):
        self.name, self.node = name, node
        self.log = root / f"worker-{name}.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "chaos_worker.py"), node.url, "--token", TOKEN,
             "--queue", QUEUE, "--log", str(self.log), "--name", name,
             "--lease-ms", str(LEASE_MS), "--work-ms", str(work_ms)],
            stdout=subprocess.DEVNULL, stderr=open(root / f"worker-{name}.err", "a"))

    def events(self):
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by SIGKILL
        return out

    def held(self):
        """Tasks granted to this worker and not finished by it (by attempt)."""
        held = {}
        for e in self.events():
            if e["e"] == "grant":
                held[e["task"]] = e["attempt"]
            elif e["e"] in ("done", "lost") and held.get(e["task"]) == e["attempt"]:
                del held[e["task"]]
        return held

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


# ---- jobs --------------------------------------------------------------------

BATCHES = {
    "batch-a": {"max_rows": 500, "payload": "json"},
    "batch-b": {"max_rows": 700, "payload": "ndjson"},
}
UPLOADS = {
    "upload-csv": ("up.csv", ["--format", "csv", "--batch-rows", "400", "--payload", "json"]),
    "upload-ndjson": ("up.ndjson", ["--format", "ndjson", "--batch-rows", "600", "--payload", "ndjson"]),
}


def schedule_batch(node, data, label, run_tag):
    body = {"spec": "chaos-batch", "queue": QUEUE, "max_attempts": 50, "retry_backoff_ms": 100,
            "idempotency_key": f"{run_tag}-{label}",
            "batch": {"source": str(data), "recursive": True, **BATCHES[label]}}
    return http_retrying("POST", node.url + "/schedule", body)["jobs"][0]["id"]


def upload(rota, node_of, uploads, label, run_tag, state_dir, stop_at, tries=None):
    """Runs `rota upload` until it completes; returns the job id. Counts the
    runs that failed (the node died, the database was away) in `tries`."""
    name, args = UPLOADS[label]
    last = ""
    while now() < stop_at:
        node = node_of()
        out = subprocess.run(
            [rota, "upload", str(uploads / name), "--server", node.url, "--spec", "chaos-upload",
             "--queue", QUEUE, "--job-key", f"{run_tag}-{label}", "--chunk-size", "64KiB",
             "--state-dir", str(state_dir), "--json", *args],
            capture_output=True, text=True, env={**os.environ, "ROTA_TOKEN": TOKEN}, timeout=120)
        if out.returncode == 0:
            return json.loads(out.stdout.strip().splitlines()[-1])["job_id"]
        if tries is not None:
            tries[label] = tries.get(label, 0) + 1
        last = out.stderr.strip()[-500:]
        time.sleep(0.5)
    raise Failed(f"{label}: the upload did not complete; rota upload said: {last}")


def tasks_of(node, job):
    out, after = {}, None
    while True:
        q = {"results": "true", "limit": "100"}
        if after:
            q["after"] = after
        page = http_retrying("GET", f"{node.url}/jobs/{job}/tasks?" + urllib.parse.urlencode(q))
        for t in page["tasks"]:
            out[t["key"]] = t
        after = page["next_after"]
        if not after:
            return out


def wait_jobs(node, jobs, stop_at):
    pending, seen = set(jobs), {}
    while pending and now() < stop_at:
        for job in list(pending):
            asked = now()
            state = http_retrying("GET", f"{node.url}/jobs/{job}")["state"]
            seen[job] = (state, round(now() - asked, 3))
            if state in ("succeeded", "failed", "cancelled"):
                pending.discard(job)
        if pending:
            time.sleep(0.5)
    if pending:
        raise Failed(f"{len(pending)} jobs not finished in time, e.g. (state, seconds to answer) "
                     f"{[(j, seen.get(j)) for j in sorted(pending)[:3]]}")


def summary_of(node, job):
    """Key -> (state, rows, payload SHA-256) of a job's tasks."""
    out = {}
    for key, t in tasks_of(node, job).items():
        result = json.loads(t["result"]) if t["result"] else {}
        out[key] = (t["state"], t["rows"], result.get("sha"))
    return out


# ---- a clean run -------------------------------------------------------------

def clean_run(args, root, data, uploads):
    """The batch and upload jobs on one node and SQLite, no faults."""
    saved = root / "clean.json"
    if saved.exists():
        return json.loads(saved.read_text())
    work = root / "clean"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "tokens").write_text(f"{TOKEN} admin\n")
    node = Node("clean", args.rota, str(work / "rota.db"), data, work)
    node.start()
    workers = [Worker(f"clean-{i}", node, work, 0) for i in range(2)]
    try:
        jobs = {label: schedule_batch(node, data, label, "clean") for label in BATCHES}
        for label in UPLOADS:
            jobs[label] = upload(args.rota, lambda: node, uploads, label, "clean",
                                 work / "upload-state", now() + 120)
        wait_jobs(node, jobs.values(), now() + 600)
        out = {label: summary_of(node, job) for label, job in jobs.items()}
    finally:
        for w in workers:
            w.kill()
        node.stop()
    for label, tasks in out.items():
        bad = [k for k, v in tasks.items() if v[0] != "succeeded"]
        if bad or not tasks:
            raise Failed(f"the clean run's {label} has {len(bad)} unfinished tasks of {len(tasks)}")
    saved.write_text(json.dumps(out))
    return out


# ---- one chaos run -----------------------------------------------------------

def one_run(args, root, data, uploads, clean, number):
    run_tag = f"chaos{os.getpid()}r{number}"
    work = root / run_tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "tokens").write_text(f"{TOKEN} admin\n")
    schema = run_tag
    sep = "&" if "?" in args.database else "?"
    store = f"{args.database}{sep}schema={schema}&pool_size=4"
    stop_at = now() + RUN_LIMIT_S
    nodes = [Node(f"n{i}", args.rota, store, data, work) for i in range(3)]
    workers = []
    recovery = {}
    threads = []
    errors = []

    def watch(name, since, over, what):
        """Records in recovery[name] the seconds from `since` until `over()`
        holds, asking every 100 ms on a thread of its own."""
        def loop():
            try:
                while now() < stop_at:
                    if over():
                        recovery[name] = now() - since
                        return
                    time.sleep(0.1)
                errors.append(f"{what}: not by the end of the run")
            except Exception as e:  # noqa: BLE001 - reported as the run's failure
                errors.append(f"{what}: {e}")

        thread = threading.Thread(target=loop, name=f"watching: {what}")
        thread.start()
        threads.append(thread)
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            for i in range(2):
                workers.append(Worker(f"{n.name}w{i}", n, work, args.work_ms))
        t0 = now()
        jobs = {"batch-a": schedule_batch(nodes[0], data, "batch-a", run_tag),
                "batch-b": schedule_batch(nodes[1], data, "batch-b", run_tag)}

        plain = {}

        def plain_jobs():
            rng = random.Random(number)
            for i in range(PLAIN_JOBS):
                node = rng.choice(nodes)
                body = {"spec": "chaos-plain", "queue": QUEUE, "params": {"n": i},
                        "max_attempts": 50, "retry_backoff_ms": 100,
                        "idempotency_key": f"{run_tag}-plain-{i}"}
                try:
                    plain[i] = http_retrying("POST", node.url + "/schedule", body)["jobs"][0]["id"]
                except Exception as e:  # noqa: BLE001 - reported as the run's failure
                    errors.append(f"plain job {i}: {e}")
                    return
                time.sleep(0.06)

        # Uploads go to the node the first batch job is scheduled through,
        # which reads files first and so is most often the node killed: the
        # upload then resumes on it after its restart.
        upload_node = nodes[0]
        upload_retries = {}

        def uploader(label):
            try:
                jobs[label] = upload(args.rota, lambda: upload_node, uploads, label, run_tag,
                                     work / f"state-{label}", stop_at - 60, upload_retries)
            except Exception as e:  # noqa: BLE001
                errors.append(f"{label}: {e}")

        threads = [threading.Thread(target=plain_jobs, name="plain jobs")] + [
            threading.Thread(target=uploader, args=(label,), name=label) for label in UPLOADS]
        for t in threads:
            t.start()

        # 1. A node SIGKILLed while it reads files of the batch jobs.
        victim, running = None, []
        while now() < t0 + 60 and victim is None:
            files = []
            for label in BATCHES:
                try:
                    page = http("GET", f"{nodes[2].url}/jobs/{jobs[label]}/files?limit=1000")
                except (OSError, ValueError):
                    continue
                files += [(label, f["relative"], f.get("node")) for f in page["files"]
                          if f["state"] == "running"]
            by_node = {}
            for f in files:
                by_node.setdefault(f[2], []).append(f)
            best = max((n for n in nodes if n.id in by_node), key=lambda n: len(by_node[n.id]),
                       default=None)
            if best is not None:
                victim, running = best, by_node[best.id]
            else:
                time.sleep(0.05)
        if victim is None:
            raise Failed("no node was seen reading a file: the kill could not land mid-ingest")
        dead_id = victim.id
        killed_at = now()
        victim.kill()
        recovery["node_kill_files"] = len(running)

        def taken_over():
            # None of its files is still held by the dead node.
            for label in BATCHES:
                page = http_retrying("GET", f"{nodes[2].url}/jobs/{jobs[label]}/files?limit=1000")
                if any(f["state"] == "running" and f.get("node") == dead_id
                       for f in page["files"]):
                    return False
            return True

        watch("node_kill", killed_at, taken_over, "the killed node's files taken over")
        time.sleep(1)
        victim.start()

        # 2. Two workers SIGKILLed while they hold tasks.
        killed_workers = []
        while now() < stop_at and len(killed_workers) < 2:
            for w in workers:
                if w not in killed_workers and w.proc.poll() is None and w.held():
                    w.kill()
                    killed_workers.append(w)
                    if len(killed_workers) == 2:
                        break
            time.sleep(0.05)
        workers_killed_at = now()
        held_by_killed = {}
        for w in killed_workers:
            held_by_killed.update(w.held())
            workers.append(Worker(w.name + "x", w.node, work, args.work_ms))

        def rescued():
            # No task the dead workers held is still running under their
            # attempt: its lease ran out and it can be claimed again.
            ids = ",".join(str(t) for t in held_by_killed)
            rows = psql_retrying(args.database,
                                 f"SELECT id, attempt, state FROM {schema}.tasks WHERE id IN ({ids})")
            for row in rows.splitlines():
                task, attempt, state = row.split("|")
                if state == "running" and int(attempt) <= held_by_killed[int(task)]:
                    return False
            return True

        if held_by_killed:
            watch("worker_kill", workers_killed_at, rescued, "the killed workers' tasks rescued")
        time.sleep(0.5)

        # 3. Every connection of the nodes terminated.
        terminated_at = now()
        n = psql(args.database, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                 "WHERE application_name = 'rota' AND datname = current_database()")
        recovery["terminated_backends"] = int(n)
        time.sleep(2)

        # 4. PostgreSQL restarted.
        restarted_at = now()
        out = subprocess.run(["pg_ctlcluster", *args.cluster.split(), "restart"],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise Failed(f"pg_ctlcluster restart: {out.stderr.strip()}")
        up_at = now()
        recovery["pg_down"] = up_at - restarted_at
        time.sleep(2)

        # 5. The xmin horizon held by an open transaction.
        dead_before = dead_tuples(args.database, schema)
        hold = subprocess.Popen(
            ["psql", "-X", "-q", args.database],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        hold.stdin.write("BEGIN ISOLATION LEVEL REPEATABLE READ;\nSELECT txid_current();\n"
                         f"SELECT count(*) FROM {schema}.jobs;\nSELECT pg_sleep({args.xmin_hold});\n"
                         "COMMIT;\n")
        hold.stdin.close()
        pinned_at = now()
        hold.wait(timeout=args.xmin_hold + 60)
        unpinned_at = now()
        dead_after = dead_tuples(args.database, schema)

        for t in threads:
            t.join(timeout=max(1, stop_at - now()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            errors.append(f"still running at the end of the run: {stuck}")
        if errors:
            raise Failed("; ".join(errors))
        all_jobs = list(jobs.values()) + list(plain.values())
        wait_jobs(nodes[0], all_jobs, stop_at)
        finished_at = now()

        # ---- checks ----
        events = []
        for w in workers:
            events += [{**e, "worker": w.name, "node": w.node.name} for e in w.events()]
        fencing(events)
        completions = completed_once(events)
        for label in list(BATCHES) + list(UPLOADS):
            got = summary_of(nodes[0], jobs[label])
            want = clean[label]
            if set(got) != set(want):
                raise Failed(f"{label}: {len(got)} tasks, {len(want)} in the clean run; "
                             f"missing {sorted(set(want) - set(got))[:3]}, "
                             f"extra {sorted(set(got) - set(want))[:3]}")
            for key, w in want.items():
                if list(got[key]) != list(w):
                    raise Failed(f"{label} task {key}: {got[key]}, in the clean run {w}")
            for key, t in tasks_of(nodes[0], jobs[label]).items():
                check_completion(completions, t, label)
        for i in range(PLAIN_JOBS):
            job = http_retrying("GET", f"{nodes[0].url}/jobs/{plain[i]}")
            if job["state"] != "succeeded" or job["counts"]["total"] != 1:
                raise Failed(f"plain job {i}: {job['state']}, {job['counts']}")
            result = job["result"]
            if isinstance(result, str):
                result = json.loads(result)
            if result.get("n") != i:
                raise Failed(f"plain job {i}: result {result}")
            for t in tasks_of(nodes[0], plain[i]).values():
                check_completion(completions, t, f"plain job {i}")
        count = psql(args.database, f"SELECT count(*) FROM {schema}.jobs")
        if int(count) != len(all_jobs):
            raise Failed(f"{count} jobs in the store, {len(all_jobs)} scheduled")
        regrant = []
        for task, attempt in held_by_killed.items():
            later = [e["t"] for e in events if e["e"] == "grant" and e["task"] == task
                     and e["attempt"] > attempt]
            if later:
                regrant.append(min(later) - workers_killed_at)
        recovery["worker_kill_regrant"] = max(regrant) if regrant else None
        recovery["worker_kill_tasks"] = len(held_by_killed)
        recovery["terminate"] = back_on_every_node(events, nodes, terminated_at)
        recovery["pg_restart"] = back_on_every_node(events, nodes, up_at)
        hold_s = unpinned_at - pinned_at
        during = sum(1 for e in events if e["e"] == "done" and pinned_at <= e["t"] < unpinned_at)
        before = sum(1 for e in events if e["e"] == "done" and pinned_at - hold_s <= e["t"] < pinned_at)
        recovery["xmin_ratio"] = during / before if before else None
        recovery["xmin_dead_tuples"] = [dead_before, dead_after]
        recovery["run_s"] = finished_at - t0
        recovery["upload_retries"] = sum(upload_retries.values())
        logs = "".join(log.read_text() for n in nodes for log in n.logs)
        # Uploads the killed node took up again when it restarted, and
        # runs of an upload's ingest again after a store error.
        recovery["uploads_resumed"] = logs.count("resuming an upload's ingest")
        recovery["upload_ingest_reruns"] = logs.count("the upload's ingest stopped on a store error")
        recovery["killed"] = victim.name + (" (the upload node)" if victim is upload_node else "")
        recovery["tasks"] = len(completions)
        for n in nodes:
            for log in n.logs:
                text = log.read_text()
                if "panicked" in text or TOKEN in text:
                    raise Failed(f"{log}: a panic or the token in the log")
        return recovery
    finally:
        for t in threads:
            t.join(timeout=1)
        for w in workers:
            w.kill()
        for n in nodes:
            try:
                n.stop()
            except Failed as e:
                errors.append(str(e))


def dead_tuples(database, schema):
    out = psql_retrying(database, "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
                                  f"WHERE schemaname = '{schema}'")
    return int(out)


def fencing(events):
    """No write of an attempt was accepted after a newer attempt of its task
    was granted: at no moment did two workers hold a live lease on a task."""
    granted = {}  # task -> [(time answered, attempt)]
    for e in events:
        if e["e"] == "grant":
            granted.setdefault(e["task"], []).append((e["t"], e["attempt"]))
    for e in events:
        if e["e"] in ("ack", "done"):
            for t, attempt in granted.get(e["task"], []):
                if attempt > e["attempt"] and t < e["t"]:
                    raise Failed(f"task {e['task']}: attempt {e['attempt']}'s {e['e']} by "
                                 f"{e['worker']} was accepted {e['t'] - t:.3f}s after attempt "
                                 f"{attempt} was granted")


def completed_once(events):
    """Task -> its accepted completions and those sent."""
    out = {}
    for e in events:
        if e["e"] in ("done", "send"):
            out.setdefault(e["task"], {"done": [], "send": []})[e["e"]].append(e)
    for task, c in out.items():
        if len(c["done"]) > 1:
            raise Failed(f"task {task} was completed {len(c['done'])} times: {c['done']}")
    return out


def check_completion(completions, task, label):
    if task["state"] != "succeeded":
        raise Failed(f"{label} task {task['key']}: {task['state']}")
    c = completions.get(task["id"])
    result = json.loads(task["result"])
    if c is None:
        raise Failed(f"{label} task {task['key']}: succeeded with no completion by a worker")
    if c["done"]:
        d = c["done"][0]
        if (d["worker"], d["attempt"]) != (result["w"], result["a"]):
            raise Failed(f"{label} task {task['key']}: the stored result is by {result['w']} "
                         f"attempt {result['a']}, the accepted completion {d['worker']} "
                         f"attempt {d['attempt']}")
    elif not any((u["worker"], u["attempt"]) == (result["w"], result["a"]) for u in c["send"]):
        raise Failed(f"{label} task {task['key']}: its result is from no completion sent")


def back_on_every_node(events, nodes, since):
    """Seconds from `since` until a worker of every node had a request
    accepted again (a grant, heartbeat or completion)."""
    worst = 0.0
    for n in nodes:
        times = [e["t"] for e in events
                 if e["node"] == n.name and e["e"] in ("grant", "ack", "done") and e["t"] >= since]
        if not times:
            return None
        worst = max(worst, min(times) - since)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rota", required=True, help="the rota binary")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/test")
    ap.add_argument("--cluster", default="15 main", help="pg_ctlcluster's VERSION NAME")
    ap.add_argument("--work", default="/tmp/rota-chaos")
    ap.add_argument("--work-ms", type=float, default=50, help="time a worker takes per task")
    ap.add_argument("--xmin-hold", type=float, default=8)
    ap.add_argument("--keep", action="store_true", help="keep each run's schema")
    args = ap.parse_args()
    args.rota = str(Path(args.rota).resolve())
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    data, uploads = make_data(root)
    clean = clean_run(args, root, data, uploads)
    print(f"clean run: {sum(len(v) for v in clean.values())} tasks", flush=True)
    results = []
    for number in range(1, args.runs + 1):
        started = now()
        try:
            r = one_run(args, root, data, uploads, clean, number)
        except Failed as e:
            print(f"run {number}: FAILED after {now() - started:.0f} s: {e}", flush=True)
            print(f"logs: {root}", flush=True)
            return 1
        results.append(r)
        print(f"run {number}: ok " + json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                                 for k, v in r.items()}), flush=True)
        if not args.keep:
            psql_retrying(args.database, f"DROP SCHEMA chaos{os.getpid()}r{number} CASCADE")
            shutil.rmtree(root / f"chaos{os.getpid()}r{number}", ignore_errors=True)
    print(f"{len(results)} runs passed. Recovery after each fault, seconds (min / median / max):")
    for fault in ("node_kill", "worker_kill", "worker_kill_regrant", "terminate", "pg_down",
                  "pg_restart", "xmin_ratio", "run_s"):
        values = [r[fault] for r in results if r.get(fault) is not None]
        if values:
            print(f"  {fault:12} {min(values):7.2f} {statistics.median(values):7.2f} {max(values):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
