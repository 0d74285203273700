//! Many files in one ingest: several at once, a record of each on the job,
//! failed files under `--on-error skip`, and resumption that skips the
//! files an interrupted run finished.

use std::path::Path;

use rota_core::{FileFilter, FileReport, FileState, JobId, NewJob, RetryPolicy};

use crate::support::{Scratch, job, job_id, payload, runtime, tasks};

/// `count` CSV files under `root` (some in subdirectories), file `i` with
/// `i % 7 + 1` rows; returns the total of rows.
fn csv_tree(root: &Path, count: u64) -> u64 {
    let mut total = 0;
    for i in 0..count {
        let dir = root.join(format!("part-{}", i % 3));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let rows = i % 7 + 1;
        let mut text = String::from("id,file\n");
        for r in 0..rows {
            text.push_str(&format!("{},{i}\n", i * 100 + r));
        }
        std::fs::write(dir.join(format!("f{i:03}.csv")), text).expect("write");
        total += rows;
    }
    total
}

fn files(s: &Scratch, id: JobId) -> Vec<FileReport> {
    runtime()
        .block_on(s.store().list_files(id, FileFilter::default()))
        .expect("list files")
}

fn keys_and_payloads(s: &Scratch, id: JobId) -> Vec<(String, Vec<u8>)> {
    tasks(s, id)
        .iter()
        .map(|t| (t.key.clone(), payload(s, t)))
        .collect()
}

#[test]
fn files_ingested_in_parallel_give_the_tasks_of_one_at_a_time_and_a_record_each() {
    let s = Scratch::new();
    let root = s.path("tree");
    let total = csv_tree(&root, 40);
    let one = s.ingest(&root, &["-r", "--batch-rows", "3", "--parallel", "1"]);
    let many = s.ingest(&root, &["-r", "--batch-rows", "3", "--parallel", "8"]);
    for summary in [&one, &many] {
        assert_eq!(summary["files"], 40);
        assert_eq!(summary["rows"], total);
        assert_eq!(summary["files_failed"], 0);
    }
    assert_eq!(
        keys_and_payloads(&s, job_id(&one)),
        keys_and_payloads(&s, job_id(&many)),
        "the same tasks whatever the parallelism"
    );

    let records = files(&s, job_id(&many));
    assert_eq!(records.len(), 40, "a record per file");
    for f in &records {
        let local = root.join(&f.relative);
        let text = std::fs::read_to_string(&local).expect("read");
        assert_eq!(f.state, FileState::Done, "{}", f.relative);
        assert_eq!(f.rows, text.lines().count() as u64 - 1, "{}", f.relative);
        assert_eq!(f.tasks, f.rows.div_ceil(3), "{}", f.relative);
        assert_eq!(f.bytes, text.len() as u64, "{}", f.relative);
        assert_eq!(f.size, Some(text.len() as u64));
        assert_eq!(f.format, "csv");
        assert!(f.error.is_none());
    }
    assert_eq!(records.iter().map(|f| f.rows).sum::<u64>(), total);

    // The CLI lists them too, paged by path.
    let id = job_id(&many).to_string();
    let listed = s.ok(&["jobs", "files", &id, "--json", "--limit", "5"]);
    let first: Vec<FileReport> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("file json"))
        .collect();
    assert_eq!(first, records[..5]);
    let next = s.ok(&[
        "jobs",
        "files",
        &id,
        "--after",
        &records[4].relative,
        "--limit",
        "1",
    ]);
    assert!(next.starts_with(&records[5].relative), "{next}");
}

