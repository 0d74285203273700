//! Apache Arrow IPC, in both of its framings: the stream format (decoded
//! message by message as bytes arrive) and the file format (whose index sits
//! at the end, so the input is spooled to a temporary file, size-capped, and
//! read back batch by batch). Buffers compressed with LZ4 or zstd decode too.

use std::fs::File;

use arrow_buffer::Buffer;
use arrow_ipc::reader::{FileReader, StreamDecoder};
use arrow_schema::{ArrowError, SchemaRef};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format};
use rota_core::{DecodeError, DecodeErrorKind};

use crate::options::FormatOptions;
use crate::spool::{DEFAULT_MAX_SPOOL, Spool};

/// The magic bytes that open (and close) an Arrow IPC file.
const FILE_MAGIC: &[u8] = b"ARROW1";

/// Bytes the framing is told from: the file magic, or a stream's first
/// message header (continuation marker and length).
const HEAD_BYTES: usize = 8;

/// A stream's first message is its schema; a longer one means the input is
/// not an Arrow IPC stream (and would otherwise be buffered whole).
const MAX_SCHEMA_MESSAGE: u32 = 16 << 20;

/// Arrow IPC, stream or file format.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArrowFormat;

impl Format for ArrowFormat {
    fn name(&self) -> &'static str {
        "arrow"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["arrow", "arrows", "ipc", "feather"]
    }

    fn describe(&self) -> &'static str {
        "Apache Arrow IPC, stream or file format (told apart by the magic bytes), \
         LZ4/zstd buffers too; options: max_spool=BYTES (file format, default 64 GiB)"
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let mut opts = FormatOptions::new(options, &["max_spool"]);
        let max_spool = opts.u64("max_spool", DEFAULT_MAX_SPOOL)?;
        opts.no_schema("Arrow IPC data carries its own schema")?;
        opts.finish()?;
        Ok(Box::new(ArrowDecoder {
            location: options.location.clone(),
            max_spool,
            read: 0,
            state: State::Sniff(Vec::with_capacity(HEAD_BYTES)),
        }))
    }
}

enum State {
    /// The first bytes, until they tell the framing apart.
    Sniff(Vec<u8>),
    Stream {
        decoder: Box<StreamDecoder>,
        /// Offset of the first byte the decoder has not yet consumed.
        consumed: u64,
    },
    /// File format, spooling.
    Spool(Spool),
    /// File format, reading back; `next` counts batches returned.
    File {
        reader: Box<FileReader<File>>,
        next: usize,
    },
    Done,
}

struct ArrowDecoder {
    location: String,
    max_spool: u64,
    /// Bytes pushed so far.
    read: u64,
    state: State,
}

impl ArrowDecoder {
    fn error(&self, kind: DecodeErrorKind, at: u64, message: String) -> DecodeError {
        DecodeError::at_byte(&self.location, at, kind, message)
    }

