//! Remote sources against real servers on loopback (see `rota-testkit`): an
//! S3 server checking SigV4 signatures, nginx serving the tree over HTTP with
//! Range support, and a cutting proxy in front of either.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rota_core::SourceError;
use rota_core::source::Source;
use rota_sources::conformance::{self, TREE_FILES, Tree};
use rota_sources::{ObjectSource, S3Settings};
use rota_testkit::{
    FTP_PASSWORD, FTP_USER, FtpdOptions, KEY, SECRET, big_file, cutting_proxy, ftpd, nginx,
    nginx_webdav, s3_server, sshd, tree_dir,
};

fn s3_settings(endpoint: SocketAddr, secret: &str) -> S3Settings {
    S3Settings {
        endpoint: Some(format!("http://{endpoint}")),
        access_key_id: Some(KEY.to_owned()),
        secret_access_key: Some(secret.to_owned()),
        ..S3Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_conforms() {
    let root = tempfile::tempdir().expect("tempdir");
    let addr = s3_server(root.path()).await;
    let source = ObjectSource::new(s3_settings(addr, SECRET));
    let tree = Tree {
        source: &source,
        root: "s3://bucket/tree/".to_owned(),
        local: tree_dir(),
    };
    conformance::all(&tree).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_benchmark_s3_server_conforms_too() {
    let root = tempfile::tempdir().expect("tempdir");
    rota_testkit::copy_dir(&tree_dir(), &root.path().join("bucket/tree"));
    let addr = rota_testkit::serve_lean_s3(root.path(), 0).await;
    let source = ObjectSource::new(s3_settings(addr, SECRET));
    let tree = Tree {
        source: &source,
        root: "s3://bucket/tree/".to_owned(),
        local: tree_dir(),
    };
    conformance::all(&tree).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_conforms() {
    let source = rota_sources::LocalSource::default();
    let tree = Tree {
        source: &source,
        root: format!("{}/", tree_dir().display()),
        local: tree_dir(),
    };
    conformance::all(&tree).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_conforms() {
    let server = nginx(&tree_dir());
    let source = ObjectSource::default();
    let tree = Tree {
        source: &source,
        root: format!("http://{}/", server.addr),
        local: tree_dir(),
    };
    conformance::reads_are_byte_equal(&tree, TREE_FILES).await;
    conformance::missing_is_not_found(&tree, false).await;
    let err = conformance::list_at(&source, &format!("http://{}/sub/", server.addr), true)
        .await
        .expect_err("HTTP has no listing");
    assert!(err.to_string().contains("webdav://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_and_missing_bucket_say_so_without_secrets() {
    let root = tempfile::tempdir().expect("tempdir");
    let addr = s3_server(root.path()).await;
    let wrong = ObjectSource::new(s3_settings(addr, "not-the-secret-either"));
    let err = conformance::list_at(&wrong, "s3://bucket/tree/", true)
        .await
        .expect_err("a wrong secret is refused");
    let text = err.to_string();
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
    assert!(
        text.contains("AWS_SECRET_ACCESS_KEY"),
        "says how to fix: {text}"
    );
    assert!(
        !text.contains("not-the-secret") && !text.contains(KEY),
        "no secret: {text}"
    );
    assert_eq!(text.lines().count(), 1, "one line: {text}");

    let right = ObjectSource::new(s3_settings(addr, SECRET));
    let err = conformance::list_at(&right, "s3://no-such-bucket/tree/", true)
        .await
        .expect_err("a missing bucket is an error");
    let text = err.to_string();
    assert!(
        text.contains("no-such-bucket") && text.contains("bucket"),
        "{text}"
    );
    assert!(
        !text.contains(SECRET) && !text.contains(KEY),
        "no secret: {text}"
    );
    assert_eq!(text.lines().count(), 1, "one line: {text}");
}

/// Lists `url` (one file) and reads it whole.
async fn fetch(source: &ObjectSource, url: &str) -> Result<Vec<u8>, SourceError> {
    let entries = conformance::list_at(source, url, false).await?;
    conformance::read_all(source, &entries[0], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_mid_way_resumes_by_range() {
    // The HEAD takes the first connection; the GET and its first resume are cut.
    // HTTP through nginx.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = big_file(dir.path());
    let server = nginx(dir.path());
    let (proxy, connections) = cutting_proxy(server.addr, |n| (n < 3).then_some(1_000_000)).await;
    let source = ObjectSource::default();
    let got = fetch(&source, &format!("http://{proxy}/big.bin"))
        .await
        .expect("resumed read");
    assert!(
        got == data,
        "resumed bytes equal the file ({} vs {})",
        got.len(),
        data.len()
    );
    assert!(
        connections.load(Ordering::SeqCst) >= 3,
        "the body was resumed"
    );

    // S3 through s3s-fs.
    let root = tempfile::tempdir().expect("tempdir");
    let addr = s3_server(root.path()).await;
    std::fs::copy(
        dir.path().join("big.bin"),
        root.path().join("bucket/big.bin"),
    )
    .expect("copy");
    let (proxy, connections) = cutting_proxy(addr, |n| (n < 3).then_some(1_500_000)).await;
    let source = ObjectSource::new(s3_settings(proxy, SECRET));
    let got = fetch(&source, "s3://bucket/big.bin")
        .await
        .expect("resumed read");
    assert!(got == data, "resumed bytes equal the object");
    assert!(
        connections.load(Ordering::SeqCst) >= 3,
        "the body was resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_mid_body_ends_in_an_error_not_a_short_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    big_file(dir.path());
    let server = nginx(dir.path());
    // The first response is cut mid-body; after that the "server" dies at
    // once on every connection, before a response header is complete.
    let (proxy, _) = cutting_proxy(server.addr, |n| Some(if n == 0 { 1_000_000 } else { 0 })).await;
    let direct = ObjectSource::default();
    let entries = conformance::list_at(&direct, &format!("http://{}/big.bin", server.addr), false)
        .await
        .expect("head");
    let mut entry = entries[0].clone();
    entry.location = format!("http://{proxy}/big.bin");
    let started = std::time::Instant::now();
    let err = conformance::read_all(&direct, &entry, None)
        .await
        .expect_err("a body that never arrives whole is an error");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "bounded in time"
    );
    let text = err.to_string();
    assert!(
        text.contains("big.bin") && text.contains("broke at byte"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_link_that_keeps_cutting_still_delivers_every_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = big_file(dir.path());
    let server = nginx(dir.path());
    // Every response is cut after 2 MB: each resume makes progress.
    let (proxy, connections) = cutting_proxy(server.addr, |_| Some(2_000_000)).await;
    let source = ObjectSource::default();
    let got = fetch(&source, &format!("http://{proxy}/big.bin"))
        .await
        .expect("every byte, over many connections");
    assert!(got == data, "bytes equal");
    assert!(
        connections.load(Ordering::SeqCst) >= 6,
        "took several connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webdav_conforms_walking_depth_one_with_basic_auth() {
    // nginx's dav-ext refuses `Depth: infinity` and sends no ETags: the
    // strict server a Depth-1 walk has to work with.
    let server = nginx_webdav(&tree_dir(), Some(("rota", "dav-pass")));
    let source = ObjectSource::default();
    let tree = Tree {
        source: &source,
        root: format!("webdav://rota:dav-pass@{}/", server.addr),
        local: tree_dir(),
    };
    conformance::all(&tree).await;
    let listed = conformance::list_at(&source, &tree.root, true)
        .await
        .expect("list");
    assert!(
        listed
            .iter()
            .all(|e| e.location.starts_with("webdav://rota:***@")),
        "entries keep the scheme and user they were listed with, not the password"
    );

    let err = conformance::list_at(
        &source,
        &format!("webdav://rota:wrong-pass@{}/", server.addr),
        true,
    )
    .await
    .expect_err("a wrong password is refused");
    let text = err.to_string();
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
    assert!(!text.contains("wrong-pass"), "no password: {text}");
    assert!(text.contains("rota:***@"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_conforms_with_key_auth_and_checks_host_keys() {
    let server = sshd();
    let settings = |key: &std::path::Path, known: &std::path::Path| {
        rota_sources::sftp::SftpSource::new(rota_sources::sftp::SftpSettings {
            key: Some(key.to_owned()),
            known_hosts: Some(known.to_owned()),
            fingerprint: None,
            password: None,
        })
    };
    let source = settings(&server.client_key, &server.known_hosts);
    let root = format!(
        "sftp://{}@{}{}/",
        server.user,
        server.addr,
        tree_dir().canonicalize().expect("tree").display()
    );
    let tree = Tree {
        source: &source,
        root: root.clone(),
        local: tree_dir(),
    };
    conformance::all(&tree).await;

    // A key the server does not accept.
    let err = conformance::list_at(
        &settings(&server.other_key, &server.known_hosts),
        &root,
        true,
    )
    .await
    .expect_err("an unknown key is refused");
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("refused the key"), "{err}");

    // A host key that is not known, and one that changed.
    let empty = tempfile::NamedTempFile::new().expect("empty known hosts");
    let err = conformance::list_at(&settings(&server.client_key, empty.path()), &root, true)
        .await
        .expect_err("an unknown host is refused");
    let text = err.to_string();
    assert!(
        text.contains("unknown host key SHA256:") && text.contains("ssh-keyscan"),
        "says how to trust it: {text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    let err = conformance::list_at(
        &settings(&server.client_key, &server.wrong_known_hosts),
        &root,
        true,
    )
    .await
    .expect_err("a changed host key is refused");
    assert!(err.to_string().contains("HOST KEY HAS CHANGED"), "{err}");
}

/// An SFTP source trusting `server`'s host key when reached through a proxy
/// on `port`.
fn sftp_via(server: &rota_testkit::Sshd, port: u16) -> rota_sources::sftp::SftpSource {
    let known = std::fs::read_to_string(&server.known_hosts).expect("known hosts");
    let moved = known.replace(
        &format!("[127.0.0.1]:{}", server.addr.port()),
        &format!("[127.0.0.1]:{port}"),
    );
    let path = server.known_hosts.with_extension(format!("via-{port}"));
    std::fs::write(&path, moved).expect("write known hosts");
    rota_sources::sftp::SftpSource::new(rota_sources::sftp::SftpSettings {
        key: Some(server.client_key.clone()),
        known_hosts: Some(path),
        fingerprint: None,
        password: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_read_cut_mid_way_resumes_on_a_new_connection() {
    let server = sshd();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = big_file(dir.path());
    let path = dir.path().canonicalize().expect("dir").join("big.bin");
    // The first two connections are cut after 3 MB from the server.
    let (proxy, connections) = cutting_proxy(server.addr, |n| (n < 2).then_some(3_000_000)).await;
    let source = sftp_via(&server, proxy.port());
    let url = format!("sftp://{}@{proxy}{}", server.user, path.display());
    let entries = conformance::list_at(&source, &url, false)
        .await
        .expect("list");
    let got = conformance::read_all(&source, &entries[0], None)
        .await
        .expect("every byte, over new connections");
    assert!(got == data, "bytes equal ({} vs {})", got.len(), data.len());
    assert!(
        connections.load(Ordering::SeqCst) >= 3,
        "the read was resumed on new connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_server_gone_mid_read_ends_in_an_error_that_says_where() {
    let server = sshd();
    let dir = tempfile::tempdir().expect("tempdir");
    big_file(dir.path());
    let path = dir.path().canonicalize().expect("dir").join("big.bin");
    // The first connection is cut mid-file; every later one at once.
    let (proxy, _) = cutting_proxy(server.addr, |n| Some(if n == 0 { 3_000_000 } else { 0 })).await;
    let source = sftp_via(&server, proxy.port());
    let url = format!("sftp://{}@{proxy}{}", server.user, path.display());
    let entries = conformance::list_at(&source, &url, false)
        .await
        .expect("list");
    let started = std::time::Instant::now();
    let err = conformance::read_all(&source, &entries[0], None)
        .await
        .expect_err("a file that never arrives whole is an error");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "bounded in time"
    );
    let text = err.to_string();
    assert!(
        text.contains("big.bin") && text.contains("broke at byte") && text.contains("of 12000000"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

fn ftp_source(server: &rota_testkit::Ftpd) -> rota_sources::ftp::FtpSource {
    rota_sources::ftp::FtpSource::new(rota_sources::ftp::FtpSettings {
        ca_file: server.ca_file.clone(),
        password: None,
    })
}

async fn ftp_conforms(options: FtpdOptions) {
    let server = ftpd(&tree_dir(), options);
    let source = ftp_source(&server);
    let scheme = if options.tls { "ftps" } else { "ftp" };
    let tree = Tree {
        source: &source,
        root: format!("{scheme}://{FTP_USER}:{FTP_PASSWORD}@{}/", server.addr),
        local: tree_dir(),
    };
    conformance::all(&tree).await;
    let listed = conformance::list_at(&source, &tree.root, true)
        .await
        .expect("list");
    assert!(
        listed.iter().all(|e| e
            .location
            .starts_with(&format!("{scheme}://{FTP_USER}:***@"))),
        "entries keep the user, not the password"
    );

    let wrong = format!("{scheme}://{FTP_USER}:not-the-password@{}/", server.addr);
    let err = conformance::list_at(&source, &wrong, true)
        .await
        .expect_err("a wrong password is refused");
    let text = err.to_string();
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
    assert!(
        text.contains("refused the login of 'rota'") && !text.contains("not-the-password"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_conforms_with_mlsd() {
    ftp_conforms(FtpdOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftp_conforms_with_list_parsing_when_the_server_has_no_mlsd() {
    ftp_conforms(FtpdOptions {
        no_mlsd: true,
        ..FtpdOptions::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftps_conforms_and_an_untrusted_certificate_says_how_to_trust_it() {
    ftp_conforms(FtpdOptions {
        tls: true,
        ..FtpdOptions::default()
    })
    .await;
    let server = ftpd(
        &tree_dir(),
        FtpdOptions {
            tls: true,
            ..FtpdOptions::default()
        },
    );
    let untrusting = rota_sources::ftp::FtpSource::default();
    let url = format!("ftps://{FTP_USER}:{FTP_PASSWORD}@{}/", server.addr);
    let err = conformance::list_at(&untrusting, &url, true)
        .await
        .expect_err("a certificate from an unknown CA is refused");
    let text = err.to_string();
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
    assert!(
        text.contains("ROTA_CA_FILE") && !text.contains(FTP_PASSWORD),
        "{text}"
    );
    // Plain FTP to a server that requires TLS is refused by the server.
    let plain = format!("ftp://{FTP_USER}:{FTP_PASSWORD}@{}/", server.addr);
    assert!(
        conformance::list_at(&untrusting, &plain, true)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ftp_server_killed_mid_read_is_read_on_after_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = big_file(dir.path());
    let mut server = ftpd(dir.path(), FtpdOptions::default());
    let source = ftp_source(&server);
    let url = format!("ftp://{FTP_USER}:{FTP_PASSWORD}@{}/big.bin", server.addr);
    let entries = conformance::list_at(&source, &url, false)
        .await
        .expect("list");
    let mut stream = source.open(&entries[0], None).await.expect("open");
    let mut got = stream
        .next_chunk()
        .await
        .expect("first chunk")
        .expect("some bytes");
    server.kill();
    std::thread::sleep(Duration::from_millis(300));
    server.restart();
    while let Some(chunk) = stream
        .next_chunk()
        .await
        .expect("read on after the restart")
    {
        got.extend_from_slice(&chunk);
    }
    assert!(
        got == data,
        "every byte once ({} vs {})",
        got.len(),
        data.len()
    );

    // A server that stays down: an error that says at which byte, in bounded time.
    let mut stream = source.open(&entries[0], None).await.expect("open");
    let first = stream.next_chunk().await.expect("chunk").expect("bytes");
    server.kill();
    let started = std::time::Instant::now();
    let mut read = first.len();
    let err = loop {
        match stream.next_chunk().await {
            Ok(Some(c)) => read += c.len(),
            Ok(None) => panic!("a short read passed as whole after {read} bytes"),
            Err(e) => break e,
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "bounded in time"
    );
    let text = err.to_string();
    assert!(
        text.contains("broke at byte") && text.contains("big.bin"),
        "{text}"
    );
    assert!(!text.contains(FTP_PASSWORD), "{text}");
}

/// Source settings for `server` with a registry bounded by `limits`.
fn ftp_settings(
    server: &rota_testkit::Ftpd,
    limits: rota_sources::ConnectionLimits,
) -> rota_sources::SourceSettings {
    let mut settings = rota_sources::SourceSettings::default();
    settings.ftp = rota_sources::ftp::FtpSettings {
        ca_file: server.ca_file.clone(),
        password: None,
    };
    settings.connections = rota_sources::Connections::new(limits);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_given_with_one_ingest_is_never_used_by_another() {
    let server = ftpd(&tree_dir(), FtpdOptions::default());
    let settings = ftp_settings(&server, rota_sources::ConnectionLimits::default());
    let given = format!("ftp://{FTP_USER}:{FTP_PASSWORD}@{}/", server.addr);
    let hidden = format!("ftp://{FTP_USER}:***@{}/", server.addr);

    // Ingest A gives the password: it lists, and opens what it listed
    // (entries show the password as `***`).
    let a = settings.for_ingest();
    let source = a.for_location(&given).expect("source");
    let entries = conformance::list_at(source.as_ref(), &given, true)
        .await
        .expect("A lists");
    let entry = entries
        .iter()
        .find(|e| e.relative == "a.csv")
        .expect("a.csv");
    assert!(entry.location.contains(":***@"), "{}", entry.location);
    let bytes = conformance::read_all(source.as_ref(), entry, None)
        .await
        .expect("A reads");
    assert_eq!(
        bytes,
        std::fs::read(tree_dir().join("a.csv")).expect("local")
    );

    // Ingest B, on the same server's registry, names the user with `***`:
    // neither its listing nor A's entries open.
    let b = settings.for_ingest();
    let err = conformance::list_at(
        b.for_location(&hidden).expect("source").as_ref(),
        &hidden,
        true,
    )
    .await
    .expect_err("B does not get A's password");
    assert!(err.to_string().contains("not known here"), "{err}");
    assert!(!err.to_string().contains(FTP_PASSWORD), "{err}");
    let err = conformance::read_all(
        b.for_location(&entry.location).expect("source").as_ref(),
        entry,
        None,
    )
    .await
    .expect_err("B cannot open A's entry");
    assert!(err.to_string().contains("not known here"), "{err}");
    // Settings used outside any ingest know no password either.
    assert!(
        conformance::read_all(
            settings
                .for_location(&entry.location)
                .expect("source")
                .as_ref(),
            entry,
            None
        )
        .await
        .is_err()
    );

    // Ingest C names the user without a password: it is not handed A's
    // logged-in connections, and the server refuses it.
    let bare = format!("ftp://{FTP_USER}@{}/", server.addr);
    let c = settings.for_ingest();
    let err = conformance::list_at(c.for_location(&bare).expect("source").as_ref(), &bare, true)
        .await
        .expect_err("C is refused");
    assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_passwords_do_not_grow_the_registry_and_idle_connections_close() {
    let server = ftpd(&tree_dir(), FtpdOptions::default());
    let settings = ftp_settings(
        &server,
        rota_sources::ConnectionLimits {
            idle: Duration::from_millis(200),
            max_entries: 2,
        },
    );
    // (The server pauses a few seconds after each refused login.)
    for i in 0..6 {
        let url = format!("ftp://{FTP_USER}:guess-{i}@{}/", server.addr);
        let ingest = settings.for_ingest();
        let err = conformance::list_at(
            ingest.for_location(&url).expect("source").as_ref(),
            &url,
            true,
        )
        .await
        .expect_err("a wrong password is refused");
        assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
        assert!(
            settings.connections.len() <= 2,
            "bounded: {} after {i}",
            settings.connections.len()
        );
    }
    let given = format!("ftp://{FTP_USER}:{FTP_PASSWORD}@{}/", server.addr);
    let ingest = settings.for_ingest();
    let source = ingest.for_location(&given).expect("source");
    let entries = conformance::list_at(source.as_ref(), &given, true)
        .await
        .expect("the right password still lists");
    assert!(!entries.is_empty());
    drop((source, entries));
    // Nothing uses the registry now: its background sweep closes the idle
    // connections (bounded wait).
    for _ in 0..200 {
        if settings.connections.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        settings.connections.is_empty(),
        "idle entries are dropped: {:?}",
        settings.connections
    );
    // And a later ingest connects again.
    let again = settings.for_ingest();
    conformance::list_at(
        again.for_location(&given).expect("source").as_ref(),
        &given,
        true,
    )
    .await
    .expect("lists after the sweep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_session_is_never_shared_with_other_credentials() {
    let server = sshd();
    let mut settings = rota_sources::SourceSettings::default();
    settings.sftp = rota_sources::sftp::SftpSettings {
        key: Some(server.client_key.clone()),
        known_hosts: Some(server.known_hosts.clone()),
        fingerprint: None,
        password: None,
    };
    let root = format!(
        "sftp://{}@{}{}/",
        server.user,
        server.addr,
        tree_dir().canonicalize().expect("tree").display()
    );
    let a = settings.for_ingest();
    conformance::list_at(a.for_location(&root).expect("source").as_ref(), &root, true)
        .await
        .expect("A lists with the accepted key");
    assert_eq!(settings.connections.len(), 1, "A's session is kept");

    // B shares the registry but holds a key the server does not accept: it
    // is not handed A's session.
    let mut other = settings.clone();
    other.sftp.key = Some(server.other_key.clone());
    let b = other.for_ingest();
    let err = conformance::list_at(b.for_location(&root).expect("source").as_ref(), &root, true)
        .await
        .expect_err("B is refused");
    assert!(err.to_string().contains("refused the key"), "{err}");

    // A password given by one ingest (here refused by the server, which
    // takes keys only) is not tried for another's `***`.
    let with_password = root.replacen('@', ":guessed-pw@", 1);
    let c = settings.for_ingest();
    let err = conformance::list_at(
        c.for_location(&with_password).expect("source").as_ref(),
        &with_password,
        true,
    )
    .await
    .expect_err("password authentication is off");
    assert!(!err.to_string().contains("guessed-pw"), "{err}");
    let hidden = root.replacen('@', ":***@", 1);
    let d = settings.for_ingest();
    let err = conformance::list_at(
        d.for_location(&hidden).expect("source").as_ref(),
        &hidden,
        true,
    )
    .await
    .expect_err("D does not get C's password");
    assert!(
        matches!(err, SourceError::InvalidLocation { .. })
            && err.to_string().contains("not known here"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_and_webdav_listings_are_bounded_in_files_and_time() {
    let root = tempfile::tempdir().expect("tempdir");
    let addr = s3_server(root.path()).await;
    let limits = rota_sources::ListingLimits {
        max_entries: 3,
        stall: Duration::from_secs(60),
    };
    let source = ObjectSource::new(s3_settings(addr, SECRET)).with_listing(limits);
    let err = conformance::list_at(&source, "s3://bucket/tree/", true)
        .await
        .expect_err("more files than the bound");
    assert!(err.to_string().contains("more than 3 files"), "{err}");

    let server = nginx_webdav(&tree_dir(), None);
    let source = ObjectSource::default().with_listing(limits);
    let err = conformance::list_at(&source, &format!("webdav://{}/", server.addr), true)
        .await
        .expect_err("more files than the bound");
    assert!(err.to_string().contains("more than 3 files"), "{err}");

    // A server that takes the request and never answers: the listing ends
    // at its stall bound, not at the client's longer timeouts.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let quiet = rota_sources::ListingLimits {
        max_entries: 3,
        stall: Duration::from_millis(300),
    };
    let source = ObjectSource::new(s3_settings(silent.local_addr().expect("addr"), SECRET))
        .with_listing(quiet);
    let err = conformance::list_at(&source, "s3://bucket/tree/", true)
        .await
        .expect_err("a silent server ends the listing");
    assert!(err.to_string().contains("found no"), "{err}");
    let source = ObjectSource::default().with_listing(quiet);
    let url = format!("webdav://{}/dir/", silent.local_addr().expect("addr"));
    let err = conformance::list_at(&source, &url, true)
        .await
        .expect_err("a silent WebDAV server ends the listing");
    assert!(err.to_string().contains("found no"), "{err}");
}
