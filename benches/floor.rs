//! Decode-only floors the ingest benchmark compares against: the best reader
//! for a format doing its work with nothing after it.
//!
//! ```text
//! rota-bench-floor csv FILE.csv            arrow-csv decoding every record
//! rota-bench-floor parquet FILE.parquet    the parquet crate decoding every row group
//! rota-bench-floor gunzip FILE.gz          gzip decompression alone (flate2, all members)
//! rota-bench-floor xlsx FILE.xlsx          calamine streaming every cell of the first sheet
//! rota-bench-floor ods FILE.ods            calamine loading the first sheet (as Rota does)
//! rota-bench-floor xls FILE.xls            calamine loading the first sheet (as Rota does)
//! rota-bench-floor avro FILE.avro          arrow-avro decoding every record of every block
//! rota-bench-floor arrow FILE.arrow        arrow-ipc's file reader reading every batch
//! rota-bench-floor arrows FILE.arrows      arrow-ipc's stream reader reading every batch
//! rota-bench-floor msgpack FILE.msgpack    rmpv reading the stream value by value
//! rota-bench-floor ndjson FILE.ndjson      arrow-json decoding every line
//! rota-bench-floor json FILE.json          arrow-json decoding each element of the top-level array
//! rota-bench-floor xml FILE.xml [/a/b]     quick-xml walking every event; records at the path
//! rota-bench-floor yaml FILE.yaml          saphyr-parser reading every event of every document
//! rota-bench-floor toml FILE.toml [a.b]    the toml crate parsing the file; records at the path
//! ```
//!
//! For CSV and NDJSON the schema is inferred from the first 10 000 records
//! the way `rota ingest` infers it (integers, floats and booleans typed;
//! everything else text), so both decode the same columns.
//!
//! The Avro floor frames the container's blocks itself and inflates deflate
//! blocks with flate2, as `rota ingest` does: the workspace builds arrow-avro
//! without its codec features, so its own file reader reads only
//! uncompressed files. The records are decoded by arrow-avro's decoder.
//!
//! The JSON floor finds the elements of the top-level array with a small
//! scanner of strings and nesting and hands them, one per line in chunks of
//! about 1 MiB, to arrow-json's decoder, the schema inferred from the first
//! 10 000 as for NDJSON.
//!
//! The XML record path (default `/*/*`, the children of the root; `*`
//! matches any name) and the TOML path (default `rows`) say which elements
//! or tables are the records, as the `record` and `path` options of
//! `rota ingest` do. The JSON, YAML and TOML floors read the whole file
//! into memory first; their peak RSS includes it.
//!
//! Prints one JSON line: rows (bytes out, for gunzip), bytes read, seconds.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Instant;

use arrow_csv::reader::{Format, ReaderBuilder};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn csv(file: &mut File) -> Result<u64> {
    let format = Format::default().with_header(true);
    let (inferred, _) = format.infer_schema(BufReader::new(&mut *file), Some(10_000))?;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Int64 | DataType::Float64 | DataType::Boolean => f.data_type().clone(),
                _ => DataType::Utf8,
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    file.rewind()?;
    let reader = ReaderBuilder::new(Arc::new(Schema::new(fields)))
        .with_format(format)
        .with_batch_size(8192)
        .build(BufReader::with_capacity(1 << 20, &mut *file))?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

fn parquet(file: File) -> Result<u64> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(8192)
        .build()?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

fn gunzip(file: File) -> Result<u64> {
    let mut decoder = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let mut buf = vec![0u8; 1 << 20];
    let mut out = 0u64;
    loop {
        let n = decoder.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out += n as u64;
    }
}

/// Data rows of the first sheet (the header row aside), every cell read
/// through calamine's streaming cell reader, the path `rota ingest` takes.
fn xlsx(file: File) -> Result<u64> {
    use calamine::{Reader, Xlsx};

    let mut book = Xlsx::new(BufReader::with_capacity(1 << 20, file))?;
    let sheet = book.sheet_names().first().cloned().ok_or("no sheets")?;
    let mut cells = book.worksheet_cells_reader(&sheet)?;
    let (mut rows, mut last) = (0u64, None);
    let mut text = 0usize;
    while let Some(cell) = cells.next_cell()? {
        let row = cell.get_position().0;
        if last != Some(row) {
            rows += 1;
            last = Some(row);
        }
        // Touch every value, so nothing is skipped unread.
        if let calamine::DataRef::SharedString(s) = cell.get_value() {
            text += s.len();
        }
    }
    std::hint::black_box(text);
    Ok(rows.saturating_sub(1))
}

/// Data rows of the first sheet of a workbook calamine loads whole (ODS,
/// XLS), the header row and blank rows aside, every text cell touched.
fn sheet<B, RS>(mut book: B) -> Result<u64>
where
    RS: Read + Seek,
    B: calamine::Reader<RS>,
    B::Error: std::error::Error + 'static,
{
    let sheet = book.sheet_names().first().cloned().ok_or("no sheets")?;
    let range = book.worksheet_range(&sheet)?;
    let (mut rows, mut text) = (0u64, 0usize);
    for row in range.rows() {
        // Rota ignores blank rows; so does the count.
        if row.iter().all(|c| matches!(c, calamine::Data::Empty)) {
            continue;
        }
        rows += 1;
        for cell in row {
            if let calamine::Data::String(s) = cell {
                text += s.len();
            }
        }
    }
    std::hint::black_box(text);
    Ok(rows.saturating_sub(1))
}

fn ods(file: File) -> Result<u64> {
    use calamine::{Ods, Reader};

    sheet(Ods::new(BufReader::with_capacity(1 << 20, file))?)
}

fn xls(file: File) -> Result<u64> {
    use calamine::{Reader, Xls};

    sheet(Xls::new(BufReader::with_capacity(1 << 20, file))?)
}

/// An Avro zigzag variable-length long; `None` at the end of the input.
fn avro_long(input: &mut impl BufRead) -> Result<Option<i64>> {
    let mut value = 0u64;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err("a number cut short".into())
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            #[allow(clippy::cast_possible_wrap)] // zigzag decoding reinterprets the bits
            return Ok(Some((value >> 1) as i64 ^ -((value & 1) as i64)));
        }
    }
    Err("a variable-length number longer than 10 bytes".into())
}

