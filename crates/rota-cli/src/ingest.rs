//! `rota ingest`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rota_core::format::DecodeOptions;
use rota_core::{
    BatchPolicy, FileFilter, FileReport, FileState, NewJob, OnError, PayloadEncoding, RetryPolicy,
    Store,
};
use rota_ingest::{IngestRequest, IngestSummary, Progress};
use serde_json::json;

use crate::print_out;
use crate::units::{human_bytes, parse_duration, parse_key_value, parse_size};

/// Arguments of `rota ingest`.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// A file, a directory, a `file://` URL, an S3 prefix or object
    /// (`s3://bucket/prefix/`; settings from `AWS_*` variables, see README), a
    /// WebDAV directory (`webdav(s)://[user:password@]host/dir/`), an SFTP
    /// directory (`sftp://user@host/dir/`; see README for keys and host
    /// trust), an FTP or FTPS directory (`ftp(s)://[user:password@]host/dir/`;
    /// `ROTA_CA_FILE` adds a CA to trust) or the `http(s)://` URL of one file.
    /// A glob in the last segments (`s3://b/logs/2026-*/*.csv`) lists the
    /// directory before it and keeps the files that match.
    path: String,
    /// The spec (kind of work) the job runs, e.g. `import-orders`.
    #[arg(long)]
    spec: String,
    /// The format; by default each file's extension decides, else its first bytes
    /// (see `rota formats`).
    #[arg(long)]
    format: Option<String>,
    /// A format option, `key=value` (e.g. `header=false`, `delimiter=;`); repeatable.
    #[arg(long = "format-opt", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    format_opts: Vec<(String, String)>,
    /// Most records per task.
    #[arg(long, value_name = "N", default_value = "1000")]
    batch_rows: Option<u64>,
    /// Most payload bytes per task (e.g. `256KiB`); a single larger record still
    /// becomes a task of its own.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    batch_bytes: Option<u64>,
    /// The queue workers claim the tasks from.
    #[arg(long, default_value = "default")]
    queue: String,
    /// A job parameter handed to every task, `key=value` (the value is parsed
    /// as JSON when it can be, else kept as a string); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// How each task's records are encoded.
    #[arg(long, default_value = "json", value_parser = parse_payload)]
    payload: PayloadEncoding,
    /// What to do with a record that does not decode: `fail` stops and fails
    /// the job; `skip` drops it, counts it and keeps a sample on the job. A
    /// file that cannot be read on (a broken connection, a corrupt block) is,
    /// under `skip`, recorded as failed while the other files go on.
    #[arg(long, default_value = "fail", value_parser = parse_on_error)]
    on_error: OnError,
    /// Idempotency key: ingesting again with the same key adds nothing.
    #[arg(long)]
    job_key: Option<String>,
    /// Higher priorities are claimed first among a queue's tasks (default 0).
    #[arg(long, default_value = "0", allow_negative_numbers = true)]
    priority: i32,
    /// The tasks are not claimable before this time (RFC 3339, e.g.
    /// `2026-12-24T06:00:00Z`).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Longest one attempt may run, heartbeats or not (e.g. `10m`); past it
    /// the attempt fails and is retried.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Descend into subdirectories.
    #[arg(long, short = 'r')]
    recursive: bool,
    /// Only files whose path relative to PATH matches this glob (`*` and `?`
    /// within a path segment, `**` across segments: `**/*.csv`).
    #[arg(long)]
    glob: Option<String>,
    #[command(flatten)]
    filter: crate::units::FilterArgs,
    /// The schema, `name:type,…` (types: utf8, int64, int32, float64, float32,
    /// bool, date32, timestamp); by default inferred from a sample.
    #[arg(long)]
    schema: Option<String>,
    /// Records read to infer the schema.
    #[arg(long, value_name = "N", default_value = "10000")]
    infer_rows: usize,
    /// Character encoding of text input: utf-8 (default), latin1,
    /// windows-1252, utf-16 (byte order from its mark), utf-16le, utf-16be, or
    /// any other WHATWG label. A UTF-8 byte order mark is always dropped.
    #[arg(long, value_name = "LABEL")]
    encoding: Option<String>,
    /// Most bytes a compressed file (gzip, zstd, bzip2, xz; found by its first
    /// bytes, else its suffix) may decompress to.
    #[arg(long, value_name = "SIZE", default_value = "1TiB", value_parser = parse_size)]
    max_decompressed: u64,
    /// Most decompressed bytes per compressed byte, checked once a file has
    /// produced 64 MiB: more is refused as a likely decompression bomb.
    #[arg(long, value_name = "N", default_value = "1000")]
    max_expansion: u64,
    /// Attempts per task before it is dead.
    #[arg(long, value_name = "N", default_value = "5")]
    max_attempts: u32,
    /// Delay before the first retry; it doubles per attempt, with jitter.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    retry_backoff: Duration,
    /// Files ingested at the same time (each has its own read, decode and
    /// encode stages, and their buffers).
    #[arg(long, value_name = "N", default_value_t = rota_ingest::DEFAULT_PARALLEL_FILES)]
    parallel: usize,
    /// A CSV, TSV or NDJSON file at least twice this long (a local file,
    /// uncompressed, UTF-8) is read as parts of
    /// about this size, decoded at once on every core, with exactly the rows
    /// of one whole read; 0 (the default) reads every file as one stream.
    /// Worth it with more than 2 cores (try 8MiB); memory grows with the
    /// size and the cores. Run an ingest again under the same --job-key with
    /// the same value.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_size)]
    split_bytes: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Write nothing: print each file's format, compression and schema, and
    /// the records and tasks it would make (counted for files under 8 MiB or
    /// formats that record it, else estimated from their first 8 MiB).
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn parse_payload(s: &str) -> Result<PayloadEncoding, String> {
    s.parse()
}

