//! What the server logs when one-shot uploads fail: the failure is the
//! client's (a body that breaks off, a record that does not decode), so no
//! ERROR line, and nothing of the upload stays on disk. A test binary of
//! its own, so that the log it reads is this test's alone.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

fn ndjson(rows: usize) -> String {
    (0..rows)
        .map(|i| format!("{{\"id\":{i},\"name\":\"row {i}\"}}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_one_shot_uploads_log_no_error_and_leave_no_files() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();
    tracing::info!("the log is captured");

    let served = common::serve(|dir| common::with_uploads(dir, |_| {})).await;
    let (url, uploads) = (served.url.clone(), served.dir.path().join("uploads"));
    let client = reqwest::Client::new();
    let stream = format!("{url}/uploads/stream?spec=load&format=ndjson&filename=rows.ndjson");

    // A body that breaks off, early and late (past a sync point).
    for rows in [10, 400_000] {
        let data = ndjson(rows);
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(data.into_bytes()),
            Err(std::io::Error::other("the client went away")),
        ];
        let sent = client
            .post(&stream)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            .send()
            .await;
        assert!(
            sent.as_ref().map_or(true, |r| !r.status().is_success()),
            "{sent:?}"
        );
    }
    // A record that does not decode.
    let mut data = ndjson(18_000);
    data.push_str("{\"id\": oops}\n");
    let resp = client.post(&stream).body(data).send().await.expect("post");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // A failure of the decoding after the whole body arrived.
    let resp = client
        .post(&stream)
        .body("{\"id\": 1}\nnot json\n")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Whatever runs on after the answers has its time.
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = std::fs::read_dir(&uploads).expect("upload dir").count();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(left, 0, "the failed uploads' files are gone");
    let text = log.text();
    assert!(text.contains("the log is captured"), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
