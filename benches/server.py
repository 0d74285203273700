#!/usr/bin/env python3
"""Server benchmark: stream batching over uploads against `rota ingest` of
the same file, and worker-protocol throughput over WebSocket and HTTP, side
by side in one run.

Usage:
  python3 benches/server.py DATA.ndjson [--runs N] [--tasks N] [--chunk-mib M]

DATA is an NDJSON file (the issue's case is about 1 GB: the shared
generator's NDJSON of 4M rows is 1.13 GB):
  pip install numpy polars pyarrow xlsxwriter tuspy websockets
  python3 ../shared/bench/gen_dataset.py --rows 4000000 --no-xlsx --out ./bench-data
  python3 benches/server.py ./bench-data/data_4m.ndjson

For each of --runs rounds, each on a fresh SQLite store:
  ingest   rota ingest DATA --format ndjson --batch-rows 1000 (until it exits)
  tus      rota serve; tuspy (the tus project's Python client) uploads DATA
           in --chunk-mib MiB chunks (default 16) with spec, format and
           max_rows=1000 in its metadata; timed from the upload's creation
           until its job is released (every task made and stored)
  stream   the same data in one chunked POST /uploads/stream (Python's
           http.client), timed the same way
Then, on a store holding --tasks (default 20 000) one-row tasks:
  ws       a no-op worker over WebSocket (`websockets`): register with
           capacity 64, answer the assigns that have arrived at once, in one
           `results` message
  http     a no-op worker over HTTP: claim 64 (long poll), complete them in
           one call, again
It prints each upload's rows/s, MB/s and the server's peak RSS, as a ratio of
rota ingest's rate (the issue asks for at least 0.7), and tasks/s for the
worker protocols. Every upload's job must have the rows and tasks of the
ingest; the script exits with an error otherwise.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingest import build, timed  # noqa: E402  (one way of building and timing every benchmark)

TOKEN = "bench-token-0123456789"


def start_server(rota, work, store):
    tokens = os.path.join(work, "tokens")
    with open(tokens, "w") as f:
        f.write(f"{TOKEN} admin\n")
    p = subprocess.Popen(
        [rota, "serve", "--listen", "127.0.0.1:0", "--tokens", tokens, "--store", store,
         "--upload-dir", os.path.join(work, "uploads")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=work)
    line = p.stdout.readline().decode().strip()
    if not line.startswith("listening on "):
        sys.exit(f"rota serve said {line!r}")
    return p, line.removeprefix("listening on ")


def stop_server(p):
    """Stops the server; returns its peak RSS in bytes."""
    with open(f"/proc/{p.pid}/status") as f:
        hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    return hwm


def api(url, method, path, body=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def wait_released(url, job):
    while True:
        j = api(url, "GET", f"/jobs/{job}")
        if j["released"] or j["state"] in ("failed", "cancelled"):
            return j
        time.sleep(0.05)


def upload_tus(url, data, chunk):
    from tusclient import client
    tus = client.TusClient(url + "/uploads", headers={"Authorization": f"Bearer {TOKEN}"})
    started = time.perf_counter()
    up = tus.uploader(data, chunk_size=chunk, metadata={
        "spec": "bench", "format": "ndjson", "max_rows": "1000",
        "filename": os.path.basename(data)})
    up.upload()
    head = urllib.request.Request(up.url, method="HEAD", headers={
        "Authorization": f"Bearer {TOKEN}", "Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(head) as r:
        job = r.headers["Rota-Job-Id"]
    j = wait_released(url, job)
    return time.perf_counter() - started, j


def upload_stream(url, data):
    host = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=600)
    started = time.perf_counter()

    def chunks():
        with open(data, "rb") as f:
            while block := f.read(1 << 20):
                yield block

    conn.request("POST", "/uploads/stream?spec=bench&format=ndjson&max_rows=1000",
                 body=chunks(), encode_chunked=True,
                 headers={"Authorization": f"Bearer {TOKEN}",
                          "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    body = r.read()
    if r.status >= 300:
        sys.exit(f"POST /uploads/stream: {r.status} {body!r}")
    # The answer comes once the ingest has ended: it is the job.
    j = wait_released(url, json.loads(body)["id"])
    return time.perf_counter() - started, j


def make_tasks(rota, work, store, n):
    csv = os.path.join(work, "tasks.csv")
    with open(csv, "w") as f:
        f.write("id\n")
        f.writelines(f"{i}\n" for i in range(1, n + 1))
    subprocess.run([rota, "ingest", csv, "--spec", "noop", "--batch-rows", "1", "--json",
                    "--store", store], check=True, stdout=subprocess.DEVNULL)


def ws_worker(url, n):
    """A no-op WebSocket worker: the assigns that have arrived answered at
    once, in one `results` message; after the acknowledgements that have
    arrived, ready again with every slot free (a worker's free slots are
    those without a task it has not reported)."""
    from websockets.sync.client import connect
    with connect(url.replace("http", "ws", 1) + "/work",
                 additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send(json.dumps({"type": "register", "worker": "bench-ws", "capacity": 64,
                            "lease_ms": 30000}))
        json.loads(ws.recv())
        started = time.perf_counter()
        ws.send(json.dumps({"type": "ready", "slots": 64}))
        done = 0
        last_beat = time.monotonic()
        while done < n:
            arrived = [json.loads(ws.recv(timeout=30))]
            while True:
                try:
                    arrived.append(json.loads(ws.recv(timeout=0)))
                except TimeoutError:
                    break
            results, acked = [], 0
            for m in arrived:
                if m["type"] == "assign":
                    t = m["task"]
                    results.append({"task_id": t["task_id"], "attempt": t["attempt"],
                                    "lease_token": t["lease_token"], "result": "ok"})
                elif m["type"] == "result_ack":
                    if not m["ok"]:
                        sys.exit(f"refused: {m}")
                    acked += 1
            if results:
                ws.send(json.dumps({"type": "results", "results": results}))
            if acked:
                done += acked
                ws.send(json.dumps({"type": "ready", "slots": 64}))
            if time.monotonic() - last_beat > 0.5:
                ws.send(json.dumps({"type": "heartbeat"}))
                last_beat = time.monotonic()
        return time.perf_counter() - started


def http_worker(url, n):
    done = 0
    started = time.perf_counter()
    while done < n:
        tasks = api(url, "POST", "/work/claim", {"worker": "bench-http", "limit": 64,
                                                 "wait_ms": 5000})["tasks"]
        if not tasks:
            sys.exit(f"no tasks after {done}")
        reports = [{"task_id": t["task_id"], "attempt": t["attempt"],
                    "lease_token": t["lease_token"], "result": "ok"} for t in tasks]
        results = api(url, "POST", "/work/complete", {"reports": reports})["results"]
        if not all(r["ok"] for r in results):
            sys.exit(f"refused: {results}")
        done += len(results)
    return time.perf_counter() - started


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--workers-only", action="store_true",
                    help="only the worker-protocol throughput (DATA is not read)")
    a = ap.parse_args()
    data = os.path.abspath(a.data)
    size = 0 if a.workers_only else os.path.getsize(data)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/rota/target"))
    rota, _ = build(target, package="rota-cli", binary="rota")

    best = {}
    rows = tasks = None
    for run in range(0 if a.workers_only else a.runs):
        with tempfile.TemporaryDirectory(dir=os.path.dirname(data)) as work:
            store = os.path.join(work, "ingest.db")
            wall, rss, out = timed([rota, "ingest", data, "--spec", "bench", "--format",
                                    "ndjson", "--batch-rows", "1000", "--json",
                                    "--store", store])
            s = json.loads(out)
            rows, tasks = s["rows"], s["tasks"]
            results = {"ingest": (wall, rss)}
            for kind in ("tus", "stream"):
                store = os.path.join(work, f"{kind}.db")
                p, url = start_server(rota, work, store)
                try:
                    if kind == "tus":
                        wall, job = upload_tus(url, data, a.chunk_mib << 20)
                    else:
                        wall, job = upload_stream(url, data)
                finally:
                    rss = stop_server(p)
                got = (job["ingest"] or {}).get("rows"), job["counts"]["total"]
                if job["state"] == "failed" or got != (rows, tasks):
                    sys.exit(f"{kind}: the job has {got} rows/tasks, rota ingest made "
                             f"{(rows, tasks)}: {job}")
                results[kind] = (wall, rss)
                shutil.rmtree(os.path.join(work, "uploads"), ignore_errors=True)
            for kind, (wall, rss) in results.items():
                if kind not in best or wall < best[kind][0]:
                    best[kind] = (wall, rss)
            print(f"round {run + 1}: " + ", ".join(f"{k} {w:.2f} s" for k, (w, _) in
                                                   results.items()), file=sys.stderr)

    with tempfile.TemporaryDirectory() as work:
        rates = {}
        for kind, worker in (("ws", ws_worker), ("http", http_worker)):
            store = os.path.join(work, f"{kind}.db")
            make_tasks(rota, work, store, a.tasks)
            p, url = start_server(rota, work, store)
            try:
                rates[kind] = a.tasks / worker(url, a.tasks)
            finally:
                stop_server(p)

    if a.workers_only:
        print(f"no-op tasks ({a.tasks:,}), one worker: WebSocket {rates['ws']:,.0f} tasks/s, "
              f"HTTP {rates['http']:,.0f} tasks/s")
        return
    base = best["ingest"][0]
    print(f"\n{os.path.basename(data)}: {rows:,} rows, {size / 1e6:,.0f} MB, {tasks:,} tasks "
          f"(best of {a.runs})\n")
    print("| run | seconds | rows/s | MB/s | peak RSS | vs ingest |")
    print("|---|---:|---:|---:|---:|---:|")
    names = {"ingest": "rota ingest (local file)", "tus": f"tus upload ({a.chunk_mib} MiB chunks)",
             "stream": "POST /uploads/stream"}
    for kind, (wall, rss) in best.items():
        print(f"| {names[kind]} | {wall:.2f} | {rows / wall:,.0f} | {size / 1e6 / wall:,.0f} | "
              f"{rss / 2**20:,.0f} MiB | {base / wall:.2f}× |")
    print(f"\nno-op tasks ({a.tasks:,}), one worker: WebSocket {rates['ws']:,.0f} tasks/s, "
          f"HTTP {rates['http']:,.0f} tasks/s (claim 64, complete 64)")


if __name__ == "__main__":
    main()
