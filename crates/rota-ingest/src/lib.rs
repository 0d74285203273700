//! Rota's ingest pipeline: it turns data at a location into a job of batched
//! tasks in a store.
//!
//! ```text
//! Source.list ─► Source.open ─► Decoder (Arrow batches) ─► Chunker (rows, bytes)
//!     ─► payload encoder (json | ndjson | csv | arrow) ─► Store.add_tasks ─► release
//! ```
//!
//! The chunker is deterministic: the same input and policy give the same task
//! keys and payloads, so replaying an ingest into the same job adds nothing.

pub mod chunker;
pub mod error;
mod open;
mod payload;
pub mod pipeline;
pub mod plan;
pub mod progress;
mod split;

pub use chunker::Chunker;
pub use error::IngestError;
pub use pipeline::{
    DEFAULT_PARALLEL_FILES, DEFAULT_SPLIT_BYTES, IngestRequest, IngestSummary, ingest,
};
pub use plan::{FilePlan, Plan, PlannedColumn, plan};
pub use progress::{FileProgress, Progress};
