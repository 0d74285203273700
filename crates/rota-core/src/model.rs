//! The nouns of Rota: specs, jobs, tasks, leases, batch policy and payload
//! encodings. Plain data; stores persist them, the pipeline and workers move them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{JobId, LeaseToken, TaskId};
pub use crate::retry::RetryPolicy;

/// Declares `as_str`, `Display`, `FromStr` and the list of names for a
/// fieldless enum whose serialised form is its lowercase name.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The lowercase name used in the store, the CLI and the API.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " '{}' (expected one of: {})"),
                        other,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

/// The life of a job. Derived from its tasks once it has been released.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Created; tasks are being made or none has been claimed yet.
    Pending,
    /// At least one task has been claimed.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// Its ingest failed, or every task ended and at least one is dead.
    Failed,
    /// Cancelled on request.
    Cancelled,
}
named_enum!(JobState, "job state", {
    Pending => "pending", Running => "running", Succeeded => "succeeded",
    Failed => "failed", Cancelled => "cancelled",
});

impl JobState {
    /// Whether the job has ended.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// The life of a task.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not claimable yet: waiting for its job to be released (all of the job's
    /// tasks made) or for a future run time.
    Scheduled,
    /// Claimable now.
    Queued,
    /// Claimed under a lease.
    Running,
    /// An attempt failed; claimable again after its backoff.
    Retrying,
    /// Completed with a result.
    Succeeded,
    /// Failed its last attempt, or failed with a non-retryable error.
    Dead,
    /// Cancelled with its job before it ran.
    Cancelled,
}
named_enum!(TaskState, "task state", {
    Scheduled => "scheduled", Queued => "queued", Running => "running",
    Retrying => "retrying", Succeeded => "succeeded", Dead => "dead",
    Cancelled => "cancelled",
});

impl TaskState {
    /// Whether the task has ended.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }
}

/// How a batch of records is serialised into a task's payload.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// A JSON array of objects, one per record.
    #[default]
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header line.
    Csv,
    /// An Arrow IPC stream: schema, then one record batch.
    Arrow,
}
named_enum!(PayloadEncoding, "payload encoding", {
    Json => "json", Ndjson => "ndjson", Csv => "csv", Arrow => "arrow",
});

impl PayloadEncoding {
    /// The media type of a payload in this encoding.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv",
            Self::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// What to do with a record that does not decode.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop the ingest; the job fails and none of its tasks becomes claimable.
    #[default]
    Fail,
    /// Drop the record, count it, and keep a sample of such records on the job.
    Skip,
}
named_enum!(OnError, "on-error policy", { Fail => "fail", Skip => "skip" });

/// Bounds of one batch. At least one bound is set; a single record larger than
/// `max_bytes` still becomes a batch of its own rather than an error.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPolicy {
    /// Most records in a batch.
    pub max_rows: Option<u64>,
    /// Most bytes of encoded payload in a batch (for Arrow payloads: bytes of
    /// the rows' Arrow buffers; IPC framing adds a small constant).
    pub max_bytes: Option<u64>,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_rows: Some(1_000),
            max_bytes: None,
        }
    }
}

impl BatchPolicy {
    /// Checks that the policy bounds batches at all.
    ///
    /// # Errors
    /// When neither bound is set or a bound is zero.
    pub fn validate(&self) -> Result<(), String> {
        match (self.max_rows, self.max_bytes) {
            (None, None) => Err("a batch policy needs max rows, max bytes or both".into()),
            (Some(0), _) => Err("max rows must be at least 1".into()),
            (_, Some(0)) => Err("max bytes must be at least 1".into()),
            _ => Ok(()),
        }
    }
}

/// A named kind of work: what a job of this name means and how it is run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The name jobs refer to, e.g. `import-orders`.
    pub name: String,
    /// What the work does, for people.
    #[serde(default)]
    pub description: String,
    /// Queue its jobs go to unless a job says otherwise.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Retry policy of its tasks unless a job says otherwise.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How long a worker may hold a task without a heartbeat, in milliseconds.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// A JSON Schema the params of its jobs must match (after `defaults`
    /// are filled in); none: any object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_schema: Option<serde_json::Value>,
    /// Params its jobs get unless they give their own (top-level keys).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub defaults: serde_json::Map<String, serde_json::Value>,
}

/// The queue used when nothing names one.
#[must_use]
pub fn default_queue() -> String {
    "default".to_owned()
}

fn default_lease_ms() -> u64 {
    30_000
}

