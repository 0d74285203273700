//! Errors of an ingest.

use rota_core::{DecodeError, JobId, SourceError, StoreError};

/// Why an ingest stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The request is invalid (bad policy, unknown format, …).
    #[error("{0}")]
    Invalid(String),
    /// Listing or reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A record did not decode (under `on_error = fail`), or the input is not
    /// in the format.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Rows could not be encoded into a payload.
    #[error("cannot encode a payload: {0}")]
    Encode(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A store write failed part way (full disk, file size limit, database
    /// locked past the busy timeout). The job is kept held, none of its
    /// tasks claimable; the same ingest run again under its key, once the
    /// store can be written to, finishes it.
    #[error(
        "{cause}; the ingest stopped, and job {job} (key '{key}') is kept held with nothing \
         claimable: once the store can be written to, the same ingest run again with key \
         '{key}' goes on where it stopped"
    )]
    StoreHeld {
        /// The job kept held.
        job: JobId,
        /// Its key.
        key: String,
        /// What the store said.
        cause: StoreError,
    },
    /// A job with this key exists and cannot be ingested into again.
    #[error("{0}")]
    Conflict(String),
}

impl IngestError {
    /// The store failure behind this error, if it is one.
    #[must_use]
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Store(e) | Self::StoreHeld { cause: e, .. } => Some(e),
            _ => None,
        }
    }
}
