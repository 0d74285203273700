//! Rota's core: the model every other crate speaks (ids, specs, jobs, tasks,
//! batch policy, payload encodings, errors) and the three seams of the data flow:
//!
//! ```text
//! Source (bytes) ─► Decoder (Arrow record batches) ─► chunker/encoder ─► Store (jobs, tasks, leases)
//! ```
//!
//! This crate holds no I/O implementation. Sources live in `rota-sources`,
//! decoders in `rota-formats`, stores in `rota-store`, and the pipeline that
//! joins them in `rota-ingest`.

pub mod clock;
pub mod error;
pub mod format;
pub mod id;
pub mod model;
pub mod retry;
pub mod source;
pub mod store;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{DecodeError, DecodeErrorKind, Position, SourceError, StoreError};
pub use id::{JobId, LeaseToken, TaskId};
pub use model::*;
pub use store::Store;
