//! Telling a format from a file's first bytes, for files whose name does not
//! say: magic numbers first (Parquet, Arrow, Avro, zip and OLE workbooks),
//! then, for text, the shape of the first line. Compressed input is
//! decompressed before it is looked at.

use std::sync::Arc;

use rota_core::format::Format;

use crate::by_name;

/// Bytes of a file's (decompressed) start that [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 64 << 10;

/// The magic number of OLE compound files (XLS workbooks).
const OLE: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// The first entry of an ODS zip: its media type, stored uncompressed.
const ODS_MIMETYPE: &[u8] = b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet";

/// The format `head` (the first bytes of a file, decompressed) looks like,
/// if it looks like one; `None` when unsure.
#[must_use]
pub fn sniff(head: &[u8]) -> Option<Arc<dyn Format>> {
    by_name(sniff_name(head)?)
}

fn sniff_name(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"PAR1") {
        return Some("parquet");
    }
    if head.starts_with(b"ARROW1") || head.starts_with(&[0xFF, 0xFF, 0xFF, 0xFF]) {
        return Some("arrow");
    }
    if head.starts_with(b"Obj\x01") {
        return Some("avro");
    }
    if head.starts_with(OLE) {
        return Some("xls");
    }
    if head.starts_with(b"PK\x03\x04") {
        if head.get(30..).is_some_and(|h| h.starts_with(ODS_MIMETYPE)) {
            return Some("ods");
        }
        if memchr::memmem::find(head, b"[Content_Types].xml").is_some()
            || memchr::memmem::find(head, b"xl/").is_some()
        {
            return Some("xlsx");
        }
        return None;
    }
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // The cut may fall inside a character.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
        Err(_) => return msgpack(head),
    };
    if text.contains('\0') {
        return msgpack(head);
    }
    sniff_text(text)
}

/// MessagePack, when the first byte opens a map or an array.
fn msgpack(head: &[u8]) -> Option<&'static str> {
    match head.first()? {
        0x80..=0x9F | 0xDC..=0xDF => Some("msgpack"),
        _ => None,
    }
}

fn sniff_text(text: &str) -> Option<&'static str> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('<') {
        return Some("xml");
    }
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let first = lines.next()?;
    if first == "---" || first.starts_with("--- ") || first.starts_with("%YAML") {
        return Some("yaml");
    }
    if first.starts_with('{') {
        // One whole value on the first line, and more: NDJSON.
        let whole = serde_json::from_str::<serde_json::Value>(first).is_ok();
        return Some(if whole && lines.next().is_some() {
            "ndjson"
        } else {
            "json"
        });
    }
    if first.starts_with('[') {
        let is_table = first.ends_with(']')
            && serde_json::from_str::<serde_json::Value>(first).is_err()
            && first
                .trim_matches(['[', ']'])
                .chars()
                .all(|c| c.is_alphanumeric() || "_-. \"'".contains(c));
        return Some(if is_table { "toml" } else { "json" });
    }
    let key_end = first.find(|c: char| !(c.is_alphanumeric() || "_-.".contains(c)));
    let rest = key_end.map(|i| first[i..].trim_start());
    if key_end.is_some_and(|i| i > 0) {
        if rest.is_some_and(|r| r.starts_with('=')) {
            return Some("toml");
        }
        if rest.is_some_and(|r| r == ":" || r.starts_with(": ")) {
            return Some("yaml");
        }
    }
    if first.starts_with("- ") {
        return Some("yaml");
    }
    let tabs = first.matches('\t').count();
    let commas = first.matches(',').count();
    if tabs > 0 && tabs >= commas {
        return Some("tsv");
    }
    if commas > 0 {
        return Some("csv");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shapes() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a,b\n1,2\n", Some("csv")),
            ("\u{feff}a,b\n1,2\n", Some("csv")),
            ("a\tb\n1\t2\n", Some("tsv")),
            ("{\"a\":1}\n{\"a\":2}\n", Some("ndjson")),
            ("{\n  \"a\": 1\n}\n", Some("json")),
            ("[{\"a\":1}]", Some("json")),
            ("[\n {\"a\": 1}\n]", Some("json")),
            ("<?xml version=\"1.0\"?><r/>", Some("xml")),
            ("---\na: 1\n", Some("yaml")),
            ("# people\n---\nname: x\n", Some("yaml")),
            ("name: x\nqty: 2\n", Some("yaml")),
            ("- a: 1\n", Some("yaml")),
            ("# settings\ntitle = \"x\"\n", Some("toml")),
            ("[[items]]\nid = 1\n", Some("toml")),
            ("[server]\nport = 80\n", Some("toml")),
            ("just some words\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(sniff_name(text.as_bytes()), *want, "{text:?}");
        }
    }

    #[test]
    fn binary_magic() {
        assert_eq!(sniff_name(b"PAR1\x15\x04"), Some("parquet"));
        assert_eq!(sniff_name(b"ARROW1\0\0"), Some("arrow"));
        assert_eq!(sniff_name(b"Obj\x01\x04"), Some("avro"));
        assert_eq!(sniff_name(OLE), Some("xls"));
        assert_eq!(sniff_name(&[0x82, 0xA1, b'a', 0x01]), Some("msgpack"));
        assert_eq!(sniff_name(&[0x00, 0x01, 0x02, 0xFF, 0xFE]), None);
    }
}
