//! The routes: one handler per endpoint, each checking its scope first.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State as Extract;

use crate::error::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use rota_core::{
    BatchPolicy, FileFilter, FileState, IngestPlan, Job, JobFilter, JobId, JobStart, JobState,
    NewJob, NewTask, OnError, PayloadEncoding, Spec, Task, TaskFilter, TaskState,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{Caller, Scope, State};

type Answer = Result<Json<Value>, ApiError>;

pub(crate) fn routes(state: State) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/specs", get(list_specs))
        .route("/specs/{name}", get(get_spec).put(put_spec))
        .route("/schedule", post(schedule))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/tasks", get(list_tasks))
        .route("/jobs/{id}/files", get(list_files))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/requeue", post(requeue_job))
        .route("/jobs/{id}/wait", get(wait_job))
        .route("/jobs/{id}/events", get(job_events))
        .merge(crate::work::routes(state.config.limits.max_result))
        .merge(crate::uploads::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

fn parse<T: std::str::FromStr<Err = String>>(text: &str, what: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::invalid(format!("{what}: {e}")))
}

/// A body that could not be read as JSON: 413 for one past the size limit,
/// 415 without a JSON content type, else 400 (JSON of the wrong shape
/// included, which axum would answer 422).
pub(crate) fn rejected(e: axum::extract::rejection::JsonRejection) -> ApiError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.body_text())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            e.body_text(),
        ),
        _ => ApiError::invalid(e.body_text()),
    }
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no job {text} (not a job id)")))
}

/// A duration as `500ms`, `30s`, `2m` or a number of seconds.
fn duration(text: &str) -> Result<Duration, ApiError> {
    let bad = || ApiError::invalid(format!("'{text}' is not a duration (e.g. 500ms, 30s, 2m)"));
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[utoipa::path(get, path = "/healthz", tag = "meta", security(()), responses((status = 200, description = "The server and its store answer", body = crate::openapi::Health)))]
pub(crate) async fn healthz(Extract(state): Extract<State>) -> Answer {
    state.store.list_specs().await?;
    Ok(Json(json!({ "status": "ok" })))
}

// ---- specs -----------------------------------------------------------------

#[utoipa::path(get, path = "/specs", tag = "specs", responses((status = 200, description = "Every spec, by name", body = crate::openapi::SpecList), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list_specs(Extract(state): Extract<State>, headers: HeaderMap) -> Answer {
    state.config.tokens.check(&headers, None)?;
    Ok(Json(json!({ "specs": state.store.list_specs().await? })))
}

#[utoipa::path(get, path = "/specs/{name}", tag = "specs", params(("name" = String, Path, description = "The spec's name")), responses((status = 200, description = "The spec", body = rota_core::Spec), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get_spec(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    state.config.tokens.check(&headers, None)?;
    let spec = state
        .store
        .get_spec(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no spec {name}")))?;
    Ok(Json(json!(spec)))
}

#[utoipa::path(put, path = "/specs/{name}", tag = "specs", params(("name" = String, Path, description = "The spec's name")), request_body = rota_core::Spec, responses((status = 200, description = "The spec as registered", body = rota_core::Spec), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 415, description = "The body is not JSON", body = crate::openapi::ErrorBody)))]
pub(crate) async fn put_spec(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<Spec>, axum::extract::rejection::JsonRejection>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Admin))?;
    let Json(spec) = body.map_err(rejected)?;
    if spec.name != name {
        return Err(ApiError::invalid(format!(
            "the spec is named '{}' but was put at /specs/{name}",
            spec.name
        )));
    }
    if let Some(schema) = &spec.params_schema {
        jsonschema::validator_for(schema).map_err(|e| {
            ApiError::invalid(format!("params_schema is not a valid JSON Schema: {e}"))
        })?;
    }
    state.store.put_spec(spec.clone()).await?;
    Ok(Json(json!(spec)))
}

// ---- scheduling ------------------------------------------------------------

