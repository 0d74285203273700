//! The embedded SQLite store.
//!
//! One database file holds specs, jobs, tasks and small payloads; large
//! payloads live beside it in `<database>-payloads/`, one append-only file per
//! job (see [`crate::payload_files`]). Several processes
//! (an ingest, many workers) may open the same file: the database runs in WAL
//! mode, every write is a `BEGIN IMMEDIATE` transaction, and a busy database is
//! waited on for [`BUSY_TIMEOUT`] before the call fails with
//! [`StoreError::Transient`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_core::{
    CallbackDue, CallbackOutcome, CallbackStatus, ClaimRequest, Clock, DutyTerm, FileClaim,
    FileFilter, FileReport, FileState, Heartbeat, HeartbeatAck, IngestClaim, IngestReport, Job,
    JobFilter, JobId, JobStart, JobState, Lease, LeaseRef, LeaseToken, NewCallback, NewJob,
    NewTask, Outcome, PayloadEncoding, Report, RetryPolicy, Spec, Store, StoreError, Task,
    TaskCounts, TaskFilter, TaskId, TaskState, Timing,
};
use rusqlite::types::Value;

use crate::payload_files::{Appender, FILE_MIN_BYTES, PayloadFiles};
use crate::shared::{
    JobColumns, JobInfo, after_failure, corrupt, first_run, from_json, job_timing, json, millis,
    opt_time, pack, parse, requeue_released, requeue_states, time, to_i64, to_u32, to_u64, unpack,
};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};

/// How long a call waits for another connection's write lock before failing
/// with [`StoreError::Transient`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version this code writes, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 7;

/// Tasks one write transaction of retention deletes (with their payloads).
const DELETE_CHUNK: i64 = 5_000;

/// Jobs returned by [`Store::list_jobs`] when the filter's limit is 0.
pub const DEFAULT_JOB_LIMIT: u32 = 100;

/// Tasks returned by [`Store::list_tasks`] when the filter's limit is 0.
pub const DEFAULT_TASK_LIMIT: u32 = 1_000;

/// File records returned by [`Store::list_files`] when the filter's limit is 0.
pub const DEFAULT_FILE_LIMIT: u32 = 1_000;

/// Large pages: payloads are blobs of tens to hundreds of kilobytes, and each
/// page is a WAL frame with its own header and checksum.
const PAGE_SIZE: u32 = 65_536;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS specs (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    key         TEXT UNIQUE,
    spec        TEXT NOT NULL,
    queue       TEXT NOT NULL,
    params      TEXT NOT NULL,
    state       TEXT NOT NULL,
    retry       TEXT NOT NULL,
    released    INTEGER NOT NULL,
    error       TEXT,
    ingest      TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER,
    timing      TEXT,
    ingest_plan   TEXT,
    ingest_holder TEXT,
    ingest_until  INTEGER
);
CREATE TABLE IF NOT EXISTS tasks (
    id               INTEGER PRIMARY KEY,
    job_id           TEXT NOT NULL,
    key              TEXT NOT NULL,
    queue            TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    rows             INTEGER NOT NULL,
    payload_bytes    INTEGER NOT NULL,
    encoding         TEXT NOT NULL,
    available_at     INTEGER,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    worker           TEXT,
    result           BLOB,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    progress         TEXT,
    priority         INTEGER NOT NULL DEFAULT 0,
    deadline         INTEGER,
    UNIQUE (job_id, key)
);
CREATE TABLE IF NOT EXISTS payloads (
    task_id    INTEGER PRIMARY KEY,
    data       BLOB NOT NULL,
    codec      INTEGER NOT NULL DEFAULT 0,
    file_at    INTEGER,
    file_bytes INTEGER
);
CREATE TABLE IF NOT EXISTS job_files (
    job_id   TEXT NOT NULL,
    relative TEXT NOT NULL,
    location TEXT NOT NULL,
    size     INTEGER,
    etag     TEXT,
    format   TEXT NOT NULL,
    state    TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    rows     INTEGER NOT NULL,
    tasks    INTEGER NOT NULL,
    skipped  INTEGER NOT NULL,
    error    TEXT,
    node     TEXT,
    until    INTEGER,
    PRIMARY KEY (job_id, relative)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS callbacks (
    job_id         TEXT NOT NULL,
    idx            INTEGER NOT NULL,
    url            TEXT NOT NULL,
    events         TEXT NOT NULL,
    delivered      TEXT,
    delivered_at   INTEGER,
    attempting     TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at        INTEGER,
    lease_until    INTEGER,
    last_status    INTEGER,
    last_error     TEXT,
    gave_up        TEXT,
    done           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS callbacks_open ON callbacks (job_id) WHERE done = 0;
CREATE TABLE IF NOT EXISTS duties (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term   INTEGER NOT NULL,
    until  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks (state, lease_expires_at);
CREATE INDEX IF NOT EXISTS tasks_job_state ON tasks (job_id, state);
";

const JOB_COLUMNS: &str = "id, key, spec, queue, params, state, retry, released, error, ingest, \
                           created_at, updated_at, finished_at, timing";

/// A [`Store`] over one SQLite database, in a file or in memory.
///
/// Cheap to clone; clones share one connection. Open one per process; to
/// share a database between processes, open the same file in each.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    /// Where large payloads go; `None` in memory, where all stay inline.
    files: Option<Arc<PayloadFiles>>,
    /// LZ4-compress text payloads as they are stored.
    compress: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, in WAL mode,
    /// and creates the schema if it is missing.
    ///
    /// # Errors
    /// When the file cannot be opened or created, or holds a newer schema.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let conn = Connection::open(path).db()?;
        conn.busy_timeout(BUSY_TIMEOUT).db()?;
        // The page size only takes effect on a new, empty database, and must be
        // set before the switch to WAL.
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}"))
            .db()?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid {
                message: format!(
                    "sqlite database {} cannot use write-ahead logging (journal mode is {mode})",
                    path.display()
                ),
            });
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL").db()?;
        // Every process must find the same payload directory, whatever path
        // (relative, through a link) it opened the database by.
        let real = std::fs::canonicalize(path).map_err(|e| StoreError::Invalid {
            message: format!("cannot resolve {}: {e}", path.display()),
        })?;
        Self::init(conn, clock, Some(PayloadFiles::for_database(&real)))
    }

    /// A fresh database in memory, private to this store (and its clones).
    ///
    /// # Errors
    /// When SQLite cannot allocate the database.
    pub fn in_memory(clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().db()?;
        Self::init(conn, clock, None)
    }

    fn init(
        mut conn: Connection,
        clock: Arc<dyn Clock>,
        files: Option<PayloadFiles>,
    ) -> Result<Self, StoreError> {
        conn.set_prepared_statement_cache_capacity(64);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).db()?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Invalid {
                message: format!(
                    "database schema version {version} is newer than this build supports \
                     ({SCHEMA_VERSION}); upgrade rota"
                ),
            });
        }
        tx.execute_batch(SCHEMA).db()?;
        if version == 1 {
            // Version 2 compresses payloads and keeps large ones in files;
            // older rows stay raw and inline.
            tx.execute_batch(
                "ALTER TABLE payloads ADD COLUMN codec INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE payloads ADD COLUMN file_at INTEGER;
                 ALTER TABLE payloads ADD COLUMN file_bytes INTEGER;",
            )
            .db()?;
        }
        // Version 3 adds `job_files`, which the schema above creates.
        // Version 4 keeps the progress workers report on their tasks, job
        // timing (priority, run-at, timeout) and task deadlines, claims by
        // priority, and adds `callbacks`, which the schema above creates.
        // Version 5 keeps a held job's ingest plan and who runs it, until when.
        // Version 6 adds `duties`, which the schema above creates.
        // Version 7 records which node reads a file, and its claim.
        for (table, column, ty) in [
            ("job_files", "node", "TEXT"),
            ("job_files", "until", "INTEGER"),
            ("tasks", "progress", "TEXT"),
            ("tasks", "priority", "INTEGER NOT NULL DEFAULT 0"),
            ("tasks", "deadline", "INTEGER"),
            ("jobs", "timing", "TEXT"),
            ("jobs", "ingest_plan", "TEXT"),
            ("jobs", "ingest_holder", "TEXT"),
            ("jobs", "ingest_until", "INTEGER"),
        ] {
            let has: bool = tx
                .query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |r| r.get(0),
                )
                .db()?;
            if !has {
                tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty};"))
                    .db()?;
            }
        }
        tx.execute_batch(
            "DROP INDEX IF EXISTS tasks_claim;
             CREATE INDEX IF NOT EXISTS tasks_claim_by_priority
                 ON tasks (queue, priority DESC, available_at, id)
                 WHERE state IN ('queued', 'scheduled', 'retrying');
             CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (finished_at)
                 WHERE finished_at IS NOT NULL;
             CREATE INDEX IF NOT EXISTS jobs_ingest_plans ON jobs (created_at)
                 WHERE ingest_plan IS NOT NULL AND released = 0;",
        )
        .db()?;
        if version < SCHEMA_VERSION {
            tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .db()?;
        }
        tx.commit().db()?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            clock,
            files: files.map(Arc::new),
            compress: false,
        })
    }

    /// Stores text payloads (JSON, NDJSON, CSV) of 512 bytes or more
    /// LZ4-compressed from now on: about a third of the disk for typical
    /// rows, for the CPU that compressing them takes (ingest with JSON
    /// payloads runs markedly slower on a machine of few cores). Workers get
    /// the same bytes either way, and a store reads payloads stored either
    /// way.
    #[must_use]
    pub fn with_compression(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// Runs `f` on the connection in a blocking thread, with the current time.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, DateTime<Utc>) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let clock = Arc::clone(&self.clock);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let now = clock.now();
            f(&mut conn, now)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Like [`Self::run`], inside one `BEGIN IMMEDIATE` transaction that is
    /// committed when `f` succeeds and rolled back when it fails.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn, now| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .db()?;
            let out = f(&tx, now.timestamp_millis())?;
            tx.commit().db()?;
            Ok(out)
        })
        .await
    }

    /// Like [`Self::run`], inside one read transaction (a consistent snapshot).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn, _| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .db()?;
            let out = f(&tx)?;
            tx.commit().db()?;
            Ok(out)
        })
        .await
    }
}