    /// Chooses the framing from the first bytes and feeds them on.
    fn start(&mut self, head: Vec<u8>, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.read -= head.len() as u64;
        if head.starts_with(FILE_MAGIC) {
            self.state = State::Spool(Spool::new(
                &self.location,
                self.max_spool,
                "an Arrow IPC file",
            )?);
        } else {
            let word = |i: usize| {
                head.get(i..i + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            };
            // A message is prefixed by its length, after a continuation
            // marker since Arrow 0.15.
            let length = match word(0) {
                Some(u32::MAX) => word(4),
                other => other,
            };
            if length.is_some_and(|n| n > MAX_SCHEMA_MESSAGE) {
                return Err(self.error(
                    DecodeErrorKind::Syntax,
                    0,
                    "not Arrow IPC data: it starts with neither the file magic nor a \
                     stream's schema message"
                        .into(),
                ));
            }
            self.state = State::Stream {
                decoder: Box::new(StreamDecoder::new()),
                consumed: 0,
            };
        }
        self.feed(&head, out)
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.read += bytes.len() as u64;
        match &mut self.state {
            State::Stream { decoder, consumed } => {
                let mut buffer = Buffer::from(bytes);
                let start = *consumed;
                while !buffer.is_empty() {
                    let before = buffer.len();
                    let result = decoder.decode(&mut buffer);
                    *consumed += (before - buffer.len()) as u64;
                    match result {
                        Ok(Some(batch)) => out.push(Decoded::Batch(batch)),
                        Ok(None) => {}
                        Err(e) => {
                            let at = *consumed;
                            return Err(self.error(
                                DecodeErrorKind::Syntax,
                                at.max(start),
                                format!("invalid Arrow IPC stream: {}", clean(&e)),
                            ));
                        }
                    }
                }
                Ok(())
            }
            State::Spool(spool) => spool.push(bytes),
            State::Sniff(_) | State::File { .. } | State::Done => Ok(()),
        }
    }
}

/// Arrow's error text without its variant prefix.
fn clean(e: &ArrowError) -> String {
    crate::text::clean_arrow_message(&e.to_string()).0
}

impl Decoder for ArrowDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if let State::Sniff(head) = &mut self.state {
            head.extend_from_slice(bytes);
            self.read += bytes.len() as u64;
            if head.len() < HEAD_BYTES {
                return Ok(());
            }
            let head = std::mem::take(head);
            return self.start(head, out);
        }
        self.feed(bytes, out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if let State::Sniff(head) = &mut self.state {
            let head = std::mem::take(head);
            if head.is_empty() {
                self.state = State::Done;
                return Ok(()); // an empty file holds no records
            }
            self.start(head, out)?;
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Stream { mut decoder, .. } => {
                let schema = decoder.schema();
                decoder.finish().map_err(|e| {
                    self.error(
                        DecodeErrorKind::Truncated,
                        self.read,
                        format!("the Arrow IPC stream ends inside a message: {}", clean(&e)),
                    )
                })?;
                if schema.is_none() {
                    return Err(self.error(
                        DecodeErrorKind::Truncated,
                        self.read,
                        "the Arrow IPC stream ends before its schema".into(),
                    ));
                }
                self.state = State::Stream {
                    decoder,
                    consumed: self.read,
                };
                Ok(())
            }
            State::Spool(spool) => {
                let (file, _) = spool.into_file()?;
                let reader = FileReader::try_new(file, None).map_err(|e| {
                    self.error(
                        DecodeErrorKind::Syntax,
                        self.read,
                        format!(
                            "invalid Arrow IPC file (its footer at the end is missing or \
                             corrupt; is the file complete?): {}",
                            clean(&e)
                        ),
                    )
                })?;
                self.state = State::File {
                    reader: Box::new(reader),
                    next: 0,
                };
                self.drain(out).map(|_| ())
            }
            other => {
                self.state = other;
                Ok(())
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        let State::File { reader, next } = &mut self.state else {
            return Ok(false);
        };
        *next += 1;
        let index = *next;
        match reader.next() {
            Some(Ok(batch)) => {
                out.push(Decoded::Batch(batch));
                Ok(true)
            }
            Some(Err(e)) => Err(self.error(
                DecodeErrorKind::Syntax,
                self.read,
                format!(
                    "record batch {index} of the Arrow IPC file is invalid: {}",
                    clean(&e)
                ),
            )),
            None => Ok(false),
        }
    }

    fn schema(&self) -> Option<SchemaRef> {
        match &self.state {
            State::Stream { decoder, .. } => decoder.schema(),
            State::File { reader, .. } => Some(reader.schema()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_is_no_records() {
        let mut d = ArrowFormat
            .decoder(&DecodeOptions::default())
            .expect("decoder");
        let mut out = Vec::new();
        d.finish(&mut out).expect("finish");
        assert!(out.is_empty());
        assert!(!d.drain(&mut out).expect("drain"));
    }
}