/// What a caller asks for when creating a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Caller-supplied idempotency key: creating a job with a key that exists
    /// returns the existing job instead.
    pub key: Option<String>,
    /// The spec's name.
    pub spec: String,
    /// Queue its tasks are claimed from.
    pub queue: String,
    /// Parameters handed to every task.
    pub params: serde_json::Value,
    /// Retry policy of its tasks.
    pub retry: RetryPolicy,
    /// Whether tasks added to this job wait until [`crate::Store::release_job`]
    /// (so that a half-made job is never worked on). When false the job is
    /// released at creation and tasks are claimable as they are added.
    pub hold: bool,
    /// The ingest that makes this job's tasks, if any.
    pub ingest: Option<IngestReport>,
    /// When and how eagerly its tasks run.
    pub timing: Timing,
}

/// What a job is created with, written in the same transaction as the job
/// itself ([`crate::Store::create_job_with`]): a job is never seen without
/// them, and a replay of its key (which returns the existing job) adds none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobStart {
    /// Its first tasks (a plain job's one task).
    pub tasks: Vec<NewTask>,
    /// Its callbacks, by index (their place in the list).
    pub callbacks: Vec<NewCallback>,
    /// For a held job that an ingest fills: how to run that ingest again,
    /// leased to the creator so that no one else resumes it while it runs.
    pub ingest: Option<IngestPlan>,
}

/// How to run a held job's ingest again (after a crash of the process that
/// ran it), and who runs it now.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestPlan {
    /// What the ingest needs besides the job, opaque to the store (it must
    /// hold no secret: it is kept in clear).
    pub plan: serde_json::Value,
    /// Who runs the ingest now (see [`crate::Store::claim_ingests`]).
    pub holder: String,
    /// How long the holder's claim lasts unless renewed.
    pub lease: std::time::Duration,
}

/// One term of a node's hold on a singleton duty (a periodic sweep that one
/// node at a time should run): who holds it, which term it is (a new holder
/// starts a new term), and until when, by the store's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DutyTerm {
    /// The duty's name.
    pub duty: String,
    /// The holder's identity: a node's random id, never a host name.
    pub holder: String,
    /// Counts up each time the duty changes hands.
    pub term: u64,
    /// The hold ends then unless renewed; a holder stops the duty's work
    /// before it.
    pub until: DateTime<Utc>,
}

/// A held job whose ingest was claimed to be run again.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestClaim {
    /// The job, as it is.
    pub job: Job,
    /// The plan it was created with ([`IngestPlan::plan`]).
    pub plan: serde_json::Value,
}

/// When and how eagerly a job's tasks run.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Among a queue's claimable tasks, higher priorities are claimed first
    /// (then the oldest); default 0, negative allowed.
    #[serde(default)]
    pub priority: i32,
    /// Its tasks are not claimable before this time.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Longest one attempt may run, heartbeats or not: past it the attempt
    /// fails (and is retried as any failure is).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Where a batched job's records came from and what became of them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    /// The source location as given, with any secret redacted.
    pub source: String,
    /// Format name, e.g. `csv`.
    pub format: String,
    /// Payload encoding of the tasks.
    pub payload: PayloadEncoding,
    /// Batch policy the records were cut with.
    pub batch: Option<BatchPolicy>,
    /// Files read.
    pub files: u64,
    /// Bytes read from the source.
    pub bytes: u64,
    /// Records that became task payload.
    pub rows: u64,
    /// Tasks made.
    pub tasks: u64,
    /// Records dropped under `on_error = skip`.
    pub skipped: u64,
    /// A bounded sample of the records dropped, with their positions.
    pub skipped_sample: Vec<SkippedRecord>,
    /// Files that could not be read or decoded whole, under `on_error =
    /// skip` (under `fail` the first such file fails the job). Each one's
    /// error is in its [`FileReport`].
    #[serde(default)]
    pub files_failed: u64,
}

/// How the ingest of one file ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Every record was read; its tasks are stored.
    Done,
    /// Reading or decoding it failed part way; the tasks made before the
    /// failure are stored, and the error says where it stopped.
    Failed,
    /// A node is reading it now, under a claim that runs out unless renewed
    /// (see [`crate::Store::claim_file`]).
    Running,
}
named_enum!(FileState, "file state", {
    Done => "done", Failed => "failed", Running => "running",
});

