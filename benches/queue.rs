//! Queue throughput of Rota's stores: tasks claimed and completed per second,
//! and tasks enqueued per second against a raw PostgreSQL `COPY` of the same
//! rows.
//!
//! ```text
//! rota-bench-queue drain   --store URL [--tasks N] [--workers K] [--batch B]
//! rota-bench-queue enqueue --store URL [--tasks N]
//! ```
//!
//! `URL` is a `postgres://…` URL (the store's parameters, such as
//! `pool_size`, are kept; `schema` is replaced) or the path of a SQLite file
//! that does not exist yet. Every run works in a fresh store: a new schema
//! (`rota_bench_…`) on PostgreSQL, the new file on SQLite, removed at the end.
//!
//! - `drain` adds `N` (default 200 000) one-row tasks to one held job in
//!   calls of 1 000 and releases it (untimed), then runs `K` (default 8)
//!   concurrent loops, each claiming up to `B` (default 64) tasks and
//!   reporting all of them as succeeded in one call, until a claim finds
//!   nothing. It prints tasks/s and checks through the job's counts that
//!   every task succeeded.
//! - `enqueue` times the same: creating a held job, adding `N` tasks in
//!   calls of 1 000 and releasing the job. On PostgreSQL it then times a
//!   binary `COPY` of the same rows (the tasks as the store writes them for a
//!   held job, and their payloads) into two scratch tables shaped like the
//!   store's `tasks` and `task_payloads` (same columns, indexes and fill
//!   factor; no triggers), in one transaction, and prints the store's rate
//!   as a fraction of `COPY`'s.
//!
//! The last line printed is a JSON object with the figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rota_core::{
    ClaimRequest, JobId, JobState, NewJob, NewTask, Outcome, PayloadEncoding, Report, RetryPolicy,
    Store, TaskState, Timing,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

/// Tasks one `add_tasks` call (and one `COPY` buffer flush) carries.
const CHUNK: usize = 1_000;

/// The queue the benchmark's job lives in.
const QUEUE: &str = "bench";

/// The spec name of the benchmark's job.
const SPEC: &str = "bench";

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Drain,
    Enqueue,
}

/// The command line.
#[derive(Debug)]
struct Args {
    mode: Mode,
    store: String,
    tasks: usize,
    workers: usize,
    batch: u32,
}

const USAGE: &str =
    "usage: rota-bench-queue drain|enqueue --store URL [--tasks N] [--workers K] [--batch B]";

fn parse_args() -> Result<Args, String> {
    let mut mode = None;
    let mut store = None;
    let mut tasks = 200_000usize;
    let mut workers = 8usize;
    let mut batch = 64u32;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "drain" => mode = Some(Mode::Drain),
            "enqueue" => mode = Some(Mode::Enqueue),
            "--store" => store = Some(value("--store")?),
            "--tasks" => tasks = number(&value("--tasks")?, "--tasks")?,
            "--workers" => workers = number(&value("--workers")?, "--workers")?,
            "--batch" => batch = number(&value("--batch")?, "--batch")?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
        }
    }
    let mode = mode.ok_or_else(|| format!("no mode given\n{USAGE}"))?;
    let store = store.ok_or_else(|| format!("no --store given\n{USAGE}"))?;
    if tasks == 0 || workers == 0 || batch == 0 {
        return Err("--tasks, --workers and --batch must be at least 1".to_owned());
    }
    Ok(Args {
        mode,
        store,
        tasks,
        workers,
        batch,
    })
}

fn number<T: std::str::FromStr>(text: &str, name: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name} needs a whole number, not '{text}'"))
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The store under test, and how to remove it afterwards.
enum Fresh {
    /// A PostgreSQL schema of its own.
    Postgres {
        url: String,
        config: Box<tokio_postgres::Config>,
        schema: String,
    },
    /// A SQLite file the benchmark created.
    Sqlite { path: PathBuf },
}

