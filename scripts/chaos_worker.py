#!/usr/bin/env python3
"""A worker for scripts/chaos.py: claims tasks over HTTP from one `rota serve`
node, takes a little time over each, and writes down every answer it gets,
so that the chaos run can check afterwards that no task was ever held by two
workers at once and that no task was completed twice.

Usage: chaos_worker.py URL --token T --queue Q --log FILE --name NAME
       [--lease-ms 4000] [--work-ms 40]

Each line of the log is one JSON event with a time from the system's
monotonic clock (the same in every process of the machine):
  grant  a task was claimed: task, attempt, t = when the answer came back
  ack    a heartbeat for it was accepted: t = when the request was sent
  send   its completion is about to be sent (a worker killed before the
         answer came may still have completed the task)
  done   its completion was accepted: t = when the request was sent
  lost   a heartbeat or completion was refused (the lease was gone)
  unsure a completion got no answer (it may or may not have been applied)
  fail   a request failed (node or database away); the worker tries again
A `grant` is written when its answer arrives and an `ack`/`done` with the
time its request left, so "an older attempt was accepted after a newer one
was granted" is only concluded when it certainly happened.

The result of each task is {"sha": SHA-256 of its payload, "rows": records,
"n": the payload's "n" if it has one, "w": NAME, "a": attempt}.
It runs until killed.
"""

import argparse
import hashlib
import json
import random
import time
import urllib.error
import urllib.request


class Away(Exception):
    """The node did not answer, or answered 5xx."""


def call(url, token, path, body, timeout=30):
    req = urllib.request.Request(
        url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + token},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise Away(f"HTTP {e.code}") from e
        raise
    except (OSError, ValueError) as e:  # refused, reset, timed out, cut short
        raise Away(str(e)) from e


def rows_of(task):
    text = task["payload"]
    if task["encoding"] == "json":
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    return [line for line in text.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--token", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--lease-ms", type=int, default=4000)
    ap.add_argument("--work-ms", type=float, default=40)
    a = ap.parse_args()
    log = open(a.log, "a", buffering=1)

    def event(kind, **fields):
        log.write(json.dumps({"e": kind, **fields}) + "\n")

    while True:
        try:
            claimed = call(a.url, a.token, "/work/claim",
                           {"worker": a.name, "queues": [a.queue], "limit": 2,
                            "lease_ms": a.lease_ms, "wait_ms": 1000})
        except Away as e:
            event("fail", t=time.monotonic(), what="claim", why=str(e)[:200])
            time.sleep(0.2)
            continue
        got = time.monotonic()
        for t in claimed["tasks"]:
            event("grant", task=t["task_id"], attempt=t["attempt"], t=got)
        for t in claimed["tasks"]:
            lease = {k: t[k] for k in ("task_id", "attempt", "lease_token")}
            time.sleep(a.work_ms / 1000 * random.uniform(0.5, 1.5))
            sent = time.monotonic()
            try:
                beat = call(a.url, a.token, "/work/heartbeat",
                            {"leases": [lease], "extend_ms": a.lease_ms})
            except Away as e:
                event("fail", t=sent, what="heartbeat", why=str(e)[:200])
                continue  # the lease runs out; another worker gets the task
            if not beat["results"][0]["ok"]:
                event("lost", task=t["task_id"], attempt=t["attempt"], t=sent)
                continue
            event("ack", task=t["task_id"], attempt=t["attempt"], t=sent)
            rows = rows_of(t)
            data = json.loads(t["payload"]) if t["encoding"] == "json" else None
            result = {"sha": hashlib.sha256(t["payload"].encode()).hexdigest(),
                      "rows": len(rows), "w": a.name, "a": t["attempt"]}
            if isinstance(data, dict) and "n" in data:
                result["n"] = data["n"]
            report = {"reports": [{**lease, "result": result}]}
            for _ in range(20):
                sent = time.monotonic()
                event("send", task=t["task_id"], attempt=t["attempt"], t=sent)
                try:
                    answer = call(a.url, a.token, "/work/complete", report)
                except Away as e:
                    event("unsure", task=t["task_id"], attempt=t["attempt"], t=sent,
                          why=str(e)[:200])
                    time.sleep(0.2)
                    continue
                ok = answer["results"][0]["ok"]
                event("done" if ok else "lost", task=t["task_id"], attempt=t["attempt"], t=sent)
                break


if __name__ == "__main__":
    main()
