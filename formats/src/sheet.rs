//! Spreadsheets: XLSX (and XLSM), XLS and ODS, read with `calamine`.
//!
//! A workbook is a zip or compound file whose index sits at its end, so it
//! is read through random access (in place, or from a size-capped spool).
//! One sheet is read — by name or position — on a thread of its own, which
//! hands rows on as JSON lines to the NDJSON decoder inside: that brings the
//! explicit schema and `on_error` handling, and refuses a value outside the
//! columns. Without `--schema`, column types come from the cells of the
//! first rows (integers, floats, booleans, date-times as timestamps, else
//! text). XLSX sheets are streamed cell by cell; XLS and ODS sheets are
//! loaded whole. A sheet whose declared size exceeds the cell budget is
//! refused before its cells are read, and so is one whose cells run past it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{Read, Seek};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use calamine::{Data, DataRef, ExcelDateTime, Ods, Reader, Xls, Xlsx};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::source::ReadAt;
use rota_core::{DecodeError, DecodeErrorKind, Position};

use crate::json::NdjsonFormat;
use crate::options::FormatOptions;
use crate::spool::{AtCursor, DEFAULT_MAX_SPOOL, Spool};

/// Cells a sheet may declare or hold unless `max_cells` says otherwise.
const DEFAULT_MAX_CELLS: u64 = 100_000_000;

/// JSON text handed over per message, about.
const LINES_PER_MESSAGE: usize = 1 << 20;

/// Parts of a zipped workbook that are loaded whole (shared strings, styles;
/// an ODS file's content) may inflate to this much; a larger one is refused
/// as a likely zip bomb.
const MAX_PART: u64 = 256 << 20;

/// Sheet rows remembered for positioning errors of the decoder inside.
const ROWS_KEPT: usize = 1 << 16;

/// The three workbook formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Xlsx,
    Xls,
    Ods,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Self::Xlsx => "an XLSX workbook",
            Self::Xls => "an XLS workbook",
            Self::Ods => "an ODS workbook",
        }
    }
}

const OPTIONS: &[&str] = &["sheet", "header", "skip_rows", "max_cells", "max_spool"];

/// Excel 2007+ workbooks (`.xlsx`, `.xlsm`), streamed cell by cell.
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
    &["xlsx", "xlsm"],
    "Excel workbooks (XLSX, XLSM), one sheet streamed cell by cell, date-times as timestamps"
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

    fn error(&self, kind: DecodeErrorKind, message: String) -> DecodeError {
        DecodeError::at_byte(&self.location, 0, kind, message)
    }
}

/// From the reading thread.
enum Msg {
    /// The schema rows are written for (sent once, first).
    Start(SchemaRef),
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
    /// Data records so far.
    schema: Option<SchemaRef>,
}

impl SheetDecoder {
    fn new(settings: Settings, state: State) -> Self {
        Self {
            settings,
            state,
            rows: VecDeque::new(),
            lines: 0,
            schema: None,
        }
    }

