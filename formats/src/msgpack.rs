//! MessagePack: a stream of maps, or one array of maps, each map a record.
//!
//! Values are read one record at a time as bytes arrive and handed on as
//! JSON lines to the NDJSON decoder, which brings schema inference, the
//! explicit schema and `on_error` handling; its errors are re-positioned onto
//! the MessagePack bytes and record numbers. Binary values become lowercase
//! hex text; extension types are refused.

use std::collections::VecDeque;
use std::fmt::Write as _;

use arrow_schema::SchemaRef;
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind, Position};

use crate::json::NdjsonFormat;

/// Nesting deeper than this is refused (a hostile file could otherwise
/// recurse the reader to exhaustion).
const MAX_DEPTH: usize = 256;

/// Record offsets remembered for positioning errors of the decoder inside;
/// it holds fewer records than this at any time.
const OFFSETS_KEPT: usize = 1 << 16;

/// MessagePack records.
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgpackFormat;

impl Format for MsgpackFormat {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["msgpack", "mpk"]
    }

    fn describe(&self) -> &'static str {
        "MessagePack: a stream of maps or one array of maps (binary values become hex text); \
         no options"
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        Ok(Box::new(MsgpackDecoder {
            inner: NdjsonFormat.decoder(options)?,
            location: options.location.clone(),
            max_record: options.max_record_bytes,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            started: false,
            array_left: None,
            records: 0,
            offsets: VecDeque::new(),
            lines: Vec::new(),
            retry_at: 0,
        }))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        // Binary that opens with a map or an array.
        match head.bytes.first() {
            Some(0x80..=0x9F | 0xDC..=0xDF) if head.text.is_none() => 50,
            _ => 0,
        }
    }
}

struct MsgpackDecoder {
    inner: Box<dyn Decoder>,
    location: String,
    max_record: usize,
    buf: Vec<u8>,
    /// Offset of `buf[0]` in the input.
    base: u64,
    /// Start of the next unread value in `buf`.
    pos: usize,
    /// Whether the top-level form (a stream, or an array) is known.
    started: bool,
    /// Elements left in the top-level array, when the input is one.
    array_left: Option<u32>,
    /// Records read so far.
    records: u64,
    /// Input offset of the most recent records (the last is record `records`).
    offsets: VecDeque<u64>,
    /// JSON lines for the decoder inside.
    lines: Vec<u8>,
    /// After a value was found incomplete, the unread length at which to try
    /// again: doubling it keeps a large value arriving in small pieces from
    /// being re-read once per piece.
    retry_at: usize,
}

fn is_eof(e: &rmpv::decode::Error) -> bool {
    match e {
        rmpv::decode::Error::InvalidMarkerRead(io) | rmpv::decode::Error::InvalidDataRead(io) => {
            io.kind() == std::io::ErrorKind::UnexpectedEof
        }
        rmpv::decode::Error::DepthLimitExceeded => false,
    }
}

/// Writes a MessagePack value as JSON, keeping the order of map keys.
fn write_json(v: &rmpv::Value, out: &mut Vec<u8>) -> Result<(), String> {
    use rmpv::Value as M;
    let text =
        |out: &mut Vec<u8>, s: &str| serde_json::to_writer(&mut *out, s).map_err(|e| e.to_string());
    match v {
        M::Nil => out.extend_from_slice(b"null"),
        M::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        M::Integer(i) => {
            let _ = write!(Utf8Sink(out), "{i}");
        }
        M::F32(f) => write_float(f64::from(*f), out),
        M::F64(f) => write_float(*f, out),
        M::String(s) => match s.as_str() {
            Some(s) => text(out, s)?,
            None => return Err("a string that is not UTF-8".into()),
        },
        M::Binary(bytes) => {
            out.push(b'"');
            for b in bytes {
                let _ = write!(Utf8Sink(out), "{b:02x}");
            }
            out.push(b'"');
        }
        M::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_json(item, out)?;
            }
            out.push(b']');
        }
        M::Map(pairs) => {
            out.push(b'{');
            for (n, (k, v)) in pairs.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                match k {
                    M::String(s) => match s.as_str() {
                        Some(s) => text(out, s)?,
                        None => return Err("a map key that is not UTF-8".into()),
                    },
                    M::Integer(i) => text(out, &i.to_string())?,
                    other => return Err(format!("a map key that is not a string ({other})")),
                }
                out.push(b':');
                write_json(v, out)?;
            }
            out.push(b'}');
        }
        M::Ext(kind, _) => return Err(format!("extension type {kind}, which has no JSON form")),
    }
    Ok(())
}

