//! Compressed input: every codec, multi-part files, any input split, and the
//! failures (truncation, corruption, bombs, a lying suffix) with positions.

mod common;

use std::io::Write as _;

use rota_core::format::{DecodeOptions, Format};
use rota_core::{DecodeError, DecodeErrorKind};
use rota_formats::{Compression, CsvFormat, Decompressing, Limits};

const LOCATION: &str = "/data/in.csv.x";

/// CSV text of `rows` rows.
fn csv(rows: usize) -> Vec<u8> {
    let mut out = b"id,name,score\n".to_vec();
    for i in 0..rows {
        writeln!(out, "{i},\"name {i}, the {}th\",{}.5", i % 7, i % 100).expect("write");
    }
    out
}

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::stream::encode_all(data, 3).expect("zstd"),
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).expect("bzip2");
            e.finish().expect("bzip2")
        }
        Compression::Xz => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).expect("xz");
            e.finish().expect("xz")
        }
    }
}

/// The input compressed as two members / frames / streams back to back, as
/// `cat a.gz b.gz` or a parallel compressor makes them.
fn compress_in_two(c: Compression, data: &[u8]) -> Vec<u8> {
    let (a, b) = data.split_at(data.len() / 3);
    let mut out = compress(c, a);
    out.extend(compress(c, b));
    out
}

fn decoder(suffix: Option<Compression>, limits: Limits) -> Decompressing {
    let options = DecodeOptions {
        location: LOCATION.into(),
        ..DecodeOptions::default()
    };
    Decompressing::new(
        CsvFormat.decoder(&options).expect("csv decoder"),
        LOCATION,
        suffix,
        limits,
    )
}

/// Decodes `bytes` fed in pieces of `split`; returns the rows as JSON lines.
fn decode(
    bytes: &[u8],
    split: usize,
    suffix: Option<Compression>,
    limits: Limits,
) -> Result<String, DecodeError> {
    common::rows_as_json(&mut decoder(suffix, limits), bytes, split)
}

#[test]
fn every_codec_decodes_like_the_plain_file_in_any_split() {
    let plain = csv(20_000);
    let want = decode(&plain, 1 << 20, None, Limits::default()).expect("plain");
    assert_eq!(want.lines().count(), 20_000);
    for c in Compression::ALL {
        let packed = compress_in_two(c, &plain);
        assert_eq!(Compression::from_magic(&packed), Some(c), "{c} magic");
        for split in [1, 7, 4096, packed.len()] {
            // A one-byte split of a large file is slow; a small file in two
            // parts is enough to exercise it.
            let small = csv(100);
            let input = if split == 1 {
                compress_in_two(c, &small)
            } else {
                packed.clone()
            };
            let got = decode(&input, split, None, Limits::default())
                .unwrap_or_else(|e| panic!("{c}, split {split}: {e}"));
            if split == 1 {
                let small = decode(&small, 4096, None, Limits::default()).expect("plain");
                assert_eq!(got, small, "{c}, split 1");
            } else {
                assert!(got == want, "{c}, split {split}: rows differ");
            }
        }
        // The suffix agrees with the magic: fine too.
        assert!(decode(&packed, 65_536, Some(c), Limits::default()).is_ok());
    }
}

