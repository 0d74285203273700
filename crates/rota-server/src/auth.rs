//! Who may do what: bearer tokens with scopes, and which sources a batch job
//! may make the server read.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, StatusCode};

use crate::error::ApiError;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Schedule jobs, read and cancel them.
    Schedule,
    /// Claim tasks and report on them.
    Work,
    /// Everything, registering specs included.
    Admin,
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "schedule" => Ok(Self::Schedule),
            "work" => Ok(Self::Work),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown scope '{other}' (expected schedule, work or admin)"
            )),
        }
    }
}

/// The shortest secret a tokens file may hold.
pub const MIN_TOKEN_LEN: usize = 16;

/// One accepted bearer token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token {
    /// The SHA-256 of the secret: what requests are compared with (in time
    /// that does not depend on the secret, its length included).
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The tokens a server accepts. Empty: authentication is off.
#[derive(Clone, Debug, Default)]
pub struct Tokens(Vec<Token>);

impl Tokens {
    /// Tokens from the text of a tokens file: one per line, the secret (at
    /// least [`MIN_TOKEN_LEN`] characters, not starting with `#`) then its
    /// scopes separated by commas (`s3cr3t… schedule,work`); blank lines and
    /// lines starting with `#` are ignored.
    ///
    /// # Errors
    /// A line without scopes, with an unknown scope or with a short secret,
    /// named by its number (never with the secret in the message); a text
    /// with no token at all (which would turn authentication off).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((secret, scopes)) = line.split_once(char::is_whitespace) else {
                return Err(format!(
                    "line {}: expected a token then its scopes (schedule, work, admin)",
                    n + 1
                ));
            };
            let scopes = scopes
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<Result<Vec<Scope>, _>>()
                .map_err(|e| format!("line {}: {e}", n + 1))?;
            if secret.chars().count() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {}: the token is shorter than {MIN_TOKEN_LEN} characters (make one \
                     with: openssl rand -hex 32)",
                    n + 1
                ));
            }
            tokens.push(Token::new(secret, scopes));
        }
        if tokens.is_empty() {
            return Err(
                "no token in it (a server without tokens is started without \
                 --tokens)"
                    .to_owned(),
            );
        }
        Ok(Self(tokens))
    }

    /// One token with the admin scope, made of 32 random bytes, for a server
    /// started without tokens; returns the tokens and the secret to show
    /// once.
    #[must_use]
    pub fn generate() -> (Self, String) {
        let bytes: [u8; 32] = rand::random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        (Self(vec![Token::new(&secret, vec![Scope::Admin])]), secret)
    }

    /// Whether authentication is on.
    #[must_use]
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Checks the request's bearer token against `scope` (an admin token
    /// passes every check; `None` asks only for a valid token).
    ///
    /// # Errors
    /// 401 without a valid token, 403 with one that lacks the scope.
    pub fn check(&self, headers: &HeaderMap, scope: Option<Scope>) -> Result<(), ApiError> {
        self.caller(headers, scope).map(drop)
    }

    /// Who sends the request, once its token passes [`Tokens::check`]:
    /// what owns the uploads and idempotency keys it makes.
    ///
    /// # Errors
    /// As [`Tokens::check`].
    pub fn caller(&self, headers: &HeaderMap, scope: Option<Scope>) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller {
                id: "local".to_owned(),
                admin: true,
            });
        }
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(kind, _)| kind.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send a token: Authorization: Bearer TOKEN",
                )
            })?;
        let given = digest(given);
        // Every token is compared, so the time does not tell which matched.
        let token = self
            .0
            .iter()
            .fold(None, |found, t| {
                if same(&t.digest, &given) {
                    Some(t)
                } else {
                    found
                }
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the token is not valid",
                )
            })?;
        match scope {
            Some(scope)
                if !token.scopes.contains(&scope) && !token.scopes.contains(&Scope::Admin) =>
            {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("the token lacks the {scope:?} scope").to_lowercase(),
                ))
            }
            _ => Ok(Caller {
                id: token.id(),
                admin: token.scopes.contains(&Scope::Admin),
            }),
        }
    }
}