/// A float as JSON: NaN and infinities, which JSON lacks, become null.
fn write_float(f: f64, out: &mut Vec<u8>) {
    match serde_json::Number::from_f64(f) {
        Some(n) => {
            let _ = write!(Utf8Sink(out), "{n}");
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// `fmt::Write` into a byte buffer.
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl MsgpackDecoder {
    fn error(&self, kind: DecodeErrorKind, at: u64, message: String) -> DecodeError {
        let mut e = DecodeError::at_byte(&self.location, at, kind, message);
        e.position.record = Some(self.records + 1);
        e
    }

    /// Moves an error of the decoder inside (whose lines are records) onto
    /// the MessagePack input.
    fn reposition(&self, mut e: DecodeError) -> DecodeError {
        if let Some(record) = e.position.line.or(e.position.record) {
            let oldest = self.records + 1 - self.offsets.len() as u64;
            let at = record
                .checked_sub(oldest)
                .and_then(|i| self.offsets.get(usize::try_from(i).ok()?));
            e.position = Position {
                byte_offset: at.copied().unwrap_or(0),
                line: None,
                record: Some(record),
                column: e.position.column,
                part: e.position.part,
            };
        }
        e
    }

    /// Reads the complete values in `buf` into JSON lines; at the end of the
    /// input (`eof`) every remaining byte is tried.
    fn read_values(&mut self, eof: bool) -> Result<(), DecodeError> {
        loop {
            let rest = &self.buf[self.pos..];
            if rest.is_empty() || (!eof && rest.len() < self.retry_at) {
                return Ok(());
            }
            let at = self.base + self.pos as u64;
            if !self.started {
                if matches!(rest[0], 0x90..=0x9f | 0xdc | 0xdd) {
                    let mut rd = rest;
                    match rmp::decode::read_array_len(&mut rd) {
                        Ok(n) => {
                            self.pos += rest.len() - rd.len();
                            self.array_left = Some(n);
                        }
                        Err(_) => return Ok(()), // the length is not all here yet
                    }
                }
                self.started = true;
                continue;
            }
            if self.array_left == Some(0) {
                return Err(self.error(
                    DecodeErrorKind::Syntax,
                    at,
                    "data after the end of the top-level array".into(),
                ));
            }
            if rest[0] == 0xc1 {
                // The one marker MessagePack never uses (the reader would take it for nil).
                return Err(self.error(
                    DecodeErrorKind::Syntax,
                    at,
                    "invalid MessagePack: byte 0xc1 is never used".into(),
                ));
            }
            let mut rd = rest;
            match rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH) {
                Ok(value) => {
                    self.retry_at = 0;
                    let mark = self.lines.len();
                    if let Err(m) = write_json(&value, &mut self.lines) {
                        self.lines.truncate(mark);
                        return Err(self.error(
                            DecodeErrorKind::Type,
                            at,
                            format!("record holds {m}"),
                        ));
                    }
                    self.lines.push(b'\n');
                    self.pos += rest.len() - rd.len();
                    self.records += 1;
                    self.offsets.push_back(at);
                    if self.offsets.len() > OFFSETS_KEPT {
                        self.offsets.pop_front();
                    }
                    if let Some(left) = &mut self.array_left {
                        *left -= 1;
                    }
                }
                Err(e) if is_eof(&e) => {
                    if rest.len() > self.max_record {
                        return Err(self.error(
                            DecodeErrorKind::TooLarge,
                            at,
                            format!(
                                "record is larger than the limit of {} bytes",
                                self.max_record
                            ),
                        ));
                    }
                    // Never wait past the size limit to notice it.
                    self.retry_at = rest.len().saturating_mul(2).min(self.max_record + 1);
                    return Ok(());
                }
                Err(e) => {
                    return Err(self.error(
                        DecodeErrorKind::Syntax,
                        at,
                        format!("invalid MessagePack: {e}"),
                    ));
                }
            }
        }
    }

    /// Hands the JSON lines read so far to the decoder inside.
    fn flush(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.buf.drain(..self.pos);
        self.base += self.pos as u64;
        self.pos = 0;
        let lines = std::mem::take(&mut self.lines);
        let from = out.len();
        let result = self.inner.push(&lines, out);
        self.lines = lines;
        self.lines.clear();
        self.reposition_skips(&mut out[from..]);
        result.map_err(|e| self.reposition(e))
    }

    fn reposition_skips(&self, out: &mut [Decoded]) {
        for d in out {
            if let Decoded::Skipped { error, .. } = d {
                *error = self.reposition(error.clone());
            }
        }
    }
}

impl Decoder for MsgpackDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(bytes);
        self.read_values(false)?;
        self.flush(out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.read_values(true)?;
        let at = self.base + self.pos as u64;
        if self.pos < self.buf.len() {
            return Err(self.error(
                DecodeErrorKind::Truncated,
                at,
                "the input ends inside a value".into(),
            ));
        }
        if let Some(left @ 1..) = self.array_left {
            return Err(self.error(
                DecodeErrorKind::Truncated,
                at,
                format!("the input ends {left} element(s) before the end of its array"),
            ));
        }
        self.flush(out)?;
        let from = out.len();
        let result = self.inner.finish(out);
        self.reposition_skips(&mut out[from..]);
        result.map_err(|e| self.reposition(e))
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.inner.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_larger_than_the_record_limit_is_refused_as_it_arrives() {
        let options = DecodeOptions {
            location: "big.msgpack".into(),
            max_record_bytes: 1_000,
            ..DecodeOptions::default()
        };
        let mut d = MsgpackFormat.decoder(&options).expect("decoder");
        // A map whose one string value declares 100 000 bytes.
        let mut bytes = vec![0x81, 0xa1, b'k', 0xdb];
        bytes.extend(100_000u32.to_be_bytes());
        bytes.extend(vec![b'x'; 100_000]);
        let mut out = Vec::new();
        let mut fed = 0;
        let err = bytes
            .chunks(100)
            .find_map(|piece| {
                fed += piece.len();
                d.push(piece, &mut out).err()
            })
            .expect("refused before the end");
        assert_eq!(err.kind, DecodeErrorKind::TooLarge, "{err}");
        assert!(
            fed <= 2_100,
            "refused after {fed} bytes, not near the limit"
        );
        assert_eq!(err.position.byte_offset, 0);
    }
}
