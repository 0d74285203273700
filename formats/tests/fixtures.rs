//! Every file under `fixtures/<format>/` is decoded whole and split into
//! 1-, 7- and 4096-byte pushes; the outputs must be identical and match the
//! snapshot in `tests/snapshots/`. Files under `invalid/` must fail with a
//! positioned error (a byte offset, or a part such as a sheet's cell) (snapshotted too) and, under `on_error = skip`, decode the
//! rest. Set `ROTA_UPDATE_SNAPSHOTS=1` to accept new output.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rota_core::OnError;
use rota_core::format::{DecodeOptions, Decoded, Format};

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file() && p.extension().is_none_or(|e| e != "opts"));
    out.sort();
    out
}

fn options(path: &Path, on_error: OnError) -> DecodeOptions {
    let mut opts = DecodeOptions {
        location: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        on_error,
        batch_records: 3,
        ..DecodeOptions::default()
    };
    let side = PathBuf::from(format!("{}.opts", path.display()));
    if let Ok(text) = std::fs::read_to_string(side) {
        let mut fmt_opts = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=').expect("opts lines are key=value");
            match k {
                "infer_records" => opts.infer_records = v.parse().expect("a number"),
                "schema" => opts.schema = Some(rota_formats::parse_schema(v).expect("a schema")),
                _ => {
                    fmt_opts.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        opts.options = fmt_opts;
    }
    opts
}

/// Decodes `bytes` pushed in pieces of `split` bytes (0 = whole) and renders
/// the result as text: schema, rows as JSON lines, skips.
fn render(
    format: &dyn Format,
    bytes: &[u8],
    split: usize,
    opts: &DecodeOptions,
) -> Result<String, String> {
    let mut decoder = rota_formats::decoder(format, opts).map_err(|e| e.to_string())?;
    let out = rota_formats::drive::decode_all(decoder.as_mut(), bytes, split)
        .map_err(|e| e.to_string())?;
    let mut text = String::from("schema:\n");
    if let Some(schema) = decoder.schema() {
        for f in schema.fields() {
            let _ = writeln!(text, "  {}: {}", f.name(), f.data_type());
        }
    }
    let mut rows = Vec::new();
    let mut skips = String::new();
    let mut n = 0;
    for d in &out {
        match d {
            Decoded::Batch(b) => {
                n += b.num_rows();
                let mut w = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow_json::writer::LineDelimited>(&mut rows);
                w.write(b).map_err(|e| e.to_string())?;
                w.finish().map_err(|e| e.to_string())?;
            }
            Decoded::Skipped { error, excerpt } => {
                let _ = writeln!(skips, "  {error}");
                let _ = writeln!(
                    skips,
                    "    | {}",
                    excerpt.as_deref().unwrap_or("").replace('\n', "\\n")
                );
            }
        }
    }
    let _ = writeln!(text, "rows: {n}");
    let rows = String::from_utf8_lossy(&rows);
    for line in rows.lines().take(5) {
        let cut: String = line.chars().take(300).collect();
        let _ = writeln!(text, "  {cut}");
    }
    if !skips.is_empty() {
        let _ = write!(text, "skipped:\n{skips}");
    }
    Ok(text)
}

fn check_snapshot(name: &str, actual: &str) -> Result<(), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.snap"));
    let expected = std::fs::read_to_string(&path).ok();
    if expected.as_deref() == Some(actual) {
        return Ok(());
    }
    if std::env::var_os("ROTA_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).map_err(|e| e.to_string())?;
        return Ok(());
    }
    Err(format!(
        "snapshot {} differs (set ROTA_UPDATE_SNAPSHOTS=1 to accept)\n--- expected\n{}\n--- actual\n{actual}",
        path.display(),
        expected.unwrap_or_else(|| "(none)".into())
    ))
}

#[test]
fn every_registered_format_has_valid_and_invalid_fixtures() {
    for format in rota_formats::builtin() {
        let dir = fixtures_root().join(format.name());
        assert!(
            !files(&dir).is_empty(),
            "format {} has no fixtures in {}",
            format.name(),
            dir.display()
        );
        assert!(
            !files(&dir.join("invalid")).is_empty(),
            "format {} has no invalid fixtures in {}",
            format.name(),
            dir.join("invalid").display()
        );
    }
    // And every fixture folder belongs to a registered format (besides the
    // source tree and the compressed copies the end-to-end tests read).
    let names = rota_formats::names();
    for entry in std::fs::read_dir(fixtures_root()).expect("fixtures/") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !["tree", "compressed"].contains(&name.as_str()) {
            assert!(
                names.contains(&name.as_str()),
                "fixtures/{name} matches no registered format"
            );
        }
    }
}

