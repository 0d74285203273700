//! CSV and TSV: RFC 4180 records (quoted fields may hold delimiters, quotes
//! and line breaks), a header line by default, types inferred from a sample.
//!
//! Options: `header=true|false`, `delimiter=C` (one byte; `\t` for tab),
//! `quote=C`.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_csv::reader::{Decoder as ArrowCsvDecoder, Format as ArrowCsvFormat, ReaderBuilder};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rota_core::format::{DecodeOptions, Decoder, Format};
use rota_core::{DecodeError, DecodeErrorKind};

use crate::options::FormatOptions;
use crate::text::{
    Batcher, Found, Frame, FrameError, Framer, RecordError, TextDecoder, clean_arrow_message, join,
    trim_cr,
};

/// Comma-separated values.
#[derive(Debug, Default, Clone, Copy)]
pub struct CsvFormat;

/// Tab-separated values: CSV with a tab delimiter.
#[derive(Debug, Default, Clone, Copy)]
pub struct TsvFormat;

impl Format for CsvFormat {
    fn name(&self) -> &'static str {
        "csv"
    }
    fn extensions(&self) -> &'static [&'static str] {
        &["csv"]
    }
    fn is_text(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "comma-separated values; options: header=true|false, delimiter=C, quote=C"
    }
    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        csv_decoder(options, b',')
    }
}

impl Format for TsvFormat {
    fn name(&self) -> &'static str {
        "tsv"
    }
    fn extensions(&self) -> &'static [&'static str] {
        &["tsv", "tab"]
    }
    fn is_text(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "tab-separated values; options: header=true|false, quote=C"
    }
    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        csv_decoder(options, b'\t')
    }
}

fn csv_decoder(options: &DecodeOptions, delimiter: u8) -> Result<Box<dyn Decoder>, DecodeError> {
    let mut opts = FormatOptions::new(options, &["header", "delimiter", "quote"]);
    let header = opts.bool("header", true)?;
    let delimiter = opts.byte("delimiter", delimiter)?;
    let quote = opts.byte("quote", b'"')?;
    opts.finish()?;
    let framer = CsvFramer {
        quote,
        delimiter,
        resume: 0,
        in_quotes: false,
        newlines: 0,
    };
    let batcher = CsvBatcher {
        header,
        delimiter,
        quote,
        batch_size: options.batch_records.max(options.infer_records).max(1),
        decoder: None,
    };
    Ok(Box::new(TextDecoder::new(framer, batcher, options)))
}

/// Finds record ends: a line break outside quotes. A quote opens a quoted
/// field only at the start of a field, as in RFC 4180; `""` inside is a quote.
struct CsvFramer {
    quote: u8,
    delimiter: u8,
    /// How far past `pos` the current record was scanned.
    resume: usize,
    in_quotes: bool,
    newlines: u64,
}

impl CsvFramer {
    fn done(&mut self, frame: Frame) -> Found {
        self.resume = 0;
        self.in_quotes = false;
        self.newlines = 0;
        if frame.end == frame.start {
            Found::Gap {
                next: frame.next,
                newlines: frame.newlines,
            }
        } else {
            Found::Record(frame)
        }
    }
}

impl Framer for CsvFramer {
    fn next(&mut self, buf: &[u8], pos: usize, eof: bool) -> Result<Found, FrameError> {
        let mut i = pos + self.resume;
        while i < buf.len() {
            if self.in_quotes {
                let Some(k) = memchr::memchr(self.quote, &buf[i..]) else {
                    self.newlines += memchr::memchr_iter(b'\n', &buf[i..]).count() as u64;
                    i = buf.len();
                    break;
                };
                let j = i + k;
                self.newlines += memchr::memchr_iter(b'\n', &buf[i..j]).count() as u64;
                if j + 1 < buf.len() {
                    if buf[j + 1] == self.quote {
                        i = j + 2; // an escaped quote
                    } else {
                        self.in_quotes = false;
                        i = j + 1;
                    }
                } else if eof {
                    self.in_quotes = false;
                    i = j + 1;
                } else {
                    i = j; // look at this quote again with more input
                    break;
                }
            } else {
                let Some(k) = memchr::memchr2(b'\n', self.quote, &buf[i..]) else {
                    i = buf.len();
                    break;
                };
                let j = i + k;
                if buf[j] == b'\n' {
                    let frame = Frame {
                        start: pos,
                        end: trim_cr(buf, pos, j),
                        next: j + 1,
                        newlines: self.newlines + 1,
                    };
                    return Ok(self.done(frame));
                }
                if j == pos || buf[j - 1] == self.delimiter {
                    self.in_quotes = true;
                }
                i = j + 1;
            }
        }
        if !eof {
            self.resume = i - pos;
            return Ok(Found::NeedMore);
        }
        if pos >= buf.len() {
            return Ok(Found::End);
        }
        if self.in_quotes {
            return Err(FrameError {
                at: pos,
                newlines: 0,
                kind: DecodeErrorKind::Truncated,
                message: "input ends inside a quoted field (is a closing quote missing?)".into(),
            });
        }
        let frame = Frame {
            start: pos,
            end: trim_cr(buf, pos, buf.len()),
            next: buf.len(),
            newlines: self.newlines,
        };
        Ok(self.done(frame))
    }
}

struct CsvBatcher {
    header: bool,
    delimiter: u8,
    quote: u8,
    batch_size: usize,
    decoder: Option<ArrowCsvDecoder>,
}

