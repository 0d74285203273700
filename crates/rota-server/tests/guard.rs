//! The checks every request passes, tried the way an attacker would: over
//! raw sockets on loopback, with the requests of known attacks (no token
//! and a big body, a foreign `Host`, a foreign `Origin`,
//! headers sent a byte at a time, more connections than allowed, too many
//! long requests for one token).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rota_core::Store;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SCHEDULE: &str = "schedule-token-0123456789";
const WORK: &str = "work-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

struct Server {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    _store: Arc<dyn Store>,
}

impl Server {
    async fn start(tune: impl FnOnce(&mut rota_server::Config)) -> Self {
        let served = common::serve(|dir| common::with_uploads(dir, tune)).await;
        Self {
            addr: served.addr,
            _dir: served.dir,
            _store: served.store,
        }
    }

    async fn with_tokens() -> Self {
        Self::start(|c| c.tokens = tokens()).await
    }

    /// Sends `head` (the request line and headers, each ending in CRLF, the
    /// blank line added here) and `body` on a new connection; returns the
    /// status and the answer's text.
    async fn raw(&self, head: &str, body: &[u8]) -> (u16, String) {
        self.raw_shared(head, Arc::new(body.to_vec())).await
    }

    /// As [`Server::raw`], with a body shared with other requests (not
    /// copied: the test's own memory is measured).
    async fn raw_shared(&self, head: &str, body: Arc<Vec<u8>>) -> (u16, String) {
        let conn = TcpStream::connect(self.addr).await.expect("connect");
        let request = format!(
            "{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let (mut read, mut write) = conn.into_split();
        // Written while the answer is read: the server may answer (and
        // close) before the body is all sent.
        let writer = tokio::spawn(async move {
            if write.write_all(request.as_bytes()).await.is_ok() {
                let _ = write.write_all(&body).await;
            }
            write
        });
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut out)).await;
        writer.abort();
        answer(&out)
    }

    /// The status line answered to a `POST /schedule` of `length` bytes
    /// with `Expect: 100-continue` and the `extra` headers, before any of
    /// its body is sent.
    async fn expecting(&self, extra: &str, length: usize) -> String {
        let head = format!(
            "POST /schedule HTTP/1.1\r\nHost: {}\r\n{extra}Content-Type: application/json\r\n\
             Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n",
            self.addr
        );
        let mut conn = TcpStream::connect(self.addr).await.expect("connect");
        conn.write_all(head.as_bytes()).await.expect("write");
        let mut first = [0u8; 12];
        conn.read_exact(&mut first).await.expect("answer");
        String::from_utf8_lossy(&first).into_owned()
    }

    /// A request with the right `Host`, `token` and a JSON `body`.
    async fn json(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, String) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\n",
            self.addr
        );
        self.raw(&head, body.to_string().as_bytes()).await
    }
}

fn tokens() -> rota_server::Tokens {
    rota_server::Tokens::parse(&format!(
        "{SCHEDULE} schedule\n{WORK} work\n{ADMIN} admin\n"
    ))
    .expect("tokens")
}

/// The status and text of an HTTP answer, read to the connection's end.
async fn read_answer(conn: &mut TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut out)).await;
    answer(&out)
}