/// Records of an Avro object container file: blocks framed and inflated
/// here, each record decoded by arrow-avro into record batches.
fn avro(file: File) -> Result<u64> {
    use arrow_avro::compression::CompressionCodec;
    use arrow_avro::reader::{DecoderMode, ReaderBuilder, read_header_info};
    use arrow_avro::schema::SchemaStore;

    let mut input = BufReader::with_capacity(1 << 20, file);
    let header = read_header_info(&mut input)?;
    input.seek(SeekFrom::Start(header.header_len()))?;
    let mut store = SchemaStore::new();
    let fingerprint = store.register(header.writer_schema()?)?;
    let mut decoder = ReaderBuilder::new()
        .with_batch_size(8192)
        .with_writer_schema_store(store)
        .with_active_fingerprint(fingerprint)
        .with_decoder_mode(DecoderMode::UnframedDatum)
        .build_decoder()?;
    let codec = header.compression()?;
    let (mut data, mut plain) = (Vec::new(), Vec::new());
    let mut rows = 0u64;
    while let Some(count) = avro_long(&mut input)? {
        let size = avro_long(&mut input)?.ok_or("a block cut short")?;
        data.resize(usize::try_from(size)?, 0);
        input.read_exact(&mut data)?;
        let mut sync = [0u8; 16];
        input.read_exact(&mut sync)?;
        if sync != header.sync() {
            return Err("a block's sync marker does not match the header's".into());
        }
        let block: &[u8] = match codec {
            None => &data,
            Some(CompressionCodec::Deflate) => {
                plain.clear();
                flate2::read::DeflateDecoder::new(data.as_slice()).read_to_end(&mut plain)?;
                &plain
            }
            Some(other) => {
                return Err(format!("codec {other:?}: this floor reads null and deflate").into());
            }
        };
        let mut at = 0;
        for _ in 0..count {
            if decoder.batch_is_full() {
                rows += decoder.flush()?.map_or(0, |b| b.num_rows() as u64);
            }
            at += decoder.decode(&block[at..])?;
        }
    }
    rows += decoder.flush()?.map_or(0, |b| b.num_rows() as u64);
    Ok(rows)
}

