//! `rota serve` as a process: scheduled over HTTP, worked by a Python
//! worker written from docs/worker-protocol.md, stopped by SIGTERM.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Scratch, finish, signal};

/// `rota serve` on a free loopback port; returns the process and its URL.
pub(crate) fn serve(s: &Scratch, extra: &[&str]) -> (Child, String) {
    serve_env(s, extra, &[])
}

/// `rota serve` as [`serve`], with extra environment variables.
pub(crate) fn serve_env(s: &Scratch, extra: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut cmd = s.command(&args);
    cmd.envs(env.iter().copied());
    serve_command(cmd)
}

/// Spawns `cmd`, a `rota serve` command; returns the process and its URL
/// once it listens.
fn serve_command(mut cmd: Command) -> (Child, String) {
    listening(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rota serve"),
    )
}

/// `child`, a `rota serve` spawned with its stdout piped, and its URL once
/// it says it listens.
pub(crate) fn listening(mut child: Child) -> (Child, String) {
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the address");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("rota serve said {line:?}"))
        .to_owned();
    (child, url)
}

/// POSTs `body` as JSON with a bearer token; returns the JSON answer.
pub(crate) fn post(
    url: &str,
    path: &str,
    token: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    http("POST", url, path, token, Some(body))
}

pub(crate) fn get(url: &str, path: &str, token: &str) -> serde_json::Value {
    http("GET", url, path, token, None)
}

/// One HTTP/1.1 request on its own connection (the tests' client needs no
/// more than this), answered with JSON.
fn http(
    method: &str,
    url: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> serde_json::Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let start = format!("{method} {path} HTTP/1.1\r\nContent-Type: application/json\r\n");
    let (head, rest) = http_raw(&start, url, token, body.as_bytes());
    assert!(
        !head.contains("chunked"),
        "chunked answers are not read here: {head}"
    );
    serde_json::from_slice(&rest)
        .unwrap_or_else(|_| panic!("not JSON: {head}\n{}", String::from_utf8_lossy(&rest)))
}

/// Sends `start` (a request line and any header lines, each ending in
/// CRLF) with a bearer token and `body` on a connection of its own; returns
/// the answer's head, lower-cased, and its body.
pub(crate) fn http_raw(start: &str, url: &str, token: &str, body: &[u8]) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        conn,
        "{start}Host: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write");
    conn.write_all(body).expect("write body");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).expect("read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response");
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    (head, answer[split + 4..].to_vec())
}

