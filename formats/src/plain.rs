//! Plain batches: what a decoder yields, in the types every payload
//! encoder writes faithfully, with every value one that can be written.
//!
//! Arrow has encodings that the JSON and CSV writers render wrongly or not
//! at all, so they are unpacked here, once, for every format:
//!
//! - dictionary and run-end encoded arrays become arrays of their values (a
//!   dictionary whose values hold nulls gives null, never `0` or `""`);
//! - a union becomes JSON text (the `arrow.json` extension type) of each
//!   value's own variant, so a JSON payload holds the value itself;
//! - a date counted in milliseconds (`Date64`) is written as a date when it
//!   is whole days;
//! - a map whose keys are not text gets its keys as text (JSON object keys
//!   are text);
//!
//! and a value no writer can render (a timestamp or date beyond the
//! calendar's range, a time of day past midnight, a duration past what a
//! duration holds) is an error that names its record and column, or, under
//! `on_error = skip`, a skipped record; never text such as `ERROR: …` in a
//! payload.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions::{as_date, as_datetime, as_duration, as_time};
use arrow_array::types::{
    ArrowPrimitiveType, Date32Type, Date64Type, DurationMicrosecondType, DurationMillisecondType,
    DurationNanosecondType, DurationSecondType, Int16Type, Int32Type, Int64Type, RunEndIndexType,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, LargeListArray, ListArray, MapArray, RecordBatch,
    RunArray, StructArray, UInt32Array,
};
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields, Schema, TimeUnit};
use rota_core::format::{Decoded, Decoder};
use rota_core::{DecodeError, DecodeErrorKind, OnError, Position};

/// The canonical extension type of UUIDs (16 bytes each).
const UUID_EXTENSION: &str = "arrow.uuid";

/// Whether `field` holds UUIDs as the canonical extension type.
fn is_uuid(field: &Field) -> bool {
    field
        .metadata()
        .get(arrow_schema::extension::EXTENSION_TYPE_NAME_KEY)
        .is_some_and(|n| n == UUID_EXTENSION)
        && *field.data_type() == DataType::FixedSizeBinary(16)
}

/// Whether a time zone is UTC already.
fn is_utc(tz: &str) -> bool {
    matches!(
        tz,
        "+00:00" | "UTC" | "Z" | "utc" | "Etc/UTC" | "+0000" | "+00"
    )
}

/// Whether the values of `field` must be unpacked before they are written.
fn field_needs(field: &Field) -> bool {
    is_uuid(field) || needs_unpacking(field.data_type())
}

/// Whether arrays of `data_type` must be unpacked before they are written.
fn needs_unpacking(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(..) | DataType::RunEndEncoded(..) | DataType::Union(..) => true,
        DataType::Timestamp(_, Some(tz)) => !is_utc(tz),
        DataType::Date64 => true,
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => {
                !matches!(kv[0].data_type(), DataType::Utf8 | DataType::LargeUtf8)
                    || kv.iter().any(|f| needs_unpacking(f.data_type()))
            }
            _ => false,
        },
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            needs_unpacking(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| field_needs(f)),
        _ => false,
    }
}

/// The values of `field` in `array`, unpacked: UUIDs as their text, the
/// rest as [`unpack`] makes them.
fn unpack_field(field: &Field, array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if is_uuid(field) {
        let bytes = array.as_fixed_size_binary();
        let text: arrow_array::StringArray = bytes
            .iter()
            .map(|v| {
                v.map(|b| {
                    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    format!(
                        "{}-{}-{}-{}-{}",
                        &hex[..8],
                        &hex[8..12],
                        &hex[12..16],
                        &hex[16..20],
                        &hex[20..]
                    )
                })
            })
            .collect();
        return Ok(Arc::new(text));
    }
    unpack(array)
}

/// Whether values of `data_type` (or inside it) may be beyond what a writer
/// renders.
fn has_temporal(data_type: &DataType) -> bool {
    match data_type {
        DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..)
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Duration(_) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_temporal(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_temporal(f.data_type())),
        _ => false,
    }
}

