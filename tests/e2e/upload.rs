//! Stream batching over tus: a real tus client (tuspy, from PyPI) uploads a
//! file to `rota serve` in chunks, is interrupted, the server is killed with
//! SIGKILL mid-request and started again, and the upload resumes; the job's
//! tasks are then exactly those `rota ingest` makes of the same file.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::serve::{get, http_raw, serve};
use crate::support::{Scratch, finish, job, payload, signal, tasks, wait_until};

const ROWS: u64 = 60_000;
const CHUNK: u64 = 256 << 10;

/// Runs `tests/workers/tus_upload.py` against `url`; returns what it printed.
fn tus(url: &str, file: &Path, extra: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workers/tus_upload.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(url)
        .arg(file)
        .args([
            "--token",
            "app-token-0123456789",
            "--chunk-size",
            &CHUNK.to_string(),
        ])
        .args([
            "--meta",
            "spec=import",
            "--meta",
            "format=ndjson",
            "--meta",
            "max_rows=1000",
            "--meta",
            "filename=people.ndjson",
        ])
        .args(extra)
        .output()
        .expect("run the tus client");
    assert!(
        out.status.success(),
        "tus client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tus client summary")
}

/// The upload's offset, as a tus client asks for it.
fn offset(url: &str, upload: &str) -> u64 {
    let (head, _) = http_raw(
        &format!("HEAD {upload} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\n"),
        url,
        "app-token-0123456789",
        &[],
    );
    head.lines()
        .find_map(|l| l.strip_prefix("upload-offset: "))
        .unwrap_or_else(|| panic!("no Upload-Offset in {head}"))
        .trim()
        .parse()
        .expect("a number")
}

/// Starts a PATCH of `body` at `at`, announcing `announced` bytes, and
/// leaves the connection as it is (open, or closed when dropped).
fn partial_patch(
    url: &str,
    upload: &str,
    at: u64,
    announced: usize,
    body: &[u8],
) -> std::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        conn,
        "PATCH {upload} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer app-token-0123456789\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: {at}\r\nContent-Length: {announced}\r\n\r\n"
    )
    .expect("write head");
    conn.write_all(body).expect("write body");
    conn.flush().expect("flush");
    conn
}

#[test]
fn a_tus_client_resumes_an_upload_across_a_server_kill_and_every_row_lands_once() {
    let s = Scratch::new();
    std::fs::write(s.path("tokens"), "app-token-0123456789 schedule\n").expect("tokens");
    let tokens = s.path("tokens");
    let tokens = tokens.to_str().expect("path");
    let file = s.path("people.ndjson");
    let mut data = Vec::new();
    for i in 1..=ROWS {
        writeln!(
            data,
            r#"{{"id":{i},"name":"person {i}","note":"{}","score":{}.5}}"#,
            "x".repeat((i % 17) as usize),
            i % 97
        )
        .expect("write");
    }
    std::fs::write(&file, &data).expect("write data");

    let (server, url) = serve(&s, &["--tokens", tokens]);
    // Four chunks, then the client stops as if its network went away.
    let first = tus(&url, &file, &["--stop-after", "4"]);
    let upload = first["url"]
        .as_str()
        .expect("url")
        .strip_prefix(&url)
        .expect("an upload on this server")
        .to_owned();
    let job_id = first["job"].as_str().expect("job id").to_owned();
    assert_eq!(first["offset"], 4 * CHUNK, "{first}");
    assert_eq!(offset(&url, &upload), 4 * CHUNK);

    // A request that breaks off keeps what arrived before the break.
    let at = 4 * CHUNK;
    let part = &data[at as usize..at as usize + 100_000];
    drop(partial_patch(&url, &upload, at, 200_000, part));
    let kept = at + 100_000;
    wait_until(Duration::from_secs(10), "the broken body is kept", || {
        offset(&url, &upload) == kept
    });
    // One more is under way, unsynced, when the server is killed.
    let hanging = partial_patch(
        &url,
        &upload,
        kept,
        200_000,
        &data[kept as usize..kept as usize + 50_000],
    );
    std::thread::sleep(Duration::from_millis(200));
    signal(&server, "KILL");
    let _ = finish(server, Duration::from_secs(10));
    drop(hanging);

    // Started again, the server offers the upload at its last synced offset
    // and the job is still held: no task was claimable from half the data.
    let (server, url) = serve(&s, &["--tokens", tokens]);
    assert_eq!(
        offset(&url, &upload),
        kept,
        "resumes where bytes were synced"
    );
    let held = get(&url, &format!("/jobs/{job_id}"), "app-token-0123456789");
    assert_eq!(held["released"], false, "{held}");

    let resumed = tus(
        &url,
        &file,
        &["--resume", &format!("{url}{upload}"), "--checksum"],
    );
    assert_eq!(resumed["resumed_at"], kept, "{resumed}");
    assert_eq!(resumed["offset"], data.len() as u64, "{resumed}");
    assert_eq!(resumed["job"], job_id.as_str());
    wait_until(
        Duration::from_secs(30),
        "the upload's job is released",
        || get(&url, &format!("/jobs/{job_id}"), "app-token-0123456789")["released"] == true,
    );

    // Exactly rows/batch tasks, and the same payloads `rota ingest` makes.
    let id = job_id.parse().expect("job id");
    let made = job(&s, id);
    assert_eq!(made.counts.total, ROWS.div_ceil(1000), "{made:?}");
    let other = Scratch::new();
    let summary = other.ingest(&file, &["--batch-rows", "1000"]);
    let expected = tasks(&other, crate::support::job_id(&summary));
    let got = tasks(&s, id);
    assert_eq!(got.len(), expected.len());
    let mut rows = 0;
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.rows, e.rows, "task {}", g.key);
        assert!(
            payload(&s, g) == payload(&other, e),
            "task {} differs from rota ingest's {}",
            g.key,
            e.key
        );
        rows += g.rows;
    }
    assert_eq!(rows, ROWS, "every row once");

    signal(&server, "TERM");
    let (status, stderr) = finish(server, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("app-token-0123456789"), "{stderr}");
}