#[test]
fn valid_fixtures_decode_identically_in_any_split_and_match_snapshots() {
    let mut failures = Vec::new();
    for format in rota_formats::builtin() {
        for path in files(&fixtures_root().join(format.name())) {
            let bytes = std::fs::read(&path).expect("read fixture");
            let opts = options(&path, OnError::Fail);
            let whole = match render(format.as_ref(), &bytes, 0, &opts) {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            for split in [1, 7, 4096] {
                let split_out = render(format.as_ref(), &bytes, split, &opts);
                if split_out.as_ref() != Ok(&whole) {
                    failures.push(format!(
                        "{}: split {split} differs: {split_out:?}",
                        path.display()
                    ));
                }
            }
            let name = format!(
                "{}__{}",
                format.name(),
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            if let Err(e) = check_snapshot(&name, &whole) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn invalid_fixtures_fail_with_a_position_and_skip_the_same_in_any_split() {
    let mut failures = Vec::new();
    for format in rota_formats::builtin() {
        for path in files(&fixtures_root().join(format.name()).join("invalid")) {
            let bytes = std::fs::read(&path).expect("read fixture");
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let fail = render(format.as_ref(), &bytes, 0, &options(&path, OnError::Fail));
            let Err(error) = fail else {
                failures.push(format!("{}: decoded without error", path.display()));
                continue;
            };
            // A position: a byte offset, or a part of a structured file
            // (`sheet 'Data', cell B7`), shown right after the file.
            let positioned = error.contains("byte ")
                || [": sheet '", ": part "]
                    .iter()
                    .any(|p| error.starts_with(&format!("{file}{p}")));
            if !error.starts_with(&file) || !positioned {
                failures.push(format!(
                    "{}: error does not name the file and a position in it: {error}",
                    path.display()
                ));
            }
            for split in [1, 7] {
                let e = render(
                    format.as_ref(),
                    &bytes,
                    split,
                    &options(&path, OnError::Fail),
                );
                if e.as_ref() != Err(&error) {
                    failures.push(format!(
                        "{}: split {split} gives another error: {e:?}",
                        path.display()
                    ));
                }
            }
            let skip_opts = options(&path, OnError::Skip);
            let skip = render(format.as_ref(), &bytes, 0, &skip_opts);
            for split in [1, 7] {
                let s = render(format.as_ref(), &bytes, split, &skip_opts);
                if s != skip {
                    failures.push(format!(
                        "{}: skip output differs at split {split}: {s:?}",
                        path.display()
                    ));
                }
            }
            let text = format!(
                "fail: {error}\nskip: {}\n",
                match &skip {
                    Ok(t) => t.clone(),
                    Err(e) => format!("error: {e}"),
                }
            );
            if let Err(e) = check_snapshot(&format!("{}__invalid__{file}", format.name()), &text) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Content sniffing tells every fixture's format from its first bytes, but
/// for those too small or too plain to show it: empty files, a single
/// column, raw files. One line of NDJSON is one JSON object, which reads the
/// same either way.
#[test]
fn the_first_bytes_of_every_fixture_tell_its_format() {
    let mut failures = Vec::new();
    for format in rota_formats::builtin() {
        if format.name() == "raw" {
            continue;
        }
        for path in files(&fixtures_root().join(format.name())) {
            let bytes = std::fs::read(&path).expect("read fixture");
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            // Nothing to tell a format by: blank, or only comments.
            let contentless = String::from_utf8_lossy(&bytes)
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            if contentless || name.starts_with("one_column") {
                continue;
            }
            let head = &bytes[..bytes.len().min(rota_formats::detect::SNIFF_BYTES)];
            let found = rota_formats::detect::sniff(head).map(|f| f.name());
            let one_line = bytes.iter().filter(|&&b| b == b'\n').count() <= 1;
            if format.name() == "ndjson" && found == Some("json") && one_line {
                continue;
            }
            if found != Some(format.name()) {
                failures.push(format!("{}: sniffed as {found:?}", path.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
