//! Stream batching over resumable uploads: tus 1.0.0 at `/uploads`, and a
//! one-shot `POST /uploads/stream` for clients without tus.
//!
//! ```text
//! PATCH bytes ─► <dir>/<id>/data (fdatasync) ─► meta.json offset ─► watch
//!                                                                    │
//!             ingest (the pipeline) ◄─ upload://<id>/<name> source ◄─┘ (follows the file)
//! ```
//!
//! Bytes are on disk (synced) before `Upload-Offset` moves past them, and the
//! decoder only ever reads bytes whose offset was recorded, so what it sees
//! survives a crash. The upload's job is created (held) when the upload is;
//! its tasks are made as batches fill, with the same keys however the bytes
//! were cut, and become claimable when the upload completes. After a restart
//! each unfinished upload's ingest runs again from its first byte: the tasks
//! it made before are the same tasks (inserts are idempotent on their keys),
//! so no row is lost or doubled, and the client resumes at the recorded
//! offset. Uploads live on the disk of the server that took them.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State as Extract;

use crate::error::{Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use rota_core::source::{ByteStream, Entry, EntryStream, ListRequest, Source};
use rota_core::{JobId, OnError, PayloadEncoding, SourceError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha1::Digest as _;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::routes::{BatchRequest, JobRequest};
use crate::{Scope, State};

/// The URL scheme under which the pipeline reads an upload.
pub(crate) const SCHEME: &str = "upload";
/// The tus protocol version spoken.
const TUS_VERSION: &str = "1.0.0";
/// The tus extensions offered.
const TUS_EXTENSIONS: &str = "creation,creation-defer-length,checksum,expiration,termination";
/// Bytes received between two syncs of an upload (each sync moves the
/// recorded offset, so a broken request keeps what came before it).
const SYNC_EVERY: usize = 16 << 20;
/// Bytes handed to the decoder per read.
const READ_CHUNK: usize = 1 << 20;
/// How often expired uploads are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The longest pause before an upload's ingest that stopped on a store
/// error is run again.
const INGEST_RETRY_MAX: Duration = Duration::from_secs(30);

/// Where uploads are kept, and their limits.
#[derive(Clone, Debug)]
pub struct UploadConfig {
    /// The directory holding one subdirectory per upload.
    pub dir: PathBuf,
    /// How long an upload may go without receiving bytes before it expires
    /// (and a finished one is forgotten).
    pub expire_after: Duration,
    /// The largest upload accepted, in bytes.
    pub max_size: u64,
    /// Longest a request body (a PATCH, a one-shot upload) may go without
    /// a byte: the request then ends with 408, and what arrived before is
    /// kept (a tus upload resumes at its recorded offset).
    pub idle_timeout: Duration,
    /// Most unfinished uploads the server holds at once, over every token
    /// (each has an ingest following its bytes); more answer 503.
    pub max_open: usize,
    /// Most unfinished uploads one token holds at once; more answer 429.
    pub max_open_per_token: usize,
    /// Most bytes the unfinished uploads of one token may hold (a declared
    /// length counts whole from the start); more answer 429, or 413 for one
    /// upload larger than this alone.
    pub max_bytes_per_token: u64,
    /// Free bytes the file system of `dir` must keep: an upload (or a PATCH)
    /// that would leave less is refused with 507 and `Retry-After`.
    pub min_free: u64,
    /// Threads that write upload bytes to disk (and sync them): a pool of
    /// their own, apart from the one the store runs on, and held only while
    /// bytes are written, never while a request waits for them.
    pub writers: usize,
}

/// The default of [`UploadConfig::max_size`]: 64 GiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 64 << 30;
/// The default of [`UploadConfig::idle_timeout`]: 60 s.
pub const DEFAULT_UPLOAD_IDLE: Duration = Duration::from_secs(60);
/// The default of [`UploadConfig::max_open`].
pub const DEFAULT_MAX_OPEN_UPLOADS: usize = 128;
/// The default of [`UploadConfig::max_open_per_token`].
pub const DEFAULT_MAX_OPEN_UPLOADS_PER_TOKEN: usize = 16;
/// The default of [`UploadConfig::max_bytes_per_token`]: 256 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES_PER_TOKEN: u64 = 256 << 30;
/// The default of [`UploadConfig::min_free`]: 1 GiB.
pub const DEFAULT_UPLOAD_MIN_FREE: u64 = 1 << 30;
/// The default of [`UploadConfig::writers`].
pub const DEFAULT_UPLOAD_WRITERS: usize = 4;

impl UploadConfig {
    /// Uploads kept in `dir`, expiring after a day, with the default limits
    /// (the `DEFAULT_*` constants).
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            expire_after: Duration::from_secs(24 * 3600),
            max_size: DEFAULT_MAX_UPLOAD,
            idle_timeout: DEFAULT_UPLOAD_IDLE,
            max_open: DEFAULT_MAX_OPEN_UPLOADS,
            max_open_per_token: DEFAULT_MAX_OPEN_UPLOADS_PER_TOKEN,
            max_bytes_per_token: DEFAULT_MAX_UPLOAD_BYTES_PER_TOKEN,
            min_free: DEFAULT_UPLOAD_MIN_FREE,
            writers: DEFAULT_UPLOAD_WRITERS,
        }
    }
}

/// What a refusal that may pass later (429, 503, 507) asks clients to wait,
/// in seconds, in `Retry-After`.
const RETRY_AFTER_SECS: u64 = 10;

/// The threads doing the uploads' disk work. Jobs queue (asynchronously)
/// when every thread is busy; a request waiting for bytes holds none.
struct Writers {
    jobs: Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl Writers {
    fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("rota-upload-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match job {
                            // A panic loses its job's answer, not the thread.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on a writer thread; its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| internal("the upload writers stopped".to_owned()))?;
        rx.await
            .map_err(|_| internal("an upload writer failed".to_owned()))
    }
}

/// The free bytes of the file system holding `dir`, for unprivileged users.
fn free_space(dir: &FsPath) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Refuses when the file system of `dir` has less than `min_free` bytes
/// free once `more` are written.
fn check_room(dir: &FsPath, min_free: u64, more: u64) -> Result<(), ApiError> {
    let free = free_space(dir).map_err(|e| {
        internal(format!(
            "cannot tell the free space of the upload directory: {e}"
        ))
    })?;
    if free < min_free.saturating_add(more) {
        return Err(insufficient_storage(format!(
            "the upload directory has {free} bytes free and keeps {min_free} free{}; try again later",
            if more > 0 {
                format!(", too few for {more} more")
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}

fn insufficient_storage(message: String) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        message,
    )
}

/// An I/O failure on an upload's files: 507 when the disk or a quota is
/// full (the client may resume later), else 500.
fn io_failure(what: &str, id: &str, e: &std::io::Error) -> ApiError {
    let full = rustix::io::Errno::from_io_error(e).is_some_and(|n| {
        n == rustix::io::Errno::NOSPC
            || n == rustix::io::Errno::DQUOT
            || n == rustix::io::Errno::FBIG
    });
    if full {
        insufficient_storage(format!(
            "the upload directory is full: cannot {what} upload {id} ({e}); the bytes recorded so far are kept: try again later"
        ))
    } else {
        internal(format!("cannot {what} upload {id}: {e}"))
    }
}

/// How long a request waits for another one writing to the same upload
/// before it is answered 423.
const WRITER_WAIT: Duration = Duration::from_secs(5);

/// An error as a response, with `Retry-After` when trying later may pass.
fn answer(e: ApiError) -> Response {
    let retry = matches!(
        e.status,
        StatusCode::LOCKED
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::INSUFFICIENT_STORAGE
    );
    let mut response = e.into_response();
    if retry {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER_SECS),
        );
    }
    response
}

/// What is recorded of an upload, in `meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    id: String,
    job: JobId,
    /// The total length, once known.
    length: Option<u64>,
    /// Bytes received and synced.
    offset: u64,
    /// The `Upload-Metadata` header as sent, echoed on `HEAD`.
    raw_metadata: Option<String>,
    /// The metadata, decoded.
    metadata: BTreeMap<String, String>,
    created: DateTime<Utc>,
    expires: DateTime<Utc>,
    /// How the upload's ingest ended: `None` while it runs.
    ended: Option<Ended>,
    /// Who made it: [`crate::Caller::id`] (a name of the token, never the
    /// token). Records of older versions have none: any token may use them.
    #[serde(default)]
    owner: Option<String>,
    /// The opaque name its bytes are read under (`upload://<source>/<file>`)
    /// and its job's key is made of, so that neither shows its id. Records
    /// of older versions have none and use the id, as they did.
    #[serde(default)]
    source: Option<String>,
}

/// How an upload's ingest ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ended {
    /// Why it failed, if it did.
    error: Option<String>,
}