impl CsvBatcher {
    fn arrow_format(&self, header: bool) -> ArrowCsvFormat {
        ArrowCsvFormat::default()
            .with_header(header)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote)
    }

    fn feed(
        decoder: &mut ArrowCsvDecoder,
        mut bytes: &[u8],
        batches: &mut Vec<RecordBatch>,
    ) -> Result<(), arrow_schema::ArrowError> {
        while !bytes.is_empty() {
            let n = decoder.decode(bytes)?;
            bytes = &bytes[n..];
            if (n == 0 || decoder.capacity() == 0)
                && let Some(batch) = decoder.flush()?
            {
                batches.push(batch);
            }
        }
        Ok(())
    }
}

fn record_error(e: &arrow_schema::ArrowError) -> RecordError {
    let raw = e.to_string();
    if let Some(rest) = raw.find("expected ").map(|i| &raw[i..])
        && raw.contains("incorrect number of fields")
    {
        // "expected N got M" → "expected N fields, found M"
        let mut words = rest.split_whitespace();
        let expected = words.nth(1).unwrap_or("?");
        let got = words.nth(1).unwrap_or("?");
        return RecordError {
            kind: DecodeErrorKind::FieldCount,
            message: format!("expected {expected} fields, found {got}"),
            column: None,
        };
    }
    let (message, column) = clean_arrow_message(&raw);
    let kind = if raw.contains("as type") {
        DecodeErrorKind::Type
    } else if raw.contains("utf-8") || raw.contains("UTF-8") || raw.contains("utf8") {
        DecodeErrorKind::Encoding
    } else {
        DecodeErrorKind::Syntax
    };
    RecordError {
        kind,
        message,
        column,
    }
}

impl Batcher for CsvBatcher {
    fn has_header(&self) -> bool {
        self.header
    }

    fn schema(
        &mut self,
        header: Option<&[u8]>,
        sample: &[&[u8]],
        given: Option<SchemaRef>,
    ) -> Result<SchemaRef, RecordError> {
        let fail = |e: arrow_schema::ArrowError| {
            let (message, column) = clean_arrow_message(&e.to_string());
            RecordError {
                kind: DecodeErrorKind::Syntax,
                message: format!("cannot read the header or sample: {message}"),
                column,
            }
        };
        let mut text = Vec::new();
        if let Some(h) = header {
            if h.contains(&0) || std::str::from_utf8(h).is_err() {
                return Err(RecordError {
                    kind: DecodeErrorKind::Encoding,
                    message:
                        "the header line is not UTF-8 text (binary data, or another encoding?)"
                            .into(),
                    column: None,
                });
            }
            text.extend_from_slice(h);
            text.push(b'\n');
        }
        if let Some(schema) = given {
            if let Some(h) = header {
                let (names, _) = self
                    .arrow_format(true)
                    .infer_schema(Cursor::new(h), Some(0))
                    .map_err(fail)?;
                if names.fields().len() != schema.fields().len() {
                    return Err(RecordError {
                        kind: DecodeErrorKind::Options,
                        message: format!(
                            "the schema has {} columns but the header has {}",
                            schema.fields().len(),
                            names.fields().len()
                        ),
                        column: None,
                    });
                }
            }
            return Ok(schema);
        }
        for record in sample {
            text.extend_from_slice(record);
            text.push(b'\n');
        }
        if text.is_empty() {
            return Ok(Arc::new(Schema::empty()));
        }
        let format = self.arrow_format(header.is_some());
        let inferred = match format.infer_schema(Cursor::new(&text), None) {
            Ok((schema, _)) => schema,
            Err(_) => {
                // Leave out the sample records that do not parse with the
                // header (decoding reports each with its position).
                let mut text = Vec::new();
                if let Some(h) = header {
                    text.extend_from_slice(h);
                    text.push(b'\n');
                }
                let head = text.len();
                for record in sample {
                    let mut one = text[..head].to_vec();
                    one.extend_from_slice(record);
                    one.push(b'\n');
                    if format.infer_schema(Cursor::new(&one), None).is_ok() {
                        text.extend_from_slice(record);
                        text.push(b'\n');
                    }
                }
                format
                    .infer_schema(Cursor::new(&text), None)
                    .map_err(fail)?
                    .0
            }
        };
        // Dates and times stay as written: inference from a sample must not
        // reformat a user's values. A given schema can ask for temporal types.
        let fields: Vec<Field> = inferred
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let name = if f.name().is_empty() {
                    format!("column_{}", i + 1)
                } else {
                    f.name().clone()
                };
                let data_type = match f.data_type() {
                    DataType::Int64 | DataType::Float64 | DataType::Boolean => {
                        f.data_type().clone()
                    }
                    _ => DataType::Utf8,
                };
                Field::new(name, data_type, true)
            })
            .collect();
        Ok(Arc::new(Schema::new(fields)))
    }

    fn decode(
        &mut self,
        schema: &SchemaRef,
        records: &[&[u8]],
        contiguous: Option<&[u8]>,
    ) -> Result<RecordBatch, RecordError> {
        let format = self.arrow_format(false);
        let decoder = self.decoder.get_or_insert_with(|| {
            ReaderBuilder::new(schema.clone())
                .with_format(format)
                .with_batch_size(self.batch_size)
                .build_decoder()
        });
        let mut batches = Vec::with_capacity(1);
        let result = (|| {
            if let Some(bytes) = contiguous {
                Self::feed(decoder, bytes, &mut batches)?;
                if !bytes.ends_with(b"\n") {
                    Self::feed(decoder, b"\n", &mut batches)?;
                }
            } else {
                for record in records {
                    Self::feed(decoder, record, &mut batches)?;
                    Self::feed(decoder, b"\n", &mut batches)?;
                }
            }
            if let Some(batch) = decoder.flush()? {
                batches.push(batch);
            }
            Ok::<_, arrow_schema::ArrowError>(())
        })();
        if let Err(e) = result {
            self.decoder = None; // its state is unknown after an error
            return Err(record_error(&e));
        }
        join(schema, batches).map_err(|e| record_error(&e))
    }
}
