//! Formats: how bytes become records.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::DecodeError;
use crate::model::OnError;
use crate::source::ReadAt;

/// Options common to every decoder.
#[derive(Clone, Debug)]
pub struct DecodeOptions {
    /// The input's location (path or URL, secrets redacted), for error messages.
    pub location: String,
    /// The schema to decode with; when `None` it is inferred from a sample.
    pub schema: Option<SchemaRef>,
    /// Records read to infer a schema.
    pub infer_records: usize,
    /// Most records per decoded batch (decoding granularity, not task size).
    pub batch_records: usize,
    /// Largest record accepted, in bytes; a larger one is an error.
    pub max_record_bytes: usize,
    /// What to do with a record that does not decode.
    pub on_error: OnError,
    /// Format-specific options (`key=value`), checked by the format.
    pub options: BTreeMap<String, String>,
    /// The listing entry of the input (size, modification time, version
    /// tag), when it comes from a source; for formats that describe the
    /// file itself.
    pub entry: Option<crate::source::Entry>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            location: String::new(),
            schema: None,
            infer_records: 10_000,
            batch_records: 8_192,
            max_record_bytes: 64 << 20,
            on_error: OnError::Fail,
            options: BTreeMap::new(),
            entry: None,
        }
    }
}

/// What a decoder hands back.
#[derive(Debug)]
pub enum Decoded {
    /// Records, in input order.
    Batch(RecordBatch),
    /// A record dropped under [`OnError::Skip`], in input order.
    Skipped {
        /// Why, and where.
        error: DecodeError,
        /// The start of the record's raw text, when it has text.
        excerpt: Option<String>,
    },
}

/// A push decoder: bytes in, in any split, record batches out.
///
/// # Contract
///
/// - The output (batches concatenated, and skips) is identical however the
///   input is split across [`Decoder::push`] calls.
/// - Memory is bounded by the options (sample, batch, record size), not by
///   the input's size.
/// - Errors carry the location and a [`crate::Position`]; bad input never
///   panics. Under [`OnError::Skip`] a bad record becomes
///   [`Decoded::Skipped`] and decoding goes on where the format can resync.
pub trait Decoder: Send {
    /// Feeds the next bytes of the input; appends whatever became decodable.
    ///
    /// # Errors
    /// The first bad record under [`OnError::Fail`], or input the decoder
    /// cannot resync after.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError>;

    /// Signals the end of the input; appends the rest, or the first of it
    /// for a decoder that reads only once the input is whole (see
    /// [`Decoder::drain`]).
    ///
    /// # Errors
    /// As [`Decoder::push`], and input that ends inside a record.
    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError>;

    /// After [`Decoder::finish`]: appends more output, a bounded amount per
    /// call, and returns whether there may be more. Formats that need the
    /// whole input first (an Arrow IPC file, whose index is at its end) keep
    /// the input aside and read it out here, so memory stays bounded.
    ///
    /// # Errors
    /// As [`Decoder::finish`].
    fn drain(&mut self, _out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        Ok(false)
    }

    /// The schema, once known (after the sample was read or at the first batch).
    fn schema(&self) -> Option<SchemaRef>;

    /// Records in the whole input, when the format records the count (a
    /// Parquet footer) and [`Decoder::finish`] has read it; `None` otherwise.
    fn total_rows(&self) -> Option<u64> {
        None
    }
}

/// A file's first bytes (decompressed when the file is compressed), as
/// formats look at them to say whether the file is theirs (see
/// [`Format::sniff`]).
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
    /// The bytes as text, when they are: UTF-8 with no NUL byte, a leading
    /// byte order mark dropped (and a character cut off at the end).
    pub text: Option<&'a str>,
    /// The first line of the text that is neither blank nor a `#` comment,
    /// trimmed.
    pub first_line: Option<&'a str>,
    /// Whether another such line follows the first.
    pub more_lines: bool,
}

impl<'a> Head<'a> {
    /// Looks at `bytes`, the first bytes of a file.
    #[must_use]
    pub fn new(bytes: &'a [u8]) -> Self {
        let plain = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let text = match std::str::from_utf8(plain) {
            Ok(t) => Some(t),
            // The cut may fall inside a character.
            Err(e) if e.error_len().is_none() => {
                std::str::from_utf8(&plain[..e.valid_up_to()]).ok()
            }
            Err(_) => None,
        }
        .filter(|t| !t.contains('\0'));
        let mut lines = text
            .into_iter()
            .flat_map(str::lines)
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let first_line = lines.next();
        let more_lines = lines.next().is_some();
        Self {
            bytes,
            text,
            first_line,
            more_lines,
        }
    }
}

/// A registered format.
pub trait Format: Send + Sync {
    /// Its registry key and option value, e.g. `csv`.
    fn name(&self) -> &'static str;

    /// File extensions it claims, without the dot.
    fn extensions(&self) -> &'static [&'static str];

    /// One line about the format and its options, for `--help` and listings.
    fn describe(&self) -> &'static str;

    /// Whether the format is text, which can come in another character
    /// encoding than UTF-8 and be transcoded first.
    fn is_text(&self) -> bool {
        false
    }

    /// Whether compressed input is decompressed before the decoder sees
    /// it: true for every format that parses its input, false for one that
    /// passes the bytes on as they are.
    fn decompresses(&self) -> bool {
        true
    }

    /// How sure the first bytes of a file make this format of it: 0, not
    /// this format (the default, for formats detection never picks); 100,
    /// certain (a magic number); in between, how telling the shape of the
    /// text is. Detection picks the format that answers highest.
    fn sniff(&self, _head: &Head<'_>) -> u8 {
        0
    }

    /// A decoder for one input.
    ///
    /// # Errors
    /// When the options are invalid for this format.
    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError>;

    /// Whether the format reads best with random access to its input (see
    /// [`Format::decoder_at`]).
    fn prefers_random_access(&self) -> bool {
        false
    }

    /// For formats that read an index first: a decoder over random access to
    /// the input, which takes no pushed bytes and yields its batches from
    /// [`Decoder::finish`] and [`Decoder::drain`]. `None` for formats that
    /// read forward only (the default); they get [`Format::decoder`].
    fn decoder_at(
        &self,
        _options: &DecodeOptions,
        _input: Arc<dyn ReadAt>,
    ) -> Option<Result<Box<dyn Decoder>, DecodeError>> {
        None
    }
}
