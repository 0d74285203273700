//! Local files and directories: plain paths and `file://` URLs.
//!
//! # Symbolic links
//!
//! A directory walk never leaves the listed directory: a symbolic link is
//! followed only when its target (fully resolved) lies inside the listed
//! directory, so `latest -> 2026-01-01/` or `current.csv -> v3.csv` work,
//! and a link to a directory already walked (`a -> .`) is not walked again.
//! Links that lead out of the directory, or nowhere, are skipped with a
//! warning in the log. A file listed under a link appears under the link's
//! name (as `find -L` shows it). The listed path itself may be a link.
//!
//! Opening a listed file checks what was opened, not what the path said
//! when it was listed: a file whose open descriptor lies outside the
//! directory it was listed under (a directory swapped for a link between
//! listing and reading) is refused. A single file listed on its own is
//! read where its path resolved when it was listed.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use globset::GlobMatcher;
use rota_core::SourceError;
use std::sync::Arc;

use rota_core::source::{ByteStream, Entry, EntryStream, FileAt, ListRequest, ReadAt, Source};

/// Bytes per chunk read from a file.
const CHUNK: usize = 1 << 20;

/// The local file system: all of it, or only what lies (resolved) inside
/// some directories.
#[derive(Debug, Default, Clone)]
pub struct LocalSource {
    roots: Option<Arc<[PathBuf]>>,
}

impl LocalSource {
    /// A source that lists and reads only what lies, every link resolved,
    /// inside one of `roots` (resolved directories): what a server's
    /// allow-list names, checked again when the files are listed and
    /// opened, so that a directory swapped for a link after the check is
    /// not followed out.
    #[must_use]
    pub fn within(roots: Arc<[PathBuf]>) -> Self {
        Self { roots: Some(roots) }
    }

