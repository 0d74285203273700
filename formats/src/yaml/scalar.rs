//! What a YAML scalar means: the YAML 1.2 core schema for plain scalars,
//! the standard tags (`!!str`, `!!int`, …) where given, and the JSON text of
//! the result.

use std::borrow::Cow;

/// Longest octal or hexadecimal integer (in digits) turned into decimal
/// digits; a longer one stays text, which keeps the work of converting it
/// small.
const MAX_RADIX_DIGITS: usize = 1024;

/// A node's tag, as far as reading it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tag {
    /// No tag: plain scalars are resolved by the core schema.
    None,
    /// The non-specific tag `!`: a scalar is text.
    NonSpecific,
    /// `!!str`.
    Str,
    /// `!!int`.
    Int,
    /// `!!float`.
    Float,
    /// `!!bool`.
    Bool,
    /// `!!null`.
    Null,
    /// `!!binary`: base64, written as hex text.
    Binary,
    /// `!!map`.
    Map,
    /// `!!seq`.
    Seq,
    /// `!!set`: a mapping whose keys are the members.
    Set,
    /// Any other tag (an application's own, `!!timestamp`, `!!omap`): the
    /// value is read as if it had none.
    Other,
}

/// The standard tags' prefix.
const YAML_ORG: &str = "tag:yaml.org,2002:";

impl Tag {
    /// The tag of a parser's node.
    pub(super) fn of(tag: Option<&saphyr_parser::Tag>) -> Tag {
        let Some(tag) = tag else {
            return Tag::None;
        };
        if tag.handle.is_empty() && tag.suffix == "!" {
            return Tag::NonSpecific;
        }
        let standard = if tag.handle == YAML_ORG {
            Some(tag.suffix.as_str())
        } else if tag.handle.is_empty() {
            // A verbatim tag, `!<tag:yaml.org,2002:str>`.
            tag.suffix.strip_prefix(YAML_ORG)
        } else {
            None
        };
        match standard {
            Some("str") => Tag::Str,
            Some("int") => Tag::Int,
            Some("float") => Tag::Float,
            Some("bool") => Tag::Bool,
            Some("null") => Tag::Null,
            Some("binary") => Tag::Binary,
            Some("map") => Tag::Map,
            Some("seq") => Tag::Seq,
            Some("set") => Tag::Set,
            _ => Tag::Other,
        }
    }

    /// The tag as a byte, to store events of anchored nodes compactly.
    pub(super) fn to_byte(self) -> u8 {
        self as u8
    }

    /// The tag [`Tag::to_byte`] gave `byte`.
    pub(super) fn from_byte(byte: u8) -> Tag {
        const ALL: [Tag; 12] = [
            Tag::None,
            Tag::NonSpecific,
            Tag::Str,
            Tag::Int,
            Tag::Float,
            Tag::Bool,
            Tag::Null,
            Tag::Binary,
            Tag::Map,
            Tag::Seq,
            Tag::Set,
            Tag::Other,
        ];
        ALL.get(usize::from(byte)).copied().unwrap_or(Tag::Other)
    }

    /// How the tag is written, for messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Tag::None | Tag::Other => "",
            Tag::NonSpecific => "!",
            Tag::Str => "!!str",
            Tag::Int => "!!int",
            Tag::Float => "!!float",
            Tag::Bool => "!!bool",
            Tag::Null => "!!null",
            Tag::Binary => "!!binary",
            Tag::Map => "!!map",
            Tag::Seq => "!!seq",
            Tag::Set => "!!set",
        }
    }

    /// What the tag is for, for messages.
    pub(super) fn fits(self) -> &'static str {
        match self {
            Tag::Map | Tag::Set => "mappings",
            Tag::Seq => "sequences",
            Tag::None | Tag::NonSpecific | Tag::Other => "any node",
            _ => "scalars",
        }
    }

    /// Whether a mapping may carry this tag.
    pub(super) fn fits_mapping(self) -> bool {
        matches!(
            self,
            Tag::None | Tag::NonSpecific | Tag::Map | Tag::Set | Tag::Other
        )
    }

    /// Whether a sequence may carry this tag.
    pub(super) fn fits_sequence(self) -> bool {
        matches!(self, Tag::None | Tag::NonSpecific | Tag::Seq | Tag::Other)
    }
}

