//! `rota serve`: the network API over the store.
//!
//! Settings come from flags, then the environment, then a TOML file given
//! with `--config`, then the built-in defaults, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use crate::units::{parse_duration, parse_size};

/// Where `rota serve` listens unless told otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// Arguments of `rota serve`. Every setting may also be given in the
/// `--config` file under the flag's name with `_` for `-`; a flag or its
/// environment variable wins over the file.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// A TOML file of settings (`listen = "0.0.0.0:7878"`, `store = "…"`,
    /// `allow_source = ["s3://bucket/"]`, …); relative paths in it are
    /// taken from the file's directory.
    #[arg(long, env = "ROTA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen [default: 127.0.0.1:7878].
    #[arg(long, env = "ROTA_LISTEN")]
    listen: Option<SocketAddr>,
    /// A file of bearer tokens, one per line: the token (at least 16
    /// characters), then its scopes separated by commas (schedule, work,
    /// admin). Without it the server makes one admin token for this run and
    /// prints it once, unless --insecure-no-auth.
    #[arg(long, env = "ROTA_TOKENS_FILE", value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// A source batch jobs may read: a URL prefix (`s3://bucket/exports/`,
    /// `https://data.example.com/`, `sftp://rota@files.example.com/data/`)
    /// or a local directory; repeatable, and given here it replaces the
    /// config file's list. Batch jobs naming anything else are refused. A
    /// URL must have the prefix's scheme, host and port, and a path under
    /// its path. A prefix naming a user allows only that user; one naming
    /// none allows URLs without a user, or whose user gives their own
    /// password (so the server's SSH key or FTP password is used only for
    /// the users prefixes name). Names that resolve to loopback, private or
    /// link-local addresses are not reached unless --private-networks is
    /// given; a prefix naming an IP address (`http://127.0.0.1:8080/`)
    /// reaches it.
    #[arg(long = "allow-source", value_name = "PREFIX")]
    allow_source: Vec<String>,
    /// Let sources and callbacks reach loopback, private (RFC 1918,
    /// fc00::/7) and link-local addresses through host names (by default
    /// only the addresses --allow-source and --allow-callback name as IP
    /// addresses are reached there).
    #[arg(long)]
    private_networks: bool,
    /// Longest JSON request body accepted, results aside [default: 4MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_body: Option<u64>,
    /// Longest worker result accepted (`/work/complete`, a WebSocket
    /// message) [default: 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_result: Option<u64>,
    /// Most connections open at once; more are answered 503 [default: 4096].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Ask for no token at all. On a loopback address, requests must then
    /// name a loopback host and come from no web page elsewhere (Host and
    /// Origin are checked); on any other address anyone who can reach it can
    /// schedule work and read results.
    #[arg(long)]
    insecure_no_auth: bool,
    /// A named profile of source settings for batch jobs (see `rota ingest
    /// --profile`); without one, the environment.
    #[arg(long, env = "ROTA_PROFILE")]
    profile: Option<String>,
    /// Where uploads to `/uploads` are kept until their job is made (and
    /// read again after a restart, to resume them) [default: rota-uploads].
    #[arg(long, env = "ROTA_UPLOAD_DIR", value_name = "DIR")]
    upload_dir: Option<PathBuf>,
    /// The largest upload accepted [default: 64GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_upload: Option<u64>,
    /// How long an unfinished upload may go without receiving bytes before it
    /// expires and its job fails [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    upload_expiry: Option<Duration>,
    /// Longest an upload request body may go without a byte before the
    /// request ends with 408 (what arrived is kept) [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    upload_idle_timeout: Option<Duration>,
    /// Most unfinished uploads the server holds, over every token (503
    /// beyond) [default: 128].
    #[arg(long, value_name = "N")]
    max_open_uploads: Option<usize>,
    /// Most unfinished uploads one token holds (429 beyond) [default: 16].
    #[arg(long, value_name = "N")]
    max_uploads_per_token: Option<usize>,
    /// Most bytes the unfinished uploads of one token hold, declared lengths
    /// counted whole (429 beyond) [default: 256GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_upload_bytes_per_token: Option<u64>,
    /// Free space the upload directory's file system keeps: uploads that
    /// would leave less are refused with 507 [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    upload_min_free: Option<u64>,
    /// Threads writing upload bytes to disk, apart from the store's
    /// [default: 4].
    #[arg(long, value_name = "N")]
    upload_writers: Option<usize>,
    /// A file holding the key callbacks are signed with (HMAC-SHA256; its
    /// bytes, surrounding whitespace trimmed, at least 16). Without one, jobs
    /// with callbacks are refused.
    #[arg(long, env = "ROTA_CALLBACK_KEY_FILE", value_name = "FILE")]
    callback_key_file: Option<PathBuf>,
    /// A URL prefix callbacks may point at (repeatable, and given here it
    /// replaces the config file's list); callbacks anywhere else are
    /// refused. A callback is an http(s) URL as the URL standard writes it,
    /// without user or password, with the prefix's scheme, host and port
    /// and a path under its path.
    #[arg(long = "allow-callback", value_name = "PREFIX")]
    allow_callback: Vec<String>,
    /// Longest a long-polling claim or a `GET /jobs/{id}/wait` blocks before
    /// it answers (keep it under the idle timeout of any proxy in front)
    /// [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_wait: Option<Duration>,
    /// Delete jobs this long after they ended (succeeded, failed or
    /// cancelled), with their tasks, payloads and results: `7d`, `12h`.
    /// One node at a time does it; by default nothing is deleted.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retain: Option<Duration>,
}