#[test]
fn truncated_data_is_an_error_at_the_end_of_what_was_read() {
    let plain = csv(5_000);
    for c in Compression::ALL {
        let packed = compress(c, &plain);
        for cut in [packed.len() / 2, packed.len() - 1] {
            let err = decode(&packed[..cut], 4096, None, Limits::default())
                .expect_err("truncated data must fail");
            assert_eq!(err.location, LOCATION);
            assert!(
                matches!(
                    err.kind,
                    DecodeErrorKind::Truncated | DecodeErrorKind::Syntax
                ),
                "{c} cut at {cut}: {err}"
            );
            assert!(
                err.message.starts_with(c.name()),
                "{c}: the error names the codec: {err}"
            );
            assert!(
                err.position.byte_offset <= cut as u64,
                "{c}: the offset is in the compressed bytes read: {err}"
            );
        }
    }
    let gz = compress(Compression::Gzip, &plain);
    let err = decode(&gz[..gz.len() - 3], 4096, None, Limits::default()).expect_err("cut trailer");
    assert_eq!(err.kind, DecodeErrorKind::Truncated, "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn corrupt_gzip_is_refused_with_its_offset() {
    let plain = csv(5_000);
    let mut gz = compress(Compression::Gzip, &plain);
    // The stored checksum no longer matches the data.
    let at = gz.len() - 8;
    gz[at] ^= 0xff;
    let err = decode(&gz, 4096, None, Limits::default()).expect_err("bad crc");
    assert!(err.message.contains("checksum mismatch"), "{err}");
    assert_eq!(err.position.byte_offset, at as u64, "{err}");

    let mut gz = compress(Compression::Gzip, &plain);
    gz[3] = 0xe0; // reserved flags
    let err = decode(&gz, 4096, None, Limits::default()).expect_err("bad flags");
    assert!(err.message.contains("reserved header flags"), "{err}");
}

#[test]
fn padding_after_gzip_is_accepted_and_garbage_is_not() {
    let plain = csv(100);
    let want = decode(&plain, 4096, None, Limits::default()).expect("plain");
    let mut gz = compress(Compression::Gzip, &plain);
    let end = gz.len();
    gz.extend([0u8; 512]);
    assert_eq!(
        decode(&gz, 100, None, Limits::default()).expect("padded"),
        want
    );
    gz.extend(b"junk");
    let err = decode(&gz, 100, None, Limits::default()).expect_err("garbage");
    assert_eq!(err.position.byte_offset, end as u64 + 512, "{err}");
    assert!(
        err.message.contains("neither a gzip member nor padding"),
        "{err}"
    );
}

#[test]
fn a_decompression_bomb_is_refused_early() {
    // 256 MiB of zeros behind a CSV header: a few hundred KiB compressed.
    let mut plain = b"a\n".to_vec();
    plain.resize(256 << 20, b'0');
    for c in [Compression::Gzip, Compression::Zstd] {
        let packed = compress(c, &plain);
        let limits = Limits {
            max_ratio: 100,
            ratio_after: 1 << 20,
            ..Limits::default()
        };
        let err = decode(&packed, 1 << 16, None, limits).expect_err("bomb");
        assert_eq!(err.kind, DecodeErrorKind::TooLarge, "{c}: {err}");
        assert!(err.message.contains("decompression bomb"), "{c}: {err}");
        // The default limits catch zstd's 1000s-to-one expansion as well.
        if c == Compression::Zstd {
            let err = decode(&packed, 1 << 16, None, Limits::default()).expect_err("zstd bomb");
            assert_eq!(err.kind, DecodeErrorKind::TooLarge, "{err}");
        }
    }
    let gz = compress(Compression::Gzip, &csv(10_000));
    let limits = Limits {
        max_output: 100_000,
        ..Limits::default()
    };
    let err = decode(&gz, 4096, None, limits).expect_err("too large");
    assert!(
        err.message.contains("exceeds the limit of 100000 bytes"),
        "{err}"
    );
}

#[test]
fn a_suffix_without_the_data_to_match_is_an_error() {
    let plain = csv(10);
    let err =
        decode(&plain, 4096, Some(Compression::Gzip), Limits::default()).expect_err("not gzip");
    assert!(
        err.message.contains("the name says gzip"),
        "the error explains the mismatch: {err}"
    );
    let err = decode(b"", 4096, Some(Compression::Xz), Limits::default()).expect_err("empty");
    assert!(err.message.contains("the name says xz"), "{err}");
    // The magic wins over a name that says nothing.
    let gz = compress(Compression::Gzip, &plain);
    assert_eq!(
        decode(&gz, 4096, None, Limits::default()).expect("sniffed"),
        decode(&plain, 4096, None, Limits::default()).expect("plain")
    );
}

#[test]
fn errors_inside_say_their_offsets_count_decompressed_bytes() {
    let mut plain = csv(50);
    plain.extend(b"1,2\n"); // too few fields
    let gz = compress(Compression::Gzip, &plain);
    let err = decode(&gz, 4096, None, Limits::default()).expect_err("bad row");
    assert_eq!(err.position.line, Some(52), "{err}");
    assert!(err.message.contains("gzip-decompressed data"), "{err}");
}

#[test]
fn suffixes_and_names() {
    assert_eq!(
        Compression::from_suffix("a/b.csv.GZ"),
        Some((Compression::Gzip, "a/b.csv"))
    );
    assert_eq!(
        Compression::from_suffix("x.ndjson.zst"),
        Some((Compression::Zstd, "x.ndjson"))
    );
    assert_eq!(Compression::from_suffix("x.csv"), None);
    assert_eq!(Compression::by_name("XZ"), Some(Compression::Xz));
    let csv = rota_formats::by_extension("dir/data.tsv.bz2").expect("format");
    assert_eq!(csv.name(), "tsv");
}