impl Fresh {
    fn new(store: &str) -> Result<Self, Error> {
        if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            let schema = rota_store::unique_schema("rota_bench");
            let (base, query) = store.split_once('?').unwrap_or((store, ""));
            let mut params: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("schema="))
                .collect();
            let schema_param = format!("schema={schema}");
            params.push(&schema_param);
            let url = format!("{base}?{}", params.join("&"));
            let (config, _) = rota_store::parse_url(&url)?;
            Ok(Self::Postgres {
                url,
                config: Box::new(config),
                schema,
            })
        } else {
            let path = PathBuf::from(store.strip_prefix("sqlite:").unwrap_or(store));
            if path.exists() {
                return Err(format!(
                    "{} exists: the benchmark makes a fresh SQLite store",
                    path.display()
                )
                .into());
            }
            Ok(Self::Sqlite { path })
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Postgres { url, .. } => url.clone(),
            Self::Sqlite { path } => path.display().to_string(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Postgres { .. } => "postgres",
            Self::Sqlite { .. } => "sqlite",
        }
    }

    /// A plain connection to the store's database, with the store's schema
    /// first on its search path.
    async fn client(&self) -> Result<Option<Client>, Error> {
        let Self::Postgres { config, schema, .. } = self else {
            return Ok(None);
        };
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection: {e}");
            }
        });
        client
            .batch_execute(&format!("SET search_path TO \"{schema}\""))
            .await?;
        Ok(Some(client))
    }

    async fn remove(&self) -> Result<(), Error> {
        match self {
            Self::Postgres { config, schema, .. } => {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await?;
            }
            Self::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm", "-journal"] {
                    let mut name = path.as_os_str().to_owned();
                    name.push(suffix);
                    remove_if_there(Path::new(&name), false)?;
                }
                let mut dir = path.as_os_str().to_owned();
                dir.push("-payloads");
                remove_if_there(Path::new(&dir), true)?;
            }
        }
        Ok(())
    }
}

