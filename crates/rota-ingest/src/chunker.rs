//! The deterministic chunker: cuts a stream of decoded rows into batches by
//! rows and bytes. Boundaries depend only on the rows and the policy, never on
//! how the input arrived, so a replayed ingest recreates identical task keys.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use rota_core::{BatchPolicy, NewTask, PayloadEncoding};

use crate::error::IngestError;
use crate::payload::{PayloadBuilder, builder};

/// Cuts rows into task payloads.
pub struct Chunker {
    policy: BatchPolicy,
    encoding: PayloadEncoding,
    builder: Box<dyn PayloadBuilder>,
    key_prefix: String,
    seq: u64,
    rows: u64,
    bytes: u64,
}

impl Chunker {
    /// A chunker for rows of `schema`; task keys are `{key_prefix}#{seq:08}`.
    ///
    /// # Errors
    /// When the policy sets no bound or the schema cannot be encoded.
    pub fn new(
        policy: BatchPolicy,
        encoding: PayloadEncoding,
        schema: &SchemaRef,
        key_prefix: String,
    ) -> Result<Self, IngestError> {
        policy.validate().map_err(IngestError::Invalid)?;
        let builder = builder(encoding, schema)?;
        let bytes = builder.overhead();
        Ok(Self {
            policy,
            encoding,
            builder,
            key_prefix,
            seq: 0,
            rows: 0,
            bytes,
        })
    }

    /// The key of the `seq`-th task of a file.
    #[must_use]
    pub fn key(prefix: &str, seq: u64) -> String {
        format!("{prefix}#{seq:08}")
    }

    fn emit(&mut self, out: &mut Vec<NewTask>) -> Result<(), IngestError> {
        let payload = self.builder.finish_payload()?;
        out.push(NewTask {
            key: Self::key(&self.key_prefix, self.seq),
            payload,
            encoding: self.encoding,
            rows: self.rows,
        });
        self.seq += 1;
        self.rows = 0;
        self.bytes = self.builder.overhead();
        Ok(())
    }

    /// Adds a batch of rows; appends every task that filled up.
    ///
    /// # Errors
    /// When rows cannot be encoded.
    pub fn push(&mut self, batch: &RecordBatch, out: &mut Vec<NewTask>) -> Result<(), IngestError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let sizes = self.builder.load(batch)?;
        let mut run = 0;
        for (i, &size) in sizes.iter().enumerate() {
            if self.rows > 0 && self.policy.max_bytes.is_some_and(|m| self.bytes + size > m) {
                self.builder.append(run, i);
                run = i;
                self.emit(out)?;
            }
            self.rows += 1;
            self.bytes += size;
            if self.policy.max_rows.is_some_and(|m| self.rows >= m) {
                self.builder.append(run, i + 1);
                run = i + 1;
                self.emit(out)?;
            }
        }
        self.builder.append(run, sizes.len());
        Ok(())
    }

    /// Emits the last, partial task, if any rows are left.
    ///
    /// # Errors
    /// When rows cannot be encoded.
    pub fn finish(&mut self, out: &mut Vec<NewTask>) -> Result<(), IngestError> {
        if self.rows > 0 {
            self.emit(out)?;
        }
        Ok(())
    }
}
