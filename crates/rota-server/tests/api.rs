//! The API over real HTTP: a server on 127.0.0.1:0 over a SQLite store
//! file, driven by an HTTP client as a worker in any language would.

mod common;

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
        let served = common::serve(|_| config).await;
        Self {
            url: served.url,
            client: reqwest::Client::new(),
            token: None,
            _dir: served.dir,
            store: served.store,
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
    // Awaiting gives the result of a job of one task, as GET /jobs/{id} does.
    assert_eq!(awaited["result"], json!({ "sent": true }), "{awaited}");
    assert_eq!(awaited["errors"], json!([]), "{awaited}");
    let (_, shown) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(shown["result"], json!({ "sent": true }), "{shown}");

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

    // A creation-time range, in RFC 3339.
    let created = awaited["created_at"]
        .as_str()
        .expect("created_at")
        .to_owned();
    let (_, from) = s
        .get(&format!(
            "/jobs?created_after={}",
            created.replace('+', "%2B")
        ))
        .await;
    assert_eq!(from["jobs"][0]["id"], id.as_str(), "{from}");
    let (_, before) = s
        .get(&format!(
            "/jobs?created_before={}",
            created.replace('+', "%2B")
        ))
        .await;
    assert_eq!(before["jobs"], json!([]), "{before}");
    let (status, bad) = s.get("/jobs?created_after=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid", "{bad}");
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
        // The job shows its failed task with its error, then and at the end.
        let (_, job) = s.get(&format!("/jobs/{id}")).await;
        assert_eq!(job["errors"][0]["state"], want, "{job}");
        assert_eq!(job["errors"][0]["error"], "boom", "{job}");
        assert_eq!(job["errors"][0]["attempt"], attempt, "{job}");
    }
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["errors"].as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(job["result"], Value::Null, "{job}");

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
async fn a_failed_job_is_requeued_and_runs_its_dead_task_again() {
    let s = Server::start(config()).await;
    let (_, body) = s
        .post("/schedule", json!({ "spec": "again", "max_attempts": 1 }))
        .await;
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let finish = async |error: Option<&str>| {
        let (_, claimed) = s
            .post("/work/claim", json!({ "worker": "w", "wait_ms": 5000 }))
            .await;
        let t = claimed["tasks"][0].clone();
        let mut report = json!({ "task_id": t["task_id"], "attempt": t["attempt"],
                                 "lease_token": t["lease_token"] });
        match error {
            Some(e) => report["error"] = json!(e),
            None => report["result"] = json!("ok"),
        }
        let (_, r) = s
            .post("/work/complete", json!({ "reports": [report] }))
            .await;
        (t, r)
    };
    let (_, r) = finish(Some("boom")).await;
    assert_eq!(r["results"][0]["state"], "dead", "{r}");
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(job["state"], "failed", "{job}");

    // Only dead and cancelled tasks can be requeued; an unknown job is 404.
    let (status, refused) = s
        .post(
            &format!("/jobs/{id}/requeue"),
            json!({ "states": ["succeeded"] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, _) = s
        .post(
            "/jobs/01936f5e-0000-7000-8000-000000000000/requeue",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, requeued) = s.post(&format!("/jobs/{id}/requeue"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{requeued}");
    assert_eq!(requeued["requeued"], 1, "{requeued}");
    assert_eq!(requeued["job"]["state"], "running", "{requeued}");
    let (t, r) = finish(None).await;
    assert_eq!(t["attempt"], 2, "attempts go on counting: {t}");
    assert_eq!(r["results"][0]["state"], "succeeded", "{r}");
    let (_, job) = s.get(&format!("/jobs/{id}/wait?timeout=5s")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_retains_jobs_for_a_time_deletes_them_after_it() {
    let s = Server::start(rota_server::Config {
        retain: Some(Duration::from_millis(400)),
        ..config()
    })
    .await;
    let (_, body) = s.post("/schedule", json!({ "spec": "brief" })).await;
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let (_, claimed) = s.post("/work/claim", json!({ "worker": "w" })).await;
    let t = &claimed["tasks"][0];
    s.post(
        "/work/complete",
        json!({ "reports": [{ "task_id": t["task_id"], "attempt": t["attempt"],
                "lease_token": t["lease_token"], "result": "ok" }] }),
    )
    .await;
    let (status, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(
        (status, &job["state"]),
        (StatusCode::OK, &json!("succeeded"))
    );
    // An unfinished job is kept however old it gets.
    let (_, body) = s.post("/schedule", json!({ "spec": "waiting" })).await;
    let waiting = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let started = std::time::Instant::now();
    loop {
        let (status, _) = s.get(&format!("/jobs/{id}")).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the ended job was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = s.get(&format!("/jobs/{waiting}")).await;
    assert_eq!(status, StatusCode::OK, "an unfinished job stays");
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
            "sched-token-0123456789 schedule\nwork-token-0123456789 work\nroot-token-0123456789 admin\n",
        )
        .expect("tokens"),
        max_body: 4096,
        ..config()
    };
    let s = Server::start(cfg).await;
    let (status, err) = s.post("/schedule", json!({ "spec": "x" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"]["code"], "unauthorized");
    let s = s.with_token("work-token-0123456789");
    let (status, err) = s.post("/schedule", json!({ "spec": "x" })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{err}");
    let (status, _) = s.post("/work/claim", json!({ "worker": "w" })).await;
    assert_eq!(status, StatusCode::OK);
    let s = s.with_token("sched-token-0123456789");
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
    let s = s.with_token("root-token-0123456789");
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

// ---- the worker protocol over WebSocket -------------------------------------

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `/work`, with `token` if given.
async fn ws_connect(
    s: &Server,
    token: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("{}/work", s.url.replacen("http", "ws", 1))
        .into_client_request()
        .expect("request");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

async fn ws_send(ws: &mut Socket, value: Value) {
    use futures::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        value.to_string(),
    ))
    .await
    .expect("send");
}

/// The next JSON message, within 5 s; `None` when the server closed.
async fn ws_next(ws: &mut Socket) -> Option<Value> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s");
        match msg {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("json")),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Nothing arrives within `wait`.
async fn ws_quiet(ws: &mut Socket, wait: Duration) {
    use futures::StreamExt as _;
    if let Ok(msg) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected nothing, got {msg:?}");
    }
}

async fn ws_register(s: &Server, capacity: u32) -> Socket {
    let mut ws = ws_connect(s, None).await.expect("connect");
    ws_send(
        &mut ws,
        json!({ "type": "register", "worker": "rs-1", "hostname": "h", "os": "linux",
                "capacity": capacity, "lease_ms": 5000 }),
    )
    .await;
    let hello = ws_next(&mut ws).await.expect("registered");
    assert_eq!(hello["type"], "registered", "{hello}");
    assert_eq!(hello["heartbeat_ms"], 1000);
    assert_eq!(hello["lease_ms"], 5000);
    ws
}

fn lease_of(task: &Value) -> Value {
    json!({ "task_id": task["task_id"], "attempt": task["attempt"],
            "lease_token": task["lease_token"] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_worker_is_pushed_work_within_its_capacity_and_its_progress_shows() {
    let s = Server::start(config()).await;
    let mut ws = ws_register(&s, 2).await;
    ws_send(&mut ws, json!({ "type": "ready", "slots": 5 })).await;
    ws_quiet(&mut ws, Duration::from_millis(300)).await;

    // Work scheduled while the worker waits is pushed to it; never more than
    // its capacity, though it asked for five.
    let mut jobs = Vec::new();
    for i in 0..3 {
        let (_, body) = s
            .post(
                "/schedule",
                json!({ "spec": "greet", "params": { "i": i } }),
            )
            .await;
        jobs.push(body["jobs"][0]["id"].as_str().expect("id").to_owned());
    }
    let first = ws_next(&mut ws).await.expect("assign");
    let second = ws_next(&mut ws).await.expect("assign");
    assert_eq!(
        (&first["type"], &second["type"]),
        (&json!("assign"), &json!("assign"))
    );
    ws_quiet(&mut ws, Duration::from_millis(500)).await;
    let task = &first["task"];
    assert!(
        task["payload"].is_string() && task["expires_at"].is_string(),
        "{task}"
    );

    // Progress given with a heartbeat shows on the job.
    let mut beat = lease_of(task);
    beat["progress"] = json!({ "done": 1, "total": 3 });
    ws_send(
        &mut ws,
        json!({ "type": "heartbeat", "cpu": 0.5, "ram_bytes": 1024, "tasks": [beat],
                "logs": [{ "task_id": task["task_id"], "message": "one of three" }] }),
    )
    .await;
    let ack = ws_next(&mut ws).await.expect("heartbeat_ack");
    assert_eq!(ack["type"], "heartbeat_ack", "{ack}");
    let acks = ack["tasks"].as_array().expect("tasks");
    assert_eq!(acks.len(), 2, "every held lease is extended: {ack}");
    assert!(acks.iter().all(|a| a["ok"] == true), "{ack}");
    let job = task["job_id"].as_str().expect("job");
    let (_, shown) = s.get(&format!("/jobs/{job}")).await;
    assert_eq!(
        shown["running"][0]["progress"],
        json!({ "done": 1, "total": 3 }),
        "{shown}"
    );
    assert_eq!(shown["running"][0]["worker"], "rs-1", "{shown}");
    let (_, workers) = s.get("/workers").await;
    let me = &workers["workers"][0];
    assert_eq!(
        (&me["worker"], &me["cpu"], &me["ram_bytes"]),
        (&json!("rs-1"), &json!(0.5), &json!(1024))
    );
    assert_eq!(me["logs"][0]["message"], "one of three", "{me}");
    assert_eq!(me["tasks"].as_array().map(Vec::len), Some(2), "{me}");

    // A result frees a slot; the next ready brings the third task.
    let mut result = lease_of(task);
    result["type"] = json!("result");
    result["result"] = json!({ "sent": true });
    ws_send(&mut ws, result.clone()).await;
    let ack = ws_next(&mut ws).await.expect("result_ack");
    assert_eq!(
        (&ack["type"], &ack["ok"], &ack["state"], &ack["task_id"]),
        (
            &json!("result_ack"),
            &json!(true),
            &json!("succeeded"),
            &task["task_id"]
        ),
        "{ack}"
    );
    ws_quiet(&mut ws, Duration::from_millis(300)).await;
    ws_send(&mut ws, json!({ "type": "ready", "slots": 1 })).await;
    let third = ws_next(&mut ws).await.expect("assign");
    assert_eq!(third["type"], "assign", "{third}");

    // The same report again is stale: refused per task, connection kept.
    ws_send(&mut ws, result).await;
    let stale = ws_next(&mut ws).await.expect("result_ack");
    assert_eq!(
        (&stale["ok"], &stale["error"]["code"]),
        (&json!(false), &json!("lease_lost")),
        "{stale}"
    );
    let (_, done) = s.get(&format!("/jobs/{job}")).await;
    assert_eq!(done["state"], "succeeded", "{done}");

    // The other two in one `results` message: an ack each, in order.
    let mut ok = lease_of(&second["task"]);
    ok["result"] = json!("fine");
    let mut failed = lease_of(&third["task"]);
    failed["error"] = json!("no such user");
    failed["retryable"] = json!(false);
    ws_send(
        &mut ws,
        json!({ "type": "results", "results": [ok, failed] }),
    )
    .await;
    for (task, state) in [(&second["task"], "succeeded"), (&third["task"], "dead")] {
        let ack = ws_next(&mut ws).await.expect("result_ack");
        assert_eq!(
            (&ack["type"], &ack["task_id"], &ack["state"]),
            (&json!("result_ack"), &task["task_id"], &json!(state)),
            "{ack}"
        );
    }
    let (_, failed_job) = s
        .get(&format!(
            "/jobs/{}",
            third["task"]["job_id"].as_str().expect("job")
        ))
        .await;
    assert_eq!(failed_job["state"], "failed", "{failed_job}");
    assert_eq!(
        failed_job["errors"][0]["error"], "no such user",
        "{failed_job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_protocol_refuses_bad_messages_and_bad_tokens_with_reasons() {
    // Without a valid work token the upgrade is refused with a status.
    let guarded = Server::start(rota_server::Config {
        tokens: rota_server::Tokens::parse(
            "app-0123456789abcdef schedule\nwrk-0123456789abcdef work\n",
        )
        .expect("tokens"),
        ..config()
    })
    .await;
    for (token, status) in [
        (None, 401),
        (Some("nope"), 401),
        (Some("app-0123456789abcdef"), 403),
    ] {
        match ws_connect(&guarded, token).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), status, "{token:?}");
            }
            other => panic!("{token:?}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
    assert!(
        ws_connect(&guarded, Some("wrk-0123456789abcdef"))
            .await
            .is_ok()
    );

    let s = Server::start(config()).await;
    // A first message that is not register: an error, then the close.
    let mut ws = ws_connect(&s, None).await.expect("connect");
    ws_send(&mut ws, json!({ "type": "ready", "slots": 1 })).await;
    let e = ws_next(&mut ws).await.expect("error");
    assert_eq!(e["type"], "error", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("register")),
        "{e}"
    );
    assert!(
        ws_next(&mut ws).await.is_none(),
        "closed after a bad register"
    );
    let mut ws = ws_connect(&s, None).await.expect("connect");
    ws_send(
        &mut ws,
        json!({ "type": "register", "worker": "w", "capacity": 0 }),
    )
    .await;
    let e = ws_next(&mut ws).await.expect("error");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("capacity")),
        "{e}"
    );

    // After registering, a bad message is answered and the connection stays.
    let mut ws = ws_register(&s, 1).await;
    for bad in [
        json!({ "type": "heartbeat", "cpuu": 1 }),
        json!({ "type": "dance" }),
        json!({ "type": "register", "worker": "again", "capacity": 1 }),
    ] {
        ws_send(&mut ws, bad.clone()).await;
        let e = ws_next(&mut ws).await.expect("error");
        assert_eq!(
            (&e["type"], &e["error"]["code"]),
            (&json!("error"), &json!("invalid")),
            "{bad}: {e}"
        );
    }
    {
        use futures::SinkExt as _;
        ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1, 2, 3,
        ]))
        .await
        .expect("send");
    }
    let e = ws_next(&mut ws).await.expect("error");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("text frames")),
        "{e}"
    );
    ws_send(&mut ws, json!({ "type": "heartbeat" })).await;
    ws_send(&mut ws, json!({ "type": "ready", "slots": 1 })).await;
    s.post("/schedule", json!({ "spec": "x" })).await;
    let assign = ws_next(&mut ws).await.expect("assign");
    assert_eq!(assign["type"], "assign", "still served: {assign}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_stream_each_change_and_end_with_the_final_state() {
    use futures::StreamExt as _;
    let s = Server::start(config()).await;
    let (_, body) = s.post("/schedule", json!({ "spec": "greet" })).await;
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let resp = s
        .req(reqwest::Method::GET, &format!("/jobs/{id}/events"))
        .send()
        .await
        .expect("events");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "text/event-stream",
        "server-sent events"
    );
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut worked = false;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(str::to_owned))
                };
                if let (Some(n), Some(data)) = (field("id: "), field("data: ")) {
                    assert_eq!(field("event: ").as_deref(), Some("job"), "{block}");
                    events.push((n, serde_json::from_str(&data).expect("json")));
                }
            }
            if !worked && !events.is_empty() {
                // The first event is the job as it is; now work it.
                worked = true;
                let (_, claimed) = s.post("/work/claim", json!({ "worker": "w" })).await;
                let t = &claimed["tasks"][0];
                s.post("/work/complete", json!({ "reports": [lease_of(t)] }))
                    .await;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream ends after the final state: {events:?}"
    );
    let ids: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<String> = (1..=events.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected, "ids count the events");
    assert_eq!(events[0].1["state"], "pending", "{events:?}");
    assert_eq!(
        events.last().map(|e| &e.1["state"]),
        Some(&json!("succeeded"))
    );
    assert_eq!(
        events.last().map(|e| &e.1["counts"]["succeeded"]),
        Some(&json!(1))
    );
    let (status, _) = s
        .get("/jobs/00000000-0000-0000-0000-000000000000/events")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---- callbacks and metrics ------------------------------------------------------

/// What a callback receiver got: headers and body of each request.
type Received = Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A receiver on loopback that answers 500 to its first `fail` requests,
/// then 204; returns its URL and what it received.
async fn receiver(fail: usize) -> (String, Received) {
    let got: Received = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let mut all = seen.lock().expect("lock");
                    all.push((headers, body.to_vec()));
                    if all.len() <= fail {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("receiver");
    });
    (url, got)
}

const KEY: &[u8] = b"callback-key-for-tests";

fn callback_config(allow: &[String]) -> rota_server::Config {
    rota_server::Config {
        callbacks: rota_server::CallbackConfig {
            key: Some(KEY.to_vec()),
            allow: rota_server::AllowList::new(allow).expect("allow"),
            backoff: Duration::from_millis(50),
            max_attempts: 4,
            ..rota_server::CallbackConfig::default()
        },
        ..config()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_signed_retried_and_their_delivery_shows_on_the_job() {
    use hmac::{KeyInit as _, Mac as _};
    let (hooks, got) = receiver(2).await;
    // A port nothing listens on: its deliveries fail until given up.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let s = Server::start(callback_config(&[hooks.clone(), dead.clone()])).await;
    let good = format!("{hooks}/hook?token=s3cret");
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "spec": "send", "params": { "n": 3 }, "callbacks": [
                good, { "url": format!("{dead}/hook"), "events": ["succeeded"] } ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let (_, claimed) = s.post("/work/claim", json!({ "worker": "w" })).await;
    let mut report = lease_of(&claimed["tasks"][0]);
    report["result"] = json!({ "sent": 3 });
    s.post("/work/complete", json!({ "reports": [report] }))
        .await;

    let mut job = Value::Null;
    until("both callbacks reach the final state", async || {
        job = s.get(&format!("/jobs/{id}")).await.1;
        job["callbacks"][0]["delivered"] == "succeeded"
            && job["callbacks"][1]["gave_up"] == "succeeded"
    })
    .await;
    let shown = &job["callbacks"];
    assert_eq!(
        shown[0]["url"],
        format!("{hooks}/…"),
        "no path or query shown: {shown}"
    );
    assert_eq!(shown[0]["last_status"], 204, "{shown}");
    assert_eq!(
        shown[1]["attempts"], 4,
        "given up after max attempts: {shown}"
    );
    assert!(
        shown[1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{shown}"
    );
    assert!(!job.to_string().contains("s3cret"), "{job}");

    // Every request is signed: t=T,v1=HMAC-SHA256(key, "T.body").
    let got = got.lock().expect("lock").clone();
    assert!(
        got.len() >= 3,
        "two failures, then the deliveries: {}",
        got.len()
    );
    for (headers, body) in &got {
        let sig = headers["rota-signature"].to_str().expect("ascii");
        let (t, v1) = sig
            .strip_prefix("t=")
            .and_then(|r| r.split_once(",v1="))
            .unwrap_or_else(|| panic!("signature {sig}"));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY).expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, want, "signature of {}", String::from_utf8_lossy(body));
        assert_eq!(headers["rota-job-id"], id.as_str());
        assert_eq!(headers["content-type"], "application/json");
    }
    let (headers, last) = got.last().expect("a delivery");
    let last: Value = serde_json::from_slice(last).expect("json");
    assert_eq!(headers["rota-event"], "succeeded");
    assert_eq!(
        (&last["event"], &last["job"]["state"]),
        (&json!("succeeded"), &json!("succeeded"))
    );
    assert_eq!(
        last["result"],
        json!({ "sent": 3 }),
        "a plain job's result: {last}"
    );
    assert_eq!(last["job"]["counts"]["succeeded"], 1);

    // The counters say so too.
    let metrics = s
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert!(value("rota_callback_deliveries_total ") >= 1, "{metrics}");
    assert!(value("rota_callback_failures_total ") >= 2 + 4, "{metrics}");
    assert_eq!(value("rota_tasks_claimed_total "), 1, "{metrics}");
    assert_eq!(
        value("rota_task_reports_total{outcome=\"succeeded\"} "),
        1,
        "{metrics}"
    );
    assert_eq!(
        value("rota_tasks{queue=\"default\",state=\"succeeded\"} "),
        1,
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE rota_tasks gauge"), "{metrics}");

    // Callbacks elsewhere, or without a key, are refused before any job is made.
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "spec": "x", "callbacks": ["http://elsewhere.example/hook"] }),
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::FORBIDDEN, &json!("callback_not_allowed")),
        "{body}"
    );
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "spec": "x", "callbacks": ["file:///etc/passwd"] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let keyless = Server::start(config()).await;
    let (status, body) = keyless
        .post(
            "/schedule",
            json!({ "spec": "x", "callbacks": [format!("{hooks}/hook")] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--callback-key-file")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_priority_run_at_and_timeout_are_kept_and_obeyed() {
    let s = Server::start(config()).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "jobs": [
                { "spec": "low", "priority": -1 },
                { "spec": "high", "priority": 5, "timeout_ms": 60000 },
                { "spec": "later", "priority": 9, "run_at": later },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, claimed) = s
        .post(
            "/work/claim",
            json!({ "worker": "w", "limit": 10, "lease_ms": 3600000 }),
        )
        .await;
    let specs: Vec<&Value> = claimed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| &t["spec"])
        .collect();
    assert_eq!(
        specs,
        [&json!("high"), &json!("low")],
        "by priority; later not yet"
    );
    let high = &claimed["tasks"][0];
    let expires = chrono::DateTime::parse_from_rfc3339(high["expires_at"].as_str().expect("time"))
        .expect("rfc3339");
    assert!(
        expires < chrono::Utc::now() + chrono::Duration::seconds(61),
        "the 60 s timeout caps the hour-long lease: {high}"
    );
    let id = body["jobs"][1]["id"].as_str().expect("id");
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(
        job["timing"],
        json!({ "priority": 5, "run_at": null, "timeout_ms": 60000 })
    );
    let (status, body) = s
        .post("/schedule", json!({ "spec": "x", "timeout_ms": 10 }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_specs_params_schema_is_enforced_and_its_defaults_filled_in() {
    let s = Server::start(config()).await;
    let (status, body) = s
        .call(
            reqwest::Method::PUT,
            "/specs/send-email",
            Some(json!({
                "name": "send-email",
                "params_schema": {
                    "type": "object",
                    "required": ["to"],
                    "properties": {
                        "to": { "type": "string", "format": "email" },
                        "retries": { "type": "integer", "minimum": 0 }
                    }
                },
                "defaults": { "retries": 2, "from": "noreply@example.com" }
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s
        .call(
            reqwest::Method::PUT,
            "/specs/bad",
            Some(json!({ "name": "bad", "params_schema": { "type": "no-such-type" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Defaults fill what the job leaves out; the job's own values win.
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "spec": "send-email", "params": { "to": "a@example.com", "retries": 5 } }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["jobs"][0]["id"].as_str().expect("id").to_owned();
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(
        job["params"],
        json!({ "to": "a@example.com", "retries": 5, "from": "noreply@example.com" })
    );

    // A job that does not match fails the whole request, saying where.
    let (_, before) = s.get("/jobs").await;
    let (status, body) = s
        .post(
            "/schedule",
            json!({ "jobs": [
                { "spec": "send-email", "params": { "to": "b@example.com" } },
                { "spec": "send-email", "params": { "retries": -1 } },
            ] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("\"to\"") && message.contains("/retries"),
        "{message}"
    );
    let (_, after) = s.get("/jobs").await;
    assert_eq!(before["jobs"], after["jobs"], "no job was made");
}
