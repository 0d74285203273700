//! SFTP: `sftp://user[:password]@host[:port]/absolute/dir/`, over an SSH
//! connection made in Rust (russh), one per server, user and credentials,
//! shared by the files of a listing and kept (bounded, closed when idle)
//! in the registry of whoever runs the source (see [`crate::Connections`]).
//!
//! Authentication is the URL's password when it has one, else
//! `ROTA_SFTP_PASSWORD` (or a profile's `sftp.password`), else a private
//! key: `ROTA_SFTP_KEY`, or the first of `~/.ssh/id_ed25519`, `id_ecdsa`,
//! `id_rsa`.
//! The server's host key must be known: it must match
//! `ROTA_SFTP_FINGERPRINT` (`SHA256:…`) when that is set, else be recorded
//! in `ROTA_KNOWN_HOSTS` (default `~/.ssh/known_hosts`). An unknown host is
//! refused with its fingerprint and how to trust it; a changed key is
//! refused outright.
//!
//! Directories are read one at a time and sorted by name; files stream from
//! their first byte or from a range's start, and formats that read their
//! end first (Parquet) read only the ranges they need. A connection lost
//! mid-file is made again and the read resumes at the byte it stopped at,
//! if the file's size and modification time are unchanged; otherwise the
//! read fails saying at which byte.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use chrono::DateTime;
use rota_core::SourceError;
use rota_core::source::{ByteStream, Entry, EntryStream, ListRequest, ReadAt, Source};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::StatusCode;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::object::invalid;
use crate::ranged::ranged_at;
use crate::redact;
use crate::registry::{Held, Key};
use crate::resume::{Reopen, open_resuming};
use crate::server_url::ServerUrl;
use crate::walk::{self, Found, Walk, child_path};

/// Bytes per chunk read from a file.
const CHUNK: usize = 1 << 20;

/// How to reach SFTP servers and whom to trust.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SftpSettings {
    /// The private key for servers whose URL carries no password.
    pub key: Option<PathBuf>,
    /// The known-hosts file host keys are checked against.
    pub known_hosts: Option<PathBuf>,
    /// A host key fingerprint (`SHA256:…`) to trust instead of known hosts.
    pub fingerprint: Option<String>,
    /// The password for URLs that name a user but no password; without
    /// one, such URLs authenticate with the key.
    pub password: Option<String>,
}

impl std::fmt::Debug for SftpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftpSettings")
            .field("key", &self.key)
            .field("known_hosts", &self.known_hosts)
            .field("fingerprint", &self.fingerprint)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl SftpSettings {
    /// Settings from `ROTA_SFTP_KEY`, `ROTA_KNOWN_HOSTS`,
    /// `ROTA_SFTP_FINGERPRINT` and `ROTA_SFTP_PASSWORD`.
    #[must_use]
    pub fn from_env() -> Self {
        let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty());
        Self {
            key: var("ROTA_SFTP_KEY").map(PathBuf::from),
            known_hosts: var("ROTA_KNOWN_HOSTS").map(PathBuf::from),
            fingerprint: var("ROTA_SFTP_FINGERPRINT").and_then(|v| v.into_string().ok()),
            password: var("ROTA_SFTP_PASSWORD").and_then(|v| v.into_string().ok()),
        }
    }

    fn key_path(&self) -> Option<PathBuf> {
        if let Some(k) = &self.key {
            return Some(k.clone());
        }
        let home = PathBuf::from(std::env::var_os("HOME")?);
        ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|n| home.join(".ssh").join(n))
            .find(|p| p.exists())
    }

    fn known_hosts_path(&self) -> Option<PathBuf> {
        self.known_hosts
            .clone()
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts")))
    }
}

/// SFTP servers.
#[derive(Debug, Clone)]
pub struct SftpSource {
    settings: SftpSettings,
    held: Held,
    egress: crate::Egress,
}

impl Default for SftpSource {
    fn default() -> Self {
        Self::new(SftpSettings::default())
    }
}

