//! Rota's sources: where bytes come from, keyed by URL scheme.
//!
//! A source lists entries and opens them as byte streams (see
//! [`Source`](rota_core::source::Source)); the ingest pipeline does the rest.
//! Adding a source is one module plus one line in [`for_location`].

use std::sync::Arc;

use rota_core::SourceError;
use rota_core::source::Source;

pub mod local;

pub use local::LocalSource;

/// The source serving `location`: `file://…` or a plain path today.
///
/// # Errors
/// When no source serves the location's scheme.
pub fn for_location(location: &str) -> Result<Arc<dyn Source>, SourceError> {
    match scheme(location) {
        None | Some("file") => Ok(Arc::new(LocalSource)),
        Some(other) => Err(SourceError::InvalidLocation {
            location: location.to_owned(),
            reason: format!("no source serves the '{other}' scheme (supported: file, plain paths)"),
        }),
    }
}

/// The URL scheme of a location, if it has one (`C:\…` is a path, not a scheme).
#[must_use]
pub fn scheme(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    (scheme.len() > 1
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(scheme)
}
