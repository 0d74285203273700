//! Rota's sources: where bytes come from, keyed by URL scheme.
//!
//! A source lists entries and opens them as byte streams (see
//! [`Source`](rota_core::source::Source)); the ingest pipeline does the rest.
//! Adding a source is one module plus one line in [`for_location`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use globset::GlobMatcher;
use rota_core::SourceError;
use rota_core::source::{Entry, EntryStream, ListRequest, Source};

pub mod conformance;
pub mod egress;
pub mod ftp;
pub mod local;
pub mod object;
pub mod profiles;
mod ranged;
mod registry;
mod resume;
mod server_url;
pub mod sftp;
mod walk;
mod webdav;

pub use egress::Egress;
pub use local::{LocalSource, local_path};
pub use object::{ObjectSource, S3Settings};
pub use registry::{ConnectionLimits, Connections, Credentials, DEFAULT_IDLE, DEFAULT_MAX_ENTRIES};
pub use rota_url::{RemoteUrl, scheme};

use registry::Held;

/// The source serving `location`, configured from the environment (see
/// [`SourceSettings::for_location`]).
///
/// # Errors
/// When no source serves the location's scheme.
pub fn for_location(location: &str) -> Result<Arc<dyn Source>, SourceError> {
    SourceSettings::from_env().for_location(location)
}

/// How to reach remote sources: what every source of one ingest shares.
///
/// Clones share one [`Connections`] registry: whoever holds the settings
/// (a server, one `rota ingest` run) owns the connections its sources keep.
/// The passwords given in URLs are held per ingest only, in the settings
/// [`SourceSettings::for_ingest`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceSettings {
    /// S3 endpoint, region and credentials.
    pub s3: S3Settings,
    /// SFTP key and host trust.
    pub sftp: sftp::SftpSettings,
    /// FTPS trust.
    pub ftp: ftp::FtpSettings,
    /// Sources an embedding program adds for schemes of its own (the
    /// server's `upload://`); asked before the built-in ones.
    pub extra: ExtraSources,
    /// The connections, sessions and clients kept between requests.
    pub connections: Connections,
    /// Bounds on one S3 or WebDAV listing.
    pub listing: ListingLimits,
    /// The passwords of one ingest (inactive unless made by
    /// [`SourceSettings::for_ingest`]).
    credentials: Credentials,
    /// Which addresses HTTP(S), WebDAV, SFTP and FTP(S) connections may
    /// reach, and whether redirects are followed (S3 goes where its
    /// endpoint setting says).
    pub egress: Egress,
    /// The only directories local paths may resolve into (see
    /// [`LocalSource::within`]); `None`: anywhere.
    pub local_roots: Option<Arc<[std::path::PathBuf]>>,
}

/// Sources added by an embedding program, each serving the schemes it names.
/// Two sets are equal when they hold the same sources.
#[derive(Clone, Default)]
pub struct ExtraSources(pub Vec<Arc<dyn Source>>);

impl ExtraSources {
    /// The added source serving `scheme`, if any.
    fn serving(&self, scheme: &str) -> Option<Arc<dyn Source>> {
        self.0
            .iter()
            .find(|s| s.schemes().contains(&scheme))
            .cloned()
    }
}

impl std::fmt::Debug for ExtraSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|s| s.schemes()))
            .finish()
    }
}

impl PartialEq for ExtraSources {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl Eq for ExtraSources {}

impl SourceSettings {
    /// Settings from the environment (`AWS_*`, see [`S3Settings::from_env`]).
    #[must_use]
    pub fn from_env() -> Self {
        Self {
            s3: S3Settings::from_env(),
            sftp: sftp::SftpSettings::from_env(),
            ftp: ftp::FtpSettings::from_env(),
            extra: ExtraSources::default(),
            connections: Connections::default(),
            listing: ListingLimits::default(),
            credentials: Credentials::default(),
            egress: Egress::default(),
            local_roots: None,
        }
    }

    /// These settings for one ingest: the same registry of connections,
    /// and a set of passwords of its own, so that the entries its listing
    /// finds behind a `user:password@` URL (shown as `user:***@`) can be
    /// opened by it, and by no other ingest.
    #[must_use]
    pub fn for_ingest(&self) -> Self {
        Self {
            credentials: Credentials::for_ingest(),
            ..self.clone()
        }
    }

