//! Local files and directories: plain paths and `file://` URLs.

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

/// The local file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalSource;

fn path_of(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
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

/// A depth-first walk that reads one directory at a time, sorted by name.
struct Walk {
    root: PathBuf,
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
            let meta = fs::metadata(&path).map_err(|e| io_error(&location, e))?;
            if meta.is_dir() {
                if self.recursive {
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
        let mut walk = Walk {
            root: root.clone(),
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
            walk.single = Some(entry(&root, name)?);
        }
        Ok(Box::new(walk))
    }

    async fn open(
        &self,
        entry: &Entry,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn ByteStream>, SourceError> {
        let path = path_of(&entry.location);
        let mut file = File::open(&path).map_err(|e| io_error(&entry.location, e))?;
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
        let path = path_of(&entry.location);
        let file = File::open(&path).map_err(|e| io_error(&entry.location, e))?;
        let size = file
            .metadata()
            .map_err(|e| io_error(&entry.location, e))?
            .len();
        Ok(Some(Arc::new(FileAt::with_size(file, size))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn list_all(req: ListRequest) -> Vec<String> {
        let mut s = LocalSource.list(&req).await.expect("list");
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
        let err = block(LocalSource.list(&ListRequest {
            location: "/no/such/path".into(),
            ..Default::default()
        }));
        assert!(matches!(err, Err(SourceError::NotFound { .. })));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.bin");
        fs::write(&p, b"0123456789").expect("write");
        let e = entry(&p, "f.bin".into()).expect("entry");
        let mut s = block(LocalSource.open(&e, Some(2..5))).expect("open");
        assert_eq!(block(s.next_chunk()).expect("chunk"), Some(b"234".to_vec()));
        assert_eq!(block(s.next_chunk()).expect("end"), None);
    }
}
