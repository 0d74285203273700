//! Apache Parquet, read row group by row group through random access to the
//! file: the footer first, then only the column chunks of the projected
//! columns. Sources that offer random access (a local file) are read in
//! place; anything else (a stream, a compressed file) is spooled to a
//! temporary file, size-capped, and read the same way.
//!
//! What the footer claims is checked before it is acted on: its row count
//! against its row groups', each column chunk against the file, each page's
//! declared size against `max_page` before the page is decompressed, and the
//! rows each row group yields against its count. Errors name the part of
//! the file (row group and column) they lie in.

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::RecordBatchReader;
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::basic::Type as PhysicalType;
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::source::ReadAt;
use rota_core::{DecodeError, DecodeErrorKind};

use crate::options::FormatOptions;
use crate::spool::{DEFAULT_MAX_SPOOL, Spool};
use crate::thrift;

/// A page that decompresses to more than this is refused unless `max_page`
/// says more.
const DEFAULT_MAX_PAGE: u64 = 256 << 20;

/// Rows of one decoded batch are cut so that, by the footer's sizes, the
/// batch holds about this much.
const BATCH_BYTES: u64 = 64 << 20;

/// Bytes read ahead for a page header; more are read when it is longer.
const HEADER_PEEK: usize = 512;

/// A page header longer than this (statistics included) is refused.
const MAX_HEADER: usize = 16 << 20;

/// Apache Parquet.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParquetFormat;

/// What the options ask for.
#[derive(Clone, Debug)]
struct Settings {
    location: String,
    /// Top-level columns to read, in file order; all when `None`.
    columns: Option<Vec<String>>,
    batch_rows: usize,
    max_spool: u64,
    max_page: u64,
}

impl ParquetFormat {
    fn settings(options: &DecodeOptions) -> Result<Settings, DecodeError> {
        let mut opts = FormatOptions::new(options, &["columns", "max_spool", "max_page"]);
        let columns = opts.string("columns").map(|list| {
            list.split(',')
                .map(|c| c.trim().to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        });
        let max_spool = opts.u64("max_spool", DEFAULT_MAX_SPOOL)?;
        let max_page = opts.u64("max_page", DEFAULT_MAX_PAGE)?;
        opts.no_schema(
            "Parquet files carry their own schema (choose columns with --format-opt columns=a,b)",
        )?;
        opts.finish()?;
        Ok(Settings {
            location: options.location.clone(),
            columns,
            batch_rows: options.batch_records.max(1),
            max_spool,
            max_page,
        })
    }
}

impl Format for ParquetFormat {
    fn name(&self) -> &'static str {
        "parquet"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["parquet", "pq"]
    }

    fn describe(&self) -> &'static str {
        "Apache Parquet, row group by row group, every codec; options: columns=a,b (read \
         only these), max_page=BYTES (largest page once decompressed, default 256 MiB), \
         max_spool=BYTES (for sources without random access, default 64 GiB)"
    }

    fn prefers_random_access(&self) -> bool {
        true
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let settings = Self::settings(options)?;
        let spool = Spool::new(
            &options.location,
            settings.max_spool,
            "a Parquet file that cannot be read in place",
        )?;
        Ok(Box::new(ParquetDecoder {
            settings,
            state: State::Spool(spool),
        }))
    }

    fn decoder_at(
        &self,
        options: &DecodeOptions,
        input: Arc<dyn ReadAt>,
    ) -> Option<Result<Box<dyn Decoder>, DecodeError>> {
        Some(Self::settings(options).map(|settings| {
            Box::new(ParquetDecoder {
                settings,
                state: State::Ready(input),
            }) as Box<dyn Decoder>
        }))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        if head.bytes.starts_with(b"PAR1") {
            100
        } else {
            0
        }
    }
}

enum State {
    /// Pushed bytes go to a temporary file.
    Spool(Spool),
    /// Random access, not yet opened.
    Ready(Arc<dyn ReadAt>),
    Reading(Box<Reading>),
    Done,
}

/// An open file, read one row group at a time.
struct Reading {
    /// The input, for messages.
    location: String,
    at: At,
    meta: ArrowReaderMetadata,
    mask: ProjectionMask,
    /// Leaf columns read, in file order.
    leaves: Vec<usize>,
    schema: SchemaRef,
    /// Rows in the file, from its footer, checked against its row groups.
    total: u64,
    /// The row group being read (0-based) and its reader.
    group: usize,
    reader: Option<Box<ParquetRecordBatchReader>>,
    /// Rows the current row group has yielded.
    group_rows: u64,
}

