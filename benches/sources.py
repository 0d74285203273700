#!/usr/bin/env python3
"""Source benchmark: the same file ingested from local disk, from an S3 server,
from nginx over HTTP and WebDAV, from OpenSSH over SFTP and from pyftpdlib
over FTP, all on loopback, side by side in one run; the speed of listing a
tree of many small objects over each; and ingesting many small objects from
S3 one at a time and several at once.

Usage:
  python3 benches/sources.py DATA.csv [--runs N] [--objects N] [--small N]

DATA is any file rota ingests (the 1.5 GB CSV of the shared generator:
  python3 ../shared/bench/gen_dataset.py --out ./bench-data --no-xlsx
makes ./bench-data/data_10m.csv). The S3 servers are `rota-test-s3` (built
from tests/testkit): s3s-fs, and the same s3s protocol layer over a lean
read-only backend (s3s-fs hashes the whole object on every GET and HEAD of a
file it did not receive and walks the whole bucket for every listing page,
so its own CPU dominates on 2 cores); with --moto also moto's server (an
independent implementation in Python). HTTP and WebDAV are nginx (`apt-get install
nginx-light libnginx-mod-http-dav-ext`); SFTP is sshd (`apt-get install
openssh-server`) with a fresh key; FTP is pyftpdlib (`pip install pyftpdlib`,
tests/testkit/servers/ftpd.py). All serve the file from a hard link (or
copy) in a temporary directory beside it. Every ingest uses --payload arrow, the cheapest encoding,
so that differences between sources are not hidden behind encoding work.

It prints, per source, seconds, rows/s, MB/s, peak RSS and the rate as a
ratio of the local file's; then the time `rota ls -r` takes to list
--objects small objects (default 100,000) from disk and over each protocol;
then the time to ingest --small of them (default 10,000) from the S3 server
with --parallel 1 and --parallel 8.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from ingest import build, timed  # noqa: E402  (one way of building and timing every benchmark)

KEY, SECRET = "rota-test-key", "rota-test-secret-do-not-print"
FTP_USER, FTP_PASSWORD = "rota", "ftp-bench-pass"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"no server came up on port {port}")


def link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def start_nginx(root, work, webdav=False):
    port = free_port()
    conf = os.path.join(work, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        module = "load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;" if webdav else ""
        dav = "location / { dav_ext_methods PROPFIND OPTIONS; }" if webdav else ""
        f.write(f"""{module} daemon off; master_process off; worker_processes 1;
pid {work}/nginx.pid; error_log {work}/nginx-error.log;
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{port}; root {root}; {dav} }} }}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = subprocess.Popen([nginx, "-p", work, "-c", conf, "-e", os.path.join(work, "nginx-error.log")],
                         stdout=subprocess.DEVNULL)
    wait_for(port)
    return p, port


