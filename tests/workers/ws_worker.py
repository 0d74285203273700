#!/usr/bin/env python3
"""A Rota worker over WebSocket, written from docs/worker-protocol.md alone,
with the `websockets` package (PyPI) and Python's standard library.

Usage: ws_worker.py URL [--token T] [--name N] [--queue Q] [--spec S]...
       [--capacity N] [--lease-ms MS] [--task-ms MS] [--idle-exit SECONDS]
       [--fail-first-attempt] [--drop-after N] [--log-text TEXT]

For each task it counts the records of the payload (JSON array or NDJSON;
fetched from payload_url when not inline) and reports {"rows": N,
"sum_id": S}. A task takes --task-ms milliseconds, during which its
progress goes out with every heartbeat (once a second, as the protocol
asks; CPU and memory included, and a log line per task). With
--fail-first-attempt each task's first attempt fails, retryably. With
--drop-after N it drops the connection, without a word, once it holds N
tasks (as a crashed worker would). With --log-text, the log lines say TEXT.
It exits once no task came for
--idle-exit seconds, or when the server closes, and prints a JSON summary.
"""
import argparse
import json
import os
import platform
import resource
import socket
import sys
import time
import urllib.request

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def records(task, base, token):
    if task.get("payload") is not None:
        text = task["payload"]
    else:
        req = urllib.request.Request(base + task["payload_url"])
        req.add_header("Rota-Lease-Token", task["lease_token"])
        if token:
            req.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read().decode()
    if task["encoding"] == "json":
        data = json.loads(text)  # a batch: an array; a plain job: its params
        return data if isinstance(data, list) else [data]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def lease(task):
    return {k: task[k] for k in ("task_id", "attempt", "lease_token")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--token")
    ap.add_argument("--name", default="python-ws")
    ap.add_argument("--queue", default="default")
    ap.add_argument("--spec", action="append", default=[])
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--lease-ms", type=int, default=3000)
    ap.add_argument("--task-ms", type=int, default=0)
    ap.add_argument("--idle-exit", type=float, default=2.0)
    ap.add_argument("--fail-first-attempt", action="store_true")
    ap.add_argument("--drop-after", type=int, default=None)
    ap.add_argument("--log-text", default=None)
    a = ap.parse_args()

    base = a.url.rstrip("/")
    headers = {"Authorization": "Bearer " + a.token} if a.token else {}
    summary = {"assigned": 0, "reports": 0, "acks": {}, "heartbeats": 0,
               "refused": [], "closed_by_server": None}
    ws = connect(base.replace("http", "ws", 1) + "/work", additional_headers=headers,
                 max_size=64 << 20)
    ws.send(json.dumps({
        "type": "register", "worker": a.name, "hostname": socket.gethostname(),
        "os": platform.system().lower(), "queues": [a.queue], "specs": a.spec,
        "capacity": a.capacity, "lease_ms": a.lease_ms, "version": "ws_worker.py 1",
    }))
    hello = json.loads(ws.recv(timeout=10))
    if hello.get("type") != "registered":
        sys.exit(f"not registered: {hello}")
    beat_every = hello["heartbeat_ms"] / 1000 / 2  # well within the second
    summary["session"] = hello["session"]

    running = {}  # task_id -> (task, started, records)
    ws.send(json.dumps({"type": "ready", "slots": a.capacity}))
    last_beat = 0.0
    last_cpu = time.process_time()
    idle_since = time.monotonic()

    def finish(task, rows):
        if a.fail_first_attempt and task["attempt"] == 1:
            report = {**lease(task), "error": "first attempts fail here", "retryable": True}
        else:
            report = {**lease(task), "result": {
                "rows": len(rows), "sum_id": sum(r.get("id", 0) for r in rows)}}
        ws.send(json.dumps({"type": "result", **report}))
        summary["reports"] += 1

    try:
        while True:
            now = time.monotonic()
            if not running and now - idle_since > a.idle_exit:
                break
            # Tasks whose time is up are reported; their slots freed.
            ended = [t for t, (task, started, _) in running.items()
                     if now - started >= a.task_ms / 1000]
            for t in ended:
                task, _, rows = running.pop(t)
                finish(task, rows)
            if ended:
                ws.send(json.dumps({"type": "ready", "slots": a.capacity - len(running)}))
            if now - last_beat >= beat_every:
                cpu = time.process_time()
                tasks, logs = [], []
                for task, started, rows in running.values():
                    done = min(1.0, (now - started) / max(a.task_ms / 1000, 1e-9))
                    tasks.append({**lease(task), "progress": {
                        "done": int(done * len(rows)), "total": len(rows)}})
                    logs.append({"task_id": task["task_id"], "level": "info",
                                 "message": a.log_text or f"{int(done * 100)}% of {task['key']}"})
                ws.send(json.dumps({
                    "type": "heartbeat",
                    "cpu": (cpu - last_cpu) / max(now - last_beat, 1e-3) if last_beat else 0.0,
                    "ram_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    "tasks": tasks, "logs": logs,
                }))
                summary["heartbeats"] += 1
                last_beat, last_cpu = now, cpu
            try:
                message = json.loads(ws.recv(timeout=0.05))
            except TimeoutError:
                continue
            kind = message["type"]
            if kind == "assign":
                task = message["task"]
                summary["assigned"] += 1
                idle_since = time.monotonic()
                running[task["task_id"]] = (task, time.monotonic(), records(task, base, a.token))
                if a.drop_after is not None and summary["assigned"] >= a.drop_after:
                    # Gone without a word: no close frame, no results.
                    ws.socket.shutdown(socket.SHUT_RDWR)
                    ws.socket.close()
                    summary["dropped"] = True
                    break
            elif kind == "heartbeat_ack":
                for item in message["tasks"]:
                    if not item["ok"] or item["cancel_requested"]:
                        running.pop(item["task_id"], None)
            elif kind == "result_ack":
                state = message.get("state") if message["ok"] else message["error"]["code"]
                summary["acks"][state] = summary["acks"].get(state, 0) + 1
                if not message["ok"]:
                    summary["refused"].append(message)
            elif kind == "shutdown":
                summary["closed_by_server"] = "shutdown"
            elif kind == "error":
                summary["refused"].append(message)
    except ConnectionClosed as e:
        summary["closed_by_server"] = summary["closed_by_server"] or str(e)
    if not summary.get("dropped"):
        try:
            ws.close()
        except Exception:  # already closed by the server
            pass
    summary["held_at_exit"] = len(running)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
