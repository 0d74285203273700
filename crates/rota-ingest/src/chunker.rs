//! The deterministic chunker: cuts a stream of decoded rows into batches by
//! rows and bytes. Boundaries depend only on the rows and the policy, never on
//! how the input arrived, so a replayed ingest recreates identical task keys.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use rota_core::{BatchPolicy, NewTask, PayloadEncoding};

use crate::error::IngestError;
use crate::payload::{PayloadBuilder, builder};

/// Cuts rows into task payloads.
pub struct Chunker {
    policy: BatchPolicy,
    encoding: PayloadEncoding,
    /// The schema of the rows the builder takes.
    schema: SchemaRef,
    builder: Box<dyn PayloadBuilder>,
    key_prefix: String,
    seq: u64,
    rows: u64,
    bytes: u64,
}

impl Chunker {
    /// A chunker for rows of `schema`; task keys are `{key_prefix}#{seq:08}`.
    ///
    /// # Errors
    /// When the policy sets no bound or the schema cannot be encoded.
    pub fn new(
        policy: BatchPolicy,
        encoding: PayloadEncoding,
        schema: &SchemaRef,
        key_prefix: String,
    ) -> Result<Self, IngestError> {
        policy.validate().map_err(IngestError::Invalid)?;
        let builder = builder(encoding, schema)?;
        let bytes = builder.overhead();
        Ok(Self {
            policy,
            encoding,
            schema: schema.clone(),
            builder,
            key_prefix,
            seq: 0,
            rows: 0,
            bytes,
        })
    }

    /// The key of the `seq`-th task of a file.
    #[must_use]
    pub fn key(prefix: &str, seq: u64) -> String {
        format!("{prefix}#{seq:08}")
    }

    fn emit(&mut self, out: &mut Vec<NewTask>) -> Result<(), IngestError> {
        let payload = self.builder.finish_payload()?;
        out.push(NewTask {
            key: Self::key(&self.key_prefix, self.seq),
            payload,
            encoding: self.encoding,
            rows: self.rows,
        });
        self.seq += 1;
        self.rows = 0;
        self.bytes = self.builder.overhead();
        Ok(())
    }

