//! `rota serve` killed (SIGKILL) while it works: jobs scheduled by many
//! clients through the kills are each made once, with their task; a batch
//! job whose ingest a kill interrupted is finished after the restart,
//! exactly as a clean `rota ingest` makes it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rota_core::{Job, JobFilter, Store};

use crate::support::{Scratch, finish, runtime, signal, tasks, wait_until, write_csv};

/// The token the tests' clients send.
const TOKEN: &str = "chaos-client-token-0123456789";

/// `rota serve` on a free loopback port with `extra` flags and a tokens
/// file holding [`TOKEN`], its log in `log` (appended); returns the process
/// and its URL once it listens.
fn start(s: &Scratch, extra: &[&str], log: &str) -> (Child, String) {
    let tokens = s.path("tokens");
    std::fs::write(&tokens, format!("{TOKEN} schedule\n")).expect("tokens");
    let tokens = tokens.to_string_lossy().into_owned();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--tokens", &tokens];
    args.extend_from_slice(extra);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.path(log))
        .expect("log file");
    crate::serve::listening(
        s.command(&args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn rota serve"),
    )
}

/// One request on its own connection: the status and the JSON body, or
/// the I/O error that broke it (the server was killed).
fn try_http(
    method: &str,
    url: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> std::io::Result<(u16, serde_json::Value)> {
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    let broken = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "answer cut short");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(broken)?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(broken)?;
    let value = serde_json::from_slice(&answer[split + 4..]).map_err(|_| broken())?;
    Ok((status, value))
}

/// Every job in the store, newest first.
fn all_jobs(store: &dyn Store) -> Vec<Job> {
    runtime().block_on(async {
        let mut all: Vec<Job> = Vec::new();
        loop {
            let page = store
                .list_jobs(JobFilter {
                    before: all.last().map(|j| j.id),
                    limit: 500,
                    ..JobFilter::default()
                })
                .await
                .expect("list jobs");
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    })
}

/// 50 clients schedule 2,000 plain jobs, each under its own idempotency
/// key and retrying on a broken connection or a 5xx, while the server is
/// SIGKILLed and restarted 6 times: every key's job exists exactly once,
/// is the job its client was answered, and has exactly one task.
#[test]
fn server_kills_while_clients_schedule_leave_no_job_without_its_task() {
    const CLIENTS: usize = 50;
    const PER_CLIENT: usize = 40;
    const KILLS: usize = 6;
    let s = Arc::new(Scratch::new());
    let (server, url) = start(&s, &[], "serve.log");
    let url = Arc::new(RwLock::new(url));
    let answered = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, answered) = (url.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut ids = HashMap::new();
                for i in 0..PER_CLIENT {
                    let key = format!("client-{c}-job-{i}");
                    let body = serde_json::json!({
                        "spec": "chaos", "idempotency_key": key, "params": { "c": c, "i": i },
                    });
                    let mut tries = 0;
                    let id = loop {
                        tries += 1;
                        assert!(tries < 2_000, "{key}: no answer after {tries} tries");
                        let now = url.read().expect("url").clone();
                        match try_http("POST", &now, "/schedule", Some(&body)) {
                            Ok((200 | 201, answer)) => {
                                break answer["jobs"][0]["id"].as_str().expect("id").to_owned();
                            }
                            Ok((status, answer)) if status >= 500 => {
                                let _ = answer; // the store was busy: try again
                            }
                            Ok((status, answer)) => panic!("{key}: {status} {answer}"),
                            Err(_) => {} // the server is down: try again
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    };
                    ids.insert(key, id);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                ids
            })
        })
        .collect();
    let killer = {
        let (url, answered, done, s) = (url.clone(), answered.clone(), done.clone(), s.clone());
        std::thread::spawn(move || {
            let mut server = server;
            let total = CLIENTS * PER_CLIENT;
            for kill in 1..=KILLS {
                let at = total * kill / (KILLS + 1);
                while answered.load(Ordering::Relaxed) < at && !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                signal(&server, "KILL");
                let _ = finish(server, Duration::from_secs(20));
                let (next, next_url) = start(&s, &[], "serve.log");
                *url.write().expect("url") = next_url;
                server = next;
            }
            server
        })
    };
    let mut answers = HashMap::new();
    for client in clients {
        answers.extend(client.join().expect("a client failed"));
    }
    done.store(true, Ordering::Relaxed);
    let server = killer.join().expect("the killer failed");
    signal(&server, "TERM");
    let (status, log) = finish(server, Duration::from_secs(20));
    assert!(status.success(), "{log}");

    let store = s.store();
    let jobs = all_jobs(store.as_ref());
    let mut by_key: HashMap<String, Vec<&Job>> = HashMap::new();
    for job in &jobs {
        let key = job.key.clone().expect("every job has its key");
        let key = key.rsplit('/').next().unwrap_or_default().to_owned();
        by_key.entry(key).or_default().push(job);
    }
    assert_eq!(answers.len(), CLIENTS * PER_CLIENT);
    assert_eq!(jobs.len(), answers.len(), "one job per key, no more");
    for (key, id) in &answers {
        let found = by_key.get(key).map_or(&[][..], Vec::as_slice);
        assert_eq!(found.len(), 1, "{key}: {} jobs", found.len());
        assert_eq!(&found[0].id.to_string(), id, "{key}: answered another job");
        assert_eq!(
            found[0].counts.total, 1,
            "{key}: the job has {} tasks: {:?}",
            found[0].counts.total, found[0]
        );
        assert_eq!(tasks(&s, found[0].id).len(), 1, "{key}");
    }
}