#[test]
fn under_skip_a_broken_file_is_recorded_failed_and_the_others_go_on() {
    let s = Scratch::new();
    let root = s.path("tree");
    let total = csv_tree(&root, 6);
    // A gzip file cut short, and one whose format nothing tells.
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut w = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        writeln!(w, "id,file").expect("write");
        for i in 0..20_000 {
            writeln!(w, "{i},x").expect("write");
        }
        w.finish().expect("gzip");
    }
    std::fs::write(root.join("cut.csv.gz"), &gz[..gz.len() / 2]).expect("write");
    std::fs::write(root.join("notes.unknown"), [0u8, 159, 146, 150]).expect("write");

    let summary = s.ingest(&root, &["-r", "--on-error", "skip", "--batch-rows", "1000"]);
    assert_eq!(summary["files"], 8);
    assert_eq!(summary["files_failed"], 2);
    let failed = summary["failed_files"].as_array().expect("failed files");
    let names: Vec<&str> = failed
        .iter()
        .map(|f| f["relative"].as_str().expect("relative"))
        .collect();
    assert_eq!(names, ["cut.csv.gz", "notes.unknown"]);
    let cut_error = failed[0]["error"].as_str().expect("error");
    assert!(
        cut_error.contains("cut.csv.gz") && cut_error.contains("byte"),
        "the error says where: {cut_error}"
    );
    // What the cut file gave before it broke is kept and counted.
    let cut_rows = failed[0]["rows"].as_u64().expect("rows");
    assert!(cut_rows > 0, "rows before the cut are kept");
    assert_eq!(summary["rows"], total + cut_rows);
    let id = job_id(&summary);
    assert_eq!(job(&s, id).state.as_str(), "pending", "the job is released");
    assert_eq!(
        tasks(&s, id).iter().map(|t| t.rows).sum::<u64>(),
        total + cut_rows
    );
    let shown = s.ok(&["jobs", "show", &id.to_string()]);
    assert!(shown.contains("2 failed part way"), "{shown}");
    let failed_listed = s.ok(&["jobs", "files", &id.to_string(), "--state", "failed"]);
    assert_eq!(failed_listed.lines().count(), 2, "{failed_listed}");
    assert!(
        failed_listed.contains("cannot tell the format"),
        "{failed_listed}"
    );

    // Under fail the first broken file fails the job, and says which it was.
    let out = s.run(&[
        "ingest",
        root.to_str().expect("path"),
        "--spec",
        "t",
        "-r",
        "--parallel",
        "1",
        "--json",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut.csv.gz"), "{err}");
}

#[test]
fn a_resumed_ingest_skips_the_files_its_interrupted_run_finished() {
    let s = Scratch::new();
    let root = s.path("tree");
    csv_tree(&root, 4);
    // What a run killed after its first file was recorded leaves behind: a
    // held job with that key, and a record of the file it finished (its
    // tasks are left out here, so that a re-read would show).
    let listed = s.ok(&["ls", root.to_str().expect("path"), "-r", "--json"]);
    let entries: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("entry json"))
        .collect();
    let first = &entries[0];
    let relative = first["relative"].as_str().expect("relative").to_owned();
    let rt = runtime();
    let store = s.store();
    let (interrupted, _) = rt
        .block_on(store.create_job(NewJob {
            key: Some("nightly".into()),
            spec: "test".into(),
            queue: "default".into(),
            params: serde_json::json!({}),
            retry: RetryPolicy::default(),
            hold: true,
            ingest: None,
            timing: rota_core::Timing::default(),
        }))
        .expect("create job");
    let record = |etag: &str| FileReport {
        relative: relative.clone(),
        location: first["location"].as_str().expect("location").to_owned(),
        size: first["size"].as_u64(),
        etag: Some(etag.to_owned()),
        format: "csv".into(),
        state: FileState::Done,
        bytes: 0,
        rows: 0,
        tasks: 0,
        skipped: 0,
        error: None,
        node: None,
    };
    rt.block_on(store.put_files(
        interrupted.id,
        vec![record(first["etag"].as_str().expect("etag"))],
    ))
    .expect("put files");

    let summary = s.ingest(&root, &["-r", "--job-key", "nightly"]);
    assert_eq!(summary["created"], false);
    assert_eq!(job_id(&summary), interrupted.id);
    assert_eq!(summary["files"], 4);
    let made: Vec<String> = tasks(&s, interrupted.id)
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(made.len(), 3, "{made:?}");
    assert!(
        made.iter().all(|k| !k.starts_with(&relative)),
        "the finished file was not read again: {made:?}"
    );

    // A file that changed since (another version tag) is read again.
    let s2 = Scratch::new();
    let store = s2.store();
    let (again, _) = rt
        .block_on(store.create_job(NewJob {
            key: Some("nightly".into()),
            spec: "test".into(),
            queue: "default".into(),
            params: serde_json::json!({}),
            retry: RetryPolicy::default(),
            hold: true,
            ingest: None,
            timing: rota_core::Timing::default(),
        }))
        .expect("create job");
    rt.block_on(store.put_files(again.id, vec![record("1-1")]))
        .expect("put files");
    let summary = s2.ingest(&root, &["-r", "--job-key", "nightly"]);
    assert_eq!(tasks(&s2, job_id(&summary)).len(), 4, "every file read");
}

#[test]
fn a_glob_ending_the_location_lists_the_directory_before_it_and_excludes_leave_files_out() {
    let s = Scratch::new();
    let root = s.path("tree");
    csv_tree(&root, 12);
    let base = root.to_str().expect("path");
    // Spanning directories, so listed recursively without -r.
    let globbed = s.ingest(Path::new(&format!("{base}/part-*/f00[0-5].csv")), &[]);
    let flagged = s.ingest(&root, &["-r", "--glob", "part-*/f00[0-5].csv"]);
    assert_eq!(globbed["files"], 6);
    assert_eq!(
        keys_and_payloads(&s, job_id(&globbed)),
        keys_and_payloads(&s, job_id(&flagged)),
        "a glob in the location is --glob on the directory before it"
    );
    let keys: Vec<String> = tasks(&s, job_id(&globbed))
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert!(keys[0].starts_with("part-0/f000.csv#"), "{keys:?}");

    // Excluded paths are left out, by glob.
    let some = s.ingest(
        &root,
        &[
            "-r",
            "--exclude",
            "part-1/**",
            "--exclude",
            "**/f00[0-2].csv",
        ],
    );
    let kept: Vec<String> = files(&s, job_id(&some))
        .into_iter()
        .map(|f| f.relative)
        .collect();
    assert_eq!(
        kept,
        [
            "part-0/f003.csv",
            "part-0/f006.csv",
            "part-0/f009.csv",
            "part-2/f005.csv",
            "part-2/f008.csv",
            "part-2/f011.csv"
        ]
    );

    // `*` stays within a segment: the files are one level down.
    let err = s.fails(&["ingest", &format!("{base}/*.csv"), "--spec", "t"]);
    assert!(err.contains("no files to ingest match '*.csv'"), "{err}");
    let err = s.fails(&[
        "ingest",
        &format!("{base}/*/*.csv"),
        "--spec",
        "t",
        "--glob",
        "x",
    ]);
    assert!(err.contains("not both"), "{err}");
}
