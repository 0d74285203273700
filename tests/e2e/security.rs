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

/// A callback receiver on loopback: answers every request 200 and keeps
/// each one (head and body) as text.
fn hook_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(100) {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            let complete = |seen: &[u8]| {
                let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return false;
                };
                let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                seen.len() >= end + 4 + length
            };
            while !complete(&seen) {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            kept.lock()
                .expect("hooks")
                .push(String::from_utf8_lossy(&seen).into_owned());
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// Every file under `dir`, but `skip`, as bytes, with its path.
fn files_under(dir: &std::path::Path, skip: &[std::path::PathBuf]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if !skip.contains(&path)
                && let Ok(bytes) = std::fs::read(&path)
            {
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out
}

/// Everything one run of `rota serve` produced — every answer, its whole
/// log at debug level, every file it wrote (the store, payload files),
/// every callback it delivered — holds none of the secrets it was given or
/// sent: tokens (also in refused requests), a source URL's password and
/// its pre-signed query, the callback key, a callback URL's query.
#[test]
fn no_secret_appears_in_any_answer_log_line_file_or_callback() {
    const ADMIN: &str = "admin-secret-7f3a9c1e5b2d";
    const APP: &str = "app-secret-4c8e1a7f9b3d";
    const WORKER: &str = "worker-secret-9d2b6f1a4e7c";
    const KEY: &str = "callback-key-secret-5a1e9c3b7f";
    const PASSWORD: &str = "pw-secret-3e8a1c";
    const SIGNATURE: &str = "sig-secret-6b2d9f";
    const HOOK_QUERY: &str = "hook-secret-8c4a2e";
    let s = Scratch::new();
    let (tokens, key) = (s.path("tokens"), s.path("callback.key"));
    std::fs::write(
        &tokens,
        format!("{ADMIN} admin\n{APP} schedule\n{WORKER} work\n"),
    )
    .expect("tokens");
    std::fs::write(&key, KEY).expect("key");
    let (hook_port, hooks) = hook_receiver();
    // A source address nothing listens on: its ingest fails, with an error.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let (allow_hook, allow_source) = (
        format!("http://127.0.0.1:{hook_port}/"),
        format!("http://127.0.0.1:{dead_port}/"),
    );
    let (server, url) = crate::serve::serve_env(
        &s,
        &[
            "--tokens",
            tokens.to_str().expect("path"),
            "--callback-key-file",
            key.to_str().expect("path"),
            "--allow-callback",
            &allow_hook,
            "--allow-source",
            &allow_source,
        ],
        &[("ROTA_LOG", "debug")],
    );
    let mut answers = Vec::new();
    let mut call = |start: &str, token: &str, body: &serde_json::Value| {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let start = format!("{start}Content-Type: application/json\r\n");
        let (head, rest) = http_raw(&start, &url, token, &body);
        answers.push(format!("{head}\n{}", String::from_utf8_lossy(&rest)));
        serde_json::from_slice::<serde_json::Value>(&rest).unwrap_or_default()
    };
    let post_ = "POST /schedule HTTP/1.1\r\n";
    // A batch job whose source URL has a password (with `#` and `?` in it).
    let with_password = call(
        post_,
        APP,
        &json!({"spec": "s", "batch": {
            "source": format!("http://reader:{PASSWORD}%23%3F@127.0.0.1:{dead_port}/data.csv"),
            "format": "csv"}}),
    );
    // One with a pre-signed URL's query.
    call(
        post_,
        APP,
        &json!({"spec": "s", "batch": {
            "source": format!("http://127.0.0.1:{dead_port}/data.csv?X-Amz-Signature={SIGNATURE}"),
            "format": "csv"}}),
    );
    // A plain job with a callback whose query holds the receiver's secret.
    let plain = call(
        post_,
        APP,
        &json!({"spec": "s", "params": {"n": 1},
                "callbacks": [format!("http://127.0.0.1:{hook_port}/hook?t={HOOK_QUERY}")]}),
    );
    let plain = plain["jobs"][0]["id"]
        .as_str()
        .expect("plain job")
        .to_owned();
    // Tokens the server must refuse without echoing them.
    call("GET /jobs HTTP/1.1\r\n", &format!("{ADMIN}x"), &json!(null));
    call("PUT /specs/s HTTP/1.1\r\n", APP, &json!({"name": "s"}));
    call(
        "POST /work/claim HTTP/1.1\r\n",
        APP,
        &json!({"queues": ["default"]}),
    );

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workers/http_worker.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&url)
        .args(["--token", WORKER, "--idle-exit", "2"])
        .output()
        .expect("run the python worker");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(30), "the callback is delivered", || {
        hooks
            .lock()
            .expect("hooks")
            .iter()
            .any(|h| h.contains("succeeded"))
    });
    let failed = with_password["jobs"][0]["id"]
        .as_str()
        .expect("the batch job")
        .to_owned();
    wait_until(Duration::from_secs(30), "the batch job fails", || {
        get(&url, &format!("/jobs/{failed}"), APP)["state"] == "failed"
    });
    wait_until(Duration::from_secs(30), "every job ends", || {
        get(&url, "/jobs", APP)["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .all(|j| ["succeeded", "failed"].contains(&j["state"].as_str().unwrap_or("")))
    });
    let listing = call("GET /jobs HTTP/1.1\r\n", APP, &json!(null));
    for job in listing["jobs"].as_array().expect("jobs").clone() {
        let id = job["id"].as_str().expect("id");
        for path in [
            format!("/jobs/{id}"),
            format!("/jobs/{id}/tasks?results=true"),
            format!("/jobs/{id}/files"),
            format!("/jobs/{id}/events"),
        ] {
            call(&format!("GET {path} HTTP/1.1\r\n"), APP, &json!(null));
        }
    }
    call("GET /metrics HTTP/1.1\r\n", ADMIN, &json!(null));
    call("GET /workers HTTP/1.1\r\n", WORKER, &json!(null));
    signal(&server, "TERM");
    let (status, log) = finish(server, Duration::from_secs(20));
    assert!(status.success(), "{log}");
    // The run did what it should, so the greps below look at real output.
    assert!(
        answers.iter().any(|a| a.contains("reader:***@")),
        "the password's job is shown, redacted: {answers:#?}"
    );
    assert!(answers.iter().any(|a| a.contains(&plain)), "{answers:#?}");
    assert!(log.contains("DEBUG") || log.contains("debug"), "{log}");

    let files = files_under(s.dir.path(), &[tokens.clone(), key.clone()]);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("rota.db")),
        "{files:?}"
    );
    let hooks = hooks.lock().expect("hooks").clone();
    for secret in [ADMIN, APP, WORKER, KEY, PASSWORD, SIGNATURE, HOOK_QUERY] {
        for answer in &answers {
            assert!(!answer.contains(secret), "{secret} in an answer: {answer}");
        }
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        if secret != HOOK_QUERY {
            // The callback's own URL is kept (it is where deliveries go),
            // and its receiver saw it in the request line.
            for (path, bytes) in &files {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} in {path}"
                );
            }
            for hook in &hooks {
                assert!(!hook.contains(secret), "{secret} in a callback: {hook}");
            }
        }
    }
    for hook in &hooks {
        let body = hook.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert!(!body.contains(HOOK_QUERY), "in a callback body: {body}");
    }
}

