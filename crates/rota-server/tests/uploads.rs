//! Stream batching over tus uploads, driven over real HTTP the way a tus
//! client drives it: creation, offsets, checksums, deferred lengths,
//! termination, expiry, and the one-shot upload.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use rota_core::{JobId, Store, TaskFilter};
use serde_json::Value;
use sha1::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Server {
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
}

impl Server {
    async fn start(tune: impl FnOnce(&mut rota_server::Config)) -> Self {
        let served = common::serve(|dir| common::with_uploads(dir, tune)).await;
        Self {
            url: served.url,
            client: reqwest::Client::new(),
            _dir: served.dir,
            store: served.store,
        }
    }

    fn tus(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .header("Tus-Resumable", "1.0.0")
    }

    /// Creates an upload; returns its path and its job.
    async fn create(&self, length: Option<usize>, meta: &[(&str, &str)]) -> (String, JobId) {
        let resp = self.creation(length, meta).send().await.expect("create");
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{:?}",
            resp.text().await
        );
        let location = header(&resp, "location");
        let job = header(&resp, "rota-job-id").parse().expect("job id");
        (location, job)
    }

    fn creation(&self, length: Option<usize>, meta: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let metadata = meta
            .iter()
            .map(|(k, v)| format!("{k} {}", b64(v.as_bytes())))
            .collect::<Vec<_>>()
            .join(",");
        let r = self
            .tus(Method::POST, "/uploads")
            .header("Upload-Metadata", metadata);
        match length {
            Some(n) => r.header("Upload-Length", n.to_string()),
            None => r.header("Upload-Defer-Length", "1"),
        }
    }

    fn patch(&self, path: &str, offset: usize, bytes: &[u8]) -> reqwest::RequestBuilder {
        self.tus(Method::PATCH, path)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", offset.to_string())
            .body(bytes.to_vec())
    }

    async fn offset(&self, path: &str) -> u64 {
        let resp = self.tus(Method::HEAD, path).send().await.expect("head");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(header(&resp, "cache-control"), "no-store");
        header(&resp, "upload-offset").parse().expect("offset")
    }

    /// `GET /uploads/{id}`: where the upload stands, as JSON.
    async fn info(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn job(&self, id: JobId) -> rota_core::Job {
        self.store.get_job(id).await.expect("job").expect("exists")
    }

    /// Waits until the job's ingest is done (released or failed).
    async fn ingested(&self, id: JobId) -> rota_core::Job {
        for _ in 0..200 {
            let job = self.job(id).await;
            if job.released || job.state.is_terminal() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} was not ingested within 10 s");
    }

    /// Every payload of the job, in task order, concatenated.
    async fn payloads(&self, id: JobId) -> (usize, String) {
        let tasks = self
            .store
            .list_tasks(
                id,
                TaskFilter {
                    limit: 10_000,
                    ..TaskFilter::default()
                },
            )
            .await
            .expect("tasks");
        let mut all = String::new();
        for t in &tasks {
            let bytes = self.store.get_payload(t.id).await.expect("payload");
            all.push_str(&String::from_utf8(bytes).expect("utf-8"));
        }
        (tasks.len(), all)
    }
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", resp.headers()))
        .to_str()
        .expect("ascii")
        .to_owned()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn ndjson(rows: usize) -> String {
    (0..rows)
        .map(|i| format!("{{\"id\":{i},\"name\":\"row {i}\"}}\n"))
        .collect()
}

fn ndjson_meta() -> Vec<(&'static str, &'static str)> {
    vec![
        ("spec", "load"),
        ("filename", "rows.ndjson"),
        ("max_rows", "100"),
        ("payload", "ndjson"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_say_the_version_extensions_and_checksum_algorithms() {
    let s = Server::start(|_| {}).await;
    let resp = s
        .client
        .request(Method::OPTIONS, format!("{}/uploads", s.url))
        .send()
        .await
        .expect("options");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "tus-version"), "1.0.0");
    let extensions = header(&resp, "tus-extension");
    for ext in [
        "creation",
        "creation-defer-length",
        "checksum",
        "expiration",
        "termination",
    ] {
        assert!(extensions.split(',').any(|e| e == ext), "{extensions}");
    }
    assert_eq!(header(&resp, "tus-checksum-algorithm"), "sha1");
    assert_eq!(header(&resp, "tus-max-size"), (64u64 << 30).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_uneven_pieces_becomes_exactly_its_batches_in_order() {
    let s = Server::start(|c| c.max_body = 1024).await;
    let data = ndjson(1_050);
    let (path, job) = s.create(Some(data.len()), &ndjson_meta()).await;
    assert!(path.starts_with("/uploads/"), "{path}");
    assert_eq!(s.offset(&path).await, 0);
    // Pieces far over the JSON body limit, cut mid-record.
    let cuts = [0, 7, 20_000, 20_001, data.len()];
    for pair in cuts.windows(2) {
        let resp = s
            .patch(&path, pair[0], &data.as_bytes()[pair[0]..pair[1]])
            .send()
            .await
            .expect("patch");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&resp, "tus-resumable"), "1.0.0");
        assert_eq!(header(&resp, "upload-offset"), pair[1].to_string());
        assert_eq!(s.offset(&path).await, pair[1] as u64);
        if pair[1] < data.len() {
            assert!(resp.headers().contains_key("upload-expires"));
            let held = s.job(job).await;
            assert!(!held.released, "not claimable before the upload is whole");
        }
    }
    let job = s.ingested(job).await;
    assert!(job.released, "{job:?}");
    let report = job.ingest.expect("report");
    assert_eq!((report.rows, report.tasks), (1_050, 11));
    let (tasks, all) = s.payloads(job.id).await;
    assert_eq!(tasks, 11);
    assert_eq!(all, data, "every row once, in order");

    // What an ended upload says of itself, once its ingest has recorded its
    // end (just after the job's release).
    let mut info = s.info(&path).await;
    for _ in 0..200 {
        if !info["ingested"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        info = s.info(&path).await;
    }
    assert_eq!(info["complete"], true, "{info}");
    assert_eq!(info["ingested"], true, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_offsets_types_versions_checksums_and_lengths_are_refused_and_keep_nothing() {
    let s = Server::start(|_| {}).await;
    let data = ndjson(10);
    let (path, job) = s.create(Some(data.len()), &ndjson_meta()).await;
    let bytes = data.as_bytes();

    let resp = s.patch(&path, 5, bytes).send().await.expect("patch");
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "offset_mismatch");

    let resp = s
        .tus(Method::PATCH, &path)
        .header("Content-Type", "application/json")
        .header("Upload-Offset", "0")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let resp = s
        .client
        .head(format!("{}{path}", s.url))
        .send()
        .await
        .expect("head");
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(header(&resp, "tus-version"), "1.0.0");

    let wrong = b64(&sha1::Sha1::digest(b"something else"));
    let resp = s
        .patch(&path, 0, &bytes[..20])
        .header("Upload-Checksum", format!("sha1 {wrong}"))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status().as_u16(), 460);
    assert_eq!(s.offset(&path).await, 0, "a mismatching body is not kept");

    let resp = s
        .patch(&path, 0, &bytes[..20])
        .header("Upload-Checksum", "md5 AAAA")
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let right = b64(&sha1::Sha1::digest(&bytes[..20]));
    let resp = s
        .patch(&path, 0, &bytes[..20])
        .header("Upload-Checksum", format!("sha1 {right}"))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.offset(&path).await, 20);

    let mut past = bytes[20..].to_vec();
    past.extend_from_slice(b"{\"id\":99}\n");
    let resp = s.patch(&path, 20, &past).send().await.expect("patch");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "past the length");
    assert_eq!(s.offset(&path).await, 20);

    let resp = s
        .patch(&path, 20, &bytes[20..])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let job = s.ingested(job).await;
    assert_eq!(job.ingest.expect("report").rows, 10);

    // Creation needs a spec, a length (or a deferral) and base64 metadata.
    for (req, why) in [
        (s.creation(Some(10), &[("filename", "x.csv")]), "no spec"),
        (
            s.tus(Method::POST, "/uploads")
                .header("Upload-Metadata", "spec bG9hZA=="),
            "no length",
        ),
        (
            s.tus(Method::POST, "/uploads")
                .header("Upload-Length", "10")
                .header("Upload-Metadata", "spec not*base64"),
            "bad base64",
        ),
        (
            s.creation(Some(10), &[("spec", "load"), ("format", "nope")]),
            "unknown format",
        ),
    ] {
        let resp = req.send().await.expect("create");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(header(&resp, "tus-resumable"), "1.0.0", "{why}");
    }
    let resp = s
        .creation(Some(2 << 40), &[("spec", "load")])
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = s
        .tus(Method::HEAD, "/uploads/nope")
        .send()
        .await
        .expect("head");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_length_is_given_by_a_later_patch() {
    let s = Server::start(|_| {}).await;
    let data = ndjson(250);
    let (path, job) = s.create(None, &ndjson_meta()).await;
    let resp = s.tus(Method::HEAD, &path).send().await.expect("head");
    assert_eq!(header(&resp, "upload-defer-length"), "1");
    let half = data.len() / 2;
    let resp = s
        .patch(&path, 0, &data.as_bytes()[..half])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!s.job(job).await.released, "the length is not known yet");
    let resp = s
        .patch(&path, half, &data.as_bytes()[half..])
        .header("Upload-Length", data.len().to_string())
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "upload-length"), data.len().to_string());
    let job = s.ingested(job).await;
    assert!(job.released);
    let (tasks, all) = s.payloads(job.id).await;
    assert_eq!((tasks, all), (3, data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_an_upload_cancels_its_job_and_forgets_it() {
    let s = Server::start(|_| {}).await;
    let data = ndjson(500);
    let (path, job) = s.create(Some(data.len()), &ndjson_meta()).await;
    let resp = s
        .patch(&path, 0, &data.as_bytes()[..5_000])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s.tus(Method::DELETE, &path).send().await.expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s.tus(Method::HEAD, &path).send().await.expect("head");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let job = s.job(job).await;
    assert_eq!(job.state, rota_core::JobState::Cancelled, "{job:?}");
    assert_eq!(job.counts.queued + job.counts.running, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_left_idle_expires_and_its_job_fails() {
    let s = Server::start(|c| {
        if let Some(u) = &mut c.uploads {
            u.expire_after = Duration::from_millis(400);
        }
    })
    .await;
    let data = ndjson(50);
    let (path, job) = s.create(Some(data.len()), &ndjson_meta()).await;
    let resp = s
        .patch(&path, 0, &data.as_bytes()[..100])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let mut failed = None;
    for _ in 0..100 {
        let j = s.job(job).await;
        if j.state == rota_core::JobState::Failed {
            failed = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = failed.expect("the job fails within 5 s of expiring");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("expired"),
        "{failed:?}"
    );
    let resp = s.tus(Method::HEAD, &path).send().await.expect("head");
    assert!(
        [StatusCode::NOT_FOUND, StatusCode::GONE].contains(&resp.status()),
        "{}",
        resp.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_record_fails_the_job_and_the_upload_takes_no_more() {
    let s = Server::start(|_| {}).await;
    // Past the 10,000 records the schema is inferred from and the next
    // decoded group of 8,192, so the error shows while the upload is open.
    let mut data = ndjson(18_000);
    data.push_str("{\"id\": oops}\n");
    data.push_str(&ndjson(500));
    let more = ndjson(20);
    let (path, job) = s
        .create(Some(data.len() + more.len()), &ndjson_meta())
        .await;
    let resp = s
        .patch(&path, 0, data.as_bytes())
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let job = s.ingested(job).await;
    assert_eq!(job.state, rota_core::JobState::Failed);
    let error = job.error.expect("error");
    assert!(
        error.contains("rows.ndjson") && error.contains("line 18001"),
        "{error}"
    );
    // Once the upload has recorded its ingest's end, it refuses more bytes.
    let mut recorded = false;
    for _ in 0..100 {
        let info = s.info(&path).await;
        if info["ingested"] == false {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded, "the upload records its failed ingest");
    let resp = s
        .patch(&path, data.len(), more.as_bytes())
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "ingest_failed", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_chunked_post_answers_with_the_job_it_made() {
    let s = Server::start(|c| c.max_body = 1024).await;
    let mut csv = String::from("id,name\n");
    for i in 0..2_500 {
        csv.push_str(&format!("{i},name {i}\n"));
    }
    // A streamed body: sent chunked, with no length up front.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = csv
        .as_bytes()
        .chunks(4_096)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(pieces));
    let resp = s
        .client
        .post(format!(
            "{}/uploads/stream?spec=load&format=csv&max_rows=1000&payload=csv",
            s.url
        ))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let job: Value = resp.json().await.expect("json");
    assert_eq!(job["released"], true, "{job}");
    assert_eq!(job["ingest"]["rows"], 2_500, "{job}");
    assert_eq!(job["ingest"]["tasks"], 3, "{job}");

    let resp = s
        .client
        .post(format!("{}/uploads/stream?format=csv", s.url))
        .body("a\n1\n")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "no spec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_in_the_metadata_are_the_uploads_jobs() {
    let hooks = "http://127.0.0.1:9/hooks/".to_owned();
    let s = Server::start(|c| {
        c.callbacks.key = Some(b"a-key-of-sixteen-bytes".to_vec());
        c.callbacks.allow =
            rota_server::AllowList::new(std::slice::from_ref(&hooks)).expect("allow");
    })
    .await;
    let list =
        format!(r#"["{hooks}a", {{"url": "{hooks}b?sig=s3cret", "events": ["succeeded"]}}]"#);
    let mut meta = ndjson_meta();
    meta.push(("callbacks", &list));
    let (_, job) = s.create(Some(10), &meta).await;
    let mut kept = s.store.list_callbacks(job).await.expect("callbacks");
    kept.sort_by(|a, b| a.url.cmp(&b.url));
    let urls: Vec<_> = kept.iter().map(|c| c.url.as_str()).collect();
    assert_eq!(urls, [format!("{hooks}a"), format!("{hooks}b?sig=s3cret")]);
    assert_eq!(kept[1].events, [rota_core::JobState::Succeeded]);
    // A single URL, not a list, is one callback.
    let one = format!("{hooks}c");
    let mut meta = ndjson_meta();
    meta.push(("callbacks", &one));
    let (_, job) = s.create(Some(10), &meta).await;
    let kept = s.store.list_callbacks(job).await.expect("callbacks");
    assert_eq!(kept.len(), 1);

    // Anywhere else is refused, with nothing made.
    let mut meta = ndjson_meta();
    meta.push(("callbacks", "http://127.0.0.1:9/elsewhere"));
    let resp = s.creation(Some(10), &meta).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let err: Value = resp.json().await.expect("json");
    assert_eq!(err["error"]["code"], "callback_not_allowed", "{err}");
    let mut meta = ndjson_meta();
    meta.push(("callbacks", "[not json"));
    let resp = s.creation(Some(10), &meta).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let jobs = s
        .store
        .list_jobs(rota_core::JobFilter {
            limit: 100,
            ..rota_core::JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 2, "refused uploads made no job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_off_keeps_what_arrived_and_the_upload_resumes_there() {
    let s = Server::start(|_| {}).await;
    // Past a sync point (every 16 MiB) and into the next stretch.
    let data = ndjson(700_000);
    let meta = [
        ("spec", "load"),
        ("filename", "rows.ndjson"),
        ("max_rows", "10000"),
        ("payload", "ndjson"),
    ];
    let (path, job) = s.create(Some(data.len()), &meta).await;
    let sent = 18 << 20;
    assert!(data.len() > sent + (1 << 20));
    let mut pieces: Vec<Result<Vec<u8>, std::io::Error>> = data.as_bytes()[..sent]
        .chunks(1 << 20)
        .map(|c| Ok(c.to_vec()))
        .collect();
    pieces.push(Err(std::io::Error::other("the client went away")));
    let broken = s
        .tus(Method::PATCH, &path)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await;
    assert!(
        broken.as_ref().map_or(true, |r| !r.status().is_success()),
        "{broken:?}"
    );
    // What arrived is kept (synced) once the server has seen the break.
    let mut kept = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = s.offset(&path).await;
        if now > 0 && now == kept {
            break;
        }
        kept = now;
    }
    // Past the last sync point: the bytes after it were synced on the break.
    assert!(
        kept > 16 << 20 && kept <= sent as u64,
        "kept {kept} of {sent}"
    );
    let kept = usize::try_from(kept).expect("small");
    let resp = s
        .patch(&path, kept, &data.as_bytes()[kept..])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "upload-offset"), data.len().to_string());
    let job = s.ingested(job).await;
    let report = job.ingest.expect("report");
    assert_eq!((report.rows, report.tasks), (700_000, 70));
    let (_, all) = s.payloads(job.id).await;
    assert!(all == data, "every row once, in order");
}

/// Lets this process open `n` files (each socket is one), up to its hard
/// limit.
fn allow_open_files(n: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|c| c < n) {
        let want = now.maximum.map_or(n, |m| m.min(n));
        setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(want),
                maximum: now.maximum,
            },
        )
        .expect("raise the open-file limit");
    }
}

/// Sends the head of a request on a new connection; the connection stays
/// open, its body unsent (or sent by the caller).
async fn open_request(url: &str, head: &str) -> tokio::net::TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(format!("{head}Host: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write the head");
    conn
}

/// Reads an answer: its status line, headers and (`Content-Length`) body.
async fn read_answer(conn: &mut tokio::net::TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    // Generous: a loaded machine can take long to sync what arrived.
    let read = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
            // A reset after the answer ends it too.
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 90 s");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_idle_patches_leave_healthz_and_claims_answering() {
    allow_open_files(4096);
    let s = Server::start(|c| {
        if let Some(u) = &mut c.uploads {
            u.max_open = 1000;
            u.max_open_per_token = 1000;
        }
    })
    .await;
    let mut paths = Vec::new();
    for _ in 0..600 {
        paths.push(s.create(Some(1000), &ndjson_meta()).await.0);
    }
    // Each PATCH announces a chunked body and never sends a byte of it.
    let mut idle = Vec::new();
    for path in &paths {
        idle.push(
            open_request(
                &s.url,
                &format!(
                    "PATCH {path} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\n\
                     Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n\
                     Transfer-Encoding: chunked\r\n"
                ),
            )
            .await,
        );
    }
    // Let the server take every one of them in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let within = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let health = tokio::time::timeout(within, s.client.get(format!("{}/healthz", s.url)).send())
        .await
        .expect("/healthz answers while 600 PATCHes wait for bytes")
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let health_took = started.elapsed();
    let started = std::time::Instant::now();
    let claim = tokio::time::timeout(
        within,
        s.client
            .post(format!("{}/work/claim", s.url))
            .json(&serde_json::json!({ "worker": "w" }))
            .send(),
    )
    .await
    .expect("a claim answers while 600 PATCHes wait for bytes")
    .expect("claim");
    assert_eq!(claim.status(), StatusCode::OK);
    // A figure for the record, not a bound.
    eprintln!(
        "600 idle PATCHes: /healthz took {health_took:?}, a claim {:?}",
        started.elapsed()
    );
    // Another upload still goes through, start to end.
    let data = ndjson(10);
    let (path, job) = s.create(Some(data.len()), &ndjson_meta()).await;
    let resp = tokio::time::timeout(within, s.patch(&path, 0, data.as_bytes()).send())
        .await
        .expect("a PATCH with bytes answers")
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(s.ingested(job).await.released);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_an_upload_is_told_to_come_back_with_423() {
    let s = Server::start(|_| {}).await;
    let (path, _) = s.create(Some(1000), &ndjson_meta()).await;
    // The first PATCH announces a body and sends none of it: it holds the
    // upload's writer.
    let mut first = open_request(
        &s.url,
        &format!(
            "PATCH {path} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\n\
             Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n\
             Transfer-Encoding: chunked\r\n"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another waits a moment, then is told to come back; it is not parked.
    let resp = s
        .patch(&path, 0, b"{\"id\": 1}\n")
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::LOCKED);
    assert_eq!(header(&resp, "retry-after"), "10");
    // Once the first one ends, the upload takes bytes again.
    first
        .write_all(b"a\r\n{\"id\": 1}\n\r\n0\r\n\r\n")
        .await
        .expect("finish the first body");
    assert!(read_answer(&mut first).await.starts_with("HTTP/1.1 204"));
    assert_eq!(s.offset(&path).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_idle_past_the_timeout_ends_with_408_and_keeps_what_arrived() {
    let s = Server::start(|c| {
        if let Some(u) = &mut c.uploads {
            u.idle_timeout = Duration::from_millis(300);
        }
    })
    .await;
    let data = ndjson(50);
    let (path, _) = s.create(Some(data.len()), &ndjson_meta()).await;
    let mut conn = open_request(
        &s.url,
        &format!(
            "PATCH {path} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\n\
             Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n\
             Content-Length: {}\r\n",
            data.len()
        ),
    )
    .await;
    conn.write_all(&data.as_bytes()[..100]).await.expect("part");
    let answer = read_answer(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("idle_timeout"), "{answer}");
    assert_eq!(s.offset(&path).await, 100, "what arrived is kept");
    let resp = s
        .patch(&path, 100, &data.as_bytes()[100..])
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_body_that_fails_to_decode_answers_422_and_is_read_no_further() {
    let s = Server::start(|_| {}).await;
    let mut conn = open_request(
        &s.url,
        "POST /uploads/stream?spec=load&format=ndjson&filename=rows.ndjson HTTP/1.1\r\n\
         Transfer-Encoding: chunked\r\n",
    )
    .await;
    // Past the records the schema is inferred from, a bad one, then more,
    // well past the first point where the bytes are synced (16 MiB, reached
    // once four 4 MiB writes, each a few frames over, have gone) and so
    // decoded; the body is never finished.
    let mut data = ndjson(18_000);
    data.push_str("{\"id\": oops}\n");
    data.push_str(&ndjson(900_000));
    let first = &data[..24 << 20];
    conn.write_all(format!("{:x}\r\n{first}\r\n", first.len()).as_bytes())
        .await
        .expect("first chunk");
    let answer = read_answer(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(
        answer.contains("rows.ndjson") && answer.contains("line 18001"),
        "the error says where: {answer}"
    );
    // Nothing of the upload stays on disk, and its job failed.
    let jobs = s
        .store
        .list_jobs(rota_core::JobFilter {
            limit: 10,
            ..rota_core::JobFilter::default()
        })
        .await
        .expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, rota_core::JobState::Failed, "{:?}", jobs[0]);
    let left = std::fs::read_dir(s._dir.path().join("uploads"))
        .expect("upload dir")
        .count();
    assert_eq!(left, 0, "the failed upload's files are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_full_disk_refuses_uploads_with_507_and_retry_after() {
    let s = Server::start(|c| {
        if let Some(u) = &mut c.uploads {
            // More than any disk has free: the check trips.
            u.min_free = u64::MAX / 2;
        }
    })
    .await;
    let resp = s
        .creation(Some(10), &ndjson_meta())
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(header(&resp, "retry-after"), "10");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    let resp = s
        .client
        .post(format!("{}/uploads/stream?spec=load&format=ndjson", s.url))
        .body(ndjson(3))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(header(&resp, "retry-after"), "10");
    let jobs = s
        .store
        .list_jobs(rota_core::JobFilter {
            limit: 10,
            ..rota_core::JobFilter::default()
        })
        .await
        .expect("jobs");
    assert!(jobs.is_empty(), "a refused upload makes no job: {jobs:?}");
}

const ONE: &str = "one-token-0123456789";
const TWO: &str = "two-token-0123456789";
const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789";
const ROOT: &str = "root-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_of_open_uploads_and_bytes_answer_429_413_and_503() {
    let s = Server::start(|c| {
        c.tokens = rota_server::Tokens::parse(
            "one-token-0123456789 schedule\ntwo-token-0123456789 schedule\n",
        )
        .expect("tokens");
        if let Some(u) = &mut c.uploads {
            u.max_open = 3;
            u.max_open_per_token = 2;
            u.max_bytes_per_token = 1000;
        }
    })
    .await;
    let create = |token: &'static str, length: Option<usize>| {
        s.creation(length, &ndjson_meta()).bearer_auth(token)
    };
    let a = create(ONE, Some(800)).send().await.expect("create");
    assert_eq!(a.status(), StatusCode::CREATED);
    // Bytes: 800 held, 300 more would pass 1000.
    let resp = create(ONE, Some(300)).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after"), "10");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "upload_quota", "{body}");
    // More than the quota alone can never pass.
    let resp = create(ONE, Some(2000)).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A deferred length grows only as far as the quota has room (200 more):
    // what came before the refusal is kept.
    let b = create(ONE, None).send().await.expect("create");
    assert_eq!(b.status(), StatusCode::CREATED);
    let b = header(&b, "location");
    let resp = s
        .patch(&b, 0, &[b'x'; 150])
        .bearer_auth(ONE)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s
        .patch(&b, 150, &[b'x'; 100])
        .bearer_auth(ONE)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    // Open uploads: "one" has two.
    let resp = create(ONE, Some(1)).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_uploads", "{body}");
    // Another token has its own quota, until the server holds its most.
    let resp = create(TWO, Some(10)).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = create(TWO, Some(10)).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&resp, "retry-after"), "10");
    // Ending an upload gives its room back.
    let resp = s
        .tus(Method::DELETE, &b)
        .bearer_auth(ONE)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = create(ONE, Some(200)).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_belongs_to_its_token_and_shows_no_callbacks_nor_its_id() {
    let hooks = "http://127.0.0.1:9/hooks/".to_owned();
    let s = Server::start(|c| {
        c.tokens = rota_server::Tokens::parse("alice-token-0123456789 schedule\nbob-token-0123456789 schedule\nroot-token-0123456789 admin\n")
            .expect("tokens");
        c.callbacks.key = Some(b"a-key-of-sixteen-bytes".to_vec());
        c.callbacks.allow =
            rota_server::AllowList::new(std::slice::from_ref(&hooks)).expect("allow");
    })
    .await;
    let data = ndjson(20);
    let secret = format!("{hooks}b?sig=s3cret");
    let mut meta = ndjson_meta();
    meta.push(("callbacks", &secret));
    let resp = s
        .creation(Some(data.len()), &meta)
        .bearer_auth(ALICE)
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let path = header(&resp, "location");
    let job: JobId = header(&resp, "rota-job-id").parse().expect("job");
    let id = path.rsplit('/').next().expect("id").to_owned();

    // Another token finds nothing there, whatever it tries.
    for method in [Method::HEAD, Method::GET, Method::DELETE] {
        let resp = s
            .tus(method.clone(), &path)
            .bearer_auth(BOB)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method}");
    }
    let resp = s
        .patch(&path, 0, data.as_bytes())
        .bearer_auth(BOB)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.job(job).await.state, rota_core::JobState::Pending);

    // Its owner, and an admin, see it; HEAD leaves the callbacks out.
    for token in [ALICE, ROOT] {
        let resp = s
            .tus(Method::HEAD, &path)
            .bearer_auth(token)
            .send()
            .await
            .expect("head");
        assert_eq!(resp.status(), StatusCode::OK, "{token}");
        let shown = header(&resp, "upload-metadata");
        assert!(shown.contains(&format!("spec {}", b64(b"load"))), "{shown}");
        assert!(!shown.contains("callbacks"), "{shown}");
        assert!(!shown.contains(&b64(secret.as_bytes())), "{shown}");
    }
    let resp = s
        .patch(&path, 0, data.as_bytes())
        .bearer_auth(ALICE)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // Neither the job's key nor its source names the upload.
    let made = s.ingested(job).await;
    let key = made.key.clone().expect("key");
    assert!(key.starts_with("upload:") && !key.contains(&id), "{key}");
    let report = made.ingest.expect("report");
    assert!(!report.source.contains(&id), "{}", report.source);
    let files = s
        .store
        .list_files(job, rota_core::FileFilter::default())
        .await
        .expect("files");
    assert!(files.iter().all(|f| !f.location.contains(&id)), "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_disk_refuses_answers_507_keeps_the_offset_and_resumes_later() {
    let s = Server::start(|_| {}).await;
    let data = ndjson(200);
    let (path, job) = s.create(Some(data.len()), &ndjson_meta()).await;
    let resp = s
        .patch(&path, 0, &data.as_bytes()[..1000])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // The upload's file turns into a full disk: every write fails with
    // ENOSPC (the ingest keeps reading the file it opened).
    let id = path.rsplit('/').next().expect("id");
    let dir = s._dir.path().join("uploads").join(id);
    std::fs::rename(dir.join("data"), dir.join("data.kept")).expect("keep the data");
    std::os::unix::fs::symlink("/dev/full", dir.join("data")).expect("symlink");
    let resp = s
        .patch(&path, 1000, &data.as_bytes()[1000..])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(header(&resp, "retry-after"), "10");
    assert_eq!(header(&resp, "tus-resumable"), "1.0.0");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    assert_eq!(s.offset(&path).await, 1000, "the recorded bytes stay");
    assert!(!s.job(job).await.released);
    // Space again: the upload resumes where it was.
    std::fs::remove_file(dir.join("data")).expect("unlink");
    std::fs::rename(dir.join("data.kept"), dir.join("data")).expect("restore");
    let resp = s
        .patch(&path, 1000, &data.as_bytes()[1000..])
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let job = s.ingested(job).await;
    assert_eq!(job.ingest.expect("report").rows, 200);
    let (_, all) = s.payloads(job.id).await;
    assert!(all == data, "every row once, in order");
}

/// Creating an upload again under the same idempotency key (its first
/// answer lost) answers with the upload the first request made, so the
/// client resumes it or finds it complete; a different length is another
/// upload, refused.
#[tokio::test]
async fn a_creation_sent_again_under_its_key_answers_the_same_upload() {
    let s = Server::start(|_| {}).await;
    let meta = [
        ("spec", "s"),
        ("format", "ndjson"),
        ("idempotency_key", "once"),
    ];
    let (first, job) = s.create(Some(20), &meta).await;
    let resp = s
        .patch(&first, 0, b"{\"id\":1}\n")
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (again, same_job) = s.create(Some(20), &meta).await;
    assert_eq!((&again, same_job), (&first, job));
    assert_eq!(s.offset(&again).await, 9, "the client resumes where it was");
    let resp = s.creation(Some(21), &meta).send().await.expect("create");
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = s
        .patch(&first, 9, b"{\"id\":22}\n\n")
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let done = s.ingested(job).await;
    assert_eq!(done.counts.total, 1, "{done:?}");
    let (ended, _) = s.create(Some(20), &meta).await;
    assert_eq!(ended, first);
    assert_eq!(
        s.offset(&ended).await,
        20,
        "complete: nothing to send again"
    );
    assert_eq!(s.job(job).await.counts.total, 1, "nothing added");
}

/// A server that dies after making an upload's job and before making the
/// upload leaves a note of the creation; when the creation is sent again
/// to the next server, the upload is made then, into the same job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_a_crash_interrupted_is_made_when_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rota_store::open_store(&dir.path().join("rota.db").to_string_lossy())
        .await
        .expect("store");
    let meta = [
        ("spec", "s"),
        ("format", "ndjson"),
        ("idempotency_key", "k"),
    ];
    // The first server runs on a runtime of its own, dropped to end it as a
    // crash would: none of its tasks runs on.
    let (made, job) = {
        let (store, config) = (store.clone(), common::with_uploads(dir.path(), |_| {}));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let made = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let url = format!("http://{}", listener.local_addr().expect("addr"));
                let serving = store.clone();
                tokio::spawn(async move {
                    let _ =
                        rota_server::serve(listener, serving, config, std::future::pending()).await;
                });
                let first = Server {
                    url,
                    client: reqwest::Client::new(),
                    _dir: tempfile::tempdir().expect("tempdir"),
                    store,
                };
                first.create(Some(20), &meta).await
            });
            rt.shutdown_background();
            made
        })
        .join()
        .expect("the first server")
    };
    // As if it had died before the upload was on disk: only the job and
    // the note of its creation are left.
    let id = made.rsplit('/').next().expect("id");
    // (Its writer threads may still be finishing a write.)
    let upload = dir.path().join("uploads").join(id);
    for _ in 0..50 {
        if std::fs::remove_dir_all(&upload).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!upload.exists(), "the upload is removed");
    let key = store.get_job(job).await.expect("get").expect("job").key;
    let digest = sha1::Sha1::digest(key.expect("a key").as_bytes());
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let note = dir.path().join("uploads").join(format!(".creating-{name}"));
    std::fs::write(&note, id).expect("note");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (serving, config) = (store.clone(), common::with_uploads(dir.path(), |_| {}));
    tokio::spawn(async move {
        rota_server::serve(listener, serving, config, std::future::pending())
            .await
            .expect("serve");
    });
    let next = Server {
        url,
        client: reqwest::Client::new(),
        _dir: tempfile::tempdir().expect("tempdir"),
        store: store.clone(),
    };
    let (again, same) = next.create(Some(20), &meta).await;
    assert_eq!(same, job, "the same job");
    assert_eq!(next.offset(&again).await, 0);
    let resp = next
        .patch(&again, 0, b"{\"id\":1}\n{\"id\":22}\n\n")
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let done = next.ingested(job).await;
    assert_eq!(
        (
            done.released,
            done.counts.total,
            done.ingest.map(|r| r.rows)
        ),
        (true, 1, Some(2)),
        "{:?}",
        next.job(job).await
    );
    assert!(!note.exists(), "the note is gone once the upload is made");
    // Sent again once more, it is the upload just made, not another.
    let (third, _) = next.create(Some(20), &meta).await;
    assert_eq!(third, again);
}
