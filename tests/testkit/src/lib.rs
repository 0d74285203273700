//! Real servers on loopback for Rota's tests, shared by the crates that
//! test sources: an S3 server (s3s-fs, which checks SigV4 signatures) run
//! in-process, nginx serving a directory over HTTP with Range support, and a
//! proxy that cuts responses mid-body. A server that cannot start panics, so
//! a test without its server fails rather than skips.

pub mod lean_s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The access key id the S3 server accepts.
pub const KEY: &str = "rota-test-key";
/// The secret access key the S3 server accepts.
pub const SECRET: &str = "rota-test-secret-do-not-print";

/// `fixtures/tree/`: the tree every source serves in the conformance suite.
#[must_use]
pub fn tree_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tree")
}

/// Copies the directory `from` to `to`, recursively.
///
/// # Panics
/// On any I/O error.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read tree") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Starts an S3 server on the current tokio runtime whose buckets are the
/// directories of `root`, after copying the tree into bucket `bucket` under
/// `tree/`; it accepts [`KEY`] and [`SECRET`].
///
/// # Panics
/// When the server cannot start.
pub async fn s3_server(root: &Path) -> SocketAddr {
    copy_dir(&tree_dir(), &root.join("bucket/tree"));
    serve_s3(root, 0).await
}

/// Starts an S3 server on the current tokio runtime, on loopback `port` (0:
/// any free one), whose buckets are the directories of `root`; it accepts
/// [`KEY`] and [`SECRET`].
///
/// # Panics
/// When the server cannot start.
pub async fn serve_s3(root: &Path, port: u16) -> SocketAddr {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
    serve(fs, port).await
}

/// Starts the lean benchmark S3 server ([`lean_s3::LeanFs`]: reads and
/// listings only) on the current tokio runtime, on loopback `port` (0: any
/// free one), whose buckets are the directories of `root`; it accepts
/// [`KEY`] and [`SECRET`].
///
/// # Panics
/// When the server cannot start.
pub async fn serve_lean_s3(root: &Path, port: u16) -> SocketAddr {
    serve(lean_s3::LeanFs::new(root), port).await
}

async fn serve(backend: impl s3s::S3, port: u16) -> SocketAddr {
    let mut builder = s3s::service::S3ServiceBuilder::new(backend);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
    let service = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let http =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            // Small requests and answers, not to be held back by Nagle.
            let _ = socket.set_nodelay(true);
            let conn = http
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    addr
}

/// nginx serving a directory on a free loopback port; stopped when dropped.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago.
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts nginx serving `root`.
///
/// # Panics
/// When nginx is missing or does not start.
#[must_use]
pub fn nginx(root: &Path) -> Nginx {
    start_nginx(root, false, None)
}

/// Starts nginx serving `root` as a WebDAV server (the dav-ext module:
/// `PROPFIND` with `Depth: 0` or `1` only — `Depth: infinity` is refused —
/// and no ETags), with basic authentication when `user` is given as
/// `(name, password)`.
///
/// # Panics
/// When nginx or its dav-ext module is missing, or nginx does not start.
#[must_use]
pub fn nginx_webdav(root: &Path, user: Option<(&str, &str)>) -> Nginx {
    start_nginx(root, true, user)
}

fn start_nginx(root: &Path, webdav: bool, user: Option<(&str, &str)>) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut location = String::new();
    if webdav {
        location.push_str("dav_ext_methods PROPFIND OPTIONS;\n");
    }
    if let Some((name, password)) = user {
        let users = dir.path().join("users");
        std::fs::write(&users, format!("{name}:{{PLAIN}}{password}\n")).expect("write users");
        location.push_str(&format!(
            "auth_basic \"rota\";\nauth_basic_user_file {};\n",
            users.display()
        ));
    }
    let module = if webdav {
        "load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;\n"
    } else {
        ""
    };
    let conf = format!(
        "{module}daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
           fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
           server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
             location / {{\n{location}    }}\n  }}\n}}\n",
        d = dir.path().display(),
        root = root.display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect(
            "start nginx (apt-get install nginx-light libnginx-mod-http-dav-ext; \
             scripts/test.sh installs them)",
        );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let server = Nginx {
        child,
        addr,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not start on {addr}");
}

/// A TCP proxy to `upstream` that forwards requests whole and cuts the
/// response of its `n`-th connection after `cut(n)` bytes, if that is `Some`.
/// Returns its address and the count of connections it has taken.
///
/// # Panics
/// When it cannot bind.
pub async fn cutting_proxy(
    upstream: SocketAddr,
    cut: impl Fn(usize) -> Option<usize> + Send + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let cut = cut(n);
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = tokio::io::copy(&mut cr, &mut sw);
                let down = async {
                    let mut sent = 0usize;
                    let mut buf = vec![0u8; 8192];
                    loop {
                        let n = sr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let n = match cut {
                            Some(limit) => n.min(limit - sent),
                            None => n,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                        if cut.is_some_and(|limit| sent >= limit) {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = up => {}
                    () = down => {}
                }
            });
        }
    });
    (addr, seen)
}

/// Writes `big.bin` (12 MB, big enough to be cut mid-body) into `dir`;
/// returns its bytes.
///
/// # Panics
/// When it cannot be written.
pub fn big_file(dir: &Path) -> Vec<u8> {
    let data: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(dir.join("big.bin"), &data).expect("write big file");
    data
}