/// One job to schedule.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobRequest {
    /// The spec's name.
    #[schema(min_length = 1, pattern = r"\S")]
    pub(crate) spec: String,
    /// Parameters handed to every task: a JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) params: Option<Value>,
    /// The queue; else the spec's, else `default`.
    pub(crate) queue: Option<String>,
    /// Attempts per task; else the spec's retry policy.
    #[schema(minimum = 1)]
    pub(crate) max_attempts: Option<u32>,
    /// First retry delay in milliseconds, doubled per attempt.
    pub(crate) retry_backoff_ms: Option<u64>,
    /// Scheduling again with the same key (and the same token) returns the
    /// same job. At most 256 bytes; `schedule:` and `upload:` are reserved.
    #[schema(min_length = 1, max_length = 256)]
    pub(crate) idempotency_key: Option<String>,
    /// File batching: the server reads the source and makes one task per batch.
    pub(crate) batch: Option<BatchRequest>,
    /// URLs told of the job's state changes.
    #[serde(default)]
    pub(crate) callbacks: Vec<crate::callbacks::CallbackRequest>,
    /// Higher first among a queue's claimable tasks (default 0).
    #[serde(default)]
    pub(crate) priority: Option<i32>,
    /// Not claimable before this time (RFC 3339).
    #[serde(default)]
    pub(crate) run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Longest one attempt may run, in milliseconds (1 s to 7 days).
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 604_800_000)]
    pub(crate) timeout_ms: Option<u64>,
}

/// A source to batch, and how.
#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// A file, directory, prefix or URL, as `rota ingest` takes it.
    pub(crate) source: String,
    #[serde(default)]
    pub(crate) recursive: bool,
    pub(crate) glob: Option<String>,
    #[serde(default)]
    pub(crate) exclude: Vec<String>,
    pub(crate) format: Option<String>,
    #[serde(default)]
    pub(crate) options: BTreeMap<String, String>,
    pub(crate) schema: Option<String>,
    pub(crate) encoding: Option<String>,
    /// Most records per task (default 1000 unless `max_bytes` is given).
    pub(crate) max_rows: Option<u64>,
    /// Most payload bytes per task.
    pub(crate) max_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) payload: PayloadEncoding,
    #[serde(default)]
    pub(crate) on_error: OnError,
}

/// `/schedule` takes one job or `{"jobs": [...]}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum ScheduleBody {
    Many {
        #[schema(min_items = 1)]
        jobs: Vec<JobRequest>,
    },
    One(Box<JobRequest>),
}

#[utoipa::path(post, path = "/schedule", tag = "jobs", params(("Idempotency-Key" = Option<String>, Header, description = "The idempotency key of a single job")), request_body = ScheduleBody, responses((status = 201, description = "At least one job was made", body = crate::openapi::ScheduleAnswer), (status = 200, description = "Every job existed (idempotency keys)", body = crate::openapi::ScheduleAnswer), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody), (status = 415, description = "The body is not JSON", body = crate::openapi::ErrorBody)))]
pub(crate) async fn schedule(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = state
        .config
        .tokens
        .caller(&headers, Some(Scope::Schedule))?;
    let Json(body) = body.map_err(rejected)?;
    let body: ScheduleBody = serde_json::from_value(body.clone()).map_err(|_| {
        // Say what is wrong with the job itself rather than "no variant matched".
        let one = body
            .get("jobs")
            .and_then(Value::as_array)
            .and_then(|j| j.first().cloned())
            .unwrap_or(body);
        match serde_json::from_value::<JobRequest>(one) {
            Err(e) => ApiError::invalid(format!("not a job: {e}")),
            Ok(_) => ApiError::invalid("expected a job or {\"jobs\": [...]}"),
        }
    })?;
    let jobs = match body {
        ScheduleBody::Many { jobs } => jobs,
        ScheduleBody::One(job) => {
            let mut job = *job;
            if job.idempotency_key.is_none() {
                job.idempotency_key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
            vec![job]
        }
    };
    if jobs.is_empty() {
        return Err(ApiError::invalid("no jobs to schedule"));
    }
    let most = state.config.limits.jobs_per_request;
    if jobs.len() > most {
        return Err(ApiError::invalid(format!(
            "{} jobs in one request; this server takes at most {most} (send the rest in more requests)",
            jobs.len()
        )));
    }
    // Check every job before making any, so a bad one fails the request whole.
    for job in &jobs {
        check(&state, job)?;
        check_key(job.idempotency_key.as_deref())?;
        let spec = state.store.get_spec(&job.spec).await?;
        spec_params(spec.as_ref(), job.params.clone())?;
    }
    let mut out = Vec::with_capacity(jobs.len());
    let mut any_created = false;
    for job in jobs {
        let (job, created) = make_job(&state, &caller, job).await?;
        any_created |= created;
        out.push(json!({ "id": job.id, "created": created, "state": job.state }));
    }
    state.work.notify_waiters();
    let status = if any_created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "jobs": out }))))
}

