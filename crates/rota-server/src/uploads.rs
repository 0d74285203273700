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
}

impl UploadConfig {
    /// Uploads kept in `dir`, expiring after a day, of at most 1 TiB.
    #[must_use]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            expire_after: Duration::from_secs(24 * 3600),
            max_size: 1 << 40,
        }
    }
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
    /// How long it may go without bytes.
    expire_after: chrono::Duration,
    meta: Mutex<Meta>,
    tail: watch::Sender<Tail>,
    /// Held while a request writes (until its writing thread ends); one
    /// writer at a time.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// The ingest filling the upload's job, while it runs.
    ingest: Mutex<Option<tokio::task::AbortHandle>>,
    /// Set when the ingest ends.
    ended: watch::Sender<Option<Ended>>,
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

    /// Records `meta` durably, then lets the reader see it.
    async fn record(&self, meta: Meta) -> Result<(), ApiError> {
        let dir = self.dir.clone();
        let copy = meta.clone();
        tokio::task::spawn_blocking(move || write_meta(&dir, &copy))
            .await
            .map_err(|e| internal(format!("upload record thread failed: {e}")))?
            .map_err(|e| internal(format!("cannot record the upload: {e}")))?;
        self.publish(meta);
        Ok(())
    }

    /// [`Upload::record`], blocking the calling thread.
    fn record_now(&self, meta: Meta) -> Result<(), ApiError> {
        write_meta(&self.dir, &meta)
            .map_err(|e| internal(format!("cannot record the upload: {e}")))?;
        self.publish(meta);
        Ok(())
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

fn internal(message: String) -> ApiError {
    tracing::error!(error = %message, "upload failure");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// The uploads a server holds.
pub(crate) struct Uploads {
    config: UploadConfig,
    open: Mutex<HashMap<String, Arc<Upload>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Uploads {
    /// The uploads in `config.dir` (made if missing). Bytes past an upload's
    /// recorded offset (a write the crash interrupted) are dropped.
    pub(crate) fn open(
        config: UploadConfig,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&config.dir)?;
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
            open.insert(id, Arc::new(new_upload(&config, dir, meta)));
        }
        Ok(Arc::new(Self {
            config,
            open: Mutex::new(open),
            metrics,
        }))
    }

    fn get(&self, id: &str) -> Option<Arc<Upload>> {
        self.lock().get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Upload>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts again the ingests of the uploads a stopped server left
    /// unfinished, and the sweeping of expired uploads.
    pub(crate) fn resume(self: &Arc<Self>, state: &State) {
        let unfinished: Vec<Arc<Upload>> = self
            .lock()
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

    /// Stops the upload's ingest, removes its files and forgets it.
    async fn forget(&self, upload: &Arc<Upload>, id: &str) {
        if let Some(abort) = upload
            .ingest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            abort.abort();
        }
        let meta = upload.meta();
        upload.tail.send_replace(Upload::tail(&meta, true));
        self.lock().remove(id);
        let dir = upload.dir.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(upload = %id, error = %e, "could not remove an upload's files");
        }
    }
}

fn new_upload(config: &UploadConfig, dir: PathBuf, meta: Meta) -> Upload {
    let tail = Upload::tail(&meta, false);
    let ended = meta.ended.clone();
    Upload {
        dir,
        expire_after: chrono::Duration::from_std(config.expire_after)
            .unwrap_or(chrono::Duration::MAX),
        meta: Mutex::new(meta),
        tail: watch::Sender::new(tail),
        writing: Arc::new(tokio::sync::Mutex::new(())),
        ingest: Mutex::new(None),
        ended: watch::Sender::new(ended),
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
    let mut response = e.into_response();
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Checks the token of a request to `/uploads`; returns the uploads.
fn enabled(state: &State, headers: &HeaderMap) -> Result<Arc<Uploads>, ApiError> {
    state.config.tokens.check(headers, Some(Scope::Schedule))?;
    state
        .uploads
        .clone()
        .ok_or_else(|| ApiError::not_found("uploads are not enabled on this server"))
}

/// Checks the token and the protocol version a tus request asks for.
fn admit(state: &State, headers: &HeaderMap) -> Result<Arc<Uploads>, Box<Response>> {
    let uploads = enabled(state, headers).map_err(|e| Box::new(tus_error(e)))?;
    match headers.get(TUS_RESUMABLE).map(HeaderValue::to_str) {
        Some(Ok(TUS_VERSION)) => Ok(uploads),
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
fn job_request(id: &str, meta: &BTreeMap<String, String>) -> Result<JobRequest, ApiError> {
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
            source: format!("{SCHEME}://{id}/{}", encode_name(name)),
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

/// Makes an upload: its directory, its record and its held job, and starts
/// the ingest that will follow its bytes.
async fn make_upload(
    state: &State,
    uploads: &Arc<Uploads>,
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
    let mut req = job_request(&id, &metadata)?;
    crate::routes::validate(&req)?;
    crate::callbacks::check(&state.config.callbacks, &req.callbacks)?;
    let callbacks = std::mem::take(&mut req.callbacks);
    let (new_job, batch) = crate::routes::new_job(state, req).await?;
    let mut new_job = new_job;
    if new_job
        .key
        .as_deref()
        .is_none_or(|k| k.starts_with("schedule:"))
    {
        new_job.key = Some(format!("upload:{id}"));
    }
    let batch = batch.ok_or_else(|| internal("an upload's job has no batch".to_owned()))?;
    // Checked before anything is made, so a bad request leaves nothing.
    crate::routes::ingest_request(state, &batch, new_job.clone())?;
    let (job, created) = state.store.create_job(new_job).await?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "a job with idempotency key '{}' exists already ({}); upload under another key",
                job.key.as_deref().unwrap_or_default(),
                job.id
            ),
        ));
    }
    if let Err(e) = crate::callbacks::attach(state, job.id, callbacks).await {
        let _ = state
            .store
            .fail_job(
                job.id,
                "the upload's callbacks could not be stored".to_owned(),
                None,
            )
            .await;
        return Err(e);
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
    };
    let dir = uploads.config.dir.join(&id);
    let made = {
        let (dir, meta) = (dir.clone(), meta.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&dir)?;
            std::fs::File::create(dir.join("data"))?.sync_all()?;
            write_meta(&dir, &meta)?;
            std::fs::File::open(dir.parent().unwrap_or(&dir))?.sync_all()
        })
        .await
    };
    if let Err(e) = made
        .map_err(std::io::Error::other)
        .and_then(std::convert::identity)
    {
        let _ = state
            .store
            .fail_job(job.id, "the upload could not be stored".to_owned(), None)
            .await;
        return Err(internal(format!("cannot store upload {id}: {e}")));
    }
    let upload = Arc::new(new_upload(&uploads.config, dir, meta));
    uploads.lock().insert(id, upload.clone());
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

/// Starts the ingest that fills the upload's job from its bytes.
fn start_ingest(
    state: &State,
    uploads: &Arc<Uploads>,
    upload: &Arc<Upload>,
) -> Result<(), ApiError> {
    let meta = upload.meta();
    let req = job_request(&meta.id, &meta.metadata)?;
    let (job, id) = (meta.job, meta.id.clone());
    let state = state.clone();
    let handle = {
        let upload = upload.clone();
        let source: Arc<dyn Source> = Arc::new(UploadSource {
            uploads: Arc::downgrade(uploads),
        });
        tokio::spawn(async move {
            let made = async {
                let (mut new_job, batch) = crate::routes::new_job(&state, req).await?;
                new_job.key = state
                    .store
                    .get_job(job)
                    .await?
                    .and_then(|j| j.key)
                    .or(new_job.key);
                let batch = batch.ok_or_else(|| internal("no batch".to_owned()))?;
                let mut ingest = crate::routes::ingest_request(&state, &batch, new_job)?;
                ingest.sources.extra = rota_sources::ExtraSources(vec![source]);
                Ok::<_, ApiError>(ingest)
            }
            .await;
            let outcome = match made {
                Ok(ingest) => crate::routes::run_ingest(&state, ingest, job)
                    .await
                    .map(|_| ()),
                Err(e) => {
                    let _ = state.store.fail_job(job, e.message.clone(), None).await;
                    Err(e.message)
                }
            };
            let ended = Ended {
                error: outcome.err(),
            };
            let mut meta = upload.meta();
            meta.ended = Some(ended.clone());
            if let Err(e) = upload.record(meta).await {
                tracing::warn!(upload = %id, error = %e, "could not record the end of an upload's ingest");
            }
            if ended.error.is_none() {
                // The bytes are in the tasks now.
                let _ = tokio::fs::remove_file(upload.data()).await;
            }
            upload.ended.send_replace(Some(ended));
        })
    };
    *upload
        .ingest
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle.abort_handle());
    Ok(())
}

