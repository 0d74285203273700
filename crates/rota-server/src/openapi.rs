//! `GET /openapi.json`: the API as an OpenAPI 3.1 document, generated from
//! the handlers' `#[utoipa::path]` annotations and the schemas of the types
//! they take and answer.
//!
//! Answers the handlers build as JSON values are described by the types
//! below; the schemathesis test (tests/e2e/openapi.rs) checks every answer
//! against them, so a change to an answer that is not made here fails it.

use axum::Json;
use chrono::{DateTime, Utc};
use rota_core::{
    CallbackStatus, FileReport, Job, JobId, JobState, LeaseToken, PayloadEncoding, TaskId,
    TaskState,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An error: a stable code for programs and a message for people.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorInner,
}

/// The error's code and message.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorInner {
    /// Stable and lowercase: `invalid`, `unauthorized`, `forbidden`,
    /// `not_found`, `lease_lost`, `too_large`, …
    code: String,
    /// What went wrong.
    message: String,
}

/// The `Tus-Resumable` header: the one tus version spoken.
#[derive(Serialize, ToSchema)]
#[expect(
    dead_code,
    reason = "only its schema is used: the header is checked as text"
)]
pub(crate) enum TusVersion {
    /// tus 1.0.0.
    #[serde(rename = "1.0.0")]
    V1,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`.
    status: String,
}

/// `GET /specs`.
#[derive(Serialize, ToSchema)]
pub(crate) struct SpecList {
    specs: Vec<rota_core::Spec>,
}

/// `POST /schedule`: an id per job, in order.
#[derive(Serialize, ToSchema)]
pub(crate) struct ScheduleAnswer {
    jobs: Vec<Scheduled>,
}

/// One scheduled job.
#[derive(Serialize, ToSchema)]
pub(crate) struct Scheduled {
    id: JobId,
    /// `false`: a job with this idempotency key existed; this is it.
    created: bool,
    state: JobState,
}

/// `GET /jobs`: newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobsPage {
    jobs: Vec<Job>,
    /// Pass as `before` for the next page; `null` on the last.
    next_before: Option<JobId>,
}

/// `POST /jobs/{id}/requeue`: the job as it is after the requeue.
#[derive(Serialize, ToSchema)]
pub(crate) struct RequeueView {
    /// The job.
    job: Job,
    /// How many tasks went back in the queue.
    requeued: u64,
}

/// `GET /jobs/{id}`: the job, its running tasks and its callbacks.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobView {
    #[serde(flatten)]
    job: Job,
    /// Up to 100 running tasks with their progress.
    running: Vec<RunningTask>,
    /// Callbacks with their delivery state (URLs cut to their origin).
    callbacks: Vec<CallbackStatus>,
    /// For a job of one task that succeeded, that task's result (JSON if it
    /// is JSON, else text); else `null`. Other jobs' results are on their
    /// tasks (`GET /jobs/{id}/tasks?results=true`).
    result: Option<Value>,
    /// Up to 10 failed tasks (dead first, then retrying) with their last
    /// error.
    errors: Vec<FailedTask>,
}

/// A failed task on `GET /jobs/{id}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct FailedTask {
    id: TaskId,
    key: String,
    /// `dead` or `retrying`.
    state: TaskState,
    attempt: u32,
    /// The last attempt's error.
    error: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

/// A running task on `GET /jobs/{id}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunningTask {
    id: TaskId,
    key: String,
    attempt: u32,
    worker: Option<String>,
    rows: u64,
    lease_expires_at: Option<DateTime<Utc>>,
    /// What its worker last said of its progress.
    progress: Option<Value>,
}

/// `GET /jobs/{id}/tasks`: in key order.
#[derive(Serialize, ToSchema)]
pub(crate) struct TasksPage {
    tasks: Vec<TaskView>,
    /// Pass as `after` for the next page; `null` on the last.
    next_after: Option<String>,
}

/// A task as `GET /jobs/{id}/tasks` shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct TaskView {
    id: TaskId,
    key: String,
    state: TaskState,
    attempt: u32,
    max_attempts: u32,
    rows: u64,
    payload_bytes: u64,
    encoding: PayloadEncoding,
    available_at: Option<DateTime<Utc>>,
    lease_expires_at: Option<DateTime<Utc>>,
    worker: Option<String>,
    /// The result, as text (with `results=true`).
    result: Option<String>,
    error: Option<String>,
    finished_at: Option<DateTime<Utc>>,
    progress: Option<Value>,
}

/// `GET /jobs/{id}/files`: by relative path.
#[derive(Serialize, ToSchema)]
pub(crate) struct FilesPage {
    files: Vec<FileReport>,
    /// Pass as `after` for the next page; `null` on the last.
    next_after: Option<String>,
}

/// One server-sent event of `GET /jobs/{id}/events`.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobEvent {
    /// `job`.
    event: String,
    /// Counts the events from 1.
    id: String,
    /// The job as JSON text.
    data: String,
}

/// `POST /work/claim`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClaimAnswer {
    tasks: Vec<ClaimedTask>,
}

