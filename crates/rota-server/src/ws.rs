//! The worker protocol over WebSocket, at `GET /work`: a worker registers,
//! says how many slots it has free and is sent tasks as they come; on the
//! same connection it heartbeats (with per-task progress, log lines,
//! alerts, CPU and memory) and reports results. `docs/worker-protocol.md`
//! is the protocol's description; this is its server side.
//!
//! The connection holds nothing the store does not: when it drops, the
//! worker's leases run out and their tasks are claimed again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State as Extract;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rota_core::{ClaimRequest, Heartbeat, LeaseRef, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::work::{BeatBody, ReportBody, ack_json, default_queues, lease_duration, state_json};
use crate::{Scope, State};

/// How often a worker heartbeats: at least once a second.
pub const HEARTBEAT_MS: u64 = 1_000;
/// A worker's lease unless it asks for another.
const DEFAULT_LEASE_MS: u64 = 10_000;
/// Longest wait for the first message.
const REGISTER_WITHIN: Duration = Duration::from_secs(10);
/// How often to look for work for a worker with free slots, when no
/// schedule in this process said there is some.
const CLAIM_POLL: Duration = Duration::from_millis(250);
/// Log lines and alerts kept per worker for `GET /workers`.
const KEEP_LINES: usize = 50;
/// The answer to a binary frame.
const NOT_TEXT: &str = "messages are JSON text frames";
/// Most messages handled together.
const MAX_BATCH: usize = 256;

/// The worker's first message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    /// The worker's name, recorded on the tasks it claims.
    worker: String,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default = "default_queues")]
    queues: Vec<String>,
    /// The specs it implements; none: any.
    #[serde(default)]
    specs: Vec<String>,
    /// Most tasks it runs at once.
    capacity: u32,
    #[serde(default)]
    lease_ms: Option<u64>,
    #[serde(default)]
    inline_max_bytes: Option<usize>,
    /// The worker program's own version, for the operators.
    #[serde(default)]
    version: Option<String>,
}

/// A log line or an alert a worker sent.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    task_id: Option<TaskId>,
    #[serde(default)]
    level: Option<String>,
    message: String,
    #[serde(default = "Utc::now")]
    at: DateTime<Utc>,
}

/// Messages after registration.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Incoming {
    Ready {
        slots: u32,
    },
    Heartbeat {
        #[serde(default)]
        cpu: Option<f64>,
        #[serde(default)]
        ram_bytes: Option<u64>,
        #[serde(default)]
        tasks: Vec<BeatBody>,
        #[serde(default)]
        logs: Vec<Line>,
        #[serde(default)]
        alerts: Vec<Line>,
    },
    Result(ReportBody),
    /// Many results in one message, answered as if sent one by one.
    Results {
        results: Vec<ReportBody>,
    },
    Register(Box<Register>),
}

/// A connected worker, as `GET /workers` shows it.
#[derive(Clone, Debug, Serialize)]
struct WorkerView {
    session: String,
    worker: String,
    hostname: Option<String>,
    os: Option<String>,
    version: Option<String>,
    queues: Vec<String>,
    specs: Vec<String>,
    capacity: u32,
    connected_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    cpu: Option<f64>,
    ram_bytes: Option<u64>,
    tasks: Vec<TaskId>,
    logs: VecDeque<Line>,
    alerts: VecDeque<Line>,
}

/// The workers connected to this server, by session.
#[derive(Debug, Default)]
pub(crate) struct Workers(Mutex<HashMap<String, WorkerView>>);

impl Workers {
    fn with(&self, session: &str, f: impl FnOnce(&mut WorkerView)) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(view) = all.get_mut(session) {
            f(view);
        }
    }

    fn insert(&self, view: WorkerView) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(view.session.clone(), view);
    }

    fn remove(&self, session: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(session);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    fn list(&self) -> Vec<WorkerView> {
        let mut all: Vec<WorkerView> = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (&a.worker, &a.session).cmp(&(&b.worker, &b.session)));
        all
    }
}

