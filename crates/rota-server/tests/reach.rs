//! Where a server's connections may go: callbacks and batch sources are
//! checked by one URL parser, names that resolve to loopback addresses are
//! not reached unless an allow-list entry names the address, redirects are
//! not followed, and passwords never reach job records. Every target is a
//! real HTTP server on 127.0.0.1 that counts the requests it gets.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const KEY: &[u8] = b"callback-key-for-tests";
const CSV: &str = "id,name\n1,a\n2,b\n";

struct Server {
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(config: rota_server::Config) -> Self {
        let served = common::serve(|_| config).await;
        Self {
            url: served.url,
            client: reqwest::Client::new(),
            _dir: served.dir,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut r = self.client.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        (resp.status(), resp.text().await.expect("body"))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, text) = self.call(reqwest::Method::POST, path, Some(body)).await;
        (status, serde_json::from_str(&text).expect("json"))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.call(reqwest::Method::GET, path, None).await;
        (status, serde_json::from_str(&text).expect("json"))
    }

    /// Every job, as `GET /jobs` answers, as text.
    async fn all_jobs_text(&self) -> String {
        self.call(reqwest::Method::GET, "/jobs", None).await.1
    }

    /// Schedules a batch of `source` and waits for its job to end.
    async fn batch(&self, source: &str) -> Value {
        let (status, body) = self
            .post(
                "/schedule",
                json!({ "spec": "import", "batch": { "source": source } }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{source}: {body}");
        let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
        self.get(&format!("/jobs/{id}/wait?timeout=30s")).await.1
    }
}

/// What a test server answers.
#[derive(Clone, Copy)]
enum Answer {
    /// The CSV file, to any path.
    File,
    /// `302` to this location.
    Redirect(&'static str),
}

/// A real HTTP/1.1 server on 127.0.0.1 that counts its requests.
struct Target {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Target {
    async fn start(answer: impl Fn(u16) -> Answer + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (counted, answer) = (counted.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&head);
                    let body_too = !text.starts_with("HEAD ");
                    let response = match answer(port) {
                        Answer::File => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\
                             Last-Modified: Mon, 07 Dec 2026 00:00:00 GMT\r\nETag: \"v1\"\r\n\
                             Connection: close\r\n\r\n{}",
                            CSV.len(),
                            if body_too { CSV } else { "" }
                        ),
                        Answer::Redirect(to) => format!(
                            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\
                             Connection: close\r\n\r\n"
                        ),
                    };
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Self { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn allow(entries: &[String]) -> rota_server::AllowList {
    rota_server::AllowList::new(entries).expect("allow")
}

fn with_callbacks(entries: &[String]) -> rota_server::Config {
    rota_server::Config {
        callbacks: rota_server::CallbackConfig {
            key: Some(KEY.to_vec()),
            allow: allow(entries),
            backoff: Duration::from_millis(20),
            max_attempts: 2,
            ..rota_server::CallbackConfig::default()
        },
        ..rota_server::Config::default()
    }
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Makes a job with `callbacks`, and cancels it so that a delivery is due.
async fn cancelled_job_with(s: &Server, callbacks: Value) -> (StatusCode, Value) {
    let (status, body) = s
        .post("/schedule", json!({ "spec": "x", "callbacks": callbacks }))
        .await;
    if status == StatusCode::CREATED {
        let id = body["jobs"][0]["id"].as_str().expect("id");
        s.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_the_url_standard_sends_elsewhere_are_refused_and_nothing_is_posted() {
    let inside = Target::start(|_| Answer::File).await;
    let s = Server::start(with_callbacks(&[
        "http://hooks.example.com/".to_owned(),
        "https://hooks.example.com/".to_owned(),
    ]))
    .await;
    let p = inside.port;
    for url in [
        format!("http://127.0.0.1:{p}?@hooks.example.com/"),
        format!("http://127.0.0.1:{p}#@hooks.example.com/"),
        format!("http://127.0.0.1:{p}\\@hooks.example.com/x"),
        format!("http://127.0.0.1:{p}%3F@hooks.example.com/"),
        format!("http://hooks.example.com:80@127.0.0.1:{p}/"),
        format!("http://HOOKS.example.com@127.0.0.1:{p}/"),
        format!("http://[::ffff:127.0.0.1]:{p}/"),
    ] {
        let (status, body) = cancelled_job_with(&s, json!([url])).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::FORBIDDEN,
            "{url}: {status} {body}"
        );
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            !message.contains("--allow-source"),
            "a callback's hint: {message}"
        );
    }
    // Time for a delivery that should not happen.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(inside.hits(), 0, "nothing reached the inside service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_to_a_name_of_a_loopback_address_is_not_delivered_and_its_address_is() {
    let inside = Target::start(|_| Answer::File).await;
    let p = inside.port;
    let by_name = Server::start(with_callbacks(&[format!("http://localhost:{p}/")])).await;
    let (status, body) =
        cancelled_job_with(&by_name, json!([format!("http://localhost:{p}/hook")])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let mut job = Value::Null;
    until("the delivery is given up", async || {
        job = by_name.get(&format!("/jobs/{id}")).await.1;
        job["callbacks"][0]["gave_up"] == "cancelled"
    })
    .await;
    let error = job["callbacks"][0]["last_error"].as_str().expect("error");
    assert!(
        error.contains("localhost") && error.contains("allow-list"),
        "{job}"
    );
    assert_eq!(inside.hits(), 0, "nothing reached 127.0.0.1 by name");

    let by_address = Server::start(with_callbacks(&[format!("http://127.0.0.1:{p}/")])).await;
    let (status, body) =
        cancelled_job_with(&by_address, json!([format!("http://127.0.0.1:{p}/hook")])).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    until("the delivery is made", async || {
        by_address.get(&format!("/jobs/{id}")).await.1["callbacks"][0]["delivered"] == "cancelled"
    })
    .await;
    assert!(inside.hits() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_source_named_by_a_loopback_name_is_not_read_and_its_address_is() {
    let inside = Target::start(|_| Answer::File).await;
    let p = inside.port;
    let s = Server::start(rota_server::Config {
        allow: allow(&[
            format!("http://localhost:{p}/"),
            format!("webdav://localhost:{p}/"),
            format!("http://127.0.0.1:{p}/"),
        ]),
        ..rota_server::Config::default()
    })
    .await;
    for source in [
        format!("http://localhost:{p}/a.csv"),
        format!("webdav://localhost:{p}/dir/"),
    ] {
        let job = s.batch(&source).await;
        assert_eq!(job["state"], "failed", "{source}: {job}");
        let error = job["error"].as_str().expect("error");
        assert!(
            error.contains("localhost") && error.contains("allow-list"),
            "{source}: {error}"
        );
    }
    assert_eq!(inside.hits(), 0, "nothing reached 127.0.0.1 by name");
    let job = s.batch(&format!("http://127.0.0.1:{p}/a.csv")).await;
    assert_eq!(job["ingest"]["rows"], 2, "{job}");
    assert!(inside.hits() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_sources_do_not_follow_redirects() {
    let elsewhere = Target::start(|_| Answer::File).await;
    let to: &'static str = Box::leak(
        format!(
            "http://127.0.0.1:{}/latest/meta-data/iam?token=s3cret-query",
            elsewhere.port
        )
        .into_boxed_str(),
    );
    let allowed = Target::start(move |_| Answer::Redirect(to)).await;
    let p = allowed.port;
    let s = Server::start(rota_server::Config {
        allow: allow(&[
            format!("http://127.0.0.1:{p}/"),
            format!("webdav://127.0.0.1:{p}/"),
        ]),
        ..rota_server::Config::default()
    })
    .await;
    for source in [
        format!("http://127.0.0.1:{p}/a.csv"),
        format!("webdav://127.0.0.1:{p}/dir/"),
    ] {
        let job = s.batch(&source).await;
        assert_eq!(job["state"], "failed", "{source}: {job}");
        let error = job["error"].as_str().expect("error");
        assert!(
            error.contains(&format!("redirects to http://127.0.0.1:{}", elsewhere.port))
                && !error.contains("s3cret-query"),
            "{source}: {error}"
        );
    }
    assert!(allowed.hits() >= 2);
    assert_eq!(elsewhere.hits(), 0, "the redirect was not followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_with_hostile_characters_never_reach_job_records_or_errors() {
    let files = Target::start(|_| Answer::File).await;
    let p = files.port;
    let s = Server::start(rota_server::Config {
        allow: allow(&[
            "sftp://files.example.com/data/".to_owned(),
            format!("http://127.0.0.1:{p}/"),
        ]),
        ..rota_server::Config::default()
    })
    .await;
    for source in [
        "sftp://bob:Summer#2026@files.example.com/data/".to_owned(),
        "sftp://bob:Summer?2026@files.example.com/data/".to_owned(),
        "sftp://bob:Summer/2026@files.example.com/data/".to_owned(),
        "sftp://bob:Summer\\2026@files.example.com/data/".to_owned(),
        format!("http://bob:Summer?2026@127.0.0.1:{p}/a.csv"),
        format!("http://bob:Summer#2026@127.0.0.1:{p}/a.csv"),
    ] {
        let (status, body) = s
            .post(
                "/schedule",
                json!({ "spec": "import", "batch": { "source": source } }),
            )
            .await;
        assert!(status.is_client_error(), "{source}: {status} {body}");
        assert!(!body.to_string().contains("Summer"), "{source}: {body}");
    }
    // Written encoded, the password is used, and shown nowhere.
    let job = s
        .batch(&format!("http://bob:Summer%232026@127.0.0.1:{p}/a.csv"))
        .await;
    assert_eq!(job["ingest"]["rows"], 2, "{job}");
    let jobs = s.all_jobs_text().await;
    assert!(jobs.contains("bob:***@"), "{jobs}");
    assert!(!jobs.contains("Summer"), "{jobs}");
}
