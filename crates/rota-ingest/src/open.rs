//! Opening one file for decoding, once: its source is resolved and its bytes
//! opened a single time, and the first bytes read tell both its compression
//! and, when neither `--format` nor its name says, its format. Those bytes
//! are decoded first, not read again.

use std::sync::Arc;

use rota_core::format::{Decoder, Format};
use rota_core::source::{ByteStream, Entry, Source};
use rota_formats::Compression;
use rota_formats::compression::MAGIC_BYTES;
use rota_formats::detect::SNIFF_BYTES;

use crate::error::IngestError;
use crate::pipeline::IngestRequest;

/// Bytes of compressed input decompressed at a time while sniffing, so that
/// sniffing stops soon after it has enough.
const SNIFF_PIECE: usize = 4 << 10;

/// One file, opened for decoding.
pub(crate) struct Opened {
    /// Its format.
    pub(crate) format: Arc<dyn Format>,
    /// The decoder: its batches made plain, its text transcoded when an
    /// encoding was given; it takes decompressed bytes.
    pub(crate) decoder: Box<dyn Decoder>,
    /// The bytes already read from `stream`, to decode before the rest.
    pub(crate) head: Vec<u8>,
    /// The rest of the file's bytes, unless the decoder reads it in place.
    pub(crate) stream: Option<Box<dyn ByteStream>>,
    /// The compression the bytes are in, for the caller to undo.
    pub(crate) compression: Option<Compression>,
    /// The file's size when the decoder reads it in place.
    pub(crate) in_place_bytes: u64,
}

/// Opens `entry`: as `explicit` when given, else as its name says, else as
/// its first bytes (decompressed if need be) show.
pub(crate) async fn open_file(
    req: &IngestRequest,
    entry: &Entry,
    explicit: Option<&Arc<dyn Format>>,
) -> Result<Opened, IngestError> {
    let source = req.sources.for_location(&entry.location)?;
    let named = explicit
        .cloned()
        .or_else(|| rota_formats::by_extension(&entry.relative));
    let suffix = Compression::from_suffix(&entry.relative).map(|(c, _)| c);
    // Formats that read an index first read the source in place when it
    // allows; anything compressed is streamed.
    if let Some(format) = &named
        && format.prefers_random_access()
        && suffix.is_none()
        && let Some(opened) = in_place(req, entry, source.as_ref(), format).await?
    {
        return Ok(opened);
    }
    let mut stream = source.open(entry, None).await?;
    let want = if named.is_some() {
        MAGIC_BYTES
    } else {
        SNIFF_BYTES
    };
    let mut head = Vec::new();
    while head.len() < want {
        match stream.next_chunk().await? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
    }
    let passes_through = named.as_ref().is_some_and(|f| !f.decompresses());
    let compression = if passes_through {
        None
    } else {
        Compression::detect(&head, suffix)
            .map_err(|why| IngestError::Invalid(format!("{}: {why}", entry.location)))?
    };
    let format = match named {
        Some(format) => format,
        None => {
            let plain;
            let look: &[u8] = match compression {
                Some(c) => {
                    plain = decompressed_head(c, &head, entry, req.decompression);
                    &plain
                }
                None => &head[..head.len().min(SNIFF_BYTES)],
            };
            let format = rota_formats::detect::sniff(look).ok_or_else(|| {
                IngestError::Invalid(format!(
                    "{}: cannot tell the format from the file name or its first bytes; pass \
                     --format (one of: {})",
                    entry.location,
                    rota_formats::names().join(", ")
                ))
            })?;
            if format.prefers_random_access()
                && compression.is_none()
                && let Some(opened) = in_place(req, entry, source.as_ref(), &format).await?
            {
                return Ok(opened);
            }
            format
        }
    };
    let decoder = finish_decoder(req, entry, &format, format.decoder(&options(req, entry))?)?;
    Ok(Opened {
        format,
        decoder,
        head,
        stream: Some(stream),
        compression,
        in_place_bytes: 0,
    })
}

/// The decoder options for `entry`.
fn options(req: &IngestRequest, entry: &Entry) -> rota_core::format::DecodeOptions {
    let mut opts = req.decode.clone();
    opts.location.clone_from(&entry.location);
    opts.entry = Some(entry.clone());
    opts
}

/// `format`'s decoder over random access to `entry`, when the source has it.
async fn in_place(
    req: &IngestRequest,
    entry: &Entry,
    source: &dyn Source,
    format: &Arc<dyn Format>,
) -> Result<Option<Opened>, IngestError> {
    let Some(input) = source.random_access(entry).await? else {
        return Ok(None);
    };
    let size = input.size();
    let decoder = format
        .decoder_at(&options(req, entry), input)
        .ok_or_else(|| {
            IngestError::Invalid(format!(
                "format {} offers no random-access decoder",
                format.name()
            ))
        })??;
    Ok(Some(Opened {
        format: Arc::clone(format),
        decoder: finish_decoder(req, entry, format, decoder)?,
        head: Vec::new(),
        stream: None,
        compression: None,
        in_place_bytes: size,
    }))
}

/// Wraps a format's decoder: transcoding first when an encoding other than
/// UTF-8 was given, then plain batches.
fn finish_decoder(
    req: &IngestRequest,
    entry: &Entry,
    format: &Arc<dyn Format>,
    mut decoder: Box<dyn Decoder>,
) -> Result<Box<dyn Decoder>, IngestError> {
    if let Some(label) = &req.encoding {
        let encoding = rota_formats::text_encoding(label).map_err(IngestError::Invalid)?;
        if !rota_formats::encoding::is_utf8(encoding) {
            if !format.is_text() {
                return Err(IngestError::Invalid(format!(
                    "{}: --encoding applies to text formats, and {} is not one",
                    entry.location,
                    format.name()
                )));
            }
            decoder = Box::new(rota_formats::Transcoding::new(
                decoder,
                &entry.location,
                encoding,
            ));
        }
    }
    Ok(Box::new(rota_formats::plain::Plain::new(
        decoder,
        &entry.location,
        req.decode.on_error,
    )))
}

/// Up to [`SNIFF_BYTES`] of `head` decompressed, a small piece at a time so
/// that no more is made than sniffing needs. A corrupt start gives what came
/// before it; the decoder reports the corruption later.
fn decompressed_head(
    compression: Compression,
    head: &[u8],
    entry: &Entry,
    limits: rota_formats::Limits,
) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(mut unpack) = rota_formats::Decompressor::new(compression, &entry.location, limits)
    else {
        return out;
    };
    for piece in head.chunks(SNIFF_PIECE) {
        let pushed = unpack.push(piece, &mut |bytes: &[u8]| {
            let room = SNIFF_BYTES.saturating_sub(out.len());
            out.extend_from_slice(&bytes[..bytes.len().min(room)]);
            Ok(())
        });
        if pushed.is_err() || out.len() >= SNIFF_BYTES {
            break;
        }
    }
    out
}
