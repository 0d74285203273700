//! Running `rota` in a scratch directory and reading its store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rota_core::{Job, JobId, Store, Task, TaskFilter};

/// A scratch directory with its own store file.
pub(crate) struct Scratch {
    pub(crate) dir: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn store_url(&self) -> String {
        self.path("rota.db").to_string_lossy().into_owned()
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rota"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("ROTA_STORE", self.store_url())
            .env("ROTA_LOG", "info")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `rota ARGS` to the end.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run rota")
    }

    /// Runs `rota ARGS`, requires success, returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "rota {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Starts `rota ARGS` in its own process group, output captured.
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        use std::os::unix::process::CommandExt;
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn rota")
    }

    /// Starts a worker named `name` running `cmd`, with a 1 s lease, a 50 ms
    /// poll and, when given, an idle exit.
    pub(crate) fn worker(&self, cmd: &str, name: &str, idle_exit: Option<&str>) -> Child {
        let mut args = vec![
            "worker", "--exec", cmd, "--lease", "1s", "--name", name, "--poll", "50ms",
        ];
        if let Some(idle) = idle_exit {
            args.extend(["--idle-exit", idle]);
        }
        self.spawn(&args)
    }

    /// Runs `rota` with `args`, which must fail; returns what it printed on
    /// stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "rota {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Ingests `file` with `--json` and extra args; returns the summary.
    pub(crate) fn ingest(&self, file: &Path, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "ingest",
            file.to_str().expect("path"),
            "--spec",
            "test",
            "--json",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str(&self.ok(&args)).expect("summary json")
    }

    pub(crate) fn store(&self) -> Arc<dyn Store> {
        // Opened directly (not through the async `open_store`): callers
        // are both inside and outside a runtime.
        Arc::new(
            rota_store::SqliteStore::open(&self.path("rota.db"), Arc::new(rota_core::SystemClock))
                .expect("open store"),
        )
    }
}

pub(crate) fn job_id(summary: &serde_json::Value) -> JobId {
    summary["job_id"]
        .as_str()
        .expect("job_id")
        .parse()
        .expect("uuid")
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn job(scratch: &Scratch, id: JobId) -> Job {
    runtime()
        .block_on(scratch.store().get_job(id))
        .expect("get job")
        .expect("job exists")
}

pub(crate) fn tasks(scratch: &Scratch, id: JobId) -> Vec<Task> {
    runtime().block_on(all_tasks(&*scratch.store(), id))
}

/// Every task of job `id` in `store`, in key order, with its result.
pub(crate) async fn all_tasks(store: &dyn Store, id: JobId) -> Vec<Task> {
    let mut all: Vec<Task> = Vec::new();
    loop {
        let page = store
            .list_tasks(
                id,
                TaskFilter {
                    after_key: all.last().map(|t| t.key.clone()),
                    limit: 500,
                    with_results: true,
                    ..Default::default()
                },
            )
            .await
            .expect("list tasks");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Asserts that the tasks `got` (in `ours`) are those of a clean ingest,
/// `want` (in `theirs`), key for key and byte for byte, and that their NDJSON
/// payloads hold every row id from 1 to `rows` once.
pub(crate) async fn same_as_clean_ingest(
    ours: &dyn Store,
    got: &[Task],
    theirs: &dyn Store,
    want: &[Task],
    rows: u64,
) {
    assert_eq!(got.len(), want.len(), "as many tasks as a clean ingest");
    let mut seen = vec![false; usize::try_from(rows).expect("rows") + 1];
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g.key, g.rows), (&w.key, w.rows), "task {}", g.key);
        let payload = ours.get_payload(g.id).await.expect("payload");
        assert!(
            payload == theirs.get_payload(w.id).await.expect("payload"),
            "task {}: payloads differ",
            g.key
        );
        for line in payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let row: serde_json::Value = serde_json::from_slice(line).expect("ndjson");
            let n = usize::try_from(row["id"].as_u64().expect("id")).expect("id");
            assert!(!seen[n], "row {n} twice");
            seen[n] = true;
        }
    }
    assert!(seen[1..].iter().all(|s| *s), "every row once");
}

pub(crate) fn payload(scratch: &Scratch, task: &Task) -> Vec<u8> {
    runtime()
        .block_on(scratch.store().get_payload(task.id))
        .expect("payload")
}

/// Polls `cond` every 50 ms for at most `limit`.
pub(crate) fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` to a whole process group.
pub(crate) fn signal_group(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{}", child.id())])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Sends `signal` to one process.
pub(crate) fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits for a child to exit (at most `limit`) and returns its stderr.
pub(crate) fn finish(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let out = child.wait_with_output().expect("output");
            return (status, String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "process did not exit within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a CSV of `rows` records with awkward fields: quoted commas, quotes,
/// line breaks, empty values. Column `id` counts from 1.
pub(crate) fn write_csv(path: &Path, rows: u64) {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("create csv"));
    writeln!(w, "id,name,amount,note,flag").expect("write");
    for i in 1..=rows {
        let note = match i % 50 {
            0 => "\"line one\nline two\"".to_owned(),
            1 => "\"has, comma\"".to_owned(),
            2 => "\"she said \"\"hi\"\"\"".to_owned(),
            3 => String::new(),
            _ => format!("note {i}"),
        };
        writeln!(
            w,
            "{i},name-{i},{}.{:02},{note},{}",
            i % 1000,
            i % 100,
            i % 2 == 0
        )
        .expect("write");
    }
    w.flush().expect("flush");
}
