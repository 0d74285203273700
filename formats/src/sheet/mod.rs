//! Spreadsheets: XLSX (and XLSM, XLSB), XLS and ODS, read with `calamine`.
//!
//! A workbook is a zip or compound file whose index sits at its end, so it
//! is read through random access (in place, or from a size-capped spool).
//! What the file is decides how it is read, whatever its name says: a
//! compound file is an XLS workbook (or an encrypted one, refused), a zip
//! with `xl/workbook.bin` an XLSB workbook, one with `content.xml` an ODS
//! workbook, any other zip an XLSX workbook.
//!
//! One sheet is read — by name or position — on a thread of its own, which
//! hands rows on as JSON lines to the NDJSON decoder inside: that brings the
//! explicit schema and `on_error` handling, and refuses a value outside the
//! columns. Without `--schema`, column types come from the cells of the
//! first rows (integers, floats, booleans, date-times as timestamps, else
//! text). XLSX and XLSB sheets are streamed cell by cell and held to the
//! cell budget by the cells they hold (what a sheet declares of its size is
//! not trusted); XLS and ODS workbooks are loaded whole by the reader, every
//! sheet at once, so what it would hold of them is counted first (see
//! `crate::cfb` and [`ods`]) and refused past the budget.

mod ods;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{Read, Seek};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use calamine::{Data, DataRef, ExcelDateTime, Ods, Reader, Xls, Xlsb, Xlsx};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::source::ReadAt;
use rota_core::{DecodeError, DecodeErrorKind, Position};

use crate::json::NdjsonFormat;
use crate::options::FormatOptions;
use crate::spool::{AtCursor, DEFAULT_MAX_SPOOL, Spool};

/// Cells a sheet may hold unless `max_cells` says otherwise.
const DEFAULT_MAX_CELLS: u64 = 100_000_000;

/// JSON text handed over per message, about.
const LINES_PER_MESSAGE: usize = 1 << 20;

/// Parts of a zipped workbook that are loaded whole (shared strings, styles;
/// an ODS file's content) may inflate to this much; a larger one is refused
/// as a likely zip bomb.
const MAX_PART: u64 = 256 << 20;

/// Sheet rows remembered for positioning errors of the decoder inside.
const ROWS_KEPT: usize = 1 << 16;

/// Columns a sheet can have (XFD), in XLSX and XLSB.
const MAX_COLUMNS: u32 = 16_384;

/// Cells held to infer column types, at most, whatever `--infer-rows` says.
const SAMPLE_CELLS: usize = 1 << 20;

/// Cells (rows times columns, empty ones too) of a decoded batch, at most.
const CELLS_PER_BATCH: usize = 1 << 20;

/// What to do about a workbook with a password.
const PASSWORD_HINT: &str = "the workbook is encrypted with a password, which Rota cannot \
                             read; save a copy without the password and ingest that";

/// The workbook formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Xlsx,
    Xlsb,
    Xls,
    Ods,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Self::Xlsx => "an XLSX workbook",
            Self::Xlsb => "an XLSB workbook",
            Self::Xls => "an XLS workbook",
            Self::Ods => "an ODS workbook",
        }
    }

    /// `what()` without the article.
    fn name(self) -> &'static str {
        self.what().trim_start_matches("an ")
    }
}

const OPTIONS: &[&str] = &["sheet", "header", "skip_rows", "max_cells", "max_spool"];

/// Excel 2007+ workbooks (`.xlsx`, `.xlsm`, and binary `.xlsb`), streamed
/// cell by cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct XlsxFormat;

/// Excel 97–2003 workbooks (`.xls`).
#[derive(Clone, Copy, Debug, Default)]
pub struct XlsFormat;

/// OpenDocument spreadsheets (`.ods`).
#[derive(Clone, Copy, Debug, Default)]
pub struct OdsFormat;

macro_rules! sheet_format {
    ($ty:ty, $kind:expr, $name:literal, $ext:expr, $describe:literal) => {
        impl Format for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn extensions(&self) -> &'static [&'static str] {
                $ext
            }

            fn describe(&self) -> &'static str {
                concat!(
                    $describe,
                    "; options: sheet=NAME or position from 1 (default the first), \
                     header=true|false, skip_rows=N (before the header), \
                     max_cells=N (default 100000000), max_spool=BYTES"
                )
            }

            fn prefers_random_access(&self) -> bool {
                true
            }

            fn sniff(&self, head: &Head<'_>) -> u8 {
                sniff_workbook($kind, head.bytes)
            }

            fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
                let settings = Settings::new($kind, options)?;
                let spool = Spool::new(&options.location, settings.max_spool, $kind.what())?;
                Ok(Box::new(SheetDecoder::new(settings, State::Spool(spool))))
            }

            fn decoder_at(
                &self,
                options: &DecodeOptions,
                input: Arc<dyn ReadAt>,
            ) -> Option<Result<Box<dyn Decoder>, DecodeError>> {
                Some(Settings::new($kind, options).map(|settings| {
                    Box::new(SheetDecoder::new(settings, State::Ready(input))) as Box<dyn Decoder>
                }))
            }
        }
    };
}

sheet_format!(
    XlsxFormat,
    Kind::Xlsx,
    "xlsx",
    &["xlsx", "xlsm", "xlsb"],
    "Excel workbooks (XLSX, XLSM, XLSB), one sheet streamed cell by cell, date-times as timestamps"
);
sheet_format!(
    XlsFormat,
    Kind::Xls,
    "xls",
    &["xls"],
    "Excel 97-2003 workbooks (XLS), one sheet, date-times as timestamps"
);
sheet_format!(
    OdsFormat,
    Kind::Ods,
    "ods",
    &["ods"],
    "OpenDocument spreadsheets (ODS), one sheet, date-times as timestamps"
);

/// What the options ask for.
#[derive(Clone, Debug)]
struct Settings {
    kind: Kind,
    location: String,
    sheet: Option<String>,
    header: bool,
    skip_rows: u64,
    max_cells: u64,
    max_spool: u64,
    infer_records: usize,
    /// For the NDJSON decoder inside (its schema is set once known).
    inner: DecodeOptions,
}

