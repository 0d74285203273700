//! Object stores spoken over HTTP: S3-compatible buckets (`s3://bucket/prefix/`)
//! and single files on plain HTTP(S) servers (`https://host/path/file.csv`),
//! both through the `object_store` crate.
//!
//! # S3
//!
//! The bucket is the URL's host; the rest of the path is the key, taken as
//! written (not percent-decoded, as `aws s3` takes it). Configuration comes
//! from the environment, under the names the AWS tools use:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_REGION` (default `us-east-1`), `AWS_ENDPOINT_URL` for an
//! S3-compatible server (requests are then path-style, and an `http://`
//! endpoint is allowed), `AWS_SKIP_SIGNATURE=true` for public buckets.
//!
//! A location ending in `/`, or one naming no object, is a prefix: its keys
//! are listed in key order as the server pages them, never gathered first.
//!
//! # HTTP(S)
//!
//! A URL names one file; HTTP has no directory listing (use `webdav://` for
//! that). `https://user:password@host/…` sends basic authentication; the
//! password never appears in entries, errors or logs, and only the ingest
//! it was given with can open the entries its listing found (their
//! locations show it as `***`).
//!
//! Clients are kept per host (or bucket) and credentials in the registry
//! of whoever runs the source ([`crate::Connections`]). A listing is held
//! to [`crate::ListingLimits`].
//!
//! # Reading
//!
//! Bytes stream as the server sends them. Random access (Parquet footers,
//! spreadsheets) uses ranged requests. A body that breaks mid-way is resumed
//! with a ranged request that must match the object's ETag (or, without one,
//! its modification time), with jittered backoff between attempts; when it
//! cannot be resumed the read fails — a short body is never taken as whole.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use globset::GlobMatcher;
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig,
};
use rota_core::SourceError;
use rota_core::source::{ByteStream, Entry, EntryStream, ListRequest, ReadAt, Source};

use crate::registry::{Held, Key};
use crate::resume::RESUME_ATTEMPTS;
use crate::{glob_matcher, redact};

/// S3-compatible buckets and HTTP(S) files.
#[derive(Debug, Clone)]
pub struct ObjectSource {
    s3: S3Settings,
    held: Held,
    listing: crate::ListingLimits,
    egress: crate::Egress,
}

impl Default for ObjectSource {
    fn default() -> Self {
        Self::new(S3Settings::default())
    }
}

impl ObjectSource {
    /// A source reaching S3 with `s3`, keeping its clients in a registry of
    /// its own.
    #[must_use]
    pub fn new(s3: S3Settings) -> Self {
        Self::held(s3, Held::own())
    }

    /// A source reaching S3 with `s3`, with the registry and passwords in
    /// `held`.
    pub(crate) fn held(s3: S3Settings, held: Held) -> Self {
        Self {
            s3,
            held,
            listing: crate::ListingLimits::default(),
            egress: crate::Egress::default(),
        }
    }

    /// This source with its listings held to `listing`.
    #[must_use]
    pub fn with_listing(self, listing: crate::ListingLimits) -> Self {
        Self { listing, ..self }
    }

    /// The same, reaching HTTP(S) and WebDAV servers only where `egress`
    /// permits (S3 goes where its endpoint setting says).
    #[must_use]
    pub fn with_egress(self, egress: crate::Egress) -> Self {
        Self { egress, ..self }
    }

    /// A source configured from the environment (see [`S3Settings::from_env`]).
    #[must_use]
    pub fn from_env() -> Self {
        Self::new(S3Settings::from_env())
    }
}

/// How to reach an S3-compatible server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The server's URL, for anything but AWS itself; requests are then
    /// path-style, and an `http://` endpoint is allowed.
    pub endpoint: Option<String>,
    /// The region to sign for; `us-east-1` when none is given.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// A session token, for temporary credentials.
    pub session_token: Option<String>,
    /// Send unsigned requests (public buckets).
    pub skip_signature: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &hidden(&self.access_key_id))
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("skip_signature", &self.skip_signature)
            .finish()
    }
}

