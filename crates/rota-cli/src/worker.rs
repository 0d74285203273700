//! `rota worker`: claims tasks and runs a command for each.
//!
//! The payload goes to the command's stdin; task metadata goes in `ROTA_*`
//! environment variables; stdout becomes the result; exit status 0 is success
//! and anything else a retryable failure. While the command runs the lease is
//! kept alive by heartbeats; if the lease is lost (it expired and the task went
//! to another worker, or the job was cancelled) the command is killed.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rota_core::{ClaimRequest, Lease, Outcome, Report, Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
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
    /// How long to wait between claims when the queue is empty.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    poll: Duration,
    /// Exit after being idle (nothing claimable, nothing running) this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_exit: Option<Duration>,
    /// This worker's name, recorded on the tasks it claims (default: host-pid).
    #[arg(long)]
    name: Option<String>,
}

fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into());
    format!("{}-{}", host.trim(), std::process::id())
}

pub(crate) async fn run(store: Arc<dyn Store>, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let name = args.name.clone().unwrap_or_else(worker_name);
    let concurrency = args.concurrency.max(1);
    let args = Arc::new(args);
    tracing::info!(worker = %name, queues = ?args.queues, concurrency, "worker started");
    let mut running: JoinSet<()> = JoinSet::new();
    let mut idle_since = Instant::now();
    let mut stopping = false;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
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
                })
                .await
            {
                Ok(l) => l,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "claim failed; will retry");
                    Vec::new()
                }
                Err(e) => return Err(anyhow::Error::new(e).context("cannot claim tasks")),
            };
            claimed = leases.len();
            for lease in leases {
                tracing::info!(task = %lease.lease.task, key = %lease.key, attempt = lease.lease.attempt, "claimed");
                running.spawn(run_task(store.clone(), args.clone(), lease));
            }
        }
        if running.is_empty() {
            if stopping {
                break;
            }
            if claimed == 0 && args.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                tracing::info!("idle; exiting");
                break;
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
            () = tokio::time::sleep(args.poll), if free > 0 && !stopping => {}
            () = &mut shutdown, if !stopping => {
                tracing::info!(running = running.len(), "stopping: no new claims; waiting for running tasks");
                stopping = true;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// How the command ended.
enum Ended {
    Done(Outcome),
    /// The lease is gone; nothing may be reported.
    LeaseLost,
}

async fn run_task(store: Arc<dyn Store>, args: Arc<WorkerArgs>, lease: Lease) {
    let task = lease.lease.task;
    let ended = match execute(&store, &args, &lease).await {
        Ok(ended) => ended,
        Err(e) => Ended::Done(Outcome::Failure {
            error: format!("cannot run the command: {e}"),
            retryable: true,
        }),
    };
    let outcome = match ended {
        Ended::Done(o) => o,
        Ended::LeaseLost => {
            tracing::warn!(%task, "lease lost: the command was stopped and its result discarded");
            return;
        }
    };
    let ok = matches!(outcome, Outcome::Success(_));
    let report = Report {
        lease: lease.lease,
        outcome,
    };
    match store.report(vec![report]).await {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(state)) => tracing::info!(%task, %state, succeeded = ok, "reported"),
            Some(Err(StoreError::LeaseLost { .. })) => {
                tracing::warn!(%task, "completion rejected: the lease was lost (the task was reclaimed)");
            }
            Some(Err(e)) => tracing::error!(%task, error = %e, "report failed"),
            None => tracing::error!(%task, "report returned nothing"),
        },
        Err(e) => {
            tracing::error!(%task, error = %e, "report failed; the lease will expire and the task be retried")
        }
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
    store: &Arc<dyn Store>,
    args: &WorkerArgs,
    lease: &Lease,
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
        .kill_on_drop(true)
        .spawn()?;
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
    let beat_every = (args.lease / 3).max(Duration::from_millis(50));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + beat_every, beat_every);
    let ((), out, err) = loop {
        tokio::select! {
            r = &mut io => break r,
            _ = beat.tick() => {
                match heartbeat(store, lease, args.lease).await {
                    Beat::Keep => {}
                    Beat::Lost => { let _ = child.kill().await; return Ok(Ended::LeaseLost); }
                    Beat::Cancelled => {
                        let _ = child.kill().await;
                        return Ok(Ended::Done(Outcome::Failure { error: "the job was cancelled".into(), retryable: false }));
                    }
                }
            }
        }
    };
    // The pipes are closed; wait for the exit status, still heartbeating.
    let status = loop {
        tokio::select! {
            s = child.wait() => break s?,
            _ = beat.tick() => {
                if !matches!(heartbeat(store, lease, args.lease).await, Beat::Keep) {
                    let _ = child.kill().await;
                    return Ok(Ended::LeaseLost);
                }
            }
        }
    };
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

enum Beat {
    Keep,
    Lost,
    Cancelled,
}

async fn heartbeat(store: &Arc<dyn Store>, lease: &Lease, extend: Duration) -> Beat {
    match store.heartbeat(vec![lease.lease.into()], extend).await {
        Ok(acks) => match acks.into_iter().next() {
            Some(Ok(ack)) if ack.cancel_requested => Beat::Cancelled,
            Some(Ok(_)) => Beat::Keep,
            Some(Err(StoreError::LeaseLost { .. })) => Beat::Lost,
            Some(Err(e)) => {
                tracing::warn!(task = %lease.lease.task, error = %e, "heartbeat failed; will retry");
                Beat::Keep
            }
            None => Beat::Keep,
        },
        Err(e) => {
            tracing::warn!(task = %lease.lease.task, error = %e, "heartbeat failed; will retry");
            Beat::Keep
        }
    }
}
