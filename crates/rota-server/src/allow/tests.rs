use axum::http::StatusCode;

use super::AllowList;

fn list(entries: &[&str]) -> AllowList {
    AllowList::new(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).expect("list")
}

#[test]
fn the_allow_list_checks_url_prefixes_and_resolved_local_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("in")).expect("mkdir");
    let list = AllowList::new(&[
        "s3://bucket/exports/".to_owned(),
        data.to_string_lossy().into_owned(),
    ])
    .expect("allow list");
    assert!(list.check("s3://bucket/exports/2026/").is_ok());
    assert!(list.check("s3://bucket/other/").is_err());
    assert!(list.check("s3://bucket/exports/../other/").is_err());
    assert!(list.check("s3://bucket/exports/%2e%2e/other/").is_err());
    assert!(
        list.check("S3://bucket/exports/x.csv").is_ok(),
        "schemes ignore case"
    );
    let hosts = AllowList::new(&["https://data.example.com".to_owned()]).expect("list");
    assert!(hosts.check("https://data.example.com/a.csv").is_ok());
    assert!(
        hosts
            .check("https://data.example.com.evil.org/a.csv")
            .is_err()
    );
    assert!(
        hosts
            .check("https://data.example.com@evil.org/a.csv")
            .is_err()
    );
    let no_slash = AllowList::new(&["s3://b/exports".to_owned()]).expect("list");
    assert!(no_slash.check("s3://b/exports/x").is_ok());
    assert!(no_slash.check("s3://b/exports-x/y").is_err());
    assert!(list.check("https://169.254.169.254/latest/").is_err());
    assert!(list.check(&format!("{}/in/x.csv", data.display())).is_ok());
    assert!(
        list.check(&format!("{}/in/../../secret", data.display()))
            .is_err()
    );
    assert!(
        list.check(&format!("{}/no/../../../etc/passwd", data.display()))
            .is_err()
    );
    assert!(list.check("/etc/passwd").is_err());
    assert!(list.check("relative/path.csv").is_err());
    let err = list.check("sftp://u:pw@h/x").expect_err("refused");
    assert!(!err.message.contains("pw@"), "{}", err.message);
    assert!(
        AllowList::default().check("s3://any/").is_err(),
        "empty allows nothing"
    );
}

/// The strings that got past the old prefix check, and their kin: each is
/// refused, as a callback and as a source.
#[test]
fn urls_the_connection_reads_elsewhere_are_refused() {
    let hooks = list(&["http://hooks.example.com/", "https://hooks.example.com/"]);
    let sources = list(&[
        "https://hooks.example.com/",
        "http://hooks.example.com/",
        "sftp://files.example.com/data/",
        "webdav://hooks.example.com/",
    ]);
    for url in [
        // A query, a fragment or a backslash before the `@`: the host is
        // the address, not the name after the `@`.
        "http://127.0.0.1:18999?@hooks.example.com/",
        "https://10.0.0.5:9200#@hooks.example.com/",
        "https://127.0.0.1:7878\\@hooks.example.com/x",
        // Percent-encoded and doubled forms of the same.
        "http://127.0.0.1:18999/%2F@hooks.example.com/",
        "http://hooks.example.com%40127.0.0.1/",
        "http://hooks.example.com%2F@127.0.0.1/",
        "http://127.0.0.1?@hooks.example.com?@hooks.example.com/",
        "http://127.0.0.1/?@hooks.example.com/",
        "http://127.0.0.1#hooks.example.com/",
        "http://127.0.0.1:1/@hooks.example.com/",
        // Names that only look alike.
        "http://hooks.example.com.evil.org/",
        "http://hooks.example.com./",
        "http://hooks.example.com:8080/",
        "http://hooks.example.com:80@127.0.0.1/",
        "http://hооks.example.com/",
        "http://%68ooks.example.com@127.0.0.1/",
        // Addresses, however written.
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        // Whitespace the URL standard would strip.
        "http://hooks.example.com\t.evil.org/",
        "http://127.0.0.1\n/",
        " http://127.0.0.1/",
        // Other schemes.
        "ftp://hooks.example.com/",
        "sftp://files.example.com\\@evil.org/data/",
        "sftp://evil.org?@files.example.com/data/",
        "sftp://evil.org#@files.example.com/data/",
        "sftp://files.example.com/data/../../etc/",
        "sftp://files.example.com/data/..%2f..%2fetc/",
        "sftp://files.example.com/data%2F..%2F..%2Fetc/",
        "sftp://files.example.com:2222/data/",
    ] {
        let err = hooks.check_callback(url).expect_err(url);
        assert!(
            err.status == StatusCode::FORBIDDEN || err.status == StatusCode::BAD_REQUEST,
            "{url}: {err:?}"
        );
        assert!(
            !err.message.contains("--allow-source"),
            "a callback's hint: {}",
            err.message
        );
        assert!(sources.check(url).is_err(), "source {url}");
    }
    // Encoded, the `?` and `#` are a user's password: the URL goes to the
    // allowed host, so a source may use it; a callback has no credentials.
    for url in [
        "http://127.0.0.1:18999%3F@hooks.example.com/",
        "http://127.0.0.1:18999%23@hooks.example.com/",
    ] {
        assert!(hooks.check_callback(url).is_err(), "{url}");
        assert!(sources.check(url).is_ok(), "{url}");
    }
    // What the entries name is allowed, however the scheme and host are cased.
    assert!(hooks.check_callback("http://hooks.example.com/x").is_ok());
    assert!(
        hooks
            .check_callback("https://hooks.example.com/a?sig=s")
            .is_ok()
    );
    assert!(sources.check("HTTPS://HOOKS.example.com/x").is_ok());
    assert!(sources.check("https://hooks.example.com:443/x").is_ok());
    assert!(sources.check("sftp://files.example.com/data/x.csv").is_ok());
    assert!(
        sources
            .check("sftp://files.example.com:22/data/*.csv")
            .is_ok()
    );
    assert!(
        sources
            .check("sftp://FILES.example.com/data/x?.csv")
            .is_ok()
    );
}

