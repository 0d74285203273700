//! YAML: a stream of documents, each a mapping (one record) or a sequence of
//! mappings (one record per item); or, with `path=a.b`, the mapping or
//! sequence found under those keys of each document.
//!
//! The stream is split into documents as bytes arrive, at the `---` and
//! `...` markers at the start of a line (which YAML forbids inside content),
//! so only one document is held at a time, and a document larger than the
//! record limit is refused. Each document is parsed with `yaml_serde` and
//! written straight out as JSON object lines for the NDJSON decoder (schema
//! inference, explicit schema, `on_error`), without building a tree.
//!
//! # Limits
//!
//! Aliases are expanded as they are written, and the JSON written for one
//! document may not exceed twice the record limit; the parser also stops
//! once aliases make it revisit its events a hundred times over, and at
//! nesting deeper than 128. An alias bomb thus ends in a clear error after a
//! bounded amount of work and memory.
//!
//! Records are positioned at the start of their document (its byte offset
//! and line). A document that does not parse is skipped whole under
//! `on_error = skip`, and reading goes on at the next document.

use std::cell::Cell;
use std::fmt;

use arrow_schema::SchemaRef;
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::options::FormatOptions;
use crate::via_json::{JsonRecords, Start, byte_order_mark, excerpt, newlines};

/// YAML records.
#[derive(Clone, Copy, Debug, Default)]
pub struct YamlFormat;

impl Format for YamlFormat {
    fn name(&self) -> &'static str {
        "yaml"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["yaml", "yml"]
    }

    fn is_text(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "YAML: a stream of documents, each a mapping (one record) or a sequence of mappings; \
         aliases expanded within limits; options: path=a.b (the mapping or sequence under \
         these keys of each document)"
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let mut opts = FormatOptions::new(options, &["path"]);
        let path = opts.key_path("path")?;
        opts.finish()?;
        Ok(Box::new(YamlDecoder {
            records: JsonRecords::new(options)?,
            path,
            max_record: options.max_record_bytes,
            buf: Vec::new(),
            base: 0,
            doc: 0,
            doc_line: 1,
            has_content: false,
            line_start: 0,
            searched: 0,
            line: 1,
            bom_checked: false,
        }))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        let Some(first) = head.first_line else {
            return 0;
        };
        if first == "---" || first.starts_with("--- ") || first.starts_with("%YAML") {
            return 90;
        }
        // `key: value` or `- item`.
        let key_end = first.find(|c: char| !(c.is_alphanumeric() || "_-.".contains(c)));
        let rest = key_end.map(|i| first[i..].trim_start());
        if key_end.is_some_and(|i| i > 0) && rest.is_some_and(|r| r == ":" || r.starts_with(": ")) {
            return 60;
        }
        if first.starts_with("- ") {
            return 60;
        }
        0
    }
}

struct YamlDecoder {
    records: JsonRecords,
    path: Vec<String>,
    max_record: usize,
    buf: Vec<u8>,
    /// Offset of `buf[0]` in the input.
    base: u64,
    /// Start of the current document in `buf`.
    doc: usize,
    /// Line at `doc`.
    doc_line: u64,
    /// Whether the current document has content yet (not only comments,
    /// directives and markers).
    has_content: bool,
    /// Start of the line being read, in `buf`.
    line_start: usize,
    /// How far the search for its end got.
    searched: usize,
    /// Line number at `line_start`.
    line: u64,
    /// Whether a byte order mark at the start was looked for.
    bom_checked: bool,
}

/// Whether `line` is the marker `mark` (`---` or `...`), alone or followed
/// by a space; returns the rest of the line.
fn marker<'a>(line: &'a [u8], mark: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(mark)?;
    match rest.first() {
        None => Some(rest),
        Some(b' ' | b'\t' | b'\r') => Some(rest),
        Some(_) => None,
    }
}

/// Whether a line holds content (not blank, a comment or a directive).
fn is_content(line: &[u8]) -> bool {
    match line.iter().position(|b| !b.is_ascii_whitespace()) {
        None => false,
        Some(i) => !(line[i] == b'#' || (i == 0 && line[0] == b'%')),
    }
}