/// A proxy in the server's environment (`HTTP_PROXY`) is not used for
/// sources while the egress filter is on: the proxy would resolve the name
/// (here one of a loopback address) past the filter.
#[test]
fn a_proxy_in_the_environment_does_not_carry_sources_past_the_egress_filter() {
    let (proxy_port, proxied) = hook_receiver();
    let s = Scratch::new();
    let tokens = s.path("tokens");
    std::fs::write(&tokens, "app-token-0123456789 schedule\n").expect("tokens");
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let (server, url) = crate::serve::serve_env(
        &s,
        &[
            "--tokens",
            tokens.to_str().expect("path"),
            "--allow-source",
            "http://localhost:9/",
        ],
        &[("HTTP_PROXY", &proxy), ("http_proxy", &proxy)],
    );
    let answer = post(
        &url,
        "/schedule",
        "app-token-0123456789",
        &json!({"spec": "s", "batch": {"source": "http://localhost:9/data.csv", "format": "csv"}}),
    );
    let id = answer["jobs"][0]["id"].as_str().expect("a job").to_owned();
    let mut job = serde_json::Value::Null;
    wait_until(Duration::from_secs(30), "the job fails", || {
        job = get(&url, &format!("/jobs/{id}"), "app-token-0123456789");
        job["state"] == "failed"
    });
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("localhost") && error.contains("allow-list"),
        "{job}"
    );
    assert!(
        proxied.lock().expect("proxy").is_empty(),
        "the proxy was asked: {:?}",
        proxied.lock().expect("proxy")
    );
    signal(&server, "TERM");
    let _ = finish(server, Duration::from_secs(20));
}

/// Text a client chose that reaches a log line through an error (here a
/// source path with a line break, in an error the server logs) is written
/// on that line, escaped: it cannot start a line of its own.
#[test]
fn an_error_quoting_client_text_cannot_forge_a_line_of_the_servers_log() {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(s.path("tokens"), "app-token-0123456789 schedule\n").expect("tokens");
    let (server, url) = serve(
        &s,
        &[
            "--tokens",
            s.path("tokens").to_str().expect("path"),
            "--allow-source",
            data.to_str().expect("path"),
        ],
    );
    let forged = "2026-12-07T00:00:00.000000Z  INFO rota_server: admin token rotated";
    let source = format!("{}/missing\n{forged}\r.csv", data.display());
    let answer = post(
        &url,
        "/schedule",
        "app-token-0123456789",
        &json!({"spec": "x", "batch": {"source": source, "format": "csv"}}),
    );
    let id = answer["jobs"][0]["id"].as_str().expect("a job").to_owned();
    wait_until(Duration::from_secs(30), "the job fails", || {
        get(&url, &format!("/jobs/{id}"), "app-token-0123456789")["state"] == "failed"
    });
    signal(&server, "TERM");
    let (_, log) = finish(server, Duration::from_secs(20));
    assert!(log.contains("admin token rotated"), "{log}");
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-12-07T00:00:00"),
            "a forged line: {line:?}\n{log}"
        );
        assert!(!line.contains('\r'), "a carriage return: {line:?}");
    }
}