    fn held(&self) -> Held {
        Held {
            connections: self.connections.clone(),
            credentials: self.credentials.clone(),
        }
    }

    /// The source serving `location`: `file://…` or a plain path, `s3://…`,
    /// `http(s)://…`, `webdav(s)://…`, `sftp://…` or `ftp(s)://…`.
    ///
    /// # Errors
    /// When no source serves the location's scheme.
    pub fn for_location(&self, location: &str) -> Result<Arc<dyn Source>, SourceError> {
        if let Some(source) = scheme(location).and_then(|s| self.extra.serving(s)) {
            return Ok(source);
        }
        match scheme(location) {
            None | Some("file") => Ok(Arc::new(match &self.local_roots {
                Some(roots) => LocalSource::within(roots.clone()),
                None => LocalSource::default(),
            })),
            Some("s3" | "http" | "https" | "webdav" | "webdavs") => Ok(Arc::new(
                ObjectSource::held(self.s3.clone(), self.held())
                    .with_listing(self.listing)
                    .with_egress(self.egress.clone()),
            )),
            Some("sftp") => Ok(Arc::new(
                sftp::SftpSource::held(self.sftp.clone(), self.held())
                    .with_egress(self.egress.clone()),
            )),
            Some("ftp" | "ftps") => Ok(Arc::new(
                ftp::FtpSource::held(self.ftp.clone(), self.held())
                    .with_egress(self.egress.clone()),
            )),
            Some(other) => Err(SourceError::InvalidLocation {
                location: redact(location),
                reason: format!(
                    "no source serves the '{other}' scheme (supported: file, s3, http, https, \
                     webdav, webdavs, sftp, ftp, ftps, plain paths)"
                ),
            }),
        }
    }
}

/// Files one S3 or WebDAV listing yields at most, unless configured
/// otherwise.
pub const DEFAULT_MAX_LISTED: u64 = 10_000_000;
/// Longest an S3 or WebDAV listing may search for its next file, unless
/// configured otherwise.
pub const DEFAULT_LISTING_STALL: std::time::Duration = std::time::Duration::from_secs(600);

/// Bounds on one S3 or WebDAV listing, so that no listing runs forever (a
/// bucket of billions of keys none of which matches a glob, a server that
/// makes up directories without end). A listing past a bound fails with an
/// error naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListingLimits {
    /// Files yielded at most ([`DEFAULT_MAX_LISTED`]).
    pub max_entries: u64,
    /// Longest search for the next file, pages and directories included
    /// ([`DEFAULT_LISTING_STALL`]); the time the caller spends between
    /// files does not count.
    pub stall: std::time::Duration,
}

impl Default for ListingLimits {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_LISTED,
            stall: DEFAULT_LISTING_STALL,
        }
    }
}

/// A listing held to [`ListingLimits`].
pub(crate) struct Bounded {
    pub(crate) inner: Box<dyn EntryStream>,
    pub(crate) limits: ListingLimits,
    /// The listed location, redacted.
    pub(crate) location: String,
    pub(crate) listed: u64,
}

#[async_trait]
impl EntryStream for Bounded {
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        let next = tokio::time::timeout(self.limits.stall, self.inner.next_entry())
            .await
            .map_err(|_| SourceError::Remote {
                location: self.location.clone(),
                reason: format!(
                    "the listing found no further file within {} s; narrow the location or \
                     the glob",
                    self.limits.stall.as_secs_f64()
                ),
            })??;
        if next.is_some() {
            self.listed += 1;
            if self.listed > self.limits.max_entries {
                return Err(SourceError::Remote {
                    location: self.location.clone(),
                    reason: format!(
                        "the listing holds more than {} files; narrow the location or the glob",
                        self.limits.max_entries
                    ),
                });
            }
        }
        Ok(next)
    }
}

