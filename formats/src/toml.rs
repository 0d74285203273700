//! TOML: the array of tables at a path is the records (`path=servers` for
//! `[[servers]]`), or, without a path, the top-level table is one record.
//!
//! TOML files are configuration-sized and a table can be reopened anywhere
//! in the file, so the input is read whole before parsing; it may not exceed
//! the record limit, and a larger one is refused as soon as it passes it.
//! Records are written as JSON object lines for the NDJSON decoder (schema
//! inference, explicit schema, `on_error`). Datetimes become their TOML text
//! in ISO 8601 form (`1979-05-27T07:32:00Z`, `1979-05-27`, `07:32:00`), which
//! the inference keeps as strings. NaN and infinite floats become null.
//! Records are positioned at the start of the input, with their numbers.

use std::fmt::Write as _;

use arrow_schema::SchemaRef;
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind};

use crate::options::FormatOptions;
use crate::via_json::{JsonRecords, Start, byte_order_mark, newlines};

/// TOML records.
#[derive(Clone, Copy, Debug, Default)]
pub struct TomlFormat;

impl Format for TomlFormat {
    fn name(&self) -> &'static str {
        "toml"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["toml"]
    }

    fn is_text(&self) -> bool {
        true
    }

    fn describe(&self) -> &'static str {
        "TOML, read whole (up to the record size limit): the top-level table as one record, \
         or the array of tables at a path; datetimes as ISO text; options: path=a.b (the \
         array of tables, or a table, under these keys)"
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let mut opts = FormatOptions::new(options, &["path"]);
        let path = opts.key_path("path")?;
        opts.finish()?;
        Ok(Box::new(TomlDecoder {
            records: JsonRecords::new(options)?,
            path,
            max_bytes: options.max_record_bytes,
            buf: Vec::new(),
        }))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        let Some(first) = head.first_line else {
            return 0;
        };
        // `key = value`.
        let key_end = first.find(|c: char| !(c.is_alphanumeric() || "_-.".contains(c)));
        if key_end.is_some_and(|i| i > 0 && first[i..].trim_start().starts_with('=')) {
            return 80;
        }
        // `[table]` or `[[array.of.tables]]`, which is not JSON.
        let is_table = first.starts_with('[')
            && first.ends_with(']')
            && serde_json::from_str::<serde::de::IgnoredAny>(first).is_err()
            && first
                .trim_matches(['[', ']'])
                .chars()
                .all(|c| c.is_alphanumeric() || "_-. \"'".contains(c));
        if is_table { 80 } else { 0 }
    }
}

struct TomlDecoder {
    records: JsonRecords,
    path: Vec<String>,
    max_bytes: usize,
    buf: Vec<u8>,
}

const START: Start = Start { byte: 0, line: 1 };