/// A scalar's value.
#[derive(Debug, PartialEq)]
pub(super) enum Value<'a> {
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer as decimal digits (with a `-` when negative), exact
    /// whatever its size.
    Int(Cow<'a, str>),
    /// A float (with its text, for a key).
    Float(f64, &'a str),
    /// Text.
    Text(Cow<'a, str>),
}

/// The value of a scalar written as `text`, plain (unquoted, not a block
/// scalar) or not, with `tag`; the error says why the tag does not fit.
pub(super) fn resolve(text: &str, plain: bool, tag: Tag) -> Result<Value<'_>, String> {
    let bad = |what: &str| {
        Err(format!(
            "{} is not {what} (it is tagged {})",
            quoted(text),
            tag.name()
        ))
    };
    match tag {
        Tag::Str | Tag::NonSpecific => Ok(Value::Text(Cow::Borrowed(text))),
        Tag::None | Tag::Other if plain => Ok(core(text)),
        Tag::None | Tag::Other => Ok(Value::Text(Cow::Borrowed(text))),
        Tag::Null => match core(text) {
            Value::Null => Ok(Value::Null),
            _ => bad("null"),
        },
        Tag::Bool => match core(text) {
            v @ Value::Bool(_) => Ok(v),
            _ => bad("a boolean"),
        },
        Tag::Int => match int(text) {
            Some(digits) => Ok(Value::Int(digits)),
            None => bad("an integer"),
        },
        Tag::Float => match float(text) {
            Some(v) => Ok(Value::Float(v, text)),
            None => match int(text) {
                Some(digits) => Ok(Value::Float(digits.parse().unwrap_or(f64::NAN), text)),
                None => bad("a number"),
            },
        },
        Tag::Binary => match base64_hex(text) {
            Some(hex) => Ok(Value::Text(Cow::Owned(hex))),
            None => bad("base64"),
        },
        Tag::Map | Tag::Seq | Tag::Set => Err(format!(
            "the scalar {} is tagged {}, a tag for {}",
            quoted(text),
            tag.name(),
            tag.fits()
        )),
    }
}

/// `text` in quotes for a message, cut short when long.
pub(super) fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        format!("'{cut}…'")
    } else {
        format!("'{cut}'")
    }
}

/// A plain scalar by the YAML 1.2 core schema.
fn core(text: &str) -> Value<'_> {
    match text.as_bytes().first() {
        None => Value::Null,
        Some(b'~') if text.len() == 1 => Value::Null,
        Some(b'n' | b'N') if matches!(text, "null" | "Null" | "NULL") => Value::Null,
        Some(b't' | b'T') if matches!(text, "true" | "True" | "TRUE") => Value::Bool(true),
        Some(b'f' | b'F') if matches!(text, "false" | "False" | "FALSE") => Value::Bool(false),
        Some(b'0'..=b'9' | b'-' | b'+' | b'.') => {
            if let Some(digits) = int(text) {
                Value::Int(digits)
            } else if let Some(v) = float(text) {
                Value::Float(v, text)
            } else {
                Value::Text(Cow::Borrowed(text))
            }
        }
        _ => Value::Text(Cow::Borrowed(text)),
    }
}

/// An integer of the core schema (`[-+]?[0-9]+`, `0o[0-7]+`,
/// `0x[0-9a-fA-F]+`) as decimal digits without leading zeros.
fn int(text: &str) -> Option<Cow<'_, str>> {
    if let Some(digits) = text.strip_prefix("0o") {
        return radix(digits, 8);
    }
    if let Some(digits) = text.strip_prefix("0x") {
        return radix(digits, 16);
    }
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() {
        Cow::Borrowed("0")
    } else if !negative {
        Cow::Borrowed(trimmed)
    } else if trimmed.len() == digits.len() {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("-{trimmed}"))
    })
}

