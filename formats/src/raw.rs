//! Raw files: no parsing. Each file is one record describing it — where it
//! is, its size, modification time and version tag — and, when it is small
//! enough, its bytes, so a worker gets either the content or a reference to
//! fetch. Compressed files are passed on as they are, not decompressed.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format};
use rota_core::source::Entry;
use rota_core::{DecodeError, DecodeErrorKind};

use crate::options::FormatOptions;

/// Files up to this size carry their bytes unless `max_inline` says otherwise.
const DEFAULT_MAX_INLINE: u64 = 1 << 20;

/// One record per file: a reference, and the bytes of a small file.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawFormat;

impl Format for RawFormat {
    fn name(&self) -> &'static str {
        "raw"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &[] // chosen with --format raw, never by a name
    }

    fn describe(&self) -> &'static str {
        "no parsing: one record per file (location, path, size, modified, etag) with the \
         file's bytes as content when it is at most max_inline bytes; options: \
         max_inline=BYTES (default 1 MiB, 0 for references only)"
    }

    fn decompresses(&self) -> bool {
        false
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let mut opts = FormatOptions::new(options, &["max_inline"]);
        let max_inline = opts.u64("max_inline", DEFAULT_MAX_INLINE)?;
        opts.no_schema("raw records have a fixed schema")?;
        opts.finish()?;
        Ok(Box::new(RawDecoder {
            location: options.location.clone(),
            entry: options.entry.clone(),
            max_inline: usize::try_from(max_inline).unwrap_or(usize::MAX),
            content: Some(Vec::new()),
            size: 0,
            done: false,
        }))
    }
}

struct RawDecoder {
    location: String,
    entry: Option<Entry>,
    max_inline: usize,
    /// The bytes so far, until there are more than `max_inline`.
    content: Option<Vec<u8>>,
    size: u64,
    done: bool,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("location", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, false),
        Field::new(
            "modified",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("etag", DataType::Utf8, true),
        Field::new("content", DataType::Binary, true),
    ]))
}

impl Decoder for RawDecoder {
    fn push(&mut self, bytes: &[u8], _out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.size += bytes.len() as u64;
        if let Some(content) = &mut self.content {
            if content.len() + bytes.len() > self.max_inline {
                self.content = None; // a reference only
            } else {
                content.extend_from_slice(bytes);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        let entry = self.entry.as_ref();
        let path = entry.map_or_else(
            || {
                self.location
                    .rsplit(['/', '\\'])
                    .next()
                    .unwrap_or(&self.location)
                    .to_owned()
            },
            |e| e.relative.clone(),
        );
        let mut modified = TimestampMillisecondBuilder::new().with_timezone("UTC");
        modified.append_option(entry.and_then(|e| e.modified).map(|t| t.timestamp_millis()));
        let mut etag = StringBuilder::new();
        etag.append_option(entry.and_then(|e| e.etag.as_deref()));
        let mut content = BinaryBuilder::new();
        content.append_option(self.content.as_deref());
        let mut text = StringBuilder::new();
        text.append_value(&self.location);
        let mut rel = StringBuilder::new();
        rel.append_value(&path);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(text.finish()),
            Arc::new(rel.finish()),
            Arc::new(UInt64Array::from(vec![self.size])),
            Arc::new(modified.finish()),
            Arc::new(etag.finish()),
            Arc::new(content.finish()),
        ];
        let batch = RecordBatch::try_new(schema(), columns).map_err(|e| {
            DecodeError::at_byte(&self.location, 0, DecodeErrorKind::Type, e.to_string())
        })?;
        out.push(Decoded::Batch(batch));
        Ok(())
    }

    fn schema(&self) -> Option<SchemaRef> {
        Some(schema())
    }
}
