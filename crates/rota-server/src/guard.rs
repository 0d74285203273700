//! What every request passes before its handler runs, in one place: the
//! token and its scope (checked before a byte of the body is read), the
//! `Host` and `Origin` of requests to a server without tokens, a deadline
//! for requests that should be quick, and the per-token count of requests
//! that hold the server's attention for long (long polls, event streams,
//! WebSocket sessions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State as Extract};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::{Caller, Scope, State};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the health check, the API document, tus discovery.
    Public,
    /// Any valid token.
    AnyToken,
    /// A token with this scope (or admin).
    Scope(Scope),
}

/// How long a route may take to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pace {
    /// Answers within the request timeout, its body read included.
    Quick,
    /// Waits for something (at most `max_wait`), then answers; counted
    /// against the token's long requests.
    LongPoll,
    /// Streams for as long as it lasts (uploads, event streams, WebSocket
    /// sessions): bounded by idle timeouts of its own, not a deadline.
    Stream,
}

/// Who may call `method path` (the route's pattern), and how long it may
/// take. A route missing here needs an admin token: new routes are closed
/// until they are named.
pub(crate) fn rule(method: &Method, path: &str) -> (Access, Pace) {
    use Access::{AnyToken, Public};
    use Pace::{LongPoll, Quick, Stream};
    let schedule = Access::Scope(Scope::Schedule);
    let work = Access::Scope(Scope::Work);
    match (method.as_str(), path) {
        ("GET" | "HEAD", "/healthz" | "/openapi.json") | ("OPTIONS", "/uploads") => (Public, Quick),
        ("GET" | "HEAD", "/metrics" | "/specs" | "/specs/{name}") => (AnyToken, Quick),
        ("POST", "/schedule")
        | ("GET" | "HEAD", "/jobs" | "/jobs/{id}" | "/jobs/{id}/tasks" | "/jobs/{id}/files")
        | ("POST", "/jobs/{id}/cancel" | "/jobs/{id}/requeue" | "/uploads")
        | ("GET" | "HEAD" | "DELETE", "/uploads/{id}") => (schedule, Quick),
        ("GET" | "HEAD", "/jobs/{id}/wait") => (schedule, LongPoll),
        ("GET" | "HEAD", "/jobs/{id}/events") | ("PATCH", "/uploads/{id}") => (schedule, Stream),
        ("POST", "/uploads/stream") => (schedule, Stream),
        ("POST", "/work/heartbeat" | "/work/complete")
        | ("GET" | "HEAD", "/work/tasks/{task}/payload" | "/workers") => (work, Quick),
        ("POST", "/work/claim") => (work, LongPoll),
        ("GET", "/work") => (work, Stream),
        _ => (Access::Scope(Scope::Admin), Quick),
    }
}

/// The middleware: refuses what may not pass, before the handler (and so
/// before the body is read), and hands the handler the [`Caller`].
pub(crate) async fn guard(
    Extract(state): Extract<State>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = matched.as_ref().map_or("", MatchedPath::as_str);
    let (access, pace) = rule(req.method(), path);
    let config = &state.config;
    if !config.tokens.enabled()
        && !config.limits.any_host
        && let Err(e) = local_only(req.headers())
    {
        return e.into_response();
    }
    let caller = match access {
        Access::Public => None,
        Access::AnyToken => Some(config.tokens.caller(req.headers(), None)),
        Access::Scope(scope) => Some(config.tokens.caller(req.headers(), Some(scope))),
    };
    let permit = match caller.transpose() {
        Err(e) => return e.into_response(),
        Ok(None) => None,
        Ok(Some(caller)) => {
            // Upload bodies are bounded by the uploads' own quotas (open
            // uploads per token), not by the long requests'.
            let permit = if pace == Pace::Quick || path.starts_with("/uploads") {
                None
            } else {
                match state.held.take(&caller, path, &config.limits) {
                    // A WebSocket session outlives its request: it takes
                    // the permit along.
                    Ok(p) if path == "/work" => {
                        req.extensions_mut().insert(Arc::new(p));
                        None
                    }
                    Ok(p) => Some(p),
                    Err(e) => return retry_soon(e.into_response()),
                }
            };
            req.extensions_mut().insert(caller);
            permit
        }
    };
    // A body said to be past the route's limit is refused before a byte of
    // it is read (a client waiting on `Expect: 100-continue` sends none).
    if pace != Pace::Stream
        && let Some(length) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    {
        let most = if path == "/work/complete" {
            config.limits.max_result
        } else {
            config.max_body
        };
        if length > most as u64 {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is {length} bytes; this server takes at most {most}"),
            )
            .into_response();
        }
    }
    let limit = match pace {
        Pace::Quick => Some(config.limits.request_timeout),
        Pace::LongPoll => Some(config.limits.request_timeout + config.max_wait),
        Pace::Stream => None,
    };
    let response = match limit {
        Some(limit) => match tokio::time::timeout(limit, next.run(req)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request took longer than {} s (a body sent too slowly?)",
                    limit.as_secs()
                ),
            )
            .into_response(),
        },
        None => next.run(req).await,
    };
    match permit {
        // A stream holds its permit for as long as its body lasts.
        Some(permit) if pace == Pace::Stream => {
            let (parts, body) = response.into_parts();
            let body = axum::body::Body::from_stream(futures::StreamExt::map(
                body.into_data_stream(),
                move |chunk| {
                    let _held = &permit;
                    chunk
                },
            ));
            Response::from_parts(parts, body)
        }
        _ => response,
    }
}

