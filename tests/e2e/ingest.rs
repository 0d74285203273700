//! `rota ingest` end to end.

use std::io::Write;
use std::sync::Arc;

use arrow_array::{Array, Int64Array};
use rota_core::{JobState, PayloadEncoding, TaskState};

use crate::support::{self, Scratch, job, job_id, payload, tasks, write_csv};

/// The `id` column of a payload, decoded with a reader of its encoding.
fn ids(encoding: PayloadEncoding, bytes: &[u8]) -> Vec<i64> {
    match encoding {
        PayloadEncoding::Json => serde_json::from_slice::<Vec<serde_json::Value>>(bytes)
            .expect("a JSON array")
            .iter()
            .map(|r| r["id"].as_i64().expect("id"))
            .collect(),
        PayloadEncoding::Ndjson => bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).expect("a JSON line")["id"]
                    .as_i64()
                    .expect("id")
            })
            .collect(),
        PayloadEncoding::Csv => {
            let (schema, _) = arrow_csv::reader::Format::default()
                .with_header(true)
                .infer_schema(std::io::Cursor::new(bytes), None)
                .expect("csv header");
            let reader = arrow_csv::ReaderBuilder::new(Arc::new(schema))
                .with_header(true)
                .build(std::io::Cursor::new(bytes))
                .expect("csv reader");
            reader
                .flat_map(|b| {
                    let b = b.expect("csv batch");
                    let a = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("int ids")
                        .clone();
                    a.values().to_vec()
                })
                .collect()
        }
        PayloadEncoding::Arrow => {
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
                .expect("arrow stream")
                .flat_map(|b| {
                    let b = b.expect("arrow batch");
                    let a = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("int ids")
                        .clone();
                    assert_eq!(a.null_count(), 0);
                    a.values().to_vec()
                })
                .collect()
        }
    }
}

#[test]
fn a_million_rows_make_exactly_1000_tasks_in_order_and_a_replay_adds_nothing() {
    let s = Scratch::new();
    let file = s.path("orders.csv");
    write_csv(&file, 1_000_000);
    let summary = s.ingest(
        &file,
        &["--batch-rows", "1000", "--job-key", "orders-2026-11"],
    );
    assert_eq!(summary["rows"], 1_000_000);
    assert_eq!(summary["tasks"], 1000);
    assert_eq!(summary["tasks_added"], 1000);
    assert_eq!(summary["skipped"], 0);
    let id = job_id(&summary);

    let all = tasks(&s, id);
    assert_eq!(all.len(), 1000);
    let mut next = 1;
    for t in &all {
        assert_eq!(t.state, TaskState::Queued);
        assert_eq!(t.rows, 1000);
        for got in ids(t.encoding, &payload(&s, t)) {
            assert_eq!(got, next, "rows out of order in {}", t.key);
            next += 1;
        }
    }
    assert_eq!(next, 1_000_001, "payload rows do not add up to the file");

    let again = s.ingest(
        &file,
        &["--batch-rows", "1000", "--job-key", "orders-2026-11"],
    );
    assert_eq!(again["job_id"], summary["job_id"]);
    assert_eq!(again["tasks_added"], 0);
    assert_eq!(again["already_ingested"], true);
    assert_eq!(job(&s, id).counts.total, 1000);
}

#[test]
fn every_payload_encoding_decodes_to_the_same_rows() {
    let s = Scratch::new();
    let file = s.path("rows.csv");
    write_csv(&file, 10_000);
    for (encoding, extra) in [
        (PayloadEncoding::Json, vec!["--batch-rows", "999"]),
        (
            PayloadEncoding::Ndjson,
            vec!["--batch-bytes", "64KiB", "--batch-rows", "100000"],
        ),
        (
            PayloadEncoding::Csv,
            vec!["--batch-rows", "1000", "--batch-bytes", "20KB"],
        ),
        (PayloadEncoding::Arrow, vec!["--batch-rows", "1500"]),
    ] {
        let mut args = vec!["--payload", encoding.as_str()];
        args.extend(extra);
        let summary = s.ingest(&file, &args);
        let all = tasks(&s, job_id(&summary));
        let mut next = 1;
        for t in &all {
            assert_eq!(t.encoding, encoding);
            let bytes = payload(&s, t);
            if encoding == PayloadEncoding::Csv || encoding == PayloadEncoding::Ndjson {
                let limit = if encoding == PayloadEncoding::Csv {
                    20_000
                } else {
                    65_536
                };
                assert!(
                    bytes.len() <= limit,
                    "{encoding}: payload of {} bytes over the limit",
                    bytes.len()
                );
            }
            let got = ids(encoding, &bytes);
            assert_eq!(got.len() as u64, t.rows);
            for id in got {
                assert_eq!(id, next, "{encoding}: out of order in {}", t.key);
                next += 1;
            }
        }
        assert_eq!(next, 10_001, "{encoding}: rows lost");
    }
}

