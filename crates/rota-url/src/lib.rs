//! Rota's one reading of remote URLs, shared by everything that looks at
//! one: the sources that connect, the allow-lists that decide whether they
//! may ([`UrlPrefix`]), and the redaction that shows them ([`redact`]). All
//! of them go through [`RemoteUrl::parse`], which reads URLs as the WHATWG
//! URL standard does (the `url` crate, the parser HTTP clients use), and
//! refuses the forms two readers could take apart differently.

use std::fmt;
use std::net::IpAddr;

/// Schemes whose URLs may carry `user[:password]@`.
const CREDENTIAL_SCHEMES: &[&str] = &["http", "https", "webdav", "webdavs", "sftp", "ftp", "ftps"];

/// Schemes whose query is a secret to hide (pre-signed URLs carry their
/// signature there).
const QUERY_SECRET_SCHEMES: &[&str] = &[
    "http",
    "https",
    "webdav",
    "webdavs",
    "postgres",
    "postgresql",
];

/// A remote location's URL, parsed once. Its `Display` is the redacted
/// form: the password, and the query of an HTTP(S) or WebDAV URL, shown as
/// `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    url: url::Url,
    /// For `s3://`, the key as written after the bucket (S3 keys are taken
    /// as written, not as URL paths).
    s3_key: Option<String>,
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RemoteUrl").field(&self.to_string()).finish()
    }
}

impl RemoteUrl {
    /// Parses `location`, a `scheme://…` URL.
    ///
    /// # Errors
    /// The reason the URL is refused (never the URL itself, which may hold a
    /// password): no scheme or host; a control character or space; a raw
    /// `\`; a `?` or `#` before the path (in credentials they are written
    /// `%3F` and `%23`); an `@` in the path of a URL without credentials (a
    /// `/` in credentials is written `%2F`, an `@` in a path `%40`); a `%`
    /// in a host; credentials in a scheme that takes none; or whatever the
    /// URL standard refuses.
    pub fn parse(location: &str) -> Result<Self, String> {
        let Some(scheme) = scheme(location) else {
            return Err("not a URL (expected scheme://host/path)".to_owned());
        };
        if location.chars().any(char::is_control) || location.trim() != location {
            return Err(
                "the URL holds a control character, or starts or ends with a space (write \
                 them percent-encoded)"
                    .to_owned(),
            );
        }
        if location.contains('\\') {
            return Err("the URL holds a raw `\\` (write it as %5C)".to_owned());
        }
        let rest = &location[scheme.len() + 3..];
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if authority.is_empty() {
            return Err("the URL names no host".to_owned());
        }
        if authority.contains(char::is_whitespace) {
            return Err(
                "a space before the path: write spaces in a user or password as %20".to_owned(),
            );
        }
        if authority.contains(['?', '#']) {
            return Err(
                "a `?` or `#` before the path: end the host with `/`, and write `?` and `#` \
                 in a user or password as %3F and %23"
                    .to_owned(),
            );
        }
        let url = url::Url::parse(location).map_err(|e| format!("not a valid URL: {e}"))?;
        if !url.has_host() || url.host_str().is_none_or(str::is_empty) {
            return Err("the URL names no host".to_owned());
        }
        let credentials = !url.username().is_empty() || url.password().is_some();
        let lower = scheme.to_ascii_lowercase();
        if credentials && !CREDENTIAL_SCHEMES.contains(&lower.as_str()) {
            return Err(format!(
                "credentials do not belong in a {lower}:// URL (give them to the server \
                 in its environment)"
            ));
        }
        if !authority.contains('@')
            && CREDENTIAL_SCHEMES.contains(&lower.as_str())
            && rest[authority.len()..]
                .split(['?', '#'])
                .next()
                .is_some_and(|p| p.contains('@'))
        {
            return Err(
                "an `@` in the path: write a `/` in a user or password as %2F, and an `@` \
                 of the path as %40"
                    .to_owned(),
            );
        }
        if !url.is_special() && url.host_str().is_some_and(|h| h.contains('%')) {
            return Err("a `%` in the host: write the host name as it is".to_owned());
        }
        let s3_key = (lower == "s3").then(|| rest[authority.len()..].to_owned());
        Ok(Self { url, s3_key })
    }

