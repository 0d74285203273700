//! Runs the conformance suite against SQLite in memory and in a file, and
//! checks that two stores on one file (two processes) never share a task.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rota_core::{ClaimRequest, ManualClock, NewJob, NewTask, PayloadEncoding, RetryPolicy, Store};
use rota_store::SqliteStore;
use rota_store::conformance::Harness;

mod in_memory {
    use super::*;

    fn harness() -> impl Harness {
        |clock: Arc<ManualClock>| -> Arc<dyn Store> {
            Arc::new(SqliteStore::in_memory(clock).expect("open in-memory store"))
        }
    }

    rota_store::conformance_tests!(harness());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_all_passes() {
        rota_store::conformance::run_all(&harness()).await;
    }
}

/// Makes a new database file per store, in a directory removed on drop.
struct FileHarness {
    dir: tempfile::TempDir,
    next: AtomicUsize,
    compress: bool,
}

impl FileHarness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            next: AtomicUsize::new(0),
            compress: false,
        }
    }

    /// Stores whose text payloads are LZ4-compressed.
    fn compressed() -> Self {
        Self {
            compress: true,
            ..Self::new()
        }
    }

    fn path(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("rota-{n}.db"))
    }
}

#[async_trait]
impl Harness for FileHarness {
    async fn fresh(&self, clock: Arc<ManualClock>) -> Arc<dyn Store> {
        Arc::new(
            SqliteStore::open(&self.path(), clock)
                .expect("open file store")
                .with_compression(self.compress),
        )
    }
}

#[async_trait]
impl rota_store::conformance::NodeHarness for FileHarness {
    async fn nodes(&self, clock: Arc<ManualClock>, n: usize) -> Vec<Arc<dyn Store>> {
        let path = self.path();
        (0..n)
            .map(|_| -> Arc<dyn Store> {
                Arc::new(SqliteStore::open(&path, clock.clone()).expect("open file store"))
            })
            .collect()
    }
}

mod file {
    use super::*;

    rota_store::conformance_tests!(FileHarness::new());
    rota_store::conformance_node_tests!(FileHarness::new());
}

mod file_compressed {
    use super::*;

    rota_store::conformance_tests!(FileHarness::compressed());
}

fn start() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_750_000_000, 0).expect("valid time")
}

/// Two stores on one file stand for two worker processes: each has its own
/// connection, and SQLite's locks must keep their claims apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_never_claim_the_same_task() {
    const TASKS: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let clock = Arc::new(ManualClock::new(start()));
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, clock.clone()).expect("open a"));
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, clock.clone()).expect("open b"));

    let (job, _) = a
        .create_job(NewJob {
            key: Some("shared".into()),
            spec: "s".into(),
            queue: "q".into(),
            params: serde_json::Value::Null,
            retry: RetryPolicy::default(),
            hold: true,
            ingest: None,
            timing: rota_core::Timing::default(),
        })
        .await
        .expect("create_job");
    let tasks: Vec<NewTask> = (0..TASKS)
        .map(|i| NewTask {
            key: format!("{i:05}"),
            payload: vec![u8::try_from(i % 251).expect("small"); 64],
            encoding: PayloadEncoding::Json,
            rows: 1,
        })
        .collect();
    assert_eq!(
        a.add_tasks(job.id, tasks).await.expect("add_tasks"),
        TASKS as u64
    );
    // The other connection sees the job, and the key keeps it unique.
    let (same, created) = b
        .create_job(NewJob {
            key: Some("shared".into()),
            spec: "s".into(),
            queue: "q".into(),
            params: serde_json::Value::Null,
            retry: RetryPolicy::default(),
            hold: true,
            ingest: None,
            timing: rota_core::Timing::default(),
        })
        .await
        .expect("create_job on b");
    assert!(!created);
    assert_eq!(same.id, job.id);
    b.release_job(job.id, None).await.expect("release_job");

    let mut handles = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for round in 0..=TASKS {
                let leases = store
                    .claim(ClaimRequest {
                        queues: vec!["q".into()],
                        worker: format!("w{i}"),
                        limit: u32::try_from(round % 5 + 1).expect("small"),
                        lease: Duration::from_secs(60),
                        specs: Vec::new(),
                        inline_max: None,
                    })
                    .await
                    .expect("claim");
                if leases.is_empty() {
                    break;
                }
                got.extend(leases.into_iter().map(|l| l.lease.task));
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    for h in handles {
        for task in h.await.expect("claimer panicked") {
            assert!(
                seen.insert(task),
                "task {task} claimed twice across connections"
            );
        }
    }
    assert_eq!(seen.len(), TASKS, "every task claimed once");
    let job = b
        .get_job(job.id)
        .await
        .expect("get_job")
        .expect("job exists");
    assert_eq!(job.counts.running, TASKS as u64);
}

