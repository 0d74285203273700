//! Payload builders: how decoded rows become a task's bytes, and how many
//! bytes each row adds (which is what `max_bytes` bounds).

use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use rota_core::PayloadEncoding;

use crate::error::IngestError;

/// Accumulates rows into one payload at a time.
pub(crate) trait PayloadBuilder: Send {
    /// Takes the next decoded batch; returns the bytes each of its rows adds
    /// to a payload. Replaces the previously loaded batch.
    fn load(&mut self, batch: &RecordBatch) -> Result<Vec<u64>, IngestError>;
    /// Appends rows `from..to` of the loaded batch to the current payload.
    fn append(&mut self, from: usize, to: usize);
    /// Bytes of a payload that holds no row (brackets, header, schema).
    fn overhead(&self) -> u64;
    /// Ends the current payload and returns it.
    fn finish_payload(&mut self) -> Result<Vec<u8>, IngestError>;
}

/// The builder for `encoding`, for batches of `schema`.
pub(crate) fn builder(
    encoding: PayloadEncoding,
    schema: &SchemaRef,
) -> Result<Box<dyn PayloadBuilder>, IngestError> {
    if encoding == PayloadEncoding::Csv
        && let Some(field) = schema.fields().iter().find(|f| f.data_type().is_nested())
    {
        return Err(IngestError::Encode(format!(
            "a csv payload cannot hold column '{}' of type {} (nested values); \
             use --payload json, ndjson or arrow",
            field.name(),
            field.data_type()
        )));
    }
    Ok(match encoding {
        PayloadEncoding::Json => Box::new(TextRows::new(TextKind::JsonArray, schema)),
        PayloadEncoding::Ndjson => Box::new(TextRows::new(TextKind::Ndjson, schema)),
        PayloadEncoding::Csv => Box::new(TextRows::new(TextKind::Csv, schema)),
        PayloadEncoding::Arrow => Box::new(ArrowRows::new(schema)?),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TextKind {
    JsonArray,
    Ndjson,
    Csv,
}

/// Row-per-line text encodings. A batch is encoded once with arrow's writer;
/// rows are then copied into payloads by line.
struct TextRows {
    kind: TextKind,
    /// The loaded batch, encoded.
    text: Vec<u8>,
    /// End of each row's line in `text`, terminator included.
    ends: Vec<usize>,
    /// The CSV header line (terminator included); empty otherwise.
    header: Vec<u8>,
    payload: Vec<u8>,
}

impl TextRows {
    fn new(kind: TextKind, schema: &SchemaRef) -> Self {
        let header = if kind == TextKind::Csv {
            let names: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| csv_quote(f.name()))
                .collect();
            let mut h = names.join(",").into_bytes();
            h.push(b'\n');
            h
        } else {
            Vec::new()
        };
        let mut rows = Self {
            kind,
            text: Vec::new(),
            ends: Vec::new(),
            header,
            payload: Vec::new(),
        };
        rows.start_payload();
        rows
    }

    fn start_payload(&mut self) {
        self.payload.clear();
        match self.kind {
            TextKind::JsonArray => self.payload.push(b'['),
            TextKind::Ndjson => {}
            TextKind::Csv => self.payload.extend_from_slice(&self.header),
        }
    }
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Ends of CSV rows as written by arrow's writer: a line break outside quotes.
fn csv_row_ends(text: &[u8], ends: &mut Vec<usize>) {
    let mut in_quotes = false;
    let mut i = 0;
    while let Some(k) = memchr::memchr2(b'\n', b'"', &text[i..]) {
        let j = i + k;
        if text[j] == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes {
            ends.push(j + 1);
        }
        i = j + 1;
    }
}

impl PayloadBuilder for TextRows {
    fn load(&mut self, batch: &RecordBatch) -> Result<Vec<u64>, IngestError> {
        self.text.clear();
        self.ends.clear();
        let encode_error = |e: arrow_schema::ArrowError| IngestError::Encode(e.to_string());
        match self.kind {
            TextKind::JsonArray | TextKind::Ndjson => {
                let mut writer = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(Arc::new(AsWritten))
                    .build::<_, arrow_json::writer::LineDelimited>(&mut self.text);
                writer.write(batch).map_err(encode_error)?;
                writer.finish().map_err(encode_error)?;
                drop(writer);
                // JSON escapes line breaks inside strings, so each `\n` ends a row.
                self.ends
                    .extend(memchr::memchr_iter(b'\n', &self.text).map(|i| i + 1));
            }
            TextKind::Csv => {
                let mut writer = arrow_csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut self.text);
                writer.write(batch).map_err(encode_error)?;
                drop(writer);
                csv_row_ends(&self.text, &mut self.ends);
            }
        }
        if self.ends.len() != batch.num_rows() {
            return Err(IngestError::Encode(format!(
                "encoded {} rows as {} lines",
                batch.num_rows(),
                self.ends.len()
            )));
        }
        let mut start = 0;
        Ok(self
            .ends
            .iter()
            .map(|&end| {
                let n = (end - start) as u64;
                start = end;
                n
            })
            .collect())
    }

    fn append(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        let end = self.ends[to - 1];
        let at = self.payload.len();
        self.payload.extend_from_slice(&self.text[start..end]);
        if self.kind == TextKind::JsonArray {
            // Each row's line break becomes the separator (or the closing bracket).
            for &e in &self.ends[from..to] {
                self.payload[at + e - start - 1] = b',';
            }
        }
    }

    fn overhead(&self) -> u64 {
        match self.kind {
            TextKind::JsonArray => 1,
            TextKind::Ndjson => 0,
            TextKind::Csv => self.header.len() as u64,
        }
    }

    fn finish_payload(&mut self) -> Result<Vec<u8>, IngestError> {
        if self.kind == TextKind::JsonArray {
            match self.payload.last_mut() {
                Some(last @ b',') => *last = b']',
                _ => self.payload.push(b']'),
            }
        }
        let mut next = Vec::with_capacity(self.payload.capacity());
        std::mem::swap(&mut next, &mut self.payload);
        self.start_payload();
        Ok(next)
    }
}

/// Writes the values of a column of JSON text (the canonical extension type
/// `arrow.json`, which decoders give a field whose values have different
/// shapes) as the JSON they hold, so a JSON payload carries each value as it
/// was written. A column holding anything that is not one line of valid JSON
/// is written as text instead.
#[derive(Debug)]
struct AsWritten;

impl arrow_json::writer::EncoderFactory for AsWritten {
    fn make_default_encoder<'a>(
        &self,
        field: &'a arrow_schema::FieldRef,
        array: &'a dyn Array,
        _options: &'a arrow_json::writer::EncoderOptions,
    ) -> Result<Option<arrow_json::writer::NullableEncoder<'a>>, arrow_schema::ArrowError> {
        let json_text = |f: &arrow_schema::Field| {
            f.metadata()
                .get(arrow_schema::extension::EXTENSION_TYPE_NAME_KEY)
                .is_some_and(|name| name == rota_formats::JSON_EXTENSION)
        };
        // A list's items (and its lists' items) are encoded with the outer
        // list's field: look down its items for the field of these values.
        let mut at: &arrow_schema::Field = field;
        let is_json = loop {
            if json_text(at) && at.data_type() == array.data_type() {
                break true;
            }
            match at.data_type() {
                arrow_schema::DataType::List(item)
                | arrow_schema::DataType::LargeList(item)
                | arrow_schema::DataType::FixedSizeList(item, _) => at = item,
                _ => break false,
            }
        };
        let Some(texts) = array
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .filter(|_| is_json)
        else {
            return Ok(None);
        };
        let one_line_json = texts.iter().flatten().all(|text| {
            !text.contains(['\n', '\r'])
                && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
        });
        if !one_line_json {
            return Ok(None);
        }
        Ok(Some(arrow_json::writer::NullableEncoder::new(
            Box::new(JsonTexts(texts)),
            texts.nulls().cloned(),
        )))
    }
}