fn check(state: &State, job: &JobRequest) -> Result<(), ApiError> {
    crate::callbacks::check(&state.config.callbacks, &job.callbacks)?;
    if let Some(batch) = &job.batch {
        if rota_sources::scheme(&batch.source) == Some(crate::uploads::SCHEME) {
            return Err(ApiError::invalid(
                "a batch source cannot be an upload; upload the data at /uploads instead",
            ));
        }
        state.config.allow.check(&batch.source)?;
        within_limits(&state.config.limits, batch)?;
    }
    validate(job)
}

/// The format options that bound what one ingest may hold (memory, disk),
/// with the most this server allows: the formats' own defaults, so that a
/// client may lower them and never raise them.
const CAPPED_OPTIONS: &[(&str, u64)] = &[
    ("max_inline", 1 << 20),
    ("max_spool", 64 << 30),
    ("max_cells", 100_000_000),
    ("max_page", 256 << 20),
];

/// Checks that `batch` asks for no more than the server's limits allow:
/// batch sizes, and the format options that bound memory and disk.
///
/// # Errors
/// 400 naming the setting and its most.
pub(crate) fn within_limits(limits: &crate::Limits, batch: &BatchRequest) -> Result<(), ApiError> {
    let over = |what: &str, given: u64, most: u64| {
        ApiError::invalid(format!(
            "{what} is {given}; this server allows at most {most}"
        ))
    };
    if let Some(rows) = batch.max_rows
        && rows > limits.batch_rows
    {
        return Err(over("max_rows", rows, limits.batch_rows));
    }
    if let Some(bytes) = batch.max_bytes
        && bytes > limits.batch_bytes
    {
        return Err(over("max_bytes", bytes, limits.batch_bytes));
    }
    for (key, most) in CAPPED_OPTIONS {
        if let Some(given) = batch.options.get(*key) {
            // A value that is not a number is the format's to refuse.
            if let Ok(n) = given.trim().parse::<u64>()
                && n > *most
            {
                return Err(over(&format!("options.{key}"), n, *most));
            }
        }
    }
    Ok(())
}

/// Longest idempotency key a client may give, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 256;

/// Key prefixes the server gives the jobs it names itself: a client key may
/// not start with them, so no client can name (and replay into) such a job.
const RESERVED_KEY_PREFIXES: [&str; 2] = ["schedule:", "upload:"];

/// Refuses an idempotency key that is empty, too long or reserved.
pub(crate) fn check_key(key: Option<&str>) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Ok(());
    };
    if key.is_empty() {
        return Err(ApiError::invalid("idempotency_key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::invalid(format!(
            "idempotency_key is {} bytes; at most {MAX_KEY_BYTES} are allowed",
            key.len()
        )));
    }
    if let Some(prefix) = RESERVED_KEY_PREFIXES.iter().find(|p| key.starts_with(*p)) {
        return Err(ApiError::invalid(format!(
            "idempotency_key may not start with '{prefix}' (reserved for keys the server makes)"
        )));
    }
    Ok(())
}

/// The key a client's idempotency key is stored under: its caller's id,
/// `/`, the key. Keys of two tokens never meet, so a token can find (and
/// replay) only the jobs it made.
pub(crate) fn owned_key(caller: &Caller, key: &str) -> String {
    format!("{}/{key}", caller.id)
}

/// A stored job key as its client gave it: without the caller's id that
/// [`owned_key`] put in front (which names the token, and is shown to no one).
pub(crate) fn shown_key(key: &str) -> &str {
    match key.split_once('/') {
        Some((owner, rest))
            if owner == "local"
                || (owner.len() == 16 && owner.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            rest
        }
        _ => key,
    }
}

/// A job as clients see it: its key as they gave it.
pub(crate) fn shown(mut job: Job) -> Job {
    if let Some(key) = job.key.take() {
        job.key = Some(shown_key(&key).to_owned());
    }
    job
}

/// A job's params with its spec's defaults filled in, checked against the
/// spec's schema.
fn spec_params(spec: Option<&Spec>, params: Option<Value>) -> Result<Value, ApiError> {
    let mut params = params.unwrap_or_else(|| json!({}));
    let Some(spec) = spec else {
        return Ok(params);
    };
    if let Value::Object(given) = &mut params {
        for (k, v) in &spec.defaults {
            given.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(schema) = &spec.params_schema {
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            ApiError::invalid(format!(
                "spec '{}' has an invalid params_schema: {e}",
                spec.name
            ))
        })?;
        let errors: Vec<String> = validator
            .iter_errors(&params)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if !errors.is_empty() {
            return Err(ApiError::invalid(format!(
                "params do not match spec '{}': {}",
                spec.name,
                errors.join("; ")
            )));
        }
    }
    Ok(params)
}