fn arrow_file(file: File) -> Result<u64> {
    let reader =
        arrow_ipc::reader::FileReader::try_new(BufReader::with_capacity(1 << 20, file), None)?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

fn arrow_stream(file: File) -> Result<u64> {
    let reader =
        arrow_ipc::reader::StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

/// Top-level values of a MessagePack stream, each read whole.
fn msgpack(file: File) -> Result<u64> {
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut rows = 0u64;
    while !input.fill_buf()?.is_empty() {
        let value = rmpv::decode::read_value(&mut input)?;
        std::hint::black_box(&value);
        rows += 1;
    }
    Ok(rows)
}

fn ndjson(file: &mut File) -> Result<u64> {
    use arrow_json::reader::{ReaderBuilder, infer_json_schema_from_seekable};

    let (inferred, _) = infer_json_schema_from_seekable(BufReader::new(&mut *file), Some(10_000))?;
    file.rewind()?;
    let reader = ReaderBuilder::new(Arc::new(inferred))
        .with_batch_size(8192)
        .build(BufReader::with_capacity(1 << 20, &mut *file))?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

/// The byte ranges of the elements of a top-level JSON array (or of the
/// one top-level object), found by tracking strings and nesting.
struct JsonElements<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The top level is an array (else one object).
    array: bool,
    done: bool,
}

impl<'a> JsonElements<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let mut elements = Self {
            bytes,
            at: 0,
            array: false,
            done: false,
        };
        elements.skip_space();
        if elements.bytes.get(elements.at) == Some(&b'[') {
            elements.array = true;
            elements.at += 1;
        }
        elements
    }

    fn skip_space(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    /// The end (exclusive) of the value starting at `self.at`.
    fn value_end(&self) -> Result<usize> {
        let mut depth = 0usize;
        let mut i = self.at;
        while let Some(&b) = self.bytes.get(i) {
            match b {
                b'"' => {
                    // Jump to the closing quote, over escaped characters.
                    i += 1;
                    loop {
                        let k = self
                            .bytes
                            .get(i..)
                            .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                            .ok_or("a JSON string is not closed")?;
                        i += k;
                        if self.bytes[i] == b'"' {
                            break;
                        }
                        i += 2;
                    }
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth == 0 => return Ok(i),
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i + 1);
                    }
                }
                b',' if depth == 0 => return Ok(i),
                _ => {}
            }
            i += 1;
        }
        Err(format!("a JSON value at byte {} is not closed", self.at).into())
    }

    fn step(&mut self) -> Result<Option<std::ops::Range<usize>>> {
        self.skip_space();
        if !self.array {
            self.done = true;
            let end = self.value_end()?;
            return Ok((end > self.at).then_some(self.at..end));
        }
        if self.bytes.get(self.at) == Some(&b']') {
            self.done = true;
            return Ok(None);
        }
        let start = self.at;
        self.at = self.value_end()?;
        let range = start..self.at;
        self.skip_space();
        match self.bytes.get(self.at) {
            Some(b',') => self.at += 1,
            Some(b']') => {}
            _ => return Err(format!("expected , or ] at byte {}", self.at).into()),
        }
        Ok(Some(range))
    }
}

impl Iterator for JsonElements<'_> {
    type Item = Result<std::ops::Range<usize>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.step();
        if next.is_err() {
            self.done = true;
        }
        next.transpose()
    }
}

/// Records of a JSON document (a top-level array of objects, or one
/// object): the elements found by [`JsonElements`], decoded by arrow-json
/// with the schema inferred from the first 10 000 of them.
fn json(mut file: File) -> Result<u64> {
    use arrow_json::reader::{ReaderBuilder, infer_json_schema_from_iterator};
    use arrow_schema::ArrowError;

    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let sample = JsonElements::new(&bytes).take(10_000).map(|range| {
        let range = range.map_err(|e| ArrowError::JsonError(e.to_string()))?;
        serde_json::from_slice::<serde_json::Value>(&bytes[range])
            .map_err(|e| ArrowError::JsonError(e.to_string()))
    });
    let inferred = infer_json_schema_from_iterator(sample)?;
    let mut decoder = ReaderBuilder::new(Arc::new(inferred))
        .with_batch_size(8192)
        .build_decoder()?;
    // Elements are gathered, one per line, into chunks of about 1 MiB: the
    // decoder works best on many records per call.
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut rows = 0u64;
    let mut elements = JsonElements::new(&bytes).peekable();
    while let Some(range) = elements.next() {
        chunk.extend_from_slice(&bytes[range?]);
        chunk.push(b'\n');
        if chunk.len() < 1 << 20 && elements.peek().is_some() {
            continue;
        }
        let mut rest = chunk.as_slice();
        while !rest.is_empty() {
            let n = decoder.decode(rest)?;
            if n < rest.len() {
                // The batch is full.
                rows += decoder.flush()?.map_or(0, |b| b.num_rows() as u64);
            }
            rest = &rest[n..];
        }
        chunk.clear();
    }
    rows += decoder.flush()?.map_or(0, |b| b.num_rows() as u64);
    Ok(rows)
}

