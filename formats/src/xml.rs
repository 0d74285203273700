//! XML: the elements at a path are the records.
//!
//! The input is scanned token by token as bytes arrive; only the current
//! record element is held, never the whole document. Each record is parsed
//! with quick-xml and written as one JSON object line for the NDJSON decoder
//! (schema inference, explicit schema, `on_error`), whose errors are moved
//! back onto the XML bytes, lines and record numbers.
//!
//! # Mapping
//!
//! - Names are local names: a namespace prefix is dropped (`a:item` is
//!   `item`), in the record path and in field names alike; `xmlns`
//!   declarations are not fields.
//! - An attribute becomes a field named with `attribute_prefix` (default
//!   `@`) before its name.
//! - A child element becomes a field named after it; a repeated child
//!   becomes a list, at the place of its first occurrence. Children named in
//!   `lists` are lists always, even when there is one or none of them in a
//!   record (otherwise a record with one `<tag>` and another with two give a
//!   string and a list for the same field, which the schema cannot hold).
//! - A child with neither attributes nor children becomes its text, exactly
//!   as written (entities resolved), or null when it is empty.
//! - Any other element becomes an object of its attributes and children; its
//!   own text (pieces between children joined, then trimmed) goes under
//!   `text_key` (default `#text`) when not empty. The record element is
//!   always an object.
//! - All values are text; the NDJSON inference keeps them as strings.
//!
//! # Safety
//!
//! Only the five predefined entities and character references are expanded.
//! A DOCTYPE that declares entities is refused, as is any other entity
//! reference: an entity-expansion bomb ends in an error at its first byte,
//! having allocated nothing. Nesting deeper than 256 elements is refused.

use arrow_schema::SchemaRef;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind};
use serde_json::{Map, Value};

use crate::options::FormatOptions;
use crate::via_json::{JsonRecords, Start, byte_order_mark, excerpt, newlines};

/// Elements nested deeper than this are refused.
const MAX_DEPTH: usize = 256;

/// XML records.
#[derive(Clone, Copy, Debug, Default)]
pub struct XmlFormat;

impl Format for XmlFormat {
    fn name(&self) -> &'static str {
        "xml"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["xml"]
    }

    fn is_text(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "XML: the elements at a path are the records (attributes and child elements become \
         fields, repeated children lists, namespace prefixes dropped, no entities beyond the \
         predefined ones); options: record=/root/item (default /*/*, the children of the root; \
         * matches any name), lists=a,b (children that are always lists), attribute_prefix=@, \
         text_key=#text"
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let mut opts = FormatOptions::new(
            options,
            &["record", "lists", "attribute_prefix", "text_key"],
        );
        let record = opts.string("record");
        let attribute_prefix = opts
            .string("attribute_prefix")
            .unwrap_or_else(|| "@".into());
        let text_key = opts.string("text_key").unwrap_or_else(|| "#text".into());
        let lists = opts
            .string("lists")
            .map(|l| {
                l.split(',')
                    .map(|n| local(n.trim()).to_owned())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        opts.finish()?;
        let option_error = |message: String| DecodeError {
            location: options.location.clone(),
            position: rota_core::Position::default(),
            kind: DecodeErrorKind::Options,
            message,
        };
        let path = match record.as_deref() {
            None => vec!["*".to_owned(), "*".to_owned()],
            Some(p) => parse_path(p).map_err(option_error)?,
        };
        if text_key.is_empty() {
            return Err(option_error("option text_key: must not be empty".into()));
        }
        Ok(Box::new(XmlDecoder {
            records: JsonRecords::new(options)?,
            mapping: Mapping {
                attribute_prefix,
                text_key,
                lists,
            },
            path,
            max_record: options.max_record_bytes,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            line: 1,
            record: None,
            open: Vec::new(),
            seen_root: false,
            retry_at: 0,
            bom_checked: false,
        }))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        match head.text {
            Some(t) if t.trim_start().starts_with('<') => 90,
            _ => 0,
        }
    }
}

/// `/a/b/c` as its steps, each a local name or `*`.
fn parse_path(p: &str) -> Result<Vec<String>, String> {
    let Some(rest) = p.strip_prefix('/') else {
        return Err(format!(
            "option record: expected a path from the root such as /root/item, got '{p}'"
        ));
    };
    let steps: Vec<String> = rest
        .split('/')
        .map(|s| local(s.trim()).to_owned())
        .collect();
    if steps.iter().any(String::is_empty) {
        return Err(format!("option record: empty step in '{p}'"));
    }
    Ok(steps)
}

/// A name without its namespace prefix.
fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
}