/// Octal or hexadecimal digits as decimal digits.
fn radix(digits: &str, radix: u32) -> Option<Cow<'static, str>> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some(Cow::Borrowed("0"));
    }
    if let Ok(v) = u128::from_str_radix(trimmed, radix) {
        return Some(Cow::Owned(v.to_string()));
    }
    if trimmed.len() > MAX_RADIX_DIGITS {
        return None;
    }
    // Limbs of nine decimal digits, least significant first.
    const LIMB: u64 = 1_000_000_000;
    let mut limbs: Vec<u64> = vec![0];
    for c in trimmed.chars() {
        let mut carry = u64::from(c.to_digit(radix)?);
        for limb in &mut limbs {
            let v = *limb * u64::from(radix) + carry;
            *limb = v % LIMB;
            carry = v / LIMB;
        }
        while carry > 0 {
            limbs.push(carry % LIMB);
            carry /= LIMB;
        }
    }
    let mut out = String::new();
    let mut rest = limbs.iter().rev();
    if let Some(top) = rest.next() {
        out.push_str(&top.to_string());
    }
    for limb in rest {
        out.push_str(&format!("{limb:09}"));
    }
    Some(Cow::Owned(out))
}

/// A float of the core schema: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`,
/// `[-+]?\.inf` and `\.nan` (in the three casings).
fn float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let b = text.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let digits = |i: &mut usize| {
        let from = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - from
    };
    let whole = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        let fraction = digits(&mut i);
        if whole == 0 && fraction == 0 {
            return None;
        }
    } else if whole == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    text.parse().ok()
}

/// Base64 (white space ignored) as hex text.
fn base64_hex(text: &str) -> Option<String> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(text.len() * 3 / 2);
    let mut push = |byte: u32| {
        hex.push(char::from(HEX[(byte >> 4 & 0xF) as usize]));
        hex.push(char::from(HEX[(byte & 0xF) as usize]));
    };
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0usize);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            padding += 1;
            continue;
        }
        if padding > 0 {
            return None;
        }
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            push((acc >> bits) & 0xFF);
            acc &= (1 << bits) - 1;
        }
    }
    // What is left over must be padding bits, as many `=` as fit them.
    let quantum = match bits {
        0 => 0,
        2 => 1,
        4 => 2,
        _ => return None,
    };
    if padding > 2 || (padding != 0 && padding != quantum) || acc & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(hex)
}

/// Writes `value` as JSON to `out`.
pub(super) fn write_json(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(digits) => out.extend_from_slice(digits.as_bytes()),
        // NaN and infinities, which JSON lacks, become null.
        Value::Float(v, _) => write_f64(*v, out),
        Value::Text(text) => write_str(text, out),
    }
}

/// Writes a float as JSON (null when not finite).
fn write_f64(v: f64, out: &mut Vec<u8>) {
    // Writing a float or a string into a vector cannot fail.
    let _ = serde_json::to_writer(out, &v);
}

/// Writes `text` as a JSON string.
pub(super) fn write_str(text: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, text);
}