/// A database file keeps its data across reopening.
#[tokio::test]
async fn file_store_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("persist.db");
    let clock = Arc::new(ManualClock::new(start()));
    let id = {
        let store = SqliteStore::open(&path, clock.clone()).expect("open");
        let (job, _) = store
            .create_job(NewJob {
                key: None,
                spec: "s".into(),
                queue: "q".into(),
                params: serde_json::json!({"a": 1}),
                retry: RetryPolicy::default(),
                hold: false,
                ingest: None,
                timing: rota_core::Timing::default(),
            })
            .await
            .expect("create_job");
        job.id
    };
    let store = SqliteStore::open(&path, clock).expect("reopen");
    let job = store
        .get_job(id)
        .await
        .expect("get_job")
        .expect("job survives reopen");
    assert_eq!(job.params, serde_json::json!({"a": 1}));
}

fn keyed_job(key: &str) -> NewJob {
    NewJob {
        key: Some(key.into()),
        spec: "s".into(),
        queue: "q".into(),
        params: serde_json::Value::Null,
        retry: RetryPolicy::default(),
        hold: false,
        ingest: None,
        timing: rota_core::Timing::default(),
    }
}

/// Repetitive JSON rows, at least `bytes` long.
fn json_rows(bytes: usize) -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0;
    while out.len() < bytes {
        out.extend_from_slice(format!("{{\"id\":{i},\"v\":\"value {i}\"}},").as_bytes());
        i += 1;
    }
    out.push(b']');
    out
}

/// Large payloads live in one file per job beside the database, small ones
/// inside it; both survive a reopen, and a replay writes no new bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_live_in_a_file_per_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let clock = Arc::new(ManualClock::new(start()));
    let store = SqliteStore::open(&path, clock.clone())
        .expect("open")
        .with_compression(true);
    let (job, _) = store
        .create_job(keyed_job("files"))
        .await
        .expect("create_job");
    let payloads = [json_rows(400_000), json_rows(100), json_rows(2_000)];
    let tasks = |payloads: &[Vec<u8>]| -> Vec<NewTask> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| NewTask {
                key: format!("k{i}"),
                payload: p.clone(),
                encoding: PayloadEncoding::Json,
                rows: 1,
            })
            .collect()
    };
    assert_eq!(
        store
            .add_tasks(job.id, tasks(&payloads))
            .await
            .expect("add"),
        3
    );

    let seg = dir
        .path()
        .join("r.db-payloads")
        .join(format!("{}.seg", job.id));
    let written = std::fs::metadata(&seg).expect("payload file exists").len();
    assert!(
        written > 0 && written < 400_000,
        "only the large payload goes to the file, compressed ({written} bytes)"
    );
    assert_eq!(
        store
            .add_tasks(job.id, tasks(&payloads))
            .await
            .expect("replay"),
        0
    );
    assert_eq!(
        std::fs::metadata(&seg).expect("payload file").len(),
        written,
        "a replay writes no payload bytes"
    );
    drop(store);

    let store = SqliteStore::open(&path, clock).expect("reopen");
    let listed = store
        .list_tasks(job.id, rota_core::TaskFilter::default())
        .await
        .expect("list_tasks");
    assert_eq!(listed.len(), 3);
    for (task, payload) in listed.iter().zip(&payloads) {
        let got = store.get_payload(task.id).await.expect("get_payload");
        assert!(
            got == *payload,
            "payload of {} differs after reopen",
            task.key
        );
    }

    // A process that opens the database through a link finds the same files.
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    let linked = SqliteStore::open(&link, Arc::new(ManualClock::new(start()))).expect("open link");
    let got = linked
        .get_payload(listed[0].id)
        .await
        .expect("payload via link");
    assert!(got == payloads[0], "payload via a link differs");
    drop(linked);

    // A payload file that went missing is an error, never an empty payload.
    std::fs::remove_file(&seg).expect("remove payload file");
    let err = store
        .get_payload(listed[0].id)
        .await
        .expect_err("the payload is gone");
    let text = err.to_string();
    assert!(
        text.contains(&seg.display().to_string()) && text.contains("cannot be read"),
        "the error names the file: {text}"
    );
    assert!(
        store.get_payload(listed[1].id).await.is_ok(),
        "inline payloads stay readable"
    );
}

