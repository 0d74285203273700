// The properties of the URL reading, shared by the bounded property test
// (`tests/property.rs`, run by `cargo test`) and the fuzz target
// (`fuzz/fuzz_targets/urls.rs`), which include this file.
//
// 1. If an allow-list entry admits a URL, the URL as the `url` crate reads
//    it (the parser HTTP clients connect with) has that entry's scheme,
//    host and port, and a path under the entry's.
// 2. A password, as any reader of the URL could take it (the `url` crate, or
//    a split at the first `/`, or at the first of `/?#`, then the last
//    `@`), never shows in its redacted form.

/// The allow-list the properties are checked against.
pub(crate) const ENTRIES: &[&str] = &[
    "http://hooks.example.com/",
    "https://data.example.com/exports/",
    "sftp://rota@files.example.com/data/",
    "sftp://files.example.com/pub",
    "ftp://ftp.example.com/",
    "http://127.0.0.1:8080/",
    "http://[::1]:9000/x/",
    "s3://bucket/exports/",
    "webdavs://dav.example.com/",
];

/// The text that stands for a secret in generated URLs: a password holding
/// it must never be shown.
pub(crate) const SECRET: &str = "Zq9";

/// Checks both properties on `input`; panics with the reason when one fails.
pub(crate) fn check(input: &str) {
    admitted_means_reached(input);
    redacted_means_hidden(input);
}

/// What the fuzz target checks of its input: the input itself as a URL, and
/// the input cut at its first two NUL bytes into `A`, `B`, `C` and read as
/// `A:SECRETB@C`, a URL whose password holds the secret text.
pub(crate) fn check_fuzz_input(input: &str) {
    check(input);
    let mut parts = input.splitn(3, '\0');
    if let (Some(a), Some(b), Some(c)) = (parts.next(), parts.next(), parts.next())
        && !input.contains(SECRET)
    {
        check(&format!("{a}:{SECRET}{b}@{c}"));
    }
}

fn effective_port(u: &url::Url) -> Option<u16> {
    u.port_or_known_default().or(match u.scheme() {
        "webdav" => Some(80),
        "webdavs" => Some(443),
        "ftps" => Some(21),
        "sftp" => Some(22),
        _ => None,
    })
}

fn host_key(u: &url::Url) -> String {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(url::Host::Domain(d)) => d
            .parse::<std::net::IpAddr>()
            .map_or_else(|_| d.to_ascii_lowercase(), |ip| ip.to_string()),
        None => String::new(),
    }
}

fn admitted_means_reached(input: &str) {
    let Ok(remote) = rota_url::RemoteUrl::parse(input) else {
        return;
    };
    for entry in ENTRIES {
        let prefix = rota_url::UrlPrefix::parse(entry).expect("entry");
        if !prefix.admits(&remote) {
            continue;
        }
        let reached = url::Url::parse(input)
            .unwrap_or_else(|e| panic!("{input:?} admitted by {entry} but unparsable: {e}"));
        let allowed = url::Url::parse(entry).expect("entry");
        assert_eq!(reached.scheme(), allowed.scheme(), "{input:?} vs {entry}");
        assert_eq!(host_key(&reached), host_key(&allowed), "{input:?} vs {entry}");
        assert_eq!(
            effective_port(&reached),
            effective_port(&allowed),
            "{input:?} vs {entry}"
        );
        if reached.scheme() != "s3" {
            let path = rota_url::percent_decode(reached.path());
            let want = rota_url::percent_decode(allowed.path());
            let want = want.trim_end_matches('/');
            assert!(
                path == want || path.starts_with(&format!("{want}/")),
                "{input:?} vs {entry}: path {path}"
            );
            assert!(!rota_url::has_dot_segment(&path), "{input:?}: {path}");
        }
        if let Some(user) = url::Url::parse(entry).ok().filter(|u| !u.username().is_empty()) {
            assert_eq!(reached.username(), user.username(), "{input:?} vs {entry}");
        }
    }
}

/// The password of `input` as a reader splitting its authority at the first
/// of `ends` would take it.
fn naive_password<'a>(input: &'a str, ends: &[char]) -> Option<&'a str> {
    let (_, rest) = input.split_once("://")?;
    let authority = &rest[..rest.find(ends).unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p)
}

fn redacted_means_hidden(input: &str) {
    let shown = rota_url::redact(input);
    let parsed = url::Url::parse(input).ok();
    let readings = [
        parsed.as_ref().and_then(url::Url::password),
        naive_password(input, &['/']),
        naive_password(input, &['/', '?', '#']),
        naive_password(input, &['/', '?', '#', '\\']),
    ];
    for password in readings.into_iter().flatten() {
        let decoded = rota_url::percent_decode(password);
        if password.contains(SECRET) || decoded.contains(SECRET) {
            assert!(
                !shown.contains(SECRET),
                "{input:?} shows its password {password:?}: {shown:?}"
            );
        }
    }
    // What is shown parses back, if at all, with no password but `***`.
    if let Ok(again) = url::Url::parse(&shown) {
        assert!(
            again.password().is_none_or(|p| p == "***"),
            "{input:?} -> {shown:?}"
        );
    }
}