impl Settings {
    fn new(kind: Kind, options: &DecodeOptions) -> Result<Self, DecodeError> {
        let mut opts = FormatOptions::new(options, OPTIONS);
        let sheet = opts.string("sheet");
        let header = opts.bool("header", true)?;
        let skip_rows = opts.u64("skip_rows", 0)?;
        let max_cells = opts.u64("max_cells", DEFAULT_MAX_CELLS)?;
        let max_spool = opts.u64("max_spool", DEFAULT_MAX_SPOOL)?;
        opts.finish()?;
        let inner = DecodeOptions {
            options: BTreeMap::new(),
            ..options.clone()
        };
        Ok(Self {
            kind,
            location: options.location.clone(),
            sheet,
            header,
            skip_rows,
            max_cells,
            max_spool,
            infer_records: options.infer_records.max(1),
            inner,
        })
    }

    /// An error about the workbook as a whole.
    fn error(&self, kind: DecodeErrorKind, message: String) -> DecodeError {
        DecodeError::at_byte(&self.location, 0, kind, message)
    }

    /// An error in a part of the workbook: `sheet 'Data', cell B7`.
    fn in_part(&self, part: String, kind: DecodeErrorKind, message: String) -> DecodeError {
        DecodeError::in_part(&self.location, part, 0, kind, message)
    }
}

/// A column's letters: 0 is A, 26 is AA.
fn column_letters(mut col: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (col % 26) as u8);
        if col < 26 {
            break;
        }
        col = col / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A cell's name: column 2, row 7 (1-based) is C7.
fn cell_name(col: u64, row: u64) -> String {
    format!("{}{row}", column_letters(col))
}

/// The reader's error text as words of a sentence: its first letter lower.
fn words(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) if chars.clone().next().is_some_and(char::is_lowercase) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => text,
    }
}

/// What the reading thread learned of the sheet before its rows.
struct Start {
    /// The schema rows are written for.
    schema: SchemaRef,
    /// The sheet's column names, by position from column A.
    names: Vec<String>,
    /// The sheet's name.
    sheet: String,
}

/// From the reading thread.
enum Msg {
    /// Sent once, first.
    Start(Start),
    /// JSON lines, and the sheet row (1-based) of each.
    Lines(Vec<u8>, Vec<u32>),
    Failed(DecodeError),
}

enum State {
    Spool(Spool),
    Ready(Arc<dyn ReadAt>),
    Reading {
        rx: Receiver<Msg>,
        inner: Option<Box<dyn Decoder>>,
    },
    Done,
}

struct SheetDecoder {
    settings: Settings,
    state: State,
    /// Sheet rows of the most recent lines handed inside; the last is line
    /// `lines`.
    rows: VecDeque<u32>,
    lines: u64,
    schema: Option<SchemaRef>,
    /// The sheet's name and its column names, for errors.
    sheet: String,
    names: Vec<String>,
}

impl SheetDecoder {
    fn new(settings: Settings, state: State) -> Self {
        Self {
            settings,
            state,
            rows: VecDeque::new(),
            lines: 0,
            schema: None,
            sheet: String::new(),
            names: Vec::new(),
        }
    }

    /// Moves an error of the decoder inside (whose lines are records) onto
    /// the sheet's cells, in the words of a sheet.
    fn reposition(&self, mut e: DecodeError) -> DecodeError {
        let Some(record) = e.position.line.or(e.position.record) else {
            return e;
        };
        let oldest = self.lines + 1 - self.rows.len() as u64;
        let row = record
            .checked_sub(oldest)
            .and_then(|i| self.rows.get(usize::try_from(i).ok()?));
        let (column, message) = self.explain(&e);
        let mut part = format!("sheet '{}'", self.sheet);
        match (row, column) {
            (Some(row), Some(col)) => {
                let _ = write!(part, ", cell {}", cell_name(col, u64::from(*row)));
            }
            (Some(row), None) => {
                let _ = write!(part, ", row {row}");
            }
            _ => {}
        }
        let _ = write!(part, ", record {record}");
        e.message = message;
        e.position = Position {
            part: Some(part),
            ..Position::default()
        };
        e
    }

    /// The column (from A = 0) an error of the decoder inside is about, and
    /// what it means for the sheet.
    fn explain(&self, e: &DecodeError) -> (Option<u64>, String) {
        let message = e.message.as_str();
        let quoted = |after: &str| {
            let at = message.find(after)? + after.len();
            let rest = &message[at..];
            Some(rest[..rest.find('\'')?].to_owned())
        };
        let position = |name: &str| {
            self.names
                .iter()
                .position(|n| n == name)
                .map(|i| i as u64)
                .or_else(|| {
                    let n: u64 = name.strip_prefix("column_")?.parse().ok()?;
                    n.checked_sub(1)
                })
        };
        // A field the schema does not have: a value past the named columns.
        let stray = quoted("field '")
            .filter(|_| message.contains("is not in the schema"))
            .or_else(|| quoted("column '").filter(|_| message.contains("missing from schema")));
        if let Some(field) = stray {
            let col = position(&field);
            let text = if self.settings.inner.schema.is_some() {
                format!("column '{field}' is not in the schema --schema gives")
            } else {
                let letters = col.map_or_else(|| field.clone(), column_letters);
                format!(
                    "a value in column {letters}, which neither the header row nor the first \
                     rows gave a name; name it in the header row, or sample more rows with \
                     --infer-rows"
                )
            };
            return (col, text);
        }
        // A value that does not fit its column's type.
        let field = e
            .position
            .column
            .clone()
            .or_else(|| quoted("whilst decoding field '"));
        if let Some(field) = field.filter(|_| e.kind == DecodeErrorKind::Type) {
            let cause = message
                .split_once("': ")
                .filter(|_| message.starts_with("whilst decoding field"))
                .map_or(message, |(_, cause)| cause);
            let origin = if self.settings.inner.schema.is_some() {
                "the type --schema gives it"
            } else {
                "its type comes from the first rows; give it with --schema, or sample more \
                 rows with --infer-rows"
            };
            return (
                position(&field),
                format!("the value does not fit column '{field}' ({origin}): {cause}"),
            );
        }
        (None, message.to_owned())
    }

    fn reposition_all(
        &self,
        out: &mut [Decoded],
        result: Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        for d in out {
            if let Decoded::Skipped { error, .. } = d {
                *error = self.reposition(error.clone());
            }
        }
        result.map_err(|e| self.reposition(e))
    }
}

