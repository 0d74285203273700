//! YAML: a stream of documents, each a mapping (one record) or a sequence of
//! mappings (one record per item); or, with `path=a.b`, the mapping or
//! sequence found under those keys of each document.
//!
//! The stream is split into documents as bytes arrive, at the `---` and
//! `...` markers at the start of a line (which YAML forbids inside content),
//! so only one document is held at a time, and a document larger than the
//! record limit is refused (directives stay with the document after them, and
//! a piece holding only directives is parsed too, so that a directive with no
//! document is refused). Each document is parsed by `saphyr-parser`, a
//! YAML 1.2 parser, and its events written straight out as JSON object lines
//! for the NDJSON decoder (schema inference, explicit schema, `on_error`),
//! without building a tree.
//!
//! # Values
//!
//! Plain scalars are read by the YAML 1.2 core schema: `null`, `~` and
//! nothing are null; `true`/`false` (also `True`, `TRUE`, …) booleans;
//! integers (decimal, `0o` octal, `0x` hexadecimal) numbers, exact whatever
//! their size (an octal or hexadecimal one of more than 1024 digits stays
//! text); floats, `.inf` and `.nan` numbers (NaN and infinities, which JSON
//! lacks, null); anything else (`yes`, `on`, `12:30`, `2001-12-14`) text. Quoted and block scalars are text. The
//! standard tags `!!str`, `!!int`, `!!float`, `!!bool`, `!!null` say what a
//! scalar is (one that is not what its tag says is an error), `!!binary` is
//! base64 written as hex text, `!!map`, `!!seq` and `!!set` (a mapping of
//! its members to null) are collections; any other tag, such as an
//! application's own (`!Ref x`), is dropped and the value read as if it had
//! none. A key is a field name: text, or the text of a number, boolean or
//! null (`null`); a mapping or sequence used as a key is refused, as a field
//! name must be text. Anchors may be named with any characters but spaces and
//! flow indicators (`&an:chor`).
//!
//! # Limits
//!
//! Aliases are expanded as they are written, and the JSON written for one
//! document may not exceed twice the record limit; aliases may also replay
//! at most a hundred events per byte of the document, and mappings and
//! sequences may nest at most 128 deep (aliases expanded). An alias bomb
//! thus ends in a clear error after a bounded amount of work and memory; an
//! alias in a part of the document that is not read (outside `path`) costs
//! nothing.
//!
//! # Positions
//!
//! Each record is positioned at its own start, by the parser's markers: the
//! line and byte offset where its mapping begins (the first key of a block
//! mapping, the `{` of a flow one), or where the item of a top-level sequence
//! does. Errors are positioned where the parser found them, counted from the
//! start of the input. A document that does not parse, or that cannot be
//! read as records, is skipped whole under `on_error = skip`, and reading
//! goes on at the next document.

mod events;
mod scalar;

use arrow_schema::SchemaRef;
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind};
use saphyr_parser::Marker;

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
        "YAML 1.2: a stream of documents, each a mapping (one record) or a sequence of mappings; \
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
            has_directive: false,
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
    /// Whether the current document has a directive line (`%YAML`, `%TAG`):
    /// then it is parsed even without content, so that a directive with no
    /// document, or a bad one, is refused.
    has_directive: bool,
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
                    if eof && (self.has_content || self.has_directive) {
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
                    self.has_directive = false;
                }
                self.has_content = rest_content;
            } else if marker(body, b"...").is_some() {
                if self.has_content || self.has_directive {
                    self.document(end)?;
                }
                self.doc = end;
                self.doc_line = line + 1;
                self.has_content = false;
                self.has_directive = false;
            } else if body.first() == Some(&b'%') {
                self.has_directive = true;
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

    /// Parses the piece `buf[doc..end]` (a document, or a few when all but
    /// one are empty) into records.
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
        let budget = self.max_record.saturating_mul(2);
        let path = &self.path;
        let result = crate::guard(|| events::read(text, path, budget)).unwrap_or_else(|why| {
            Err(events::Failure {
                at: Marker::default(),
                kind: DecodeErrorKind::Syntax,
                message: format!("invalid YAML: the YAML parser failed on this document ({why})"),
            })
        });
        let mut offsets = Offsets::new(text, start);
        match result {
            Ok(records) => {
                let mut from = 0;
                for (mark, to) in records.ends {
                    let json = &records.json[from..to];
                    from = to;
                    self.records.record(
                        offsets.start(mark),
                        |out| {
                            out.extend_from_slice(json);
                            Ok(())
                        },
                        String::new,
                    )?;
                }
                Ok(())
            }
            Err(failure) => {
                let at = offsets.start(failure.at);
                let err = self.records.error(failure.kind, at, failure.message);
                self.records.fail(at, err, excerpt(raw))
            }
        }
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

/// Turns the parser's markers (characters from the start of a piece) into
/// positions in the input, moving forward through the piece's text.
struct Offsets<'t> {
    text: &'t str,
    ascii: bool,
    /// Where the piece starts in the input.
    base: Start,
    /// A character index, its byte offset and the line breaks before it.
    chars: usize,
    bytes: usize,
    lines: u64,
}

impl<'t> Offsets<'t> {
    fn new(text: &'t str, base: Start) -> Self {
        Self {
            text,
            ascii: text.is_ascii(),
            base,
            chars: 0,
            bytes: 0,
            lines: 0,
        }
    }

