//! Several `rota serve` nodes on one PostgreSQL database, with nothing else
//! between them: a worker attached to one node gets the work scheduled
//! through another, a job scheduled twice under one key through two nodes
//! is one job, the files of a batch job are read by every node, and a
//! node's death mid-ingest loses nothing.
//!
//! The database is `ROTA_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its
//! own; an unreachable server fails the tests.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rota_core::JobId;

use crate::serve::{get, post};
use crate::support::{Scratch, all_tasks, finish, runtime, signal, wait_until, write_csv};

const TOKEN: &str = "nodes-test-token-0123456789";

/// A store URL naming a fresh schema in the test database.
fn store_url() -> String {
    let base = std::env::var("ROTA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{sep}schema={}&pool_size=4",
        rota_store::unique_schema("rota_e2e")
    )
}

/// `rota serve` on `store`, its log in `log`.
fn node(s: &Scratch, store: &str, log: &str) -> (Child, String) {
    node_with(s, store, log, &[])
}

/// `rota serve` on `store` with `extra` flags, its log in `log`.
fn node_with(s: &Scratch, store: &str, log: &str, extra: &[&str]) -> (Child, String) {
    let tokens = s.path("tokens");
    std::fs::write(&tokens, format!("{TOKEN} admin\n")).expect("tokens");
    let tokens = tokens.to_string_lossy().into_owned();
    let log = std::fs::File::create(s.path(log)).expect("log file");
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        &tokens,
        "--store",
        store,
    ];
    args.extend_from_slice(extra);
    crate::serve::listening(
        s.command(&args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn rota serve"),
    )
}

