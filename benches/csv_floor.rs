//! The floor for CSV ingest: arrow-csv decoding a file with nothing after it.
//!
//! The schema is inferred from the first 10 000 records the way `rota ingest`
//! infers it (integers, floats and booleans typed; everything else text), so
//! both decode the same columns. Prints one JSON line: rows, bytes, seconds.

use std::fs::File;
use std::io::{BufReader, Seek};
use std::sync::Arc;
use std::time::Instant;

use arrow_csv::reader::{Format, ReaderBuilder};
use arrow_schema::{DataType, Field, Schema};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: rota-bench-csv-floor FILE.csv")?;
    let started = Instant::now();
    let mut file = File::open(&path)?;
    let bytes = file.metadata()?.len();
    let format = Format::default().with_header(true);
    let (inferred, _) = format.infer_schema(BufReader::new(&mut file), Some(10_000))?;
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
        .build(BufReader::with_capacity(1 << 20, file))?;
    let mut rows = 0usize;
    for batch in reader {
        rows += batch?.num_rows();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{{\"rows\": {rows}, \"bytes\": {bytes}, \"seconds\": {secs}}}");
    Ok(())
}