/// `lines`, each message cut to at most `most` bytes (at a character
/// boundary, marked with `…`), and only the last [`KEEP_LINES`] of them.
fn cut_lines(mut lines: Vec<Line>, most: usize) -> Vec<Line> {
    if lines.len() > KEEP_LINES {
        lines.drain(..lines.len() - KEEP_LINES);
    }
    for line in &mut lines {
        cut(&mut line.message, most);
        if let Some(level) = &mut line.level {
            cut(level, 32);
        }
    }
    lines
}

/// Cuts `text` to at most `most` bytes at a character boundary, marking
/// the cut with `…`.
fn cut(text: &mut String, most: usize) {
    if text.len() > most {
        let mut end = most;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

fn push_lines(into: &mut VecDeque<Line>, lines: Vec<Line>) {
    for line in lines {
        if into.len() == KEEP_LINES {
            into.pop_front();
        }
        into.push_back(line);
    }
}

/// `GET /workers`: the WebSocket workers connected to this server.
#[utoipa::path(get, path = "/workers", tag = "work", responses((status = 200, description = "The WebSocket workers connected to this server", body = crate::openapi::WorkersList), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody)))]
pub(crate) async fn list_workers(
    Extract(state): Extract<State>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.config.tokens.check(&headers, Some(Scope::Work))?;
    Ok(Json(json!({ "workers": state.workers.list() })))
}

/// `GET /work`: checks the token, then speaks the protocol on the upgraded
/// connection.
#[utoipa::path(get, path = "/work", tag = "work", responses((status = 101, description = "The WebSocket worker protocol (docs/worker-protocol.md)"), (status = 400, description = "Not a WebSocket upgrade", body = crate::openapi::ErrorBody), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody), (status = 403, description = "The token lacks the scope", body = crate::openapi::ErrorBody)))]
pub(crate) async fn upgrade(
    Extract(state): Extract<State>,
    headers: HeaderMap,
    permit: Option<axum::Extension<std::sync::Arc<crate::guard::Permit>>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = state.config.tokens.check(&headers, Some(Scope::Work)) {
        return e.into_response();
    }
    match ws {
        Ok(ws) => ws
            .max_message_size(state.config.limits.max_result)
            .on_upgrade(move |socket| async move {
                // Counted against the token for as long as the session lasts.
                let _permit = permit;
                session(socket, state).await;
            }),
        Err(e) => ApiError::new(
            e.status(),
            "invalid",
            format!(
                "GET /work is the WebSocket worker protocol: {}",
                e.body_text()
            ),
        )
        .into_response(),
    }
}

fn text(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

fn error_message(code: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "code": code, "message": message } })
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
}

/// Waits for the worker's `register` message, and checks it (`most`
/// queues and specs).
async fn registration(socket: &mut WebSocket, most: usize) -> Result<Register, String> {
    let first = tokio::time::timeout(REGISTER_WITHIN, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(_)) => {
                    return Err("the first message must be register, as JSON text".to_owned());
                }
                Some(Err(e)) => return Err(format!("the connection broke: {e}")),
                None => return Err("the connection closed".to_owned()),
            }
        }
    })
    .await
    .map_err(|_| format!("no register message within {REGISTER_WITHIN:?}"))??;
    match serde_json::from_str::<Incoming>(&first) {
        Ok(Incoming::Register(r)) => {
            if r.worker.trim().is_empty() {
                return Err("register: name the worker".to_owned());
            }
            if r.capacity == 0 || r.capacity > 1000 {
                return Err("register: capacity must be 1 to 1000".to_owned());
            }
            if r.queues.is_empty() {
                return Err("register: name at least one queue".to_owned());
            }
            crate::work::names_within(&r.queues, &r.specs, most)
                .map_err(|e| format!("register: {}", e.message))?;
            Ok(*r)
        }
        Ok(_) => Err("the first message must be register".to_owned()),
        Err(e) => Err(format!("register: {e}")),
    }
}

/// One worker's connection.
struct Conn {
    state: State,
    session: String,
    claim: ClaimRequest,
    capacity: u32,
    inline_max: usize,
    /// The leases this worker holds, by task.
    held: HashMap<TaskId, LeaseRef>,
    /// Tasks it may still be sent.
    wanted: u32,
    /// When next to look for work for it.
    next_claim: Instant,
}

