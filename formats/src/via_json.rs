//! The part shared by formats that turn each record into a JSON object line
//! and hand the lines to the NDJSON decoder (XML, YAML, TOML): it keeps the
//! input position of recent records so that errors of the decoder inside
//! (whose lines are records) are moved back onto the original input, and it
//! slots a record the format itself could not convert into the stream of
//! lines, so that under `on_error = skip` the skip comes out in input order.

use std::collections::VecDeque;

use arrow_schema::SchemaRef;
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format};
use rota_core::{DecodeError, OnError, Position};

use crate::json::NdjsonFormat;

/// Record positions remembered for positioning errors of the decoder inside;
/// it holds fewer records than this at any time.
const POSITIONS_KEPT: usize = 1 << 16;

/// Longest excerpt of a bad record kept for a skip.
const EXCERPT_CHARS: usize = 200;

/// Where a record starts in the original input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    /// Byte offset.
    pub(crate) byte: u64,
    /// 1-based line number.
    pub(crate) line: u64,
}

/// JSON lines on their way to the NDJSON decoder, with the positions of the
/// records they came from.
pub(crate) struct JsonRecords {
    inner: Box<dyn Decoder>,
    location: String,
    on_error: OnError,
    /// Records written so far.
    records: u64,
    /// Start of the most recent records (the last is record `records`).
    starts: VecDeque<Start>,
    /// Lines not yet handed on.
    lines: Vec<u8>,
    /// Records that failed here, handed on as a line that cannot decode so
    /// that their skip takes its place in order: (record, error, excerpt).
    failed: VecDeque<(u64, DecodeError, String)>,
}

impl JsonRecords {
    /// The NDJSON decoder inside gets the options less the format's own
    /// (already checked by the caller).
    pub(crate) fn new(options: &DecodeOptions) -> Result<Self, DecodeError> {
        let inner_options = DecodeOptions {
            options: Default::default(),
            ..options.clone()
        };
        Ok(Self {
            inner: NdjsonFormat.decoder(&inner_options)?,
            location: options.location.clone(),
            on_error: options.on_error,
            records: 0,
            starts: VecDeque::new(),
            lines: Vec::new(),
            failed: VecDeque::new(),
        })
    }

    /// The input's location.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// The number the next record will get.
    pub(crate) fn next_record(&self) -> u64 {
        self.records + 1
    }

    /// An error at `start` naming the next record.
    pub(crate) fn error(
        &self,
        kind: rota_core::DecodeErrorKind,
        start: Start,
        message: impl Into<String>,
    ) -> DecodeError {
        DecodeError {
            location: self.location.clone(),
            position: Position {
                byte_offset: start.byte,
                line: Some(start.line),
                record: Some(self.next_record()),
                column: None,
                part: None,
            },
            kind,
            message: message.into(),
        }
    }

    /// Adds one record, written by `write` as a JSON value (no newline). When
    /// `write` fails, the record fails as with [`JsonRecords::fail`].
    pub(crate) fn record(
        &mut self,
        start: Start,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), DecodeError>,
        excerpt: impl FnOnce() -> String,
    ) -> Result<(), DecodeError> {
        let mark = self.lines.len();
        match write(&mut self.lines) {
            Ok(()) => {
                self.lines.push(b'\n');
                self.note(start);
                Ok(())
            }
            Err(e) => {
                self.lines.truncate(mark);
                self.fail(start, e, excerpt())
            }
        }
    }

    /// A record that cannot be converted: the error under `on_error = fail`;
    /// under skip, a stand-in line whose skip is replaced by `error`.
    pub(crate) fn fail(
        &mut self,
        start: Start,
        error: DecodeError,
        excerpt: String,
    ) -> Result<(), DecodeError> {
        if self.on_error == OnError::Fail {
            return Err(error);
        }
        // Not JSON: the decoder inside skips it, in order.
        self.lines.extend_from_slice(b"!\n");
        self.note(start);
        let cut: String = excerpt.chars().take(EXCERPT_CHARS).collect();
        self.failed.push_back((self.records, error, cut));
        Ok(())
    }

    fn note(&mut self, start: Start) {
        self.records += 1;
        self.starts.push_back(start);
        if self.starts.len() > POSITIONS_KEPT {
            self.starts.pop_front();
        }
    }

    /// Moves an error of the decoder inside (whose lines are records) onto
    /// the original input.
    fn reposition(&self, mut e: DecodeError) -> DecodeError {
        if let Some(record) = e.position.line.or(e.position.record) {
            let oldest = self.records + 1 - self.starts.len() as u64;
            let at = record
                .checked_sub(oldest)
                .and_then(|i| self.starts.get(usize::try_from(i).ok()?));
            e.position = Position {
                byte_offset: at.map_or(0, |s| s.byte),
                line: at.map(|s| s.line),
                record: Some(record),
                column: e.position.column,
                part: e.position.part,
            };
        }
        e
    }

    fn reposition_out(&mut self, out: &mut [Decoded]) {
        for d in out {
            if let Decoded::Skipped { error, excerpt } = d {
                let record = error.position.line.or(error.position.record);
                while self.failed.front().is_some_and(|f| Some(f.0) < record) {
                    self.failed.pop_front();
                }
                if self.failed.front().is_some_and(|f| Some(f.0) == record) {
                    if let Some((_, own, text)) = self.failed.pop_front() {
                        *error = own;
                        *excerpt = Some(text);
                    }
                } else {
                    *error = self.reposition(error.clone());
                }
            }
        }
    }

    /// Hands the lines written so far to the decoder inside.
    pub(crate) fn flush(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if self.lines.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.lines);
        let from = out.len();
        let result = self.inner.push(&lines, out);
        self.lines = lines;
        self.lines.clear();
        self.reposition_out(&mut out[from..]);
        result.map_err(|e| self.reposition(e))
    }

    /// Flushes and finishes the decoder inside.
    pub(crate) fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.flush(out)?;
        let from = out.len();
        let result = self.inner.finish(out);
        self.reposition_out(&mut out[from..]);
        result.map_err(|e| self.reposition(e))
    }

    /// The schema of the decoder inside, once known.
    pub(crate) fn schema(&self) -> Option<SchemaRef> {
        self.inner.schema()
    }
}

/// Line breaks in `bytes`.
pub(crate) fn newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// `bytes` as text, for an excerpt.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let cut = bytes.len().min(EXCERPT_CHARS * 4);
    String::from_utf8_lossy(&bytes[..cut])
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

/// At the start of a text input held in `head`: `Ok(None)` while it is too
/// short to tell (and more may come), then the length of a UTF-8 byte order
/// mark to drop (0 or 3). A UTF-16 mark is refused with a hint, as the other
/// text formats do.
pub(crate) fn byte_order_mark(
    head: &[u8],
    eof: bool,
    location: &str,
) -> Result<Option<usize>, DecodeError> {
    if head.len() < 3 && !eof {
        return Ok(None);
    }
    if head.starts_with(b"\xEF\xBB\xBF") {
        return Ok(Some(3));
    }
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        let order = if head[0] == 0xFF {
            "utf-16le"
        } else {
            "utf-16be"
        };
        return Err(DecodeError {
            location: location.to_owned(),
            position: Position {
                line: Some(1),
                record: Some(1),
                ..Position::default()
            },
            kind: rota_core::DecodeErrorKind::Encoding,
            message: format!(
                "the text starts with a UTF-16 byte order mark, not UTF-8; pass --encoding {order}"
            ),
        });
    }
    Ok(Some(0))
}
