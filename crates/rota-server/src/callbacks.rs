//! Callbacks: URLs a job POSTs to when it changes state, signed with
//! HMAC-SHA256 and retried with backoff, their delivery state kept in the
//! store (so any server on it may deliver them, and a restart loses none).
//!
//! A delivery carries the job's state at the time it was leased; states the
//! job passed through between two looks may be coalesced, but every state a
//! job ends in is announced.

use std::time::Duration;

use chrono::Utc;
use hmac::{KeyInit as _, Mac as _};
use rota_core::{CallbackDue, CallbackOutcome, CallbackStatus, JobState, NewCallback};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{AllowList, State};

/// Most callbacks per job.
pub const MAX_CALLBACKS: usize = 10;
/// How often to look for due deliveries.
const POLL: Duration = Duration::from_millis(250);
/// Most deliveries in flight from one server.
const IN_FLIGHT: u32 = 16;

/// How a server delivers callbacks.
#[derive(Clone)]
pub struct CallbackConfig {
    /// The HMAC-SHA256 key deliveries are signed with; without one, jobs
    /// with callbacks are refused.
    pub key: Option<Vec<u8>>,
    /// The URL prefixes callbacks may point at; empty: none.
    pub allow: AllowList,
    /// The wait before the second attempt; it doubles each attempt.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// Attempts per state before giving up on it.
    pub max_attempts: u32,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for CallbackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackConfig")
            .field("key", &self.key.as_ref().map(|_| "<secret>"))
            .field("allow", &self.allow)
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            key: None,
            allow: AllowList::default(),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A callback as `/schedule` takes it: a URL, or a URL with the states to
/// announce.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum CallbackRequest {
    Url(String),
    Full {
        url: String,
        #[serde(default)]
        events: Vec<JobState>,
    },
}

impl CallbackRequest {
    pub(crate) fn into_new(self) -> NewCallback {
        match self {
            Self::Url(url) => NewCallback {
                url,
                events: Vec::new(),
            },
            Self::Full { url, events } => NewCallback { url, events },
        }
    }
}

/// Checks a job's callbacks against the server's configuration.
pub(crate) fn check(
    config: &CallbackConfig,
    callbacks: &[CallbackRequest],
) -> Result<(), ApiError> {
    if callbacks.is_empty() {
        return Ok(());
    }
    if callbacks.len() > MAX_CALLBACKS {
        return Err(ApiError::invalid(format!(
            "a job may have at most {MAX_CALLBACKS} callbacks"
        )));
    }
    if config.key.is_none() {
        return Err(ApiError::invalid(
            "this server signs no callbacks: start it with --callback-key-file to take jobs with callbacks",
        ));
    }
    for c in callbacks {
        let (CallbackRequest::Url(url) | CallbackRequest::Full { url, .. }) = c;
        config.allow.check_callback(url)?;
    }
    Ok(())
}

/// A callback as the jobs API shows it: its URL without path, query or
/// credentials (webhook URLs often hold their secret there).
pub(crate) fn status_json(c: &CallbackStatus) -> Value {
    let mut shown = json!(c);
    shown["url"] = Value::String(origin(&c.url));
    shown
}

/// `scheme://host[:port]/…` of a URL, as the delivery reads it.
fn origin(url: &str) -> String {
    match rota_sources::RemoteUrl::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_port()),
        Err(_) => "…".to_owned(),
    }
}

/// The `Rota-Signature` header of `body` sent at `t` (seconds since the
/// epoch): `t=T,v1=HEX` where HEX is HMAC-SHA256 of `T.BODY` under `key`.
pub fn signature(key: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Delivers due callbacks until the server stops.
pub(crate) fn spawn_dispatcher(state: State) {
    let Some(key) = state.config.callbacks.key.clone() else {
        return;
    };
    tokio::spawn(async move {
        // Redirects are never followed: the server's egress filter.
        let egress = rota_sources::Egress::server(
            state.config.callbacks.allow.addresses(),
            state.config.private_networks,
        );
        let client = match egress
            .configure(reqwest::Client::builder())
            .timeout(state.config.callbacks.timeout)
            .user_agent(concat!("rota/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the callback client; no callbacks will be delivered");
                return;
            }
        };
        let mut stopping = state.stopping.subscribe();
        // A lease long enough for a timed-out attempt and its record.
        let lease = state.config.callbacks.timeout * 2 + Duration::from_secs(5);
        loop {
            let due = match state.store.due_callbacks(IN_FLIGHT, lease).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look for due callbacks; will retry");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => continue,
                    _ = stopping.changed() => return,
                }
            }
            let deliveries = due.iter().map(|d| deliver(&state, &client, &key, d));
            futures::future::join_all(deliveries).await;
        }
    });
}

