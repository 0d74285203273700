//! The PostgreSQL store: one database that many `rota serve` nodes and
//! workers share, with no coordinator between them.
//!
//! # Concurrency
//!
//! Every transaction runs under READ COMMITTED. Claims pick their tasks with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on each other
//! and never share a task. Heartbeats and reports are fenced by `(task,
//! attempt, lease token)` in the statement that writes.
//!
//! A transaction that changes a job's tasks by the job's state locks the
//! job's row before its tasks, so the lock order is the same everywhere.
//! Release, fail, cancel and rescue lock it exclusively and settle the job
//! inside. Reports share the lock (a cancel waits for them, they do not wait
//! for each other), and settle the job once they committed: of two reports
//! ending a job's last tasks side by side, the one that settles last sees
//! both. A job whose reporter died between its commit and its settling is
//! settled by the rescue sweep. A claim never waits for a job row: it moves a
//! job from `pending` to `running` only if the row is free (`SKIP LOCKED`),
//! and otherwise leaves that to the next claim or to the job's settling.
//!
//! Times are the store clock's milliseconds, as in the SQLite store: the
//! nodes' clocks must agree to within a small fraction of the lease.

mod listen;
mod pool;
mod schema;
mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rota_core::{
    CallbackDue, CallbackOutcome, CallbackStatus, ClaimRequest, Clock, DutyTerm, FileClaim,
    FileFilter, FileReport, FileState, Heartbeat, HeartbeatAck, IngestClaim, IngestReport, Job,
    JobFilter, JobId, JobStart, JobState, Lease, LeaseRef, NewCallback, NewJob, NewTask, Outcome,
    PayloadEncoding, Report, RetryPolicy, Spec, Store, StoreError, Task, TaskCounts, TaskFilter,
    TaskId, TaskState, Timing,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, GenericClient, Row, Statement, Transaction};

use crate::shared::{
    JobColumns, JobInfo, after_failure, corrupt, first_run, from_json, job_timing, json, millis,
    opt_time, pack, parse, requeue_released, requeue_states, time, to_i64, to_u32, to_u64, unpack,
};
use crate::{DEFAULT_FILE_LIMIT, DEFAULT_JOB_LIMIT, DEFAULT_TASK_LIMIT};
use listen::Listener;
use pool::{Pool, prepare, quote_ident};
pub use tls::{PgTls, TlsMode};

/// The schema version this code writes (the number of migrations).
pub const PG_SCHEMA_VERSION: i32 = schema::MIGRATIONS.len() as i32;

/// Connections a store keeps when the URL does not say (`pool_size=N`).
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How many times a transaction that PostgreSQL rolled back as a deadlock
/// victim or a serialization failure is run again before the error is
/// returned (as [`StoreError::Transient`]).
const TX_ATTEMPTS: u32 = 4;

/// Tasks one statement of retention deletes (with their payloads and
/// results): no transaction grows with the size of a job.
const DELETE_CHUNK: i64 = 5_000;

/// Expired leases one rescue transaction handles.
const RESCUE_BATCH: i64 = 1_000;

/// Maps PostgreSQL errors onto [`StoreError`]: lost connections, a server
/// shutting down or refusing connections, deadlocks and serialization
/// failures are transient; anything else is a backend failure.
trait Pg<T> {
    fn pg(self) -> Result<T, StoreError>;
}

impl<T> Pg<T> for Result<T, tokio_postgres::Error> {
    fn pg(self) -> Result<T, StoreError> {
        self.map_err(|e| {
            let transient = match e.code() {
                None => true,
                Some(code) => [
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::CONNECTION_FAILURE,
                    SqlState::CONNECTION_EXCEPTION,
                    SqlState::LOCK_NOT_AVAILABLE,
                ]
                .contains(code),
            };
            let e = PgError(e);
            if transient {
                StoreError::Transient(Box::new(e))
            } else {
                StoreError::Backend(Box::new(e))
            }
        })
    }
}

/// A PostgreSQL error shown with what the server said (its code and
/// message), where the client's own text is only "db error", and with its
/// causes, where the client's text is only "error performing TLS
/// handshake" or "error connecting to server".
#[derive(Debug)]
pub(super) struct PgError(pub(super) tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            return write!(f, "PostgreSQL {}: {}", db.code().code(), db.message());
        }
        self.0.fmt(f)?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `err` is PostgreSQL rolling a transaction back for a deadlock or
/// a serialization failure: running it again is safe and likely to work.
fn rolled_back(err: &StoreError) -> bool {
    let StoreError::Transient(inner) = err else {
        return false;
    };
    inner
        .downcast_ref::<PgError>()
        .and_then(|e| e.0.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Runs `attempt` again while PostgreSQL rolls it back as a deadlock victim
/// or a serialization failure, at most [`TX_ATTEMPTS`] times.
async fn again<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < TX_ATTEMPTS && rolled_back(&e) => {
                tries += 1;
                let pause = rand::random_range(1..=20u64) * u64::from(tries);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

/// A [`Store`] over a PostgreSQL database, shared by any number of nodes.
///
/// Cheap to clone; clones share one pool of connections.
#[derive(Clone)]
pub struct PgStore {
    pool: Arc<Pool>,
    clock: Arc<dyn Clock>,
    compress: bool,
    /// Wakes [`Store::wait_for_work`]; `None` in poll-only mode.
    listener: Option<Arc<Listener>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// What a PostgreSQL store URL says beyond the connection itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// Connections kept open at most (`pool_size`, default
    /// [`DEFAULT_POOL_SIZE`]).
    pub pool_size: usize,
    /// The schema the store's tables live in (`schema`, default: the
    /// connection's search path, normally `public`). Created if missing.
    pub schema: Option<String>,
    /// LZ4-compress text payloads (`compress=lz4`).
    pub compress: bool,
    /// Never `LISTEN` (`poll_only=true`): for a connection pooler in
    /// transaction mode (PgBouncer), which cannot keep a listening session.
    /// Waiting workers then see other nodes' work when they next poll.
    pub poll_only: bool,
    /// TLS (`sslmode`, `sslrootcert`), as libpq reads them.
    pub tls: PgTls,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: DEFAULT_POOL_SIZE,
            schema: None,
            compress: false,
            poll_only: false,
            tls: PgTls::default(),
        }
    }
}

/// Splits a `postgres://` URL into the connection's configuration and the
/// store's own options (`pool_size`, `schema`, `compress`, `poll_only`,
/// and TLS: `sslmode`, `sslrootcert`, read as libpq reads them), which the
/// PostgreSQL client would not accept. Every other parameter
/// (`application_name`, `connect_timeout`, …) is the client's.
///
/// # Errors
/// [`StoreError::Invalid`] for a URL the client cannot parse or a bad
/// option; the message never repeats the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<(Config, PgOptions), StoreError> {
    let mut options = PgOptions::default();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "pool_size" => {
                options.pool_size = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| StoreError::Invalid {
                        message: format!(
                            "pool_size must be a number from 1 to 1000, not '{value}'"
                        ),
                    })?;
            }
            "schema" if !value.is_empty() => options.schema = Some(value.to_owned()),
            "poll_only" => {
                options.poll_only = match value {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(StoreError::Invalid {
                            message: format!("poll_only must be true or false, not '{other}'"),
                        });
                    }
                }
            }
            "compress" => {
                options.compress = match value {
                    "lz4" => true,
                    "none" => false,
                    other => {
                        return Err(StoreError::Invalid {
                            message: format!(
                                "unknown store option 'compress={other}' (supported: compress=lz4, compress=none)"
                            ),
                        });
                    }
                }
            }
            _ if options.tls.option(key, &rota_url::percent_decode(value))? => {}
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: Config =
        rest.parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Invalid {
                message: format!("the PostgreSQL store URL is not valid: {e}"),
            })?;
    config.ssl_mode(options.tls.client_mode());
    if config.get_application_name().is_none() {
        config.application_name("rota");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok((config, options))
}

impl PgStore {
    /// Connects to the database named by `url` (`postgres://` or
    /// `postgresql://`, see [`parse_url`]) and brings its schema up to date
    /// (see [`PgStore::migrate`]).
    ///
    /// # Errors
    /// When the URL is not valid, the database cannot be reached, or it holds
    /// a newer schema than this build knows.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let (config, options) = parse_url(url)?;
        let tls = options.tls.connector()?;
        let listener =
            (!options.poll_only).then(|| Arc::new(Listener::new(config.clone(), tls.clone())));
        let store = Self {
            pool: Arc::new(Pool::new(config, tls, options.schema, options.pool_size)),
            clock,
            compress: options.compress,
            listener,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations the database lacks, each in its own
    /// transaction, under an advisory lock: nodes that start together wait
    /// for each other and the later ones find nothing to do. Creates the
    /// store's schema first when the URL names one. Returns the schema
    /// version the database is at.
    ///
    /// # Errors
    /// When a migration fails, or the database is at a newer version than
    /// this build knows ([`StoreError::Invalid`]).
    pub async fn migrate(&self) -> Result<i32, StoreError> {
        let mut conn = self.pool.connect().await?;
        let (client, _) = conn.split();
        if let Some(schema) = &self.pool.schema() {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(schema)
                ))
                .await
                .or_else(|e| {
                    // Two nodes creating it at once: one of them loses, and
                    // the schema is there.
                    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .pg()?;
        }
        let tx = client.transaction().await.pg()?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&schema::MIGRATION_LOCK],
        )
        .await
        .pg()?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS rota_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .pg()?;
        let at: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM rota_migrations", &[])
            .await
            .pg()?
            .get(0);
        if at > PG_SCHEMA_VERSION {
            return Err(StoreError::Invalid {
                message: format!(
                    "database schema version {at} is newer than this build supports \
                     ({PG_SCHEMA_VERSION}); upgrade rota"
                ),
            });
        }
        for (version, sql) in (1..)
            .zip(schema::MIGRATIONS)
            .skip(usize::try_from(at).unwrap_or(0))
        {
            tx.batch_execute(sql).await.pg()?;
            tx.execute(
                "INSERT INTO rota_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .pg()?;
        }
        tx.commit().await.pg()?;
        Ok(PG_SCHEMA_VERSION)
    }

