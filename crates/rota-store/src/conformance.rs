//! The conformance suite: scenarios every [`Store`] implementation must pass.
//!
//! Each scenario is a `pub async fn` that takes a [`Harness`], makes fresh
//! stores on a [`ManualClock`] and panics with a message naming the broken
//! rule. A store's tests run them all with [`conformance_tests!`](crate::conformance_tests),
//! which expands to one `#[tokio::test]` per scenario (the calling crate needs
//! `tokio` with the `macros` and `rt-multi-thread` features):
//!
//! ```ignore
//! use std::sync::Arc;
//! use rota_core::{ManualClock, Store};
//! use rota_store::SqliteStore;
//!
//! fn harness() -> impl rota_store::conformance::Harness {
//!     |clock: Arc<ManualClock>| -> Arc<dyn Store> {
//!         Arc::new(SqliteStore::in_memory(clock).expect("open store"))
//!     }
//! }
//! rota_store::conformance_tests!(harness());
//! ```
//!
//! Or call [`run_all`] from one test.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_core::{
    CallbackOutcome, ClaimRequest, FileClaim, FileFilter, FileReport, FileState, Heartbeat,
    HeartbeatAck, IngestPlan, IngestReport, Job, JobFilter, JobId, JobStart, JobState, Lease,
    LeaseRef, LeaseToken, ManualClock, NewCallback, NewJob, NewTask, Outcome, PayloadEncoding,
    Report, RetryPolicy, Spec, Store, StoreError, TaskFilter, TaskState,
};

/// Makes stores for the scenarios.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A store over an empty database whose notion of time is `clock`.
    async fn fresh(&self, clock: Arc<ManualClock>) -> Arc<dyn Store>;
}

#[async_trait]
impl<F> Harness for F
where
    F: Fn(Arc<ManualClock>) -> Arc<dyn Store> + Send + Sync,
{
    async fn fresh(&self, clock: Arc<ManualClock>) -> Arc<dyn Store> {
        self(clock)
    }
}

/// Opens several handles on one empty database, as separate nodes (or
/// processes) would: what one handle writes, the others see. Stores that can
/// be shared run the scenarios of [`conformance_node_tests!`](crate::conformance_node_tests) with it.
#[async_trait]
pub trait NodeHarness: Send + Sync {
    /// `n` stores over one new, empty database, each with its own
    /// connections, all on `clock`.
    async fn nodes(&self, clock: Arc<ManualClock>, n: usize) -> Vec<Arc<dyn Store>>;
}

/// Declares one `#[tokio::test]` per scenario of several nodes on one
/// database, each calling it with the [`NodeHarness`] made by `$harness`.
#[macro_export]
macro_rules! conformance_node_tests {
    ($harness:expr) => {
        $crate::conformance_node_tests!(@each $harness;
            nodes_never_share_a_claim,
            any_node_rescues_an_expired_lease,
            nodes_finishing_a_job_together_settle_it,
            nodes_creating_one_key_together_make_one_job,
            nodes_racing_for_a_duty_give_it_to_one,
            nodes_reading_one_jobs_files_read_each_once,
        );
    };
    (@each $harness:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let harness = $harness;
                $crate::conformance::$name(&harness).await;
            }
        )+
    };
}

/// Declares one `#[tokio::test]` per conformance scenario, each calling it
/// with the harness made by evaluating `$harness` (once per test).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            idempotent_job_key,
            job_is_created_with_its_start,
            ingest_claims_go_to_one_holder,
            idempotent_task_insert,
            held_tasks_wait_for_release,
            fail_job_cancels_held_tasks,
            claim_is_exclusive_under_concurrency,
            expired_lease_is_reclaimed,
            heartbeat_extends_lease,
            stale_completion_is_rejected,
            retry_backs_off_then_dies,
            non_retryable_failure_is_dead,
            cancel_stops_work,
            job_state_follows_tasks,
            list_jobs_filters_and_pages,
            list_tasks_orders_and_pages,
            batched_calls_answer_per_item,
            queues_are_isolated,
            claims_filter_by_spec,
            progress_is_kept_per_attempt,
            callbacks_are_due_on_state_changes,
            priority_run_at_and_timeout_shape_claims,
            payload_round_trips,
            specs_round_trip,
            file_records_replace_and_page,
            requeue_brings_dead_and_cancelled_tasks_back,
            ended_jobs_are_deleted_oldest_first,
            a_job_larger_than_a_deletion_chunk_is_deleted_whole,
            claims_leave_large_payloads_in_the_store,
            duties_have_one_holder_per_term,
            model_based_random_ops,
        );
    };
    (@each $harness:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let harness = $harness;
                $crate::conformance::$name(&harness).await;
            }
        )+
    };
}

/// Runs every scenario in turn.
pub async fn run_all(h: &dyn Harness) {
    idempotent_job_key(h).await;
    job_is_created_with_its_start(h).await;
    ingest_claims_go_to_one_holder(h).await;
    idempotent_task_insert(h).await;
    held_tasks_wait_for_release(h).await;
    fail_job_cancels_held_tasks(h).await;
    claim_is_exclusive_under_concurrency(h).await;
    expired_lease_is_reclaimed(h).await;
    heartbeat_extends_lease(h).await;
    stale_completion_is_rejected(h).await;
    retry_backs_off_then_dies(h).await;
    non_retryable_failure_is_dead(h).await;
    cancel_stops_work(h).await;
    job_state_follows_tasks(h).await;
    list_jobs_filters_and_pages(h).await;
    list_tasks_orders_and_pages(h).await;
    batched_calls_answer_per_item(h).await;
    queues_are_isolated(h).await;
    claims_filter_by_spec(h).await;
    progress_is_kept_per_attempt(h).await;
    callbacks_are_due_on_state_changes(h).await;
    priority_run_at_and_timeout_shape_claims(h).await;
    payload_round_trips(h).await;
    specs_round_trip(h).await;
    file_records_replace_and_page(h).await;
    requeue_brings_dead_and_cancelled_tasks_back(h).await;
    ended_jobs_are_deleted_oldest_first(h).await;
    a_job_larger_than_a_deletion_chunk_is_deleted_whole(h).await;
    claims_leave_large_payloads_in_the_store(h).await;
    duties_have_one_holder_per_term(h).await;
    model_based_random_ops(h).await;
}

// ---- helpers -------------------------------------------------------------

/// The lease used by scenarios unless they say otherwise.
const LEASE: Duration = Duration::from_secs(30);

fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap_or_default()
}

async fn setup(h: &dyn Harness) -> (Arc<ManualClock>, Arc<dyn Store>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let store = h.fresh(Arc::clone(&clock)).await;
    (clock, store)
}

fn policy(max_attempts: u32, backoff_base_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff_base_ms,
        backoff_max_ms: 60_000,
    }
}

fn new_job(queue: &str, hold: bool, retry: RetryPolicy) -> NewJob {
    NewJob {
        key: None,
        spec: "conformance".into(),
        queue: queue.into(),
        params: serde_json::json!({ "target": "db", "n": 1 }),
        retry,
        hold,
        ingest: None,
        timing: rota_core::Timing::default(),
    }
}

fn tasks(prefix: &str, n: usize) -> Vec<NewTask> {
    (0..n)
        .map(|i| NewTask {
            key: format!("{prefix}{i:05}"),
            payload: format!("payload of {prefix}{i:05}").into_bytes(),
            encoding: PayloadEncoding::Ndjson,
            rows: 1,
        })
        .collect()
}

async fn create(store: &dyn Store, job: NewJob) -> Job {
    store.create_job(job).await.expect("create_job failed").0
}

async fn job_with_tasks(store: &dyn Store, queue: &str, retry: RetryPolicy, n: usize) -> Job {
    let job = create(store, new_job(queue, false, retry)).await;
    let added = store
        .add_tasks(job.id, tasks("t", n))
        .await
        .expect("add_tasks failed");
    assert_eq!(added, n as u64, "add_tasks must report every new task");
    job
}

async fn get(store: &dyn Store, id: JobId) -> Job {
    store
        .get_job(id)
        .await
        .expect("get_job failed")
        .unwrap_or_else(|| panic!("job {id} not found"))
}

async fn claim_on(
    store: &dyn Store,
    queues: &[&str],
    worker: &str,
    limit: u32,
    lease: Duration,
) -> Vec<Lease> {
    store
        .claim(ClaimRequest {
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            worker: worker.into(),
            limit,
            lease,
            specs: Vec::new(),
            inline_max: None,
        })
        .await
        .expect("claim failed")
}

async fn claim(store: &dyn Store, queue: &str, limit: u32) -> Vec<Lease> {
    claim_on(store, &[queue], "worker-1", limit, LEASE).await
}

async fn report1(
    store: &dyn Store,
    lease: LeaseRef,
    outcome: Outcome,
) -> Result<TaskState, StoreError> {
    let mut out = store
        .report(vec![Report { lease, outcome }])
        .await
        .expect("report failed as a whole");
    assert_eq!(out.len(), 1, "report must answer each item");
    out.remove(0)
}

async fn complete(store: &dyn Store, lease: LeaseRef) -> Result<TaskState, StoreError> {
    report1(store, lease, Outcome::Success(b"done".to_vec())).await
}

async fn fail(
    store: &dyn Store,
    lease: LeaseRef,
    retryable: bool,
) -> Result<TaskState, StoreError> {
    report1(
        store,
        lease,
        Outcome::Failure {
            error: "boom".into(),
            retryable,
        },
    )
    .await
}

async fn beat(
    store: &dyn Store,
    lease: LeaseRef,
    extend: Duration,
) -> Result<HeartbeatAck, StoreError> {
    let mut out = store
        .heartbeat(vec![lease.into()], extend)
        .await
        .expect("heartbeat failed as a whole");
    assert_eq!(out.len(), 1, "heartbeat must answer each item");
    out.remove(0)
}

#[track_caller]
fn assert_lost<T: std::fmt::Debug>(result: Result<T, StoreError>, lease: LeaseRef, what: &str) {
    match result {
        Err(StoreError::LeaseLost { task, attempt }) => {
            assert_eq!(task, lease.task, "{what}: lease lost names the wrong task");
            assert_eq!(
                attempt, lease.attempt,
                "{what}: lease lost names the wrong attempt"
            );
        }
        other => panic!("{what}: expected lease lost, got {other:?}"),
    }
}

async fn task_state(store: &dyn Store, job: JobId, key: &str) -> rota_core::Task {
    store
        .list_tasks(job, TaskFilter::default())
        .await
        .expect("list_tasks failed")
        .into_iter()
        .find(|t| t.key == key)
        .unwrap_or_else(|| panic!("task {key} of job {job} not found"))
}

// ---- scenarios -----------------------------------------------------------

/// A job whose dead and cancelled tasks are requeued runs them again, with a
/// fresh attempt budget, and ends by their new outcomes; succeeded tasks stay
/// as they were, and other states cannot be named.
pub async fn requeue_brings_dead_and_cancelled_tasks_back(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", policy(1, 0), 4).await;
    let first = claim(&*store, "q", 2).await;
    assert_eq!(first.len(), 2);
    assert_eq!(
        fail(&*store, first[0].lease, true).await.expect("fail"),
        TaskState::Dead
    );
    assert_eq!(
        complete(&*store, first[1].lease).await.expect("complete"),
        TaskState::Succeeded
    );
    let cancelled = store.cancel_job(job.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.counts.cancelled, 2, "{:?}", cancelled.counts);

    for state in [TaskState::Succeeded, TaskState::Queued, TaskState::Running] {
        let refused = store.requeue(job.id, &[state]).await;
        assert!(
            matches!(refused, Err(StoreError::Invalid { .. })),
            "requeue of {state} tasks must be invalid: {refused:?}"
        );
    }
    let missing = store.requeue(JobId::new(), &[TaskState::Dead]).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );

    let (again, n) = store
        .requeue(job.id, &[TaskState::Dead])
        .await
        .expect("requeue dead");
    assert_eq!(n, 1, "one task was dead");
    assert_eq!(again.state, JobState::Running, "a requeued job runs again");
    assert_eq!(again.finished_at, None);
    assert_eq!(again.counts.queued, 1, "{:?}", again.counts);
    assert_eq!(again.counts.cancelled, 2, "{:?}", again.counts);
    let (again, n) = store
        .requeue(job.id, &[TaskState::Cancelled, TaskState::Dead])
        .await
        .expect("requeue cancelled");
    assert_eq!(n, 2);
    assert_eq!(again.counts.queued, 3, "{:?}", again.counts);
    assert_eq!(
        again.counts.succeeded, 1,
        "succeeded tasks stay: {:?}",
        again.counts
    );

    let leases = claim(&*store, "q", 10).await;
    assert_eq!(leases.len(), 3, "every requeued task is claimable now");
    let dead_one = leases
        .iter()
        .find(|l| l.lease.task == first[0].lease.task)
        .expect("the dead task is claimed again");
    assert_eq!(dead_one.lease.attempt, 2, "attempts go on counting");
    assert_eq!(
        dead_one.max_attempts, 2,
        "with a fresh budget of one attempt"
    );
    // The stale lease of its first attempt stays stale.
    assert_lost(
        complete(&*store, first[0].lease).await,
        first[0].lease,
        "old lease",
    );
    for l in &leases {
        assert_eq!(
            complete(&*store, l.lease).await.expect("complete"),
            TaskState::Succeeded
        );
    }
    let done = get(&*store, job.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.counts);
    assert_eq!(done.counts.succeeded, 4);
    let (same, n) = store
        .requeue(job.id, &[TaskState::Dead])
        .await
        .expect("requeue nothing");
    assert_eq!(n, 0);
    assert_eq!(
        same.state,
        JobState::Succeeded,
        "requeuing nothing changes nothing"
    );

    // A job that never released has nothing to requeue.
    let held = create(&*store, new_job("q", true, policy(1, 0))).await;
    store
        .fail_job(held.id, "the ingest failed".into(), None)
        .await
        .expect("fail_job");
    let refused = store.requeue(held.id, &[TaskState::Cancelled]).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
}

