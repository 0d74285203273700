//! Errors of an ingest.

use rota_core::{DecodeError, SourceError, StoreError};

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
    /// A job with this key exists and cannot be ingested into again.
    #[error("{0}")]
    Conflict(String),
}