struct Mapping {
    attribute_prefix: String,
    text_key: String,
    /// Children that are lists even when single.
    lists: Vec<String>,
}

/// The record being read.
struct Open {
    /// Its first byte, in `buf`.
    start: usize,
    line: u64,
    /// Elements open inside it (itself included).
    depth: usize,
}

struct XmlDecoder {
    records: JsonRecords,
    mapping: Mapping,
    path: Vec<String>,
    max_record: usize,
    buf: Vec<u8>,
    /// Offset of `buf[0]` in the input.
    base: u64,
    /// Start of the next unread token in `buf`.
    pos: usize,
    /// Line at `pos`.
    line: u64,
    record: Option<Open>,
    /// Elements open outside a record: qualified name, and whether it is on
    /// the record path.
    open: Vec<(String, bool)>,
    seen_root: bool,
    /// After a token was found incomplete, the unread length at which to try
    /// again (doubling, so a long token arriving in small pieces is not
    /// re-scanned once per piece).
    retry_at: usize,
    /// Whether a byte order mark at the start was looked for.
    bom_checked: bool,
}

/// A complete markup or text token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Text,
    StartTag {
        empty: bool,
    },
    EndTag,
    /// Comment, processing instruction or XML declaration.
    Ignored,
    CData,
    DocType,
}

/// The next token in `rest` and its length, or `None` when it is not all
/// there yet (`eof` false) or never will be (`eof` true).
fn scan(rest: &[u8], eof: bool) -> Option<(Token, usize)> {
    if rest[0] != b'<' {
        return match memchr::memchr(b'<', rest) {
            Some(n) => Some((Token::Text, n)),
            None if eof => Some((Token::Text, rest.len())),
            None => None,
        };
    }
    let find = |from: usize, pat: &[u8]| {
        memchr::memmem::find(rest.get(from..)?, pat).map(|n| from + n + pat.len())
    };
    let starts = |p: &[u8]| rest.len() >= p.len() && &rest[..p.len()] == p;
    let could_be = |p: &[u8]| rest.len() < p.len() && p.starts_with(rest);
    if starts(b"<!--") {
        return find(4, b"-->").map(|n| (Token::Ignored, n));
    }
    if starts(b"<![CDATA[") {
        return find(9, b"]]>").map(|n| (Token::CData, n));
    }
    if starts(b"<?") {
        return find(2, b"?>").map(|n| (Token::Ignored, n));
    }
    if !eof && (could_be(b"<!--") || could_be(b"<![CDATA[")) {
        return None;
    }
    if starts(b"<!") {
        // A DOCTYPE: up to the `>` outside quotes and the internal subset.
        let mut quote = None;
        let mut bracket = 0usize;
        for (i, &b) in rest.iter().enumerate().skip(2) {
            match (quote, b) {
                (Some(q), _) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'[') => bracket += 1,
                (None, b']') => bracket = bracket.saturating_sub(1),
                (None, b'>') if bracket == 0 => return Some((Token::DocType, i + 1)),
                _ => {}
            }
        }
        return None;
    }
    // A start or end tag: up to the `>` outside quoted attribute values.
    let mut quote = None;
    let mut i = 1;
    while i < rest.len() {
        match quote {
            Some(q) => match memchr::memchr(q, &rest[i..]) {
                Some(n) => {
                    i += n;
                    quote = None;
                }
                None => return None,
            },
            None => match memchr::memchr3(b'>', b'"', b'\'', &rest[i..]) {
                Some(n) if rest[i + n] == b'>' => {
                    let end = i + n + 1;
                    let token = if rest[1] == b'/' {
                        Token::EndTag
                    } else {
                        Token::StartTag {
                            empty: rest[end - 2] == b'/',
                        }
                    };
                    return Some((token, end));
                }
                Some(n) => {
                    i += n;
                    quote = Some(rest[i]);
                }
                None => return None,
            },
        }
        i += 1;
    }
    None
}

/// The name in a start or end tag token.
fn tag_name(token: &[u8]) -> &[u8] {
    let body = token
        .strip_prefix(b"</")
        .or_else(|| token.strip_prefix(b"<"))
        .unwrap_or(token);
    let end = body
        .iter()
        .position(|b| b.is_ascii_whitespace() || matches!(b, b'/' | b'>'))
        .unwrap_or(body.len());
    &body[..end]
}

impl XmlDecoder {
    fn at(&self, offset: usize, line: u64) -> Start {
        Start {
            byte: self.base + offset as u64,
            line,
        }
    }