/// Retention deletes ended jobs older than the cut-off, oldest first and a
/// bounded number per call, with their tasks, payloads, files and callbacks;
/// unfinished and newer jobs stay.
pub async fn ended_jobs_are_deleted_oldest_first(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let finish_all = |store: Arc<dyn Store>, queue: &'static str| async move {
        for l in claim(&*store, queue, 100).await {
            complete(&*store, l.lease).await.expect("complete");
        }
    };
    let old_done = job_with_tasks(&*store, "a", RetryPolicy::default(), 3).await;
    finish_all(Arc::clone(&store), "a").await;
    store
        .put_files(
            old_done.id,
            vec![FileReport {
                relative: "x.csv".into(),
                location: "/data/x.csv".into(),
                size: Some(1),
                etag: None,
                format: "csv".into(),
                state: FileState::Done,
                bytes: 1,
                rows: 3,
                tasks: 3,
                skipped: 0,
                error: None,
                node: None,
            }],
        )
        .await
        .expect("put_files");
    clock.advance(Duration::from_secs(60));
    let old_cancelled = job_with_tasks(&*store, "b", RetryPolicy::default(), 2).await;
    store.cancel_job(old_cancelled.id).await.expect("cancel");
    let running = job_with_tasks(&*store, "c", RetryPolicy::default(), 2).await;
    let _held = claim(&*store, "c", 1).await;
    let old_task = store
        .list_tasks(old_done.id, TaskFilter::default())
        .await
        .expect("list")[0]
        .id;
    clock.advance(Duration::from_secs(3600));
    let cut = rota_core::Clock::now(&*clock);
    let new_done = job_with_tasks(&*store, "d", RetryPolicy::default(), 1).await;
    finish_all(Arc::clone(&store), "d").await;

    assert_eq!(store.delete_ended(cut, 1).await.expect("delete"), 1);
    assert!(
        get_opt(&*store, old_done.id).await.is_none(),
        "the oldest goes first"
    );
    assert!(
        get_opt(&*store, old_cancelled.id).await.is_some(),
        "one per call"
    );
    assert!(matches!(
        store.get_payload(old_task).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.list_files(old_done.id, FileFilter::default()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.delete_ended(cut, 10).await.expect("delete"), 1);
    assert!(get_opt(&*store, old_cancelled.id).await.is_none());
    assert_eq!(store.delete_ended(cut, 10).await.expect("delete"), 0);
    assert!(
        get_opt(&*store, running.id).await.is_some(),
        "unfinished jobs stay"
    );
    assert!(
        get_opt(&*store, new_done.id).await.is_some(),
        "newer jobs stay"
    );
    let counts = store.task_counts().await.expect("task_counts");
    assert!(
        !counts.contains_key("a") && !counts.contains_key("b"),
        "deleted tasks are not counted: {counts:?}"
    );
    assert_eq!(counts.get("d").map(|c| c.succeeded), Some(1), "{counts:?}");
}

/// A claim with an inline maximum brings the payloads up to it and leaves
/// longer ones in the store, saying so and how long they are; the holder
/// reads them by task. Without a maximum every payload comes.
pub async fn claims_leave_large_payloads_in_the_store(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = create(&*store, new_job("q", false, RetryPolicy::default())).await;
    // Large enough for a file-backed SQLite store to keep it in its file.
    let big: Vec<u8> = (0..40_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    store
        .add_tasks(
            job.id,
            vec![
                NewTask {
                    key: "a-small".into(),
                    payload: b"tiny".to_vec(),
                    encoding: PayloadEncoding::Arrow,
                    rows: 1,
                },
                NewTask {
                    key: "b-big".into(),
                    payload: big.clone(),
                    encoding: PayloadEncoding::Arrow,
                    rows: 1,
                },
            ],
        )
        .await
        .expect("add_tasks");
    let mut leases = store
        .claim(ClaimRequest {
            queues: vec!["q".into()],
            worker: "w".into(),
            limit: 10,
            lease: LEASE,
            specs: Vec::new(),
            inline_max: Some(1_000),
        })
        .await
        .expect("claim");
    leases.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].payload, b"tiny");
    assert!(!leases[0].payload_left);
    assert_eq!(leases[0].payload_bytes, 4);
    assert!(
        leases[1].payload_left,
        "a payload over the maximum stays in the store"
    );
    assert!(leases[1].payload.is_empty());
    assert_eq!(leases[1].payload_bytes, big.len() as u64);
    assert_eq!(
        store
            .get_payload(leases[1].lease.task)
            .await
            .expect("payload"),
        big,
        "the holder reads it by task"
    );
    // Without a maximum, every payload comes with its lease.
    let other = create(&*store, new_job("r", false, RetryPolicy::default())).await;
    store
        .add_tasks(
            other.id,
            vec![NewTask {
                key: "big".into(),
                payload: big.clone(),
                encoding: PayloadEncoding::Arrow,
                rows: 1,
            }],
        )
        .await
        .expect("add_tasks");
    let whole = claim_on(&*store, &["r"], "w", 10, LEASE).await;
    assert_eq!(whole.len(), 1);
    assert!(!whole[0].payload_left);
    assert_eq!(whole[0].payload, big);
}

/// A duty has one holder at a time: others get it only when the holder's
/// term ran out or was given up, and then in a new term; a term that is no
/// longer current can neither be renewed nor given up.
pub async fn duties_have_one_holder_per_term(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let lease = Duration::from_secs(10);
    let a = store
        .take_duty("sweep", "node-a", lease)
        .await
        .expect("take")
        .expect("a free duty is taken");
    assert_eq!((a.term, a.holder.as_str()), (1, "node-a"));
    assert_eq!(
        store
            .take_duty("sweep", "node-b", lease)
            .await
            .expect("take"),
        None
    );
    let again = store
        .take_duty("sweep", "node-a", lease)
        .await
        .expect("take");
    assert_eq!(again.map(|t| t.term), Some(1), "its holder keeps its term");
    clock.advance(Duration::from_secs(6));
    let a = store
        .renew_duty(&a, lease)
        .await
        .expect("renew")
        .expect("a current term renews");
    assert_eq!(a.until, rota_core::Clock::now(&*clock) + lease);
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        store.renew_duty(&a, lease).await.expect("renew"),
        None,
        "a term that ran out does not renew"
    );
    let b = store
        .take_duty("sweep", "node-b", lease)
        .await
        .expect("take")
        .expect("a run-out duty is taken");
    assert_eq!(b.term, 2, "a new holder starts a new term");
    assert_eq!(
        store
            .take_duty("sweep", "node-a", lease)
            .await
            .expect("take"),
        None
    );
    store.release_duty(&a).await.expect("release a stale term");
    assert_eq!(
        store
            .take_duty("sweep", "node-c", lease)
            .await
            .expect("take"),
        None,
        "giving up a stale term changes nothing"
    );
    store.release_duty(&b).await.expect("release");
    let c = store
        .take_duty("sweep", "node-c", lease)
        .await
        .expect("take")
        .expect("a given-up duty is free");
    assert_eq!(c.term, 3);
    let other = store
        .take_duty("retention", "node-a", lease)
        .await
        .expect("take")
        .expect("duties are apart");
    assert_eq!(other.term, 1);
}

/// Retention deletes a job of more tasks than it deletes at a time (the
/// stores delete tasks in chunks) whole, tasks and counts included.
pub async fn a_job_larger_than_a_deletion_chunk_is_deleted_whole(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let big = job_with_tasks(&*store, "big", RetryPolicy::default(), 12_000).await;
    let first = store
        .list_tasks(big.id, TaskFilter::default())
        .await
        .expect("list")[0]
        .id;
    store.cancel_job(big.id).await.expect("cancel");
    clock.advance(Duration::from_secs(60));
    let cut = rota_core::Clock::now(&*clock);
    assert_eq!(store.delete_ended(cut, 10).await.expect("delete"), 1);
    assert!(get_opt(&*store, big.id).await.is_none());
    assert!(matches!(
        store.get_payload(first).await,
        Err(StoreError::NotFound { .. })
    ));
    let counts = store.task_counts().await.expect("task_counts");
    assert!(!counts.contains_key("big"), "{counts:?}");
}

async fn get_opt(store: &dyn Store, id: JobId) -> Option<Job> {
    store.get_job(id).await.expect("get_job failed")
}

async fn setup_nodes(h: &dyn NodeHarness, n: usize) -> (Arc<ManualClock>, Vec<Arc<dyn Store>>) {
    let clock = Arc::new(ManualClock::new(start_time()));
    let nodes = h.nodes(Arc::clone(&clock), n).await;
    assert_eq!(nodes.len(), n, "the harness must open {n} nodes");
    (clock, nodes)
}

/// Three nodes claiming one job's tasks at once, each with several
/// claimers, never hand one task to two of them; completions from any node
/// finish the job.
pub async fn nodes_never_share_a_claim(h: &dyn NodeHarness) {
    const TASKS: usize = 300;
    const PER_NODE: usize = 3;
    let (_, nodes) = setup_nodes(h, 3).await;
    let job = job_with_tasks(&*nodes[0], "q", RetryPolicy::default(), TASKS).await;
    let mut handles = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..PER_NODE {
            let store = Arc::clone(node);
            handles.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for round in 0..=TASKS {
                    let limit = u32::try_from((c + round) % 5 + 1).unwrap_or(1);
                    let leases =
                        claim_on(&*store, &["q"], &format!("n{n}w{c}"), limit, LEASE).await;
                    if leases.is_empty() {
                        break;
                    }
                    got.extend(leases.into_iter().map(|l| l.lease));
                }
                got
            }));
        }
    }
    let mut seen = HashSet::new();
    let mut leases = Vec::new();
    for handle in handles {
        for lease in handle.await.expect("claimer panicked") {
            assert!(
                seen.insert(lease.task),
                "task {} was claimed twice",
                lease.task
            );
            leases.push(lease);
        }
    }
    assert_eq!(seen.len(), TASKS, "every task must be claimed once");
    // Each node reports a third, in batches, at the same time.
    let mut handles = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let store = Arc::clone(node);
        let mine: Vec<LeaseRef> = leases
            .iter()
            .skip(n)
            .step_by(nodes.len())
            .copied()
            .collect();
        handles.push(tokio::spawn(async move {
            for chunk in mine.chunks(7) {
                let reports = chunk
                    .iter()
                    .map(|&lease| Report {
                        lease,
                        outcome: Outcome::Success(b"ok".to_vec()),
                    })
                    .collect();
                for answer in store.report(reports).await.expect("report") {
                    assert_eq!(
                        answer.expect("a held lease completes"),
                        TaskState::Succeeded
                    );
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("reporter panicked");
    }
    for node in &nodes {
        let job = get(&**node, job.id).await;
        assert_eq!(job.state, JobState::Succeeded, "{:?}", job.counts);
        assert_eq!(job.counts.succeeded, TASKS as u64, "{:?}", job.counts);
        assert_eq!(job.counts.total, TASKS as u64, "{:?}", job.counts);
    }
}

/// A lease taken through one node and left to expire is rescued by a claim
/// through another; the first node's late report is refused.
pub async fn any_node_rescues_an_expired_lease(h: &dyn NodeHarness) {
    let (clock, nodes) = setup_nodes(h, 2).await;
    let job = job_with_tasks(&*nodes[0], "q", policy(3, 0), 5).await;
    let lease = Duration::from_secs(10);
    let first = claim_on(&*nodes[0], &["q"], "a", 5, lease).await;
    assert_eq!(first.len(), 5);
    clock.advance(Duration::from_secs(11));
    let second = claim_on(&*nodes[1], &["q"], "b", 10, lease).await;
    assert_eq!(second.len(), 5, "node b must rescue and claim all five");
    for l in &second {
        assert_eq!(l.lease.attempt, 2, "a rescued task comes back as attempt 2");
    }
    for l in &first {
        assert_lost(complete(&*nodes[0], l.lease).await, l.lease, "late report");
    }
    for l in &second {
        assert_eq!(
            complete(&*nodes[0], l.lease)
                .await
                .expect("the live lease completes"),
            TaskState::Succeeded
        );
    }
    let job = get(&*nodes[1], job.id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.counts.succeeded, 5);
}

/// When the last tasks of a job end on different nodes at the same moment,
/// the job still settles: neither node may miss the other's completion.
pub async fn nodes_finishing_a_job_together_settle_it(h: &dyn NodeHarness) {
    const ROUNDS: usize = 20;
    let (_, nodes) = setup_nodes(h, 2).await;
    for round in 0..ROUNDS {
        let queue = format!("q{round}");
        let job = job_with_tasks(&*nodes[0], &queue, policy(1, 0), 2).await;
        let leases = claim_on(&*nodes[0], &[queue.as_str()], "w", 2, LEASE).await;
        assert_eq!(leases.len(), 2);
        // One succeeds, the other dies: the job must end failed.
        let a = Arc::clone(&nodes[0]);
        let b = Arc::clone(&nodes[1]);
        let (la, lb) = (leases[0].lease, leases[1].lease);
        let ok = tokio::spawn(async move { complete(&*a, la).await });
        let dead = tokio::spawn(async move { fail(&*b, lb, false).await });
        assert_eq!(
            ok.await.expect("join").expect("complete"),
            TaskState::Succeeded
        );
        assert_eq!(dead.await.expect("join").expect("fail"), TaskState::Dead);
        let job = get(&*nodes[1], job.id).await;
        assert_eq!(
            job.state,
            JobState::Failed,
            "round {round}: {:?}",
            job.counts
        );
    }
}

/// Nodes racing for one duty give it to exactly one of them, term after
/// term.
pub async fn nodes_racing_for_a_duty_give_it_to_one(h: &dyn NodeHarness) {
    let (clock, nodes) = setup_nodes(h, 3).await;
    let lease = Duration::from_secs(5);
    for round in 1..=5u64 {
        let mut handles = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            let store = Arc::clone(node);
            handles.push(tokio::spawn(async move {
                store
                    .take_duty("cron", &format!("node-{n}-{round}"), lease)
                    .await
                    .expect("take_duty")
            }));
        }
        let mut got = Vec::new();
        for handle in handles {
            got.extend(handle.await.expect("taker panicked"));
        }
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert_eq!(got[0].term, round, "each round is a new term");
        clock.advance(lease + Duration::from_secs(1));
    }
}

/// Nodes reading the files of one held job: a file claimed by several at
/// once goes to one; a finished file is not read again (unless asked, for a
/// changed file); a claim that ran out goes to another node, and the old
/// holder's renewal no longer covers it; a released job takes no claims
/// and is no longer listed as running.
pub async fn nodes_reading_one_jobs_files_read_each_once(h: &dyn NodeHarness) {
    let (clock, nodes) = setup_nodes(h, 3).await;
    let lease = Duration::from_secs(15);
    let (job, _) = nodes[0]
        .create_job_with(
            new_job("q", true, RetryPolicy::default()),
            JobStart {
                ingest: Some(IngestPlan {
                    plan: serde_json::json!({ "source": "/data" }),
                    holder: "node-0".into(),
                    lease,
                }),
                ..JobStart::default()
            },
        )
        .await
        .expect("create_job_with");
    let listed = nodes[1].running_ingests(10).await.expect("running_ingests");
    assert_eq!(
        listed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![job.id],
        "another node sees the ingest running"
    );
    let file = |relative: &str, node: &str| FileReport {
        relative: relative.into(),
        location: format!("/data/{relative}"),
        size: Some(10),
        etag: Some("e1".into()),
        format: String::new(),
        state: FileState::Running,
        bytes: 0,
        rows: 0,
        tasks: 0,
        skipped: 0,
        error: None,
        node: Some(node.into()),
    };
    for i in 0..10 {
        let relative = format!("f{i}.csv");
        let mut handles = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            let (store, name) = (Arc::clone(node), format!("node-{n}"));
            let stub = file(&relative, &name);
            handles.push(tokio::spawn(async move {
                let got = store
                    .claim_file(job.id, stub, &name, lease, false)
                    .await
                    .expect("claim_file");
                (name, got)
            }));
        }
        let mut winners = Vec::new();
        for handle in handles {
            let (name, got) = handle.await.expect("claimer panicked");
            match got {
                FileClaim::Yours => winners.push(name),
                FileClaim::Elsewhere => {}
                other => panic!("{relative}: {name} got {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "{relative}: {winners:?}");
        let winner = &winners[0];
        let w: usize = winner["node-".len()..].parse().expect("node number");
        // Its own claim again is its own.
        assert_eq!(
            nodes[w]
                .claim_file(job.id, file(&relative, winner), winner, lease, false)
                .await
                .expect("claim again"),
            FileClaim::Yours
        );
        let running = nodes[(w + 1) % 3]
            .list_files(job.id, FileFilter::default())
            .await
            .expect("list_files");
        let record = running
            .iter()
            .find(|f| f.relative == relative)
            .expect("record");
        assert_eq!(
            (record.state, record.node.as_deref()),
            (FileState::Running, Some(winner.as_str()))
        );
        let mut done = file(&relative, winner);
        done.state = FileState::Done;
        done.format = "csv".into();
        done.rows = 5;
        nodes[w]
            .put_files(job.id, vec![done.clone()])
            .await
            .expect("put_files");
        let other = (w + 1) % 3;
        assert_eq!(
            nodes[other]
                .claim_file(
                    job.id,
                    file(&relative, &format!("node-{other}")),
                    "x",
                    lease,
                    false
                )
                .await
                .expect("claim done"),
            FileClaim::Finished(done),
            "a finished file is not read again"
        );
    }
    // A claim that runs out unrenewed goes to another node.
    let stub = |n: usize| file("slow.csv", &format!("node-{n}"));
    assert_eq!(
        nodes[1]
            .claim_file(job.id, stub(1), "node-1", lease, false)
            .await
            .expect("claim"),
        FileClaim::Yours
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        nodes[1]
            .renew_files(job.id, "node-1", lease)
            .await
            .expect("renew"),
        1
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        nodes[2]
            .claim_file(job.id, stub(2), "node-2", lease, false)
            .await
            .expect("claim"),
        FileClaim::Elsewhere,
        "renewed, so still node-1's"
    );
    clock.advance(Duration::from_secs(16));
    assert_eq!(
        nodes[2]
            .claim_file(job.id, stub(2), "node-2", lease, false)
            .await
            .expect("claim"),
        FileClaim::Yours,
        "ran out, so node-2's"
    );
    assert_eq!(
        nodes[1]
            .renew_files(job.id, "node-1", lease)
            .await
            .expect("renew"),
        0,
        "node-1 no longer holds it"
    );
    // A finished file claimed again (it changed) is the claimer's.
    let mut done = stub(2);
    done.state = FileState::Done;
    nodes[2]
        .put_files(job.id, vec![done])
        .await
        .expect("put_files");
    assert_eq!(
        nodes[0]
            .claim_file(job.id, stub(0), "node-0", lease, true)
            .await
            .expect("again"),
        FileClaim::Yours
    );
    // Released: no more claims, and not listed as running.
    nodes[0].release_job(job.id, None).await.expect("release");
    assert_eq!(
        nodes[1]
            .claim_file(job.id, stub(1), "node-1", lease, false)
            .await
            .expect("claim"),
        FileClaim::Closed
    );
    assert!(
        nodes[2]
            .running_ingests(10)
            .await
            .expect("running_ingests")
            .is_empty(),
        "a released job's ingest is not running"
    );
}

/// Nodes creating a job under one key at the same moment make one job; every
/// one of them gets it back, and only one is told it created it.
pub async fn nodes_creating_one_key_together_make_one_job(h: &dyn NodeHarness) {
    let (_, nodes) = setup_nodes(h, 3).await;
    for round in 0..10 {
        let mut handles = Vec::new();
        for node in &nodes {
            let store = Arc::clone(node);
            let mut nj = new_job("q", false, RetryPolicy::default());
            nj.key = Some(format!("same-{round}"));
            handles.push(tokio::spawn(async move {
                store
                    .create_job_with(
                        nj,
                        JobStart {
                            tasks: tasks("t", 3),
                            ..JobStart::default()
                        },
                    )
                    .await
                    .expect("create_job_with")
            }));
        }
        let mut ids = HashSet::new();
        let mut created = 0;
        for handle in handles {
            let (job, new) = handle.await.expect("creator panicked");
            ids.insert(job.id);
            created += usize::from(new);
            assert_eq!(job.counts.total, 3, "the job comes back with its tasks");
        }
        assert_eq!(
            ids.len(),
            1,
            "round {round}: one key made {} jobs",
            ids.len()
        );
        assert_eq!(created, 1, "round {round}: exactly one creator made it");
    }
}

/// Creating a job with an existing key returns that job and `false`; jobs
/// without keys are always new.
pub async fn idempotent_job_key(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let mut nj = new_job("q", false, RetryPolicy::default());
    nj.key = Some("import-2025-01-01".into());
    let (first, created) = store.create_job(nj.clone()).await.expect("create_job");
    assert!(created, "first create with a key must create");
    assert_eq!(first.state, JobState::Pending, "a new job is pending");
    assert_eq!(first.key.as_deref(), Some("import-2025-01-01"));
    assert_eq!(first.params, nj.params, "params must round-trip");
    assert_eq!(first.retry, nj.retry, "retry policy must round-trip");

    nj.spec = "other".into();
    let (again, created) = store.create_job(nj).await.expect("create_job");
    assert!(!created, "create with an existing key must not create");
    assert_eq!(
        again.id, first.id,
        "create with an existing key must return that job"
    );
    assert_eq!(again.spec, first.spec, "the existing job must be unchanged");

    let a = create(&*store, new_job("q", false, RetryPolicy::default())).await;
    let b = create(&*store, new_job("q", false, RetryPolicy::default())).await;
    assert_ne!(a.id, b.id, "jobs without keys are distinct");
    let all = store
        .list_jobs(JobFilter::default())
        .await
        .expect("list_jobs");
    assert_eq!(all.len(), 3, "expected exactly three jobs");
}

/// [`Store::create_job_with`] makes the job with its tasks and callbacks in
/// one step: no reader ever sees the job without its task, however many
/// jobs are made at once; a replay of the key (concurrent or later) returns
/// the job as it was made and adds nothing; a held job's first tasks wait
/// for its release.
pub async fn job_is_created_with_its_start(h: &dyn Harness) {
    fn start(payload: &str, urls: &[&str]) -> JobStart {
        JobStart {
            tasks: vec![NewTask {
                key: "0".into(),
                payload: payload.as_bytes().to_vec(),
                encoding: PayloadEncoding::Json,
                rows: 1,
            }],
            callbacks: urls
                .iter()
                .map(|u| NewCallback {
                    url: (*u).into(),
                    events: vec![],
                })
                .collect(),
            ingest: None,
        }
    }
    let (_, store) = setup(h).await;
    let mut nj = new_job("q", false, RetryPolicy::default());
    nj.key = Some("plain-1".into());
    let (job, created) = store
        .create_job_with(nj.clone(), start("{\"n\":1}", &["http://a.example/1"]))
        .await
        .expect("create_job_with failed");
    assert!(created, "the first create with a key must create");
    assert_eq!(job.counts.total, 1, "the job is returned with its task");
    assert_eq!(job.counts.queued, 1, "a released job's task is queued");

    // Replays, one after another and all at once, add nothing.
    let (again, created) = store
        .create_job_with(
            nj.clone(),
            JobStart {
                tasks: tasks("other", 3),
                ..start("{}", &["http://b.example/", "http://c.example/"])
            },
        )
        .await
        .expect("replay failed");
    assert!(!created, "a replay must not create");
    assert_eq!(again.id, job.id, "a replay returns the job of the key");
    assert_eq!(again.counts.total, 1, "a replay adds no task");
    let replays: Vec<_> = (0..8)
        .map(|_| {
            let (store, nj) = (Arc::clone(&store), nj.clone());
            tokio::spawn(async move { store.create_job_with(nj, start("{}", &[])).await })
        })
        .collect();
    for replay in replays {
        let (j, created) = replay
            .await
            .expect("join")
            .expect("concurrent replay failed");
        assert!(!created && j.id == job.id && j.counts.total == 1, "{j:?}");
    }
    let callbacks = store
        .list_callbacks(job.id)
        .await
        .expect("list_callbacks failed");
    let urls: Vec<&str> = callbacks.iter().map(|c| c.url.as_str()).collect();
    assert_eq!(urls, ["http://a.example/1"], "a replay adds no callback");
    let leases = claim(&*store, "q", 10).await;
    assert_eq!(leases.len(), 1, "the one task is claimable");
    assert_eq!(
        store
            .get_payload(leases[0].lease.task)
            .await
            .expect("get_payload failed"),
        b"{\"n\":1}",
        "the task's payload is the one given at creation"
    );

    // Many creations at once, watched by readers: no job is ever seen
    // without its task.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut seen = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let jobs = store
                        .list_jobs(JobFilter {
                            queue: Some("many".into()),
                            limit: 500,
                            ..JobFilter::default()
                        })
                        .await
                        .expect("list_jobs failed");
                    for j in &jobs {
                        assert_eq!(j.counts.total, 1, "a job was seen without its task: {j:?}");
                    }
                    seen = seen.max(jobs.len());
                    tokio::task::yield_now().await;
                }
                seen
            })
        })
        .collect();
    let makers: Vec<_> = (0..8)
        .map(|m| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..25 {
                    let mut nj = new_job("many", false, RetryPolicy::default());
                    nj.key = Some(format!("many-{m}-{i}"));
                    let (j, created) = store
                        .create_job_with(nj, start("{}", &[]))
                        .await
                        .expect("create_job_with failed");
                    assert!(created && j.counts.total == 1, "{j:?}");
                }
            })
        })
        .collect();
    for maker in makers {
        maker.await.expect("maker panicked");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.expect("a reader saw a job without its task");
    }
    let many = store
        .list_jobs(JobFilter {
            queue: Some("many".into()),
            limit: 500,
            ..JobFilter::default()
        })
        .await
        .expect("list_jobs failed");
    assert_eq!(many.len(), 200, "every job was made once");
    assert!(many.iter().all(|j| j.counts.total == 1));

    // A held job's first tasks are scheduled until its release.
    let (held, _) = store
        .create_job_with(
            new_job("held", true, RetryPolicy::default()),
            start("{}", &[]),
        )
        .await
        .expect("create_job_with failed");
    assert_eq!(held.counts.scheduled, 1, "a held job's task waits");
    assert!(claim(&*store, "held", 10).await.is_empty());
    store.release_job(held.id, None).await.expect("release");
    assert_eq!(claim(&*store, "held", 10).await.len(), 1);
}

/// A held job created with an ingest plan is claimed for one holder at a
/// time: not while its creator's claim lasts, by one of many concurrent
/// claimers once it ran out, renewed only by its holder, and never once the
/// job is released or ended.
pub async fn ingest_claims_go_to_one_holder(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let lease = Duration::from_secs(30);
    let plan = serde_json::json!({ "batch": { "source": "/data/in.csv" }, "n": 1 });
    let held = |key: &str| {
        let mut nj = new_job("q", true, RetryPolicy::default());
        nj.key = Some(key.into());
        nj
    };
    let with_plan = |holder: &str| JobStart {
        ingest: Some(IngestPlan {
            plan: plan.clone(),
            holder: holder.into(),
            lease,
        }),
        ..JobStart::default()
    };
    let (job, _) = store
        .create_job_with(held("planned"), with_plan("a"))
        .await
        .expect("create_job_with failed");
    // Jobs that must never be claimed: one without a plan, one released,
    // one failed.
    create(&*store, held("no-plan")).await;
    let (released, _) = store
        .create_job_with(held("released"), with_plan("a"))
        .await
        .expect("create_job_with failed");
    store.release_job(released.id, None).await.expect("release");
    let (failed, _) = store
        .create_job_with(held("failed"), with_plan("a"))
        .await
        .expect("create_job_with failed");
    store
        .fail_job(failed.id, "broken".into(), None)
        .await
        .expect("fail_job");

    let claims = |holder: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .claim_ingests(holder, 10, lease)
                .await
                .expect("claim_ingests failed")
        }
    };
    assert!(claims("b").await.is_empty(), "the creator's claim holds");
    assert!(
        store.renew_ingest(job.id, "a", lease).await.expect("renew"),
        "the creator renews its claim"
    );
    clock.advance(Duration::from_secs(29));
    assert!(claims("b").await.is_empty(), "a renewed claim holds");
    clock.advance(Duration::from_secs(2));
    let holders = ["b", "c", "d", "e", "f", "g"];
    let racers = holders.map(|holder| tokio::spawn(claims(holder)));
    let mut won = Vec::new();
    for (racer, holder) in racers.into_iter().zip(holders) {
        for claim in racer.await.expect("join") {
            won.push((holder, claim));
        }
    }
    assert_eq!(won.len(), 1, "one holder takes the job: {won:?}");
    let (winner, claim) = won.remove(0);
    assert_eq!(
        claim.job.id, job.id,
        "only the held, pending job with a plan"
    );
    assert_eq!(claim.plan, plan, "the plan round-trips");
    assert!(
        !store.renew_ingest(job.id, "a", lease).await.expect("renew"),
        "a claim that ran out and was taken is lost to its old holder"
    );
    assert!(
        store
            .renew_ingest(job.id, winner, lease)
            .await
            .expect("renew")
    );
    clock.advance(Duration::from_secs(20));
    assert!(
        store
            .renew_ingest(job.id, winner, lease)
            .await
            .expect("renew")
    );
    clock.advance(Duration::from_secs(20));
    assert!(claims("z").await.is_empty(), "a renewed claim is not taken");
    store.release_job(job.id, None).await.expect("release");
    clock.advance(Duration::from_secs(60));
    assert!(
        claims("z").await.is_empty(),
        "a released job is not claimed"
    );
    assert!(
        !store
            .renew_ingest(job.id, winner, lease)
            .await
            .expect("renew"),
        "a released job's ingest claim is not renewed"
    );
    let no_plan = store
        .create_job(held("no-plan"))
        .await
        .expect("create_job")
        .0;
    assert!(
        !store
            .renew_ingest(no_plan.id, "a", lease)
            .await
            .expect("renew"),
        "a job without a plan has no claim"
    );
}

/// Adding tasks whose keys exist adds nothing; counts stay right.
pub async fn idempotent_task_insert(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = create(&*store, new_job("q", true, RetryPolicy::default())).await;
    let first = store
        .add_tasks(job.id, tasks("t", 10))
        .await
        .expect("add_tasks");
    assert_eq!(first, 10);
    let replay = store
        .add_tasks(job.id, tasks("t", 10))
        .await
        .expect("add_tasks");
    assert_eq!(replay, 0, "replaying the same task keys must add nothing");
    let mut mixed = tasks("t", 5);
    mixed.extend(tasks("u", 5));
    // A duplicate within one call is also ignored.
    mixed.extend(tasks("u", 1));
    let added = store.add_tasks(job.id, mixed).await.expect("add_tasks");
    assert_eq!(added, 5, "only the new keys must be added");
    let job = get(&*store, job.id).await;
    assert_eq!(
        job.counts.total, 15,
        "counts after replay: {:?}",
        job.counts
    );
    assert_eq!(
        job.counts.scheduled, 15,
        "held tasks are scheduled: {:?}",
        job.counts
    );

    let missing = store.add_tasks(JobId::new(), tasks("t", 1)).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "adding tasks to a missing job must be not found, got {missing:?}"
    );
}

/// Held tasks are not claimable until release; releasing twice changes
/// nothing; a released empty job succeeds.
pub async fn held_tasks_wait_for_release(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let job = create(&*store, new_job("q", true, RetryPolicy::default())).await;
    assert!(!job.released, "a held job is not released");
    store
        .add_tasks(job.id, tasks("t", 5))
        .await
        .expect("add_tasks");
    clock.advance(Duration::from_secs(3600));
    assert!(
        claim(&*store, "q", 10).await.is_empty(),
        "held tasks must not be claimable"
    );

    let report = IngestReport {
        source: "file:///data/in.csv".into(),
        format: "csv".into(),
        rows: 5,
        tasks: 5,
        ..IngestReport::default()
    };
    let released = store
        .release_job(job.id, Some(report.clone()))
        .await
        .expect("release_job");
    assert!(released.released, "released job must say so");
    assert_eq!(
        released.ingest.as_ref(),
        Some(&report),
        "ingest report must be stored"
    );
    assert_eq!(
        released.counts.queued, 5,
        "released tasks are queued: {:?}",
        released.counts
    );
    assert_eq!(released.state, JobState::Pending);

    let again = store.release_job(job.id, None).await.expect("release_job");
    assert_eq!(
        again, released,
        "releasing a released job must change nothing"
    );

    let leases = claim(&*store, "q", 10).await;
    assert_eq!(leases.len(), 5, "all released tasks must be claimable");

    let empty = create(&*store, new_job("q", true, RetryPolicy::default())).await;
    let empty = store
        .release_job(empty.id, None)
        .await
        .expect("release_job");
    assert_eq!(
        empty.state,
        JobState::Succeeded,
        "a released empty job has succeeded"
    );
    assert!(
        empty.finished_at.is_some(),
        "a succeeded job has finished_at"
    );
}

/// Failing an unreleased job cancels its tasks; none is ever claimable, and
/// no task can be added to it afterwards.
pub async fn fail_job_cancels_held_tasks(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let job = create(&*store, new_job("q", true, RetryPolicy::default())).await;
    store
        .add_tasks(job.id, tasks("t", 4))
        .await
        .expect("add_tasks");
    let failed = store
        .fail_job(job.id, "line 3: bad quote".into(), None)
        .await
        .expect("fail_job");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("line 3: bad quote"),
        "error must be stored"
    );
    assert_eq!(
        failed.counts.cancelled, 4,
        "its tasks must be cancelled: {:?}",
        failed.counts
    );
    assert!(failed.finished_at.is_some());
    clock.advance(Duration::from_secs(3600));
    assert!(
        claim(&*store, "q", 10).await.is_empty(),
        "a failed job's tasks are not claimable"
    );

    let late = store.add_tasks(job.id, tasks("late", 1)).await;
    assert!(
        matches!(late, Err(StoreError::Conflict { .. })),
        "adding tasks to a failed job must conflict, got {late:?}"
    );
    let released = store.release_job(job.id, None).await.expect("release_job");
    assert_eq!(
        released.state,
        JobState::Failed,
        "release must not revive a failed job"
    );
    assert!(
        claim(&*store, "q", 10).await.is_empty(),
        "still nothing claimable"
    );
}

/// Many concurrent claimers: every task is claimed exactly once.
pub async fn claim_is_exclusive_under_concurrency(h: &dyn Harness) {
    const TASKS: usize = 200;
    const CLAIMERS: usize = 8;
    let (_, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", RetryPolicy::default(), TASKS).await;
    let mut handles = Vec::new();
    for c in 0..CLAIMERS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            // Bounded: even claiming one at a time, a claimer needs at most
            // TASKS rounds.
            for round in 0..=TASKS {
                let limit = u32::try_from((c + round) % 7 + 1).unwrap_or(1);
                let leases = claim_on(&*store, &["q"], &format!("w{c}"), limit, LEASE).await;
                if leases.is_empty() {
                    break;
                }
                assert!(
                    leases.len() <= limit as usize,
                    "claim returned more than its limit"
                );
                got.extend(leases.into_iter().map(|l| (l.lease.task, l.lease.attempt)));
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    for handle in handles {
        for (task, attempt) in handle.await.expect("claimer panicked") {
            assert_eq!(attempt, 1, "first claims must be attempt 1");
            assert!(seen.insert(task), "task {task} was claimed twice");
        }
    }
    assert_eq!(seen.len(), TASKS, "every task must be claimed once");
    let job = get(&*store, job.id).await;
    assert_eq!(job.counts.running, TASKS as u64, "{:?}", job.counts);
    assert_eq!(job.state, JobState::Running);
}

/// An expired lease is rescued by the next claim: the task comes back as the
/// next attempt, and the old lease is dead for heartbeats and reports.
pub async fn expired_lease_is_reclaimed(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", policy(3, 0), 1).await;
    let lease = Duration::from_secs(10);
    let first = claim_on(&*store, &["q"], "w1", 1, lease).await;
    assert_eq!(first.len(), 1);
    let old = first[0].lease;
    assert_eq!(old.attempt, 1);
    assert_eq!(
        first[0].expires_at,
        start_time() + chrono::Duration::seconds(10),
        "lease must expire at claim time + lease"
    );

    clock.advance(Duration::from_secs(5));
    assert!(
        claim_on(&*store, &["q"], "w2", 1, lease).await.is_empty(),
        "a live lease must not be reclaimed"
    );
    clock.advance(Duration::from_secs(6));
    // Expired but not yet rescued: the lease is no longer valid.
    assert_lost(
        beat(&*store, old, lease).await,
        old,
        "heartbeat on an expired lease",
    );
    assert_lost(
        complete(&*store, old).await,
        old,
        "completion on an expired lease",
    );

    let second = claim_on(&*store, &["q"], "w2", 1, lease).await;
    assert_eq!(second.len(), 1, "an expired lease must be reclaimable");
    let new = second[0].lease;
    assert_eq!(new.task, old.task, "the same task must come back");
    assert_eq!(new.attempt, 2, "reclaiming must count an attempt");
    assert_ne!(new.token, old.token, "a new claim gets a new token");

    assert_lost(
        beat(&*store, old, lease).await,
        old,
        "old heartbeat after reclaim",
    );
    assert_lost(
        complete(&*store, old).await,
        old,
        "old completion after reclaim",
    );
    let task = task_state(&*store, job.id, "t00000").await;
    assert_eq!(
        task.state,
        TaskState::Running,
        "a stale report must change nothing"
    );
    assert_eq!(task.attempt, 2);
    assert!(
        task.error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "a rescued attempt records why: {:?}",
        task.error
    );

    assert_eq!(
        complete(&*store, new).await.expect("valid completion"),
        TaskState::Succeeded
    );
    let job = get(&*store, job.id).await;
    assert_eq!(job.state, JobState::Succeeded);

    // A lease that expires on its last attempt makes the task dead.
    let job = job_with_tasks(&*store, "last", policy(1, 0), 1).await;
    let leases = claim_on(&*store, &["last"], "w1", 1, lease).await;
    assert_eq!(leases.len(), 1);
    clock.advance(Duration::from_secs(11));
    assert_eq!(store.rescue_expired().await.expect("rescue_expired"), 1);
    assert_eq!(store.rescue_expired().await.expect("rescue_expired"), 0);
    let task = task_state(&*store, job.id, "t00000").await;
    assert_eq!(
        task.state,
        TaskState::Dead,
        "expiry on the last attempt is dead"
    );
    assert_eq!(get(&*store, job.id).await.state, JobState::Failed);
}

/// Heartbeats keep a lease alive past its original expiry.
pub async fn heartbeat_extends_lease(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    job_with_tasks(&*store, "q", policy(3, 0), 1).await;
    let lease = Duration::from_secs(10);
    let leases = claim_on(&*store, &["q"], "w1", 1, lease).await;
    let held = leases[0].lease;
    for i in 0..5 {
        clock.advance(Duration::from_secs(6));
        let ack = beat(&*store, held, lease)
            .await
            .unwrap_or_else(|e| panic!("heartbeat {i} of a live lease failed: {e}"));
        assert!(!ack.cancel_requested, "nobody cancelled the job");
        assert_eq!(
            ack.expires_at,
            start_time() + chrono::Duration::seconds(6 * (i + 1) + 10),
            "a heartbeat extends the lease from now"
        );
        assert!(
            claim_on(&*store, &["q"], "w2", 1, lease).await.is_empty(),
            "a heartbeated lease must not be reclaimed (after {}s)",
            6 * (i + 1)
        );
    }
    clock.advance(Duration::from_secs(11));
    let again = claim_on(&*store, &["q"], "w2", 1, lease).await;
    assert_eq!(again.len(), 1, "once heartbeats stop the lease expires");
    assert_eq!(again[0].lease.attempt, 2);
}

/// Reports with a wrong token, a wrong attempt or after the task ended are
/// rejected and change nothing.
pub async fn stale_completion_is_rejected(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", RetryPolicy::default(), 1).await;
    let lease = claim(&*store, "q", 1).await[0].lease;
    let wrong_token = LeaseRef {
        token: LeaseToken::random(),
        ..lease
    };
    let wrong_attempt = LeaseRef {
        attempt: lease.attempt + 1,
        ..lease
    };
    assert_lost(
        complete(&*store, wrong_token).await,
        wrong_token,
        "wrong token",
    );
    assert_lost(
        complete(&*store, wrong_attempt).await,
        wrong_attempt,
        "wrong attempt",
    );
    assert_lost(
        fail(&*store, wrong_token, true).await,
        wrong_token,
        "failure with wrong token",
    );
    assert_lost(
        beat(&*store, wrong_token, LEASE).await,
        wrong_token,
        "heartbeat with wrong token",
    );
    assert_eq!(
        task_state(&*store, job.id, "t00000").await.state,
        TaskState::Running
    );

    assert_eq!(
        complete(&*store, lease).await.expect("valid"),
        TaskState::Succeeded
    );
    assert_lost(complete(&*store, lease).await, lease, "second completion");
    assert_lost(
        fail(&*store, lease, false).await,
        lease,
        "failure after completion",
    );
    assert_lost(
        beat(&*store, lease, LEASE).await,
        lease,
        "heartbeat after completion",
    );
    let task = task_state(&*store, job.id, "t00000").await;
    assert_eq!(
        task.state,
        TaskState::Succeeded,
        "a stale report must change nothing"
    );
    assert_eq!(task.attempt, 1);
}

/// A retryable failure waits out its backoff, counts attempts, and is dead
/// after the last; the job fails once its other tasks end.
pub async fn retry_backs_off_then_dies(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", policy(3, 1_000), 2).await;
    let leases = claim(&*store, "q", 1).await;
    let first = leases[0].lease;
    assert_eq!(
        leases[0].key, "t00000",
        "oldest available first, then by id"
    );

    assert_eq!(
        fail(&*store, first, true).await.expect("fail"),
        TaskState::Retrying
    );
    let task = task_state(&*store, job.id, "t00000").await;
    assert_eq!(task.state, TaskState::Retrying);
    assert_eq!(
        task.error.as_deref(),
        Some("boom"),
        "the error must be stored"
    );
    // Backoff after attempt 1 lies in [500ms, 1000ms].
    let other = claim(&*store, "q", 10).await;
    assert_eq!(other.len(), 1, "only the other task is claimable");
    assert_eq!(other[0].key, "t00001");
    clock.advance(Duration::from_millis(400));
    assert!(
        claim(&*store, "q", 10).await.is_empty(),
        "claimable before its backoff"
    );
    clock.advance(Duration::from_millis(700));
    let second = claim(&*store, "q", 10).await;
    assert_eq!(second.len(), 1, "claimable after its backoff");
    assert_eq!(second[0].lease.task, first.task);
    assert_eq!(second[0].lease.attempt, 2, "attempt increments");

    assert_eq!(
        fail(&*store, second[0].lease, true).await.expect("fail"),
        TaskState::Retrying
    );
    // Backoff after attempt 2 lies in [1000ms, 2000ms].
    clock.advance(Duration::from_millis(900));
    assert!(claim(&*store, "q", 10).await.is_empty(), "backoff doubles");
    clock.advance(Duration::from_millis(1_200));
    let third = claim(&*store, "q", 10).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].lease.attempt, 3);
    assert_eq!(
        fail(&*store, third[0].lease, true).await.expect("fail"),
        TaskState::Dead,
        "a failure on the last attempt is dead"
    );
    let job_now = get(&*store, job.id).await;
    assert_eq!(
        job_now.state,
        JobState::Running,
        "the other task is still running"
    );
    assert_eq!(job_now.counts.dead, 1);

    assert_eq!(
        complete(&*store, other[0].lease).await.expect("complete"),
        TaskState::Succeeded
    );
    let job_now = get(&*store, job.id).await;
    assert_eq!(
        job_now.state,
        JobState::Failed,
        "a job with a dead task fails"
    );
    assert!(job_now.finished_at.is_some());
    clock.advance(Duration::from_secs(3600));
    assert!(
        claim(&*store, "q", 10).await.is_empty(),
        "dead tasks are never claimed"
    );
}

/// A non-retryable failure makes the task dead on its first attempt.
pub async fn non_retryable_failure_is_dead(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", policy(5, 0), 1).await;
    let lease = claim(&*store, "q", 1).await[0].lease;
    assert_eq!(
        fail(&*store, lease, false).await.expect("fail"),
        TaskState::Dead
    );
    let task = task_state(&*store, job.id, "t00000").await;
    assert_eq!(task.state, TaskState::Dead);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.error.as_deref(), Some("boom"));
    assert!(task.finished_at.is_some());
    assert!(claim(&*store, "q", 1).await.is_empty());
    assert_eq!(get(&*store, job.id).await.state, JobState::Failed);
}

/// Cancelling stops unstarted tasks, tells running ones, and is final.
pub async fn cancel_stops_work(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", policy(3, 0), 3).await;
    let running = claim(&*store, "q", 1).await[0].lease;
    let cancelled = store.cancel_job(job.id).await.expect("cancel_job");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(cancelled.counts.cancelled, 2, "{:?}", cancelled.counts);
    assert_eq!(cancelled.counts.running, 1, "{:?}", cancelled.counts);
    assert!(
        claim(&*store, "q", 10).await.is_empty(),
        "nothing of a cancelled job is claimable"
    );

    let ack = beat(&*store, running, LEASE)
        .await
        .expect("heartbeat of a live lease");
    assert!(
        ack.cancel_requested,
        "a running task must learn of the cancel"
    );

    let late = complete(&*store, running)
        .await
        .expect("a late completion is accepted");
    assert_eq!(late, TaskState::Succeeded);
    let after = get(&*store, job.id).await;
    assert_eq!(
        after.state,
        JobState::Cancelled,
        "a cancelled job stays cancelled"
    );
    assert_eq!(after.counts.succeeded, 1);

    let again = store.cancel_job(job.id).await.expect("cancel_job");
    assert_eq!(
        again.finished_at, cancelled.finished_at,
        "cancelling twice changes nothing"
    );

    // A running task of a cancelled job whose lease expires is not retried.
    let job = job_with_tasks(&*store, "q2", policy(3, 0), 1).await;
    claim(&*store, "q2", 1).await;
    store.cancel_job(job.id).await.expect("cancel_job");
    clock.advance(Duration::from_secs(31));
    store.rescue_expired().await.expect("rescue_expired");
    assert!(
        claim(&*store, "q2", 10).await.is_empty(),
        "cancelled work is not retried"
    );
    let task = task_state(&*store, job.id, "t00000").await;
    assert!(
        task.state.is_terminal(),
        "expired task of a cancelled job ends: {:?}",
        task.state
    );
    assert_eq!(get(&*store, job.id).await.state, JobState::Cancelled);

    // Cancelling an ended job changes nothing.
    let done = job_with_tasks(&*store, "q3", policy(3, 0), 1).await;
    let l = claim(&*store, "q3", 1).await[0].lease;
    complete(&*store, l).await.expect("complete");
    let done = store.cancel_job(done.id).await.expect("cancel_job");
    assert_eq!(
        done.state,
        JobState::Succeeded,
        "an ended job cannot be cancelled"
    );
}

/// A job goes pending → running → succeeded, with counts along the way.
pub async fn job_state_follows_tasks(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", RetryPolicy::default(), 3).await;
    assert!(job.released, "a job created without hold is released");
    let job = get(&*store, job.id).await;
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.counts.queued, 3, "{:?}", job.counts);
    assert_eq!(job.counts.total, 3);

    let first = claim(&*store, "q", 1).await;
    let job = get(&*store, job.id).await;
    assert_eq!(job.state, JobState::Running, "a claim starts the job");
    assert_eq!(
        (job.counts.running, job.counts.queued),
        (1, 2),
        "{:?}",
        job.counts
    );
    assert_eq!(first[0].job_id, job.id);
    assert_eq!(first[0].spec, "conformance", "a lease carries the spec");
    assert_eq!(first[0].params, job.params, "a lease carries the params");
    assert_eq!(first[0].queue, "q");

    let rest = claim(&*store, "q", 10).await;
    assert_eq!(rest.len(), 2);
    for lease in first.iter().chain(&rest) {
        assert_eq!(
            complete(&*store, lease.lease).await.expect("complete"),
            TaskState::Succeeded
        );
    }
    let job = get(&*store, job.id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.counts.succeeded, 3, "{:?}", job.counts);
    assert_eq!(job.counts.unfinished(), 0);
    assert!(job.finished_at.is_some());
}

/// Jobs list newest first, filter by state, spec, queue and creation time,
/// and page by id.
pub async fn list_jobs_filters_and_pages(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        // A second apart: jobs 0..=3 before `start + 4 s`, the rest after.
        if i > 0 {
            clock.advance(Duration::from_secs(1));
        }
        let mut nj = new_job(
            if i < 5 { "q1" } else { "q2" },
            false,
            RetryPolicy::default(),
        );
        nj.spec = if i % 2 == 0 { "even" } else { "odd" }.into();
        ids.push(create(&*store, nj).await.id);
    }
    store.cancel_job(ids[3]).await.expect("cancel_job");
    let mut newest_first = ids.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));

    let all = store
        .list_jobs(JobFilter::default())
        .await
        .expect("list_jobs");
    let got: Vec<JobId> = all.iter().map(|j| j.id).collect();
    assert_eq!(
        got, newest_first,
        "jobs must list newest (largest id) first"
    );

    let by = |f: JobFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_jobs(f)
                .await
                .expect("list_jobs")
                .into_iter()
                .map(|j| j.id)
                .collect::<BTreeSet<_>>()
        }
    };
    let q2 = by(JobFilter {
        queue: Some("q2".into()),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(q2, ids[5..].iter().copied().collect(), "queue filter");
    let odd = by(JobFilter {
        spec: Some("odd".into()),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(
        odd,
        [ids[1], ids[3], ids[5], ids[7]].into_iter().collect(),
        "spec filter"
    );
    let cancelled = by(JobFilter {
        state: Some(JobState::Cancelled),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(cancelled, [ids[3]].into_iter().collect(), "state filter");
    let both = by(JobFilter {
        queue: Some("q1".into()),
        spec: Some("even".into()),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(
        both,
        [ids[0], ids[2], ids[4]].into_iter().collect(),
        "combined filters"
    );
    let at = |secs: u64| start_time() + Duration::from_secs(secs);
    let newer = by(JobFilter {
        created_after: Some(at(4)),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(
        newer,
        ids[4..].iter().copied().collect(),
        "created_after includes its own instant"
    );
    let window = by(JobFilter {
        created_after: Some(at(2)),
        created_before: Some(at(5)),
        queue: Some("q1".into()),
        ..JobFilter::default()
    })
    .await;
    assert_eq!(
        window,
        ids[2..5].iter().copied().collect(),
        "created_before excludes its own instant, and combines"
    );

    let mut paged = Vec::new();
    let mut before = None;
    for _ in 0..10 {
        let page = store
            .list_jobs(JobFilter {
                before,
                limit: 3,
                ..JobFilter::default()
            })
            .await
            .expect("list_jobs");
        assert!(page.len() <= 3, "a page must respect its limit");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        paged.extend(page.iter().map(|j| j.id));
    }
    assert_eq!(
        paged, newest_first,
        "paging with `before` must visit every job once, in order"
    );
}

/// Tasks list in key order, filter by state, page by key, and carry results
/// only when asked.
pub async fn list_tasks_orders_and_pages(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = create(&*store, new_job("q", false, RetryPolicy::default())).await;
    // Insert in an order unlike key order.
    let mut all = tasks("k", 25);
    all.reverse();
    all.swap(3, 17);
    store.add_tasks(job.id, all).await.expect("add_tasks");

    let listed = store
        .list_tasks(job.id, TaskFilter::default())
        .await
        .expect("list_tasks");
    let keys: Vec<&str> = listed.iter().map(|t| t.key.as_str()).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("k{i:05}")).collect();
    assert_eq!(keys, expected, "tasks must list in key order");
    let first = &listed[0];
    assert_eq!(first.state, TaskState::Queued);
    assert_eq!(first.attempt, 0);
    assert_eq!(first.max_attempts, RetryPolicy::default().max_attempts);
    assert_eq!(first.rows, 1);
    assert_eq!(first.payload_bytes, "payload of k00000".len() as u64);
    assert_eq!(first.encoding, PayloadEncoding::Ndjson);
    assert!(first.available_at.is_some());

    let mut paged = Vec::new();
    let mut after_key = None;
    for _ in 0..10 {
        let page = store
            .list_tasks(
                job.id,
                TaskFilter {
                    after_key: after_key.clone(),
                    limit: 10,
                    ..TaskFilter::default()
                },
            )
            .await
            .expect("list_tasks");
        assert!(page.len() <= 10, "a page must respect its limit");
        let Some(last) = page.last() else { break };
        after_key = Some(last.key.clone());
        paged.extend(page.into_iter().map(|t| t.key));
    }
    assert_eq!(
        paged, expected,
        "paging with `after_key` must visit every task once, in order"
    );

    let leases = claim(&*store, "q", 2).await;
    for lease in &leases {
        report1(
            &*store,
            lease.lease,
            Outcome::Success(format!("ok {}", lease.key).into_bytes()),
        )
        .await
        .expect("complete");
    }
    let done = store
        .list_tasks(
            job.id,
            TaskFilter {
                state: Some(TaskState::Succeeded),
                ..TaskFilter::default()
            },
        )
        .await
        .expect("list_tasks");
    assert_eq!(done.len(), 2, "state filter");
    assert!(
        done.iter().all(|t| t.result.is_none()),
        "results only when asked"
    );
    let with = store
        .list_tasks(
            job.id,
            TaskFilter {
                state: Some(TaskState::Succeeded),
                with_results: true,
                ..TaskFilter::default()
            },
        )
        .await
        .expect("list_tasks");
    for t in &with {
        assert_eq!(
            t.result.as_deref(),
            Some(format!("ok {}", t.key).as_bytes()),
            "result round-trip"
        );
        assert!(t.finished_at.is_some());
        assert_eq!(t.worker.as_deref(), Some("worker-1"));
    }
    // A byte budget ends a page of results early, after at least one task.
    let first = with[0].result.as_ref().map_or(0, Vec::len) as u64;
    let budgeted = store
        .list_tasks(
            job.id,
            TaskFilter {
                state: Some(TaskState::Succeeded),
                with_results: true,
                results_budget: first,
                ..TaskFilter::default()
            },
        )
        .await
        .expect("list_tasks");
    assert_eq!(
        budgeted.len(),
        1,
        "a page ends once its results reach the budget"
    );
    assert_eq!(budgeted[0].key, with[0].key);

    let missing = store.list_tasks(JobId::new(), TaskFilter::default()).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "listing tasks of a missing job must be not found, got {missing:?}"
    );
}

/// Batched heartbeats and reports answer per item: a stale item fails alone.
pub async fn batched_calls_answer_per_item(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", RetryPolicy::default(), 2).await;
    let leases = claim(&*store, "q", 2).await;
    assert_eq!(leases.len(), 2);
    let stale = LeaseRef {
        token: LeaseToken::random(),
        ..leases[0].lease
    };
    let valid = leases[1].lease;

    let acks = store
        .heartbeat(vec![stale.into(), valid.into()], LEASE)
        .await
        .expect("heartbeat");
    assert_eq!(acks.len(), 2);
    assert!(
        matches!(acks[0], Err(StoreError::LeaseLost { .. })),
        "stale item: {:?}",
        acks[0]
    );
    assert!(acks[1].is_ok(), "valid item: {:?}", acks[1]);

    let out = store
        .report(vec![
            Report {
                lease: stale,
                outcome: Outcome::Success(b"x".to_vec()),
            },
            Report {
                lease: valid,
                outcome: Outcome::Success(b"y".to_vec()),
            },
        ])
        .await
        .expect("report");
    assert_eq!(out.len(), 2);
    assert!(
        matches!(out[0], Err(StoreError::LeaseLost { .. })),
        "stale item: {:?}",
        out[0]
    );
    assert!(
        matches!(out[1], Ok(TaskState::Succeeded)),
        "valid item: {:?}",
        out[1]
    );
    let job = get(&*store, job.id).await;
    assert_eq!(
        (job.counts.running, job.counts.succeeded),
        (1, 1),
        "{:?}",
        job.counts
    );

    let none = store.report(Vec::new()).await.expect("empty report");
    assert!(none.is_empty());
    let none = store
        .heartbeat(Vec::new(), LEASE)
        .await
        .expect("empty heartbeat");
    assert!(none.is_empty());
}

/// A claim only returns tasks of the queues it names.
pub async fn queues_are_isolated(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let a = job_with_tasks(&*store, "a", RetryPolicy::default(), 3).await;
    let b = job_with_tasks(&*store, "b", RetryPolicy::default(), 3).await;
    let from_a = claim(&*store, "a", 10).await;
    assert_eq!(from_a.len(), 3);
    assert!(
        from_a.iter().all(|l| l.job_id == a.id && l.queue == "a"),
        "claim on a returned b's task"
    );
    assert!(claim(&*store, "a", 10).await.is_empty());
    assert!(
        claim(&*store, "c", 10).await.is_empty(),
        "an unknown queue has nothing"
    );
    let c = job_with_tasks(&*store, "c", RetryPolicy::default(), 2).await;
    let counts = store.task_counts().await.expect("task_counts failed");
    let shape: Vec<(&str, u64, u64, u64)> = counts
        .iter()
        .map(|(q, c)| (q.as_str(), c.total, c.queued, c.running))
        .collect();
    assert_eq!(
        shape,
        [("a", 3, 0, 3), ("b", 3, 3, 0), ("c", 2, 2, 0)],
        "task counts by queue and state"
    );
    let both = claim_on(&*store, &["b", "c"], "w", 10, LEASE).await;
    assert_eq!(both.len(), 5, "a claim may name several queues");
    let jobs: BTreeSet<JobId> = both.iter().map(|l| l.job_id).collect();
    assert_eq!(jobs, [b.id, c.id].into_iter().collect());
    assert!(
        claim_on(&*store, &[], "w", 10, LEASE).await.is_empty(),
        "no queues, no tasks"
    );
}

/// A claim naming specs takes tasks of jobs of those specs only; one naming
/// none takes any.
pub async fn claims_filter_by_spec(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let mut ids = Vec::new();
    for spec in ["import", "export"] {
        let job = create(
            &*store,
            NewJob {
                spec: spec.into(),
                ..new_job("q", false, RetryPolicy::default())
            },
        )
        .await;
        store
            .add_tasks(job.id, tasks("t", 2))
            .await
            .expect("add_tasks failed");
        ids.push(job.id);
    }
    let by_spec = |specs: &[&str], limit| {
        let store = Arc::clone(&store);
        let specs = specs.iter().map(|s| (*s).to_owned()).collect();
        async move {
            store
                .claim(ClaimRequest {
                    queues: vec!["q".into()],
                    worker: "w".into(),
                    limit,
                    lease: LEASE,
                    specs,
                    inline_max: None,
                })
                .await
                .expect("claim failed")
        }
    };
    let export = by_spec(&["export", "unknown"], 10).await;
    assert_eq!(export.len(), 2, "both export tasks");
    assert!(
        export
            .iter()
            .all(|l| l.job_id == ids[1] && l.spec == "export"),
        "a claim for export took another spec's task"
    );
    assert!(
        by_spec(&["export"], 10).await.is_empty(),
        "export has nothing left, though import has"
    );
    assert_eq!(by_spec(&[], 10).await.len(), 2, "no specs: any spec");
}

/// Progress given with a heartbeat is kept on the task, replaced by the next,
/// kept when a heartbeat gives none, ignored from a stale lease, and gone
/// when a new attempt starts.
pub async fn progress_is_kept_per_attempt(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", policy(3, 0), 1).await;
    let lease = claim(&*store, "q", 1).await.remove(0).lease;
    let progress = || async { task_state(&*store, job.id, "t00000").await.progress };
    assert_eq!(progress().await, None, "no progress before any is given");
    let say = |value: Option<serde_json::Value>, lease: LeaseRef| {
        let store = Arc::clone(&store);
        async move {
            store
                .heartbeat(
                    vec![Heartbeat {
                        lease,
                        progress: value,
                    }],
                    LEASE,
                )
                .await
                .expect("heartbeat failed as a whole")
                .remove(0)
        }
    };
    say(Some(serde_json::json!({ "done": 10, "of": 100 })), lease)
        .await
        .expect("heartbeat");
    say(Some(serde_json::json!({ "done": 40, "of": 100 })), lease)
        .await
        .expect("heartbeat");
    assert_eq!(
        progress().await,
        Some(serde_json::json!({ "done": 40, "of": 100 }))
    );
    say(None, lease).await.expect("heartbeat without progress");
    assert_eq!(
        progress().await,
        Some(serde_json::json!({ "done": 40, "of": 100 })),
        "a heartbeat without progress keeps the last"
    );
    let stale = LeaseRef {
        token: LeaseToken::random(),
        ..lease
    };
    assert_lost(
        say(Some(serde_json::json!("forged")), stale).await,
        stale,
        "stale heartbeat",
    );
    assert_eq!(
        progress().await,
        Some(serde_json::json!({ "done": 40, "of": 100 })),
        "a stale heartbeat records nothing"
    );
    clock.advance(LEASE + Duration::from_secs(1));
    let again = claim(&*store, "q", 1).await;
    assert_eq!(again.len(), 1, "the expired task is claimed again");
    assert_eq!(
        progress().await,
        None,
        "a new attempt starts without progress"
    );
}

/// Callbacks are due when their job enters a state they announce; a due
/// delivery is leased to one caller; a failure is retried when it says, a
/// lease that ran out is due again, and a delivered or given-up state is not.
pub async fn callbacks_are_due_on_state_changes(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let job = job_with_tasks(&*store, "q", policy(3, 0), 1).await;
    let callback = |url: &str, events: Vec<JobState>| NewCallback {
        url: url.into(),
        events,
    };
    store
        .add_callbacks(
            job.id,
            vec![
                callback("http://a.example/1", vec![]),
                callback("http://b.example/2", vec![JobState::Succeeded]),
            ],
        )
        .await
        .expect("add_callbacks failed");
    store
        .add_callbacks(job.id, vec![callback("http://changed.example/", vec![])])
        .await
        .expect("add_callbacks failed");
    let list = store
        .list_callbacks(job.id)
        .await
        .expect("list_callbacks failed");
    let urls: Vec<&str> = list.iter().map(|c| c.url.as_str()).collect();
    assert_eq!(
        urls,
        ["http://a.example/1", "http://b.example/2"],
        "replays add nothing"
    );
    let due = || async {
        store
            .due_callbacks(10, LEASE)
            .await
            .expect("due_callbacks failed")
    };
    assert!(due().await.is_empty(), "nothing is announced while pending");

    let lease = claim(&*store, "q", 1).await.remove(0).lease;
    let running = due().await;
    assert_eq!(
        running.len(),
        1,
        "only the first announces running: {running:?}"
    );
    assert_eq!(
        (running[0].index, running[0].state, running[0].attempt),
        (0, JobState::Running, 1)
    );
    assert!(due().await.is_empty(), "a leased delivery is not due twice");
    let retry_at = rota_core::Clock::now(&*clock) + chrono::Duration::seconds(10);
    store
        .record_callback(
            &running[0],
            CallbackOutcome::Failed {
                status: Some(500),
                error: "HTTP 500".into(),
                retry_at: Some(retry_at),
            },
        )
        .await
        .expect("record failed");
    assert!(due().await.is_empty(), "not due before its retry time");
    clock.advance(Duration::from_secs(11));
    let again = due().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2, "the second attempt at running");
    store
        .record_callback(&again[0], CallbackOutcome::Delivered { status: 200 })
        .await
        .expect("record failed");
    assert!(due().await.is_empty(), "running was delivered");
    let shown = &store.list_callbacks(job.id).await.expect("list")[0];
    assert_eq!(
        (
            shown.delivered,
            shown.attempts,
            shown.last_status,
            &shown.last_error
        ),
        (Some(JobState::Running), 2, Some(200), &None)
    );

    complete(&*store, lease).await.expect("complete");
    let ended = due().await;
    assert_eq!(ended.len(), 2, "both announce succeeded: {ended:?}");
    assert!(
        ended
            .iter()
            .all(|d| d.state == JobState::Succeeded && d.attempt == 1)
    );
    clock.advance(LEASE + Duration::from_secs(1));
    let retaken = due().await;
    assert_eq!(retaken.len(), 2, "a lease that ran out is due again");
    assert!(retaken.iter().all(|d| d.attempt == 2), "{retaken:?}");
    store
        .record_callback(
            &retaken[0],
            CallbackOutcome::Failed {
                status: None,
                error: "connection refused".into(),
                retry_at: None,
            },
        )
        .await
        .expect("record failed");
    store
        .record_callback(&retaken[1], CallbackOutcome::Delivered { status: 204 })
        .await
        .expect("record failed");
    clock.advance(Duration::from_secs(3600));
    assert!(
        due().await.is_empty(),
        "given up and delivered: nothing due"
    );
    let list = store.list_callbacks(job.id).await.expect("list");
    let by_index = |i: u32| list.iter().find(|c| c.index == i).expect("callback");
    assert_eq!(by_index(0).gave_up, Some(JobState::Succeeded));
    assert_eq!(
        by_index(0).last_error.as_deref(),
        Some("connection refused")
    );
    assert_eq!(by_index(1).delivered, Some(JobState::Succeeded));
}

/// Higher priorities are claimed first (then the oldest); a job's tasks are
/// not claimable before its run-at, held or not; a job's timeout caps each
/// attempt's lease, heartbeats or not, and an attempt past it fails as timed
/// out and is retried.
pub async fn priority_run_at_and_timeout_shape_claims(h: &dyn Harness) {
    let (clock, store) = setup(h).await;
    let now = rota_core::Clock::now(&*clock);
    let make = |timing: rota_core::Timing, hold: bool| {
        let store = Arc::clone(&store);
        async move {
            let job = create(
                &*store,
                NewJob {
                    timing,
                    ..new_job("q", hold, policy(2, 0))
                },
            )
            .await;
            store
                .add_tasks(job.id, tasks("t", 1))
                .await
                .expect("add_tasks failed");
            job
        }
    };
    let low = make(
        rota_core::Timing {
            priority: -5,
            ..Default::default()
        },
        false,
    )
    .await;
    let plain = make(rota_core::Timing::default(), false).await;
    let high = make(
        rota_core::Timing {
            priority: 10,
            ..Default::default()
        },
        false,
    )
    .await;
    let later = make(
        rota_core::Timing {
            priority: 100,
            run_at: Some(now + chrono::Duration::seconds(60)),
            ..Default::default()
        },
        false,
    )
    .await;
    let held_later = make(
        rota_core::Timing {
            run_at: Some(now + chrono::Duration::seconds(60)),
            ..Default::default()
        },
        true,
    )
    .await;
    store
        .release_job(held_later.id, None)
        .await
        .expect("release");
    let first = claim(&*store, "q", 10).await;
    let order: Vec<JobId> = first.iter().map(|l| l.job_id).collect();
    assert_eq!(
        order,
        [high.id, plain.id, low.id],
        "by priority, and nothing before its run-at"
    );
    for l in &first {
        complete(&*store, l.lease).await.expect("complete");
    }
    clock.advance(Duration::from_secs(61));
    let due: BTreeSet<JobId> = claim(&*store, "q", 10)
        .await
        .iter()
        .map(|l| l.job_id)
        .collect();
    assert_eq!(
        due,
        [later.id, held_later.id].into_iter().collect(),
        "due at their run-at"
    );

    let timed = make(
        rota_core::Timing {
            timeout_ms: Some(5_000),
            ..Default::default()
        },
        false,
    )
    .await;
    let lease = claim(&*store, "q", 1).await.remove(0);
    assert_eq!(lease.job_id, timed.id);
    let started = rota_core::Clock::now(&*clock);
    assert_eq!(
        lease.expires_at,
        started + chrono::Duration::seconds(5),
        "the lease ends at the timeout, not after LEASE"
    );
    clock.advance(Duration::from_secs(3));
    let ack = beat(&*store, lease.lease, LEASE).await.expect("heartbeat");
    assert_eq!(
        ack.expires_at,
        started + chrono::Duration::seconds(5),
        "heartbeats stop at the timeout"
    );
    clock.advance(Duration::from_secs(3));
    store.rescue_expired().await.expect("rescue");
    let task = task_state(&*store, timed.id, "t00000").await;
    assert_eq!(
        task.state,
        TaskState::Retrying,
        "a timed-out attempt is retried"
    );
    assert!(
        task.error
            .as_deref()
            .is_some_and(|e| e.contains("timed out")),
        "{:?}",
        task.error
    );
    let again = claim(&*store, "q", 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.attempt, 2);
    let shown = get(&*store, timed.id).await;
    assert_eq!(
        shown.timing.timeout_ms,
        Some(5_000),
        "the job shows its timing"
    );
}

/// Payloads come back byte for byte, from leases and from `get_payload`.
pub async fn payload_round_trips(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let job = create(&*store, new_job("q", false, RetryPolicy::default())).await;
    let mut big = Vec::with_capacity(300_000);
    let mut x: u32 = 0x9e37_79b9;
    while big.len() < 300_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big.extend_from_slice(&x.to_le_bytes());
    }
    // Repetitive rows, as text encodings produce: stores may compress them.
    let rows = |n: usize| -> Vec<u8> {
        let mut out = b"[".to_vec();
        for i in 0..n {
            let row = format!("{{\"id\":{i},\"name\":\"row {i}\",\"ok\":true}},");
            out.extend_from_slice(row.as_bytes());
        }
        out.push(b']');
        out
    };
    let payloads: Vec<(Vec<u8>, PayloadEncoding, u64)> = vec![
        (Vec::new(), PayloadEncoding::Json, 0),
        ((0..=255u8).collect(), PayloadEncoding::Arrow, 7),
        (b"a,b\n1,\"x\0y\"\n".to_vec(), PayloadEncoding::Csv, 1),
        (big.clone(), PayloadEncoding::Ndjson, 12_345),
        (big, PayloadEncoding::Arrow, 4),
        (rows(30), PayloadEncoding::Json, 30),
        (rows(600), PayloadEncoding::Json, 600),
        (rows(8_000), PayloadEncoding::Json, 8_000),
    ];
    let new = |payload_of: &dyn Fn(&[u8]) -> Vec<u8>| -> Vec<NewTask> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, (p, e, r))| NewTask {
                key: format!("p{i}"),
                payload: payload_of(p),
                encoding: *e,
                rows: *r,
            })
            .collect()
    };
    let added = store
        .add_tasks(job.id, new(&|p| p.to_vec()))
        .await
        .expect("add_tasks");
    assert_eq!(added, payloads.len() as u64);
    // A replay with other bytes under the same keys changes nothing.
    let replayed = store
        .add_tasks(job.id, new(&|p| p.iter().map(|b| b ^ 0x5a).collect()))
        .await
        .expect("replayed add_tasks");
    assert_eq!(replayed, 0, "a replay adds nothing");
    let leases = claim(&*store, "q", 10).await;
    assert_eq!(leases.len(), payloads.len());
    for lease in &leases {
        let i: usize = lease.key[1..].parse().expect("key index");
        let (payload, encoding, rows) = &payloads[i];
        assert!(
            lease.payload == *payload,
            "lease payload of {} differs",
            lease.key
        );
        assert_eq!(lease.encoding, *encoding, "encoding of {}", lease.key);
        assert_eq!(lease.rows, *rows, "rows of {}", lease.key);
        let stored = store
            .get_payload(lease.lease.task)
            .await
            .expect("get_payload");
        assert!(
            stored == *payload,
            "stored payload of {} differs",
            lease.key
        );
        let task = task_state(&*store, job.id, &lease.key).await;
        assert_eq!(task.payload_bytes, payload.len() as u64);
    }
    let missing = store.get_payload(rota_core::TaskId(i64::MAX)).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "payload of a missing task must be not found, got {missing:?}"
    );
}

/// Specs are stored, replaced and listed by name.
pub async fn specs_round_trip(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    assert!(store.get_spec("b").await.expect("get_spec").is_none());
    let spec = |name: &str, description: &str| Spec {
        name: name.into(),
        description: description.into(),
        queue: "q".into(),
        retry: policy(2, 10),
        lease_ms: 5_000,
        params_schema: Some(serde_json::json!({ "type": "object", "required": ["to"] })),
        defaults: serde_json::json!({ "region": "eu" })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    store.put_spec(spec("b", "first")).await.expect("put_spec");
    store.put_spec(spec("a", "other")).await.expect("put_spec");
    store.put_spec(spec("b", "second")).await.expect("put_spec");
    assert_eq!(
        store.get_spec("b").await.expect("get_spec"),
        Some(spec("b", "second")),
        "put replaces"
    );
    let names: Vec<String> = store
        .list_specs()
        .await
        .expect("list_specs")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b"], "specs list by name");
}

/// File records keep the last one written per path, list in path order,
/// filter by state and page by path; they belong to one job.
pub async fn file_records_replace_and_page(h: &dyn Harness) {
    let (_, store) = setup(h).await;
    let (job, _) = store
        .create_job(new_job("q", true, policy(3, 0)))
        .await
        .expect("create_job");
    let (other, _) = store
        .create_job(new_job("q", true, policy(3, 0)))
        .await
        .expect("create_job");
    let file = |relative: &str, state: FileState, rows: u64| FileReport {
        relative: relative.into(),
        location: format!("s3://b/{relative}"),
        size: Some(rows * 10),
        etag: Some(format!("e-{relative}")),
        format: "csv".into(),
        state,
        bytes: rows * 10,
        rows,
        tasks: rows.div_ceil(2),
        skipped: 0,
        error: (state == FileState::Failed).then(|| format!("{relative}: line 3: bad")),
        node: None,
    };
    assert!(
        store
            .list_files(job.id, FileFilter::default())
            .await
            .expect("list_files")
            .is_empty(),
        "a new job has no file records"
    );
    store
        .put_files(
            job.id,
            vec![
                file("c.csv", FileState::Done, 5),
                file("a.csv", FileState::Failed, 1),
                file("b/ü.csv", FileState::Done, 2),
            ],
        )
        .await
        .expect("put_files");
    store
        .put_files(other.id, vec![file("a.csv", FileState::Done, 9)])
        .await
        .expect("put_files");
    // Written again (a resumed ingest): the new record replaces the old.
    store
        .put_files(job.id, vec![file("a.csv", FileState::Done, 4)])
        .await
        .expect("put_files");
    let all = store
        .list_files(job.id, FileFilter::default())
        .await
        .expect("list_files");
    assert_eq!(
        all,
        vec![
            file("a.csv", FileState::Done, 4),
            file("b/ü.csv", FileState::Done, 2),
            file("c.csv", FileState::Done, 5),
        ],
        "one record per path, the last written, in path order"
    );
    store
        .put_files(job.id, vec![file("b/ü.csv", FileState::Failed, 1)])
        .await
        .expect("put_files");
    let failed = store
        .list_files(
            job.id,
            FileFilter {
                state: Some(FileState::Failed),
                ..FileFilter::default()
            },
        )
        .await
        .expect("list_files");
    assert_eq!(failed, vec![file("b/ü.csv", FileState::Failed, 1)]);
    let page = store
        .list_files(
            job.id,
            FileFilter {
                after: Some("a.csv".into()),
                limit: 1,
                ..FileFilter::default()
            },
        )
        .await
        .expect("list_files");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].relative, "b/ü.csv", "pages by path");
    let missing = JobId::new();
    assert!(
        matches!(
            store.list_files(missing, FileFilter::default()).await,
            Err(StoreError::NotFound { .. })
        ),
        "listing the files of a missing job is not found"
    );
    assert!(
        matches!(
            store
                .put_files(missing, vec![file("x", FileState::Done, 1)])
                .await,
            Err(StoreError::NotFound { .. })
        ),
        "recording files of a missing job is not found"
    );
}

// ---- model-based ---------------------------------------------------------

/// A task as the model sees it.
#[derive(Clone, Debug)]
struct ModelTask {
    seq: usize,
    state: TaskState,
    attempt: u32,
    available_at: i64,
    lease: Option<(LeaseToken, i64)>,
}

/// A job with no backoff, so that every time is known to the model.
struct Model {
    now: i64,
    job: JobState,
    tasks: std::collections::BTreeMap<String, ModelTask>,
    max_attempts: u32,
}

impl Model {
    fn unfinished(&self) -> bool {
        self.tasks.values().any(|t| !t.state.is_terminal())
    }

    fn derive(&mut self) {
        if !self.job.is_terminal() && !self.tasks.is_empty() && !self.unfinished() {
            let dead = self.tasks.values().any(|t| t.state == TaskState::Dead);
            self.job = if dead {
                JobState::Failed
            } else {
                JobState::Succeeded
            };
        }
    }

    fn after_failure(&self, attempt: u32, retryable: bool) -> TaskState {
        if !retryable || attempt >= self.max_attempts {
            TaskState::Dead
        } else if self.job.is_terminal() {
            TaskState::Cancelled
        } else {
            TaskState::Retrying
        }
    }

    /// The current, unexpired lease of `key`, if `lease` is it.
    fn holds(&self, key: &str, lease: LeaseRef) -> bool {
        self.tasks.get(key).is_some_and(|t| {
            t.state == TaskState::Running
                && t.attempt == lease.attempt
                && t.lease
                    .is_some_and(|(token, exp)| token == lease.token && exp > self.now)
        })
    }

