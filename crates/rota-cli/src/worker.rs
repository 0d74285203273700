//! `rota worker`: claims tasks and runs a command for each.
//!
//! The payload goes to the command's stdin; task metadata goes in `ROTA_*`
//! environment variables; stdout becomes the result; exit status 0 is success
//! and anything else a retryable failure. While the command runs the lease is
//! kept alive by heartbeats; if the lease is lost (it expired and the task went
//! to another worker, or the job was cancelled) the command is killed.
//!
//! Each command runs in a process group of its own, and every kill is of the
//! whole group (SIGTERM, then SIGKILL after `--kill-grace`), so what `sh -c`
//! started goes too. When a command exits, what it left running in its group
//! is killed. A small guard process (`rota worker-guard`, in a group of its
//! own) is told each command's group; when the worker dies, however it dies,
//! the guard's input ends and it kills the groups the worker still held.
//! A process that leaves its group (`setsid`) is beyond both.
//!
//! Heartbeats for every task in hand go as one call, every third of the
//! lease, over a store connection of their own: no other call of this
//! process (a claim or a report waiting on the database) can delay them.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use rota_core::{ClaimRequest, Heartbeat, Lease, Outcome, Report, Store, StoreError, TaskId};
use rustix::process::{Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::units::parse_duration;

/// Most bytes of stdout kept as a result; more fails the attempt.
const MAX_RESULT_BYTES: usize = 16 << 20;
/// Bytes of stderr kept (the end of it) as a failure's error.
const STDERR_TAIL: usize = 4 << 10;

/// Arguments of `rota worker`.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The command run for each task, by `sh -c`.
    #[arg(long)]
    exec: String,
    /// Queue to claim from; repeatable.
    #[arg(long = "queue", default_value = "default")]
    queues: Vec<String>,
    /// Tasks run at once.
    #[arg(long, default_value = "1")]
    concurrency: u32,
    /// How long a claim lasts without a heartbeat; heartbeats are sent every third of it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    /// How long to wait between claims when the queue is empty (a
    /// PostgreSQL store wakes the worker sooner when work is added).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    poll: Duration,
    /// Exit after being idle (nothing claimable, nothing running) this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_exit: Option<Duration>,
    /// This worker's name, recorded on the tasks it claims (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// How long a command killed (lease lost, job cancelled, worker gone) has
    /// between SIGTERM and SIGKILL to its process group.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    kill_grace: Duration,
}

fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into());
    format!("{}-{}", host.trim(), std::process::id())
}

/// Runs the worker: `store` for claims and reports, `beats` (a connection
/// of its own to the same store) for heartbeats.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    beats: Arc<dyn Store>,
    args: WorkerArgs,
) -> anyhow::Result<ExitCode> {
    let name = args.name.clone().unwrap_or_else(worker_name);
    let concurrency = args.concurrency.max(1);
    let args = Arc::new(args);
    let guard = Arc::new(Guard::start(args.kill_grace));
    let held = Held::default();
    let heartbeats = tokio::spawn(heartbeat_loop(beats, held.clone(), args.lease));
    tracing::info!(worker = %name, queues = ?args.queues, concurrency, "worker started");
    let mut running: JoinSet<()> = JoinSet::new();
    let mut idle_since = Instant::now();
    let mut stopping = false;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let code = loop {
        let free = concurrency.saturating_sub(u32::try_from(running.len()).unwrap_or(u32::MAX));
        let mut claimed = 0;
        if free > 0 && !stopping {
            let leases = match store
                .claim(ClaimRequest {
                    queues: args.queues.clone(),
                    worker: name.clone(),
                    limit: free,
                    lease: args.lease,
                    specs: Vec::new(),
                    inline_max: None,
                })
                .await
            {
                Ok(l) => l,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "claim failed; will retry");
                    Vec::new()
                }
                Err(e) => {
                    heartbeats.abort();
                    return Err(anyhow::Error::new(e).context("cannot claim tasks"));
                }
            };
            claimed = leases.len();
            for lease in leases {
                tracing::info!(task = %lease.lease.task, key = %lease.key, attempt = lease.lease.attempt, "claimed");
                let beat = held.add(&lease);
                running.spawn(run_task(
                    store.clone(),
                    args.clone(),
                    guard.clone(),
                    held.clone(),
                    lease,
                    beat,
                ));
            }
        }
        if running.is_empty() {
            if stopping {
                break ExitCode::SUCCESS;
            }
            if claimed == 0 && args.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                tracing::info!("idle; exiting");
                break ExitCode::SUCCESS;
            }
        } else {
            idle_since = Instant::now();
        }
        if claimed > 0 {
            continue;
        }
        tokio::select! {
            Some(_) = running.join_next(), if !running.is_empty() => {
                if running.is_empty() { idle_since = Instant::now(); }
            }
            // The store may wake it earlier (PostgreSQL: another node
            // added work).
            () = store.wait_for_work(&args.queues, args.poll), if free > 0 && !stopping => {}
            () = &mut shutdown => {
                if stopping {
                    // A second signal: stop the commands too. Their tasks
                    // run again once their leases expire.
                    tracing::warn!(running = running.len(), "stopping now: killing the running commands");
                    running.shutdown().await;
                    break ExitCode::FAILURE;
                }
                tracing::info!(running = running.len(), "stopping: no new claims; waiting for running tasks (signal again to kill them)");
                stopping = true;
                shutdown.set(shutdown_signal());
            }
        }
    };
    heartbeats.abort();
    Ok(code)
}