impl Meta {
    fn complete(&self) -> bool {
        self.length == Some(self.offset)
    }

    /// The name the upload's bytes are read under.
    fn source(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.id)
    }

    /// Whether `caller` may see and change the upload.
    fn owned_by(&self, caller: &crate::Caller) -> bool {
        self.owner.as_deref().is_none_or(|o| caller.owns(o))
    }

    /// Bytes it holds (or will) on disk against its owner's quota: its
    /// declared length, else what arrived; nothing once its ingest ended
    /// (its bytes are removed then).
    fn held(&self) -> u64 {
        if self.ended.is_some() {
            0
        } else {
            self.length.unwrap_or(self.offset)
        }
    }
}

/// Where an upload's bytes stand, for the reader following them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tail {
    offset: u64,
    length: Option<u64>,
    /// Terminated or expired: no more bytes will come.
    gone: bool,
}

/// One upload.
struct Upload {
    dir: PathBuf,
    /// The name its bytes are read under ([`Meta::source`]).
    source: String,
    /// How long it may go without bytes.
    expire_after: chrono::Duration,
    meta: Mutex<Meta>,
    tail: watch::Sender<Tail>,
    /// Held while a request writes (until its writing task ends); one
    /// writer at a time.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Held while `meta.json` is changed, so that no change is lost.
    recording: tokio::sync::Mutex<()>,
    /// Where its disk work is done.
    writers: Arc<Writers>,
    /// The ingest filling the upload's job, while it runs.
    ingest: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set when the ingest ends.
    ended: watch::Sender<Option<Ended>>,
    /// Set when the upload is forgotten: its files are going away.
    gone: std::sync::atomic::AtomicBool,
}

impl Upload {
    fn meta(&self) -> Meta {
        self.meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tail(meta: &Meta, gone: bool) -> Tail {
        Tail {
            offset: meta.offset,
            length: meta.length,
            gone,
        }
    }

    /// Changes the upload's record with `change`, durably, then lets the
    /// reader see it; returns the new record.
    async fn update(&self, change: impl FnOnce(&mut Meta)) -> Result<Meta, ApiError> {
        let _recording = self.recording.lock().await;
        let mut meta = self.meta();
        change(&mut meta);
        let (dir, copy) = (self.dir.clone(), meta.clone());
        self.writers
            .run(move || write_meta(&dir, &copy))
            .await?
            .map_err(|e| io_failure("record", &meta.id, &e))?;
        self.publish(meta.clone());
        Ok(meta)
    }

    /// Makes a recorded `meta` the upload's, and lets the reader see it.
    fn publish(&self, meta: Meta) {
        let tail = Self::tail(&meta, false);
        *self
            .meta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = meta;
        self.tail.send_replace(tail);
    }
}

/// Writes `meta.json` whole, synced, in place of the old one.
fn write_meta(dir: &FsPath, meta: &Meta) -> std::io::Result<()> {
    let tmp = dir.join("meta.json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(meta).map_err(std::io::Error::other)?)?;
    file.sync_data()?;
    std::fs::rename(tmp, dir.join("meta.json"))
}

/// Where a creation notes the upload it makes for the job under `key`
/// until the upload is on disk (a file, which [`Uploads::open`] passes by).
fn creating(dir: &FsPath, key: &str) -> PathBuf {
    let digest = sha1::Sha1::digest(key.as_bytes());
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(".creating-{name}"))
}

/// Writes `bytes` to `path` (making its directory) and syncs both.
fn write_synced(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(path);
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

fn internal(message: String) -> ApiError {
    tracing::error!(error = %message, "upload failure");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// The uploads a server holds.
pub(crate) struct Uploads {
    config: UploadConfig,
    /// When this server opened its uploads: a creation noted before was
    /// interrupted by the end of an earlier server.
    opened: std::time::SystemTime,
    open: Mutex<Held>,
    metrics: Arc<crate::metrics::Metrics>,
    writers: Arc<Writers>,
}

/// The uploads, by id, and those being made, by owner (count, bytes).
#[derive(Default)]
struct Held {
    by_id: HashMap<String, Arc<Upload>>,
    making: HashMap<String, (usize, u64)>,
}

/// Room taken for an upload being made, against the quotas; given back
/// when dropped (the upload, once made, counts itself).
struct Reserved<'a> {
    uploads: &'a Uploads,
    owner: String,
    bytes: u64,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut held = self.uploads.lock();
        if let Some((n, bytes)) = held.making.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            *bytes = bytes.saturating_sub(self.bytes);
            if *n == 0 {
                held.making.remove(&self.owner);
            }
        }
    }
}

impl Uploads {
    /// The uploads in `config.dir` (made if missing). Bytes past an upload's
    /// recorded offset (a write the crash interrupted) are dropped.
    pub(crate) fn open(
        config: UploadConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.dir)?;
        let writers = Arc::new(Writers::new(config.writers)?);
        let mut open = HashMap::new();
        for entry in std::fs::read_dir(&config.dir)? {
            let dir = entry?.path();
            let Ok(text) = std::fs::read(dir.join("meta.json")) else {
                continue; // not an upload, or one whose creation did not finish
            };
            let meta: Meta = match serde_json::from_slice(&text) {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "unreadable upload record; left alone");
                    continue;
                }
            };
            if meta.ended.is_none() {
                let data = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("data"))?;
                data.set_len(meta.offset)?;
                data.sync_all()?;
            }
            let id = meta.id.clone();
            open.insert(id, Arc::new(new_upload(&config, &writers, dir, meta)));
        }
        Ok(Arc::new(Self {
            config,
            opened: std::time::SystemTime::now(),
            open: Mutex::new(Held {
                by_id: open,
                making: HashMap::new(),
            }),
            metrics,
            writers,
        }))
    }

    fn get(&self, id: &str) -> Option<Arc<Upload>> {
        self.lock().by_id.get(id).cloned()
    }

    /// The upload whose bytes are read under `source`.
    fn by_source(&self, source: &str) -> Option<Arc<Upload>> {
        self.lock()
            .by_id
            .values()
            .find(|u| u.source == source)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes room for a new upload of `owner` declaring `length` bytes, or
    /// says which limit it would pass.
    fn reserve(&self, owner: &str, length: Option<u64>) -> Result<Reserved<'_>, ApiError> {
        let c = &self.config;
        let bytes = length.unwrap_or(0);
        if bytes > c.max_bytes_per_token {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "an upload of {bytes} bytes is more than the {} bytes a token's unfinished uploads may hold",
                    c.max_bytes_per_token
                ),
            ));
        }
        let mut held = self.lock();
        let (mut open, mut mine, mut my_bytes) = (0, 0, 0u64);
        for upload in held.by_id.values() {
            let meta = upload.meta();
            if meta.ended.is_some() {
                continue;
            }
            open += 1;
            if meta.owner.as_deref() == Some(owner) {
                mine += 1;
                my_bytes = my_bytes.saturating_add(meta.held());
            }
        }
        for (who, (n, b)) in &held.making {
            open += n;
            if who == owner {
                mine += n;
                my_bytes = my_bytes.saturating_add(*b);
            }
        }
        if open >= c.max_open {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_uploads",
                format!(
                    "the server holds {open} unfinished uploads, the most it takes; try again later"
                ),
            ));
        }
        if mine >= c.max_open_per_token {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!(
                    "this token has {mine} unfinished uploads, the most it may have; finish or DELETE one first"
                ),
            ));
        }
        if my_bytes.saturating_add(bytes) > c.max_bytes_per_token {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "upload_quota",
                format!(
                    "this token's unfinished uploads hold {my_bytes} bytes; {bytes} more would pass its quota of {} bytes",
                    c.max_bytes_per_token
                ),
            ));
        }
        let entry = held.making.entry(owner.to_owned()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.saturating_add(bytes);
        Ok(Reserved {
            uploads: self,
            owner: owner.to_owned(),
            bytes,
        })
    }

    /// The bytes `upload` may still take before its owner's unfinished
    /// uploads pass their quota.
    fn room(&self, upload: &Upload) -> u64 {
        let meta = upload.meta();
        let Some(owner) = meta.owner.as_deref() else {
            return u64::MAX;
        };
        let held = self.lock();
        let mut used = held.making.get(owner).map_or(0, |(_, b)| *b);
        for other in held.by_id.values() {
            let m = other.meta();
            if m.owner.as_deref() == Some(owner) {
                used = used.saturating_add(m.held());
            }
        }
        self.config.max_bytes_per_token.saturating_sub(used)
    }

    /// Starts again the ingests of the uploads a stopped server left
    /// unfinished, and the sweeping of expired uploads.
    pub(crate) fn resume(self: &Arc<Self>, state: &State) {
        let unfinished: Vec<Arc<Upload>> = self
            .lock()
            .by_id
            .values()
            .filter(|u| u.meta().ended.is_none())
            .cloned()
            .collect();
        for upload in unfinished {
            let meta = upload.meta();
            tracing::info!(upload = %meta.id, offset = meta.offset, "resuming an upload's ingest");
            if let Err(e) = start_ingest(state, self, &upload) {
                tracing::error!(upload = %meta.id, error = %e, "cannot resume the upload's ingest");
            }
        }
        let every = SWEEP_EVERY
            .min(self.config.expire_after / 2)
            .max(Duration::from_millis(100));
        let (uploads, state) = (Arc::downgrade(self), state.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(uploads) = uploads.upgrade() else {
                    return;
                };
                uploads.sweep(&state).await;
            }
        });
    }

    /// Forgets expired uploads: an unfinished one's job fails.
    async fn sweep(&self, state: &State) {
        let now = Utc::now();
        let expired: Vec<Arc<Upload>> = self
            .lock()
            .by_id
            .values()
            .filter(|u| u.meta().expires <= now)
            .cloned()
            .collect();
        for upload in expired {
            let meta = upload.meta();
            if !meta.complete() {
                tracing::info!(upload = %meta.id, "upload expired before it completed");
                let reason = format!(
                    "upload {} expired at offset {} before it completed",
                    meta.id, meta.offset
                );
                if let Err(e) = state.store.fail_job(meta.job, reason, None).await {
                    tracing::warn!(job = %meta.job, error = %e, "could not fail an expired upload's job");
                }
            }
            self.forget(&upload, &meta.id).await;
        }
    }

    /// Stops the upload's ingest (and waits until it has stopped, so that
    /// nothing of it touches the files after), removes its files and
    /// forgets it.
    async fn forget(&self, upload: &Arc<Upload>, id: &str) {
        upload.gone.store(true, std::sync::atomic::Ordering::SeqCst);
        let ingest = upload
            .ingest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(ingest) = ingest {
            ingest.abort();
            let _ = ingest.await;
        }
        let meta = upload.meta();
        upload.tail.send_replace(Upload::tail(&meta, true));
        self.lock().by_id.remove(id);
        let dir = upload.dir.clone();
        let removed = self
            .writers
            .run(move || match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(upload = %id, error = %e, "could not remove an upload's files");
        }
    }
}

