//! Live counters of an ingest, read by whoever shows progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Counters updated by the pipeline as it goes; cheap to read at any time.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files finished.
    pub files: AtomicU64,
    /// Bytes read from the source.
    pub bytes: AtomicU64,
    /// Rows that became task payload.
    pub rows: AtomicU64,
    /// Tasks stored.
    pub tasks: AtomicU64,
    /// Records skipped.
    pub skipped: AtomicU64,
    /// Files being read now, by relative path.
    active: Mutex<BTreeMap<String, ActiveFile>>,
}

/// A file being read.
#[derive(Clone, Debug)]
struct ActiveFile {
    read: Arc<AtomicU64>,
    size: Option<u64>,
}

/// A file being read, as shown in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProgress {
    /// Its path relative to the ingested location.
    pub relative: String,
    /// Bytes read so far.
    pub read: u64,
    /// Its size, when known.
    pub size: Option<u64>,
}

impl Progress {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    #[must_use]
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Marks a file as being read; returns its counter of bytes read.
    pub(crate) fn start_file(&self, relative: &str, size: Option<u64>) -> Arc<AtomicU64> {
        let read = Arc::new(AtomicU64::new(0));
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                relative.to_owned(),
                ActiveFile {
                    read: read.clone(),
                    size,
                },
            );
        read
    }

    /// Marks a file as no longer being read.
    pub(crate) fn end_file(&self, relative: &str) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(relative);
    }

    /// The files being read now, by relative path.
    #[must_use]
    pub fn active_files(&self) -> Vec<FileProgress> {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(relative, f)| FileProgress {
                relative: relative.clone(),
                read: f.read.load(Ordering::Relaxed),
                size: f.size,
            })
            .collect()
    }
}