/// A batch job's ingest is interrupted by a SIGKILL of the server once
/// some, not all, of its tasks exist; after the restart the job is
/// finished (released) with exactly the tasks and payloads that a clean
/// `rota ingest` of the same file makes, every row once.
#[test]
fn a_batch_job_interrupted_by_a_server_crash_is_finished_after_the_restart() {
    const ROWS: u64 = 200_000;
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let file = data.join("big.csv");
    write_csv(&file, ROWS);
    let allow = ["--allow-source", data.to_str().expect("path")];
    let (server, url) = start(&s, &allow, "serve.log");
    let body = serde_json::json!({
        "spec": "test", "batch": {
            "source": file.to_str().expect("path"), "max_rows": 5, "payload": "ndjson" },
    });
    let (status, answer) = try_http("POST", &url, "/schedule", Some(&body)).expect("schedule");
    assert_eq!(status, 201, "{answer}");
    let id: rota_core::JobId = answer["jobs"][0]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("job id");
    // Kill it mid-ingest: once some tasks exist, before the release.
    let mut seen = serde_json::Value::Null;
    wait_until(
        Duration::from_secs(60),
        "the ingest made some tasks",
        || {
            seen = try_http("GET", &url, &format!("/jobs/{id}"), None)
                .expect("get job")
                .1;
            seen["counts"]["total"].as_u64().unwrap_or(0) > 0
        },
    );
    signal(&server, "KILL");
    let _ = finish(server, Duration::from_secs(20));
    let job = crate::support::job(&s, id);
    assert!(
        !job.released && job.counts.total > 0,
        "the kill did not land mid-ingest: {job:?}"
    );
    let before = job.counts.total;

    let (server, url) = start(&s, &allow, "serve.log");
    wait_until(
        Duration::from_secs(120),
        "the restarted server finished the ingest",
        || {
            let job = crate::support::job(&s, id);
            assert!(!job.state.is_terminal(), "{job:?}");
            job.released
        },
    );
    let job = try_http("GET", &url, &format!("/jobs/{id}"), None)
        .expect("get job")
        .1;
    signal(&server, "TERM");
    let (status, _) = finish(server, Duration::from_secs(20));
    let log = std::fs::read_to_string(s.path("serve.log")).expect("the server's log");
    assert!(status.success(), "{log}");
    // The restarted server takes the file over once the dead one's claim on
    // it runs out: joining the ingest while the dead server's claim on the
    // job still looks live, or resuming it once that ran out too.
    assert!(
        log.contains("resuming the interrupted batch ingest")
            || log.contains("helping read the files of a batch job"),
        "{log}"
    );

    // A clean ingest of the same file, in a store of its own.
    let clean = Scratch::new();
    let summary = clean.ingest(&file, &["--batch-rows", "5", "--payload", "ndjson"]);
    let clean_id = crate::support::job_id(&summary);
    assert_eq!(job["ingest"]["rows"], ROWS, "{job}");
    assert_eq!(job["ingest"]["rows"], summary["rows"], "{job}\n{summary}");
    let got = tasks(&s, id);
    let want = tasks(&clean, clean_id);
    assert!(got.len() as u64 > before, "the restart added the rest");
    let (ours, theirs) = (s.store(), clean.store());
    runtime().block_on(crate::support::same_as_clean_ingest(
        &*ours, &got, &*theirs, &want, ROWS,
    ));
}