    fn syntax(&self, offset: usize, line: u64, message: impl Into<String>) -> DecodeError {
        self.records
            .error(DecodeErrorKind::Syntax, self.at(offset, line), message)
    }

    /// Reads every complete token in `buf`; at the end of the input (`eof`)
    /// every remaining byte.
    fn read(&mut self, eof: bool) -> Result<(), DecodeError> {
        if !self.bom_checked {
            match byte_order_mark(&self.buf, eof, self.records.location())? {
                None => return Ok(()),
                Some(n) => {
                    self.buf.drain(..n);
                    self.base += n as u64;
                    self.bom_checked = true;
                }
            }
        }
        loop {
            let rest = &self.buf[self.pos..];
            if rest.is_empty() || (!eof && rest.len() < self.retry_at) {
                return Ok(());
            }
            let Some((token, len)) = scan(rest, eof) else {
                let (held_from, held_line) = match &self.record {
                    Some(r) => (r.start, r.line),
                    None => (self.pos, self.line),
                };
                let held = self.buf.len() - held_from;
                if held > self.max_record {
                    return Err(self.records.error(
                        DecodeErrorKind::TooLarge,
                        self.at(held_from, held_line),
                        format!(
                            "record (or markup) is larger than the limit of {} bytes",
                            self.max_record
                        ),
                    ));
                }
                if eof {
                    return Err(self.records.error(
                        DecodeErrorKind::Truncated,
                        self.at(self.pos, self.line),
                        "the input ends inside markup",
                    ));
                }
                let room = (self.max_record + 1).saturating_sub(self.pos - held_from);
                self.retry_at = rest.len().saturating_mul(2).min(room.max(1));
                return Ok(());
            };
            self.retry_at = 0;
            let (start, line) = (self.pos, self.line);
            let end = start + len;
            self.token(token, start, end, line)?;
            self.line += newlines(&self.buf[start..end]);
            self.pos = end;
        }
    }