/// The encoder of [`AsWritten`].
struct JsonTexts<'a>(&'a arrow_array::StringArray);

impl arrow_json::writer::Encoder for JsonTexts<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.value(idx).as_bytes());
    }
}

/// Arrow IPC stream payloads: one schema message and one record batch.
struct ArrowRows {
    schema: SchemaRef,
    loaded: Option<RecordBatch>,
    parts: Vec<RecordBatch>,
    overhead: u64,
}

impl ArrowRows {
    fn new(schema: &SchemaRef) -> Result<Self, IngestError> {
        let mut rows = Self {
            schema: schema.clone(),
            loaded: None,
            parts: Vec::new(),
            overhead: 0,
        };
        rows.overhead = rows.write(None)?.len() as u64;
        Ok(rows)
    }

    fn write(&self, batch: Option<&RecordBatch>) -> Result<Vec<u8>, IngestError> {
        let encode_error = |e: arrow_schema::ArrowError| IngestError::Encode(e.to_string());
        let mut out = Vec::new();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &self.schema)
            .map_err(encode_error)?;
        if let Some(batch) = batch {
            writer.write(batch).map_err(encode_error)?;
        }
        writer.finish().map_err(encode_error)?;
        drop(writer);
        Ok(out)
    }
}

/// Bytes each row occupies in Arrow buffers: the value width for fixed-width
/// types, the value length plus its offset for strings and binaries, and an
/// even share of the column's memory for anything else.
fn arrow_row_sizes(batch: &RecordBatch) -> Vec<u64> {
    let n = batch.num_rows();
    let mut sizes = vec![0u64; n];
    for column in batch.columns() {
        match column.data_type() {
            DataType::Utf8 => {
                if let Some(a) = column.as_any().downcast_ref::<arrow_array::StringArray>() {
                    for (i, w) in a.value_offsets().windows(2).enumerate() {
                        sizes[i] += (w[1] - w[0]) as u64 + 4;
                    }
                }
            }
            DataType::Binary => {
                if let Some(a) = column.as_any().downcast_ref::<arrow_array::BinaryArray>() {
                    for (i, w) in a.value_offsets().windows(2).enumerate() {
                        sizes[i] += (w[1] - w[0]) as u64 + 4;
                    }
                }
            }
            DataType::Boolean | DataType::Null => {
                for s in &mut sizes {
                    *s += 1;
                }
            }
            t => {
                let each = t.primitive_width().map_or_else(
                    || (column.get_array_memory_size() / n.max(1)) as u64,
                    |w| w as u64,
                );
                for s in &mut sizes {
                    *s += each;
                }
            }
        }
    }
    sizes
}