    /// Adds a batch of rows; appends every task that filled up.
    ///
    /// Rows may come with a wider schema than earlier ones (a decoder widens
    /// its inferred schema when a record needs it). JSON payloads take them
    /// as they come; a CSV or Arrow payload holds one schema, so the task
    /// being filled ends there and the next starts with the new schema.
    ///
    /// # Errors
    /// When rows cannot be encoded.
    pub fn push(&mut self, batch: &RecordBatch, out: &mut Vec<NewTask>) -> Result<(), IngestError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.schema() != self.schema {
            self.schema = batch.schema();
            if matches!(self.encoding, PayloadEncoding::Csv | PayloadEncoding::Arrow) {
                if self.rows > 0 {
                    self.emit(out)?;
                }
                self.builder = builder(self.encoding, &self.schema)?;
                self.bytes = self.builder.overhead();
            }
        }
        let sizes = self.builder.load(batch)?;
        let mut run = 0;
        for (i, &size) in sizes.iter().enumerate() {
            if self.rows > 0 && self.policy.max_bytes.is_some_and(|m| self.bytes + size > m) {
                self.builder.append(run, i);
                run = i;
                self.emit(out)?;
            }
            self.rows += 1;
            self.bytes += size;
            if self.policy.max_rows.is_some_and(|m| self.rows >= m) {
                self.builder.append(run, i + 1);
                run = i + 1;
                self.emit(out)?;
            }
        }
        self.builder.append(run, sizes.len());
        Ok(())
    }

    /// Emits the last, partial task, if any rows are left.
    ///
    /// # Errors
    /// When rows cannot be encoded.
    pub fn finish(&mut self, out: &mut Vec<NewTask>) -> Result<(), IngestError> {
        if self.rows > 0 {
            self.emit(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    /// A deterministic pseudo-random generator (no dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    fn rows(n: usize, seed: u64) -> RecordBatch {
        let mut rng = Lcg(seed);
        let ids: Vec<i64> = (0..n as i64).collect();
        let texts: Vec<Option<String>> = (0..n)
            .map(|i| {
                let len = match rng.next() % 20 {
                    0 => 2_000, // now and then a large row
                    1 => return None,
                    k => k as usize * 3,
                };
                Some(format!("r{i},\"q\"\n").repeat(len / 8 + 1))
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(texts)),
            ],
        )
        .expect("batch")
    }

    fn chunk(
        batch: &RecordBatch,
        split: usize,
        policy: BatchPolicy,
        enc: PayloadEncoding,
    ) -> Vec<NewTask> {
        let mut c = Chunker::new(policy, enc, &batch.schema(), "f.csv".into()).expect("chunker");
        let mut out = Vec::new();
        let mut at = 0;
        while at < batch.num_rows() {
            let len = split.min(batch.num_rows() - at);
            c.push(&batch.slice(at, len), &mut out).expect("push");
            at += len;
        }
        c.finish(&mut out).expect("finish");
        out
    }

    /// The ids of a payload's rows, decoded with a reader of its encoding.
    fn ids(task: &NewTask) -> Vec<i64> {
        match task.encoding {
            PayloadEncoding::Json => {
                let v: serde_json::Value =
                    serde_json::from_slice(&task.payload).expect("json array");
                v.as_array()
                    .expect("array")
                    .iter()
                    .map(|r| r["id"].as_i64().expect("id"))
                    .collect()
            }
            PayloadEncoding::Ndjson => task
                .payload
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    serde_json::from_slice::<serde_json::Value>(l).expect("line")["id"]
                        .as_i64()
                        .expect("id")
                })
                .collect(),
            PayloadEncoding::Csv => {
                let schema = Arc::new(Schema::new(vec![
                    Field::new("id", DataType::Int64, false),
                    Field::new("text", DataType::Utf8, true),
                ]));
                let reader = arrow_csv::ReaderBuilder::new(schema)
                    .with_header(true)
                    .build(std::io::Cursor::new(task.payload.clone()))
                    .expect("csv");
                let mut out = Vec::new();
                for b in reader {
                    let b = b.expect("csv batch");
                    let a = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("ids");
                    out.extend(a.values().iter().copied());
                }
                out
            }
            PayloadEncoding::Arrow => {
                let reader = arrow_ipc::reader::StreamReader::try_new(
                    std::io::Cursor::new(task.payload.clone()),
                    None,
                )
                .expect("ipc");
                let mut out = Vec::new();
                for b in reader {
                    let b = b.expect("ipc batch");
                    let a = b
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("ids");
                    out.extend(a.values().iter().copied());
                }
                out
            }
        }
    }

    #[test]
    fn rows_are_conserved_in_order_within_limits_whatever_the_split() {
        let policies = [
            BatchPolicy {
                max_rows: Some(7),
                max_bytes: None,
            },
            BatchPolicy {
                max_rows: None,
                max_bytes: Some(3_000),
            },
            BatchPolicy {
                max_rows: Some(50),
                max_bytes: Some(1_500),
            },
            BatchPolicy {
                max_rows: Some(1),
                max_bytes: None,
            },
        ];
        for seed in [1, 2, 3] {
            let batch = rows(301, seed);
            for enc in PayloadEncoding::ALL.iter().copied() {
                for policy in policies {
                    let reference = chunk(&batch, batch.num_rows(), policy, enc);
                    let mut next_id = 0;
                    for (seq, task) in reference.iter().enumerate() {
                        assert_eq!(task.key, Chunker::key("f.csv", seq as u64));
                        let got = ids(task);
                        assert_eq!(got.len() as u64, task.rows, "{enc} {policy:?}");
                        for id in got {
                            assert_eq!(id, next_id, "rows out of order ({enc}, {policy:?})");
                            next_id += 1;
                        }
                        if let Some(m) = policy.max_rows {
                            assert!(task.rows <= m);
                        }
                        if let (Some(m), true) = (policy.max_bytes, enc != PayloadEncoding::Arrow) {
                            assert!(
                                task.rows == 1 || task.payload.len() as u64 <= m,
                                "{enc} {policy:?}: {} bytes in {} rows",
                                task.payload.len(),
                                task.rows
                            );
                        }
                    }
                    assert_eq!(next_id, 301, "rows lost ({enc}, {policy:?})");
                    for split in [1, 7, 64] {
                        let other = chunk(&batch, split, policy, enc);
                        let summary = |ts: &[NewTask]| -> Vec<(String, u64, usize)> {
                            ts.iter()
                                .map(|t| (t.key.clone(), t.rows, t.payload.len()))
                                .collect()
                        };
                        assert_eq!(
                            summary(&other),
                            summary(&reference),
                            "split {split} changed the tasks ({enc}, {policy:?})"
                        );
                        let same = other
                            .iter()
                            .zip(&reference)
                            .all(|(a, b)| a.payload == b.payload);
                        assert!(
                            same,
                            "split {split} changed payload bytes ({enc}, {policy:?})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn byte_limit_is_filled_exactly_for_text_payloads() {
        // Rows of a known size: a JSON array payload of n rows is 1 + n * row bytes.
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1; 10]))])
            .expect("batch");
        // Each row is `{"id":1}` plus a separator: 9 bytes.
        let policy = BatchPolicy {
            max_rows: None,
            max_bytes: Some(1 + 9 * 4),
        };
        let tasks = chunk(&batch, 10, policy, PayloadEncoding::Json);
        let sizes: Vec<u64> = tasks.iter().map(|t| t.rows).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(
            tasks[0].payload,
            br#"[{"id":1},{"id":1},{"id":1},{"id":1}]"#
        );
    }

    #[test]
    fn a_policy_without_bounds_is_refused() {
        let batch = rows(1, 1);
        let policy = BatchPolicy {
            max_rows: None,
            max_bytes: None,
        };
        assert!(
            Chunker::new(
                policy,
                PayloadEncoding::Json,
                &batch.schema(),
                String::new()
            )
            .is_err()
        );
    }

    /// A field of JSON text, as decoders make for values of different shapes.
    fn json_text(name: &str) -> Field {
        Field::new(name, DataType::Utf8, true).with_metadata(std::collections::HashMap::from([(
            arrow_schema::extension::EXTENSION_TYPE_NAME_KEY.to_owned(),
            rota_formats::JSON_EXTENSION.to_owned(),
        )]))
    }

    #[test]
    fn json_payloads_write_json_text_columns_as_the_json_they_hold() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            json_text("value"),
            Field::new("items", DataType::List(Arc::new(json_text("item"))), true),
        ]));
        let mut items =
            arrow_array::builder::ListBuilder::new(arrow_array::builder::StringBuilder::new())
                .with_field(Arc::new(json_text("item")));
        items.values().append_value("1");
        items.values().append_value(r#""two""#);
        items.append(true);
        items.append(false);
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![r#""08123""#, "[1,{\"a\":null}]"])),
                Arc::new(items.finish()),
            ],
        )
        .expect("batch");
        let policy = BatchPolicy {
            max_rows: Some(10),
            max_bytes: None,
        };
        let tasks = chunk(&batch, 10, policy, PayloadEncoding::Ndjson);
        assert_eq!(
            String::from_utf8_lossy(&tasks[0].payload),
            "{\"id\":1,\"value\":\"08123\",\"items\":[1,\"two\"]}\n\
             {\"id\":2,\"value\":[1,{\"a\":null}],\"items\":null}\n"
        );
    }

    #[test]
    fn a_wider_schema_ends_a_csv_or_arrow_payload_but_not_a_json_one() {
        let narrow = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let wide = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        let first = RecordBatch::try_new(narrow, vec![Arc::new(Int64Array::from(vec![1, 2]))])
            .expect("batch");
        let second = RecordBatch::try_new(
            wide,
            vec![
                Arc::new(Int64Array::from(vec![3])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .expect("batch");
        let policy = BatchPolicy {
            max_rows: Some(10),
            max_bytes: None,
        };
        for (encoding, tasks) in [
            (PayloadEncoding::Json, 1),
            (PayloadEncoding::Ndjson, 1),
            (PayloadEncoding::Csv, 2),
            (PayloadEncoding::Arrow, 2),
        ] {
            let mut c =
                Chunker::new(policy, encoding, &first.schema(), "f".into()).expect("chunker");
            let mut out = Vec::new();
            c.push(&first, &mut out).expect("push");
            c.push(&second, &mut out).expect("push");
            c.finish(&mut out).expect("finish");
            assert_eq!(out.len(), tasks, "{encoding:?}");
            if encoding == PayloadEncoding::Csv {
                // Each payload has its own header.
                assert_eq!(out[0].payload, b"id\n1\n2\n");
                assert_eq!(out[1].payload, b"id,text\n3,x\n");
            } else {
                let all: Vec<i64> = out.iter().flat_map(ids).collect();
                assert_eq!(all, [1, 2, 3], "{encoding:?}");
            }
        }
    }
}