/// A value as a field name.
pub(super) fn key_text<'a>(value: Value<'a>) -> Cow<'a, str> {
    match value {
        Value::Null => Cow::Borrowed("null"),
        Value::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        Value::Int(digits) => digits,
        Value::Float(v, text) if !v.is_finite() => Cow::Borrowed(text),
        Value::Float(v, _) => {
            let mut out = Vec::new();
            write_f64(v, &mut out);
            Cow::Owned(String::from_utf8_lossy(&out).into_owned())
        }
        Value::Text(text) => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str, plain: bool, tag: Tag) -> String {
        let v = resolve(text, plain, tag).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut out = Vec::new();
        write_json(&v, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        for (text, expected) in [
            ("", "null"),
            ("~", "null"),
            ("null", "null"),
            ("Null", "null"),
            ("NULL", "null"),
            ("nULL", "\"nULL\""),
            ("true", "true"),
            ("True", "true"),
            ("TRUE", "true"),
            ("False", "false"),
            ("yes", "\"yes\""),
            ("on", "\"on\""),
            ("0", "0"),
            ("-0", "0"),
            ("+12", "12"),
            ("007", "7"),
            ("-007", "-7"),
            ("0o17", "15"),
            ("0x1F", "31"),
            ("0xff", "255"),
            ("0b101", "\"0b101\""),
            ("0o8", "\"0o8\""),
            ("1_000", "\"1_000\""),
            ("1.5", "1.5"),
            ("-1.", "-1.0"),
            (".5", "0.5"),
            ("+.5", "0.5"),
            ("1e3", "1000.0"),
            ("1.5E-2", "0.015"),
            ("1e", "\"1e\""),
            (".", "\".\""),
            ("-", "\"-\""),
            ("1.2.3", "\"1.2.3\""),
            (".inf", "null"),
            ("-.Inf", "null"),
            (".NaN", "null"),
            (".nan.", "\".nan.\""),
            ("inf", "\"inf\""),
            ("nan", "\"nan\""),
            ("1e999", "null"),
            ("12:30", "\"12:30\""),
            ("2001-12-14", "\"2001-12-14\""),
            ("x", "\"x\""),
        ] {
            assert_eq!(json(text, true, Tag::None), expected, "{text}");
        }
    }

    #[test]
    fn integers_beyond_64_bits_stay_exact() {
        assert_eq!(
            json("123456789012345678901234567890", true, Tag::None),
            "123456789012345678901234567890"
        );
        assert_eq!(
            json("-9223372036854775809", true, Tag::None),
            "-9223372036854775809"
        );
        // 2^128 and 16^40, past u128.
        assert_eq!(
            json("0x100000000000000000000000000000000", true, Tag::None),
            "340282366920938463463374607431768211456"
        );
        assert_eq!(
            json(&format!("0x1{}", "0".repeat(40)), true, Tag::None),
            "1461501637330902918203684832716283019655932542976"
        );
        // Too long to convert: text.
        let long = format!("0x{}", "f".repeat(MAX_RADIX_DIGITS + 1));
        assert_eq!(json(&long, true, Tag::None), format!("\"{long}\""));
    }

    #[test]
    fn quoted_scalars_and_the_non_specific_tag_are_text() {
        assert_eq!(json("1", false, Tag::None), "\"1\"");
        assert_eq!(json("null", false, Tag::Other), "\"null\"");
        assert_eq!(json("true", true, Tag::NonSpecific), "\"true\"");
        assert_eq!(json("12", true, Tag::Str), "\"12\"");
        // An application's own tag: the value as if untagged.
        assert_eq!(json("12", true, Tag::Other), "12");
    }

    #[test]
    fn standard_tags_are_respected() {
        assert_eq!(json("0x10", true, Tag::Int), "16");
        assert_eq!(json("12", false, Tag::Int), "12");
        assert_eq!(json("3", true, Tag::Float), "3.0");
        assert_eq!(json(".inf", true, Tag::Float), "null");
        assert_eq!(json("True", false, Tag::Bool), "true");
        assert_eq!(json("", true, Tag::Null), "null");
        assert_eq!(json("~", false, Tag::Null), "null");
        for (text, tag, says) in [
            (
                "abc",
                Tag::Int,
                "'abc' is not an integer (it is tagged !!int)",
            ),
            ("1.5", Tag::Int, "not an integer"),
            ("x", Tag::Float, "not a number"),
            ("yes", Tag::Bool, "not a boolean"),
            ("0", Tag::Null, "not null"),
            ("a", Tag::Map, "tagged !!map, a tag for mappings"),
            ("@@", Tag::Binary, "not base64"),
        ] {
            let e = resolve(text, true, tag).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn binary_is_hex_text() {
        assert_eq!(
            json("R0lG\n ODlh\n", true, Tag::Binary),
            "\"4749463839 61\"".replace(' ', "")
        );
        assert_eq!(json("YQ==", true, Tag::Binary), "\"61\"");
        assert_eq!(json("YWI=", true, Tag::Binary), "\"6162\"");
        assert_eq!(json("", true, Tag::Binary), "\"\"");
        for bad in ["Y", "YQ=", "YQ===", "YR==", "Y=Q=", "****"] {
            assert!(resolve(bad, true, Tag::Binary).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_the_values_text() {
        let key = |text| key_text(resolve(text, true, Tag::None).expect("value")).into_owned();
        assert_eq!(key(""), "null");
        assert_eq!(key("~"), "null");
        assert_eq!(key("TRUE"), "true");
        assert_eq!(key("0x10"), "16");
        assert_eq!(key("1.50"), "1.5");
        assert_eq!(key(".inf"), ".inf");
        assert_eq!(key("name"), "name");
    }
}
