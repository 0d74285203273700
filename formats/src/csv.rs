//! CSV and TSV: RFC 4180 records (quoted fields may hold delimiters, quotes
//! and line breaks), a header line by default, types inferred from a sample.
//!
//! Options: `header=true|false`, `delimiter=C` (one byte; `\t` for tab),
//! `quote=C`.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_csv::reader::{Decoder as ArrowCsvDecoder, Format as ArrowCsvFormat, ReaderBuilder};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rota_core::format::{DecodeOptions, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind};

use crate::options::FormatOptions;
use crate::text::{
    Batcher, Found, Frame, FrameError, Framer, Inferred, RecordError, TextDecoder,
    clean_arrow_message, join, one_row_each,
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

    fn sniff(&self, head: &Head<'_>) -> u8 {
        let Some(first) = head.first_line else {
            return 0;
        };
        if first.contains(',') && first.matches('\t').count() < first.matches(',').count() {
            30
        } else {
            0
        }
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

    fn sniff(&self, head: &Head<'_>) -> u8 {
        let Some(first) = head.first_line else {
            return 0;
        };
        let tabs = first.matches('\t').count();
        if tabs > 0 && tabs >= first.matches(',').count() {
            40
        } else {
            0
        }
    }
}

fn csv_decoder(options: &DecodeOptions, delimiter: u8) -> Result<Box<dyn Decoder>, DecodeError> {
    let (framer, batcher) = csv_parts(options, delimiter)?;
    Ok(Box::new(TextDecoder::new(framer, batcher, options)))
}

/// The framer and the batcher of a CSV decoder with `options`; `delimiter`
/// unless they name another.
pub(crate) fn csv_parts(
    options: &DecodeOptions,
    delimiter: u8,
) -> Result<(CsvFramer, CsvBatcher), DecodeError> {
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
        kinds: None,
    };
    Ok((framer, batcher))
}

