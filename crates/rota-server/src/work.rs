//! The worker protocol over plain HTTP (`/work/claim`, `/work/heartbeat`,
//! `/work/complete`, a task's payload by URL), and the pieces the WebSocket
//! variant shares with it: how a lease is shown, how heartbeats and reports
//! are read and answered.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State as Extract;

use crate::error::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use rota_core::{
    ClaimRequest, Heartbeat, HeartbeatAck, Lease, LeaseRef, LeaseToken, Outcome, PayloadEncoding,
    Report, StoreError, TaskId, TaskState,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{Scope, State};

type Answer = Result<Json<Value>, ApiError>;

/// Payloads larger than this are not sent inline with their task unless the
/// worker asks for more; it fetches them from `payload_url`.
pub const DEFAULT_INLINE_MAX: usize = 8 << 20;
/// The most a worker may ask to have inline.
pub const MAX_INLINE: usize = 64 << 20;
/// The shortest and longest leases a worker may ask for.
const LEASE_RANGE: (u64, u64) = (1_000, 3_600_000);

/// The worker routes; `max_result` bounds the body of `/work/complete`.
pub(crate) fn routes(max_result: usize) -> axum::Router<State> {
    axum::Router::new()
        .route("/work/claim", post(claim))
        .route("/work/heartbeat", post(heartbeat))
        .route(
            "/work/complete",
            post(complete).layer(axum::extract::DefaultBodyLimit::max(max_result)),
        )
        .route("/work/tasks/{task}/payload", get(payload))
        .route("/work", get(crate::ws::upgrade))
        .route("/workers", get(crate::ws::list_workers))
}

pub(crate) fn default_queues() -> Vec<String> {
    vec![rota_core::default_queue()]
}

/// A lease duration a worker asked for, in range; `default` when not given.
pub(crate) fn lease_duration(ms: Option<u64>, default: u64) -> Duration {
    Duration::from_millis(ms.unwrap_or(default).clamp(LEASE_RANGE.0, LEASE_RANGE.1))
}

/// Checks that a claim names at most `most` queues and `most` specs (each
/// is looked at on every poll).
pub(crate) fn names_within(
    queues: &[String],
    specs: &[String],
    most: usize,
) -> Result<(), ApiError> {
    for (what, names) in [("queues", queues), ("specs", specs)] {
        if names.len() > most {
            return Err(ApiError::invalid(format!(
                "{} {what} named; this server takes at most {most}",
                names.len()
            )));
        }
    }
    Ok(())
}

/// The JSON body of a request, as `T`, or the error to answer.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    let Json(value) = body.map_err(crate::routes::rejected)?;
    serde_json::from_value(value).map_err(|e| ApiError::invalid(e.to_string()))
}

