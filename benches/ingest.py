#!/usr/bin/env python3
"""Ingest benchmark: rota ingest into SQLite, side by side in one run with the
decode-only floor (the best reader for the format, doing nothing else) and a
Python reader.

Usage:
  python3 benches/ingest.py DATA [--runs N] [--keep] [--path P]

DATA is a .csv, .csv.gz, .parquet, .xlsx, .ods, .xls, .avro, .arrow (Arrow
IPC file), .arrows (Arrow IPC stream), .msgpack, .ndjson, .json, .xml, .yaml
or .toml file. Make them with the shared generator (10M rows: about 1.5 GB
of CSV, 0.5 GB of Parquet; and the first 200k rows as XLSX), then
benches/convert.py for the other formats:
  pip install numpy polars pyarrow xlsxwriter python-calamine fastavro msgpack lxml pyyaml
  python3 ../shared/bench/gen_dataset.py --out ./bench-data
  gzip -k ./bench-data/data_10m.csv                  # for the .csv.gz case
  python3 benches/ingest.py ./bench-data/data_10m.csv
  python3 benches/ingest.py ./bench-data/data_10m.parquet
  python3 benches/ingest.py ./bench-data/data_200k.xlsx
and, from the 1M-row set (gen_dataset.py --rows 1000000 --no-xlsx):
  python3 benches/convert.py ./bench-data/data_1m.parquet   # see its docstring
  python3 benches/ingest.py ./bench-data/data_1m.avro       # .arrow, .arrows, .msgpack,
  python3 benches/ingest.py ./bench-data/data_1m.ndjson     # .json, .xml likewise
  python3 benches/ingest.py ./bench-data/data_200k.yaml     # and data_200k.toml,
  python3 benches/ingest.py ./bench-data/data_200k.ods      # data_65k.xls

It builds the release binaries, then runs, for each of --runs rounds:
  floor   the format's best Rust reader alone (benches/floor.rs):
          .csv arrow-csv; .parquet the parquet crate, every row group;
          .csv.gz gzip decompression alone; .xlsx calamine's streaming cell
          reader; .ods/.xls calamine loading the sheet; .avro arrow-avro
          decoding every block (deflate inflated with flate2); .arrow/.arrows
          arrow-ipc's file/stream reader; .msgpack rmpv, value by value;
          .ndjson arrow-json; .json arrow-json over the array's elements;
          .xml quick-xml's event reader; .yaml saphyr-parser's events, the
          values skipped; .toml the toml crate
  python  .csv pyarrow.csv streaming; .parquet pyarrow.parquet row group
          batches; .csv.gz Python's gzip module reading the file; .xlsx,
          .ods, .xls python-calamine loading the sheet; .avro fastavro;
          .arrow/.arrows pyarrow.ipc; .msgpack msgpack.Unpacker; .ndjson
          pyarrow.json streaming; .json the json module; .xml
          lxml.etree.iterparse; .yaml PyYAML with CSafeLoader (libyaml);
          .toml tomllib
  json    rota ingest --batch-rows 1000 --payload json   into a fresh SQLite file
  arrow   rota ingest --batch-rows 1000 --payload arrow  into a fresh SQLite file
and prints rows/s, MB/s, peak RSS and each rate as a ratio of the floor's
(the best round of each). The SQLite files live in a temporary directory on
the same disk as the data unless --keep is given.

--path says where the records are, for XML (the record element path, as
rota's record= option; default /rows/row, the layout convert.py writes) and
TOML (the array of tables, as rota's path= option; default rows). The floor,
the Python reader and rota all get it.

Every reader counts rows, and all of them must agree: the script prints the
table, then exits with an error if rota's row count differs from the floor's
(or the Python reader's does). For .csv.gz the floor and the Python reader
count decompressed bytes instead, and only they are compared.
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


def build(target_dir, package="rota-bench", binary="rota-bench-floor"):
    """Builds rota and `package` in release mode; returns the paths of rota
    and of `binary`."""
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "rota-cli", "-p", package],
        cwd=ROOT, check=True, env={**os.environ, "CARGO_TARGET_DIR": target_dir},
    )
    rel = os.path.join(target_dir, "release")
    return os.path.join(rel, "rota"), os.path.join(rel, binary)


# Python readers, each printing its row count (bytes, for gzip); argv[1] is
# the file, argv[2] the --path.
CALAMINE = """
import sys, python_calamine as pc
sheet = pc.CalamineWorkbook.from_path(sys.argv[1]).get_sheet_by_index(0)
print(len(sheet.to_python(skip_empty_area=False)) - 1)
"""
PYTHON_PEERS = {
    "csv": ("pyarrow.csv", """