/// Checks what a job asks for, apart from where its batch comes from.
pub(crate) fn validate(job: &JobRequest) -> Result<(), ApiError> {
    if job.spec.trim().is_empty() {
        return Err(ApiError::invalid("a job needs a spec"));
    }
    if job.max_attempts == Some(0) {
        return Err(ApiError::invalid("max_attempts must be at least 1"));
    }
    if job
        .timeout_ms
        .is_some_and(|t| !(1_000..=7 * 24 * 3_600_000).contains(&t))
    {
        return Err(ApiError::invalid(
            "timeout_ms must be 1 000 (1 s) to 604 800 000 (7 days)",
        ));
    }
    if let Some(params) = &job.params
        && !params.is_object()
    {
        return Err(ApiError::invalid("params must be a JSON object"));
    }
    let Some(batch) = &job.batch else {
        return Ok(());
    };
    policy(batch).validate().map_err(ApiError::invalid)?;
    if let Some(name) = &batch.format
        && rota_formats::by_name(name).is_none()
    {
        return Err(ApiError::invalid(format!(
            "unknown format '{name}' (known: {})",
            rota_formats::names().join(", ")
        )));
    }
    if let Some(schema) = &batch.schema {
        rota_formats::parse_schema(schema).map_err(ApiError::invalid)?;
    }
    if let Some(label) = &batch.encoding {
        rota_formats::text_encoding(label).map_err(ApiError::invalid)?;
    }
    Ok(())
}

fn policy(batch: &BatchRequest) -> BatchPolicy {
    BatchPolicy {
        max_rows: batch
            .max_rows
            .or_else(|| batch.max_bytes.is_none().then_some(1_000)),
        max_bytes: batch.max_bytes,
    }
}

/// The job `req` asks for, as the store takes it, with its batch (if any).
pub(crate) async fn new_job(
    state: &State,
    req: JobRequest,
) -> Result<(NewJob, Option<BatchRequest>), ApiError> {
    let spec = state.store.get_spec(&req.spec).await?;
    let mut retry = spec.as_ref().map(|s| s.retry).unwrap_or_default();
    if let Some(n) = req.max_attempts {
        retry.max_attempts = n;
    }
    if let Some(ms) = req.retry_backoff_ms {
        retry.backoff_base_ms = ms;
    }
    let queue = req
        .queue
        .clone()
        .or_else(|| spec.as_ref().map(|s| s.queue.clone()))
        .unwrap_or_else(rota_core::default_queue);
    let params = spec_params(spec.as_ref(), req.params.clone())?;
    let hold = req.batch.is_some();
    let key = match (&req.batch, req.idempotency_key) {
        // The job exists (held) before its ingest starts, so that its id can
        // be answered at once; the ingest finds it by its key and fills it.
        (Some(_), None) => Some(format!("schedule:{}", uuid::Uuid::now_v7())),
        (_, key) => key,
    };
    let job = NewJob {
        key,
        spec: req.spec,
        queue,
        params,
        retry,
        hold,
        ingest: None,
        timing: rota_core::Timing {
            priority: req.priority.unwrap_or_default(),
            run_at: req.run_at,
            timeout_ms: req.timeout_ms,
        },
    };
    Ok((job, req.batch))
}