/// Writes a TOML value as JSON, keeping the order of keys.
fn write_json(v: &toml::Value, out: &mut Vec<u8>) {
    use toml::Value as T;
    match v {
        T::String(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        T::Integer(i) => {
            let _ = write!(Sink(out), "{i}");
        }
        T::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => {
                let _ = write!(Sink(out), "{n}");
            }
            None => out.extend_from_slice(b"null"),
        },
        T::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        T::Datetime(d) => {
            let _ = serde_json::to_writer(&mut *out, &d.to_string());
        }
        T::Array(items) => {
            out.push(b'[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        T::Table(table) => write_table(table, out),
    }
}

fn write_table(table: &toml::Table, out: &mut Vec<u8>) {
    out.push(b'{');
    for (n, (k, v)) in table.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        write_json(v, out);
    }
    out.push(b'}');
}

/// `fmt::Write` into a byte buffer.
struct Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Where each item of the array of tables at `path` starts in `text` (byte
/// offsets), or where the table at `path` (or the whole input) starts; from
/// the spans of a second, span-keeping parse. Empty when there is no such
/// place.
fn starts_at(text: &str, path: &[String]) -> Vec<usize> {
    use toml::de::{DeTable, DeValue};
    let Ok(root) = DeTable::parse(text) else {
        return Vec::new();
    };
    let mut here = root.get_ref();
    let mut span = root.span();
    for (i, key) in path.iter().enumerate() {
        let Some(value) = here.get(key.as_str()) else {
            return Vec::new();
        };
        span = value.span();
        match value.get_ref() {
            DeValue::Table(t) => here = t,
            DeValue::Array(items) if i + 1 == path.len() => {
                return items.iter().map(|item| item.span().start).collect();
            }
            _ => return Vec::new(),
        }
    }
    vec![span.start]
}

impl TomlDecoder {
    fn too_large(&self) -> DecodeError {
        self.records.error(
            DecodeErrorKind::TooLarge,
            START,
            format!(
                "TOML input is larger than the limit of {} bytes (it is read whole)",
                self.max_bytes
            ),
        )
    }

    fn parse(&mut self) -> Result<(), DecodeError> {
        let bom = byte_order_mark(&self.buf, true, self.records.location())?.unwrap_or(0);
        // Offsets below count from after the mark; positions from the start.
        let whole = &self.buf;
        let buf = &whole[bom..];
        let text = match std::str::from_utf8(buf) {
            Ok(t) => t,
            Err(e) => {
                let at = e.valid_up_to();
                return Err(self.records.error(
                    DecodeErrorKind::Encoding,
                    Start {
                        byte: (bom + at) as u64,
                        line: 1 + newlines(&buf[..at]),
                    },
                    "text that is not UTF-8",
                ));
            }
        };
        if text.starts_with('\u{feff}') {
            return Err(self.records.error(
                DecodeErrorKind::Syntax,
                Start {
                    byte: bom as u64,
                    line: 1,
                },
                "invalid TOML: a second byte order mark (U+FEFF) at the start",
            ));
        }
        // Only TOML's own whitespace: a form feed is not blank but invalid.
        if text.trim_matches([' ', '\t', '\n', '\r']).is_empty() {
            return Ok(());
        }
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start.min(text.len()));
            self.records.error(
                DecodeErrorKind::Syntax,
                Start {
                    byte: (bom + at) as u64,
                    line: 1 + newlines(&buf[..at]),
                },
                format!("invalid TOML: {}", e.message().trim()),
            )
        })?;
        // Each record is positioned at its table: `[[items]]` or `{…}`.
        let starts = starts_at(text, &self.path);
        let at = |i: usize| {
            starts.get(i).map_or(START, |&b| Start {
                byte: (bom + b) as u64,
                line: 1 + newlines(&buf[..b.min(buf.len())]),
            })
        };
        let mut found: Option<&toml::Value> = None;
        let mut here = &table;
        for (i, key) in self.path.iter().enumerate() {
            let shape = |what: &str| {
                self.records.error(
                    DecodeErrorKind::Type,
                    START,
                    format!("path {}: {what}", self.path[..=i].join(".")),
                )
            };
            let Some(v) = here.get(key) else {
                return Err(shape("no such key"));
            };
            if i + 1 < self.path.len() {
                here = v.as_table().ok_or_else(|| shape("not a table"))?;
            } else {
                found = Some(v);
            }
        }
        match found {
            // A file with no keys (only comments) holds no record, as an
            // empty file does.
            None if table.is_empty() => Ok(()),
            None => self.records.record(
                at(0),
                |out| {
                    write_table(&table, out);
                    Ok(())
                },
                String::new,
            ),
            Some(toml::Value::Table(t)) => self.records.record(
                at(0),
                |out| {
                    write_table(t, out);
                    Ok(())
                },
                String::new,
            ),
            Some(toml::Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.records.record(
                        at(i),
                        |out| {
                            write_json(item, out);
                            Ok(())
                        },
                        String::new,
                    )?;
                }
                Ok(())
            }
            Some(_) => Err(self.records.error(
                DecodeErrorKind::Type,
                START,
                format!(
                    "path {}: not an array of tables or a table",
                    self.path.join(".")
                ),
            )),
        }
    }
}

impl Decoder for TomlDecoder {
    fn push(&mut self, bytes: &[u8], _out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if self.buf.len() + bytes.len() > self.max_bytes {
            return Err(self.too_large());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.parse()?;
        self.buf = Vec::new();
        self.records.finish(out)
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.records.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_larger_than_the_limit_is_refused_as_it_arrives() {
        let options = DecodeOptions {
            location: "big.toml".into(),
            max_record_bytes: 1_000,
            ..DecodeOptions::default()
        };
        let mut d = TomlFormat.decoder(&options).expect("decoder");
        let mut out = Vec::new();
        let mut fed = 0;
        let err = b"a = 1\n"
            .repeat(1_000)
            .chunks(100)
            .find_map(|piece| {
                fed += piece.len();
                d.push(piece, &mut out).err()
            })
            .expect("refused");
        assert_eq!(err.kind, DecodeErrorKind::TooLarge, "{err}");
        assert!(fed <= 1_100, "refused after {fed} bytes");
    }

    #[test]
    fn bad_options_are_refused() {
        for (k, v, says) in [("path", ".a", "empty key"), ("pth", "a", "unknown option")] {
            let mut o = DecodeOptions::default();
            o.options.insert(k.into(), v.into());
            let Err(e) = TomlFormat.decoder(&o) else {
                panic!("{k}={v} accepted");
            };
            assert!(e.message.contains(says), "{e}");
        }
    }
}