import sys, pyarrow.csv as c
n = 0
for b in c.open_csv(sys.argv[1], parse_options=c.ParseOptions(newlines_in_values=True)):
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
    "xlsx": ("python-calamine", CALAMINE),
    "ods": ("python-calamine", CALAMINE),
    "xls": ("python-calamine", CALAMINE),
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
    "avro": ("fastavro", """
import sys, fastavro
n = 0
with open(sys.argv[1], "rb") as f:
    for _ in fastavro.reader(f):
        n += 1
print(n)
"""),
    "arrow": ("pyarrow.ipc file reader", """
import sys, pyarrow as pa
n = 0
with pa.OSFile(sys.argv[1]) as f:
    r = pa.ipc.open_file(f)
    for i in range(r.num_record_batches):
        n += r.get_batch(i).num_rows
print(n)
"""),
    "arrows": ("pyarrow.ipc stream reader", """
import sys, pyarrow as pa
n = 0
with pa.OSFile(sys.argv[1]) as f:
    for b in pa.ipc.open_stream(f):
        n += b.num_rows
print(n)
"""),
    "msgpack": ("msgpack.Unpacker", """
import sys, msgpack
n = 0
with open(sys.argv[1], "rb") as f:
    for _ in msgpack.Unpacker(f, raw=False, max_buffer_size=64 << 20):
        n += 1
print(n)
"""),
    "ndjson": ("pyarrow.json", """
import sys, pyarrow.json as j
n = 0
for b in j.open_json(sys.argv[1]):
    n += b.num_rows
print(n)
"""),
    "json": ("python json", """
import sys, json
with open(sys.argv[1], "rb") as f:
    v = json.load(f)
print(len(v) if isinstance(v, list) else 1)
"""),
    # Records are the elements at the path; each is cleared once read, with
    # the siblings before it, so memory holds one record. A path ending in a
    # name lets lxml report only those elements.
    "xml": ("lxml.etree.iterparse", """
import sys
from lxml import etree
steps = sys.argv[2].strip("/").split("/")
def name_ok(step, el):
    return step == "*" or step == etree.QName(el).localname
def done(el):
    el.clear(keep_tail=True)
    while el.getprevious() is not None:
        del el.getparent()[0]
n = 0
if steps[-1] != "*":
    for _, el in etree.iterparse(sys.argv[1], events=("end",), tag=("{*}" + steps[-1], steps[-1]),
                                 huge_tree=True):
        up, ok = el, True
        for step in reversed(steps):
            if up is None or not name_ok(step, up):
                ok = False
                break
            up = up.getparent()
        if ok and up is None:
            n += 1
            done(el)
else:
    on = []
    for event, el in etree.iterparse(sys.argv[1], events=("start", "end"), huge_tree=True):
        if event == "start":
            d = len(on)
            on.append((not on or on[-1]) and d < len(steps) and name_ok(steps[d], el))
        elif on.pop() and len(on) + 1 == len(steps):
            n += 1
            done(el)
print(n)
"""),
    "yaml": ("PyYAML CSafeLoader", """
import sys, yaml
n = 0
with open(sys.argv[1], "rb") as f:
    for doc in yaml.load_all(f, Loader=yaml.CSafeLoader):
        n += len(doc) if isinstance(doc, list) else (0 if doc is None else 1)
print(n)
"""),
    "toml": ("tomllib", """
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    v = tomllib.load(f)
for k in filter(None, sys.argv[2].split(".")):
    v = v[k]
print(len(v) if isinstance(v, list) else 1)
"""),
}

