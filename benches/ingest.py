#!/usr/bin/env python3
"""Ingest benchmark: rota ingest into SQLite, side by side in one run with the
decode-only floor (the best reader for the format, doing nothing else) and a
Python reader.

Usage:
  python3 benches/ingest.py DATA [--runs N] [--keep]

DATA is a .csv, .csv.gz, .parquet or .xlsx file. Make them with the shared
generator (10M rows: about 1.5 GB of CSV, 0.5 GB of Parquet; and the first
200k rows as XLSX):
  pip install numpy polars pyarrow xlsxwriter python-calamine
  python3 ../shared/bench/gen_dataset.py --out ./bench-data
  gzip -k ./bench-data/data_10m.csv                  # for the .csv.gz case
  python3 benches/ingest.py ./bench-data/data_10m.csv
  python3 benches/ingest.py ./bench-data/data_10m.parquet
  python3 benches/ingest.py ./bench-data/data_200k.xlsx

It builds the release binaries, then runs, for each of --runs rounds:
  floor   .csv: arrow-csv decoding the file; .parquet: the parquet crate
          decoding every row group; .csv.gz: gzip decompression alone;
          .xlsx: calamine's streaming cell reader (benches/floor.rs)
  python  .csv: pyarrow.csv streaming; .parquet: pyarrow.parquet row group
          batches; .csv.gz: Python's gzip module reading the file; .xlsx:
          python-calamine loading the sheet
  json    rota ingest --batch-rows 1000 --payload json   into a fresh SQLite file
  arrow   rota ingest --batch-rows 1000 --payload arrow  into a fresh SQLite file
and prints rows/s, MB/s, peak RSS and each rate as a ratio of the floor's
(the best round of each). The SQLite files live in a temporary directory on
the same disk as the data unless --keep is given.
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


def build(target_dir):
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "rota-cli", "-p", "rota-bench"],
        cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": target_dir},
    )
    rel = os.path.join(target_dir, "release")
    return os.path.join(rel, "rota"), os.path.join(rel, "rota-bench-floor")


# Python readers, each printing its row count (bytes, for gzip).
PYTHON_PEERS = {
    "csv": ("pyarrow.csv", """
import sys, pyarrow.csv as c
n = 0
for b in c.open_csv(sys.argv[1]):
    n += b.num_rows
print(n)
"""),
    "parquet": ("pyarrow.parquet", """
import sys, pyarrow.parquet as pq
n = 0
for b in pq.ParquetFile(sys.argv[1]).iter_batches(batch_size=8192):
    n += b.num_rows
print(n)
"""),
    "xlsx": ("python-calamine", """
import sys, python_calamine as pc
sheet = pc.CalamineWorkbook.from_path(sys.argv[1]).get_sheet_by_index(0)
print(len(sheet.to_python(skip_empty_area=False)) - 1)
"""),
    "gunzip": ("python gzip", """
import sys, gzip
n = 0
with gzip.open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        n += len(b)
print(n)
"""),
}


def kind_of(path):
    """The floor mode for a data file, from its name."""
    if path.endswith(".csv.gz"):
        return "gunzip"
    if path.endswith(".parquet"):
        return "parquet"
    if path.endswith(".csv"):
        return "csv"
    if path.endswith(".xlsx"):
        return "xlsx"
    sys.exit(f"{path}: expected a .csv, .csv.gz, .parquet or .xlsx file")


def stored_bytes(db):
    """Bytes of a store on disk: the database, its WAL and its payload files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            total += os.path.getsize(db + suffix)
    for root, _, files in os.walk(db + "-payloads"):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def measure(cmd, env=None):
    """Runs cmd; returns (wall seconds, peak RSS bytes, stdout)."""
    started = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    wall = time.perf_counter() - started
    # communicate() reaped the child; its rusage is in RUSAGE_CHILDREN only as
    # a running max, so each command runs through /usr/bin/time instead.
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{err.decode(errors='replace')}")
    return wall, out, err


def timed(cmd, env=None):
    wall, out, err = measure(["/usr/bin/time", "-f", "ROTA_MAXRSS_KB=%M"] + cmd, env)
    rss_kb = 0
    for line in err.decode(errors="replace").splitlines():
        if line.startswith("ROTA_MAXRSS_KB="):
            rss_kb = int(line.split("=", 1)[1])
    return wall, rss_kb * 1024, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the SQLite files")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    a = ap.parse_args()

    kind = kind_of(a.data)
    rota, floor = build(a.target_dir)
    size = os.path.getsize(a.data)
    work = tempfile.mkdtemp(prefix="rota-bench-", dir=os.path.dirname(os.path.abspath(a.data)))
    best = {}
    stored = {}
    try:
        for run in range(a.runs):
            wall, rss, out = timed([floor, kind, a.data])
            floor_rows = json.loads(out)["rows"]
            floor_name = {
                "csv": "floor: arrow-csv decode only",
                "parquet": "floor: parquet crate decode only",
                "gunzip": "floor: gzip decompression only",
                "xlsx": "floor: calamine cell reader only",
            }[kind]
            results = [(floor_name, wall, rss, floor_rows, None)]
            peer, script = PYTHON_PEERS[kind]
            wall, rss, out = timed([sys.executable, "-c", script, a.data])
            results.append((f"python: {peer}", wall, rss, int(out), None))
            for payload in ("json", "arrow"):
                db = os.path.join(work, f"{payload}-{run}.db")
                wall, rss, out = timed([rota, "--store", db, "ingest", a.data, "--spec", "bench",
                                        "--batch-rows", "1000", "--payload", payload, "--json", "--quiet"],
                                       env={**os.environ, "ROTA_LOG": "warn"})
                summary = json.loads(out)
                results.append((f"rota ingest -> sqlite, {payload} payloads", wall, rss,
                                summary["rows"], summary["tasks"]))
                stored[payload] = stored_bytes(db)
                if not a.keep:
                    for suffix in ("", "-wal", "-shm"):
                        if os.path.exists(db + suffix):
                            os.remove(db + suffix)
                    shutil.rmtree(db + "-payloads", ignore_errors=True)
            for name, wall, rss, rows, tasks in results:
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, rss, rows, tasks)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    floor_wall = None
    print(f"file: {a.data} ({size / 1e6:.1f} MB), best of {a.runs} run(s), {os.cpu_count()} cores")
    if kind == "gunzip":
        print("(the floor and the python reader count decompressed bytes, not rows;"
              " ratios compare wall times)")
    print(f"{'':42} {'rows':>10} {'tasks':>7} {'seconds':>8} {'rows/s':>11} {'MB/s':>7} {'peak RSS':>9} {'vs floor':>8}")
    for name, (wall, rss, rows, tasks) in best.items():
        if floor_wall is None:
            floor_wall = wall
        print(f"{name:42} {rows:>10} {tasks if tasks is not None else '-':>7} {wall:>8.2f} {rows / wall:>11,.0f} "
              f"{size / wall / 1e6:>7.1f} {rss / 2**20:>6.0f} MiB {floor_wall / wall:>7.2f}x")
    for payload, n in stored.items():
        print(f"stored ({payload} payloads): {n / 1e6:,.0f} MB (database, WAL and payload files)")


if __name__ == "__main__":
    main()
