//! `rota serve`: the network API over the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rota_core::Store;

use crate::units::{parse_duration, parse_size};

/// Arguments of `rota serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where to listen.
    #[arg(long, env = "ROTA_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// A file of bearer tokens, one per line: the token, then its scopes
    /// separated by commas (schedule, work, admin). Without it the API
    /// asks for no token, and only a loopback address may be listened on.
    #[arg(long, env = "ROTA_TOKENS_FILE", value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// A source batch jobs may read: a URL prefix (`s3://bucket/exports/`,
    /// `https://data.example.com/`) or a local directory; repeatable. Batch
    /// jobs naming anything else are refused.
    #[arg(long = "allow-source", value_name = "PREFIX")]
    allow_source: Vec<String>,
    /// Longest request body accepted.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    max_body: u64,
    /// Listen on a non-loopback address without tokens (anyone who can reach
    /// it can schedule work and read results).
    #[arg(long)]
    insecure_no_auth: bool,
    /// A named profile of source settings for batch jobs (see `rota ingest
    /// --profile`); without one, the environment.
    #[arg(long, env = "ROTA_PROFILE")]
    profile: Option<String>,
    /// Where uploads to `/uploads` are kept until their job is made (and
    /// read again after a restart, to resume them).
    #[arg(
        long,
        env = "ROTA_UPLOAD_DIR",
        value_name = "DIR",
        default_value = "rota-uploads"
    )]
    upload_dir: PathBuf,
    /// The largest upload accepted.
    #[arg(long, value_name = "SIZE", default_value = "1TiB", value_parser = parse_size)]
    max_upload: u64,
    /// How long an unfinished upload may go without receiving bytes before it
    /// expires and its job fails.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    upload_expiry: std::time::Duration,
    /// A file holding the key callbacks are signed with (HMAC-SHA256; its
    /// bytes, surrounding whitespace trimmed, at least 16). Without one, jobs
    /// with callbacks are refused.
    #[arg(long, env = "ROTA_CALLBACK_KEY_FILE", value_name = "FILE")]
    callback_key_file: Option<PathBuf>,
    /// A URL prefix callbacks may point at (repeatable); callbacks anywhere
    /// else are refused.
    #[arg(long = "allow-callback", value_name = "PREFIX")]
    allow_callback: Vec<String>,
    /// Longest a long-polling claim or a `GET /jobs/{id}/wait` blocks before
    /// it answers (keep it under the idle timeout of any proxy in front).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    max_wait: std::time::Duration,
}

pub(crate) async fn run(store: Arc<dyn Store>, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let tokens = match &args.tokens {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
            rota_server::Tokens::parse(&text)
                .map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))?
        }
        None => rota_server::Tokens::default(),
    };
    if !tokens.enabled() && !args.listen.ip().is_loopback() && !args.insecure_no_auth {
        anyhow::bail!(
            "refusing to listen on {} without tokens: give --tokens FILE (or --insecure-no-auth)",
            args.listen
        );
    }
    let key = match &args.callback_key_file {
        Some(path) => {
            let text = std::fs::read(path)
                .with_context(|| format!("cannot read the callback key file {}", path.display()))?;
            let key = text.trim_ascii().to_vec();
            if key.len() < 16 {
                anyhow::bail!(
                    "the callback key in {} is {} bytes; use at least 16 (e.g. openssl rand -hex 32)",
                    path.display(),
                    key.len()
                );
            }
            Some(key)
        }
        None => None,
    };
    if let Some(bad) = args
        .allow_callback
        .iter()
        .find(|p| !matches!(rota_sources::scheme(p), Some("http" | "https")))
    {
        anyhow::bail!("--allow-callback takes http(s) URL prefixes, not '{bad}'");
    }
    let config = rota_server::Config {
        tokens,
        allow: rota_server::AllowList::new(&args.allow_source).map_err(anyhow::Error::msg)?,
        sources: crate::units::source_settings(args.profile.as_deref())?,
        max_body: usize::try_from(args.max_body).unwrap_or(usize::MAX),
        uploads: Some(rota_server::UploadConfig {
            dir: args.upload_dir.clone(),
            expire_after: args.upload_expiry,
            max_size: args.max_upload,
        }),
        callbacks: rota_server::CallbackConfig {
            key,
            allow: rota_server::AllowList::new(&args.allow_callback).map_err(anyhow::Error::msg)?,
            ..rota_server::CallbackConfig::default()
        },
        max_wait: args.max_wait,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, auth = config.tokens.enabled(), "serving the API");
    // Written to stdout so that scripts can learn a port chosen by the system.
    crate::print_out(&format!("listening on http://{addr}\n"));
    let shutdown = async {
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = interrupt => {}
                () = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
        tracing::info!("shutting down: finishing the requests in flight");
    };
    rota_server::serve(listener, store, config, shutdown)
        .await
        .context("the server failed")?;
    Ok(ExitCode::SUCCESS)
}
