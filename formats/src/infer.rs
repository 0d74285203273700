//! JSON record types: what a sample of JSON records needs, widened until
//! every value fits as it was written, and the strict column decoders that
//! hold later records to it.
//!
//! Every format whose records are JSON objects (JSON, NDJSON, and through
//! them YAML, TOML, XML and MessagePack) infers its schema here. The rules,
//! from narrow to wide:
//!
//! - integers stay exact: `Int64` while every value fits, `UInt64` for
//!   larger non-negative ones, `Decimal128(38, 0)` beyond that, and the
//!   value as written (below) past 38 digits;
//! - integers and fractions together are `Float64`, unless an integer is too
//!   large for a float to hold exactly (beyond 2^53): then as written;
//! - scalars of different types (text with numbers, `"08123"` and `8123`;
//!   booleans with numbers) keep each value as written (below);
//! - lists merge their items, objects their fields (in order of first
//!   appearance, every field nullable);
//! - values of different shapes (a scalar and a list, a list and an object),
//!   or a number beyond a float's range, keep each value as it was written: a `Utf8` column of JSON text marked with the
//!   canonical extension type `arrow.json`, which JSON payloads write back
//!   as the JSON it holds.
//!
//! A record beyond the sample that needs a wider type widens the schema from
//! there on (see [`Kind::merge`]); the decoders here refuse, rather than
//! round, anything their column cannot hold exactly, which is what tells the
//! caller to widen.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::builder::{PrimitiveBuilder, StringBuilder};
use arrow_array::types::{
    ArrowPrimitiveType, Decimal128Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_json::reader::{ArrayDecoder, DecoderContext, DecoderFactory, Tape, TapeElement};
use arrow_schema::extension::EXTENSION_TYPE_NAME_KEY;
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields, Schema};

/// The canonical Arrow extension type of JSON text.
pub const JSON_EXTENSION: &str = "arrow.json";

/// Largest integer magnitude a `Float64` holds exactly.
const FLOAT_EXACT: u128 = 1 << 53;

/// Digits of the largest integer a `Decimal128(38, 0)` holds.
const DECIMAL_DIGITS: usize = 38;

/// What the integers of a column need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ints {
    /// Every value fits an `i64`.
    i64: bool,
    /// Every value fits a `u64`.
    u64: bool,
    /// Every value's magnitude is at most 2^53.
    float_exact: bool,
    /// Most digits of any value.
    digits: usize,
}

impl Ints {
    fn merge(self, other: Self) -> Self {
        Self {
            i64: self.i64 && other.i64,
            u64: self.u64 && other.u64,
            float_exact: self.float_exact && other.float_exact,
            digits: self.digits.max(other.digits),
        }
    }
}

/// The type a JSON value, or a column of them, needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only nulls so far.
    Null,
    /// Booleans.
    Bool,
    /// Integers.
    Int(Ints),
    /// Numbers with a fraction or an exponent (and small integers).
    Float,
    /// Text.
    Text,
    /// Scalars of different types: text with numbers or booleans, or
    /// booleans with numbers.
    Scalars,
    /// Lists of the inner kind.
    List(Box<Kind>),
    /// Objects with these fields, in order of first appearance.
    Object(Vec<(String, Kind)>),
    /// Values kept as the JSON text they were written as.
    Raw,
}

impl Kind {
    fn is_scalar(&self) -> bool {
        matches!(self, Self::Bool | Self::Int(_) | Self::Float | Self::Text)
    }