impl SftpSource {
    /// A source reaching servers with `settings`, keeping its sessions in a
    /// registry of its own.
    #[must_use]
    pub fn new(settings: SftpSettings) -> Self {
        Self::held(settings, Held::own())
    }

    /// A source reaching servers with `settings`, with the registry and
    /// passwords in `held`.
    pub(crate) fn held(settings: SftpSettings, held: Held) -> Self {
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

/// An SFTP URL: a server URL that names its user.
struct Url {
    inner: ServerUrl,
    user: String,
}

impl Url {
    fn parse(location: &str, held: &Held) -> Result<Self, SourceError> {
        let inner = ServerUrl::parse(location, "sftp", 22, &held.credentials)?;
        let user = inner
            .user
            .clone()
            .ok_or_else(|| invalid(location, "name the user: sftp://user@host/path"))?;
        Ok(Self { inner, user })
    }
}

impl std::ops::Deref for Url {
    type Target = ServerUrl;

    fn deref(&self) -> &ServerUrl {
        &self.inner
    }
}

/// What the host-key check decided, kept for the error message.
#[derive(Clone, Default)]
struct Verdict(Arc<StdMutex<Option<String>>>);

struct Checker {
    host: String,
    port: u16,
    settings: SftpSettings,
    verdict: Verdict,
}

impl Checker {
    fn judge(&self, key: &PublicKey) -> Result<(), String> {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if let Some(want) = &self.settings.fingerprint {
            return if *want == fingerprint {
                Ok(())
            } else {
                Err(format!(
                    "the host key's fingerprint is {fingerprint}, not the {want} given in \
                     ROTA_SFTP_FINGERPRINT; refusing to connect"
                ))
            };
        }
        let Some(path) = self.settings.known_hosts_path() else {
            return Err(format!(
                "no known-hosts file to check the host key ({fingerprint}) against; set \
                 ROTA_KNOWN_HOSTS, or ROTA_SFTP_FINGERPRINT={fingerprint} once you have \
                 checked it"
            ));
        };
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &path) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "unknown host key {fingerprint} (not in {}); check it with the server's \
                 administrator, then trust it: ssh-keyscan -p {} {} >> {} (or set \
                 ROTA_SFTP_FINGERPRINT={fingerprint})",
                path.display(),
                self.port,
                self.host,
                path.display()
            )),
            Err(russh::keys::Error::KeyChanged { line }) => Err(format!(
                "THE HOST KEY HAS CHANGED: {fingerprint} does not match line {line} of {}; \
                 refusing to connect (someone may be intercepting the connection)",
                path.display()
            )),
            Err(e) => Err(format!(
                "cannot read the known-hosts file {}: {e}",
                path.display()
            )),
        }
    }
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            *self
                .verdict
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some("the server offered a certificate; only plain host keys are checked".into());
            return Ok(false);
        };
        match self.judge(key) {
            Ok(()) => Ok(true),
            Err(why) => {
                *self
                    .verdict
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
                Ok(false)
            }
        }
    }
}

/// One authenticated SFTP session.
pub(crate) struct Conn {
    sftp: SftpSession,
    ssh: russh::client::Handle<Checker>,
}

