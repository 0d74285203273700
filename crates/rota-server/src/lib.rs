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
mod duties;
pub mod error;
mod guard;
mod ingests;
mod metrics;
mod openapi;
mod retention;
mod routes;
mod uploads;
mod work;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use rota_core::Store;
use tokio::sync::Notify;

pub use auth::{AllowList, Caller, Scope, Tokens};
pub use callbacks::CallbackConfig;
pub use error::ApiError;
pub use guard::Limits;
pub use uploads::{
    DEFAULT_MAX_OPEN_UPLOADS, DEFAULT_MAX_OPEN_UPLOADS_PER_TOKEN, DEFAULT_MAX_UPLOAD,
    DEFAULT_MAX_UPLOAD_BYTES_PER_TOKEN, DEFAULT_UPLOAD_IDLE, DEFAULT_UPLOAD_MIN_FREE,
    DEFAULT_UPLOAD_WRITERS, UploadConfig,
};
pub use work::{DEFAULT_INLINE_MAX, LEASE_TOKEN_HEADER, MAX_INLINE};
pub use ws::HEARTBEAT_MS;

/// Longest a JSON request body may be (results aside: see
/// [`Limits::max_result`]), unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 4 << 20;
/// Longest a claim or a wait may block, unless configured otherwise.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How a server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer tokens it accepts; none: no authentication.
    pub tokens: Tokens,
    /// The sources batch jobs may read.
    pub allow: AllowList,
    /// How batch jobs reach remote sources (credentials, trust), and the
    /// registry of connections the server's ingests share (bounded, closed
    /// when idle; see [`rota_sources::Connections`]).
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
    /// The bounds the server keeps whatever clients ask.
    pub limits: Limits,
    /// Let sources and callbacks reach loopback, private and link-local
    /// addresses by name; off (the default), only the addresses allow-list
    /// entries name as their host are reached there.
    pub private_networks: bool,
    /// Delete jobs this long after they ended, with everything they hold
    /// (see [`rota_core::Store::delete_ended`]); `None` keeps them.
    pub retain: Option<Duration>,
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
            limits: Limits::default(),
            private_networks: false,
            retain: None,
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
    /// The long requests each token holds.
    pub(crate) held: Arc<guard::Held>,
    /// Turns for batch ingests: [`Limits::ingests`] run at once.
    pub(crate) ingest_turns: Arc<tokio::sync::Semaphore>,
    /// The batch ingests this server runs.
    pub(crate) ingests: Arc<ingests::Ingests>,
    /// This server's identity as a holder of duties: random, new at each
    /// start (never a host name: two servers on one host are two nodes).
    pub(crate) node: String,
}

/// The API's routes over `store`. Called on a Tokio runtime: the ingests of
/// uploads a stopped server left unfinished start again here, and those of
/// batch jobs as soon as their claim runs out.
///
/// # Errors
/// When the upload directory cannot be made or read.
pub fn router(store: Arc<dyn Store>, config: Config) -> std::io::Result<axum::Router> {
    build(store, config).map(|(router, _)| router)
}

fn build(store: Arc<dyn Store>, mut config: Config) -> std::io::Result<(axum::Router, State)> {
    config.sources.egress =
        rota_sources::Egress::server(config.allow.addresses(), config.private_networks);
    // Local paths are held to the allowed directories when they are read,
    // not only when a job is checked.
    config.sources.local_roots = Some(config.allow.roots().into());
    let max_body = config.max_body;
    let metrics = Arc::new(metrics::Metrics::default());
    let uploads = config
        .uploads
        .clone()
        .map(|c| uploads::Uploads::open(c, metrics.clone()))
        .transpose()?;
    let ingest_turns = Arc::new(tokio::sync::Semaphore::new(config.limits.ingests.max(1)));
    let state = State {
        store,
        held: Arc::default(),
        ingest_turns,
        config: Arc::new(config),
        work: Arc::new(Notify::new()),
        uploads: uploads.clone(),
        workers: Arc::default(),
        metrics,
        stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        ingests: Arc::default(),
        node: format!("node-{}", uuid::Uuid::new_v4()),
    };
    tracing::info!(node = %state.node, "this server's node id (named in file records and duty terms)");
    if let Some(uploads) = &uploads {
        uploads.resume(&state);
    }
    callbacks::spawn_dispatcher(state.clone());
    retention::spawn(state.clone());
    duties::spawn_rescue(state.clone());
    ingests::spawn_resumer(state.clone());
    let router = routes::routes(state.clone())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body));
    Ok((router, state))
}

/// Serves the API on `listener` until `shutdown` completes; requests in
/// flight are finished first, and WebSocket workers are told the server is
/// stopping. Leases held by workers are left to expire (they are rescued by
/// time), so no work is lost.
///
/// Connections past [`Limits::connections`] are answered 503 and closed; a
/// client that does not send its request's headers within
/// [`Limits::header_timeout`] (or leaves its connection idle that long) is
/// disconnected.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = config.limits.clone();
    raise_open_files(limits.connections);
    let (app, state) = build(store, config)?;
    let open = Arc::new(tokio::sync::Semaphore::new(limits.connections.max(1)));
    // Told to the connections when the server stops; `done` closes when the
    // last of them has ended.
    let (closing, _) = tokio::sync::watch::channel(false);
    let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(1);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop = closing.subscribe();
        let done = done_tx.clone();
        tokio::spawn(async move {
            // A connection that ends badly (reset, timed out) concerns only
            // its client.
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop((permit, done));
        });
    }
    state.stopping.send_replace(true);
    closing.send_replace(true);
    drop(done_tx);
    let _ = done.recv().await;
    // WebSocket sessions outlive their requests: give them a moment to say
    // goodbye to their workers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !state.workers.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Raises the process's limit of open files (to its hard limit, at most)
/// so that `connections` connections fit beside the store's and uploads'
/// files; warns when they cannot.
fn raise_open_files(connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let want = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(1024);
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return;
    }
    let most = limit.maximum.unwrap_or(u64::MAX);
    limit.current = Some(want.min(most));
    if setrlimit(Resource::Nofile, limit).is_err() || most < want {
        tracing::warn!(
            connections,
            open_files = want.min(most),
            "the limit of open files is below what the connection limit needs: lower \
             --max-connections or raise the limit (ulimit -n)"
        );
    }
}

/// Answers a connection past the limit with 503 and closes it.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body =
        r#"{"error":{"code":"unavailable","message":"too many connections; try again soon"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}
