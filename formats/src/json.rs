//! JSON records: NDJSON (one value per line) and a JSON document whose top
//! level is an array of records (streamed element by element) or one object.
//! Types are inferred from a sample; a field outside the schema is an error,
//! never dropped silently.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_json::reader::{Decoder as ArrowJsonDecoder, ReaderBuilder};
use arrow_schema::{Schema, SchemaRef};
use rota_core::format::{DecodeOptions, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind};

use crate::infer::{ExactDecoders, Kind, kind_of, unescape_surrogates};
use crate::options::FormatOptions;
use crate::text::{
    Batcher, Found, Frame, FrameError, Framer, Inferred, RecordError, TextDecoder,
    clean_arrow_message, join, one_row_each, trim_cr,
};

/// Newline-delimited JSON: one object per line; blank lines are ignored.
#[derive(Debug, Default, Clone, Copy)]
pub struct NdjsonFormat;

/// A JSON document: an array of objects, or a single object.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFormat;

impl Format for NdjsonFormat {
    fn name(&self) -> &'static str {
        "ndjson"
    }
    fn extensions(&self) -> &'static [&'static str] {
        &["ndjson", "jsonl"]
    }
    fn is_text(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "newline-delimited JSON, one object per line; no options"
    }
    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        FormatOptions::new(options, &[]).finish()?;
        let framer = LineFramer { resume: 0 };
        Ok(Box::new(TextDecoder::new(
            framer,
            JsonBatcher::new(options),
            options,
        )))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        // One whole object on the first line, and more lines.
        match head.first_line {
            Some(first)
                if first.starts_with('{')
                    && head.more_lines
                    && serde_json::from_str::<serde::de::IgnoredAny>(first).is_ok() =>
            {
                75
            }
            _ => 0,
        }
    }
}

impl Format for JsonFormat {
    fn name(&self) -> &'static str {
        "json"
    }
    fn extensions(&self) -> &'static [&'static str] {
        &["json"]
    }
    fn is_text(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "a JSON array of objects (streamed element by element) or one object; no options"
    }
    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        FormatOptions::new(options, &[]).finish()?;
        let framer = ArrayFramer {
            phase: Phase::Start,
            scan: Scan::default(),
        };
        Ok(Box::new(TextDecoder::new(
            framer,
            JsonBatcher::new(options),
            options,
        )))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        match head.first_line {
            Some(first) if first.starts_with('{') || first.starts_with('[') => 70,
            _ => 0,
        }
    }
}

/// Whitespace as JSON has it: space, tab, line feed and carriage return
/// (not a form feed or vertical tab).
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// One record per line.
pub(crate) struct LineFramer {
    pub(crate) resume: usize,
}