    /// Moves an error of the decoder inside (whose lines are records) onto
    /// the sheet's rows.
    fn reposition(&self, mut e: DecodeError) -> DecodeError {
        if let Some(line) = e.position.line.or(e.position.record) {
            let oldest = self.lines + 1 - self.rows.len() as u64;
            let row = line
                .checked_sub(oldest)
                .and_then(|i| self.rows.get(usize::try_from(i).ok()?));
            if let Some(row) = row {
                e.message = format!("sheet row {row}: {}", e.message);
            }
            e.position = Position {
                byte_offset: 0,
                line: None,
                record: Some(line),
                column: e.position.column,
                part: e.position.part,
            };
        }
        e
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
            Ok(Msg::Start(schema)) => {
                let options = DecodeOptions {
                    schema: Some(schema.clone()),
                    ..self.settings.inner.clone()
                };
                *inner = Some(NdjsonFormat.decoder(&options)?);
                self.schema = Some(schema);
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

fn excel_datetime(dt: &ExcelDateTime) -> Cell {
    if dt.is_duration() {
        // A duration, in seconds.
        return Cell::Float(dt.as_f64() * 86_400.0);
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

fn from_ref(v: &DataRef<'_>) -> Cell {
    match v {
        DataRef::Int(i) => Cell::Int(*i),
        DataRef::Float(f) => number(*f),
        DataRef::String(s) | DataRef::DurationIso(s) => Cell::Text(s.clone()),
        DataRef::SharedString(s) => Cell::Text((*s).to_owned()),
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
        Data::String(s) | Data::DurationIso(s) => Cell::Text(s.clone()),
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

/// Writes rows as JSON lines and sends them on.
struct Writer<'a> {
    settings: &'a Settings,
    tx: &'a SyncSender<Msg>,
    names: Vec<String>,
    types: Vec<Option<DataType>>,
    text: Vec<u8>,
    rows: Vec<u32>,
    /// Rows before the header still to skip, and whether the header is read.
    to_skip: u64,
    header_done: bool,
    /// Rows held until the column types are known.
    sample: Vec<(u32, Vec<Cell>)>,
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
            names: Vec::new(),
            types: Vec::new(),
            text: Vec::new(),
            rows: Vec::new(),
            to_skip: settings.skip_rows,
            header_done: !settings.header,
            sample: Vec::new(),
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

    /// Counts `n` more cells against the budget.
    fn count(&mut self, n: u64) -> Result<(), Stop> {
        self.cells += n;
        if self.cells > self.settings.max_cells {
            return Err(self.fail(self.settings.error(
                DecodeErrorKind::TooLarge,
                format!(
                    "the sheet holds more than max_cells ({}) cells",
                    self.settings.max_cells
                ),
            )));
        }
        Ok(())
    }

    /// One sheet row (1-based number), its cells from the first column.
    fn row(&mut self, number: u32, cells: Vec<Cell>) -> Result<(), Stop> {
        if cells.iter().all(|c| matches!(c, Cell::Empty)) {
            return Ok(()); // blank rows count for nothing
        }
        if self.to_skip > 0 {
            self.to_skip -= 1;
            return Ok(());
        }
        if !self.header_done {
            self.header_done = true;
            let mut seen = std::collections::HashSet::new();
            for (i, c) in cells.iter().enumerate() {
                let base = match c.text().trim() {
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
        self.sample.push((number, cells));
        if self.sample.len() >= self.settings.infer_records {
            self.start()?;
        }
        Ok(())
    }

    /// Fixes the columns and their types, and writes the rows held.
    fn start(&mut self) -> Result<(), Stop> {
        self.started = true;
        let width = self.sample.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
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
                let fields: Vec<Field> = self
                    .names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let ty = column_type(self.sample.iter().filter_map(|(_, c)| c.get(i)));
                        Field::new(name, ty, true)
                    })
                    .collect();
                self.types = fields.iter().map(|f| Some(f.data_type().clone())).collect();
                Arc::new(Schema::new(fields))
            }
        };
        if self.tx.send(Msg::Start(schema)).is_err() {
            return Err(Stop);
        }
        for (number, cells) in std::mem::take(&mut self.sample) {
            self.write(number, &cells)?;
        }
        Ok(())
    }

    fn write(&mut self, number: u32, cells: &[Cell]) -> Result<(), Stop> {
        self.open_row();
        for (i, cell) in cells.iter().enumerate() {
            if !matches!(cell, Cell::Empty) {
                self.key(i);
                cell.write_json(self.types.get(i).and_then(Option::as_ref), &mut self.text);
            }
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
            DataRef::SharedString(s) => {
                self.key(i);
                write_string(s, &mut self.text);
            }
            DataRef::String(s) => {
                self.key(i);
                write_string(s, &mut self.text);
            }
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
        if self.text.len() >= LINES_PER_MESSAGE {
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
    if let Err(why) = crate::guard(|| read_sheet_unguarded(settings, input, tx)) {
        let _ = tx.send(Msg::Failed(settings.error(
            DecodeErrorKind::Syntax,
            format!(
                "{} is malformed: its reader stopped ({why})",
                settings.kind.what().trim_start_matches("an ")
            ),
        )));
    }
}

fn read_sheet_unguarded(settings: &Settings, input: Arc<dyn ReadAt>, tx: &SyncSender<Msg>) {
    let mut writer = Writer::new(settings, tx);
    let checked = match settings.kind {
        Kind::Xls => crate::cfb::check(&*input, settings.max_cells).map_err(|e| {
            let kind = if e.contains("max_cells") {
                DecodeErrorKind::TooLarge
            } else {
                DecodeErrorKind::Syntax
            };
            let message = if kind == DecodeErrorKind::TooLarge {
                e
            } else {
                format!("not a readable XLS workbook: {e}")
            };
            settings.error(kind, message)
        }),
        Kind::Xlsx | Kind::Ods => check_parts(settings, &input),
    };
    if let Err(e) = checked {
        let _ = writer.fail(e);
        return;
    }
    let cursor = AtCursor::new(input);
    let result = match settings.kind {
        Kind::Xlsx => read_xlsx(settings, cursor, &mut writer),
        Kind::Xls => match Xls::new(cursor) {
            Ok(book) => read_range(settings, book, &mut writer),
            Err(e) => Err(writer.fail(corrupt(settings, &e))),
        },
        Kind::Ods => match Ods::new(cursor) {
            Ok(book) => read_range(settings, book, &mut writer),
            Err(e) => Err(writer.fail(corrupt(settings, &e))),
        },
    };
    if result.is_ok() {
        let _ = writer.end();
    }
}

/// Inflates each part of a zipped workbook that will be loaded whole,
/// refusing one past [`MAX_PART`] before the reader holds it in memory.
fn check_parts(settings: &Settings, input: &Arc<dyn ReadAt>) -> Result<(), DecodeError> {
    let mut zip = zip::ZipArchive::new(AtCursor::new(Arc::clone(input)))
        .map_err(|e| corrupt(settings, &e))?;
    for i in 0..zip.len() {
        let mut part = zip.by_index(i).map_err(|e| corrupt(settings, &e))?;
        let name = part.name().map(|n| n.into_owned()).unwrap_or_default();
        if settings.kind == Kind::Xlsx && name.starts_with("xl/worksheets/") {
            continue; // streamed, and held to the cell budget
        }
        let inflated = if part.size() > MAX_PART {
            part.size()
        } else {
            std::io::copy(&mut (&mut part).take(MAX_PART + 1), &mut std::io::sink())
                .map_err(|e| corrupt(settings, &format!("part {name}: {e}")))?
        };
        if inflated > MAX_PART {
            return Err(settings.error(
                DecodeErrorKind::TooLarge,
                format!(
                    "part {name} of the workbook inflates to more than {} MiB (a zip bomb?)",
                    MAX_PART >> 20
                ),
            ));
        }
    }
    Ok(())
}

fn corrupt(settings: &Settings, e: &dyn std::fmt::Display) -> DecodeError {
    settings.error(
        DecodeErrorKind::Syntax,
        format!(
            "not a readable {}: {e}",
            settings.kind.what().trim_start_matches("an ")
        ),
    )
}

fn too_big(settings: &Settings, sheet: &str, rows: u64, cols: u64) -> DecodeError {
    settings.error(
        DecodeErrorKind::TooLarge,
        format!(
            "sheet '{sheet}' declares {rows} rows by {cols} columns, more than max_cells ({})",
            settings.max_cells
        ),
    )
}

fn read_xlsx<RS: Read + Seek>(
    settings: &Settings,
    cursor: RS,
    writer: &mut Writer<'_>,
) -> Result<(), Stop> {
    let mut book = Xlsx::new(cursor).map_err(|e| writer.fail(corrupt(settings, &e)))?;
    let sheet = pick_sheet(settings, &book.sheet_names()).map_err(|e| writer.fail(e))?;
    let mut cells = book
        .worksheet_cells_reader(&sheet)
        .map_err(|e| writer.fail(corrupt(settings, &e)))?;
    let dims = cells.dimensions();
    let rows = u64::from(dims.end.0.saturating_sub(dims.start.0)) + 1;
    let cols = u64::from(dims.end.1.saturating_sub(dims.start.1)) + 1;
    if rows.saturating_mul(cols) > settings.max_cells {
        return Err(writer.fail(too_big(settings, &sheet, rows, cols)));
    }
    let mut current: Option<u32> = None;
    let mut row: Vec<Cell> = Vec::new();
    // Once the columns are fixed, rows are written as their cells arrive.
    let mut streamed = false;
    loop {
        let next = cells.next_cell().map_err(|e| {
            let at = current.map_or(String::new(), |r| format!(" after row {}", r + 1));
            writer
                .fail(settings.error(DecodeErrorKind::Syntax, format!("sheet '{sheet}'{at}: {e}")))
        })?;
        let Some(cell) = next else { break };
        let (r, c) = cell.get_position();
        if current != Some(r) {
            if let Some(done) = current {
                if streamed {
                    writer.close_row(done + 1)?;
                } else {
                    writer.row(done + 1, std::mem::take(&mut row))?;
                }
            }
            current = Some(r);
            streamed = writer.streaming();
            if streamed {
                writer.open_row();
            }
        }
        writer.count(1)?;
        let c = c as usize;
        if c as u64 >= settings.max_cells {
            return Err(writer.fail(too_big(settings, &sheet, 1, c as u64 + 1)));
        }
        if streamed {
            writer.put(c, cell.get_value());
            continue;
        }
        if c >= row.len() {
            row.resize(c + 1, Cell::Empty);
        }
        row[c] = from_ref(cell.get_value());
    }
    if let Some(done) = current {
        if streamed {
            writer.close_row(done + 1)?;
        } else {
            writer.row(done + 1, row)?;
        }
    }
    Ok(())
}

fn read_range<RS: Read + Seek, R: Reader<RS>>(
    settings: &Settings,
    mut book: R,
    writer: &mut Writer<'_>,
) -> Result<(), Stop>
where
    R::Error: std::fmt::Display,
{
    let sheet = pick_sheet(settings, &book.sheet_names()).map_err(|e| writer.fail(e))?;
    let range = book
        .worksheet_range(&sheet)
        .map_err(|e| writer.fail(corrupt(settings, &e)))?;
    let (rows, cols) = range.get_size();
    if (rows as u64).saturating_mul(cols as u64) > settings.max_cells {
        return Err(writer.fail(too_big(settings, &sheet, rows as u64, cols as u64)));
    }
    let Some((first_row, first_col)) = range.start() else {
        return Ok(());
    };
    for (i, cells) in range.rows().enumerate() {
        let mut row = vec![Cell::Empty; first_col as usize];
        row.extend(cells.iter().map(from_data));
        while matches!(row.last(), Some(Cell::Empty)) {
            row.pop();
        }
        let number = first_row.saturating_add(u32::try_from(i).unwrap_or(u32::MAX)) + 1;
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
/// ODS media type ODS, a zip naming `[Content_Types].xml` or `xl/` XLSX.
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
        Kind::Xlsx => xlsx,
    };
    if found { 100 } else { 0 }
}