/// Elements at `path` (`/rows/row`; `*` matches any name), every event of
/// the document read and every text decoded.
fn xml(file: File, path: &str) -> Result<u64> {
    use quick_xml::events::Event;

    let steps: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let step_matches =
        |depth: usize, name: &str| steps.get(depth).is_some_and(|s| *s == "*" || *s == name);
    let mut reader = quick_xml::Reader::from_reader(BufReader::with_capacity(1 << 20, file));
    let mut buf = Vec::new();
    // For each open element: whether it and its ancestors match the path.
    let mut on_path: Vec<bool> = Vec::new();
    let (mut rows, mut text) = (0u64, 0usize);
    loop {
        buf.clear();
        match reader.read_event_into(&mut buf)? {
            Event::Start(e) => {
                let depth = on_path.len();
                let parent = on_path.last().copied().unwrap_or(true);
                on_path.push(parent && step_matches(depth, e.local_name().as_ref()));
            }
            Event::End(_) => {
                let record = on_path.pop() == Some(true) && on_path.len() + 1 == steps.len();
                rows += u64::from(record);
            }
            Event::Empty(e) => {
                let depth = on_path.len();
                let parent = on_path.last().copied().unwrap_or(true);
                if parent
                    && depth + 1 == steps.len()
                    && step_matches(depth, e.local_name().as_ref())
                {
                    rows += 1;
                }
            }
            Event::Text(t) => text += t.xml10_content().len(),
            Event::CData(t) => text += t.xml10_content().len(),
            Event::GeneralRef(r) => text += r.len(),
            Event::Eof => break,
            _ => {}
        }
    }
    std::hint::black_box(text);
    Ok(rows)
}

/// Records of a YAML stream: saphyr-parser (the parser `rota ingest` uses)
/// reading every event of every document, the values skipped rather than
/// built: the items of a top-level sequence, or one for a mapping.
fn yaml(mut file: File) -> Result<u64> {
    use saphyr_parser::{Event, Parser};

    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let (mut rows, mut depth, mut scalars) = (0u64, 0usize, 0usize);
    let mut top_sequence = false;
    for next in Parser::new_from_str(&text) {
        let (event, _) = next?;
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if depth == 0 {
                    top_sequence = matches!(event, Event::SequenceStart(..));
                    if !top_sequence {
                        rows += 1;
                    }
                } else if depth == 1 && top_sequence {
                    rows += 1;
                }
                depth += 1;
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            Event::Scalar(value, ..) => {
                scalars += value.len();
                if depth == 1 && top_sequence {
                    rows += 1;
                }
            }
            _ => {}
        }
    }
    std::hint::black_box(scalars);
    Ok(rows)
}

/// Records of a TOML file: the whole file parsed into a table, then the
/// array of tables at `path` (`a.b`) counted; an empty path is the
/// top-level table, one record.
fn toml(mut file: File, path: &str) -> Result<u64> {
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let table: toml::Table = toml::from_str(&text)?;
    if path.is_empty() {
        return Ok(1);
    }
    let (parents, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut current = &table;
    for key in parents.split('.').filter(|k| !k.is_empty()) {
        current = current
            .get(key)
            .and_then(toml::Value::as_table)
            .ok_or_else(|| format!("no table '{key}' on the path {path}"))?;
    }
    match current.get(last) {
        Some(toml::Value::Array(items)) => Ok(items.len() as u64),
        Some(toml::Value::Table(_)) => Ok(1),
        _ => Err(format!("no array of tables or table at {path}").into()),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, path, option) = match args.as_slice() {
        [_, mode, path] => (mode, path, None),
        [_, mode, path, option] => (mode, path, Some(option.as_str())),
        _ => {
            return Err("usage: rota-bench-floor \
                 csv|parquet|gunzip|xlsx|ods|xls|avro|arrow|arrows|msgpack|ndjson|json|xml|yaml|toml \
                 FILE [PATH]"
                .into());
        }
    };
    let started = Instant::now();
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let rows = match mode.as_str() {
        "csv" => csv(&mut file)?,
        "parquet" => parquet(file)?,
        "gunzip" => gunzip(file)?,
        "xlsx" => xlsx(file)?,
        "ods" => ods(file)?,
        "xls" => xls(file)?,
        "avro" => avro(file)?,
        "arrow" => arrow_file(file)?,
        "arrows" => arrow_stream(file)?,
        "msgpack" => msgpack(file)?,
        "ndjson" => ndjson(&mut file)?,
        "json" => json(file)?,
        "xml" => xml(file, option.unwrap_or("/*/*"))?,
        "yaml" => yaml(file)?,
        "toml" => toml(file, option.unwrap_or("rows"))?,
        other => return Err(format!("unknown mode '{other}'").into()),
    };
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"rows\": {rows}, \"bytes\": {bytes}, \"seconds\": {secs}}}");
    Ok(())
}
