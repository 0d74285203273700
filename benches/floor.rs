//! Decode-only floors the ingest benchmark compares against: the best reader
//! for a format doing its work with nothing after it.
//!
//! ```text
//! rota-bench-floor csv FILE.csv          arrow-csv decoding every record
//! rota-bench-floor parquet FILE.parquet  the parquet crate decoding every row group
//! rota-bench-floor gunzip FILE.gz        gzip decompression alone (flate2, all members)
//! rota-bench-floor xlsx FILE.xlsx        calamine streaming every cell of the first sheet
//! ```
//!
//! For CSV the schema is inferred from the first 10 000 records the way
//! `rota ingest` infers it (integers, floats and booleans typed; everything
//! else text), so both decode the same columns. Prints one JSON line: rows
//! (bytes out, for gunzip), bytes read, seconds.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, path] = args.as_slice() else {
        return Err("usage: rota-bench-floor csv|parquet|gunzip|xlsx FILE".into());
    };
    let started = Instant::now();
    let mut file = File::open(path)?;
    let bytes = file.metadata()?.len();
    let rows = match mode.as_str() {
        "csv" => csv(&mut file)?,
        "parquet" => parquet(file)?,
        "gunzip" => gunzip(file)?,
        "xlsx" => xlsx(file)?,
        other => return Err(format!("unknown mode '{other}'").into()),
    };
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"rows\": {rows}, \"bytes\": {bytes}, \"seconds\": {secs}}}");
    Ok(())
}
