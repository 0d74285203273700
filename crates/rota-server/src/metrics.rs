//! `GET /metrics`: the server's counters and the store's task counts in the
//! Prometheus text format (version 0.0.4).
//!
//! Counters count what this process did since it started; rates (claims per
//! second, rows ingested per second) are Prometheus' `rate()` of them. Task
//! counts are the store's, shared by every server on it.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State as Extract;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use rota_core::{StoreError, TaskState};

use crate::State;
use crate::error::ApiError;

/// What this process counts.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    claimed: AtomicU64,
    /// Reports by the state they left their task in, and refused ones.
    succeeded: AtomicU64,
    retrying: AtomicU64,
    dead: AtomicU64,
    refused: AtomicU64,
    upload_bytes: AtomicU64,
    callback_deliveries: AtomicU64,
    callback_failures: AtomicU64,
    /// Every ingest this server runs counts into this one.
    pub(crate) ingest: Arc<rota_ingest::Progress>,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub(crate) fn claimed(&self, n: usize) {
        add(&self.claimed, n as u64);
    }

    pub(crate) fn reported(&self, states: &[Result<TaskState, StoreError>]) {
        for s in states {
            add(
                match s {
                    Ok(TaskState::Succeeded) => &self.succeeded,
                    Ok(TaskState::Retrying) => &self.retrying,
                    Ok(_) => &self.dead,
                    Err(_) => &self.refused,
                },
                1,
            );
        }
    }

    pub(crate) fn uploaded(&self, bytes: u64) {
        add(&self.upload_bytes, bytes);
    }

    pub(crate) fn callback(&self, delivered: bool) {
        add(
            if delivered {
                &self.callback_deliveries
            } else {
                &self.callback_failures
            },
            1,
        );
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Writes one metric's help, type and samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The `most` queues with the most tasks, by name, and the rest summed as
/// one queue named `other` (when there are more): the queues clients name
/// cannot grow the series without bound.
fn busiest(
    counts: std::collections::BTreeMap<String, rota_core::TaskCounts>,
    most: usize,
) -> Vec<(String, rota_core::TaskCounts)> {
    if counts.len() <= most {
        return counts.into_iter().collect();
    }
    let mut all: Vec<_> = counts.into_iter().collect();
    all.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(&b.0)));
    let rest = all.split_off(most);
    let mut other = rota_core::TaskCounts::default();
    for (_, c) in rest {
        other.total += c.total;
        other.scheduled += c.scheduled;
        other.queued += c.queued;
        other.running += c.running;
        other.retrying += c.retrying;
        other.succeeded += c.succeeded;
        other.dead += c.dead;
        other.cancelled += c.cancelled;
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.push(("other".to_owned(), other));
    all
}

/// A label value escaped as the text format asks.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String), (status = 401, description = "No valid token", body = crate::openapi::ErrorBody)))]
pub(crate) async fn metrics(
    Extract(state): Extract<State>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    state.config.tokens.check(&headers, None)?;
    let counts = state.store.task_counts().await?;
    let m = &state.metrics;
    let mut out = String::with_capacity(4096);
    let mut tasks = Vec::new();
    for (queue, c) in &busiest(counts, state.config.limits.metric_queues) {
        let q = label(queue);
        for (name, n) in [
            ("scheduled", c.scheduled),
            ("queued", c.queued),
            ("running", c.running),
            ("retrying", c.retrying),
            ("succeeded", c.succeeded),
            ("dead", c.dead),
            ("cancelled", c.cancelled),
        ] {
            tasks.push((format!("{{queue=\"{q}\",state=\"{name}\"}}"), n));
        }
    }
    family(
        &mut out,
        "rota_tasks",
        "gauge",
        "Tasks in the store, by queue and state.",
        &tasks,
    );
    family(
        &mut out,
        "rota_tasks_claimed_total",
        "counter",
        "Tasks handed to workers by this server.",
        &[(String::new(), get(&m.claimed))],
    );
    family(
        &mut out,
        "rota_task_reports_total",
        "counter",
        "Worker reports by the state they left the task in (refused: stale lease).",
        &[
            ("{outcome=\"succeeded\"}".into(), get(&m.succeeded)),
            ("{outcome=\"retrying\"}".into(), get(&m.retrying)),
            ("{outcome=\"dead\"}".into(), get(&m.dead)),
            ("{outcome=\"refused\"}".into(), get(&m.refused)),
        ],
    );
    let ingest = &m.ingest;
    family(
        &mut out,
        "rota_ingest_rows_total",
        "counter",
        "Rows this server's ingests (batch jobs and uploads) made into tasks.",
        &[(String::new(), get(&ingest.rows))],
    );
    family(
        &mut out,
        "rota_ingest_bytes_total",
        "counter",
        "Bytes this server's ingests read from their sources.",
        &[(String::new(), get(&ingest.bytes))],
    );
    family(
        &mut out,
        "rota_ingest_tasks_total",
        "counter",
        "Tasks this server's ingests stored.",
        &[(String::new(), get(&ingest.tasks))],
    );
    family(
        &mut out,
        "rota_upload_bytes_total",
        "counter",
        "Upload bytes received and synced to disk.",
        &[(String::new(), get(&m.upload_bytes))],
    );
    family(
        &mut out,
        "rota_callback_deliveries_total",
        "counter",
        "Callbacks delivered (answered 2xx).",
        &[(String::new(), get(&m.callback_deliveries))],
    );
    family(
        &mut out,
        "rota_callback_failures_total",
        "counter",
        "Callback attempts that failed (an error, a timeout or a non-2xx answer).",
        &[(String::new(), get(&m.callback_failures))],
    );
    family(
        &mut out,
        "rota_workers_connected",
        "gauge",
        "WebSocket workers connected to this server.",
        &[(String::new(), state.workers.len() as u64)],
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    ))
}
