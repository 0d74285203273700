//! `rota jobs …` and `rota tasks …`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use rota_core::{
    FileFilter, FileReport, FileState, Job, JobFilter, JobId, JobState, Store, Task, TaskFilter,
    TaskId, TaskState,
};
use serde_json::json;

use crate::print_out;
use crate::units::human_bytes;

/// `rota jobs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Jobs, newest first.
    List {
        /// Only jobs in this state (pending, running, succeeded, failed, cancelled).
        #[arg(long, value_parser = |s: &str| s.parse::<JobState>())]
        state: Option<JobState>,
        /// Only jobs of this spec.
        #[arg(long)]
        spec: Option<String>,
        /// Only jobs on this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only jobs older than this job id (the next page).
        #[arg(long)]
        before: Option<JobId>,
        /// Only jobs created at or after this time (RFC 3339, e.g.
        /// 2026-12-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only jobs created before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Most jobs shown.
        #[arg(long, default_value = "50")]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// One job: state, task counts, ingest report, errors.
    Show {
        /// The job id.
        id: JobId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: tasks not yet running are cancelled; running ones are told
    /// at their next heartbeat.
    Cancel {
        /// The job id.
        id: JobId,
    },
    /// Run a job's dead (and cancelled) tasks again, each with a fresh
    /// attempt budget; a job that ended runs again.
    Requeue {
        /// The job id.
        id: JobId,
        /// Which ended tasks: dead, cancelled; repeatable [default: both].
        #[arg(long = "state", value_name = "STATE", value_parser = requeue_state)]
        states: Vec<TaskState>,
    },
    /// The files a job's ingest read, by path: state, bytes, rows, tasks,
    /// skipped records, the node that read it (for a job of `rota serve`)
    /// and, for a failed file, its error.
    Files {
        /// The job id.
        id: JobId,
        /// Only files in this state (done, failed, running).
        #[arg(long, value_parser = |s: &str| s.parse::<FileState>())]
        state: Option<FileState>,
        /// Only files whose path sorts after this one (the next page).
        #[arg(long)]
        after: Option<String>,
        /// Most files shown.
        #[arg(long, default_value = "1000")]
        limit: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// `rota tasks …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// A job's tasks in key order.
    List {
        /// The job id.
        job: JobId,
        /// Only tasks in this state (scheduled, queued, running, retrying,
        /// succeeded, dead, cancelled).
        #[arg(long, value_parser = |s: &str| s.parse::<TaskState>())]
        state: Option<TaskState>,
        /// Only tasks whose key sorts after this one (the next page).
        #[arg(long)]
        after: Option<String>,
        /// Most tasks shown.
        #[arg(long, default_value = "100")]
        limit: u32,
        /// Include each task's result (the worker's output).
        #[arg(long)]
        results: bool,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Write a task's payload, as stored, to stdout.
    Payload {
        /// The task id (see `rota tasks list`).
        task: TaskId,
    },
}

fn job_line(j: &Job) -> String {
    let c = &j.counts;
    format!(
        "{}  {:<9}  {:<20}  {:<10}  tasks {}/{} done, {} dead  {}\n",
        j.id,
        j.state.as_str(),
        j.spec,
        j.queue,
        c.succeeded,
        c.total,
        c.dead,
        j.created_at.format("%Y-%m-%d %H:%M:%S"),
    )
}

fn job_text(j: &Job) -> String {
    let mut out = format!("job       {}\n", j.id);
    if let Some(k) = &j.key {
        out.push_str(&format!("key       {k}\n"));
    }
    out.push_str(&format!(
        "spec      {}\nqueue     {}\nstate     {}\n",
        j.spec, j.queue, j.state
    ));
    out.push_str(&format!("params    {}\n", j.params));
    out.push_str(&format!(
        "retry     {} attempts, backoff from {} ms\n",
        j.retry.max_attempts, j.retry.backoff_base_ms
    ));
    let c = &j.counts;
    out.push_str(&format!(
        "tasks     {} total: {} scheduled, {} queued, {} running, {} retrying, {} succeeded, {} dead, {} cancelled\n",
        c.total, c.scheduled, c.queued, c.running, c.retrying, c.succeeded, c.dead, c.cancelled
    ));
    if let Some(i) = &j.ingest {
        out.push_str(&format!(
            "ingest    {} ({}) → {} payloads: {} file(s), {}, {} rows, {} tasks, {} skipped\n",
            i.source,
            i.format,
            i.payload,
            i.files,
            human_bytes(i.bytes),
            i.rows,
            i.tasks,
            i.skipped
        ));
        for r in &i.skipped_sample {
            out.push_str(&format!("  skipped {}\n", r.error));
        }
        if i.files_failed > 0 {
            out.push_str(&format!(
                "files     {} failed part way (rota jobs files {} --state failed)\n",
                i.files_failed, j.id
            ));
        }
    }
    if let Some(e) = &j.error {
        out.push_str(&format!("error     {e}\n"));
    }
    out.push_str(&format!("created   {}\n", j.created_at.to_rfc3339()));
    if let Some(f) = j.finished_at {
        out.push_str(&format!("finished  {}\n", f.to_rfc3339()));
    }
    out
}

fn file_line(f: &FileReport) -> String {
    let mut line = format!(
        "{:<40} {:<6} {:<8} {:>10}  rows {:<8} tasks {:<6} skipped {}",
        f.relative,
        f.state.as_str(),
        f.format,
        human_bytes(f.bytes),
        f.rows,
        f.tasks,
        f.skipped
    );
    if let Some(node) = &f.node {
        line.push_str(&format!("  node {node}"));
    }
    if let Some(e) = &f.error {
        line.push_str(&format!(
            "  error: {}",
            e.lines().next().unwrap_or_default()
        ));
    }
    line.push('\n');
    line
}

fn task_json(t: &Task) -> serde_json::Value {
    json!({
        "id": t.id,
        "job_id": t.job_id,
        "key": t.key,
        "state": t.state,
        "attempt": t.attempt,
        "max_attempts": t.max_attempts,
        "rows": t.rows,
        "payload_bytes": t.payload_bytes,
        "encoding": t.encoding,
        "available_at": t.available_at,
        "lease_expires_at": t.lease_expires_at,
        "worker": t.worker,
        "result": t.result.as_ref().map(|r| String::from_utf8_lossy(r).into_owned()),
        "error": t.error,
        "finished_at": t.finished_at,
    })
}

fn task_line(t: &Task, results: bool) -> String {
    let mut line = format!(
        "{:<28} {:<9} attempt {}/{}  rows {:<6} {}",
        t.key,
        t.state.as_str(),
        t.attempt,
        t.max_attempts,
        t.rows,
        human_bytes(t.payload_bytes)
    );
    if let Some(e) = &t.error {
        line.push_str(&format!(
            "  error: {}",
            e.lines().next().unwrap_or_default()
        ));
    }
    if results && let Some(r) = &t.result {
        line.push_str(&format!(
            "  result: {}",
            String::from_utf8_lossy(r).trim_end()
        ));
    }
    line.push('\n');
    line
}

async fn get_job(store: &Arc<dyn Store>, id: JobId) -> anyhow::Result<Job> {
    store
        .get_job(id)
        .await
        .context("cannot read the job")?
        .with_context(|| format!("no job {id} in this store"))
}

pub(crate) async fn run_jobs(store: Arc<dyn Store>, cmd: JobsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobsCommand::List {
            state,
            spec,
            queue,
            before,
            since,
            until,
            limit,
            json,
        } => {
            let jobs = store
                .list_jobs(JobFilter {
                    state,
                    spec,
                    queue,
                    before,
                    created_after: since,
                    created_before: until,
                    limit,
                })
                .await
                .context("cannot list jobs")?;
            print_list(&jobs, json, job_line)?;
        }
        JobsCommand::Show { id, json } => {
            let job = get_job(&store, id).await?;
            if json {
                print_out(&format!("{}\n", serde_json::to_string_pretty(&job)?));
            } else {
                print_out(&job_text(&job));
            }
        }
        JobsCommand::Cancel { id } => {
            get_job(&store, id).await?;
            let job = store
                .cancel_job(id)
                .await
                .context("cannot cancel the job")?;
            print_out(&format!("job {} {}\n", job.id, job.state));
        }
        JobsCommand::Requeue { id, states } => {
            get_job(&store, id).await?;
            let (job, n) = store
                .requeue(id, &requeue_states(states))
                .await
                .context("cannot requeue the job's tasks")?;
            print_out(&format!(
                "job {} {}: {n} tasks requeued\n",
                job.id, job.state
            ));
        }
        JobsCommand::Files {
            id,
            state,
            after,
            limit,
            json,
        } => {
            let files = store
                .list_files(
                    id,
                    FileFilter {
                        state,
                        after,
                        limit,
                    },
                )
                .await
                .with_context(|| format!("cannot list the files of job {id}"))?;
            print_list(&files, json, file_line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run_tasks(
    store: Arc<dyn Store>,
    cmd: TasksCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        TasksCommand::List {
            job,
            state,
            after,
            limit,
            results,
            json,
        } => {
            get_job(&store, job).await?;
            let tasks = store
                .list_tasks(
                    job,
                    TaskFilter {
                        state,
                        after_key: after,
                        limit,
                        with_results: results || json,
                        ..TaskFilter::default()
                    },
                )
                .await
                .context("cannot list tasks")?;
            let mut out = String::new();
            for t in &tasks {
                if json {
                    out.push_str(&task_json(t).to_string());
                    out.push('\n');
                } else {
                    out.push_str(&task_line(t, results));
                }
            }
            print_out(&out);
        }
        TasksCommand::Payload { task } => {
            let payload = store
                .get_payload(task)
                .await
                .context("cannot read the payload")?;
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&payload);
            let _ = stdout.flush();
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rota --server URL jobs …`: the same commands, through the server's API.
pub(crate) async fn run_jobs_remote(
    client: &rota_client::Client,
    cmd: JobsCommand,
) -> anyhow::Result<ExitCode> {
    let parse_job = |v: serde_json::Value| -> anyhow::Result<Job> {
        serde_json::from_value(v).context("the server answered something that is not a job")
    };
    match cmd {
        JobsCommand::List {
            state,
            spec,
            queue,
            before,
            since,
            until,
            limit,
            json,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(s) = state {
                query.push(format!("state={}", s.as_str()));
            }
            for (name, value) in [("spec", spec), ("queue", queue)] {
                if let Some(v) = value {
                    query.push(format!("{name}={}", encode(&v)));
                }
            }
            if let Some(b) = before {
                query.push(format!("before={b}"));
            }
            for (name, time) in [("created_after", since), ("created_before", until)] {
                if let Some(t) = time {
                    query.push(format!("{name}={}", encode(&t.to_rfc3339())));
                }
            }
            let answer = client.get(&format!("/jobs?{}", query.join("&"))).await?;
            let jobs = answer["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| parse_job(v.clone()))
                .collect::<anyhow::Result<Vec<Job>>>()?;
            print_list(&jobs, json, job_line)?;
        }
        JobsCommand::Show { id, json } => {
            let answer = client.get(&format!("/jobs/{id}")).await?;
            if json {
                print_out(&format!("{}\n", serde_json::to_string_pretty(&answer)?));
            } else {
                print_out(&job_text(&parse_job(answer)?));
            }
        }
        JobsCommand::Cancel { id } => {
            let job = client.cancel(id).await?;
            print_out(&format!("job {} {}\n", job.id, job.state));
        }
        JobsCommand::Requeue { id, states } => {
            let (job, n) = client.requeue(id, &requeue_states(states)).await?;
            print_out(&format!(
                "job {} {}: {n} tasks requeued\n",
                job.id, job.state
            ));
        }
        JobsCommand::Files {
            id,
            state,
            after,
            limit,
            json,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(s) = state {
                query.push(format!("state={}", s.as_str()));
            }
            if let Some(a) = after {
                query.push(format!("after={}", encode(&a)));
            }
            let answer = client
                .get(&format!("/jobs/{id}/files?{}", query.join("&")))
                .await?;
            let files: Vec<FileReport> = serde_json::from_value(answer["files"].clone())
                .context("the server answered something that is not a list of file records")?;
            print_list(&files, json, file_line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints items one per line: as JSON lines, or as `line` renders them.
fn print_list<T: serde::Serialize>(
    items: &[T],
    json: bool,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    let mut out = String::new();
    for item in items {
        if json {
            out.push_str(&serde_json::to_string(item)?);
            out.push('\n');
        } else {
            out.push_str(&line(item));
        }
    }
    print_out(&out);
    Ok(())
}

/// A query value, percent-encoded.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `--state` of `rota jobs requeue`: dead or cancelled.
fn requeue_state(s: &str) -> Result<TaskState, String> {
    match s.parse::<TaskState>() {
        Ok(state @ (TaskState::Dead | TaskState::Cancelled)) => Ok(state),
        _ => Err(format!("'{s}' cannot be requeued (use dead or cancelled)")),
    }
}

/// The states to requeue: those given, or dead and cancelled.
fn requeue_states(given: Vec<TaskState>) -> Vec<TaskState> {
    if given.is_empty() {
        vec![TaskState::Dead, TaskState::Cancelled]
    } else {
        given
    }
}
