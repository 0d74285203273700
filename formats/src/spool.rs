//! A size-capped temporary copy of an input, for formats that can only read
//! it whole (their index sits at the end) when the source cannot be read in
//! place.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use rota_core::source::ReadAt;
use rota_core::{DecodeError, DecodeErrorKind};

/// Spooled input is refused beyond this size unless `max_spool` says more.
pub(crate) const DEFAULT_MAX_SPOOL: u64 = 64 << 30;

/// Pushed bytes, kept in an unnamed temporary file.
pub(crate) struct Spool {
    file: File,
    size: u64,
    max: u64,
    location: String,
    /// What is spooled, for messages: "an Arrow IPC file".
    what: &'static str,
}

impl Spool {
    /// An empty spool of at most `max` bytes for the input at `location`.
    pub(crate) fn new(location: &str, max: u64, what: &'static str) -> Result<Self, DecodeError> {
        let file = tempfile::tempfile().map_err(|e| io_error(location, 0, what, &e))?;
        Ok(Self {
            file,
            size: 0,
            max,
            location: location.to_owned(),
            what,
        })
    }

    /// Appends `bytes`; refuses them past the size cap.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        self.file
            .write_all(bytes)
            .map_err(|e| io_error(&self.location, self.size, self.what, &e))?;
        self.size += bytes.len() as u64;
        if self.size > self.max {
            return Err(DecodeError::at_byte(
                &self.location,
                self.size,
                DecodeErrorKind::TooLarge,
                format!(
                    "{} is read from a temporary copy, and this one is larger than \
                     max_spool ({} bytes)",
                    self.what, self.max
                ),
            ));
        }
        Ok(())
    }

    /// The spooled bytes, for random access.
    pub(crate) fn into_read_at(self) -> Result<Arc<dyn ReadAt>, DecodeError> {
        let (file, size) = self.into_file()?;
        Ok(Arc::new(rota_core::source::FileAt::with_size(file, size)))
    }

    /// The spooled bytes, rewound for reading, and their length.
    pub(crate) fn into_file(mut self) -> Result<(File, u64), DecodeError> {
        self.file
            .flush()
            .and_then(|()| self.file.seek(SeekFrom::Start(0)))
            .map_err(|e| io_error(&self.location, self.size, self.what, &e))?;
        Ok((self.file, self.size))
    }
}

fn io_error(location: &str, at: u64, what: &str, e: &std::io::Error) -> DecodeError {
    DecodeError::at_byte(
        location,
        at,
        DecodeErrorKind::Options,
        format!("cannot copy {what} to a temporary file: {e}"),
    )
}

/// A reader with a position over random access, for libraries that want
/// `Read + Seek`.
#[derive(Clone, Debug)]
pub(crate) struct AtCursor {
    input: Arc<dyn ReadAt>,
    at: u64,
}

impl AtCursor {
    pub(crate) fn new(input: Arc<dyn ReadAt>) -> Self {
        Self::at(input, 0)
    }

    pub(crate) fn at(input: Arc<dyn ReadAt>, at: u64) -> Self {
        Self { input, at }
    }
}

impl Read for AtCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.input.size().saturating_sub(self.at);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        self.input.read_exact_at(self.at, &mut buf[..n])?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for AtCursor {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let to = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.input.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.at.checked_add_signed(d),
        };
        self.at = to.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the input",
            )
        })?;
        Ok(self.at)
    }
}