    /// The input position of `mark`.
    fn start(&mut self, mark: Marker) -> Start {
        let index = mark.index();
        if index < self.chars {
            (self.chars, self.bytes, self.lines) = (0, 0, 0);
        }
        let from = self.bytes;
        if self.ascii {
            self.bytes = index.min(self.text.len());
            self.chars = self.bytes;
        } else {
            // Runs of ASCII at a time, a character at a time elsewhere.
            let bytes = self.text.as_bytes();
            while self.chars < index && self.bytes < bytes.len() {
                let run = &bytes[self.bytes..(self.bytes + index - self.chars).min(bytes.len())];
                let ascii = run.iter().position(|b| !b.is_ascii()).unwrap_or(run.len());
                self.bytes += ascii;
                self.chars += ascii;
                if self.chars < index {
                    match self.text.get(self.bytes..).and_then(|t| t.chars().next()) {
                        Some(c) => {
                            self.bytes += c.len_utf8();
                            self.chars += 1;
                        }
                        None => break,
                    }
                }
            }
        }
        self.lines += newlines(&self.text.as_bytes()[from..self.bytes]);
        Start {
            byte: self.base.byte + self.bytes as u64,
            line: self.base.line + self.lines,
        }
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
        // At the alias that went past the budget: in `a2`, whose ten copies
        // of `a1` are 100 kB each.
        assert_eq!(err.position.line, Some(3), "{err}");
        let a2 = text.find("a2:").expect("a2") as u64;
        assert!(err.position.byte_offset > a2, "{err}");
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

    /// The skips of `bytes` decoded under `on_error = skip`, in any split:
    /// (line, byte offset, message).
    fn skips(bytes: &[u8]) -> Vec<(Option<u64>, u64, String)> {
        let mut o = options(1 << 20);
        o.on_error = rota_core::OnError::Skip;
        let mut all = Vec::new();
        for split in [1, 7, bytes.len()] {
            let mut d = YamlFormat.decoder(&o).expect("decoder");
            let out = crate::drive::decode_all(d.as_mut(), bytes, split).expect("decodes");
            let found: Vec<_> = out
                .iter()
                .filter_map(|d| match d {
                    Decoded::Skipped { error, .. } => Some((
                        error.position.line,
                        error.position.byte_offset,
                        error.message.clone(),
                    )),
                    Decoded::Batch(_) => None,
                })
                .collect();
            if split != 1 {
                assert_eq!(found, all, "split {split}");
            }
            all = found;
        }
        all
    }

    #[test]
    fn each_record_is_positioned_at_its_own_line_and_byte() {
        // Records that are not objects fail in the NDJSON decoder inside;
        // their skips say where each one is.
        let text = "# é\n- a: 1\n- 2\n-\n  b: x\n- [c]\n---\nz: 1\n...\n--- é\n";
        let skips = skips(text.as_bytes());
        let at = |needle: &str| text.find(needle).expect(needle) as u64;
        assert_eq!(skips.len(), 3, "{skips:?}");
        assert_eq!((skips[0].0, skips[0].1), (Some(3), at("2\n")), "{skips:?}");
        assert_eq!((skips[1].0, skips[1].1), (Some(6), at("[c]")), "{skips:?}");
        // A scalar document: where its scalar is.
        let last = text.rfind('é').expect("é") as u64;
        assert_eq!((skips[2].0, skips[2].1), (Some(10), last), "{skips:?}");
        assert!(skips[2].2.contains("found the scalar 'é'"), "{skips:?}");
    }

    #[test]
    fn errors_are_where_the_parser_found_them_counted_from_the_input_start() {
        let text = "a: ü\n---\nb: 1\nc: [1,\nd: 2\n---\n- x: &a:b 1\n  y: *a:b\n  z: \"é\n";
        let skips = skips(text.as_bytes());
        assert_eq!(skips.len(), 2, "{skips:?}");
        let (line, byte, message) = &skips[0];
        assert_eq!(*line, Some(5), "{skips:?}");
        assert_eq!(*byte, text.find("d: 2").expect("d") as u64, "{skips:?}");
        assert!(message.starts_with("invalid YAML: "), "{message}");
        assert!(
            !message.contains("line") && !message.contains("column"),
            "{message}"
        );
        // The quoted scalar never ends: the error is where it starts, past
        // the anchors and aliases with a colon in their names.
        let quote = text.find("\"é").expect("quote") as u64;
        assert_eq!((skips[1].0, skips[1].1), (Some(9), quote), "{skips:?}");
        assert!(skips[1].2.contains("quoted scalar"), "{skips:?}");
    }

    #[test]
    fn a_directive_without_a_document_is_refused() {
        for text in [
            "%YAML 1.2\n",
            "%YAML 1.2\n...\n",
            "a: 1\n...\n%YAML 1.2 x\n---\nb: 1\n",
        ] {
            let e = decode(&options(1 << 20), text.as_bytes(), 3).expect_err(text);
            assert_eq!(e.kind, DecodeErrorKind::Syntax, "{text}: {e}");
        }
        decode(
            &options(1 << 20),
            b"%YAML 1.2\n---\na: 1\n...\n%YAML 1.2\n---\n",
            3,
        )
        .expect("directives with their documents");
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