    /// The store clock's time, in milliseconds.
    fn now(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Compresses payloads (when asked to) off the async threads.
    async fn pack_tasks(&self, tasks: Vec<NewTask>) -> Result<Vec<Packed>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let compress = self.compress;
        let pack_all = move || -> Vec<Packed> {
            tasks
                .into_iter()
                .map(|task| {
                    let (codec, data) = pack(task.encoding, &task.payload, compress);
                    (task, codec, data)
                })
                .collect()
        };
        if !compress {
            return Ok(pack_all());
        }
        tokio::task::spawn_blocking(pack_all)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    /// Treats expired leases as failed attempts, [`RESCUE_BATCH`] at a time.
    async fn rescue(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let now = self.now();
            let n = again(|| self.rescue_batch(now)).await?;
            total += n;
            if n < u64::try_from(RESCUE_BATCH).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }

    async fn rescue_batch(&self, now: i64) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let expired = client
            .query(
                &prepare(
                    client,
                    stmts,
                    "SELECT id, job_id FROM tasks
                     WHERE state = 'running' AND lease_expires_at <= $1
                     ORDER BY id LIMIT $2",
                )
                .await?,
                &[&now, &RESCUE_BATCH],
            )
            .await
            .pg()?;
        if expired.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = expired.iter().map(|r| r.get(0)).collect();
        let job_ids: Vec<String> = expired.iter().map(|r| r.get(1)).collect();
        let tx = client.transaction().await.pg()?;
        let mut jobs = lock_jobs(&tx, stmts, &job_ids, JobLock::Exclusive).await?;
        // Fenced again under the lock: another node may have rescued them,
        // or a heartbeat extended them, since they were read.
        let rows = tx
            .query(
                &prepare(
                    &tx,
                    stmts,
                    "SELECT id, job_id, attempt, max_attempts, worker, deadline FROM tasks
                     WHERE id = ANY($1) AND state = 'running' AND lease_expires_at <= $2
                     ORDER BY id FOR UPDATE",
                )
                .await?,
                &[&ids, &now],
            )
            .await
            .pg()?;
        let mut failures = Vec::with_capacity(rows.len());
        for r in &rows {
            let worker: Option<String> = r.get(4);
            let worker = worker.as_deref().unwrap_or("unknown");
            let deadline: Option<i64> = r.get(5);
            let error = if deadline.is_some_and(|d| d <= now) {
                format!("timed out: the attempt (worker {worker}) ran past the job's timeout")
            } else {
                format!("lease expired (worker {worker} stopped heartbeating)")
            };
            failures.push(Failure {
                task: r.get(0),
                job: r.get(1),
                attempt: to_u32(i64::from(r.get::<_, i32>(2))),
                max_attempts: to_u32(i64::from(r.get::<_, i32>(3))),
                retryable: true,
                error,
            });
        }
        let touched: HashSet<String> = failures.iter().map(|f| f.job.clone()).collect();
        fail_attempts(&tx, stmts, &mut jobs, &failures, now).await?;
        for job in &touched {
            settle_job(&tx, stmts, job, now).await?;
        }
        tx.commit().await.pg()?;
        Ok(rows.len() as u64)
    }
}

/// A task as [`insert_tasks`] writes it: the task, its payload's codec, and
/// the stored bytes when they differ from the payload.
type Packed = (NewTask, i64, Option<Vec<u8>>);

/// An attempt to end as failed.
struct Failure {
    task: i64,
    job: String,
    attempt: u32,
    max_attempts: u32,
    retryable: bool,
    error: String,
}

/// A file record from a row whose first columns are `relative, location,
/// size, etag, format, state, bytes, rows, tasks, skipped, error, node`.
fn file_record(r: &tokio_postgres::Row) -> Result<FileReport, StoreError> {
    let state: String = r.get(5);
    Ok(FileReport {
        relative: r.get(0),
        location: r.get(1),
        size: r.get::<_, Option<i64>>(2).map(to_u64),
        etag: r.get(3),
        format: r.get(4),
        state: parse(&state, "file state")?,
        bytes: to_u64(r.get(6)),
        rows: to_u64(r.get(7)),
        tasks: to_u64(r.get(8)),
        skipped: to_u64(r.get(9)),
        error: r.get(10),
        node: r.get(11),
    })
}

fn job_not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "job",
        id: id.to_owned(),
    }
}

/// A job row selected by [`job_select!`], with its counts.
fn job_from_row(r: &Row) -> Result<Job, StoreError> {
    let id: String = r.get(0);
    let by_state: HashMap<String, i64> = from_json(r.get(14), "task counts")?;
    let mut counts = TaskCounts::default();
    for (state, n) in by_state {
        counts.add(parse(&state, "task state")?, to_u64(n));
    }
    let state: String = r.get(5);
    let params: String = r.get(4);
    let retry: String = r.get(6);
    let ingest: Option<String> = r.get(9);
    let timing: Option<String> = r.get(13);
    Ok(Job {
        id: parse(&id, "job id")?,
        key: r.get(1),
        spec: r.get(2),
        queue: r.get(3),
        params: from_json(&params, "job params")?,
        state: parse(&state, "job state")?,
        retry: from_json(&retry, "retry policy")?,
        released: r.get(7),
        error: r.get(8),
        ingest: ingest
            .as_deref()
            .map(|s| from_json(s, "ingest report"))
            .transpose()?,
        timing: job_timing(timing.as_deref())?,
        counts,
        created_at: time(r.get(10))?,
        updated_at: time(r.get(11))?,
        finished_at: opt_time(r.get(12))?,
    })
}

type Statements = HashMap<&'static str, Statement>;

/// The columns of a job row and, as a JSON object by state, its task counts
/// summed from `job_counts`, read by [`job_from_row`]; one statement, so one
/// snapshot, for both. Append the `WHERE` (and any locking) clause.
macro_rules! job_select {
    () => {
        "SELECT id, key, spec, queue, params, state, retry, released, error, ingest, \
                created_at, updated_at, finished_at, timing, \
                (SELECT COALESCE(jsonb_object_agg(state, n), '{}')::TEXT \
                 FROM (SELECT state, SUM(n) AS n FROM job_counts c \
                       WHERE c.job_id = jobs.id GROUP BY state) s) \
         FROM jobs "
    };
}

async fn load_job(
    c: &impl GenericClient,
    stmts: &mut Statements,
    id: &str,
) -> Result<Option<Job>, StoreError> {
    c.query_opt(
        &prepare(c, stmts, concat!(job_select!(), "WHERE id = $1")).await?,
        &[&id],
    )
    .await
    .pg()?
    .map(|r| job_from_row(&r))
    .transpose()
}

async fn require_job(
    c: &impl GenericClient,
    stmts: &mut Statements,
    id: &str,
) -> Result<Job, StoreError> {
    load_job(c, stmts, id)
        .await?
        .ok_or_else(|| job_not_found(id))
}

async fn require_job_exists(
    c: &impl GenericClient,
    stmts: &mut Statements,
    id: &str,
) -> Result<(), StoreError> {
    let found = c
        .query_opt(
            &prepare(c, stmts, "SELECT 1 FROM jobs WHERE id = $1").await?,
            &[&id],
        )
        .await
        .pg()?;
    found.map(|_| ()).ok_or_else(|| job_not_found(id))
}

/// How [`lock_jobs`] locks job rows.
#[derive(Clone, Copy)]
enum JobLock {
    /// Alone: the caller settles the jobs inside its transaction.
    Exclusive,
    /// Shared with other reporters, excluding only a cancel or a fail (which
    /// lock exclusively): concurrent reports of one job's tasks do not wait
    /// on each other, and settle the job after they commit.
    Shared,
}

/// Locks the rows of `ids` (in id order, as every locker does) and returns
/// what failing their tasks' attempts needs to know of them.
async fn lock_jobs(
    tx: &Transaction<'_>,
    stmts: &mut Statements,
    ids: &[String],
    mode: JobLock,
) -> Result<HashMap<String, JobInfo>, StoreError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let sql = match mode {
        JobLock::Exclusive => {
            "SELECT id, state, retry FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        }
        JobLock::Shared => {
            "SELECT id, state, retry FROM jobs WHERE id = ANY($1) ORDER BY id FOR SHARE"
        }
    };
    let rows = tx
        .query(&prepare(tx, stmts, sql).await?, &[&ids])
        .await
        .pg()?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let state: String = r.get(1);
        let retry: String = r.get(2);
        out.insert(
            r.get(0),
            JobInfo {
                state: parse(&state, "job state")?,
                retry: from_json(&retry, "retry policy")?,
            },
        );
    }
    Ok(out)
}

/// Locks one job's row and returns it; not found if it does not exist.
async fn lock_job(
    tx: &Transaction<'_>,
    stmts: &mut Statements,
    id: &str,
) -> Result<Job, StoreError> {
    tx.query_opt(
        &prepare(
            tx,
            stmts,
            concat!(job_select!(), "WHERE id = $1 FOR UPDATE"),
        )
        .await?,
        &[&id],
    )
    .await
    .pg()?
    .map(|r| job_from_row(&r))
    .transpose()?
    .ok_or_else(|| job_not_found(id))
}