fn new_upload(config: &UploadConfig, writers: &Arc<Writers>, dir: PathBuf, meta: Meta) -> Upload {
    let tail = Upload::tail(&meta, false);
    let ended = meta.ended.clone();
    Upload {
        dir,
        source: meta.source().to_owned(),
        expire_after: chrono::Duration::from_std(config.expire_after)
            .unwrap_or(chrono::Duration::MAX),
        meta: Mutex::new(meta),
        tail: watch::Sender::new(tail),
        writing: Arc::new(tokio::sync::Mutex::new(())),
        recording: tokio::sync::Mutex::new(()),
        writers: Arc::clone(writers),
        ingest: Mutex::new(None),
        ended: watch::Sender::new(ended),
        gone: std::sync::atomic::AtomicBool::new(false),
    }
}

/// The routes under `/uploads`.
pub(crate) fn routes() -> axum::Router<State> {
    axum::Router::new()
        .route("/uploads", post(create).options(options))
        .route("/uploads/stream", post(one_shot))
        .route(
            "/uploads/{id}",
            get(info).head(head).patch(patch).delete(terminate),
        )
}

// ---- tus -------------------------------------------------------------------

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
const ROTA_JOB: HeaderName = HeaderName::from_static("rota-job-id");

/// A response carrying `Tus-Resumable`, as every tus response but
/// `OPTIONS`'s does.
struct Tus {
    status: StatusCode,
    headers: HeaderMap,
    body: Option<Value>,
}

impl Tus {
    fn new(status: StatusCode) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
        Self {
            status,
            headers,
            body: None,
        }
    }

    fn header(mut self, name: HeaderName, value: impl ToString) -> Self {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.insert(name, v);
        }
        self
    }

    /// Adds the headers saying where `meta` stands.
    fn position(mut self, meta: &Meta) -> Self {
        self = self.header(UPLOAD_OFFSET, meta.offset);
        self = match meta.length {
            Some(n) => self.header(UPLOAD_LENGTH, n),
            None => self.header(UPLOAD_DEFER_LENGTH, 1),
        };
        if !meta.complete() {
            self = self.header(UPLOAD_EXPIRES, http_date(meta.expires));
        }
        self.header(ROTA_JOB, meta.job)
    }
}

impl IntoResponse for Tus {
    fn into_response(self) -> Response {
        match self.body {
            Some(body) => (self.status, self.headers, axum::Json(body)).into_response(),
            None => (self.status, self.headers).into_response(),
        }
    }
}

/// A tus error: the JSON error body, with `Tus-Resumable`.
fn tus_error(e: ApiError) -> Response {
    let mut response = answer(e);
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Checks the token of a request to `/uploads`; returns the uploads and
/// who asks.
fn enabled(state: &State, headers: &HeaderMap) -> Result<(Arc<Uploads>, crate::Caller), ApiError> {
    let caller = state.config.tokens.caller(headers, Some(Scope::Schedule))?;
    let uploads = state
        .uploads
        .clone()
        .ok_or_else(|| ApiError::not_found("uploads are not enabled on this server"))?;
    Ok((uploads, caller))
}

/// Checks the token and the protocol version a tus request asks for.
fn admit(
    state: &State,
    headers: &HeaderMap,
) -> Result<(Arc<Uploads>, crate::Caller), Box<Response>> {
    let admitted = enabled(state, headers).map_err(|e| Box::new(tus_error(e)))?;
    match headers.get(TUS_RESUMABLE).map(HeaderValue::to_str) {
        Some(Ok(TUS_VERSION)) => Ok(admitted),
        _ => {
            let mut response = tus_error(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "unsupported_version",
                format!("send Tus-Resumable: {TUS_VERSION}"),
            ));
            response
                .headers_mut()
                .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            Err(Box::new(response))
        }
    }
}

fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid(format!("{name} must be a whole number of bytes")))
        })
        .transpose()
}