/// The interval between heartbeats for a lease of `lease`: a third of it,
/// so that two heartbeats in a row can be late before the lease runs out.
pub(crate) fn beat_interval(lease: Duration) -> Duration {
    (lease / 3).max(Duration::from_millis(50))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// What the heartbeats said of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Beat {
    /// Held (until the time the last heartbeat was told).
    Keep,
    /// Lost: the command must stop, and nothing may be reported.
    Lost,
    /// The job was cancelled (or failed): the command must stop.
    Cancelled,
}

/// One lease in hand, as the heartbeat loop sees it.
struct HeldLease {
    lease: rota_core::LeaseRef,
    /// When it runs out, as the store last said.
    expires_at: DateTime<Utc>,
    /// Tells the task what the heartbeats said.
    beat: watch::Sender<Beat>,
}

/// The leases this worker holds, heartbeated together.
#[derive(Clone, Default)]
struct Held(Arc<Mutex<HashMap<(TaskId, u32), HeldLease>>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TaskId, u32), HeldLease>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts heartbeating `lease`; the receiver hears what they say.
    fn add(&self, lease: &Lease) -> watch::Receiver<Beat> {
        let (beat, rx) = watch::channel(Beat::Keep);
        self.lock().insert(
            (lease.lease.task, lease.lease.attempt),
            HeldLease {
                lease: lease.lease,
                expires_at: lease.expires_at,
                beat,
            },
        );
        rx
    }

    /// When `lease` runs out, as the store last said; `None` once removed.
    fn expires_at(&self, lease: &rota_core::LeaseRef) -> Option<DateTime<Utc>> {
        self.lock()
            .get(&(lease.task, lease.attempt))
            .map(|h| h.expires_at)
    }

    /// Stops heartbeating `lease`; returns when it runs out, as last told.
    fn remove(&self, lease: &rota_core::LeaseRef) -> Option<DateTime<Utc>> {
        self.lock()
            .remove(&(lease.task, lease.attempt))
            .map(|h| h.expires_at)
    }
}

/// Heartbeats every lease in `held`, in one call every [`beat_interval`].
async fn heartbeat_loop(store: Arc<dyn Store>, held: Held, lease: Duration) {
    let every = beat_interval(lease);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // A late heartbeat is sent at once, and the next one a full interval later.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leases: Vec<rota_core::LeaseRef> = held.lock().values().map(|h| h.lease).collect();
        if leases.is_empty() {
            continue;
        }
        let beats = leases.iter().map(|l| Heartbeat::from(*l)).collect();
        let acks = match store.heartbeat(beats, lease).await {
            Ok(acks) => acks,
            Err(e) => {
                tracing::warn!(tasks = leases.len(), error = %e, "heartbeat failed; will retry");
                continue;
            }
        };
        let mut held = held.lock();
        for (lease, ack) in leases.iter().zip(acks) {
            let Some(h) = held.get_mut(&(lease.task, lease.attempt)) else {
                continue; // ended meanwhile
            };
            let said = match ack {
                Ok(ack) => {
                    h.expires_at = ack.expires_at;
                    if ack.cancel_requested {
                        Beat::Cancelled
                    } else {
                        Beat::Keep
                    }
                }
                Err(StoreError::LeaseLost { .. }) => Beat::Lost,
                Err(e) => {
                    tracing::warn!(task = %lease.task, error = %e, "heartbeat failed; will retry");
                    Beat::Keep
                }
            };
            if said != Beat::Keep {
                h.beat.send_replace(said);
            }
        }
    }
}