impl PayloadBuilder for ArrowRows {
    fn load(&mut self, batch: &RecordBatch) -> Result<Vec<u64>, IngestError> {
        self.loaded = Some(batch.clone());
        Ok(arrow_row_sizes(batch))
    }

    fn append(&mut self, from: usize, to: usize) {
        if let Some(batch) = &self.loaded
            && to > from
        {
            self.parts.push(batch.slice(from, to - from));
        }
    }

    fn overhead(&self) -> u64 {
        self.overhead
    }

    fn finish_payload(&mut self) -> Result<Vec<u8>, IngestError> {
        let encode_error = |e: arrow_schema::ArrowError| IngestError::Encode(e.to_string());
        // Always build fresh arrays: the IPC writer copies a byte-aligned
        // slice's validity bitmap as it is, stray bits of neighbouring rows
        // included, which would make payload bytes depend on input batching.
        let batch = match self.parts.as_slice() {
            [one] => {
                let n = u32::try_from(one.num_rows())
                    .map_err(|e| IngestError::Encode(e.to_string()))?;
                let indices = arrow_array::UInt32Array::from_iter_values(0..n);
                arrow_select::take::take_record_batch(one, &indices).map_err(encode_error)?
            }
            parts => {
                arrow_select::concat::concat_batches(&self.schema, parts).map_err(encode_error)?
            }
        };
        self.parts.clear();
        self.write(Some(&batch))
    }
}