#[utoipa::path(options, path = "/uploads", tag = "uploads", security(()), responses((status = 204, description = "The tus version, extensions, checksum algorithms and largest upload, in headers")))]
pub(crate) async fn options(Extract(state): Extract<State>) -> Response {
    let max = state
        .uploads
        .as_ref()
        .map_or(0, |u| u.config.max_size)
        .to_string();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("tus-resumable", TUS_VERSION.to_owned()),
        ("tus-version", TUS_VERSION.to_owned()),
        ("tus-extension", TUS_EXTENSIONS.to_owned()),
        ("tus-max-size", max),
        ("tus-checksum-algorithm", "sha1".to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// Parses `Upload-Metadata`: `key base64,key base64,key`.
fn parse_metadata(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|_| {
                ApiError::invalid(format!(
                    "Upload-Metadata: the value of '{key}' is not base64"
                ))
            })?;
        let value = String::from_utf8(bytes).map_err(|_| {
            ApiError::invalid(format!(
                "Upload-Metadata: the value of '{key}' is not UTF-8"
            ))
        })?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// The job an upload's metadata asks for. Keys: `spec` (required),
/// `params` (a JSON object), `queue`, `max_attempts`, `idempotency_key`,
/// `filename`, `format`, `schema`, `encoding`, `max_rows`, `max_bytes`,
/// `payload`, `on_error`, and `option.NAME` for format options. Other keys
/// (`filetype`, …) are kept but not used.
fn job_request(source: &str, meta: &BTreeMap<String, String>) -> Result<JobRequest, ApiError> {
    fn num<T: std::str::FromStr>(
        meta: &BTreeMap<String, String>,
        key: &str,
    ) -> Result<Option<T>, ApiError> {
        meta.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("metadata '{key}' must be a number")))
            })
            .transpose()
    }
    fn parsed<T: serde::de::DeserializeOwned>(
        meta: &BTreeMap<String, String>,
        key: &str,
    ) -> Result<Option<T>, ApiError> {
        meta.get(key)
            .map(|v| {
                serde_json::from_value(Value::String(v.clone()))
                    .map_err(|e| ApiError::invalid(format!("metadata '{key}': {e}")))
            })
            .transpose()
    }
    let spec = meta
        .get("spec")
        .cloned()
        .ok_or_else(|| ApiError::invalid("Upload-Metadata needs a 'spec'"))?;
    let params = meta
        .get("params")
        .map(|p| {
            serde_json::from_str::<Value>(p)
                .map_err(|e| ApiError::invalid(format!("metadata 'params' is not JSON: {e}")))
        })
        .transpose()?;
    let name = meta
        .get("filename")
        .map(|f| f.rsplit(['/', '\\']).next().unwrap_or(f).trim())
        .filter(|f| !f.is_empty() && *f != "." && *f != "..")
        .unwrap_or("upload");
    let options = meta
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("option.")?.to_owned(), v.clone())))
        .collect();
    Ok(JobRequest {
        spec,
        params,
        queue: meta.get("queue").cloned(),
        max_attempts: num(meta, "max_attempts")?,
        retry_backoff_ms: num(meta, "retry_backoff_ms")?,
        idempotency_key: meta.get("idempotency_key").cloned(),
        batch: Some(BatchRequest {
            source: format!("{SCHEME}://{source}/{}", encode_name(name)),
            recursive: false,
            glob: None,
            exclude: Vec::new(),
            format: meta.get("format").cloned(),
            options,
            schema: meta.get("schema").cloned(),
            encoding: meta.get("encoding").cloned(),
            max_rows: num(meta, "max_rows")?,
            max_bytes: num(meta, "max_bytes")?,
            payload: parsed::<PayloadEncoding>(meta, "payload")?.unwrap_or_default(),
            on_error: parsed::<OnError>(meta, "on_error")?.unwrap_or_default(),
        }),
        callbacks: match meta.get("callbacks").map(|c| c.trim()) {
            None | Some("") => Vec::new(),
            // A JSON list, as on `/schedule`, or a single URL.
            Some(list) if list.starts_with('[') => serde_json::from_str(list)
                .map_err(|e| ApiError::invalid(format!("metadata 'callbacks': {e}")))?,
            Some(url) => vec![crate::callbacks::CallbackRequest::Url(url.to_owned())],
        },
        priority: num(meta, "priority")?,
        run_at: parsed(meta, "run_at")?,
        timeout_ms: num(meta, "timeout_ms")?,
    })
}

/// A file name as one path segment of an `upload://` URL.
fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_name(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Makes an upload of `caller`: its directory, its record and its held job,
/// and starts the ingest that will follow its bytes.
async fn make_upload(
    state: &State,
    uploads: &Arc<Uploads>,
    caller: &crate::Caller,
    length: Option<u64>,
    raw_metadata: Option<String>,
    metadata: BTreeMap<String, String>,
) -> Result<Arc<Upload>, ApiError> {
    if let Some(n) = length
        && n > uploads.config.max_size
    {
        return Err(too_large(uploads.config.max_size));
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let source = uuid::Uuid::new_v4().simple().to_string();
    let mut req = job_request(&source, &metadata)?;
    crate::routes::validate(&req)?;
    crate::routes::check_key(req.idempotency_key.as_deref())?;
    if let Some(batch) = &req.batch {
        crate::routes::within_limits(&state.config.limits, batch)?;
    }
    // A key names a job among its caller's only, as on `/schedule`.
    req.idempotency_key = req
        .idempotency_key
        .map(|k| crate::routes::owned_key(caller, &k));
    crate::callbacks::check(&state.config.callbacks, &req.callbacks)?;
    let reserved = uploads.reserve(&caller.id, length)?;
    {
        let (dir, min_free) = (uploads.config.dir.clone(), uploads.config.min_free);
        let more = length.unwrap_or(0);
        uploads
            .writers
            .run(move || check_room(&dir, min_free, more))
            .await??;
    }
    let callbacks = std::mem::take(&mut req.callbacks);
    let (new_job, batch) = crate::routes::new_job(state, req).await?;
    let mut new_job = new_job;
    if new_job
        .key
        .as_deref()
        .is_none_or(|k| k.starts_with("schedule:"))
    {
        // Opaque: job keys are shown to every reader of `/jobs`.
        new_job.key = Some(format!("upload:{source}"));
    }
    let batch = batch.ok_or_else(|| internal("an upload's job has no batch".to_owned()))?;
    // Checked before anything is made, so a bad request leaves nothing.
    crate::routes::ingest_request(state, &batch, new_job.clone())?;
    // The job and its callbacks in one transaction: a crash never leaves
    // the job without them.
    let start = rota_core::JobStart {
        tasks: Vec::new(),
        callbacks: callbacks
            .into_iter()
            .map(crate::callbacks::CallbackRequest::into_new)
            .collect(),
        ingest: None,
    };
    // Noted on disk before the job is made, so that a server that dies
    // between the two makes the upload when the creation is sent again.
    let note = creating(
        &uploads.config.dir,
        new_job.key.as_deref().unwrap_or_default(),
    );
    let earlier = {
        let (note, noted, opened) = (note.clone(), id.clone(), uploads.opened);
        uploads
            .writers
            .run(move || {
                // Noted by an earlier server, not by a creation running now.
                let earlier = std::fs::metadata(&note)
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at < opened);
                write_synced(&note, noted.as_bytes()).map(|()| earlier)
            })
            .await?
            .map_err(|e| io_failure("note", &id, &e))?
    };
    let (job, created) = state.store.create_job_with(new_job, start).await?;
    let made_here = |u: &Arc<Upload>| {
        let m = u.meta();
        m.job == job.id && m.length == length && m.owner.as_deref() == Some(caller.id.as_str())
    };
    let interrupted = !created
        && earlier
        && !job.released
        && !job.state.is_terminal()
        && job.counts.total == 0
        && !uploads.lock().by_id.values().any(&made_here);
    if interrupted {
        // The job was made, and the server died before its upload was:
        // the upload is made now.
        tracing::info!(upload = %id, job = %job.id, "making the upload of a creation a crash interrupted");
    } else if !created {
        let note = note.clone();
        let _ = uploads
            .writers
            .run(move || std::fs::remove_file(note))
            .await;
        // The same request again, its answer lost (the server died after
        // making the upload, the connection broke, or the client stopped
        // before it learnt how the upload ended): the upload it made, when
        // this server still holds it for the same caller and length, is
        // the answer, for the client to resume from its offset (or to find
        // it complete).
        let again = uploads
            .lock()
            .by_id
            .values()
            .find(|u| made_here(u))
            .cloned();
        if let Some(upload) = again {
            return Ok(upload);
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "a job with idempotency key '{}' exists already ({}); upload under another key",
                crate::routes::shown_key(job.key.as_deref().unwrap_or_default()),
                job.id
            ),
        ));
    }
    let now = Utc::now();
    let meta = Meta {
        id: id.clone(),
        job: job.id,
        length,
        offset: 0,
        raw_metadata,
        metadata,
        created: now,
        expires: now
            + chrono::Duration::from_std(uploads.config.expire_after)
                .unwrap_or(chrono::Duration::MAX),
        ended: None,
        owner: Some(caller.id.clone()),
        source: Some(source),
    };
    let dir = uploads.config.dir.join(&id);
    let made = {
        let (dir, meta) = (dir.clone(), meta.clone());
        uploads
            .writers
            .run(move || {
                let made = (|| {
                    std::fs::create_dir(&dir)?;
                    std::fs::File::create(dir.join("data"))?.sync_all()?;
                    write_meta(&dir, &meta)?;
                    std::fs::File::open(dir.parent().unwrap_or(&dir))?.sync_all()
                })();
                if made.is_err() {
                    // Nothing half made stays behind.
                    let _ = std::fs::remove_dir_all(&dir);
                }
                made
            })
            .await?
    };
    if let Err(e) = made {
        let _ = state
            .store
            .fail_job(job.id, "the upload could not be stored".to_owned(), None)
            .await;
        return Err(io_failure("store", &id, &e));
    }
    let _ = uploads
        .writers
        .run(move || std::fs::remove_file(note))
        .await;
    let upload = Arc::new(new_upload(&uploads.config, &uploads.writers, dir, meta));
    uploads.lock().by_id.insert(id, upload.clone());
    drop(reserved);
    start_ingest(state, uploads, &upload)?;
    Ok(upload)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("an upload may be at most {max} bytes"),
    )
}