/// Payloads are stored as they are unless compression is asked for; a
/// store reads what was stored either way, whichever it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_are_stored_raw_by_default_and_read_back_however_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mixed.db");
    let clock = Arc::new(ManualClock::new(start()));
    let payload = json_rows(400_000);
    let task = |key: &str| NewTask {
        key: key.into(),
        payload: payload.clone(),
        encoding: PayloadEncoding::Json,
        rows: 1,
    };
    let raw = SqliteStore::open(&path, clock.clone()).expect("open");
    let (job, _) = raw.create_job(keyed_job("mixed")).await.expect("job");
    raw.add_tasks(job.id, vec![task("a")]).await.expect("add");
    let seg = dir
        .path()
        .join("mixed.db-payloads")
        .join(format!("{}.seg", job.id));
    let after_raw = std::fs::metadata(&seg).expect("payload file").len();
    assert!(
        after_raw >= payload.len() as u64,
        "stored as it is: {after_raw} bytes"
    );
    let packed = SqliteStore::open(&path, clock)
        .expect("open again")
        .with_compression(true);
    packed
        .add_tasks(job.id, vec![task("b")])
        .await
        .expect("add");
    let grown = std::fs::metadata(&seg).expect("payload file").len() - after_raw;
    assert!(
        grown < payload.len() as u64 / 2,
        "stored compressed: {grown} bytes"
    );
    let tasks = raw
        .list_tasks(job.id, rota_core::TaskFilter::default())
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), 2);
    for store in [&raw, &packed] {
        for t in &tasks {
            let got = store.get_payload(t.id).await.expect("payload");
            assert!(got == payload, "payload of {} differs", t.key);
        }
    }
}

/// A database made by schema version 1 (payloads inline and raw) opens, and
/// takes new payloads in the current layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_database_is_upgraded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open v1");
        conn.execute_batch(
            "CREATE TABLE payloads (task_id INTEGER PRIMARY KEY, data BLOB NOT NULL);
             PRAGMA user_version = 1;",
        )
        .expect("v1 schema");
    }
    let store = SqliteStore::open(&path, Arc::new(ManualClock::new(start()))).expect("upgrade");
    let (job, _) = store.create_job(keyed_job("v1")).await.expect("create_job");
    let payload = json_rows(100_000);
    store
        .add_tasks(
            job.id,
            vec![NewTask {
                key: "a".into(),
                payload: payload.clone(),
                encoding: PayloadEncoding::Ndjson,
                rows: 1,
            }],
        )
        .await
        .expect("add_tasks");
    let task = store
        .list_tasks(job.id, rota_core::TaskFilter::default())
        .await
        .expect("list_tasks")[0]
        .id;
    assert!(store.get_payload(task).await.expect("get_payload") == payload);
    let conn = rusqlite::Connection::open(&path).expect("open upgraded");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, rota_store::SCHEMA_VERSION);
}