impl S3Settings {
    /// Settings from the variables the AWS tools read: `AWS_ENDPOINT_URL`
    /// (or `AWS_ENDPOINT`), `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and
    /// `AWS_SKIP_SIGNATURE=true`.
    #[must_use]
    pub fn from_env() -> Self {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        Self {
            endpoint: var(&["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]),
            region: var(&["AWS_REGION", "AWS_DEFAULT_REGION"]),
            access_key_id: var(&["AWS_ACCESS_KEY_ID"]),
            secret_access_key: var(&["AWS_SECRET_ACCESS_KEY"]),
            session_token: var(&["AWS_SESSION_TOKEN"]),
            skip_signature: var(&["AWS_SKIP_SIGNATURE"]).is_some_and(|v| v == "true"),
        }
    }

    /// What tells two settings apart, to key the store cache (hashed,
    /// see [`Key`]).
    fn fingerprint(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.endpoint,
            self.region,
            self.access_key_id,
            self.secret_access_key,
            self.session_token,
            self.skip_signature
        )
    }
}

/// What a location names, resolved against its store.
pub(crate) struct Target {
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket` or `https://host:port` (no userinfo): entries' locations
    /// start with it.
    pub(crate) base: String,
    /// The key or path inside the store.
    pub(crate) path: Path,
    /// True when the location ends in `/` (or is a bucket's root).
    pub(crate) dir: bool,
    http: bool,
    /// For `webdav(s)://`: how to list (reading is plain HTTP).
    webdav: Option<crate::webdav::Server>,
}

pub(crate) fn invalid(location: &str, reason: impl Into<String>) -> SourceError {
    SourceError::InvalidLocation {
        location: redact(location),
        reason: reason.into(),
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120))
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 5,
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    }
}

/// The HTTP client of HTTP(S) and WebDAV files: the options of
/// [`client_options`], with the egress filter's resolver, and redirects
/// refused (an error naming the host they point at) unless it follows them.
#[derive(Debug)]
struct Guarded {
    egress: crate::Egress,
    headers: object_store::HeaderMap,
    https_only: bool,
}

impl object_store::client::HttpConnector for Guarded {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        let client = self
            .egress
            .configure(reqwest::Client::builder())
            .user_agent(concat!("rota/", env!("CARGO_PKG_VERSION")))
            .default_headers(self.headers.clone())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .https_only(self.https_only)
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate()
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "HTTP",
                source: Box::new(e),
            })?;
        Ok(object_store::client::HttpClient::new(GuardedClient {
            client,
            refuse_redirects: !self.egress.follow_redirects,
        }))
    }
}

/// A client whose 3xx answers and refused addresses end the request, with
/// an error that says why (and is not retried).
#[derive(Debug)]
struct GuardedClient {
    client: reqwest::Client,
    refuse_redirects: bool,
}

#[async_trait]
impl object_store::client::HttpService for GuardedClient {
    async fn call(
        &self,
        req: object_store::client::HttpRequest,
    ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
        use object_store::client::{HttpError, HttpErrorKind};
        let answer = match object_store::client::HttpService::call(&self.client, req).await {
            Ok(answer) => answer,
            Err(e) => {
                // A name resolved to refused addresses: say so, once.
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    if let Some(refused) = s.downcast_ref::<crate::egress::Refused>() {
                        return Err(HttpError::new(HttpErrorKind::Unknown, refused.clone()));
                    }
                    source = s.source();
                }
                return Err(e);
            }
        };
        if self.refuse_redirects
            && answer.status().is_redirection()
            && answer.status() != reqwest::StatusCode::NOT_MODIFIED
        {
            return Err(HttpError::new(
                HttpErrorKind::Unknown,
                crate::egress::Redirected::from_location(
                    answer.headers().get(reqwest::header::LOCATION),
                ),
            ));
        }
        Ok(answer)
    }
}

impl Target {
    fn parse(
        location: &str,
        s3: &S3Settings,
        held: &Held,
        egress: &crate::Egress,
    ) -> Result<Self, SourceError> {
        let url = crate::RemoteUrl::parse(location).map_err(|reason| invalid(location, reason))?;
        match url.scheme() {
            "s3" => Self::s3(
                location,
                url.host_str(),
                url.path().strip_prefix('/').unwrap_or(url.path()),
                s3,
                held,
            ),
            "http" | "https" | "webdav" | "webdavs" => Self::http(location, &url, held, egress),
            other => Err(invalid(
                location,
                format!("not an object store scheme: {other}"),
            )),
        }
    }