/// A location whose last segments hold a glob (`s3://b/logs/2026-*/*.csv`),
/// taken apart into the directory to list and the glob its files' relative
/// paths must match, and whether the glob needs a recursive listing (it
/// spans directories). `None` when the location has no glob, or is a local
/// path that exists as written (a file may be called `data[1].csv`). In
/// `http(s)://` URLs, which name one file, `?` starts a query, not a glob.
#[must_use]
pub fn split_glob(location: &str) -> Option<(String, String, bool)> {
    let scheme = scheme(location);
    let (head, path) = match location.split_once("://") {
        Some((s, rest)) => {
            // The glob is in the path, after the authority.
            let at = rest.find('/')?;
            (format!("{s}://{}", &rest[..at]), &rest[at..])
        }
        None => (String::new(), location),
    };
    let metas: &[char] = if matches!(scheme, Some("http" | "https")) {
        &['*', '[', '{']
    } else {
        &['*', '?', '[', '{']
    };
    let first = path.find(metas)?;
    if matches!(scheme, None | Some("file")) && local_path(location).exists() {
        return None;
    }
    let dir_end = path[..first].rfind('/').map_or(0, |i| i + 1);
    let glob = path[dir_end..].to_owned();
    let recursive = glob.contains('/');
    Some((format!("{head}{}", &path[..dir_end]), glob, recursive))
}

/// The listing request for `location` with the `recursive` and `glob`
/// options given: a glob in the location ([`split_glob`]) becomes the
/// request's glob, and makes the listing recursive when it spans
/// directories.
///
/// # Errors
/// When the location holds a glob and `glob` is given too.
pub fn list_request(
    location: &str,
    recursive: bool,
    glob: Option<&str>,
) -> Result<ListRequest, SourceError> {
    match split_glob(location) {
        Some(_) if glob.is_some() => Err(SourceError::InvalidLocation {
            location: redact(location),
            reason: "give the glob in the location or with --glob, not both".to_owned(),
        }),
        Some((dir, pattern, spans)) => Ok(ListRequest {
            location: dir,
            recursive: recursive || spans,
            glob: Some(pattern),
        }),
        None => Ok(ListRequest {
            location: location.to_owned(),
            recursive,
            glob: glob.map(str::to_owned),
        }),
    }
}

/// Which listed files to keep, by relative path, size and modification
/// time. An entry whose size or time the source does not know is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Skip files smaller than this many bytes.
    pub min_size: Option<u64>,
    /// Skip files larger than this many bytes.
    pub max_size: Option<u64>,
    /// Skip files last modified before this time.
    pub modified_since: Option<DateTime<Utc>>,
    /// Skip files whose relative path matches any of these globs (as
    /// `--glob` matches: `*` within a segment, `**` across).
    pub exclude: Vec<String>,
}

impl EntryFilter {
    /// True when the filter keeps everything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `entry` passes the size and time bounds (not the excludes,
    /// which need compiling: see [`EntryFilter::apply`]).
    #[must_use]
    pub fn keeps(&self, entry: &Entry) -> bool {
        let size_ok = entry.size.is_none_or(|n| {
            self.min_size.is_none_or(|min| n >= min) && self.max_size.is_none_or(|max| n <= max)
        });
        let time_ok = match (entry.modified, self.modified_since) {
            (Some(m), Some(since)) => m >= since,
            _ => true,
        };
        size_ok && time_ok
    }

    /// `entries` without the ones the filter drops, still streamed.
    ///
    /// # Errors
    /// When an exclude glob does not parse.
    pub fn apply(self, entries: Box<dyn EntryStream>) -> Result<Box<dyn EntryStream>, SourceError> {
        if self.is_empty() {
            return Ok(entries);
        }
        let mut set = globset::GlobSetBuilder::new();
        for pattern in &self.exclude {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| SourceError::InvalidLocation {
                    location: pattern.clone(),
                    reason: format!("bad --exclude glob: {e}"),
                })?;
            set.add(glob);
        }
        let exclude = set.build().map_err(|e| SourceError::InvalidLocation {
            location: self.exclude.join(" "),
            reason: format!("bad --exclude globs: {e}"),
        })?;
        Ok(Box::new(Filtered {
            filter: self,
            exclude,
            inner: entries,
        }))
    }
}

struct Filtered {
    filter: EntryFilter,
    exclude: globset::GlobSet,
    inner: Box<dyn EntryStream>,
}

#[async_trait]
impl EntryStream for Filtered {
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        while let Some(e) = self.inner.next_entry().await? {
            if self.filter.keeps(&e) && !self.exclude.is_match(&e.relative) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }
}

