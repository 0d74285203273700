//! A typed client for `rota serve`, and a worker SDK.
//!
//! - [`Client`]: schedule jobs, follow, await and cancel them, and upload
//!   files over tus ([`Client::upload`], which resumes an interrupted
//!   upload where the server has it).
//! - [`worker`]: implement [`worker::Handler`] (a task's input to its
//!   result) and [`worker::run`] does the rest over the WebSocket worker
//!   protocol: registration, heartbeats once a second with your progress,
//!   lease loss and cancellation (the task's future is dropped), results,
//!   reconnection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rota_client::Error> {
//! let client = rota_client::Client::new("http://127.0.0.1:7878", Some("s3cr3t".into()))?;
//! let id = client
//!     .schedule(&serde_json::json!({ "spec": "send-email", "params": { "to": "a@example.com" } }))
//!     .await?;
//! let job = client.wait(id, std::time::Duration::from_secs(30)).await?;
//! println!("{:?}", job.state);
//! # Ok(()) }
//! ```

mod upload;
pub mod worker;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rota_core::{Job, JobId, JobState, TaskState};
use serde_json::Value;

pub use upload::{UploadOptions, UploadProgress, retrying};

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error: its status, stable code and message.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable code (`not_found`, `forbidden`, …).
        code: String,
        /// What the server said.
        message: String,
    },
    /// The request did not get an answer (connection, timeout).
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The answer was not what the API says.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// A local file could not be read (uploads).
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// Whether trying again later may work (the server was unreachable or
    /// unavailable).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Api { status, .. } => *status == 503 || *status == 502 || *status == 504,
            _ => false,
        }
    }
}

fn transport(e: &reqwest::Error) -> Error {
    // Without the URL: it may carry a token.
    let mut why = e.to_string();
    if let Some(url) = e.url() {
        why = why.replace(url.as_str(), url.path());
    }
    Error::Transport(why)
}

