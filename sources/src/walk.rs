//! A depth-first walk of a file server's tree (SFTP, FTP), one directory
//! listed at a time, children in name order, files turned into entries with
//! paths relative to the listed directory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use globset::GlobMatcher;
use rota_core::SourceError;
use rota_core::source::{Entry, EntryStream, ListRequest};

/// A file or directory a server listed.
#[derive(Debug)]
pub(crate) struct Found {
    /// Its absolute path on the server.
    pub(crate) path: String,
    /// Whether it is a directory.
    pub(crate) dir: bool,
    /// Its size, when the server said.
    pub(crate) size: Option<u64>,
    /// Its modification time, when the server said.
    pub(crate) modified: Option<DateTime<Utc>>,
}

/// The path of `name` in the directory `dir` (absolute, `/` for the root).
pub(crate) fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The path of `path` relative to the listed directory `root` (both
/// absolute, `root` without a trailing slash).
fn relative_to(root: &str, path: &str) -> String {
    path.strip_prefix(root.trim_end_matches('/'))
        .map_or(path, |r| r.trim_start_matches('/'))
        .to_owned()
}

/// What a walk asks of its server.
#[async_trait]
pub(crate) trait Lister: Send {
    /// The children of the directory `dir`, in any order.
    async fn children(&mut self, dir: &str) -> Result<Vec<Found>, SourceError>;

    /// The location of `path` on the server, as entries show it.
    fn location_of(&self, path: &str) -> String;

    /// Called once the walk has yielded its last entry.
    fn done(&mut self) {}
}

/// The walk from one listed path: a directory, or a single file.
pub(crate) struct Walk<L> {
    lister: L,
    /// The listed directory (no trailing slash; `/` for the root).
    root: String,
    recursive: bool,
    glob: Option<GlobMatcher>,
    /// Directories entered, each with its remaining children (reversed, so
    /// `pop` yields them in name order).
    stack: Vec<Vec<Found>>,
}

impl<L: Lister> Walk<L> {
    /// Starts at `top`, what the server says is at the listed path.
    pub(crate) async fn start(
        mut lister: L,
        top: Found,
        req: &ListRequest,
    ) -> Result<Self, SourceError> {
        if top.dir {
            let children = sorted(lister.children(&top.path).await?);
            return Ok(Self {
                lister,
                root: top.path,
                recursive: req.recursive,
                glob: crate::glob_matcher(req)?,
                stack: vec![children],
            });
        }
        // A file is listed as itself, whatever the glob.
        let root = top
            .path
            .rsplit_once('/')
            .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
            .to_owned();
        Ok(Self {
            lister,
            root,
            recursive: false,
            glob: None,
            stack: vec![vec![top]],
        })
    }
}

fn sorted(mut children: Vec<Found>) -> Vec<Found> {
    children.sort_by(|a, b| b.path.cmp(&a.path));
    children
}

#[async_trait]
impl<L: Lister> EntryStream for Walk<L> {
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        while let Some(top) = self.stack.last_mut() {
            let Some(f) = top.pop() else {
                self.stack.pop();
                continue;
            };
            if f.dir {
                if self.recursive {
                    let children = sorted(self.lister.children(&f.path).await?);
                    self.stack.push(children);
                }
                continue;
            }
            let relative = relative_to(&self.root, &f.path);
            if self.glob.as_ref().is_some_and(|g| !g.is_match(&relative)) {
                continue;
            }
            return Ok(Some(Entry {
                location: self.lister.location_of(&f.path),
                relative,
                etag: match (f.modified, f.size) {
                    (Some(m), Some(s)) => Some(format!("{}-{s}", m.timestamp())),
                    _ => None,
                },
                size: f.size,
                modified: f.modified,
            }));
        }
        self.lister.done();
        Ok(None)
    }
}