/// Creates the job (or finds it by its key, among the caller's): a plain job
/// is made with its one task, whose payload is its params; a batch job is
/// made held, with the plan to run its ingest again after a crash, and
/// ingested in the background. Both in one store transaction with their
/// callbacks, so a crash never leaves a job without them. A job found by
/// its key is answered as it is: nothing of this request is added to it.
async fn make_job(
    state: &State,
    caller: &Caller,
    mut req: JobRequest,
) -> Result<(Job, bool), ApiError> {
    let callbacks = std::mem::take(&mut req.callbacks)
        .into_iter()
        .map(crate::callbacks::CallbackRequest::into_new)
        .collect();
    req.idempotency_key = req.idempotency_key.map(|k| owned_key(caller, &k));
    let (new_job, batch) = new_job(state, req).await?;
    let Some(batch) = batch else {
        let payload = serde_json::to_vec(&new_job.params)
            .map_err(|e| ApiError::invalid(format!("params: {e}")))?;
        let start = JobStart {
            tasks: vec![NewTask {
                key: "0".to_owned(),
                payload,
                encoding: PayloadEncoding::Json,
                rows: 1,
            }],
            callbacks,
            ingest: None,
        };
        let (job, created) = state.store.create_job_with(new_job, start).await?;
        return Ok((shown(job), created));
    };
    // Checked before the job is made, so a bad request leaves nothing.
    let ingest = ingest_request(state, &batch, new_job.clone())?;
    let start = JobStart {
        tasks: Vec::new(),
        callbacks,
        ingest: Some(IngestPlan {
            plan: crate::ingests::plan(&batch),
            holder: state.ingests.holder().to_owned(),
            lease: crate::ingests::LEASE,
        }),
    };
    let (job, created) = state.store.create_job_with(new_job, start).await?;
    if created {
        crate::ingests::spawn(state, ingest, job.id);
    }
    Ok((shown(job), created))
}

/// The ingest that fills `job` from `batch`.
pub(crate) fn ingest_request(
    state: &State,
    batch: &BatchRequest,
    job: NewJob,
) -> Result<rota_ingest::IngestRequest, ApiError> {
    Ok(rota_ingest::IngestRequest {
        location: batch.source.clone(),
        recursive: batch.recursive,
        glob: batch.glob.clone(),
        filter: rota_sources::EntryFilter {
            exclude: batch.exclude.clone(),
            ..rota_sources::EntryFilter::default()
        },
        sources: state.config.sources.clone(),
        format: batch.format.clone(),
        decode: rota_core::format::DecodeOptions {
            schema: batch
                .schema
                .as_deref()
                .map(rota_formats::parse_schema)
                .transpose()
                .map_err(ApiError::invalid)?,
            on_error: batch.on_error,
            options: batch.options.clone(),
            ..rota_core::format::DecodeOptions::default()
        },
        decompression: rota_formats::Limits::default(),
        encoding: batch.encoding.clone(),
        batch: policy(batch),
        payload: batch.payload,
        job,
        parallel: rota_ingest::DEFAULT_PARALLEL_FILES,
        split_bytes: rota_ingest::DEFAULT_SPLIT_BYTES,
        node: Some(state.node.clone()),
    })
}

/// Why an ingest [`run_ingest`] ran did not finish.
pub(crate) struct Unfinished {
    /// What went wrong.
    pub(crate) error: String,
    /// A store write failed part way and the job was left held: the same
    /// ingest run again once the store answers finishes it, each row once.
    pub(crate) held: bool,
}

/// Runs a batch job's ingest to its end, logging how it went. A failure
/// before the ingest reached the job (a missing path) fails the job, with
/// the reason; a store write that failed part way leaves the job held
/// (with nothing claimable), for its ingest to be run again: by whichever
/// server resumes it, for a batch job, or by the upload's own ingest.
/// Waiting claims are woken when it ends.
pub(crate) async fn run_ingest(
    state: &State,
    ingest: rota_ingest::IngestRequest,
    id: JobId,
) -> Result<rota_ingest::IngestSummary, Unfinished> {
    let result =
        rota_ingest::ingest(state.store.clone(), ingest, state.metrics.ingest.clone()).await;
    let out = match result {
        Ok(summary) => {
            tracing::info!(job = %id, rows = summary.report.rows, tasks = summary.report.tasks, "batch ingested");
            Ok(summary)
        }
        // The store went away part way, or before the ingest reached the
        // job (a restart, a failover): the job is left held, not failed.
        Err(
            e @ (rota_ingest::IngestError::StoreHeld { .. }
            | rota_ingest::IngestError::Store(rota_core::StoreError::Transient(_))),
        ) => {
            tracing::warn!(job = %id, error = %e, "batch ingest stopped on a store error; the job stays held and resumes");
            Err(Unfinished {
                error: e.to_string(),
                held: true,
            })
        }
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "batch ingest failed");
            if let Err(fail) = state.store.fail_job(id, e.to_string(), None).await {
                tracing::error!(job = %id, error = %fail, "could not mark the job failed");
            }
            Err(Unfinished {
                error: e.to_string(),
                held: false,
            })
        }
    };
    state.work.notify_waiters();
    out
}

