//! Helpers the format tests share.

use rota_core::DecodeError;
use rota_core::format::{Decoded, Decoder};

/// Feeds `bytes` to `decoder` in pieces of `split`, ends the input and
/// drains it; returns the decoded rows as JSON lines.
pub(crate) fn rows_as_json(
    decoder: &mut dyn Decoder,
    bytes: &[u8],
    split: usize,
) -> Result<String, DecodeError> {
    let out = rota_formats::drive::decode_all(decoder, bytes, split.max(1))?;
    let mut text = Vec::new();
    let mut w = arrow_json::LineDelimitedWriter::new(&mut text);
    for item in &out {
        if let Decoded::Batch(b) = item {
            w.write(b).expect("json");
        }
    }
    w.finish().expect("json");
    drop(w);
    Ok(String::from_utf8(text).expect("utf-8"))
}