impl Decoder for SheetDecoder {
    fn push(&mut self, bytes: &[u8], _out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        match &mut self.state {
            State::Spool(spool) => spool.push(bytes),
            _ => Ok(()), // random access: nothing is pushed
        }
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let input: Arc<dyn ReadAt> = match std::mem::replace(&mut self.state, State::Done) {
            State::Spool(spool) => spool.into_read_at()?,
            State::Ready(input) => input,
            other => {
                self.state = other;
                return Ok(());
            }
        };
        let (tx, rx) = sync_channel(2);
        let settings = self.settings.clone();
        std::thread::Builder::new()
            .name("rota-sheet".into())
            .spawn(move || read_sheet(&settings, input, &tx))
            .map_err(|e| {
                self.settings.error(
                    DecodeErrorKind::Options,
                    format!("cannot start a reader: {e}"),
                )
            })?;
        self.state = State::Reading { rx, inner: None };
        self.drain(out).map(|_| ())
    }

    fn drain(&mut self, out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        let State::Reading { rx, inner } = &mut self.state else {
            return Ok(false);
        };
        let from = out.len();
        match rx.recv() {
            Ok(Msg::Start(start)) => {
                // Batches are dense: a wide sheet gets fewer rows to a batch.
                let width = start.schema.fields().len().max(1);
                let options = DecodeOptions {
                    schema: Some(start.schema.clone()),
                    batch_records: self
                        .settings
                        .inner
                        .batch_records
                        .min(CELLS_PER_BATCH / width)
                        .max(1),
                    infer_records: 1,
                    ..self.settings.inner.clone()
                };
                *inner = Some(NdjsonFormat.decoder(&options)?);
                self.schema = Some(start.schema);
                self.names = start.names;
                self.sheet = start.sheet;
                Ok(true)
            }
            Ok(Msg::Lines(text, rows)) => {
                let Some(decoder) = inner.as_mut() else {
                    return Ok(true);
                };
                for row in rows {
                    self.lines += 1;
                    self.rows.push_back(row);
                    if self.rows.len() > ROWS_KEPT {
                        self.rows.pop_front();
                    }
                }
                let result = decoder.push(&text, out);
                self.reposition_all(&mut out[from..], result)?;
                Ok(true)
            }
            Ok(Msg::Failed(e)) => {
                self.state = State::Done;
                Err(e)
            }
            Err(_) => {
                // The reader is done.
                let result = match inner.as_mut() {
                    Some(decoder) => decoder.finish(out),
                    None => Ok(()),
                };
                self.state = State::Done;
                self.reposition_all(&mut out[from..], result)?;
                Ok(false)
            }
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }
}

/// A cell's value, owned, in the few kinds that matter for typing.
#[derive(Clone, Debug)]
enum Cell {
    Empty,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    /// ISO 8601 date-time text.
    DateTime(String),
}

/// Seconds, to the millisecond (the precision of the sheets' times).
fn seconds(s: f64) -> Cell {
    Cell::Float((s * 1000.0).round() / 1000.0)
}

/// The seconds of an ISO 8601 duration (`PT10H10M10S`, `P1DT2H`, `-PT1.5S`)
/// as ODS writes them; `None` for one with years or months, whose length
/// in seconds is not fixed.
fn iso_duration(text: &str) -> Option<f64> {
    let (sign, rest) = match text.trim().strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text.trim()),
    };
    let rest = rest.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = 0.0;
    for (part, units) in [
        (date, &[('W', 604_800.0), ('D', 86_400.0)][..]),
        (time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)][..]),
    ] {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == ',' {
                number.push(if c == ',' { '.' } else { c });
                continue;
            }
            let (_, scale) = units.iter().find(|(u, _)| *u == c)?;
            total += number.parse::<f64>().ok()? * scale;
            number.clear();
        }
        if !number.is_empty() {
            return None;
        }
    }
    Some(sign * total)
}

/// A duration as text: its seconds when it has a fixed length, else the text.
fn duration(text: &str) -> Cell {
    iso_duration(text).map_or_else(|| self::text(text), seconds)
}

fn excel_datetime(dt: &ExcelDateTime) -> Cell {
    if dt.is_duration() {
        // A duration, in seconds.
        return seconds(dt.as_f64() * 86_400.0);
    }
    let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
    let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if ms > 0 {
        let _ = write!(text, ".{ms:03}");
    }
    Cell::DateTime(text)
}

/// A number; a whole one is an integer (XLSX and ODS store every number as
/// a float, so an id column would otherwise read as floats).
fn number(f: f64) -> Cell {
    // Integers up to 2^53 are exact in a float.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.fract() == 0.0 && f.abs() <= EXACT {
        #[allow(clippy::cast_possible_truncation)] // whole and within ±2^53
        return Cell::Int(f as i64);
    }
    Cell::Float(f)
}

/// Text; an empty string holds no value, as an empty cell.
fn text(s: &str) -> Cell {
    if s.is_empty() {
        Cell::Empty
    } else {
        Cell::Text(s.to_owned())
    }
}

fn from_ref(v: &DataRef<'_>) -> Cell {
    match v {
        DataRef::Int(i) => Cell::Int(*i),
        DataRef::Float(f) => number(*f),
        DataRef::String(s) => text(s),
        DataRef::DurationIso(s) => duration(s),
        DataRef::SharedString(s) => text(s),
        DataRef::Bool(b) => Cell::Bool(*b),
        DataRef::DateTime(dt) => excel_datetime(dt),
        DataRef::DateTimeIso(s) => Cell::DateTime(s.clone()),
        // Error cells (#DIV/0!, #N/A) hold no value.
        DataRef::Error(_) | DataRef::Empty => Cell::Empty,
    }
}

fn from_data(v: &Data) -> Cell {
    match v {
        Data::Int(i) => Cell::Int(*i),
        Data::Float(f) => number(*f),
        Data::String(s) => text(s),
        Data::DurationIso(s) => duration(s),
        Data::Bool(b) => Cell::Bool(*b),
        Data::DateTime(dt) => excel_datetime(dt),
        Data::DateTimeIso(s) => Cell::DateTime(s.clone()),
        Data::Error(_) | Data::Empty => Cell::Empty,
    }
}

impl Cell {
    fn text(&self) -> String {
        match self {
            Self::Empty => String::new(),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Text(s) | Self::DateTime(s) => s.clone(),
        }
    }

