//! The API over real HTTP: a server on 127.0.0.1:0 over a SQLite store
//! file, driven by an HTTP client as a worker in any language would.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rota_core::Store;
use serde_json::{Value, json};

struct Server {
    url: String,
    client: reqwest::Client,
    token: Option<String>,
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
}

impl Server {
    async fn start(config: rota_server::Config) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            rota_store::open_store(&dir.path().join("rota.db").to_string_lossy()).expect("store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let serving = store.clone();
        tokio::spawn(async move {
            rota_server::serve(listener, serving, config, std::future::pending())
                .await
                .expect("serve");
        });
        Self {
            url,
            client: reqwest::Client::new(),
            token: None,
            _dir: dir,
            store,
        }
    }

    fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path);
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

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn config() -> rota_server::Config {
    rota_server::Config::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_job_is_scheduled_claimed_heartbeated_completed_and_awaited() {
    let s = Server::start(config()).await;
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "spec": "send-email", "params": { "to": "a@example.com" }, "queue": "mail" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();

    // Nothing on the default queue; the job's task on its own queue.
    let (_, none) = s
        .post(
            "/work/claim",
            json!({ "worker": "w1", "queues": ["default"] }),
        )
        .await;
    assert_eq!(none["tasks"], json!([]));
    let (status, claimed) = s
        .post(
            "/work/claim",
            json!({ "worker": "w1", "queues": ["mail"], "lease_ms": 5000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{claimed}");
    let task = &claimed["tasks"][0];
    assert_eq!(task["job_id"], id.as_str());
    assert_eq!(task["spec"], "send-email");
    assert_eq!(task["params"]["to"], "a@example.com");
    let payload: Value =
        serde_json::from_str(task["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(
        payload["to"], "a@example.com",
        "a plain job's payload is its params"
    );
    let lease = json!({
        "task_id": task["task_id"], "attempt": task["attempt"], "lease_token": task["lease_token"]
    });

    let (_, beat) = s
        .post(
            "/work/heartbeat",
            json!({ "leases": [lease], "extend_ms": 5000 }),
        )
        .await;
    assert_eq!(beat["results"][0]["ok"], true, "{beat}");
    assert_eq!(beat["results"][0]["cancel_requested"], false);

    // Someone awaits the job while the worker finishes it.
    let waiter = {
        let (client, url) = (s.client.clone(), s.url.clone());
        let id = id.clone();
        tokio::spawn(async move {
            let resp = client
                .get(format!("{url}/jobs/{id}/wait?timeout=20s"))
                .send()
                .await
                .expect("wait");
            resp.json::<Value>().await.expect("json")
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut report = lease.clone();
    report["result"] = json!({ "sent": true });
    let (_, done) = s
        .post("/work/complete", json!({ "reports": [report] }))
        .await;
    assert_eq!(
        done["results"][0],
        json!({ "ok": true, "state": "succeeded" })
    );
    let awaited = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the wait answers when the job ends")
        .expect("join");
    assert_eq!(awaited["state"], "succeeded", "{awaited}");
    assert_eq!(awaited["counts"]["succeeded"], 1);

    // The stale attempt's second report is refused, per item, with a code.
    let mut again = lease.clone();
    again["error"] = json!("too late");
    let (_, stale) = s
        .post("/work/complete", json!({ "reports": [again] }))
        .await;
    assert_eq!(stale["results"][0]["ok"], false);
    assert_eq!(stale["results"][0]["error"]["code"], "lease_lost");

    let (_, tasks) = s.get(&format!("/jobs/{id}/tasks?results=true")).await;
    assert_eq!(tasks["tasks"][0]["result"], "{\"sent\":true}");
    let (_, jobs) = s.get("/jobs?state=succeeded").await;
    assert_eq!(jobs["jobs"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jobs_in_one_request_and_idempotency_keys_give_one_job_each() {
    let s = Server::start(config()).await;
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "jobs": [
                { "spec": "a", "idempotency_key": "k1" },
                { "spec": "b", "params": { "n": 2 } },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["jobs"][0]["id"].clone();
    assert_eq!(body["jobs"].as_array().expect("jobs").len(), 2);
    let (status, again) = s
        .post("/schedule", json!({ "spec": "a", "idempotency_key": "k1" }))
        .await;
    assert_eq!(status, StatusCode::OK, "nothing new");
    assert_eq!(again["jobs"][0]["id"], first);
    assert_eq!(again["jobs"][0]["created"], false);
    // The header works too.
    let r = s
        .req(reqwest::Method::POST, "/schedule")
        .header("idempotency-key", "k1")
        .json(&json!({ "spec": "a" }))
        .send()
        .await
        .expect("send");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["jobs"][0]["id"], first);
    // A bad job fails the request whole: nothing is made.
    let before = s
        .store
        .list_jobs(Default::default())
        .await
        .expect("jobs")
        .len();
    let (status, err) = s
        .post(
            "/schedule",
            json!({ "jobs": [{ "spec": "ok" }, { "spec": "x", "params": [1] }] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "invalid");
    let (status, err) = s
        .post("/schedule", json!({ "spec": "x", "colour": "red" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["error"]["message"]
            .as_str()
            .expect("message")
            .contains("colour"),
        "{err}"
    );
    assert_eq!(
        s.store
            .list_jobs(Default::default())
            .await
            .expect("jobs")
            .len(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_die_and_a_non_retryable_one_dies_at_once() {
    let s = Server::start(config()).await;
    let (_, body) = s
        .post(
            "/schedule",
            json!({ "spec": "flaky", "max_attempts": 2, "retry_backoff_ms": 1 }),
        )
        .await;
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    for attempt in 1..=2 {
        let (_, claimed) = s
            .post("/work/claim", json!({ "worker": "w", "wait_ms": 5000 }))
            .await;
        let t = &claimed["tasks"][0];
        assert_eq!(t["attempt"], attempt, "{claimed}");
        let (_, r) = s
            .post(
                "/work/complete",
                json!({ "reports": [{ "task_id": t["task_id"], "attempt": t["attempt"],
                        "lease_token": t["lease_token"], "error": "boom" }] }),
            )
            .await;
        let want = if attempt == 1 { "retrying" } else { "dead" };
        assert_eq!(r["results"][0]["state"], want);
    }
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["state"], "failed");

    let (_, body) = s.post("/schedule", json!({ "spec": "bad-input" })).await;
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let (_, claimed) = s.post("/work/claim", json!({ "worker": "w" })).await;
    let t = &claimed["tasks"][0];
    let (_, r) = s
        .post(
            "/work/complete",
            json!({ "reports": [{ "task_id": t["task_id"], "attempt": t["attempt"],
                    "lease_token": t["lease_token"], "error": "no such user", "retryable": false }] }),
        )
        .await;
    assert_eq!(r["results"][0]["state"], "dead");
    let (_, job) = s.get(&format!("/jobs/{id}/wait?timeout=1s")).await;
    assert_eq!(job["state"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_claim_gets_work_scheduled_while_it_waits_and_cancel_is_seen_at_heartbeat() {
    let s = Server::start(config()).await;
    let claim = {
        let (client, url) = (s.client.clone(), s.url.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let v: Value = client
                .post(format!("{url}/work/claim"))
                .json(&json!({ "worker": "w", "wait_ms": 10000 }))
                .send()
                .await
                .expect("claim")
                .json()
                .await
                .expect("json");
            (v, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = s.post("/schedule", json!({ "spec": "x" })).await;
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let (claimed, waited) = claim.await.expect("join");
    assert_eq!(claimed["tasks"][0]["job_id"], id.as_str(), "{claimed}");
    assert!(
        waited < Duration::from_secs(5),
        "woken, not timed out: {waited:?}"
    );

    let t = &claimed["tasks"][0];
    let lease = json!({ "task_id": t["task_id"], "attempt": t["attempt"], "lease_token": t["lease_token"] });
    let (_, cancelled) = s.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(cancelled["state"], "cancelled");
    let (_, beat) = s
        .post("/work/heartbeat", json!({ "leases": [lease] }))
        .await;
    let told = beat["results"][0]["cancel_requested"] == true || beat["results"][0]["ok"] == false;
    assert!(told, "the worker learns of the cancel: {beat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_job_reads_an_allowed_source_into_tasks_and_other_sources_are_refused() {
    let data = tempfile::tempdir().expect("tempdir");
    let root = data.path().join("exports");
    std::fs::create_dir_all(root.join("2026")).expect("mkdir");
    let mut csv = String::from("id,name\n");
    for i in 0..25 {
        csv.push_str(&format!("{i},n{i}\n"));
    }
    std::fs::write(root.join("2026/a.csv"), &csv).expect("write");
    std::fs::write(root.join("b.csv"), "id,name\n100,x\n").expect("write");
    let cfg = rota_server::Config {
        allow: rota_server::AllowList::new(&[root.to_string_lossy().into_owned()]).expect("allow"),
        ..config()
    };
    let s = Server::start(cfg).await;
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "spec": "import", "batch": {
                "source": format!("{}/", root.display()), "recursive": true,
                "max_rows": 10, "payload": "ndjson" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    // The ingest runs in the background; the job is released when it ends.
    let mut job = Value::Null;
    for _ in 0..100 {
        job = s.get(&format!("/jobs/{id}")).await.1;
        if job["released"] == true || job["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job["released"], true, "{job}");
    assert_eq!(job["ingest"]["rows"], 26);
    assert_eq!(job["counts"]["total"], 4, "3 tasks of a.csv, 1 of b.csv");
    let (_, tasks) = s.get(&format!("/jobs/{id}/tasks")).await;
    let keys: Vec<&str> = tasks["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["key"].as_str().expect("key"))
        .collect();
    assert_eq!(
        keys,
        [
            "2026/a.csv#00000000",
            "2026/a.csv#00000001",
            "2026/a.csv#00000002",
            "b.csv#00000000"
        ]
    );
    let (_, files) = s.get(&format!("/jobs/{id}/files")).await;
    assert_eq!(files["files"].as_array().expect("files").len(), 2);
    let (_, claimed) = s
        .post("/work/claim", json!({ "worker": "w", "limit": 10 }))
        .await;
    assert_eq!(claimed["tasks"].as_array().expect("tasks").len(), 4);
    let first = claimed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["key"] == "2026/a.csv#00000000")
        .expect("the first task of a.csv");
    let rows: Vec<Value> = first["payload"]
        .as_str()
        .expect("text payload")
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0], json!({ "id": 0, "name": "n0" }));
    assert_eq!(first["media_type"], "application/x-ndjson");

    // Outside the allow-list: refused with the reason, nothing made.
    for source in [
        "/etc/",
        "s3://bucket/x/",
        &format!("{}/../", root.display()),
    ] {
        let (status, err) = s
            .post(
                "/schedule",
                json!({ "spec": "import", "batch": { "source": source } }),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{source}: {err}");
        assert_eq!(err["error"]["code"], "source_not_allowed");
        assert!(
            err["error"]["message"]
                .as_str()
                .expect("m")
                .contains("--allow-source")
        );
    }
    // An allowed but missing path fails the job with the reason.
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "spec": "import", "batch": { "source": format!("{}/nope.csv", root.display()) } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = body["jobs"][0]["id"].as_str().expect("id");
    let (_, job) = s.get(&format!("/jobs/{id}/wait?timeout=10s")).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"].as_str().expect("error").contains("not found"),
        "{job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes_guard_the_endpoints_with_json_errors() {
    let cfg = rota_server::Config {
        tokens: rota_server::Tokens::parse(
            "sched-token schedule\nwork-token work\nroot-token admin\n",
        )
        .expect("tokens"),
        max_body: 4096,
        ..config()
    };
    let s = Server::start(cfg).await;
    let (status, err) = s.post("/schedule", json!({ "spec": "x" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "unauthorized");
    let s = s.with_token("work-token");
    let (status, err) = s.post("/schedule", json!({ "spec": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, _) = s.post("/work/claim", json!({ "worker": "w" })).await;
    assert_eq!(status, StatusCode::OK);
    let s = s.with_token("sched-token");
    let (status, _) = s.post("/schedule", json!({ "spec": "x" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = s
        .call(
            reqwest::Method::PUT,
            "/specs/x",
            Some(json!({ "name": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "specs need admin");
    let s = s.with_token("root-token");
    let (status, spec) = s
        .call(
            reqwest::Method::PUT,
            "/specs/x",
            Some(json!({ "name": "x", "queue": "q", "description": "d" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{spec}");
    let (_, specs) = s.get("/specs").await;
    assert_eq!(specs["specs"][0]["queue"], "q");
    // A spec's queue is its jobs' default.
    let (_, body) = s.post("/schedule", json!({ "spec": "x" })).await;
    let id = body["jobs"][0]["id"].as_str().expect("id");
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["queue"], "q");
    // Unknown routes and ids, and large bodies, answer JSON too.
    let (status, err) = s.get("/nope").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = s.get("/jobs/not-an-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let big = json!({ "spec": "x", "params": { "blob": "x".repeat(10_000) } });
    let r = s
        .req(reqwest::Method::POST, "/schedule")
        .json(&big)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (status, health) = s.get("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}