impl YamlDecoder {
    fn at(&self, offset: usize, line: u64) -> Start {
        Start {
            byte: self.base + offset as u64,
            line,
        }
    }

    /// Reads the complete lines in `buf`, handing on each complete
    /// document; at the end of the input, the rest.
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
            let end = match memchr::memchr(b'\n', &self.buf[self.searched..]) {
                Some(n) => self.searched + n + 1,
                None if eof && self.line_start < self.buf.len() => self.buf.len(),
                None => {
                    self.searched = self.buf.len();
                    if self.buf.len() - self.doc > self.max_record {
                        return Err(self.too_large());
                    }
                    if eof && self.has_content {
                        self.document(self.buf.len())?;
                    }
                    return Ok(());
                }
            };
            let (start, line) = (self.line_start, self.line);
            let text = &self.buf[start..end];
            let body = text.strip_suffix(b"\n").unwrap_or(text);
            if let Some(rest) = marker(body, b"---") {
                let rest_content = is_content(rest);
                if self.has_content {
                    self.document(start)?;
                    self.doc = start;
                    self.doc_line = line;
                }
                self.has_content = rest_content;
            } else if marker(body, b"...").is_some() {
                if self.has_content {
                    self.document(end)?;
                }
                self.doc = end;
                self.doc_line = line + 1;
                self.has_content = false;
            } else if is_content(body) {
                self.has_content = true;
            }
            self.line_start = end;
            self.searched = end;
            self.line += 1;
            if end - self.doc > self.max_record {
                return Err(self.too_large());
            }
        }
    }

    fn too_large(&self) -> DecodeError {
        self.records.error(
            DecodeErrorKind::TooLarge,
            self.at(self.doc, self.doc_line),
            format!(
                "document is larger than the limit of {} bytes",
                self.max_record
            ),
        )
    }

    /// Parses the document in `buf[doc..end]` into records.
    fn document(&mut self, end: usize) -> Result<(), DecodeError> {
        let start = self.at(self.doc, self.doc_line);
        let raw = &self.buf[self.doc..end];
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(e) => {
                let at = e.valid_up_to();
                let err = self.records.error(
                    DecodeErrorKind::Encoding,
                    Start {
                        byte: start.byte + at as u64,
                        line: start.line + newlines(&raw[..at]),
                    },
                    "text that is not UTF-8",
                );
                let excerpt = excerpt(raw);
                return self.records.fail(start, err, excerpt);
            }
        };
        let mut lines = Vec::new();
        let budget = self.max_record.saturating_mul(2);
        let over = Cell::new(false);
        let used = Cell::new(0);
        let mut result = Ok(());
        for de in yaml_serde::Deserializer::from_str(text) {
            let seed = DocSeed {
                path: &self.path,
                out: &mut lines,
                used: &used,
                budget,
                over: &over,
            };
            if let Err(e) = seed.deserialize(de) {
                result = Err(e);
                break;
            }
        }
        match result {
            Ok(()) => {
                for line in lines {
                    self.records.record(
                        start,
                        |out| {
                            out.extend_from_slice(&line);
                            Ok(())
                        },
                        String::new,
                    )?;
                }
                Ok(())
            }
            Err(e) => {
                let err = self.yaml_error(&e, raw, start, over.get());
                let excerpt = excerpt(raw);
                self.records.fail(start, err, excerpt)
            }
        }
    }

    fn yaml_error(
        &self,
        e: &yaml_serde::Error,
        raw: &[u8],
        start: Start,
        over: bool,
    ) -> DecodeError {
        let (at, kind, message) = if over {
            (
                start,
                DecodeErrorKind::TooLarge,
                format!(
                    "the document expands to more than {} bytes of records (aliases repeating \
                     large values?)",
                    self.max_record.saturating_mul(2)
                ),
            )
        } else {
            let message = without_locations(&e.to_string());
            let (kind, message) = if message.contains("repetition limit exceeded") {
                (
                    DecodeErrorKind::TooLarge,
                    "aliases expand the document too far (repetition limit exceeded: an alias \
                     bomb?)"
                        .to_owned(),
                )
            } else if message.starts_with("invalid type")
                || message.starts_with("the document has no key")
                || message.starts_with("expected a mapping")
            {
                // The document parsed but has the wrong shape.
                (DecodeErrorKind::Type, message)
            } else {
                (DecodeErrorKind::Syntax, format!("invalid YAML: {message}"))
            };
            let at = match e.location() {
                Some(loc) => {
                    let i = loc.index().min(raw.len());
                    Start {
                        byte: start.byte + i as u64,
                        line: start.line + newlines(&raw[..i]),
                    }
                }
                None => start,
            };
            (at, kind, message)
        };
        self.records.error(kind, at, message)
    }

    /// Drops the bytes before the current document and hands the lines on.
    fn flush(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let keep = self.doc;
        self.buf.drain(..keep);
        self.base += keep as u64;
        self.doc = 0;
        self.line_start -= keep;
        self.searched -= keep;
        self.records.flush(out)
    }
}