/// `location` with the password of any `scheme://user:password@host` part,
/// and the query of an `http(s)://` URL (pre-signed URLs carry signatures
/// there), replaced by `***`, so it can be shown, logged and stored. URLs
/// are read by [`RemoteUrl::parse`], as the sources read them.
#[must_use]
pub fn redact(location: &str) -> String {
    rota_url::redact(location)
}

/// The compiled glob of a listing request, if it has one. Globs match
/// paths relative to the listed directory as shells do: `*` and `?` stay
/// within one path segment, `**` crosses any number.
///
/// # Errors
/// When the glob does not parse.
pub(crate) fn glob_matcher(req: &ListRequest) -> Result<Option<GlobMatcher>, SourceError> {
    req.glob
        .as_ref()
        .map(|g| {
            globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| SourceError::InvalidLocation {
                    location: redact(&req.location),
                    reason: format!("bad glob '{}': {e}", g),
                })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::{EntryFilter, redact};
    use rota_core::source::Entry;

    #[test]
    fn filters_keep_by_size_and_time_and_keep_the_unknown() {
        let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().expect("time");
        let entry = |size: Option<u64>, modified: Option<&str>| Entry {
            location: "x".into(),
            relative: "x".into(),
            size,
            modified: modified.map(at),
            etag: None,
        };
        let f = EntryFilter {
            min_size: Some(10),
            max_size: Some(100),
            modified_since: Some(at("2026-01-01T00:00:00Z")),
            exclude: Vec::new(),
        };
        assert!(f.keeps(&entry(Some(10), Some("2026-01-01T00:00:00Z"))));
        assert!(f.keeps(&entry(Some(100), None)));
        assert!(f.keeps(&entry(None, Some("2026-06-01T00:00:00Z"))));
        assert!(!f.keeps(&entry(Some(9), Some("2026-06-01T00:00:00Z"))));
        assert!(!f.keeps(&entry(Some(101), Some("2026-06-01T00:00:00Z"))));
        assert!(!f.keeps(&entry(Some(50), Some("2025-12-31T23:59:59Z"))));
        assert!(EntryFilter::default().is_empty() && !f.is_empty());
    }

    #[test]
    fn globs_in_locations_split_into_a_directory_and_a_pattern() {
        use super::split_glob;
        let split = split_glob;
        assert_eq!(
            split("s3://b/logs/2026-*/*.csv"),
            Some(("s3://b/logs/".into(), "2026-*/*.csv".into(), true))
        );
        assert_eq!(
            split("sftp://u@h/data/*.csv"),
            Some(("sftp://u@h/data/".into(), "*.csv".into(), false))
        );
        assert_eq!(
            split("/no/such/dir/**/x?.ndjson"),
            Some(("/no/such/dir/".into(), "**/x?.ndjson".into(), true))
        );
        assert_eq!(split("s3://b/logs/"), None);
        assert_eq!(
            split("https://h/a.csv?token=x"),
            None,
            "a query, not a glob"
        );
        assert_eq!(split("s3://b*/x"), None, "no glob in the bucket");
        let dir = tempfile::tempdir().expect("tempdir");
        let odd = dir.path().join("data[1].csv");
        std::fs::write(&odd, "a\n").expect("write");
        assert_eq!(split(odd.to_str().expect("path")), None, "an existing file");
    }

    #[test]
    fn redacts_passwords_and_http_queries_only() {
        assert_eq!(redact("sftp://u:pw@h:22/d/"), "sftp://u:***@h:22/d/");
        assert_eq!(redact("https://u:p@ss@h/x?a=b@c"), "https://u:***@h/x?***");
        assert_eq!(redact("sftp://u@h/d"), "sftp://u@h/d");
        assert_eq!(redact("/tmp/a@b:c"), "/tmp/a@b:c");
        assert_eq!(redact("s3://bucket/k@x:y"), "s3://bucket/k@x:y");
        assert_eq!(redact("s3://bucket/a?b=c"), "s3://bucket/a?b=c");
        assert_eq!(
            redact("https://u:pw@h/f.csv?X-Amz-Signature=abc"),
            "https://u:***@h/f.csv?***"
        );
    }
}
