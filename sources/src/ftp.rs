//! FTP and FTPS: `ftp://[user[:password]@]host[:port]/dir/` and
//! `ftps://…` (explicit TLS: `AUTH TLS` on the control connection, then
//! protected data connections), over suppaftp.
//!
//! Without a user the login is anonymous; a user without a password in the
//! URL logs in with `ROTA_FTP_PASSWORD` (or a profile's `ftp.password`).
//! Paths are absolute on the server
//! (as the logged-in user sees it). FTPS checks the server's certificate
//! against the system's roots and, when `ROTA_CA_FILE` names a PEM file,
//! the certificates in it (a private CA).
//!
//! Directories are listed one at a time with `MLSD` when the server offers
//! it (exact sizes and times), else with `LIST`, whose Unix and DOS styles
//! are parsed. Files are read in binary mode; a read that breaks is resumed
//! with `REST` at the byte it broke on a new connection, if the file's size
//! and modification time are unchanged, and formats that read their end
//! first fetch only the ranges they need. At most
//! [`MAX_CONNECTIONS_PER_SERVER`] connections are open to one server and
//! user. Idle connections are kept for the next request in the registry of
//! whoever runs the source (see [`crate::Connections`]), by server, user
//! and password, and closed once idle.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use rota_core::SourceError;
use rota_core::source::{ByteStream, Entry, EntryStream, ListRequest, ReadAt, Source};
use suppaftp::list::{File as Listed, ListParser};
use suppaftp::tokio::{
    AsyncRustlsConnector, AsyncRustlsStream, ImplAsyncFtpStream, TransferStream,
};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::rustls;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode, Status};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ranged::ranged_at;
use crate::redact;
use crate::registry::{Held, Key, Registry};
use crate::resume::{Reopen, open_resuming};
use crate::server_url::ServerUrl;
use crate::walk::{self, Found, Walk, child_path};

/// Connections open to one server at most, listings and reads together.
pub const MAX_CONNECTIONS_PER_SERVER: usize = 8;
/// Bytes per chunk read from a file.
const CHUNK: usize = 1 << 20;
/// How long a connection, a command or a read may take before it counts as
/// broken.
const TIMEOUT: Duration = Duration::from_secs(60);

type Ftp = ImplAsyncFtpStream<AsyncRustlsStream>;

/// How to reach FTP servers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FtpSettings {
    /// A PEM file of certificates to trust for FTPS, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// The password for URLs that name a user but no password.
    pub password: Option<String>,
}

impl std::fmt::Debug for FtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpSettings")
            .field("ca_file", &self.ca_file)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl FtpSettings {
    /// Settings from `ROTA_CA_FILE` and `ROTA_FTP_PASSWORD`.
    #[must_use]
    pub fn from_env() -> Self {
        let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty());
        Self {
            ca_file: var("ROTA_CA_FILE").map(PathBuf::from),
            password: var("ROTA_FTP_PASSWORD").and_then(|v| v.into_string().ok()),
        }
    }
}

/// FTP and FTPS servers.
#[derive(Debug, Clone)]
pub struct FtpSource {
    settings: FtpSettings,
    held: Held,
    egress: crate::Egress,
}

impl Default for FtpSource {
    fn default() -> Self {
        Self::new(FtpSettings::default())
    }
}

impl FtpSource {
    /// A source reaching servers with `settings`, keeping its connections
    /// in a registry of its own.
    #[must_use]
    pub fn new(settings: FtpSettings) -> Self {
        Self::held(settings, Held::own())
    }

    /// A source reaching servers with `settings`, with the registry and
    /// passwords in `held`.
    pub(crate) fn held(settings: FtpSettings, held: Held) -> Self {
        Self {
            settings,
            held,
            egress: crate::Egress::default(),
        }
    }

    /// The same, connecting only where `egress` permits.
    #[must_use]
    pub fn with_egress(self, egress: crate::Egress) -> Self {
        Self { egress, ..self }
    }
}

/// An FTP URL taken apart.
struct Url {
    inner: ServerUrl,
    tls: bool,
}

impl Url {
    fn parse(location: &str, held: &Held) -> Result<Self, SourceError> {
        let tls = location.starts_with("ftps://");
        let inner = ServerUrl::parse(
            location,
            if tls { "ftps" } else { "ftp" },
            21,
            &held.credentials,
        )?;
        Ok(Self { inner, tls })
    }

    fn user(&self) -> &str {
        self.inner.user.as_deref().unwrap_or("anonymous")
    }