    /// The cell as JSON for a column of type `ty` (`None`: as it is).
    fn write_json(&self, ty: Option<&DataType>, out: &mut Vec<u8>) {
        let as_text = matches!(ty, Some(DataType::Utf8));
        match self {
            Self::Empty => out.extend_from_slice(b"null"),
            Self::Text(s) | Self::DateTime(s) => write_string(s, out),
            _ if as_text => write_string(&self.text(), out),
            Self::Int(i) => {
                let _ = write!(Utf8Sink(out), "{i}");
            }
            Self::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => {
                    let _ = write!(Utf8Sink(out), "{n}");
                }
                None => out.extend_from_slice(b"null"),
            },
            Self::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `fmt::Write` into a byte buffer.
struct Utf8Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The type of a column whose sample cells are `cells`.
fn column_type<'a>(cells: impl Iterator<Item = &'a Cell>) -> DataType {
    let (mut ints, mut floats, mut bools, mut dates, mut texts) = (0, 0, 0, 0, 0);
    for c in cells {
        match c {
            Cell::Empty => {}
            Cell::Int(_) => ints += 1,
            Cell::Float(_) => floats += 1,
            Cell::Bool(_) => bools += 1,
            Cell::DateTime(_) => dates += 1,
            Cell::Text(_) => texts += 1,
        }
    }
    match (ints, floats, bools, dates, texts) {
        (1.., 0, 0, 0, 0) => DataType::Int64,
        (_, 1.., 0, 0, 0) => DataType::Float64,
        (0, 0, 1.., 0, 0) => DataType::Boolean,
        (0, 0, 0, 1.., 0) => DataType::Timestamp(TimeUnit::Millisecond, None),
        _ => DataType::Utf8,
    }
}

/// A row's cells that hold a value, by column from A = 0, in column order.
type Row = Vec<(usize, Cell)>;

/// Puts a row's cells in column order; of two in one column, the later wins.
fn tidy(mut row: Row) -> Row {
    row.sort_by_key(|(c, _)| *c);
    let mut out: Row = Vec::with_capacity(row.len());
    for (c, cell) in row {
        match out.last_mut() {
            Some(last) if last.0 == c => *last = (c, cell),
            _ => out.push((c, cell)),
        }
    }
    out
}

/// Writes rows as JSON lines and sends them on.
struct Writer<'a> {
    settings: &'a Settings,
    tx: &'a SyncSender<Msg>,
    /// The sheet read, once known.
    sheet: String,
    names: Vec<String>,
    types: Vec<Option<DataType>>,
    text: Vec<u8>,
    rows: Vec<u32>,
    /// Rows before the header still to skip, and whether the header is read.
    to_skip: u64,
    header_done: bool,
    /// Rows held until the column types are known, and their cells.
    sample: Vec<(u32, Row)>,
    sample_cells: usize,
    started: bool,
    /// Given by `--schema`.
    schema: Option<SchemaRef>,
    cells: u64,
    /// Where the open row starts in `text`, and its values so far.
    row_mark: usize,
    row_cells: usize,
}

/// The reader stops: the consumer is gone, or the sheet is refused.
struct Stop;

impl<'a> Writer<'a> {
    fn new(settings: &'a Settings, tx: &'a SyncSender<Msg>) -> Self {
        Self {
            settings,
            tx,
            sheet: String::new(),
            names: Vec::new(),
            types: Vec::new(),
            text: Vec::new(),
            rows: Vec::new(),
            to_skip: settings.skip_rows,
            header_done: !settings.header,
            sample: Vec::new(),
            sample_cells: 0,
            started: false,
            schema: settings.inner.schema.clone(),
            cells: 0,
            row_mark: 0,
            row_cells: 0,
        }
    }

    fn fail(&self, e: DecodeError) -> Stop {
        let _ = self.tx.send(Msg::Failed(e));
        Stop
    }

    /// Counts one more cell against the budget; the cell is at `col`
    /// (from 0), `row` (from 1).
    fn count(&mut self, col: u32, row: u32) -> Result<(), Stop> {
        self.cells += 1;
        let part = || {
            format!(
                "sheet '{}', cell {}",
                self.sheet,
                cell_name(col.into(), row.into())
            )
        };
        if col >= MAX_COLUMNS {
            return Err(self.fail(self.settings.in_part(
                part(),
                DecodeErrorKind::Syntax,
                "the cell lies past column XFD, the last one a sheet can have".into(),
            )));
        }
        if self.cells > self.settings.max_cells {
            return Err(self.fail(self.settings.in_part(
                part(),
                DecodeErrorKind::TooLarge,
                format!(
                    "the sheet holds more than max_cells ({}) cells; raise max_cells to read it",
                    self.settings.max_cells
                ),
            )));
        }
        Ok(())
    }

    /// One sheet row (1-based number), its cells that hold a value.
    fn row(&mut self, number: u32, cells: Row) -> Result<(), Stop> {
        if cells.is_empty() {
            return Ok(()); // blank rows count for nothing
        }
        if self.to_skip > 0 {
            self.to_skip -= 1;
            return Ok(());
        }
        if !self.header_done {
            self.header_done = true;
            let width = cells.last().map_or(0, |(c, _)| c + 1);
            let mut texts = vec![String::new(); width];
            for (c, cell) in &cells {
                texts[*c] = cell.text();
            }
            let mut seen = std::collections::HashSet::new();
            for (i, t) in texts.iter().enumerate() {
                let base = match t.trim() {
                    "" => format!("column_{}", i + 1),
                    t => t.to_owned(),
                };
                let mut name = base.clone();
                let mut n = 2;
                while !seen.insert(name.clone()) {
                    name = format!("{base}_{n}");
                    n += 1;
                }
                self.names.push(name);
            }
            return Ok(());
        }
        if self.started {
            return self.write(number, &cells);
        }
        self.sample_cells += cells.len();
        self.sample.push((number, cells));
        if self.sample.len() >= self.settings.infer_records || self.sample_cells >= SAMPLE_CELLS {
            self.start()?;
        }
        Ok(())
    }