    /// The narrowest kind both values fit.
    pub(crate) fn merge(self, other: Self) -> Self {
        use Kind::{Bool, Float, Int, List, Null, Object, Raw, Scalars, Text};
        match (self, other) {
            (Null, k) | (k, Null) => k,
            (Raw, _) | (_, Raw) => Raw,
            (Bool, Bool) => Bool,
            (Int(a), Int(b)) => Int(a.merge(b)),
            (Float, Float) => Float,
            (Int(a), Float) | (Float, Int(a)) => {
                if a.float_exact {
                    Float
                } else {
                    Raw
                }
            }
            (Text, Text) => Text,
            (a, b) if a.is_scalar() && b.is_scalar() => Scalars,
            (List(a), List(b)) => List(Box::new(a.merge(*b))),
            (Object(mut a), Object(b)) => {
                for (name, kind) in b {
                    match a.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, have)) => {
                            let old = std::mem::replace(have, Null);
                            *have = old.merge(kind);
                        }
                        None => a.push((name, kind)),
                    }
                }
                Object(a)
            }
            // Scalars, lists and objects together.
            _ => Raw,
        }
    }

    /// The Arrow type of a column of this kind.
    pub(crate) fn data_type(&self) -> DataType {
        match self {
            Self::Null => DataType::Null,
            Self::Bool => DataType::Boolean,
            Self::Int(ints) => {
                if ints.i64 {
                    DataType::Int64
                } else if ints.u64 {
                    DataType::UInt64
                } else {
                    // Only reached within DECIMAL_DIGITS: see `field`.
                    DataType::Decimal128(DECIMAL_DIGITS as u8, 0)
                }
            }
            Self::Float => DataType::Float64,
            Self::Text | Self::Scalars | Self::Raw => DataType::Utf8,
            Self::List(item) => DataType::List(Arc::new(item.field("item"))),
            Self::Object(fields) => {
                DataType::Struct(fields.iter().map(|(n, k)| k.field(n)).collect::<Fields>())
            }
        }
    }

    /// A nullable field of this kind.
    pub(crate) fn field(&self, name: &str) -> Field {
        if let Self::Int(ints) = self
            && !ints.i64
            && !ints.u64
            && ints.digits > DECIMAL_DIGITS
        {
            return Self::Raw.field(name);
        }
        let field = Field::new(name, self.data_type(), true);
        if matches!(self, Self::Raw | Self::Scalars) {
            field.with_metadata(std::collections::HashMap::from([(
                EXTENSION_TYPE_NAME_KEY.to_owned(),
                JSON_EXTENSION.to_owned(),
            )]))
        } else {
            field
        }
    }

    /// The schema of records of this kind (an object), or `None` when the
    /// kind is not an object.
    pub(crate) fn schema(&self) -> Option<Schema> {
        match self {
            Self::Object(fields) => Some(Schema::new(
                fields.iter().map(|(n, k)| k.field(n)).collect::<Vec<_>>(),
            )),
            _ => None,
        }
    }
}

/// The kind of the one JSON value in `bytes` (surrounding whitespace
/// allowed); `None` when the bytes are not one JSON value.
pub(crate) fn kind_of(bytes: &[u8]) -> Option<Kind> {
    let mut scan = Scan { bytes, at: 0 };
    scan.space();
    let kind = scan.value(0)?;
    scan.space();
    (scan.at == bytes.len()).then_some(kind)
}

