//! Inputs built to exhaust a reader: entity and alias expansion bombs, a
//! Parquet page that claims gigabytes, workbooks that declare or repeat far
//! more than they hold. Each must end in a clear, positioned error, early,
//! without growing memory (a naive reader would need gigabytes for each of
//! them).

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

/// A workbook of one sheet, `Data`, whose `<sheetData>` is `rows`.
fn xlsx(rows: &str) -> Vec<u8> {
    use std::io::Write as _;
    let parts = [
        (
            "[Content_Types].xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.to_owned(),
        ),
        (
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.to_owned(),
        ),
        (
            "xl/workbook.xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Data" sheetId="1" r:id="rId1"/></sheets></workbook>"#.to_owned(),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.to_owned(),
        ),
        (
            "xl/worksheets/sheet1.xml",
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>"#
            ),
        ),
    ];
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in parts {
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .expect("start a part");
        zip.write_all(text.as_bytes()).expect("write a part");
    }
    zip.finish().expect("finish the zip").into_inner()
}

/// Decodes a workbook held in memory, handing `each` the output of
/// `finish` and of each `drain` call in turn.
fn decode_workbook(
    bytes: &[u8],
    options: DecodeOptions,
    mut each: impl FnMut(Vec<rota_core::format::Decoded>),
) -> Result<(), DecodeError> {
    let mut decoder = rota_formats::XlsxFormat.decoder(&options)?;
    let mut out = Vec::new();
    decoder.push(bytes, &mut out)?;
    decoder.finish(&mut out)?;
    each(std::mem::take(&mut out));
    while decoder.drain(&mut out)? {
        each(std::mem::take(&mut out));
    }
    each(out);
    Ok(())
}

#[test]
fn workbook_bombs_are_refused_before_the_reader_holds_them() {
    // 10^14 shared strings declared in a few hundred bytes; 4 GB of spaces
    // asked for by one element; each would abort or exhaust the process.
    for (format, rel, says) in [
        (
            &rota_formats::XlsxFormat as &dyn Format,
            "xlsx/invalid/string_count.xlsx",
            "shared strings",
        ),
        (&rota_formats::OdsFormat, "ods/invalid/spaces.ods", "spaces"),
        (&rota_formats::XlsFormat, "xls/invalid/loop.xls", "loops"),
    ] {
        let e = decode_err(format, rel, usize::MAX);
        assert!(e.message.contains(says), "{e}");
        assert_eq!(e.location, rel);
    }
    assert_bounded_memory();
}

#[test]
fn a_declared_size_is_not_trusted_to_reserve_memory() {
    // The sheet's DIMENSIONS record declares 4 294 967 280 rows by 256
    // columns; it holds five.
    let bytes = std::fs::read(fixture("xls/declared_huge.xls")).expect("read fixture");
    let options = DecodeOptions {
        location: "declared_huge.xls".into(),
        ..DecodeOptions::default()
    };
    let mut decoder = rota_formats::XlsFormat.decoder(&options).expect("decoder");
    let mut out = Vec::new();
    decoder.push(&bytes, &mut out).expect("push");
    decoder.finish(&mut out).expect("finish");
    while decoder.drain(&mut out).expect("drain") {}
    let rows: usize = out
        .iter()
        .map(|d| match d {
            rota_core::format::Decoded::Batch(b) => b.num_rows(),
            rota_core::format::Decoded::Skipped { .. } => 0,
        })
        .sum();
    assert_eq!(rows, 4);
    assert_bounded_memory();
}

#[test]
fn a_wide_sparse_sheet_is_handed_out_in_bounded_pieces() {
    // A header, then 3000 rows of one cell each in column XFD: 16 384
    // columns of mostly nulls, from a file of a few kilobytes.
    let mut rows =
        String::from(r#"<row r="1"><c r="A1" t="inlineStr"><is><t>id</t></is></c></row>"#);
    for r in 2..3002 {
        rows.push_str(&format!(
            r#"<row r="{r}"><c r="XFD{r}"><v>{r}</v></c></row>"#
        ));
    }
    let options = DecodeOptions {
        location: "wide.xlsx".into(),
        ..DecodeOptions::default()
    };
    let mut total = 0;
    decode_workbook(&xlsx(&rows), options, |call| {
        let mut cells = 0;
        for d in &call {
            if let rota_core::format::Decoded::Batch(b) = d {
                assert_eq!(b.num_columns(), 16_384);
                assert!(
                    b.num_rows() * b.num_columns() <= 1 << 20,
                    "{} rows",
                    b.num_rows()
                );
                cells += b.num_rows() * b.num_columns();
                total += b.num_rows();
            }
        }
        assert!(cells <= 5 << 20, "one call gave {cells} cells");
    })
    .expect("decodes");
    assert_eq!(total, 3000);
    assert_bounded_memory();
}

#[test]
fn a_cell_past_the_record_limit_is_refused_before_the_reader_holds_it() {
    let text = "a".repeat(3 << 20);
    let rows = format!(
        r#"<row r="1"><c r="A1" t="inlineStr"><is><t>name</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>{text}</t></is></c></row>"#
    );
    let options = DecodeOptions {
        location: "long.xlsx".into(),
        max_record_bytes: 1 << 20,
        ..DecodeOptions::default()
    };
    let e = decode_workbook(&xlsx(&rows), options, drop).expect_err("too long a cell");
    assert_eq!(e.kind, DecodeErrorKind::TooLarge, "{e}");
    assert_eq!(
        e.position.part.as_deref(),
        Some("part xl/worksheets/sheet1.xml"),
        "{e}"
    );
    assert!(
        e.message.contains("record size limit (1048576 bytes)"),
        "{e}"
    );
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