/// A claimed task as a worker is given it. A payload of at most
/// `inline_max` bytes comes inline (as text, or base64 for Arrow); a larger
/// one is fetched from `payload_url`, which holds the lease and `lease_ms`
/// so that fetching it also extends the lease by as much as the claim did.
pub(crate) fn lease_json(lease: &Lease, inline_max: usize, lease_ms: u128) -> Value {
    let mut task = json!({
        "task_id": lease.lease.task, "attempt": lease.lease.attempt,
        "lease_token": lease.lease.token, "expires_at": lease.expires_at,
        "job_id": lease.job_id, "key": lease.key, "spec": lease.spec, "queue": lease.queue,
        "params": lease.params, "encoding": lease.encoding,
        "media_type": lease.encoding.media_type(), "rows": lease.rows,
        "max_attempts": lease.max_attempts, "payload_bytes": lease.payload_bytes,
        "payload": Value::Null,
    });
    if lease.payload_left || lease.payload.len() > inline_max {
        // The lease token is not in the URL (proxies and access logs keep
        // URLs): the worker sends it in the `Rota-Lease-Token` header.
        task["payload_url"] = Value::String(format!(
            "/work/tasks/{}/payload?attempt={}&lease_ms={lease_ms}",
            lease.lease.task, lease.lease.attempt
        ));
        return task;
    }
    let text = (lease.encoding != PayloadEncoding::Arrow)
        .then(|| std::str::from_utf8(&lease.payload).ok())
        .flatten();
    match text {
        Some(t) => task["payload"] = Value::String(t.to_owned()),
        None => {
            task["payload_base64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(&lease.payload));
        }
    }
    task
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimBody {
    /// Who claims (recorded on the tasks).
    #[schema(min_length = 1)]
    worker: String,
    #[serde(default = "default_queues")]
    queues: Vec<String>,
    /// Only tasks of these specs (default: any).
    #[serde(default)]
    specs: Vec<String>,
    /// Most tasks to claim (1 to 100).
    #[serde(default)]
    limit: Option<u32>,
    /// How long each lease lasts without a heartbeat (1 s to 1 h).
    #[serde(default)]
    lease_ms: Option<u64>,
    /// How long to wait for work when there is none (at most 60 s).
    #[serde(default)]
    wait_ms: Option<u64>,
    /// Largest payload to send inline.
    #[serde(default)]
    inline_max_bytes: Option<usize>,
}

#[utoipa::path(post, path = "/work/claim", tag = "work", request_body = ClaimBody, responses((status = 200, description = "Up to `limit` tasks, or none at the end of the wait", body = crate::openapi::ClaimAnswer), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 415, description = "The body is not JSON", body = crate::openapi::ErrorBody)))]
pub(crate) async fn claim(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Work))?;
    let body: ClaimBody = json_body(body)?;
    if body.worker.trim().is_empty() {
        return Err(ApiError::invalid("name the worker"));
    }
    names_within(&body.queues, &body.specs, state.config.limits.claim_names)?;
    let inline_max = body
        .inline_max_bytes
        .unwrap_or(DEFAULT_INLINE_MAX)
        .min(MAX_INLINE);
    let req = ClaimRequest {
        queues: body.queues,
        worker: body.worker,
        limit: body.limit.unwrap_or(1).clamp(1, 100),
        lease: lease_duration(body.lease_ms, 30_000),
        specs: body.specs,
        // Payloads sent by URL are not read by the claim at all.
        inline_max: Some(inline_max as u64),
    };
    let deadline = Instant::now()
        + Duration::from_millis(body.wait_ms.unwrap_or(0)).min(state.config.max_wait);
    loop {
        // Listen before looking, so a schedule in between is not missed.
        let woken = state.work.notified();
        let leases = state.store.claim(req.clone()).await?;
        let now = Instant::now();
        if !leases.is_empty() || now >= deadline {
            state.metrics.claimed(leases.len());
            let tasks: Vec<Value> = leases
                .iter()
                .map(|l| lease_json(l, inline_max, req.lease.as_millis()))
                .collect();
            return Ok(Json(json!({ "tasks": tasks })));
        }
        // Other nodes add work too: the store wakes us when it hears of
        // it, and we look again at least every 250 ms.
        let pause = (deadline - now).min(Duration::from_millis(250));
        tokio::select! {
            () = woken => {}
            () = state.store.wait_for_work(&req.queues, pause) => {}
        }
    }
}

/// One held attempt in a heartbeat, with what its worker says of its
/// progress.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BeatBody {
    pub(crate) task_id: TaskId,
    pub(crate) attempt: u32,
    pub(crate) lease_token: LeaseToken,
    /// Any JSON value, kept on the task (`{"done": 400, "total": 1000}`).
    #[serde(default)]
    pub(crate) progress: Option<Value>,
}

impl BeatBody {
    pub(crate) fn lease(&self) -> LeaseRef {
        LeaseRef {
            task: self.task_id,
            attempt: self.attempt,
            token: self.lease_token,
        }
    }

    pub(crate) fn into_heartbeat(self) -> Heartbeat {
        Heartbeat {
            lease: self.lease(),
            progress: self.progress,
        }
    }
}

/// How one heartbeat item went, as answered to the worker.
pub(crate) fn ack_json(ack: Result<HeartbeatAck, StoreError>) -> Value {
    match ack {
        Ok(a) => {
            json!({ "ok": true, "expires_at": a.expires_at, "cancel_requested": a.cancel_requested })
        }
        Err(e) => json!({ "ok": false, "error": ApiError::from(e).to_json() }),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    leases: Vec<BeatBody>,
    /// How long from now each lease lasts.
    #[serde(default)]
    extend_ms: Option<u64>,
}

#[utoipa::path(post, path = "/work/heartbeat", tag = "work", request_body = HeartbeatBody, responses((status = 200, description = "Per lease", body = crate::openapi::HeartbeatAnswer), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 415, description = "The body is not JSON", body = crate::openapi::ErrorBody)))]
pub(crate) async fn heartbeat(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Work))?;
    let body: HeartbeatBody = json_body(body)?;
    let extend = lease_duration(body.extend_ms, 30_000);
    let acks = state
        .store
        .heartbeat(
            body.leases
                .into_iter()
                .map(BeatBody::into_heartbeat)
                .collect(),
            extend,
        )
        .await?;
    let results: Vec<Value> = acks.into_iter().map(ack_json).collect();
    Ok(Json(json!({ "results": results })))
}