/// How the command ended.
enum Ended {
    Done(Outcome),
    /// The lease is gone; nothing may be reported.
    LeaseLost,
}

async fn run_task(
    store: Arc<dyn Store>,
    args: Arc<WorkerArgs>,
    guard: Arc<Guard>,
    held: Held,
    lease: Lease,
    beat: watch::Receiver<Beat>,
) {
    let task = lease.lease.task;
    let ended = match execute(&args, &guard, &lease, beat).await {
        Ok(ended) => ended,
        Err(e) => Ended::Done(Outcome::Failure {
            error: format!("cannot run the command: {e}"),
            retryable: true,
        }),
    };
    let outcome = match ended {
        Ended::Done(o) => o,
        Ended::LeaseLost => {
            held.remove(&lease.lease);
            tracing::warn!(%task, "lease lost: the command was stopped and its result discarded");
            return;
        }
    };
    let ok = matches!(outcome, Outcome::Success(_));
    let report = Report {
        lease: lease.lease,
        outcome,
    };
    // Heartbeats go on until the report is in. A store that is briefly
    // away (a database restarting, a connection cut) is asked again while
    // the lease lasts: the work is done, and doing it again costs more.
    let mut pause = std::time::Duration::from_millis(100);
    let reported = loop {
        match store.report(vec![report.clone()]).await {
            Err(e)
                if e.is_retryable()
                    && held
                        .expires_at(&lease.lease)
                        .is_some_and(|t| t > Utc::now()) =>
            {
                tracing::warn!(%task, error = %e, "report failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            other => break other,
        }
    };
    let expires_at = held.remove(&lease.lease).unwrap_or(lease.expires_at);
    match reported {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(state)) => tracing::info!(%task, %state, succeeded = ok, "reported"),
            Some(Err(StoreError::LeaseLost { .. })) => {
                let why = refusal(expires_at, Utc::now());
                tracing::warn!(%task, "completion rejected: {why}");
            }
            Some(Err(e)) => tracing::error!(%task, error = %e, "report failed"),
            None => tracing::error!(%task, "report returned nothing"),
        },
        Err(e) => {
            tracing::error!(%task, error = %e, "report failed; the lease will expire and the task be retried")
        }
    }
}

/// Why a completion was refused, from when the lease was last known to run
/// out (`expires_at`) and the time of the refusal.
fn refusal(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if expires_at <= now {
        let late = (now - expires_at).num_milliseconds();
        format!(
            "the lease expired at {} ({late} ms before the refusal) without a heartbeat \
             extending it; the task runs again, on this worker or another",
            expires_at.format("%H:%M:%S%.3f")
        )
    } else {
        "the task is no longer this lease's: its job was cancelled or ended, or another \
         worker reclaimed it"
            .to_owned()
    }
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    cap: usize,
    keep_tail: bool,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut over = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((out, over));
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > cap {
            over = true;
            if keep_tail {
                out.drain(..out.len() - cap);
            } else {
                out.truncate(cap);
            }
        }
    }
}