/// The `--config` file: the flags' settings, every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    store: Option<String>,
    listen: Option<String>,
    tokens: Option<PathBuf>,
    #[serde(default)]
    allow_source: Vec<String>,
    max_body: Option<String>,
    max_result: Option<String>,
    max_connections: Option<usize>,
    #[serde(default)]
    insecure_no_auth: bool,
    #[serde(default)]
    private_networks: bool,
    profile: Option<String>,
    upload_dir: Option<PathBuf>,
    max_upload: Option<String>,
    upload_expiry: Option<String>,
    upload_idle_timeout: Option<String>,
    max_open_uploads: Option<usize>,
    max_uploads_per_token: Option<usize>,
    max_upload_bytes_per_token: Option<String>,
    upload_min_free: Option<String>,
    upload_writers: Option<usize>,
    callback_key_file: Option<PathBuf>,
    #[serde(default)]
    allow_callback: Vec<String>,
    max_wait: Option<String>,
    retain: Option<String>,
    #[serde(default)]
    limits: LimitsFile,
}

/// The `[limits]` table of the config file: the bounds the server keeps
/// whatever clients ask, every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    header_timeout: Option<String>,
    request_timeout: Option<String>,
    long_requests_per_token: Option<usize>,
    websockets_per_token: Option<usize>,
    jobs_per_request: Option<usize>,
    claim_names: Option<usize>,
    batch_rows: Option<u64>,
    batch_bytes: Option<String>,
    ingests: Option<usize>,
    log_line: Option<String>,
    metric_queues: Option<usize>,
}

/// Every setting of `rota serve`, resolved.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The store URL, when the file names one (flags and the environment
    /// name it through the global `--store`).
    pub(crate) store: Option<String>,
    listen: SocketAddr,
    tokens: Option<PathBuf>,
    allow_source: Vec<String>,
    max_body: u64,
    limits: rota_server::Limits,
    insecure_no_auth: bool,
    private_networks: bool,
    profile: Option<String>,
    upload_dir: PathBuf,
    max_upload: u64,
    upload_expiry: Duration,
    upload_limits: UploadLimits,
    callback_key_file: Option<PathBuf>,
    allow_callback: Vec<String>,
    max_wait: Duration,
    retain: Option<Duration>,
}

