//! Uploads over tus 1.0.0 (creation, checksum with sha1), resumable across
//! runs: where an upload went is kept in a small record file, and a later
//! upload of the same file with the same metadata to the same server asks
//! the server for its offset and goes on from there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use rota_core::JobId;
use sha1::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::{Client, Error, api_error, transport};

const TUS: &str = "1.0.0";
/// Retries of a request that failed in a way that may pass later (the
/// network, a busy or full server), the offset asked anew each time.
const RETRIES: u32 = 8;
/// The longest wait between two tries, whatever the server asks.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A failed request, and how long the server asked to wait before another
/// (`Retry-After`).
struct Failed {
    error: Error,
    wait: Option<Duration>,
}

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Self { error, wait: None }
    }
}

/// The error a refusing answer carries, with its `Retry-After`.
async fn refused(resp: reqwest::Response) -> Failed {
    let wait = header(&resp, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    Failed {
        error: api_error(status, &text),
        wait,
    }
}

/// Whether an upload request that failed may pass when tried again: the
/// network or the server was unavailable, a body stalled (408), another
/// request was still writing to the upload (423), a quota of the token was
/// reached (429), or the server's disk was full (507).
fn passes_later(e: &Error) -> bool {
    e.is_retryable()
        || matches!(
            e,
            Error::Api {
                status: 408 | 423 | 429 | 507,
                ..
            }
        )
}

/// How long to wait before try `attempt` (from 1): doubling from a second,
/// at least what the server asked, at most [`MAX_BACKOFF`].
fn backoff(attempt: u32, asked: Option<Duration>) -> Duration {
    let doubling = Duration::from_millis(500 << attempt.min(8));
    asked.map_or(doubling, |a| a.max(doubling)).min(MAX_BACKOFF)
}

/// Runs `call` until it succeeds or fails in a way that will not pass, trying
/// again [`RETRIES`] times at most when it fails in a way that may (see
/// [`Error::is_retryable`]: the server or its store away), with the waits
/// uploads use between tries. For the calls around an upload: reading the
/// job a finished upload fills, which must not fail only because the server
/// restarted when the upload is done (running it again would start another).
///
/// # Errors
/// The last error of `call`.
pub async fn retrying<T, F, Fut>(mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    for attempt in 1..=RETRIES {
        match call().await {
            Err(e) if e.is_retryable() => {
                let wait = backoff(attempt, None);
                tracing::warn!(error = %e, attempt, wait_s = wait.as_secs_f64(), "request failed; trying again");
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
    call().await
}

/// How to upload.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// `Upload-Metadata`: `spec` (required by the server), `format`,
    /// `max_rows`, `params` (JSON), … as `docs` and the README list them.
    pub metadata: Vec<(String, String)>,
    /// Bytes per PATCH request.
    pub chunk_size: usize,
    /// Where resume records are kept; `None`: an interrupted upload starts
    /// again from scratch next time.
    pub state_dir: Option<PathBuf>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            metadata: Vec::new(),
            chunk_size: 8 << 20,
            state_dir: None,
        }
    }
}

/// How far an upload is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadProgress {
    /// The upload's URL on the server.
    pub url: String,
    /// Bytes the server has.
    pub offset: u64,
    /// The file's size.
    pub length: u64,
    /// Where this run started (more than 0: it resumed).
    pub resumed_at: u64,
    /// The job the upload fills.
    pub job: Option<JobId>,
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn offset_of(resp: &reqwest::Response) -> Result<u64, Error> {
    header(resp, "upload-offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Protocol("no Upload-Offset in the answer".into()))
}

fn job_of(resp: &reqwest::Response) -> Option<JobId> {
    header(resp, "rota-job-id").and_then(|v| v.parse().ok())
}

/// A resume record's name: what identifies this upload (server, file,
/// size, modification time, metadata), hashed.
fn fingerprint(base: &str, path: &Path, meta: &std::fs::Metadata, opts: &UploadOptions) -> String {
    let mut h = sha1::Sha1::new();
    h.update(base.as_bytes());
    h.update(path.to_string_lossy().as_bytes());
    h.update(meta.len().to_le_bytes());
    if let Ok(t) = meta.modified()
        && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
    {
        h.update(d.as_nanos().to_le_bytes());
    }
    let mut pairs = opts.metadata.clone();
    pairs.sort();
    for (k, v) in pairs {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::Io(format!("cannot {what} {}: {e}", path.display()))
}

impl Client {
    /// The upload's absolute URL from a `Location` header.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// Asks for an upload's offset; `None` when the server no longer has it.
    async fn head(&self, url: &str) -> Result<Option<(u64, Option<JobId>)>, Error> {
        let mut req = self.http.head(url).header("tus-resumable", TUS);
        if let Some(t) = self.token() {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| transport(&e))?;
        match resp.status() {
            s if s.is_success() => Ok(Some((offset_of(&resp)?, job_of(&resp)))),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            s => Err(Error::Api {
                status: s.as_u16(),
                code: "unknown".into(),
                message: format!("HEAD of the upload answered {s}"),
            }),
        }
    }

    /// Creates the upload, trying again (a bounded number of times, with
    /// backoff) while the server answers that it may pass later.
    async fn create(
        &self,
        length: u64,
        opts: &UploadOptions,
    ) -> Result<(String, Option<JobId>), Error> {
        let mut attempt = 0;
        loop {
            match self.create_once(length, opts).await {
                Ok(made) => return Ok(made),
                Err(f) if passes_later(&f.error) && attempt < RETRIES => {
                    attempt += 1;
                    let wait = backoff(attempt, f.wait);
                    tracing::warn!(error = %f.error, attempt, wait_s = wait.as_secs_f64(), "the upload was not taken; trying again");
                    tokio::time::sleep(wait).await;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    async fn create_once(
        &self,
        length: u64,
        opts: &UploadOptions,
    ) -> Result<(String, Option<JobId>), Failed> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let metadata: Vec<String> = opts
            .metadata
            .iter()
            .map(|(k, v)| format!("{k} {}", b64.encode(v)))
            .collect();
        let resp = self
            .request(Method::POST, "/uploads")
            .header("tus-resumable", TUS)
            .header("upload-length", length.to_string())
            .header("upload-metadata", metadata.join(","))
            .send()
            .await
            .map_err(|e| transport(&e))?;
        if resp.status() != StatusCode::CREATED {
            return Err(refused(resp).await);
        }
        let location = header(&resp, "location")
            .ok_or_else(|| Error::Protocol("no Location for the new upload".into()))?;
        Ok((self.absolute(location), job_of(&resp)))
    }

    /// Sends `chunk` at `offset` with its sha1; returns the new offset.
    async fn patch(&self, url: &str, offset: u64, chunk: Vec<u8>) -> Result<u64, Failed> {
        let sum = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(&chunk));
        let mut req = self
            .http
            .patch(url)
            .header("tus-resumable", TUS)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .header("upload-checksum", format!("sha1 {sum}"))
            .body(chunk);
        if let Some(t) = self.token() {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| transport(&e))?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(offset_of(&resp)?);
        }
        Err(refused(resp).await)
    }

    /// Uploads the file at `path` into a job, in `opts.chunk_size` pieces,
    /// each with its sha1 so the server keeps nothing corrupted. With a
    /// `state_dir`, an upload a previous run left unfinished is resumed at
    /// the offset the server has. A request that may pass later (the
    /// network, a busy server, a quota of the token, a full disk on the
    /// server: 408, 423, 429, 502-504, 507) is tried again, the offset asked
    /// anew, up to 8 times in a row with a backoff doubling from 1 s (at
    /// least the server's `Retry-After`, at most 60 s). `progress` is called
    /// after every chunk. Returns the upload as it ended.
    ///
    /// # Errors
    /// When the file cannot be read, the server refuses the upload (bad
    /// metadata, too large, a decode error that failed its job), or it
    /// stays unreachable or full through every retry.
    pub async fn upload(
        &self,
        path: &Path,
        opts: &UploadOptions,
        mut progress: impl FnMut(&UploadProgress),
    ) -> Result<UploadProgress, Error> {
        let meta = std::fs::metadata(path).map_err(|e| io("read", path, &e))?;
        let length = meta.len();
        let record = opts.state_dir.as_ref().map(|dir| {
            dir.join(format!(
                "{}.upload",
                fingerprint(&self.base, path, &meta, opts)
            ))
        });
        let mut resumed = None;
        if let Some(record) = &record
            && let Ok(url) = std::fs::read_to_string(record)
        {
            let url = url.trim().to_owned();
            if let Some((offset, job)) = self.head(&url).await? {
                resumed = Some((url, offset, job));
            }
        }
        let (url, mut offset, mut job) = match resumed {
            Some(r) => r,
            None => {
                let (url, job) = self.create(length, opts).await?;
                if let Some(record) = &record {
                    if let Some(dir) = record.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| io("make", dir, &e))?;
                    }
                    std::fs::write(record, &url).map_err(|e| io("write", record, &e))?;
                }
                (url, 0, job)
            }
        };
        let resumed_at = offset;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| io("open", path, &e))?;
        let mut failures = 0;
        let report = |offset, job| UploadProgress {
            url: url.clone(),
            offset,
            length,
            resumed_at,
            job,
        };
        progress(&report(offset, job));
        while offset < length {
            let want = usize::try_from(length - offset)
                .unwrap_or(usize::MAX)
                .min(opts.chunk_size.max(1));
            let mut chunk = vec![0; want];
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| io("read", path, &e))?;
            file.read_exact(&mut chunk)
                .await
                .map_err(|e| io("read", path, &e))?;
            match self.patch(&url, offset, chunk).await {
                Ok(at) => {
                    offset = at;
                    failures = 0;
                    progress(&report(offset, job));
                }
                Err(Failed { error: e, wait })
                    if (passes_later(&e)
                        || matches!(&e, Error::Api { code, .. } if code == "offset_mismatch"))
                        && failures < RETRIES =>
                {
                    failures += 1;
                    let wait = backoff(failures, wait);
                    tracing::warn!(error = %e, attempt = failures, wait_s = wait.as_secs_f64(), "upload request failed; asking the offset and going on");
                    tokio::time::sleep(wait).await;
                    match self.head(&url).await {
                        Ok(Some((at, j))) => {
                            offset = at;
                            job = j.or(job);
                        }
                        Ok(None) => {
                            return Err(Error::Protocol(
                                "the server no longer has the upload".into(),
                            ));
                        }
                        Err(e) if e.is_retryable() => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(f) => return Err(f.error),
            }
        }
        if job.is_none() {
            job = self.head(&url).await?.and_then(|(_, j)| j);
        }
        if let Some(record) = &record {
            let _ = std::fs::remove_file(record);
        }
        Ok(report(offset, job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16) -> Error {
        Error::Api {
            status,
            code: "x".into(),
            message: "x".into(),
        }
    }

    #[test]
    fn busy_full_and_stalled_servers_are_tried_again_and_refusals_are_not() {
        for status in [408, 423, 429, 502, 503, 504, 507] {
            assert!(passes_later(&refusal(status)), "{status}");
        }
        for status in [400, 404, 409, 413, 422, 460, 500] {
            assert!(!passes_later(&refusal(status)), "{status}");
        }
    }

    #[test]
    fn the_backoff_doubles_honours_retry_after_and_is_bounded() {
        assert_eq!(backoff(1, None), Duration::from_secs(1));
        assert_eq!(backoff(3, None), Duration::from_secs(4));
        assert_eq!(
            backoff(2, Some(Duration::from_secs(10))),
            Duration::from_secs(10)
        );
        assert_eq!(backoff(8, None), MAX_BACKOFF);
        assert_eq!(backoff(1, Some(Duration::from_secs(3600))), MAX_BACKOFF);
    }
}