/// Maps SQLite errors onto [`StoreError`]: a busy or locked database is
/// transient, anything else a backend failure.
trait Db<T> {
    fn db(self) -> Result<T, StoreError>;
}

impl<T> Db<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Transient(Box::new(e))
            }
            _ => StoreError::Backend(Box::new(e)),
        })
    }
}

/// One task's stored payload, as [`StoredPayload::from_row`] reads it.
const SELECT_STORED: &str = "SELECT t.job_id, p.codec, p.data, p.file_at, p.file_bytes
     FROM payloads p JOIN tasks t ON t.id = p.task_id WHERE p.task_id = ?1";

/// A payload as the database holds it.
struct StoredPayload {
    job: String,
    codec: i64,
    inline: Vec<u8>,
    /// Offset and length in the job's payload file, when it lives there.
    file: Option<(i64, i64)>,
}

impl StoredPayload {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        let at: Option<i64> = r.get(3)?;
        let bytes: Option<i64> = r.get(4)?;
        Ok(Self {
            job: r.get(0)?,
            codec: r.get(1)?,
            inline: r.get(2)?,
            file: at.zip(bytes),
        })
    }

    /// The payload of `task` as its worker gets it.
    fn load(self, task: TaskId, files: Option<&PayloadFiles>) -> Result<Vec<u8>, StoreError> {
        let data = match (self.file, files) {
            (None, _) => self.inline,
            (Some((at, bytes)), Some(files)) => {
                files.read(&self.job, task, to_u64(at), to_u64(bytes))?
            }
            (Some(_), None) => {
                return Err(corrupt(format!(
                    "payload of task {task} is in a file, but this store has none"
                )));
            }
        };
        unpack(self.codec, data, task)
    }
}

/// Where the last payload of job `id` that lives in its payload file ends:
/// the bytes after it are referenced by no task.
fn referenced_end(tx: &Transaction<'_>, id: &str) -> Result<u64, StoreError> {
    let end: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(MAX(p.file_at + p.file_bytes), 0)
             FROM tasks t JOIN payloads p ON p.task_id = t.id
             WHERE t.job_id = ?1 AND p.file_at IS NOT NULL",
        )
        .db()?
        .query_row([id], |r| r.get(0))
        .db()?;
    Ok(to_u64(end))
}

fn job_not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "job",
        id: id.to_owned(),
    }
}

/// A job row before its JSON columns are parsed.
struct JobRow {
    id: String,
    key: Option<String>,
    spec: String,
    queue: String,
    params: String,
    state: String,
    retry: String,
    released: bool,
    error: Option<String>,
    ingest: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    timing: Option<String>,
}

impl JobRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            key: r.get(1)?,
            spec: r.get(2)?,
            queue: r.get(3)?,
            params: r.get(4)?,
            state: r.get(5)?,
            retry: r.get(6)?,
            released: r.get(7)?,
            error: r.get(8)?,
            ingest: r.get(9)?,
            created_at: r.get(10)?,
            updated_at: r.get(11)?,
            finished_at: r.get(12)?,
            timing: r.get(13)?,
        })
    }

    fn into_job(self, counts: TaskCounts) -> Result<Job, StoreError> {
        Ok(Job {
            id: parse(&self.id, "job id")?,
            key: self.key,
            spec: self.spec,
            queue: self.queue,
            params: from_json(&self.params, "job params")?,
            state: parse(&self.state, "job state")?,
            retry: from_json(&self.retry, "retry policy")?,
            released: self.released,
            error: self.error,
            ingest: self
                .ingest
                .as_deref()
                .map(|s| from_json(s, "ingest report"))
                .transpose()?,
            timing: self
                .timing
                .as_deref()
                .map(|s| from_json(s, "job timing"))
                .transpose()?
                .unwrap_or_default(),
            counts,
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
            finished_at: opt_time(self.finished_at)?,
        })
    }
}

fn counts(conn: &Connection, job: &str) -> Result<TaskCounts, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT state, COUNT(*) FROM tasks WHERE job_id = ?1 GROUP BY state")
        .db()?;
    let rows = stmt
        .query_map([job], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .db()?;
    let mut counts = TaskCounts::default();
    for row in rows {
        let (state, n) = row.db()?;
        counts.add(parse(&state, "task state")?, to_u64(n));
    }
    Ok(counts)
}

fn load_job(conn: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    let row = conn
        .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .db()?
        .query_row([id], JobRow::from_row)
        .optional()
        .db()?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(row.into_job(counts(conn, id)?)?)),
    }
}

/// Fails with not found unless job `id` exists.
fn require_job_exists(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .db()?
        .exists([id])
        .db()?;
    if exists {
        Ok(())
    } else {
        Err(job_not_found(id))
    }
}

fn require_job(conn: &Connection, id: &str) -> Result<Job, StoreError> {
    load_job(conn, id)?.ok_or_else(|| job_not_found(id))
}

fn job_info(conn: &Connection, id: &str) -> Result<JobInfo, StoreError> {
    let (state, retry): (String, String) = conn
        .prepare_cached("SELECT state, retry FROM jobs WHERE id = ?1")
        .db()?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .db()?
        .ok_or_else(|| job_not_found(id))?;
    Ok(JobInfo {
        state: parse(&state, "job state")?,
        retry: from_json(&retry, "retry policy")?,
    })
}

/// Settles a released, unended job whose tasks have all ended: `failed` if
/// any is dead, else `succeeded`. Ended jobs are never touched.
fn derive_job_state(conn: &Connection, id: &str, now: i64) -> Result<(), StoreError> {
    let Some((state, released)) = conn
        .prepare_cached("SELECT state, released FROM jobs WHERE id = ?1")
        .db()?
        .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
        .optional()
        .db()?
    else {
        return Ok(());
    };
    let state: JobState = parse(&state, "job state")?;
    if !released || state.is_terminal() {
        return Ok(());
    }
    // Seeks in the (job, state) index, never a count of the job's tasks:
    // this runs on every report.
    let unfinished: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = ?1
                            AND state IN ('scheduled', 'queued', 'running', 'retrying'))",
        )
        .db()?
        .query_row([id], |r| r.get(0))
        .db()?;
    if unfinished {
        return Ok(());
    }
    let dead: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = ?1 AND state = 'dead')")
        .db()?
        .query_row([id], |r| r.get(0))
        .db()?;
    let end = if dead {
        JobState::Failed
    } else {
        JobState::Succeeded
    };
    conn.prepare_cached(
        "UPDATE jobs SET state = ?2, updated_at = ?3, finished_at = ?3 WHERE id = ?1",
    )
    .db()?
    .execute(rusqlite::params![id, end.as_str(), now])
    .db()?;
    Ok(())
}

