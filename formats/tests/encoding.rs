//! Text in other encodings: transcoded in any input split, malformed bytes
//! refused with their offset, and UTF-16 or binary input read as UTF-8
//! refused up front instead of decoding to garbage.

mod common;

use rota_core::format::{DecodeOptions, Format};
use rota_core::{DecodeError, DecodeErrorKind};
use rota_formats::{CsvFormat, NdjsonFormat, Transcoding, text_encoding};

const LOCATION: &str = "/data/in.csv";

fn options() -> DecodeOptions {
    DecodeOptions {
        location: LOCATION.into(),
        ..DecodeOptions::default()
    }
}

/// Decodes `bytes` with `format`, transcoding from `label` when given, fed
/// in pieces of `split`; returns the rows as JSON lines.
fn decode(
    format: &dyn Format,
    label: Option<&str>,
    bytes: &[u8],
    split: usize,
) -> Result<String, DecodeError> {
    let mut d = format.decoder(&options()).expect("decoder");
    if let Some(label) = label {
        d = Box::new(Transcoding::new(
            d,
            LOCATION,
            text_encoding(label).expect("label"),
        ));
    }
    common::rows_as_json(d.as_mut(), bytes, split)
}

const TEXT: &str = "id,name,city\n1,Jürgen,Köln\n2,\"Zoë, Ms\",Montréal\n3,Ørsted,Århus\n";

fn utf16(text: &str, little: bool, bom: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if bom {
        out.extend(if little { [0xFF, 0xFE] } else { [0xFE, 0xFF] });
    }
    for unit in text.encode_utf16() {
        out.extend(if little {
            unit.to_le_bytes()
        } else {
            unit.to_be_bytes()
        });
    }
    out
}

#[test]
fn latin1_windows_1252_and_utf16_decode_like_utf8_in_any_split() {
    let want = decode(&CsvFormat, None, TEXT.as_bytes(), 4096).expect("utf-8");
    assert!(
        want.contains("Jürgen") && want.contains("Montréal"),
        "{want}"
    );
    let latin1: Vec<u8> = TEXT
        .chars()
        .map(|c| u8::try_from(c as u32).expect("latin1"))
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("latin1", latin1.clone()),
        ("windows-1252", latin1),
        ("utf-16", utf16(TEXT, true, true)),
        ("utf-16", utf16(TEXT, false, true)), // the mark decides the order
        ("utf-16le", utf16(TEXT, true, false)),
        ("UTF-16BE", utf16(TEXT, false, false)),
        ("utf-8", TEXT.as_bytes().to_vec()),
    ];
    for (label, bytes) in cases {
        for split in [1, 3, 7, 4096] {
            let got = decode(&CsvFormat, Some(label), &bytes, split)
                .unwrap_or_else(|e| panic!("{label}, split {split}: {e}"));
            assert_eq!(got, want, "{label}, split {split}");
        }
    }
    // Windows-1252 differs from Latin-1 in 0x80..0x9F: the euro sign.
    let got = decode(
        &NdjsonFormat,
        Some("windows-1252"),
        b"{\"p\":\"\x80 5\"}\n",
        7,
    )
    .expect("cp1252");
    assert_eq!(got.trim(), "{\"p\":\"€ 5\"}");
}

#[test]
fn malformed_utf16_is_refused_at_its_offset() {
    // A lone high surrogate in the second row's name.
    let mut bytes = utf16("id,name\n1,a\n2,", true, false);
    let at = bytes.len();
    bytes.extend([0x00, 0xD8]);
    bytes.extend(utf16("b\n", true, false));
    let err = decode(&CsvFormat, Some("utf-16le"), &bytes, 5).expect_err("lone surrogate");
    assert_eq!(err.kind, DecodeErrorKind::Encoding, "{err}");
    assert_eq!(err.position.byte_offset, at as u64, "{err}");
    assert!(err.message.contains("not valid UTF-16LE"), "{err}");
    assert_eq!(err.location, LOCATION);
}

#[test]
fn utf16_or_binary_read_as_utf8_is_refused_up_front() {
    for (bytes, at, says) in [
        (utf16(TEXT, true, true), 0, "pass --encoding utf-16le"),
        (utf16(TEXT, false, true), 0, "pass --encoding utf-16be"),
        (utf16(TEXT, true, false), 1, "a NUL byte"),
        (
            b"PK\x03\x04\x14\x00\x00\x00garbage".to_vec(),
            5,
            "a NUL byte",
        ),
    ] {
        for format in [&CsvFormat as &dyn Format, &NdjsonFormat] {
            for split in [1, 4096] {
                let err = decode(format, None, &bytes, split).expect_err("not utf-8");
                assert_eq!(err.kind, DecodeErrorKind::Encoding, "{err}");
                assert_eq!(err.position.byte_offset, at, "{err}");
                assert!(err.message.contains(says), "{err}");
            }
        }
    }
}

#[test]
fn unknown_labels_are_refused_with_a_hint() {
    let err = text_encoding("klingon").expect_err("unknown");
    assert!(err.contains("try utf-8, latin1"), "{err}");
    assert!(text_encoding(" Latin1 ").is_ok());
}
