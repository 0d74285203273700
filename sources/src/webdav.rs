//! WebDAV listings: `webdav://host/dir/` and `webdavs://host/dir/`.
//!
//! Directories are walked one at a time with `PROPFIND` and `Depth: 1`,
//! since many servers refuse `Depth: infinity`; each directory's children
//! are sorted by name, so the walk is deterministic and only the directories
//! on the way down are held. Files are read as plain HTTP(S), with the
//! ranges and resumption of [`crate::object`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use globset::GlobMatcher;
use quick_xml::events::Event;
use rota_core::SourceError;
use rota_core::source::{Entry, EntryStream, ListRequest};

use crate::object::{Target, invalid, percent_decode, percent_encode};
use crate::{glob_matcher, redact};

/// What a `PROPFIND` asks for.
const PROPFIND_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/></D:prop></D:propfind>"#;

/// Largest `PROPFIND` answer read for one directory.
const MAX_ANSWER: usize = 256 << 20;

/// A WebDAV server: where to send `PROPFIND`, and with which credentials.
#[derive(Clone)]
pub(crate) struct Server {
    client: reqwest::Client,
    /// `http(s)://host:port`.
    wire_base: String,
}

/// One member of a directory, as a `PROPFIND` answer describes it.
#[derive(Debug, Default, PartialEq)]
struct Member {
    /// The decoded path on the server, without a trailing slash.
    path: String,
    collection: bool,
    size: Option<u64>,
    modified: Option<DateTime<Utc>>,
    etag: Option<String>,
}

impl Server {
    pub(crate) fn new(
        wire_base: &str,
        headers: reqwest::header::HeaderMap,
        location: &str,
        egress: &crate::Egress,
    ) -> Result<Self, SourceError> {
        let client = egress
            .configure(reqwest::Client::builder())
            .default_headers(headers)
            .https_only(wire_base.starts_with("https://"))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| invalid(location, format!("cannot configure WebDAV: {e}")))?;
        Ok(Self {
            client,
            wire_base: wire_base.to_owned(),
        })
    }

    /// The members of the collection (or the file) at `path` (decoded,
    /// starting with `/`): itself first, then its children sorted by name.
    async fn propfind(&self, path: &str, location: &str) -> Result<Vec<Member>, SourceError> {
        let encoded: Vec<String> = path.split('/').map(percent_encode).collect();
        let url = format!("{}{}", self.wire_base, encoded.join("/"));
        let method = reqwest::Method::from_bytes(b"PROPFIND")
            .map_err(|e| invalid(location, e.to_string()))?;
        let remote = |reason: String| SourceError::Remote {
            location: redact(location),
            reason,
        };
        let response = self
            .client
            .request(method, &url)
            .header("Depth", "1")
            .header("Content-Type", "application/xml")
            .body(PROPFIND_BODY)
            .send()
            .await
            .map_err(|e| remote(format!("PROPFIND failed: {}", without_url(&e))))?;
        let status = response.status();
        match status.as_u16() {
            207 => {}
            300..=399 => {
                return Err(remote(
                    crate::egress::Redirected::from_location(
                        response.headers().get(reqwest::header::LOCATION),
                    )
                    .to_string(),
                ));
            }
            404 => {
                return Err(SourceError::NotFound {
                    location: redact(location),
                });
            }
            401 | 403 => {
                return Err(SourceError::AccessDenied {
                    location: redact(location),
                    hint: format!(
                        "the server answered {status}; give credentials as \
                         webdavs://user:password@host/… or check the ones given"
                    ),
                });
            }
            405 | 501 => {
                return Err(remote(format!(
                    "the server answered {status} to PROPFIND: it does not speak WebDAV here \
                     (for a single file use http(s)://)"
                )));
            }
            _ => return Err(remote(format!("the server answered {status} to PROPFIND"))),
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| remote(format!("reading the PROPFIND answer: {}", without_url(&e))))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(remote("the PROPFIND answer is over 256 MiB".to_owned()));
            }
            body.extend_from_slice(&chunk);
        }
        let mut members = parse_multistatus(&body)
            .map_err(|e| remote(format!("a PROPFIND answer that does not parse: {e}")))?;
        let own = normalize(path);
        let Some(at) = members.iter().position(|m| m.path == own) else {
            return Err(remote(format!(
                "the PROPFIND answer does not describe {own} itself"
            )));
        };
        let this = members.remove(at);
        let prefix = if own == "/" {
            own.clone()
        } else {
            format!("{own}/")
        };
        members.retain(|m| {
            m.path
                .strip_prefix(&prefix)
                .is_some_and(|name| !name.is_empty() && !name.contains('/'))
        });
        members.sort_by(|a, b| a.path.cmp(&b.path));
        members.insert(0, this);
        Ok(members)
    }

    /// Lists `target` (a directory or one file) as `req` asks.
    pub(crate) async fn list(
        &self,
        target: &Target,
        req: &ListRequest,
    ) -> Result<Box<dyn EntryStream>, SourceError> {
        let glob = glob_matcher(req)?;
        let root = format!("/{}", percent_decode(target.path.as_ref()));
        let mut members = self.propfind(&root, &req.location).await?;
        let this = members.remove(0);
        let mut walk = Walk {
            server: self.clone(),
            base: target.base.clone(),
            root: this.path.clone(),
            recursive: req.recursive,
            glob,
            stack: Vec::new(),
        };
        if this.collection {
            members.reverse();
            walk.stack.push(members);
        } else {
            // One file: listed as itself, by its name.
            walk.root = this
                .path
                .rsplit_once('/')
                .map(|(dir, _)| normalize(dir))
                .unwrap_or_default();
            walk.glob = None;
            walk.stack.push(vec![this]);
        }
        Ok(Box::new(walk))
    }
}