/// Ends an attempt as failed: the task becomes retrying, dead or cancelled.
/// Returns the new state.
#[allow(clippy::too_many_arguments)]
fn fail_attempt(
    conn: &Connection,
    jobs: &mut HashMap<String, JobInfo>,
    task: i64,
    job: &str,
    attempt: u32,
    max_attempts: u32,
    retryable: bool,
    error: &str,
    now: i64,
) -> Result<TaskState, StoreError> {
    if !jobs.contains_key(job) {
        let info = job_info(conn, job)?;
        jobs.insert(job.to_owned(), info);
    }
    let info = jobs
        .get(job)
        .ok_or_else(|| corrupt(format!("job {job} vanished")))?;
    let (state, available_at) = after_failure(info, attempt, max_attempts, retryable, now);
    let finished_at = state.is_terminal().then_some(now);
    conn.prepare_cached(
        "UPDATE tasks SET state = ?2, available_at = COALESCE(?3, available_at),
                lease_token = NULL, lease_expires_at = NULL, error = ?4, finished_at = ?5
         WHERE id = ?1",
    )
    .db()?
    .execute(rusqlite::params![
        task,
        state.as_str(),
        available_at,
        error,
        finished_at
    ])
    .db()?;
    Ok(state)
}

/// Treats every running task whose lease expired by `now` as a failed
/// attempt. Returns how many were rescued.
fn rescue(conn: &Connection, now: i64) -> Result<u64, StoreError> {
    type Expired = (i64, String, i64, i64, Option<String>, Option<i64>);
    let expired: Vec<Expired> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, job_id, attempt, max_attempts, worker, deadline FROM tasks
                 WHERE state = 'running' AND lease_expires_at <= ?1",
            )
            .db()?;
        let rows = stmt
            .query_map([now], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .db()?;
        rows.collect::<Result<_, _>>().db()?
    };
    let mut jobs = HashMap::new();
    let mut touched = HashSet::new();
    for (task, job, attempt, max_attempts, worker, deadline) in &expired {
        let worker = worker.as_deref().unwrap_or("unknown");
        let error = if deadline.is_some_and(|d| d <= now) {
            format!("timed out: the attempt (worker {worker}) ran past the job's timeout")
        } else {
            format!("lease expired (worker {worker} stopped heartbeating)")
        };
        fail_attempt(
            conn,
            &mut jobs,
            *task,
            job,
            to_u32(*attempt),
            to_u32(*max_attempts),
            true,
            &error,
            now,
        )?;
        touched.insert(job.as_str());
    }
    for job in touched {
        derive_job_state(conn, job, now)?;
    }
    Ok(expired.len() as u64)
}

/// Cancels a job's tasks in the given states (a SQL list of quoted names).
fn cancel_tasks(conn: &Connection, job: &str, states: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "UPDATE tasks SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
                finished_at = ?2
         WHERE job_id = ?1 AND state IN ({states})"
    ))
    .db()?
    .execute(rusqlite::params![job, now])
    .db()?;
    Ok(())
}

fn task_from_row(r: &Row<'_>) -> Result<Task, StoreError> {
    let state: String = r.get(3).db()?;
    let encoding: String = r.get(8).db()?;
    let job: String = r.get(1).db()?;
    Ok(Task {
        id: TaskId(r.get(0).db()?),
        job_id: parse(&job, "job id")?,
        key: r.get(2).db()?,
        state: parse(&state, "task state")?,
        attempt: to_u32(r.get(4).db()?),
        max_attempts: to_u32(r.get(5).db()?),
        rows: to_u64(r.get(6).db()?),
        payload_bytes: to_u64(r.get(7).db()?),
        encoding: parse(&encoding, "payload encoding")?,
        available_at: opt_time(r.get(9).db()?)?,
        lease_expires_at: opt_time(r.get(10).db()?)?,
        worker: r.get(11).db()?,
        result: r.get(12).db()?,
        error: r.get(13).db()?,
        finished_at: opt_time(r.get(14).db()?)?,
        progress: r
            .get::<_, Option<String>>(15)
            .db()?
            .map(|p| from_json(&p, "task progress"))
            .transpose()?,
    })
}

/// A claimable task picked for a claim.
struct Candidate {
    available_at: i64,
    id: i64,
    priority: i64,
}

/// A task as [`insert_tasks`] writes it: the task, its payload's codec, and
/// the stored bytes when they differ from the payload.
type Packed = (NewTask, i64, Option<Vec<u8>>);

impl SqliteStore {
    /// Compresses payloads (when asked to) before the connection is taken,
    /// so other calls need not wait.
    async fn pack_tasks(&self, tasks: Vec<NewTask>) -> Result<Vec<Packed>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let compress = self.compress;
        tokio::task::spawn_blocking(move || {
            tasks
                .into_iter()
                .map(|task| {
                    let (codec, data) = pack(task.encoding, &task.payload, compress);
                    (task, codec, data)
                })
                .collect()
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))
    }
}

/// The job tasks are added to, and what their rows take from it.
struct TaskTarget<'a> {
    job: &'a str,
    queue: &'a str,
    released: bool,
    max_attempts: u32,
    timing: &'a Timing,
}

