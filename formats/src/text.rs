//! The push driver shared by the record-per-frame text formats (CSV, TSV,
//! NDJSON, JSON arrays).
//!
//! A [`Framer`] finds where each record ends (quote-aware, resumable across
//! pushes); the driver keeps byte offsets and line numbers, collects a bounded
//! sample to infer the schema, and hands groups of complete records to a
//! [`Batcher`], which turns them into one Arrow batch with the format's fast
//! reader. When a group fails, its records are decoded one by one, so the
//! error (or the skip) names the exact record, line and byte offset.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use rota_core::format::{DecodeOptions, Decoded, Decoder};
use rota_core::{DecodeError, DecodeErrorKind, OnError, Position};

/// Longest excerpt of a bad record kept for a skip sample.
const EXCERPT_BYTES: usize = 200;

/// One complete record found by a [`Framer`], as offsets into the buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    /// First byte of the record.
    pub(crate) start: usize,
    /// End of the record's content (terminator excluded).
    pub(crate) end: usize,
    /// Where the next record may start.
    pub(crate) next: usize,
    /// Line breaks from `start` to `next` (inside the record and its terminator).
    pub(crate) newlines: u64,
}

/// What a framer found at the current position.
pub(crate) enum Found {
    /// A record.
    Record(Frame),
    /// Bytes that hold no record (a blank line, a separator); skip to `next`.
    Gap {
        /// Where scanning resumes.
        next: usize,
        /// Line breaks skipped.
        newlines: u64,
    },
    /// The input holds no complete record yet.
    NeedMore,
    /// The input is exhausted (only when `eof`).
    End,
}

/// Finds record boundaries. It may keep scan state between calls made with
/// the same `pos` and a longer buffer, so that a long record is scanned once.
pub(crate) trait Framer: Send {
    /// Looks for the next record starting at `pos`.
    fn next(&mut self, buf: &[u8], pos: usize, eof: bool) -> Result<Found, FrameError>;
}

/// A framing failure (the input cannot be split into records).
#[derive(Debug)]
pub(crate) struct FrameError {
    /// Offset in the buffer where the problem was seen.
    pub(crate) at: usize,
    /// Line breaks between the record start and `at`.
    pub(crate) newlines: u64,
    pub(crate) kind: DecodeErrorKind,
    pub(crate) message: String,
}

/// A record (or group) that does not decode.
#[derive(Debug)]
pub(crate) struct RecordError {
    pub(crate) kind: DecodeErrorKind,
    pub(crate) message: String,
    /// The column, by index into the schema, when known.
    pub(crate) column: Option<usize>,
}

/// Turns records into Arrow batches with a format's own reader.
pub(crate) trait Batcher: Send {
    /// Whether the first record is a header.
    fn has_header(&self) -> bool {
        false
    }

    /// Infers the schema (or adapts the given one) from the header and a sample.
    fn schema(
        &mut self,
        header: Option<&[u8]>,
        sample: &[&[u8]],
        given: Option<SchemaRef>,
    ) -> Result<SchemaRef, RecordError>;

    /// A schema wider than `schema` that `record` (which failed to decode
    /// with it) fits, when the schema was inferred and can widen; `None`
    /// otherwise. Later records decode with the wider schema.
    fn widen(&mut self, _schema: &SchemaRef, _record: &[u8]) -> Option<SchemaRef> {
        None
    }

    /// What was inferred so far (the kinds the records seen need), for a
    /// part of the input decoded apart to start from.
    fn inferred(&self) -> Inferred;

    /// Starts from what another batcher had inferred.
    fn seed(&mut self, inferred: Inferred);

    /// Decodes records into one batch. `contiguous` is the run of bytes from
    /// the first record's start to the last record's terminator, when the
    /// records are adjacent.
    fn decode(
        &mut self,
        schema: &SchemaRef,
        records: &[&[u8]],
        contiguous: Option<&[u8]>,
    ) -> Result<RecordBatch, RecordError>;
}

/// What a batcher inferred from the records it saw: the state a decoder of
/// a later part of the input starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Inferred {
    /// Nothing: the schema was given, or none was inferred yet.
    Nothing,
    /// What each CSV column needs.
    Csv(Vec<crate::csv::CsvKind>),
    /// What the JSON records need.
    Json(crate::infer::Kind),
}