    fn s3(
        location: &str,
        bucket: &str,
        key: &str,
        s3: &S3Settings,
        held: &Held,
    ) -> Result<Self, SourceError> {
        if bucket.contains('@') {
            return Err(invalid(
                location,
                "credentials do not belong in an s3:// URL; set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY in the environment",
            ));
        }
        let path = Path::parse(key)
            .map_err(|e| invalid(location, format!("not a valid object key: {e}")))?;
        let base = format!("s3://{bucket}");
        let store = cached(held, &[&base, &s3.fingerprint()], || {
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(s3.region.as_deref().unwrap_or("us-east-1"))
                .with_skip_signature(s3.skip_signature)
                .with_retry(retry_config());
            let mut options = client_options();
            if let Some(endpoint) = &s3.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
                if endpoint.starts_with("http://") {
                    options = options.with_allow_http(true);
                }
            }
            if let Some(v) = &s3.access_key_id {
                b = b.with_access_key_id(v);
            }
            if let Some(v) = &s3.secret_access_key {
                b = b.with_secret_access_key(v);
            }
            if let Some(v) = &s3.session_token {
                b = b.with_token(v);
            }
            b.with_client_options(options)
                .build()
                .map(limited)
                .map_err(|e| invalid(location, format!("cannot configure S3: {e}")))
        })?;
        Ok(Self {
            store,
            base,
            dir: key.is_empty() || key.ends_with('/'),
            path,
            http: false,
            webdav: None,
        })
    }

    fn http(
        location: &str,
        url: &crate::RemoteUrl,
        held: &Held,
        egress: &crate::Egress,
    ) -> Result<Self, SourceError> {
        let scheme = url.scheme();
        let host = url.host_port();
        // A fragment is not part of what is fetched.
        if url.query().is_some() {
            return Err(invalid(
                location,
                "URLs with a query string (such as pre-signed URLs) are not supported; \
                 name the file without one",
            ));
        }
        let url_path = url.path().strip_prefix('/').unwrap_or(url.path());
        // WebDAV is HTTP on the wire; entries keep the scheme they were listed by.
        let wire = match scheme {
            "webdav" => "http",
            "webdavs" => "https",
            other => other,
        };
        let wire_base = format!("{wire}://{host}");
        let mut headers = object_store::HeaderMap::new();
        // Entries carry the user with the password as `***`; the password
        // itself stays with the ingest, found again by host and user.
        // The user and password, to tell stores apart (hashed, see `Key`).
        let mut credentials = String::new();
        let base = match url.user_encoded() {
            Some(user) => {
                let password = url.password_encoded().unwrap_or_default();
                let password = held.credentials.password(
                    location,
                    &wire_base,
                    &percent_decode(user),
                    &percent_decode(password),
                    password == "***",
                )?;
                let plain = format!("{}:{}", percent_decode(user), password);
                credentials.clone_from(&plain);
                let mut value = object_store::HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64(plain.as_bytes())
                ))
                .map_err(|_| {
                    invalid(
                        location,
                        "the credentials in the URL are not valid header text",
                    )
                })?;
                value.set_sensitive(true);
                headers.insert("authorization", value);
                format!("{scheme}://{user}:***@{host}")
            }
            None => format!("{scheme}://{host}"),
        };
        let egress_key = format!("{egress:?}");
        let store = cached(held, &[&wire_base, &credentials, &egress_key], || {
            let mut options = client_options().with_allow_http(wire == "http");
            if !headers.is_empty() {
                options = options.with_default_headers(headers.clone());
            }
            object_store::http::HttpBuilder::new()
                .with_url(&wire_base)
                .with_client_options(options)
                .with_http_connector(Guarded {
                    egress: egress.clone(),
                    headers: headers.clone(),
                    https_only: wire == "https",
                })
                .with_retry(retry_config())
                .build()
                .map(limited)
                .map_err(|e| invalid(location, format!("cannot configure HTTP: {e}")))
        })?;
        let path = Path::from_url_path(url_path)
            .map_err(|e| invalid(location, format!("not a valid URL path: {e}")))?;
        let webdav = scheme
            .starts_with("webdav")
            .then(|| crate::webdav::Server::new(&wire_base, headers, location, egress))
            .transpose()?;
        Ok(Self {
            store,
            base,
            dir: url_path.is_empty() || url_path.ends_with('/'),
            path,
            http: true,
            webdav,
        })
    }

    /// An entry's location: the base and the key, encoded as the scheme needs.
    fn location_of(&self, path: &Path) -> String {
        if self.http {
            let encoded: Vec<String> = path
                .parts()
                .map(|p| percent_encode(&percent_decode(p.as_ref())))
                .collect();
            format!("{}/{}", self.base, encoded.join("/"))
        } else {
            format!("{}/{}", self.base, path.as_ref())
        }
    }

    fn entry(&self, meta: ObjectMeta, relative: String) -> Entry {
        Entry {
            location: self.location_of(&meta.location),
            relative,
            size: Some(meta.size),
            modified: Some(meta.last_modified),
            etag: meta.e_tag,
        }
    }

    fn error(&self, location: &str, e: object_store::Error) -> SourceError {
        store_error(self.http, location, e)
    }
}

