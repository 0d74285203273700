#!/usr/bin/env bash
# The whole test suite, as CI runs it. Safe to run again and again; on a fresh
# machine it installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build output outside the checkout, so repeated runs (and fresh clones) reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rota/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# The cross-check test reads every fixture with independent Python readers;
# the FTP tests run pyftpdlib (with pyopenssl for FTPS); the server tests
# upload with tuspy (the tus project's Python client), run a worker over
# the websockets library, and check the OpenAPI document with schemathesis.
if ! python3 -c "import pyarrow, zstandard, msgpack, fastavro, cramjam, backports.zstd, openpyxl, xlrd, python_calamine, lxml, yaml, pyftpdlib, OpenSSL, tusclient, websockets, schemathesis" >/dev/null 2>&1; then
  echo "installing the cross-check's readers (pyarrow, zstandard, msgpack, fastavro with its snappy and zstd codecs, openpyxl, xlrd, python-calamine, lxml, pyyaml), the FTP test server (pyftpdlib, pyopenssl), a tus client (tuspy), websockets and schemathesis"
  python3 -m pip install --quiet pyarrow zstandard msgpack fastavro cramjam backports.zstd openpyxl xlrd python-calamine lxml pyyaml pyftpdlib pyopenssl tuspy websockets schemathesis
fi

# The remote-source tests serve files over HTTP and WebDAV with nginx (the S3
# server runs inside the tests), OpenSSH's sshd serves the SFTP tests, and
# openssl makes the FTPS server's certificates.
if ! [ -x /usr/sbin/nginx ] || ! [ -f /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ] \
  || ! [ -x /usr/sbin/sshd ] || ! command -v openssl >/dev/null; then
  echo "installing nginx-light, its WebDAV module, openssh-server and openssl (Debian) for the source tests"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nginx-light libnginx-mod-http-dav-ext openssh-server openssl >/dev/null
fi
export PATH="$PATH:/usr/sbin"

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast
