//! `rota worker` end to end: real processes, real signals.

use std::time::Duration;

use rota_core::{JobState, TaskState};

use crate::support::{
    Scratch, finish, job, job_id, signal, signal_group, tasks, wait_until, write_csv,
};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn wc_processes_every_task_and_the_job_succeeds() {
    let s = Scratch::new();
    let file = s.path("rows.csv");
    write_csv(&file, 5_000);
    let summary = s.ingest(&file, &["--batch-rows", "500", "--payload", "ndjson"]);
    let id = job_id(&summary);
    let w = s.run(&[
        "worker",
        "--exec",
        "wc -l",
        "--concurrency",
        "3",
        "--idle-exit",
        "500ms",
        "--poll",
        "50ms",
    ]);
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let j = job(&s, id);
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.counts.succeeded, 10);
    for t in tasks(&s, id) {
        assert_eq!(t.state, TaskState::Succeeded);
        // wc -l counts the payload's lines: one per row.
        let result = String::from_utf8(t.result.expect("a result")).expect("utf-8");
        assert_eq!(result.trim(), t.rows.to_string());
    }
}

#[test]
fn the_command_sees_task_metadata_in_its_environment() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    let summary = s.ingest(
        &file,
        &[
            "--param",
            "region=eu",
            "--param",
            "limit=5",
            "--queue",
            "imports",
        ],
    );
    let w = s.run(&[
        "worker", "--queue", "imports", "--idle-exit", "300ms", "--poll", "50ms", "--exec",
        "echo \"$ROTA_JOB_ID|$ROTA_TASK_KEY|$ROTA_ATTEMPT|$ROTA_SPEC|$ROTA_QUEUE|$ROTA_PARAMS|$ROTA_ROWS|$ROTA_PAYLOAD_ENCODING\"",
    ]);
    assert!(w.status.success());
    let t = &tasks(&s, job_id(&summary))[0];
    let result = String::from_utf8(t.result.clone().expect("result")).expect("utf-8");
    assert_eq!(
        result.trim(),
        format!(
            "{}|one.csv#00000000|1|test|imports|{{\"region\":\"eu\",\"limit\":5}}|1|json",
            summary["job_id"].as_str().expect("id")
        )
    );
}

#[test]
fn a_command_that_fails_twice_is_retried_with_backoff_and_succeeds() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    let summary = s.ingest(&file, &["--max-attempts", "5", "--retry-backoff", "300ms"]);
    let log = s.path("attempts.log");
    let cmd = format!(
        "date +%s%N >> {}; if [ \"$ROTA_ATTEMPT\" -lt 3 ]; then echo boom >&2; exit 7; fi; echo ok",
        log.display()
    );
    let w = s.run(&[
        "worker",
        "--exec",
        &cmd,
        "--idle-exit",
        "2s",
        "--poll",
        "20ms",
    ]);
    assert!(w.status.success());
    let t = &tasks(&s, job_id(&summary))[0];
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.attempt, 3);
    assert_eq!(job(&s, job_id(&summary)).state, JobState::Succeeded);
    // Backoff: at least half the base before the first retry, half of twice
    // the base before the second (jitter stays in the upper half).
    let stamps: Vec<u128> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| l.trim().parse().expect("nanoseconds"))
        .collect();
    assert_eq!(stamps.len(), 3);
    let gap = |i: usize| (stamps[i + 1] - stamps[i]) / 1_000_000;
    assert!(gap(0) >= 150, "first retry after {} ms", gap(0));
    assert!(gap(1) >= 300, "second retry after {} ms", gap(1));
}

#[test]
fn a_command_that_always_fails_ends_dead_and_the_job_failed() {
    let s = Scratch::new();
    let file = s.path("two.csv");
    std::fs::write(&file, "a\n1\n2\n").expect("write");
    let summary = s.ingest(
        &file,
        &[
            "--batch-rows",
            "1",
            "--max-attempts",
            "3",
            "--retry-backoff",
            "10ms",
        ],
    );
    let w = s.run(&[
        "worker",
        "--exec",
        "echo 'cannot parse row' >&2; exit 1",
        "--idle-exit",
        "1s",
        "--poll",
        "20ms",
    ]);
    assert!(w.status.success());
    let id = job_id(&summary);
    for t in tasks(&s, id) {
        assert_eq!(t.state, TaskState::Dead);
        assert_eq!(t.attempt, 3);
        assert!(
            t.error
                .as_deref()
                .unwrap_or_default()
                .contains("exit status 1: cannot parse row"),
            "{:?}",
            t.error
        );
    }
    let j = job(&s, id);
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.counts.dead, 2);
}

#[test]
fn a_worker_killed_mid_task_loses_its_lease_and_the_task_completes_elsewhere() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    let summary = s.ingest(&file, &["--retry-backoff", "100ms"]);
    let id = job_id(&summary);
    let cmd = "if [ \"$ROTA_ATTEMPT\" = 1 ]; then sleep 60; fi; echo done-$ROTA_ATTEMPT";
    let first = s.worker(cmd, "first", None);
    wait_until(LIMIT, "the first worker runs the task", || {
        tasks(&s, id)[0].state == TaskState::Running
    });
    signal_group(&first, "KILL"); // the worker and its command, as a crashed host would
    let (status, _) = finish(first, LIMIT);
    assert!(!status.success());

    let second = s.worker(cmd, "second", Some("5s"));
    wait_until(LIMIT, "the task is reclaimed and completes", || {
        tasks(&s, id)[0].state == TaskState::Succeeded
    });
    let (status, _) = finish(second, LIMIT);
    assert!(status.success());
    let t = &tasks(&s, id)[0];
    assert_eq!(t.attempt, 2);
    assert_eq!(t.worker.as_deref(), Some("second"));
    assert_eq!(
        String::from_utf8_lossy(t.result.as_deref().unwrap_or_default()).trim(),
        "done-2"
    );
    assert_eq!(job(&s, id).state, JobState::Succeeded);
}

#[test]
fn a_stale_attempt_cannot_complete_after_its_task_was_reclaimed() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    let summary = s.ingest(&file, &["--retry-backoff", "100ms"]);
    let id = job_id(&summary);
    let cmd = "if [ \"$ROTA_ATTEMPT\" = 1 ]; then sleep 2; fi; echo from-attempt-$ROTA_ATTEMPT";
    let first = s.worker(cmd, "first", Some("1s"));
    wait_until(LIMIT, "the first worker runs the task", || {
        tasks(&s, id)[0].state == TaskState::Running
    });
    // Freeze the worker (not its command): no heartbeats, the lease expires.
    signal(&first, "STOP");
    let second = s.worker(cmd, "second", Some("5s"));
    wait_until(LIMIT, "the second worker completes the task", || {
        tasks(&s, id)[0].state == TaskState::Succeeded
    });
    let (status, _) = finish(second, LIMIT);
    assert!(status.success());
    // Thaw the first worker: its command has finished; its report must be refused.
    signal(&first, "CONT");
    let (status, stderr) = finish(first, LIMIT);
    assert!(status.success());
    assert!(
        stderr.contains("completion rejected") || stderr.contains("lease lost"),
        "the stale worker was not told: {stderr}"
    );
    let t = &tasks(&s, id)[0];
    assert_eq!(t.attempt, 2);
    assert_eq!(
        String::from_utf8_lossy(t.result.as_deref().unwrap_or_default()).trim(),
        "from-attempt-2"
    );
}

#[test]
fn cancelling_a_job_stops_its_work() {
    let s = Scratch::new();
    let file = s.path("rows.csv");
    write_csv(&file, 100);
    let summary = s.ingest(&file, &["--batch-rows", "10"]);
    let id = summary["job_id"].as_str().expect("id");
    let out = s.ok(&["jobs", "cancel", id]);
    assert!(out.contains("cancelled"), "{out}");
    let w = s.run(&[
        "worker",
        "--exec",
        "true",
        "--idle-exit",
        "300ms",
        "--poll",
        "50ms",
    ]);
    assert!(!String::from_utf8_lossy(&w.stderr).contains("claimed"));
    let j = job(&s, job_id(&summary));
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.counts.cancelled, 10);
}

/// Whether process `pid` is running (a zombie is not).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": the name may hold anything, the state follows
    // its last parenthesis.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// The pid a command wrote to `file`, once it has.
fn pid_in(file: &std::path::Path) -> u32 {
    let mut pid = None;
    wait_until(LIMIT, "the command started its background process", || {
        pid = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.expect("pid")
}

/// A command that starts a background process which, left alone, writes
/// `marker-ATTEMPT` after 30 s, and waits for it; it writes that process's
/// pid to `child-ATTEMPT`. Attempts after the first just succeed.
const BACKGROUND: &str = "if [ \"$ROTA_ATTEMPT\" = 1 ]; then \
     (sleep 30; touch marker-$ROTA_ATTEMPT) & echo $! > child-$ROTA_ATTEMPT; wait; fi; echo done";

/// Asserts the background process of attempt 1 is gone, for good.
fn assert_background_gone(s: &Scratch, pid: u32) {
    wait_until(LIMIT, "the command's background process is gone", || {
        !alive(pid)
    });
    assert!(!s.path("marker-1").exists());
}

#[test]
fn cancelling_a_job_kills_all_its_command_started() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    let summary = s.ingest(&file, &[]);
    let id = summary["job_id"].as_str().expect("id").to_owned();
    let worker = s.worker(BACKGROUND, "w", None);
    let pid = pid_in(&s.path("child-1"));
    assert!(alive(pid));
    s.ok(&["jobs", "cancel", &id]);
    assert_background_gone(&s, pid);
    signal(&worker, "TERM");
    let (status, stderr) = finish(worker, LIMIT);
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_lost_lease_kills_all_its_command_started() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    let summary = s.ingest(&file, &["--retry-backoff", "100ms"]);
    let id = job_id(&summary);
    let first = s.worker(BACKGROUND, "first", None);
    let pid = pid_in(&s.path("child-1"));
    // Freeze the worker (not its command) past its lease; another worker
    // takes the task over and completes it.
    signal(&first, "STOP");
    let second = s.worker(BACKGROUND, "second", Some("2s"));
    wait_until(LIMIT, "the second worker completes the task", || {
        tasks(&s, id)[0].state == TaskState::Succeeded
    });
    let (status, _) = finish(second, LIMIT);
    assert!(status.success());
    assert!(alive(pid), "the first attempt's command still runs");
    // Thawed, the first worker hears its lease is lost and kills the group.
    signal(&first, "CONT");
    assert_background_gone(&s, pid);
    signal(&first, "TERM");
    let (_, stderr) = finish(first, LIMIT);
    assert!(stderr.contains("lease lost"), "{stderr}");
    assert_eq!(tasks(&s, id)[0].attempt, 2);
}

#[test]
fn a_worker_killed_takes_all_its_commands_started_with_it() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    s.ingest(&file, &[]);
    let worker = s.worker(BACKGROUND, "w", None);
    let pid = pid_in(&s.path("child-1"));
    // The worker alone, as the OOM killer would: its commands run in their
    // own process groups.
    signal(&worker, "KILL");
    let (status, _) = finish(worker, LIMIT);
    assert!(!status.success());
    assert_background_gone(&s, pid);
}

#[test]
fn a_second_stop_signal_kills_the_running_commands() {
    let s = Scratch::new();
    let file = s.path("one.csv");
    std::fs::write(&file, "a\n1\n").expect("write");
    s.ingest(&file, &[]);
    let worker = s.worker(BACKGROUND, "w", None);
    let pid = pid_in(&s.path("child-1"));
    signal(&worker, "TERM");
    // Time for the worker to take the first signal in (it cannot be seen
    // from here); the command runs on meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "one signal waits for running commands");
    signal(&worker, "TERM");
    let (status, stderr) = finish(worker, LIMIT);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("killing the running commands"), "{stderr}");
    assert_background_gone(&s, pid);
}