#[test]
fn callbacks_are_canonical_http_urls_without_credentials() {
    let hooks = list(&["https://hooks.example.com/", "http://[::1]:9000/hooks/"]);
    for (url, why) in [
        ("https://u:p@hooks.example.com/", "user or password"),
        ("https://u@hooks.example.com/", "user or password"),
        ("HTTPS://hooks.example.com/", "canonical"),
        ("https://HOOKS.example.com/", "canonical"),
        ("https://hooks.example.com", "canonical"),
        ("https://hooks.example.com:443/", "canonical"),
        ("https://hooks.example.com/a b", "canonical"),
        ("https://hooks.example.com/a/./b", "canonical"),
        ("http://[0:0::1]:9000/hooks/", "canonical"),
        ("file:///etc/passwd", "no host"),
        ("ftp://hooks.example.com/", "http or https"),
    ] {
        let err = hooks.check_callback(url).expect_err(url);
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{url}: {err:?}");
        assert!(
            err.message.contains(why) && !err.message.contains(":p@"),
            "{url}: {}",
            err.message
        );
    }
    assert!(hooks.check_callback("http://[::1]:9000/hooks/x").is_ok());
    let err = hooks
        .check_callback("http://[::1]:9001/hooks/x")
        .expect_err("port");
    assert_eq!(
        (err.status, err.code),
        (StatusCode::FORBIDDEN, "callback_not_allowed")
    );
    assert!(err.message.contains("--allow-callback"), "{}", err.message);
}

#[test]
fn entries_pin_users_and_refuse_the_servers_credentials_under_other_names() {
    let pinned = list(&[
        "sftp://rota@files.example.com/data/",
        "ftp://files.example.com/pub/",
    ]);
    assert!(
        pinned
            .check("sftp://rota@files.example.com/data/x.csv")
            .is_ok()
    );
    assert!(
        pinned
            .check("sftp://rota:own-pass@files.example.com/data/x.csv")
            .is_ok()
    );
    for url in [
        "sftp://root@files.example.com/data/x.csv",
        "sftp://admin:pw@files.example.com/data/x.csv",
        "sftp://files.example.com/data/x.csv",
        "sftp://ROTA@files.example.com/data/x.csv",
        // Without a user in the entry: no user, or one with its own password.
        "ftp://root@files.example.com/pub/x.csv",
        "ftp://root:***@files.example.com/pub/x.csv",
        "ftp://root:@files.example.com/pub/x.csv",
    ] {
        let err = pinned.check(url).expect_err(url);
        assert_eq!(err.status, StatusCode::FORBIDDEN, "{url}");
    }
    assert!(pinned.check("ftp://files.example.com/pub/x.csv").is_ok());
    assert!(
        pinned
            .check("ftp://bob:own@files.example.com/pub/x.csv")
            .is_ok()
    );
    // Entries are parsed as URLs are; ones that would never match are refused.
    for bad in [
        "sftp://rota:pw@files.example.com/",
        "https://h.example.com/?x=1",
        "https://h?@example.com/",
    ] {
        let err = AllowList::new(&[bad.to_owned()]).expect_err(bad);
        assert!(!err.contains(":pw@"), "{err}");
    }
}

#[test]
fn ip_literal_entries_name_the_addresses_the_egress_filter_lets_through() {
    let l = list(&[
        "http://127.0.0.1:8080/",
        "sftp://[::1]:2222/data/",
        "https://hooks.example.com/",
        "sftp://10.1.2.3/x/",
    ]);
    let mut got = l.addresses();
    got.sort();
    let mut want: Vec<std::net::IpAddr> = ["127.0.0.1", "::1", "10.1.2.3"]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert!(
        l.check("sftp://[0::1]:2222/data/x").is_ok(),
        "canonical address"
    );
    assert!(l.check("sftp://10.1.2.3/x/y").is_ok());
}
