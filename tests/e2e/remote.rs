//! `rota ingest` of remote URLs gives the tasks of the local copy: the same
//! keys and the same payload bytes. Servers from `rota-testkit`, on loopback.

use std::path::Path;
use std::process::Output;

use rota_testkit::{
    FTP_PASSWORD, FTP_USER, FtpdOptions, KEY, SECRET, ftpd, nginx, nginx_webdav, s3_server, sshd,
    tree_dir,
};

use crate::support::{Scratch, job_id, payload, tasks};

/// Keys and payloads of the job `rota ingest ARGS --json` made.
fn ingested(s: &Scratch, out: &Output) -> Vec<(String, Vec<u8>)> {
    assert!(
        out.status.success(),
        "ingest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary json");
    tasks(s, job_id(&summary))
        .iter()
        .map(|t| (t.key.clone(), payload(s, t)))
        .collect()
}

fn ingest_args<'a>(location: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "ingest",
        location,
        "--spec",
        "t",
        "--json",
        "--batch-rows",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

fn local(location: &Path, extra: &[&str]) -> Vec<(String, Vec<u8>)> {
    let s = Scratch::new();
    let location = location.to_str().expect("path");
    let out = s.run(&ingest_args(location, extra));
    ingested(&s, &out)
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn an_s3_prefix_ingests_to_the_tasks_of_its_local_copy() {
    let rt = multi_thread();
    let root = tempfile::tempdir().expect("tempdir");
    let addr = rt.block_on(s3_server(root.path()));
    let want = local(&tree_dir(), &["--recursive"]);
    assert!(want.len() > 8, "the tree makes tasks: {}", want.len());

    let s = Scratch::new();
    let remote = |s: &Scratch, secret: &str, args: &[&str]| {
        s.command(args)
            .env("AWS_ENDPOINT_URL", format!("http://{addr}"))
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .output()
            .expect("run rota")
    };
    let out = remote(
        &s,
        SECRET,
        &ingest_args("s3://bucket/tree/", &["--recursive"]),
    );
    assert_eq!(ingested(&s, &out), want, "s3 tasks equal local tasks");

    // `rota ls` lists what ingest reads: the same files and sizes as locally.
    let shape = |out: &[u8]| {
        let mut v: Vec<(String, u64)> = String::from_utf8_lossy(out)
            .lines()
            .map(|l| {
                let e: serde_json::Value = serde_json::from_str(l).expect("json line");
                (
                    e["relative"].as_str().expect("relative").to_owned(),
                    e["size"].as_u64().expect("size"),
                )
            })
            .collect();
        v.sort();
        v
    };
    let listed = remote(&s, SECRET, &["ls", "s3://bucket/tree/", "-r", "--json"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let local_tree = tree_dir();
    let local_listed = s.ok(&["ls", local_tree.to_str().expect("path"), "-r", "--json"]);
    assert_eq!(shape(&listed.stdout), shape(local_listed.as_bytes()));
    assert_eq!(shape(&listed.stdout).len(), 9);

    // Size and time filters apply to remote listings as to local ones.
    let listed = remote(
        &s,
        SECRET,
        &["ls", "s3://bucket/tree/", "-r", "--json", "--min-size", "1"],
    );
    let names: Vec<String> = shape(&listed.stdout).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(!names.contains(&"empty.csv".to_owned()));
    let out = remote(
        &s,
        SECRET,
        &ingest_args(
            "s3://bucket/tree/",
            &["-r", "--modified-since", "2999-01-01"],
        ),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none passes the --exclude, --min-size"),
        "{err}"
    );

    // Without the slash the prefix is found the same way.
    let s = Scratch::new();
    let out = remote(
        &s,
        SECRET,
        &ingest_args("s3://bucket/tree", &["--recursive"]),
    );
    assert_eq!(ingested(&s, &out), want);

    // The same settings from a named profile instead of the environment.
    let s = Scratch::new();
    let profiles = s.path("profiles.toml");
    std::fs::write(
        &profiles,
        format!(
            "[local-s3]\ns3.endpoint = \"http://{addr}\"\ns3.access_key_id = \"{KEY}\"\n\
             s3.secret_access_key = \"{SECRET}\"\n"
        ),
    )
    .expect("write profiles");
    let with_profile = |s: &Scratch, name: &str| {
        s.command(&ingest_args(
            "s3://bucket/tree/",
            &["--recursive", "--profile", name],
        ))
        .env("ROTA_PROFILES", &profiles)
        .output()
        .expect("run rota")
    };
    let out = with_profile(&s, "local-s3");
    assert_eq!(
        ingested(&s, &out),
        want,
        "a profile reaches the same bucket"
    );
    let out = with_profile(&s, "no-such-profile");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no profile 'no-such-profile'") && err.contains("local-s3"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");

    // A wrong secret: one line that says what to check, no secret, no job.
    let s = Scratch::new();
    let out = remote(
        &s,
        "wrong-secret-value",
        &ingest_args("s3://bucket/tree/", &["-r"]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access denied") && err.contains("AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-secret-value") && !err.contains(KEY),
        "{err}"
    );
    assert_eq!(s.ok(&["jobs", "list"]), "", "no job for a refused listing");

    // A missing bucket and a missing key.
    for (url, says) in [
        ("s3://no-such-bucket/tree/", "bucket does not exist"),
        ("s3://bucket/tree/no-such.csv", "not found"),
    ] {
        let s = Scratch::new();
        let out = remote(&s, SECRET, &ingest_args(url, &[]));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(url) && err.contains(says), "{url}: {err}");
    }
}

#[test]
fn a_batch_scheduled_at_an_s3_prefix_makes_the_tasks_rota_ingest_makes_of_it() {
    let rt = multi_thread();
    let root = tempfile::tempdir().expect("tempdir");
    let addr = rt.block_on(s3_server(root.path()));
    let endpoint = format!("http://{addr}");
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let by_ingest = Scratch::new();
    let out = by_ingest
        .command(&ingest_args("s3://bucket/tree/", &["--recursive"]))
        .envs(env)
        .output()
        .expect("run rota");
    let want = ingested(&by_ingest, &out);
    assert!(want.len() > 8, "the tree makes tasks: {}", want.len());

    let s = Scratch::new();
    std::fs::write(s.path("tokens"), "app-token-0123456789 schedule\n").expect("tokens");
    let tokens = s.path("tokens");
    let (server, url) = crate::serve::serve_env(
        &s,
        &[
            "--tokens",
            tokens.to_str().expect("path"),
            "--allow-source",
            "s3://bucket/tree/",
        ],
        &env,
    );
    let answer = crate::serve::post(
        &url,
        "/schedule",
        "app-token-0123456789",
        &serde_json::json!({ "spec": "t", "batch": {
            "source": "s3://bucket/tree/", "recursive": true, "max_rows": 2 } }),
    );
    let id = answer["jobs"][0]["id"].as_str().expect("id").to_owned();
    crate::support::wait_until(
        std::time::Duration::from_secs(30),
        "the batch is ingested",
        || {
            crate::serve::get(&url, &format!("/jobs/{id}"), "app-token-0123456789")["released"]
                == true
        },
    );
    let job = crate::serve::get(&url, &format!("/jobs/{id}"), "app-token-0123456789");
    assert_eq!(job["error"], serde_json::Value::Null, "{job}");
    let got: Vec<(String, Vec<u8>)> = tasks(&s, id.parse().expect("job id"))
        .iter()
        .map(|t| (t.key.clone(), payload(&s, t)))
        .collect();
    assert_eq!(got, want, "the scheduled batch's tasks equal rota ingest's");
    assert!(
        !job.to_string().contains(SECRET),
        "no secret on the job: {job}"
    );
    // Another bucket is not on the allow-list.
    let refused = crate::serve::post(
        &url,
        "/schedule",
        "app-token-0123456789",
        &serde_json::json!({ "spec": "t", "batch": { "source": "s3://other/tree/" } }),
    );
    assert_eq!(refused["error"]["code"], "source_not_allowed", "{refused}");
    crate::support::signal(&server, "TERM");
    let (status, stderr) = crate::support::finish(server, std::time::Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[test]
fn http_files_ingest_to_the_tasks_of_their_local_copies() {
    let server = nginx(&tree_dir());
    for relative in ["a.csv", "odd%20names/100%25.csv", "sub/data.parquet"] {
        let decoded = relative.replace("%20", " ").replace("%25", "%");
        let want = local(&tree_dir().join(&decoded), &[]);
        let s = Scratch::new();
        let url = format!("http://{}/{relative}", server.addr);
        let out = s.run(&ingest_args(&url, &[]));
        assert_eq!(ingested(&s, &out), want, "{url}");
    }
    let s = Scratch::new();
    let url = format!("http://{}/nothing-here.csv", server.addr);
    let err = s.fails(&ingest_args(&url, &[]));
    assert!(err.contains(&url) && err.contains("not found"), "{err}");
}

#[test]
fn a_webdav_tree_ingests_to_the_tasks_of_its_local_copy_and_no_record_holds_the_password() {
    let server = nginx_webdav(&tree_dir(), Some(("rota", "dav-secret-pass")));
    let want = local(&tree_dir(), &["--recursive"]);
    let s = Scratch::new();
    let url = format!("webdav://rota:dav-secret-pass@{}/", server.addr);
    let out = s.run(&ingest_args(&url, &["--recursive"]));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(ingested(&s, &out), want, "webdav tasks equal local tasks");
    let shown = s.ok(&["jobs", "show", summary["job_id"].as_str().expect("job id")]);
    let store = std::fs::read(s.path("rota.db")).expect("store file");
    for (what, text) in [
        ("summary", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("log", String::from_utf8_lossy(&out.stderr).into_owned()),
        ("jobs show", shown),
        ("store", String::from_utf8_lossy(&store).into_owned()),
    ] {
        assert!(
            !text.contains("dav-secret-pass"),
            "the password is in the {what}"
        );
    }

    let s = Scratch::new();
    let url = format!("webdav://rota:not-it@{}/", server.addr);
    let err = s.fails(&ingest_args(&url, &["--recursive"]));
    assert!(
        err.contains("access denied") && !err.contains("not-it"),
        "{err}"
    );
}

#[test]
fn an_sftp_tree_ingests_to_the_tasks_of_its_local_copy_and_unknown_hosts_are_refused() {
    let server = sshd();
    let want = local(&tree_dir(), &["--recursive"]);
    let url = format!(
        "sftp://{}@{}{}/",
        server.user,
        server.addr,
        tree_dir().canonicalize().expect("tree").display()
    );
    let run = |known_hosts: &Path| {
        let s = Scratch::new();
        let out = s
            .command(&ingest_args(&url, &["--recursive"]))
            .env("ROTA_SFTP_KEY", &server.client_key)
            .env("ROTA_KNOWN_HOSTS", known_hosts)
            .output()
            .expect("run rota");
        (s, out)
    };
    let (s, out) = run(&server.known_hosts);
    assert_eq!(ingested(&s, &out), want, "sftp tasks equal local tasks");

    let unknown = tempfile::NamedTempFile::new().expect("empty known hosts");
    let (s, out) = run(unknown.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown host key SHA256:") && err.contains("ROTA_SFTP_FINGERPRINT="),
        "{err}"
    );
    assert_eq!(s.ok(&["jobs", "list"]), "", "no job for a refused host");
}

#[test]
fn ftp_and_ftps_trees_ingest_to_the_tasks_of_their_local_copy_without_the_password_anywhere() {
    let want = local(&tree_dir(), &["--recursive"]);
    for tls in [false, true] {
        let server = ftpd(
            &tree_dir(),
            FtpdOptions {
                tls,
                ..FtpdOptions::default()
            },
        );
        let scheme = if tls { "ftps" } else { "ftp" };
        let url = format!("{scheme}://{FTP_USER}:{FTP_PASSWORD}@{}/", server.addr);
        let s = Scratch::new();
        let mut cmd = s.command(&ingest_args(&url, &["--recursive"]));
        if let Some(ca) = &server.ca_file {
            cmd.env("ROTA_CA_FILE", ca);
        }
        let out = cmd.output().expect("run rota");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(ingested(&s, &out), want, "{scheme} tasks equal local tasks");
        let id = summary["job_id"].as_str().expect("job id");
        let shown = s.ok(&["jobs", "show", id]);
        let files = s.ok(&["jobs", "files", id]);
        let store = std::fs::read(s.path("rota.db")).expect("store file");
        for (what, text) in [
            ("summary", String::from_utf8_lossy(&out.stdout).into_owned()),
            ("log", String::from_utf8_lossy(&out.stderr).into_owned()),
            ("jobs show", shown),
            ("jobs files", files),
            ("store", String::from_utf8_lossy(&store).into_owned()),
        ] {
            assert!(
                !text.contains(FTP_PASSWORD),
                "the password is in the {what} ({scheme})"
            );
        }
    }
}

#[test]
fn an_ftp_password_comes_from_the_environment_or_a_profile_not_only_the_url() {
    let want = local(&tree_dir(), &["--recursive"]);
    let server = ftpd(&tree_dir(), FtpdOptions::default());
    let url = format!("ftp://{FTP_USER}@{}/", server.addr);
    let s = Scratch::new();
    let out = s
        .command(&ingest_args(&url, &["--recursive"]))
        .env("ROTA_FTP_PASSWORD", FTP_PASSWORD)
        .output()
        .expect("run rota");
    assert_eq!(ingested(&s, &out), want, "password from ROTA_FTP_PASSWORD");

    let s = Scratch::new();
    let profiles = s.path("profiles.toml");
    std::fs::write(
        &profiles,
        format!("[partner]\nftp.password = \"{FTP_PASSWORD}\"\n"),
    )
    .expect("write profiles");
    let out = s
        .command(&ingest_args(&url, &["--recursive", "--profile", "partner"]))
        .env("ROTA_PROFILES", &profiles)
        .output()
        .expect("run rota");
    assert_eq!(ingested(&s, &out), want, "password from a profile");

    // Without one the server refuses the login, and says whose.
    let s = Scratch::new();
    let err = s.fails(&ingest_args(&url, &["--recursive"]));
    assert!(
        err.contains("access denied") && err.contains("refused the login of 'rota'"),
        "{err}"
    );
}

#[test]
fn a_url_password_given_with_one_job_is_never_used_by_another() {
    let server = ftpd(&tree_dir(), FtpdOptions::default());
    let s = Scratch::new();
    std::fs::write(
        s.path("tokens"),
        "app-token-0123456789 schedule\nother-token-0123456789 schedule\n",
    )
    .expect("tokens");
    let tokens = s.path("tokens");
    // The entry names the user, so a URL may name it without a password.
    let allowed = format!("ftp://{FTP_USER}@{}/", server.addr);
    let (serve, url) = crate::serve::serve_env(
        &s,
        &[
            "--tokens",
            tokens.to_str().expect("path"),
            "--allow-source",
            &allowed,
        ],
        &[],
    );
    let run = |token: &str, source: &str| {
        let answer = crate::serve::post(
            &url,
            "/schedule",
            token,
            &serde_json::json!({ "spec": "t", "batch": { "source": source, "recursive": true } }),
        );
        let id = answer["jobs"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_owned();
        crate::support::wait_until(
            std::time::Duration::from_secs(30),
            "the batch ends its ingest",
            || {
                let job = crate::serve::get(&url, &format!("/jobs/{id}"), token);
                job["released"] == true || job["state"] == "failed"
            },
        );
        crate::serve::get(&url, &format!("/jobs/{id}"), token)
    };
    // Job A gives the password: its files are listed and read.
    let a = run(
        "app-token-0123456789",
        &format!("ftp://{FTP_USER}:{FTP_PASSWORD}@{}/", server.addr),
    );
    assert_eq!(a["error"], serde_json::Value::Null, "{a}");
    assert_eq!(a["released"], true, "{a}");
    // Job B, from another token, names the same user with `***` (as A's
    // job record shows it): the server does not log in with A's password.
    let b = run(
        "other-token-0123456789",
        &format!("ftp://{FTP_USER}:***@{}/", server.addr),
    );
    assert_eq!(b["state"], "failed", "{b}");
    let why = b["error"].as_str().unwrap_or_default();
    assert!(why.contains("not known here"), "{b}");
    assert!(!b.to_string().contains(FTP_PASSWORD), "{b}");
    crate::support::signal(&serve, "TERM");
    let (status, stderr) = crate::support::finish(serve, std::time::Duration::from_secs(20));
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(FTP_PASSWORD), "{stderr}");
}
