//! Inputs built to exhaust a reader: entity and alias expansion bombs, a
//! Parquet page that claims gigabytes. Each must end in a clear, positioned
//! error, early, without growing memory (a naive reader would need
//! gigabytes for each of them).

use std::path::{Path, PathBuf};

use rota_core::format::{DecodeOptions, Format};
use rota_core::{DecodeError, DecodeErrorKind};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(rel)
}

/// Decodes the fixture at `rel` with `format`, pushed in pieces of `split`
/// bytes, and returns the error it must end in.
fn decode_err(format: &dyn Format, rel: &str, split: usize) -> DecodeError {
    let bytes = std::fs::read(fixture(rel)).expect("read fixture");
    let options = DecodeOptions {
        location: rel.to_owned(),
        ..DecodeOptions::default()
    };
    let mut decoder = rota_formats::decoder(format, &options).expect("decoder");
    rota_formats::drive::decode_all(decoder.as_mut(), &bytes, split)
        .expect_err("a hostile input must not decode")
}

/// Peak resident memory of this process so far, in bytes (Linux only).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn assert_bounded_memory() {
    if let Some(peak) = peak_memory() {
        assert!(peak < 512 << 20, "peak memory {peak} bytes is over 512 MiB");
    }
}

#[test]
fn xml_billion_laughs_is_refused_at_its_doctype() {
    for split in [1, 7, 4096, usize::MAX] {
        let e = decode_err(
            &rota_formats::XmlFormat,
            "xml/invalid/billion_laughs.xml",
            split,
        );
        assert_eq!(e.kind, DecodeErrorKind::Syntax, "{e}");
        assert!(e.message.contains("declares entities"), "{e}");
        assert_eq!(e.location, "xml/invalid/billion_laughs.xml");
        assert_eq!(e.position.byte_offset, 22, "{e}");
        assert_eq!(e.position.line, Some(2), "{e}");
    }
    assert_bounded_memory();
}

#[test]
fn xml_entity_references_without_a_doctype_are_refused() {
    let bytes = b"<r><i><a>&lol9;</a></i></r>";
    let options = DecodeOptions {
        location: "refs.xml".into(),
        ..DecodeOptions::default()
    };
    let mut decoder = rota_formats::XmlFormat.decoder(&options).expect("decoder");
    let mut out = Vec::new();
    let e = decoder
        .push(bytes, &mut out)
        .and_then(|()| decoder.finish(&mut out))
        .expect_err("an undeclared entity must be refused");
    assert!(e.message.contains("undeclared entity &lol9;"), "{e}");
    assert_eq!(e.position.byte_offset, 9, "{e}");
    assert_eq!(e.position.record, Some(1), "{e}");
}

#[test]
fn yaml_alias_bomb_is_refused_early() {
    for split in [1, 7, 4096, usize::MAX] {
        let e = decode_err(
            &rota_formats::YamlFormat,
            "yaml/invalid/alias_bomb.yaml",
            split,
        );
        assert_eq!(e.kind, DecodeErrorKind::TooLarge, "{e}");
        assert!(e.message.contains("alias"), "{e}");
        assert_eq!(e.location, "yaml/invalid/alias_bomb.yaml");
        // At the alias whose expansion went past the limit.
        assert_eq!(e.position.line, Some(5), "{e}");
        assert_eq!(e.position.record, Some(1), "{e}");
    }
    assert_bounded_memory();
}

#[test]
fn parquet_page_claiming_gigabytes_is_refused_before_it_is_decompressed() {
    for split in [7, usize::MAX] {
        let e = decode_err(
            &rota_formats::ParquetFormat,
            "parquet/invalid/huge_page.parquet",
            split,
        );
        assert_eq!(e.kind, DecodeErrorKind::TooLarge, "{e}");
        assert!(e.message.contains("2000000000 bytes"), "{e}");
        assert!(e.message.contains("max_page"), "{e}");
        assert_eq!(e.position.part.as_deref(), Some("row group 1, column 'x'"));
        assert_eq!(e.position.byte_offset, 4, "{e}");
    }
    assert_bounded_memory();
}