impl ServeArgs {
    /// Merges the flags (and environment) over the config file, if any, over
    /// the defaults.
    pub(crate) fn settings(self) -> anyhow::Result<Settings> {
        let (file, base) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                let file: ConfigFile = toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (file, base)
            }
            None => (ConfigFile::default(), PathBuf::new()),
        };
        let at = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let config = &self.config;
        let or_file =
            |given: Vec<String>, file: Vec<String>| if given.is_empty() { file } else { given };
        let parse_listen = |v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|e| format!("'{v}' is not host:port ({e})"))
        };
        Ok(Settings {
            store: file.store.map(|s| store_at(&base, s)),
            listen: pick(self.listen, config, "listen", file.listen, parse_listen)?
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses")),
            tokens: self.tokens.or(file.tokens.map(at)),
            allow_source: or_file(self.allow_source, file.allow_source),
            max_body: pick(self.max_body, config, "max_body", file.max_body, parse_size)?
                .unwrap_or(rota_server::DEFAULT_MAX_BODY as u64),
            limits: limits(
                config,
                file.limits,
                pick(
                    self.max_result,
                    config,
                    "max_result",
                    file.max_result,
                    parse_size,
                )?,
                self.max_connections.or(file.max_connections),
            )?,
            insecure_no_auth: self.insecure_no_auth || file.insecure_no_auth,
            private_networks: self.private_networks || file.private_networks,
            profile: self.profile.or(file.profile),
            upload_dir: self
                .upload_dir
                .or(file.upload_dir.map(at))
                .unwrap_or_else(|| PathBuf::from("rota-uploads")),
            max_upload: pick(
                self.max_upload,
                config,
                "max_upload",
                file.max_upload,
                parse_size,
            )?
            .unwrap_or(rota_server::DEFAULT_MAX_UPLOAD),
            upload_expiry: pick(
                self.upload_expiry,
                config,
                "upload_expiry",
                file.upload_expiry,
                parse_duration,
            )?
            .unwrap_or(Duration::from_secs(24 * 3600)),
            upload_limits: UploadLimits {
                idle_timeout: pick(
                    self.upload_idle_timeout,
                    config,
                    "upload_idle_timeout",
                    file.upload_idle_timeout,
                    parse_duration,
                )?
                .unwrap_or(rota_server::DEFAULT_UPLOAD_IDLE),
                max_open: self
                    .max_open_uploads
                    .or(file.max_open_uploads)
                    .unwrap_or(rota_server::DEFAULT_MAX_OPEN_UPLOADS),
                max_open_per_token: self
                    .max_uploads_per_token
                    .or(file.max_uploads_per_token)
                    .unwrap_or(rota_server::DEFAULT_MAX_OPEN_UPLOADS_PER_TOKEN),
                max_bytes_per_token: pick(
                    self.max_upload_bytes_per_token,
                    config,
                    "max_upload_bytes_per_token",
                    file.max_upload_bytes_per_token,
                    parse_size,
                )?
                .unwrap_or(rota_server::DEFAULT_MAX_UPLOAD_BYTES_PER_TOKEN),
                min_free: pick(
                    self.upload_min_free,
                    config,
                    "upload_min_free",
                    file.upload_min_free,
                    parse_size,
                )?
                .unwrap_or(rota_server::DEFAULT_UPLOAD_MIN_FREE),
                writers: self
                    .upload_writers
                    .or(file.upload_writers)
                    .unwrap_or(rota_server::DEFAULT_UPLOAD_WRITERS),
            },
            callback_key_file: self.callback_key_file.or(file.callback_key_file.map(at)),
            allow_callback: or_file(self.allow_callback, file.allow_callback),
            max_wait: pick(
                self.max_wait,
                config,
                "max_wait",
                file.max_wait,
                parse_duration,
            )?
            .unwrap_or(Duration::from_secs(60)),
            retain: pick(self.retain, config, "retain", file.retain, parse_duration)?,
        })
    }
}

/// The server's limits: the `[limits]` table over the defaults, with the
/// flags' result size and connection count.
fn limits(
    config: &Option<PathBuf>,
    file: LimitsFile,
    max_result: Option<u64>,
    connections: Option<usize>,
) -> anyhow::Result<rota_server::Limits> {
    let d = rota_server::Limits::default();
    let duration = |key: &str, v: Option<String>, or: Duration| {
        pick(None, config, &format!("limits.{key}"), v, parse_duration).map(|v| v.unwrap_or(or))
    };
    let size = |key: &str, v: Option<String>, or: u64| {
        pick(None, config, &format!("limits.{key}"), v, parse_size).map(|v| v.unwrap_or(or))
    };
    let usize_of = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(rota_server::Limits {
        connections: connections.unwrap_or(d.connections),
        header_timeout: duration("header_timeout", file.header_timeout, d.header_timeout)?,
        request_timeout: duration("request_timeout", file.request_timeout, d.request_timeout)?,
        max_result: max_result.map_or(d.max_result, usize_of),
        long_per_token: file.long_requests_per_token.unwrap_or(d.long_per_token),
        ws_per_token: file.websockets_per_token.unwrap_or(d.ws_per_token),
        jobs_per_request: file.jobs_per_request.unwrap_or(d.jobs_per_request),
        claim_names: file.claim_names.unwrap_or(d.claim_names),
        batch_rows: file.batch_rows.unwrap_or(d.batch_rows),
        batch_bytes: size("batch_bytes", file.batch_bytes, d.batch_bytes)?,
        ingests: file.ingests.unwrap_or(d.ingests),
        log_line: usize_of(size("log_line", file.log_line, d.log_line as u64)?),
        metric_queues: file.metric_queues.unwrap_or(d.metric_queues),
        any_host: false,
    })
}