/// The body a delivery POSTs: the event, the job, and for a job of one
/// task that succeeded, that task's result.
async fn body(state: &State, due: &CallbackDue) -> Result<Vec<u8>, ApiError> {
    let job = state
        .store
        .get_job(due.job)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {}", due.job)))?;
    let mut out = json!({ "event": due.state, "job": crate::routes::shown(job.clone()) });
    if due.state == JobState::Succeeded
        && let Some(result) = crate::routes::job_result(state, &job).await?
    {
        out["result"] = result;
    }
    Ok(out.to_string().into_bytes())
}

async fn deliver(state: &State, client: &reqwest::Client, key: &[u8], due: &CallbackDue) {
    let config = &state.config.callbacks;
    let attempted = async {
        // Checked again when sent: the allow-list may have changed since the
        // job was made.
        config
            .allow
            .check_callback(&due.url)
            .map_err(|e| (None, e.message))?;
        let body = body(state, due).await.map_err(|e| (None, e.message))?;
        let t = Utc::now().timestamp();
        let delivery = format!("{}:{}:{}", due.job, due.index, due.state);
        let answer = client
            .post(&due.url)
            .header("content-type", "application/json")
            .header("rota-event", due.state.as_str())
            .header("rota-job-id", due.job.to_string())
            .header("rota-delivery", delivery)
            .header("rota-attempt", due.attempt.to_string())
            .header("rota-signature", signature(key, t, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| (None, describe(&e)))?;
        let status = answer.status().as_u16();
        if answer.status().is_success() {
            Ok(status)
        } else {
            Err((Some(status), format!("answered HTTP {status}")))
        }
    }
    .await;
    let outcome = match attempted {
        Ok(status) => {
            tracing::info!(job = %due.job, callback = due.index, event = %due.state, status, "callback delivered");
            CallbackOutcome::Delivered { status }
        }
        Err((status, error)) => {
            let retry_at = (due.attempt < config.max_attempts).then(|| {
                let wait = config
                    .backoff
                    .saturating_mul(1 << due.attempt.saturating_sub(1).min(20))
                    .min(config.backoff_max);
                Utc::now() + wait
            });
            tracing::warn!(
                job = %due.job, callback = due.index, event = %due.state, attempt = due.attempt,
                error = %error, gave_up = retry_at.is_none(), "callback failed"
            );
            CallbackOutcome::Failed {
                status,
                error,
                retry_at,
            }
        }
    };
    state
        .metrics
        .callback(matches!(outcome, CallbackOutcome::Delivered { .. }));
    if let Err(e) = state.store.record_callback(due, outcome).await {
        tracing::warn!(job = %due.job, callback = due.index, error = %e, "cannot record a callback's delivery; it will be attempted again");
    }
}

/// A send error without the URL (which may hold a secret).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut why = String::new();
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    if why.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {why}")
    }
}

#[cfg(test)]
mod tests {
    use hmac::KeyInit as _;

    use super::{origin, signature};

    #[test]
    fn origins_hide_paths_queries_and_credentials() {
        assert_eq!(
            origin("https://u:p@hooks.example.com:8443/T0/B1/secret?x=1"),
            "https://hooks.example.com:8443/…"
        );
        assert_eq!(origin("http://127.0.0.1:9/"), "http://127.0.0.1:9/…");
    }

    #[test]
    fn signatures_are_hmac_sha256_of_time_and_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature(b"Jefe", 0, b"what do ya want for nothing?");
        assert_eq!(sig, signature(b"Jefe", 0, b"what do ya want for nothing?"));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").expect("key");
        hmac::Mac::update(&mut mac, b"what do ya want for nothing?");
        let hex: String = hmac::Mac::finalize(mac)
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(sig.starts_with("t=0,v1=") && sig.len() == "t=0,v1=".len() + 64);
    }
}