impl SftpSource {
    /// An authenticated session to `url`'s server: a cached one made with
    /// the same credentials and settings, else a new one (then cached).
    async fn connect(&self, url: &Url, location: &str) -> Result<Arc<Conn>, SourceError> {
        let password = url
            .password
            .clone()
            .or_else(|| self.settings.password.clone());
        // Everything that decides whom the session is authenticated as: a
        // request without the same password (or key) never gets it.
        let key_path = self.settings.key_path();
        let port = url.port.to_string();
        let key = Key::of(&[
            "sftp",
            &url.user,
            &url.host,
            &port,
            password.as_deref().unwrap_or(""),
            &format!("{:?}|{:?}", password.is_some(), key_path),
            &format!("{:?}", self.settings.known_hosts),
            self.settings.fingerprint.as_deref().unwrap_or(""),
            &format!("{:?}", self.egress),
        ]);
        let registry = self.held.registry();
        // A dead connection (a server restart, a cut link) is dropped.
        if let Some(c) = registry.sftp.get(&key, |c| !c.ssh.is_closed()) {
            return Ok(c);
        }
        let remote = |reason: String| SourceError::Remote {
            location: redact(location),
            reason,
        };
        let unreachable = |reason: String| SourceError::Interrupted {
            location: redact(location),
            reason,
        };
        let verdict = Verdict::default();
        let checker = Checker {
            host: url.host.clone(),
            port: url.port,
            settings: self.settings.clone(),
            verdict: verdict.clone(),
        };
        let config = Arc::new(russh::client::Config {
            inactivity_timeout: Some(std::time::Duration::from_secs(120)),
            ..russh::client::Config::default()
        });
        let addresses = self
            .egress
            .resolve(&url.host, url.port)
            .await
            .map_err(unreachable)?;
        let connecting = russh::client::connect(config, addresses.as_slice(), checker);
        let mut ssh =
            match tokio::time::timeout(std::time::Duration::from_secs(20), connecting).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    let why = verdict
                        .0
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take();
                    return Err(match why {
                        Some(why) => SourceError::AccessDenied {
                            location: redact(location),
                            hint: why,
                        },
                        None => unreachable(format!("cannot connect: {e}")),
                    });
                }
                Err(_) => return Err(unreachable("no SSH answer within 20 s".to_owned())),
            };
        let auth = match &password {
            Some(password) => ssh
                .authenticate_password(url.user.clone(), password.clone())
                .await
                .map_err(|e| remote(format!("authentication failed: {e}")))?,
            None => {
                let path = self
                    .settings
                    .key_path()
                    .ok_or_else(|| SourceError::AccessDenied {
                        location: redact(location),
                        hint: "no password in the URL and no private key (set ROTA_SFTP_KEY, or \
                           create ~/.ssh/id_ed25519)"
                            .to_owned(),
                    })?;
                let secret = russh::keys::load_secret_key(&path, None).map_err(|e| {
                    SourceError::AccessDenied {
                        location: redact(location),
                        hint: format!("cannot load the private key {}: {e}", path.display()),
                    }
                })?;
                let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
                ssh.authenticate_publickey(
                    url.user.clone(),
                    PrivateKeyWithHashAlg::new(Arc::new(secret), hash),
                )
                .await
                .map_err(|e| remote(format!("authentication failed: {e}")))?
            }
        };
        if !auth.success() {
            return Err(SourceError::AccessDenied {
                location: redact(location),
                hint: match password {
                    Some(_) => format!("the server refused the password of '{}'", url.user),
                    None => format!(
                        "the server refused the key of '{}' ({}); add its public key to the \
                         user's authorized_keys, or give ROTA_SFTP_KEY",
                        url.user,
                        self.settings
                            .key_path()
                            .map_or_else(String::new, |p| p.display().to_string())
                    ),
                },
            });
        }
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| remote(format!("cannot open a session: {e}")))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| remote(format!("the server has no sftp subsystem: {e}")))?;
        let sftp = SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| remote(format!("SFTP did not start: {e}")))?;
        let conn = Arc::new(Conn { sftp, ssh });
        registry.sftp.put(registry, key, conn.clone());
        Ok(conn)
    }
}

fn sftp_error(location: &str, e: &russh_sftp::client::error::Error) -> SourceError {
    let location = redact(location);
    match e {
        russh_sftp::client::error::Error::Status(s) if s.status_code == StatusCode::NoSuchFile => {
            SourceError::NotFound { location }
        }
        russh_sftp::client::error::Error::Status(s)
            if s.status_code == StatusCode::PermissionDenied =>
        {
            SourceError::PermissionDenied { location }
        }
        russh_sftp::client::error::Error::Status(s) => SourceError::Remote {
            location,
            reason: format!(
                "the server answered {:?}: {}",
                s.status_code, s.error_message
            ),
        },
        // The session broke or timed out: another connection may do.
        other => SourceError::Interrupted {
            location,
            reason: other.to_string(),
        },
    }
}

