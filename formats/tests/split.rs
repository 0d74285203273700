//! Cutting CSV, TSV and NDJSON into parts: whatever the part size, the
//! parts decoded apart give exactly what one read of the whole file gives —
//! the same rows with the same types, the same skipped records, the same
//! error at the same place. Checked over many random files and cuts.

use arrow_array::RecordBatch;
use rota_core::format::{DecodeOptions, Decoded, Decoder};
use rota_core::source::ReadAt;
use rota_core::{DecodeError, OnError};
use rota_formats::split::{Part, PartDecoder, Splitter, Start};

/// A small deterministic random generator (xorshift64*), so that a failing
/// case is found again from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A file held in memory, read at random offsets.
#[derive(Debug)]
struct Bytes(Vec<u8>);

impl ReadAt for Bytes {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let at = usize::try_from(offset).unwrap();
        let src = self
            .0
            .get(at..at + buf.len())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A CSV field: numbers, booleans and text, some quoted with delimiters,
/// quotes and line breaks inside, some empty.
fn csv_field(rng: &mut Rng, column: usize, row: usize, rows: usize, delimiter: u8) -> String {
    // Late rows may widen a column's type: an integer column meets a
    // decimal, a boolean column meets text.
    let late = row > rows * 3 / 4 && rng.chance(5);
    match column % 4 {
        0 if late => format!("{}.5", rng.below(1000)),
        0 => rng.below(100_000).to_string(),
        1 if late => "maybe".to_owned(),
        1 => if rng.chance(50) { "true" } else { "false" }.to_owned(),
        2 if rng.chance(10) => String::new(),
        2 => format!("{}.{}", rng.below(1000), rng.below(100)),
        _ => {
            let pieces = [
                "plain",
                "with space",
                "a,b",
                "tab\there",
                "q\"uote",
                "line\nbreak",
                "crlf\r\nin",
                "x",
            ];
            let mut text = String::new();
            for _ in 0..=rng.below(3) {
                text.push_str(pieces[usize::try_from(rng.below(pieces.len() as u64)).unwrap()]);
            }
            let needs = text
                .bytes()
                .any(|b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r');
            if needs || rng.chance(20) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text
            }
        }
    }
}

/// A random CSV (or TSV) file and the options to read it with.
fn csv_file(rng: &mut Rng, delimiter: u8) -> (Vec<u8>, DecodeOptions) {
    let columns = 1 + usize::try_from(rng.below(5)).unwrap();
    let rows = usize::try_from(rng.below(400)).unwrap();
    let header = rng.chance(70);
    let crlf = rng.chance(40);
    let eol = if crlf { "\r\n" } else { "\n" };
    let sep = char::from(delimiter).to_string();
    let mut text = String::new();
    if rng.chance(10) {
        text.push('\u{feff}');
    }
    if header {
        let names: Vec<String> = (0..columns).map(|c| format!("c{c}")).collect();
        text.push_str(&names.join(&sep));
        text.push_str(eol);
    }
    for row in 0..rows {
        let mut fields: Vec<String> = (0..columns)
            .map(|c| csv_field(rng, c, row, rows, delimiter))
            .collect();
        // Now and then a record of the wrong width: an error, or a skip.
        if rng.chance(1) {
            fields.push("extra".to_owned());
        }
        text.push_str(&fields.join(&sep));
        if row + 1 < rows || rng.chance(70) {
            text.push_str(eol);
        }
        if rng.chance(2) {
            text.push_str(eol); // a blank line
        }
    }
    let mut options = DecodeOptions {
        location: "f.csv".into(),
        infer_records: 1 + usize::try_from(rng.below(60)).unwrap(),
        batch_records: 1 + usize::try_from(rng.below(50)).unwrap(),
        on_error: if rng.chance(50) {
            OnError::Skip
        } else {
            OnError::Fail
        },
        ..DecodeOptions::default()
    };
    if !header {
        options.options.insert("header".into(), "false".into());
    }
    (text.into_bytes(), options)
}

/// A random NDJSON file: objects whose fields come and go, and change
/// type late in the file; blank lines; now and then a line that is not
/// JSON.
fn ndjson_file(rng: &mut Rng) -> (Vec<u8>, DecodeOptions) {
    let rows = usize::try_from(rng.below(400)).unwrap();
    let crlf = rng.chance(30);
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut text = String::new();
    for row in 0..rows {
        let late = row > rows * 3 / 4;
        let mut fields = vec![format!("\"id\":{row}")];
        if rng.chance(80) {
            fields.push(if late && rng.chance(10) {
                format!("\"n\":{}.25", rng.below(100))
            } else {
                format!("\"n\":{}", rng.below(100))
            });
        }
        if rng.chance(50) {
            fields.push(format!("\"s\":\"a\\nb {}\"", rng.below(10)));
        }
        if late && rng.chance(5) {
            fields.push(format!("\"new{}\":[1,2]", rng.below(3)));
        }
        if rng.chance(1) {
            text.push_str("{not json");
        } else {
            text.push('{');
            text.push_str(&fields.join(","));
            text.push('}');
        }
        if row + 1 < rows || rng.chance(70) {
            text.push_str(eol);
        }
        if rng.chance(3) {
            text.push_str(eol);
        }
    }
    let options = DecodeOptions {
        location: "f.ndjson".into(),
        infer_records: 1 + usize::try_from(rng.below(60)).unwrap(),
        batch_records: 1 + usize::try_from(rng.below(50)).unwrap(),
        on_error: if rng.chance(50) {
            OnError::Skip
        } else {
            OnError::Fail
        },
        ..DecodeOptions::default()
    };
    (text.into_bytes(), options)
}

/// What a read gave, one line per row (its column types and values as
/// JSON), skipped record (with its error and place) or error.
fn lines_of(out: Vec<Decoded>, lines: &mut Vec<String>) {
    for d in out {
        match d {
            Decoded::Batch(batch) => rows_of(&batch, lines),
            Decoded::Skipped { error, excerpt } => {
                lines.push(format!("skipped {error} {excerpt:?}"))
            }
        }
    }
}

fn rows_of(batch: &RecordBatch, lines: &mut Vec<String>) {
    let types: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    let text = String::from_utf8(writer.into_inner()).unwrap();
    for row in text.lines() {
        lines.push(format!("{} {row}", types.join(",")));
    }
}

/// Pushes `bytes` into `decoder` in random pieces, then finishes it.
fn feed(
    rng: &mut Rng,
    decoder: &mut dyn Decoder,
    bytes: &[u8],
    lines: &mut Vec<String>,
) -> Result<(), DecodeError> {
    let mut at = 0;
    while at < bytes.len() {
        let n = 1 + usize::try_from(rng.below(64)).unwrap();
        let end = (at + n).min(bytes.len());
        let mut out = Vec::new();
        let pushed = decoder.push(&bytes[at..end], &mut out);
        lines_of(out, lines);
        pushed?;
        at = end;
    }
    let mut out = Vec::new();
    let finished = decoder.finish(&mut out);
    lines_of(out, lines);
    finished
}

/// One read of the whole file.
fn whole_read(rng: &mut Rng, splitter: &Splitter, bytes: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut decoder = splitter.first().unwrap();
    if let Err(e) = feed(rng, decoder.as_mut(), bytes, &mut lines) {
        lines.push(format!("error {e}"));
    }
    lines
}

/// A part decoded: what it gave, whether it failed, and what its decoder
/// knew at the end.
struct Decoded1 {
    lines: Vec<String>,
    failed: bool,
    end: Option<Start>,
}

fn decode_part(
    rng: &mut Rng,
    splitter: &Splitter,
    bytes: &[u8],
    part: &Part,
    start: Option<&Start>,
) -> Decoded1 {
    let mut decoder: Box<dyn PartDecoder> = match start {
        None => splitter.first().unwrap(),
        Some(start) => splitter.part(start, part).unwrap(),
    };
    let range = usize::try_from(part.start).unwrap()..usize::try_from(part.end).unwrap();
    let mut lines = Vec::new();
    let failed = match feed(rng, decoder.as_mut(), &bytes[range], &mut lines) {
        Ok(()) => false,
        Err(e) => {
            lines.push(format!("error {e}"));
            true
        }
    };
    Decoded1 {
        lines,
        failed,
        end: decoder.start(),
    }
}

/// The file cut into parts of about `part_bytes` and decoded part by part
/// as the ingest does: every later part first from the guess the head
/// gives, then again from the exact start wherever the guess was wrong.
/// Returns what the parts gave, in order, and how many were decoded again.
fn split_read(
    rng: &mut Rng,
    splitter: &Splitter,
    bytes: &[u8],
    part_bytes: u64,
    align: u64,
) -> (Vec<String>, usize, usize) {
    let mut cutter = splitter.cutter(part_bytes, align).unwrap();
    let mut parts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + 1 + usize::try_from(rng.below(100)).unwrap()).min(bytes.len());
        if !cutter.push(&bytes[at..end], &mut parts) {
            break;
        }
        at = end;
    }
    cutter.finish(bytes.len() as u64, &mut parts);
    // The parts cover the file, in order, without gaps.
    assert_eq!(parts.first().map(|p| p.start), Some(0));
    assert_eq!(parts.last().map(|p| p.end), Some(bytes.len() as u64));
    for (i, w) in parts.windows(2).enumerate() {
        assert_eq!(w[0].end, w[1].start, "parts {i} and {}", i + 1);
        assert!(w[0].start < w[0].end, "part {i} is empty");
    }
    let guess = parts
        .first()
        .and_then(|p| splitter.guess(&Bytes(bytes.to_vec()), p.end));
    let mut lines = Vec::new();
    let mut again = 0;
    let mut exact_end: Option<Start> = None;
    for part in &parts {
        let decoded = if part.index == 0 {
            decode_part(rng, splitter, bytes, part, None)
        } else {
            let Some(exact) = exact_end.as_ref() else {
                break; // the part before it failed, or knew no schema
            };
            let first = guess
                .as_ref()
                .map(|g| (g, decode_part(rng, splitter, bytes, part, Some(g))));
            match first {
                Some((g, d)) if Splitter::check(g, exact) => d,
                _ => {
                    again += 1;
                    decode_part(rng, splitter, bytes, part, Some(exact))
                }
            }
        };
        lines.extend(decoded.lines);
        if decoded.failed {
            break;
        }
        exact_end = decoded.end;
    }
    (lines, parts.len(), again)
}