/// Starts the ingest that fills the upload's job from its bytes. When the
/// store fails part way (a restart, a lost connection), the job is left
/// held and the ingest is run again, after a pause that doubles up to
/// [`INGEST_RETRY_MAX`], until it ends one way or the other: the bytes are
/// kept until then, so a store outage loses nothing the client sent.
fn start_ingest(
    state: &State,
    uploads: &Arc<Uploads>,
    upload: &Arc<Upload>,
) -> Result<(), ApiError> {
    let meta = upload.meta();
    // A request that cannot be made is refused before anything runs.
    job_request(meta.source(), &meta.metadata)?;
    let id = meta.id.clone();
    let state = state.clone();
    let handle = {
        let upload = upload.clone();
        let source: Arc<dyn Source> = Arc::new(UploadSource {
            uploads: Arc::downgrade(uploads),
        });
        tokio::spawn(async move {
            let mut pause = Duration::from_secs(1);
            let outcome = loop {
                let outcome = ingest_once(&state, &upload, &source).await;
                match outcome {
                    Err(unfinished) if unfinished.held => {
                        if upload.gone.load(std::sync::atomic::Ordering::SeqCst)
                            || *state.stopping.borrow()
                        {
                            // Forgotten, or resumed when the server starts again.
                            return;
                        }
                        tracing::warn!(upload = %id, error = %unfinished.error, ?pause, "the upload's ingest stopped on a store error; running it again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(INGEST_RETRY_MAX);
                    }
                    other => break other.map_err(|u| u.error),
                }
            };
            if upload.gone.load(std::sync::atomic::Ordering::SeqCst) {
                return; // being forgotten: its files are going away
            }
            let ended = Ended {
                error: outcome.err(),
            };
            let recorded = upload.update(|m| m.ended = Some(ended.clone())).await;
            match recorded {
                // The bytes are in the tasks now, or can never be: their
                // space is given back at once.
                Ok(_) => {
                    let data = upload.data();
                    let _ = upload.writers.run(move || std::fs::remove_file(data)).await;
                }
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "could not record the end of an upload's ingest");
                }
            }
            upload.ended.send_replace(Some(ended));
        })
    };
    *upload
        .ingest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
    Ok(())
}

/// One run of an upload's ingest into its job. A store that does not
/// answer while the run is set up leaves the job held, as one that fails
/// part way does; any other failure fails the job.
async fn ingest_once(
    state: &State,
    upload: &Upload,
    source: &Arc<dyn Source>,
) -> Result<(), crate::routes::Unfinished> {
    let meta = upload.meta();
    let job = meta.job;
    let made = async {
        let req = job_request(meta.source(), &meta.metadata)?;
        let (mut new_job, batch) = crate::routes::new_job(state, req).await?;
        new_job.key = state
            .store
            .get_job(job)
            .await?
            .and_then(|j| j.key)
            .or(new_job.key);
        let batch = batch.ok_or_else(|| internal("no batch".to_owned()))?;
        let mut ingest = crate::routes::ingest_request(state, &batch, new_job)?;
        ingest.sources.extra = rota_sources::ExtraSources(vec![Arc::clone(source)]);
        Ok::<_, ApiError>(ingest)
    }
    .await;
    match made {
        Ok(ingest) => crate::routes::run_ingest(state, ingest, job)
            .await
            .map(|_| ()),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => Err(crate::routes::Unfinished {
            error: e.message,
            held: true,
        }),
        Err(e) => {
            let _ = state.store.fail_job(job, e.message.clone(), None).await;
            Err(crate::routes::Unfinished {
                error: e.message,
                held: false,
            })
        }
    }
}

#[utoipa::path(post, path = "/uploads", tag = "uploads", params(("Tus-Resumable" = crate::openapi::TusVersion, Header, description = "The tus version: 1.0.0"), ("Upload-Length" = Option<u64>, Header, description = "The size, or"), ("Upload-Defer-Length" = Option<u8>, Header, minimum = 1, maximum = 1, description = "1: the size comes later"), ("Upload-Metadata" = Option<String>, Header, description = "key base64(value) pairs, comma-separated: spec (required), format, max_rows, …")), responses((status = 201, description = "The upload, at `Location`", body = crate::openapi::UploadCreated), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "Uploads are not enabled", body = crate::openapi::ErrorBody), (status = 412, description = "Not tus 1.0.0", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 429, description = "A quota of the token is reached; Retry-After says when to try again", body = crate::openapi::ErrorBody), (status = 503, description = "The server holds the most unfinished uploads it takes; Retry-After", body = crate::openapi::ErrorBody), (status = 507, description = "The upload directory is (nearly) full; Retry-After", body = crate::openapi::ErrorBody)))]
pub(crate) async fn create(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    let (uploads, caller) = match admit(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let made = async {
        let length = number(&headers, &UPLOAD_LENGTH)?;
        let deferred = match headers.get(UPLOAD_DEFER_LENGTH).map(HeaderValue::as_bytes) {
            None => false,
            Some(b"1") => true,
            Some(_) => return Err(ApiError::invalid("Upload-Defer-Length must be 1")),
        };
        if length.is_some() == deferred {
            return Err(ApiError::invalid(
                "send either Upload-Length or Upload-Defer-Length: 1",
            ));
        }
        let raw = headers
            .get(UPLOAD_METADATA)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ApiError::invalid("Upload-Metadata must be ASCII"))
            })
            .transpose()?;
        let metadata = parse_metadata(raw.as_deref().unwrap_or_default())?;
        make_upload(&state, &uploads, &caller, length, raw, metadata).await
    }
    .await;
    match made {
        Ok(upload) => {
            let meta = upload.meta();
            let mut out = Tus::new(StatusCode::CREATED)
                .header(
                    axum::http::header::LOCATION,
                    format!("/uploads/{}", meta.id),
                )
                .position(&meta);
            out.body = Some(json!({ "id": meta.id, "job": meta.job }));
            out.into_response()
        }
        Err(e) => tus_error(e),
    }
}

/// The upload named in a request of `caller`, or the error to answer (an
/// upload of another token is not found).
fn find(uploads: &Uploads, id: &str, caller: &crate::Caller) -> Result<Arc<Upload>, ApiError> {
    let upload = uploads
        .get(id)
        .filter(|u| u.meta().owned_by(caller))
        .ok_or_else(|| ApiError::not_found(format!("no upload {id}")))?;
    let meta = upload.meta();
    if meta.expires <= Utc::now() && !meta.complete() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            format!("upload {id} expired"),
        ));
    }
    Ok(upload)
}

