#!/usr/bin/env python3
"""Hostile inputs: `rota ingest` on each of them must end in a clear error
naming the file and a position (or skip the bad records under
`--on-error skip`), without a panic, within a memory bound. Prints, per
input, the outcome, the first line of the error and the peak RSS.

Usage:
  python3 benches/hostile.py [--limit-mib 512] [--target-dir DIR]

Most inputs are fixtures under fixtures/*/invalid/; the 2 GB one-line CSV is
written to a temporary directory (and removed) because it is too large to
keep. Exits 1 when an input is accepted, panics, gives an error without a
position or goes past the memory limit.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (what, fixture path or None, extra ingest arguments)
CASES = [
    ("truncated gzip", "compressed/invalid/truncated.csv.gz", []),
    ("Parquet with a corrupt footer", "parquet/invalid/corrupt_footer.parquet", []),
    ("XLSX zip bomb", "xlsx/invalid/zip_bomb.xlsx", []),
    ("XLSX declaring 10^9 cells", "xlsx/invalid/huge_range.xlsx", []),
    ("billion-laughs XML", "xml/invalid/billion_laughs.xml", []),
    ("YAML alias bomb", "yaml/invalid/alias_bomb.yaml", []),
    ("2 GB CSV that is one line", None, []),
    ("binary garbage named .csv", "csv/invalid/binary.csv", []),
    ("Avro cut mid-block", "avro/invalid/truncated.avro", []),
    ("UTF-16 read as UTF-8", "csv/invalid/utf16.csv", []),
]


def one_line_csv(path, size=2 << 30):
    """A header, then one line of `size` bytes with no newline."""
    chunk = b"x" * (1 << 20)
    with open(path, "wb") as f:
        f.write(b"a,b\n")
        for _ in range(size // len(chunk)):
            f.write(chunk)


def run(rota, path, store, extra):
    cmd = ["/usr/bin/time", "-f", "ROTA_MAXRSS_KB=%M", rota, "--store", store, "ingest", path,
           "--spec", "hostile", "--quiet"] + extra
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    rss = 0
    lines = []
    for line in p.stderr.splitlines():
        if line.startswith("ROTA_MAXRSS_KB="):
            rss = int(line.split("=", 1)[1]) * 1024
        elif line.strip():
            lines.append(line)
    return p.returncode, lines, rss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-mib", type=int, default=512)
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "rota-cli"], cwd=ROOT, check=True,
                   env={**os.environ, "CARGO_TARGET_DIR": a.target_dir})
    rota = os.path.join(a.target_dir, "release", "rota")
    bad = []
    with tempfile.TemporaryDirectory(prefix="rota-hostile-") as work:
        for n, (what, fixture, extra) in enumerate(CASES):
            if fixture is None:
                path = os.path.join(work, "one-line.csv")
                one_line_csv(path)
            else:
                path = os.path.join(ROOT, "fixtures", fixture)
            code, lines, rss = run(rota, path, os.path.join(work, f"{n}.db"), extra)
            message = next((l for l in lines if l.startswith("error:")), lines[0] if lines else "")
            panicked = any("panicked" in l for l in lines)
            positioned = "byte " in message and os.path.basename(path) in message
            ok = code != 0 and not panicked and positioned and rss < a.limit_mib << 20
            if not ok:
                bad.append(what)
            print(f"{'ok ' if ok else 'BAD'} {what:32} {rss / 2**20:6.0f} MiB  {message[:150]}")
            if fixture is None:
                os.remove(path)
    if bad:
        sys.exit(f"failed: {', '.join(bad)}")


if __name__ == "__main__":
    main()
