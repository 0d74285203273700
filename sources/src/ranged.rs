//! Random access over ranged reads, for sources whose protocol can read a
//! byte range (HTTP and S3 ranges, SFTP positional reads, FTP `REST`):
//! formats that read an index first (a Parquet footer) then fetch only the
//! parts they need, instead of the whole file.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use rota_core::source::{Entry, ReadAt, Source};

/// Bytes fetched at least per ranged read: readers such as Parquet's
/// decode headers a few bytes at a time, and each read costs a round trip.
pub(crate) const READ_AHEAD: u64 = 512 * 1024;

/// Random access to one entry by [`Source::open`] with a range, which checks
/// that the object is the version listed and resumes a read that breaks.
/// The last block fetched is kept to serve the small reads that follow it.
pub(crate) struct RangedAt {
    source: Arc<dyn Source>,
    entry: Entry,
    size: u64,
    runtime: tokio::runtime::Handle,
    /// The last block fetched, and where it starts.
    block: Mutex<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for RangedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangedAt")
            .field("location", &self.entry.location)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Random access to `entry` through `source`, when its size is known and
/// a runtime runs.
pub(crate) fn ranged_at(source: Arc<dyn Source>, entry: &Entry) -> Option<Arc<dyn ReadAt>> {
    let size = entry.size?;
    RangedAt::new(source, entry.clone(), size).map(|at| Arc::new(at) as Arc<dyn ReadAt>)
}

impl RangedAt {
    /// Random access to `entry`, `size` bytes long, through `source`; `None`
    /// outside a tokio runtime (the reads run on the current one).
    fn new(source: Arc<dyn Source>, entry: Entry, size: u64) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        Some(Self {
            source,
            entry,
            size,
            runtime,
            block: Mutex::new((0, Vec::new())),
        })
    }

    fn fetch(&self, range: Range<u64>) -> std::io::Result<Vec<u8>> {
        let want = range.end - range.start;
        let bytes = self
            .runtime
            .block_on(async {
                let mut stream = self.source.open(&self.entry, Some(range.clone())).await?;
                let mut out = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
                while let Some(chunk) = stream.next_chunk().await? {
                    out.extend_from_slice(&chunk);
                }
                Ok::<_, rota_core::SourceError>(out)
            })
            .map_err(std::io::Error::other)?;
        if bytes.len() as u64 != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "asked for bytes {}..{}, the server sent {} bytes",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }
}

impl ReadAt for RangedAt {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        if end > self.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "a read of bytes {offset}..{end} past the end ({})",
                    self.size
                ),
            ));
        }
        let mut block = self.block.lock().unwrap_or_else(PoisonError::into_inner);
        let (start, bytes) = &*block;
        if offset < *start || end > start + bytes.len() as u64 {
            let fetched = self.fetch(offset..end.max(offset + READ_AHEAD).min(self.size))?;
            *block = (offset, fetched);
        }
        let (start, bytes) = &*block;
        let from = usize::try_from(offset - start).map_err(std::io::Error::other)?;
        buf.copy_from_slice(&bytes[from..from + buf.len()]);
        Ok(())
    }
}