    /// What tells servers and their credentials apart: a connection logged
    /// in with one password is never handed to a request without it.
    fn server_key(&self, settings: &FtpSettings, egress: &crate::Egress) -> Key {
        let password = match (&self.inner.password, &self.inner.user) {
            (Some(p), _) => Some(p.as_str()),
            (None, Some(_)) => settings.password.as_deref(),
            (None, None) => None,
        };
        Key::of(&[
            if self.tls { "ftps" } else { "ftp" },
            &self.inner.host,
            &self.inner.port.to_string(),
            self.user(),
            &format!("{:?}", password.is_some()),
            password.unwrap_or(""),
            &format!("{:?}", settings.ca_file),
            &format!("{egress:?}"),
        ])
    }
}

impl std::ops::Deref for Url {
    type Target = ServerUrl;

    fn deref(&self) -> &ServerUrl {
        &self.inner
    }
}

/// One server's idle connections, and the permits that bound how many are open.
pub(crate) struct Server {
    idle: StdMutex<Vec<Ftp>>,
    permits: Arc<Semaphore>,
}

/// A logged-in connection, checked out of its server's pool. Dropped, it is
/// closed; [`Conn::give_back`] keeps it for the next request.
struct Conn {
    ftp: Ftp,
    server: Arc<Server>,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    fn ftp(&mut self) -> &mut Ftp {
        &mut self.ftp
    }

    fn give_back(self) {
        let Conn { ftp, server, .. } = self;
        server
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ftp);
    }
}

/// The TLS configuration for FTPS: the system's roots and `ca_file`'s.
fn tls_config(
    registry: &Registry,
    settings: &FtpSettings,
    location: &str,
) -> Result<Arc<rustls::ClientConfig>, SourceError> {
    let key = Key::of(&["ftps-tls", &format!("{:?}", settings.ca_file)]);
    registry
        .tls
        .get_or_build(registry, key, || build_tls(settings, location))
}

fn build_tls(
    settings: &FtpSettings,
    location: &str,
) -> Result<Arc<rustls::ClientConfig>, SourceError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.ca_file {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let bad = |reason: String| SourceError::InvalidLocation {
            location: redact(location),
            reason: format!("ROTA_CA_FILE {}: {reason}", path.display()),
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::Remote {
            location: redact(location),
            reason: format!("cannot set up TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The error for a failed FTP call on `location`, with no secret in it.
fn ftp_error(location: &str, user: &str, e: FtpError) -> SourceError {
    let location = redact(location);
    match e {
        FtpError::ConnectionError(io) => SourceError::Interrupted {
            location,
            reason: format!("the connection failed: {io}"),
        },
        FtpError::SecureError(text) if text.contains("certificate") => SourceError::AccessDenied {
            location,
            hint: format!(
                "the server's TLS certificate is not trusted ({text}); if a private CA signed it, \
                 set ROTA_CA_FILE to that CA's PEM file"
            ),
        },
        FtpError::SecureError(text) => SourceError::Interrupted {
            location,
            reason: format!("TLS failed: {text}"),
        },
        FtpError::UnexpectedResponse(response) => {
            let code = response.status.code();
            let text = String::from_utf8_lossy(&response.body);
            let text = text.lines().next().unwrap_or_default().trim().to_owned();
            match response.status {
                Status::NotLoggedIn => SourceError::AccessDenied {
                    location,
                    hint: format!(
                        "the server refused the login of '{user}' ({text}); check the user and \
                         password in the URL"
                    ),
                },
                Status::FileUnavailable | Status::BadFilename => SourceError::NotFound { location },
                _ if (400..500).contains(&code) => SourceError::Interrupted {
                    location,
                    reason: format!("the server answered {text}"),
                },
                _ => SourceError::Remote {
                    location,
                    reason: format!("the server answered {text}"),
                },
            }
        }
        other => SourceError::Remote {
            location,
            reason: other.to_string(),
        },
    }
}

/// Runs `f` with a deadline; past it the call counts as a broken connection.
async fn timed<T>(
    location: &str,
    what: &str,
    f: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(TIMEOUT, f).await.unwrap_or_else(|_| {
        Err(SourceError::Interrupted {
            location: redact(location),
            reason: format!("no answer to {what} within {} s", TIMEOUT.as_secs()),
        })
    })
}

impl FtpSource {
    /// A logged-in connection to `url`'s server: an idle one that still
    /// answers, else a new one, once a permit is free.
    async fn checkout(&self, url: &Url, location: &str) -> Result<Conn, SourceError> {
        let registry = self.held.registry();
        let server = registry.ftp.get_or_build(
            registry,
            url.server_key(&self.settings, &self.egress),
            || {
                Ok(Arc::new(Server {
                    idle: StdMutex::new(Vec::new()),
                    permits: Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_SERVER)),
                }))
            },
        )?;
        let permit =
            server
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SourceError::Remote {
                    location: redact(location),
                    reason: "the connection pool was closed".to_owned(),
                })?;
        loop {
            let idle = server
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(mut ftp) = idle else { break };
            if matches!(
                tokio::time::timeout(Duration::from_secs(10), ftp.noop()).await,
                Ok(Ok(()))
            ) {
                return Ok(Conn {
                    ftp,
                    server,
                    _permit: permit,
                });
            }
        }
        let ftp = timed(location, "the connection", self.connect(url, location)).await?;
        Ok(Conn {
            ftp,
            server,
            _permit: permit,
        })
    }

    async fn connect(&self, url: &Url, location: &str) -> Result<Ftp, SourceError> {
        let error = |e| ftp_error(location, url.user(), e);
        let addr = self
            .egress
            .resolve(&url.host, url.port)
            .await
            .map_err(|reason| SourceError::Interrupted {
                location: redact(location),
                reason,
            })?[0];
        let mut ftp = Ftp::connect_timeout(addr, TIMEOUT).await.map_err(error)?;
        if url.tls {
            let connector = AsyncRustlsConnector::from(TlsConnector::from(tls_config(
                self.held.registry(),
                &self.settings,
                location,
            )?));
            ftp = ftp
                .into_secure(connector, &url.host)
                .await
                .map_err(|e| match e {
                    FtpError::UnexpectedResponse(_) => SourceError::Remote {
                        location: redact(location),
                        reason: "the server does not offer TLS (AUTH TLS was refused); use ftp:// \
                             only if plain FTP is acceptable"
                            .to_owned(),
                    },
                    other => error(other),
                })?;
        }
        let password = match (&url.password, &url.user) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => self.settings.password.clone().unwrap_or_default(),
            (None, None) => "anonymous@".to_owned(),
        };
        ftp.login(url.user(), password.as_str())
            .await
            .map_err(error)?;
        ftp.transfer_type(FileType::Binary).await.map_err(error)?;
        // Servers behind NAT announce addresses that cannot be reached: data
        // connections go to the control connection's address instead.
        ftp.set_mode(Mode::Passive);
        ftp.set_passive_nat_workaround(true);
        Ok(ftp)
    }
}

