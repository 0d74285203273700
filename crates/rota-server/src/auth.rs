//! Who may do what: bearer tokens with scopes, and which sources a batch job
//! may make the server read.

use axum::http::{HeaderMap, StatusCode};

pub use crate::allow::AllowList;
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
}