/// Refuses what a web page could send to a server without tokens: a `Host`
/// other than a loopback name or address (DNS rebinding), and an `Origin`
/// that is not a loopback page (cross-site requests and WebSockets).
fn local_only(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |what: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{what}: a server without tokens answers only requests made to a loopback \
                 address by programs on this machine (start it with --tokens to serve others)"
            ),
        )
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !loopback_host(host) {
        return Err(refuse("the Host header does not name this machine"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let local = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https") && loopback_host(host)
            });
        if !local {
            return Err(refuse("requests from web pages elsewhere are refused"));
        }
    }
    Ok(())
}

/// Whether `host` (a `Host` header: a name or address, perhaps with a port)
/// is this machine's loopback.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((addr, port)) if port.is_empty() || port.starts_with(':') => addr,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return false;
    }
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Requests that hold the server's attention for long, counted per token.
#[derive(Default)]
pub(crate) struct Held(Arc<Mutex<HashMap<(String, bool), usize>>>);

/// One counted long request; dropping it uncounts it.
pub(crate) struct Permit {
    counts: Arc<Mutex<HashMap<(String, bool), usize>>>,
    key: (String, bool),
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl Held {
    /// Counts one more long request of `caller` to `path`: WebSocket
    /// sessions against `ws_per_token`, long polls and event streams against
    /// `long_per_token`.
    ///
    /// # Errors
    /// 429, with `Retry-After`, when the token holds as many as it may.
    pub(crate) fn take(
        &self,
        caller: &Caller,
        path: &str,
        limits: &Limits,
    ) -> Result<Permit, ApiError> {
        let ws = path == "/work";
        let most = if ws {
            limits.ws_per_token
        } else {
            limits.long_per_token
        };
        let key = (caller.id.clone(), ws);
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(key.clone()).or_default();
        if *n >= most {
            let what = if ws {
                "WebSocket sessions"
            } else {
                "long polls and event streams"
            };
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("this token already holds {n} {what}, the most it may (try again later)"),
            ));
        }
        *n += 1;
        Ok(Permit {
            counts: self.0.clone(),
            key,
        })
    }
}

/// The bounds a server keeps, whatever its clients ask. Clients may ask
/// for less, never more.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most connections open at once; more are answered 503 and closed.
    pub connections: usize,
    /// Longest a client may take to send a request's headers (and longest
    /// an idle connection stays open).
    pub header_timeout: Duration,
    /// Longest a quick request may take, its body included (long polls get
    /// `max_wait` more; uploads, event streams and WebSockets are bounded by
    /// idle timeouts instead).
    pub request_timeout: Duration,
    /// Longest JSON body of the worker's results (`/work/complete`, and a
    /// WebSocket message).
    pub max_result: usize,
    /// Most long polls (`/work/claim`, `/jobs/{id}/wait`) and event streams
    /// one token holds at once.
    pub long_per_token: usize,
    /// Most WebSocket worker sessions one token holds at once.
    pub ws_per_token: usize,
    /// Most jobs in one `POST /schedule`.
    pub jobs_per_request: usize,
    /// Most queues, and most specs, one claim names.
    pub claim_names: usize,
    /// Largest batch a job may ask for: most rows and most bytes per task.
    pub batch_rows: u64,
    /// See `batch_rows`.
    pub batch_bytes: u64,
    /// Most batch ingests running at once; more wait their turn (their jobs
    /// are held meanwhile).
    pub ingests: usize,
    /// Longest worker log line or alert kept (longer ones are cut).
    pub log_line: usize,
    /// Most distinct queues named in `GET /metrics` (the rest are summed as
    /// `other`).
    pub metric_queues: usize,
    /// Serve requests whatever their `Host` and `Origin` when there are no
    /// tokens (for a server without tokens behind a proxy that checks them).
    pub any_host: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 4096,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_result: 16 << 20,
            long_per_token: 256,
            ws_per_token: 1024,
            jobs_per_request: 1000,
            claim_names: 100,
            batch_rows: 1_000_000,
            batch_bytes: 256 << 20,
            ingests: 8,
            log_line: 4096,
            metric_queues: 100,
            any_host: false,
        }
    }
}

/// `Retry-After: 1` on an answer that asks the client to come back.
pub(crate) fn retry_soon(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_nothing_else() {
        for ok in [
            "127.0.0.1:7878",
            "127.0.0.1",
            "localhost:7878",
            "LOCALHOST",
            "[::1]:7878",
            "[::1]",
            "127.9.9.9:1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "attacker.example:7878",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:7878",
            "[::1]x",
            "[::2]:7878",
            "10.0.0.1:7878",
            "0.0.0.0:7878",
            "localhost:abc",
            "127.0.0.1:7878:1",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn routes_not_named_need_an_admin() {
        assert_eq!(
            rule(&Method::POST, "/something/new").0,
            Access::Scope(Scope::Admin)
        );
        assert_eq!(rule(&Method::GET, "/workers").0, Access::Scope(Scope::Work));
        assert_eq!(
            rule(&Method::PUT, "/specs/{name}").0,
            Access::Scope(Scope::Admin)
        );
    }
}