/// The status (0 for none) and text of the bytes of an HTTP answer.
fn answer(out: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Every route of the API document, with its method.
async fn routes(s: &Server) -> Vec<(String, String)> {
    let (status, text) = s
        .raw(
            &format!("GET /openapi.json HTTP/1.1\r\nHost: {}\r\n", s.addr),
            b"",
        )
        .await;
    assert_eq!(status, 200);
    let doc: Value =
        serde_json::from_str(text.split_once("\r\n\r\n").expect("body").1).expect("json");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_the_public_ones_refuses_a_request_without_a_token_before_its_body() {
    let s = Server::with_tokens().await;
    let public = [
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("OPTIONS", "/uploads"),
    ];
    let routes = routes(&s).await;
    assert!(routes.len() > 20, "{routes:?}");
    for (method, path) in &routes {
        let path = path
            .replace("{id}", "0190e5a0-0000-7000-8000-000000000000")
            .replace("{task}", "0190e5a0-0000-7000-8000-000000000000")
            .replace("{name}", "x");
        // A body that is not even JSON: refused for the token, not for it.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n",
            s.addr
        );
        let (status, text) = s.raw(&head, b"[0,0,0").await;
        if public.contains(&(method.as_str(), path.as_str())) {
            assert!(status < 400, "{method} {path}: {text}");
        } else {
            assert_eq!(status, 401, "{method} {path}: {text}");
        }
    }
    // A schedule token may not read the workers (their logs carry payload
    // data), nor a work token schedule.
    let (status, _) = s.json("GET", "/workers", SCHEDULE, &json!({})).await;
    assert_eq!(status, 403);
    let (status, _) = s.json("GET", "/workers", WORK, &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = s
        .json("POST", "/schedule", WORK, &json!({"spec": "x"}))
        .await;
    assert_eq!(status, 403);
}

/// The peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_without_a_token_are_refused_unread_while_others_are_served() {
    let s = Arc::new(Server::with_tokens().await);
    // A 16 MiB JSON array of zeros, which parsed would take about 16 times
    // its size.
    let mut big = Vec::with_capacity(16 << 20);
    big.push(b'[');
    while big.len() < (16 << 20) - 2 {
        big.extend_from_slice(b"0,");
    }
    big.extend_from_slice(b"0]");
    let big = Arc::new(big);
    let before = peak_rss();
    let mut floods = Vec::new();
    for _ in 0..50 {
        let (s, big) = (s.clone(), big.clone());
        floods.push(tokio::spawn(async move {
            let head = format!(
                "POST /schedule HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n",
                s.addr
            );
            s.raw_shared(&head, big).await
        }));
    }
    // Others are served meanwhile.
    let (status, text) = s
        .json("POST", "/schedule", SCHEDULE, &json!({"spec": "x"}))
        .await;
    assert_eq!(status, 201, "{text}");
    let (status, _) = s
        .raw(
            &format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", s.addr),
            b"",
        )
        .await;
    assert_eq!(status, 200);
    for flood in floods {
        // 401, or a connection reset when the server closed it with the
        // unread body still arriving.
        let (status, text) = flood.await.expect("join");
        assert!(status == 401 || status == 0, "{text}");
    }
    // A client that waits to be told to send its body (curl does, past
    // 1 MiB) is told 401 and sends nothing; with a token, a body past the
    // JSON limit is refused as too large, unread.
    assert_eq!(s.expecting("", big.len()).await, "HTTP/1.1 401");
    let token = format!("Authorization: Bearer {SCHEDULE}\r\n");
    assert_eq!(s.expecting(&token, big.len()).await, "HTTP/1.1 413");
    // The bodies were never held: the peak grew by much less than one
    // parsed body (about 256 MiB), let alone fifty.
    let grew = peak_rss().saturating_sub(before);
    eprintln!(
        "50 unauthenticated 16 MiB bodies: peak memory grew by {} MiB",
        grew >> 20
    );
    assert!(grew < 128 << 20, "peak memory grew by {} MiB", grew >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_idle_connections_and_too_many_connections_are_cut_off() {
    let s = Server::start(|c| {
        c.tokens = tokens();
        c.limits.header_timeout = Duration::from_secs(1);
        c.limits.connections = 20;
    })
    .await;
    // Headers sent a byte at a time, slower than the timeout allows: the
    // server hangs up.
    let mut slow = TcpStream::connect(s.addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("write");
    let started = Instant::now();
    let (status, _) = read_answer(&mut slow).await;
    assert!(status == 0 || status == 408, "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the connection was held {:?}",
        started.elapsed()
    );
    // An idle connection is closed too.
    let mut idle = TcpStream::connect(s.addr).await.expect("connect");
    let (status, _) = read_answer(&mut idle).await;
    assert_eq!(status, 0);
    // Past the limit, a connection is answered 503 at once (Retry-After),
    // and the server serves again once connections close.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(s.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, text) = s
        .raw(
            &format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", s.addr),
            b"",
        )
        .await;
    assert_eq!(status, 503, "{text}");
    assert!(text.to_lowercase().contains("retry-after: 1"), "{text}");
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _) = s
            .raw(
                &format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", s.addr),
                b"",
            )
            .await;
        if status == 200 {
            served = true;
            break;
        }
    }
    assert!(served, "the server never served again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_stop_health_checks_or_claims() {
    let s = Server::with_tokens().await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let mut c = TcpStream::connect(s.addr).await.expect("connect");
        // Half of them start a request and never finish its headers.
        if idle.len() % 2 == 0 {
            c.write_all(b"POST /work/claim HTTP/1.1\r\n")
                .await
                .expect("write");
        }
        idle.push(c);
    }
    let mut slowest = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, text) = tokio::time::timeout(
            Duration::from_secs(10),
            s.raw(
                &format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", s.addr),
                b"",
            ),
        )
        .await
        .expect("healthz answers");
        assert_eq!(status, 200, "{text}");
        slowest.0 = slowest.0.max(started.elapsed());
        let started = Instant::now();
        let (status, text) = tokio::time::timeout(
            Duration::from_secs(10),
            s.json("POST", "/work/claim", WORK, &json!({"worker": "w"})),
        )
        .await
        .expect("a claim answers");
        assert_eq!(status, 200, "{text}");
        slowest.1 = slowest.1.max(started.elapsed());
    }
    // A figure for the record, not a bound: the bounds above are generous
    // for a loaded machine.
    eprintln!(
        "1000 idle connections: slowest /healthz {:?}, slowest claim {:?}",
        slowest.0, slowest.1
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_only_programs_on_this_machine_are_served() {
    let s = Server::start(|_| {}).await;
    let ok = |status: u16| (200..300).contains(&status);
    // DNS rebinding: a page whose name now resolves to 127.0.0.1.
    let (status, text) = s
        .raw("GET /jobs HTTP/1.1\r\nHost: attacker.example:7878\r\n", b"")
        .await;
    assert_eq!(status, 403, "{text}");
    let (status, _) = s.raw("GET /jobs HTTP/1.1\r\n", b"").await;
    assert!(status == 400 || status == 403, "no Host: {status}");
    for host in [s.addr.to_string(), format!("localhost:{}", s.addr.port())] {
        let (status, text) = s
            .raw(&format!("GET /jobs HTTP/1.1\r\nHost: {host}\r\n"), b"")
            .await;
        assert!(ok(status), "{host}: {text}");
    }
    // Cross-site WebSocket hijacking: the browser sends the page's Origin.
    let upgrade = |origin: &str| {
        format!(
            "GET /work HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Origin: {origin}\r\n",
            s.addr
        )
    };
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    conn.write_all(format!("{}\r\n", upgrade("http://evil.example")).as_bytes())
        .await
        .expect("write");
    let (status, text) = read_answer(&mut conn).await;
    assert_eq!(status, 403, "{text}");
    let mut conn = TcpStream::connect(s.addr).await.expect("connect");
    conn.write_all(format!("{}\r\n", upgrade(&format!("http://{}", s.addr))).as_bytes())
        .await
        .expect("write");
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.expect("answer");
    assert_eq!(&head, b"HTTP/1.1 101", "a local page may");
    // CSRF: a cross-site text/plain body to the one-shot upload.
    let head = format!(
        "POST /uploads/stream?spec=send-email&format=ndjson HTTP/1.1\r\nHost: {}\r\n\
         Origin: https://evil.example\r\nContent-Type: text/plain\r\n",
        s.addr
    );
    let (status, text) = s.raw(&head, b"{\"to\":\"victim@corp.example\"}\n").await;
    assert_eq!(status, 403, "{text}");
    let (status, text) = s
        .raw(&format!("GET /jobs HTTP/1.1\r\nHost: {}\r\n", s.addr), b"")
        .await;
    assert!(ok(status), "{text}");
    let jobs: Value =
        serde_json::from_str(text.split_once("\r\n\r\n").expect("body").1).expect("json");
    assert_eq!(jobs["jobs"], json!([]), "nothing was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_sizes_and_counts_are_capped_by_the_server() {
    let s = Server::start(|c| {
        c.tokens = tokens();
        c.allow =
            rota_server::AllowList::new(&[std::env::temp_dir().to_string_lossy().into_owned()])
                .expect("allow");
        c.limits.jobs_per_request = 3;
        c.limits.long_per_token = 2;
    })
    .await;
    let source = std::env::temp_dir().join("x.ndjson");
    let source = source.to_string_lossy();
    for (batch, refused) in [
        (json!({"source": source, "max_rows": 1_000_001}), "max_rows"),
        (
            json!({"source": source, "max_bytes": 1u64 << 40}),
            "max_bytes",
        ),
        (
            json!({"source": source, "format": "raw", "options": {"max_inline": "1099511627776"}}),
            "max_inline",
        ),
        (
            json!({"source": source, "format": "parquet", "options": {"max_spool": "1125899906842624"}}),
            "max_spool",
        ),
    ] {
        let (status, text) = s
            .json(
                "POST",
                "/schedule",
                SCHEDULE,
                &json!({"spec": "x", "batch": batch}),
            )
            .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(refused) && text.contains("at most"), "{text}");
    }
    let jobs: Vec<Value> = (0..4).map(|_| json!({"spec": "x"})).collect();
    let (status, text) = s
        .json("POST", "/schedule", SCHEDULE, &json!({"jobs": jobs}))
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("at most 3"), "{text}");
    let queues: Vec<String> = (0..101).map(|i| format!("q{i}")).collect();
    let (status, text) = s
        .json(
            "POST",
            "/work/claim",
            WORK,
            &json!({"worker": "w", "queues": queues}),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    // Long polls per token: the third waits for nothing, it is refused.
    let s = Arc::new(s);
    let mut polls = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        polls.push(tokio::spawn(async move {
            s.json(
                "POST",
                "/work/claim",
                WORK,
                &json!({"worker": "w", "wait_ms": 3000}),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, text) = s
        .json(
            "POST",
            "/work/claim",
            WORK,
            &json!({"worker": "w", "wait_ms": 3000}),
        )
        .await;
    assert_eq!(status, 429, "{text}");
    assert!(text.to_lowercase().contains("retry-after"), "{text}");
    // Another token is not held back by this one's.
    let (status, text) = s
        .json("POST", "/work/claim", ADMIN, &json!({"worker": "w"}))
        .await;
    assert_eq!(status, 200, "{text}");
    for poll in polls {
        assert_eq!(poll.await.expect("join").0, 200);
    }
    let (status, text) = s
        .json("POST", "/work/claim", WORK, &json!({"worker": "w"}))
        .await;
    assert_eq!(status, 200, "the permits came back: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_cannot_grow_the_metrics_without_bound() {
    let s = Server::start(|c| {
        c.tokens = tokens();
        c.limits.metric_queues = 5;
    })
    .await;
    let jobs: Vec<Value> = (0..12)
        .map(|i| json!({"spec": "x", "queue": format!("q{i:02}")}))
        .collect();
    let (status, text) = s
        .json("POST", "/schedule", SCHEDULE, &json!({"jobs": jobs}))
        .await;
    assert_eq!(status, 201, "{text}");
    let (status, text) = s.json("GET", "/metrics", SCHEDULE, &json!({})).await;
    assert_eq!(status, 200, "{text}");
    let queues: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("rota_tasks{"))
        .filter_map(|l| l.split("queue=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(queues.len(), 6, "{queues:?}");
    assert!(queues.contains("other"), "{queues:?}");
    let queued: u64 = text
        .lines()
        .filter(|l| l.starts_with("rota_tasks{") && l.contains("state=\"queued\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(queued, 12, "every task still counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_url_holds_no_lease_token_and_the_fetch_sends_it_in_a_header() {
    let s = Server::with_tokens().await;
    let (status, text) = s
        .json(
            "POST",
            "/schedule",
            SCHEDULE,
            &json!({"spec": "x", "params": {"text": "y".repeat(100)}}),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let (status, text) = s
        .json(
            "POST",
            "/work/claim",
            WORK,
            &json!({"worker": "w", "inline_max_bytes": 10}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let claimed: Value =
        serde_json::from_str(text.split_once("\r\n\r\n").expect("body").1).expect("json");
    let task = &claimed["tasks"][0];
    let url = task["payload_url"].as_str().expect("a payload url");
    let lease = task["lease_token"].as_str().expect("a lease token");
    assert!(
        !url.contains(lease) && !url.contains("lease_token"),
        "{url}"
    );
    let get = |extra: String| {
        format!(
            "GET {url} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {WORK}\r\n{extra}",
            s.addr
        )
    };
    let (status, text) = s.raw(&get(String::new()), b"").await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("Rota-Lease-Token") || text.contains("rota-lease-token"),
        "{text}"
    );
    let (status, text) = s
        .raw(
            &get("Rota-Lease-Token: 0f5c0000-0000-4000-8000-000000000000\r\n".into()),
            b"",
        )
        .await;
    assert_eq!(status, 409, "another lease: {text}");
    let (status, text) = s
        .raw(&get(format!("Rota-Lease-Token: {lease}\r\n")), b"")
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&"y".repeat(100)), "{text}");
}

/// The body of an answer as JSON.
fn body_of(text: &str) -> Value {
    serde_json::from_str(text.split_once("\r\n\r\n").map_or("", |(_, b)| b))
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_results_ends_once_they_reach_the_largest_result_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rows.ndjson");
    std::fs::write(&file, "{\"n\": 1}\n{\"n\": 2}\n{\"n\": 3}\n").expect("data");
    let root = dir.path().to_string_lossy().into_owned();
    let s = Server::start(|c| {
        c.tokens = tokens();
        c.allow = rota_server::AllowList::new(&[root]).expect("allow");
        c.limits.max_result = 1000;
    })
    .await;
    let batch = json!({"source": file.to_string_lossy(), "max_rows": 1});
    let (status, text) = s
        .json(
            "POST",
            "/schedule",
            SCHEDULE,
            &json!({"spec": "x", "batch": batch}),
        )
        .await;
    assert_eq!(status, 201, "{text}");
    let job = body_of(&text)["jobs"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Each of the three tasks gets a result of 600 bytes.
    let mut done = 0;
    for _ in 0..50 {
        let (_, text) = s
            .json(
                "POST",
                "/work/claim",
                WORK,
                &json!({"worker": "w", "limit": 3, "wait_ms": 1000}),
            )
            .await;
        let reports: Vec<Value> = body_of(&text)["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| {
                json!({"task_id": t["task_id"], "attempt": t["attempt"],
                       "lease_token": t["lease_token"], "result": "r".repeat(598)})
            })
            .collect();
        done += reports.len();
        // One a request: a body holds one result of the largest size.
        for report in reports {
            let (status, text) = s
                .json(
                    "POST",
                    "/work/complete",
                    WORK,
                    &json!({"reports": [report]}),
                )
                .await;
            assert_eq!(status, 200, "{text}");
        }
        if done == 3 {
            break;
        }
    }
    assert_eq!(done, 3, "the three tasks were worked");
    let page = |after: Option<String>| {
        let path = match after {
            Some(key) => format!(
                "/jobs/{job}/tasks?results=true&after={}",
                key.replace('#', "%23")
            ),
            None => format!("/jobs/{job}/tasks?results=true"),
        };
        let s = &s;
        async move {
            let (status, text) = s.json("GET", &path, SCHEDULE, &Value::Null).await;
            assert_eq!(status, 200, "{text}");
            body_of(&text)
        }
    };
    // 600 + 600 bytes reach the bound of 1000: the page ends there, and
    // the next one holds the rest.
    let first = page(None).await;
    assert_eq!(
        first["tasks"].as_array().expect("tasks").len(),
        2,
        "{first}"
    );
    let next = first["next_after"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = page(Some(next)).await;
    assert_eq!(
        second["tasks"].as_array().expect("tasks").len(),
        1,
        "{second}"
    );
    assert!(second["next_after"].is_null(), "{second}");
}