fn parse_on_error(s: &str) -> Result<OnError, String> {
    s.parse()
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("'{s}' is not an RFC 3339 time (2026-12-24T06:00:00Z): {e}"))
}

pub(crate) fn param_value(v: &str) -> serde_json::Value {
    serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()))
}

impl IngestArgs {
    fn request(&self) -> anyhow::Result<IngestRequest> {
        let schema = match &self.schema {
            Some(s) => Some(rota_formats::parse_schema(s).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let params: serde_json::Map<String, serde_json::Value> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), param_value(v)))
            .collect();
        let options: BTreeMap<String, String> = self.format_opts.iter().cloned().collect();
        let retry = RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            backoff_base_ms: u64::try_from(self.retry_backoff.as_millis()).unwrap_or(u64::MAX),
            ..RetryPolicy::default()
        };
        Ok(IngestRequest {
            location: self.path.clone(),
            recursive: self.recursive,
            glob: self.glob.clone(),
            filter: self.filter.filter(),
            sources: self.filter.sources()?,
            format: self.format.clone(),
            decode: DecodeOptions {
                schema,
                infer_records: self.infer_rows.max(1),
                on_error: self.on_error,
                options,
                ..DecodeOptions::default()
            },
            encoding: self.encoding.clone(),
            decompression: rota_formats::Limits {
                max_output: self.max_decompressed,
                max_ratio: self.max_expansion.max(1),
                ..rota_formats::Limits::default()
            },
            batch: BatchPolicy {
                max_rows: self.batch_rows,
                max_bytes: self.batch_bytes,
            },
            payload: self.payload,
            job: NewJob {
                key: self.job_key.clone(),
                spec: self.spec.clone(),
                queue: self.queue.clone(),
                params: serde_json::Value::Object(params),
                retry,
                hold: true,
                ingest: None,
                timing: rota_core::Timing {
                    priority: self.priority,
                    run_at: self.run_at,
                    timeout_ms: self
                        .timeout
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                },
            },
            parallel: self.parallel.max(1),
            split_bytes: self.split_bytes,
            node: None,
        })
    }
}

/// Failed files named in the summary, at most.
const FAILED_FILES_SHOWN: u32 = 20;

/// Files shown under the progress line, at most.
const FILES_SHOWN: usize = 6;

fn progress_bar(progress: &Arc<Progress>) -> Option<tokio::task::JoinHandle<()>> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let progress = progress.clone();
    Some(tokio::spawn(async move {
        let started = std::time::Instant::now();
        loop {
            let rows = Progress::get(&progress.rows);
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            #[allow(clippy::cast_precision_loss)] // display only
            let rate = rows as f64 / secs;
            let mut msg = format!(
                "files {}, read {}, rows {rows}, tasks {}, skipped {}, {rate:.0} rows/s",
                Progress::get(&progress.files),
                human_bytes(Progress::get(&progress.bytes)),
                Progress::get(&progress.tasks),
                Progress::get(&progress.skipped),
            );
            let active = progress.active_files();
            for f in active.iter().take(FILES_SHOWN) {
                msg.push_str(&format!("\n    {}  {}", f.relative, human_bytes(f.read)));
                if let Some(size) = f.size {
                    msg.push_str(&format!(" of {}", human_bytes(size)));
                }
            }
            if active.len() > FILES_SHOWN {
                msg.push_str(&format!("\n    … and {} more", active.len() - FILES_SHOWN));
            }
            bar.set_message(msg);
            bar.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }))
}

