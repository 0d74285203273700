//! Several `rota serve` nodes on one PostgreSQL database, with nothing else
//! between them: a worker attached to one node gets the work scheduled
//! through another, and a job scheduled twice under one key through two
//! nodes is one job.
//!
//! The database is `ROTA_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each test in a schema of its
//! own; an unreachable server fails the tests.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::serve::{get, post};
use crate::support::{Scratch, finish, signal};

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
    let tokens = s.path("tokens");
    std::fs::write(&tokens, format!("{TOKEN} admin\n")).expect("tokens");
    let tokens = tokens.to_string_lossy().into_owned();
    let log = std::fs::File::create(s.path(log)).expect("log file");
    crate::serve::listening(
        s.command(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            &tokens,
            "--store",
            store,
        ])
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