// ---- jobs ------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobsQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Only jobs of this spec.
    spec: Option<String>,
    /// Only jobs on this queue.
    queue: Option<String>,
    /// Only jobs older than this one (the last page's `next_before`).
    #[param(value_type = Option<JobId>)]
    before: Option<String>,
    /// Only jobs created at or after this time (RFC 3339).
    created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only jobs created before this time (RFC 3339).
    created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Most jobs (1 to 500, default 50).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/jobs", tag = "jobs", params(JobsQuery), responses((status = 200, description = "Jobs, newest first", body = crate::openapi::JobsPage), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list_jobs(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Query(q): Query<JobsQuery>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let jobs = state
        .store
        .list_jobs(JobFilter {
            state: q
                .state
                .as_deref()
                .map(|s| parse::<JobState>(s, "state"))
                .transpose()?,
            spec: q.spec,
            queue: q.queue,
            before: q
                .before
                .as_deref()
                .map(|b| {
                    b.parse()
                        .map_err(|_| ApiError::invalid(format!("before: '{b}' is not a job id")))
                })
                .transpose()?,
            created_after: q.created_after,
            created_before: q.created_before,
            limit,
        })
        .await?;
    let next = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.id))
        .flatten();
    let jobs: Vec<Job> = jobs.into_iter().map(shown).collect();
    Ok(Json(json!({ "jobs": jobs, "next_before": next })))
}

pub(crate) async fn load_job(state: &State, id: &str) -> Result<Job, ApiError> {
    let id = job_id(id)?;
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "A job id")), responses((status = 200, description = "The job", body = crate::openapi::JobView), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody)))]
pub(crate) async fn get_job(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    let job = load_job(&state, &id).await?;
    Ok(Json(job_view(&state, job).await?))
}

/// A job as `GET /jobs/{id}` and `/wait` show it: with its running tasks,
/// its callbacks, its result (a job of one task that succeeded) and a sample
/// of its failed tasks with their errors.
async fn job_view(state: &State, job: Job) -> Result<Value, ApiError> {
    let running = if job.counts.running > 0 {
        state
            .store
            .list_tasks(
                job.id,
                TaskFilter {
                    state: Some(TaskState::Running),
                    limit: RUNNING_SHOWN,
                    ..TaskFilter::default()
                },
            )
            .await?
    } else {
        Vec::new()
    };
    let callbacks = state.store.list_callbacks(job.id).await?;
    let mut errors = Vec::new();
    for (failed, count) in [
        (TaskState::Dead, job.counts.dead),
        (TaskState::Retrying, job.counts.retrying),
    ] {
        let room = ERRORS_SHOWN.saturating_sub(errors.len() as u32);
        if count > 0 && room > 0 {
            let filter = TaskFilter {
                state: Some(failed),
                limit: room,
                ..TaskFilter::default()
            };
            errors.extend(state.store.list_tasks(job.id, filter).await?);
        }
    }
    let result = job_result(state, &job).await?;
    let mut out = json!(shown(job));
    out["running"] = running.iter().map(running_json).collect();
    out["callbacks"] = callbacks
        .iter()
        .map(crate::callbacks::status_json)
        .collect();
    out["result"] = result.unwrap_or(Value::Null);
    out["errors"] = errors
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "key": t.key, "state": t.state, "attempt": t.attempt,
                "error": t.error, "finished_at": t.finished_at,
            })
        })
        .collect();
    Ok(out)
}

/// Failed tasks shown with their errors on `GET /jobs/{id}`, at most.
const ERRORS_SHOWN: u32 = 10;

/// The result of a job of one task that succeeded: that task's result, as
/// JSON if it is JSON, else as text.
pub(crate) async fn job_result(state: &State, job: &Job) -> Result<Option<Value>, ApiError> {
    if job.state != JobState::Succeeded || job.counts.total != 1 {
        return Ok(None);
    }
    let filter = TaskFilter {
        limit: 1,
        with_results: true,
        ..TaskFilter::default()
    };
    let tasks = state.store.list_tasks(job.id, filter).await?;
    Ok(tasks.first().and_then(|t| t.result.as_ref()).map(|r| {
        serde_json::from_slice(r)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(r).into_owned()))
    }))
}

/// Running tasks shown with their progress on `GET /jobs/{id}`, at most.
const RUNNING_SHOWN: u32 = 100;