/// Nesting deeper than this is not scanned (the record is left for the
/// decoder to report).
const MAX_DEPTH: usize = 256;

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Kind> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => {
                self.at += 1;
                let mut fields: Vec<(String, Kind)> = Vec::new();
                self.space();
                if self.eat(b'}').is_some() {
                    return Some(Kind::Object(fields));
                }
                loop {
                    self.space();
                    let name = self.string()?;
                    self.space();
                    self.eat(b':')?;
                    self.space();
                    let kind = self.value(depth + 1)?;
                    // A repeated key: the last value wins, as readers do.
                    match fields.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, have)) => *have = kind,
                        None => fields.push((name, kind)),
                    }
                    self.space();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b'}' => {
                            self.at += 1;
                            return Some(Kind::Object(fields));
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut item = Kind::Null;
                self.space();
                if self.eat(b']').is_some() {
                    return Some(Kind::List(Box::new(item)));
                }
                loop {
                    self.space();
                    item = item.merge(self.value(depth + 1)?);
                    self.space();
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(Kind::List(Box::new(item)));
                        }
                        _ => return None,
                    }
                }
            }
            b'"' => self.string().map(|_| Kind::Text),
            b't' => self.literal(b"true", Kind::Bool),
            b'f' => self.literal(b"false", Kind::Bool),
            b'n' => self.literal(b"null", Kind::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Option<Kind> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| {
            self.at = end;
            kind
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Option<Kind> {
        let start = self.at;
        let negative = self.eat(b'-').is_some();
        let int_start = self.at;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return None;
        }
        let mut integer = true;
        if self.eat(b'.').is_some() {
            integer = false;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        if !integer {
            // A number a float cannot hold (1e400) is kept as written.
            return Some(match text.parse::<f64>() {
                Ok(f) if f.is_finite() => Kind::Float,
                _ => Kind::Raw,
            });
        }
        let magnitude = self.bytes[int_start..self.at]
            .iter()
            .try_fold(0u128, |n, &d| {
                n.checked_mul(10)?.checked_add(u128::from(d - b'0'))
            });
        Some(Kind::Int(Ints {
            i64: text.parse::<i64>().is_ok(),
            u64: !negative && text.parse::<u64>().is_ok(),
            float_exact: magnitude.is_some_and(|m| m <= FLOAT_EXACT),
            digits: int_digits,
        }))
    }

    /// A string, unescaped (names are compared unescaped, as decoders do).
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let start = self.at;
        let end_plain = memchr::memchr2(b'"', b'\\', &self.bytes[start..])? + start;
        if self.bytes[end_plain] == b'"' {
            self.at = end_plain + 1;
            return String::from_utf8(self.bytes[start..end_plain].to_vec()).ok();
        }
        // Has escapes: let serde_json unescape the whole literal.
        let mut i = end_plain;
        loop {
            match *self.bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        self.at = i + 1;
        serde_json::from_slice::<String>(&self.bytes[start - 1..=i]).ok()
    }
}

/// Rewrites every escaped UTF-16 surrogate pair (`\ud83d\ude00`) in JSON
/// text as the UTF-8 of its character; `None` when there is none. The arrow
/// JSON reader decodes pairs of code points U+20000–U+2FFFF,
/// U+40000–U+4FFFF, … U+100000–U+10FFFF to the wrong character (it ORs
/// where it should add), so records never reach it with such escapes.
pub(crate) fn unescape_surrogates(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(k) = bytes.get(i..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        let at = i + k;
        let Some(&next) = bytes.get(at + 1) else {
            break;
        };
        if next != b'u' {
            i = at + 2; // another escape, possibly `\\`
            continue;
        }
        let high = hex4(bytes.get(at + 2..at + 6));
        let low = bytes
            .get(at + 6..at + 8)
            .filter(|e| *e == b"\\u")
            .and_then(|_| hex4(bytes.get(at + 8..at + 12)));
        if let (Some(high @ 0xD800..=0xDBFF), Some(low @ 0xDC00..=0xDFFF)) = (high, low) {
            let code = 0x1_0000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            if let Some(c) = char::from_u32(code) {
                let buf = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                buf.extend_from_slice(&bytes[copied..at]);
                let mut utf8 = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                copied = at + 12;
                i = at + 12;
                continue;
            }
        }
        i = at + 6;
    }
    let mut out = out?;
    out.extend_from_slice(&bytes[copied..]);
    Some(out)
}

fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = std::str::from_utf8(digits?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// Column decoders that refuse what their type cannot hold exactly, where
/// the arrow JSON reader would round it (an integer column given `2.5`
/// reads `2`): integers, `Float64` and integer decimals; and the decoder of
/// [`JSON_EXTENSION`] columns, which keeps any value as its JSON text.
#[derive(Debug)]
pub(crate) struct ExactDecoders;

impl DecoderFactory for ExactDecoders {
    fn make_default_decoder(
        &self,
        _ctx: &DecoderContext,
        field: &FieldRef,
        _is_nullable: bool,
    ) -> Result<Option<Box<dyn ArrayDecoder>>, ArrowError> {
        if field
            .metadata()
            .get(EXTENSION_TYPE_NAME_KEY)
            .is_some_and(|n| n == JSON_EXTENSION)
            && *field.data_type() == DataType::Utf8
        {
            return Ok(Some(Box::new(RawDecoder)));
        }
        Ok(match field.data_type() {
            DataType::Int8 => Some(Box::new(IntDecoder::<Int8Type>::new())),
            DataType::Int16 => Some(Box::new(IntDecoder::<Int16Type>::new())),
            DataType::Int32 => Some(Box::new(IntDecoder::<Int32Type>::new())),
            DataType::Int64 => Some(Box::new(IntDecoder::<Int64Type>::new())),
            DataType::UInt8 => Some(Box::new(IntDecoder::<UInt8Type>::new())),
            DataType::UInt16 => Some(Box::new(IntDecoder::<UInt16Type>::new())),
            DataType::UInt32 => Some(Box::new(IntDecoder::<UInt32Type>::new())),
            DataType::UInt64 => Some(Box::new(IntDecoder::<UInt64Type>::new())),
            DataType::Float64 => Some(Box::new(FloatDecoder)),
            DataType::Decimal128(p, 0) => Some(Box::new(DecimalIntDecoder(*p))),
            _ => None,
        })
    }
}

fn type_error(tape: &Tape<'_>, at: u32, wanted: &str) -> ArrowError {
    let mut shown = String::new();
    write_json(tape, at, &mut shown);
    if shown.len() > 60 {
        let cut = (0..=60)
            .rev()
            .find(|&i| shown.is_char_boundary(i))
            .unwrap_or(0);
        shown.truncate(cut);
        shown.push('…');
    }
    ArrowError::JsonError(format!("expected {wanted}, found {shown}"))
}

/// The text of the number at `at`, when it is one.
fn number_text<'a>(tape: &Tape<'a>, at: u32) -> Option<&'a str> {
    match tape.get(at) {
        TapeElement::Number(idx) => Some(tape.get_string(idx)),
        _ => None,
    }
}