    fn token(
        &mut self,
        token: Token,
        start: usize,
        end: usize,
        line: u64,
    ) -> Result<(), DecodeError> {
        if let Some(mut open) = self.record.take() {
            if end - open.start > self.max_record {
                return Err(self.records.error(
                    DecodeErrorKind::TooLarge,
                    self.at(open.start, open.line),
                    format!(
                        "record is larger than the limit of {} bytes",
                        self.max_record
                    ),
                ));
            }
            match token {
                Token::StartTag { empty: false } => {
                    open.depth += 1;
                    if open.depth > MAX_DEPTH {
                        return Err(self.syntax(
                            start,
                            line,
                            format!("elements nested deeper than {MAX_DEPTH}"),
                        ));
                    }
                }
                Token::EndTag => {
                    open.depth -= 1;
                    if open.depth == 0 {
                        return self.convert(open.start, end, open.line);
                    }
                }
                Token::DocType => {
                    return Err(self.syntax(start, line, "a DOCTYPE inside an element"));
                }
                _ => {}
            }
            self.record = Some(open);
            return Ok(());
        }
        let text = &self.buf[start..end];
        match token {
            Token::Text | Token::CData => {
                if self.open.is_empty()
                    && (token == Token::CData || !text.iter().all(u8::is_ascii_whitespace))
                {
                    return Err(self.syntax(start, line, "text outside the root element"));
                }
            }
            Token::Ignored => {}
            Token::DocType => {
                if self.seen_root {
                    return Err(self.syntax(start, line, "a DOCTYPE after the root element"));
                }
                if memchr::memmem::find(text, b"<!ENTITY").is_some() {
                    return Err(self.syntax(
                        start,
                        line,
                        "the DOCTYPE declares entities, which are not supported (only the \
                         predefined entities and character references are expanded)",
                    ));
                }
            }
            Token::StartTag { empty } => {
                let name = self.start_tag_name(start, end, line)?;
                let depth = self.open.len();
                if depth == 0 {
                    if self.seen_root {
                        return Err(self.syntax(start, line, "a second root element"));
                    }
                    self.seen_root = true;
                }
                let parent_on_path = depth == 0 || self.open[depth - 1].1;
                let on_path = parent_on_path
                    && self
                        .path
                        .get(depth)
                        .is_some_and(|step| step == "*" || step == local(&name));
                if on_path && depth + 1 == self.path.len() {
                    if empty {
                        self.convert(start, end, line)?;
                    } else {
                        self.record = Some(Open {
                            start,
                            line,
                            depth: 1,
                        });
                    }
                } else if !empty {
                    if depth >= MAX_DEPTH {
                        return Err(self.syntax(
                            start,
                            line,
                            format!("elements nested deeper than {MAX_DEPTH}"),
                        ));
                    }
                    self.open.push((name, on_path));
                }
            }
            Token::EndTag => {
                let name = String::from_utf8_lossy(tag_name(text)).into_owned();
                match self.open.pop() {
                    Some((open, _)) if open == name => {}
                    Some((open, _)) => {
                        return Err(self.syntax(
                            start,
                            line,
                            format!("end tag </{name}> does not match <{open}>"),
                        ));
                    }
                    None => {
                        return Err(self.syntax(
                            start,
                            line,
                            format!("end tag </{name}> with no element open"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The name of a start tag outside a record, checked by quick-xml.
    fn start_tag_name(&self, start: usize, end: usize, line: u64) -> Result<String, DecodeError> {
        let text = std::str::from_utf8(&self.buf[start..end]).map_err(|_| {
            self.records.error(
                DecodeErrorKind::Encoding,
                self.at(start, line),
                "a tag that is not UTF-8",
            )
        })?;
        let mut reader = quick_xml::Reader::from_str(text);
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                for a in e.attributes() {
                    a.map_err(|err| self.syntax(start, line, format!("invalid XML: {err}")))?;
                }
                Ok(e.name().as_ref().to_owned())
            }
            Ok(_) => Err(self.syntax(start, line, "invalid XML: not a start tag")),
            Err(err) => Err(self.syntax(start, line, format!("invalid XML: {err}"))),
        }
    }

    /// Converts the record element in `buf[from..to]` into a JSON line.
    fn convert(&mut self, from: usize, to: usize, line: u64) -> Result<(), DecodeError> {
        let start = self.at(from, line);
        let raw = &self.buf[from..to];
        let result = match std::str::from_utf8(raw) {
            Ok(text) => element_to_json(text, &self.mapping).map_err(|(at, message)| {
                self.records.error(
                    DecodeErrorKind::Syntax,
                    Start {
                        byte: start.byte + at as u64,
                        line: line + newlines(&raw[..at.min(raw.len())]),
                    },
                    message,
                )
            }),
            Err(err) => {
                let at = err.valid_up_to();
                Err(self.records.error(
                    DecodeErrorKind::Encoding,
                    Start {
                        byte: start.byte + at as u64,
                        line: line + newlines(&raw[..at]),
                    },
                    "text that is not UTF-8",
                ))
            }
        };
        let excerpt_text = excerpt(raw);
        match result {
            Ok(value) => self.records.record(
                start,
                |out| {
                    serde_json::to_writer(out, &value).map_err(|e| {
                        DecodeError::at_byte("", 0, DecodeErrorKind::Syntax, e.to_string())
                    })
                },
                || excerpt_text,
            ),
            Err(e) => self.records.fail(start, e, excerpt_text),
        }
    }

    /// Drops the bytes no longer needed and hands the lines on.
    fn flush(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let keep = self.record.as_ref().map_or(self.pos, |r| r.start);
        self.buf.drain(..keep);
        self.base += keep as u64;
        self.pos -= keep;
        if let Some(r) = &mut self.record {
            r.start = 0;
        }
        self.records.flush(out)
    }
}

/// An element being built.
struct Frame {
    name: String,
    fields: Map<String, Value>,
    has_children: bool,
    text: String,
}

impl Frame {
    fn new(e: &BytesStart<'_>, mapping: &Mapping) -> Result<Self, String> {
        let mut fields = Map::new();
        for a in e.attributes() {
            let a = a.map_err(|err| format!("invalid XML: {err}"))?;
            let key = a.key.as_ref();
            if key == "xmlns" || key.starts_with("xmlns:") {
                continue;
            }
            let value = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| format!("invalid XML: {err}"))?;
            insert(
                &mut fields,
                format!("{}{}", mapping.attribute_prefix, local(key)),
                Value::String(value.into_owned()),
            );
        }
        Ok(Self {
            name: local(e.name().as_ref()).to_owned(),
            fields,
            has_children: false,
            text: String::new(),
        })
    }

    /// The element's value; `root` for the record element, always an object.
    fn finish(self, mapping: &Mapping, root: bool) -> Value {
        if self.fields.is_empty() && !self.has_children && !root {
            return if self.text.is_empty() {
                Value::Null
            } else {
                Value::String(self.text)
            };
        }
        let trim = !self.fields.is_empty() || self.has_children;
        let mut fields = self.fields;
        let text = if trim { self.text.trim() } else { &self.text };
        if !text.is_empty() {
            insert(
                &mut fields,
                mapping.text_key.clone(),
                Value::String(text.to_owned()),
            );
        }
        Value::Object(fields)
    }
}

/// Adds a field; a repeated name becomes a list.
fn insert(fields: &mut Map<String, Value>, key: String, value: Value) {
    match fields.get_mut(&key) {
        None => {
            fields.insert(key, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

/// One record element as a JSON value, or the offset (in `text`) and
/// description of what is wrong.
fn element_to_json(text: &str, mapping: &Mapping) -> Result<Value, (usize, String)> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let offset = |p: u64| usize::try_from(p).unwrap_or(0);
    loop {
        // Where the event starts, for errors found in an event that parsed.
        let before = offset(reader.buffer_position());
        let event = reader
            .read_event()
            .map_err(|e| (offset(reader.error_position()), format!("invalid XML: {e}")))?;
        let closed = match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err((before, format!("elements nested deeper than {MAX_DEPTH}")));
                }
                stack.push(Frame::new(&e, mapping).map_err(|m| (before, m))?);
                None
            }
            Event::Empty(e) => Some(Frame::new(&e, mapping).map_err(|m| (before, m))?),
            Event::End(_) => stack.pop(),
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
                None
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
                None
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => {
                            return Err((
                                before,
                                format!(
                                    "undeclared entity &{other}; (only the predefined entities \
                                     and character references are expanded)"
                                ),
                            ));
                        }
                    },
                    Err(e) => return Err((before, format!("invalid XML: {e}"))),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push(c);
                }
                None
            }
            Event::DocType(_) => {
                return Err((before, "a DOCTYPE inside an element".into()));
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => None,
            Event::Eof => return Err((text.len(), "the record element is not closed".into())),
        };
        if let Some(frame) = closed {
            match stack.last_mut() {
                Some(parent) => {
                    parent.has_children = true;
                    let name = frame.name.clone();
                    let value = frame.finish(mapping, false);
                    if mapping.lists.contains(&name) && !parent.fields.contains_key(&name) {
                        parent.fields.insert(name, Value::Array(vec![value]));
                    } else {
                        insert(&mut parent.fields, name, value);
                    }
                }
                None => return Ok(frame.finish(mapping, true)),
            }
        }
    }
}

impl Decoder for XmlDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(bytes);
        self.read(false)?;
        self.flush(out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.read(true)?;
        if let Some(r) = &self.record {
            return Err(self.records.error(
                DecodeErrorKind::Truncated,
                self.at(r.start, r.line),
                "the input ends inside a record element",
            ));
        }
        if let Some((name, _)) = self.open.last() {
            return Err(self.records.error(
                DecodeErrorKind::Truncated,
                self.at(self.pos, self.line),
                format!("the input ends inside element <{name}>"),
            ));
        }
        self.flush(out)?;
        self.records.finish(out)
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.records.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_record_bytes: usize) -> DecodeOptions {
        DecodeOptions {
            location: "t.xml".into(),
            max_record_bytes,
            ..DecodeOptions::default()
        }
    }

    #[test]
    fn a_record_larger_than_the_limit_is_refused_as_it_arrives() {
        let mut d = XmlFormat.decoder(&options(1_000)).expect("decoder");
        let mut bytes = b"<r><i><a>1</a></i><i><a>".to_vec();
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
            fed <= 2_200,
            "refused after {fed} bytes, not near the limit"
        );
        assert_eq!(err.position.byte_offset, 18, "{err}");
        assert_eq!(err.position.record, Some(2), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut d = XmlFormat.decoder(&options(1 << 20)).expect("decoder");
        let bytes = "<a>".repeat(10_000);
        let mut out = Vec::new();
        let err = d.push(bytes.as_bytes(), &mut out).expect_err("too deep");
        assert!(err.message.contains("nested deeper"), "{err}");
    }

    #[test]
    fn bad_options_are_refused() {
        for (k, v, says) in [
            ("record", "item", "path from the root"),
            ("record", "/a//b", "empty step"),
            ("text_key", "", "must not be empty"),
            ("recrod", "/a/b", "unknown option 'recrod'"),
        ] {
            let mut o = options(1000);
            o.options.insert(k.into(), v.into());
            let Err(e) = XmlFormat.decoder(&o) else {
                panic!("{k}={v} accepted");
            };
            assert_eq!(e.kind, DecodeErrorKind::Options);
            assert!(e.message.contains(says), "{e}");
        }
    }
}