/// A database of schema version 3 (tasks without progress) opens, keeps its
/// tasks, and records progress on them from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_3_database_gains_task_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v3.db");
    {
        let store = SqliteStore::open(&path, Arc::new(ManualClock::new(start()))).expect("open");
        let (job, _) = store.create_job(keyed_job("v3")).await.expect("create_job");
        store
            .add_tasks(
                job.id,
                vec![NewTask {
                    key: "a".into(),
                    payload: b"{}".to_vec(),
                    encoding: PayloadEncoding::Ndjson,
                    rows: 1,
                }],
            )
            .await
            .expect("add_tasks");
    }
    {
        // Back to version 3's layout.
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch("ALTER TABLE tasks DROP COLUMN progress; PRAGMA user_version = 3;")
            .expect("v3 layout");
    }
    let store = SqliteStore::open(&path, Arc::new(ManualClock::new(start()))).expect("upgrade");
    let lease = store
        .claim(ClaimRequest {
            queues: vec!["q".into()],
            worker: "w".into(),
            limit: 1,
            lease: Duration::from_secs(30),
            specs: Vec::new(),
            inline_max: None,
        })
        .await
        .expect("claim")
        .pop()
        .expect("the v3 task is claimable")
        .lease;
    let progress = serde_json::json!({ "done": 1 });
    store
        .heartbeat(
            vec![rota_core::Heartbeat {
                lease,
                progress: Some(progress.clone()),
            }],
            Duration::from_secs(30),
        )
        .await
        .expect("heartbeat")
        .remove(0)
        .expect("lease held");
    let job = store
        .list_jobs(rota_core::JobFilter::default())
        .await
        .expect("jobs")[0]
        .id;
    let tasks = store
        .list_tasks(job, rota_core::TaskFilter::default())
        .await
        .expect("tasks");
    assert_eq!(tasks[0].progress, Some(progress));
}

/// Bytes at the end of a payload file that no task references (a process
/// died between an append and its commit) are cut off by the next append,
/// by whichever process makes it; bytes another process appended and
/// committed meanwhile are never cut, and every payload reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreferenced_tail_of_a_payload_file_is_cut_and_no_referenced_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.db");
    let open = || SqliteStore::open(&path, Arc::new(ManualClock::new(start()))).expect("open");
    let (a, b) = (open(), open());
    let (job, _) = a.create_job(keyed_job("tail")).await.expect("create_job");
    let seg = dir
        .path()
        .join("r.db-payloads")
        .join(format!("{}.seg", job.id));
    let task = |i: usize| NewTask {
        key: format!("k{i:02}"),
        payload: json_rows(40_000 + i),
        encoding: PayloadEncoding::Json,
        rows: 1,
    };
    let referenced = || -> u64 { (0..6).map(|i| json_rows(40_000 + i).len() as u64).sum() };
    let len = || std::fs::metadata(&seg).expect("payload file").len();

    a.add_tasks(job.id, vec![task(0), task(1)])
        .await
        .expect("add");
    let tail = |n: usize| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .expect("payload file");
        f.write_all(&vec![0xA5; n]).expect("append a tail");
    };
    // Another process appends after a tail it finds, which it cuts first.
    tail(10_000);
    b.add_tasks(job.id, vec![task(2), task(3)])
        .await
        .expect("add");
    // The first process's notion of the file's end is stale now: the
    // bytes the other committed are kept, the new tail cut.
    tail(20_000);
    a.add_tasks(job.id, vec![task(4), task(5)])
        .await
        .expect("add");
    assert_eq!(len(), referenced(), "no unreferenced bytes are left");

    // A fresh process (the ingest run again) cuts a tail before it appends.
    tail(30_000);
    let c = open();
    assert_eq!(
        c.add_tasks(job.id, (0..6).map(task).collect())
            .await
            .expect("replay"),
        0
    );
    assert_eq!(len(), referenced() + 30_000, "a replay appends nothing");
    c.add_tasks(job.id, vec![task(6)]).await.expect("add");
    assert_eq!(len(), referenced() + json_rows(40_006).len() as u64);

    let listed = c
        .list_tasks(job.id, rota_core::TaskFilter::default())
        .await
        .expect("list_tasks");
    assert_eq!(listed.len(), 7);
    for (i, t) in listed.iter().enumerate() {
        let got = c.get_payload(t.id).await.expect("get_payload");
        assert!(got == json_rows(40_000 + i), "payload {} reads back", t.key);
    }
}
