//! Idempotency keys over real HTTP, with two tokens: a key finds only the
//! jobs its own token made, the keys the server makes (`schedule:…`,
//! `upload:…`) cannot be given by a client, and a replay adds nothing to
//! the job it finds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use rota_core::{JobId, Store};
use serde_json::{Value, json};

const A: &str = "token-of-team-a-0123456789";
const B: &str = "token-of-team-b-9876543210";

struct Server {
    url: String,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let served = common::serve(|dir| {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).expect("mkdir");
            let mut rows = String::new();
            for i in 0..30 {
                rows.push_str(&format!("{{\"evil\":{i}}}\n"));
            }
            std::fs::write(data.join("evil.ndjson"), rows).expect("write");
            rota_server::Config {
                tokens: rota_server::Tokens::parse(&format!("{A} schedule\n{B} schedule\n"))
                    .expect("tokens"),
                allow: rota_server::AllowList::new(&[data.to_string_lossy().into_owned()])
                    .expect("allow"),
                uploads: Some(rota_server::UploadConfig::new(dir.join("uploads"))),
                callbacks: rota_server::CallbackConfig {
                    key: Some(b"a-key-of-sixteen-bytes".to_vec()),
                    allow: rota_server::AllowList::new(&["https://hooks.example.com/".to_owned()])
                        .expect("allow"),
                    ..rota_server::CallbackConfig::default()
                },
                ..rota_server::Config::default()
            }
        })
        .await;
        Self {
            url: served.url,
            client: reqwest::Client::new(),
            store: served.store,
            data: served.dir.path().join("data"),
            _dir: served.dir,
        }
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}"));
        (status, value)
    }

    async fn schedule(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(token, reqwest::Method::POST, "/schedule", Some(body))
            .await
    }

    async fn job(&self, id: JobId) -> rota_core::Job {
        self.store.get_job(id).await.expect("job").expect("exists")
    }

    /// Waits until the job's ingest released it.
    async fn released(&self, id: JobId) {
        for _ in 0..400 {
            let job = self.job(id).await;
            assert!(!job.state.is_terminal(), "{job:?}");
            if job.released {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {id} was not released within 10 s");
    }

    /// Makes a tus upload for `token` that stays unfinished: its job is held.
    async fn upload(&self, token: &str, meta: &[(&str, &str)]) -> JobId {
        let metadata = meta
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k} {}",
                    base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let resp = self
            .client
            .post(format!("{}/uploads", self.url))
            .bearer_auth(token)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "1000")
            .header("Upload-Metadata", metadata)
            .send()
            .await
            .expect("create upload");
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.headers()["rota-job-id"]
            .to_str()
            .expect("header")
            .parse()
            .expect("job id")
    }
}