    fn counts(&self) -> rota_core::TaskCounts {
        let mut c = rota_core::TaskCounts::default();
        for t in self.tasks.values() {
            c.add(t.state, 1);
        }
        c
    }
}

/// Random sequences of adds, claims, reports, heartbeats, clock moves and a
/// cancel, checked step by step against a simple in-memory model.
pub async fn model_based_random_ops(h: &dyn Harness) {
    use rand::{Rng, SeedableRng};
    const LEASE_MS: i64 = 1_000;
    for seed in 0..4u64 {
        let (clock, store) = setup(h).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let job = create(&*store, new_job("q", false, policy(3, 0))).await;
        let mut m = Model {
            now: 0,
            job: JobState::Pending,
            tasks: std::collections::BTreeMap::new(),
            max_attempts: 3,
        };
        // Every lease ever granted, with its task key; most go stale.
        let mut leases: Vec<(String, LeaseRef)> = Vec::new();
        let mut seq = 0;
        for step in 0..250 {
            let ctx = format!("seed {seed} step {step}");
            let op = rng.random_range(0..100);
            match op {
                0..=14 => {
                    let n = rng.random_range(1..=4);
                    let keys: Vec<String> = (0..n)
                        .map(|_| format!("k{:02}", rng.random_range(0..24)))
                        .collect();
                    let new: Vec<NewTask> = keys
                        .iter()
                        .map(|k| NewTask {
                            key: k.clone(),
                            payload: k.as_bytes().to_vec(),
                            encoding: PayloadEncoding::Json,
                            rows: 1,
                        })
                        .collect();
                    let got = store.add_tasks(job.id, new).await;
                    if matches!(m.job, JobState::Failed | JobState::Cancelled) {
                        assert!(
                            matches!(got, Err(StoreError::Conflict { .. })),
                            "{ctx}: add to an ended job must conflict, got {got:?}"
                        );
                        continue;
                    }
                    let mut added = 0;
                    for k in keys {
                        if !m.tasks.contains_key(&k) {
                            m.tasks.insert(
                                k,
                                ModelTask {
                                    seq,
                                    state: TaskState::Queued,
                                    attempt: 0,
                                    available_at: m.now,
                                    lease: None,
                                },
                            );
                            seq += 1;
                            added += 1;
                        }
                    }
                    assert_eq!(got.expect("add_tasks"), added, "{ctx}: tasks added");
                    if added > 0 && m.job == JobState::Succeeded {
                        m.job = JobState::Running;
                    }
                }
                15..=44 => {
                    let limit = rng.random_range(1..=4u32);
                    // Rescue, as the claim does.
                    let mut rescued = false;
                    let (now, job_state) = (m.now, m.job);
                    let expired: Vec<String> = m
                        .tasks
                        .iter()
                        .filter(|(_, t)| {
                            t.state == TaskState::Running && t.lease.is_some_and(|(_, e)| e <= now)
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in expired {
                        let attempt = m.tasks[&k].attempt;
                        let state = m.after_failure(attempt, true);
                        let t = m.tasks.get_mut(&k).expect("model task");
                        t.state = state;
                        t.lease = None;
                        t.available_at = now;
                        rescued = true;
                    }
                    if rescued {
                        m.derive();
                    }
                    let mut claimable: Vec<(i64, usize, String)> =
                        if matches!(job_state, JobState::Cancelled | JobState::Failed) {
                            Vec::new()
                        } else {
                            m.tasks
                                .iter()
                                .filter(|(_, t)| {
                                    matches!(t.state, TaskState::Queued | TaskState::Retrying)
                                        && t.available_at <= now
                                })
                                .map(|(k, t)| (t.available_at, t.seq, k.clone()))
                                .collect()
                        };
                    claimable.sort();
                    claimable.truncate(limit as usize);
                    let got =
                        claim_on(&*store, &["q"], "w", limit, Duration::from_millis(1_000)).await;
                    let got_keys: BTreeSet<&str> = got.iter().map(|l| l.key.as_str()).collect();
                    let want_keys: BTreeSet<&str> =
                        claimable.iter().map(|(_, _, k)| k.as_str()).collect();
                    assert_eq!(
                        got_keys, want_keys,
                        "{ctx}: claimed tasks (oldest available first)"
                    );
                    for l in got {
                        let t = m.tasks.get_mut(&l.key).expect("model task");
                        t.attempt += 1;
                        assert_eq!(l.lease.attempt, t.attempt, "{ctx}: attempt of {}", l.key);
                        assert_eq!(l.payload, l.key.as_bytes(), "{ctx}: payload of {}", l.key);
                        t.state = TaskState::Running;
                        t.lease = Some((l.lease.token, now + LEASE_MS));
                        leases.push((l.key.clone(), l.lease));
                        if m.job == JobState::Pending {
                            m.job = JobState::Running;
                        }
                    }
                }
                45..=79 if !leases.is_empty() => {
                    // Prefer recent leases, which are more often still held.
                    let back = rng.random_range(0..leases.len().min(6));
                    let (key, lease) = leases[leases.len() - 1 - back].clone();
                    let outcome = match rng.random_range(0..4) {
                        0 | 1 => Outcome::Success(Vec::new()),
                        2 => Outcome::Failure {
                            error: "e".into(),
                            retryable: true,
                        },
                        _ => Outcome::Failure {
                            error: "e".into(),
                            retryable: false,
                        },
                    };
                    let held = m.holds(&key, lease);
                    let got = report1(&*store, lease, outcome.clone()).await;
                    if !held {
                        assert_lost(got, lease, &format!("{ctx}: stale report of {key}"));
                        continue;
                    }
                    let state = match outcome {
                        Outcome::Success(_) => TaskState::Succeeded,
                        Outcome::Failure { retryable, .. } => {
                            m.after_failure(lease.attempt, retryable)
                        }
                    };
                    let now = m.now;
                    let t = m.tasks.get_mut(&key).expect("model task");
                    t.state = state;
                    t.lease = None;
                    t.available_at = now;
                    assert_eq!(
                        got.expect("held report"),
                        state,
                        "{ctx}: new state of {key}"
                    );
                    m.derive();
                }
                80..=89 if !leases.is_empty() => {
                    let back = rng.random_range(0..leases.len().min(6));
                    let (key, lease) = leases[leases.len() - 1 - back].clone();
                    let held = m.holds(&key, lease);
                    let got = beat(&*store, lease, Duration::from_millis(1_000)).await;
                    if held {
                        let ack = got.unwrap_or_else(|e| panic!("{ctx}: heartbeat of {key}: {e}"));
                        assert_eq!(
                            ack.cancel_requested,
                            m.job == JobState::Cancelled,
                            "{ctx}: cancel flag"
                        );
                        let now = m.now;
                        if let Some(t) = m.tasks.get_mut(&key) {
                            t.lease = t.lease.map(|(tok, _)| (tok, now + LEASE_MS));
                        }
                    } else {
                        assert_lost(got, lease, &format!("{ctx}: stale heartbeat of {key}"));
                    }
                }
                98 | 99 if step > 150 => {
                    let got = store.cancel_job(job.id).await.expect("cancel_job");
                    if !m.job.is_terminal() {
                        m.job = JobState::Cancelled;
                        for t in m.tasks.values_mut() {
                            if matches!(
                                t.state,
                                TaskState::Queued | TaskState::Retrying | TaskState::Scheduled
                            ) {
                                t.state = TaskState::Cancelled;
                            }
                        }
                    }
                    assert_eq!(got.state, m.job, "{ctx}: state after cancel");
                }
                _ => {
                    let ms = rng.random_range(0..700u64);
                    clock.advance(Duration::from_millis(ms));
                    m.now += i64::try_from(ms).unwrap_or(0);
                }
            }
            let got = get(&*store, job.id).await;
            assert_eq!(got.state, m.job, "{ctx}: job state");
            assert_eq!(got.counts, m.counts(), "{ctx}: task counts");
            if step % 25 == 0 {
                let tasks = store
                    .list_tasks(job.id, TaskFilter::default())
                    .await
                    .expect("list_tasks");
                assert_eq!(tasks.len(), m.tasks.len(), "{ctx}: task list");
                for (t, (key, mt)) in tasks.iter().zip(&m.tasks) {
                    assert_eq!(&t.key, key, "{ctx}: task order");
                    assert_eq!(
                        (t.state, t.attempt),
                        (mt.state, mt.attempt),
                        "{ctx}: task {key}"
                    );
                }
            }
        }
    }
}