/// Ends failed attempts: each task becomes retrying, dead or cancelled by
/// [`after_failure`]. The tasks' jobs are locked (they are in `jobs`).
async fn fail_attempts(
    tx: &Transaction<'_>,
    stmts: &mut Statements,
    jobs: &mut HashMap<String, JobInfo>,
    failures: &[Failure],
    now: i64,
) -> Result<Vec<TaskState>, StoreError> {
    let mut ids = Vec::with_capacity(failures.len());
    let mut states = Vec::with_capacity(failures.len());
    let mut available = Vec::with_capacity(failures.len());
    let mut errors = Vec::with_capacity(failures.len());
    let mut finished = Vec::with_capacity(failures.len());
    let mut out = Vec::with_capacity(failures.len());
    for f in failures {
        let info = jobs
            .get(&f.job)
            .ok_or_else(|| corrupt(format!("job {} of task {} vanished", f.job, f.task)))?;
        let (state, at) = after_failure(info, f.attempt, f.max_attempts, f.retryable, now);
        ids.push(f.task);
        states.push(state.as_str());
        available.push(at);
        errors.push(f.error.as_str());
        finished.push(state.is_terminal().then_some(now));
        out.push(state);
    }
    if !ids.is_empty() {
        tx.execute(
            &prepare(
                tx,
                stmts,
                "UPDATE tasks t SET state = u.state, available_at = COALESCE(u.at, t.available_at),
                        lease_token = NULL, lease_expires_at = NULL, error = u.error,
                        finished_at = u.finished
                 FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[])
                      AS u(id, state, at, error, finished)
                 WHERE t.id = u.id",
            )
            .await?,
            &[&ids, &states, &available, &errors, &finished],
        )
        .await
        .pg()?;
    }
    Ok(out)
}

/// Settles a released, unended job whose tasks have all ended: `failed` if
/// any is dead, else `succeeded`. Either the caller holds the job's row
/// exclusively (every other change to its tasks is committed or waits), or
/// it runs this after committing its own changes: of two transactions that
/// end a job's last tasks side by side, the one whose settling starts last
/// sees both committed.
async fn settle_job(
    tx: &impl GenericClient,
    stmts: &mut Statements,
    id: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        &prepare(
            tx,
            stmts,
            "UPDATE jobs SET state = CASE WHEN c.dead > 0 THEN 'failed' ELSE 'succeeded' END,
                    updated_at = $2, finished_at = $2
             FROM (SELECT COALESCE(SUM(n) FILTER (WHERE state IN
                                  ('scheduled', 'queued', 'running', 'retrying')), 0) AS open,
                          COALESCE(SUM(n) FILTER (WHERE state = 'dead'), 0) AS dead
                   FROM job_counts WHERE job_id = $1) c
             WHERE id = $1 AND released AND state IN ('pending', 'running') AND c.open = 0",
        )
        .await?,
        &[&id, &now],
    )
    .await
    .pg()?;
    Ok(())
}

/// The job tasks are added to, and what their rows take from it.
struct TaskTarget<'a> {
    job: &'a str,
    queue: &'a str,
    spec: &'a str,
    released: bool,
    max_attempts: u32,
    timing: &'a Timing,
}

/// Inserts tasks (ignoring those whose key the job has) with their
/// payloads, each kind in one statement. Returns how many were new.
async fn insert_tasks(
    tx: &Transaction<'_>,
    stmts: &mut Statements,
    target: &TaskTarget<'_>,
    packed: &[Packed],
    now: i64,
) -> Result<u64, StoreError> {
    if packed.is_empty() {
        return Ok(0);
    }
    let (state, available_at) = if target.released {
        (TaskState::Queued, Some(first_run(target.timing, now)))
    } else {
        (TaskState::Scheduled, None)
    };
    let mut keys = Vec::with_capacity(packed.len());
    let mut rows = Vec::with_capacity(packed.len());
    let mut bytes = Vec::with_capacity(packed.len());
    let mut encodings = Vec::with_capacity(packed.len());
    for (task, _, _) in packed {
        keys.push(task.key.as_str());
        rows.push(to_i64(task.rows, "row count")?);
        bytes.push(to_i64(task.payload.len() as u64, "payload size")?);
        encodings.push(task.encoding.as_str());
    }
    let timeout = target
        .timing
        .timeout_ms
        .map(|ms| to_i64(ms, "timeout"))
        .transpose()?;
    let max_attempts = i32::try_from(target.max_attempts).unwrap_or(i32::MAX);
    let inserted = tx
        .query(
            &prepare(
                tx,
                stmts,
                "INSERT INTO tasks (job_id, key, queue, spec, state, max_attempts, rows,
                                    payload_bytes, encoding, priority, timeout_ms, available_at,
                                    created_at)
                 SELECT $1, u.key, $2, $3, $4, $5, u.rows, u.bytes, u.encoding, $6, $7, $8, $9
                 FROM unnest($10::TEXT[], $11::BIGINT[], $12::BIGINT[], $13::TEXT[])
                      WITH ORDINALITY AS u(key, rows, bytes, encoding, n)
                 ORDER BY u.n
                 ON CONFLICT (job_id, key) DO NOTHING
                 RETURNING id, key",
            )
            .await?,
            &[
                &target.job,
                &target.queue,
                &target.spec,
                &state.as_str(),
                &max_attempts,
                &target.timing.priority,
                &timeout,
                &available_at,
                &now,
                &keys,
                &rows,
                &bytes,
                &encodings,
            ],
        )
        .await
        .pg()?;
    if inserted.is_empty() {
        return Ok(0);
    }
    // A key given twice in one call: the first one is the task.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(packed.len());
    for (i, key) in keys.iter().enumerate() {
        first.entry(key).or_insert(i);
    }
    let mut ids = Vec::with_capacity(inserted.len());
    let mut codecs = Vec::with_capacity(inserted.len());
    let mut data = Vec::with_capacity(inserted.len());
    for r in &inserted {
        let key: &str = r.get(1);
        let i = *first
            .get(key)
            .ok_or_else(|| corrupt(format!("inserted task key '{key}' was not given")))?;
        let (task, codec, packed_data) = &packed[i];
        ids.push(r.get::<_, i64>(0));
        codecs.push(i16::try_from(*codec).unwrap_or(0));
        data.push(packed_data.as_deref().unwrap_or(&task.payload));
    }
    tx.execute(
        &prepare(
            tx,
            stmts,
            "INSERT INTO task_payloads (task_id, codec, data)
             SELECT * FROM unnest($1::BIGINT[], $2::SMALLINT[], $3::BYTEA[])",
        )
        .await?,
        &[&ids, &codecs, &data],
    )
    .await
    .pg()?;
    Ok(inserted.len() as u64)
}

/// Tells listening nodes, when the transaction commits, that `queue` may
/// have claimable tasks. PostgreSQL folds the same notification given twice
/// in one transaction into one.
async fn announce(
    tx: &Transaction<'_>,
    stmts: &mut Statements,
    queue: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &prepare(tx, stmts, "SELECT pg_notify('rota_work', $1)").await?,
        &[&queue],
    )
    .await
    .pg()?;
    Ok(())
}

/// Inserts callbacks (url, events as JSON) by index, leaving any index the
/// job has as it is.
async fn insert_callbacks(
    tx: &Transaction<'_>,
    stmts: &mut Statements,
    job: &str,
    callbacks: &[(String, String)],
) -> Result<(), StoreError> {
    if callbacks.is_empty() {
        return Ok(());
    }
    let idx: Vec<i32> = (0..).take(callbacks.len()).collect();
    let urls: Vec<&str> = callbacks.iter().map(|(u, _)| u.as_str()).collect();
    let events: Vec<&str> = callbacks.iter().map(|(_, e)| e.as_str()).collect();
    tx.execute(
        &prepare(
            tx,
            stmts,
            "INSERT INTO callbacks (job_id, idx, url, events)
             SELECT $1, * FROM unnest($2::INTEGER[], $3::TEXT[], $4::TEXT[])
             ON CONFLICT (job_id, idx) DO NOTHING",
        )
        .await?,
        &[&job, &idx, &urls, &events],
    )
    .await
    .pg()?;
    Ok(())
}

/// Cancels a job's tasks in `states`.
async fn cancel_tasks(
    tx: &Transaction<'_>,
    stmts: &mut Statements,
    job: &str,
    states: &[&str],
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        &prepare(
            tx,
            stmts,
            "UPDATE tasks SET state = 'cancelled', lease_token = NULL, lease_expires_at = NULL,
                    finished_at = $2
             WHERE job_id = $1 AND state = ANY($3)",
        )
        .await?,
        &[&job, &now, &states],
    )
    .await
    .pg()?;
    Ok(())
}

fn task_from_row(r: &Row) -> Result<Task, StoreError> {
    let state: String = r.get(3);
    let encoding: String = r.get(8);
    let job: String = r.get(1);
    let progress: Option<String> = r.get(15);
    Ok(Task {
        id: TaskId(r.get(0)),
        job_id: parse(&job, "job id")?,
        key: r.get(2),
        state: parse(&state, "task state")?,
        attempt: to_u32(i64::from(r.get::<_, i32>(4))),
        max_attempts: to_u32(i64::from(r.get::<_, i32>(5))),
        rows: to_u64(r.get(6)),
        payload_bytes: to_u64(r.get(7)),
        encoding: parse(&encoding, "payload encoding")?,
        available_at: opt_time(r.get(9))?,
        lease_expires_at: opt_time(r.get(10))?,
        worker: r.get(11),
        result: r.get(12),
        error: r.get(13),
        finished_at: opt_time(r.get(14))?,
        progress: progress
            .map(|p| from_json(&p, "task progress"))
            .transpose()?,
    })
}

const LIST_TASKS: &str =
    "SELECT id, job_id, key, state, attempt, max_attempts, rows, payload_bytes,
        encoding, available_at, lease_expires_at, worker, NULL::BYTEA, error, finished_at, progress
 FROM tasks
 WHERE job_id = $1 AND ($2::TEXT IS NULL OR state = $2) AND ($3::TEXT IS NULL OR key > $3)
 ORDER BY key LIMIT $4";