/// A reqwest error's text without the URL it names (which may carry a query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<crate::egress::Refused>() {
            return refused.to_string();
        }
        source = s.source();
    }
    text.trim().trim_end_matches(['(', ')', ' ']).to_owned()
}

/// A depth-first walk, one `PROPFIND` per directory entered.
struct Walk {
    server: Server,
    /// `webdav://host` or `webdavs://host`.
    base: String,
    /// The decoded path of the listed directory (no trailing slash).
    root: String,
    recursive: bool,
    glob: Option<GlobMatcher>,
    /// Directories entered, each with its remaining members, reversed.
    stack: Vec<Vec<Member>>,
}

#[async_trait]
impl EntryStream for Walk {
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        while let Some(top) = self.stack.last_mut() {
            let Some(member) = top.pop() else {
                self.stack.pop();
                continue;
            };
            if member.collection {
                if self.recursive {
                    let location = format!("{}{}", self.base, encode_path(&member.path));
                    let mut children = self.server.propfind(&member.path, &location).await?;
                    children.remove(0);
                    children.reverse();
                    self.stack.push(children);
                }
                continue;
            }
            let relative = member
                .path
                .strip_prefix(self.root.trim_end_matches('/'))
                .map_or(member.path.as_str(), |r| r.trim_start_matches('/'))
                .to_owned();
            if self.glob.as_ref().is_some_and(|g| !g.is_match(&relative)) {
                continue;
            }
            return Ok(Some(Entry {
                location: format!("{}{}", self.base, encode_path(&member.path)),
                relative,
                size: member.size,
                modified: member.modified,
                etag: member.etag,
            }));
        }
        Ok(None)
    }
}

fn encode_path(path: &str) -> String {
    path.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// The members a `207 Multi-Status` answer describes. Element names are
/// matched without their namespace prefix (servers pick their own).
fn parse_multistatus(body: &[u8]) -> Result<Vec<Member>, String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut members = Vec::new();
    let mut current: Option<Member> = None;
    let mut field: Option<String> = None;
    let mut text = String::new();
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("{e} at byte {}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let name = e.local_name().into_inner().to_owned();
                match name.as_str() {
                    "response" => current = Some(Member::default()),
                    "collection" => {
                        if let Some(m) = &mut current {
                            m.collection = true;
                        }
                    }
                    _ => {
                        field = Some(name);
                        text.clear();
                    }
                }
            }
            Event::Empty(e) => {
                if e.local_name().into_inner() == "collection"
                    && let Some(m) = &mut current
                {
                    m.collection = true;
                }
            }
            Event::Text(t) => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    _ => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(format!("undeclared entity &{other};")),
                    },
                };
                text.push(c);
            }
            Event::End(e) => {
                let name = e.local_name().into_inner().to_owned();
                if name == "response" {
                    if let Some(m) = current.take()
                        && !m.path.is_empty()
                    {
                        members.push(m);
                    }
                } else if let Some(m) = &mut current
                    && field.as_deref() == Some(name.as_str())
                {
                    let value = text.trim();
                    match name.as_str() {
                        "href" => m.path = href_path(value),
                        "getcontentlength" => m.size = value.parse().ok(),
                        "getlastmodified" => {
                            m.modified = DateTime::parse_from_rfc2822(value)
                                .ok()
                                .map(|t| t.with_timezone(&Utc));
                        }
                        "getetag" if !value.is_empty() => m.etag = Some(value.to_owned()),
                        _ => {}
                    }
                    field = None;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(members)
}

/// The decoded path of an `href`, which may be a full URL or a path.
fn href_path(href: &str) -> String {
    let path = match href.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => href,
    };
    normalize(&percent_decode(path))
}

/// A path without its trailing slash; `/` for the root.
fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_answers_parse_whatever_the_prefix() {
        let body = br#"<?xml version="1.0" encoding="utf-8" ?>
<D:multistatus xmlns:D="DAV:">
<D:response><D:href>/tree/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype>
<D:getlastmodified>Mon, 23 Nov 2026 02:00:00 GMT</D:getlastmodified></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>
<D:response><D:href>http://h:8/tree/odd%20names/100%25.csv</D:href><D:propstat><D:prop><D:resourcetype/>
<D:getcontentlength>12</D:getcontentlength><D:getetag>"abc"</D:getetag></D:prop></D:propstat></D:response>
</D:multistatus>"#;
        let members = parse_multistatus(body).expect("parse");
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].path, "/tree");
        assert!(members[0].collection);
        assert!(members[0].modified.is_some());
        assert_eq!(members[1].path, "/tree/odd names/100%.csv");
        assert_eq!(members[1].size, Some(12));
        assert_eq!(members[1].etag.as_deref(), Some("\"abc\""));
        assert!(!members[1].collection);

        let lower = br#"<multistatus xmlns="DAV:"><response><href>/a&amp;b</href><propstat><prop><resourcetype/></prop></propstat></response></multistatus>"#;
        assert_eq!(parse_multistatus(lower).expect("parse")[0].path, "/a&b");
        assert!(parse_multistatus(b"<a></b>").is_err());
    }
}