/// The error for a failed call on `location`, with no secret and no server
/// response body in it (S3 error bodies echo the access key id).
pub(crate) fn store_error(http: bool, location: &str, e: object_store::Error) -> SourceError {
    let location = redact(location);
    match e {
        object_store::Error::NotFound { .. } => SourceError::NotFound { location },
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => SourceError::AccessDenied {
            location,
            hint: if http {
                "the server refused the request (HTTP 401/403); give credentials as \
                     https://user:password@host/… or check the ones given"
                    .to_owned()
            } else {
                "the server refused the credentials; check AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)"
                    .to_owned()
            },
        },
        object_store::Error::Precondition { .. } => SourceError::Remote {
            location,
            reason: "the object changed while it was being read (its ETag or \
                         modification time moved); ingest it again"
                .to_owned(),
        },
        other => {
            let text = other.to_string();
            // Listings report statuses only as text.
            if text.contains("status code: 401") || text.contains("status code: 403") {
                return store_error(
                    http,
                    &location,
                    object_store::Error::PermissionDenied {
                        path: String::new(),
                        source: text.into(),
                    },
                );
            }
            let reason = if !http
                && (text.contains("NoSuchBucket")
                    || (text.contains("list request") && text.contains("status code: 404")))
            {
                "the bucket does not exist; check the bucket name (the URL's host) and \
                 AWS_ENDPOINT_URL"
                    .to_owned()
            } else {
                summary(&text)
            };
            SourceError::Remote { location, reason }
        }
    }
}

/// Requests in flight at once to one server (one bucket, one host), however
/// many files are being read from it.
pub const MAX_REQUESTS_PER_SERVER: usize = 16;

fn limited<T: ObjectStore>(store: T) -> Arc<dyn ObjectStore> {
    Arc::new(object_store::limit::LimitStore::new(
        store,
        MAX_REQUESTS_PER_SERVER,
    ))
}

/// The store for `parts` (its base and credentials), built once and kept in
/// the registry of `held`.
fn cached(
    held: &Held,
    parts: &[&str],
    build: impl FnOnce() -> Result<Arc<dyn ObjectStore>, SourceError>,
) -> Result<Arc<dyn ObjectStore>, SourceError> {
    let registry = held.registry();
    registry
        .stores
        .get_or_build(registry, Key::of(parts), build)
}

/// One line of an `object_store` error: the first line, without the server's
/// response body (which can quote request headers) and with any URL userinfo
/// redacted.
fn summary(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text);
    let line = line.split_once('<').map_or(line, |(head, _)| head);
    let words: Vec<String> = line.split(' ').map(redact).collect();
    words.join(" ").trim_end_matches([' ', ':']).to_owned()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Percent-encodes one path segment (everything but unreserved characters).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A prefix listing: keys under the prefix as the server pages them.
struct Listing {
    target: Target,
    /// The prefix with its trailing `/` (empty at a bucket's root).
    prefix: String,
    recursive: bool,
    glob: Option<GlobMatcher>,
    stream: BoxStream<'static, object_store::Result<ObjectMeta>>,
    single: Option<Entry>,
    location: String,
}

#[async_trait]
impl EntryStream for Listing {
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        if let Some(single) = self.single.take() {
            return Ok(Some(single));
        }
        while let Some(meta) = self.stream.next().await {
            let meta = meta.map_err(|e| self.target.error(&self.location, e))?;
            let Some(relative) = meta.location.as_ref().strip_prefix(&self.prefix) else {
                continue;
            };
            // Zero-byte "folder" markers some tools create.
            if relative.is_empty() || relative.ends_with('/') {
                continue;
            }
            if !self.recursive && relative.contains('/') {
                continue;
            }
            if self.glob.as_ref().is_some_and(|g| !g.is_match(relative)) {
                continue;
            }
            let relative = relative.to_owned();
            return Ok(Some(self.target.entry(meta, relative)));
        }
        Ok(None)
    }
}

