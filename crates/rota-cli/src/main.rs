//! `rota`: ingest data into batched jobs, run workers, inspect jobs and tasks.

mod ingest;
mod jobs;
mod ls;
mod serve;
mod units;
mod upload;
mod worker;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rota_core::Store;
use rota_store::DEFAULT_STORE_URL;

/// Rota: turn data files into batched jobs that workers in any language process.
#[derive(Debug, Parser)]
#[command(name = "rota", version, about, long_about = None)]
struct Cli {
    /// The job store: a SQLite file path, `sqlite://PATH` or `sqlite::memory:`
    /// (one machine), or `postgres://USER@HOST/DB` (any number of nodes; with
    /// `?pool_size=N`, `schema=NAME`, `poll_only=true`, `sslmode=…`, `sslrootcert=FILE`); either
    /// with `?compress=lz4` to store text payloads compressed
    /// [default: ./rota.db].
    #[arg(long, global = true, env = "ROTA_STORE")]
    store: Option<String>,

    /// A Rota server (`http://host:7878`): `jobs` and `upload` talk to it
    /// instead of a store.
    #[arg(long, global = true, env = "ROTA_SERVER", value_name = "URL")]
    server: Option<String>,

    /// The bearer token for `--server` (better given in the environment).
    #[arg(long, global = true, env = "ROTA_TOKEN", hide_env_values = true)]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode a file or directory into records, cut them into batches and store
    /// every batch as a task of one job.
    Ingest(Box<ingest::IngestArgs>),
    /// List, show and cancel jobs.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// List a job's tasks and read their payloads.
    Tasks {
        #[command(subcommand)]
        command: jobs::TasksCommand,
    },
    /// Claim tasks and run a command for each: the payload on its stdin, its
    /// stdout stored as the result, exit status 0 for success.
    Worker(worker::WorkerArgs),
    /// List the files at a location (a directory, an S3 prefix, a URL) as
    /// `rota ingest` would read them: size, modification time, relative path.
    Ls(ls::LsArgs),
    /// List the formats `rota ingest` reads, their options, and the compressions it undoes.
    Formats,
    /// Serve the network API: schedule jobs (plain or batched from a
    /// source), follow and await them, upload files into jobs, and run
    /// workers over WebSocket or HTTP.
    Serve(Box<serve::ServeArgs>),
    /// Upload a file to a server (`--server`) into a job of batched tasks,
    /// over tus; running it again after an interruption resumes.
    Upload(Box<upload::UploadArgs>),
    /// Bring the store's schema up to date (every command does this when it
    /// opens the store; this does only that, for a deployment step).
    Migrate,
    /// Started by `rota worker`: kills the process groups of its commands
    /// when the worker dies.
    #[command(hide = true)]
    WorkerGuard(worker::GuardArgs),
}

/// Standard error for the log, an event a line: a newline or carriage
/// return inside an event (from a name or an error text a client chose) is
/// written escaped, so that no text can pass for another log line.
struct OneLine;

impl std::io::Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end): (&[u8], &[u8]) = match buf.split_last() {
            Some((b'\n', body)) => (body, b"\n"),
            _ => (buf, b""),
        };
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
        out.extend_from_slice(end);
        std::io::stderr().write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| OneLine)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    rota_store::open_store(url)
        .await
        .with_context(|| format!("cannot open the store {}", rota_url::redact(url)))
}

fn client(cli: &Cli) -> anyhow::Result<rota_client::Client> {
    let server = cli
        .server
        .as_deref()
        .context("name the server: --server URL (or ROTA_SERVER)")?;
    rota_client::Client::new(server, cli.token.clone()).map_err(anyhow::Error::msg)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let store = cli.store.as_deref().unwrap_or(DEFAULT_STORE_URL);
    let remote = cli.server.is_some().then(|| client(&cli)).transpose()?;
    let command = match (cli.command, remote) {
        (Command::Jobs { command }, Some(client)) => {
            return jobs::run_jobs_remote(&client, command).await;
        }
        (Command::Upload(args), Some(client)) => return upload::run(client, *args).await,
        (command, _) => command,
    };
    match command {
        Command::Formats => {
            let mut out = String::new();
            for f in rota_formats::builtin() {
                let names = if f.extensions().is_empty() {
                    "(--format only)".to_owned()
                } else {
                    format!(".{}", f.extensions().join(" ."))
                };
                out.push_str(&format!("{:<8} {names:<15} {}\n", f.name(), f.describe()));
            }
            out.push_str("\ncompressions (found by their first bytes, else by suffix):\n");
            for c in rota_formats::Compression::ALL {
                out.push_str(&format!("{:<8} .{}\n", c.name(), c.suffixes().join(" .")));
            }
            print_out(&out);
            Ok(ExitCode::SUCCESS)
        }
        // A dry run opens no store, so it creates no database file either.
        Command::Ingest(args) if args.dry_run => ingest::dry_run(*args).await,
        Command::Ingest(args) => ingest::run(open_store(store).await?, *args).await,
        Command::Jobs { command } => jobs::run_jobs(open_store(store).await?, command).await,
        Command::Tasks { command } => jobs::run_tasks(open_store(store).await?, command).await,
        Command::Worker(args) => {
            // Heartbeats get a connection of their own (the same database
            // when it lives only in this process's memory).
            let tasks = open_store(store).await?;
            let in_memory = matches!(
                store.split('?').next(),
                Some("sqlite::memory:" | ":memory:")
            );
            let beats = if in_memory {
                tasks.clone()
            } else {
                open_store(store).await?
            };
            worker::run(tasks, beats, args).await
        }
        Command::WorkerGuard(args) => Ok(worker::guard(&args)),
        Command::Migrate => {
            open_store(store).await?;
            let version = if store.starts_with("postgres://") || store.starts_with("postgresql://")
            {
                i64::from(rota_store::PG_SCHEMA_VERSION)
            } else {
                rota_store::SCHEMA_VERSION
            };
            print_out(&format!(
                "the store {} is at schema version {version}\n",
                rota_url::redact(store)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls(args) => ls::run(args).await,
        Command::Serve(args) => {
            let settings = args.settings()?;
            let url = cli.store.clone().or(settings.store.clone());
            serve::run(
                open_store(url.as_deref().unwrap_or(DEFAULT_STORE_URL)).await?,
                settings,
            )
            .await
        }
        Command::Upload(_) => {
            anyhow::bail!("rota upload sends to a server: give --server URL (or ROTA_SERVER)")
        }
    }
}

/// Writes to stdout; a closed pipe (`rota jobs list | head`) is not an error.
pub(crate) fn print_out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}{}", hint(&e));
            ExitCode::FAILURE
        }
    }
}

/// What to try after an error, when the error itself cannot know: for a
/// location that is not there, how to see what is.
fn hint(e: &anyhow::Error) -> String {
    let missing = e.chain().find_map(|cause| {
        let source = cause.downcast_ref::<rota_core::SourceError>().or_else(|| {
            match cause.downcast_ref::<rota_ingest::IngestError>() {
                Some(rota_ingest::IngestError::Source(s)) => Some(s),
                _ => None,
            }
        })?;
        match source {
            rota_core::SourceError::NotFound { location } => Some(location.clone()),
            _ => None,
        }
    });
    match missing {
        Some(location) => {
            let trimmed = location.trim_end_matches('/');
            let parent = match trimmed.rfind('/') {
                Some(i) if !trimmed[..i].ends_with('/') && i > 0 => &trimmed[..=i],
                _ => trimmed,
            };
            format!(" (check the path; `rota ls '{parent}'` lists what is there)")
        }
        None => String::new(),
    }
}