#[utoipa::path(post, path = "/uploads", tag = "uploads", params(("Tus-Resumable" = crate::openapi::TusVersion, Header, description = "The tus version: 1.0.0"), ("Upload-Length" = Option<u64>, Header, description = "The size, or"), ("Upload-Defer-Length" = Option<u8>, Header, minimum = 1, maximum = 1, description = "1: the size comes later"), ("Upload-Metadata" = Option<String>, Header, description = "key base64(value) pairs, comma-separated: spec (required), format, max_rows, …")), responses((status = 201, description = "The upload, at `Location`", body = crate::openapi::UploadCreated), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "Uploads are not enabled", body = crate::openapi::ErrorBody), (status = 412, description = "Not tus 1.0.0", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody)))]
pub(crate) async fn create(Extract(state): Extract<State>, headers: HeaderMap) -> Response {
    let uploads = match admit(&state, &headers) {
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
        make_upload(&state, &uploads, length, raw, metadata).await
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

/// The upload named in a request, or the error to answer.
fn find(uploads: &Uploads, id: &str) -> Result<Arc<Upload>, ApiError> {
    let upload = uploads
        .get(id)
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

#[utoipa::path(head, path = "/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "The upload"), ("Tus-Resumable" = crate::openapi::TusVersion, Header, description = "The tus version: 1.0.0")), responses((status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires and Rota-Job-Id, in headers"), (status = 404, description = "No such upload"), (status = 410, description = "The upload expired"), (status = 401, description = "No valid token"), (status = 403, description = "The token lacks the scope"), (status = 412, description = "Not tus 1.0.0")))]
pub(crate) async fn head(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let uploads = match admit(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match find(&uploads, &id) {
        Ok(upload) => {
            let meta = upload.meta();
            let mut out = Tus::new(StatusCode::OK)
                .header(axum::http::header::CACHE_CONTROL, "no-store")
                .position(&meta);
            if let Some(raw) = &meta.raw_metadata {
                out = out.header(UPLOAD_METADATA, raw);
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
    let uploads = match enabled(&state, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    match find(&uploads, &id) {
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
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(patch, path = "/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "The upload"), ("Tus-Resumable" = crate::openapi::TusVersion, Header, description = "The tus version: 1.0.0"), ("Upload-Offset" = u64, Header, description = "Where the body goes"), ("Upload-Checksum" = Option<String>, Header, description = "sha1 base64(digest)")), request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"), responses((status = 204, description = "Appended; the new Upload-Offset in a header"), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody), (status = 409, description = "Upload-Offset is not the upload's", body = crate::openapi::ErrorBody), (status = 410, description = "The upload expired", body = crate::openapi::ErrorBody), (status = 412, description = "Not tus 1.0.0", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 415, description = "Not application/offset+octet-stream", body = crate::openapi::ErrorBody), (status = 422, description = "The upload's job failed", body = crate::openapi::ErrorBody), (status = 460, description = "The body does not match Upload-Checksum", body = crate::openapi::ErrorBody)))]
pub(crate) async fn patch(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let uploads = match admit(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let written = async {
        let upload = find(&uploads, &id)?;
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

/// Appends a request body to an upload at `offset`. Without a checksum the
/// bytes are synced and recorded every [`SYNC_EVERY`] bytes, so a request
/// that breaks keeps what arrived before; with one, nothing is recorded
/// unless the whole body matches it.
async fn append(
    uploads: &Uploads,
    upload: &Arc<Upload>,
    offset: u64,
    length: Option<u64>,
    checksum: Option<Vec<u8>>,
    mut body: impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin,
) -> Result<(), ApiError> {
    let writing = Arc::clone(&upload.writing).lock_owned().await;
    let mut meta = upload.meta();
    if let Some(ended) = &meta.ended
        && let Some(error) = &ended.error
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ingest_failed",
            format!("the upload's job failed, so it takes no more bytes: {error}"),
        ));
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
    match (meta.length, length) {
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
            meta.length = Some(given);
            upload.record(meta.clone()).await?;
        }
        _ => {}
    }
    let limit = meta.length.unwrap_or(uploads.config.max_size);
    // A thread writes (and syncs) the bytes while this task receives more.
    let (tx, rx) = tokio::sync::mpsc::channel(WRITES_AHEAD);
    let writer = {
        let upload = Arc::clone(upload);
        let metrics = Arc::clone(&uploads.metrics);
        let meta = meta.clone();
        let sync_as_it_goes = checksum.is_none();
        // The thread holds the upload until it ends, even if this request
        // is dropped before it.
        tokio::task::spawn_blocking(move || {
            let _writing = writing;
            write_body(&upload, meta, sync_as_it_goes, rx, &metrics)
        })
    };
    let mut hasher = checksum.as_ref().map(|_| sha1::Sha1::new());
    let mut at = offset;
    let mut batch = Vec::new();
    let mut batched = 0;
    let received = loop {
        let chunk = match body.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                break Err(ApiError::invalid(format!(
                    "the request body broke off: {e}"
                )));
            }
            None => break Ok(()),
        };
        if at + chunk.len() as u64 > limit {
            break Err(if meta.length.is_some() {
                ApiError::invalid(format!(
                    "the body goes past the upload's length of {limit} bytes"
                ))
            } else {
                too_large(limit)
            });
        }
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        at += chunk.len() as u64;
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
    // off; with one, only a whole body that matches it.
    let matches = match (hasher, &checksum) {
        (Some(h), Some(want)) => received.is_ok() && h.finalize().as_slice() == want.as_slice(),
        _ => true,
    };
    let keep = checksum.is_none() || matches;
    if keep {
        let _ = tx.send(Write::Bytes(batch)).await;
        let _ = tx.send(Write::Commit).await;
    }
    drop(tx);
    writer
        .await
        .map_err(|e| internal(format!("upload write thread failed: {e}")))??;
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

/// Bytes of a request body gathered into one write.
const WRITE_CHUNK: usize = 4 << 20;
/// Writes queued for the writing thread while it writes or syncs.
const WRITES_AHEAD: usize = 4;

/// What the task receiving a body asks of the thread writing it.
enum Write {
    /// Write these bytes next.
    Bytes(Vec<axum::body::Bytes>),
    /// Sync and record every byte written (without it, the bytes since the
    /// last sync are written but not recorded, so they do not count).
    Commit,
}

/// Writes a request body into an upload's file from its recorded offset, as
/// [`append`] receives it: synced and recorded every [`SYNC_EVERY`] bytes
/// when `sync_as_it_goes`, and on [`Write::Commit`].
fn write_body(
    upload: &Upload,
    mut meta: Meta,
    sync_as_it_goes: bool,
    mut rx: tokio::sync::mpsc::Receiver<Write>,
    metrics: &crate::metrics::Metrics,
) -> Result<(), ApiError> {
    use std::io::Seek as _;
    let id = meta.id.clone();
    let failed =
        |what: &str, e: std::io::Error| internal(format!("cannot {what} upload {id}: {e}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(upload.data())
        .map_err(|e| failed("open", e))?;
    file.seek(std::io::SeekFrom::Start(meta.offset))
        .map_err(|e| failed("seek in", e))?;
    let mut at = meta.offset;
    let commit = |file: &std::fs::File, meta: &mut Meta, at: u64| {
        file.sync_data().map_err(|e| failed("sync", e))?;
        metrics.uploaded(at - meta.offset);
        meta.offset = at;
        meta.expires = Utc::now() + upload.expire_after;
        upload.record_now(meta.clone())
    };
    while let Some(write) = rx.blocking_recv() {
        match write {
            Write::Bytes(chunks) => {
                at += write_chunks(&mut file, &chunks).map_err(|e| failed("write", e))?;
                if sync_as_it_goes && at - meta.offset >= SYNC_EVERY as u64 {
                    commit(&file, &mut meta, at)?;
                }
            }
            Write::Commit => {
                if at > meta.offset {
                    commit(&file, &mut meta, at)?;
                }
                break;
            }
        }
    }
    Ok(())
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
    let uploads = match admit(&state, &headers) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let upload = match uploads.get(&id) {
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
/// data; the answer comes when its job is made, with the job. The query
/// takes the same keys as tus `Upload-Metadata`.
#[utoipa::path(post, path = "/uploads/stream", tag = "uploads", params(("spec" = String, Query, min_length = 1, pattern = r"\S", description = "The job's spec; the other Upload-Metadata keys are query parameters too")), request_body(content = Vec<u8>, content_type = "application/octet-stream"), responses((status = 201, description = "The whole body became the job's tasks", body = rota_core::Job), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "Uploads are not enabled", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 422, description = "A record did not decode", body = crate::openapi::ErrorBody)))]
pub(crate) async fn one_shot(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Body,
) -> Response {
    let uploads = match enabled(&state, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let done = async {
        let upload = make_upload(&state, &uploads, None, None, query).await?;
        let mut ended = upload.ended.subscribe();
        let appended = append(&uploads, &upload, 0, None, None, body.into_data_stream()).await;
        if let Err(e) = appended {
            let meta = upload.meta();
            let _ = state
                .store
                .fail_job(
                    meta.job,
                    format!("the upload broke off: {}", e.message),
                    None,
                )
                .await;
            uploads.forget(&upload, &meta.id).await;
            return Err(e);
        }
        // The length is what arrived: the ingest may finish.
        {
            let _writing = upload.writing.lock().await;
            let mut meta = upload.meta();
            meta.length = Some(meta.offset);
            upload.record(meta).await?;
        }
        let _ = ended.wait_for(Option::is_some).await;
        let meta = upload.meta();
        let job = crate::routes::load_job(&state, &meta.job.to_string()).await?;
        uploads.forget(&upload, &meta.id).await;
        Ok::<_, ApiError>(job)
    }
    .await;
    match done {
        Ok(job) => (StatusCode::CREATED, axum::Json(json!(job))).into_response(),
        Err(e) => e.into_response(),
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
        let upload = uploads.get(id).ok_or_else(not_found)?;
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
