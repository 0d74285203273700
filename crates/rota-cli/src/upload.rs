//! `rota upload`: a file into a job of a server, over tus, resumed after an
//! interruption.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use rota_core::JobState;

use crate::print_out;
use crate::units::{human_bytes, parse_key_value, parse_size};

#[derive(Debug, clap::Args)]
pub(crate) struct UploadArgs {
    /// The file to upload.
    file: PathBuf,
    /// The spec of the job the file's records become tasks of.
    #[arg(long)]
    spec: String,
    /// The file's format (default: from its name, as `rota ingest` finds it).
    #[arg(long)]
    format: Option<String>,
    /// A format option, `key=value`; repeatable.
    #[arg(long = "format-opt", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    format_opts: Vec<(String, String)>,
    /// Most records per task.
    #[arg(long, value_name = "N")]
    batch_rows: Option<u64>,
    /// Most payload bytes per task.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    batch_bytes: Option<u64>,
    /// The queue workers claim the tasks from (default: the spec's).
    #[arg(long)]
    queue: Option<String>,
    /// A job parameter, `key=value` (JSON when it parses, else a string); repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// How each task's records are encoded (json, ndjson, csv, arrow).
    #[arg(long)]
    payload: Option<String>,
    /// `fail` or `skip` records that do not decode.
    #[arg(long)]
    on_error: Option<String>,
    /// Idempotency key of the job.
    #[arg(long)]
    job_key: Option<String>,
    /// Bytes per request.
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Where the records of unfinished uploads are kept, so that running the
    /// same command again resumes (default: `$XDG_STATE_HOME/rota/uploads`,
    /// else `~/.local/state/rota/uploads`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// After the upload, wait until the job ends and exit non-zero unless it
    /// succeeded.
    #[arg(long)]
    wait: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

fn state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("rota/uploads"))
}

pub(crate) async fn run(client: rota_client::Client, args: UploadArgs) -> anyhow::Result<ExitCode> {
    let mut metadata = vec![("spec".to_owned(), args.spec.clone())];
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            metadata.push((k.to_owned(), v));
        }
    };
    put("format", args.format.clone());
    put("max_rows", args.batch_rows.map(|n| n.to_string()));
    put("max_bytes", args.batch_bytes.map(|n| n.to_string()));
    put("queue", args.queue.clone());
    put("payload", args.payload.clone());
    put("on_error", args.on_error.clone());
    put("idempotency_key", args.job_key.clone());
    put(
        "filename",
        args.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
    );
    if !args.params.is_empty() {
        let params: serde_json::Map<String, serde_json::Value> = args
            .params
            .iter()
            .map(|(k, v)| (k.clone(), crate::ingest::param_value(v)))
            .collect();
        put(
            "params",
            Some(serde_json::Value::Object(params).to_string()),
        );
    }
    for (k, v) in &args.format_opts {
        metadata.push((format!("option.{k}"), v.clone()));
    }
    let opts = rota_client::UploadOptions {
        metadata,
        chunk_size: usize::try_from(args.chunk_size)
            .unwrap_or(usize::MAX)
            .max(1),
        state_dir: args.state_dir.clone().or_else(state_dir),
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let done = client
        .upload(&args.file, &opts, |p| {
            if p.offset == p.resumed_at && p.resumed_at > 0 {
                eprintln!(
                    "resuming at {} of {}",
                    human_bytes(p.resumed_at),
                    human_bytes(p.length)
                );
            }
            if tty {
                eprint!(
                    "\ruploaded {} of {}",
                    human_bytes(p.offset),
                    human_bytes(p.length)
                );
            }
        })
        .await
        .with_context(|| format!("cannot upload {}", args.file.display()))?;
    if tty {
        eprintln!();
    }
    let id = done
        .job
        .context("the server did not say which job the upload fills")?;
    // The upload is done (and its record gone): the job it fills is asked
    // for again while the server or its store is away, since running the
    // command again would start another upload under the same key.
    let job = if args.wait {
        rota_client::retrying(|| client.wait(id, std::time::Duration::from_secs(365 * 24 * 3600)))
            .await
    } else {
        rota_client::retrying(|| client.job(id)).await
    }
    .with_context(|| {
        format!("the upload is complete, into job {id}, but the job cannot be read")
    })?;
    if args.json {
        print_out(&format!(
            "{}\n",
            serde_json::json!({
                "job_id": id, "bytes": done.offset, "resumed_at": done.resumed_at,
                "state": job.state, "tasks": job.counts.total,
            })
        ));
    } else {
        let resumed = if done.resumed_at > 0 {
            format!(" (resumed at {})", human_bytes(done.resumed_at))
        } else {
            String::new()
        };
        print_out(&format!(
            "job {id} {}: uploaded {}{resumed}\n",
            job.state,
            human_bytes(done.offset)
        ));
    }
    Ok(if !args.wait || job.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
