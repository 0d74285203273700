//! A worker SDK over the WebSocket worker protocol (`docs/worker-protocol.md`).
//!
//! Implement [`Handler`]: it gets a [`Task`] (spec, params, payload) and
//! returns the result as JSON, or a [`TaskError`]. [`run`] registers,
//! keeps `capacity` tasks going, heartbeats once a second with the progress
//! handlers set ([`Task::progress`]), drops a task's future when its lease
//! is lost or its job is cancelled, reports results, and reconnects with
//! backoff when the connection breaks (leases still held are heartbeated
//! again from the new connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::{Client, Error};

/// One task handed to a [`Handler`].
#[derive(Clone, Debug)]
pub struct Task {
    /// The task's id.
    pub id: i64,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Its job's id.
    pub job_id: String,
    /// Its key in the job.
    pub key: String,
    /// The job's spec.
    pub spec: String,
    /// The job's params.
    pub params: Value,
    /// The payload's encoding (`json`, `ndjson`, `csv`, `arrow`).
    pub encoding: String,
    /// Records in the payload.
    pub rows: u64,
    /// The payload's bytes.
    pub payload: Vec<u8>,
    progress: Arc<Mutex<Option<Value>>>,
}

impl Task {
    /// Sets the progress sent with the next heartbeat (any JSON value, such
    /// as `{"done": 400, "total": 1000}`); applications see it on the job.
    pub fn progress(&self, value: Value) {
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    }

    /// The payload's records, for the JSON encodings (`json`: the array's
    /// elements; `ndjson`: one per line).
    ///
    /// # Errors
    /// When the payload is not JSON of that shape.
    pub fn records(&self) -> Result<Vec<Value>, TaskError> {
        let bad = |e: serde_json::Error| TaskError::fatal(format!("payload is not JSON: {e}"));
        match self.encoding.as_str() {
            "ndjson" => self
                .payload
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).map_err(bad))
                .collect(),
            _ => match serde_json::from_slice(&self.payload).map_err(bad)? {
                Value::Array(items) => Ok(items),
                other => Ok(vec![other]),
            },
        }
    }
}

/// Why a task failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// What went wrong (kept on the task).
    pub message: String,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl TaskError {
    /// A failure another attempt may not have.
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no attempt will fix: the task is dead at once.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// The work a worker does.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Does one task; its result is kept on the task.
    async fn run(&self, task: Task) -> Result<Value, TaskError>;
}

/// How a worker registers.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The worker's name (shown on its tasks).
    pub name: String,
    /// Queues it takes tasks from.
    pub queues: Vec<String>,
    /// Specs it implements; empty: any.
    pub specs: Vec<String>,
    /// Most tasks at once.
    pub capacity: u32,
    /// Lease per task without a heartbeat.
    pub lease: Duration,
    /// Stop after this long without any task; `None`: run until the server
    /// stops for good or the connection cannot be made again.
    pub idle_exit: Option<Duration>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            name: "rota-client".into(),
            queues: vec![rota_core::default_queue()],
            specs: Vec::new(),
            capacity: 4,
            lease: Duration::from_secs(10),
            idle_exit: None,
        }
    }
}

/// What a worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Tasks it was given.
    pub assigned: u64,
    /// Tasks it reported as succeeded.
    pub succeeded: u64,
    /// Tasks it reported as failed.
    pub failed: u64,
    /// Tasks it dropped: lease lost or job cancelled.
    pub dropped: u64,
    /// Reports the server refused (a stale lease).
    pub refused: u64,
    /// Times it connected.
    pub connections: u64,
}

/// A task in hand.
struct Running {
    lease: Value,
    progress: Arc<Mutex<Option<Value>>>,
    abort: tokio::task::AbortHandle,
}

/// Tries to connect this many times in a row before giving up.
const CONNECT_ATTEMPTS: u32 = 6;