const LIST_TASKS_WITH_RESULTS: &str = "SELECT t.id, t.job_id, t.key, t.state, t.attempt,
        t.max_attempts, t.rows, t.payload_bytes, t.encoding, t.available_at, t.lease_expires_at,
        t.worker, r.result, t.error, t.finished_at, t.progress
 FROM tasks t LEFT JOIN task_results r ON r.task_id = t.id
 WHERE t.job_id = $1 AND ($2::TEXT IS NULL OR t.state = $2) AND ($3::TEXT IS NULL OR t.key > $3)
 ORDER BY t.key LIMIT $4";

#[async_trait]
impl Store for PgStore {
    async fn put_spec(&self, spec: Spec) -> Result<(), StoreError> {
        let body = json(&spec)?;
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "INSERT INTO specs (name, body) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                &[&spec.name, &body],
            )
            .await
            .pg()?;
        Ok(())
    }

    async fn get_spec(&self, name: &str) -> Result<Option<Spec>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .client
            .query_opt("SELECT body FROM specs WHERE name = $1", &[&name])
            .await
            .pg()?;
        row.map(|r| from_json(r.get(0), "spec")).transpose()
    }

    async fn list_specs(&self) -> Result<Vec<Spec>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query("SELECT body FROM specs ORDER BY name", &[])
            .await
            .pg()?;
        rows.iter().map(|r| from_json(r.get(0), "spec")).collect()
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
        let (job, plan, callbacks, packed) = (&job, &plan, &callbacks, &packed);
        let (params, retry, timing, ingest) = (&params, &retry, &timing, &ingest);
        again(|| async move {
            let now = self.now();
            let mut conn = self.pool.get().await?;
            let (client, stmts) = conn.split();
            let tx = client.transaction().await.pg()?;
            let id = JobId::new().to_string();
            let (plan, holder, until) = match plan {
                Some((plan, holder, lease)) => (
                    Some(plan.as_str()),
                    Some(holder.as_str()),
                    Some(now.saturating_add(*lease)),
                ),
                None => (None, None, None),
            };
            let made = tx
                .query_opt(
                    &prepare(
                        &tx,
                        stmts,
                        "INSERT INTO jobs (id, key, spec, queue, params, state, retry, released,
                                           ingest, created_at, updated_at, timing, ingest_plan,
                                           ingest_holder, ingest_until)
                         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $9, $10, $11,
                                 $12, $13)
                         ON CONFLICT (key) DO NOTHING
                         RETURNING id",
                    )
                    .await?,
                    &[
                        &id, &job.key, &job.spec, &job.queue, params, retry, &!job.hold, ingest,
                        &now, timing, &plan, &holder, &until,
                    ],
                )
                .await
                .pg()?;
            if made.is_none() {
                // The key exists (perhaps made a moment ago by another node).
                let existing = tx
                    .query_one(
                        &prepare(&tx, stmts, "SELECT id FROM jobs WHERE key = $1").await?,
                        &[&job.key],
                    )
                    .await
                    .pg()?;
                let existing: String = existing.get(0);
                let found = require_job(&tx, stmts, &existing).await?;
                tx.commit().await.pg()?;
                return Ok((found, false));
            }
            let target = TaskTarget {
                job: &id,
                queue: &job.queue,
                spec: &job.spec,
                released: !job.hold,
                max_attempts: job.retry.max_attempts,
                timing: &job.timing,
            };
            if insert_tasks(&tx, stmts, &target, packed, now).await? > 0 && !job.hold {
                announce(&tx, stmts, &job.queue).await?;
            }
            insert_callbacks(&tx, stmts, &id, callbacks).await?;
            let made = require_job(&tx, stmts, &id).await?;
            tx.commit().await.pg()?;
            Ok((made, true))
        })
        .await
    }

    async fn claim_ingests(
        &self,
        holder: &str,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<IngestClaim>, StoreError> {
        let now = self.now();
        let until = now.saturating_add(millis(lease));
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let tx = client.transaction().await.pg()?;
        let rows = tx
            .query(
                &prepare(
                    &tx,
                    stmts,
                    "WITH free AS (
                         SELECT id FROM jobs
                         WHERE ingest_plan IS NOT NULL AND NOT released AND state = 'pending'
                           AND (ingest_until IS NULL OR ingest_until <= $1)
                         ORDER BY created_at, id LIMIT $2
                         FOR UPDATE SKIP LOCKED)
                     UPDATE jobs j SET ingest_holder = $3, ingest_until = $4
                     FROM free WHERE j.id = free.id
                     RETURNING j.id, j.ingest_plan, j.created_at",
                )
                .await?,
                &[&now, &i64::from(limit), &holder, &until],
            )
            .await
            .pg()?;
        let mut picked: Vec<(i64, String, String)> = rows
            .iter()
            .map(|r| (r.get(2), r.get(0), r.get(1)))
            .collect();
        picked.sort();
        let mut claimed = Vec::with_capacity(picked.len());
        for (_, id, plan) in picked {
            claimed.push(IngestClaim {
                job: require_job(&tx, stmts, &id).await?,
                plan: from_json(&plan, "ingest plan")?,
            });
        }
        tx.commit().await.pg()?;
        Ok(claimed)
    }

    async fn running_ingests(&self, limit: u32) -> Result<Vec<IngestClaim>, StoreError> {
        let now = self.now();
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let rows = client
            .query(
                &prepare(
                    client,
                    stmts,
                    "SELECT id, ingest_plan FROM jobs
                     WHERE ingest_plan IS NOT NULL AND NOT released AND state = 'pending'
                       AND ingest_until > $1
                     ORDER BY created_at, id LIMIT $2",
                )
                .await?,
                &[&now, &i64::from(limit)],
            )
            .await
            .pg()?;
        let mut running = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, plan): (String, String) = (row.get(0), row.get(1));
            running.push(IngestClaim {
                job: require_job(client, stmts, &id).await?,
                plan: from_json(&plan, "ingest plan")?,
            });
        }
        Ok(running)
    }

    async fn renew_ingest(
        &self,
        job: JobId,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let until = self.now().saturating_add(millis(lease));
        let conn = self.pool.get().await?;
        let changed = conn
            .client
            .execute(
                "UPDATE jobs SET ingest_until = $3
                 WHERE id = $1 AND ingest_holder = $2 AND ingest_plan IS NOT NULL
                   AND NOT released AND state = 'pending'",
                &[&job.to_string(), &holder, &until],
            )
            .await
            .pg()?;
        Ok(changed == 1)
    }

    async fn add_tasks(&self, job: JobId, tasks: Vec<NewTask>) -> Result<u64, StoreError> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let packed = self.pack_tasks(tasks).await?;
        let id = job.to_string();
        let (id, packed) = (&id, &packed);
        again(|| async move {
            let now = self.now();
            let mut conn = self.pool.get().await?;
            let (client, stmts) = conn.split();
            let tx = client.transaction().await.pg()?;
            // A shared lock: ingests may add to one job side by side, but not
            // while it is cancelled or failed.
            let row = tx
                .query_opt(
                    &prepare(
                        &tx,
                        stmts,
                        "SELECT state, queue, spec, retry, released, timing FROM jobs
                         WHERE id = $1 FOR SHARE",
                    )
                    .await?,
                    &[&id],
                )
                .await
                .pg()?
                .ok_or_else(|| job_not_found(id))?;
            let state: String = row.get(0);
            let state: JobState = parse(&state, "job state")?;
            if matches!(state, JobState::Failed | JobState::Cancelled) {
                return Err(StoreError::Conflict {
                    message: format!("job {id} is {state}; no tasks can be added to it"),
                });
            }
            let retry: String = row.get(3);
            let retry: RetryPolicy = from_json(&retry, "retry policy")?;
            let timing: Option<String> = row.get(5);
            let timing = job_timing(timing.as_deref())?;
            let target = TaskTarget {
                job: id,
                queue: row.get(1),
                spec: row.get(2),
                released: row.get(4),
                max_attempts: retry.max_attempts,
                timing: &timing,
            };
            let added = insert_tasks(&tx, stmts, &target, packed, now).await?;
            if added > 0 && target.released {
                announce(&tx, stmts, target.queue).await?;
            }
            if added > 0 && state == JobState::Succeeded {
                // A job released at creation got more work after finishing.
                tx.execute(
                    &prepare(
                        &tx,
                        stmts,
                        "UPDATE jobs SET state = 'running', updated_at = $2, finished_at = NULL
                         WHERE id = $1 AND state = 'succeeded'",
                    )
                    .await?,
                    &[&id, &now],
                )
                .await
                .pg()?;
            }
            tx.commit().await.pg()?;
            Ok(added)
        })
        .await
    }

    async fn release_job(
        &self,
        job: JobId,
        ingest: Option<IngestReport>,
    ) -> Result<Job, StoreError> {
        let ingest = ingest.as_ref().map(json).transpose()?;
        let id = job.to_string();
        let (id, ingest) = (&id, &ingest);
        again(|| async move {
            let now = self.now();
            let mut conn = self.pool.get().await?;
            let (client, stmts) = conn.split();
            let tx = client.transaction().await.pg()?;
            let current = lock_job(&tx, stmts, id).await?;
            if current.released || current.state.is_terminal() {
                tx.commit().await.pg()?;
                return Ok(current);
            }
            tx.execute(
                &prepare(
                    &tx,
                    stmts,
                    "UPDATE jobs SET released = true, ingest = COALESCE($2, ingest),
                            updated_at = $3
                     WHERE id = $1",
                )
                .await?,
                &[&id, &ingest, &now],
            )
            .await
            .pg()?;
            let at = first_run(&current.timing, now);
            let queued = tx
                .execute(
                    &prepare(
                        &tx,
                        stmts,
                        "UPDATE tasks SET state = 'queued', available_at = $2
                     WHERE job_id = $1 AND state = 'scheduled'",
                    )
                    .await?,
                    &[&id, &at],
                )
                .await
                .pg()?;
            if queued > 0 {
                announce(&tx, stmts, &current.queue).await?;
            }
            settle_job(&tx, stmts, id, now).await?;
            let out = require_job(&tx, stmts, id).await?;
            tx.commit().await.pg()?;
            Ok(out)
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
        self.end_job(
            job,
            JobState::Failed,
            Some(&error),
            ingest.as_deref(),
            &["scheduled", "queued", "running", "retrying"],
        )
        .await
    }

    async fn cancel_job(&self, job: JobId) -> Result<Job, StoreError> {
        // Running tasks learn it at their next heartbeat.
        self.end_job(
            job,
            JobState::Cancelled,
            None,
            None,
            &["scheduled", "queued", "retrying"],
        )
        .await
    }

    async fn get_job(&self, job: JobId) -> Result<Option<Job>, StoreError> {
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        load_job(client, stmts, &job.to_string()).await
    }

    async fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>, StoreError> {
        let limit = i64::from(if filter.limit == 0 {
            DEFAULT_JOB_LIMIT
        } else {
            filter.limit
        });
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let rows = client
            .query(
                &prepare(
                    client,
                    stmts,
                    concat!(
                        job_select!(),
                        "WHERE ($1::TEXT IS NULL OR state = $1) AND ($2::TEXT IS NULL OR spec = $2)
                           AND ($3::TEXT IS NULL OR queue = $3) AND ($4::TEXT IS NULL OR id < $4)
                           AND ($6::BIGINT IS NULL OR created_at >= $6)
                           AND ($7::BIGINT IS NULL OR created_at < $7)
                         ORDER BY id DESC LIMIT $5"
                    ),
                )
                .await?,
                &[
                    &filter.state.map(JobState::as_str),
                    &filter.spec,
                    &filter.queue,
                    &filter.before.map(|b| b.to_string()),
                    &limit,
                    &filter.created_after.map(|t| t.timestamp_millis()),
                    &filter.created_before.map(|t| t.timestamp_millis()),
                ],
            )
            .await
            .pg()?;
        rows.iter().map(job_from_row).collect()
    }

    async fn list_tasks(&self, job: JobId, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        let id = job.to_string();
        let limit = i64::from(if filter.limit == 0 {
            DEFAULT_TASK_LIMIT
        } else {
            filter.limit
        });
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        require_job_exists(client, stmts, &id).await?;
        let sql = if filter.with_results {
            LIST_TASKS_WITH_RESULTS
        } else {
            LIST_TASKS
        };
        let stmt = prepare(client, stmts, sql).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &id,
            &filter.state.map(TaskState::as_str),
            &filter.after_key,
            &limit,
        ];
        let stream = client.query_raw(&stmt, params).await.pg()?;
        let mut stream = std::pin::pin!(stream);
        let mut tasks = Vec::new();
        let mut result_bytes = 0u64;
        while let Some(row) = futures::StreamExt::next(&mut stream).await {
            let task = task_from_row(&row.pg()?)?;
            result_bytes += task.result.as_ref().map_or(0, |r| r.len() as u64);
            tasks.push(task);
            if filter.results_budget > 0 && result_bytes >= filter.results_budget {
                // The rest of the page is never read off the connection's
                // buffers into tasks.
                break;
            }
        }
        Ok(tasks)
    }

    async fn put_files(&self, job: JobId, files: Vec<FileReport>) -> Result<(), StoreError> {
        if files.is_empty() {
            return Ok(());
        }
        let id = job.to_string();
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let tx = client.transaction().await.pg()?;
        require_job_exists(&tx, stmts, &id).await?;
        let stmt = prepare(
            &tx,
            stmts,
            "INSERT INTO job_files (job_id, relative, location, size, etag, format, state, bytes,
                                    rows, tasks, skipped, error, node, until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL)
             ON CONFLICT (job_id, relative) DO UPDATE SET
                 location = excluded.location, size = excluded.size, etag = excluded.etag,
                 format = excluded.format, state = excluded.state, bytes = excluded.bytes,
                 rows = excluded.rows, tasks = excluded.tasks, skipped = excluded.skipped,
                 error = excluded.error, node = excluded.node, until = NULL",
        )
        .await?;
        for f in &files {
            tx.execute(
                &stmt,
                &[
                    &id,
                    &f.relative,
                    &f.location,
                    &f.size.map(|n| to_i64(n, "file size")).transpose()?,
                    &f.etag,
                    &f.format,
                    &f.state.as_str(),
                    &to_i64(f.bytes, "bytes")?,
                    &to_i64(f.rows, "rows")?,
                    &to_i64(f.tasks, "tasks")?,
                    &to_i64(f.skipped, "skipped")?,
                    &f.error,
                    &f.node,
                ],
            )
            .await
            .pg()?;
        }
        tx.commit().await.pg()?;
        Ok(())
    }

    async fn claim_file(
        &self,
        job: JobId,
        file: FileReport,
        holder: &str,
        lease: Duration,
        again: bool,
    ) -> Result<FileClaim, StoreError> {
        let id = job.to_string();
        let now = self.now();
        let until = now.saturating_add(millis(lease));
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let tx = client.transaction().await.pg()?;
        // Shared: files of one job are claimed side by side, but not while
        // the job is cancelled or failed.
        let job_row = tx
            .query_opt(
                &prepare(
                    &tx,
                    stmts,
                    "SELECT NOT released AND state = 'pending' FROM jobs WHERE id = $1 FOR SHARE",
                )
                .await?,
                &[&id],
            )
            .await
            .pg()?;
        match job_row.map(|r| r.get::<_, bool>(0)) {
            None => {
                tx.rollback().await.pg()?;
                return Err(job_not_found(&id));
            }
            Some(false) => {
                tx.rollback().await.pg()?;
                return Ok(FileClaim::Closed);
            }
            Some(true) => {}
        }
        // The insert waits for a claim being made at the same time and then
        // checks the row that claim left: one of them gets the file.
        let claimed = tx
            .query_opt(
                &prepare(
                    &tx,
                    stmts,
                    "INSERT INTO job_files (job_id, relative, location, size, etag, format, state,
                                            bytes, rows, tasks, skipped, error, node, until)
                     VALUES ($1, $2, $3, $4, $5, '', 'running', 0, 0, 0, 0, NULL, $6, $7)
                     ON CONFLICT (job_id, relative) DO UPDATE SET
                         location = excluded.location, size = excluded.size,
                         etag = excluded.etag, format = '', state = 'running', bytes = 0,
                         rows = 0, tasks = 0, skipped = 0, error = NULL, node = excluded.node,
                         until = excluded.until
                     WHERE (job_files.state = 'running'
                            AND (job_files.node = excluded.node OR job_files.until <= $8))
                        OR ($9 AND job_files.state <> 'running')
                     RETURNING 1",
                )
                .await?,
                &[
                    &id,
                    &file.relative,
                    &file.location,
                    &file.size.map(|n| to_i64(n, "file size")).transpose()?,
                    &file.etag,
                    &holder,
                    &until,
                    &now,
                    &again,
                ],
            )
            .await
            .pg()?;
        let answer = if claimed.is_some() {
            FileClaim::Yours
        } else {
            let row = tx
                .query_one(
                    &prepare(
                        &tx,
                        stmts,
                        "SELECT relative, location, size, etag, format, state, bytes, rows, tasks,
                                skipped, error, node
                         FROM job_files WHERE job_id = $1 AND relative = $2",
                    )
                    .await?,
                    &[&id, &file.relative],
                )
                .await
                .pg()?;
            let record = file_record(&row)?;
            if record.state == FileState::Running {
                FileClaim::Elsewhere
            } else {
                FileClaim::Finished(record)
            }
        };
        tx.commit().await.pg()?;
        Ok(answer)
    }

    async fn renew_files(
        &self,
        job: JobId,
        holder: &str,
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let until = self.now().saturating_add(millis(lease));
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "UPDATE job_files SET until = $3
                 WHERE job_id = $1 AND node = $2 AND state = 'running'",
                &[&job.to_string(), &holder, &until],
            )
            .await
            .pg()
    }

    async fn list_files(
        &self,
        job: JobId,
        filter: FileFilter,
    ) -> Result<Vec<FileReport>, StoreError> {
        let id = job.to_string();
        let limit = i64::from(if filter.limit == 0 {
            DEFAULT_FILE_LIMIT
        } else {
            filter.limit
        });
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        require_job_exists(client, stmts, &id).await?;
        let rows = client
            .query(
                &prepare(
                    client,
                    stmts,
                    "SELECT relative, location, size, etag, format, state, bytes, rows, tasks,
                            skipped, error, node
                     FROM job_files
                     WHERE job_id = $1 AND ($2::TEXT IS NULL OR state = $2)
                       AND ($3::TEXT IS NULL OR relative > $3)
                     ORDER BY relative LIMIT $4",
                )
                .await?,
                &[
                    &id,
                    &filter.state.map(FileState::as_str),
                    &filter.after,
                    &limit,
                ],
            )
            .await
            .pg()?;
        rows.iter().map(file_record).collect()
    }

    async fn get_payload(&self, task: TaskId) -> Result<Vec<u8>, StoreError> {
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let row = client
            .query_opt(
                &prepare(
                    client,
                    stmts,
                    "SELECT codec, data FROM task_payloads WHERE task_id = $1",
                )
                .await?,
                &[&task.0],
            )
            .await
            .pg()?
            .ok_or_else(|| StoreError::NotFound {
                what: "task",
                id: task.to_string(),
            })?;
        unpack(i64::from(row.get::<_, i16>(0)), row.get(1), task)
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Lease>, StoreError> {
        if req.limit == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        self.rescue().await?;
        let now = self.now();
        let expires = now.saturating_add(millis(req.lease));
        // Each queue is an ordered range of the claim index: the claim takes
        // the first few of each (never sorting a whole queue) and the best of
        // those.
        let mut queues = req.queues.clone();
        queues.sort_unstable();
        queues.dedup();
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let tx = client.transaction().await.pg()?;
        let taken = tx
            .query(
                &prepare(
                    &tx,
                    stmts,
                    "WITH picked AS (
                         SELECT c.id FROM unnest($1::TEXT[]) AS q(name)
                         CROSS JOIN LATERAL (
                             SELECT id, priority, available_at FROM tasks
                             WHERE queue = q.name AND state IN ('queued', 'retrying')
                               AND available_at <= $2
                               AND (cardinality($3::TEXT[]) = 0 OR spec = ANY($3))
                             ORDER BY priority DESC, available_at, id
                             LIMIT $4
                             FOR UPDATE SKIP LOCKED) c
                         ORDER BY c.priority DESC, c.available_at, c.id
                         LIMIT $4)
                     UPDATE tasks t SET state = 'running', attempt = t.attempt + 1,
                            lease_token = gen_random_uuid()::TEXT, worker = $5, progress = NULL,
                            deadline = $2 + t.timeout_ms,
                            lease_expires_at = LEAST($6, $2 + t.timeout_ms)
                     FROM picked WHERE t.id = picked.id
                     RETURNING t.id, t.job_id, t.key, t.queue, t.spec, t.attempt,
                               t.max_attempts, t.rows, t.encoding, t.lease_token,
                               t.lease_expires_at, t.priority, t.available_at,
                               t.payload_bytes",
                )
                .await?,
                &[
                    &queues,
                    &now,
                    &req.specs,
                    &i64::from(req.limit),
                    &req.worker,
                    &expires,
                ],
            )
            .await
            .pg()?;
        if taken.is_empty() {
            tx.commit().await.pg()?;
            return Ok(Vec::new());
        }
        let mut job_ids: Vec<String> = taken.iter().map(|r| r.get(1)).collect();
        job_ids.sort_unstable();
        job_ids.dedup();
        // Jobs whose row another transaction holds are left as they are:
        // the next claim, or the job's settling, moves them on.
        tx.execute(
            &prepare(
                &tx,
                stmts,
                "UPDATE jobs SET state = 'running', updated_at = $2
                 WHERE id IN (SELECT id FROM jobs WHERE id = ANY($1) AND state = 'pending'
                              ORDER BY id FOR NO KEY UPDATE SKIP LOCKED)",
            )
            .await?,
            &[&job_ids, &now],
        )
        .await
        .pg()?;
        tx.commit().await.pg()?;

        // Payloads and job parameters never change: read them after the
        // claim committed, outside its transaction.
        // Payloads over the claim's inline maximum are left for the holder.
        let left = |r: &Row| {
            req.inline_max
                .is_some_and(|max| to_u64(r.get::<_, i64>(13)) > max)
        };
        let ids: Vec<i64> = taken
            .iter()
            .filter(|r| !left(r))
            .map(|r| r.get(0))
            .collect();
        let mut payloads: HashMap<i64, (i16, Vec<u8>)> = client
            .query(
                &prepare(
                    client,
                    stmts,
                    "SELECT task_id, codec, data FROM task_payloads WHERE task_id = ANY($1)",
                )
                .await?,
                &[&ids],
            )
            .await
            .pg()?
            .into_iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let mut params: HashMap<String, serde_json::Value> = HashMap::new();
        for r in client
            .query(
                &prepare(
                    client,
                    stmts,
                    "SELECT id, params FROM jobs WHERE id = ANY($1)",
                )
                .await?,
                &[&job_ids],
            )
            .await
            .pg()?
        {
            let text: String = r.get(1);
            params.insert(r.get(0), from_json(&text, "job params")?);
        }
        let mut leases = Vec::with_capacity(taken.len());
        for r in &taken {
            let id: i64 = r.get(0);
            let job: String = r.get(1);
            let token: String = r.get(9);
            let encoding: String = r.get(8);
            let payload_left = left(r);
            let payload = match payloads.remove(&id) {
                Some((codec, data)) => unpack(i64::from(codec), data, TaskId(id))?,
                None => Vec::new(),
            };
            let sort = (
                std::cmp::Reverse(r.get::<_, i32>(11)),
                r.get::<_, Option<i64>>(12),
                id,
            );
            leases.push((
                sort,
                Lease {
                    lease: LeaseRef {
                        task: TaskId(id),
                        attempt: to_u32(i64::from(r.get::<_, i32>(5))),
                        token: parse(&token, "lease token")?,
                    },
                    params: params
                        .get(&job)
                        .cloned()
                        .ok_or_else(|| job_not_found(&job))?,
                    job_id: parse(&job, "job id")?,
                    key: r.get(2),
                    spec: r.get(4),
                    queue: r.get(3),
                    payload,
                    payload_left,
                    payload_bytes: to_u64(r.get(13)),
                    encoding: parse::<PayloadEncoding>(&encoding, "payload encoding")?,
                    rows: to_u64(r.get(7)),
                    max_attempts: to_u32(i64::from(r.get::<_, i32>(6))),
                    expires_at: time(r.get(10))?,
                },
            ));
        }
        leases.sort_by_key(|a| a.0);
        Ok(leases.into_iter().map(|(_, lease)| lease).collect())
    }

    async fn heartbeat(
        &self,
        beats: Vec<Heartbeat>,
        extend: Duration,
    ) -> Result<Vec<Result<HeartbeatAck, StoreError>>, StoreError> {
        if beats.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let expires = now.saturating_add(millis(extend));
        let mut ids = Vec::with_capacity(beats.len());
        let mut attempts = Vec::with_capacity(beats.len());
        let mut tokens = Vec::with_capacity(beats.len());
        let mut progress = Vec::with_capacity(beats.len());
        for b in &beats {
            ids.push(b.lease.task.0);
            attempts.push(i32::try_from(b.lease.attempt).unwrap_or(i32::MAX));
            tokens.push(b.lease.token.to_string());
            progress.push(b.progress.as_ref().map(json).transpose()?);
        }
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let rows = client
            .query(
                &prepare(
                    client,
                    stmts,
                    "UPDATE tasks t SET lease_expires_at = LEAST($1, t.deadline),
                                progress = COALESCE(b.progress, t.progress)
                         FROM (SELECT DISTINCT ON (id) * FROM
                                   unnest($2::BIGINT[], $3::INTEGER[], $4::TEXT[], $5::TEXT[])
                                   WITH ORDINALITY AS b(id, attempt, token, progress, n)
                               ORDER BY id, n DESC) b
                         WHERE t.id = b.id AND t.attempt = b.attempt AND t.lease_token = b.token
                           AND t.state = 'running' AND t.lease_expires_at > $6
                         RETURNING t.id, t.attempt, t.lease_token, t.job_id, t.lease_expires_at",
                )
                .await?,
                &[&expires, &ids, &attempts, &tokens, &progress, &now],
            )
            .await
            .pg()?;
        let mut extended: HashMap<(i64, i32, String), (String, i64)> = HashMap::new();
        for r in &rows {
            extended.insert((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4)));
        }
        let job_ids: Vec<String> = extended.values().map(|(j, _)| j.clone()).collect();
        let mut states: HashMap<String, String> = HashMap::new();
        if !job_ids.is_empty() {
            for r in client
                .query(
                    &prepare(
                        client,
                        stmts,
                        "SELECT id, state FROM jobs WHERE id = ANY($1)",
                    )
                    .await?,
                    &[&job_ids],
                )
                .await
                .pg()?
            {
                states.insert(r.get(0), r.get(1));
            }
        }
        let mut out = Vec::with_capacity(beats.len());
        for (i, b) in beats.iter().enumerate() {
            match extended.get(&(ids[i], attempts[i], tokens[i].clone())) {
                Some((job, until)) => out.push(Ok(HeartbeatAck {
                    expires_at: time(*until)?,
                    cancel_requested: matches!(
                        states.get(job).map(String::as_str),
                        Some("cancelled" | "failed")
                    ),
                })),
                None => out.push(Err(StoreError::LeaseLost {
                    task: b.lease.task,
                    attempt: b.lease.attempt,
                })),
            }
        }
        Ok(out)
    }

    async fn report(
        &self,
        reports: Vec<Report>,
    ) -> Result<Vec<Result<TaskState, StoreError>>, StoreError> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        again(|| self.report_once(&reports)).await
    }

    async fn rescue_expired(&self) -> Result<u64, StoreError> {
        let rescued = self.rescue().await?;
        // Jobs whose last report committed but whose reporter died before
        // settling them.
        let now = self.now();
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        client
            .execute(
                &prepare(
                    client,
                    stmts,
                    "UPDATE jobs j
                     SET state = CASE WHEN c.dead > 0 THEN 'failed' ELSE 'succeeded' END,
                         updated_at = $1, finished_at = $1
                     FROM (SELECT job_id,
                                  SUM(n) FILTER (WHERE state IN
                                      ('scheduled', 'queued', 'running', 'retrying')) AS open,
                                  SUM(n) FILTER (WHERE state = 'dead') AS dead
                           FROM job_counts
                           WHERE job_id IN (SELECT id FROM jobs
                                            WHERE state IN ('pending', 'running') AND released)
                           GROUP BY job_id) c
                     WHERE j.id = c.job_id AND COALESCE(c.open, 0) = 0
                       AND j.state IN ('pending', 'running') AND j.released",
                )
                .await?,
                &[&now],
            )
            .await
            .pg()?;
        Ok(rescued)
    }

    async fn requeue(&self, job: JobId, states: &[TaskState]) -> Result<(Job, u64), StoreError> {
        let states = requeue_states(states)?;
        let id = job.to_string();
        let (id, states) = (&id, &states);
        again(|| async move {
            let now = self.now();
            let mut conn = self.pool.get().await?;
            let (client, stmts) = conn.split();
            let tx = client.transaction().await.pg()?;
            let current = lock_job(&tx, stmts, id).await?;
            requeue_released(&current)?;
            let budget = i32::try_from(current.retry.max_attempts).unwrap_or(i32::MAX);
            let n = tx
                .execute(
                    &prepare(
                        &tx,
                        stmts,
                        "UPDATE tasks SET state = 'queued', available_at = $2,
                                max_attempts = attempt + $3, lease_token = NULL,
                                lease_expires_at = NULL, deadline = NULL, finished_at = NULL
                         WHERE job_id = $1 AND state = ANY($4)",
                    )
                    .await?,
                    &[id, &now, &budget, states],
                )
                .await
                .pg()?;
            if n > 0 {
                announce(&tx, stmts, &current.queue).await?;
                if current.state.is_terminal() {
                    tx.execute(
                        &prepare(
                            &tx,
                            stmts,
                            "UPDATE jobs SET state = 'running', error = NULL, updated_at = $2,
                                    finished_at = NULL
                             WHERE id = $1",
                        )
                        .await?,
                        &[id, &now],
                    )
                    .await
                    .pg()?;
                }
            }
            let out = require_job(&tx, stmts, id).await?;
            tx.commit().await.pg()?;
            Ok((out, n))
        })
        .await
    }

    async fn delete_ended(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let before = before.timestamp_millis();
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        // The jobs' tasks go first, a bounded chunk a statement, each chunk
        // only of jobs that are still ended and old.
        let candidates: Vec<String> = client
            .query(
                &prepare(
                    client,
                    stmts,
                    "SELECT id FROM jobs
                     WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < $1
                     ORDER BY finished_at, id LIMIT $2",
                )
                .await?,
                &[&before, &i64::from(limit)],
            )
            .await
            .pg()?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if candidates.is_empty() {
            return Ok(0);
        }
        loop {
            let gone: i64 = client
                .query_one(
                    &prepare(
                        client,
                        stmts,
                        "WITH gone AS (
                             DELETE FROM tasks WHERE id IN (
                                 SELECT t.id FROM tasks t JOIN jobs j ON j.id = t.job_id
                                 WHERE t.job_id = ANY($1)
                                   AND j.state IN ('succeeded', 'failed', 'cancelled')
                                   AND j.finished_at < $2
                                 LIMIT $3)
                             RETURNING id),
                         payloads AS (
                             DELETE FROM task_payloads WHERE task_id IN (SELECT id FROM gone)),
                         results AS (
                             DELETE FROM task_results WHERE task_id IN (SELECT id FROM gone))
                         SELECT count(*) FROM gone",
                    )
                    .await?,
                    &[&candidates, &before, &DELETE_CHUNK],
                )
                .await
                .pg()?
                .get(0);
            if gone < DELETE_CHUNK {
                break;
            }
        }
        let tx = client.transaction().await.pg()?;
        // Jobs another node is deleting (or changing) are skipped: every
        // node may run retention at once.

        let ids: Vec<String> = tx
            .query(
                &prepare(
                    &tx,
                    stmts,
                    "SELECT id FROM jobs
                     WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < $1
                     ORDER BY finished_at, id LIMIT $2
                     FOR UPDATE SKIP LOCKED",
                )
                .await?,
                &[&before, &i64::from(limit)],
            )
            .await
            .pg()?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if ids.is_empty() {
            tx.commit().await.pg()?;
            return Ok(0);
        }
        for sql in [
            "DELETE FROM task_payloads WHERE task_id IN
                 (SELECT id FROM tasks WHERE job_id = ANY($1))",
            "DELETE FROM task_results WHERE task_id IN
                 (SELECT id FROM tasks WHERE job_id = ANY($1))",
            "DELETE FROM tasks WHERE job_id = ANY($1)",
            "DELETE FROM job_counts WHERE job_id = ANY($1)",
            "DELETE FROM job_files WHERE job_id = ANY($1)",
            "DELETE FROM callbacks WHERE job_id = ANY($1)",
            "DELETE FROM jobs WHERE id = ANY($1)",
        ] {
            tx.execute(&prepare(&tx, stmts, sql).await?, &[&ids])
                .await
                .pg()?;
        }
        tx.commit().await.pg()?;
        Ok(ids.len() as u64)
    }

    async fn take_duty(
        &self,
        duty: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<DutyTerm>, StoreError> {
        let now = self.now();
        let until = now.saturating_add(millis(lease));
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        // One statement: a free or run-out duty changes hands (a new term),
        // its holder's goes on, anyone else's is left alone.
        let row = client
            .query_opt(
                &prepare(
                    client,
                    stmts,
                    "INSERT INTO duties AS d (name, holder, term, until) VALUES ($1, $2, 1, $4)
                     ON CONFLICT (name) DO UPDATE SET
                         term = CASE WHEN d.holder = excluded.holder AND d.until > $3
                                     THEN d.term ELSE d.term + 1 END,
                         holder = excluded.holder, until = excluded.until
                     WHERE d.until <= $3 OR d.holder = excluded.holder
                     RETURNING term, until",
                )
                .await?,
                &[&duty, &holder, &now, &until],
            )
            .await
            .pg()?;
        row.map(|r| {
            Ok(DutyTerm {
                duty: duty.to_owned(),
                holder: holder.to_owned(),
                term: to_u64(r.get(0)),
                until: time(r.get(1))?,
            })
        })
        .transpose()
    }

    async fn renew_duty(
        &self,
        term: &DutyTerm,
        lease: Duration,
    ) -> Result<Option<DutyTerm>, StoreError> {
        let now = self.now();
        let until = now.saturating_add(millis(lease));
        let conn = self.pool.get().await?;
        let changed = conn
            .client
            .execute(
                "UPDATE duties SET until = $5
                 WHERE name = $1 AND holder = $2 AND term = $3 AND until > $4",
                &[
                    &term.duty,
                    &term.holder,
                    &to_i64(term.term, "term")?,
                    &now,
                    &until,
                ],
            )
            .await
            .pg()?;
        Ok((changed == 1).then(|| DutyTerm {
            until: time(until).unwrap_or(term.until),
            ..term.clone()
        }))
    }

    async fn release_duty(&self, term: &DutyTerm) -> Result<(), StoreError> {
        let now = self.now();
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "UPDATE duties SET until = LEAST(until, $4)
                 WHERE name = $1 AND holder = $2 AND term = $3",
                &[&term.duty, &term.holder, &to_i64(term.term, "term")?, &now],
            )
            .await
            .pg()?;
        Ok(())
    }

    async fn wait_for_work(&self, _queues: &[String], timeout: Duration) {
        match &self.listener {
            Some(listener) => listener.wait(timeout).await,
            None => tokio::time::sleep(timeout).await,
        }
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
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let tx = client.transaction().await.pg()?;
        require_job_exists(&tx, stmts, &id).await?;
        insert_callbacks(&tx, stmts, &id, &callbacks).await?;
        tx.commit().await.pg()?;
        Ok(())
    }

    async fn list_callbacks(&self, job: JobId) -> Result<Vec<CallbackStatus>, StoreError> {
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let rows = client
            .query(
                &prepare(
                    client,
                    stmts,
                    "SELECT idx, url, events, delivered, delivered_at, attempting, attempts,
                            next_at, last_status, last_error, gave_up
                     FROM callbacks WHERE job_id = $1 ORDER BY idx",
                )
                .await?,
                &[&job.to_string()],
            )
            .await
            .pg()?;
        let state = |v: Option<String>| -> Result<Option<JobState>, StoreError> {
            v.map(|s| parse(&s, "job state")).transpose()
        };
        rows.iter()
            .map(|r| {
                let events: String = r.get(2);
                Ok(CallbackStatus {
                    index: to_u32(i64::from(r.get::<_, i32>(0))),
                    url: r.get(1),
                    events: from_json(&events, "callback events")?,
                    delivered: state(r.get(3))?,
                    delivered_at: opt_time(r.get(4))?,
                    attempting: state(r.get(5))?,
                    attempts: to_u32(i64::from(r.get::<_, i32>(6))),
                    next_at: opt_time(r.get(7))?,
                    last_status: r
                        .get::<_, Option<i32>>(8)
                        .and_then(|s| u16::try_from(s).ok()),
                    last_error: r.get(9),
                    gave_up: state(r.get(10))?,
                })
            })
            .collect()
    }

    async fn due_callbacks(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<CallbackDue>, StoreError> {
        let now = self.now();
        let until = now.saturating_add(millis(lease));
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let tx = client.transaction().await.pg()?;
        let rows = tx
            .query(
                &prepare(
                    &tx,
                    stmts,
                    "SELECT c.job_id, c.idx, c.url, j.state, c.attempting, c.attempts
                     FROM callbacks c JOIN jobs j ON j.id = c.job_id
                     WHERE NOT c.done AND j.state <> 'pending'
                       AND j.state IS DISTINCT FROM c.delivered
                       AND j.state IS DISTINCT FROM c.gave_up
                       AND (c.events = '[]' OR (c.events::JSONB) ? j.state)
                       AND (c.next_at IS NULL OR c.next_at <= $1
                            OR c.attempting IS DISTINCT FROM j.state)
                       AND (c.lease_until IS NULL OR c.lease_until <= $1)
                     ORDER BY c.job_id, c.idx
                     LIMIT $2
                     FOR UPDATE OF c SKIP LOCKED",
                )
                .await?,
                &[&now, &i64::from(limit)],
            )
            .await
            .pg()?;
        let take = prepare(
            &tx,
            stmts,
            "UPDATE callbacks SET lease_until = $3, attempting = $4, attempts = $5
             WHERE job_id = $1 AND idx = $2",
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let job: String = r.get(0);
            let idx: i32 = r.get(1);
            let state: String = r.get(3);
            let attempting: Option<String> = r.get(4);
            let attempts: i32 = r.get(5);
            let attempt = if attempting.as_deref() == Some(state.as_str()) {
                to_u32(i64::from(attempts)).saturating_add(1)
            } else {
                1
            };
            let attempt_col = i32::try_from(attempt).unwrap_or(i32::MAX);
            tx.execute(&take, &[&job, &idx, &until, &state, &attempt_col])
                .await
                .pg()?;
            out.push(CallbackDue {
                job: parse(&job, "job id")?,
                index: to_u32(i64::from(idx)),
                url: r.get(2),
                state: parse(&state, "job state")?,
                attempt,
            });
        }
        tx.commit().await.pg()?;
        Ok(out)
    }

    async fn record_callback(
        &self,
        due: &CallbackDue,
        outcome: CallbackOutcome,
    ) -> Result<(), StoreError> {
        let job = due.job.to_string();
        let idx = i32::try_from(due.index).unwrap_or(i32::MAX);
        let state = due.state.as_str();
        // A final state, delivered or given up, closes the callback.
        let done = due.state.is_terminal();
        let now = self.now();
        let conn = self.pool.get().await?;
        match outcome {
            CallbackOutcome::Delivered { status } => {
                conn.client
                    .execute(
                        "UPDATE callbacks SET delivered = $3, delivered_at = $4,
                                last_status = $5, last_error = NULL, next_at = NULL,
                                lease_until = NULL, done = $6
                         WHERE job_id = $1 AND idx = $2",
                        &[&job, &idx, &state, &now, &i32::from(status), &done],
                    )
                    .await
            }
            CallbackOutcome::Failed {
                status,
                error,
                retry_at: Some(at),
            } => {
                conn.client
                    .execute(
                        "UPDATE callbacks SET last_status = $3, last_error = $4, next_at = $5,
                                lease_until = NULL
                         WHERE job_id = $1 AND idx = $2",
                        &[
                            &job,
                            &idx,
                            &status.map(i32::from),
                            &error,
                            &at.timestamp_millis(),
                        ],
                    )
                    .await
            }
            CallbackOutcome::Failed {
                status,
                error,
                retry_at: None,
            } => {
                conn.client
                    .execute(
                        "UPDATE callbacks SET gave_up = $3, last_status = $4, last_error = $5,
                                next_at = NULL, lease_until = NULL, done = $6
                         WHERE job_id = $1 AND idx = $2",
                        &[&job, &idx, &state, &status.map(i32::from), &error, &done],
                    )
                    .await
            }
        }
        .pg()?;
        Ok(())
    }

    async fn task_counts(&self) -> Result<BTreeMap<String, TaskCounts>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT queue, state, SUM(n)::BIGINT FROM job_counts
                 GROUP BY queue, state HAVING SUM(n) <> 0",
                &[],
            )
            .await
            .pg()?;
        let mut out: BTreeMap<String, TaskCounts> = BTreeMap::new();
        for r in rows {
            let state: String = r.get(1);
            out.entry(r.get(0))
                .or_default()
                .add(parse(&state, "task state")?, to_u64(r.get(2)));
        }
        Ok(out)
    }
}