impl Framer for LineFramer {
    fn next(&mut self, buf: &[u8], pos: usize, eof: bool) -> Result<Found, FrameError> {
        let from = pos + self.resume;
        let (end, next, newlines) = match memchr::memchr(b'\n', &buf[from..]) {
            Some(k) => (from + k, from + k + 1, 1),
            None if !eof => {
                self.resume = buf.len() - pos;
                return Ok(Found::NeedMore);
            }
            None if pos >= buf.len() => return Ok(Found::End),
            None => (buf.len(), buf.len(), 0),
        };
        self.resume = 0;
        let end = trim_cr(buf, pos, end);
        if buf[pos..end].iter().all(|&b| is_json_space(b)) {
            return Ok(Found::Gap { next, newlines });
        }
        Ok(Found::Record(Frame {
            start: pos,
            end,
            next,
            newlines,
        }))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Before the top-level value.
    Start,
    /// Inside the top-level array, expecting a value or `]`.
    Value,
    /// After a value, expecting `,` or `]`.
    Comma,
    /// The top level was a single object.
    Single,
    /// After the top-level value: only whitespace may follow.
    Done,
}

/// Resumable state of scanning one value.
#[derive(Default, Debug)]
struct Scan {
    offset: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    newlines: u64,
}

/// Splits a top-level array into its elements, tracking strings and nesting.
struct ArrayFramer {
    phase: Phase,
    scan: Scan,
}

fn syntax(at: usize, message: String) -> FrameError {
    FrameError {
        at,
        newlines: 0,
        kind: DecodeErrorKind::Syntax,
        message,
    }
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

impl ArrayFramer {
    /// Scans a value starting at `pos`; returns its end when complete.
    fn value_end(&mut self, buf: &[u8], pos: usize) -> Option<usize> {
        let s = &mut self.scan;
        let scalar = !matches!(buf[pos], b'{' | b'[' | b'"');
        let mut i = pos + s.offset;
        while i < buf.len() {
            let b = buf[i];
            if b == b'\n' {
                s.newlines += 1;
            }
            if s.in_string {
                if s.escaped {
                    s.escaped = false;
                } else if b == b'\\' {
                    s.escaped = true;
                } else if b == b'"' {
                    s.in_string = false;
                    if s.depth == 0 {
                        return Some(i + 1);
                    }
                }
            } else if scalar {
                if matches!(b, b',' | b']') || is_json_space(b) {
                    return Some(i);
                }
            } else {
                match b {
                    b'"' => s.in_string = true,
                    b'{' | b'[' => s.depth += 1,
                    b'}' | b']' => {
                        s.depth = s.depth.saturating_sub(1);
                        if s.depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        s.offset = i - pos;
        None
    }
}

impl Framer for ArrayFramer {
    fn next(&mut self, buf: &[u8], pos: usize, eof: bool) -> Result<Found, FrameError> {
        // Whitespace between tokens: JSON's four, not a form feed.
        let mut i = pos;
        let mut newlines = 0;
        while i < buf.len() && is_json_space(buf[i]) {
            newlines += u64::from(buf[i] == b'\n');
            i += 1;
        }
        if i > pos {
            return Ok(Found::Gap { next: i, newlines });
        }
        if i >= buf.len() {
            return match (eof, self.phase) {
                (false, _) => Ok(Found::NeedMore),
                (true, Phase::Start | Phase::Done) => Ok(Found::End),
                (true, _) => Err(FrameError {
                    at: pos,
                    newlines: 0,
                    kind: DecodeErrorKind::Truncated,
                    message: "input ends inside the top-level array (is a closing ']' missing?)"
                        .into(),
                }),
            };
        }
        let b = buf[i];
        match self.phase {
            Phase::Start => match b {
                b'[' => {
                    self.phase = Phase::Value;
                    Ok(Found::Gap {
                        next: i + 1,
                        newlines: 0,
                    })
                }
                b'{' => {
                    self.phase = Phase::Single;
                    self.next(buf, pos, eof)
                }
                _ => Err(syntax(
                    i,
                    format!(
                        "expected a JSON array or object at the top level, found {}",
                        show(b)
                    ),
                )),
            },
            Phase::Comma => match b {
                b',' => {
                    self.phase = Phase::Value;
                    Ok(Found::Gap {
                        next: i + 1,
                        newlines: 0,
                    })
                }
                b']' => {
                    self.phase = Phase::Done;
                    Ok(Found::Gap {
                        next: i + 1,
                        newlines: 0,
                    })
                }
                _ => Err(syntax(
                    i,
                    format!(
                        "expected ',' or ']' after an array element, found {}",
                        show(b)
                    ),
                )),
            },
            Phase::Value | Phase::Single => {
                if b == b']' && self.phase == Phase::Value {
                    self.phase = Phase::Done;
                    return Ok(Found::Gap {
                        next: i + 1,
                        newlines: 0,
                    });
                }
                if b == b',' {
                    return Err(syntax(i, "expected an array element, found ','".into()));
                }
                if b < 0x20 {
                    return Err(syntax(
                        i,
                        format!(
                            "expected a JSON value, found {} (a control character is not JSON \
                             whitespace)",
                            show(b)
                        ),
                    ));
                }
                match self.value_end(buf, pos) {
                    Some(end) => {
                        let newlines = self.scan.newlines;
                        self.scan = Scan::default();
                        self.phase = if self.phase == Phase::Single {
                            Phase::Done
                        } else {
                            Phase::Comma
                        };
                        Ok(Found::Record(Frame {
                            start: pos,
                            end,
                            next: end,
                            newlines,
                        }))
                    }
                    None if eof
                        && self.phase == Phase::Value
                        && !matches!(b, b'{' | b'[' | b'"') =>
                    {
                        Err(FrameError {
                            at: pos,
                            newlines: 0,
                            kind: DecodeErrorKind::Truncated,
                            message:
                                "input ends inside the top-level array (is a closing ']' missing?)"
                                    .into(),
                        })
                    }
                    None if eof => Err(FrameError {
                        at: pos,
                        newlines: self.scan.newlines,
                        kind: DecodeErrorKind::Truncated,
                        message: "input ends inside a JSON value".into(),
                    }),
                    None => Ok(Found::NeedMore),
                }
            }
            Phase::Done => Err(syntax(
                i,
                format!("unexpected {} after the top-level value", show(b)),
            )),
        }
    }
}

pub(crate) struct JsonBatcher {
    batch_size: usize,
    decoder: Option<ArrowJsonDecoder>,
    /// What the records seen need, when the schema is inferred (`None`
    /// when it was given: a given schema never widens).
    kind: Option<Kind>,
}

impl JsonBatcher {
    pub(crate) fn new(options: &DecodeOptions) -> Self {
        Self {
            batch_size: options.batch_records.max(options.infer_records).max(1),
            decoder: None,
            kind: None,
        }
    }
}

/// What a JSON value is, in words, for messages.
fn shape(kind: &Kind) -> &'static str {
    match kind {
        Kind::Null => "null",
        Kind::Bool => "a boolean",
        Kind::Int(_) | Kind::Float => "a number",
        Kind::Text => "a string",
        Kind::Scalars => "a value",
        Kind::List(_) => "a list",
        Kind::Object(_) => "an object",
        Kind::Raw => "a value",
    }
}

/// An arrow JSON error in the user's terms: `whilst decoding field 'a':
/// whilst decoding field 'b': expected [ got 1` becomes `field a.b: expected
/// a list, found 1`, with the top-level column named.
fn record_error(e: &arrow_schema::ArrowError, schema: &SchemaRef) -> RecordError {
    let raw = e.to_string();
    let mut rest = raw
        .trim_start_matches("Json error: ")
        .trim_start_matches("Parser error: ");
    let mut path: Vec<&str> = Vec::new();
    while let Some(after) = rest.strip_prefix("whilst decoding field '") {
        let Some(end) = after.find("': ") else { break };
        path.push(&after[..end]);
        rest = &after[end + 3..];
    }
    let column = path.first().and_then(|name| schema.index_of(name).ok());
    let mut message = rest.to_owned();
    for (from, to) in [
        ("expected [ got ", "expected a list, found "),
        ("expected { got ", "expected an object, found "),
        ("expected string got ", "expected text, found "),
        ("expected boolean got ", "expected true or false, found "),
        ("expected primitive got ", "expected a number, found "),
        ("expected null got ", "expected null, found "),
    ] {
        if let Some(tail) = message.strip_prefix(from) {
            message = format!("{to}{tail}");
        }
    }
    if let Some(name) = message
        .strip_prefix("column '")
        .and_then(|m| m.strip_suffix("' missing from schema"))
    {
        message = format!("field '{name}' is not in the schema");
    }
    let kind = if path.is_empty() && !message.starts_with("expected") {
        DecodeErrorKind::Syntax
    } else {
        DecodeErrorKind::Type
    };
    if path.len() > 1 {
        message = format!("field {}: {message}", path.join("."));
    }
    let (message, _) = clean_arrow_message(&message);
    RecordError {
        kind,
        message,
        column,
    }
}

impl Batcher for JsonBatcher {
    fn schema(
        &mut self,
        _header: Option<&[u8]>,
        sample: &[&[u8]],
        given: Option<SchemaRef>,
    ) -> Result<SchemaRef, RecordError> {
        if let Some(schema) = given {
            return Ok(schema);
        }
        // Records that are not JSON objects are left out of the sample;
        // decoding reports them with their position.
        let kind = sample
            .iter()
            .filter_map(|r| kind_of(r))
            .filter(|k| matches!(k, Kind::Object(_)))
            .fold(Kind::Object(Vec::new()), Kind::merge);
        let schema = kind.schema().unwrap_or_else(Schema::empty);
        self.kind = Some(kind);
        Ok(Arc::new(schema))
    }

    fn inferred(&self) -> Inferred {
        self.kind.clone().map_or(Inferred::Nothing, Inferred::Json)
    }

    fn seed(&mut self, inferred: Inferred) {
        self.kind = match inferred {
            Inferred::Json(kind) => Some(kind),
            _ => None,
        };
        self.decoder = None;
    }

    fn widen(&mut self, schema: &SchemaRef, record: &[u8]) -> Option<SchemaRef> {
        let have = self.kind.as_ref()?;
        let wider = have.clone().merge(kind_of(record)?);
        if wider == *have {
            return None;
        }
        let widened = Arc::new(wider.schema()?);
        if widened == *schema {
            return None;
        }
        self.kind = Some(wider);
        self.decoder = None;
        Some(widened)
    }

    fn decode(
        &mut self,
        schema: &SchemaRef,
        records: &[&[u8]],
        contiguous: Option<&[u8]>,
    ) -> Result<RecordBatch, RecordError> {
        let decoder = match &mut self.decoder {
            Some(d) => d,
            slot => {
                let built = ReaderBuilder::new(schema.clone())
                    .with_batch_size(self.batch_size)
                    .with_strict_mode(true)
                    .with_coerce_primitive(true)
                    .with_decoder_factory(Arc::new(ExactDecoders))
                    .build_decoder()
                    .map_err(|e| record_error(&e, schema))?;
                slot.insert(built)
            }
        };
        let mut batches = Vec::with_capacity(1);
        let result = (|| {
            let mut feed = |bytes: &[u8]| -> Result<(), arrow_schema::ArrowError> {
                let fixed = unescape_surrogates(bytes);
                let mut bytes = fixed.as_deref().unwrap_or(bytes);
                while !bytes.is_empty() {
                    let n = decoder.decode(bytes)?;
                    bytes = &bytes[n..];
                    if !bytes.is_empty()
                        && let Some(batch) = decoder.flush()?
                    {
                        batches.push(batch);
                    }
                }
                Ok(())
            };
            match contiguous {
                Some(bytes) => feed(bytes)?,
                None => {
                    for record in records {
                        feed(record)?;
                        feed(b"\n")?;
                    }
                }
            }
            if let Some(batch) = decoder.flush()? {
                batches.push(batch);
            }
            Ok::<_, arrow_schema::ArrowError>(())
        })();
        if let Err(e) = result {
            self.decoder = None;
            if let [one] = records
                && let Some(kind) = kind_of(one)
                && !matches!(kind, Kind::Object(_))
            {
                return Err(RecordError {
                    kind: DecodeErrorKind::Type,
                    message: format!(
                        "a record must be an object (a map of fields), and this is {}",
                        shape(&kind)
                    ),
                    column: None,
                });
            }
            return Err(record_error(&e, schema));
        }
        if let Err(e) = one_row_each(&batches, records.len(), "one JSON value each was expected") {
            self.decoder = None;
            return Err(e);
        }
        join(schema, batches).map_err(|e| record_error(&e, schema))
    }
}