    /// The scheme, in lowercase.
    #[must_use]
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The host as the connection uses it: a name (in lowercase for
    /// `http(s)://` and `ftp://`, as written otherwise), or an IP address
    /// without brackets.
    #[must_use]
    pub fn host(&self) -> String {
        match self.url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Domain(d)) => d.to_owned(),
            None => String::new(),
        }
    }

    /// The host as the URL writes it (IPv6 addresses in brackets).
    #[must_use]
    pub fn host_str(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The host, for comparing two URLs: IP addresses in their canonical
    /// form, names in lowercase.
    #[must_use]
    pub fn host_key(&self) -> String {
        match self.ip() {
            Some(ip) => ip.to_string(),
            None => self.host().to_ascii_lowercase(),
        }
    }

    /// The host's IP address, when the host is one (`127.0.0.1`, `[::1]`;
    /// in any scheme).
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        match self.url.host()? {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(d) => d.parse().ok(),
        }
    }

    /// The port the URL gives, if any (a scheme's default port is dropped
    /// by the URL standard for `http(s)://` and `ftp://`).
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.url.port()
    }

    /// The port a connection uses: the URL's, or the scheme's default.
    #[must_use]
    pub fn port_or(&self, default: u16) -> u16 {
        self.url.port_or_known_default().unwrap_or(default)
    }

    /// The port a connection to this URL uses, by the known defaults of
    /// its scheme; `None` for a scheme without one (`s3://`).
    #[must_use]
    pub fn effective_port(&self) -> Option<u16> {
        self.url.port().or(match self.scheme() {
            "http" | "webdav" => Some(80),
            "https" | "webdavs" => Some(443),
            "ftp" | "ftps" => Some(21),
            "sftp" => Some(22),
            _ => None,
        })
    }

    /// `host[:port]` as the URL writes them.
    #[must_use]
    pub fn host_port(&self) -> String {
        match self.url.port() {
            Some(p) => format!("{}:{p}", self.host_str()),
            None => self.host_str().to_owned(),
        }
    }

    /// The user, percent-encoded as in the URL; `None` without one.
    #[must_use]
    pub fn user_encoded(&self) -> Option<&str> {
        (!self.url.username().is_empty()).then(|| self.url.username())
    }

    /// The user, decoded; `None` without one.
    #[must_use]
    pub fn user(&self) -> Option<String> {
        self.user_encoded().map(percent_decode)
    }

    /// The password, percent-encoded as in the URL; `None` without one.
    #[must_use]
    pub fn password_encoded(&self) -> Option<&str> {
        self.url.password()
    }

    /// The path, percent-encoded, starting with `/` (for `s3://`, the key as
    /// written after the bucket).
    #[must_use]
    pub fn path(&self) -> &str {
        self.s3_key.as_deref().unwrap_or_else(|| self.url.path())
    }

    /// The path, percent-decoded.
    #[must_use]
    pub fn decoded_path(&self) -> String {
        percent_decode(self.path())
    }

    /// The query, if any (never for `s3://`, whose key holds it).
    #[must_use]
    pub fn query(&self) -> Option<&str> {
        self.s3_key.is_none().then(|| self.url.query()).flatten()
    }

    /// The fragment, if any (never for `s3://`).
    #[must_use]
    pub fn fragment(&self) -> Option<&str> {
        self.s3_key.is_none().then(|| self.url.fragment()).flatten()
    }

    /// The parsed URL itself (with its password).
    #[must_use]
    pub fn url(&self) -> &url::Url {
        &self.url
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            // Cannot fail: the URL has a host.
            let _ = shown.set_password(Some("***"));
        }
        if QUERY_SECRET_SCHEMES.contains(&shown.scheme()) && shown.query().is_some() {
            shown.set_query(Some("***"));
        }
        match &self.s3_key {
            Some(key) => write!(f, "s3://{}{key}", self.host_str()),
            None => f.write_str(shown.as_str()),
        }
    }
}

/// The URL scheme of a location, if it has one (`C:\\…` is a path, not a
/// scheme).
#[must_use]
pub fn scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    (scheme.len() > 1
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(scheme)
}