/// A connection to one Rota server.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:7878`),
    /// sending `token` as a bearer token when given.
    ///
    /// # Errors
    /// When `base` is not an http(s) URL.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Protocol(format!(
                "the server is an http(s) URL, not '{base}'"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| transport(&e))?;
        Ok(Self { base, token, http })
    }

    /// The server's base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Sends a request and reads a JSON answer; an error answer becomes
    /// [`Error::Api`].
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, Error> {
        let resp = req.send().await.map_err(|e| transport(&e))?;
        json_answer(resp).await
    }

    /// A GET of `path` (with any query), answered with JSON.
    ///
    /// # Errors
    /// As the server answers.
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(self.request(Method::GET, path)).await
    }

    /// A POST of `body` to `path`, answered with JSON.
    ///
    /// # Errors
    /// As the server answers.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.call(
            self.request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    /// Schedules one job (as `POST /schedule` takes it) and returns its id.
    ///
    /// # Errors
    /// As the server answers (`invalid`, `forbidden`, `source_not_allowed`, …).
    pub async fn schedule(&self, job: &Value) -> Result<JobId, Error> {
        let ids = self.schedule_many(std::slice::from_ref(job)).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("no job in the answer".into()))
    }

    /// Schedules many jobs in one request (all or none) and returns their
    /// ids, in order.
    ///
    /// # Errors
    /// As the server answers.
    pub async fn schedule_many(&self, jobs: &[Value]) -> Result<Vec<JobId>, Error> {
        let answer = self
            .post("/schedule", &serde_json::json!({ "jobs": jobs }))
            .await?;
        answer["jobs"]
            .as_array()
            .ok_or_else(|| Error::Protocol(format!("no jobs in {answer}")))?
            .iter()
            .map(|j| {
                j["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::Protocol(format!("no job id in {j}")))
            })
            .collect()
    }

    /// A job as it is now.
    ///
    /// # Errors
    /// `not_found` for an unknown id; as the server answers otherwise.
    pub async fn job(&self, id: JobId) -> Result<Job, Error> {
        let v = self.get(&format!("/jobs/{id}")).await?;
        parse_job(v)
    }

    /// Jobs, newest first, at most `limit`, optionally only in `state`.
    ///
    /// # Errors
    /// As the server answers.
    pub async fn jobs(&self, state: Option<JobState>, limit: u32) -> Result<Vec<Job>, Error> {
        let mut path = format!("/jobs?limit={limit}");
        if let Some(s) = state {
            path.push_str(&format!("&state={}", s.as_str()));
        }
        let v = self.get(&path).await?;
        v["jobs"]
            .as_array()
            .ok_or_else(|| Error::Protocol(format!("no jobs in {v}")))?
            .iter()
            .cloned()
            .map(parse_job)
            .collect()
    }

    /// Waits until the job ends (or `timeout` passes) and returns it; look
    /// at its `state`. Waits longer than the server's longest wait are made
    /// of several.
    ///
    /// # Errors
    /// As the server answers.
    pub async fn wait(&self, id: JobId, timeout: Duration) -> Result<Job, Error> {
        Ok(self.wait_result(id, timeout).await?.0)
    }

    /// [`Client::wait`], with the job's result: for a job of one task that
    /// succeeded, what its worker returned (JSON if it was JSON, else text);
    /// `None` otherwise (other jobs' results are on their tasks).
    ///
    /// # Errors
    /// As the server answers.
    pub async fn wait_result(
        &self,
        id: JobId,
        timeout: Duration,
    ) -> Result<(Job, Option<Value>), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let step = left.min(Duration::from_secs(55));
            let v = self
                .call(
                    self.request(
                        Method::GET,
                        &format!("/jobs/{id}/wait?timeout={}ms", step.as_millis()),
                    )
                    .timeout(step + Duration::from_secs(30)),
                )
                .await?;
            let result = Some(v["result"].clone()).filter(|r| !r.is_null());
            let job = parse_job(v)?;
            if job.state.is_terminal() || left <= step {
                return Ok((job, result));
            }
        }
    }

    /// Cancels a job; returns it as it is then.
    ///
    /// # Errors
    /// As the server answers.
    pub async fn cancel(&self, id: JobId) -> Result<Job, Error> {
        let v = self
            .call(self.request(Method::POST, &format!("/jobs/{id}/cancel")))
            .await?;
        parse_job(v)
    }

    /// Puts a job's tasks that ended in `states` (dead, cancelled) back in
    /// its queue; returns the job as it is then and how many were requeued.
    ///
    /// # Errors
    /// As the server answers.
    pub async fn requeue(&self, id: JobId, states: &[TaskState]) -> Result<(Job, u64), Error> {
        let v = self
            .call(
                self.request(Method::POST, &format!("/jobs/{id}/requeue"))
                    .header("content-type", "application/json")
                    .body(serde_json::json!({ "states": states }).to_string()),
            )
            .await?;
        let requeued = v["requeued"]
            .as_u64()
            .ok_or_else(|| Error::Protocol(format!("not a requeue answer: {v}")))?;
        Ok((parse_job(v["job"].clone())?, requeued))
    }
}

fn parse_job(v: Value) -> Result<Job, Error> {
    serde_json::from_value(v).map_err(|e| Error::Protocol(format!("not a job: {e}")))
}

/// Reads an answer: JSON for a success, [`Error::Api`] otherwise.
pub(crate) async fn json_answer(resp: reqwest::Response) -> Result<Value, Error> {
    let status = resp.status();
    let text = resp.text().await.map_err(|e| transport(&e))?;
    if status.is_success() {
        if text.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text)
            .map_err(|e| Error::Protocol(format!("{status}: not JSON ({e})")));
    }
    Err(api_error(status, &text))
}

pub(crate) fn api_error(status: StatusCode, text: &str) -> Error {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    Error::Api {
        status: status.as_u16(),
        code: v["error"]["code"].as_str().unwrap_or("unknown").to_owned(),
        message: v["error"]["message"]
            .as_str()
            .map_or_else(|| text.chars().take(200).collect(), str::to_owned),
    }
}