impl PgStore {
    /// Ends a job that has not ended as `end` (failed or cancelled), with
    /// its error and ingest report when given, and cancels its tasks in
    /// `tasks`; an ended job is returned as it is.
    async fn end_job(
        &self,
        job: JobId,
        end: JobState,
        error: Option<&str>,
        ingest: Option<&str>,
        tasks: &[&str],
    ) -> Result<Job, StoreError> {
        let id = job.to_string();
        let id = &id;
        again(|| async move {
            let now = self.now();
            let mut conn = self.pool.get().await?;
            let (client, stmts) = conn.split();
            let tx = client.transaction().await.pg()?;
            let current = lock_job(&tx, stmts, id).await?;
            if current.state.is_terminal() {
                tx.commit().await.pg()?;
                return Ok(current);
            }
            tx.execute(
                &prepare(
                    &tx,
                    stmts,
                    "UPDATE jobs SET state = $2, error = COALESCE($3, error),
                            ingest = COALESCE($4, ingest), updated_at = $5, finished_at = $5
                     WHERE id = $1",
                )
                .await?,
                &[id, &end.as_str(), &error, &ingest, &now],
            )
            .await
            .pg()?;
            cancel_tasks(&tx, stmts, id, tasks, now).await?;
            let out = require_job(&tx, stmts, id).await?;
            tx.commit().await.pg()?;
            Ok(out)
        })
        .await
    }