/// An integer written without fraction or exponent, as an `i128`.
fn exact_integer(text: &str) -> Option<i128> {
    // Most integers fit an i64, whose parse is the quickest; one with a
    // fraction or exponent does not parse as an integer at all.
    match text.parse::<i64>() {
        Ok(v) => Some(i128::from(v)),
        Err(_) => text.parse().ok(),
    }
}

struct IntDecoder<T>(std::marker::PhantomData<fn() -> T>);

impl<T> IntDecoder<T> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> ArrayDecoder for IntDecoder<T>
where
    T: ArrowPrimitiveType,
    T::Native: TryFrom<i128>,
{
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let wanted = format!("an integer of type {}", T::DATA_TYPE);
        let column = exact_column::<T>(tape, pos, |p| {
            number_text(tape, p)
                .and_then(exact_integer)
                .and_then(|v| T::Native::try_from(v).ok())
                .ok_or_else(|| type_error(tape, p, &wanted))
        })?;
        Ok(Arc::new(column))
    }
}

/// A column of `pos`'s values, each made by `value` (nulls stay null).
fn exact_column<T: ArrowPrimitiveType>(
    tape: &Tape<'_>,
    pos: &[u32],
    value: impl Fn(u32) -> Result<T::Native, ArrowError>,
) -> Result<arrow_array::PrimitiveArray<T>, ArrowError> {
    let mut out = PrimitiveBuilder::<T>::with_capacity(pos.len());
    for &p in pos {
        if tape.get(p) == TapeElement::Null {
            out.append_null();
        } else {
            out.append_value(value(p)?);
        }
    }
    Ok(out.finish())
}

struct FloatDecoder;

impl ArrayDecoder for FloatDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let column = exact_column::<Float64Type>(tape, pos, |p| {
            number_text(tape, p)
                .and_then(|text| {
                    // An integer a float would round is not taken.
                    if let Some(i) = exact_integer(text) {
                        return (i.unsigned_abs() <= FLOAT_EXACT).then_some(i as f64);
                    }
                    text.parse::<f64>().ok().filter(|f| f.is_finite())
                })
                .ok_or_else(|| type_error(tape, p, "a number a float holds"))
        })?;
        Ok(Arc::new(column))
    }
}

/// `Decimal128(p, 0)`: integers of up to `p` digits.
struct DecimalIntDecoder(u8);