/// A claimed task: its lease, deadline, job and payload.
#[derive(Serialize, ToSchema)]
pub(crate) struct ClaimedTask {
    task_id: TaskId,
    attempt: u32,
    lease_token: LeaseToken,
    /// The deadline: unless a heartbeat extends it, the lease ends then.
    expires_at: DateTime<Utc>,
    job_id: JobId,
    key: String,
    spec: String,
    queue: String,
    params: Value,
    encoding: PayloadEncoding,
    media_type: String,
    rows: u64,
    max_attempts: u32,
    payload_bytes: u64,
    /// The payload as text; `null` for Arrow or one not sent inline.
    payload: Option<String>,
    /// An Arrow payload, base64.
    payload_base64: Option<String>,
    /// Where to GET a payload not sent inline.
    payload_url: Option<String>,
}

/// `POST /work/heartbeat`: per lease.
#[derive(Serialize, ToSchema)]
pub(crate) struct HeartbeatAnswer {
    results: Vec<BeatResult>,
}

/// How one lease's heartbeat went.
#[derive(Serialize, ToSchema)]
pub(crate) struct BeatResult {
    ok: bool,
    expires_at: Option<DateTime<Utc>>,
    /// The job was cancelled: stop and report a failure.
    cancel_requested: Option<bool>,
    error: Option<ErrorInner>,
}

/// `POST /work/complete`: per report.
#[derive(Serialize, ToSchema)]
pub(crate) struct CompleteAnswer {
    results: Vec<ReportResult>,
}

/// How one report went.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReportResult {
    ok: bool,
    /// The task's state after the report.
    state: Option<TaskState>,
    error: Option<ErrorInner>,
}

/// `GET /workers`: the WebSocket workers connected to this server.
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkersList {
    workers: Vec<Value>,
}

/// `POST /uploads`: the new upload (its URL is in `Location`).
#[derive(Serialize, ToSchema)]
pub(crate) struct UploadCreated {
    id: String,
    job: JobId,
}

/// `GET /uploads/{id}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct UploadInfo {
    id: String,
    job: JobId,
    offset: u64,
    length: Option<u64>,
    complete: bool,
    created: DateTime<Utc>,
    expires: DateTime<Utc>,
    /// Whether its ingest ended well; `null` while it runs.
    ingested: Option<bool>,
    error: Option<String>,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rota",
        description = "Schedule jobs, stream data sets into batched tasks, and run workers. \
                       The worker protocol (also over WebSocket at GET /work) is described in \
                       docs/worker-protocol.md; uploads speak tus 1.0.0."
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    // Types only headers name, which are not collected on their own.
    components(schemas(TusVersion)),
    paths(
        crate::routes::healthz,
        crate::routes::list_specs,
        crate::routes::get_spec,
        crate::routes::put_spec,
        crate::routes::schedule,
        crate::routes::list_jobs,
        crate::routes::get_job,
        crate::routes::list_tasks,
        crate::routes::list_files,
        crate::routes::cancel_job,
        crate::routes::requeue_job,
        crate::routes::wait_job,
        crate::routes::job_events,
        crate::work::claim,
        crate::work::heartbeat,
        crate::work::complete,
        crate::work::payload,
        crate::ws::upgrade,
        crate::ws::list_workers,
        crate::metrics::metrics,
        crate::uploads::options,
        crate::uploads::create,
        crate::uploads::head,
        crate::uploads::info,
        crate::uploads::patch,
        crate::uploads::terminate,
        crate::uploads::one_shot,
        openapi_json,
    )
)]
struct ApiDoc;

/// The document, as served: the generated one, with the unsigned
/// integers' true ranges (see [`unsigned_ranges`]).
#[must_use]
pub(crate) fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    unsigned_ranges(&mut doc);
    doc
}

/// Gives every unsigned integer schema (`int32` or `int64` with minimum 0)
/// the maximum of its Rust type, which the generated document leaves to its
/// format (whose range is a signed one): a client may send any value the
/// server takes, and a larger one is refused with 400.
fn unsigned_ranges(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(types)) => types.iter().any(|t| t == "integer"),
                _ => false,
            };
            let unsigned = map.get("minimum").and_then(Value::as_u64).is_some();
            if integer && unsigned && !map.contains_key("maximum") {
                let (format, most) = match map.get("format").and_then(Value::as_str) {
                    Some("int32") => ("uint32", u64::from(u32::MAX)),
                    _ => ("uint64", u64::MAX),
                };
                map.insert("format".to_owned(), Value::from(format));
                map.insert("maximum".to_owned(), Value::from(most));
            }
            map.values_mut().for_each(unsigned_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_ranges),
        _ => {}
    }
}

/// The API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every `$ref` in `value`.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => found.push(r),
                        _ => refs(v, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_in_the_document_is_to_a_schema_it_holds() {
        let doc = serde_json::to_value(super::document()).expect("json");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 20, "{found:?}");
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a schema reference"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} is not in the document"
            );
        }
    }
}