/// The message of a parser error without its `at line N column M` parts,
/// which count from the document, not the input.
fn without_locations(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let skip = after
            .find(|c: char| !(c.is_ascii_digit() || c == ' ' || c.is_ascii_alphabetic()))
            .unwrap_or(after.len());
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

/// Finds the records in one document, following `path`.
struct DocSeed<'a> {
    path: &'a [String],
    out: &'a mut Vec<Vec<u8>>,
    /// Bytes in `out` so far.
    used: &'a Cell<usize>,
    budget: usize,
    over: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl DocSeed<'_> {
    fn used(&self) -> usize {
        self.used.get()
    }

    fn push(&mut self, line: Vec<u8>) {
        self.used.set(self.used.get() + line.len());
        self.out.push(line);
    }

    fn writer<'b>(&self, line: &'b mut Vec<u8>, used: usize) -> JsonWriter<'b>
    where
        Self: 'b,
    {
        JsonWriter {
            out: line,
            limit: self.budget.saturating_sub(used),
            over: self.over,
        }
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str("a mapping or a sequence of mappings")
        } else {
            write!(f, "a mapping with key '{}'", self.path[0])
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            let mut line = Vec::new();
            let used = self.used();
            JsonWriter::visit_map(self.writer(&mut line, used), map)?;
            let mut this = self;
            this.push(line);
            return Ok(());
        }
        let mut found = false;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !found && key == self.path[0] {
                found = true;
                map.next_value_seed(DocSeed {
                    path: &self.path[1..],
                    out: &mut *self.out,
                    used: self.used,
                    budget: self.budget,
                    over: self.over,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !found {
            return Err(de::Error::custom(format!(
                "the document has no key '{}' on the path",
                self.path[0]
            )));
        }
        Ok(())
    }

    /// A document with a tag of the application's own: its value.
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (_tag, value) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(value, self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        if !self.path.is_empty() {
            return Err(de::Error::custom(format!(
                "expected a mapping with key '{}', found a sequence",
                self.path[0]
            )));
        }
        loop {
            let mut line = Vec::new();
            let used = self.used();
            if seq
                .next_element_seed(self.writer(&mut line, used))?
                .is_none()
            {
                return Ok(());
            }
            self.push(line);
        }
    }
}

/// A mapping key as text (scalars of other types stringified).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("null".to_owned())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<String, A::Error> {
        let (_tag, value) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(value, self)
    }
}

/// Writes one value as JSON, failing once more than `limit` bytes were
/// written (and saying so through `over`).
struct JsonWriter<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
    over: &'a Cell<bool>,
}

impl JsonWriter<'_> {
    fn check<E: de::Error>(&self) -> Result<(), E> {
        if self.out.len() > self.limit {
            self.over.set(true);
            return Err(E::custom("the document expands past the size limit"));
        }
        Ok(())
    }

    fn raw<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.out.extend_from_slice(text.as_bytes());
        self.check()
    }

    fn string<E: de::Error>(self, text: &str) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, text).map_err(E::custom)?;
        self.check()
    }

    fn child(&mut self) -> JsonWriter<'_> {
        JsonWriter {
            out: &mut *self.out,
            limit: self.limit,
            over: self.over,
        }
    }
}

