//! Telling a format from a file's first bytes, for files whose name does not
//! say. Each format judges the bytes itself ([`Format::sniff`]): magic
//! numbers first (Parquet, Arrow, Avro, zip and OLE workbooks), then, for
//! text, the shape of the first line; the format most sure of itself wins.
//! Compressed input is decompressed before it is looked at.

use std::sync::Arc;

use rota_core::format::{Format, Head};

/// Bytes of a file's (decompressed) start that [`sniff`] looks at.
pub const SNIFF_BYTES: usize = 64 << 10;

/// The format `head` (the first bytes of a file, decompressed) looks like,
/// if it looks like one; `None` when no format claims it. Ties go to the
/// format registered first.
#[must_use]
pub fn sniff(head: &[u8]) -> Option<Arc<dyn Format>> {
    let head = Head::new(head);
    let mut best: Option<(u8, Arc<dyn Format>)> = None;
    for format in crate::builtin() {
        let score = format.sniff(&head);
        if score > 0 && best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, format));
        }
    }
    best.map(|(_, f)| f)
}

#[cfg(test)]
fn sniff_name(head: &[u8]) -> Option<&'static str> {
    sniff(head).map(|f| f.name())
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
        assert_eq!(
            sniff_name(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]),
            Some("xls")
        );
        assert_eq!(sniff_name(&[0x82, 0xA1, b'a', 0x01]), Some("msgpack"));
        assert_eq!(sniff_name(&[0x00, 0x01, 0x02, 0xFF, 0xFE]), None);
    }
}
