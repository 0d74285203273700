//! `rota serve` as an attacker meets it: without a tokens file it makes a
//! token and shows it once; worker log lines cannot forge the server's log.

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::serve::{get, http_raw, post, serve};
use crate::support::{Scratch, finish, signal, wait_until};

#[test]
fn without_a_tokens_file_the_server_makes_a_token_shows_it_once_and_asks_for_it() {
    let s = Scratch::new();
    let mut child = s
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rota serve");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).expect("the address");
    out.read_line(&mut second).expect("the token");
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("rota serve said {first:?}"))
        .to_owned();
    let token = second
        .strip_prefix("token ")
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("rota serve said {second:?}"))
        .to_owned();
    assert!(token.len() >= 32, "{token}");
    let (head, _) = http_raw("GET /jobs HTTP/1.1\r\n", &url, "not-the-token", b"");
    assert!(head.starts_with("http/1.1 401"), "{head}");
    let job = post(&url, "/schedule", &token, &json!({"spec": "x"}));
    let id = job["jobs"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        get(&url, &format!("/jobs/{id}"), &token)["state"],
        "pending"
    );
    signal(&child, "TERM");
    let (status, stderr) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains(&token),
        "the token is shown once, not logged"
    );
}

#[test]
fn without_tokens_on_request_the_server_serves_only_local_programs() {
    let s = Scratch::new();
    let (child, url) = serve(&s, &["--insecure-no-auth"]);
    let job = post(&url, "/schedule", "", &json!({"spec": "x"}));
    assert!(job["jobs"][0]["id"].is_string(), "{job}");
    let (head, _) = http_raw(
        "GET /jobs HTTP/1.1\r\nOrigin: http://evil.example\r\n",
        &url,
        "",
        b"",
    );
    assert!(head.starts_with("http/1.1 403"), "{head}");
    signal(&child, "TERM");
    let _ = finish(child, Duration::from_secs(20));
}

#[test]
fn a_worker_log_line_cannot_forge_a_line_of_the_servers_log() {
    let s = Scratch::new();
    std::fs::write(
        s.path("tokens"),
        "app-token-0123456789 schedule\nworker-token-0123456789 work\n",
    )
    .expect("tokens");
    let (server, url) = serve(&s, &["--tokens", s.path("tokens").to_str().expect("path")]);
    post(
        &url,
        "/schedule",
        "app-token-0123456789",
        &json!({"spec": "x", "params": {"n": 1}}),
    );
    let forged = "done\n2026-12-07T00:00:00.000000Z  INFO rota_server: admin token rotated\r";
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workers/ws_worker.py");
    let worker = std::process::Command::new("python3")
        .arg(script)
        .arg(&url)
        .args(["--token", "worker-token-0123456789", "--task-ms", "2500"])
        .args(["--idle-exit", "1", "--log-text", forged])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the python worker");
    let out = worker.wait_with_output().expect("worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "the job succeeds", || {
        let jobs = get(&url, "/jobs", "app-token-0123456789");
        jobs["jobs"][0]["state"] == "succeeded"
    });
    signal(&server, "TERM");
    let (_, log) = finish(server, Duration::from_secs(20));
    assert!(log.contains("worker log"), "{log}");
    assert!(log.contains("admin token rotated"), "{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-07T00:00:00"),
            "a forged line: {line:?}\n{log}"
        );
        assert!(!line.contains('\r'), "a carriage return: {line:?}");
    }
}