/// `Upload-Metadata` as sent, without its `callbacks` (their URLs may carry
/// secrets, and are shown elsewhere only as origins).
fn shown_metadata(raw: &str) -> String {
    raw.split(',')
        .filter(|pair| {
            let pair = pair.trim();
            pair.split_once(' ').map_or(pair, |(k, _)| k) != "callbacks"
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[utoipa::path(head, path = "/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "The upload"), ("Tus-Resumable" = crate::openapi::TusVersion, Header, description = "The tus version: 1.0.0")), responses((status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires and Rota-Job-Id, in headers"), (status = 404, description = "No such upload"), (status = 410, description = "The upload expired"), (status = 401, description = "No valid token"), (status = 403, description = "The token lacks the scope"), (status = 412, description = "Not tus 1.0.0")))]
pub(crate) async fn head(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (uploads, caller) = match admit(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match find(&uploads, &id, &caller) {
        Ok(upload) => {
            let meta = upload.meta();
            let mut out = Tus::new(StatusCode::OK)
                .header(axum::http::header::CACHE_CONTROL, "no-store")
                .position(&meta);
            if let Some(raw) = &meta.raw_metadata {
                out = out.header(UPLOAD_METADATA, shown_metadata(raw));
            }
            out.into_response()
        }
        Err(e) => {
            // A HEAD response has no body: the status says it.
            (e.status, Tus::new(e.status).headers).into_response()
        }
    }
}

/// `GET /uploads/{id}`: where an upload stands, as JSON.
#[utoipa::path(get, path = "/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "The upload")), responses((status = 200, description = "The upload", body = crate::openapi::UploadInfo), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody), (status = 410, description = "The upload expired", body = crate::openapi::ErrorBody)))]
pub(crate) async fn info(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (uploads, caller) = match enabled(&state, &headers) {
        Ok(u) => u,
        Err(e) => return answer(e),
    };
    match find(&uploads, &id, &caller) {
        Ok(upload) => {
            let meta = upload.meta();
            axum::Json(json!({
                "id": meta.id,
                "job": meta.job,
                "offset": meta.offset,
                "length": meta.length,
                "complete": meta.complete(),
                "created": meta.created,
                "expires": meta.expires,
                "ingested": meta.ended.as_ref().map(|e| e.error.is_none()),
                "error": meta.ended.as_ref().and_then(|e| e.error.clone()),
            }))
            .into_response()
        }
        Err(e) => answer(e),
    }
}

#[utoipa::path(patch, path = "/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "The upload"), ("Tus-Resumable" = crate::openapi::TusVersion, Header, description = "The tus version: 1.0.0"), ("Upload-Offset" = u64, Header, description = "Where the body goes"), ("Upload-Checksum" = Option<String>, Header, description = "sha1 base64(digest)")), request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"), responses((status = 204, description = "Appended; the new Upload-Offset in a header"), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody), (status = 409, description = "Upload-Offset is not the upload's", body = crate::openapi::ErrorBody), (status = 410, description = "The upload expired", body = crate::openapi::ErrorBody), (status = 412, description = "Not tus 1.0.0", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 415, description = "Not application/offset+octet-stream", body = crate::openapi::ErrorBody), (status = 422, description = "The upload's job failed", body = crate::openapi::ErrorBody), (status = 460, description = "The body does not match Upload-Checksum", body = crate::openapi::ErrorBody), (status = 408, description = "No byte arrived for the idle timeout; what arrived before is kept", body = crate::openapi::ErrorBody), (status = 423, description = "Another request is writing to the upload; Retry-After", body = crate::openapi::ErrorBody), (status = 429, description = "The token's byte quota is reached; Retry-After", body = crate::openapi::ErrorBody), (status = 507, description = "The upload directory is (nearly) full; the bytes recorded so far are kept; Retry-After", body = crate::openapi::ErrorBody)))]
pub(crate) async fn patch(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let (uploads, caller) = match admit(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let written = async {
        let upload = find(&uploads, &id, &caller)?;
        let content_type = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if content_type != Some("application/offset+octet-stream") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a PATCH body must be Content-Type: application/offset+octet-stream",
            ));
        }
        let offset = number(&headers, &UPLOAD_OFFSET)?
            .ok_or_else(|| ApiError::invalid("a PATCH needs Upload-Offset"))?;
        let checksum = headers
            .get(UPLOAD_CHECKSUM)
            .map(|v| parse_checksum(v.to_str().unwrap_or_default()))
            .transpose()?;
        let length = number(&headers, &UPLOAD_LENGTH)?;
        append(
            &uploads,
            &upload,
            offset,
            length,
            checksum,
            body.into_data_stream(),
        )
        .await?;
        Ok(upload.meta())
    }
    .await;
    match written {
        Ok(meta) => Tus::new(StatusCode::NO_CONTENT)
            .position(&meta)
            .into_response(),
        Err(e) => tus_error(e),
    }
}

fn parse_checksum(text: &str) -> Result<Vec<u8>, ApiError> {
    let (algorithm, digest) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::invalid("Upload-Checksum is 'sha1 <base64 digest>'"))?;
    if !algorithm.eq_ignore_ascii_case("sha1") {
        return Err(ApiError::invalid(format!(
            "checksum algorithm '{algorithm}' is not supported (use sha1)"
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(digest.trim())
        .ok()
        .filter(|d| d.len() == 20)
        .ok_or_else(|| {
            ApiError::invalid("the sha1 digest in Upload-Checksum is not 20 bytes of base64")
        })
}

/// The refusal of more bytes for an upload whose ingest failed.
fn ingest_failed(error: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "ingest_failed",
        format!("the upload's job failed, so it takes no more bytes: {error}"),
    )
}

/// Waits until the upload's ingest fails; its error.
async fn failure(ended: &mut watch::Receiver<Option<Ended>>) -> ApiError {
    let error = ended
        .wait_for(|e| e.as_ref().is_some_and(|e| e.error.is_some()))
        .await
        .ok()
        .and_then(|e| e.as_ref().and_then(|e| e.error.clone()));
    match error {
        Some(error) => ingest_failed(&error),
        // The upload is gone: nothing more to wait for.
        None => std::future::pending::<ApiError>().await,
    }
}

/// Appends a request body to an upload at `offset`. Without a checksum the
/// bytes are synced and recorded every [`SYNC_EVERY`] bytes, so a request
/// that breaks (or goes idle for [`UploadConfig::idle_timeout`], or finds
/// the disk full) keeps what arrived before; with one, nothing is recorded
/// unless the whole body matches it. Reading stops as soon as the upload's
/// ingest fails.
async fn append(
    uploads: &Uploads,
    upload: &Arc<Upload>,
    offset: u64,
    length: Option<u64>,
    checksum: Option<Vec<u8>>,
    mut body: impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin,
) -> Result<(), ApiError> {
    // One request writes to an upload at a time; another waits a little
    // (a client resuming while the server still reads its broken request),
    // then is told to come back, so no number of requests can wait here.
    let Ok(writing) =
        tokio::time::timeout(WRITER_WAIT, Arc::clone(&upload.writing).lock_owned()).await
    else {
        return Err(ApiError::new(
            StatusCode::LOCKED,
            "upload_busy",
            "another request is writing to this upload; try again later (HEAD says its offset)",
        ));
    };
    let meta = upload.meta();
    if let Some(ended) = &meta.ended
        && let Some(error) = &ended.error
    {
        return Err(ingest_failed(error));
    }
    if offset != meta.offset {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            format!(
                "Upload-Offset is {offset}, but the upload has {} bytes; ask with HEAD and resume there",
                meta.offset
            ),
        ));
    }
    let meta = match (meta.length, length) {
        (Some(known), Some(given)) if known != given => {
            return Err(ApiError::invalid(format!(
                "the upload's length is {known} bytes and cannot change"
            )));
        }
        (None, Some(given)) => {
            if given < meta.offset {
                return Err(ApiError::invalid(
                    "Upload-Length is less than the bytes received",
                ));
            }
            if given > uploads.config.max_size {
                return Err(too_large(uploads.config.max_size));
            }
            let room = uploads.room(upload);
            if given - meta.offset > room {
                return Err(quota_reached(room));
            }
            upload.update(|m| m.length = Some(given)).await?
        }
        _ => meta,
    };
    let (dir, min_free) = (uploads.config.dir.clone(), uploads.config.min_free);
    uploads
        .writers
        .run(move || check_room(&dir, min_free, 0))
        .await??;
    // A deferred length: the upload may grow up to the largest size, and as
    // far as its owner's quota has room.
    let (limit, quota) = match meta.length {
        Some(n) => (n, u64::MAX),
        None => (
            uploads.config.max_size,
            meta.offset.saturating_add(uploads.room(upload)),
        ),
    };
    // A task writes (and syncs) the bytes on the writer threads while this
    // one receives more.
    let (tx, rx) = tokio::sync::mpsc::channel(WRITES_AHEAD);
    let writer = {
        let upload = Arc::clone(upload);
        let metrics = Arc::clone(&uploads.metrics);
        let sync_as_it_goes = checksum.is_none();
        let (dir, min_free) = (uploads.config.dir.clone(), uploads.config.min_free);
        // The task holds the upload until it ends, even if this request is
        // dropped before it.
        tokio::spawn(async move {
            let _writing = writing;
            write_body(&upload, sync_as_it_goes, rx, &metrics, &dir, min_free).await
        })
    };
    let idle = uploads.config.idle_timeout;
    let mut ended = upload.ended.subscribe();
    let mut hasher = checksum.as_ref().map(|_| sha1::Sha1::new());
    let mut at = offset;
    let mut batch = Vec::new();
    let mut batched = 0;
    let mut failed = None;
    let received = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle, body.next()) => next,
            e = failure(&mut ended) => {
                failed = Some(e);
                break Ok(());
            }
        };
        let chunk = match next {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                break Err(ApiError::invalid(format!(
                    "the request body broke off: {e}"
                )));
            }
            Ok(None) => break Ok(()),
            Err(_) => {
                break Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "idle_timeout",
                    format!(
                        "no byte arrived for {} s; what arrived before is kept: ask the offset with HEAD and resume there",
                        idle.as_secs_f64()
                    ),
                ));
            }
        };
        let end = at + chunk.len() as u64;
        if end > limit {
            break Err(if meta.length.is_some() {
                ApiError::invalid(format!(
                    "the body goes past the upload's length of {limit} bytes"
                ))
            } else {
                too_large(limit)
            });
        }
        if end > quota {
            break Err(quota_reached(quota - meta.offset));
        }
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        at = end;
        batched += chunk.len();
        batch.push(chunk);
        if batched >= WRITE_CHUNK {
            batched = 0;
            if tx
                .send(Write::Bytes(std::mem::take(&mut batch)))
                .await
                .is_err()
            {
                break Ok(()); // the writer failed: its error is below
            }
        }
    };
    // Without a checksum what arrived is kept, even from a body that broke
    // off; with one, only a whole body that matches it. Nothing is kept
    // for an ingest that failed.
    let matches = match (hasher, &checksum) {
        (Some(h), Some(want)) => received.is_ok() && h.finalize().as_slice() == want.as_slice(),
        _ => true,
    };
    let keep = failed.is_none() && (checksum.is_none() || matches);
    if keep {
        let _ = tx.send(Write::Bytes(batch)).await;
        let _ = tx.send(Write::Commit).await;
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| internal(format!("upload write task failed: {e}")))?;
    if let Some(e) = failed {
        return Err(e);
    }
    written?;
    received?;
    if !matches {
        return Err(ApiError::new(
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            "checksum_mismatch",
            "the body does not match Upload-Checksum; nothing of it was kept",
        ));
    }
    Ok(())
}