    /// Fixes the columns and their types, and writes the rows held.
    fn start(&mut self) -> Result<(), Stop> {
        self.started = true;
        let width = self
            .sample
            .iter()
            .filter_map(|(_, r)| r.last().map(|(c, _)| c + 1))
            .max()
            .unwrap_or(0);
        while self.names.len() < width {
            let name = format!("column_{}", self.names.len() + 1);
            self.names.push(name);
        }
        let schema = match &self.schema {
            Some(given) => {
                self.types = self
                    .names
                    .iter()
                    .map(|n| given.field_with_name(n).ok().map(|f| f.data_type().clone()))
                    .collect();
                given.clone()
            }
            None => {
                let mut columns: Vec<Vec<&Cell>> = vec![Vec::new(); self.names.len()];
                for (_, row) in &self.sample {
                    for (c, cell) in row {
                        columns[*c].push(cell);
                    }
                }
                let fields: Vec<Field> = self
                    .names
                    .iter()
                    .zip(&columns)
                    .map(|(name, cells)| Field::new(name, column_type(cells.iter().copied()), true))
                    .collect();
                self.types = fields.iter().map(|f| Some(f.data_type().clone())).collect();
                Arc::new(Schema::new(fields))
            }
        };
        let start = Start {
            schema,
            names: self.names.clone(),
            sheet: self.sheet.clone(),
        };
        if self.tx.send(Msg::Start(start)).is_err() {
            return Err(Stop);
        }
        for (number, cells) in std::mem::take(&mut self.sample) {
            self.write(number, &cells)?;
        }
        Ok(())
    }

    fn write(&mut self, number: u32, cells: &[(usize, Cell)]) -> Result<(), Stop> {
        self.open_row();
        for (i, cell) in cells {
            self.key(*i);
            cell.write_json(self.types.get(*i).and_then(Option::as_ref), &mut self.text);
        }
        self.close_row(number)
    }

    /// Whether rows now go straight to JSON, cell by cell (the columns are
    /// fixed and the header is behind).
    fn streaming(&self) -> bool {
        self.started
    }

    fn open_row(&mut self) {
        self.row_mark = self.text.len();
        self.row_cells = 0;
        self.text.push(b'{');
    }

    /// Writes the key of column `i`, after a comma when it is not the first.
    fn key(&mut self, i: usize) {
        if self.row_cells > 0 {
            self.text.push(b',');
        }
        self.row_cells += 1;
        match self.names.get(i) {
            Some(name) => write_string(name, &mut self.text),
            // A value beyond the columns gets a name the decoder inside
            // refuses, so it is an error for this row, not lost.
            None => write_string(&format!("column_{}", i + 1), &mut self.text),
        }
        self.text.push(b':');
    }

    /// Writes one cell of the open row straight from the reader.
    fn put(&mut self, i: usize, value: &DataRef<'_>) {
        match value {
            DataRef::Empty | DataRef::Error(_) => {}
            DataRef::SharedString(s) if !s.is_empty() => {
                self.key(i);
                write_string(s, &mut self.text);
            }
            DataRef::String(s) if !s.is_empty() => {
                self.key(i);
                write_string(s, &mut self.text);
            }
            DataRef::SharedString(_) | DataRef::String(_) => {}
            other => {
                self.key(i);
                let ty = self.types.get(i).and_then(Option::as_ref);
                from_ref(other).write_json(ty, &mut self.text);
            }
        }
    }

    /// Ends the open row, sheet row `number`; a row without values is dropped.
    fn close_row(&mut self, number: u32) -> Result<(), Stop> {
        if self.row_cells == 0 {
            self.text.truncate(self.row_mark);
            return Ok(());
        }
        self.text.extend_from_slice(b"}\n");
        self.rows.push(number);
        // The rows become dense batches: a wide sheet's rows are handed on
        // a few at a time, so that one message makes a bounded output.
        let cells = self.rows.len().saturating_mul(self.names.len().max(1));
        if self.text.len() >= LINES_PER_MESSAGE || cells >= CELLS_PER_BATCH * 4 {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), Stop> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let msg = Msg::Lines(
            std::mem::take(&mut self.text),
            std::mem::take(&mut self.rows),
        );
        self.tx.send(msg).map_err(|_| Stop)
    }

    fn end(mut self) -> Result<(), Stop> {
        if !self.started && (self.header_done || !self.sample.is_empty()) {
            self.start()?;
        }
        self.send()
    }
}

/// The sheet the options name: by name, else by position from 1.
fn pick_sheet(settings: &Settings, names: &[String]) -> Result<String, DecodeError> {
    let refuse = |m: String| settings.error(DecodeErrorKind::Options, m);
    let Some(wanted) = &settings.sheet else {
        return names
            .first()
            .cloned()
            .ok_or_else(|| refuse("the workbook has no sheets".into()));
    };
    if names.contains(wanted) {
        return Ok(wanted.clone());
    }
    if let Ok(n) = wanted.trim().parse::<usize>()
        && (1..=names.len()).contains(&n)
    {
        return Ok(names[n - 1].clone());
    }
    Err(refuse(format!(
        "option sheet: no sheet '{wanted}' (the workbook has {}: {})",
        names.len(),
        names.join(", ")
    )))
}

/// Reads the chosen sheet and sends its rows; runs on a thread of its own.
/// Should the reader library panic on a malformed file, the panic becomes
/// an error: the rows sent so far must not pass for the whole sheet.
fn read_sheet(settings: &Settings, input: Arc<dyn ReadAt>, tx: &SyncSender<Msg>) {
    let mut kind = settings.kind;
    if let Err(why) = crate::guard(|| read_sheet_unguarded(settings, input, tx, &mut kind)) {
        let _ = tx.send(Msg::Failed(settings.error(
            DecodeErrorKind::Syntax,
            format!(
                "{} is malformed: its reader stopped ({why})",
                kind.what().trim_start_matches("an ")
            ),
        )));
    }
}

/// What the file is, whatever its name says (see the module's notes).
fn kind_of(settings: &Settings, input: &Arc<dyn ReadAt>) -> Kind {
    let mut magic = [0u8; 8];
    if input.read_exact_at(0, &mut magic).is_err() {
        return settings.kind;
    }
    if magic == OLE {
        return Kind::Xls;
    }
    if !magic.starts_with(b"PK") {
        return settings.kind;
    }
    let Ok(zip) = zip::ZipArchive::new(AtCursor::new(Arc::clone(input))) else {
        return settings.kind;
    };
    let mut kind = Kind::Xlsx;
    for name in zip.file_names().flatten() {
        let name = name.replace('\\', "/").to_ascii_lowercase();
        if name == "xl/workbook.bin" {
            return Kind::Xlsb;
        }
        if name == "content.xml" {
            kind = Kind::Ods;
        }
    }
    kind
}