/// A running task as `GET /jobs/{id}` shows it.
fn running_json(t: &Task) -> Value {
    json!({
        "id": t.id, "key": t.key, "attempt": t.attempt, "worker": t.worker,
        "rows": t.rows, "lease_expires_at": t.lease_expires_at, "progress": t.progress,
    })
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct TasksQuery {
    /// Only tasks in this state.
    #[param(value_type = Option<TaskState>)]
    state: Option<String>,
    after: Option<String>,
    /// Most tasks (1 to 1000, default 100; at most 100 with `results`, and
    /// fewer when their results pass the largest result size).
    limit: Option<u32>,
    /// Whether each task's result comes along.
    #[serde(default)]
    results: bool,
}

#[utoipa::path(get, path = "/jobs/{id}/tasks", tag = "jobs", params(("id" = String, Path, description = "A job id"), TasksQuery), responses((status = 200, description = "The job's tasks, by key", body = crate::openapi::TasksPage), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list_tasks(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TasksQuery>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    // Results may be large (up to a worker's largest result each): fewer
    // per page when they come along, and a page ends once its results
    // reach the size of the largest one (at least one task per page).
    let most = if q.results { 100 } else { 1000 };
    let limit = q.limit.unwrap_or(100).clamp(1, most);
    let budget = if q.results {
        state.config.limits.max_result as u64
    } else {
        0
    };
    let tasks = state
        .store
        .list_tasks(
            job_id(&id)?,
            TaskFilter {
                state: q
                    .state
                    .as_deref()
                    .map(|s| parse::<TaskState>(s, "state"))
                    .transpose()?,
                after_key: q.after,
                limit,
                with_results: q.results,
                results_budget: budget,
            },
        )
        .await?;
    let result_bytes: u64 = tasks
        .iter()
        .map(|t| t.result.as_ref().map_or(0, |r| r.len() as u64))
        .sum();
    let full = tasks.len() == limit as usize || (budget > 0 && result_bytes >= budget);
    let next = full.then(|| tasks.last().map(|t| t.key.clone())).flatten();
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|t| {
            json!({
                "id": t.id, "key": t.key, "state": t.state, "attempt": t.attempt,
                "max_attempts": t.max_attempts, "rows": t.rows, "payload_bytes": t.payload_bytes,
                "encoding": t.encoding, "available_at": t.available_at,
                "lease_expires_at": t.lease_expires_at, "worker": t.worker,
                "result": t.result.as_ref().map(|r| String::from_utf8_lossy(r).into_owned()),
                "error": t.error, "finished_at": t.finished_at, "progress": t.progress,
            })
        })
        .collect();
    Ok(Json(json!({ "tasks": tasks, "next_after": next })))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FilesQuery {
    /// Only files that ended so.
    #[param(value_type = Option<FileState>)]
    state: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/jobs/{id}/files", tag = "jobs", params(("id" = String, Path, description = "A job id"), FilesQuery), responses((status = 200, description = "What became of the files of the job's ingest", body = crate::openapi::FilesPage), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list_files(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<FilesQuery>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 1000);
    let files = state
        .store
        .list_files(
            job_id(&id)?,
            FileFilter {
                state: q
                    .state
                    .as_deref()
                    .map(|s| parse::<FileState>(s, "state"))
                    .transpose()?,
                after: q.after,
                limit,
            },
        )
        .await?;
    let next = (files.len() == limit as usize)
        .then(|| files.last().map(|f| f.relative.clone()))
        .flatten();
    Ok(Json(json!({ "files": files, "next_after": next })))
}

#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "A job id")), responses((status = 200, description = "The job, cancelled (or as it ended)", body = rota_core::Job), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody)))]
pub(crate) async fn cancel_job(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    let id = load_job(&state, &id).await?.id;
    Ok(Json(json!(shown(state.store.cancel_job(id).await?))))
}

/// Which ended tasks of a job to run again.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequeueBody {
    /// `dead`, `cancelled` or both (the default).
    #[serde(default)]
    states: Option<Vec<rota_core::TaskState>>,
}