fn quota_reached(room: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "upload_quota",
        format!(
            "the unfinished uploads of this token would pass their byte quota: this upload has room for {room} more bytes; what arrived before is kept, try again once others have finished"
        ),
    )
}

/// Bytes of a request body gathered into one write.
const WRITE_CHUNK: usize = 4 << 20;
/// Writes queued for the writing task while it writes or syncs.
const WRITES_AHEAD: usize = 4;

/// What the task receiving a body asks of the task writing it.
enum Write {
    /// Write these bytes next.
    Bytes(Vec<axum::body::Bytes>),
    /// Sync and record every byte written (without it, the bytes since the
    /// last sync are written but not recorded, so they do not count).
    Commit,
}

/// Writes a request body into an upload's file from its recorded offset, as
/// [`append`] receives it, on the writer threads: synced and recorded every
/// [`SYNC_EVERY`] bytes when `sync_as_it_goes`, and on [`Write::Commit`].
/// Before each write the file system must keep `min_free` bytes free (else
/// what was written is kept, when `sync_as_it_goes`, and 507 answered). A
/// write that fails leaves the file at its recorded offset.
async fn write_body(
    upload: &Upload,
    sync_as_it_goes: bool,
    mut rx: tokio::sync::mpsc::Receiver<Write>,
    metrics: &crate::metrics::Metrics,
    dir: &FsPath,
    min_free: u64,
) -> Result<(), ApiError> {
    use std::io::Seek as _;
    let writers = &upload.writers;
    let start = upload.meta();
    let (id, mut recorded) = (start.id, start.offset);
    let mut file = {
        let (id, data) = (id.clone(), upload.data());
        let opened = writers
            .run(move || {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(data)
                    .map_err(|e| io_failure("open", &id, &e))?;
                file.seek(std::io::SeekFrom::Start(recorded))
                    .map_err(|e| io_failure("seek in", &id, &e))?;
                Ok::<_, ApiError>(file)
            })
            .await??;
        Some(opened)
    };
    let mut at = recorded;
    let outcome = async {
        // Syncs the file and records its bytes up to `at`.
        macro_rules! commit {
            () => {{
                let id = id.clone();
                with_file(writers, &mut file, move |f| {
                    f.sync_data().map_err(|e| io_failure("sync", &id, &e))
                })
                .await??;
                let expire_after = upload.expire_after;
                upload
                    .update(|m| {
                        m.offset = at;
                        m.expires = Utc::now() + expire_after;
                    })
                    .await?;
                metrics.uploaded(at - recorded);
                recorded = at;
            }};
        }
        while let Some(write) = rx.recv().await {
            match write {
                Write::Bytes(chunks) => {
                    let (id, dir) = (id.clone(), dir.to_owned());
                    let written = with_file(writers, &mut file, move |f| {
                        check_room(&dir, min_free, 0).and_then(|()| {
                            write_chunks(f, &chunks).map_err(|e| io_failure("write", &id, &e))
                        })
                    })
                    .await?;
                    match written {
                        Ok(n) => at += n,
                        Err(e) if e.code == "insufficient_storage" && sync_as_it_goes => {
                            // What was written before is kept.
                            if at > recorded {
                                commit!();
                            }
                            return Err(e);
                        }
                        Err(e) => return Err(e),
                    }
                    if sync_as_it_goes && at - recorded >= SYNC_EVERY as u64 {
                        commit!();
                    }
                }
                Write::Commit => {
                    if at > recorded {
                        commit!();
                    }
                    break;
                }
            }
        }
        Ok::<(), ApiError>(())
    }
    .await;
    if outcome.is_err() {
        // Bytes past the recorded offset would only take space: they go.
        let recorded = upload.meta().offset;
        let _ = with_file(writers, &mut file, move |f| f.set_len(recorded)).await;
    }
    outcome
}

/// Runs `f` on an upload's open file on a writer thread; the file comes
/// back in `file` (lost only if `f` panics).
async fn with_file<T: Send + 'static>(
    writers: &Writers,
    file: &mut Option<std::fs::File>,
    f: impl FnOnce(&mut std::fs::File) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let mut taken = file
        .take()
        .ok_or_else(|| internal("an upload's file was lost by a failed write".to_owned()))?;
    let (back, out) = writers
        .run(move || {
            let out = f(&mut taken);
            (taken, out)
        })
        .await?;
    *file = Some(back);
    Ok(out)
}

