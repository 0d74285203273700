//! Live counters of an ingest, read by whoever shows progress.

use std::sync::atomic::{AtomicU64, Ordering};

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
}