/// A worker's report on one attempt.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportBody {
    pub(crate) task_id: TaskId,
    attempt: u32,
    lease_token: LeaseToken,
    /// The result of a success: any JSON value.
    #[serde(default)]
    result: Option<Value>,
    /// Why the attempt failed; its presence makes the report a failure.
    #[serde(default)]
    error: Option<String>,
    /// For a failure: whether another attempt may succeed (default true).
    #[serde(default)]
    retryable: Option<bool>,
}

impl ReportBody {
    /// The report as the store takes it. A string result is kept as its
    /// text, any other value as its JSON.
    pub(crate) fn into_report(self) -> Report {
        let lease = LeaseRef {
            task: self.task_id,
            attempt: self.attempt,
            token: self.lease_token,
        };
        let outcome = match self.error {
            Some(error) => Outcome::Failure {
                error,
                retryable: self.retryable.unwrap_or(true),
            },
            None => Outcome::Success(match self.result {
                Some(Value::String(s)) => s.into_bytes(),
                Some(v) => v.to_string().into_bytes(),
                None => Vec::new(),
            }),
        };
        Report { lease, outcome }
    }
}

/// How one report went, as answered to the worker.
pub(crate) fn state_json(state: Result<TaskState, StoreError>) -> Value {
    match state {
        Ok(task_state) => json!({ "ok": true, "state": task_state }),
        Err(e) => json!({ "ok": false, "error": ApiError::from(e).to_json() }),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteBody {
    reports: Vec<ReportBody>,
}

#[utoipa::path(post, path = "/work/complete", tag = "work", request_body = CompleteBody, responses((status = 200, description = "Per report", body = crate::openapi::CompleteAnswer), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 415, description = "The body is not JSON", body = crate::openapi::ErrorBody)))]
pub(crate) async fn complete(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Work))?;
    let body: CompleteBody = json_body(body)?;
    let reports = body
        .reports
        .into_iter()
        .map(ReportBody::into_report)
        .collect();
    let states = state.store.report(reports).await?;
    state.metrics.reported(&states);
    let results: Vec<Value> = states.into_iter().map(state_json).collect();
    // A retried task may be claimable again.
    state.work.notify_waiters();
    Ok(Json(json!({ "results": results })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PayloadQuery {
    attempt: u32,
    lease_ms: Option<u64>,
}

/// The header that carries the lease token of a payload fetch.
pub const LEASE_TOKEN_HEADER: &str = "rota-lease-token";

/// A task's payload, for the holder of its lease (its token in the
/// `Rota-Lease-Token` header); fetching it extends the lease as a heartbeat
/// would.
#[utoipa::path(get, path = "/work/tasks/{task}/payload", tag = "work", params(("task" = i64, Path, description = "The task"), PayloadQuery, ("Rota-Lease-Token" = rota_core::LeaseToken, Header, description = "The task's lease token")), responses((status = 200, description = "The payload's bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody), (status = 409, description = "The lease is no longer held", body = crate::openapi::ErrorBody)))]
pub(crate) async fn payload(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(task): Path<i64>,
    Query(q): Query<PayloadQuery>,
) -> Result<impl IntoResponse, ApiError> {
    state.config.tokens.check(&headers, Some(Scope::Work))?;
    let token: LeaseToken = headers
        .get(LEASE_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "send the task's lease token in the {LEASE_TOKEN_HEADER} header"
            ))
        })?;
    let task = TaskId(task);
    let lease = LeaseRef {
        task,
        attempt: q.attempt,
        token,
    };
    let ack = state
        .store
        .heartbeat(vec![lease.into()], lease_duration(q.lease_ms, 30_000))
        .await?
        .pop()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no ack"))?;
    ack.map_err(ApiError::from)?;
    let bytes = state.store.get_payload(task).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}
