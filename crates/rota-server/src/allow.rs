//! Where the server may reach: the sources batch jobs may read and the URLs
//! callbacks may point at.
//!
//! URLs are read once, by [`rota_sources::RemoteUrl`] (the WHATWG parser the
//! connections use), and compared by scheme, host, port, user and decoded
//! path, so that what is checked is what is reached.

use std::net::IpAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use rota_url::{RemoteUrl, UrlPrefix, has_dot_segment};

use crate::error::ApiError;

/// The sources batch jobs may read (URL prefixes such as `s3://bucket/`,
/// `https://data.example.com/`, `sftp://rota@files.example.com/data/`, and
/// local directories), or the URL prefixes callbacks may point at. Empty:
/// none.
///
/// A URL is allowed when an entry has its scheme, host and port (a scheme's
/// default port counts as given), and the URL's decoded path is the entry's
/// or continues it after a `/`. An entry naming a user allows only that
/// user; an entry naming none allows URLs without a user, and URLs whose
/// user brings its own password (never the server's key or password under
/// another name).
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    urls: Vec<UrlPrefix>,
    roots: Vec<PathBuf>,
}

impl AllowList {
    /// The local directories it allows, resolved.
    #[must_use]
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// An allow-list of `entries`: URL prefixes and local directories.
    ///
    /// # Errors
    /// A local directory that does not exist, or a URL that does not parse,
    /// holds a password, a query or a `.`/`..` segment.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut list = Self::default();
        for e in entries {
            if rota_sources::scheme(e).is_some_and(|s| !s.eq_ignore_ascii_case("file")) {
                list.urls
                    .push(UrlPrefix::parse(e).map_err(|e| format!("allowed URL {e}"))?);
            } else {
                let path = rota_sources::local_path(e);
                let root = path
                    .canonicalize()
                    .map_err(|err| format!("allowed source {}: {err}", path.display()))?;
                list.roots.push(root);
            }
        }
        Ok(list)
    }

    /// The IP addresses entries name as their host (`http://127.0.0.1:8080/`):
    /// the addresses a connection may reach even where the egress filter
    /// refuses its range.
    #[must_use]
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.urls.iter().filter_map(UrlPrefix::ip).collect()
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
            Some(s) if !s.eq_ignore_ascii_case("file") => {
                let url = RemoteUrl::parse(location).map_err(&refuse)?;
                if has_dot_segment(&url.decoded_path()) {
                    return Err(refuse(
                        "a path with `.` or `..` segments (written or percent-encoded) is not \
                         read: give it resolved"
                            .to_owned(),
                    ));
                }
                if self.urls.iter().any(|p| p.admits(&url)) {
                    Ok(())
                } else {
                    Err(refuse(
                        "this server does not read from there (start it with --allow-source \
                         naming the URL prefix, and the user when the URL names one without \
                         its password)"
                            .to_owned(),
                    ))
                }
            }
            _ if has_dot_segment(&rota_sources::local_path(location).to_string_lossy()) => Err(refuse(
                "a local path with `.` or `..` segments is not read: give it resolved, under a \
                 directory named by --allow-source"
                    .to_owned(),
            )),
            _ => {
                let path = rota_sources::local_path(location);
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

    /// Checks that a callback may point at `url`: an `http(s)://` URL in
    /// its canonical form (as the URL standard writes it, which is how it
    /// is sent), without credentials, under an entry.
    ///
    /// # Errors
    /// 400 for a URL that is not an http(s) URL in canonical form or has
    /// credentials; 403 for one no entry allows.
    pub fn check_callback(&self, url: &str) -> Result<(), ApiError> {
        let shown = rota_sources::redact(url);
        let invalid = |why: &str| ApiError::invalid(format!("callback {shown}: {why}"));
        let parsed = RemoteUrl::parse(url).map_err(|why| invalid(&why))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid("a callback is an http or https URL"));
        }
        if parsed.user_encoded().is_some() || parsed.password_encoded().is_some() {
            return Err(invalid(
                "a callback URL carries no user or password (put a secret in its path or \
                 query; deliveries are signed)",
            ));
        }
        if parsed.url().as_str() != url {
            return Err(invalid(&format!(
                "give the URL in its canonical form: {parsed}"
            )));
        }
        if self.urls.iter().any(|p| p.admits(&parsed)) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "callback_not_allowed",
                format!(
                    "callback {shown}: this server posts callbacks only to the URL prefixes \
                     given with --allow-callback"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