fn read_sheet_unguarded(
    settings: &Settings,
    input: Arc<dyn ReadAt>,
    tx: &SyncSender<Msg>,
    kind: &mut Kind,
) {
    let mut writer = Writer::new(settings, tx);
    *kind = kind_of(settings, &input);
    let kind = *kind;
    let input = match kind {
        Kind::Xls => match crate::cfb::check(&*input, settings.max_cells) {
            Ok(check) if check.patches.is_empty() => input,
            Ok(check) => Arc::new(crate::cfb::Patched::new(input, check.patches)),
            Err(problem) => {
                let e = match problem {
                    crate::cfb::Problem::Encrypted => {
                        settings.error(DecodeErrorKind::Syntax, PASSWORD_HINT.into())
                    }
                    crate::cfb::Problem::TooLarge(sheet, m) => {
                        settings.in_part(format!("sheet '{sheet}'"), DecodeErrorKind::TooLarge, m)
                    }
                    crate::cfb::Problem::Unreadable(m) => settings.error(
                        DecodeErrorKind::Syntax,
                        format!("not a readable XLS workbook: {m}"),
                    ),
                };
                let _ = writer.fail(e);
                return;
            }
        },
        Kind::Xlsx | Kind::Xlsb | Kind::Ods => match check_parts(settings, kind, &input) {
            Ok(()) => input,
            Err(e) => {
                let _ = writer.fail(e);
                return;
            }
        },
    };
    let cursor = AtCursor::new(input);
    let result = match kind {
        Kind::Xlsx => read_xlsx(settings, cursor, &mut writer),
        Kind::Xlsb => read_xlsb(settings, cursor, &mut writer),
        Kind::Xls => match Xls::new(cursor) {
            Ok(book) => read_range(settings, kind, book, &mut writer),
            Err(calamine::XlsError::Password) => Err(writer.fail(password(settings))),
            Err(e) => Err(writer.fail(corrupt(settings, kind, &e))),
        },
        Kind::Ods => match Ods::new(cursor) {
            Ok(book) => read_range(settings, kind, book, &mut writer),
            Err(calamine::OdsError::Password) => Err(writer.fail(password(settings))),
            Err(e) => Err(writer.fail(corrupt(settings, kind, &e))),
        },
    };
    if result.is_ok() {
        let _ = writer.end();
    }
}

/// Inflates each part of a zipped workbook that will be loaded whole,
/// refusing one past [`MAX_PART`] before the reader holds it in memory; of
/// an ODS workbook, counts the cells the reader would hold.
fn check_parts(
    settings: &Settings,
    kind: Kind,
    input: &Arc<dyn ReadAt>,
) -> Result<(), DecodeError> {
    let mut zip = zip::ZipArchive::new(AtCursor::new(Arc::clone(input)))
        .map_err(|e| corrupt(settings, kind, &e))?;
    for i in 0..zip.len() {
        let mut part = zip.by_index(i).map_err(|e| corrupt(settings, kind, &e))?;
        let name = part.name().map(|n| n.into_owned()).unwrap_or_default();
        let streamed = matches!(kind, Kind::Xlsx | Kind::Xlsb)
            && name
                .replace('\\', "/")
                .to_ascii_lowercase()
                .starts_with("xl/worksheets/");
        if streamed {
            // Held to the cell budget as it is read; but the reader holds a
            // cell's text, or a tag, whole.
            let longest = longest_run(&mut part, kind).map_err(|e| {
                settings.in_part(
                    format!("part {name}"),
                    DecodeErrorKind::Syntax,
                    format!(
                        "not a readable {}: the part is damaged: {}",
                        kind.name(),
                        words(&e)
                    ),
                )
            })?;
            let max = settings.inner.max_record_bytes as u64;
            if longest > max {
                return Err(settings.in_part(
                    format!("part {name}"),
                    DecodeErrorKind::TooLarge,
                    format!(
                        "the sheet has a cell (or a tag, or a record) of {longest} bytes, more \
                         than the record size limit ({max} bytes); the reader would hold it \
                         whole"
                    ),
                ));
            }
            continue;
        }
        let damaged = |e: std::io::Error| {
            settings.in_part(
                format!("part {name}"),
                DecodeErrorKind::Syntax,
                format!(
                    "not a readable {}: the part is damaged: {}",
                    kind.name(),
                    words(&e)
                ),
            )
        };
        // The start of the part, where a count it declares would be.
        let mut head = Vec::new();
        let inflated = if part.size() > MAX_PART {
            part.size()
        } else {
            let mut rest = (&mut part).take(MAX_PART + 1);
            (&mut rest)
                .take(HEAD)
                .read_to_end(&mut head)
                .map_err(damaged)?;
            head.len() as u64 + std::io::copy(&mut rest, &mut std::io::sink()).map_err(damaged)?
        };
        if inflated > MAX_PART {
            return Err(settings.in_part(
                format!("part {name}"),
                DecodeErrorKind::TooLarge,
                format!(
                    "the part inflates to more than {} MiB, which a workbook part this reader \
                     loads whole may not (a zip bomb?)",
                    MAX_PART >> 20
                ),
            ));
        }
        let shared_strings =
            kind == Kind::Xlsx && name.to_ascii_lowercase().ends_with("sharedstrings.xml");
        if shared_strings
            && let Some(count) = declared_count(&head)
            && count > inflated
        {
            return Err(settings.in_part(
                format!("part {name}"),
                DecodeErrorKind::Syntax,
                format!(
                    "not a readable XLSX workbook: the part declares {count} shared strings \
                     (uniqueCount) in {inflated} bytes, which cannot hold them; the reader \
                     would reserve room for them all"
                ),
            ));
        }
    }
    if kind == Kind::Ods {
        // An encrypted ODS workbook says so in its manifest; its content is
        // not XML to count.
        if let Ok(manifest) = zip.by_name("META-INF/manifest.xml") {
            let mut text = Vec::new();
            let _ = manifest.take(MAX_PART).read_to_end(&mut text);
            if memchr::memmem::find(&text, b"encryption-data").is_some() {
                return Err(password(settings));
            }
        }
        ods::check(&mut zip, settings.max_cells, MAX_PART).map_err(|p| match p {
            ods::Problem::TooLarge(part, m) => settings.in_part(part, DecodeErrorKind::TooLarge, m),
            ods::Problem::Unreadable(m) => settings.in_part(
                "part content.xml".into(),
                DecodeErrorKind::Syntax,
                format!("not a readable ODS workbook: {m}"),
            ),
        })?;
    }
    Ok(())
}

