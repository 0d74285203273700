//! Apache Parquet, read row group by row group through random access to the
//! file: the footer first, then only the column chunks of the projected
//! columns. Sources that offer random access (a local file) are read in
//! place; anything else (a stream, a compressed file) is spooled to a
//! temporary file, size-capped, and read the same way.

use std::sync::Arc;

use arrow_array::RecordBatchReader;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::file::reader::{ChunkReader, Length};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::source::ReadAt;
use rota_core::{DecodeError, DecodeErrorKind};

use crate::options::FormatOptions;
use crate::spool::{AtCursor, DEFAULT_MAX_SPOOL, Spool};

/// Apache Parquet.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParquetFormat;

/// What the options ask for.
#[derive(Clone, Debug)]
struct Settings {
    location: String,
    /// Top-level columns to read, in file order; all when `None`.
    columns: Option<Vec<String>>,
    batch_rows: usize,
    max_spool: u64,
}

impl ParquetFormat {
    fn settings(options: &DecodeOptions) -> Result<Settings, DecodeError> {
        let mut opts = FormatOptions::new(options, &["columns", "max_spool"]);
        let columns = opts.string("columns").map(|list| {
            list.split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        });
        let max_spool = opts.u64("max_spool", DEFAULT_MAX_SPOOL)?;
        opts.no_schema(
            "Parquet files carry their own schema (choose columns with --format-opt columns=a,b)",
        )?;
        opts.finish()?;
        Ok(Settings {
            location: options.location.clone(),
            columns,
            batch_rows: options.batch_records.max(1),
            max_spool,
        })
    }
}

impl Format for ParquetFormat {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["parquet", "pq"]
    }

    fn describe(&self) -> &'static str {
        "Apache Parquet, row group by row group, every codec; options: columns=a,b (read \
         only these), max_spool=BYTES (for sources without random access, default 64 GiB)"
    }

    fn prefers_random_access(&self) -> bool {
        true
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let settings = Self::settings(options)?;
        let spool = Spool::new(
            &options.location,
            settings.max_spool,
            "a Parquet file that cannot be read in place",
        )?;
        Ok(Box::new(ParquetDecoder {
            settings,
            state: State::Spool(spool),
        }))
    }

    fn decoder_at(
        &self,
        options: &DecodeOptions,
        input: Arc<dyn ReadAt>,
    ) -> Option<Result<Box<dyn Decoder>, DecodeError>> {
        Some(Self::settings(options).map(|settings| {
            Box::new(ParquetDecoder {
                settings,
                state: State::Ready(input),
            }) as Box<dyn Decoder>
        }))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        if head.bytes.starts_with(b"PAR1") {
            100
        } else {
            0
        }
    }
}

enum State {
    /// Pushed bytes go to a temporary file.
    Spool(Spool),
    /// Random access, not yet opened.
    Ready(Arc<dyn ReadAt>),
    Reading {
        reader: Box<ParquetRecordBatchReader>,
        schema: SchemaRef,
        /// Rows returned so far.
        rows: u64,
        /// Rows in the file, from its footer.
        total: u64,
        size: u64,
    },
    Done,
}

struct ParquetDecoder {
    settings: Settings,
    state: State,
}

impl ParquetDecoder {
    fn error(&self, kind: DecodeErrorKind, at: u64, message: String) -> DecodeError {
        DecodeError::at_byte(&self.settings.location, at, kind, message)
    }

    /// Reads the footer and sets up the reader of the wanted columns.
    fn open(&self, input: Arc<dyn ReadAt>) -> Result<State, DecodeError> {
        let size = input.size();
        let footer = |e: &dyn std::fmt::Display| {
            self.error(
                DecodeErrorKind::Syntax,
                size.saturating_sub(8),
                format!(
                    "invalid Parquet file (its footer at the end is missing or corrupt; is \
                     the file complete?): {e}"
                ),
            )
        };
        let builder = crate::guard(|| ParquetRecordBatchReaderBuilder::try_new(At(input)))
            .map_err(|why| footer(&why))?
            .map_err(|e| footer(&e))?;
        let mut builder = builder.with_batch_size(self.settings.batch_rows);
        if let Some(wanted) = &self.settings.columns {
            let fields = builder.schema().fields();
            let mut indices = Vec::with_capacity(wanted.len());
            for name in wanted {
                let i = fields
                    .iter()
                    .position(|f| f.name() == name)
                    .ok_or_else(|| {
                        let have: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                        self.error(
                            DecodeErrorKind::Options,
                            0,
                            format!(
                                "option columns: no column '{name}' (the file has: {})",
                                have.join(", ")
                            ),
                        )
                    })?;
                indices.push(i);
            }
            let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
            builder = builder.with_projection(mask);
        }
        let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let reader = crate::guard(|| builder.build())
            .map_err(|why| footer(&why))?
            .map_err(|e| footer(&e))?;
        let schema = reader.schema();
        Ok(State::Reading {
            reader: Box::new(reader),
            schema,
            rows: 0,
            total,
            size,
        })
    }
}

impl Decoder for ParquetDecoder {
    fn push(&mut self, bytes: &[u8], _out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        match &mut self.state {
            State::Spool(spool) => spool.push(bytes),
            _ => Ok(()), // random access: nothing is pushed
        }
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let input: Arc<dyn ReadAt> = match std::mem::replace(&mut self.state, State::Done) {
            State::Spool(spool) => spool.into_read_at()?,
            State::Ready(input) => input,
            other => {
                self.state = other;
                return Ok(());
            }
        };
        self.state = self.open(input)?;
        self.drain(out).map(|_| ())
    }

    fn drain(&mut self, out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        let State::Reading {
            reader, rows, size, ..
        } = &mut self.state
        else {
            return Ok(false);
        };
        let next = crate::guard(|| reader.next()).unwrap_or_else(|why| {
            Some(Err(arrow_schema::ArrowError::ParquetError(format!(
                "the reader stopped ({why})"
            ))))
        });
        match next {
            Some(Ok(batch)) => {
                *rows += batch.num_rows() as u64;
                out.push(Decoded::Batch(batch));
                Ok(true)
            }
            Some(Err(e)) => {
                let (at, after) = (*size, *rows);
                Err(self.error(
                    DecodeErrorKind::Syntax,
                    at,
                    format!("invalid Parquet data after row {after}: {e}"),
                ))
            }
            None => Ok(false),
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        match &self.state {
            State::Reading { schema, .. } => Some(schema.clone()),
            _ => None,
        }
    }

    fn total_rows(&self) -> Option<u64> {
        match &self.state {
            State::Reading { total, .. } => Some(*total),
            _ => None,
        }
    }
}

/// Random access as parquet's [`ChunkReader`].
struct At(Arc<dyn ReadAt>);

impl Length for At {
    fn len(&self) -> u64 {
        self.0.size()
    }
}

impl ChunkReader for At {
    type T = AtCursor;

    fn get_read(&self, start: u64) -> parquet::errors::Result<AtCursor> {
        Ok(AtCursor::at(Arc::clone(&self.0), start))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let mut buf = vec![0; length];
        self.0
            .read_exact_at(start, &mut buf)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        Ok(Bytes::from(buf))
    }
}
