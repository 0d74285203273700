//! Python workers over WebSocket (`tests/workers/ws_worker.py`, written from
//! docs/worker-protocol.md with the `websockets` package) against
//! `rota serve`: registration, assignments, progress and results the jobs
//! API shows; a worker that drops its connection, and a server killed with
//! SIGKILL while tasks run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{get, post, serve};
use crate::support::{Scratch, finish, signal, wait_until};

fn ws_worker(url: &str, extra: &[&str]) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workers/ws_worker.py");
    Command::new("python3")
        .arg(script)
        .arg(url)
        .args(["--token", "worker-token-0123456789"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the python worker")
}

/// Waits for a worker to exit and returns its summary.
fn summary(worker: Child) -> Value {
    let out = worker.wait_with_output().expect("worker output");
    assert!(
        out.status.success(),
        "python worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no summary: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A scratch directory with tokens, a CSV of `rows` rows and a server that
/// may read it.
fn setup(rows: u64) -> (Scratch, Vec<String>) {
    let s = Scratch::new();
    std::fs::write(
        s.path("tokens"),
        "app-token-0123456789 schedule\nworker-token-0123456789 work\n",
    )
    .expect("tokens");
    let data = s.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let mut csv = String::from("id,name\n");
    for i in 1..=rows {
        csv.push_str(&format!("{i},name {i}\n"));
    }
    std::fs::write(data.join("people.csv"), csv).expect("write");
    let args = vec![
        "--tokens".to_owned(),
        s.path("tokens").to_string_lossy().into_owned(),
        "--allow-source".to_owned(),
        data.to_string_lossy().into_owned(),
    ];
    (s, args)
}

fn schedule_batch(s: &Scratch, url: &str, max_rows: u64) -> String {
    let source = s.path("data/people.csv");
    let answer = post(
        url,
        "/schedule",
        "app-token-0123456789",
        &json!({ "spec": "import", "max_attempts": 3, "retry_backoff_ms": 10,
                 "batch": { "source": source.to_str().expect("path"), "max_rows": max_rows } }),
    );
    let id = answer["jobs"][0]["id"].as_str().expect("id").to_owned();
    wait_until(Duration::from_secs(20), "the batch is ingested", || {
        get(url, &format!("/jobs/{id}"), "app-token-0123456789")["released"] == true
    });
    id
}

/// Every task succeeded, and the results add up to every row once.
fn assert_rows_once(url: &str, job: &str, rows: u64) -> Vec<Value> {
    let tasks = get(
        url,
        &format!("/jobs/{job}/tasks?results=true"),
        "app-token-0123456789",
    );
    let tasks = tasks["tasks"].as_array().expect("tasks").clone();
    let (mut n, mut sum) = (0, 0);
    for t in &tasks {
        assert_eq!(t["state"], "succeeded", "{t}");
        let r: Value = serde_json::from_str(t["result"].as_str().expect("result")).expect("json");
        n += r["rows"].as_u64().expect("rows");
        sum += r["sum_id"].as_u64().expect("sum");
    }
    assert_eq!((n, sum), (rows, rows * (rows + 1) / 2), "every row once");
    tasks
}

#[test]
fn python_workers_over_websocket_register_report_progress_and_survive_a_dropped_connection() {
    let (s, args) = setup(250);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (server, url) = serve(&s, &args);
    let batch = schedule_batch(&s, &url, 50);
    let plain = post(
        &url,
        "/schedule",
        "app-token-0123456789",
        &json!({ "spec": "greet", "params": { "id": 7 } }),
    )["jobs"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // The first worker takes two tasks and vanishes without a word.
    let dropped = summary(ws_worker(
        &url,
        &[
            "--name",
            "ws-1",
            "--capacity",
            "2",
            "--lease-ms",
            "1500",
            "--task-ms",
            "60000",
            "--drop-after",
            "2",
        ],
    ));
    assert_eq!(dropped["assigned"], 2, "{dropped}");
    assert_eq!(dropped["reports"], 0, "{dropped}");
    assert_eq!(dropped["dropped"], true, "{dropped}");

    // The second works slowly enough to be watched.
    let worker = ws_worker(
        &url,
        &[
            "--name",
            "ws-2",
            "--capacity",
            "2",
            "--lease-ms",
            "1500",
            "--task-ms",
            "1500",
            "--idle-exit",
            "3",
        ],
    );
    let mut seen = Value::Null;
    wait_until(
        Duration::from_secs(20),
        "GET /workers shows ws-2 at work",
        || {
            let workers = get(&url, "/workers", "worker-token-0123456789");
            seen = workers["workers"]
                .as_array()
                .and_then(|w| w.iter().find(|w| w["worker"] == "ws-2").cloned())
                .unwrap_or(Value::Null);
            seen["tasks"].as_array().is_some_and(|t| !t.is_empty())
                && seen["logs"].as_array().is_some_and(|l| !l.is_empty())
                && seen["cpu"].is_number()
        },
    );
    assert_eq!(seen["capacity"], 2, "{seen}");
    assert!(
        seen["hostname"].is_string() && seen["os"] == "linux",
        "{seen}"
    );
    let mut running = Value::Null;
    wait_until(
        Duration::from_secs(20),
        "GET /jobs/{id} shows progress",
        || {
            running =
                get(&url, &format!("/jobs/{batch}"), "app-token-0123456789")["running"].clone();
            running.as_array().is_some_and(|r| {
                r.iter()
                    .any(|t| t["worker"] == "ws-2" && t["progress"]["total"].as_u64() > Some(0))
            })
        },
    );
    let done = summary(worker);
    let now = get(
        &url,
        &format!("/jobs/{batch}/tasks"),
        "app-token-0123456789",
    );
    assert_eq!(
        done["assigned"], 6,
        "five batch tasks and the plain one: {done}\n{now}"
    );
    assert_eq!(done["acks"]["succeeded"], 6, "{done}");
    assert_eq!(done["refused"], json!([]), "{done}");
    assert!(done["heartbeats"].as_u64() > Some(3), "{done}");

    let job = get(
        &url,
        &format!("/jobs/{batch}/wait?timeout=10s"),
        "app-token-0123456789",
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    let tasks = assert_rows_once(&url, &batch, 250);
    // The dropped worker took the two oldest tasks, the batch's first two;
    // their leases ran out and they ran again.
    let attempts: Vec<&Value> = tasks.iter().map(|t| &t["attempt"]).collect();
    assert_eq!(
        attempts,
        [&json!(2), &json!(2), &json!(1), &json!(1), &json!(1)]
    );
    let plain = get(&url, &format!("/jobs/{plain}"), "app-token-0123456789");
    assert_eq!(plain["state"], "succeeded", "{plain}");
    // Gone from the list once disconnected.
    assert_eq!(
        get(&url, "/workers", "worker-token-0123456789")["workers"],
        json!([])
    );

    // A worker with the wrong token is refused before the upgrade; an
    // application token may not work.
    let refused = post(
        &url,
        "/work/claim",
        "app-token-0123456789",
        &json!({ "worker": "w" }),
    );
    assert_eq!(refused["error"]["code"], "forbidden");

    signal(&server, "TERM");
    let (status, stderr) = finish(server, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("worker connected"), "{stderr}");
    assert!(!stderr.contains("worker-token-0123456789"), "{stderr}");
}

#[test]
fn tasks_running_when_the_server_is_killed_are_reclaimed_after_a_restart_with_exact_counts() {
    let (s, args) = setup(400);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (server, url) = serve(&s, &args);
    let batch = schedule_batch(&s, &url, 100);
    let worker = ws_worker(
        &url,
        &[
            "--capacity",
            "4",
            "--lease-ms",
            "1500",
            "--task-ms",
            "30000",
        ],
    );
    wait_until(Duration::from_secs(20), "all four tasks run", || {
        get(&url, &format!("/jobs/{batch}"), "app-token-0123456789")["counts"]["running"] == 4
    });
    signal(&server, "KILL");
    let _ = finish(server, Duration::from_secs(10));
    let gone = summary(worker);
    assert_eq!(gone["reports"], 0, "{gone}");
    assert!(gone["closed_by_server"].is_string(), "{gone}");

    let (server, url) = serve(&s, &args);
    let done = summary(ws_worker(&url, &["--capacity", "4", "--idle-exit", "4"]));
    assert_eq!(done["acks"]["succeeded"], 4, "{done}");
    let job = get(
        &url,
        &format!("/jobs/{batch}/wait?timeout=10s"),
        "app-token-0123456789",
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["counts"]["succeeded"], 4, "{job}");
    assert_eq!(job["counts"]["total"], 4, "{job}");
    for t in assert_rows_once(&url, &batch, 400) {
        assert_eq!(t["attempt"], 2, "reclaimed as its second attempt: {t}");
    }
    signal(&server, "TERM");
    let (status, stderr) = finish(server, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
}