#[test]
fn a_worker_on_one_node_gets_work_scheduled_through_another() {
    let s = Scratch::new();
    let store = store_url();
    let (a, url_a) = node(&s, &store, "a.log");
    let (b, url_b) = node(&s, &store, "b.log");
    let mut waits = Vec::new();
    for round in 0..5 {
        // A worker waits on node a (long enough that only a wake-up or a
        // poll can end its wait early)...
        let claiming = {
            let url = url_a.clone();
            std::thread::spawn(move || {
                let answer = post(
                    &url,
                    "/work/claim",
                    TOKEN,
                    &serde_json::json!({
                        "worker": "w-a", "queues": ["nodes"], "wait_ms": 20_000, "limit": 1,
                    }),
                );
                (answer, Instant::now())
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        // ...while a job is scheduled through node b.
        let sent = Instant::now();
        let made = post(
            &url_b,
            "/schedule",
            TOKEN,
            &serde_json::json!({ "spec": "greet", "queue": "nodes", "params": { "round": round } }),
        );
        let id = made["jobs"][0]["id"].as_str().expect("job id").to_owned();
        let (answer, got) = claiming.join().expect("claimer");
        let tasks = answer["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), 1, "round {round}: {answer}");
        assert_eq!(tasks[0]["job_id"], id.as_str(), "{answer}");
        let waited = got.saturating_duration_since(sent);
        assert!(
            waited < Duration::from_secs(10),
            "round {round}: the worker got its task {waited:?} after it was scheduled"
        );
        waits.push(waited);
        // The job is the same job through either node.
        let through_a = get(&url_a, &format!("/jobs/{id}"), TOKEN);
        assert_eq!(through_a["state"], "running", "{through_a}");
    }
    eprintln!("from schedule on node b to claim on node a: {waits:?}");

    // One key scheduled through both nodes is one job.
    let body = serde_json::json!({ "spec": "greet", "queue": "nodes", "idempotency_key": "once" });
    let first = post(&url_a, "/schedule", TOKEN, &body);
    let second = post(&url_b, "/schedule", TOKEN, &body);
    assert_eq!(first["jobs"][0]["created"], true, "{first}");
    assert_eq!(second["jobs"][0]["created"], false, "{second}");
    assert_eq!(
        first["jobs"][0]["id"], second["jobs"][0]["id"],
        "{first} {second}"
    );

    for node in [a, b] {
        signal(&node, "TERM");
        let (status, log) = finish(node, Duration::from_secs(20));
        assert!(status.success(), "{log}");
        assert!(!log.contains(TOKEN), "{log}");
    }
}

/// A node killed in the middle of a batch job's ingest leaves it to another
/// node, which finishes it once the dead node's claim runs out: the job
/// then holds exactly what a clean `rota ingest` makes of the file.
#[test]
fn a_batch_job_whose_node_dies_mid_ingest_is_finished_by_another() {
    const ROWS: u64 = 150_000;
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let file = data.join("big.csv");
    write_csv(&file, ROWS);
    let store_url = store_url();
    let allow = ["--allow-source", data.to_str().expect("path")];
    let (a, url_a) = node_with(&s, &store_url, "a.log", &allow);
    let (b, url_b) = node_with(&s, &store_url, "b.log", &allow);
    let made = post(
        &url_a,
        "/schedule",
        TOKEN,
        &serde_json::json!({ "spec": "test", "batch": {
            "source": file.to_str().expect("path"), "max_rows": 5, "payload": "ndjson" } }),
    );
    let id: JobId = made["jobs"][0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("job id");
    wait_until(Duration::from_secs(60), "node a made some tasks", || {
        get(&url_b, &format!("/jobs/{id}"), TOKEN)["counts"]["total"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    signal(&a, "KILL");
    let _ = finish(a, Duration::from_secs(20));
    let rt = runtime();
    let store = rt
        .block_on(rota_store::open_store(&store_url))
        .expect("open the store");
    let job = rt
        .block_on(store.get_job(id))
        .expect("get job")
        .expect("the job");
    assert!(
        !job.released && job.counts.total > 0,
        "the kill did not land mid-ingest: {job:?}"
    );
    let before = job.counts.total;
    wait_released(
        &rt,
        &*store,
        id,
        "node b finished the ingest",
        &s.path("b.log"),
    );
    signal(&b, "TERM");
    let (status, log) = finish(b, Duration::from_secs(20));
    assert!(status.success(), "{log}");
    let log = std::fs::read_to_string(s.path("b.log")).expect("node b's log");
    // Node b took the file over once node a's claim on it ran out, as a
    // helper of the running ingest or resuming it.
    assert!(
        log.contains("resuming the interrupted batch ingest")
            || log.contains("helping read the files of a batch job"),
        "{log}"
    );

    let tasks = same_as_clean_ingest_of(&rt, &*store, id, &file, ROWS);
    assert!(tasks as u64 > before, "node b added the rest");
}

/// Waits (up to 2 min) until job `id` is released, failing with the job
/// and the node log `log` if it ends first.
fn wait_released(
    rt: &tokio::runtime::Runtime,
    store: &dyn rota_core::Store,
    id: JobId,
    what: &str,
    log: &std::path::Path,
) {
    wait_until(Duration::from_secs(120), what, || {
        let job = rt.block_on(store.get_job(id)).expect("get").expect("job");
        assert!(
            !job.state.is_terminal(),
            "{job:?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        job.released
    });
}

/// Asserts that job `id` holds exactly the tasks a clean `rota ingest` of
/// `file` into 5-row NDJSON tasks makes, of `rows` rows; returns how many.
fn same_as_clean_ingest_of(
    rt: &tokio::runtime::Runtime,
    store: &dyn rota_core::Store,
    id: JobId,
    file: &std::path::Path,
    rows: u64,
) -> usize {
    let clean = Scratch::new();
    let summary = clean.ingest(file, &["--batch-rows", "5", "--payload", "ndjson"]);
    let want = crate::support::tasks(&clean, crate::support::job_id(&summary));
    let theirs = clean.store();
    rt.block_on(async {
        let got = all_tasks(store, id).await;
        crate::support::same_as_clean_ingest(store, &got, &*theirs, &want, rows).await;
        got.len()
    })
}

/// A batch job over a directory, scheduled through one of three nodes, is
/// read by all three: each file once, by one node, whose id its record
/// names; the job's tasks are those `rota ingest` makes of the directory.
#[test]
fn a_batch_job_over_a_directory_is_read_by_all_three_nodes() {
    // Enough work that the two nodes the job was not scheduled through
    // join before the first node alone is done (they look every second).
    const FILES: u64 = 60;
    const ROWS: u64 = 20_000;
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    for i in 0..FILES {
        write_csv(&data.join(format!("part-{i:02}.csv")), ROWS);
    }
    let store_url = store_url();
    let allow = ["--allow-source", data.to_str().expect("path")];
    let nodes: Vec<(Child, String)> = ["a.log", "b.log", "c.log"]
        .iter()
        .map(|log| node_with(&s, &store_url, log, &allow))
        .collect();
    let made = post(
        &nodes[0].1,
        "/schedule",
        TOKEN,
        &serde_json::json!({ "spec": "test", "batch": {
            "source": data.to_str().expect("path"), "max_rows": 30, "payload": "ndjson" } }),
    );
    let id: JobId = made["jobs"][0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("job id");
    let rt = runtime();
    let store = rt
        .block_on(rota_store::open_store(&store_url))
        .expect("open the store");
    wait_released(&rt, &*store, id, "the job was ingested", &s.path("a.log"));
    let files = rt
        .block_on(store.list_files(id, rota_core::FileFilter::default()))
        .expect("list files");
    assert_eq!(files.len() as u64, FILES);
    let mut by_node = std::collections::BTreeMap::<String, u64>::new();
    for f in &files {
        assert_eq!(f.state, rota_core::FileState::Done, "{f:?}");
        assert_eq!(f.rows, ROWS, "{f:?}");
        *by_node.entry(f.node.clone().expect("a node")).or_default() += 1;
    }
    assert_eq!(by_node.len(), 3, "files read by node: {by_node:?}");
    let job = rt.block_on(store.get_job(id)).expect("get").expect("job");
    let report = job.ingest.expect("the ingest report");
    assert_eq!((report.files, report.rows), (FILES, FILES * ROWS));
    for ((mut child, _), log) in nodes.into_iter().zip(["a.log", "b.log", "c.log"]) {
        signal(&child, "TERM");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > Duration::from_secs(20) {
                let log = std::fs::read_to_string(s.path(log)).unwrap_or_default();
                panic!("node {log} did not stop:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let clean = Scratch::new();
    let summary = clean.ingest(&data, &["--batch-rows", "30", "--payload", "ndjson"]);
    let want = crate::support::tasks(&clean, crate::support::job_id(&summary));
    let theirs = clean.store();
    rt.block_on(async {
        let got = all_tasks(&*store, id).await;
        assert_eq!(got.len(), want.len(), "as many tasks as rota ingest makes");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.key, g.rows), (&w.key, w.rows));
        }
        // Payloads: one task in 97, spread over every file.
        for (g, w) in got.iter().zip(&want).step_by(97) {
            assert!(
                store.get_payload(g.id).await.expect("payload")
                    == theirs.get_payload(w.id).await.expect("payload"),
                "task {}: payloads differ",
                g.key
            );
        }
    });
    eprintln!("files read by node: {by_node:?}");
}

/// Connections cut while an upload is decoded into its job (as a database
/// restart or a failover cuts them) stop its ingest part way; the ingest is
/// run again until it finishes, and the job holds exactly what a clean
/// `rota ingest` makes of the file: nothing the client sent is lost.
#[test]
fn an_upload_whose_store_connections_are_cut_mid_ingest_loses_nothing() {
    const ROWS: u64 = 100_000;
    let s = Scratch::new();
    let file = s.path("big.csv");
    write_csv(&file, ROWS);
    let app = format!("rota_cut_{}", std::process::id());
    let store_url = format!("{}&application_name={app}", store_url());
    let (node, url) = node(&s, &store_url, "a.log");
    let state = s.path("state");
    let mut upload = s.command(&[
        "upload",
        file.to_str().expect("path"),
        "--server",
        &url,
        "--spec",
        "test",
        "--batch-rows",
        "5",
        "--payload",
        "ndjson",
        "--chunk-size",
        "64KiB",
        "--state-dir",
        state.to_str().expect("path"),
        "--json",
    ]);
    upload
        .env("ROTA_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let rt = runtime();
    let base = std::env::var("ROTA_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let admin = rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("admin connection");
        tokio::spawn(connection);
        client
    });
    // The server's connections are cut again and again while the upload
    // is sent and decoded (a rota upload that fails is run again: it
    // resumes where the server has the bytes).
    let mut cuts = 0i64;
    let mut sent = None;
    for _ in 0..20 {
        let mut child = upload.spawn().expect("spawn rota upload");
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "rota upload did not end"
            );
            cuts += rt
                .block_on(admin.query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name = $1",
                    &[&app],
                ))
                .expect("terminate")
                .get::<_, i64>(0);
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("rota upload");
        if out.status.success() {
            sent = Some(out);
            break;
        }
    }
    let out = sent.expect("rota upload never completed");
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let id: JobId = done["job_id"]
        .as_str()
        .expect("job id")
        .parse()
        .expect("job id");
    let store = rt
        .block_on(rota_store::open_store(&store_url))
        .expect("open the store");
    wait_released(
        &rt,
        &*store,
        id,
        "the upload's job was released",
        &s.path("a.log"),
    );
    signal(&node, "TERM");
    let (status, log) = finish(node, Duration::from_secs(20));
    assert!(status.success(), "{log}");
    let log = std::fs::read_to_string(s.path("a.log")).expect("the node's log");
    assert!(
        cuts > 0 && log.contains("the upload's ingest stopped on a store error; running it again"),
        "no cut landed in the middle of the upload's ingest ({cuts} connections cut):\n{log}"
    );

    same_as_clean_ingest_of(&rt, &*store, id, &file, ROWS);
}