struct Rec {
    frame: Frame,
    line: u64,
    number: u64,
}

/// Bytes at the start of the input checked for signs that it is not UTF-8
/// text before any record is read.
const SNIFF_BYTES: usize = 4096;

/// The push decoder for framed text formats.
pub(crate) struct TextDecoder<F, B> {
    framer: F,
    batcher: B,
    opts: DecodeOptions,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]` in the input.
    base: u64,
    /// Start of the next unframed record in `buf`.
    pos: usize,
    /// Line number at `pos`.
    line: u64,
    /// Records framed but not decoded.
    pending: Vec<Rec>,
    /// Whether the records in `pending` are adjacent.
    adjacent: bool,
    records_seen: u64,
    header: Option<Vec<u8>>,
    /// Absolute offset where the data (header or first record) starts.
    data_start: u64,
    header_done: bool,
    bom_checked: bool,
    schema: Option<SchemaRef>,
}

impl<F: Framer, B: Batcher> TextDecoder<F, B> {
    pub(crate) fn new(framer: F, batcher: B, opts: &DecodeOptions) -> Self {
        Self {
            framer,
            header_done: !batcher.has_header(),
            batcher,
            schema: None,
            opts: opts.clone(),
            buf: Vec::new(),
            base: 0,
            pos: 0,
            line: 1,
            pending: Vec::new(),
            adjacent: true,
            records_seen: 0,
            header: None,
            data_start: 0,
            bom_checked: false,
        }
    }

    /// A decoder of one part of the input, after the header: it starts with
    /// `schema` and what was `inferred` by then, and counts bytes, lines and
    /// records from the part's start (`offset`, `line`, `records` before it).
    pub(crate) fn for_part(
        framer: F,
        mut batcher: B,
        opts: &DecodeOptions,
        start: (SchemaRef, Inferred),
        offset: u64,
        line: u64,
        records: u64,
    ) -> Self {
        let (schema, inferred) = start;
        batcher.seed(inferred);
        let mut decoder = Self::new(framer, batcher, opts);
        decoder.header_done = true;
        decoder.bom_checked = true;
        decoder.schema = Some(schema);
        decoder.base = offset;
        decoder.data_start = offset;
        decoder.line = line;
        decoder.records_seen = records;
        decoder
    }

    /// The schema and what was inferred so far, once the schema is known.
    pub(crate) fn inferred(&self) -> Option<(SchemaRef, Inferred)> {
        Some((self.schema.clone()?, self.batcher.inferred()))
    }

    fn position(&self, at: usize, line: u64, record: Option<u64>) -> Position {
        Position {
            byte_offset: self.base + at as u64,
            line: Some(line),
            record,
            column: None,
            part: None,
        }
    }

    fn error(&self, position: Position, kind: DecodeErrorKind, message: String) -> DecodeError {
        DecodeError {
            location: self.opts.location.clone(),
            position,
            kind,
            message,
        }
    }

    /// Refuses input that is plainly not UTF-8 text: a UTF-16 byte order
    /// mark, or a NUL byte near the start (binary data, or UTF-16 without a
    /// mark). Left alone, either would decode as garbage rather than fail.
    fn sniff(&self) -> Result<(), DecodeError> {
        let head = &self.buf[..self.buf.len().min(SNIFF_BYTES)];
        let refuse = |at: usize, message: String| {
            let line = 1 + memchr::memchr_iter(b'\n', &head[..at]).count() as u64;
            let position = self.position(at, line, None);
            Err(self.error(position, DecodeErrorKind::Encoding, message))
        };
        if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
            let order = if head[0] == 0xFF {
                "utf-16le"
            } else {
                "utf-16be"
            };
            return refuse(
                0,
                format!(
                    "the text starts with a UTF-16 byte order mark, not UTF-8; \
                     pass --encoding {order}"
                ),
            );
        }
        if let Some(at) = memchr::memchr(0, head) {
            return refuse(
                at,
                "a NUL byte: this is not UTF-8 text (binary data, or UTF-16 without a byte \
                 order mark? then pass --encoding utf-16le or utf-16be)"
                    .into(),
            );
        }
        Ok(())
    }

    fn run(&mut self, eof: bool, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if !self.bom_checked {
            if self.buf.len() < SNIFF_BYTES && !eof {
                return Ok(());
            }
            self.sniff()?;
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.pos = 3;
                self.data_start = 3;
            }
            self.bom_checked = true;
        }
        loop {
            let found = self.framer.next(&self.buf, self.pos, eof).map_err(|e| {
                let position = self.position(e.at, self.line + e.newlines, None);
                self.error(position, e.kind, e.message)
            })?;
            match found {
                Found::Record(frame) => {
                    let rec_line = self.line;
                    self.line += frame.newlines;
                    self.pos = frame.next;
                    if self.header_done {
                        self.records_seen += 1;
                        if let Some(last) = self.pending.last() {
                            self.adjacent &= last.frame.next == frame.start;
                        }
                        self.pending.push(Rec {
                            frame,
                            line: rec_line,
                            number: self.records_seen,
                        });
                    } else {
                        self.header = Some(self.buf[frame.start..frame.end].to_vec());
                        self.header_done = true;
                    }
                    let want = if self.schema.is_some() {
                        self.opts.batch_records
                    } else {
                        self.opts.infer_records.max(1)
                    };
                    if self.pending.len() >= want {
                        self.decode_pending(out)?;
                    }
                }
                Found::Gap { next, newlines } => {
                    self.line += newlines;
                    self.pos = next;
                    // Records on either side of a gap are not adjacent.
                    if !self.pending.is_empty() {
                        self.adjacent = false;
                    }
                }
                Found::NeedMore => {
                    let partial = self.buf.len() - self.pos;
                    if partial > self.opts.max_record_bytes {
                        let position = self.position(self.pos, self.line, None);
                        return Err(self.error(
                            position,
                            DecodeErrorKind::TooLarge,
                            format!(
                                "record is larger than the limit of {} bytes (is the format or delimiter right?)",
                                self.opts.max_record_bytes
                            ),
                        ));
                    }
                    break;
                }
                Found::End => break,
            }
        }
        if eof {
            self.decode_pending(out)?;
            if self.schema.is_none() {
                self.ensure_schema()?;
            }
        }
        self.compact();
        Ok(())
    }

    /// Drops bytes no pending record needs.
    fn compact(&mut self) {
        let keep_from = self.pending.first().map_or(self.pos, |r| r.frame.start);
        if keep_from > 0 && keep_from >= self.buf.len() / 2 {
            self.buf.drain(..keep_from);
            self.base += keep_from as u64;
            self.pos -= keep_from;
            for rec in &mut self.pending {
                rec.frame.start -= keep_from;
                rec.frame.end -= keep_from;
                rec.frame.next -= keep_from;
            }
        }
    }

    fn ensure_schema(&mut self) -> Result<SchemaRef, DecodeError> {
        if let Some(schema) = &self.schema {
            return Ok(schema.clone());
        }
        let sample: Vec<&[u8]> = self
            .pending
            .iter()
            .map(|r| &self.buf[r.frame.start..r.frame.end])
            .collect();
        let schema = self
            .batcher
            .schema(self.header.as_deref(), &sample, self.opts.schema.clone())
            .map_err(|e| {
                let position = Position {
                    byte_offset: self.data_start,
                    line: Some(1),
                    record: None,
                    column: None,
                    part: None,
                };
                self.error(position, e.kind, e.message)
            })?;
        self.schema = Some(schema.clone());
        Ok(schema)
    }

    fn decode_pending(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let mut schema = self.ensure_schema()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let adjacent = std::mem::replace(&mut self.adjacent, true);
        let mut rest: &[Rec] = &pending;
        // Each pass decodes what is left as one group; when that fails, the
        // records one by one, until one widens the schema (then what
        // follows is tried as a group again with the wider schema).
        'group: while let (Some(first), Some(last)) = (rest.first(), rest.last()) {
            let records: Vec<&[u8]> = rest
                .iter()
                .map(|r| &self.buf[r.frame.start..r.frame.end])
                .collect();
            let contiguous = adjacent.then(|| &self.buf[first.frame.start..last.frame.next]);
            if let Ok(batch) = self.batcher.decode(&schema, &records, contiguous) {
                out.push(Decoded::Batch(batch));
                return Ok(());
            }
            let mut good: Vec<RecordBatch> = Vec::new();
            for (i, rec) in rest.iter().enumerate() {
                let bytes = &self.buf[rec.frame.start..rec.frame.end];
                let e = match self.batcher.decode(&schema, &[bytes], None) {
                    Ok(batch) => {
                        good.push(batch);
                        continue;
                    }
                    Err(e) => e,
                };
                flush_good(&self.opts.location, &schema, &mut good, out)?;
                if let Some(wider) = self.batcher.widen(&schema, bytes) {
                    schema = wider;
                    self.schema = Some(schema.clone());
                    rest = &rest[i..];
                    continue 'group;
                }
                self.bad_record(&schema, rec, e, out)?;
            }
            flush_good(&self.opts.location, &schema, &mut good, out)?;
            break;
        }
        Ok(())
    }

    fn bad_record(
        &self,
        schema: &SchemaRef,
        rec: &Rec,
        e: RecordError,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        let mut position = self.position(rec.frame.start, rec.line, Some(rec.number));
        position.column = e
            .column
            .and_then(|i| schema.fields().get(i))
            .map(|f| f.name().clone());
        let error = self.error(position, e.kind, e.message);
        match self.opts.on_error {
            OnError::Fail => Err(error),
            OnError::Skip => {
                let raw = &self.buf[rec.frame.start..rec.frame.end];
                let cut = raw.len().min(EXCERPT_BYTES);
                out.push(Decoded::Skipped {
                    error,
                    excerpt: Some(String::from_utf8_lossy(&raw[..cut]).into_owned()),
                });
                Ok(())
            }
        }
    }
}

fn flush_good(
    location: &str,
    schema: &SchemaRef,
    good: &mut Vec<RecordBatch>,
    out: &mut Vec<Decoded>,
) -> Result<(), DecodeError> {
    if good.is_empty() {
        return Ok(());
    }
    let batch = join(schema, std::mem::take(good)).map_err(|e| DecodeError {
        location: location.to_owned(),
        position: Position::default(),
        kind: DecodeErrorKind::Type,
        message: format!("cannot join decoded records: {e}"),
    })?;
    out.push(Decoded::Batch(batch));
    Ok(())
}

/// Checks that a format's reader made one row of each record it was given,
/// which is what keeps framing and reading in step; `why` says what a
/// mismatch means for the format.
pub(crate) fn one_row_each(
    batches: &[RecordBatch],
    records: usize,
    why: &str,
) -> Result<(), RecordError> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows == records {
        return Ok(());
    }
    Err(RecordError {
        kind: DecodeErrorKind::Syntax,
        message: format!("{records} records read as {rows} rows ({why})"),
        column: None,
    })
}

/// One batch from several, copying only when there is more than one.
pub(crate) fn join(
    schema: &SchemaRef,
    mut batches: Vec<RecordBatch>,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(schema.clone())),
        1 => Ok(batches.swap_remove(0)),
        _ => arrow_select::concat::concat_batches(schema, &batches),
    }
}

impl<F: Framer, B: Batcher> Decoder for TextDecoder<F, B> {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(bytes);
        self.run(false, out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.run(true, out)
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }
}

/// Strips a trailing `\r` (of a CRLF line ending) from a record's end.
pub(crate) fn trim_cr(buf: &[u8], start: usize, end: usize) -> usize {
    if end > start && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

/// Pulls `for column N` out of an arrow error message and drops the parts that
/// describe arrow's own view of the position (its line numbers count from the
/// start of a group, not of the file) or echo whole rows.
pub(crate) fn clean_arrow_message(msg: &str) -> (String, Option<usize>) {
    let column = msg.find("for column ").and_then(|i| {
        let digits: String = msg[i + 11..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    });
    let mut text = msg
        .trim_start_matches("Parser error: ")
        .trim_start_matches("Csv error: ")
        .trim_start_matches("Json error: ")
        .to_owned();
    for cut in [" for column ", " at line ", ". Row data:"] {
        if let Some(i) = text.find(cut) {
            text.truncate(i);
        }
    }
    let mut chars = text.chars();
    let text = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    };
    (text, column)
}