impl ArrayDecoder for DecimalIntDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let bound = 10i128.checked_pow(u32::from(self.0)).unwrap_or(i128::MAX);
        let column = exact_column::<Decimal128Type>(tape, pos, |p| {
            number_text(tape, p)
                .and_then(exact_integer)
                .filter(|v| v.unsigned_abs() < bound.unsigned_abs())
                .ok_or_else(|| type_error(tape, p, "an integer"))
        })?;
        Ok(Arc::new(column.with_precision_and_scale(self.0, 0)?))
    }
}

/// Any value, as its JSON text.
struct RawDecoder;

impl ArrayDecoder for RawDecoder {
    fn decode(&mut self, tape: &Tape<'_>, pos: &[u32]) -> Result<ArrayRef, ArrowError> {
        let mut out = StringBuilder::with_capacity(pos.len(), pos.len() * 8);
        let mut text = String::new();
        for &p in pos {
            if tape.get(p) == TapeElement::Null {
                out.append_null();
                continue;
            }
            text.clear();
            write_json(tape, p, &mut text);
            out.append_value(&text);
        }
        Ok(Arc::new(out.finish()))
    }
}

/// Writes the value at `at` as compact JSON text; returns the index after it.
fn write_json(tape: &Tape<'_>, at: u32, out: &mut String) -> u32 {
    use std::fmt::Write as _;
    match tape.get(at) {
        element @ (TapeElement::StartObject(end) | TapeElement::StartList(end)) => {
            let object = matches!(element, TapeElement::StartObject(_));
            out.push(if object { '{' } else { '[' });
            let mut i = at + 1;
            while i < end {
                if i > at + 1 {
                    out.push(',');
                }
                i = write_json(tape, i, out);
                if object {
                    out.push(':');
                    i = write_json(tape, i, out);
                }
            }
            out.push(if object { '}' } else { ']' });
            end + 1
        }
        TapeElement::String(idx) => {
            let quoted = serde_json::to_string(tape.get_string(idx)).unwrap_or_default();
            out.push_str(&quoted);
            at + 1
        }
        TapeElement::Number(idx) => {
            out.push_str(tape.get_string(idx));
            at + 1
        }
        TapeElement::True => {
            out.push_str("true");
            at + 1
        }
        TapeElement::False => {
            out.push_str("false");
            at + 1
        }
        TapeElement::I64(high) => {
            if let TapeElement::I32(low) = tape.get(at + 1) {
                let _ = write!(out, "{}", (i64::from(high) << 32) | i64::from(low as u32));
            }
            at + 2
        }
        TapeElement::I32(v) => {
            let _ = write!(out, "{v}");
            at + 1
        }
        TapeElement::F64(high) => {
            if let TapeElement::F32(low) = tape.get(at + 1) {
                let v = f64::from_bits((u64::from(high) << 32) | u64::from(low));
                let _ = write!(
                    out,
                    "{}",
                    serde_json::Number::from_f64(v).map_or("null".into(), |n| n.to_string())
                );
            }
            at + 2
        }
        TapeElement::F32(v) => {
            let v = f64::from(f32::from_bits(v));
            let _ = write!(
                out,
                "{}",
                serde_json::Number::from_f64(v).map_or("null".into(), |n| n.to_string())
            );
            at + 1
        }
        _ => {
            out.push_str("null");
            at + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Kind {
        kind_of(text.as_bytes()).expect("valid JSON")
    }

    fn column_type(records: &[&str], field: &str) -> DataType {
        let merged = records
            .iter()
            .map(|r| kind(r))
            .fold(Kind::Null, Kind::merge);
        let schema = merged.schema().expect("objects");
        schema
            .field_with_name(field)
            .expect("field")
            .data_type()
            .clone()
    }

    #[test]
    fn integers_stay_exact() {
        assert_eq!(
            column_type(&[r#"{"a":1}"#, r#"{"a":-2}"#], "a"),
            DataType::Int64
        );
        assert_eq!(
            column_type(&[r#"{"a":1}"#, r#"{"a":18446744073709551615}"#], "a"),
            DataType::UInt64
        );
        assert_eq!(
            column_type(&[r#"{"a":-1}"#, r#"{"a":18446744073709551615}"#], "a"),
            DataType::Decimal128(38, 0)
        );
        assert_eq!(
            column_type(&[r#"{"a":1234567890123456789012345678901234567890}"#], "a"),
            DataType::Utf8
        );
        assert_eq!(
            column_type(&[r#"{"a":1}"#, r#"{"a":2.5}"#], "a"),
            DataType::Float64
        );
        // 2^53 + 1 with a float: kept as written.
        let merged = kind(r#"{"a":9007199254740993}"#).merge(kind(r#"{"a":0.5}"#));
        assert_eq!(merged, Kind::Object(vec![("a".into(), Kind::Raw)]));
    }

    #[test]
    fn mixed_values_widen() {
        // Text with a number: each kept as written (JSON text).
        let zips = kind(r#"{"zip":"08123"}"#).merge(kind(r#"{"zip":8123}"#));
        assert_eq!(zips, Kind::Object(vec![("zip".into(), Kind::Scalars)]));
        let schema = zips.schema().expect("object");
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        assert!(
            schema
                .field(0)
                .metadata()
                .contains_key(EXTENSION_TYPE_NAME_KEY)
        );
        let list = kind(r#"{"a":[1,"x"]}"#);
        assert_eq!(
            list,
            Kind::Object(vec![("a".into(), Kind::List(Box::new(Kind::Scalars)))])
        );
        let merged = kind(r#"{"a":1}"#).merge(kind(r#"{"a":[1]}"#));
        assert_eq!(merged, Kind::Object(vec![("a".into(), Kind::Raw)]));
        let schema = merged.schema().expect("object");
        assert_eq!(
            schema
                .field(0)
                .metadata()
                .get(EXTENSION_TYPE_NAME_KEY)
                .map(String::as_str),
            Some(JSON_EXTENSION)
        );
        let merged = kind(r#"{"a":{"x":1}}"#).merge(kind(r#"{"a":{"y":true},"b":null}"#));
        assert_eq!(
            merged,
            Kind::Object(vec![
                (
                    "a".into(),
                    Kind::Object(vec![
                        (
                            "x".into(),
                            Kind::Int(Ints {
                                i64: true,
                                u64: true,
                                float_exact: true,
                                digits: 1
                            })
                        ),
                        ("y".into(), Kind::Bool)
                    ])
                ),
                ("b".into(), Kind::Null)
            ])
        );
    }

    #[test]
    fn invalid_json_has_no_kind() {
        for bad in [
            "{",
            "{\"a\":}",
            "[1,]",
            "01",
            "1.",
            "tru",
            "{\"a\":1} x",
            "\"\\u12\"",
        ] {
            assert_eq!(kind_of(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            kind_of(br#" {"\u00e9":1} "#),
            Some(Kind::Object(vec![(
                "é".into(),
                Kind::Int(Ints {
                    i64: true,
                    u64: true,
                    float_exact: true,
                    digits: 1
                })
            )]))
        );
    }

    #[test]
    fn surrogate_pairs_become_characters() {
        let text = br#"{"a":"\udbc0\udc00 \ud840\udc00 \ud83d\ude00 \\ud840\\udc00 \u00e9"}"#;
        let fixed = unescape_surrogates(text).expect("has pairs");
        let value: serde_json::Value = serde_json::from_slice(&fixed).expect("json");
        let want: serde_json::Value = serde_json::from_slice(text).expect("json");
        assert_eq!(value, want);
        assert!(
            String::from_utf8(fixed)
                .expect("utf-8")
                .contains('\u{100000}')
        );
        assert_eq!(unescape_surrogates(br#"{"a":"\u00e9 \\u"}"#), None);
        // Cut or broken escapes are left for the reader to refuse.
        for broken in [
            &br#"["\uD800\u"]"#[..],
            br#"["\uD800\u1"]"#,
            br#"["\ud800"#,
            br#""\u"#,
            br"\",
        ] {
            assert_eq!(unescape_surrogates(broken), None, "{broken:?}");
        }
    }
}