/// Writes `good` rows, one malformed row, then `good` more; returns the bad
/// row's line number and byte offset.
fn csv_with_bad_row(path: &std::path::Path, good: u64, bad: &str) -> (u64, u64) {
    write_csv(path, good);
    let offset = std::fs::metadata(path).expect("meta").len();
    // Rows with i % 50 == 0 hold a line break inside a quoted field.
    let line = 1 + good + good / 50 + 1;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open");
    writeln!(f, "{bad}").expect("write");
    for i in good + 1..=2 * good {
        writeln!(f, "{i},name-{i},1.00,more,true").expect("write");
    }
    (line, offset)
}

#[test]
fn a_malformed_row_under_fail_names_file_line_and_offset_and_leaves_nothing_claimable() {
    let s = Scratch::new();
    let file = s.path("broken.csv");
    let (line, offset) = csv_with_bad_row(&file, 20_000, "20001,too,few");
    let out = s.run(&[
        "ingest",
        file.to_str().expect("path"),
        "--spec",
        "test",
        "--batch-rows",
        "1000",
        "--job-key",
        "k",
    ]);
    assert!(
        !out.status.success(),
        "ingest of a malformed file succeeded"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.csv"), "{err}");
    assert!(
        err.contains(&format!("line {line},")),
        "no line {line} in: {err}"
    );
    assert!(
        err.contains(&format!("byte {offset}")),
        "no byte {offset} in: {err}"
    );
    assert!(err.contains("expected 5 fields, found 3"), "{err}");

    let jobs = s.ok(&["jobs", "list", "--json"]);
    let listed: serde_json::Value =
        serde_json::from_str(jobs.lines().next().expect("one job")).expect("json");
    let id = listed["id"].as_str().expect("id").parse().expect("uuid");
    // Listed by creation time, either side of it.
    let created = listed["created_at"].as_str().expect("created_at");
    assert_eq!(s.ok(&["jobs", "list", "--since", created, "--json"]), jobs);
    assert_eq!(s.ok(&["jobs", "list", "--until", created]), "");
    let j = job(&s, id);
    assert_eq!(j.state, JobState::Failed);
    assert!(
        j.error
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("line {line}"))
    );
    assert_eq!(
        j.counts.unfinished(),
        0,
        "tasks of a failed ingest are left claimable: {:?}",
        j.counts
    );

    // No worker can pick anything up.
    let w = s.run(&[
        "worker",
        "--exec",
        "true",
        "--idle-exit",
        "300ms",
        "--poll",
        "50ms",
    ]);
    assert!(w.status.success());
    assert!(
        !String::from_utf8_lossy(&w.stderr).contains("claimed"),
        "a worker claimed a task of a failed ingest"
    );

    // The same key cannot be reused for a failed job.
    let again = s.run(&[
        "ingest",
        file.to_str().expect("path"),
        "--spec",
        "test",
        "--job-key",
        "k",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("use another job key"));
}

#[test]
fn malformed_rows_under_skip_are_counted_and_sampled() {
    let s = Scratch::new();
    let file = s.path("dirty.csv");
    let (line, offset) = csv_with_bad_row(&file, 3_000, "3001,not-a-number-row,abc,x,true,extra");
    let summary = s.ingest(&file, &["--on-error", "skip", "--batch-rows", "500"]);
    assert_eq!(summary["skipped"], 1);
    assert_eq!(summary["rows"], 6_000);
    let sample = summary["skipped_sample"][0]["error"]
        .as_str()
        .expect("sample");
    assert!(
        sample.contains("dirty.csv")
            && sample.contains(&format!("line {line},"))
            && sample.contains(&format!("byte {offset}")),
        "{sample}"
    );
    assert_eq!(
        summary["skipped_sample"][0]["excerpt"],
        "3001,not-a-number-row,abc,x,true,extra"
    );

    // The human summary says so too, and the job keeps the sample.
    let text = s.ok(&[
        "ingest",
        file.to_str().expect("path"),
        "--spec",
        "test",
        "--on-error",
        "skip",
    ]);
    assert!(
        text.contains("1 skipped") && text.contains(&format!("line {line},")),
        "{text}"
    );
    let shown = s.ok(&["jobs", "show", summary["job_id"].as_str().expect("id")]);
    assert!(
        shown.contains("1 skipped") && shown.contains(&format!("line {line},")),
        "{shown}"
    );
}

#[test]
fn a_directory_is_ingested_recursively_with_per_file_keys() {
    let s = Scratch::new();
    let root = s.path("data");
    std::fs::create_dir_all(root.join("2026/11")).expect("mkdir");
    std::fs::write(root.join("a.csv"), "id,v\n1,x\n2,y\n3,z\n").expect("write");
    std::fs::write(root.join("2026/11/b.ndjson"), "{\"id\":4}\n{\"id\":5}\n").expect("write");
    std::fs::write(root.join("2026/11/c.json"), "[{\"id\":6}]").expect("write");
    std::fs::write(root.join("2026/notes.txt"), "not data").expect("write");
    let summary = s.ingest(
        &root,
        &[
            "--recursive",
            "--glob",
            "**/*.{csv,ndjson,json}",
            "--batch-rows",
            "2",
        ],
    );
    assert_eq!(summary["files"], 3);
    assert_eq!(summary["rows"], 6);
    let keys: Vec<String> = tasks(&s, job_id(&summary))
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(
        keys,
        [
            "2026/11/b.ndjson#00000000",
            "2026/11/c.json#00000000",
            "a.csv#00000000",
            "a.csv#00000001"
        ]
    );

    // Without a glob the text file has no format: a clear error, no job left claimable.
    let out = s.run(&["ingest", root.to_str().expect("path"), "--spec", "t", "-r"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("notes.txt: cannot tell the format"));
}

#[test]
fn a_missing_path_fails_before_any_job_is_made() {
    let s = Scratch::new();
    let out = s.run(&["ingest", "/no/such/file.csv", "--spec", "t"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.csv: not found"));
    assert_eq!(s.ok(&["jobs", "list"]), "");

    let empty = s.path("empty-dir");
    std::fs::create_dir_all(empty.join("sub")).expect("mkdir");
    let err = s.fails(&["ingest", empty.to_str().expect("path"), "--spec", "t"]);
    assert!(
        err.contains("no files to ingest (pass --recursive"),
        "{err}"
    );
    assert_eq!(s.ok(&["jobs", "list"]), "", "a job was made for nothing");
}

fn fixture(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(path)
}

/// The payloads of the job an ingest summary describes, in key order.
fn payloads(s: &Scratch, summary: &serde_json::Value) -> Vec<Vec<u8>> {
    tasks(s, job_id(summary))
        .iter()
        .map(|t| payload(s, t))
        .collect()
}

#[test]
fn compressed_files_give_the_tasks_of_their_plain_originals() {
    let s = Scratch::new();
    for (packed, plain) in [
        ("compressed/basic.csv.gz", "csv/basic.csv"),
        ("compressed/basic.ndjson.zst", "ndjson/basic.ndjson"),
        ("compressed/basic.tsv.bz2", "tsv/basic.tsv"),
        ("compressed/array.json.xz", "json/array.json"),
        // No suffix says so: the first bytes do.
        ("compressed/gzipped-but-named.csv", "csv/basic.csv"),
    ] {
        let a = s.ingest(&fixture(packed), &["--batch-rows", "2"]);
        let b = s.ingest(&fixture(plain), &["--batch-rows", "2"]);
        assert_eq!(a["rows"], b["rows"], "{packed}");
        assert!(a["rows"].as_u64().expect("rows") > 0, "{packed}");
        assert_eq!(payloads(&s, &a), payloads(&s, &b), "{packed}");
    }
    let listed = s.ok(&["formats"]);
    for c in [
        "gzip     .gz .gzip",
        "zstd     .zst",
        "bzip2    .bz2",
        "xz       .xz",
    ] {
        assert!(listed.contains(c), "rota formats lists {c}: {listed}");
    }
}

#[test]
fn broken_compressed_files_fail_with_the_file_and_offset() {
    let s = Scratch::new();
    for (file, says) in [
        (
            "compressed/invalid/truncated.csv.gz",
            "byte 159: gzip: the compressed data is truncated",
        ),
        (
            "compressed/invalid/plain-text.csv.gz",
            "the name says gzip, but the data does not start like gzip data",
        ),
    ] {
        let path = fixture(file);
        let err = s.fails(&["ingest", path.to_str().expect("path"), "--spec", "t"]);
        assert!(
            err.contains(file.rsplit('/').next().expect("name")),
            "{file}: {err}"
        );
        assert!(err.contains(says), "{file}: {err}");
    }
}

#[test]
fn encoding_transcodes_text_and_a_bad_label_fails_before_any_job() {
    let s = Scratch::new();
    let path = s.path("latin1.csv");
    std::fs::write(&path, b"id,name\n1,J\xfcrgen\n2,Ana\n").expect("write");
    let summary = s.ingest(&path, &["--encoding", "latin1"]);
    assert_eq!(summary["rows"], 2);
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&payloads(&s, &summary)[0]).expect("json payload");
    assert_eq!(rows[0]["name"], "Jürgen");

    // Read as UTF-8, the same file fails and says where.
    let err = s.fails(&["ingest", path.to_str().expect("path"), "--spec", "t"]);
    assert!(err.contains("latin1.csv: line 2"), "{err}");

    let jobs_before = s.ok(&["jobs", "list", "--json"]);
    let err = s.fails(&[
        "ingest",
        path.to_str().expect("path"),
        "--spec",
        "t",
        "--encoding",
        "klingon",
    ]);
    assert!(err.contains("unknown text encoding 'klingon'"), "{err}");
    assert_eq!(
        s.ok(&["jobs", "list", "--json"]),
        jobs_before,
        "no job was made"
    );
}

#[test]
fn arrow_ipc_stream_file_and_compressed_buffers_give_the_same_tasks() {
    let s = Scratch::new();
    let gz = s.path("basic.arrow.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&std::fs::read(fixture("arrow/basic.arrow")).expect("read"))
        .expect("gzip");
    std::fs::write(&gz, e.finish().expect("gzip")).expect("write");
    let want = s.ingest(&fixture("arrow/basic.arrows"), &["--batch-rows", "3"]);
    assert_eq!(want["rows"], 4);
    assert_eq!(want["format"], "arrow");
    let want = payloads(&s, &want);
    for path in [
        fixture("arrow/basic.arrow"),
        fixture("arrow/lz4.arrow"),
        fixture("arrow/zstd.arrows"),
        gz,
    ] {
        let got = s.ingest(&path, &["--batch-rows", "3"]);
        assert_eq!(payloads(&s, &got), want, "{}", path.display());
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&want[0]).expect("json");
    assert_eq!(rows[1]["name"], "Zoë ✓");
    assert_eq!(rows[0]["tags"], serde_json::json!(["a", "b"]));

    let err = s.fails(&[
        "ingest",
        fixture("arrow/invalid/corrupt_footer.arrow")
            .to_str()
            .expect("path"),
        "--spec",
        "t",
    ]);
    assert!(
        err.contains(
            "corrupt_footer.arrow: footer, byte 3274: the Arrow IPC file's footer is corrupt"
        ),
        "{err}"
    );
}

#[test]
fn parquet_is_read_in_place_or_spooled_with_the_same_tasks() {
    let s = Scratch::new();
    let plain = fixture("parquet/basic.parquet");
    let in_place = s.ingest(&plain, &["--batch-rows", "2"]);
    assert_eq!(in_place["rows"], 5);
    assert_eq!(in_place["format"], "parquet");
    let size = std::fs::metadata(&plain).expect("size").len();
    assert_eq!(in_place["bytes"], size, "the whole file counts as read");

    // Compressed, the file cannot be read in place: it is spooled instead.
    let gz = s.path("basic.parquet.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&std::fs::read(&plain).expect("read"))
        .expect("gzip");
    std::fs::write(&gz, e.finish().expect("gzip")).expect("write");
    let spooled = s.ingest(&gz, &["--batch-rows", "2"]);
    assert_eq!(payloads(&s, &spooled), payloads(&s, &in_place));

    let projected = s.ingest(
        &plain,
        &["--batch-rows", "10", "--format-opt", "columns=name,id"],
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&payloads(&s, &projected)[0]).expect("json");
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[1], serde_json::json!({"id": 2, "name": "Zoë ✓"}));

    let bad = fixture("parquet/invalid/corrupt_footer.parquet");
    let err = s.fails(&["ingest", bad.to_str().expect("path"), "--spec", "t"]);
    assert!(
        err.contains("corrupt_footer.parquet: footer, byte 6360: the footer claims 19104 bytes"),
        "{err}"
    );
    let err = s.fails(&[
        "ingest",
        plain.to_str().expect("path"),
        "--spec",
        "t",
        "--format-opt",
        "columns=nope",
    ]);
    assert!(
        err.contains("no column 'nope' (the file has: id, score, name"),
        "{err}"
    );
}

#[test]
fn a_dry_run_reports_formats_schemas_and_tasks_and_writes_nothing() {
    let s = Scratch::new();
    let dir = s.path("in");
    std::fs::create_dir_all(&dir).expect("mkdir");
    write_csv(&dir.join("big.csv"), 600_000); // about 24 MB: sampled, estimated
    std::fs::copy(fixture("compressed/basic.csv.gz"), dir.join("small.csv.gz")).expect("copy");
    std::fs::copy(fixture("parquet/basic.parquet"), dir.join("p.parquet")).expect("copy");
    let out = s.ok(&[
        "ingest",
        dir.to_str().expect("path"),
        "--spec",
        "t",
        "--batch-rows",
        "2",
        "--dry-run",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&out).expect("plan json");
    let files = plan["files"].as_array().expect("files");
    assert_eq!(files.len(), 3);
    let (big, parquet, small) = (&files[0], &files[1], &files[2]);

    let estimated = big["rows"].as_u64().expect("rows");
    assert_eq!(big["exact"], false);
    assert!(
        (540_000..=660_000).contains(&estimated),
        "estimate within 10%: {estimated}"
    );
    assert_eq!(
        big["schema"][0],
        serde_json::json!({"name": "id", "type": "Int64"})
    );

    assert_eq!(parquet["format"], "parquet");
    assert_eq!(
        (parquet["rows"].as_u64(), parquet["exact"].as_bool()),
        (Some(5), Some(true))
    );
    assert_eq!(parquet["tasks"], 3);

    assert_eq!(small["compression"], "gzip");
    assert_eq!(small["format"], "csv");
    assert_eq!(
        (small["rows"].as_u64(), small["exact"].as_bool()),
        (Some(5), Some(true))
    );

    assert!(
        !std::path::Path::new(&s.store_url()).exists(),
        "a dry run makes no database"
    );
    let text = s.ok(&[
        "ingest",
        dir.to_str().expect("path"),
        "--spec",
        "t",
        "--dry-run",
    ]);
    assert!(text.starts_with("dry run: nothing was written"), "{text}");
    assert!(
        text.contains("format csv (gzip-compressed), 5 records, 1 tasks"),
        "{text}"
    );
}

#[test]
fn a_file_whose_name_says_nothing_is_told_by_its_first_bytes() {
    let s = Scratch::new();
    for (fixture_path, compress) in [
        ("csv/basic.csv", true),
        ("tsv/basic.tsv", false),
        ("ndjson/basic.ndjson", true),
        ("parquet/basic.parquet", false),
        ("avro/basic.avro", false),
        ("xlsx/basic.xlsx", false),
        ("msgpack/basic.msgpack", false),
    ] {
        let original = fixture(fixture_path);
        let unnamed = s.path(&format!("upload-{}", fixture_path.replace(['/', '.'], "-")));
        let bytes = std::fs::read(&original).expect("fixture");
        let bytes = if compress {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut z, &bytes).expect("gzip");
            z.finish().expect("gzip")
        } else {
            bytes
        };
        std::fs::write(&unnamed, bytes).expect("write");
        let named = s.ingest(&original, &["--payload", "ndjson"]);
        let sniffed = s.ingest(&unnamed, &["--payload", "ndjson"]);
        assert_eq!(sniffed["rows"], named["rows"], "{fixture_path}");
        assert_eq!(
            payloads(&s, &sniffed),
            payloads(&s, &named),
            "{fixture_path}"
        );
    }
    let words = s.path("notes");
    std::fs::write(&words, "just some words\n").expect("write");
    let err = s.fails(&["ingest", words.to_str().expect("path"), "--spec", "t"]);
    assert!(
        err.contains("cannot tell the format from the file name or its first bytes; pass --format"),
        "{err}"
    );
}

#[test]
fn ingest_keeps_priority_run_at_and_timeout_on_the_job() {
    let s = Scratch::new();
    let file = s.path("p.csv");
    write_csv(&file, 10);
    let summary = s.ingest(
        &file,
        &[
            "--priority",
            "-3",
            "--run-at",
            "2030-01-02T03:04:05Z",
            "--timeout",
            "90s",
        ],
    );
    let job = job(&s, job_id(&summary));
    assert_eq!(job.timing.priority, -3);
    assert_eq!(
        job.timing.run_at.map(|t| t.to_rfc3339()),
        Some("2030-01-02T03:04:05+00:00".to_owned())
    );
    assert_eq!(job.timing.timeout_ms, Some(90_000));
    let err = s.fails(&[
        "ingest",
        file.to_str().expect("path"),
        "--spec",
        "t",
        "--run-at",
        "soon",
    ]);
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn a_csv_with_classic_mac_line_ends_gives_every_row_the_dry_run_promised() {
    let s = Scratch::new();
    let path = s.path("mac.csv");
    let mut text = String::from("id,name,zip\r");
    for i in 1..=2_500 {
        text.push_str(&format!("{i},\"n\r{i}\",0{i}\r"));
    }
    std::fs::write(&path, text).expect("write");
    let plan: serde_json::Value = serde_json::from_str(&s.ok(&[
        "ingest",
        path.to_str().expect("path"),
        "--spec",
        "t",
        "--dry-run",
        "--json",
    ]))
    .expect("plan json");
    let file = &plan["files"][0];
    assert_eq!(
        (file["rows"].as_u64(), file["exact"].as_bool()),
        (Some(2_500), Some(true))
    );
    assert_eq!(
        file["schema"],
        serde_json::json!([
            {"name": "id", "type": "Int64"},
            {"name": "name", "type": "Utf8"},
            {"name": "zip", "type": "Utf8"}
        ])
    );
    let summary = s.ingest(&path, &["--payload", "ndjson"]);
    assert_eq!(summary["rows"], 2_500);
    let rows: Vec<serde_json::Value> = payloads(&s, &summary)
        .iter()
        .flat_map(|p| {
            String::from_utf8(p.clone())
                .expect("utf-8")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rows.len(), 2_500);
    assert_eq!(
        rows[1],
        serde_json::json!({"id": 2, "name": "n\r2", "zip": "02"})
    );
}

#[test]
fn a_record_past_the_sample_widens_the_schema_and_keeps_its_value() {
    let s = Scratch::new();
    let path = s.path("later.ndjson");
    let mut text = String::new();
    for i in 1..=50 {
        text.push_str(&format!("{{\"id\":{i},\"qty\":{i}}}\n"));
    }
    text.push_str("{\"id\":9007199254740993,\"qty\":2.5,\"note\":\"new\"}\n");
    text.push_str("{\"id\":52,\"qty\":\"lots\"}\n");
    std::fs::write(&path, text).expect("write");
    for payload in ["json", "ndjson", "csv", "arrow"] {
        let summary = s.ingest(
            &path,
            &[
                "--payload",
                payload,
                "--infer-rows",
                "10",
                "--batch-rows",
                "100",
            ],
        );
        assert_eq!(summary["rows"], 52, "{payload}");
        assert_eq!(summary["skipped"], 0, "{payload}");
        if payload == "ndjson" {
            let all: Vec<u8> = payloads(&s, &summary).concat();
            let text = String::from_utf8(all).expect("utf-8");
            let last: Vec<&str> = text.lines().rev().take(2).collect();
            assert_eq!(last[1], r#"{"id":9007199254740993,"qty":2.5,"note":"new"}"#);
            assert_eq!(last[0], r#"{"id":52,"qty":"lots","note":null}"#);
        }
    }
}

/// Three CSV files of `rows` records each in `dir`, identical in every run.
fn three_files(dir: &std::path::Path, rows: u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for name in ["a.csv", "b.csv", "c.csv"] {
        write_csv(&dir.join(name), rows);
    }
}

/// Every task of the store's only job: key, payload, in key order.
fn only_job_payloads(s: &Scratch) -> (rota_core::JobId, Vec<(String, Vec<u8>)>) {
    let jobs = support::runtime()
        .block_on(s.store().list_jobs(rota_core::JobFilter::default()))
        .expect("list jobs");
    assert_eq!(jobs.len(), 1, "one job: {jobs:?}");
    let id = jobs[0].id;
    let all = tasks(s, id)
        .iter()
        .map(|t| (t.key.clone(), payload(s, t)))
        .collect();
    (id, all)
}

/// The length of `job`'s payload file, and the bytes of it its tasks reference
/// (summed, and up to the end of the last).
fn payload_file(s: &Scratch, job: rota_core::JobId) -> (u64, u64, u64) {
    let file = s.path("rota.db-payloads").join(format!("{job}.seg"));
    let len = std::fs::metadata(&file).map_or(0, |m| m.len());
    let db = rusqlite::Connection::open(s.path("rota.db")).expect("open the database");
    let (sum, end): (i64, i64) = db
        .query_row(
            "SELECT COALESCE(SUM(p.file_bytes), 0), COALESCE(MAX(p.file_at + p.file_bytes), 0)
             FROM tasks t JOIN payloads p ON p.task_id = t.id
             WHERE t.job_id = ?1 AND p.file_at IS NOT NULL",
            [job.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("referenced bytes");
    (
        len,
        u64::try_from(sum).expect("sum"),
        u64::try_from(end).expect("end"),
    )
}

const INGEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A store write that fails part way (the payload file reaches the process's
/// file size limit, so the write gets EFBIG) ends the ingest with an error
/// naming the failure, at once, instead of leaving it blocked forever; the
/// job is kept held with nothing claimable; once the limit is gone the same
/// ingest finishes it, with every row once and the payloads of a clean run,
/// and the bytes the failed write left in the payload file are cut off.
#[test]
fn a_store_write_failing_part_way_ends_the_ingest_and_a_rerun_finishes_the_job() {
    let args = |dir: &std::path::Path| -> Vec<String> {
        [
            "ingest",
            dir.to_str().expect("path"),
            "--spec",
            "test",
            "--job-key",
            "nightly",
            "--batch-rows",
            "1000",
            "--parallel",
            "1",
            "--json",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let clean = Scratch::new();
    three_files(&clean.path("data"), 15_000);
    let out = clean.ok(&args(&clean.path("data"))
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let summary: serde_json::Value = serde_json::from_str(&out).expect("summary");
    assert_eq!(summary["rows"], 45_000);
    let (_, expected) = only_job_payloads(&clean);

    let s = Scratch::new();
    let dir = s.path("data");
    three_files(&dir, 15_000);
    // A 2.5 MiB file size limit (in the 512-byte blocks of `ulimit -f`),
    // with SIGXFSZ ignored: a write past it fails with EFBIG.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 5120 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_rota"))
        .args(args(&dir))
        .current_dir(s.dir.path())
        .env("ROTA_STORE", s.store_url())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rota under a file size limit");
    let (status, stderr) = support::finish(child, INGEST_LIMIT);
    assert!(!status.success(), "the ingest must fail: {stderr}");
    assert!(
        stderr.contains("File too large"),
        "names the failure: {stderr}"
    );
    assert!(
        stderr.contains("is kept held") && stderr.contains("key 'nightly'"),
        "says what became of the job: {stderr}"
    );

    let (id, stored) = only_job_payloads(&s);
    let held = job(&s, id);
    assert_eq!(held.state, JobState::Pending);
    assert!(!held.released);
    assert_eq!(
        held.counts.queued, 0,
        "nothing claimable: {:?}",
        held.counts
    );
    assert!(
        stored.len() < expected.len(),
        "the fault struck part way: {} of {} tasks",
        stored.len(),
        expected.len()
    );
    let (len, _, end) = payload_file(&s, id);
    assert!(len >= end);

    let out = s.ok(&args(&dir).iter().map(String::as_str).collect::<Vec<_>>());
    let summary: serde_json::Value = serde_json::from_str(&out).expect("summary");
    assert_eq!(job_id(&summary), id, "the rerun finished the held job");
    let (_, after) = only_job_payloads(&s);
    assert_eq!(after.len(), expected.len());
    assert!(after == expected, "payloads differ from a clean run's");
    let done = job(&s, id);
    assert!(done.released);
    assert_eq!(done.counts.queued, expected.len() as u64);
    let (len, sum, end) = payload_file(&s, id);
    assert_eq!(
        (len, sum),
        (end, end),
        "no unreferenced bytes in the payload file"
    );
}

/// An ingest killed part way (SIGKILL) leaves bytes no task references at
/// the end of its payload file when it dies between an append and its
/// commit; the test adds such a tail itself, so there surely is one. The
/// ingest run again cuts it off before appending: the file holds exactly
/// the referenced bytes, and the payloads are those of a clean run.
#[test]
fn an_ingest_resumed_after_a_kill_leaves_no_unreferenced_bytes_in_its_payload_file() {
    let args = |dir: &std::path::Path| -> Vec<String> {
        [
            "ingest",
            dir.to_str().expect("path"),
            "--spec",
            "test",
            "--job-key",
            "resume-me",
            "--batch-rows",
            "500",
            "--parallel",
            "1",
            "--json",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let clean = Scratch::new();
    three_files(&clean.path("data"), 200_000);
    clean.ok(&args(&clean.path("data"))
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let (_, expected) = only_job_payloads(&clean);

    let s = Scratch::new();
    let dir = s.path("data");
    three_files(&dir, 200_000);
    let argv = args(&dir);
    let child = s.spawn(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let payloads = s.path("rota.db-payloads");
    support::wait_until(INGEST_LIMIT, "the ingest has written payloads", || {
        std::fs::read_dir(&payloads)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok()?.metadata().ok())
            .is_some_and(|m| m.len() > 0)
    });
    support::signal(&child, "KILL");
    let _ = support::finish(child, INGEST_LIMIT);

    let (id, _) = only_job_payloads(&s);
    assert!(
        !job(&s, id).released,
        "the ingest finished before it was killed; the input is too small"
    );
    let seg = payloads.join(format!("{id}.seg"));
    // What a death between an append and its commit leaves behind.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("payload file");
    f.write_all(&vec![0xA5; 3 << 20]).expect("append a tail");
    drop(f);
    let (len, _, end) = payload_file(&s, id);
    assert!(len >= end + (3 << 20));

    let out = s.ok(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let summary: serde_json::Value = serde_json::from_str(&out).expect("summary");
    assert_eq!(job_id(&summary), id);
    let (_, after) = only_job_payloads(&s);
    assert!(after == expected, "payloads differ from a clean run's");
    let (len, sum, end) = payload_file(&s, id);
    assert_eq!(
        (len, sum),
        (end, end),
        "no unreferenced bytes in the payload file"
    );
}

/// Writes a CSV of `rows` records (with quoted line breaks, CRLF line ends
/// and no final line break) whose `amount` column holds numbers except
/// one text value in the middle: a whole read widens the column to text
/// there, and so must a read in parts.
fn csv_widening_midway(path: &std::path::Path, rows: u64) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("create csv"));
    write!(w, "id,amount,note\r\n").expect("write");
    for i in 1..=rows {
        let amount = if i == rows / 2 {
            "n/a".to_owned()
        } else {
            format!("{}.{:02}", i % 1000, i % 100)
        };
        let note = if i % 7 == 0 {
            format!("\"line one\r\nline two, {i}\"")
        } else {
            format!("note {i}")
        };
        let end = if i == rows { "" } else { "\r\n" };
        write!(w, "{i},{amount},{note}{end}").expect("write");
    }
    w.flush().expect("flush");
}

#[test]
fn a_file_read_in_parts_gives_exactly_the_tasks_of_a_whole_read_and_a_replay_adds_nothing() {
    let file_dir = Scratch::new();
    let csv = file_dir.path("big.csv");
    csv_widening_midway(&csv, 40_000);
    let ndjson = file_dir.path("big.ndjson");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&ndjson).expect("create"));
        for i in 1..=40_000u64 {
            // A field that first appears halfway widens the schema there.
            if i > 20_000 && i % 3 == 0 {
                writeln!(w, r#"{{"id":{i},"s":"a\nb","late":[{i}]}}"#).expect("write");
            } else {
                writeln!(w, r#"{{"id":{i},"s":"a\nb"}}"#).expect("write");
            }
        }
    }
    for file in [&csv, &ndjson] {
        let args = ["--batch-rows", "500", "--job-key", "parts"];
        let whole = Scratch::new();
        let w = whole.ingest(file, &[&args[..], &["--split-bytes", "0"]].concat());
        let parts = Scratch::new();
        let p = parts.ingest(file, &[&args[..], &["--split-bytes", "64KiB"]].concat());
        assert_eq!(p["rows"], 40_000, "{file:?}");
        assert_eq!(
            (p["rows"].clone(), p["tasks"].clone()),
            (w["rows"].clone(), w["tasks"].clone())
        );
        let (wt, pt) = (tasks(&whole, job_id(&w)), tasks(&parts, job_id(&p)));
        // Parts end after whole batches of --batch-rows records, so the
        // tasks are those of a whole read, payload for payload; their keys
        // name the part they come from.
        assert_eq!(pt.len(), wt.len());
        let starts: std::collections::BTreeSet<&str> =
            pt.iter().filter_map(|t| t.key.split('#').next()).collect();
        assert!(
            starts.len() > 4,
            "{file:?} was read in {} parts",
            starts.len()
        );
        for (a, b) in pt.iter().zip(&wt) {
            assert!(a.key.contains('@'), "{}", a.key);
            assert_eq!(a.rows, b.rows, "{} / {}", a.key, b.key);
            assert!(
                payload(&parts, a) == payload(&whole, b),
                "{} differs from {}",
                a.key,
                b.key
            );
        }
        // Run again under the same key: the same parts, nothing added.
        let again = parts.ingest(file, &[&args[..], &["--split-bytes", "64KiB"]].concat());
        assert_eq!(again["tasks_added"], 0);
    }
    // The widened column is text from the odd value on, as in the whole read.
    let parts = Scratch::new();
    let p = parts.ingest(&csv, &["--batch-rows", "500", "--split-bytes", "64KiB"]);
    let all = tasks(&parts, job_id(&p));
    let first = String::from_utf8(payload(&parts, &all[0])).expect("utf-8");
    let last = String::from_utf8(payload(&parts, all.last().expect("tasks"))).expect("utf-8");
    assert!(first.contains(r#""amount":1.01"#), "{}", &first[..200]);
    assert!(
        last.contains(r#""amount":"0.00""#),
        "{}",
        &last[last.len() - 200..]
    );
}