fn check_many(name: &str, cases: u64, make: impl Fn(&mut Rng) -> (Vec<u8>, DecodeOptions)) {
    let (mut split_files, mut redone, mut parts_seen) = (0, 0, 0);
    for case in 0..cases {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (case + 1).wrapping_mul(0x1000_0000_01B3);
        let mut rng = Rng(seed);
        let (bytes, options) = make(&mut rng);
        let splitter = Splitter::new(name, &options).unwrap().unwrap();
        let options = &options;
        let whole = whole_read(&mut rng, &splitter, &bytes);
        let part_bytes = 1 + rng.below(bytes.len() as u64 / 2 + 2);
        let align = if rng.chance(30) { 1 + rng.below(20) } else { 1 };
        let (split, parts, again) = split_read(&mut rng, &splitter, &bytes, part_bytes, align);
        if split != whole {
            let first = split.iter().zip(&whole).position(|(a, b)| a != b);
            panic!(
                "{name} case {case} (seed {seed:#x}), {} bytes cut into {parts} parts of {part_bytes} \
                 aligned to {align}, {} records inferred from, batches of {}: the parts gave {} lines, a whole read {}; first difference at {first:?}:\n\
                 parts: {:?}\nwhole: {:?}\nfile: {:?}",
                bytes.len(),
                options.infer_records,
                options.batch_records,
                split.len(),
                whole.len(),
                first.and_then(|i| split.get(i)),
                first.and_then(|i| whole.get(i)),
                String::from_utf8_lossy(&bytes[..bytes.len().min(3000)]),
            );
        }
        if parts > 1 {
            split_files += 1;
        }
        parts_seen += parts;
        redone += again;
    }
    // The cases exercised what they are for: files cut in many parts, and
    // parts whose guessed start was wrong (a late record widened the
    // schema) decoded again.
    assert!(
        split_files > cases / 2,
        "{name}: only {split_files} of {cases} files were cut"
    );
    assert!(
        redone > 0,
        "{name}: no part had to be decoded again ({parts_seen} parts)"
    );
}