    /// Refuses `real` (a resolved path) when it lies outside the roots.
    fn confine(&self, real: &Path, location: &str) -> Result<(), SourceError> {
        match &self.roots {
            Some(roots) if !roots.iter().any(|root| real.starts_with(root)) => {
                Err(SourceError::AccessDenied {
                    location: location.to_owned(),
                    hint: format!(
                        "it resolves to {}, outside the directories this source may read",
                        real.display()
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The path a local location names: a plain path, or a `file://` URL with
/// the prefix taken off once. Whatever checks a location (the server's
/// allow-list) reads it with this too, so both see the same path.
#[must_use]
pub fn local_path(location: &str) -> &Path {
    Path::new(location.strip_prefix("file://").unwrap_or(location))
}

fn path_of(location: &str) -> PathBuf {
    local_path(location).to_path_buf()
}

fn io_error(location: &str, e: std::io::Error) -> SourceError {
    match e.kind() {
        std::io::ErrorKind::NotFound => SourceError::NotFound {
            location: location.to_owned(),
        },
        std::io::ErrorKind::PermissionDenied => SourceError::PermissionDenied {
            location: location.to_owned(),
        },
        _ => SourceError::Io {
            location: location.to_owned(),
            source: e,
        },
    }
}

fn entry(path: &Path, relative: String) -> Result<Entry, SourceError> {
    let location = path.to_string_lossy().into_owned();
    let meta = fs::metadata(path).map_err(|e| io_error(&location, e))?;
    let modified = meta.modified().ok().map(DateTime::<Utc>::from);
    Ok(Entry {
        etag: modified.map(|m| format!("{}-{}", m.timestamp_micros(), meta.len())),
        location,
        relative,
        size: Some(meta.len()),
        modified,
    })
}

/// A directory's identity (device and inode), to walk it once.
fn identity(meta: &fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// A depth-first walk that reads one directory at a time, sorted by name.
struct Walk {
    root: PathBuf,
    /// The listed directory, fully resolved: links must lead inside it.
    real_root: PathBuf,
    /// Directories entered, by identity, so that none is walked twice.
    visited: HashSet<(u64, u64)>,
    recursive: bool,
    glob: Option<GlobMatcher>,
    /// Directories entered, each with its remaining children (reversed, so
    /// `pop` yields them in order).
    stack: Vec<Vec<PathBuf>>,
    single: Option<Entry>,
}

impl Walk {
    fn children(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
        let location = dir.to_string_lossy().into_owned();
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| io_error(&location, e))?
            .map(|d| d.map(|d| d.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| io_error(&location, e))?;
        names.sort();
        names.reverse();
        Ok(names)
    }

    /// What the link at `path` leads to, when it stays inside the listed
    /// directory; `None` (with a warning) when it leads out or nowhere.
    fn follow(&self, path: &Path) -> Option<fs::Metadata> {
        let target = match path.canonicalize() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    location = %path.display(),
                    error = %e,
                    "skipping a symbolic link that leads nowhere"
                );
                return None;
            }
        };
        if !target.starts_with(&self.real_root) {
            tracing::warn!(
                location = %path.display(),
                root = %self.root.display(),
                "skipping a symbolic link that leads out of the listed directory"
            );
            return None;
        }
        fs::metadata(&target).ok()
    }

    fn relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }
}

#[async_trait]
impl EntryStream for Walk {
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError> {
        if let Some(single) = self.single.take() {
            return Ok(Some(single));
        }
        while let Some(top) = self.stack.last_mut() {
            let Some(path) = top.pop() else {
                self.stack.pop();
                continue;
            };
            let location = path.to_string_lossy().into_owned();
            let meta = fs::symlink_metadata(&path).map_err(|e| io_error(&location, e))?;
            let meta = if meta.file_type().is_symlink() {
                let Some(meta) = self.follow(&path) else {
                    continue;
                };
                meta
            } else {
                meta
            };
            if meta.is_dir() {
                if self.recursive {
                    if identity(&meta).is_some_and(|id| !self.visited.insert(id)) {
                        tracing::warn!(
                            location = %location,
                            "skipping a directory already walked (reached again through a symbolic link)"
                        );
                        continue;
                    }
                    let children = Self::children(&path)?;
                    self.stack.push(children);
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let relative = self.relative(&path);
            if self.glob.as_ref().is_some_and(|g| !g.is_match(&relative)) {
                continue;
            }
            return entry(&path, relative).map(Some);
        }
        Ok(None)
    }
}

struct FileStream {
    location: String,
    file: File,
    left: u64,
}

#[async_trait]
impl ByteStream for FileStream {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        if self.left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(CHUNK);
        let mut chunk = vec![0; want];
        let mut filled = 0;
        while filled < want {
            match self.file.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(&self.location, e)),
            }
        }
        if filled == 0 {
            if self.left == u64::MAX {
                return Ok(None);
            }
            return Err(SourceError::Io {
                location: self.location.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file ended before the requested range",
                ),
            });
        }
        chunk.truncate(filled);
        if self.left != u64::MAX {
            self.left -= filled as u64;
        }
        Ok(Some(chunk))
    }
}

#[async_trait]
impl Source for LocalSource {
    fn schemes(&self) -> &'static [&'static str] {
        &["file"]
    }

    async fn list(&self, req: &ListRequest) -> Result<Box<dyn EntryStream>, SourceError> {
        let root = path_of(&req.location);
        let meta = fs::metadata(&root).map_err(|e| io_error(&req.location, e))?;
        let glob = crate::glob_matcher(req)?;
        let real_root = root
            .canonicalize()
            .map_err(|e| io_error(&req.location, e))?;
        self.confine(&real_root, &req.location)?;
        let mut walk = Walk {
            root: root.clone(),
            real_root: real_root.clone(),
            visited: identity(&meta).into_iter().collect(),
            recursive: req.recursive,
            glob,
            stack: Vec::new(),
            single: None,
        };
        if meta.is_dir() {
            walk.stack.push(Walk::children(&root)?);
        } else {
            let name = root
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            // A link given as the path is read where it leads now.
            let linked = fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink());
            walk.single = Some(entry(if linked { &real_root } else { &root }, name)?);
        }
        Ok(Box::new(walk))
    }

    async fn open(
        &self,
        entry: &Entry,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn ByteStream>, SourceError> {
        let mut file = self.open_listed(entry)?;
        let left = match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start))
                    .map_err(|e| io_error(&entry.location, e))?;
                r.end.saturating_sub(r.start)
            }
            None => u64::MAX,
        };
        Ok(Box::new(FileStream {
            location: entry.location.clone(),
            file,
            left,
        }))
    }

    async fn random_access(&self, entry: &Entry) -> Result<Option<Arc<dyn ReadAt>>, SourceError> {
        let file = self.open_listed(entry)?;
        let size = file
            .metadata()
            .map_err(|e| io_error(&entry.location, e))?
            .len();
        Ok(Some(Arc::new(FileAt::with_size(file, size))))
    }
}

/// The directory `entry` was listed under: its location without its
/// relative path, or (for a file listed on its own) its parent.
fn listed_under(entry: &Entry) -> PathBuf {
    let path = path_of(&entry.location);
    let relative = Path::new(&entry.relative);
    let depth = relative.components().count();
    let mut root = path.clone();
    if depth > 0 && path.ends_with(relative) {
        for _ in 0..depth {
            root.pop();
        }
    } else {
        root.pop();
    }
    if root.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        root
    }
}