    /// One attempt at [`Store::report`], in one transaction: the reports'
    /// jobs are locked first, then their tasks are fenced and ended, and the
    /// jobs settled.
    async fn report_once(
        &self,
        reports: &[Report],
    ) -> Result<Vec<Result<TaskState, StoreError>>, StoreError> {
        let now = self.now();
        let mut conn = self.pool.get().await?;
        let (client, stmts) = conn.split();
        let tx = client.transaction().await.pg()?;
        let ids: Vec<i64> = reports.iter().map(|r| r.lease.task.0).collect();
        let owners = tx
            .query(
                &prepare(
                    &tx,
                    stmts,
                    "SELECT DISTINCT job_id FROM tasks WHERE id = ANY($1)",
                )
                .await?,
                &[&ids],
            )
            .await
            .pg()?;
        let owners: Vec<String> = owners.iter().map(|r| r.get(0)).collect();
        let mut jobs = lock_jobs(&tx, stmts, &owners, JobLock::Shared).await?;
        let attempts: Vec<i32> = reports
            .iter()
            .map(|r| i32::try_from(r.lease.attempt).unwrap_or(i32::MAX))
            .collect();
        let tokens: Vec<String> = reports.iter().map(|r| r.lease.token.to_string()).collect();
        let held = tx
            .query(
                &prepare(
                    &tx,
                    stmts,
                    "SELECT t.id, t.attempt, t.lease_token, t.job_id, t.max_attempts
                     FROM tasks t
                     WHERE (t.id, t.attempt, t.lease_token) IN
                           (SELECT * FROM unnest($1::BIGINT[], $2::INTEGER[], $3::TEXT[]))
                       AND t.state = 'running' AND t.lease_expires_at > $4
                     ORDER BY t.id FOR UPDATE",
                )
                .await?,
                &[&ids, &attempts, &tokens, &now],
            )
            .await
            .pg()?;
        let mut held: HashMap<(i64, i32, String), (String, i32)> = held
            .iter()
            .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4))))
            .collect();
        let mut out = Vec::with_capacity(reports.len());
        let mut succeeded: Vec<i64> = Vec::new();
        let mut results: Vec<&[u8]> = Vec::new();
        let mut failures = Vec::new();
        let mut failed_at = Vec::new();
        let mut touched = HashSet::new();
        for (i, report) in reports.iter().enumerate() {
            // A lease reported twice in one call ends once; the second is
            // stale, as it would be in a later call.
            let Some((job, max_attempts)) = held.remove(&(ids[i], attempts[i], tokens[i].clone()))
            else {
                out.push(Err(StoreError::LeaseLost {
                    task: report.lease.task,
                    attempt: report.lease.attempt,
                }));
                continue;
            };
            touched.insert(job.clone());
            match &report.outcome {
                Outcome::Success(result) => {
                    succeeded.push(ids[i]);
                    results.push(result);
                    out.push(Ok(TaskState::Succeeded));
                }
                Outcome::Failure { error, retryable } => {
                    failed_at.push(out.len());
                    out.push(Ok(TaskState::Dead));
                    failures.push(Failure {
                        task: ids[i],
                        job,
                        attempt: report.lease.attempt,
                        max_attempts: to_u32(i64::from(max_attempts)),
                        retryable: *retryable,
                        error: error.clone(),
                    });
                }
            }
        }
        if !succeeded.is_empty() {
            tx.execute(
                &prepare(
                    &tx,
                    stmts,
                    "UPDATE tasks SET state = 'succeeded', error = NULL, lease_token = NULL,
                            lease_expires_at = NULL, finished_at = $2
                     WHERE id = ANY($1)",
                )
                .await?,
                &[&succeeded, &now],
            )
            .await
            .pg()?;
            tx.execute(
                &prepare(
                    &tx,
                    stmts,
                    "INSERT INTO task_results (task_id, result)
                     SELECT * FROM unnest($1::BIGINT[], $2::BYTEA[])
                     ON CONFLICT (task_id) DO UPDATE SET result = excluded.result",
                )
                .await?,
                &[&succeeded, &results],
            )
            .await
            .pg()?;
        }
        let states = fail_attempts(&tx, stmts, &mut jobs, &failures, now).await?;
        for (at, state) in failed_at.into_iter().zip(states) {
            out[at] = Ok(state);
        }
        tx.commit().await.pg()?;
        // Settled after the commit (see `settle_job`); were this process to
        // die first, the rescue sweep settles the job.
        let mut touched: Vec<String> = touched.into_iter().collect();
        touched.sort_unstable();
        for job in &touched {
            settle_job(client, stmts, job, now).await?;
        }
        Ok(out)
    }
}

/// The store's schema name in a fresh test database (see [`PgStore::connect`]'s
/// `schema` option): tests pass it to keep each run apart.
#[doc(hidden)]
pub fn unique_schema(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
