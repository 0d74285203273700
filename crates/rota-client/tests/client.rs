//! The client and the worker SDK against a real server (in this process,
//! over loopback HTTP and WebSocket, on a SQLite store file).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rota_client::worker::{Handler, Task, TaskError, WorkerOptions};
use rota_client::{Client, Error, UploadOptions};
use rota_core::JobState;
use serde_json::{Value, json};

struct Server {
    client: Client,
    dir: tempfile::TempDir,
}

async fn server() -> Server {
    server_with(|_| {}).await
}

async fn server_with(tune: impl FnOnce(&mut rota_server::Config)) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rota_store::open_store(&dir.path().join("rota.db").to_string_lossy())
        .await
        .expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = rota_server::Config {
        tokens: rota_server::Tokens::parse("tok-0123456789abcdef admin\n").expect("tokens"),
        uploads: Some(rota_server::UploadConfig::new(dir.path().join("uploads"))),
        ..rota_server::Config::default()
    };
    tune(&mut config);
    tokio::spawn(async move {
        rota_server::serve(listener, store, config, std::future::pending())
            .await
            .expect("serve");
    });
    Server {
        client: Client::new(&url, Some("tok-0123456789abcdef".into())).expect("client"),
        dir,
    }
}

/// Sums the ids of its records; fails each task's first attempt when told to.
struct Summer {
    fail_first: bool,
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl Handler for Summer {
    async fn run(&self, task: Task) -> Result<Value, TaskError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let records = task.records()?;
        task.progress(json!({ "done": 0, "total": records.len() }));
        if self.fail_first && task.attempt == 1 {
            return Err(TaskError::retry("first attempts fail here"));
        }
        let sum: u64 = records.iter().filter_map(|r| r["id"].as_u64()).sum();
        Ok(json!({ "rows": records.len(), "sum": sum }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_scheduled_worked_by_the_sdk_and_awaited() {
    let s = server().await;
    let ids = s
        .client
        .schedule_many(&[
            json!({ "spec": "sum", "params": { "id": 5 }, "max_attempts": 3, "retry_backoff_ms": 10 }),
            json!({ "spec": "sum", "params": { "id": 7 }, "max_attempts": 3, "retry_backoff_ms": 10 }),
        ])
        .await
        .expect("schedule");
    assert_eq!(ids.len(), 2);
    let handler = Arc::new(Summer {
        fail_first: true,
        calls: AtomicU32::new(0),
    });
    let summary = rota_client::worker::run(
        &s.client,
        WorkerOptions {
            name: "sdk".into(),
            capacity: 2,
            lease: Duration::from_secs(5),
            idle_exit: Some(Duration::from_secs(1)),
            ..WorkerOptions::default()
        },
        handler.clone(),
    )
    .await
    .expect("worker");
    assert_eq!(
        (summary.succeeded, summary.failed, summary.refused),
        (2, 2, 0),
        "{summary:?}"
    );
    assert_eq!(handler.calls.load(Ordering::Relaxed), 4);
    for (id, sum) in ids.into_iter().zip([5, 7]) {
        let (job, result) = s
            .client
            .wait_result(id, Duration::from_secs(10))
            .await
            .expect("wait");
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
        assert_eq!(result, Some(json!({ "rows": 1, "sum": sum })), "{job:?}");
    }
    let jobs = s
        .client
        .jobs(Some(JobState::Succeeded), 10)
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 2);

    // Errors come back typed, with the server's code.
    let missing = "01900000-0000-7000-8000-000000000000".parse().expect("id");
    match s.client.job(missing).await {
        Err(Error::Api {
            status: 404, code, ..
        }) => assert_eq!(code, "not_found"),
        other => panic!("expected not_found, got {other:?}"),
    }
    let bad = Client::new(s.client.base(), Some("wrong".into())).expect("client");
    match bad.schedule(&json!({ "spec": "x" })).await {
        Err(Error::Api { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_resumes_where_the_server_has_it() {
    let s = server().await;
    let file = s.dir.path().join("people.ndjson");
    let mut data = String::new();
    for i in 1..=20_000u64 {
        data.push_str(&format!("{{\"id\":{i},\"name\":\"person {i}\"}}\n"));
    }
    std::fs::write(&file, &data).expect("write");
    let opts = UploadOptions {
        metadata: vec![
            ("spec".into(), "import".into()),
            ("format".into(), "ndjson".into()),
            ("max_rows".into(), "1000".into()),
        ],
        chunk_size: 64 << 10,
        state_dir: Some(s.dir.path().join("state")),
    };
    // Interrupted after three chunks (the future is dropped mid-upload).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let first = {
        let (client, file, opts) = (s.client.clone(), file.clone(), opts.clone());
        tokio::spawn(async move {
            client
                .upload(&file, &opts, |p| {
                    let _ = tx.send(p.offset);
                })
                .await
        })
    };
    while let Some(offset) = rx.recv().await {
        if offset >= 3 * (64 << 10) {
            first.abort();
            break;
        }
    }
    assert!(first.await.is_err(), "the first upload was interrupted");

    let done = s
        .client
        .upload(&file, &opts, |_| {})
        .await
        .expect("resumed upload");
    assert!(done.resumed_at >= 3 * (64 << 10), "{done:?}");
    assert_eq!(done.offset, data.len() as u64);
    let job = done.job.expect("the upload's job");
    let mut released = s.client.job(job).await.expect("job");
    for _ in 0..200 {
        if released.released {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        released = s.client.job(job).await.expect("job");
    }
    assert!(released.released, "{released:?}");
    assert_eq!(released.counts.total, 20, "20 000 rows in batches of 1000");
    assert_eq!(released.ingest.as_ref().map(|i| i.rows), Some(20_000));
    assert!(
        std::fs::read_dir(s.dir.path().join("state"))
            .expect("state dir")
            .next()
            .is_none(),
        "the resume record is gone once the upload is done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_for_a_full_quota_is_tried_again_until_it_passes() {
    const TOKEN: &str = "upload-token-0123456789";
    let s = server_with(|c| {
        c.tokens = rota_server::Tokens::parse(&format!("{TOKEN} schedule\n")).expect("tokens");
        if let Some(u) = &mut c.uploads {
            u.max_open_per_token = 1;
        }
    })
    .await;
    let client = Client::new(s.client.base(), Some(TOKEN.to_owned())).expect("client");
    // The token's one unfinished upload.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/uploads", s.client.base()))
        .bearer_auth(TOKEN)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "100")
        .header("upload-metadata", "spec aW1wb3J0")
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let held = format!(
        "{}{}",
        s.client.base(),
        resp.headers()["location"].to_str().expect("location")
    );
    let file = s.dir.path().join("rows.ndjson");
    std::fs::write(&file, "{\"id\":1}\n{\"id\":2}\n").expect("write");
    let opts = UploadOptions {
        metadata: vec![
            ("spec".into(), "import".into()),
            ("format".into(), "ndjson".into()),
        ],
        ..UploadOptions::default()
    };
    let upload = {
        let file = file.clone();
        tokio::spawn(async move { client.upload(&file, &opts, |_| {}).await })
    };
    // Refused (429, Retry-After) until the other upload is gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!upload.is_finished(), "the client waits and tries again");
    let resp = http
        .delete(&held)
        .bearer_auth(TOKEN)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), reqwest::StatusCode::NO_CONTENT);
    let done = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .expect("the retried upload ends within a minute")
        .expect("task")
        .expect("the retried upload passes");
    assert_eq!(done.offset, done.length);
    assert!(done.job.is_some());
}

/// Works until dropped.
struct Forever;

#[async_trait::async_trait]
impl Handler for Forever {
    async fn run(&self, task: Task) -> Result<Value, TaskError> {
        task.progress(json!("started"));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_its_running_task_in_the_sdk() {
    let s = server().await;
    let id = s
        .client
        .schedule(&json!({ "spec": "slow" }))
        .await
        .expect("schedule");
    let worker = {
        let client = s.client.clone();
        tokio::spawn(async move {
            rota_client::worker::run(
                &client,
                WorkerOptions {
                    idle_exit: Some(Duration::from_secs(1)),
                    ..WorkerOptions::default()
                },
                Arc::new(Forever),
            )
            .await
        })
    };
    // Running, with the progress its handler gave.
    let mut shown = Value::Null;
    for _ in 0..200 {
        shown = s.client.get(&format!("/jobs/{id}")).await.expect("job");
        if shown["running"][0]["progress"] == "started" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown["running"][0]["progress"], "started", "{shown}");
    s.client.cancel(id).await.expect("cancel");
    let summary = tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker stops once idle")
        .expect("join")
        .expect("worker");
    assert_eq!((summary.dropped, summary.succeeded), (1, 0), "{summary:?}");
    let job = s.client.job(id).await.expect("job");
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.counts.running, 0, "the task ended: {job:?}");
}