/// Runs a worker against `client`'s server until it is idle for
/// `opts.idle_exit`, or the server stays unreachable.
///
/// # Errors
/// When the server refuses the worker (token, registration), or cannot be
/// reached after several attempts.
pub async fn run(
    client: &Client,
    opts: WorkerOptions,
    handler: Arc<dyn Handler>,
) -> Result<WorkerSummary, Error> {
    let mut summary = WorkerSummary::default();
    let mut running: HashMap<i64, Running> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(i64, Result<Value, TaskError>)>();
    let mut failures = 0;
    loop {
        let ws = match connect(client).await {
            Ok(ws) => ws,
            Err(e) if e.is_retryable() && failures < CONNECT_ATTEMPTS => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(250 << failures)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        failures = 0;
        summary.connections += 1;
        let ended = session(
            ws,
            client,
            &opts,
            &handler,
            &mut running,
            &done_tx,
            &mut done_rx,
            &mut summary,
        )
        .await?;
        if ended {
            for (_, r) in running.drain() {
                r.abort.abort();
            }
            return Ok(summary);
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(client: &Client) -> Result<Socket, Error> {
    let url = format!("{}/work", client.base.replacen("http", "ws", 1));
    let mut req = url
        .into_client_request()
        .map_err(|e| Error::Protocol(e.to_string()))?;
    if let Some(t) = client.token() {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}")
                .parse()
                .map_err(|_| Error::Protocol("the token is not a valid header".into()))?,
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let text = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(crate::api_error(resp.status(), &text))
        }
        Err(e) => Err(Error::Transport(e.to_string())),
    }
}

async fn send(ws: &mut Socket, value: &Value) -> bool {
    ws.send(Message::text(value.to_string())).await.is_ok()
}

/// The task as a handler gets it, with its payload (fetched when not inline).
async fn task_of(client_base: &str, token: Option<&str>, t: &Value) -> Result<Task, TaskError> {
    let payload = if let Some(text) = t["payload"].as_str() {
        text.as_bytes().to_vec()
    } else if let Some(b64) = t["payload_base64"].as_str() {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| TaskError::retry(format!("payload is not base64: {e}")))?
    } else if let Some(url) = t["payload_url"].as_str() {
        let mut req = reqwest::Client::new().get(format!("{client_base}{url}"));
        if let Some(lease) = t["lease_token"].as_str() {
            req = req.header("Rota-Lease-Token", lease);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| TaskError::retry(format!("cannot fetch the payload: {e}")))?;
        if !resp.status().is_success() {
            return Err(TaskError::retry(format!(
                "fetching the payload answered {}",
                resp.status()
            )));
        }
        resp.bytes()
            .await
            .map_err(|e| TaskError::retry(format!("cannot fetch the payload: {e}")))?
            .to_vec()
    } else {
        Vec::new()
    };
    Ok(Task {
        id: t["task_id"].as_i64().unwrap_or_default(),
        attempt: t["attempt"]
            .as_u64()
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(1),
        job_id: t["job_id"].as_str().unwrap_or_default().to_owned(),
        key: t["key"].as_str().unwrap_or_default().to_owned(),
        spec: t["spec"].as_str().unwrap_or_default().to_owned(),
        params: t["params"].clone(),
        encoding: t["encoding"].as_str().unwrap_or("json").to_owned(),
        rows: t["rows"].as_u64().unwrap_or_default(),
        payload,
        progress: Arc::default(),
    })
}

/// One connection's life. Returns `Ok(true)` when the worker should stop
/// (idle), `Ok(false)` to reconnect.
#[allow(clippy::too_many_arguments)]
async fn session(
    mut ws: Socket,
    client: &Client,
    opts: &WorkerOptions,
    handler: &Arc<dyn Handler>,
    running: &mut HashMap<i64, Running>,
    done_tx: &mpsc::UnboundedSender<(i64, Result<Value, TaskError>)>,
    done_rx: &mut mpsc::UnboundedReceiver<(i64, Result<Value, TaskError>)>,
    summary: &mut WorkerSummary,
) -> Result<bool, Error> {
    let register = json!({
        "type": "register", "worker": opts.name, "queues": opts.queues, "specs": opts.specs,
        "capacity": opts.capacity, "lease_ms": opts.lease.as_millis(),
        "hostname": std::env::var("HOSTNAME").ok(), "os": std::env::consts::OS,
        "version": concat!("rota-client ", env!("CARGO_PKG_VERSION")),
    });
    if !send(&mut ws, &register).await {
        return Ok(false);
    }
    match ws.next().await {
        Some(Ok(Message::Text(t))) => {
            let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
            if v["type"] != "registered" {
                return Err(Error::Api {
                    status: 400,
                    code: v["error"]["code"].as_str().unwrap_or("invalid").to_owned(),
                    message: v["error"]["message"]
                        .as_str()
                        .unwrap_or("registration refused")
                        .to_owned(),
                });
            }
        }
        _ => return Ok(false),
    }
    let base = (client.base.clone(), client.token().map(str::to_owned));
    let free = |running: &HashMap<i64, Running>| {
        opts.capacity
            .saturating_sub(u32::try_from(running.len()).unwrap_or(u32::MAX))
    };
    // Leases held from before a reconnect are heartbeated at once, which
    // makes them this connection's.
    if !send(&mut ws, &beat(running)).await
        || !send(&mut ws, &json!({ "type": "ready", "slots": free(running) })).await
    {
        return Ok(false);
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut idle_since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(false),
                    Some(Ok(_)) => continue,
                };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("assign") => {
                        summary.assigned += 1;
                        idle_since = tokio::time::Instant::now();
                        let t = v["task"].clone();
                        let id = t["task_id"].as_i64().unwrap_or_default();
                        let lease = json!({ "task_id": t["task_id"], "attempt": t["attempt"], "lease_token": t["lease_token"] });
                        let handler = handler.clone();
                        let done = done_tx.clone();
                        let (base, token) = (base.0.clone(), base.1.clone());
                        let progress: Arc<Mutex<Option<Value>>> = Arc::default();
                        let shared = progress.clone();
                        let abort = tokio::spawn(async move {
                            let outcome = match task_of(&base, token.as_deref(), &t).await {
                                Ok(mut task) => {
                                    task.progress = shared;
                                    handler.run(task).await
                                }
                                Err(e) => Err(e),
                            };
                            let _ = done.send((id, outcome));
                        })
                        .abort_handle();
                        running.insert(id, Running { lease, progress, abort });
                    }
                    Some("heartbeat_ack") => {
                        for item in v["tasks"].as_array().into_iter().flatten() {
                            let lost = item["ok"] != true || item["cancel_requested"] == true;
                            if let (true, Some(id)) = (lost, item["task_id"].as_i64())
                                && let Some(r) = running.remove(&id)
                            {
                                r.abort.abort();
                                summary.dropped += 1;
                                if item["cancel_requested"] == true {
                                    let mut report = r.lease.clone();
                                    report["type"] = json!("result");
                                    report["error"] = json!("the job was cancelled");
                                    report["retryable"] = json!(false);
                                    if !send(&mut ws, &report).await { return Ok(false); }
                                }
                            }
                        }
                        if !send(&mut ws, &json!({ "type": "ready", "slots": free(running) })).await {
                            return Ok(false);
                        }
                    }
                    Some("result_ack") if v["ok"] != true => summary.refused += 1,
                    Some("shutdown") => return Ok(false),
                    _ => {}
                }
            }
            Some((id, outcome)) = done_rx.recv() => {
                let Some(r) = running.remove(&id) else { continue };
                let mut report = r.lease;
                report["type"] = json!("result");
                match outcome {
                    Ok(result) => {
                        summary.succeeded += 1;
                        report["result"] = result;
                    }
                    Err(e) => {
                        summary.failed += 1;
                        report["error"] = json!(e.message);
                        report["retryable"] = json!(e.retryable);
                    }
                }
                idle_since = tokio::time::Instant::now();
                if !send(&mut ws, &report).await
                    || !send(&mut ws, &json!({ "type": "ready", "slots": free(running) })).await
                {
                    return Ok(false);
                }
            }
            _ = ticker.tick() => {
                if let Some(idle) = opts.idle_exit
                    && running.is_empty()
                    && idle_since.elapsed() >= idle
                {
                    let _ = ws.close(None).await;
                    return Ok(true);
                }
                if !send(&mut ws, &beat(running)).await {
                    return Ok(false);
                }
            }
        }
    }
}

/// A heartbeat naming every task in hand, with its progress.
fn beat(running: &HashMap<i64, Running>) -> Value {
    let tasks: Vec<Value> = running
        .values()
        .map(|r| {
            let mut item = r.lease.clone();
            if let Some(p) = r
                .progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
            {
                item["progress"] = p;
            }
            item
        })
        .collect();
    json!({ "type": "heartbeat", "tasks": tasks })
}