fn summary_json(s: &IngestSummary, failed: &[FileReport]) -> serde_json::Value {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)] // rates for display
    let (rows_per_sec, bytes_per_sec) = (s.report.rows as f64 / secs, s.report.bytes as f64 / secs);
    json!({
        "job_id": s.job.id,
        "job_key": s.job.key,
        "state": s.job.state,
        "created": s.created,
        "already_ingested": s.already_ingested,
        "tasks_added": s.added,
        "files": s.report.files,
        "bytes": s.report.bytes,
        "rows": s.report.rows,
        "tasks": s.report.tasks,
        "skipped": s.report.skipped,
        "skipped_sample": s.report.skipped_sample,
        "files_failed": s.report.files_failed,
        "failed_files": failed,
        "format": s.report.format,
        "payload": s.report.payload,
        "elapsed_ms": u64::try_from(s.elapsed.as_millis()).unwrap_or(u64::MAX),
        "rows_per_sec": rows_per_sec,
        "bytes_per_sec": bytes_per_sec,
    })
}

fn summary_text(s: &IngestSummary, failed: &[FileReport]) -> String {
    let mut out = String::new();
    if s.already_ingested {
        out.push_str(&format!(
            "job {} (key '{}') was already ingested: nothing added\n",
            s.job.id,
            s.job.key.as_deref().unwrap_or_default()
        ));
    } else {
        out.push_str(&format!(
            "job {} {}\n",
            s.job.id,
            if s.created { "created" } else { "resumed" }
        ));
    }
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)] // display only
    let rate = s.report.rows as f64 / secs;
    out.push_str(&format!(
        "  {} file(s), {} read, {} rows, {} tasks ({} added), {} skipped, {:.2}s, {rate:.0} rows/s\n",
        s.report.files,
        human_bytes(s.report.bytes),
        s.report.rows,
        s.report.tasks,
        s.added,
        s.report.skipped,
        s.elapsed.as_secs_f64(),
    ));
    if s.report.skipped > 0 {
        out.push_str(&format!(
            "  skipped records (first {} of {}):\n",
            s.report.skipped_sample.len(),
            s.report.skipped
        ));
        for r in &s.report.skipped_sample {
            out.push_str(&format!("    {}\n", r.error));
            if let Some(x) = &r.excerpt {
                out.push_str(&format!("      | {}\n", x.replace('\n', "\\n")));
            }
        }
    }
    if s.report.files_failed > 0 {
        out.push_str(&format!(
            "  {} file(s) failed part way (first {} shown; `rota jobs files {} --state failed` lists them):\n",
            s.report.files_failed,
            failed.len(),
            s.job.id
        ));
        for f in failed {
            out.push_str(&format!(
                "    {}: {} rows, {} tasks before: {}\n",
                f.relative,
                f.rows,
                f.tasks,
                f.error.as_deref().unwrap_or_default()
            ));
        }
    }
    out.push_str(&format!("  state: {}\n", s.job.state));
    out
}

/// `rota ingest --dry-run`: plans the ingest and prints the plan.
pub(crate) async fn dry_run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let plan = rota_ingest::plan(&args.request()?).await?;
    if args.json {
        print_out(&format!("{}\n", serde_json::to_string(&plan)?));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::from("dry run: nothing was written\n");
    for f in &plan.files {
        let approx = if f.exact { "" } else { "~" };
        out.push_str(&format!(
            "{}\n  format {}{}, {}{} records, {}{} tasks{}\n",
            f.location,
            f.format,
            f.compression
                .as_deref()
                .map(|c| format!(" ({c}-compressed)"))
                .unwrap_or_default(),
            approx,
            f.rows,
            approx,
            f.tasks,
            f.size
                .map(|s| format!(", {}", human_bytes(s)))
                .unwrap_or_default(),
        ));
        for c in &f.schema {
            out.push_str(&format!("    {}: {}\n", c.name, c.r#type));
        }
    }
    let approx = if plan.files.iter().all(|f| f.exact) {
        ""
    } else {
        "~"
    };
    out.push_str(&format!(
        "total: {} file(s), {approx}{} records, {approx}{} tasks\n",
        plan.files.len(),
        plan.rows,
        plan.tasks
    ));
    print_out(&out);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run(store: Arc<dyn Store>, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let req = args.request()?;
    let progress = Arc::new(Progress::default());
    let bar = (!args.quiet && !args.json && std::io::stderr().is_terminal())
        .then(|| progress_bar(&progress))
        .flatten();
    let result = rota_ingest::ingest(store.clone(), req, progress).await;
    if let Some(bar) = bar {
        bar.abort();
        eprint!("\r\x1b[2K");
    }
    let summary = result?;
    let failed = if summary.report.files_failed > 0 {
        store
            .list_files(
                summary.job.id,
                FileFilter {
                    state: Some(FileState::Failed),
                    after: None,
                    limit: FAILED_FILES_SHOWN,
                },
            )
            .await?
    } else {
        Vec::new()
    };
    if args.json {
        print_out(&format!("{}\n", summary_json(&summary, &failed)));
    } else {
        print_out(&summary_text(&summary, &failed));
    }
    Ok(ExitCode::SUCCESS)
}
