#!/usr/bin/env python3
"""An interrupted tus upload of a large NDJSON file, at full size: the
upload's job must end with the tasks `rota ingest` makes of the same file,
payload for payload.

Usage:
  python3 benches/upload_resume.py DATA.ndjson [--chunk-mib M] [--stop-after N]

DATA is an NDJSON file (the issue's case is about 1 GB: the shared
generator's NDJSON of 4M rows is 1.13 GB):
  pip install numpy polars pyarrow tuspy
  python3 ../shared/bench/gen_dataset.py --rows 4000000 --no-xlsx --out ./bench-data
  python3 benches/upload_resume.py ./bench-data/data_4m.ndjson

Steps, on fresh SQLite stores:
  1. rota ingest DATA --format ndjson --batch-rows 1000 (the reference job)
  2. rota serve; tuspy (tests/workers/tus_upload.py) sends --stop-after
     chunks of --chunk-mib MiB (default 20 of 16 MiB) and stops, as if the
     client went away
  3. tuspy resumes; once the server has taken another 160 MiB it is killed
     (SIGKILL) in the middle of a PATCH, and the client with it
  4. rota serve again on the same store and upload directory; tuspy resumes
     from the offset the server reports, to the end
  5. rota worker --exec sha1sum runs every task of both jobs; the lists of
     payload digests, in task order, must be equal, and the upload's job
     must have rows/1000 tasks holding every row
It prints what each step saw and exits non-zero on any difference.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingest import build  # noqa: E402
from server import TOKEN, start_server, stop_server, wait_released  # noqa: E402

TUS = os.path.join(ROOT, "tests", "workers", "tus_upload.py")


def tus(url, data, chunk, *extra, background=False):
    cmd = [sys.executable, TUS, url, data, "--token", TOKEN, "--chunk-size", str(chunk),
           "--meta", "spec=bench", "--meta", "format=ndjson", "--meta", "max_rows=1000",
           "--meta", f"filename={os.path.basename(data)}", *extra]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def offset(upload_url):
    req = urllib.request.Request(upload_url, method="HEAD", headers={
        "Authorization": f"Bearer {TOKEN}", "Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return int(r.headers["Upload-Offset"])


def digests(rota, store, job):
    """Runs every task of `job` through sha1sum; returns the digests in
    task order."""
    subprocess.run([rota, "worker", "--exec", "sha1sum", "--concurrency", "2",
                    "--idle-exit", "2s", "--poll", "100ms", "--store", store],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = subprocess.run([rota, "tasks", "list", job, "--results", "--json",
                          "--limit", "1000000", "--store", store],
                         check=True, capture_output=True, text=True).stdout
    tasks = [json.loads(line) for line in out.splitlines() if line.strip()]
    states = {t["state"] for t in tasks}
    if states != {"succeeded"}:
        sys.exit(f"tasks of {job} ended {states}")
    return [str(t["result"]).split()[0] for t in tasks]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--stop-after", type=int, default=20)
    a = ap.parse_args()
    data = os.path.abspath(a.data)
    size = os.path.getsize(data)
    chunk = a.chunk_mib << 20
    with open(data, "rb") as f:
        rows = sum(1 for line in f if line.strip())
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/rota/target"))
    rota, _ = build(target)
    work = tempfile.mkdtemp(prefix="rota-resume-")
    try:
        ref_store = os.path.join(work, "ingest.db")
        summary = json.loads(subprocess.run(
            [rota, "ingest", data, "--spec", "bench", "--format", "ndjson", "--batch-rows",
             "1000", "--json", "--store", ref_store],
            check=True, capture_output=True, text=True).stdout)
        ref_job = summary["job_id"]
        print(f"1. rota ingest: job {ref_job}, {summary['tasks']} tasks, {summary['rows']} rows")

        store = os.path.join(work, "serve.db")
        server, url = start_server(rota, work, store)
        first = tus(url, data, chunk, "--stop-after", str(a.stop_after))
        # The path: each start of the server listens on a new port.
        upload, job = urllib.parse.urlsplit(first["url"]).path, first["job"]
        print(f"2. tuspy stopped after {a.stop_after} chunks at byte {first['offset']:,} "
              f"of {size:,} (job {job})")

        client = tus(url, data, chunk, "--resume", url + upload, background=True)
        deadline = time.monotonic() + 300
        while offset(url + upload) < first["offset"] + (160 << 20):
            if time.monotonic() > deadline or client.poll() is not None:
                sys.exit("the resumed upload did not get 160 MiB further")
            time.sleep(0.05)
        server.kill()
        server.wait()
        client.kill()
        client.wait()
        server, url = start_server(rota, work, store)
        kept = offset(url + upload)
        print(f"3. server killed mid-PATCH; after a restart the upload is at byte {kept:,}")

        last = tus(url, data, chunk, "--resume", url + upload)
        j = wait_released(url, job)
        report = j.get("ingest") or {}
        print(f"4. tuspy resumed at byte {last['resumed_at']:,} and finished; job {j['state']}, "
              f"{report.get('tasks')} tasks, {report.get('rows')} rows")
        stop_server(server)
        want_tasks = -(-rows // 1000)
        if (report.get("rows"), report.get("tasks")) != (rows, want_tasks):
            sys.exit(f"the upload's job has {report.get('rows')} rows in {report.get('tasks')} "
                     f"tasks; the file has {rows} rows, so {want_tasks} tasks")

        ref = digests(rota, ref_store, ref_job)
        got = digests(rota, store, job)
        same = sum(1 for x, y in zip(ref, got) if x == y)
        print(f"5. payload digests: {len(got)} tasks, {same} equal to rota ingest's "
              f"({len(ref)} tasks)")
        if ref != got:
            sys.exit("the upload's tasks differ from rota ingest's")
        print("every row once, in the tasks rota ingest makes")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