/// The longest stretch of a worksheet part the reader holds whole: for
/// XLSX, bytes between one `<` and the next (a text, or a tag); for XLSB,
/// the length a record declares (the reader makes room for it first).
fn longest_run(part: &mut impl Read, kind: Kind) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut longest = 0u64;
    if kind == Kind::Xlsb {
        let mut reader = std::io::BufReader::new(part);
        let byte = |r: &mut std::io::BufReader<_>| -> std::io::Result<Option<u8>> {
            let mut b = [0u8];
            Ok((r.read(&mut b)? == 1).then_some(b[0]))
        };
        // A type of one or two bytes, a length of up to four, 7 bits each.
        while let Some(t) = byte(&mut reader)? {
            if t & 0x80 != 0 && byte(&mut reader)?.is_none() {
                break;
            }
            let mut len = 0u64;
            for i in 0..4 {
                let Some(b) = byte(&mut reader)? else {
                    return Ok(longest);
                };
                len |= u64::from(b & 0x7F) << (7 * i);
                if b & 0x80 == 0 {
                    break;
                }
            }
            longest = longest.max(len);
            let skipped = std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink())?;
            if skipped < len {
                break;
            }
        }
        return Ok(longest);
    }
    let mut run = 0u64;
    loop {
        let n = part.read(&mut buf)?;
        if n == 0 {
            return Ok(longest.max(run));
        }
        let mut from = 0;
        for at in memchr::memchr_iter(b'<', &buf[..n]) {
            longest = longest.max(run + (at - from) as u64);
            run = 0;
            from = at + 1;
        }
        run += (n - from) as u64;
    }
}

/// Bytes of a part looked at for what it declares.
const HEAD: u64 = 64 << 10;

/// The `uniqueCount` a shared strings part's `<sst>` element declares,
/// read as the reader reads it (digits; a number too large for it is
/// `u64::MAX`).
fn declared_count(head: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(head, b"uniqueCount=")? + b"uniqueCount=".len();
    let digits: Vec<u8> = head
        .get(at + 1..)?
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    let text = std::str::from_utf8(&digits).ok()?;
    if text.is_empty() {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX))
}

fn corrupt(settings: &Settings, kind: Kind, e: &dyn std::fmt::Display) -> DecodeError {
    settings.error(
        DecodeErrorKind::Syntax,
        format!("not a readable {}: {}", kind.name(), words(e)),
    )
}

fn password(settings: &Settings) -> DecodeError {
    settings.error(DecodeErrorKind::Syntax, PASSWORD_HINT.into())
}

fn too_big(settings: &Settings, sheet: &str, rows: u64, cols: u64) -> DecodeError {
    settings.in_part(
        format!("sheet '{sheet}'"),
        DecodeErrorKind::TooLarge,
        format!(
            "the sheet spans {rows} rows by {cols} columns, more than max_cells ({}); raise \
             max_cells to read it",
            settings.max_cells
        ),
    )
}

/// A reader of the streamed workbook kinds (XLSX, XLSB): the same steps
/// over calamine's two readers, which share no trait for their cell streams.
macro_rules! read_streamed {
    ($name:ident, $book:ty, $password:path, $kind:expr) => {
        fn $name<RS: Read + Seek>(
            settings: &Settings,
            cursor: RS,
            writer: &mut Writer<'_>,
        ) -> Result<(), Stop> {
            let mut book = match <$book>::new(cursor) {
                Ok(book) => book,
                Err($password) => return Err(writer.fail(password(settings))),
                Err(e) => return Err(writer.fail(corrupt(settings, $kind, &e))),
            };
            let sheet = pick_sheet(settings, &book.sheet_names()).map_err(|e| writer.fail(e))?;
            writer.sheet.clone_from(&sheet);
            let mut cells = book
                .worksheet_cells_reader(&sheet)
                .map_err(|e| writer.fail(unreadable_sheet(settings, $kind, &sheet, None, &e)))?;
            stream_cells(settings, $kind, &sheet, writer, || cells.next_cell())
        }
    };
}

read_streamed!(
    read_xlsx,
    Xlsx<RS>,
    calamine::XlsxError::Password,
    Kind::Xlsx
);
read_streamed!(
    read_xlsb,
    Xlsb<RS>,
    calamine::XlsbError::Password,
    Kind::Xlsb
);

/// A sheet the reader stopped in, after the cell at `(row, col)` (from 0).
fn unreadable_sheet(
    settings: &Settings,
    kind: Kind,
    sheet: &str,
    after: Option<(u32, u32)>,
    e: &dyn std::fmt::Display,
) -> DecodeError {
    let part = match after {
        Some((r, c)) => format!(
            "sheet '{sheet}', after cell {}",
            cell_name(c.into(), u64::from(r) + 1)
        ),
        None => format!("sheet '{sheet}'"),
    };
    settings.in_part(
        part,
        DecodeErrorKind::Syntax,
        format!("not a readable {}: {}", kind.name(), words(e)),
    )
}

/// Reads a sheet cell by cell: rows are held until the columns are fixed,
/// then written as their cells arrive.
fn stream_cells<'a, E: std::fmt::Display>(
    settings: &Settings,
    kind: Kind,
    sheet: &str,
    writer: &mut Writer<'_>,
    mut next: impl FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, E>,
) -> Result<(), Stop> {
    let mut current: Option<u32> = None;
    let mut last = None;
    let mut row: Row = Vec::new();
    let mut streamed = false;
    loop {
        let cell =
            next().map_err(|e| writer.fail(unreadable_sheet(settings, kind, sheet, last, &e)))?;
        let Some(cell) = cell else { break };
        let (r, c) = cell.get_position();
        last = Some((r, c));
        let number = r.saturating_add(1);
        if current != Some(r) {
            if let Some(done) = current {
                let done = done.saturating_add(1);
                if streamed {
                    writer.close_row(done)?;
                } else {
                    writer.row(done, tidy(std::mem::take(&mut row)))?;
                }
            }
            current = Some(r);
            streamed = writer.streaming();
            if streamed {
                writer.open_row();
            }
        }
        writer.count(c, number)?;
        let c = c as usize;
        if streamed {
            writer.put(c, cell.get_value());
            continue;
        }
        match from_ref(cell.get_value()) {
            Cell::Empty => {}
            value => row.push((c, value)),
        }
    }
    if let Some(done) = current {
        let done = done.saturating_add(1);
        if streamed {
            writer.close_row(done)?;
        } else {
            writer.row(done, tidy(row))?;
        }
    }
    Ok(())
}

