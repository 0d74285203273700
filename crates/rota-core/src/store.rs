//! The job store: where jobs, tasks and leases live.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::StoreError;
use crate::id::{JobId, TaskId};
use crate::model::{
    CallbackDue, CallbackOutcome, CallbackStatus, ClaimRequest, DutyTerm, FileClaim, FileFilter,
    FileReport, Heartbeat, HeartbeatAck, IngestClaim, IngestReport, Job, JobFilter, JobStart,
    Lease, NewCallback, NewJob, NewTask, Report, Spec, Task, TaskFilter, TaskState,
};

/// Persistence for specs, jobs and tasks, and the lease protocol on tasks.
///
/// # Contract
///
/// Every implementation passes the conformance suite in
/// `rota_store::conformance`; the points below are what it checks.
///
/// - **Idempotent creation.** [`Store::create_job`] with a key that exists
///   returns the existing job and `false`. [`Store::add_tasks`] ignores a task
///   whose `(job, key)` exists and reports how many were new; so a replayed
///   ingest adds nothing.
/// - **Atomic creation.** [`Store::create_job_with`] writes the job, its
///   first tasks, its callbacks and its ingest plan in one transaction: no
///   reader (and no crash) ever sees the job without them, and a replay of
///   its key returns the job as it was made, adding nothing.
/// - **Ingest claims.** A held, unreleased, pending job created with an
///   ingest plan is handed by [`Store::claim_ingests`] to one holder at a
///   time, until its claim runs out (by the store's clock) unless
///   [`Store::renew_ingest`] extends it.
/// - **Held jobs.** Tasks of a job created with `hold` are `scheduled` and
///   never claimable until [`Store::release_job`]. [`Store::fail_job`] on an
///   unreleased job cancels them: a half-made job is never worked on.
/// - **Exclusive, fenced leases.** [`Store::claim`] hands each claimable task to
///   at most one caller, however many claim concurrently (from one process or
///   many), and increments its attempt. Heartbeats and reports take effect only
///   if `(task, attempt, token)` still matches the running attempt; otherwise
///   they fail with [`StoreError::LeaseLost`] and change nothing.
/// - **Rescue by time.** A running task whose lease expired (by the store's
///   clock) counts as a failed attempt: it is retried, or dead after its last
///   attempt. Claims rescue expired leases themselves; nothing depends on a
///   worker registry.
/// - **Claim filters.** A claim takes tasks of the queues it names only, and,
///   when it names specs, of jobs of those specs only.
/// - **Progress.** A heartbeat's progress is kept on the task (the last one
///   given wins) and shown by [`Store::list_tasks`]; a new attempt starts
///   without any. A stale heartbeat records nothing.
/// - **Callbacks.** [`Store::due_callbacks`] leases each due delivery to one
///   caller (by the store's clock); a delivered or given-up state is not due
///   again, and a job's later state is.
/// - **Retry.** A retryable failure before the last attempt makes the task
///   `retrying` until `now + backoff`; otherwise the task is `dead`.
/// - **Job state.** A released job is `running` once a task was claimed; when
///   no task is left unfinished it is `succeeded`, or `failed` if any task is
///   dead. `cancelled` is final and set by [`Store::cancel_job`]; tasks not yet
///   running are cancelled, running ones learn it at their next heartbeat.
/// - **File records.** [`Store::put_files`] keeps one record per `(job,
///   relative path)`, the last one written; [`Store::list_files`] pages
///   them in path order.
/// - **Requeue.** [`Store::requeue`] makes a released job's dead or
///   cancelled tasks claimable again with a fresh attempt budget; an ended
///   job runs again.
/// - **Retention.** [`Store::delete_ended`] removes ended jobs older than a
///   time, oldest first, a bounded number per call, with all they hold.
/// - **Duties.** [`Store::take_duty`] gives a duty to one holder per term;
///   a term is renewed only while it is current and unexpired, and a new
///   holder gets a higher term.
/// - **Batching.** Claims, heartbeats and reports take many items per call;
///   per-item failures are returned per item and do not fail the others.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Registers or replaces a spec.
    async fn put_spec(&self, spec: Spec) -> Result<(), StoreError>;

    /// Looks a spec up by name.
    async fn get_spec(&self, name: &str) -> Result<Option<Spec>, StoreError>;

    /// All specs, by name.
    async fn list_specs(&self) -> Result<Vec<Spec>, StoreError>;

    /// Creates a job, or returns the job that already has `job.key` (then the
    /// flag is `false` and nothing is changed).
    async fn create_job(&self, job: NewJob) -> Result<(Job, bool), StoreError> {
        self.create_job_with(job, JobStart::default()).await
    }

    /// Creates a job together with what it starts with (tasks, callbacks,
    /// an ingest plan leased to its holder), all in one transaction, or
    /// returns the job that already has `job.key` (then the flag is `false`
    /// and nothing is changed: `start` is dropped). The job returned counts
    /// its new tasks.
    async fn create_job_with(
        &self,
        job: NewJob,
        start: JobStart,
    ) -> Result<(Job, bool), StoreError>;

    /// Claims up to `limit` held jobs whose ingest must run again: pending,
    /// unreleased jobs created with an ingest plan whose claim is free or
    /// ran out, oldest first. Each is claimed for `holder` until `now +
    /// lease`; no other holder gets it back before that.
    async fn claim_ingests(
        &self,
        holder: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<IngestClaim>, StoreError>;

    /// Up to `limit` held jobs whose ingest runs now (pending, unreleased,
    /// created with an ingest plan whose claim has not run out), oldest
    /// first, with their plans: other nodes join them to read their files
    /// (see [`Store::claim_file`]). Nothing is claimed.
    async fn running_ingests(&self, limit: u32) -> Result<Vec<IngestClaim>, StoreError>;

    /// Extends `holder`'s claim on the ingest of `job` to `now + lease`.
    /// Returns `false`, changing nothing, when the claim is no longer
    /// `holder`'s (it ran out and another holder took it) or the job no
    /// longer waits for its ingest (released or ended): its ingest should
    /// stop.
    async fn renew_ingest(
        &self,
        job: JobId,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Adds tasks to a job; tasks whose key exists in the job are ignored.
    /// Returns how many were added.
    async fn add_tasks(&self, job: JobId, tasks: Vec<NewTask>) -> Result<u64, StoreError>;

    /// Records the final ingest report and makes every held task claimable.
    /// Releasing a released job changes nothing.
    async fn release_job(
        &self,
        job: JobId,
        ingest: Option<IngestReport>,
    ) -> Result<Job, StoreError>;

    /// Fails a job before its tasks ran (an ingest error): records `error`,
    /// cancels its unfinished tasks.
    async fn fail_job(
        &self,
        job: JobId,
        error: String,
        ingest: Option<IngestReport>,
    ) -> Result<Job, StoreError>;

    /// Cancels a job: tasks not yet running are cancelled; running ones are
    /// told at their next heartbeat. Cancelling an ended job changes nothing.
    async fn cancel_job(&self, job: JobId) -> Result<Job, StoreError>;

    /// A job with its task counts.
    async fn get_job(&self, job: JobId) -> Result<Option<Job>, StoreError>;

    /// Jobs matching `filter`, newest first.
    async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError>;

    /// A job's tasks matching `filter`, in key order.
    async fn list_tasks(&self, job: JobId, filter: TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Records what became of files of a job's ingest. A file recorded again
    /// (by its relative path) replaces its earlier record.
    async fn put_files(&self, job: JobId, files: Vec<FileReport>) -> Result<(), StoreError>;

    /// Claims the reading of one file of a held job's ingest (by
    /// `file.relative`) for `holder` until `now + lease`, recording it as
    /// [`FileState::Running`] with `file`'s location, size and version tag
    /// and `holder` as its node. It is the caller's when the job has no
    /// record of it, or one being read under a claim that ran out or is
    /// `holder`'s own, or (with `again`) one that is done or failed.
    /// Otherwise nothing changes and the answer says why: read already
    /// (with the record), read by another node now, or the job no longer
    /// waits for its ingest. Several nodes reading one job's files thus
    /// read each file once, and a file whose node died is read again
    /// once its claim runs out.
    async fn claim_file(
        &self,
        job: JobId,
        file: FileReport,
        holder: &str,
        lease: Duration,
        again: bool,
    ) -> Result<FileClaim, StoreError>;

    /// Extends every claim `holder` has on files of `job` being read to
    /// `now + lease`; returns how many there were.
    async fn renew_files(
        &self,
        job: JobId,
        holder: &str,
        lease: Duration,
    ) -> Result<u64, StoreError>;

    /// A job's file records matching `filter`, by relative path.
    async fn list_files(
        &self,
        job: JobId,
        filter: FileFilter,
    ) -> Result<Vec<FileReport>, StoreError>;

    /// A task's payload.
    async fn get_payload(&self, task: TaskId) -> Result<Vec<u8>, StoreError>;

    /// Claims up to `req.limit` claimable tasks (oldest available first) under
    /// new leases, after rescuing expired ones.
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Lease>, StoreError>;

    /// Extends each lease by `extend` from now, and records the progress an
    /// item carries on its task.
    async fn heartbeat(
        &self,
        beats: Vec<Heartbeat>,
        extend: Duration,
    ) -> Result<Vec<Result<HeartbeatAck, StoreError>>, StoreError>;

    /// Ends attempts; returns each task's new state.
    async fn report(
        &self,
        reports: Vec<Report>,
    ) -> Result<Vec<Result<TaskState, StoreError>>, StoreError>;

    /// Attaches callbacks to a job; a callback whose index (its place in
    /// `callbacks`) the job has already is left as it is, so a replayed
    /// schedule adds nothing.
    async fn add_callbacks(
        &self,
        job: JobId,
        callbacks: Vec<NewCallback>,
    ) -> Result<(), StoreError>;

    /// A job's callbacks with their delivery state, by index.
    async fn list_callbacks(&self, job: JobId) -> Result<Vec<CallbackStatus>, StoreError>;

    /// Leases up to `limit` deliveries that are due for `lease`: callbacks
    /// whose job is in a state they announce that was neither delivered
    /// nor given up, and whose next attempt is due. A leased delivery is
    /// not returned again until it is recorded or its lease runs out.
    async fn due_callbacks(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<CallbackDue>, StoreError>;

    /// Records how a delivery attempt went.
    async fn record_callback(
        &self,
        due: &CallbackDue,
        outcome: CallbackOutcome,
    ) -> Result<(), StoreError>;

    /// Tasks of every job by queue and state (for metrics).
    async fn task_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<String, crate::model::TaskCounts>, StoreError>;

    /// Treats every expired lease as a failed attempt. Returns how many were
    /// rescued. [`Store::claim`] does this too; this is for a periodic sweeper.
    async fn rescue_expired(&self) -> Result<u64, StoreError>;

    /// Puts a released job's tasks that ended in one of `states` (only
    /// [`TaskState::Dead`] and [`TaskState::Cancelled`] may be named) back
    /// in its queue, claimable now, each with a fresh budget of the job's
    /// `max_attempts` (attempt numbers go on counting, so a stale lease of an
    /// earlier attempt stays stale). A job that had ended runs again.
    /// Returns the job and how many tasks were requeued.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for another state; [`StoreError::Conflict`]
    /// for a job never released (its ingest failed or is running).
    async fn requeue(&self, job: JobId, states: &[TaskState]) -> Result<(Job, u64), StoreError>;

    /// Deletes up to `limit` jobs that ended (succeeded, failed or
    /// cancelled) before `before`, oldest first, with everything kept of
    /// them: tasks, payloads, results, file records and callbacks. Returns
    /// how many jobs were deleted; call again while it returns `limit`.
    async fn delete_ended(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Takes the singleton duty `duty` for `holder` until `now + lease`:
    /// when nobody holds it, or its hold ran out (a new term starts), or
    /// `holder` holds it already (the same term goes on). `None` while
    /// another holder's term lasts.
    async fn take_duty(
        &self,
        duty: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<DutyTerm>, StoreError>;

    /// Extends `term` to `now + lease` if it is still the duty's current
    /// term and has not run out; `None` (changing nothing) otherwise: the
    /// holder must stop the duty's work.
    async fn renew_duty(
        &self,
        term: &DutyTerm,
        lease: Duration,
    ) -> Result<Option<DutyTerm>, StoreError>;

    /// Gives `term` up, so another node may take the duty at once; nothing
    /// happens if it is no longer the current term.
    async fn release_duty(&self, term: &DutyTerm) -> Result<(), StoreError>;

    /// Waits until tasks may have become claimable in `queues` through
    /// another handle on the same database (another node or process), or
    /// until `timeout` has passed, whichever comes first. Only a hint:
    /// whoever wakes claims to find out, and claims on a timer anyway. The
    /// default sleeps for `timeout` (the SQLite store: other processes are
    /// seen by polling); the PostgreSQL store wakes on a notification.
    async fn wait_for_work(&self, queues: &[String], timeout: Duration) {
        let _ = queues;
        tokio::time::sleep(timeout).await;
    }
}