/// The limits of uploads, resolved (see [`rota_server::UploadConfig`]).
#[derive(Debug)]
struct UploadLimits {
    idle_timeout: Duration,
    max_open: usize,
    max_open_per_token: usize,
    max_bytes_per_token: u64,
    min_free: u64,
    writers: usize,
}

/// A setting: the flag's (or environment's) value if given, else the config
/// file's `key` parsed, else `None`.
fn pick<T>(
    given: Option<T>,
    config: &Option<PathBuf>,
    key: &str,
    file: Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> anyhow::Result<Option<T>> {
    if given.is_some() {
        return Ok(given);
    }
    file.map(|v| parse(&v).map_err(|e| config_error(config, key, &e)))
        .transpose()
}

/// Warns when the tokens file can be read by other users of the machine.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                "the tokens file can be read by other users: chmod 600 it"
            );
        }
    }
}

/// A store named in the config file: a relative SQLite path (plain or
/// `sqlite://PATH`) is taken from the file's directory.
fn store_at(base: &Path, store: String) -> String {
    let (scheme, path) = match store.strip_prefix("sqlite://") {
        Some(path) => ("sqlite://", path),
        None if store.contains(':') => return store,
        None => ("", store.as_str()),
    };
    if Path::new(path).is_absolute() {
        return store;
    }
    format!("{scheme}{}", base.join(path).display())
}

/// An error in the config file's `key`.
fn config_error(path: &Option<PathBuf>, key: &str, message: &str) -> anyhow::Error {
    let path = path.as_deref().unwrap_or(Path::new("?"));
    anyhow::anyhow!("config file {}: {key}: {message}", path.display())
}

pub(crate) async fn run(
    store: Arc<dyn rota_core::Store>,
    args: Settings,
) -> anyhow::Result<ExitCode> {
    let mut generated = None;
    let tokens = match &args.tokens {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
            warn_if_readable_by_others(path);
            rota_server::Tokens::parse(&text)
                .map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))?
        }
        None if args.insecure_no_auth => rota_server::Tokens::default(),
        None => {
            let (tokens, secret) = rota_server::Tokens::generate();
            generated = Some(secret);
            tokens
        }
    };
    let mut limits = args.limits.clone();
    if !tokens.enabled() && !args.listen.ip().is_loopback() {
        // Only reachable with --insecure-no-auth: the operator said anyone
        // may call, so the Host and Origin checks of loopback mode are moot.
        limits.any_host = true;
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
            expire_after: args.upload_expiry,
            max_size: args.max_upload,
            idle_timeout: args.upload_limits.idle_timeout,
            max_open: args.upload_limits.max_open,
            max_open_per_token: args.upload_limits.max_open_per_token,
            max_bytes_per_token: args.upload_limits.max_bytes_per_token,
            min_free: args.upload_limits.min_free,
            writers: args.upload_limits.writers,
            ..rota_server::UploadConfig::new(args.upload_dir.clone())
        }),
        callbacks: rota_server::CallbackConfig {
            key,
            allow: rota_server::AllowList::new(&args.allow_callback).map_err(anyhow::Error::msg)?,
            ..rota_server::CallbackConfig::default()
        },
        max_wait: args.max_wait,
        retain: args.retain,
        limits,
        private_networks: args.private_networks,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, auth = config.tokens.enabled(), "serving the API");
    // Written to stdout so that scripts can learn a port chosen by the system.
    crate::print_out(&format!("listening on http://{addr}\n"));
    if let Some(secret) = generated {
        // Shown once, here, and nowhere else (not in the log).
        crate::print_out(&format!(
            "token {secret} (admin, for this run only: give it to clients as ROTA_TOKEN; \
             start with --tokens FILE to choose tokens)\n"
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::store_at;
    use std::path::Path;

    #[test]
    fn relative_sqlite_stores_in_the_config_file_are_the_files() {
        let base = Path::new("/etc/rota");
        assert_eq!(store_at(base, "rota.db".into()), "/etc/rota/rota.db");
        assert_eq!(
            store_at(base, "sqlite://state/rota.db".into()),
            "sqlite:///etc/rota/state/rota.db"
        );
        for kept in [
            "/var/lib/rota.db",
            "sqlite:///var/lib/rota.db",
            "sqlite::memory:",
            "postgres://db/rota",
        ] {
            assert_eq!(store_at(base, kept.into()), kept);
        }
    }
}