def start_sshd(work):
    """OpenSSH's sshd on loopback accepting a fresh key for this user; returns
    (process, port, environment for rota)."""
    port = free_port()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(work, name)],
                       check=True)
    shutil.copyfile(os.path.join(work, "client_key.pub"), os.path.join(work, "authorized_keys"))
    with open(os.path.join(work, "host_key.pub")) as f:
        host_pub = f.read()
    with open(os.path.join(work, "known_hosts"), "w") as f:
        f.write(f"[127.0.0.1]:{port} {host_pub}")
    conf = os.path.join(work, "sshd_config")
    with open(conf, "w") as f:
        f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {work}/host_key
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
PermitRootLogin yes
Subsystem sftp internal-sftp
""")
    os.makedirs("/run/sshd", exist_ok=True)
    p = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    wait_for(port)
    env = {"ROTA_SFTP_KEY": os.path.join(work, "client_key"),
           "ROTA_KNOWN_HOSTS": os.path.join(work, "known_hosts")}
    return p, port, env


def start_ftpd(root):
    """pyftpdlib (the test server's script) serving root; returns (process, port)."""
    script = os.path.join(ROOT, "tests", "testkit", "servers", "ftpd.py")
    p = subprocess.Popen([sys.executable, script, "--dir", root, "--user", FTP_USER,
                          "--password", FTP_PASSWORD], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening on "):
        sys.exit(f"the FTP server did not start: {line!r}")
    return p, int(line.split()[-1])


def start_moto(data, name, procs):
    """moto's S3 server (an independent implementation, in Python) on
    loopback, holding a copy of data in bucket `bench`; returns its port."""
    try:
        import boto3
    except ImportError:
        sys.exit("--moto needs pip install 'moto[s3]' flask flask-cors")
    port = free_port()
    procs.append(subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for(port)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    client.upload_file(data, "bench", name)
    return port


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--moto", action="store_true",
                    help="also read from moto's S3 server (pip install 'moto[s3]' flask flask-cors)")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
    a = ap.parse_args()

    rota, s3 = build(a.target_dir, "rota-testkit", "rota-test-s3")
    data = os.path.abspath(a.data)
    name = os.path.basename(data)
    size = os.path.getsize(data)
    work = tempfile.mkdtemp(prefix="rota-bench-src-", dir=os.path.dirname(data))
    procs = []
    try:
        buckets = os.path.join(work, "buckets")
        os.makedirs(os.path.join(buckets, "bench"))
        link_or_copy(data, os.path.join(buckets, "bench", name))
        port = free_port()
        procs.append(subprocess.Popen([s3, buckets, str(port), "--lean"], stdout=subprocess.DEVNULL))
        wait_for(port)
        fs_port = free_port()
        procs.append(subprocess.Popen([s3, buckets, str(fs_port)], stdout=subprocess.DEVNULL))
        wait_for(fs_port)
        moto_port = start_moto(data, name, procs) if a.moto else None
        nginx, http_port = start_nginx(os.path.join(buckets, "bench"), work)
        procs.append(nginx)
        dav, dav_port = start_nginx(os.path.join(buckets, "bench"), work, webdav=True)
        procs.append(dav)
        sshd, ssh_port, ssh_env = start_sshd(work)
        procs.append(sshd)
        ftpd, ftp_port = start_ftpd(buckets)
        procs.append(ftpd)
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        env = {**os.environ, "ROTA_LOG": "warn", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, **ssh_env}
        locations = [
            ("local file", data),
            ("s3 (lean s3s on loopback)", f"s3://bench/{name}"),
            ("s3 (s3s-fs on loopback)", ("AWS_ENDPOINT_URL", f"http://127.0.0.1:{fs_port}"), f"s3://bench/{name}"),
        ]
        if moto_port:
            locations.append(("s3 (moto on loopback)", ("AWS_ENDPOINT_URL", f"http://127.0.0.1:{moto_port}"),
                              f"s3://bench/{name}"))
        locations += [
            ("http (nginx on loopback)", f"http://127.0.0.1:{http_port}/{name}"),
            ("webdav (nginx dav-ext)", f"webdav://127.0.0.1:{dav_port}/{name}"),
            ("sftp (OpenSSH on loopback)", f"sftp://{user}@127.0.0.1:{ssh_port}{os.path.join(buckets, 'bench', name)}"),
            ("ftp (pyftpdlib on loopback)", f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{ftp_port}/bench/{name}"),
        ]
        best = {}
        for run in range(a.runs):
            for label, *override, location in locations:
                db = os.path.join(work, f"{run}.db")
                run_env = {**env, **dict(override)}
                wall, rss, out = timed([rota, "--store", db, "ingest", location, "--spec", "bench",
                                        "--batch-rows", "1000", "--payload", "arrow", "--json", "--quiet"], run_env)
                rows = json.loads(out)["rows"]
                if label not in best or wall < best[label][0]:
                    best[label] = (wall, rss, rows)
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(db + suffix):
                        os.remove(db + suffix)
                shutil.rmtree(db + "-payloads", ignore_errors=True)
        rows_seen = {v[2] for v in best.values()}
        if len(rows_seen) != 1:
            sys.exit(f"sources disagree on the row count: {best}")

        print(f"file: {a.data} ({size / 1e6:.1f} MB), best of {a.runs} run(s), {os.cpu_count()} cores, "
              "arrow payloads into SQLite")
        print(f"{'':28} {'rows':>10} {'seconds':>8} {'rows/s':>11} {'MB/s':>7} {'peak RSS':>9} {'vs local':>8}")
        local = best["local file"][0]
        for label, (wall, rss, rows) in best.items():
            print(f"{label:28} {rows:>10} {wall:>8.2f} {rows / wall:>11,.0f} {size / wall / 1e6:>7.1f} "
                  f"{rss / 2**20:>6.0f} MiB {local / wall:>7.2f}x")

        # Listing: many small objects in 100 directories.
        many = os.path.join(buckets, "many")
        for i in range(a.objects):
            d = os.path.join(many, f"d{i % 100:03}")
            if i < 100:
                os.makedirs(d)
            with open(os.path.join(d, f"o{i:07}.csv"), "w") as f:
                f.write("a\n1\n")
        print(f"listing {a.objects:,} objects in 100 directories (rota ls -r, best of {a.runs}):")
        dav_many, dav_many_port = start_nginx(buckets, work, webdav=True)
        procs.append(dav_many)
        listings = [
            ("local directory", many),
            ("s3 prefix (lean s3s)", "s3://many/"),
            ("webdav (Depth: 1)", f"webdav://127.0.0.1:{dav_many_port}/many/"),
            ("sftp", f"sftp://{user}@127.0.0.1:{ssh_port}{many}/"),
            ("ftp (MLSD)", f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{ftp_port}/many/"),
        ]
        for label, location in listings:
            walls = []
            for _ in range(a.runs):
                wall, rss, out = timed([rota, "ls", location, "-r"], env)
                n = out.count(b"\n")
                if n != a.objects:
                    sys.exit(f"{label}: listed {n} of {a.objects}")
                walls.append(wall)
            w = min(walls)
            print(f"  {label:18} {w:7.2f} s  {a.objects / w:>10,.0f} objects/s  peak RSS {rss / 2**20:.0f} MiB")

        # Many small objects: one at a time, then several at once.
        small = min(a.small, a.objects)
        print(f"ingesting {small:,} small objects from s3 (best of {a.runs}):")
        per_dir = max(a.objects // 100, 1)
        dirs = ",".join(f"d{i:03}" for i in range(-(-small // per_dir)))
        glob = f"{{{dirs}}}/*"
        results = {}
        for parallel in (1, 8):
            walls = []
            for run in range(a.runs):
                db = os.path.join(work, f"small-{parallel}-{run}.db")
                wall, rss, out = timed([rota, "--store", db, "ingest", "s3://many/", "-r", "--glob", glob,
                                        "--spec", "bench", "--parallel", str(parallel), "--json", "--quiet"], env)
                files = json.loads(out)["files"]
                walls.append(wall)
            w = min(walls)
            results[parallel] = w
            print(f"  --parallel {parallel:<2} {files:>7} files {w:7.2f} s  {files / w:>8,.0f} files/s  "
                  f"{results[1] / w:5.2f}x")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