impl<'de> DeserializeSeed<'de> for JsonWriter<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonWriter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.raw(if v { "true" } else { "false" })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.raw(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.raw(&v.to_string())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<(), E> {
        self.raw(&v.to_string())
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<(), E> {
        self.raw(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // NaN and infinities, which JSON lacks, become null.
        match serde_json::Number::from_f64(v) {
            Some(n) => self.raw(&n.to_string()),
            None => self.raw("null"),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.string(v)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
        self.string(&hex)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.raw("null")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.raw("null")
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            if seq.next_element_seed(self.child())?.is_none() {
                self.out.truncate(mark);
                break;
            }
            first = false;
        }
        self.raw("]")
    }

    /// A value with a tag of the application's own (`!Ref x`, `!secret y`):
    /// the value, its tag dropped (a YAML reader without the application's
    /// types has no meaning for it).
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let (_tag, value) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(value, self)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut first = true;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if !first {
                self.out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut *self.out, &key).map_err(de::Error::custom)?;
            self.out.push(b':');
            map.next_value_seed(self.child())?;
        }
        self.raw("}")
    }
}

impl Decoder for YamlDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(bytes);
        self.read(false)?;
        self.flush(out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.read(true)?;
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
            location: "t.yaml".into(),
            max_record_bytes,
            ..DecodeOptions::default()
        }
    }

    fn decode(options: &DecodeOptions, bytes: &[u8], split: usize) -> Result<(), DecodeError> {
        let mut d = YamlFormat.decoder(options)?;
        let mut out = Vec::new();
        for piece in bytes.chunks(split) {
            d.push(piece, &mut out)?;
        }
        d.finish(&mut out)
    }

    #[test]
    fn a_document_larger_than_the_limit_is_refused_as_it_arrives() {
        let mut d = YamlFormat.decoder(&options(1_000)).expect("decoder");
        let mut bytes = b"a: 1\n---\n".to_vec();
        for i in 0..10_000 {
            bytes.extend(format!("k{i}: v\n").as_bytes());
        }
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
            fed <= 1_200,
            "refused after {fed} bytes, not near the limit"
        );
        assert_eq!(err.position.byte_offset, 5, "{err}");
        assert_eq!(err.position.line, Some(2), "{err}");
    }

    #[test]
    fn aliases_of_a_large_value_stop_at_the_output_budget() {
        // Few events (so under the parser's repetition limit), but each
        // alias repeats 10 kB: 10^5 copies would be a gigabyte.
        let mut text = format!("a0: &a0 \"{}\"\n", "x".repeat(10_000));
        for i in 1..=5 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = decode(&options(100_000), text.as_bytes(), 4096).expect_err("refused");
        assert_eq!(err.kind, DecodeErrorKind::TooLarge, "{err}");
        assert!(err.message.contains("expands to more than"), "{err}");
        assert_eq!(err.position.byte_offset, 0);
    }

    #[test]
    fn markers_split_documents_only_at_the_start_of_a_line() {
        let text = b"a: x --- y\nb: '...'\n---\na: z\n";
        let o = options(1 << 20);
        let mut d = YamlFormat.decoder(&o).expect("decoder");
        let mut out = Vec::new();
        d.push(text, &mut out).expect("push");
        d.finish(&mut out).expect("finish");
        let rows: usize = out
            .iter()
            .map(|d| match d {
                Decoded::Batch(b) => b.num_rows(),
                Decoded::Skipped { .. } => 0,
            })
            .sum();
        assert_eq!(rows, 2);
    }

    #[test]
    fn bad_options_are_refused() {
        for (k, v, says) in [
            ("path", "a..b", "empty key"),
            ("paht", "a", "unknown option 'paht'"),
        ] {
            let mut o = options(1000);
            o.options.insert(k.into(), v.into());
            let Err(e) = YamlFormat.decoder(&o) else {
                panic!("{k}={v} accepted");
            };
            assert_eq!(e.kind, DecodeErrorKind::Options);
            assert!(e.message.contains(says), "{e}");
        }
    }
}