async fn execute(
    args: &WorkerArgs,
    guard: &Arc<Guard>,
    lease: &Lease,
    mut beat: watch::Receiver<Beat>,
) -> std::io::Result<Ended> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&args.exec)
        .env("ROTA_JOB_ID", lease.job_id.to_string())
        .env("ROTA_TASK_ID", lease.lease.task.to_string())
        .env("ROTA_TASK_KEY", &lease.key)
        .env("ROTA_ATTEMPT", lease.lease.attempt.to_string())
        .env("ROTA_MAX_ATTEMPTS", lease.max_attempts.to_string())
        .env("ROTA_SPEC", &lease.spec)
        .env("ROTA_QUEUE", &lease.queue)
        .env("ROTA_PARAMS", lease.params.to_string())
        .env("ROTA_ROWS", lease.rows.to_string())
        .env("ROTA_PAYLOAD_ENCODING", lease.encoding.as_str())
        .env("ROTA_PAYLOAD_TYPE", lease.encoding.media_type())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    // Whatever way this ends (the task aborted with the worker included),
    // the group dies with it.
    let group = Group::new(&child, guard.clone());
    let mut stdin = child.stdin.take();
    let payload = lease.payload.clone();
    let feed = async move {
        if let Some(stdin) = &mut stdin {
            // A command that does not read its input is not an error.
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        }
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = async move {
        match stdout {
            Some(s) => read_capped(s, MAX_RESULT_BYTES, false).await,
            None => Ok((Vec::new(), false)),
        }
    };
    let err = async move {
        match stderr {
            Some(s) => read_capped(s, STDERR_TAIL, true).await,
            None => Ok((Vec::new(), false)),
        }
    };
    let io = async { tokio::join!(feed, out, err) };
    tokio::pin!(io);
    let ((), out, err) = loop {
        tokio::select! {
            r = &mut io => break r,
            Ok(()) = beat.changed() => {
                let said = *beat.borrow_and_update();
                if said != Beat::Keep {
                    return Ok(stopped(said, &group, &mut child, args.kill_grace).await);
                }
            }
        }
    };
    // The pipes are closed; wait for the exit status, still heartbeating.
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            Ok(()) = beat.changed() => {
                let said = *beat.borrow_and_update();
                if said != Beat::Keep {
                    return Ok(stopped(said, &group, &mut child, args.kill_grace).await);
                }
            }
        }
    };
    drop(group); // what the command left running goes now
    let (stdout, too_long) = out?;
    let (stderr, _) = err?;
    if too_long {
        return Ok(Ended::Done(Outcome::Failure {
            error: format!("the command wrote more than {MAX_RESULT_BYTES} bytes to stdout"),
            retryable: false,
        }));
    }
    if status.success() {
        return Ok(Ended::Done(Outcome::Success(stdout)));
    }
    let how = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_owned(),
    };
    let tail = String::from_utf8_lossy(&stderr);
    let tail = tail.trim();
    Ok(Ended::Done(Outcome::Failure {
        error: if tail.is_empty() {
            format!("the command failed: {how}")
        } else {
            format!("the command failed: {how}: {tail}")
        },
        retryable: true,
    }))
}

/// Stops the command because the heartbeats said `said`.
async fn stopped(
    said: Beat,
    group: &Group,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> Ended {
    group.stop(child, grace).await;
    match said {
        Beat::Cancelled => Ended::Done(Outcome::Failure {
            error: "the job was cancelled".into(),
            retryable: false,
        }),
        Beat::Keep | Beat::Lost => Ended::LeaseLost,
    }
}

/// A command's process group: killed whole when this is dropped, and
/// known to the guard meanwhile.
struct Group {
    pgid: Option<Pid>,
    guard: Arc<Guard>,
}

impl Group {
    fn new(child: &tokio::process::Child, guard: Arc<Guard>) -> Self {
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        if let Some(pgid) = pgid {
            guard.watch(pgid);
        }
        Self { pgid, guard }
    }

    /// SIGTERM to the group, `grace` for its leader to exit, then SIGKILL to
    /// the group (whoever is still in it).
    async fn stop(&self, child: &mut tokio::process::Child, grace: Duration) {
        if let Some(pgid) = self.pgid {
            let _ = rustix::process::kill_process_group(pgid, Signal::TERM);
            let _ = tokio::time::timeout(grace, child.wait()).await;
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
        }
        let _ = child.wait().await;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // Gone already when the command and all it started ended.
            let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
            self.guard.forget(pgid);
        }
    }
}

/// The guard process: kills the process groups of the commands still
/// running when the worker dies. It reads `+PGID` and `-PGID` lines on its
/// stdin; when its stdin ends (the worker exited, or was killed), it sends
/// SIGTERM to each group it was told of and not told to forget, then
/// SIGKILL after the grace.
struct Guard {
    stdin: Mutex<Option<std::process::ChildStdin>>,
}

