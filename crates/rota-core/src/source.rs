//! Sources: where bytes come from.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::SourceError;

/// One object a source can open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its full location (path or URL, secrets redacted), as it is opened.
    pub location: String,
    /// Its path relative to the listed root, with `/` separators; stable
    /// across sources serving the same tree, so it is what task keys use.
    pub relative: String,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// Last modification, when known.
    pub modified: Option<DateTime<Utc>>,
    /// A version tag (ETag, mtime+size), when known.
    pub etag: Option<String>,
}

/// What to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    /// A file (listed as itself) or a directory.
    pub location: String,
    /// Descend into subdirectories.
    pub recursive: bool,
    /// Only entries whose relative path matches this glob.
    pub glob: Option<String>,
}

/// A stream of entries.
#[async_trait]
pub trait EntryStream: Send {
    /// The next entry, or `None` at the end.
    async fn next_entry(&mut self) -> Result<Option<Entry>, SourceError>;
}

/// A stream of bytes.
#[async_trait]
pub trait ByteStream: Send {
    /// The next chunk, or `None` at the end. Chunks are never empty.
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError>;
}

/// Random access to one object's bytes, for formats that read an index
/// first (a Parquet footer) and then only the parts they need.
///
/// Calls block: decoders call them from their own thread.
pub trait ReadAt: Send + Sync + std::fmt::Debug {
    /// The object's size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes at `offset`.
    ///
    /// # Errors
    /// A failed read, or fewer than `buf.len()` bytes there.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// Random access to a local file.
#[derive(Debug)]
pub struct FileAt {
    file: File,
    size: u64,
}

impl FileAt {
    /// Random access to `file`, known to be `size` bytes long.
    pub fn with_size(file: File, size: u64) -> Self {
        Self { file, size }
    }

    /// Random access to `file`, whose size is taken now.
    ///
    /// # Errors
    /// When the file's metadata cannot be read.
    pub fn new(file: File) -> std::io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(Self { file, size })
    }
}

impl ReadAt for FileAt {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
}

/// A place bytes come from, addressed by URL scheme.
///
/// # Contract
///
/// - [`Source::list`] streams entries as it finds them, in a deterministic
///   order (the local source: by name within each directory; S3: by key),
///   without materialising the whole listing. A location naming a single
///   object lists that object. Relative paths are the same whatever source
///   serves a tree, since task keys are made from them.
/// - [`Source::open`] streams the object's bytes (or the given range); a stream
///   ends with `None` only when every byte was delivered — a short read is an
///   error, never a silent end.
/// - Errors are typed ([`SourceError::NotFound`], [`SourceError::PermissionDenied`],
///   [`SourceError::AccessDenied`], [`SourceError::Remote`]) and carry the
///   location with any credential redacted, and no server response body.
#[async_trait]
pub trait Source: Send + Sync {
    /// The URL schemes this source serves, e.g. `["file"]`.
    fn schemes(&self) -> &'static [&'static str];

    /// Lists the entries at a location.
    async fn list(&self, req: &ListRequest) -> Result<Box<dyn EntryStream>, SourceError>;

    /// Opens an entry, whole or a byte range of it.
    async fn open(
        &self,
        entry: &Entry,
        range: Option<Range<u64>>,
    ) -> Result<Box<dyn ByteStream>, SourceError>;

    /// Random access to an entry, when the source has it cheaply (a local
    /// file; ranged requests); `None` otherwise, and formats that need it
    /// spool the stream from [`Source::open`] instead.
    async fn random_access(&self, _entry: &Entry) -> Result<Option<Arc<dyn ReadAt>>, SourceError> {
        Ok(None)
    }
}