async fn session(mut socket: WebSocket, state: State) {
    let reg = match registration(&mut socket, state.config.limits.claim_names).await {
        Ok(r) => r,
        Err(why) => {
            let _ = socket.send(text(&error_message("invalid", &why))).await;
            close(&mut socket, close_code::POLICY, "register first").await;
            return;
        }
    };
    let lease = lease_duration(reg.lease_ms, DEFAULT_LEASE_MS);
    let inline_max = reg
        .inline_max_bytes
        .unwrap_or(crate::work::DEFAULT_INLINE_MAX)
        .min(crate::work::MAX_INLINE);
    let session = uuid::Uuid::now_v7().to_string();
    let now = Utc::now();
    state.workers.insert(WorkerView {
        session: session.clone(),
        worker: reg.worker.clone(),
        hostname: reg.hostname,
        os: reg.os,
        version: reg.version,
        queues: reg.queues.clone(),
        specs: reg.specs.clone(),
        capacity: reg.capacity,
        connected_at: now,
        last_seen: now,
        cpu: None,
        ram_bytes: None,
        tasks: Vec::new(),
        logs: VecDeque::new(),
        alerts: VecDeque::new(),
    });
    tracing::info!(worker = ?reg.worker, session = %session, capacity = reg.capacity, "worker connected");
    let mut conn = Conn {
        claim: ClaimRequest {
            queues: reg.queues,
            worker: reg.worker.clone(),
            limit: 0,
            lease,
            specs: reg.specs,
            // Payloads sent by URL are not read by the claim at all.
            inline_max: Some(inline_max as u64),
        },
        capacity: reg.capacity,
        inline_max,
        held: HashMap::new(),
        wanted: 0,
        next_claim: Instant::now(),
        state: state.clone(),
        session: session.clone(),
    };
    let hello = json!({
        "type": "registered", "session": session,
        "heartbeat_ms": HEARTBEAT_MS, "lease_ms": lease.as_millis(),
    });
    let why = if socket.send(text(&hello)).await.is_ok() {
        conn.run(&mut socket).await
    } else {
        "the connection broke".to_owned()
    };
    state.workers.remove(&session);
    tracing::info!(
        worker = ?reg.worker, session = %session, held = conn.held.len(), reason = %why,
        "worker disconnected; the leases it held expire unless it comes back"
    );
}