/// Puts the job's dead (and, unless told otherwise, cancelled) tasks back in
/// its queue, each with a fresh attempt budget; an ended job runs again.
#[utoipa::path(post, path = "/jobs/{id}/requeue", tag = "jobs", params(("id" = String, Path, description = "A job id")), request_body(content = Option<RequeueBody>, description = "The states of the tasks to requeue (default, and without a body: dead and cancelled)"), responses((status = 200, description = "The job as it is now, and how many tasks were requeued", body = crate::openapi::RequeueView), (status = 400, description = "A state other than dead or cancelled (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody), (status = 409, description = "The job was never released (code conflict)", body = crate::openapi::ErrorBody)))]
pub(crate) async fn requeue_job(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    // No body at all asks for the defaults.
    let body: RequeueBody = if body.iter().all(u8::is_ascii_whitespace) {
        RequeueBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("not a requeue: {e}")))?
    };
    let id = load_job(&state, &id).await?.id;
    let states = body
        .states
        .unwrap_or_else(|| vec![rota_core::TaskState::Dead, rota_core::TaskState::Cancelled]);
    let (job, requeued) = state.store.requeue(id, &states).await?;
    if requeued > 0 {
        state.work.notify_waiters();
    }
    Ok(Json(json!({ "job": shown(job), "requeued": requeued })))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitQuery {
    /// How long to wait: `500ms`, `30s`, `2m` or seconds (default 30 s,
    /// at most the server's `--max-wait`).
    #[param(pattern = r"^[0-9]{1,9}(\.[0-9]{1,3})?(ms|s|m)?$")]
    timeout: Option<String>,
}

/// Answers when the job has ended, or at the timeout with the job as it is
/// then: the caller looks at its `state`.
#[utoipa::path(get, path = "/jobs/{id}/wait", tag = "jobs", params(("id" = String, Path, description = "A job id"), WaitQuery), responses((status = 200, description = "The job once it ended, or at the timeout", body = crate::openapi::JobView), (status = 400, description = "The request is malformed (code invalid)", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody)))]
pub(crate) async fn wait_job(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Answer {
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    let timeout = q
        .timeout
        .as_deref()
        .map(duration)
        .transpose()?
        .unwrap_or(Duration::from_secs(30))
        .min(state.config.max_wait);
    let deadline = Instant::now() + timeout;
    loop {
        let job = load_job(&state, &id).await?;
        if job.state.is_terminal() || Instant::now() >= deadline {
            return Ok(Json(job_view(&state, job).await?));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How often `GET /jobs/{id}/events` looks at the job.
const EVENTS_POLL: Duration = Duration::from_millis(250);

/// The job's changes as server-sent events: an `event: job` whose data is the
/// job (as `GET /jobs/{id}` shows it, without `running`) at once and on every
/// change of its state or counts, ending after the event of its final state.
/// `id` counts the events, so a client can tell it missed none.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "A job id")), responses((status = 200, description = "Server-sent events: `event: job` with the job as data, on every change, ending after its final state", content_type = "text/event-stream", body = crate::openapi::JobEvent), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody), (status = 404, description = "No such thing", body = crate::openapi::ErrorBody)))]
pub(crate) async fn job_events(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    state.config.tokens.check(&headers, Some(Scope::Schedule))?;
    let first = load_job(&state, &id).await?;
    let job_id = first.id;
    let event = |n: u64, job: &Job| {
        Event::default()
            .event("job")
            .id(n.to_string())
            .data(json!(shown(job.clone())).to_string())
    };
    // (next job to send, last one sent, events sent, ended)
    let start = (Some(first), None::<Job>, 0u64, false);
    let stream = futures::stream::unfold(start, move |(next, last, n, ended)| {
        let state = state.clone();
        async move {
            if ended {
                return None;
            }
            let mut job = next;
            loop {
                if let Some(job) = job.take() {
                    let changed = last.as_ref().is_none_or(|l| {
                        (l.state, &l.counts, l.released) != (job.state, &job.counts, job.released)
                    });
                    if changed {
                        let out = event(n + 1, &job);
                        let end = job.state.is_terminal();
                        return Some((Ok(out), (None, Some(job), n + 1, end)));
                    }
                }
                tokio::time::sleep(EVENTS_POLL).await;
                match state.store.get_job(job_id).await {
                    Ok(Some(j)) => job = Some(j),
                    // Gone or unreadable: end the stream; the client may ask again.
                    Ok(None) | Err(_) => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        assert_eq!(duration("500ms").expect("ms"), Duration::from_millis(500));
        assert_eq!(duration("30s").expect("s"), Duration::from_secs(30));
        assert_eq!(duration("2m").expect("m"), Duration::from_secs(120));
        assert_eq!(duration("5").expect("bare"), Duration::from_secs(5));
        assert!(duration("soon").is_err() && duration("3h").is_err());
    }
}