/// What became of one file of a batched job's ingest.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    /// Its path relative to the ingested location: the prefix of its task
    /// keys, and what identifies it within the job.
    pub relative: String,
    /// Where it was read from, with any secret redacted.
    pub location: String,
    /// Its size in bytes, when the source said.
    pub size: Option<u64>,
    /// Its version tag (ETag, mtime and size) when the source had one: a
    /// resumed ingest skips a file only if this still matches.
    pub etag: Option<String>,
    /// The format it was decoded as.
    pub format: String,
    /// How its ingest ended.
    pub state: FileState,
    /// Bytes read from the source.
    pub bytes: u64,
    /// Records that became task payload.
    pub rows: u64,
    /// Tasks made from it.
    pub tasks: u64,
    /// Records dropped under `on_error = skip`.
    pub skipped: u64,
    /// Why it failed, with the position, when it failed.
    pub error: Option<String>,
    /// The node that read it (or reads it now): the random id a
    /// `rota serve` process takes at start; `None` for a file read by
    /// `rota ingest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What [`crate::Store::claim_file`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileClaim {
    /// The file is the caller's to read, until its claim runs out.
    Yours,
    /// It was read already: its record.
    Finished(FileReport),
    /// Another node reads it, under a claim that has not run out.
    Elsewhere,
    /// The job no longer waits for its ingest (released, or ended).
    Closed,
}

/// Which of a job's file records to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileFilter {
    /// Only files in this state.
    pub state: Option<FileState>,
    /// Only files whose relative path sorts after this one (paging).
    pub after: Option<String>,
    /// Most records returned; 0 means the store's default.
    pub limit: u32,
}

/// A record dropped under `on_error = skip`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// The error with its position, as text.
    pub error: String,
    /// The start of the record's raw text (bounded), when the format has text.
    pub excerpt: Option<String>,
}

/// How many of a job's tasks are in each state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // one field per task state, named after it
pub struct TaskCounts {
    pub total: u64,
    pub scheduled: u64,
    pub queued: u64,
    pub running: u64,
    pub retrying: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
}

impl TaskCounts {
    /// Adds `n` tasks in `state`.
    pub fn add(&mut self, state: TaskState, n: u64) {
        self.total += n;
        *match state {
            TaskState::Scheduled => &mut self.scheduled,
            TaskState::Queued => &mut self.queued,
            TaskState::Running => &mut self.running,
            TaskState::Retrying => &mut self.retrying,
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Dead => &mut self.dead,
            TaskState::Cancelled => &mut self.cancelled,
        } += n;
    }

    /// Tasks that have not ended.
    #[must_use]
    pub fn unfinished(&self) -> u64 {
        self.scheduled + self.queued + self.running + self.retrying
    }
}

/// A job as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its idempotency key, if the caller gave one.
    pub key: Option<String>,
    /// The spec's name.
    pub spec: String,
    /// Queue its tasks are claimed from.
    pub queue: String,
    /// Parameters handed to every task.
    pub params: serde_json::Value,
    /// Current state.
    pub state: JobState,
    /// Retry policy of its tasks.
    pub retry: RetryPolicy,
    /// Whether all its tasks have been made and may be claimed.
    pub released: bool,
    /// Why it failed, when it failed before any task ran (e.g. a decode error).
    pub error: Option<String>,
    /// The ingest that made its tasks, if any.
    pub ingest: Option<IngestReport>,
    /// When and how eagerly its tasks run.
    #[serde(default)]
    pub timing: Timing,
    /// Its tasks by state.
    pub counts: TaskCounts,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed state.
    pub updated_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A task to add to a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    /// Unique within the job; the same input and policy always give the same keys.
    pub key: String,
    /// Encoded records (or any bytes, for plain jobs).
    pub payload: Vec<u8>,
    /// How `payload` is encoded.
    pub encoding: PayloadEncoding,
    /// Records in the payload.
    pub rows: u64,
}

/// A task as stored (without its payload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its job.
    pub job_id: JobId,
    /// Its key within the job.
    pub key: String,
    /// Current state.
    pub state: TaskState,
    /// Attempts made so far (the running one included).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Records in its payload.
    pub rows: u64,
    /// Payload size in bytes.
    pub payload_bytes: u64,
    /// Payload encoding.
    pub encoding: PayloadEncoding,
    /// When it may next be claimed (none while held by its job).
    pub available_at: Option<DateTime<Utc>>,
    /// When the current lease expires, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The worker holding or last holding it.
    pub worker: Option<String>,
    /// What the worker returned, on success.
    pub result: Option<Vec<u8>>,
    /// The last attempt's error.
    pub error: Option<String>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// What its worker last said of its progress (any JSON value), from the
    /// latest attempt's heartbeats.
    pub progress: Option<serde_json::Value>,
}

/// What a worker asks for when claiming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Queues to claim from.
    pub queues: Vec<String>,
    /// Who is claiming (recorded on the task, never used to rescue it).
    pub worker: String,
    /// Most tasks to claim at once.
    pub limit: u32,
    /// How long the lease lasts without a heartbeat.
    pub lease: Duration,
    /// Only tasks of jobs of these specs; empty: of any spec.
    pub specs: Vec<String>,
    /// Payloads longer than this many bytes are not read by the claim: their
    /// leases say [`Lease::payload_left`], and the holder reads them with
    /// `Store::get_payload`. `None`: every payload comes with its lease.
    pub inline_max: Option<u64>,
}