fn found(path: String, attrs: &russh_sftp::client::fs::Metadata) -> Found {
    Found {
        path,
        dir: attrs.is_dir(),
        size: attrs.size,
        modified: attrs
            .mtime
            .and_then(|t| DateTime::from_timestamp(i64::from(t), 0)),
    }
}

/// Lists directories over one SFTP session.
struct Lister {
    conn: Arc<Conn>,
    url: Url,
}

#[async_trait]
impl walk::Lister for Lister {
    async fn children(&mut self, dir: &str) -> Result<Vec<Found>, SourceError> {
        let location = self.url.location_of(dir);
        let entries = self
            .conn
            .sftp
            .read_dir(dir)
            .await
            .map_err(|e| sftp_error(&location, &e))?;
        Ok(entries
            .filter(|e| e.file_name() != "." && e.file_name() != "..")
            .map(|e| found(child_path(dir, &e.file_name()), &e.metadata()))
            .collect())
    }

    fn location_of(&self, path: &str) -> String {
        self.url.location_of(path)
    }
}

struct FileStream {
    file: russh_sftp::client::fs::File,
    location: String,
    pos: u64,
    /// Where the read must end; `None`: at the end of the file, whose size
    /// was `size` when opened.
    end: Option<u64>,
    size: Option<u64>,
}

#[async_trait]
impl ByteStream for FileStream {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        let limit = self.end.or(self.size);
        let want = match limit {
            Some(end) if self.pos >= end => return Ok(None),
            Some(end) => usize::try_from(end - self.pos).unwrap_or(CHUNK).min(CHUNK),
            None => CHUNK,
        };
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match self.file.read(&mut buf[filled..]).await {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    if filled > 0 {
                        // Hand over what came; the next call meets the break.
                        break;
                    }
                    return Err(SourceError::Interrupted {
                        location: self.location.clone(),
                        reason: format!("the read broke at byte {}: {e}", self.pos),
                    });
                }
            }
        }
        if filled == 0 {
            // A short file is the resuming layer's to judge.
            return Ok(None);
        }
        buf.truncate(filled);
        self.pos += filled as u64;
        Ok(Some(buf))
    }
}

#[async_trait]
impl Source for SftpSource {
    fn schemes(&self) -> &'static [&'static str] {
        &["sftp"]
    }

    async fn list(&self, req: &ListRequest) -> Result<Box<dyn EntryStream>, SourceError> {
        let url = Url::parse(&req.location, &self.held)?;
        let conn = self.connect(&url, &req.location).await?;
        let attrs = conn
            .sftp
            .metadata(url.path.clone())
            .await
            .map_err(|e| sftp_error(&req.location, &e))?;
        let top = found(url.path.clone(), &attrs);
        let walk = Walk::start(Lister { conn, url }, top, req).await?;
        Ok(Box::new(walk))
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

/// The version of a file that was listed, to be opened (again) at a byte.
struct Version {
    source: SftpSource,
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
        let conn = self.source.connect(&url, location).await?;
        if again {
            let now = conn
                .sftp
                .metadata(url.path.clone())
                .await
                .map_err(|e| sftp_error(location, &e))?;
            let mtime = now
                .mtime
                .and_then(|t| DateTime::from_timestamp(i64::from(t), 0));
            if now.size != self.entry.size
                || (self.entry.modified.is_some() && mtime != self.entry.modified)
            {
                return Err(SourceError::Remote {
                    location: redact(location),
                    reason: "the file changed while it was being read (its size or \
                             modification time moved); ingest it again"
                        .to_owned(),
                });
            }
        }
        let mut file = conn
            .sftp
            .open(url.path.clone())
            .await
            .map_err(|e| sftp_error(location, &e))?;
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| SourceError::Interrupted {
                    location: redact(location),
                    reason: format!("cannot seek to byte {start}: {e}"),
                })?;
        }
        Ok(Box::new(FileStream {
            file,
            location: redact(location),
            pos: start,
            end,
            size: self.entry.size,
        }))
    }
}