/// `text` with `%XX` escapes decoded (bytes that do not form UTF-8 are
/// replaced).
#[must_use]
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a decoded path has a `.` or `..` segment (split at `/` and `\`).
#[must_use]
pub fn has_dot_segment(path: &str) -> bool {
    path.split(['/', '\\']).any(|seg| seg == ".." || seg == ".")
}

/// One allowed URL prefix (`https://data.example.com/exports/`,
/// `sftp://rota@files.example.com/data/`), parsed by [`RemoteUrl::parse`].
///
/// A URL lies under it when it has the prefix's scheme, host and port (a
/// scheme's default port counts as given; hosts compare as the connection
/// reads them: IP addresses canonical, names without case), and its decoded
/// path is the prefix's or continues it after a `/`. A prefix naming a user
/// admits only that user; a prefix naming none admits URLs without a user,
/// and URLs whose user brings its own password (so that a server's own key
/// or password is never tried under a name the prefix does not give).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPrefix {
    scheme: String,
    host: String,
    port: Option<u16>,
    user: Option<String>,
    /// Decoded; `/` when the entry has none.
    path: String,
    ip: Option<IpAddr>,
}

impl UrlPrefix {
    /// Parses an allow-list entry.
    ///
    /// # Errors
    /// What [`RemoteUrl::parse`] refuses, and a password, a query, a
    /// fragment or a `.`/`..` segment, with the entry redacted.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let url = RemoteUrl::parse(entry).map_err(|why| format!("{}: {why}", redact(entry)))?;
        if url.password_encoded().is_some() {
            return Err(format!("{url}: an allow-list entry names no password"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{url}: an allow-list entry has no `?` or `#` part"));
        }
        let path = url.decoded_path();
        if has_dot_segment(&path) {
            return Err(format!(
                "{url}: an allow-list entry has no `.` or `..` segments"
            ));
        }
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host: url.host_key(),
            port: url.effective_port(),
            user: url.user(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path
            },
            ip: url.ip(),
        })
    }

    /// The prefix's scheme.
    #[must_use]
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The prefix's host when it is an IP address.
    #[must_use]
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// Whether `url` lies under this prefix. A URL whose decoded path has a
    /// `.` or `..` segment lies under none.
    #[must_use]
    pub fn admits(&self, url: &RemoteUrl) -> bool {
        let path = url.decoded_path();
        if has_dot_segment(&path) {
            return false;
        }
        let user_ok = match (&self.user, url.user()) {
            (Some(pinned), given) => given.as_deref() == Some(pinned.as_str()),
            (None, None) => true,
            // A user with a password of its own (not the `***` of a listed
            // entry, which stands for a password given before).
            (None, Some(_)) => url
                .password_encoded()
                .is_some_and(|p| !p.is_empty() && p != "***"),
        };
        let path = if path.is_empty() { "/" } else { path.as_str() };
        self.scheme == url.scheme()
            && self.host == url.host_key()
            && self.port == url.effective_port()
            && user_ok
            && (path == self.path
                || (path.starts_with(&self.path)
                    && (self.path.ends_with('/') || path[self.path.len()..].starts_with('/'))))
    }
}

/// `location` as it may be shown, logged and stored: a URL with its
/// password, and the query of an HTTP(S) or WebDAV URL, replaced by `***`
/// (through [`RemoteUrl`]); a URL [`RemoteUrl::parse`] refuses with
/// everything before its last `@` hidden; a local path unchanged.
#[must_use]
pub fn redact(location: &str) -> String {
    if scheme(location).is_none() {
        // `http:/u:p@h` is a URL to the URL standard, though not to Rota.
        return match url::Url::parse(location) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.into()
            }
            _ => location.to_owned(),
        };
    }
    match RemoteUrl::parse(location) {
        Ok(url) => url.to_string(),
        Err(_) => redact_refused(location),
    }
}