/// Finds record ends: a line break outside quotes. A quote opens a quoted
/// field only at the start of a field, as in RFC 4180; `""` inside is a quote.
pub(crate) struct CsvFramer {
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

/// Line breaks in `bytes`: LF, CRLF and a bare CR (classic Mac) each count
/// once; a CR at the very end is left to be counted with what follows.
fn line_breaks(bytes: &[u8]) -> u64 {
    let lf = memchr::memchr_iter(b'\n', bytes).count();
    let bare_cr = memchr::memchr_iter(b'\r', bytes)
        .filter(|&i| i + 1 < bytes.len() && bytes[i + 1] != b'\n')
        .count();
    (lf + bare_cr) as u64
}

impl Framer for CsvFramer {
    fn next(&mut self, buf: &[u8], pos: usize, eof: bool) -> Result<Found, FrameError> {
        let mut i = pos + self.resume;
        while i < buf.len() {
            if self.in_quotes {
                let Some(k) = memchr::memchr(self.quote, &buf[i..]) else {
                    // Leave a CR at the end for the next look: it may start a CRLF.
                    let end = if buf.ends_with(b"\r") && !eof {
                        buf.len() - 1
                    } else {
                        buf.len()
                    };
                    self.newlines += line_breaks(&buf[i..end]);
                    i = end;
                    break;
                };
                let j = i + k;
                self.newlines += line_breaks(&buf[i..j]);
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
                let Some(k) = memchr::memchr3(b'\n', b'\r', self.quote, &buf[i..]) else {
                    i = buf.len();
                    break;
                };
                let j = i + k;
                // A record ends at LF, CRLF or a bare CR.
                let next = match buf[j] {
                    b'\n' => Some(j + 1),
                    b'\r' => match buf.get(j + 1) {
                        Some(b'\n') => Some(j + 2),
                        Some(_) => Some(j + 1),
                        None if eof => Some(j + 1),
                        None => {
                            i = j; // a CRLF may be cut here
                            break;
                        }
                    },
                    _ => None,
                };
                if let Some(next) = next {
                    let frame = Frame {
                        start: pos,
                        end: j,
                        next,
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
            end: buf.len(),
            next: buf.len(),
            newlines: self.newlines,
        };
        Ok(self.done(frame))
    }
}

pub(crate) struct CsvBatcher {
    header: bool,
    delimiter: u8,
    quote: u8,
    batch_size: usize,
    decoder: Option<ArrowCsvDecoder>,
    /// What each column's values need, when the schema is inferred (`None`
    /// when it was given: a given schema never widens).
    kinds: Option<Vec<CsvKind>>,
}

/// What the values of a CSV column need, from narrow to wide. Text with a
/// leading zero (`08123`) or a leading `+` (`+3188…`) is an identifier, not
/// a number, and stays text; so do numbers a `Float64` would round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CsvKind {
    /// Only empty fields so far.
    Empty,
    /// `true` or `false`, in any case.
    Bool,
    /// Integers that fit an `i64`; `float_exact` while every one is at most
    /// 2^53 in magnitude.
    Int { float_exact: bool },
    /// Decimal numbers (and integers a float holds exactly).
    Float,
    /// Anything else.
    Text,
}

impl CsvKind {
    fn of(value: &str) -> Self {
        if value.is_empty() {
            return Self::Empty;
        }
        if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
            return Self::Bool;
        }
        let digits = value.strip_prefix('-').unwrap_or(value);
        let int_len = digits.bytes().take_while(u8::is_ascii_digit).count();
        // No leading `+`, no leading zero but a lone `0`, digits first.
        if int_len == 0 || (int_len > 1 && digits.starts_with('0')) {
            return Self::Text;
        }
        let rest = &digits[int_len..];
        if rest.is_empty() {
            return match value.parse::<i64>() {
                Ok(v) => Self::Int {
                    float_exact: v.unsigned_abs() <= 1 << 53,
                },
                Err(_) => Self::Text,
            };
        }
        let fraction = rest.strip_prefix('.').map_or(Some(rest), |f| {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            (n > 0).then(|| &f[n..])
        });
        let exponent_ok = |e: &str| {
            e.is_empty()
                || e.strip_prefix(['e', 'E'])
                    .map(|x| x.strip_prefix(['+', '-']).unwrap_or(x))
                    .is_some_and(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
        };
        match fraction {
            Some(e) if exponent_ok(e) && value.parse::<f64>().is_ok_and(f64::is_finite) => {
                Self::Float
            }
            _ => Self::Text,
        }
    }

    fn merge(self, other: Self) -> Self {
        use CsvKind::{Bool, Empty, Float, Int, Text};
        match (self, other) {
            (Empty, k) | (k, Empty) => k,
            (Bool, Bool) => Bool,
            (Int { float_exact: a }, Int { float_exact: b }) => Int {
                float_exact: a && b,
            },
            (Float, Float)
            | (Float, Int { float_exact: true })
            | (Int { float_exact: true }, Float) => Float,
            _ => Text,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int { .. } => DataType::Int64,
            Self::Float => DataType::Float64,
            Self::Empty | Self::Text => DataType::Utf8,
        }
    }
}

/// Column names from a header: empty ones become `column_N`, a repeated one
/// gets `_2`, `_3`, … (the first free suffix), so every name is unique and a
/// record never has two fields of one name.
fn unique_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let names: Vec<String> = names
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            if n.is_empty() {
                format!("column_{}", i + 1)
            } else {
                n
            }
        })
        .collect();
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let mut unique = name.clone();
        let mut n = 2;
        // A later column's own name is not taken by a suffix.
        while taken.contains(&unique) || (unique != *name && names[i + 1..].contains(&unique)) {
            unique = format!("{name}_{n}");
            n += 1;
        }
        taken.insert(unique.clone());
        out.push(unique);
    }
    out
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

    /// A reader of records of `width` fields, all as text.
    fn text_decoder(&self, width: usize) -> ArrowCsvDecoder {
        let schema = Arc::new(Schema::new(
            (0..width)
                .map(|i| Field::new(format!("c{i}"), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        ReaderBuilder::new(schema)
            .with_format(self.arrow_format(false))
            .with_batch_size(self.batch_size)
            .build_decoder()
    }

    /// Records of `width` fields read as text, one batch for them all when
    /// they all split into that many fields, else one batch a record (a
    /// record that does not is left out).
    fn texts(&self, width: usize, records: &[&[u8]]) -> Vec<RecordBatch> {
        let read = |decoder: &mut ArrowCsvDecoder, records: &[&[u8]]| {
            let mut batches = Vec::new();
            for record in records {
                Self::feed(decoder, record, &mut batches)?;
                Self::feed(decoder, b"\n", &mut batches)?;
            }
            if let Some(batch) = decoder.flush()? {
                batches.push(batch);
            }
            Ok::<_, arrow_schema::ArrowError>(batches)
        };
        if let Ok(batches) = read(&mut self.text_decoder(width), records) {
            return batches;
        }
        records
            .iter()
            .filter_map(|record| read(&mut self.text_decoder(width), &[record]).ok())
            .flatten()
            .collect()
    }

    /// What the values of each of `width` columns need, over `batches`
    /// (of records read as text).
    fn kinds(width: usize, batches: &[RecordBatch]) -> Vec<CsvKind> {
        let mut kinds = vec![CsvKind::Empty; width];
        for batch in batches {
            for (kind, column) in kinds.iter_mut().zip(batch.columns()) {
                if let Some(values) = column.as_any().downcast_ref::<arrow_array::StringArray>() {
                    // A null is an empty field.
                    for value in values.iter().flatten() {
                        *kind = kind.merge(CsvKind::of(value));
                    }
                }
            }
        }
        kinds
    }

    /// Fields in one record (at least 1).
    fn width_of(&self, record: &[u8]) -> Result<Vec<String>, arrow_schema::ArrowError> {
        let (schema, _) = self
            .arrow_format(true)
            .infer_schema(Cursor::new(record), Some(0))?;
        Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
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
    if raw.contains("invalid UTF-8")
        || raw.contains("utf-8")
        || raw.contains("UTF-8")
        || raw.contains("utf8")
    {
        return RecordError {
            kind: DecodeErrorKind::Encoding,
            message: "the text is not UTF-8; if it is Latin-1 or Windows-1252 (old Excel \
                      exports), pass --encoding windows-1252"
                .into(),
            // "… for line 1 and field 2": the field counts from 1.
            column: raw
                .rsplit_once("and field ")
                .and_then(|(_, n)| n.trim().parse::<usize>().ok())
                .and_then(|n| n.checked_sub(1)),
        };
    }
    let (message, column) = clean_arrow_message(&raw);
    let kind = if raw.contains("as type") {
        DecodeErrorKind::Type
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
                message: format!("cannot read the header: {message}"),
                column,
            }
        };
        let names = match header {
            Some(h) => {
                if h.contains(&0) || std::str::from_utf8(h).is_err() {
                    return Err(RecordError {
                        kind: DecodeErrorKind::Encoding,
                        message: "the header line is not UTF-8 text (binary data, or another \
                                  encoding? for Latin-1 or Windows-1252 pass --encoding \
                                  windows-1252)"
                            .into(),
                        column: None,
                    });
                }
                Some(unique_names(self.width_of(h).map_err(fail)?))
            }
            None => None,
        };
        if let Some(schema) = given {
            if let Some(names) = &names
                && names.len() != schema.fields().len()
            {
                return Err(RecordError {
                    kind: DecodeErrorKind::Options,
                    message: format!(
                        "the schema has {} columns but the header has {}",
                        schema.fields().len(),
                        names.len()
                    ),
                    column: None,
                });
            }
            return Ok(schema);
        }
        let names = match (names, sample.first()) {
            (Some(names), _) => names,
            (None, Some(first)) => (1..=self.width_of(first).map_err(fail)?.len())
                .map(|i| format!("column_{i}"))
                .collect(),
            (None, None) => return Ok(Arc::new(Schema::empty())),
        };
        let kinds = Self::kinds(names.len(), &self.texts(names.len(), sample));
        let schema = Schema::new(
            names
                .iter()
                .zip(&kinds)
                .map(|(n, k)| Field::new(n, k.data_type(), true))
                .collect::<Vec<_>>(),
        );
        self.kinds = Some(kinds);
        Ok(Arc::new(schema))
    }

    fn inferred(&self) -> Inferred {
        self.kinds.clone().map_or(Inferred::Nothing, Inferred::Csv)
    }

    fn seed(&mut self, inferred: Inferred) {
        self.kinds = match inferred {
            Inferred::Csv(kinds) => Some(kinds),
            _ => None,
        };
        self.decoder = None;
    }

    fn widen(&mut self, schema: &SchemaRef, record: &[u8]) -> Option<SchemaRef> {
        let width = schema.fields().len();
        let read = self.texts(width, &[record]);
        if read.is_empty() {
            return None; // not a record of this many fields
        }
        let seen = Self::kinds(width, &read);
        let kinds = self.kinds.as_mut()?;
        let wider: Vec<CsvKind> = kinds.iter().zip(&seen).map(|(k, v)| k.merge(*v)).collect();
        if wider
            .iter()
            .map(|k| k.data_type())
            .eq(kinds.iter().map(|k| k.data_type()))
        {
            return None;
        }
        *kinds = wider;
        self.decoder = None;
        Some(Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .zip(kinds.iter())
                .map(|(f, k)| Field::new(f.name(), k.data_type(), true))
                .collect::<Vec<_>>(),
        )))
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
                if !bytes.ends_with(b"\n") && !bytes.ends_with(b"\r") {
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
        if let Err(e) = one_row_each(
            &batches,
            records.len(),
            "a line break the reader and the framing see differently",
        ) {
            self.decoder = None;
            return Err(e);
        }
        join(schema, batches).map_err(|e| record_error(&e))
    }
}