impl Conn {
    /// Serves the connection until it ends; returns why it did.
    async fn run(&mut self, socket: &mut WebSocket) -> String {
        let mut stopping = self.state.stopping.subscribe();
        // Nothing heard for a lease's length: the worker is gone.
        let silence = self.claim.lease.max(Duration::from_secs(5));
        let mut heard = Instant::now();
        loop {
            // Listen before looking, so that a schedule made while claiming
            // wakes the next wait.
            let woken = self.state.work.notified();
            let due = self.next_claim;
            tokio::select! {
                msg = socket.recv() => {
                    let text = match msg {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            heard = Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let e = error_message("invalid", NOT_TEXT);
                            if socket.send(text(&e)).await.is_err() { return "the connection broke".into(); }
                            continue;
                        }
                        Some(Ok(Message::Close(_))) | None => return "the worker closed the connection".into(),
                        Some(Err(e)) => return format!("the connection broke: {e}"),
                    };
                    heard = Instant::now();
                    // Take what else has arrived, so that results (and
                    // readies) sent together are handled together: one
                    // store call for many results, one claim for many slots.
                    let mut bytes = text.len();
                    let mut batch = vec![text];
                    let mut ended = None;
                    let mut binary = 0;
                    // At most the largest message's size is gathered (a
                    // turn takes at least one message): what a session
                    // buffers stays within twice `max_result`.
                    let most_bytes = self.state.config.limits.max_result;
                    while batch.len() < MAX_BATCH && bytes < most_bytes {
                        match futures::FutureExt::now_or_never(socket.recv()) {
                            Some(Some(Ok(Message::Text(t)))) => {
                                bytes += t.len();
                                batch.push(t);
                            }
                            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                            Some(Some(Ok(Message::Binary(_)))) => binary += 1,
                            Some(Some(Ok(Message::Close(_))) | None) => {
                                ended = Some("the worker closed the connection".to_owned());
                                break;
                            }
                            Some(Some(Err(e))) => {
                                ended = Some(format!("the connection broke: {e}"));
                                break;
                            }
                            None => break,
                        }
                    }
                    let mut answers = self.handle(&batch).await;
                    answers.extend(
                        (0..binary).map(|_| error_message("invalid", NOT_TEXT)),
                    );
                    for answer in answers {
                        if socket.send(crate::ws::text(&answer)).await.is_err() {
                            return "the connection broke".into();
                        }
                    }
                    if let Some(why) = ended {
                        return why;
                    }
                }
                () = wait_for_work(due, woken, &*self.state.store, &self.claim.queues), if self.wanted > 0 => {
                    match self.assign().await {
                        Ok(tasks) => {
                            for task in tasks {
                                if socket.send(crate::ws::text(&task)).await.is_err() {
                                    return "the connection broke".into();
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(session = %self.session, error = %e, "claim for a worker failed; will retry");
                            self.next_claim = Instant::now() + CLAIM_POLL;
                        }
                    }
                }
                () = tokio::time::sleep_until((heard + silence).into()) => {
                    let e = error_message("timeout", "nothing heard from the worker for a lease's length");
                    let _ = socket.send(crate::ws::text(&e)).await;
                    close(socket, close_code::POLICY, "silent").await;
                    return "the worker fell silent".into();
                }
                _ = stopping.changed() => {
                    let _ = socket.send(crate::ws::text(&json!({ "type": "shutdown" }))).await;
                    close(socket, close_code::AWAY, "the server is stopping").await;
                    return "the server is stopping".into();
                }
            }
        }
    }

    /// Claims tasks for the free slots and turns them into `assign` messages.
    async fn assign(&mut self) -> Result<Vec<Value>, ApiError> {
        let mut req = self.claim.clone();
        req.limit = self.wanted.min(100);
        let leases = self.state.store.claim(req).await?;
        self.state.metrics.claimed(leases.len());
        self.next_claim = if leases.is_empty() {
            Instant::now() + CLAIM_POLL
        } else {
            Instant::now()
        };
        self.wanted = self
            .wanted
            .saturating_sub(u32::try_from(leases.len()).unwrap_or(u32::MAX));
        let lease_ms = self.claim.lease.as_millis();
        let mut out = Vec::with_capacity(leases.len());
        for lease in &leases {
            self.held.insert(lease.lease.task, lease.lease);
            out.push(json!({
                "type": "assign",
                "task": crate::work::lease_json(lease, self.inline_max, lease_ms),
            }));
        }
        self.show_tasks();
        Ok(out)
    }

    fn show_tasks(&self) {
        let mut tasks: Vec<TaskId> = self.held.keys().copied().collect();
        tasks.sort();
        self.state.workers.with(&self.session, |w| w.tasks = tasks);
    }

    fn free(&self) -> u32 {
        self.capacity
            .saturating_sub(u32::try_from(self.held.len()).unwrap_or(u32::MAX))
    }

    /// Answers messages that arrived together: results are reported to
    /// the store in one call, and the last `ready` counts once they are.
    async fn handle(&mut self, messages: &[axum::extract::ws::Utf8Bytes]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut results = Vec::new();
        let mut ready = None;
        for message in messages {
            let incoming = match serde_json::from_str::<Incoming>(message) {
                Ok(m) => m,
                Err(e) => {
                    out.push(error_message("invalid", &e.to_string()));
                    continue;
                }
            };
            match incoming {
                Incoming::Register(_) => out.push(error_message("invalid", "already registered")),
                Incoming::Ready { slots } => ready = Some(slots),
                Incoming::Heartbeat {
                    cpu,
                    ram_bytes,
                    tasks,
                    logs,
                    alerts,
                } => out.extend(self.heartbeat(cpu, ram_bytes, tasks, logs, alerts).await),
                Incoming::Result(report) => results.push(report),
                Incoming::Results { results: many } => results.extend(many),
            }
        }
        if !results.is_empty() {
            out.extend(self.report(results).await);
        }
        if let Some(slots) = ready {
            // Never more than its capacity, counting what it holds.
            self.wanted = slots.min(self.free());
            self.next_claim = Instant::now();
        }
        out
    }

    /// Reports results in one store call; answers each.
    async fn report(&mut self, results: Vec<ReportBody>) -> Vec<Value> {
        let tasks: Vec<TaskId> = results.iter().map(|r| r.task_id).collect();
        let reports = results.into_iter().map(ReportBody::into_report).collect();
        let answers: Vec<Value> = match self.state.store.report(reports).await {
            Ok(states) => {
                self.state.metrics.reported(&states);
                for task in &tasks {
                    self.held.remove(task);
                }
                states.into_iter().map(state_json).collect()
            }
            Err(e) => {
                let e = ApiError::from(e).to_json();
                tasks
                    .iter()
                    .map(|_| json!({ "ok": false, "error": e }))
                    .collect()
            }
        };
        self.show_tasks();
        // A retried task may be claimable again.
        self.state.work.notify_waiters();
        tasks
            .into_iter()
            .zip(answers)
            .map(|(task, mut answer)| {
                answer["type"] = json!("result_ack");
                answer["task_id"] = json!(task);
                answer
            })
            .collect()
    }

    /// Extends every lease the worker holds (with the progress it gives for
    /// some), records what it says of itself, and answers per task.
    async fn heartbeat(
        &mut self,
        cpu: Option<f64>,
        ram_bytes: Option<u64>,
        tasks: Vec<BeatBody>,
        logs: Vec<Line>,
        alerts: Vec<Line>,
    ) -> Vec<Value> {
        let most = self.state.config.limits.log_line;
        let (logs, alerts) = (cut_lines(logs, most), cut_lines(alerts, most));
        // The worker's words go in a field, quoted and escaped: a line break
        // in them cannot start a log line of its own.
        for line in &logs {
            tracing::info!(worker = ?self.claim.worker, task = ?line.task_id, level = ?line.level, text = ?line.message, "worker log");
        }
        for line in &alerts {
            tracing::warn!(worker = ?self.claim.worker, task = ?line.task_id, level = ?line.level, text = ?line.message, "worker alert");
        }
        self.state.workers.with(&self.session, |w| {
            w.last_seen = Utc::now();
            w.cpu = cpu.or(w.cpu);
            w.ram_bytes = ram_bytes.or(w.ram_bytes);
            push_lines(&mut w.logs, logs);
            push_lines(&mut w.alerts, alerts);
        });
        let mut beats: Vec<Heartbeat> = Vec::with_capacity(self.held.len().max(tasks.len()));
        let named: std::collections::HashSet<TaskId> = tasks.iter().map(|t| t.task_id).collect();
        for t in tasks {
            beats.push(t.into_heartbeat());
        }
        for (task, lease) in &self.held {
            if !named.contains(task) {
                beats.push((*lease).into());
            }
        }
        if beats.is_empty() {
            return Vec::new();
        }
        let leases: Vec<LeaseRef> = beats.iter().map(|b| b.lease).collect();
        let acks = match self.state.store.heartbeat(beats, self.claim.lease).await {
            Ok(acks) => acks,
            Err(e) => {
                return vec![error_message(
                    ApiError::from(e).code,
                    "heartbeat failed; send the next",
                )];
            }
        };
        let mut out = Vec::with_capacity(acks.len());
        for (lease, ack) in leases.into_iter().zip(acks) {
            let task = lease.task;
            // A lease named by a worker that reconnected is this
            // connection's now.
            if ack.is_ok() {
                self.held.insert(task, lease);
            } else {
                self.held.remove(&task);
            }
            let mut item = ack_json(ack);
            item["task_id"] = json!(task);
            out.push(item);
        }
        self.show_tasks();
        vec![json!({ "type": "heartbeat_ack", "tasks": out })]
    }
}

/// Returns at `due`, or earlier when this process or the store (another
/// node) says there is new work.
async fn wait_for_work(
    due: Instant,
    woken: tokio::sync::futures::Notified<'_>,
    store: &dyn rota_core::Store,
    queues: &[String],
) {
    let now = Instant::now();
    if now < due {
        tokio::select! {
            () = woken => {}
            () = store.wait_for_work(queues, due - now) => {}
        }
    }
}
