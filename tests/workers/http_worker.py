#!/usr/bin/env python3
"""A Rota worker over HTTP, written from docs/worker-protocol.md alone, with
Python's standard library only.

Usage: http_worker.py URL [--token T] [--queue Q] [--idle-exit SECONDS]
       [--fail-first-attempt]

For each task it counts the records of the payload (JSON array or NDJSON)
and reports {"rows": N, "sum_id": S} as the result, heartbeating (with a
progress of {"done": 0, "total": ROWS}) before it works. With --fail-first-attempt it reports a retryable failure on each
task's first attempt. It exits once no task came for --idle-exit seconds.
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def call(url, token, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=90) as resp:
        return json.load(resp)


def records(task):
    text = task["payload"]
    if task["encoding"] == "json":
        data = json.loads(text)  # a batch: an array; a plain job: its params
        return data if isinstance(data, list) else [data]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--token")
    ap.add_argument("--queue", default="default")
    ap.add_argument("--idle-exit", type=float, default=2.0)
    ap.add_argument("--fail-first-attempt", action="store_true")
    a = ap.parse_args()
    idle_since = time.monotonic()
    done = 0
    while time.monotonic() - idle_since < a.idle_exit:
        claimed = call(a.url, a.token, "/work/claim",
                       {"worker": "python-http", "queues": [a.queue], "limit": 4,
                        "lease_ms": 10000, "wait_ms": 500})
        tasks = claimed["tasks"]
        if not tasks:
            continue
        idle_since = time.monotonic()
        leases = [{k: t[k] for k in ("task_id", "attempt", "lease_token")} for t in tasks]
        progress = [{**lease, "progress": {"done": 0, "total": t["rows"]}}
                    for t, lease in zip(tasks, leases)]
        beat = call(a.url, a.token, "/work/heartbeat", {"leases": progress, "extend_ms": 10000})
        reports = []
        for t, lease, ack in zip(tasks, leases, beat["results"]):
            if not ack["ok"]:
                continue  # no longer ours
            if a.fail_first_attempt and t["attempt"] == 1:
                reports.append({**lease, "error": "first attempts fail here", "retryable": True})
                continue
            rows = records(t)
            reports.append({**lease, "result": {"rows": len(rows),
                                                "sum_id": sum(r.get("id", 0) for r in rows)}})
        answer = call(a.url, a.token, "/work/complete", {"reports": reports})
        for r in answer["results"]:
            if not r["ok"]:
                print("refused:", r["error"], file=sys.stderr)
        done += len(reports)
    print(json.dumps({"reports": done}))


if __name__ == "__main__":
    try:
        main()
    except urllib.error.HTTPError as e:
        sys.exit(f"HTTP {e.code}: {e.read().decode()}")