fn found(dir: &str, f: &Listed) -> Option<Found> {
    let name = f.name().trim_end_matches('/');
    if name.is_empty() || name == "." || name == ".." || f.is_symlink() {
        return None;
    }
    let path = child_path(dir, name);
    let modified: DateTime<Utc> = f.modified().into();
    Some(Found {
        path,
        dir: f.is_directory(),
        size: (!f.is_directory()).then_some(f.size() as u64),
        modified: (modified.timestamp() > 0).then_some(modified),
    })
}

/// Parses a `LIST` line, Unix style or DOS style.
fn parse_list_line(line: &str) -> Option<Listed> {
    ListParser::parse_posix(line)
        .or_else(|_| ListParser::parse_dos(line))
        .ok()
}

/// Lists directories over one connection, which goes back to its pool when
/// the walk is done.
struct Lister {
    conn: Option<Conn>,
    url: Url,
    mlsd: bool,
}

#[async_trait]
impl walk::Lister for Lister {
    async fn children(&mut self, dir: &str) -> Result<Vec<Found>, SourceError> {
        let location = self.url.location_of(dir);
        let user = self.url.user().to_owned();
        let mlsd = self.mlsd;
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let lines = timed(&location, "a listing", async {
            let listed = if mlsd {
                conn.ftp().mlsd(Some(dir)).await
            } else {
                conn.ftp().list(Some(dir)).await
            };
            listed.map_err(|e| ftp_error(&location, &user, e))
        })
        .await?;
        let mut children = Vec::with_capacity(lines.len());
        for line in &lines {
            let parsed = if mlsd {
                ListParser::parse_mlsd(line).ok()
            } else {
                parse_list_line(line)
            };
            match parsed {
                Some(f) => children.extend(found(dir, &f)),
                None if line.trim().is_empty() || line.starts_with("total ") => {}
                None => tracing::warn!(
                    location = %redact(&location),
                    line = %line,
                    "skipping a listing line that does not parse"
                ),
            }
        }
        Ok(children)
    }

    fn location_of(&self, path: &str) -> String {
        self.url.location_of(path)
    }