fn python_worker(url: &str, token: &str, extra: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workers/http_worker.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(url)
        .args(["--token", token, "--idle-exit", "2"])
        .args(extra)
        .output()
        .expect("run the python worker");
    assert!(
        out.status.success(),
        "python worker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("worker summary")
}

#[test]
fn a_python_worker_over_http_processes_plain_and_batch_jobs_of_rota_serve() {
    let s = Scratch::new();
    std::fs::write(
        s.path("tokens"),
        "app-token-0123456789 schedule\nworker-token-0123456789 work\n",
    )
    .expect("tokens");
    let data = s.path("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    let mut csv = String::from("id,name\n");
    for i in 1..=250 {
        csv.push_str(&format!("{i},name {i}\n"));
    }
    std::fs::write(data.join("people.csv"), &csv).expect("write");
    let tokens = s.path("tokens");
    let (server, url) = serve(
        &s,
        &[
            "--tokens",
            tokens.to_str().expect("path"),
            "--allow-source",
            data.to_str().expect("path"),
        ],
    );

    let scheduled = post(
        &url,
        "/schedule",
        "app-token-0123456789",
        &serde_json::json!({ "jobs": [
            { "spec": "greet", "params": { "id": 7 } },
            { "spec": "import", "max_attempts": 3, "retry_backoff_ms": 10, "batch": {
                "source": data.join("people.csv").to_str().expect("path"),
                "max_rows": 100 } },
        ] }),
    );
    let plain = scheduled["jobs"][0]["id"].as_str().expect("id").to_owned();
    let batch = scheduled["jobs"][1]["id"].as_str().expect("id").to_owned();
    // The batch is ingested in the background; wait for its release.
    crate::support::wait_until(Duration::from_secs(20), "the batch is ingested", || {
        get(&url, &format!("/jobs/{batch}"), "app-token-0123456789")["released"] == true
    });

    // Each task's first attempt fails (retryably); the second succeeds.
    let summary = python_worker(&url, "worker-token-0123456789", &["--fail-first-attempt"]);
    assert_eq!(
        summary["reports"], 8,
        "4 tasks, two attempts each: {summary}"
    );

    let job = get(
        &url,
        &format!("/jobs/{batch}/wait?timeout=10s"),
        "app-token-0123456789",
    );
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["counts"]["succeeded"], 3);
    let tasks = get(
        &url,
        &format!("/jobs/{batch}/tasks?results=true"),
        "app-token-0123456789",
    );
    let mut rows = 0;
    let mut sum = 0;
    for t in tasks["tasks"].as_array().expect("tasks") {
        assert_eq!(t["attempt"], 2, "{t}");
        assert_eq!(t["progress"]["total"], t["rows"], "progress is kept: {t}");
        let r: serde_json::Value =
            serde_json::from_str(t["result"].as_str().expect("result")).expect("json");
        rows += r["rows"].as_u64().expect("rows");
        sum += r["sum_id"].as_u64().expect("sum");
    }
    assert_eq!((rows, sum), (250, 250 * 251 / 2), "every row once");
    let job = get(&url, &format!("/jobs/{plain}"), "app-token-0123456789");
    assert_eq!(job["state"], "succeeded", "{job}");

    // The worker's token cannot schedule; the app's cannot claim.
    let refused = post(
        &url,
        "/schedule",
        "worker-token-0123456789",
        &serde_json::json!({ "spec": "x" }),
    );
    assert_eq!(refused["error"]["code"], "forbidden");
    let refused = post(
        &url,
        "/work/claim",
        "app-token-0123456789",
        &serde_json::json!({ "worker": "w" }),
    );
    assert_eq!(refused["error"]["code"], "forbidden");

    // SIGTERM: the server finishes and exits cleanly.
    signal(&server, "TERM");
    let (status, stderr) = finish(server, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(
        !stderr.contains("app-token-0123456789") && !stderr.contains("worker-token-0123456789"),
        "{stderr}"
    );
}

#[test]
fn rota_serve_takes_settings_from_a_config_file_under_its_flags() {
    let s = Scratch::new();
    let etc = s.path("etc");
    std::fs::create_dir_all(etc.join("state")).expect("mkdir");
    std::fs::write(etc.join("tokens"), "file-token-0123456789 admin\n").expect("tokens");
    // Relative paths are the file's; the flag's address wins over the
    // file's (which could not be listened on without tokens anyway).
    std::fs::write(
        etc.join("rota.toml"),
        "listen = \"0.0.0.0:1\"\nstore = \"state/rota.db\"\ntokens = \"tokens\"\n\
         upload_dir = \"state/uploads\"\nmax_body = \"1KiB\"\nmax_wait = \"1s\"\n",
    )
    .expect("config");
    let config = etc.join("rota.toml");
    let mut cmd = s.command(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.env_remove("ROTA_STORE").env("ROTA_CONFIG", &config);
    let (child, url) = serve_command(cmd);

    let start = "GET /jobs HTTP/1.1\r\n";
    let (head, _) = http_raw(start, &url, "not-a-token", b"");
    assert!(head.starts_with("http/1.1 401"), "{head}");
    let job = post(
        &url,
        "/schedule",
        "file-token-0123456789",
        &serde_json::json!({"spec": "small"}),
    );
    let id = job["jobs"][0]["id"].as_str().expect("an id").to_owned();
    let big = serde_json::json!({"spec": "big", "params": {"x": "y".repeat(2000)}}).to_string();
    let start = "POST /schedule HTTP/1.1\r\nContent-Type: application/json\r\n";
    let (head, _) = http_raw(start, &url, "file-token-0123456789", big.as_bytes());
    assert!(head.starts_with("http/1.1 413"), "{head}");
    // max_wait = 1s: a wait on a job nobody works answers within it.
    let started = std::time::Instant::now();
    let waited = get(
        &url,
        &format!("/jobs/{id}/wait?timeout=30s"),
        "file-token-0123456789",
    );
    assert_eq!(waited["state"], "pending", "{waited}");
    assert!(started.elapsed() < Duration::from_secs(10));
    signal(&child, "TERM");
    let (status, stderr) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(
        etc.join("state/rota.db").exists(),
        "the file's store was not used"
    );
    assert!(
        etc.join("state/uploads").is_dir(),
        "the file's upload dir was not used"
    );

    // A mistake in the file names the file and the key.
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_wiat = \"1s\"\n").expect("config");
    let err = s.fails(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert!(
        err.contains("rota.toml") && err.contains("max_wiat"),
        "{err}"
    );
    std::fs::write(&config, "max_wait = \"soon\"\n").expect("config");
    let err = s.fails(&["serve", "--config", config.to_str().expect("utf-8")]);
    assert!(
        err.contains("rota.toml") && err.contains("max_wait"),
        "{err}"
    );
}