impl ObjectSource {
    async fn list_target(
        target: Target,
        req: &ListRequest,
    ) -> Result<Box<dyn EntryStream>, SourceError> {
        if let Some(server) = &target.webdav {
            return server.list(&target, req).await;
        }
        let glob = glob_matcher(req)?;
        let mut single = None;
        let mut prefix = target.path.as_ref().to_owned();
        // An error of the HEAD that may only mean "that is a prefix" (some
        // servers answer a key that is a directory on their disk with 500).
        let mut head_error = None;
        if !target.dir {
            match target.store.head(&target.path).await {
                Ok(meta) => {
                    let name = target.path.filename().unwrap_or_default();
                    let relative = if target.http {
                        percent_decode(name)
                    } else {
                        name.to_owned()
                    };
                    single = Some(target.entry(meta, relative));
                }
                Err(object_store::Error::NotFound { .. }) if !target.http => {}
                Err(e) if !target.http && matches!(e, object_store::Error::Generic { .. }) => {
                    head_error = Some(target.error(&req.location, e));
                }
                Err(e) => return Err(target.error(&req.location, e)),
            }
        }
        if target.http {
            if target.dir {
                return Err(invalid(
                    &req.location,
                    "HTTP has no directory listing: name a file, or use webdav:// for a directory",
                ));
            }
            return Ok(Box::new(Listing {
                stream: futures::stream::empty().boxed(),
                prefix,
                recursive: false,
                glob: None,
                single,
                location: redact(&req.location),
                target,
            }));
        }
        let stream = if single.is_some() {
            futures::stream::empty().boxed()
        } else {
            let listed = if prefix.is_empty() {
                None
            } else {
                Some(
                    Path::parse(prefix.trim_end_matches('/'))
                        .map_err(|e| invalid(&req.location, format!("not a valid prefix: {e}")))?,
                )
            };
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            target.store.list(listed.as_ref())
        };
        let mut listing = Listing {
            stream,
            prefix,
            recursive: req.recursive,
            glob,
            single,
            location: redact(&req.location),
            target,
        };
        if listing.single.is_none() && !listing.target.dir {
            // No object by that name: it is a prefix, unless nothing is under it.
            listing.single = match listing.next_entry().await {
                Ok(first) => first,
                Err(e) => return Err(head_error.unwrap_or(e)),
            };
            if listing.single.is_none() {
                return Err(head_error.unwrap_or_else(|| SourceError::NotFound {
                    location: redact(&req.location),
                }));
            }
        }
        Ok(Box::new(listing))
    }
}

/// A body being read, resumed by range when it breaks.
struct Body {
    store: Arc<dyn ObjectStore>,
    path: Path,
    location: String,
    http: bool,
    stream: BoxStream<'static, object_store::Result<bytes::Bytes>>,
    /// The next byte expected, and the end of the range being read.
    pos: u64,
    end: u64,
    etag: Option<String>,
    modified: DateTime<Utc>,
    /// Breaks since the last byte arrived.
    breaks: u32,
}

impl Body {
    fn error(&self, e: object_store::Error) -> SourceError {
        store_error(self.http, &self.location, e)
    }

    /// Re-requests the rest of the range after a break, if the object is
    /// still the one that was being read. Breaks in a row without a byte
    /// between them are limited; the request itself is retried by the
    /// client on transient failures, and its failure ends the read.
    async fn resume(&mut self, cause: &str) -> Result<(), SourceError> {
        let broke = |reason: String| SourceError::Remote {
            location: self.location.clone(),
            reason: format!(
                "the connection broke at byte {} of {} ({cause}); {reason}",
                self.pos, self.end
            ),
        };
        self.breaks += 1;
        if self.breaks > RESUME_ATTEMPTS {
            return Err(broke(format!(
                "{RESUME_ATTEMPTS} resumed requests in a row brought no byte"
            )));
        }
        crate::resume::pause_before(self.breaks).await;
        let options = GetOptions {
            range: Some(GetRange::Bounded(self.pos..self.end)),
            if_match: self.etag.clone(),
            if_unmodified_since: self.etag.is_none().then_some(self.modified),
            ..GetOptions::default()
        };
        match self.store.get_opts(&self.path, options).await {
            Ok(result) if result.range.start == self.pos => {
                self.stream = result.into_stream();
                Ok(())
            }
            Ok(result) => Err(broke(format!(
                "asked to resume there, the server answered from byte {}",
                result.range.start
            ))),
            Err(e @ object_store::Error::Precondition { .. }) => Err(self.error(e)),
            Err(e) => Err(broke(format!(
                "resuming failed: {}",
                self.error(e)
                    .to_string()
                    .trim_start_matches(&format!("{}: ", self.location))
            ))),
        }
    }
}