/// `array` with every dictionary, run-end encoding and union unpacked and
/// every map keyed by text.
fn unpack(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    if !needs_unpacking(array.data_type()) {
        return Ok(Arc::clone(array));
    }
    match array.data_type() {
        DataType::Date64 => {
            // A date counted in milliseconds: a date, when it is whole days
            // (as the format says it must be), written as one.
            let whole_days = array
                .as_primitive::<Date64Type>()
                .iter()
                .flatten()
                .all(|ms| ms % 86_400_000 == 0);
            if whole_days {
                arrow_cast::cast(array, &DataType::Date32)
            } else {
                Ok(Arc::clone(array))
            }
        }
        DataType::Timestamp(unit, Some(_)) => {
            // The same instants, written in UTC: an offset of a zone's
            // history with seconds in it (local mean time) would otherwise
            // be cut to minutes.
            arrow_cast::cast(array, &DataType::Timestamp(*unit, Some("+00:00".into())))
        }
        DataType::Dictionary(_, values) => {
            // Casting takes the values by key: a null value gives null.
            let plain = arrow_cast::cast(array, values)?;
            unpack(&plain)
        }
        DataType::RunEndEncoded(ends, _) => {
            let logical = match ends.data_type() {
                DataType::Int16 => run_values::<Int16Type>(array)?,
                DataType::Int32 => run_values::<Int32Type>(array)?,
                DataType::Int64 => run_values::<Int64Type>(array)?,
                other => {
                    return Err(ArrowError::InvalidArgumentError(format!(
                        "run ends of type {other}"
                    )));
                }
            };
            unpack(&logical)
        }
        DataType::Union(fields, _) => {
            // Each value as the JSON of its own variant's value.
            let union = array.as_union();
            let mut texts: Vec<Option<String>> = vec![None; union.len()];
            for (type_id, _) in fields.iter() {
                let child = union.child(type_id);
                let rows: Vec<usize> = (0..union.len())
                    .filter(|&i| union.type_id(i) == type_id)
                    .collect();
                let indices: UInt32Array = rows
                    .iter()
                    .map(|&i| u32::try_from(union.value_offset(i)).ok())
                    .collect();
                let taken = unpack(&arrow_select::take::take(child.as_ref(), &indices, None)?)?;
                for (row, text) in rows.into_iter().zip(json_texts(&taken)?) {
                    texts[row] = text;
                }
            }
            Ok(Arc::new(arrow_array::StringArray::from(texts)))
        }
        DataType::Map(entries_field, sorted) => {
            let map = array.as_map();
            let keys = map.keys();
            let keys = if matches!(keys.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                Arc::clone(keys)
            } else {
                let plain = unpack(keys)?;
                arrow_cast::cast(&plain, &DataType::Utf8)?
            };
            let values = unpack(map.values())?;
            let DataType::Struct(kv) = entries_field.data_type() else {
                return Ok(Arc::clone(array));
            };
            let fields = Fields::from(vec![
                Field::new(kv[0].name(), keys.data_type().clone(), false),
                Field::new(kv[1].name(), values.data_type().clone(), true),
            ]);
            let entries = StructArray::try_new(fields.clone(), vec![keys, values], None)?;
            let entries_field = Arc::new(Field::new(
                entries_field.name(),
                DataType::Struct(fields),
                false,
            ));
            Ok(Arc::new(MapArray::try_new(
                entries_field,
                map.offsets().clone(),
                entries,
                map.nulls().cloned(),
                *sorted,
            )?))
        }
        DataType::List(field) => {
            let list = array.as_list::<i32>();
            let values = unpack(list.values())?;
            Ok(Arc::new(ListArray::try_new(
                retyped(field, &values),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        DataType::LargeList(field) => {
            let list = array.as_list::<i64>();
            let values = unpack(list.values())?;
            Ok(Arc::new(LargeListArray::try_new(
                retyped(field, &values),
                list.offsets().clone(),
                values,
                list.nulls().cloned(),
            )?))
        }
        DataType::FixedSizeList(field, size) => {
            let list = array.as_fixed_size_list();
            let values = unpack(list.values())?;
            Ok(Arc::new(FixedSizeListArray::try_new(
                retyped(field, &values),
                *size,
                values,
                list.nulls().cloned(),
            )?))
        }
        DataType::Struct(fields) => {
            let strukt = array.as_struct();
            let columns = fields
                .iter()
                .zip(strukt.columns())
                .map(|(f, c)| unpack_field(f, c))
                .collect::<Result<Vec<_>, _>>()?;
            let fields: Fields = fields
                .iter()
                .zip(&columns)
                .map(|(f, c)| retyped(f, c))
                .collect();
            Ok(Arc::new(StructArray::try_new(
                fields,
                columns,
                strukt.nulls().cloned(),
            )?))
        }
        _ => Ok(Arc::clone(array)),
    }
}

/// The values of `array` as JSON text each (`None` for null).
fn json_texts(array: &ArrayRef) -> Result<Vec<Option<String>>, ArrowError> {
    let batch = RecordBatch::try_from_iter_with_nullable([("v", Arc::clone(array), true)])?;
    let mut lines = Vec::new();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(&mut lines);
    writer.write(&batch)?;
    writer.finish()?;
    drop(writer);
    let text = String::from_utf8(lines).map_err(|e| ArrowError::JsonError(e.to_string()))?;
    Ok(text
        .lines()
        .map(|line| {
            let value = line
                .strip_prefix("{\"v\":")
                .and_then(|v| v.strip_suffix('}'))
                .unwrap_or("null");
            (value != "null").then(|| value.to_owned())
        })
        .collect())
}

/// `field` with the type of `values`, nullable where the unpacking made
/// nulls possible; a union field becomes a field of JSON text.
fn retyped(field: &FieldRef, values: &ArrayRef) -> FieldRef {
    if field.data_type() == values.data_type() {
        return Arc::clone(field);
    }
    // An extension type names the type it had; it goes with that type.
    let metadata: std::collections::HashMap<String, String> = field
        .metadata()
        .iter()
        .filter(|(k, _)| !k.starts_with("ARROW:extension:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(matches!(field.data_type(), DataType::Union(..)).then(|| {
            (
                arrow_schema::extension::EXTENSION_TYPE_NAME_KEY.to_owned(),
                crate::JSON_EXTENSION.to_owned(),
            )
        }))
        .collect();
    Arc::new(Field::new(field.name(), values.data_type().clone(), true).with_metadata(metadata))
}

/// The logical values of a run-end encoded array.
fn run_values<R: RunEndIndexType>(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let runs = array
        .as_any()
        .downcast_ref::<RunArray<R>>()
        .ok_or_else(|| ArrowError::InvalidArgumentError("not a run array".into()))?;
    let logical: Vec<u32> = (0..u32::try_from(runs.len()).unwrap_or(u32::MAX)).collect();
    let physical = runs.get_physical_indices(&logical)?;
    let indices: UInt32Array = physical
        .into_iter()
        .map(|i| u32::try_from(i).ok())
        .collect();
    arrow_select::take::take(runs.values().as_ref(), &indices, None)
}

/// The rows of `array` (a top-level column) holding a value no writer can
/// render, with one such value described; nested values count for their row.
fn unrenderable(array: &dyn Array) -> Option<(Vec<bool>, String)> {
    fn scan<T: ArrowPrimitiveType<Native = N>, N: arrow_buffer::ArrowNativeType + Into<i64>>(
        array: &dyn Array,
        ok: impl Fn(i64) -> bool,
        what: &str,
    ) -> Option<(Vec<bool>, String)> {
        let values = array.as_primitive::<T>();
        // Every type here can render one interval of values: when the least
        // and the greatest (null slots included) render, all do, and the
        // values need no look one by one.
        let (least, most) = values
            .values()
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &v| {
                let v: i64 = v.into();
                (lo.min(v), hi.max(v))
            });
        if values.is_empty() || (ok(least) && ok(most)) {
            return None;
        }
        let mut bad = vec![false; values.len()];
        let mut first = None;
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v.map(Into::into)
                && !ok(v)
            {
                bad[i] = true;
                first.get_or_insert(v);
            }
        }
        first.map(|v| {
            (
                bad,
                format!("{what} {v} is beyond the range any date or time can be written in"),
            )
        })
    }
    match array.data_type() {
        DataType::Date32 => scan::<Date32Type, _>(
            array,
            |v| as_date::<Date32Type>(v).is_some(),
            "the date (days since 1970)",
        ),
        DataType::Date64 => scan::<Date64Type, _>(
            array,
            |v| as_date::<Date64Type>(v).is_some(),
            "the date (milliseconds since 1970)",
        ),
        DataType::Timestamp(TimeUnit::Second, _) => scan::<TimestampSecondType, _>(
            array,
            |v| as_datetime::<TimestampSecondType>(v).is_some(),
            "the timestamp (seconds since 1970)",
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => scan::<TimestampMillisecondType, _>(
            array,
            |v| as_datetime::<TimestampMillisecondType>(v).is_some(),
            "the timestamp (milliseconds since 1970)",
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => scan::<TimestampMicrosecondType, _>(
            array,
            |v| as_datetime::<TimestampMicrosecondType>(v).is_some(),
            "the timestamp (microseconds since 1970)",
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => scan::<TimestampNanosecondType, _>(
            array,
            |v| as_datetime::<TimestampNanosecondType>(v).is_some(),
            "the timestamp (nanoseconds since 1970)",
        ),
        DataType::Time32(TimeUnit::Second) => scan::<Time32SecondType, _>(
            array,
            |v| as_time::<Time32SecondType>(v).is_some(),
            "the time of day (seconds)",
        ),
        DataType::Time32(_) => scan::<Time32MillisecondType, _>(
            array,
            |v| as_time::<Time32MillisecondType>(v).is_some(),
            "the time of day (milliseconds)",
        ),
        DataType::Time64(TimeUnit::Microsecond) => scan::<Time64MicrosecondType, _>(
            array,
            |v| as_time::<Time64MicrosecondType>(v).is_some(),
            "the time of day (microseconds)",
        ),
        DataType::Time64(_) => scan::<Time64NanosecondType, _>(
            array,
            |v| as_time::<Time64NanosecondType>(v).is_some(),
            "the time of day (nanoseconds)",
        ),
        DataType::Duration(TimeUnit::Second) => scan::<DurationSecondType, _>(
            array,
            |v| as_duration::<DurationSecondType>(v).is_some(),
            "the duration (seconds)",
        ),
        DataType::Duration(TimeUnit::Millisecond) => scan::<DurationMillisecondType, _>(
            array,
            |v| as_duration::<DurationMillisecondType>(v).is_some(),
            "the duration (milliseconds)",
        ),
        DataType::Duration(TimeUnit::Microsecond) => scan::<DurationMicrosecondType, _>(
            array,
            |v| as_duration::<DurationMicrosecondType>(v).is_some(),
            "the duration (microseconds)",
        ),
        DataType::Duration(TimeUnit::Nanosecond) => scan::<DurationNanosecondType, _>(
            array,
            |v| as_duration::<DurationNanosecondType>(v).is_some(),
            "the duration (nanoseconds)",
        ),
        DataType::Struct(_) => {
            let strukt = array.as_struct();
            let mut found: Option<(Vec<bool>, String)> = None;
            for column in strukt.columns() {
                if let Some((bad, why)) = unrenderable(column.as_ref()) {
                    match &mut found {
                        Some((all, _)) => all.iter_mut().zip(bad).for_each(|(a, b)| *a |= b),
                        None => found = Some((bad, why)),
                    }
                }
            }
            found
        }
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::Map(..) => {
            let (values, offsets): (ArrayRef, Vec<usize>) = match array.data_type() {
                DataType::List(_) => {
                    let l = array.as_list::<i32>();
                    (
                        Arc::clone(l.values()),
                        l.offsets().iter().map(|&o| o as usize).collect(),
                    )
                }
                DataType::LargeList(_) => {
                    let l = array.as_list::<i64>();
                    (
                        Arc::clone(l.values()),
                        l.offsets().iter().map(|&o| o as usize).collect(),
                    )
                }
                DataType::FixedSizeList(_, n) => {
                    let l = array.as_fixed_size_list();
                    let n = *n as usize;
                    (
                        Arc::clone(l.values()),
                        (0..=l.len()).map(|i| l.offset() * n + i * n).collect(),
                    )
                }
                _ => {
                    let m = array.as_map();
                    (
                        Arc::new(m.entries().clone()) as ArrayRef,
                        m.offsets().iter().map(|&o| o as usize).collect(),
                    )
                }
            };
            let (inner, why) = unrenderable(values.as_ref())?;
            let bad = offsets
                .windows(2)
                .map(|w| inner.get(w[0]..w[1]).is_some_and(|s| s.iter().any(|&b| b)))
                .collect();
            Some((bad, why))
        }
        _ => None,
    }
}

/// A decoder whose batches are made plain (see the module documentation).
pub struct Plain<D: Decoder + ?Sized = dyn Decoder> {
    inner: Box<D>,
    location: String,
    on_error: OnError,
    /// Records handed on (or skipped here) so far.
    records: u64,
    /// The schema of the batches handed on, once one was.
    schema: Option<arrow_schema::SchemaRef>,
}

impl<D: Decoder + ?Sized> Plain<D> {
    /// Wraps `inner`, which decodes the input at `location`.
    #[must_use]
    pub fn new(inner: Box<D>, location: &str, on_error: OnError) -> Self {
        Self {
            inner,
            location: location.to_owned(),
            on_error,
            records: 0,
            schema: None,
        }
    }

    /// Counts records from `records` on, for a decoder of a part of the
    /// input that starts after that many records: errors name the record
    /// as a read of the whole input would.
    #[must_use]
    pub fn starting_at(mut self, records: u64) -> Self {
        self.records = records;
        self
    }

    /// The decoder wrapped.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Makes the entries `out[from..]` plain.
    fn tidy(&mut self, out: &mut Vec<Decoded>, from: usize) -> Result<(), DecodeError> {
        if out[from..]
            .iter()
            .all(|d| matches!(d, Decoded::Skipped { .. }))
        {
            self.records += out.len() as u64 - from as u64;
            return Ok(());
        }
        let tail: Vec<Decoded> = out.drain(from..).collect();
        for d in tail {
            match d {
                Decoded::Batch(batch) => self.batch(batch, out)?,
                skipped @ Decoded::Skipped { .. } => {
                    self.records += 1;
                    out.push(skipped);
                }
            }
        }
        Ok(())
    }

    fn batch(&mut self, batch: RecordBatch, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let schema = batch.schema();
        let unpacks = schema.fields().iter().any(|f| field_needs(f));
        let batch = if unpacks {
            let columns = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| unpack_field(f, c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.error(0, None, format!("cannot unpack the values: {e}")))?;
            let fields: Vec<FieldRef> = schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| retyped(f, c))
                .collect();
            let plain = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
            RecordBatch::try_new(plain, columns)
                .map_err(|e| self.error(0, None, format!("cannot unpack the values: {e}")))?
        } else {
            batch
        };
        let mut bad_rows: Option<Vec<bool>> = None;
        if batch
            .schema()
            .fields()
            .iter()
            .any(|f| has_temporal(f.data_type()))
        {
            for (i, column) in batch.columns().iter().enumerate() {
                let Some((bad, why)) = unrenderable(column.as_ref()) else {
                    continue;
                };
                if self.on_error == OnError::Fail {
                    let row = bad.iter().position(|&b| b).unwrap_or(0);
                    let name = batch.schema().field(i).name().clone();
                    return Err(self.error(row, Some(name), why));
                }
                match &mut bad_rows {
                    Some(all) => all.iter_mut().zip(&bad).for_each(|(a, b)| *a |= *b),
                    None => bad_rows = Some(bad),
                }
            }
        }
        self.schema = Some(batch.schema());
        let Some(bad) = bad_rows else {
            self.records += batch.num_rows() as u64;
            out.push(Decoded::Batch(batch));
            return Ok(());
        };
        // Under skip: the good runs as batches, each bad row a skip, in order.
        let mut start = 0;
        for (row, &is_bad) in bad.iter().enumerate().chain([(bad.len(), &true)]) {
            if !is_bad {
                continue;
            }
            if row > start {
                out.push(Decoded::Batch(batch.slice(start, row - start)));
                self.records += (row - start) as u64;
            }
            start = row + 1;
            if row < bad.len() {
                let column = batch
                    .columns()
                    .iter()
                    .position(|c| unrenderable(c.slice(row, 1).as_ref()).is_some())
                    .map(|i| batch.schema().field(i).name().clone());
                let error = self.error(
                    0,
                    column,
                    "a value beyond the range any date or time can be written in".into(),
                );
                self.records += 1;
                out.push(Decoded::Skipped {
                    error,
                    excerpt: None,
                });
            }
        }
        Ok(())
    }

    /// An error at row `row` of the batch being made plain.
    fn error(&self, row: usize, column: Option<String>, message: String) -> DecodeError {
        DecodeError {
            location: self.location.clone(),
            position: Position {
                record: Some(self.records + row as u64 + 1),
                column,
                ..Position::default()
            },
            kind: DecodeErrorKind::Type,
            message,
        }
    }
}

impl<D: Decoder + ?Sized> Decoder for Plain<D> {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let from = out.len();
        self.inner.push(bytes, out)?;
        self.tidy(out, from)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let from = out.len();
        self.inner.finish(out)?;
        self.tidy(out, from)
    }

    fn drain(&mut self, out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        let from = out.len();
        let more = self.inner.drain(out)?;
        self.tidy(out, from)?;
        Ok(more)
    }

    fn schema(&self) -> Option<arrow_schema::SchemaRef> {
        let inner = self.inner.schema()?;
        if inner.fields().iter().any(|f| field_needs(f)) {
            // The plain schema is known once a batch was made plain.
            return self.schema.clone().or(Some(inner));
        }
        Some(inner)
    }

    fn total_rows(&self) -> Option<u64> {
        self.inner.total_rows()
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::builder::{Int64Builder, MapBuilder, StringBuilder};
    use arrow_array::types::Int8Type;
    use arrow_array::{
        DictionaryArray, Int32Array, Int64Array, StringArray, Time64NanosecondArray,
        TimestampSecondArray, UnionArray,
    };
    use arrow_buffer::ScalarBuffer;
    use arrow_schema::UnionFields;

    use super::*;

    /// A decoder that hands out fixed batches.
    struct Batches(Vec<RecordBatch>);

    impl Decoder for Batches {
        fn push(&mut self, _: &[u8], _: &mut Vec<Decoded>) -> Result<(), DecodeError> {
            Ok(())
        }
        fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
            out.extend(self.0.drain(..).map(Decoded::Batch));
            Ok(())
        }
        fn schema(&self) -> Option<arrow_schema::SchemaRef> {
            None
        }
    }

    fn plain(
        columns: Vec<(&str, ArrayRef)>,
        on_error: OnError,
    ) -> Result<Vec<Decoded>, DecodeError> {
        let batch = RecordBatch::try_from_iter(columns).expect("batch");
        let mut decoder = Plain::new(Box::new(Batches(vec![batch])), "t.arrow", on_error);
        let mut out = Vec::new();
        decoder.finish(&mut out)?;
        Ok(out)
    }

    fn json(out: &[Decoded]) -> Vec<String> {
        let mut lines = Vec::new();
        for d in out {
            match d {
                Decoded::Batch(b) => {
                    let mut text = Vec::new();
                    let mut writer = arrow_json::WriterBuilder::new()
                        .with_explicit_nulls(true)
                        .build::<_, arrow_json::writer::LineDelimited>(&mut text);
                    writer.write(b).expect("json");
                    writer.finish().expect("json");
                    drop(writer);
                    let text = String::from_utf8(text).expect("utf-8");
                    lines.extend(text.lines().map(str::to_owned));
                }
                Decoded::Skipped { error, .. } => lines.push(format!("skipped: {error}")),
            }
        }
        lines
    }

    #[test]
    fn dictionary_values_that_are_null_stay_null() {
        let keys = arrow_array::Int8Array::from(vec![Some(0), Some(1), None, Some(2)]);
        let values = StringArray::from(vec![Some("a"), None, Some("c")]);
        let dict = DictionaryArray::<Int8Type>::try_new(keys, Arc::new(values)).expect("dict");
        let out = plain(vec![("d", Arc::new(dict) as ArrayRef)], OnError::Fail).expect("plain");
        assert_eq!(
            json(&out),
            [
                r#"{"d":"a"}"#,
                r#"{"d":null}"#,
                r#"{"d":null}"#,
                r#"{"d":"c"}"#
            ]
        );
        let Decoded::Batch(b) = &out[0] else {
            panic!("a batch")
        };
        assert_eq!(b.schema().field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn a_union_becomes_json_text_of_each_values_own_variant() {
        let fields = UnionFields::try_new(
            [0, 1],
            [
                Field::new("n", DataType::Int32, true),
                Field::new("s", DataType::Utf8, true),
            ],
        )
        .expect("fields");
        let union = UnionArray::try_new(
            fields,
            ScalarBuffer::from(vec![0i8, 1, 0]),
            Some(ScalarBuffer::from(vec![0i32, 0, 1])),
            vec![
                Arc::new(Int32Array::from(vec![5, 7])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .expect("union");
        let out = plain(vec![("u", Arc::new(union) as ArrayRef)], OnError::Fail).expect("plain");
        assert_eq!(
            json(&out),
            [r#"{"u":"5"}"#, r#"{"u":"\"x\""}"#, r#"{"u":"7"}"#]
        );
        let Decoded::Batch(b) = &out[0] else {
            panic!("a batch")
        };
        assert_eq!(
            b.schema()
                .field(0)
                .metadata()
                .get(arrow_schema::extension::EXTENSION_TYPE_NAME_KEY),
            Some(&crate::JSON_EXTENSION.to_owned())
        );
    }

    #[test]
    fn map_keys_that_are_not_text_become_text() {
        let mut map = MapBuilder::new(None, Int64Builder::new(), StringBuilder::new());
        map.keys().append_value(1);
        map.values().append_value("one");
        map.keys().append_value(-2);
        map.values().append_null();
        map.append(true).expect("entry");
        map.append(false).expect("null map");
        let out = plain(
            vec![("m", Arc::new(map.finish()) as ArrayRef)],
            OnError::Fail,
        )
        .expect("plain");
        assert_eq!(
            json(&out),
            [r#"{"m":{"1":"one","-2":null}}"#, r#"{"m":null}"#]
        );
    }

    #[test]
    fn zoned_timestamps_are_written_as_utc_instants_and_uuids_as_text() {
        // 1800-01-01T00:00:00Z; Paris was then 9 minutes 21 seconds ahead.
        let when = TimestampSecondArray::from(vec![-5_364_662_400]).with_timezone("Europe/Paris");
        let uuid = arrow_array::FixedSizeBinaryArray::try_from_iter(
            [[
                0x16u8, 0xf7, 0x5b, 0xb9, 0x8e, 0x26, 0x4c, 0x5e, 0x9a, 0x1f, 0, 1, 2, 3, 4, 5,
            ]]
            .into_iter(),
        )
        .expect("uuid");
        let uuid_field = Field::new("id", DataType::FixedSizeBinary(16), true).with_metadata(
            std::collections::HashMap::from([(
                arrow_schema::extension::EXTENSION_TYPE_NAME_KEY.to_owned(),
                UUID_EXTENSION.to_owned(),
            )]),
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("when", when.data_type().clone(), true),
            uuid_field,
        ]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(when), Arc::new(uuid)]).expect("batch");
        let mut decoder = Plain::new(Box::new(Batches(vec![batch])), "t.arrow", OnError::Fail);
        let mut out = Vec::new();
        decoder.finish(&mut out).expect("plain");
        assert_eq!(
            json(&out),
            [r#"{"when":"1800-01-01T00:00:00Z","id":"16f75bb9-8e26-4c5e-9a1f-000102030405"}"#]
        );
        let Decoded::Batch(b) = &out[0] else {
            panic!("a batch")
        };
        assert!(b.schema().field(1).metadata().is_empty());
    }

    #[test]
    fn values_no_writer_can_render_are_refused_or_skipped_never_written() {
        let id: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let when: ArrayRef = Arc::new(TimestampSecondArray::from(vec![0, i64::MAX, 60]));
        let e = plain(
            vec![("id", id.clone()), ("when", when.clone())],
            OnError::Fail,
        )
        .expect_err("refused");
        assert_eq!(e.position.record, Some(2), "{e}");
        assert_eq!(e.position.column.as_deref(), Some("when"), "{e}");
        assert!(e.message.contains("beyond the range"), "{e}");
        let out = plain(vec![("id", id), ("when", when)], OnError::Skip).expect("skipped");
        let lines = json(&out);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], r#"{"id":1,"when":"1970-01-01T00:00:00"}"#);
        assert!(
            lines[1].starts_with("skipped: t.arrow: record 2, column 'when'"),
            "{lines:?}"
        );
        assert_eq!(lines[2], r#"{"id":3,"when":"1970-01-01T00:01:00"}"#);
        // A time of day past midnight.
        let time: ArrayRef = Arc::new(Time64NanosecondArray::from(vec![86_400_000_000_000]));
        let e = plain(vec![("t", time)], OnError::Fail).expect_err("refused");
        assert_eq!(e.position.record, Some(1), "{e}");
    }
}