struct ParquetDecoder {
    settings: Settings,
    state: State,
}

/// Where a problem lies, for messages: a row group (1-based) and a column.
fn part(group: usize, column: Option<&str>) -> String {
    match column {
        Some(c) => format!("row group {}, column '{c}'", group + 1),
        None => format!("row group {}", group + 1),
    }
}

/// The parquet crate's message without its prefixes, first letter lowercase.
fn clean(e: &dyn std::fmt::Display) -> String {
    let mut text = e.to_string();
    loop {
        let before = text.len();
        for prefix in [
            "Parquet argument error: ",
            "Parquet error: ",
            "External: ",
            "EOF: ",
            "External error: ",
            "Arrow: ",
        ] {
            if let Some(rest) = text.strip_prefix(prefix) {
                text = rest.to_owned();
            }
        }
        if text.len() == before {
            break;
        }
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// A problem found in the data of a row group, in the user's terms.
fn data_problem(message: &str) -> String {
    let lower = message.to_lowercase();
    if lower.contains("crc checksum mismatch") {
        "a page fails its checksum: the data is corrupt".to_owned()
    } else if lower.contains("invalid page header")
        || lower.contains("required field")
        || lower.contains("unexpected struct field type")
        || lower.contains("unexpected type")
    {
        format!("a page header is corrupt ({message})")
    } else {
        format!("the data is corrupt ({message})")
    }
}

impl ParquetDecoder {
    fn error(&self, kind: DecodeErrorKind, at: u64, message: String) -> DecodeError {
        DecodeError::at_byte(&self.settings.location, at, kind, message)
    }

    /// Tells apart what is not Parquet, cut short or encrypted by the last
    /// bytes, before the footer is read.
    fn check_tail(&self, input: &dyn ReadAt) -> Result<u64, DecodeError> {
        let size = input.size();
        let mut head = [0u8; 4];
        let mut tail = [0u8; 8];
        let read = size >= 12
            && input.read_exact_at(0, &mut head).is_ok()
            && input.read_exact_at(size - 8, &mut tail).is_ok();
        if !read || (&head != b"PAR1" && &head != b"PARE") {
            return Err(self.error(
                DecodeErrorKind::Syntax,
                0,
                "not a Parquet file: it does not start with PAR1".into(),
            ));
        }
        match &tail[4..] {
            b"PAR1" => Ok(u64::from(u32::from_le_bytes([
                tail[0], tail[1], tail[2], tail[3],
            ]))),
            b"PARE" => Err(self.error(
                DecodeErrorKind::Syntax,
                size - 4,
                "encrypted Parquet files are not supported (the footer is encrypted)".into(),
            )),
            _ => Err(self.error(
                DecodeErrorKind::Truncated,
                size,
                "the Parquet file ends without its footer (no PAR1 at the end): is the file \
                 complete?"
                    .into(),
            )),
        }
    }

    /// Reads the footer, checks it, and sets up reading the wanted columns.
    fn open(&self, input: Arc<dyn ReadAt>) -> Result<State, DecodeError> {
        let size = input.size();
        let footer_len = self.check_tail(&*input)?;
        let footer_at = size - 8;
        let footer = |m: String| {
            DecodeError::in_part(
                &self.settings.location,
                "footer",
                footer_at,
                DecodeErrorKind::Syntax,
                m,
            )
        };
        if footer_len + 12 > size {
            return Err(footer(format!(
                "the footer claims {footer_len} bytes but the file holds {size}: is the file \
                 complete?"
            )));
        }
        let at = At::new(input, self.settings.max_page);
        let meta = crate::guard(|| ArrowReaderMetadata::load(&at, ArrowReaderOptions::new()))
            .map_err(|why| footer(format!("the footer is corrupt ({why})")))?
            .map_err(|e| footer(footer_problem(&clean(&e))))?;
        let meta = int96_as_micros(meta).map_err(|e| footer(footer_problem(&clean(&e))))?;

        let descr = meta.parquet_schema();
        let fields = meta.schema().fields();
        let roots: Vec<usize> = match &self.settings.columns {
            None => (0..fields.len()).collect(),
            Some(wanted) => {
                let mut indices = Vec::with_capacity(wanted.len());
                for name in wanted {
                    let i = fields
                        .iter()
                        .position(|f| f.name() == name)
                        .ok_or_else(|| {
                            let have: Vec<&str> =
                                fields.iter().map(|f| f.name().as_str()).collect();
                            self.error(
                                DecodeErrorKind::Options,
                                0,
                                format!(
                                    "option columns: no column '{name}' (the file has: {})",
                                    have.join(", ")
                                ),
                            )
                        })?;
                    indices.push(i);
                }
                indices
            }
        };
        let mut roots = roots;
        roots.sort_unstable();
        roots.dedup();
        let mask = ProjectionMask::roots(descr, roots.iter().copied());
        let leaves: Vec<usize> = (0..descr.num_columns())
            .filter(|&leaf| mask.leaf_included(leaf))
            .collect();
        let total = self.check_counts(&meta, size)?;
        at.watch(chunks(&meta, &leaves));

        let mut reading = Reading {
            location: self.settings.location.clone(),
            at,
            meta,
            mask,
            leaves,
            schema: Arc::new(Schema::empty()),
            total,
            group: 0,
            reader: None,
            group_rows: 0,
        };
        // The schema of the batches, from a reader of no row group.
        let none = ParquetRecordBatchReaderBuilder::new_with_metadata(
            reading.at.clone(),
            reading.meta.clone(),
        )
        .with_projection(reading.mask.clone())
        .with_row_groups(Vec::new());
        reading.schema = crate::guard(|| none.build())
            .map_err(|why| footer(format!("the footer is corrupt ({why})")))?
            .map_err(|e| footer(footer_problem(&clean(&e))))?
            .schema();
        Ok(State::Reading(Box::new(reading)))
    }

    /// Checks the footer's counts against each other and each column chunk
    /// against the file; returns the file's row count.
    fn check_counts(&self, meta: &ArrowReaderMetadata, size: u64) -> Result<u64, DecodeError> {
        let metadata = meta.metadata();
        let descr = meta.parquet_schema();
        let claimed = metadata.file_metadata().num_rows();
        let mut sum: i64 = 0;
        for (g, group) in metadata.row_groups().iter().enumerate() {
            let rows = group.num_rows();
            if rows < 0 {
                return Err(DecodeError::in_part(
                    &self.settings.location,
                    part(g, None),
                    0,
                    DecodeErrorKind::Syntax,
                    format!("the footer gives the row group {rows} rows"),
                ));
            }
            sum = sum.saturating_add(rows);
            for (c, column) in group.columns().iter().enumerate() {
                let name = column.column_path().string();
                let start = column
                    .dictionary_page_offset()
                    .unwrap_or_else(|| column.data_page_offset());
                let len = column.compressed_size();
                let inside = u64::try_from(start)
                    .ok()
                    .zip(u64::try_from(len).ok())
                    .and_then(|(s, l)| s.checked_add(l))
                    .is_some_and(|end| end <= size)
                    && column.data_page_offset() >= 0;
                // A refusal of this column chunk, at its start.
                let refuse = |message: String| {
                    DecodeError::in_part(
                        &self.settings.location,
                        part(g, Some(&name)),
                        u64::try_from(start).unwrap_or(0),
                        DecodeErrorKind::Syntax,
                        message,
                    )
                };
                if !inside {
                    return Err(refuse(format!(
                        "the footer places the column at bytes {start} to {} of a {size}-byte \
                         file: the footer is corrupt or the file incomplete",
                        start.saturating_add(len)
                    )));
                }
                // A column that does not repeat holds one value (or null)
                // per row.
                let flat = c < descr.num_columns() && descr.column(c).max_rep_level() == 0;
                let values = column.num_values();
                if (flat && values != rows) || (!flat && values < rows) {
                    return Err(refuse(format!(
                        "the footer says the row group holds {rows} rows but the column \
                         {values} values"
                    )));
                }
            }
        }
        if claimed != sum {
            let groups: Vec<String> = metadata
                .row_groups()
                .iter()
                .enumerate()
                .take(5)
                .map(|(g, group)| format!("row group {}: {}", g + 1, group.num_rows()))
                .collect();
            let more = if metadata.num_row_groups() > 5 {
                ", …"
            } else {
                ""
            };
            return Err(DecodeError::in_part(
                &self.settings.location,
                "footer",
                size - 8,
                DecodeErrorKind::Syntax,
                format!(
                    "the footer says the file holds {claimed} rows but its row groups hold \
                     {sum} ({}{more}): the row counts disagree, so the file is refused",
                    groups.join(", ")
                ),
            ));
        }
        Ok(u64::try_from(sum).unwrap_or(0))
    }
}

/// A footer the parquet crate refused, in the user's terms.
fn footer_problem(message: &str) -> String {
    if message.contains("encrypt") {
        "encrypted Parquet files are not supported".to_owned()
    } else if let Some(i) = message.to_lowercase().find("unexpected convertedtype") {
        format!(
            "the footer annotates a column with a converted type this reader does not know \
             (number {}), so the file cannot be read",
            message
                .get(i + "unexpected convertedtype".len()..)
                .unwrap_or_default()
                .trim()
        )
    } else if message.contains("too small") {
        format!(
            "the footer claims more bytes than the file holds ({message}): is the file complete?"
        )
    } else {
        format!("the footer is corrupt ({message})")
    }
}

/// Reads INT96 timestamps as microseconds, which hold every date an INT96
/// can (nanoseconds wrap past 2262).
fn int96_as_micros(meta: ArrowReaderMetadata) -> Result<ArrowReaderMetadata, ParquetError> {
    let descr = meta.parquet_schema();
    let int96: Vec<usize> = (0..descr.num_columns())
        .filter(|&i| descr.column(i).physical_type() == PhysicalType::INT96)
        .collect();
    if int96.is_empty() {
        return Ok(meta);
    }
    let mut fields: Vec<FieldRef> = meta.schema().fields().iter().cloned().collect();
    let kv = meta.metadata().file_metadata().key_value_metadata();
    for leaf in int96 {
        let root = descr.get_column_root_idx(leaf);
        // The schema of that one leaf is the path from its root to it.
        let path = parquet::arrow::parquet_to_arrow_schema_by_columns(
            descr,
            ProjectionMask::leaves(descr, [leaf]),
            kv,
        )?;
        if let (Some(field), Some(path)) = (fields.get(root), path.fields().first()) {
            fields[root] = Arc::new(to_micros(field, path));
        }
    }
    let schema = Schema::new_with_metadata(fields, meta.schema().metadata().clone());
    ArrowReaderMetadata::try_new(
        Arc::clone(meta.metadata()),
        ArrowReaderOptions::new().with_schema(Arc::new(schema)),
    )
}

/// `field` with the nanosecond timestamp at the end of `path` (a field
/// of the same name holding only the way to it) in microseconds.
fn to_micros(field: &Field, path: &Field) -> Field {
    let inner = |f: &FieldRef, p: &FieldRef| Arc::new(to_micros(f, p));
    let data_type = match (field.data_type(), path.data_type()) {
        (DataType::Timestamp(TimeUnit::Nanosecond, tz), DataType::Timestamp(..)) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        (DataType::Struct(fs), DataType::Struct(ps)) if ps.len() == 1 => DataType::Struct(
            fs.iter()
                .map(|f| {
                    if f.name() == ps[0].name() {
                        inner(f, &ps[0])
                    } else {
                        Arc::clone(f)
                    }
                })
                .collect(),
        ),
        (DataType::List(f), DataType::List(p)) => DataType::List(inner(f, p)),
        (DataType::LargeList(f), DataType::LargeList(p)) => DataType::LargeList(inner(f, p)),
        (DataType::FixedSizeList(f, n), DataType::FixedSizeList(p, _)) => {
            DataType::FixedSizeList(inner(f, p), *n)
        }
        (DataType::Map(f, sorted), DataType::Map(p, _)) => DataType::Map(inner(f, p), *sorted),
        (other, _) => other.clone(),
    };
    field.clone().with_data_type(data_type)
}

/// The byte ranges of the column chunks read, for the page checks.
fn chunks(meta: &ArrowReaderMetadata, leaves: &[usize]) -> Vec<Chunk> {
    let mut out = Vec::new();
    for (g, group) in meta.metadata().row_groups().iter().enumerate() {
        for &leaf in leaves {
            let Some(column) = group.columns().get(leaf) else {
                continue;
            };
            let (start, len) = (
                column
                    .dictionary_page_offset()
                    .unwrap_or_else(|| column.data_page_offset()),
                column.compressed_size(),
            );
            if let (Ok(start), Ok(len)) = (u64::try_from(start), u64::try_from(len)) {
                out.push(Chunk {
                    start,
                    end: start.saturating_add(len),
                    group: g,
                    column: column.column_path().string(),
                    declared: u64::try_from(column.uncompressed_size()).unwrap_or(0),
                    declared_values: u64::try_from(column.num_values()).unwrap_or(0),
                    seen: Mutex::new(None),
                });
            }
        }
    }
    out.sort_by_key(|c| c.start);
    out
}

impl Reading {
    /// Rows in row group `g`, from the footer.
    fn group_rows(&self, g: usize) -> u64 {
        u64::try_from(self.meta.metadata().row_group(g).num_rows()).unwrap_or(0)
    }

    /// Rows per batch for row group `g`: what the caller asks, fewer when
    /// the footer's sizes say rows are large, so that a batch holds about
    /// [`BATCH_BYTES`].
    fn batch_rows(&self, g: usize, wanted: usize) -> usize {
        let group = self.meta.metadata().row_group(g);
        let rows = u64::try_from(group.num_rows()).unwrap_or(0).max(1);
        let bytes: u64 = self
            .leaves
            .iter()
            .filter_map(|&leaf| group.columns().get(leaf))
            .map(|c| {
                let size = u64::try_from(c.uncompressed_size()).unwrap_or(0);
                let values = u64::try_from(c.num_values()).unwrap_or(0);
                size.max(values.saturating_mul(8))
            })
            .fold(0u64, u64::saturating_add);
        batch_for(wanted, bytes.div_ceil(rows))
    }

    /// A reader of row group `g`, for the projected columns or the leaves given.
    fn reader(
        &self,
        g: usize,
        mask: ProjectionMask,
        batch: usize,
    ) -> Result<ParquetRecordBatchReader, String> {
        let builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(self.at.clone(), self.meta.clone())
                .with_projection(mask)
                .with_row_groups(vec![g])
                .with_batch_size(batch);
        crate::guard(|| builder.build())?.map_err(|e| clean(&e))
    }

    /// After a failure in row group `g`: the first column that fails when
    /// read alone, with its error.
    fn find_column(&self, g: usize) -> Option<(String, String)> {
        let descr = self.meta.parquet_schema();
        for &leaf in &self.leaves {
            let name = descr.column(leaf).path().string();
            let mask = ProjectionMask::leaves(descr, [leaf]);
            let outcome = self.reader(g, mask, 1024).and_then(|mut reader| {
                loop {
                    match crate::guard(|| reader.next()) {
                        Err(why) => return Err(why),
                        Ok(Some(Err(e))) => return Err(clean(&e)),
                        Ok(Some(Ok(_))) => {}
                        Ok(None) => return Ok(()),
                    }
                }
            });
            if let Err(why) = outcome {
                return Some((name, why));
            }
        }
        None
    }
}

/// Rows per batch when rows hold about `row_bytes` each.
fn batch_for(wanted: usize, row_bytes: u64) -> usize {
    let fits = BATCH_BYTES / row_bytes.max(1);
    usize::try_from(fits)
        .unwrap_or(usize::MAX)
        .clamp(1, wanted.max(1))
}

impl Reading {
    fn in_part(
        &self,
        part: String,
        at: u64,
        kind: DecodeErrorKind,
        message: String,
    ) -> DecodeError {
        DecodeError::in_part(&self.location, part, at, kind, message)
    }

    /// Where row group `g`'s first column chunk starts in the file.
    fn group_start(&self, g: usize) -> u64 {
        self.meta
            .metadata()
            .row_group(g)
            .columns()
            .first()
            .map_or(0, |c| u64::try_from(c.data_page_offset()).unwrap_or(0))
    }

    /// Turns a failure while reading row group `g` into an error that names
    /// the column and says what is wrong.
    fn read_error(&self, g: usize, why: &str) -> DecodeError {
        let start = self.group_start(g);
        if let Some(refusal) = self.at.refusal() {
            return self.in_part(
                part(refusal.group, Some(&refusal.column)),
                refusal.at,
                refusal.kind,
                refusal.message,
            );
        }
        if self.at.encrypted_columns() {
            return self.in_part(
                part(g, None),
                start,
                DecodeErrorKind::Syntax,
                "encrypted Parquet files are not supported (its columns are encrypted)".into(),
            );
        }
        let (column, why) = match self.find_column(g) {
            Some((column, why)) => (Some(column), why),
            None => (None, why.to_owned()),
        };
        if let Some(refusal) = self.at.refusal() {
            return self.in_part(
                part(refusal.group, Some(&refusal.column)),
                refusal.at,
                refusal.kind,
                refusal.message,
            );
        }
        let at = column
            .as_deref()
            .and_then(|name| {
                self.meta
                    .metadata()
                    .row_group(g)
                    .columns()
                    .iter()
                    .find(|c| c.column_path().string() == name)
            })
            .map_or(start, |c| {
                u64::try_from(
                    c.dictionary_page_offset()
                        .unwrap_or_else(|| c.data_page_offset()),
                )
                .unwrap_or(0)
            });
        self.in_part(
            part(g, column.as_deref()),
            at,
            DecodeErrorKind::Syntax,
            data_problem(&why),
        )
    }

    /// The next batch of the file, of at most `wanted` rows, or `None` at
    /// its end.
    fn next_batch(
        &mut self,
        wanted: usize,
    ) -> Result<Option<arrow_array::RecordBatch>, DecodeError> {
        loop {
            let g = self.group;
            if g >= self.meta.metadata().num_row_groups() {
                return Ok(None);
            }
            if self.reader.is_none() {
                let batch = self.batch_rows(g, wanted);
                match self.reader(g, self.mask.clone(), batch) {
                    Ok(r) => self.reader = Some(Box::new(r)),
                    Err(why) => {
                        return Err(self.read_error(g, &why));
                    }
                }
                self.group_rows = 0;
            }
            let expected = self.group_rows(g);
            let next = match self.reader.as_mut() {
                Some(reader) => crate::guard(|| reader.next()).unwrap_or_else(|why| {
                    Some(Err(arrow_schema::ArrowError::ExternalError(why.into())))
                }),
                None => None,
            };
            match next {
                Some(Ok(batch)) => {
                    self.group_rows += batch.num_rows() as u64;
                    if self.group_rows > expected {
                        return Err(self.count_error(g, expected, "more"));
                    }
                    return Ok(Some(batch));
                }
                Some(Err(e)) => {
                    let why = clean(&e);
                    return Err(self.read_error(g, &why));
                }
                None => {
                    if self.group_rows != expected {
                        return Err(self.count_error(g, expected, "fewer"));
                    }
                    self.reader = None;
                    self.group += 1;
                }
            }
        }
    }

    fn count_error(&self, g: usize, expected: u64, which: &str) -> DecodeError {
        let start = self.group_start(g);
        let held = if which == "more" {
            format!("more than {expected}")
        } else {
            self.group_rows.to_string()
        };
        self.in_part(
            part(g, None),
            start,
            DecodeErrorKind::Syntax,
            format!(
                "the footer says the row group holds {expected} rows but its data holds {held}"
            ),
        )
    }
}

impl Decoder for ParquetDecoder {
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
        self.state = self.open(input)?;
        self.drain(out).map(|_| ())
    }

    fn drain(&mut self, out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        let State::Reading(reading) = &mut self.state else {
            return Ok(false);
        };
        match reading.next_batch(self.settings.batch_rows) {
            Ok(Some(batch)) => {
                out.push(Decoded::Batch(batch));
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                self.state = State::Done;
                Err(e)
            }
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        match &self.state {
            State::Reading(r) => Some(r.schema.clone()),
            _ => None,
        }
    }

    fn total_rows(&self) -> Option<u64> {
        match &self.state {
            State::Reading(r) => Some(r.total),
            _ => None,
        }
    }
}

/// A column chunk read, for the page checks.
#[derive(Debug)]
struct Chunk {
    start: u64,
    end: u64,
    group: usize,
    column: String,
    /// Bytes its pages hold once decompressed, headers included, and the
    /// values they hold, by the footer: what the batch sizes are estimated
    /// from, so the pages may not hold more.
    declared: u64,
    declared_values: u64,
    /// The offset of the last page header read, and the decompressed bytes
    /// and the values of the pages up to it, as read.
    seen: Mutex<Option<(u64, u64, u64)>>,
}

impl Chunk {
    /// Counts the page at `start` of `size` bytes decompressed and
    /// `values` values, unless it was counted already; returns the bytes
    /// and the values of the pages so far.
    fn count(&self, start: u64, size: u64, values: u64) -> Option<(u64, u64)> {
        let mut seen = self.seen.lock().ok()?;
        if start == self.start {
            *seen = None; // read again from the start
        }
        match *seen {
            Some((last, ..)) if start <= last => None,
            other => {
                let (bytes, count) = other.map_or((0, 0), |(_, b, v)| (b, v));
                let sums = (bytes.saturating_add(size), count.saturating_add(values));
                *seen = Some((start, sums.0, sums.1));
                Some(sums)
            }
        }
    }
}

/// Why reading stopped, found by [`At`] before the parquet crate acted.
#[derive(Clone, Debug)]
struct Refusal {
    group: usize,
    column: String,
    at: u64,
    kind: DecodeErrorKind,
    message: String,
}

/// What the page checks share between a reader and its clones.
#[derive(Debug)]
struct Watch {
    max_page: u64,
    chunks: OnceLock<Vec<Chunk>>,
    refusal: Mutex<Option<Refusal>>,
}

/// Random access as parquet's [`ChunkReader`], which reads each page header
/// itself first: a page that would decompress past `max_page` is refused
/// before the parquet crate allocates for it.
#[derive(Clone)]
struct At {
    input: Arc<dyn ReadAt>,
    watch: Arc<Watch>,
}

impl At {
    fn new(input: Arc<dyn ReadAt>, max_page: u64) -> Self {
        Self {
            input,
            watch: Arc::new(Watch {
                max_page,
                chunks: OnceLock::new(),
                refusal: Mutex::new(None),
            }),
        }
    }

    /// Checks the pages of these column chunks from now on.
    fn watch(&self, chunks: Vec<Chunk>) {
        let _ = self.watch.chunks.set(chunks);
    }

    fn refusal(&self) -> Option<Refusal> {
        self.watch.refusal.lock().ok().and_then(|r| r.clone())
    }

    fn refuse(&self, refusal: Refusal) -> ParquetError {
        let message = refusal.message.clone();
        if let Ok(mut slot) = self.watch.refusal.lock() {
            slot.get_or_insert(refusal);
        }
        ParquetError::General(message)
    }

    /// Whether the footer says the file's columns are encrypted.
    fn encrypted_columns(&self) -> bool {
        let size = self.input.size();
        let mut tail = [0u8; 8];
        if size < 12 || self.input.read_exact_at(size - 8, &mut tail).is_err() {
            return false;
        }
        let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        let Some(start) = (size - 8).checked_sub(len) else {
            return false;
        };
        let mut footer = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.input.read_exact_at(start, &mut footer).is_ok()
            && thrift::footer_declares_encryption(&footer) == Some(true)
    }

    /// The bytes from `start` to the end of `chunk` (at most `n`).
    fn peek(&self, start: u64, end: u64, n: usize) -> std::io::Result<Vec<u8>> {
        let left = end.saturating_sub(start);
        let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut buf = vec![0u8; n];
        self.input.read_exact_at(start, &mut buf)?;
        Ok(buf)
    }

    /// Reads and checks the page header at `start`, inside `chunk`; returns
    /// the bytes read ahead.
    fn check_page(&self, start: u64, chunk: &Chunk) -> parquet::errors::Result<Vec<u8>> {
        let mut want = HEADER_PEEK;
        loop {
            let buf = self
                .peek(start, chunk.end, want)
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            match thrift::page_header(&buf) {
                Ok((header, _)) => {
                    let size = u64::try_from(header.uncompressed).unwrap_or(0);
                    if header.kind != thrift::INDEX_PAGE && size > self.watch.max_page {
                        return Err(self.refuse(Refusal {
                            group: chunk.group,
                            column: chunk.column.clone(),
                            at: start,
                            kind: DecodeErrorKind::TooLarge,
                            message: format!(
                                "a page would decompress to {size} bytes, more than max_page \
                                 ({} bytes); raise it with --format-opt max_page=BYTES if the \
                                 file is trusted",
                                self.watch.max_page
                            ),
                        }));
                    }
                    let values = u64::try_from(header.values).unwrap_or(0);
                    let over = match chunk.count(start, size, values) {
                        Some((bytes, _)) if bytes > chunk.declared => Some(format!(
                            "its pages hold at least {bytes} bytes once decompressed, more than \
                             the {} the footer gives the column: the footer is corrupt",
                            chunk.declared
                        )),
                        Some((_, values)) if values > chunk.declared_values => Some(format!(
                            "its pages hold at least {values} values, more than the {} the \
                             footer gives the column: the footer is corrupt",
                            chunk.declared_values
                        )),
                        _ => None,
                    };
                    if let Some(message) = over {
                        return Err(self.refuse(Refusal {
                            group: chunk.group,
                            column: chunk.column.clone(),
                            at: start,
                            kind: DecodeErrorKind::Syntax,
                            message,
                        }));
                    }
                    return Ok(buf);
                }
                // Cut short by the end of the chunk: the parquet crate says so.
                Err(thrift::Short::More) if buf.len() < want => return Ok(buf),
                Err(thrift::Short::More) if want < MAX_HEADER => want *= 8,
                Err(thrift::Short::More) => {
                    return Err(self.refuse(Refusal {
                        group: chunk.group,
                        column: chunk.column.clone(),
                        at: start,
                        kind: DecodeErrorKind::TooLarge,
                        message: format!(
                            "a page header is longer than {} MiB: the file is corrupt",
                            MAX_HEADER >> 20
                        ),
                    }));
                }
                // Not a header this reader understands: the parquet crate
                // refuses it, before it allocates anything by it.
                Err(thrift::Short::Invalid) => return Ok(buf),
            }
        }
    }
}

impl Length for At {
    fn len(&self) -> u64 {
        self.input.size()
    }
}

impl ChunkReader for At {
    type T = Ahead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Ahead> {
        let chunk = self.watch.chunks.get().and_then(|chunks| {
            let i = chunks.partition_point(|c| c.start <= start);
            chunks[..i].last().filter(|c| start < c.end)
        });
        let ahead = match chunk {
            Some(chunk) => self.check_page(start, chunk)?,
            None => Vec::new(),
        };
        Ok(Ahead {
            input: Arc::clone(&self.input),
            ahead: Bytes::from(ahead),
            at: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let inside = start
            .checked_add(length as u64)
            .is_some_and(|end| end <= self.input.size());
        if !inside {
            return Err(ParquetError::EOF(format!(
                "{length} bytes at byte {start} lie past the end of the file"
            )));
        }
        let mut buf = vec![0; length];
        self.input
            .read_exact_at(start, &mut buf)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        Ok(Bytes::from(buf))
    }
}

/// A reader at a position of random access that serves the bytes already
/// read ahead (a page header) before reading on.
pub(crate) struct Ahead {
    input: Arc<dyn ReadAt>,
    ahead: Bytes,
    /// Position of the next byte of the input.
    at: u64,
}

impl Read for Ahead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.ahead.is_empty() {
            let n = buf.len().min(self.ahead.len());
            buf[..n].copy_from_slice(&self.ahead[..n]);
            self.ahead = self.ahead.slice(n..);
            self.at += n as u64;
            return Ok(n);
        }
        let left = self.input.size().saturating_sub(self.at);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        self.input.read_exact_at(self.at, &mut buf[..n])?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (Box<dyn Decoder>, Result<usize, DecodeError>) {
        let mut d = ParquetFormat
            .decoder(&DecodeOptions::default())
            .expect("decoder");
        let mut out = Vec::new();
        let result = d.push(bytes, &mut out).and_then(|()| d.finish(&mut out));
        let result = result.and_then(|()| {
            while d.drain(&mut out)? {}
            Ok(out.len())
        });
        (d, result)
    }

    #[test]
    fn the_row_count_is_given_only_once_the_footer_agrees_with_itself() {
        let (d, result) = decode(include_bytes!("../../fixtures/parquet/int96.parquet"));
        assert!(result.is_ok());
        assert_eq!(d.total_rows(), Some(5));
        let bad = include_bytes!("../../fixtures/parquet/invalid/footer_rows.parquet");
        let (d, result) = decode(bad);
        let e = result.expect_err("refused");
        assert!(
            e.message.contains("0 rows but its row groups hold 6"),
            "{e}"
        );
        assert_eq!(d.total_rows(), None);
    }

    #[test]
    fn batches_shrink_for_large_rows() {
        assert_eq!(batch_for(8192, 100), 8192);
        assert_eq!(batch_for(8192, 1 << 20), 64);
        assert_eq!(batch_for(8192, 1 << 40), 1);
        assert_eq!(batch_for(3, 0), 3);
    }

    #[test]
    fn messages_lose_the_crate_prefixes() {
        let e = ParquetError::General("Page CRC checksum mismatch".into());
        assert_eq!(clean(&e), "page CRC checksum mismatch");
        assert_eq!(
            data_problem(&clean(&e)),
            "a page fails its checksum: the data is corrupt"
        );
        let e = ParquetError::EOF("Invalid page header".into());
        assert_eq!(clean(&e), "invalid page header");
    }
}
