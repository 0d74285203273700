//! Text in other character encodings than UTF-8: Latin-1, Windows-1252,
//! UTF-16 and the rest of the WHATWG Encoding Standard's labels, transcoded
//! to UTF-8 on the way into a text format's decoder.
//!
//! Malformed input (an unpaired UTF-16 surrogate, an odd final byte) is an
//! error with its offset in the undecoded bytes, never replaced silently.

use std::fmt;

use encoding_rs::{DecoderResult, Encoding, UTF_8};
use rota_core::format::{Decoded, Decoder};
use rota_core::{DecodeError, DecodeErrorKind};

/// The encoding a label names (`latin1`, `windows-1252`, `utf-16`,
/// `utf-16be`, `shift_jis`, …; case-insensitive).
///
/// # Errors
/// An unknown label, with a hint of the common ones.
pub fn text_encoding(label: &str) -> Result<&'static Encoding, String> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
        format!(
            "unknown text encoding '{label}' (try utf-8, latin1, windows-1252, utf-16, \
             utf-16le or utf-16be)"
        )
    })
}

/// Transcoded UTF-8 produced per step at most.
const SCRATCH_BYTES: usize = 256 << 10;

/// A decoder that turns text of another encoding into UTF-8 for `inner`.
pub struct Transcoding {
    inner: Box<dyn Decoder>,
    location: String,
    encoding: &'static Encoding,
    decoder: encoding_rs::Decoder,
    /// Input bytes consumed so far.
    read: u64,
    scratch: Vec<u8>,
}

impl fmt::Debug for Transcoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcoding")
            .field("location", &self.location)
            .field("encoding", &self.encoding.name())
            .finish_non_exhaustive()
    }
}

impl Transcoding {
    /// Wraps `inner` (a text format's decoder for the input at `location`)
    /// to read text in `encoding`. A byte order mark at the start overrides
    /// `encoding` and is dropped, as are UTF-16's.
    pub fn new(inner: Box<dyn Decoder>, location: &str, encoding: &'static Encoding) -> Self {
        Self {
            inner,
            location: location.to_owned(),
            encoding,
            decoder: encoding.new_decoder(),
            read: 0,
            scratch: vec![0; SCRATCH_BYTES],
        }
    }

    fn run(
        &mut self,
        mut input: &[u8],
        last: bool,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        loop {
            let (result, taken, made) =
                self.decoder
                    .decode_to_utf8_without_replacement(input, &mut self.scratch, last);
            self.read += taken as u64;
            input = &input[taken..];
            let name = self.decoder.encoding().name();
            self.inner
                .push(&self.scratch[..made], out)
                .map_err(|mut e| {
                    e.message
                        .push_str(&format!(" (position in the text decoded from {name})"));
                    e
                })?;
            match result {
                DecoderResult::InputEmpty => return Ok(()),
                DecoderResult::OutputFull => {}
                DecoderResult::Malformed(bad, after) => {
                    let at = self.read - u64::from(bad) - u64::from(after);
                    return Err(DecodeError::at_byte(
                        &self.location,
                        at,
                        DecodeErrorKind::Encoding,
                        format!(
                            "{bad} byte(s) that are not valid {name} text (is --encoding right?)"
                        ),
                    ));
                }
            }
        }
    }
}

impl Decoder for Transcoding {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.run(bytes, false, out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.run(&[], true, out)?;
        self.inner.finish(out)
    }

    fn drain(&mut self, out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        self.inner.drain(out)
    }

    fn schema(&self) -> Option<arrow_schema::SchemaRef> {
        self.inner.schema()
    }

    fn total_rows(&self) -> Option<u64> {
        self.inner.total_rows()
    }
}

/// Whether `encoding` needs no transcoding (UTF-8 goes to decoders as is).
pub fn is_utf8(encoding: &'static Encoding) -> bool {
    encoding == UTF_8
}