# The floor's line in the table.
FLOOR_NAMES = {
    "csv": "floor: arrow-csv decode only",
    "parquet": "floor: parquet crate decode only",
    "gunzip": "floor: gzip decompression only",
    "xlsx": "floor: calamine cell reader only",
    "ods": "floor: calamine sheet load only",
    "xls": "floor: calamine sheet load only",
    "avro": "floor: arrow-avro decode only",
    "arrow": "floor: arrow-ipc file reader only",
    "arrows": "floor: arrow-ipc stream reader only",
    "msgpack": "floor: rmpv value reader only",
    "ndjson": "floor: arrow-json decode only",
    "json": "floor: arrow-json decode only",
    "xml": "floor: quick-xml event reader only",
    "yaml": "floor: saphyr-parser event parse only",
    "toml": "floor: toml crate parse only",
}

# The default --path of the kinds that take one.
DEFAULT_PATHS = {"xml": "/rows/row", "toml": "rows"}

# Extensions, longest first: .csv.gz before .csv.
EXTENSIONS = [
    (".csv.gz", "gunzip"), (".parquet", "parquet"), (".csv", "csv"), (".xlsx", "xlsx"),
    (".ods", "ods"), (".xls", "xls"), (".avro", "avro"), (".arrows", "arrows"),
    (".arrow", "arrow"), (".msgpack", "msgpack"), (".mpk", "msgpack"), (".ndjson", "ndjson"),
    (".jsonl", "ndjson"), (".json", "json"), (".xml", "xml"), (".yaml", "yaml"),
    (".yml", "yaml"), (".toml", "toml"),
]


def kind_of(path):
    """The floor mode for a data file, from its name."""
    for ext, kind in EXTENSIONS:
        if path.endswith(ext):
            return kind
    sys.exit(f"{path}: expected one of {', '.join(e for e, _ in EXTENSIONS)}")


def rota_options(kind, path):
    """The format options rota ingest needs to find the records."""
    if kind == "xml":
        return ["--format-opt", f"record={path}"]
    if kind == "toml":
        return ["--format-opt", f"path={path}"]
    return []


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
    ap.add_argument("--path", help="XML record path (default /rows/row) or TOML array of tables (default rows)")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    a = ap.parse_args()

    kind = kind_of(a.data)
    if a.path is not None and kind not in DEFAULT_PATHS:
        sys.exit("--path applies to .xml and .toml files only")
    path = a.path if a.path is not None else DEFAULT_PATHS.get(kind)
    path_args = [path] if path is not None else []
    rota, floor = build(a.target_dir)
    size = os.path.getsize(a.data)
    work = tempfile.mkdtemp(prefix="rota-bench-", dir=os.path.dirname(os.path.abspath(a.data)))
    best = {}
    stored = {}
    mismatches = []
    try:
        for run in range(a.runs):
            wall, rss, out = timed([floor, kind, a.data] + path_args)
            floor_rows = json.loads(out)["rows"]
            results = [(FLOOR_NAMES[kind], wall, rss, floor_rows, None)]
            peer, script = PYTHON_PEERS[kind]
            wall, rss, out = timed([sys.executable, "-c", script, a.data] + path_args)
            results.append((f"python: {peer}", wall, rss, int(out), None))
            for payload in ("json", "arrow"):
                db = os.path.join(work, f"{payload}-{run}.db")
                wall, rss, out = timed([rota, "--store", db, "ingest", a.data, "--spec", "bench",
                                        "--batch-rows", "1000", "--payload", payload, "--json", "--quiet"]
                                       + rota_options(kind, path),
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
                # For gzip the floor and the python reader count bytes, rota rows.
                if rows != floor_rows and not (kind == "gunzip" and tasks is not None):
                    mismatches.append(f"run {run + 1}: {name} counted {rows} rows, the floor {floor_rows}")
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, rss, rows, tasks)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    floor_wall = None
    print(f"file: {a.data} ({size / 1e6:.1f} MB), best of {a.runs} run(s), {os.cpu_count()} cores")
    if path is not None:
        print(f"records at: {path}")
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
    if mismatches:
        sys.exit("row counts disagree:\n  " + "\n  ".join(mismatches))


if __name__ == "__main__":
    main()