impl Token {
    fn new(secret: &str, scopes: Vec<Scope>) -> Self {
        Self {
            digest: digest(secret),
            scopes,
        }
    }

    /// A name for the token that does not reveal it: the first 16 hex
    /// digits of a SHA-256 of its secret's digest.
    fn id(&self) -> String {
        digest_bytes(&self.digest)[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The SHA-256 of a secret.
fn digest(secret: &str) -> [u8; 32] {
    digest_bytes(secret.as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Who sent a request: the token it carried, named without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`local` when authentication is off): the same for
    /// every request made with one token, and never the secret.
    pub id: String,
    /// Whether the token has the admin scope (which sees what every token
    /// made).
    pub admin: bool,
}

impl Caller {
    /// Whether this caller may see or change what `owner` made.
    #[must_use]
    pub fn owns(&self, owner: &str) -> bool {
        self.admin || self.id == owner
    }
}

/// Compares two digests in time that does not depend on their contents.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The sources batch jobs may read: URL prefixes (`s3://bucket/`,
/// `https://data.example.com/`) and local directories. Empty: none.
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    urls: Vec<String>,
    roots: Vec<PathBuf>,
}

impl AllowList {
    /// An allow-list of `entries`: URL prefixes and local directories.
    ///
    /// # Errors
    /// A local directory that does not exist.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut list = Self::default();
        for e in entries {
            if rota_sources::scheme(e).is_some_and(|s| s != "file") {
                list.urls.push(e.clone());
            } else {
                let path = Path::new(e.trim_start_matches("file://"));
                let root = path
                    .canonicalize()
                    .map_err(|err| format!("allowed source {}: {err}", path.display()))?;
                list.roots.push(root);
            }
        }
        Ok(list)
    }

    /// Checks that a batch job may read `location`.
    ///
    /// # Errors
    /// 403 with the reason when it may not.
    pub fn check(&self, location: &str) -> Result<(), ApiError> {
        let refuse = |why: String| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "source_not_allowed",
                format!("{}: {why}", rota_sources::redact(location)),
            )
        };
        match rota_sources::scheme(location) {
            Some(s) if s != "file" => {
                // Compare without userinfo (credentials do not change the
                // place), and decoded: sources decode `%2e%2e` to `..`.
                let bare = decoded(&strip_userinfo(location));
                if self
                    .urls
                    .iter()
                    .any(|p| under(&bare, &decoded(&strip_userinfo(p))))
                    && !has_dot_segment(&bare)
                {
                    Ok(())
                } else {
                    Err(refuse(
                        "this server does not read from there (start it with --allow-source \
                         naming the URL prefix)"
                            .to_owned(),
                    ))
                }
            }
            _ if has_dot_segment(location) => Err(refuse(
                "a local path with `.` or `..` segments is not read: give it resolved, under a \
                 directory named by --allow-source"
                    .to_owned(),
            )),
            _ => {
                let path = Path::new(location.trim_start_matches("file://"));
                // The deepest existing ancestor, resolved: `..` and links
                // cannot escape an allowed root.
                let mut probe = path.to_path_buf();
                let resolved = loop {
                    if let Ok(r) = probe.canonicalize() {
                        break Some(r);
                    }
                    if !probe.pop() {
                        break None;
                    }
                };
                match resolved {
                    Some(r)
                        if path.is_absolute()
                            && self.roots.iter().any(|root| r.starts_with(root)) =>
                    {
                        Ok(())
                    }
                    _ => Err(refuse(
                        "this server does not read that local path (start it with \
                         --allow-source naming a directory that holds it; paths must be absolute)"
                            .to_owned(),
                    )),
                }
            }
        }
    }
}