/// OpenSSH's sshd on a free loopback port with the `sftp` subsystem,
/// accepting one generated key for the user running the tests; stopped when
/// dropped.
pub struct Sshd {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The user it accepts.
    pub user: String,
    /// The private key it accepts.
    pub client_key: PathBuf,
    /// A private key it does not accept.
    pub other_key: PathBuf,
    /// A known-hosts file recording its host key.
    pub known_hosts: PathBuf,
    /// A known-hosts file recording another key for it.
    pub wrong_known_hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "rota-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

/// Starts sshd.
///
/// # Panics
/// When sshd is missing (`apt-get install openssh-server`) or does not start.
#[must_use]
pub fn sshd() -> Sshd {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // sshd's privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    keygen(&d.join("host_key"));
    let client_pub = keygen(&d.join("client_key"));
    keygen(&d.join("other_key"));
    let other_host_pub = keygen(&d.join("other_host_key"));
    std::fs::write(d.join("authorized_keys"), &client_pub).expect("authorized_keys");
    let port = free_port();
    let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
    std::fs::write(
        d.join("known_hosts"),
        format!("[127.0.0.1]:{port} {host_pub}"),
    )
    .expect("known_hosts");
    std::fs::write(
        d.join("wrong_known_hosts"),
        format!("[127.0.0.1]:{port} {other_host_pub}"),
    )
    .expect("known_hosts");
    let conf = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin yes\n\
         Subsystem sftp internal-sftp\n",
        d = d.display()
    );
    std::fs::write(d.join("sshd_config"), conf).expect("sshd_config");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd (apt-get install openssh-server; scripts/test.sh installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            String::from_utf8(
                Command::new("id")
                    .arg("-un")
                    .output()
                    .expect("id -un")
                    .stdout,
            )
            .expect("user name")
            .trim()
            .to_owned()
        });
    let server = Sshd {
        child,
        addr,
        user,
        client_key: d.join("client_key"),
        other_key: d.join("other_key"),
        known_hosts: d.join("known_hosts"),
        wrong_known_hosts: d.join("wrong_known_hosts"),
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("sshd did not start on {addr}");
}

/// The user the FTP test server accepts.
pub const FTP_USER: &str = "rota";
/// That user's password.
pub const FTP_PASSWORD: &str = "ftp-pass-do-not-print";

/// An FTP server (pyftpdlib, from `servers/ftpd.py`) serving one directory
/// on a free loopback port to [`FTP_USER`]; stopped when dropped.
pub struct Ftpd {
    child: Child,
    /// Its output, kept open while it runs.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// For an FTPS server, the PEM file of the CA that signed its certificate.
    pub ca_file: Option<PathBuf>,
    root: PathBuf,
    options: FtpdOptions,
    dir: tempfile::TempDir,
}

impl Drop for Ftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ftpd {
    /// Stops the server at once, as a crash would (its connections die).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, after [`Ftpd::kill`].
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&mut self) {
        let (child, stdout, _) =
            spawn_ftpd(&self.root, self.options, self.dir.path(), self.addr.port());
        self.child = child;
        self._stdout = stdout;
    }
}

/// How the FTP test server runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FtpdOptions {
    /// FTPS: TLS required on control and data connections, with a
    /// certificate for 127.0.0.1 and localhost signed by a CA of its own.
    pub tls: bool,
    /// Offer no `MLSD`/`MLST`, so clients must parse `LIST`.
    pub no_mlsd: bool,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a server certificate for 127.0.0.1 and localhost signed
/// by it, in `dir`: `ca.pem`, `server.pem`, `server.key`.
pub fn test_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=rota test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// Starts an FTP server serving `root`.
///
/// # Panics
/// When Python or pyftpdlib is missing (`pip install pyftpdlib pyopenssl`;
/// `scripts/test.sh` installs them) or the server does not start.
#[must_use]
pub fn ftpd(root: &Path, options: FtpdOptions) -> Ftpd {
    let dir = tempfile::tempdir().expect("tempdir");
    if options.tls {
        test_certificates(dir.path());
    }
    let (child, stdout, port) = spawn_ftpd(root, options, dir.path(), 0);
    Ftpd {
        child,
        _stdout: stdout,
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        ca_file: options.tls.then(|| dir.path().join("ca.pem")),
        root: root.to_owned(),
        options,
        dir,
    }
}

fn spawn_ftpd(
    root: &Path,
    options: FtpdOptions,
    dir: &Path,
    port: u16,
) -> (Child, std::io::BufReader<std::process::ChildStdout>, u16) {
    use std::io::BufRead;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/ftpd.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg("--dir")
        .arg(root)
        .args(["--user", FTP_USER, "--password", FTP_PASSWORD])
        .args(["--port", &port.to_string()]);
    if options.tls {
        cmd.arg("--cert")
            .arg(dir.join("server.pem"))
            .arg("--key")
            .arg(dir.join("server.key"));
    }
    if options.no_mlsd {
        cmd.arg("--no-mlsd");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 for the FTP server");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    let Some(port) = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse::<u16>().ok())
    else {
        let _ = child.kill();
        panic!(
            "the FTP server did not start (said {line:?}); pip install pyftpdlib pyopenssl \
             (scripts/test.sh installs them)"
        );
    };
    (child, stdout, port)
}