/// Where the open `file` (opened by `path`) is: the path the kernel gives
/// for its descriptor, else its resolved path when that is the same file.
fn opened_path(file: &File, path: &Path, location: &str) -> Result<PathBuf, SourceError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let Ok(p) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            && p.is_absolute()
        {
            return Ok(p);
        }
    }
    let resolved = path.canonicalize().map_err(|e| io_error(location, e))?;
    let now = fs::metadata(&resolved).map_err(|e| io_error(location, e))?;
    let opened = file.metadata().map_err(|e| io_error(location, e))?;
    if identity(&now) != identity(&opened) {
        return Err(SourceError::AccessDenied {
            location: location.to_owned(),
            hint: "the file was replaced while it was being opened; not read".to_owned(),
        });
    }
    Ok(resolved)
}

impl LocalSource {
    /// Opens a listed file, refusing it when what was opened lies outside
    /// the directory it was listed under (a directory or file swapped for a
    /// link to somewhere else after the listing), or outside the roots.
    fn open_listed(&self, entry: &Entry) -> Result<File, SourceError> {
        let (file, real) = open_listed(entry)?;
        self.confine(&real, &entry.location)?;
        Ok(file)
    }
}

/// Opens a listed file, refusing it when what was opened lies outside the
/// directory it was listed under; returns it with where it is.
fn open_listed(entry: &Entry) -> Result<(File, PathBuf), SourceError> {
    let location = &entry.location;
    let path = path_of(location);
    let file = File::open(&path).map_err(|e| io_error(location, e))?;
    let root = listed_under(entry)
        .canonicalize()
        .map_err(|e| io_error(location, e))?;
    let real = opened_path(&file, &path, location)?;
    if !real.starts_with(&root) {
        return Err(SourceError::AccessDenied {
            location: location.clone(),
            hint: format!(
                "it resolves outside {}, the directory it was listed under (a symbolic link); \
                 links out of a listed directory are not followed",
                root.display()
            ),
        });
    }
    Ok((file, real))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn list_all(req: ListRequest) -> Vec<String> {
        let mut s = LocalSource::default().list(&req).await.expect("list");
        let mut out = Vec::new();
        while let Some(e) = s.next_entry().await.expect("entry") {
            out.push(e.relative);
        }
        out
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        // A minimal executor: the local source never waits.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn lists_sorted_recursive_and_globbed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for p in [
            "b.csv",
            "a.csv",
            "sub/c.csv",
            "sub/d.txt",
            "sub/deeper/e.csv",
        ] {
            let full = dir.path().join(p);
            fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            fs::write(&full, p).expect("write");
        }
        let loc = dir.path().to_string_lossy().into_owned();
        let flat = block(list_all(ListRequest {
            location: loc.clone(),
            recursive: false,
            glob: None,
        }));
        assert_eq!(flat, ["a.csv", "b.csv"]);
        let all = block(list_all(ListRequest {
            location: loc.clone(),
            recursive: true,
            glob: None,
        }));
        assert_eq!(
            all,
            [
                "a.csv",
                "b.csv",
                "sub/c.csv",
                "sub/d.txt",
                "sub/deeper/e.csv"
            ]
        );
        let csv = block(list_all(ListRequest {
            location: loc,
            recursive: true,
            glob: Some("**/*.csv".into()),
        }));
        assert_eq!(csv, ["a.csv", "b.csv", "sub/c.csv", "sub/deeper/e.csv"]);
    }

    #[test]
    fn missing_path_is_not_found_and_ranges_read_exactly() {
        let err = block(LocalSource::default().list(&ListRequest {
            location: "/no/such/path".into(),
            ..Default::default()
        }));
        assert!(matches!(err, Err(SourceError::NotFound { .. })));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.bin");
        fs::write(&p, b"0123456789").expect("write");
        let e = entry(&p, "f.bin".into()).expect("entry");
        let mut s = block(LocalSource::default().open(&e, Some(2..5))).expect("open");
        assert_eq!(block(s.next_chunk()).expect("chunk"), Some(b"234".to_vec()));
        assert_eq!(block(s.next_chunk()).expect("end"), None);
    }

    fn listed(loc: &Path, recursive: bool, glob: Option<&str>) -> Vec<Entry> {
        let mut s = block(LocalSource::default().list(&ListRequest {
            location: loc.to_string_lossy().into_owned(),
            recursive,
            glob: glob.map(str::to_owned),
        }))
        .expect("list");
        let mut out = Vec::new();
        while let Some(e) = block(s.next_entry()).expect("entry") {
            out.push(e);
        }
        out
    }

    fn read(entry: &Entry) -> Result<Vec<u8>, SourceError> {
        let mut s = block(LocalSource::default().open(entry, None))?;
        let mut out = Vec::new();
        while let Some(chunk) = block(s.next_chunk())? {
            out.extend(chunk);
        }
        Ok(out)
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_the_file_system_root_lists_and_reads_nothing_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir(&data).expect("mkdir");
        fs::write(data.join("mine.csv"), "a\n").expect("write");
        std::os::unix::fs::symlink("/", data.join("root")).expect("symlink");
        let outside = dir.path().join("secret.csv");
        fs::write(&outside, "secret\n").expect("write");
        std::os::unix::fs::symlink(&outside, data.join("secret.csv")).expect("symlink");
        assert!(listed(&data, true, Some("root/etc/passwd")).is_empty());
        assert!(listed(&data, true, Some("root/**")).is_empty());
        let all: Vec<String> = listed(&data, true, None)
            .into_iter()
            .map(|e| e.relative)
            .collect();
        assert_eq!(all, ["mine.csv"], "links out of the directory are skipped");
    }

    #[cfg(unix)]
    #[test]
    fn links_back_into_the_walk_end_and_list_each_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir(d.join("sub")).expect("mkdir");
        fs::write(d.join("f.csv"), "a\n").expect("write");
        fs::write(d.join("sub/g.csv"), "b\n").expect("write");
        std::os::unix::fs::symlink(".", d.join("a")).expect("symlink");
        std::os::unix::fs::symlink(".", d.join("b")).expect("symlink");
        std::os::unix::fs::symlink("..", d.join("sub/up")).expect("symlink");
        let all: Vec<String> = listed(d, true, None)
            .into_iter()
            .map(|e| e.relative)
            .collect();
        assert_eq!(all, ["f.csv", "sub/g.csv"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_file_inside_the_directory_is_listed_and_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir(d.join("v3")).expect("mkdir");
        fs::write(d.join("v3/data.csv"), "x\n").expect("write");
        std::os::unix::fs::symlink("v3/data.csv", d.join("current.csv")).expect("symlink");
        let entries = listed(d, true, None);
        let names: Vec<&str> = entries.iter().map(|e| e.relative.as_str()).collect();
        assert_eq!(names, ["current.csv", "v3/data.csv"]);
        assert_eq!(read(&entries[0]).expect("read"), b"x\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_swapped_for_a_link_after_listing_is_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("sub")).expect("mkdir");
        fs::write(data.join("sub/passwd"), "mine\n").expect("write");
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        fs::write(elsewhere.join("passwd"), "not yours\n").expect("write");
        let entries = listed(&data, true, None);
        assert_eq!(entries.len(), 1);
        // Between the listing (the check) and the read, the directory
        // becomes a link out of the listed one.
        fs::remove_dir_all(data.join("sub")).expect("rm");
        std::os::unix::fs::symlink(&elsewhere, data.join("sub")).expect("symlink");
        let err = read(&entries[0]).expect_err("refused");
        assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
        assert!(err.to_string().contains("outside"), "{err}");
        let Err(err) = block(LocalSource::default().random_access(&entries[0])) else {
            panic!("refused in place too");
        };
        assert!(matches!(err, SourceError::AccessDenied { .. }), "{err:?}");
        // A file swapped for a link is refused the same way.
        fs::remove_file(data.join("sub")).expect("rm");
        fs::create_dir(data.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(elsewhere.join("passwd"), data.join("sub/passwd"))
            .expect("symlink");
        assert!(read(&entries[0]).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_source_held_to_roots_lists_and_reads_nothing_outside_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (inside, outside) = (dir.path().join("inside"), dir.path().join("outside"));
        fs::create_dir_all(&inside).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        fs::write(inside.join("a.csv"), "x\n1\n").expect("write");
        fs::write(outside.join("secret.csv"), "x\n2\n").expect("write");
        let roots: Arc<[PathBuf]> = vec![inside.canonicalize().expect("resolve")].into();
        let source = LocalSource::within(roots);
        let list = |location: &Path| {
            block(source.list(&ListRequest {
                location: location.to_string_lossy().into_owned(),
                recursive: true,
                ..ListRequest::default()
            }))
        };
        // Inside: listed and read.
        let mut s = list(&inside).expect("list inside");
        let entry = block(s.next_entry()).expect("entry").expect("a file");
        assert!(block(source.open(&entry, None)).is_ok());
        // Outside, and a directory inside swapped for a link to outside
        // (as after an allow-list check): neither is listed.
        assert!(matches!(
            list(&outside),
            Err(SourceError::AccessDenied { .. })
        ));
        std::os::unix::fs::symlink(&outside, inside.join("swapped")).expect("link");
        assert!(matches!(
            list(&inside.join("swapped")),
            Err(SourceError::AccessDenied { .. })
        ));
        // A listed file swapped for a link to outside before it is opened.
        fs::remove_file(inside.join("a.csv")).expect("remove");
        std::os::unix::fs::symlink(outside.join("secret.csv"), inside.join("a.csv")).expect("link");
        assert!(matches!(
            block(source.open(&entry, None)),
            Err(SourceError::AccessDenied { .. })
        ));
    }
}