#[test]
fn csv_parts_read_as_the_whole_file_whatever_the_cut() {
    check_many("csv", 600, |rng| csv_file(rng, b','));
}

#[test]
fn tsv_parts_read_as_the_whole_file_whatever_the_cut() {
    check_many("tsv", 200, |rng| csv_file(rng, b'\t'));
}

#[test]
fn ndjson_parts_read_as_the_whole_file_whatever_the_cut() {
    check_many("ndjson", 600, ndjson_file);
}

/// The parts of a CSV `bytes` (schema inferred from `infer` records) cut
/// at `part_bytes`, aligned to `align` records, pushed whole.
fn csv_parts(bytes: &[u8], infer: usize, part_bytes: u64, align: u64) -> Vec<Part> {
    let options = DecodeOptions {
        infer_records: infer,
        ..DecodeOptions::default()
    };
    let splitter = Splitter::new("csv", &options).unwrap().unwrap();
    let mut cutter = splitter.cutter(part_bytes, align).unwrap();
    let mut parts = Vec::new();
    cutter.push(bytes, &mut parts);
    cutter.finish(bytes.len() as u64, &mut parts);
    parts
}

#[test]
fn parts_end_at_record_boundaries_never_inside_a_quoted_field_or_a_crlf() {
    // A quoted field holding line breaks (LF and CRLF) where every cut would
    // otherwise fall, and CRLF line ends.
    let mut text = String::from("a,b\r\n");
    for i in 0..50 {
        text.push_str(&format!("{i},\"x\r\ny\nz\"\r\n"));
    }
    let bytes = text.into_bytes();
    for part_bytes in 1..40 {
        let parts = csv_parts(&bytes, 1, part_bytes, 1);
        assert!(parts.len() > 5, "{part_bytes}: {parts:?}");
        for p in &parts[1..] {
            let at = usize::try_from(p.start).unwrap();
            assert_eq!(
                &bytes[at - 2..at],
                b"\r\n",
                "part {} starts mid-line",
                p.index
            );
            assert!(
                bytes[at].is_ascii_digit(),
                "part {} starts inside a field",
                p.index
            );
            // Lines and records before it, as a whole read counts them.
            let before = &bytes[..at];
            assert_eq!(
                p.line,
                1 + before.iter().filter(|&&b| b == b'\n').count() as u64
            );
            let rest = String::from_utf8_lossy(&bytes[at..]);
            let first_field = rest.split(',').next().unwrap();
            assert_eq!(p.records.to_string(), first_field, "part {}", p.index);
        }
    }
}

#[test]
fn aligned_parts_hold_whole_batches() {
    let mut text = String::from("n\n");
    for i in 0..1000 {
        text.push_str(&format!("{i}\n"));
    }
    let bytes = text.into_bytes();
    let parts = csv_parts(&bytes, 10, 100, 64);
    assert!(parts.len() > 5, "{parts:?}");
    for p in &parts {
        assert_eq!(p.records % 64, 0, "{p:?}");
    }
}

#[test]
fn formats_without_record_lines_are_not_cut() {
    for name in ["json", "parquet", "xml", "yaml", "avro"] {
        assert!(
            Splitter::new(name, &DecodeOptions::default())
                .unwrap()
                .is_none(),
            "{name}"
        );
    }
    let mut bad = DecodeOptions::default();
    bad.options.insert("nonsense".into(), "1".into());
    assert!(Splitter::new("csv", &bad).is_err());
}