impl Guard {
    /// Starts the guard (`rota worker-guard`), in a process group of its own
    /// so that a terminal's signals to the worker's group do not reach it.
    /// Without it (the binary cannot be run again), commands are still
    /// killed whenever the worker lives to do it.
    fn start(grace: Duration) -> Self {
        use std::os::unix::process::CommandExt;
        let started = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .arg("worker-guard")
                .arg("--kill-grace")
                .arg(format!("{}ms", grace.as_millis()))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .process_group(0)
                .spawn()
        });
        match started {
            Ok(mut child) => Self {
                stdin: Mutex::new(child.stdin.take()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the guard: commands outlive a worker that dies");
                Self {
                    stdin: Mutex::new(None),
                }
            }
        }
    }

    fn tell(&self, line: &str) {
        let mut stdin = self.stdin.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pipe) = stdin.as_mut()
            && pipe.write_all(line.as_bytes()).is_err()
        {
            tracing::warn!("the guard is gone: commands outlive a worker that dies");
            *stdin = None;
        }
    }

    fn watch(&self, pgid: Pid) {
        self.tell(&format!("+{}\n", pgid.as_raw_nonzero()));
    }

    fn forget(&self, pgid: Pid) {
        self.tell(&format!("-{}\n", pgid.as_raw_nonzero()));
    }
}

/// Arguments of `rota worker-guard` (started by `rota worker`, not by hand).
#[derive(Debug, Args)]
pub(crate) struct GuardArgs {
    /// Time between SIGTERM and SIGKILL.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    kill_grace: Duration,
}

/// Runs the guard: see [`Guard`].
pub(crate) fn guard(args: &GuardArgs) -> ExitCode {
    let mut groups: HashSet<i32> = HashSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (add, pgid) = match line.split_at_checked(1) {
            Some(("+", n)) => (true, n.parse::<i32>()),
            Some(("-", n)) => (false, n.parse::<i32>()),
            _ => continue,
        };
        let Ok(pgid) = pgid else { continue };
        if add {
            groups.insert(pgid);
        } else {
            groups.remove(&pgid);
        }
    }
    let groups: Vec<Pid> = groups.into_iter().filter_map(Pid::from_raw).collect();
    if groups.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "rota worker-guard: the worker is gone; stopping {} command(s) it left running",
        groups.len()
    );
    for &pgid in &groups {
        let _ = rustix::process::kill_process_group(pgid, Signal::TERM);
    }
    let started = Instant::now();
    while started.elapsed() < args.kill_grace
        && groups
            .iter()
            .any(|&g| rustix::process::test_kill_process_group(g).is_ok())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pgid in &groups {
        let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heartbeats go every third of the lease, so two in a row may be late
    /// before it runs out; never more often than every 50 ms.
    #[test]
    fn heartbeats_go_every_third_of_the_lease() {
        assert_eq!(
            beat_interval(Duration::from_secs(2)),
            Duration::from_nanos(666_666_666)
        );
        assert_eq!(
            beat_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            beat_interval(Duration::from_millis(90)),
            Duration::from_millis(50)
        );
        for ms in [150, 1_000, 2_000, 10_000, 60_000] {
            let lease = Duration::from_millis(ms);
            assert!(beat_interval(lease) * 3 <= lease, "{lease:?}");
        }
    }

    /// A completion refused after the lease ran out says so, and does not
    /// claim the task was reclaimed; one refused before says what else it is.
    #[test]
    fn a_refusal_says_whether_the_lease_had_expired() {
        let expired = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.250Z")
            .expect("time")
            .with_timezone(&Utc);
        let later = expired + chrono::Duration::milliseconds(1_500);
        let why = refusal(expired, later);
        assert!(why.contains("the lease expired at 03:04:05.250"), "{why}");
        assert!(why.contains("1500 ms"), "{why}");
        assert!(!why.contains("reclaimed"), "{why}");
        let earlier = expired - chrono::Duration::milliseconds(10);
        let why = refusal(expired, earlier);
        assert!(why.contains("another worker reclaimed it"), "{why}");
        assert!(!why.contains("expired"), "{why}");
    }
}
