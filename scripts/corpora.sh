#!/usr/bin/env bash
# Checks `rota ingest` against the public test corpora (see docs/corpora.md):
# builds the release binary, installs the Python readers if missing, then runs
# scripts/corpora.py over CORPORA_DIR with any further arguments, e.g.
#   scripts/corpora.sh /work/shared/corpora --jobs 2 --report /tmp/corpora.json
# Not part of scripts/test.sh: the corpora are not in the repository.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: scripts/corpora.sh CORPORA_DIR [--corpus NAME]... [--jobs N] [--report OUT.json] [--verbose]" >&2
  exit 2
fi
corpora="$(realpath "$1")"
shift
cd "$(dirname "$0")/.."

# Build output outside the checkout, as scripts/test.sh does.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rota/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The readers of tests/crosscheck/crosscheck.py (the list scripts/test.sh
# installs): pyarrow for Parquet and Arrow IPC, fastavro with its codecs,
# openpyxl, xlrd and python-calamine for sheets, PyYAML for YAML cases that
# come without expected JSON.
if ! python3 -c "import pyarrow, zstandard, msgpack, fastavro, cramjam, backports.zstd, openpyxl, xlrd, python_calamine, lxml, yaml" >/dev/null 2>&1; then
  echo "installing the reference readers (pyarrow, zstandard, msgpack, fastavro, cramjam, backports.zstd, openpyxl, xlrd, python-calamine, lxml, pyyaml)"
  python3 -m pip install --quiet pyarrow zstandard msgpack fastavro cramjam backports.zstd openpyxl xlrd python-calamine lxml pyyaml
fi

cargo build --release --locked -p rota-cli
exec python3 scripts/corpora.py "$CARGO_TARGET_DIR/release/rota" "$corpora" "$@"