#[async_trait]
impl ByteStream for Body {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            match self.stream.next().await {
                Some(Ok(bytes)) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    let len = bytes.len() as u64;
                    if self.pos + len > self.end {
                        return Err(SourceError::Remote {
                            location: self.location.clone(),
                            reason: format!(
                                "the server sent more than the {} bytes asked for",
                                self.end
                            ),
                        });
                    }
                    self.pos += len;
                    self.breaks = 0;
                    return Ok(Some(bytes.into()));
                }
                Some(Err(e)) => {
                    let cause = summary(&e.to_string());
                    self.resume(&cause).await?;
                }
                None => {
                    let cause = format!("the body ended at byte {} of {}", self.pos, self.end);
                    self.resume(&cause).await?;
                }
            }
        }
    }
}

#[async_trait]
impl Source for ObjectSource {
    fn schemes(&self) -> &'static [&'static str] {
        &["s3", "http", "https", "webdav", "webdavs"]
    }

    async fn list(&self, req: &ListRequest) -> Result<Box<dyn EntryStream>, SourceError> {
        let target = Target::parse(&req.location, &self.s3, &self.held, &self.egress)?;
        let listing = tokio::time::timeout(self.listing.stall, Self::list_target(target, req))
            .await
            .map_err(|_| SourceError::Remote {
                location: redact(&req.location),
                reason: format!(
                    "the listing found no file within {} s; narrow the location or the glob",
                    self.listing.stall.as_secs_f64()
                ),
            })??;
        Ok(Box::new(crate::Bounded {
            inner: listing,
            limits: self.listing,
            location: redact(&req.location),
            listed: 0,
        }))
    }

    async fn open(
        &self,
        entry: &Entry,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn ByteStream>, SourceError> {
        let target = Target::parse(&entry.location, &self.s3, &self.held, &self.egress)?;
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            if_match: entry.etag.clone(),
            ..GetOptions::default()
        };
        let result = match target.store.get_opts(&target.path, options).await {
            Ok(r) => r,
            Err(e) => return Err(target.error(&entry.location, e)),
        };
        Ok(Box::new(Body {
            pos: result.range.start,
            end: result.range.end,
            etag: result.meta.e_tag.clone(),
            modified: result.meta.last_modified,
            stream: result.into_stream(),
            store: target.store,
            path: target.path,
            location: redact(&entry.location),
            http: target.http,
            breaks: 0,
        }))
    }

    async fn random_access(&self, entry: &Entry) -> Result<Option<Arc<dyn ReadAt>>, SourceError> {
        let target = Target::parse(&entry.location, &self.s3, &self.held, &self.egress)?;
        let mut entry = entry.clone();
        if entry.size.is_none() {
            let meta = target
                .store
                .head(&target.path)
                .await
                .map_err(|e| target.error(&entry.location, e))?;
            entry.etag = entry.etag.or(meta.e_tag);
            entry.size = Some(meta.size);
        }
        Ok(crate::ranged::ranged_at(Arc::new(self.clone()), &entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn percent_round_trip() {
        for s in ["a b", "100%", "hash#1", "ünï", "plain.csv"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn summaries_drop_bodies_and_passwords() {
        let s = summary(
            "Error performing GET https://u:secret@h/x: 403 Forbidden: <Error><AWSAccessKeyId>AK</AWSAccessKeyId>\nmore",
        );
        assert!(
            !s.contains("secret") && !s.contains("AK<") && !s.contains("more"),
            "{s}"
        );
        assert!(s.contains("403 Forbidden"), "{s}");
    }
}
