//! Rota's network API: applications in any language schedule jobs, follow
//! and await them, and run workers, over JSON and HTTP.
//!
//! ```text
//! POST /schedule ─► Store.create_job (+ one task, or a background ingest of a batch source)
//! GET  /jobs…     ◄─ Store.get_job / list_jobs / list_tasks / list_files
//! POST /work/claim ─► Store.claim (long poll) ─► heartbeat / complete (fenced by lease)
//! POST /uploads …  ─► tus: bytes on disk ─► followed by an ingest into a held job
//! ```
//!
//! One [`Store`] serves any number of server processes (the embedded SQLite
//! store on one machine; a shared store for several). The worker protocol is
//! described in `docs/worker-protocol.md`.

mod allow;
pub mod auth;
pub mod callbacks;
pub mod error;
mod metrics;
mod openapi;
mod routes;
mod uploads;
mod work;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rota_core::Store;
use tokio::sync::Notify;

pub use auth::{AllowList, Caller, Scope, Tokens};
pub use callbacks::CallbackConfig;
pub use error::ApiError;
pub use uploads::UploadConfig;
pub use work::{DEFAULT_INLINE_MAX, MAX_INLINE};
pub use ws::HEARTBEAT_MS;

/// Longest a request body may be, unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;
/// Longest a claim or a wait may block, unless configured otherwise.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How a server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer tokens it accepts; none: no authentication.
    pub tokens: Tokens,
    /// The sources batch jobs may read.
    pub allow: AllowList,
    /// How batch jobs reach remote sources (credentials, trust).
    pub sources: rota_sources::SourceSettings,
    /// Longest request body accepted (upload bodies aside).
    pub max_body: usize,
    /// Where uploads are kept; `None`: no `/uploads`.
    pub uploads: Option<UploadConfig>,
    /// How callbacks are signed, allowed and retried.
    pub callbacks: callbacks::CallbackConfig,
    /// Longest a long-polling claim or `GET /jobs/{id}/wait` blocks (keep it
    /// under the idle timeout of any proxy in front).
    pub max_wait: Duration,
    /// Let sources and callbacks reach loopback, private and link-local
    /// addresses by name; off (the default), only the addresses allow-list
    /// entries name as their host are reached there.
    pub private_networks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            tokens: Tokens::default(),
            allow: AllowList::default(),
            sources: rota_sources::SourceSettings::default(),
            max_body: DEFAULT_MAX_BODY,
            uploads: None,
            callbacks: callbacks::CallbackConfig::default(),
            max_wait: MAX_WAIT,
            private_networks: false,
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<Config>,
    /// Woken when tasks may have become claimable in this process, so that
    /// waiting claims need not wait for their next poll.
    pub(crate) work: Arc<Notify>,
    /// The uploads, when enabled.
    pub(crate) uploads: Option<Arc<uploads::Uploads>>,
    /// The WebSocket workers connected to this server.
    pub(crate) workers: Arc<ws::Workers>,
    /// What this process counts, for `GET /metrics`.
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// Becomes `true` when the server starts to stop.
    pub(crate) stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

/// The API's routes over `store`. Called on a Tokio runtime: the ingests of
/// uploads a stopped server left unfinished start again here.
///
/// # Errors
/// When the upload directory cannot be made or read.
pub fn router(store: Arc<dyn Store>, config: Config) -> std::io::Result<axum::Router> {
    build(store, config).map(|(router, _)| router)
}

fn build(store: Arc<dyn Store>, mut config: Config) -> std::io::Result<(axum::Router, State)> {
    config.sources.egress =
        rota_sources::Egress::server(config.allow.addresses(), config.private_networks);
    let max_body = config.max_body;
    let metrics = Arc::new(metrics::Metrics::default());
    let uploads = config
        .uploads
        .clone()
        .map(|c| uploads::Uploads::open(c, metrics.clone()))
        .transpose()?;
    let state = State {
        store,
        config: Arc::new(config),
        work: Arc::new(Notify::new()),
        uploads: uploads.clone(),
        workers: Arc::default(),
        metrics,
        stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
    };
    if let Some(uploads) = &uploads {
        uploads.resume(&state);
    }
    callbacks::spawn_dispatcher(state.clone());
    let router =
        routes::routes(state.clone()).layer(axum::extract::DefaultBodyLimit::max(max_body));
    Ok((router, state))
}

/// Serves the API on `listener` until `shutdown` completes; requests in
/// flight are finished first, and WebSocket workers are told the server is
/// stopping. Leases held by workers are left to expire (they are rescued by
/// time), so no work is lost.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (app, state) = build(store, config)?;
    let stopping = state.stopping.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        stopping.send_replace(true);
    })
    .await?;
    // WebSocket sessions outlive their requests: give them a moment to say
    // goodbye to their workers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !state.workers.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