/// Whether `location` lies under the allowed `prefix`: equal to it, or
/// continuing it after a `/` (so `https://h.example.com` does not allow
/// `https://h.example.com.evil.org/`, nor `s3://b/exports` `s3://b/exports-x`).
/// Schemes compare without case.
fn under(location: &str, prefix: &str) -> bool {
    let (location, prefix) = (lower_scheme(location), lower_scheme(prefix));
    location == prefix
        || (location.starts_with(&prefix)
            && (prefix.ends_with('/') || location[prefix.len()..].starts_with('/')))
}

/// `url` with its scheme in lowercase.
fn lower_scheme(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => url.to_owned(),
    }
}

/// Whether a path or URL has a `.` or `..` segment.
fn has_dot_segment(location: &str) -> bool {
    let path = location
        .split_once("://")
        .map_or(location, |(_, rest)| rest);
    path.split(['/', '\\']).any(|seg| seg == ".." || seg == ".")
}

/// `text` with `%XX` escapes decoded (bytes that do not form UTF-8 are
/// replaced, which only makes a location less likely to match).
fn decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
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

/// `location` without a `user[:password]@` part.
fn strip_userinfo(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else {
        return location.to_owned();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[end..]),
        None => location.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_check_scopes() {
        let tokens = Tokens::parse(
            "# comment\nabc-0123456789abcdef schedule\n\nxyz-0123456789abcdef work,schedule\n\
             root-0123456789abcdef admin\n",
        )
        .expect("parse");
        let headers = |t: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
            h
        };
        assert!(
            tokens
                .check(&headers("abc-0123456789abcdef"), Some(Scope::Schedule))
                .is_ok()
        );
        assert_eq!(
            tokens
                .check(&headers("abc-0123456789abcdef"), Some(Scope::Work))
                .expect_err("no scope")
                .status,
            StatusCode::FORBIDDEN
        );
        assert!(
            tokens
                .check(&headers("root-0123456789abcdef"), Some(Scope::Work))
                .is_ok(),
            "admin passes"
        );
        assert_eq!(
            tokens
                .check(&headers("nope"), None)
                .expect_err("bad token")
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            tokens
                .check(&HeaderMap::new(), None)
                .expect_err("no token")
                .status,
            StatusCode::UNAUTHORIZED
        );
        let err = Tokens::parse("secret-value-0123456789 bogus\n").expect_err("bad scope");
        assert!(
            err.contains("line 1") && !err.contains("secret-value"),
            "{err}"
        );
        assert!(
            Tokens::default()
                .check(&HeaderMap::new(), Some(Scope::Admin))
                .is_ok(),
            "off"
        );
        // A file that would turn authentication off, or holds a guessable
        // secret, is refused, without the secret in the message.
        assert!(Tokens::parse("# only a comment\n\n").is_err());
        let short = Tokens::parse("hunter2 admin\n").expect_err("short");
        assert!(
            short.contains("line 1") && !short.contains("hunter2"),
            "{short}"
        );
        // `bearer` is a scheme name, whatever its case.
        let mut lower = HeaderMap::new();
        lower.insert(
            "authorization",
            "bearer abc-0123456789abcdef".parse().expect("header"),
        );
        assert!(tokens.check(&lower, Some(Scope::Schedule)).is_ok());
        // Two tokens are two callers; neither is named by its secret.
        let a = tokens
            .caller(&headers("abc-0123456789abcdef"), None)
            .expect("a");
        let b = tokens
            .caller(&headers("xyz-0123456789abcdef"), None)
            .expect("b");
        assert_ne!(a.id, b.id);
        assert!(!a.id.contains("abc") && !a.admin && !a.owns(&b.id));
        let root = tokens
            .caller(&headers("root-0123456789abcdef"), None)
            .expect("root");
        assert!(root.owns(&a.id));
        let (generated, secret) = Tokens::generate();
        assert!(
            secret.len() == 64
                && generated
                    .check(&headers(&secret), Some(Scope::Admin))
                    .is_ok()
        );
        assert!(generated.check(&HeaderMap::new(), None).is_err());
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
}