fn id_of(answer: &Value) -> JobId {
    answer["jobs"][0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("job id")
}

/// Token B replays every key it can see of token A's jobs, with a batch of
/// its own rows and callbacks of its own: the server's keys are refused,
/// A's own keys make B a job of B's own, and A's jobs stay as they were
/// (held, without B's rows or callbacks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_replayed_by_another_token_finds_nothing_of_the_first_tokens_jobs() {
    let s = Server::start().await;
    let evil = s.data.join("evil.ndjson").to_string_lossy().into_owned();

    // A: a plain job under its key, a held upload (key `upload:…`), and a
    // held upload under A's own key.
    let (status, plain) = s
        .schedule(
            A,
            json!({ "spec": "a", "idempotency_key": "k", "params": { "team": "a" },
                    "callbacks": ["https://hooks.example.com/a"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    let plain = id_of(&plain);
    let upload = s.upload(A, &[("spec", "a"), ("format", "ndjson")]).await;
    let keyed_upload = s
        .upload(
            A,
            &[
                ("spec", "a"),
                ("format", "ndjson"),
                ("idempotency_key", "u"),
            ],
        )
        .await;

    // B sees A's jobs and their keys in GET /jobs.
    let (status, jobs) = s.call(B, reqwest::Method::GET, "/jobs", None).await;
    assert_eq!(status, StatusCode::OK, "{jobs}");
    let keys: Vec<String> = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["key"].as_str().map(str::to_owned))
        .collect();
    assert!(
        keys.contains(&"k".to_owned()),
        "keys are shown as given: {keys:?}"
    );
    let upload_key = s.job(upload).await.key.expect("an upload's job has a key");
    assert!(upload_key.starts_with("upload:"), "{upload_key}");

    // The server's keys cannot be given by a client, with or without a batch.
    for key in [
        upload_key.as_str(),
        "schedule:0190e5a0-0000-7000-8000-000000000000",
    ] {
        for body in [
            json!({ "spec": "x", "idempotency_key": key,
                    "batch": { "source": evil, "format": "ndjson" },
                    "callbacks": ["https://hooks.example.com/b"] }),
            json!({ "spec": "x", "idempotency_key": key }),
        ] {
            let (status, err) = s.schedule(B, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{key}: {err}");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .expect("message")
                    .contains("reserved"),
                "{err}"
            );
        }
        let r = s
            .client
            .post(format!("{}/schedule", s.url))
            .bearer_auth(B)
            .header("idempotency-key", key)
            .json(&json!({ "spec": "x" }))
            .send()
            .await
            .expect("send");
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "the header is checked too"
        );
    }

    // A's own keys, replayed by B, make B a job of its own.
    for key in ["k", "u"] {
        let (status, answer) = s
            .schedule(
                B,
                json!({ "spec": "x", "idempotency_key": key,
                        "batch": { "source": evil, "format": "ndjson" },
                        "callbacks": ["https://hooks.example.com/b"] }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}: {answer}");
        assert_eq!(answer["jobs"][0]["created"], true);
        let mine = id_of(&answer);
        assert!(mine != plain && mine != keyed_upload, "B got a job of A's");
        s.released(mine).await;
        let (_, job) = s
            .call(B, reqwest::Method::GET, &format!("/jobs/{mine}"), None)
            .await;
        assert_eq!(job["counts"]["total"], 1, "B's rows went to B's job: {job}");
        assert_eq!(job["key"], key, "B's key is shown as B gave it");
        // B's replay of its own key finds its own job.
        let (status, again) = s
            .schedule(B, json!({ "spec": "x", "idempotency_key": key }))
            .await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(id_of(&again), mine);
    }
    // A's replay of its own key still finds A's job.
    let (status, again) = s
        .schedule(A, json!({ "spec": "a", "idempotency_key": "k" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(id_of(&again), plain);

    // A's jobs are as A made them: no rows, no release, no callbacks of B.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for held in [upload, keyed_upload] {
        let job = s.job(held).await;
        assert!(!job.released, "A's upload was released early: {job:?}");
        assert_eq!(job.counts.total, 0, "rows were injected into A's upload");
        assert!(
            s.store
                .list_callbacks(held)
                .await
                .expect("callbacks")
                .is_empty()
        );
    }
    let job = s.job(plain).await;
    assert_eq!(job.counts.total, 1, "{job:?}");
    let callbacks = s.store.list_callbacks(plain).await.expect("callbacks");
    let urls: Vec<&str> = callbacks.iter().map(|c| c.url.as_str()).collect();
    assert_eq!(urls, ["https://hooks.example.com/a"], "only A's callback");
}

/// A replay by the same token, with other callbacks or a batch, returns
/// the job it made and changes nothing of it; overlong and empty keys are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_returns_the_job_as_made_and_bad_keys_are_refused() {
    let s = Server::start().await;
    let evil = s.data.join("evil.ndjson").to_string_lossy().into_owned();
    let (status, first) = s
        .schedule(
            A,
            json!({ "spec": "a", "idempotency_key": "once",
                    "callbacks": ["https://hooks.example.com/1"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let id = id_of(&first);
    let (status, again) = s
        .schedule(
            A,
            json!({ "spec": "a", "idempotency_key": "once",
                    "batch": { "source": evil, "format": "ndjson" },
                    "callbacks": ["https://hooks.example.com/1", "https://hooks.example.com/2"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(id_of(&again), id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let job = s.job(id).await;
    assert_eq!(
        job.counts.total, 1,
        "the replay's batch added nothing: {job:?}"
    );
    assert_eq!(
        s.store.list_callbacks(id).await.expect("callbacks").len(),
        1,
        "the replay's callbacks were not attached"
    );
    for key in [String::new(), "x".repeat(257)] {
        let (status, err) = s
            .schedule(A, json!({ "spec": "a", "idempotency_key": key }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    }
}