/// Inserts tasks (ignoring those whose key the job has) with their payloads;
/// returns how many were new. Payload bytes kept in the job's file reach
/// the disk before the transaction can commit the rows that point at them.
fn insert_tasks(
    tx: &Transaction<'_>,
    target: &TaskTarget<'_>,
    packed: &[Packed],
    files: Option<&PayloadFiles>,
    now: i64,
) -> Result<(u64, Option<u64>), StoreError> {
    let id = target.job;
    let (task_state, available_at) = if target.released {
        (TaskState::Queued, Some(first_run(target.timing, now)))
    } else {
        (TaskState::Scheduled, None)
    };
    let mut insert_task = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO tasks (job_id, key, queue, state, attempt, max_attempts,
                    rows, payload_bytes, encoding, available_at, created_at, priority)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .db()?;
    let mut insert_payload = tx
        .prepare_cached(
            "INSERT INTO payloads (task_id, data, codec, file_at, file_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .db()?;
    let mut appender = None;
    let mut added = 0u64;
    for (task, codec, data) in packed {
        let changed = insert_task
            .execute(rusqlite::params![
                id,
                task.key,
                target.queue,
                task_state.as_str(),
                target.max_attempts,
                to_i64(task.rows, "row count")?,
                to_i64(task.payload.len() as u64, "payload size")?,
                task.encoding.as_str(),
                available_at,
                now,
                target.timing.priority
            ])
            .db()?;
        if changed == 1 {
            let task_id = tx.last_insert_rowid();
            let data = data.as_deref().unwrap_or(&task.payload);
            let (inline, file_at, file_bytes) = match files {
                Some(files) if data.len() >= FILE_MIN_BYTES => {
                    let to = match &mut appender {
                        Some(to) => to,
                        slot => slot.insert(files.appender(id, || referenced_end(tx, id))?),
                    };
                    let at = to_i64(to.append(data)?, "payload offset")?;
                    (
                        &[][..],
                        Some(at),
                        Some(to_i64(data.len() as u64, "payload size")?),
                    )
                }
                _ => (data, None, None),
            };
            insert_payload
                .execute(rusqlite::params![
                    task_id, inline, codec, file_at, file_bytes
                ])
                .db()?;
            added += 1;
        }
    }
    // The bytes reach the disk before the rows that point at them.
    let end = appender.map(Appender::sync).transpose()?;
    Ok((added, end))
}

/// Inserts callbacks (url, events as JSON) by index, leaving any index the
/// job has as it is.
fn insert_callbacks(
    tx: &Transaction<'_>,
    job: &str,
    callbacks: &[(String, String)],
) -> Result<(), StoreError> {
    if callbacks.is_empty() {
        return Ok(());
    }
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO callbacks (job_id, idx, url, events) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (job_id, idx) DO NOTHING",
        )
        .db()?;
    for (i, (url, events)) in callbacks.iter().enumerate() {
        insert
            .execute(rusqlite::params![
                job,
                i64::try_from(i).unwrap_or(i64::MAX),
                url,
                events
            ])
            .db()?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_spec(&self, spec: Spec) -> Result<(), StoreError> {
        let body = json(&spec)?;
        self.write(move |tx, _| {
            tx.prepare_cached(
                "INSERT INTO specs (name, body) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body",
            )
            .db()?
            .execute([&spec.name, &body])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn get_spec(&self, name: &str) -> Result<Option<Spec>, StoreError> {
        let name = name.to_owned();
        self.run(move |conn, _| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM specs WHERE name = ?1")
                .db()?
                .query_row([&name], |r| r.get(0))
                .optional()
                .db()?;
            body.map(|b| from_json(&b, "spec")).transpose()
        })
        .await
    }

    async fn list_specs(&self) -> Result<Vec<Spec>, StoreError> {
        self.run(move |conn, _| {
            let mut stmt = conn
                .prepare_cached("SELECT body FROM specs ORDER BY name")
                .db()?;
            let bodies = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .db()?
                .collect::<Result<Vec<_>, _>>()
                .db()?;
            bodies.iter().map(|b| from_json(b, "spec")).collect()
        })
        .await
    }

    async fn create_job_with(
        &self,
        job: NewJob,
        start: JobStart,
    ) -> Result<(Job, bool), StoreError> {
        let JobColumns {
            params,
            retry,
            timing,
            ingest,
            plan,
            callbacks,
        } = JobColumns::of(&job, &start)?;
        let packed = self.pack_tasks(start.tasks).await?;
        let files = self.files.clone();
        let (made, created, end) = self
            .write(move |tx, now| {
                if let Some(key) = &job.key {
                    let existing: Option<String> = tx
                        .prepare_cached("SELECT id FROM jobs WHERE key = ?1")
                        .db()?
                        .query_row([key], |r| r.get(0))
                        .optional()
                        .db()?;
                    if let Some(id) = existing {
                        return Ok((require_job(tx, &id)?, false, None));
                    }
                }
                let id = JobId::new().to_string();
                let (plan, holder, until) = match plan {
                    Some((plan, holder, lease)) => {
                        (Some(plan), Some(holder), Some(now.saturating_add(lease)))
                    }
                    None => (None, None, None),
                };
                tx.prepare_cached(
                "INSERT INTO jobs (id, key, spec, queue, params, state, retry, released, ingest,
                                   created_at, updated_at, timing, ingest_plan, ingest_holder,
                                   ingest_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13)",
            )
            .db()?
            .execute(rusqlite::params![
                id, job.key, job.spec, job.queue, params, retry, !job.hold, ingest, now, timing,
                plan, holder, until
            ])
            .db()?;
                let mut end = None;
                if !packed.is_empty() {
                    let retry: RetryPolicy = job.retry;
                    let target = TaskTarget {
                        job: &id,
                        queue: &job.queue,
                        released: !job.hold,
                        max_attempts: retry.max_attempts,
                        timing: &job.timing,
                    };
                    end = insert_tasks(tx, &target, &packed, files.as_deref(), now)?.1;
                }
                insert_callbacks(tx, &id, &callbacks)?;
                Ok((require_job(tx, &id)?, true, end))
            })
            .await?;
        if let (Some(files), Some(end)) = (&self.files, end) {
            files.committed(&made.id.to_string(), end);
        }
        Ok((made, created))
    }

    async fn claim_ingests(
        &self,
        holder: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<IngestClaim>, StoreError> {
        let holder = holder.to_owned();
        let lease = millis(lease);
        self.write(move |tx, now| {
            let ids: Vec<(String, String)> = tx
                .prepare_cached(
                    "SELECT id, ingest_plan FROM jobs
                     WHERE ingest_plan IS NOT NULL AND released = 0 AND state = 'pending'
                       AND (ingest_until IS NULL OR ingest_until <= ?1)
                     ORDER BY created_at, id LIMIT ?2",
                )
                .db()?
                .query_map(rusqlite::params![now, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .db()?
                .collect::<rusqlite::Result<_>>()
                .db()?;
            let mut claimed = Vec::with_capacity(ids.len());
            for (id, plan) in ids {
                tx.prepare_cached(
                    "UPDATE jobs SET ingest_holder = ?2, ingest_until = ?3 WHERE id = ?1",
                )
                .db()?
                .execute(rusqlite::params![id, holder, now.saturating_add(lease)])
                .db()?;
                claimed.push(IngestClaim {
                    job: require_job(tx, &id)?,
                    plan: from_json(&plan, "ingest plan")?,
                });
            }
            Ok(claimed)
        })
        .await
    }

    async fn running_ingests(&self, limit: u32) -> Result<Vec<IngestClaim>, StoreError> {
        self.run(move |conn, now| {
            let now = now.timestamp_millis();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .db()?;
            let ids: Vec<(String, String)> = tx
                .prepare_cached(
                    "SELECT id, ingest_plan FROM jobs
                     WHERE ingest_plan IS NOT NULL AND released = 0 AND state = 'pending'
                       AND ingest_until > ?1
                     ORDER BY created_at, id LIMIT ?2",
                )
                .db()?
                .query_map(rusqlite::params![now, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .db()?
                .collect::<rusqlite::Result<_>>()
                .db()?;
            let mut running = Vec::with_capacity(ids.len());
            for (id, plan) in ids {
                running.push(IngestClaim {
                    job: require_job(&tx, &id)?,
                    plan: from_json(&plan, "ingest plan")?,
                });
            }
            tx.commit().db()?;
            Ok(running)
        })
        .await
    }

    async fn renew_ingest(
        &self,
        job: JobId,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let holder = holder.to_owned();
        let lease = millis(lease);
        self.write(move |tx, now| {
            let changed = tx
                .prepare_cached(
                    "UPDATE jobs SET ingest_until = ?3
                     WHERE id = ?1 AND ingest_holder = ?2 AND ingest_plan IS NOT NULL
                       AND released = 0 AND state = 'pending'",
                )
                .db()?
                .execute(rusqlite::params![
                    job.to_string(),
                    holder,
                    now.saturating_add(lease)
                ])
                .db()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn add_tasks(&self, job: JobId, tasks: Vec<NewTask>) -> Result<u64, StoreError> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let packed = self.pack_tasks(tasks).await?;
        let files = self.files.clone();
        let (added, end) = self
            .write(move |tx, now| {
                let id = job.to_string();
                let (state, queue, retry, released, timing): (
                    String,
                    String,
                    String,
                    bool,
                    Option<String>,
                ) = tx
                    .prepare_cached(
                        "SELECT state, queue, retry, released, timing FROM jobs WHERE id = ?1",
                    )
                    .db()?
                    .query_row([&id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .optional()
                    .db()?
                    .ok_or_else(|| job_not_found(&id))?;
                let timing = job_timing(timing.as_deref())?;
                let state: JobState = parse(&state, "job state")?;
                if matches!(state, JobState::Failed | JobState::Cancelled) {
                    return Err(StoreError::Conflict {
                        message: format!("job {id} is {state}; no tasks can be added to it"),
                    });
                }
                let retry: RetryPolicy = from_json(&retry, "retry policy")?;
                let target = TaskTarget {
                    job: &id,
                    queue: &queue,
                    released,
                    max_attempts: retry.max_attempts,
                    timing: &timing,
                };
                let (added, end) = insert_tasks(tx, &target, &packed, files.as_deref(), now)?;
                if added > 0 && state == JobState::Succeeded {
                    // A job released at creation got more work after finishing.
                    tx.prepare_cached(
                        "UPDATE jobs SET state = 'running', updated_at = ?2, finished_at = NULL
                     WHERE id = ?1",
                    )
                    .db()?
                    .execute(rusqlite::params![id, now])
                    .db()?;
                }
                Ok((added, end))
            })
            .await?;
        if let (Some(files), Some(end)) = (&self.files, end) {
            files.committed(&job.to_string(), end);
        }
        Ok(added)
    }

    async fn release_job(
        &self,
        job: JobId,
        ingest: Option<IngestReport>,
    ) -> Result<Job, StoreError> {
        let ingest = ingest.as_ref().map(json).transpose()?;
        self.write(move |tx, now| {
            let id = job.to_string();
            let current = require_job(tx, &id)?;
            if current.released || current.state.is_terminal() {
                return Ok(current);
            }
            tx.prepare_cached(
                "UPDATE jobs SET released = 1, ingest = COALESCE(?2, ingest), updated_at = ?3
                 WHERE id = ?1",
            )
            .db()?
            .execute(rusqlite::params![id, ingest, now])
            .db()?;
            let timing: Option<String> = tx
                .prepare_cached("SELECT timing FROM jobs WHERE id = ?1")
                .db()?
                .query_row([&id], |r| r.get(0))
                .db()?;
            let at = first_run(&job_timing(timing.as_deref())?, now);
            tx.prepare_cached(
                "UPDATE tasks SET state = 'queued', available_at = ?2
                 WHERE job_id = ?1 AND state = 'scheduled'",
            )
            .db()?
            .execute(rusqlite::params![id, at])
            .db()?;
            derive_job_state(tx, &id, now)?;
            require_job(tx, &id)
        })
        .await
    }

    async fn fail_job(
        &self,
        job: JobId,
        error: String,
        ingest: Option<IngestReport>,
    ) -> Result<Job, StoreError> {
        let ingest = ingest.as_ref().map(json).transpose()?;
        self.write(move |tx, now| {
            let id = job.to_string();
            let current = require_job(tx, &id)?;
            if current.state.is_terminal() {
                return Ok(current);
            }
            tx.prepare_cached(
                "UPDATE jobs SET state = 'failed', error = ?2, ingest = COALESCE(?3, ingest),
                        updated_at = ?4, finished_at = ?4
                 WHERE id = ?1",
            )
            .db()?
            .execute(rusqlite::params![id, error, ingest, now])
            .db()?;
            cancel_tasks(tx, &id, "'scheduled', 'queued', 'running', 'retrying'", now)?;
            require_job(tx, &id)
        })
        .await
    }

    async fn cancel_job(&self, job: JobId) -> Result<Job, StoreError> {
        self.write(move |tx, now| {
            let id = job.to_string();
            let current = require_job(tx, &id)?;
            if current.state.is_terminal() {
                return Ok(current);
            }
            tx.prepare_cached(
                "UPDATE jobs SET state = 'cancelled', updated_at = ?2, finished_at = ?2
                 WHERE id = ?1",
            )
            .db()?
            .execute(rusqlite::params![id, now])
            .db()?;
            cancel_tasks(tx, &id, "'scheduled', 'queued', 'retrying'", now)?;
            require_job(tx, &id)
        })
        .await
    }

    async fn get_job(&self, job: JobId) -> Result<Option<Job>, StoreError> {
        self.read(move |tx| load_job(tx, &job.to_string())).await
    }

    async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError> {
        self.read(move |tx| {
            let limit = if filter.limit == 0 {
                DEFAULT_JOB_LIMIT
            } else {
                filter.limit
            };
            let rows = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {JOB_COLUMNS} FROM jobs
                         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR spec = ?2)
                           AND (?3 IS NULL OR queue = ?3) AND (?4 IS NULL OR id < ?4)
                           AND (?6 IS NULL OR created_at >= ?6)
                           AND (?7 IS NULL OR created_at < ?7)
                         ORDER BY id DESC LIMIT ?5"
                    ))
                    .db()?;
                stmt.query_map(
                    rusqlite::params![
                        filter.state.map(JobState::as_str),
                        filter.spec,
                        filter.queue,
                        filter.before.map(|b| b.to_string()),
                        limit,
                        filter.created_after.map(|t| t.timestamp_millis()),
                        filter.created_before.map(|t| t.timestamp_millis()),
                    ],
                    JobRow::from_row,
                )
                .db()?
                .collect::<Result<Vec<_>, _>>()
                .db()?
            };
            rows.into_iter()
                .map(|row| {
                    let counts = counts(tx, &row.id)?;
                    row.into_job(counts)
                })
                .collect()
        })
        .await
    }

    async fn list_tasks(&self, job: JobId, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read(move |tx| {
            let id = job.to_string();
            require_job_exists(tx, &id)?;
            let limit = if filter.limit == 0 {
                DEFAULT_TASK_LIMIT
            } else {
                filter.limit
            };
            let mut sql = format!(
                "SELECT id, job_id, key, state, attempt, max_attempts, rows, payload_bytes,
                        encoding, available_at, lease_expires_at, worker, {}, error, finished_at,
                        progress
                 FROM tasks WHERE job_id = ?1",
                if filter.with_results {
                    "result"
                } else {
                    "NULL"
                }
            );
            let mut params = vec![Value::Text(id)];
            if let Some(state) = filter.state {
                params.push(Value::Text(state.as_str().to_owned()));
                sql.push_str(&format!(" AND state = ?{}", params.len()));
            }
            if let Some(after) = filter.after_key {
                params.push(Value::Text(after));
                sql.push_str(&format!(" AND key > ?{}", params.len()));
            }
            params.push(Value::Integer(i64::from(limit)));
            sql.push_str(&format!(" ORDER BY key LIMIT ?{}", params.len()));
            let mut stmt = tx.prepare_cached(&sql).db()?;
            let mut rows = stmt.query(rusqlite::params_from_iter(params)).db()?;
            let mut tasks = Vec::new();
            let mut result_bytes = 0u64;
            while let Some(row) = rows.next().db()? {
                let task = task_from_row(row)?;
                result_bytes += task.result.as_ref().map_or(0, |r| r.len() as u64);
                tasks.push(task);
                if filter.results_budget > 0 && result_bytes >= filter.results_budget {
                    break;
                }
            }
            Ok(tasks)
        })
        .await
    }

    async fn put_files(&self, job: JobId, files: Vec<FileReport>) -> Result<(), StoreError> {
        if files.is_empty() {
            return Ok(());
        }
        self.write(move |tx, _| {
            let id = job.to_string();
            require_job_exists(tx, &id)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO job_files (job_id, relative, location, size, etag,
                            format, state, bytes, rows, tasks, skipped, error, node, until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL)",
                )
                .db()?;
            for f in &files {
                insert
                    .execute(rusqlite::params![
                        id,
                        f.relative,
                        f.location,
                        f.size.map(|n| to_i64(n, "file size")).transpose()?,
                        f.etag,
                        f.format,
                        f.state.as_str(),
                        to_i64(f.bytes, "bytes")?,
                        to_i64(f.rows, "rows")?,
                        to_i64(f.tasks, "tasks")?,
                        to_i64(f.skipped, "skipped")?,
                        f.error,
                        f.node,
                    ])
                    .db()?;
            }
            Ok(())
        })
        .await
    }

    async fn claim_file(
        &self,
        job: JobId,
        file: FileReport,
        holder: &str,
        lease: Duration,
        again: bool,
    ) -> Result<FileClaim, StoreError> {
        let holder = holder.to_owned();
        let lease = millis(lease);
        self.write(move |tx, now| {
            let id = job.to_string();
            let open: Option<bool> = tx
                .query_row(
                    "SELECT released = 0 AND state = 'pending' FROM jobs WHERE id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .db()?;
            match open {
                None => return Err(job_not_found(&id)),
                Some(false) => return Ok(FileClaim::Closed),
                Some(true) => {}
            }
            let before = tx
                .prepare_cached(
                    "SELECT relative, location, size, etag, format, state, bytes, rows, tasks,
                            skipped, error, node, until
                     FROM job_files WHERE job_id = ?1 AND relative = ?2",
                )
                .db()?
                .query_row(rusqlite::params![id, file.relative], |r| {
                    Ok((file_record(r), r.get::<_, Option<i64>>(12)?))
                })
                .optional()
                .db()?;
            if let Some((record, until)) = before {
                let record = record?;
                match record.state {
                    FileState::Running
                        if record.node.as_deref() != Some(holder.as_str())
                            && until.is_some_and(|u| u > now) =>
                    {
                        return Ok(FileClaim::Elsewhere);
                    }
                    FileState::Done | FileState::Failed if !again => {
                        return Ok(FileClaim::Finished(record));
                    }
                    _ => {}
                }
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO job_files (job_id, relative, location, size, etag,
                        format, state, bytes, rows, tasks, skipped, error, node, until)
                 VALUES (?1, ?2, ?3, ?4, ?5, '', 'running', 0, 0, 0, 0, NULL, ?6, ?7)",
            )
            .db()?
            .execute(rusqlite::params![
                id,
                file.relative,
                file.location,
                file.size.map(|n| to_i64(n, "file size")).transpose()?,
                file.etag,
                holder,
                now.saturating_add(lease),
            ])
            .db()?;
            Ok(FileClaim::Yours)
        })
        .await
    }

    async fn renew_files(
        &self,
        job: JobId,
        holder: &str,
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let holder = holder.to_owned();
        let lease = millis(lease);
        self.write(move |tx, now| {
            let changed = tx
                .prepare_cached(
                    "UPDATE job_files SET until = ?3
                     WHERE job_id = ?1 AND node = ?2 AND state = 'running'",
                )
                .db()?
                .execute(rusqlite::params![
                    job.to_string(),
                    holder,
                    now.saturating_add(lease)
                ])
                .db()?;
            Ok(changed as u64)
        })
        .await
    }

    async fn list_files(
        &self,
        job: JobId,
        filter: FileFilter,
    ) -> Result<Vec<FileReport>, StoreError> {
        self.read(move |tx| {
            let id = job.to_string();
            require_job_exists(tx, &id)?;
            let limit = if filter.limit == 0 {
                DEFAULT_FILE_LIMIT
            } else {
                filter.limit
            };
            let mut stmt = tx
                .prepare_cached(
                    "SELECT relative, location, size, etag, format, state, bytes, rows, tasks,
                            skipped, error, node
                     FROM job_files
                     WHERE job_id = ?1 AND (?2 IS NULL OR state = ?2)
                       AND (?3 IS NULL OR relative > ?3)
                     ORDER BY relative LIMIT ?4",
                )
                .db()?;
            let mut rows = stmt
                .query(rusqlite::params![
                    id,
                    filter.state.map(FileState::as_str),
                    filter.after,
                    limit
                ])
                .db()?;
            let mut files = Vec::new();
            while let Some(r) = rows.next().db()? {
                files.push(file_record(r)?);
            }
            Ok(files)
        })
        .await
    }

    async fn get_payload(&self, task: TaskId) -> Result<Vec<u8>, StoreError> {
        let files = self.files.clone();
        self.read(move |tx| {
            let stored = tx
                .prepare_cached(SELECT_STORED)
                .db()?
                .query_row([task.0], StoredPayload::from_row)
                .optional()
                .db()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "task",
                    id: task.to_string(),
                })?;
            stored.load(task, files.as_deref())
        })
        .await
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Lease>, StoreError> {
        if req.limit == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let files = self.files.clone();
        self.write(move |tx, now| {
            rescue(tx, now)?;
            let limit = i64::from(req.limit);
            // Each queue is an ordered range of the claim index; take the
            // oldest few of each and merge, so no claim sorts a whole queue.
            let mut candidates = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT t.available_at, t.id, t.priority FROM tasks t
                         WHERE t.queue = ?1 AND t.state IN ('queued', 'scheduled', 'retrying')
                           AND t.available_at <= ?2
                           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id
                                           AND j.state IN ('cancelled', 'failed'))
                           AND (?4 = '[]' OR EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id
                                AND j.spec IN (SELECT value FROM json_each(?4))))
                         ORDER BY t.priority DESC, t.available_at, t.id LIMIT ?3",
                    )
                    .db()?;
                let queues: HashSet<&String> = req.queues.iter().collect();
                let specs = json(&req.specs)?;
                for queue in queues {
                    let rows = stmt
                        .query_map(rusqlite::params![queue, now, limit, specs], |r| {
                            Ok(Candidate {
                                available_at: r.get(0)?,
                                id: r.get(1)?,
                                priority: r.get(2)?,
                            })
                        })
                        .db()?;
                    for row in rows {
                        candidates.push(row.db()?);
                    }
                }
            }
            candidates.sort_by_key(|c| (std::cmp::Reverse(c.priority), c.available_at, c.id));
            candidates.truncate(usize::try_from(req.limit).unwrap_or(usize::MAX));

            let expires = now.saturating_add(millis(req.lease));
            let expires_at = time(expires)?;
            let mut take = tx
                .prepare_cached(
                    "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease_token = ?2,
                            lease_expires_at = ?3, worker = ?4, progress = NULL, deadline = NULL
                     WHERE id = ?1
                     RETURNING job_id, key, queue, attempt, max_attempts, rows, encoding,
                               payload_bytes",
                )
                .db()?;
            let mut payload = tx.prepare_cached(SELECT_STORED).db()?;
            let mut job_of = tx
                .prepare_cached("SELECT spec, params, timing FROM jobs WHERE id = ?1")
                .db()?;
            let mut limit_to = tx
                .prepare_cached(
                    "UPDATE tasks SET deadline = ?2, lease_expires_at = MIN(lease_expires_at, ?2)
                     WHERE id = ?1",
                )
                .db()?;
            let mut start = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'running', updated_at = ?2
                     WHERE id = ?1 AND state = 'pending'",
                )
                .db()?;
            let mut jobs: HashMap<String, (String, serde_json::Value, Timing)> = HashMap::new();
            let mut leases = Vec::with_capacity(candidates.len());
            for c in candidates {
                let token = LeaseToken::random();
                let (job, key, queue, attempt, max_attempts, rows, encoding, bytes): (
                    String,
                    String,
                    String,
                    i64,
                    i64,
                    i64,
                    String,
                    i64,
                ) = take
                    .query_row(
                        rusqlite::params![c.id, token.to_string(), expires, req.worker],
                        |r| {
                            Ok((
                                r.get(0)?,
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                                r.get(7)?,
                            ))
                        },
                    )
                    .db()?;
                let left = req.inline_max.is_some_and(|max| to_u64(bytes) > max);
                // A payload left in the store is read by whoever holds the
                // lease, outside this write transaction.
                let data = if left {
                    Vec::new()
                } else {
                    match payload
                        .query_row([c.id], StoredPayload::from_row)
                        .optional()
                        .db()?
                    {
                        Some(stored) => stored.load(TaskId(c.id), files.as_deref())?,
                        None => Vec::new(),
                    }
                };
                if !jobs.contains_key(&job) {
                    let (spec, params, timing): (String, String, Option<String>) = job_of
                        .query_row([&job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .db()?;
                    let params = from_json(&params, "job params")?;
                    start.execute(rusqlite::params![job, now]).db()?;
                    jobs.insert(job.clone(), (spec, params, job_timing(timing.as_deref())?));
                }
                let (spec, params, timing) = jobs
                    .get(&job)
                    .ok_or_else(|| corrupt(format!("job {job} vanished")))?;
                // A job's timeout bounds each attempt: the lease cannot
                // outlive it, heartbeats or not.
                let mut expires_at = expires_at;
                if let Some(ms) = timing.timeout_ms {
                    let deadline = now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
                    limit_to.execute(rusqlite::params![c.id, deadline]).db()?;
                    if deadline < expires {
                        expires_at = time(deadline)?;
                    }
                }
                let encoding: PayloadEncoding = parse(&encoding, "payload encoding")?;
                leases.push(Lease {
                    lease: LeaseRef {
                        task: TaskId(c.id),
                        attempt: to_u32(attempt),
                        token,
                    },
                    job_id: parse(&job, "job id")?,
                    key,
                    spec: spec.clone(),
                    queue,
                    params: params.clone(),
                    payload: data,
                    payload_left: left,
                    payload_bytes: to_u64(bytes),
                    encoding,
                    rows: to_u64(rows),
                    max_attempts: to_u32(max_attempts),
                    expires_at,
                });
            }
            Ok(leases)
        })
        .await
    }

    async fn heartbeat(
        &self,
        beats: Vec<Heartbeat>,
        extend: Duration,
    ) -> Result<Vec<Result<HeartbeatAck, StoreError>>, StoreError> {
        self.write(move |tx, now| {
            let expires = now.saturating_add(millis(extend));

            let mut extend_lease = tx
                .prepare_cached(
                    "UPDATE tasks SET lease_expires_at = MIN(?5, COALESCE(deadline, ?5)),
                            progress = COALESCE(?6, progress)
                     WHERE id = ?1 AND attempt = ?2 AND lease_token = ?3 AND state = 'running'
                       AND lease_expires_at > ?4
                     RETURNING job_id, lease_expires_at",
                )
                .db()?;
            let mut job_state = tx
                .prepare_cached("SELECT state FROM jobs WHERE id = ?1")
                .db()?;
            let mut out = Vec::with_capacity(beats.len());
            for Heartbeat { lease, progress } in beats {
                let progress = progress.as_ref().map(json).transpose()?;
                let extended: Option<(String, i64)> = extend_lease
                    .query_row(
                        rusqlite::params![
                            lease.task.0,
                            lease.attempt,
                            lease.token.to_string(),
                            now,
                            expires,
                            progress
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .db()?;
                let Some((job, until)) = extended else {
                    out.push(Err(StoreError::LeaseLost {
                        task: lease.task,
                        attempt: lease.attempt,
                    }));
                    continue;
                };
                let state: Option<String> =
                    job_state.query_row([&job], |r| r.get(0)).optional().db()?;
                out.push(Ok(HeartbeatAck {
                    expires_at: time(until)?,
                    cancel_requested: matches!(state.as_deref(), Some("cancelled" | "failed")),
                }));
            }
            Ok(out)
        })
        .await
    }

    async fn report(
        &self,
        reports: Vec<Report>,
    ) -> Result<Vec<Result<TaskState, StoreError>>, StoreError> {
        self.write(move |tx, now| {
            let mut fenced = tx
                .prepare_cached(
                    "SELECT job_id, max_attempts FROM tasks
                     WHERE id = ?1 AND attempt = ?2 AND lease_token = ?3 AND state = 'running'
                       AND lease_expires_at > ?4",
                )
                .db()?;
            let mut succeed = tx
                .prepare_cached(
                    "UPDATE tasks SET state = 'succeeded', result = ?2, error = NULL,
                            lease_token = NULL, lease_expires_at = NULL, finished_at = ?3
                     WHERE id = ?1",
                )
                .db()?;
            let mut jobs = HashMap::new();
            let mut touched = HashSet::new();
            let mut out = Vec::with_capacity(reports.len());
            for report in reports {
                let lease = report.lease;
                let found: Option<(String, i64)> = fenced
                    .query_row(
                        rusqlite::params![
                            lease.task.0,
                            lease.attempt,
                            lease.token.to_string(),
                            now
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .db()?;
                let Some((job, max_attempts)) = found else {
                    out.push(Err(StoreError::LeaseLost {
                        task: lease.task,
                        attempt: lease.attempt,
                    }));
                    continue;
                };
                let state = match report.outcome {
                    Outcome::Success(result) => {
                        succeed
                            .execute(rusqlite::params![lease.task.0, result, now])
                            .db()?;
                        TaskState::Succeeded
                    }
                    Outcome::Failure { error, retryable } => fail_attempt(
                        tx,
                        &mut jobs,
                        lease.task.0,
                        &job,
                        lease.attempt,
                        to_u32(max_attempts),
                        retryable,
                        &error,
                        now,
                    )?,
                };
                touched.insert(job);
                out.push(Ok(state));
            }
            for job in &touched {
                derive_job_state(tx, job, now)?;
            }
            Ok(out)
        })
        .await
    }

    async fn rescue_expired(&self) -> Result<u64, StoreError> {
        self.write(|tx, now| rescue(tx, now)).await
    }

    async fn requeue(&self, job: JobId, states: &[TaskState]) -> Result<(Job, u64), StoreError> {
        let states = json(&requeue_states(states)?)?;
        self.write(move |tx, now| {
            let id = job.to_string();
            let current = require_job(tx, &id)?;
            requeue_released(&current)?;
            let budget = i64::from(current.retry.max_attempts);
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET state = 'queued', available_at = ?2,
                            max_attempts = attempt + ?3, lease_token = NULL,
                            lease_expires_at = NULL, deadline = NULL, finished_at = NULL
                     WHERE job_id = ?1 AND state IN (SELECT value FROM json_each(?4))",
                )
                .db()?
                .execute(rusqlite::params![id, now, budget, states])
                .db()?;
            if n > 0 && current.state.is_terminal() {
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'running', error = NULL, updated_at = ?2,
                            finished_at = NULL
                     WHERE id = ?1",
                )
                .db()?
                .execute(rusqlite::params![id, now])
                .db()?;
            }
            Ok((require_job(tx, &id)?, n as u64))
        })
        .await
    }

    async fn take_duty(
        &self,
        duty: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<DutyTerm>, StoreError> {
        let (duty, holder) = (duty.to_owned(), holder.to_owned());
        let lease = millis(lease);
        self.write(move |tx, now| {
            let until = now.saturating_add(lease);
            let current: Option<(String, i64, i64)> = tx
                .prepare_cached("SELECT holder, term, until FROM duties WHERE name = ?1")
                .db()?
                .query_row([&duty], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .db()?;
            let term = match current {
                None => 1,
                Some((h, term, end)) if h == holder && end > now => term,
                Some((_, term, end)) if end <= now => term + 1,
                Some(_) => return Ok(None),
            };
            tx.prepare_cached(
                "INSERT INTO duties (name, holder, term, until) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                     term = excluded.term, until = excluded.until",
            )
            .db()?
            .execute(rusqlite::params![duty, holder, term, until])
            .db()?;
            Ok(Some(DutyTerm {
                duty,
                holder,
                term: to_u64(term),
                until: time(until)?,
            }))
        })
        .await
    }

    async fn renew_duty(
        &self,
        term: &DutyTerm,
        lease: Duration,
    ) -> Result<Option<DutyTerm>, StoreError> {
        let term = term.clone();
        let lease = millis(lease);
        self.write(move |tx, now| {
            let until = now.saturating_add(lease);
            let changed = tx
                .prepare_cached(
                    "UPDATE duties SET until = ?5
                     WHERE name = ?1 AND holder = ?2 AND term = ?3 AND until > ?4",
                )
                .db()?
                .execute(rusqlite::params![
                    term.duty,
                    term.holder,
                    to_i64(term.term, "term")?,
                    now,
                    until
                ])
                .db()?;
            Ok((changed == 1).then(|| DutyTerm {
                until: time(until).unwrap_or(term.until),
                ..term
            }))
        })
        .await
    }

    async fn release_duty(&self, term: &DutyTerm) -> Result<(), StoreError> {
        let term = term.clone();
        self.write(move |tx, now| {
            tx.prepare_cached(
                "UPDATE duties SET until = MIN(until, ?4)
                 WHERE name = ?1 AND holder = ?2 AND term = ?3",
            )
            .db()?
            .execute(rusqlite::params![
                term.duty,
                term.holder,
                to_i64(term.term, "term")?,
                now
            ])
            .db()?;
            Ok(())
        })
        .await
    }

    async fn delete_ended(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let before = before.timestamp_millis();
        // The jobs' tasks go first, a bounded chunk a write transaction (the
        // write lock is never held for a whole large job), each chunk only
        // of jobs that are still ended and old.
        loop {
            let gone = self
                .write(move |tx, _| {
                    let ids: Vec<i64> = tx
                        .prepare_cached(
                            "SELECT t.id FROM tasks t
                             WHERE t.job_id IN (
                                 SELECT id FROM jobs
                                 WHERE state IN ('succeeded', 'failed', 'cancelled')
                                   AND finished_at < ?1
                                 ORDER BY finished_at, id LIMIT ?2)
                             LIMIT ?3",
                        )
                        .db()?
                        .query_map(rusqlite::params![before, limit, DELETE_CHUNK], |r| r.get(0))
                        .db()?
                        .collect::<rusqlite::Result<_>>()
                        .db()?;
                    let list = json(&ids)?;
                    for sql in [
                        "DELETE FROM payloads WHERE task_id IN (SELECT value FROM json_each(?1))",
                        "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?1))",
                    ] {
                        tx.prepare_cached(sql).db()?.execute([&list]).db()?;
                    }
                    Ok(i64::try_from(ids.len()).unwrap_or(i64::MAX))
                })
                .await?;
            if gone < DELETE_CHUNK {
                break;
            }
        }
        let ids = self
            .write(move |tx, _| {
                let ids: Vec<String> = tx
                    .prepare_cached(
                        "SELECT id FROM jobs
                         WHERE state IN ('succeeded', 'failed', 'cancelled')
                           AND finished_at < ?1
                         ORDER BY finished_at, id LIMIT ?2",
                    )
                    .db()?
                    .query_map(rusqlite::params![before, limit], |r| r.get(0))
                    .db()?
                    .collect::<rusqlite::Result<_>>()
                    .db()?;
                for id in &ids {
                    for sql in [
                        "DELETE FROM payloads WHERE task_id IN
                             (SELECT id FROM tasks WHERE job_id = ?1)",
                        "DELETE FROM tasks WHERE job_id = ?1",
                        "DELETE FROM job_files WHERE job_id = ?1",
                        "DELETE FROM callbacks WHERE job_id = ?1",
                        "DELETE FROM jobs WHERE id = ?1",
                    ] {
                        tx.prepare_cached(sql).db()?.execute([id]).db()?;
                    }
                }
                Ok(ids)
            })
            .await?;
        // The rows are gone; their payload files go after them (a crash in
        // between leaves a file no task points at, never a task without
        // its payload).
        if let Some(files) = &self.files {
            for id in &ids {
                files.remove(id)?;
            }
        }
        Ok(ids.len() as u64)
    }

    async fn add_callbacks(
        &self,
        job: JobId,
        callbacks: Vec<NewCallback>,
    ) -> Result<(), StoreError> {
        if callbacks.is_empty() {
            return Ok(());
        }
        let id = job.to_string();
        let callbacks = callbacks
            .iter()
            .map(|c| Ok::<_, StoreError>((c.url.clone(), json(&c.events)?)))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(move |tx, _| {
            require_job_exists(tx, &id)?;
            insert_callbacks(tx, &id, &callbacks)
        })
        .await
    }

    async fn list_callbacks(&self, job: JobId) -> Result<Vec<CallbackStatus>, StoreError> {
        let id = job.to_string();
        self.run(move |conn, _| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT idx, url, events, delivered, delivered_at, attempting, attempts,
                            next_at, last_status, last_error, gave_up
                     FROM callbacks WHERE job_id = ?1 ORDER BY idx",
                )
                .db()?;
            let mut rows = stmt.query([&id]).db()?;
            let mut out = Vec::new();
            let state = |v: Option<String>| -> Result<Option<JobState>, StoreError> {
                v.map(|s| parse(&s, "job state")).transpose()
            };
            while let Some(r) = rows.next().db()? {
                let events: String = r.get(2).db()?;
                out.push(CallbackStatus {
                    index: to_u32(r.get(0).db()?),
                    url: r.get(1).db()?,
                    events: from_json(&events, "callback events")?,
                    delivered: state(r.get(3).db()?)?,
                    delivered_at: opt_time(r.get(4).db()?)?,
                    attempting: state(r.get(5).db()?)?,
                    attempts: to_u32(r.get(6).db()?),
                    next_at: opt_time(r.get(7).db()?)?,
                    last_status: r
                        .get::<_, Option<i64>>(8)
                        .db()?
                        .and_then(|s| u16::try_from(s).ok()),
                    last_error: r.get(9).db()?,
                    gave_up: state(r.get(10).db()?)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn due_callbacks(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<CallbackDue>, StoreError> {
        self.write(move |tx, now| {
            let mut due = tx
                .prepare_cached(
                    "SELECT c.job_id, c.idx, c.url, j.state, c.attempting, c.attempts
                     FROM callbacks c JOIN jobs j ON j.id = c.job_id
                     WHERE c.done = 0 AND j.state != 'pending'
                       AND j.state IS NOT c.delivered AND j.state IS NOT c.gave_up
                       AND (c.events = '[]' OR j.state IN (SELECT value FROM json_each(c.events)))
                       AND (c.next_at IS NULL OR c.next_at <= ?1 OR c.attempting IS NOT j.state)
                       AND (c.lease_until IS NULL OR c.lease_until <= ?1)
                     LIMIT ?2",
                )
                .db()?;
            let rows = due
                .query_map(rusqlite::params![now, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .db()?
                .collect::<Result<Vec<_>, _>>()
                .db()?;
            let mut take = tx
                .prepare_cached(
                    "UPDATE callbacks SET lease_until = ?3, attempting = ?4, attempts = ?5
                     WHERE job_id = ?1 AND idx = ?2",
                )
                .db()?;
            let until = now.saturating_add(millis(lease));
            let mut out = Vec::with_capacity(rows.len());
            for (job, idx, url, state, attempting, attempts) in rows {
                let attempt = if attempting.as_deref() == Some(state.as_str()) {
                    to_u32(attempts).saturating_add(1)
                } else {
                    1
                };
                take.execute(rusqlite::params![job, idx, until, state, attempt])
                    .db()?;
                out.push(CallbackDue {
                    job: parse(&job, "job id")?,
                    index: to_u32(idx),
                    url,
                    state: parse(&state, "job state")?,
                    attempt,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn record_callback(
        &self,
        due: &CallbackDue,
        outcome: CallbackOutcome,
    ) -> Result<(), StoreError> {
        let (job, idx, state) = (due.job.to_string(), due.index, due.state.as_str());
        // A final state, delivered or given up, closes the callback.
        let done = due.state.is_terminal();
        self.write(move |tx, now| {
            match outcome {
                CallbackOutcome::Delivered { status } => tx
                    .prepare_cached(
                        "UPDATE callbacks SET delivered = ?3, delivered_at = ?4, last_status = ?5,
                                last_error = NULL, next_at = NULL, lease_until = NULL, done = ?6
                         WHERE job_id = ?1 AND idx = ?2",
                    )
                    .db()?
                    .execute(rusqlite::params![job, idx, state, now, status, done]),
                CallbackOutcome::Failed {
                    status,
                    error,
                    retry_at: Some(at),
                } => tx
                    .prepare_cached(
                        "UPDATE callbacks SET last_status = ?3, last_error = ?4, next_at = ?5,
                                lease_until = NULL
                         WHERE job_id = ?1 AND idx = ?2",
                    )
                    .db()?
                    .execute(rusqlite::params![
                        job,
                        idx,
                        status,
                        error,
                        at.timestamp_millis()
                    ]),
                CallbackOutcome::Failed {
                    status,
                    error,
                    retry_at: None,
                } => tx
                    .prepare_cached(
                        "UPDATE callbacks SET gave_up = ?3, last_status = ?4, last_error = ?5,
                                next_at = NULL, lease_until = NULL, done = ?6
                         WHERE job_id = ?1 AND idx = ?2",
                    )
                    .db()?
                    .execute(rusqlite::params![job, idx, state, status, error, done]),
            }
            .db()?;
            Ok(())
        })
        .await
    }

    async fn task_counts(&self) -> Result<BTreeMap<String, TaskCounts>, StoreError> {
        self.run(move |conn, _| {
            let mut stmt = conn
                .prepare_cached("SELECT queue, state, COUNT(*) FROM tasks GROUP BY queue, state")
                .db()?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .db()?;
            let mut out: BTreeMap<String, TaskCounts> = BTreeMap::new();
            for row in rows {
                let (queue, state, n) = row.db()?;
                out.entry(queue)
                    .or_default()
                    .add(parse(&state, "task state")?, to_u64(n));
            }
            Ok(out)
        })
        .await
    }
}

/// A file record from a row whose first columns are `relative, location,
/// size, etag, format, state, bytes, rows, tasks, skipped, error, node`.
fn file_record(r: &rusqlite::Row<'_>) -> Result<FileReport, StoreError> {
    let state: String = r.get(5).db()?;
    Ok(FileReport {
        relative: r.get(0).db()?,
        location: r.get(1).db()?,
        size: r.get::<_, Option<i64>>(2).db()?.map(to_u64),
        etag: r.get(3).db()?,
        format: r.get(4).db()?,
        state: parse(&state, "file state")?,
        bytes: to_u64(r.get(6).db()?),
        rows: to_u64(r.get(7).db()?),
        tasks: to_u64(r.get(8).db()?),
        skipped: to_u64(r.get(9).db()?),
        error: r.get(10).db()?,
        node: r.get(11).db()?,
    })
}