fn remove_if_there(path: &Path, dir: bool) -> std::io::Result<()> {
    let done = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match done {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The `i`th task: a one-row JSON payload.
fn task(i: usize) -> NewTask {
    let payload = format!("[{{\"n\":{i}}}]").into_bytes();
    NewTask {
        key: key(i),
        payload,
        encoding: PayloadEncoding::Json,
        rows: 1,
    }
}

fn key(i: usize) -> String {
    format!("t{i:09}")
}

/// Creates a held job, adds `n` tasks to it in calls of [`CHUNK`] and
/// releases it. Returns the job and the seconds spent adding and releasing.
async fn enqueue(store: &dyn Store, n: usize) -> Result<(JobId, f64, f64), Error> {
    let (job, _) = store
        .create_job(NewJob {
            key: None,
            spec: SPEC.to_owned(),
            queue: QUEUE.to_owned(),
            params: serde_json::json!({}),
            retry: RetryPolicy::default(),
            hold: true,
            ingest: None,
            timing: Timing::default(),
        })
        .await?;
    let start = Instant::now();
    let mut added = 0;
    for from in (0..n).step_by(CHUNK) {
        let tasks = (from..n.min(from + CHUNK)).map(task).collect();
        added += store.add_tasks(job.id, tasks).await?;
    }
    let adding = start.elapsed().as_secs_f64();
    if added != n as u64 {
        return Err(format!("asked for {n} tasks, the store added {added}").into());
    }
    let start = Instant::now();
    store.release_job(job.id, None).await?;
    Ok((job.id, adding, start.elapsed().as_secs_f64()))
}

/// What one claim loop did.
#[derive(Default)]
struct LoopStats {
    claims: u64,
    claimed: u64,
    succeeded: u64,
    lost: u64,
    claim_time: Duration,
    report_time: Duration,
}

async fn claim_loop(
    store: Arc<dyn Store>,
    worker: usize,
    batch: u32,
) -> Result<LoopStats, rota_core::StoreError> {
    let mut stats = LoopStats::default();
    loop {
        let start = Instant::now();
        let leases = store
            .claim(ClaimRequest {
                queues: vec![QUEUE.to_owned()],
                worker: format!("bench-{worker}"),
                limit: batch,
                lease: Duration::from_secs(300),
                specs: Vec::new(),
                inline_max: None,
            })
            .await?;
        stats.claim_time += start.elapsed();
        stats.claims += 1;
        if leases.is_empty() {
            return Ok(stats);
        }
        stats.claimed += leases.len() as u64;
        let reports = leases
            .into_iter()
            .map(|l| Report {
                lease: l.lease,
                outcome: Outcome::Success(b"{}".to_vec()),
            })
            .collect();
        let start = Instant::now();
        for state in store.report(reports).await? {
            match state {
                Ok(TaskState::Succeeded) => stats.succeeded += 1,
                _ => stats.lost += 1,
            }
        }
        stats.report_time += start.elapsed();
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}

fn millis(d: Duration, calls: u64) -> f64 {
    d.as_secs_f64() * 1e3 / calls.max(1) as f64
}

async fn drain(store: Arc<dyn Store>, fresh: &Fresh, args: &Args) -> Result<bool, Error> {
    let (job, _, _) = enqueue(store.as_ref(), args.tasks).await?;
    let start = Instant::now();
    let loops: Vec<_> = (0..args.workers)
        .map(|w| tokio::spawn(claim_loop(Arc::clone(&store), w, args.batch)))
        .collect();
    let mut total = LoopStats::default();
    for handle in loops {
        let s = handle.await??;
        total.claims += s.claims;
        total.claimed += s.claimed;
        total.succeeded += s.succeeded;
        total.lost += s.lost;
        total.claim_time += s.claim_time;
        total.report_time += s.report_time;
    }
    let secs = start.elapsed().as_secs_f64();
    let reports = total.claims - args.workers as u64;
    let after = store
        .get_job(job)
        .await?
        .ok_or("the benchmark's job vanished")?;
    let ok = after.counts.succeeded == args.tasks as u64
        && after.counts.total == args.tasks as u64
        && after.state == JobState::Succeeded
        && total.lost == 0;
    let tasks_per_sec = rate(args.tasks, secs);
    println!(
        "rota {} drain: {} tasks in {secs:.2}s, {tasks_per_sec:.0} tasks/s \
         ({} loops, claim limit {}; {} claims averaging {:.2} ms, {reports} reports averaging {:.2} ms)",
        fresh.kind(),
        args.tasks,
        args.workers,
        args.batch,
        total.claims,
        millis(total.claim_time, total.claims),
        millis(total.report_time, reports),
    );
    println!(
        "check: job {} is {}, {} of {} tasks succeeded, {} reports lost their lease: {}",
        job,
        after.state,
        after.counts.succeeded,
        after.counts.total,
        total.lost,
        if ok { "ok" } else { "FAILED" }
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": "drain",
            "store": fresh.kind(),
            "tasks": args.tasks,
            "workers": args.workers,
            "batch": args.batch,
            "seconds": secs,
            "tasks_per_sec": tasks_per_sec,
            "claims": total.claims,
            "claim_ms": millis(total.claim_time, total.claims),
            "report_ms": millis(total.report_time, reports),
            "succeeded": after.counts.succeeded,
            "ok": ok,
        })
    );
    Ok(ok)
}

/// The scratch tables `COPY` writes to: the store's `tasks` and
/// `task_payloads`, their columns, defaults, identity, indexes and storage,
/// without the triggers.
const SCRATCH: &str = "
CREATE TABLE copy_tasks (LIKE tasks INCLUDING ALL) WITH (fillfactor = 70);
CREATE TABLE copy_task_payloads (LIKE task_payloads INCLUDING ALL);
";

/// Writes `n` tasks of one held job and their payloads with binary `COPY`,
/// in one transaction, as the store writes them; returns the seconds taken.
async fn copy_floor(client: &mut Client, n: usize) -> Result<f64, Error> {
    client.batch_execute(SCRATCH).await?;
    let job = JobId::new().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let max_attempts = i32::try_from(RetryPolicy::default().max_attempts)?;
    let start = Instant::now();
    let tx = client.transaction().await?;
    let sink = tx
        .copy_in(
            "COPY copy_tasks (id, job_id, key, queue, spec, state, max_attempts, rows,
                              payload_bytes, encoding, priority, timeout_ms, available_at,
                              created_at)
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::INT4,
            Type::INT8,
            Type::INT8,
            Type::INT8,
        ],
    );
    let mut writer = std::pin::pin!(writer);
    let none: Option<i64> = None;
    let state = TaskState::Scheduled.as_str();
    for i in 0..n {
        let t = task(i);
        let id = i64::try_from(i + 1)?;
        let bytes = i64::try_from(t.payload.len())?;
        let encoding = t.encoding.as_str();
        let row: [&(dyn ToSql + Sync); 14] = [
            &id,
            &job,
            &t.key,
            &QUEUE,
            &SPEC,
            &state,
            &max_attempts,
            &1i64,
            &bytes,
            &encoding,
            &0i32,
            &none,
            &none,
            &now,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    let sink = tx
        .copy_in("COPY copy_task_payloads (task_id, codec, data) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT2, Type::BYTEA]);
    let mut writer = std::pin::pin!(writer);
    for i in 0..n {
        let id = i64::try_from(i + 1)?;
        let data = task(i).payload;
        let row: [&(dyn ToSql + Sync); 3] = [&id, &0i16, &data];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    tx.commit().await?;
    let secs = start.elapsed().as_secs_f64();
    let copied: i64 = client
        .query_one("SELECT count(*) FROM copy_tasks", &[])
        .await?
        .get(0);
    if copied != i64::try_from(n)? {
        return Err(format!("COPY wrote {copied} rows, not {n}").into());
    }
    Ok(secs)
}

async fn enqueue_mode(store: Arc<dyn Store>, fresh: &Fresh, args: &Args) -> Result<bool, Error> {
    let (job, adding, releasing) = enqueue(store.as_ref(), args.tasks).await?;
    let total = adding + releasing;
    let store_rate = rate(args.tasks, total);
    let after = store
        .get_job(job)
        .await?
        .ok_or("the benchmark's job vanished")?;
    let ok = after.counts.queued == args.tasks as u64;
    println!(
        "rota {} enqueue: {} tasks in {total:.2}s ({adding:.2}s adding in calls of {CHUNK}, \
         {releasing:.2}s releasing), {store_rate:.0} tasks/s (adding alone {:.0} tasks/s); \
         {} queued: {}",
        fresh.kind(),
        args.tasks,
        rate(args.tasks, adding),
        after.counts.queued,
        if ok { "ok" } else { "FAILED" }
    );
    let mut out = serde_json::json!({
        "mode": "enqueue",
        "store": fresh.kind(),
        "tasks": args.tasks,
        "seconds": total,
        "add_seconds": adding,
        "release_seconds": releasing,
        "tasks_per_sec": store_rate,
        "add_tasks_per_sec": rate(args.tasks, adding),
        "ok": ok,
    });
    if let Some(mut client) = fresh.client().await? {
        let copy = copy_floor(&mut client, args.tasks).await?;
        let copy_rate = rate(args.tasks, copy);
        println!(
            "COPY (binary, tasks and payloads, one transaction): {} rows in {copy:.2}s, \
             {copy_rate:.0} rows/s; store / COPY = {:.3} (adding alone {:.3})",
            args.tasks,
            store_rate / copy_rate,
            rate(args.tasks, adding) / copy_rate,
        );
        out["copy_seconds"] = copy.into();
        out["copy_rows_per_sec"] = copy_rate.into();
        out["ratio_to_copy"] = (store_rate / copy_rate).into();
        out["add_ratio_to_copy"] = (rate(args.tasks, adding) / copy_rate).into();
    }
    println!("{out}");
    Ok(ok)
}

async fn run(args: &Args, fresh: &Fresh) -> Result<bool, Error> {
    let store = rota_store::open_store(&fresh.url()).await?;
    match args.mode {
        Mode::Drain => drain(store, fresh, args).await,
        Mode::Enqueue => enqueue_mode(store, fresh, args).await,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let fresh = match Fresh::new(&args.store) {
        Ok(fresh) => fresh,
        Err(e) => {
            eprintln!("rota-bench-queue: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = run(&args, &fresh).await;
    if let Err(e) = fresh.remove().await {
        eprintln!("rota-bench-queue: removing the store: {e}");
    }
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rota-bench-queue: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
