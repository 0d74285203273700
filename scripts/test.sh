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

# The PostgreSQL store's tests (conformance, several nodes, two `rota serve`
# nodes) need a server. This kind of machine runs one at 127.0.0.1:5432 with
# trust auth and a database `test`; elsewhere point ROTA_TEST_POSTGRES at one
# (README "Running the tests"). Without it the suite fails here, loudly:
# those tests never skip.
export ROTA_TEST_POSTGRES="${ROTA_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
if ! command -v psql >/dev/null; then
  echo "installing postgresql-client (Debian) to check the test database"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql-client >/dev/null
fi
if ! psql "$ROTA_TEST_POSTGRES" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  # A local cluster that is installed but stopped is started.
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
    sleep 2
  fi
fi
if ! psql "$ROTA_TEST_POSTGRES" -Atqc 'SELECT 1' >/dev/null; then
  echo "error: PostgreSQL is not reachable at ${ROTA_TEST_POSTGRES%%\?*};" >&2
  echo "the PostgreSQL store tests need it: start one, or set ROTA_TEST_POSTGRES (README \"Running the tests\")" >&2
  exit 1
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo nextest"
cargo nextest run --workspace --locked --no-fail-fast