fn read_range<RS: Read + Seek, R: Reader<RS>>(
    settings: &Settings,
    kind: Kind,
    mut book: R,
    writer: &mut Writer<'_>,
) -> Result<(), Stop>
where
    R::Error: std::fmt::Display,
{
    let sheet = pick_sheet(settings, &book.sheet_names()).map_err(|e| writer.fail(e))?;
    writer.sheet.clone_from(&sheet);
    let range = book
        .worksheet_range(&sheet)
        .map_err(|e| writer.fail(unreadable_sheet(settings, kind, &sheet, None, &e)))?;
    let (rows, cols) = range.get_size();
    // Already counted before the reader loaded the workbook; this is the
    // sheet as loaded.
    if (rows as u64).saturating_mul(cols as u64) > settings.max_cells {
        return Err(writer.fail(too_big(settings, &sheet, rows as u64, cols as u64)));
    }
    let Some((first_row, first_col)) = range.start() else {
        return Ok(());
    };
    for (i, cells) in range.rows().enumerate() {
        let row: Row = cells
            .iter()
            .enumerate()
            .filter_map(|(j, v)| match from_data(v) {
                Cell::Empty => None,
                cell => Some((first_col as usize + j, cell)),
            })
            .collect();
        let number = first_row
            .saturating_add(u32::try_from(i).unwrap_or(u32::MAX))
            .saturating_add(1);
        writer.row(number, row)?;
    }
    Ok(())
}

/// The magic number of OLE compound files (XLS workbooks).
const OLE: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// The first entry of an ODS zip: its media type, stored uncompressed.
const ODS_MIMETYPE: &[u8] = b"mimetypeapplication/vnd.oasis.opendocument.spreadsheet";

/// How sure the first bytes make a workbook of `kind` (see
/// [`Format::sniff`]): an OLE file is XLS, a zip whose first entry is the
/// ODS media type ODS, a zip naming `[Content_Types].xml` or `xl/` XLSX (or
/// XLSB, which the XLSX format reads).
fn sniff_workbook(kind: Kind, head: &[u8]) -> u8 {
    let zip = head.starts_with(b"PK\x03\x04");
    let ods = zip && head.get(30..).is_some_and(|h| h.starts_with(ODS_MIMETYPE));
    let xlsx = zip
        && !ods
        && (memchr::memmem::find(head, b"[Content_Types].xml").is_some()
            || memchr::memmem::find(head, b"xl/").is_some());
    let found = match kind {
        Kind::Xls => head.starts_with(OLE),
        Kind::Ods => ods,
        Kind::Xlsx | Kind::Xlsb => xlsx,
    };
    if found { 100 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_named_as_a_sheet_names_them() {
        assert_eq!(cell_name(0, 1), "A1");
        assert_eq!(cell_name(25, 7), "Z7");
        assert_eq!(cell_name(26, 7), "AA7");
        assert_eq!(cell_name(16_383, 1_048_576), "XFD1048576");
    }

    #[test]
    fn iso_durations_are_seconds_when_their_length_is_fixed() {
        assert_eq!(iso_duration("PT10H10M10S"), Some(36_610.0));
        assert_eq!(iso_duration("P1DT2H"), Some(93_600.0));
        assert_eq!(iso_duration("-PT1.5S"), Some(-1.5));
        assert_eq!(iso_duration("P2W"), Some(1_209_600.0));
        assert_eq!(iso_duration("P1Y"), None);
        assert_eq!(iso_duration("PT5"), None);
        assert_eq!(iso_duration("10:00"), None);
    }

    #[test]
    fn shared_string_counts_are_read_as_the_reader_reads_them() {
        let head = br#"<?xml version="1.0"?><sst xmlns="x" count="9" uniqueCount="12">"#;
        assert_eq!(declared_count(head), Some(12));
        assert_eq!(
            declared_count(b"<sst uniqueCount='99999999999999999999999'>"),
            Some(u64::MAX)
        );
        assert_eq!(declared_count(b"<sst count=\"3\">"), None);
    }

    #[test]
    fn the_longest_stretch_a_reader_holds_is_found() {
        let xml = b"<row><c><v>12345</v></c></row>";
        assert_eq!(
            longest_run(&mut &xml[..], Kind::Xlsx).ok(),
            Some("v>12345".len() as u64)
        );
        let long = [b"<t>".as_slice(), &[b'a'; 100_000], b"</t>"].concat();
        assert_eq!(longest_run(&mut &long[..], Kind::Xlsx).ok(), Some(100_002));
        // XLSB: a record of type 0x0000 and 3 bytes, then one of type
        // 0x0081 (two bytes) declaring 300 bytes and holding them.
        let mut bin = vec![0x00, 0x03, 1, 2, 3, 0x81, 0x01, 0xAC, 0x02];
        bin.extend([0u8; 300]);
        assert_eq!(longest_run(&mut &bin[..], Kind::Xlsb).ok(), Some(300));
    }

    #[test]
    fn reader_messages_read_as_words() {
        assert_eq!(
            words(&"Workbook is password protected"),
            "workbook is password protected"
        );
        assert_eq!(words(&"XML error"), "XML error");
    }

    #[test]
    fn rows_are_put_in_column_order_and_the_later_of_two_cells_wins() {
        let row = tidy(vec![
            (3, Cell::Int(1)),
            (1, Cell::Int(2)),
            (3, Cell::Int(3)),
        ]);
        let cols: Vec<usize> = row.iter().map(|(c, _)| *c).collect();
        assert_eq!(cols, [1, 3]);
        assert!(matches!(row[1].1, Cell::Int(3)));
    }
}