/// One item of a heartbeat: a held lease, and what its holder says of the
/// work's progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Heartbeat {
    /// The lease to extend.
    pub lease: LeaseRef,
    /// Progress to record on the task (replacing what was there); `None`
    /// keeps it.
    pub progress: Option<serde_json::Value>,
}

impl From<LeaseRef> for Heartbeat {
    fn from(lease: LeaseRef) -> Self {
        Self {
            lease,
            progress: None,
        }
    }
}

/// Names one attempt of one task, and proves the caller holds its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The task.
    pub task: TaskId,
    /// The attempt the lease was granted for.
    pub attempt: u32,
    /// The lease's secret token.
    pub token: LeaseToken,
}

/// A claimed task: everything a worker needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    /// Proof of the claim.
    pub lease: LeaseRef,
    /// The task's job.
    pub job_id: JobId,
    /// The task's key.
    pub key: String,
    /// The job's spec name.
    pub spec: String,
    /// The queue it was claimed from.
    pub queue: String,
    /// The job's parameters.
    pub params: serde_json::Value,
    /// The payload; empty when it was left in the store.
    pub payload: Vec<u8>,
    /// The payload was longer than the claim's
    /// [`ClaimRequest::inline_max`] and was not read: `Store::get_payload`
    /// has it.
    pub payload_left: bool,
    /// The payload's length in bytes, whether it came with the lease or not.
    pub payload_bytes: u64,
    /// Payload encoding.
    pub encoding: PayloadEncoding,
    /// Records in the payload.
    pub rows: u64,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When the lease expires unless extended.
    pub expires_at: DateTime<Utc>,
}

/// A heartbeat's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The lease's new expiry.
    pub expires_at: DateTime<Utc>,
    /// The job was cancelled: the worker should stop and report.
    pub cancel_requested: bool,
}

/// How an attempt ended, as reported by its worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded with this result.
    Success(Vec<u8>),
    /// It failed.
    Failure {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed; `false` makes the task dead now.
        retryable: bool,
    },
}

/// A report of one attempt's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The attempt.
    pub lease: LeaseRef,
    /// How it ended.
    pub outcome: Outcome,
}

/// Filters for listing jobs. Results are newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this spec.
    pub spec: Option<String>,
    /// Only jobs on this queue.
    pub queue: Option<String>,
    /// Only jobs older than this id (cursor paging).
    pub before: Option<JobId>,
    /// Only jobs created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Most jobs to return.
    pub limit: u32,
}

/// Filters for listing a job's tasks. Results are in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks whose key sorts after this one (cursor paging).
    pub after_key: Option<String>,
    /// Most tasks to return.
    pub limit: u32,
    /// Include each task's result.
    pub with_results: bool,
    /// With results: end the page after the task whose result brings the
    /// page's result bytes to at least this many (0: no bound), so that a
    /// page of large results is bounded in memory; a page holds at least one
    /// task.
    pub results_budget: u64,
}

/// A URL that receives a POST when its job changes state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCallback {
    /// Where to POST (http or https).
    pub url: String,
    /// The states to announce; empty: every state after `pending`.
    #[serde(default)]
    pub events: Vec<JobState>,
}

/// A callback and how its deliveries went.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackStatus {
    /// Its place among the job's callbacks, from 0.
    pub index: u32,
    /// Where it POSTs, as given.
    pub url: String,
    /// The states it announces; empty: every state after `pending`.
    pub events: Vec<JobState>,
    /// The last state delivered (answered 2xx).
    pub delivered: Option<JobState>,
    /// When that was.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The state last attempted, and how many attempts it has had.
    pub attempting: Option<JobState>,
    /// Attempts at delivering `attempting`.
    pub attempts: u32,
    /// When the next attempt is due, while one is.
    pub next_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// A state whose delivery was given up after its last attempt.
    pub gave_up: Option<JobState>,
}

/// A delivery to attempt now, leased to the caller by
/// [`crate::Store::due_callbacks`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackDue {
    /// The job.
    pub job: JobId,
    /// The callback's index.
    pub index: u32,
    /// Where to POST.
    pub url: String,
    /// The state to announce (the job's state when leased).
    pub state: JobState,
    /// Which attempt at delivering this state this is, from 1.
    pub attempt: u32,
}

/// How a delivery attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
    },
    /// It did not.
    Failed {
        /// The status, when there was an answer.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again; `None`: give up on this state.
        retry_at: Option<DateTime<Utc>>,
    },
}