#[test]
fn rota_upload_killed_mid_file_resumes_when_run_again() {
    let s = Scratch::new();
    std::fs::write(s.path("tokens"), "app-token-0123456789 schedule\n").expect("tokens");
    let tokens = s.path("tokens");
    let (server, url) = serve(&s, &["--tokens", tokens.to_str().expect("path")]);
    let file = s.path("events.ndjson");
    let mut data = Vec::new();
    for i in 1..=400_000u64 {
        writeln!(data, r#"{{"id":{i},"kind":"event","n":{}}}"#, i % 7).expect("write");
    }
    std::fs::write(&file, &data).expect("write data");
    let state = s.path("state");
    let upload = |s: &Scratch| {
        let mut cmd = s.command(&[
            "upload",
            file.to_str().expect("path"),
            "--server",
            &url,
            "--spec",
            "events",
            "--batch-rows",
            "1000",
            "--chunk-size",
            "16KiB",
            "--state-dir",
            state.to_str().expect("path"),
            "--json",
        ]);
        cmd.env("ROTA_TOKEN", "app-token-0123456789")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut first = upload(&s).spawn().expect("spawn rota upload");
    // Killed once the server has some of the file.
    let mut record = None;
    wait_until(Duration::from_secs(20), "the upload is under way", || {
        record = std::fs::read_dir(&state)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_to_string(e.ok()?.path()).ok());
        record
            .as_deref()
            .and_then(|u| u.trim().strip_prefix(&url))
            .is_some_and(|path| offset(&url, path) >= 512 << 10)
    });
    first.kill().expect("kill");
    let _ = first.wait();
    let path = record
        .expect("record")
        .trim()
        .strip_prefix(&url)
        .expect("path")
        .to_owned();
    let had = offset(&url, &path);
    assert!(had < data.len() as u64, "the kill came before the end");

    let out = upload(&s).output().expect("run rota upload again");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(done["resumed_at"].as_u64() >= Some(had), "{done}");
    assert_eq!(done["bytes"], data.len() as u64, "{done}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming at"));
    let id = done["job_id"].as_str().expect("job id").to_owned();
    wait_until(Duration::from_secs(30), "the job is released", || {
        get(&url, &format!("/jobs/{id}"), "app-token-0123456789")["released"] == true
    });
    let shown = s
        .command(&["--server", &url, "jobs", "show", &id, "--json"])
        .env("ROTA_TOKEN", "app-token-0123456789")
        .output()
        .expect("rota jobs show");
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let job: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(job["counts"]["total"], 400, "{job}");
    assert_eq!(job["ingest"]["rows"], 400_000, "every row once: {job}");
    for (args, want) in [
        (vec!["jobs", "list", "--json"], id.clone()),
        (
            vec!["jobs", "files", &id, "--json"],
            "events.ndjson".to_owned(),
        ),
    ] {
        let mut all = vec!["--server", url.as_str()];
        all.extend(args.iter().copied());
        let out = s
            .command(&all)
            .env("ROTA_TOKEN", "app-token-0123456789")
            .output()
            .expect("rota --server");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&want), "{args:?}: {text}");
    }

    signal(&server, "TERM");
    let (status, stderr) = finish(server, Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
}