/// A URL that does not parse, shown without anything that could be a
/// password: its scheme, then what follows its last `@` (or all of it
/// without one), cut at a query for the schemes whose query is secret.
fn redact_refused(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_owned();
    };
    let lower = scheme.to_ascii_lowercase();
    let rest = match rest.rsplit_once('@') {
        Some((_, after)) => format!("***@{after}"),
        None => rest.to_owned(),
    };
    let shown: String = rest
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match shown.split_once('?') {
        Some((before, _)) if QUERY_SECRET_SCHEMES.contains(&lower.as_str()) => {
            format!("{scheme}://{before}?***")
        }
        _ => format!("{scheme}://{shown}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{RemoteUrl, redact};

    #[test]
    fn parses_hosts_ports_users_and_paths() {
        let u =
            RemoteUrl::parse("sftp://bob:p%40ss@files.example.com:2222/data/x%20y/").expect("url");
        assert_eq!(u.scheme(), "sftp");
        assert_eq!(u.host(), "files.example.com");
        assert_eq!(u.port(), Some(2222));
        assert_eq!(u.user().as_deref(), Some("bob"));
        assert_eq!(u.password_encoded(), Some("p%40ss"));
        assert_eq!(u.path(), "/data/x%20y/");
        assert_eq!(u.decoded_path(), "/data/x y/");
        assert_eq!(
            u.to_string(),
            "sftp://bob:***@files.example.com:2222/data/x%20y/"
        );

        let v6 = RemoteUrl::parse("ftps://me@[::1]:2121/").expect("url");
        assert_eq!(
            (v6.host(), v6.host_str(), v6.port()),
            ("::1".to_owned(), "[::1]", Some(2121))
        );
        assert_eq!(v6.ip(), Some("::1".parse().expect("ip")));
        let v4 = RemoteUrl::parse("sftp://127.0.0.1/x").expect("url");
        assert_eq!(v4.ip(), Some("127.0.0.1".parse().expect("ip")));
        let odd = RemoteUrl::parse("http://0x7f.1/").expect("url");
        assert_eq!(odd.host(), "127.0.0.1", "as the connection reads it");

        let s3 = RemoteUrl::parse("s3://bucket/k@x:y/a b?c#d").expect("url");
        assert_eq!(s3.path(), "/k@x:y/a b?c#d", "keys are taken as written");
        assert_eq!(s3.to_string(), "s3://bucket/k@x:y/a b?c#d");
    }

    #[test]
    fn refuses_what_two_readers_could_split_differently() {
        for bad in [
            "http://127.0.0.1:18999?@hooks.example.com/",
            "https://10.0.0.5:9200#@hooks.example.com/",
            "https://127.0.0.1:7878\\@hooks.example.com/x",
            "sftp://bob:Summer#2026@files.example.com/data/",
            "sftp://bob:2026#x@files.example.com/data/",
            "https://bob:pa?ss@h/x",
            "ftp://bob:12/b@host/data",
            "sftp://h\t/x",
            "sftp://h x/y",
            " sftp://h/x",
            "sftp://%68ost/x",
            "s3://key:secret@bucket/x",
            "http:///x",
            "nope",
        ] {
            let err = RemoteUrl::parse(bad).expect_err(bad);
            assert!(!err.contains("2026") && !err.contains("pa?ss"), "{err}");
        }
    }

    #[test]
    fn store_urls_show_neither_password_nor_parameters() {
        for url in [
            "postgres://rota:s3cret@db.example.com:5432/jobs?sslmode=require",
            "postgresql://rota@db.example.com/jobs?password=s3cret&pool_size=4",
            "postgres://rota:s3cret@[::1/jobs",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("s3cret"), "{url} shown as {shown}");
            assert!(
                shown.contains("db.example.com") || shown.contains("::1"),
                "{shown}"
            );
        }
    }

    #[test]
    fn redacts_passwords_and_http_queries_however_written() {
        assert_eq!(redact("sftp://u:pw@h:22/d/"), "sftp://u:***@h:22/d/");
        assert_eq!(redact("https://u:p@ss@h/x?a=b@c"), "https://u:***@h/x?***");
        assert_eq!(redact("sftp://u@h/d"), "sftp://u@h/d");
        assert_eq!(redact("/tmp/a@b:c"), "/tmp/a@b:c");
        assert_eq!(redact("s3://bucket/k@x:y"), "s3://bucket/k@x:y");
        assert_eq!(redact("s3://bucket/a?b=c"), "s3://bucket/a?b=c");
        assert_eq!(
            redact("https://u:pw@h/f.csv?X-Amz-Signature=abc"),
            "https://u:***@h/f.csv?***"
        );
        for (url, secret) in [
            ("sftp://bob:Summer#2026@files.example.com/data/", "Summer"),
            ("sftp://bob:Sum?mer@files.example.com/data/", "mer"),
            ("https://bob:pa?ss@h/x", "ss"),
            ("https://bob:pa#ss@h/x", "ss"),
            ("ftp://bob:12/b@host/data", "12/b"),
            ("webdavs://bob:a\\b@host/data", "a\\b"),
            ("sftp://bob:a b@host/data", "a b"),
            ("sftp://bob:p%40ss@host/data", "p%40ss"),
            ("sftp://bob:p@ss@host/data", "ss@"),
        ] {
            let shown = redact(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
            assert!(
                shown.starts_with(&url[..url.find("://").expect("scheme") + 3]),
                "{url} -> {shown}"
            );
        }
    }
}