/// Writes every byte of `chunks`, as few system calls as it takes; returns
/// how many.
fn write_chunks(file: &mut std::fs::File, chunks: &[axum::body::Bytes]) -> std::io::Result<u64> {
    let mut slices: Vec<std::io::IoSlice<'_>> =
        chunks.iter().map(|c| std::io::IoSlice::new(c)).collect();
    let mut left = &mut slices[..];
    let mut written = 0;
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n as u64;
                std::io::IoSlice::advance_slices(&mut left, n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

#[utoipa::path(delete, path = "/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "The upload"), ("Tus-Resumable" = crate::openapi::TusVersion, Header, description = "The tus version: 1.0.0")), responses((status = 204, description = "Gone, its job cancelled"), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody), (status = 412, description = "Not tus 1.0.0", body = crate::openapi::ErrorBody)))]
pub(crate) async fn terminate(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (uploads, caller) = match admit(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let upload = match uploads.get(&id).filter(|u| u.meta().owned_by(&caller)) {
        Some(u) => u,
        None => return tus_error(ApiError::not_found(format!("no upload {id}"))),
    };
    let _writing = upload.writing.lock().await;
    let meta = upload.meta();
    if !meta.complete() || meta.ended.is_none() {
        // Its job can never be whole now.
        if let Err(e) = state.store.cancel_job(meta.job).await {
            return tus_error(e.into());
        }
    }
    uploads.forget(&upload, &id).await;
    Tus::new(StatusCode::NO_CONTENT).into_response()
}

// ---- one shot --------------------------------------------------------------

/// `POST /uploads/stream?spec=…&format=…`: the body (chunked or not) is the
/// data; the answer comes when its job is made, with the job, or with 422
/// as soon as a record fails to decode (the rest of the body is not read).
/// The query takes the same keys as tus `Upload-Metadata`.
#[utoipa::path(post, path = "/uploads/stream", tag = "uploads", params(("spec" = String, Query, min_length = 1, pattern = r"\S", description = "The job's spec; the other Upload-Metadata keys are query parameters too")), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, description = "The whole body became the job's tasks", body = rota_core::Job), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "Uploads are not enabled", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A record did not decode", body = crate::openapi::ErrorBody), (status = 408, description = "No byte arrived for the idle timeout; what arrived before is kept", body = crate::openapi::ErrorBody), (status = 429, description = "A quota of the token is reached; Retry-After says when to try again", body = crate::openapi::ErrorBody), (status = 503, description = "The server holds the most unfinished uploads it takes; Retry-After", body = crate::openapi::ErrorBody), (status = 507, description = "The upload directory is (nearly) full; Retry-After", body = crate::openapi::ErrorBody)))]
pub(crate) async fn one_shot(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Body,
) -> Response {
    let (uploads, caller) = match enabled(&state, &headers) {
        Ok(u) => u,
        Err(e) => return answer(e),
    };
    let done = async {
        let upload = make_upload(&state, &uploads, &caller, None, None, query).await?;
        let mut ended = upload.ended.subscribe();
        let appended = append(&uploads, &upload, 0, None, None, body.into_data_stream()).await;
        if let Err(e) = appended {
            let meta = upload.meta();
            let failed = meta.ended.as_ref().is_some_and(|e| e.error.is_some());
            if !failed {
                let _ = state
                    .store
                    .fail_job(
                        meta.job,
                        format!("the upload broke off: {}", e.message),
                        None,
                    )
                    .await;
            }
            uploads.forget(&upload, &meta.id).await;
            return Err(e);
        }
        // The length is what arrived: the ingest may finish.
        {
            let _writing = upload.writing.lock().await;
            upload.update(|m| m.length = Some(m.offset)).await?;
        }
        let _ = ended.wait_for(Option::is_some).await;
        let meta = upload.meta();
        uploads.forget(&upload, &meta.id).await;
        if let Some(error) = meta.ended.and_then(|e| e.error) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ingest_failed",
                error,
            ));
        }
        let job = crate::routes::load_job(&state, &meta.job.to_string()).await?;
        Ok::<_, ApiError>(job)
    }
    .await;
    match done {
        Ok(job) => (
            StatusCode::CREATED,
            axum::Json(json!(crate::routes::shown(job))),
        )
            .into_response(),
        Err(e) => answer(e),
    }
}

// ---- the source the pipeline reads uploads from -----------------------------

/// `upload://<id>/<name>`: an upload's bytes, followed as they arrive.
struct UploadSource {
    uploads: std::sync::Weak<Uploads>,
}

impl UploadSource {
    fn upload(&self, location: &str) -> Result<(Arc<Upload>, String), SourceError> {
        let not_found = || SourceError::NotFound {
            location: location.to_owned(),
        };
        let rest = location
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(not_found)?;
        let (id, name) = rest.split_once('/').ok_or_else(not_found)?;
        let uploads = self.uploads.upgrade().ok_or_else(not_found)?;
        let upload = uploads.by_source(id).ok_or_else(not_found)?;
        Ok((upload, decode_name(name)))
    }
}

#[async_trait]
impl Source for UploadSource {
    fn schemes(&self) -> &'static [&'static str] {
        &[SCHEME]
    }

    async fn list(&self, req: &ListRequest) -> Result<Box<dyn EntryStream>, SourceError> {
        let (upload, name) = self.upload(&req.location)?;
        let meta = upload.meta();
        Ok(Box::new(One(Some(Entry {
            location: req.location.clone(),
            relative: name,
            size: meta.length,
            modified: Some(meta.created),
            etag: None,
        }))))
    }

    async fn open(
        &self,
        entry: &Entry,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn ByteStream>, SourceError> {
        let (upload, _) = self.upload(&entry.location)?;
        let range = range.unwrap_or(0..u64::MAX);
        let file = std::fs::File::open(upload.data()).map_err(|e| SourceError::Io {
            location: entry.location.clone(),
            source: e,
        })?;
        Ok(Box::new(Following {
            location: entry.location.clone(),
            file,
            at: range.start,
            dropped: range.start - range.start % DROP_SPAN,
            end: range.end,
            tail: upload.tail.subscribe(),
        }))
    }
}

/// A listing of one entry.
struct One(Option<Entry>);

#[async_trait]
impl EntryStream for One {
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        Ok(self.0.take())
    }
}

/// An upload's bytes up to its recorded offset, waiting for more until it
/// is complete.
struct Following {
    location: String,
    /// Read in place, as local files are: recorded bytes were just written,
    /// so they are in the page cache (and dropped from it once read).
    file: std::fs::File,
    at: u64,
    /// Bytes before this were dropped from the page cache.
    dropped: u64,
    end: u64,
    tail: watch::Receiver<Tail>,
}

/// Read bytes leave the page cache in aligned spans this long: the kernel
/// drops only the page-cache folios (up to 2 MiB) wholly inside a span.
const DROP_SPAN: u64 = 16 << 20;

impl Following {
    /// Asks the kernel to drop the bytes read so far from the page cache:
    /// they are on disk (synced) and read once, so a long upload does not
    /// fill the cache (nor take fresh memory for every byte).
    fn drop_behind(&mut self) {
        let upto = self.at - self.at % DROP_SPAN;
        if let Some(len) = std::num::NonZeroU64::new(upto.saturating_sub(self.dropped)) {
            let _ = rustix::fs::fadvise(
                &self.file,
                self.dropped,
                Some(len),
                rustix::fs::Advice::DontNeed,
            );
            self.dropped = upto;
        }
    }
}

#[async_trait]
impl ByteStream for Following {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        use std::os::unix::fs::FileExt as _;
        loop {
            let tail = *self.tail.borrow_and_update();
            let end = tail.length.unwrap_or(u64::MAX).min(self.end);
            if self.at >= end {
                return Ok(None);
            }
            let ready = tail.offset.min(end).saturating_sub(self.at);
            if ready > 0 {
                let want = usize::try_from(ready).unwrap_or(usize::MAX).min(READ_CHUNK);
                let mut buf = vec![0; want];
                self.file
                    .read_exact_at(&mut buf, self.at)
                    .map_err(|e| SourceError::Io {
                        location: self.location.clone(),
                        source: e,
                    })?;
                self.at += want as u64;
                self.drop_behind();
                return Ok(Some(buf));
            }
            if tail.gone {
                return Err(SourceError::Interrupted {
                    location: self.location.clone(),
                    reason: format!("the upload ended at byte {} before it completed", self.at),
                });
            }
            if self.tail.changed().await.is_err() {
                return Err(SourceError::Interrupted {
                    location: self.location.clone(),
                    reason: "the upload was removed".to_owned(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_an_older_version_is_read_under_its_id_by_any_token() {
        // `meta.json` as versions without owners and opaque sources wrote it.
        let old = r#"{"id":"0190e5a1b2c3","job":"0190e5a1-b2c3-7def-8123-456789abcdef",
            "length":10,"offset":4,"raw_metadata":"spec bG9hZA==",
            "metadata":{"spec":"load"},"created":"2026-01-01T00:00:00Z",
            "expires":"2026-01-02T00:00:00Z","ended":null}"#;
        let meta: Meta = serde_json::from_str(old).expect("an old record reads");
        assert_eq!(meta.source(), "0190e5a1b2c3");
        assert!(meta.owned_by(&crate::Caller {
            id: "anyone".into(),
            admin: false
        }));
        assert_eq!(meta.held(), 10);
        let request = job_request(meta.source(), &meta.metadata).expect("request");
        assert_eq!(
            request.batch.expect("batch").source,
            "upload://0190e5a1b2c3/upload"
        );
    }

    #[test]
    fn head_leaves_callbacks_out_of_the_metadata() {
        assert_eq!(
            shown_metadata("spec bG9hZA==,callbacks aHR0cDovL3g=,format bmRqc29u"),
            "spec bG9hZA==,format bmRqc29u"
        );
        assert_eq!(shown_metadata("callbacks aHR0cDovL3g="), "");
        assert_eq!(shown_metadata("spec bG9hZA=="), "spec bG9hZA==");
    }
}