    fn done(&mut self) {
        // The connection serves the next request.
        if let Some(conn) = self.conn.take() {
            conn.give_back();
        }
    }
}

/// What the server says is at `path`: a directory, a file, or nothing.
async fn stat(conn: &mut Conn, mlst: bool, path: &str) -> Result<Option<Found>, FtpError> {
    if path == "/" {
        return Ok(Some(Found {
            path: "/".to_owned(),
            dir: true,
            size: None,
            modified: None,
        }));
    }
    let parent = path
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    let missing = |e: &FtpError| {
        matches!(e, FtpError::UnexpectedResponse(r)
            if matches!(r.status, Status::FileUnavailable | Status::BadFilename))
    };
    if mlst {
        return match conn.ftp().mlst(Some(path)).await {
            Ok(line) => Ok(ListParser::parse_mlst(&line).ok().and_then(|f| {
                let mut f = found(parent, &f)?;
                f.path = path.to_owned();
                Some(f)
            })),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e),
        };
    }
    match conn.ftp().cwd(path).await {
        Ok(()) => {
            return Ok(Some(Found {
                path: path.to_owned(),
                dir: true,
                size: None,
                modified: None,
            }));
        }
        Err(e) if missing(&e) => {}
        Err(e) => return Err(e),
    }
    let size = match conn.ftp().size(path).await {
        Ok(n) => n as u64,
        Err(e) if missing(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let modified = conn.ftp().mdtm(path).await.ok().map(|t| t.and_utc());
    Ok(Some(Found {
        path: path.to_owned(),
        dir: false,
        size: Some(size),
        modified,
    }))
}

/// A file being read over one connection's data transfer.
struct Body {
    conn: Option<Conn>,
    transfer: Option<TransferStream<AsyncRustlsStream>>,
    location: String,
    pos: u64,
    /// Where to stop; `None`: at the end of the file.
    end: Option<u64>,
    /// Whether `end` is the end of the file, where the server closes the
    /// data connection and confirms the transfer; else the read stops
    /// there with `ABOR`.
    to_eof: bool,
    buf: Vec<u8>,
}

impl Body {
    /// Ends the transfer; a connection whose transfer ended cleanly goes
    /// back to its pool.
    async fn close(&mut self, whole: bool) -> Result<(), SourceError> {
        let (Some(transfer), Some(mut conn)) = (self.transfer.take(), self.conn.take()) else {
            return Ok(());
        };
        let ended = if whole {
            timed(&self.location, "the end of the transfer", async {
                transfer
                    .finish()
                    .await
                    .map_err(|e| ftp_error(&self.location, "", e))
            })
            .await
        } else {
            timed(&self.location, "ABOR", async {
                conn.ftp()
                    .abort(transfer)
                    .await
                    .map_err(|e| ftp_error(&self.location, "", e))
            })
            .await
        };
        match ended {
            Ok(()) => {
                conn.give_back();
                Ok(())
            }
            // A stop part way may be answered oddly; the connection is dropped.
            Err(_) if !whole => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl ByteStream for Body {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        let at_end = self.end.is_some_and(|end| self.pos >= end);
        if at_end && !self.to_eof {
            self.close(false).await?;
            return Ok(None);
        }
        let want = match self.end {
            // At the end: one more read, which must find the end of the data.
            Some(_) if at_end => 1,
            Some(end) => usize::try_from(end - self.pos).unwrap_or(CHUNK).min(CHUNK),
            None => CHUNK,
        };
        let Some(transfer) = self.transfer.as_mut() else {
            return Ok(None);
        };
        self.buf.resize(want, 0);
        let read = tokio::time::timeout(TIMEOUT, transfer.read(&mut self.buf[..want])).await;
        match read {
            Ok(Ok(0)) => {
                // The whole file came; the server confirms the transfer.
                self.close(true).await?;
                Ok(None)
            }
            Ok(Ok(n)) => {
                self.pos += n as u64;
                Ok(Some(self.buf[..n].to_vec()))
            }
            Ok(Err(e)) => {
                self.transfer = None;
                self.conn = None;
                Err(SourceError::Interrupted {
                    location: self.location.clone(),
                    reason: format!("the read broke at byte {}: {e}", self.pos),
                })
            }
            Err(_) => {
                self.transfer = None;
                self.conn = None;
                Err(SourceError::Interrupted {
                    location: self.location.clone(),
                    reason: format!("no data for {} s at byte {}", TIMEOUT.as_secs(), self.pos),
                })
            }
        }
    }
}

/// The version of a file that was listed, to be opened (again) at a byte.
struct Version {
    source: FtpSource,
    entry: Entry,
}

#[async_trait]
impl Reopen for Version {
    /// The file's bytes from `start`; opened `again`, first makes sure it
    /// has the size and modification time it was listed with.
    async fn open_at(
        &self,
        start: u64,
        end: Option<u64>,
        again: bool,
    ) -> Result<Box<dyn ByteStream>, SourceError> {
        let location = &self.entry.location;
        let url = Url::parse(location, &self.source.held)?;
        let user = url.user().to_owned();
        let mut conn = self.source.checkout(&url, location).await?;
        let error = |e| ftp_error(location, &user, e);
        let path = url.path.clone();
        if again {
            let size = timed(location, "SIZE", async {
                conn.ftp().size(&path).await.map_err(error)
            })
            .await?;
            let modified: Option<NaiveDateTime> = match self.entry.modified {
                Some(_) => conn.ftp().mdtm(&path).await.ok(),
                None => None,
            };
            let moved = modified
                .zip(self.entry.modified)
                .is_some_and(|(now, then)| now.and_utc().timestamp() != then.timestamp());
            if Some(size as u64) != self.entry.size || moved {
                return Err(SourceError::Remote {
                    location: redact(location),
                    reason: "the file changed while it was being read (its size or \
                             modification time moved); ingest it again"
                        .to_owned(),
                });
            }
        }
        let transfer = timed(location, "RETR", async {
            if start > 0 {
                let offset = usize::try_from(start).map_err(|_| SourceError::Remote {
                    location: redact(location),
                    reason: format!("cannot resume at byte {start} on this machine"),
                })?;
                conn.ftp().resume_transfer(offset).await.map_err(error)?;
            }
            conn.ftp().retr_as_stream(&path).await.map_err(error)
        })
        .await?;
        Ok(Box::new(Body {
            conn: Some(conn),
            transfer: Some(transfer),
            location: redact(location),
            pos: start,
            to_eof: end.is_none() || end == self.entry.size,
            end,
            buf: Vec::new(),
        }))
    }
}

#[async_trait]
impl Source for FtpSource {
    fn schemes(&self) -> &'static [&'static str] {
        &["ftp", "ftps"]
    }

    async fn list(&self, req: &ListRequest) -> Result<Box<dyn EntryStream>, SourceError> {
        let url = Url::parse(&req.location, &self.held)?;
        let user = url.user().to_owned();
        let mut conn = self.checkout(&url, &req.location).await?;
        let error = |e| ftp_error(&req.location, &user, e);
        let features = timed(&req.location, "FEAT", async {
            conn.ftp().feat().await.map_err(error)
        })
        .await
        .unwrap_or_default();
        let mlsd = features.keys().any(|k| k.eq_ignore_ascii_case("MLST"));
        let path = url.path.clone();
        let top = timed(&req.location, "a look at the path", async {
            stat(&mut conn, mlsd, &path).await.map_err(error)
        })
        .await?
        .ok_or_else(|| SourceError::NotFound {
            location: redact(&req.location),
        })?;
        let lister = Lister {
            conn: Some(conn),
            url,
            mlsd,
        };
        Ok(Box::new(Walk::start(lister, top, req).await?))
    }

    async fn open(
        &self,
        entry: &Entry,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn ByteStream>, SourceError> {
        let version = Version {
            source: self.clone(),
            entry: entry.clone(),
        };
        open_resuming(version, entry, range).await
    }

    async fn random_access(&self, entry: &Entry) -> Result<Option<Arc<dyn ReadAt>>, SourceError> {
        Ok(ranged_at(Arc::new(self.clone()), entry))
    }
}

#[cfg(test)]
mod tests {
    use super::{found, parse_list_line};

    #[test]
    fn list_lines_parse_in_unix_and_dos_styles() {
        let unix = parse_list_line(
            "-rw-r--r--    1 ftp      ftp          1234 Nov 05  2025 with space.csv",
        )
        .expect("unix line");
        let f = found("/d", &unix).expect("a file");
        assert_eq!(
            (f.path.as_str(), f.size, f.dir),
            ("/d/with space.csv", Some(1234), false)
        );
        let dir = parse_list_line("drwxr-xr-x    2 ftp      ftp          4096 Jan 01 12:30 sub")
            .expect("dir line");
        assert!(found("/", &dir).expect("a dir").dir);
        let dos =
            parse_list_line("11-05-25  01:46PM                 1234 report.csv").expect("dos line");
        assert_eq!(found("/", &dos).expect("a file").path, "/report.csv");
        assert!(parse_list_line("total 12").is_none());
    }
}
