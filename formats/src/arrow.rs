//! Apache Arrow IPC, in both of its framings: the stream format (decoded
//! message by message as bytes arrive) and the file format (whose index sits
//! at the end, so the input is spooled to a temporary file, size-capped, and
//! read back batch by batch). Buffers compressed with LZ4 or zstd decode too.

use std::fs::File;

use arrow_buffer::Buffer;
use arrow_ipc::reader::{FileReader, StreamDecoder};
use arrow_schema::{ArrowError, SchemaRef};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::source::{FileAt, ReadAt};
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

/// A compressed buffer starts with its uncompressed length, which the IPC
/// reader allocates up front; a buffer declaring more is refused.
const MAX_BUFFER: i64 = 1 << 30;

/// A message body longer than this is refused before it is buffered.
const MAX_BODY: i64 = 16 << 30;

/// Checks the buffers of a record batch (or dictionary) message whose
/// flatbuffer header is `meta` and body `body_len` bytes long: each must lie
/// inside the body, and a compressed one must not declare too much;
/// `body8(offset)` gives the 8 bytes at an offset of the body.
fn check_message(
    meta: &[u8],
    body_len: u64,
    body8: &mut dyn FnMut(u64) -> Option<[u8; 8]>,
) -> Result<(), String> {
    let message =
        arrow_ipc::root_as_message(meta).map_err(|e| format!("invalid message header: {e}"))?;
    let batch = message
        .header_as_record_batch()
        .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
    let Some(batch) = batch else {
        return Ok(());
    };
    let compressed = batch.compression().is_some();
    for b in batch.buffers().iter().flatten() {
        let inside = u64::try_from(b.offset())
            .ok()
            .zip(u64::try_from(b.length()).ok())
            .and_then(|(o, l)| o.checked_add(l))
            .is_some_and(|end| end <= body_len);
        if !inside {
            return Err(format!(
                "a buffer (offset {}, length {}) lies outside its {body_len}-byte message body",
                b.offset(),
                b.length()
            ));
        }
        if !compressed || b.length() < 8 {
            continue;
        }
        let word = u64::try_from(b.offset())
            .ok()
            .and_then(&mut *body8)
            .ok_or("a buffer lies outside its message body")?;
        let declared = i64::from_le_bytes(word);
        if declared > MAX_BUFFER {
            return Err(format!(
                "a compressed buffer declares {declared} bytes uncompressed, more than the \
                 {} MiB allowed",
                MAX_BUFFER >> 20
            ));
        }
    }
    Ok(())
}

/// The length of the prefix and the flatbuffer header of the message at the
/// start of `buf`, once the prefix is there.
fn message_prefix(buf: &[u8]) -> Option<(usize, i32)> {
    let word = |i: usize| {
        buf.get(i..i + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match word(0)? {
        -1 => Some((8, word(4)?)), // continuation marker, then the length
        n => Some((4, n)),         // before Arrow 0.15: the length alone
    }
}

/// A problem found in an Arrow IPC file: the part it lies in (`record
/// batch 2`), if any, and what is wrong.
type Problem = (Option<String>, String);

/// What is refused in data written big-endian.
const BIG_ENDIAN: &str = "the data was written on a big-endian machine, and big-endian Arrow IPC \
                          data is not supported (rewrite it little-endian, e.g. with pyarrow)";

/// Checks every record batch and dictionary of an Arrow IPC file through its
/// footer, and the byte order of its schema; a file whose footer cannot be
/// read is left to the reader to refuse.
fn check_file(input: &dyn ReadAt) -> Result<(), Problem> {
    let size = input.size();
    let mut tail = [0u8; 10];
    if size < 10 || input.read_exact_at(size - 10, &mut tail).is_err() {
        return Ok(());
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    let Some(start) = size.checked_sub(10 + footer_len) else {
        return Ok(());
    };
    let mut footer = vec![0u8; usize::try_from(footer_len).unwrap_or(0)];
    if input.read_exact_at(start, &mut footer).is_err() {
        return Ok(());
    }
    let Ok(footer) = arrow_ipc::root_as_footer(&footer) else {
        return Ok(());
    };
    if footer
        .schema()
        .is_some_and(|s| s.endianness() == arrow_ipc::Endianness::Big)
    {
        return Err((None, BIG_ENDIAN.to_owned()));
    }
    let batches = footer.recordBatches().into_iter().flatten();
    let dictionaries = footer.dictionaries().into_iter().flatten();
    let named = batches
        .enumerate()
        .map(|(i, b)| (format!("record batch {}", i + 1), b))
        .chain(
            dictionaries
                .enumerate()
                .map(|(i, b)| (format!("dictionary batch {}", i + 1), b)),
        );
    for (part, block) in named {
        let problem = |m: String| (Some(part.clone()), m);
        let (Ok(offset), Ok(meta_len)) = (
            u64::try_from(block.offset()),
            usize::try_from(block.metaDataLength()),
        ) else {
            return Err(problem(
                "the footer gives it a negative offset or length".into(),
            ));
        };
        if meta_len > MAX_SCHEMA_MESSAGE as usize {
            return Err(problem(format!(
                "its message header of {meta_len} bytes is too long"
            )));
        }
        let mut meta = vec![0u8; meta_len];
        input
            .read_exact_at(offset, &mut meta)
            .map_err(|_| problem("the footer places it past the end of the file".into()))?;
        let Some((prefix, _)) = message_prefix(&meta) else {
            return Err(problem("it is too short for its message header".into()));
        };
        let body = offset + meta_len as u64;
        let body_len = u64::try_from(block.bodyLength()).unwrap_or(u64::MAX);
        check_message(&meta[prefix..], body_len, &mut |at| {
            let mut word = [0u8; 8];
            input
                .read_exact_at(body + at, &mut word)
                .ok()
                .map(|()| word)
        })
        .map_err(problem)?;
    }
    Ok(())
}

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

    fn sniff(&self, head: &Head<'_>) -> u8 {
        // The file magic, or a stream's first message (its continuation marker).
        if head.bytes.starts_with(FILE_MAGIC) || head.bytes.starts_with(&[0xFF; 4]) {
            100
        } else {
            0
        }
    }
}

enum State {
    /// The first bytes, until they tell the framing apart.
    Sniff(Vec<u8>),
    Stream {
        decoder: Box<StreamDecoder>,
        /// Offset of the first byte the decoder has not yet consumed.
        consumed: u64,
        /// Record batch and dictionary batch messages seen, for messages.
        batches: usize,
        dictionaries: usize,
        /// The message being gathered: each is checked whole before the
        /// decoder gets it.
        pending: Vec<u8>,
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
                batches: 0,
                dictionaries: 0,
                pending: Vec::new(),
            };
        }
        self.feed(&head, out)
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.read += bytes.len() as u64;
        match &mut self.state {
            State::Stream {
                decoder,
                consumed,
                batches,
                dictionaries,
                pending,
            } => {
                pending.extend_from_slice(bytes);
                loop {
                    let at = *consumed;
                    let fail = |m: String| {
                        DecodeError::at_byte(&self.location, at, DecodeErrorKind::Syntax, m)
                    };
                    let Some((prefix, meta_len)) = message_prefix(pending) else {
                        return Ok(());
                    };
                    let meta_len = usize::try_from(meta_len)
                        .ok()
                        .filter(|&n| n <= MAX_SCHEMA_MESSAGE as usize)
                        .ok_or_else(|| {
                            fail(format!(
                                "invalid Arrow IPC stream: a message header of {meta_len} bytes"
                            ))
                        })?;
                    let mut part = None;
                    let total = if meta_len == 0 {
                        prefix // the end-of-stream marker
                    } else {
                        let Some(meta) = pending.get(prefix..prefix + meta_len) else {
                            return Ok(());
                        };
                        let message = arrow_ipc::root_as_message(meta).map_err(|e| {
                            fail(format!(
                                "invalid Arrow IPC stream: a message header is corrupt ({e})"
                            ))
                        })?;
                        if message
                            .header_as_schema()
                            .is_some_and(|s| s.endianness() == arrow_ipc::Endianness::Big)
                        {
                            return Err(fail(BIG_ENDIAN.to_owned()));
                        }
                        let counter = if message.header_as_record_batch().is_some() {
                            Some((&mut *batches, "record batch"))
                        } else if message.header_as_dictionary_batch().is_some() {
                            Some((&mut *dictionaries, "dictionary batch"))
                        } else {
                            None
                        };
                        let body = message.bodyLength();
                        let body = usize::try_from(body)
                            .ok()
                            .filter(|&n| n as i64 <= MAX_BODY)
                            .ok_or_else(|| {
                                fail(format!("invalid Arrow IPC stream: a body of {body} bytes"))
                            })?;
                        let total = prefix + meta_len + body;
                        if pending.len() < total {
                            return Ok(());
                        }
                        // The message is whole: it counts.
                        if let Some((count, what)) = counter {
                            *count += 1;
                            part = Some(format!("{what} {count}"));
                        }
                        let start = prefix + meta_len;
                        check_message(meta, body as u64, &mut |off| {
                            let off = start.checked_add(usize::try_from(off).ok()?)?;
                            pending.get(off..off.checked_add(8)?)?.try_into().ok()
                        })
                        .map_err(|m| {
                            let m = format!("invalid Arrow IPC stream: {m}");
                            match &part {
                                Some(p) => DecodeError::in_part(
                                    &self.location,
                                    p.clone(),
                                    at,
                                    DecodeErrorKind::Syntax,
                                    m,
                                ),
                                None => fail(m),
                            }
                        })?;
                        total
                    };
                    let rest = pending.split_off(total);
                    let mut buffer = Buffer::from_vec(std::mem::replace(pending, rest));
                    while !buffer.is_empty() {
                        let decoded =
                            crate::guard(|| decoder.decode(&mut buffer)).unwrap_or_else(|why| {
                                Err(ArrowError::IpcError(format!("the reader stopped ({why})")))
                            });
                        match decoded {
                            Ok(Some(batch)) => out.push(Decoded::Batch(batch)),
                            Ok(None) => {}
                            Err(e) => {
                                let m = format!("invalid Arrow IPC stream: {}", clean(&e));
                                return Err(match &part {
                                    Some(p) => DecodeError::in_part(
                                        &self.location,
                                        p.clone(),
                                        at,
                                        DecodeErrorKind::Syntax,
                                        m,
                                    ),
                                    None => fail(m),
                                });
                            }
                        }
                    }
                    *consumed += total as u64;
                }
            }
            State::Spool(spool) => spool.push(bytes),
            State::Sniff(_) | State::File { .. } | State::Done => Ok(()),
        }
    }
}

/// Arrow's error text in the user's terms: no variant prefix, no dump of
/// arrow's own structures.
fn clean(e: &ArrowError) -> String {
    let text = e.to_string();
    let mut text = text.as_str();
    for prefix in [
        "Invalid argument error: ",
        "Ipc error: ",
        "Io error: ",
        "External error: ",
        "Parser error: ",
        "Schema error: ",
        "Compute error: ",
        "Not yet implemented: ",
        "Memory error: ",
        "Cast error: ",
    ] {
        text = text.strip_prefix(prefix).unwrap_or(text);
    }
    let mut text = text.trim_end_matches('.').to_owned();
    // A dump of a field or type (`Field { name: … }`) says nothing to the user.
    if let Some(i) = text.find(" {").or_else(|| text.find("([")) {
        let cut = text[..i].rfind([' ', '(', ':']).map_or(0, |j| j + 1);
        text.truncate(cut);
        text = text.trim_end_matches([' ', ':', '(']).to_owned() + " (details left out)";
    }
    crate::text::clean_arrow_message(&text).0
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
            State::Stream {
                mut decoder,
                pending,
                consumed,
                batches,
                dictionaries,
            } => {
                if !pending.is_empty() {
                    return Err(self.error(
                        DecodeErrorKind::Truncated,
                        consumed,
                        "the Arrow IPC stream ends inside a message".into(),
                    ));
                }
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
                    batches,
                    dictionaries,
                    pending: Vec::new(),
                };
                Ok(())
            }
            State::Spool(spool) => {
                let (file, size) = spool.into_file()?;
                let copy = file.try_clone().map_err(|e| {
                    self.error(
                        DecodeErrorKind::Options,
                        0,
                        format!("cannot reread the copy: {e}"),
                    )
                })?;
                let copy = FileAt::with_size(copy, size);
                check_file(&copy).map_err(|(part, m)| match part {
                    Some(part) => DecodeError::in_part(
                        &self.location,
                        part,
                        self.read,
                        DecodeErrorKind::Syntax,
                        format!("invalid Arrow IPC file: {m}"),
                    ),
                    None => self.error(DecodeErrorKind::Syntax, 0, m),
                })?;
                let mut magic = [0u8; 6];
                let complete = size >= 6
                    && copy.read_exact_at(size - 6, &mut magic).is_ok()
                    && magic == FILE_MAGIC;
                if !complete {
                    return Err(self.error(
                        DecodeErrorKind::Truncated,
                        self.read,
                        "the Arrow IPC file ends without its footer (no ARROW1 at the end): \
                         is the file complete?"
                            .into(),
                    ));
                }
                let reader = FileReader::try_new(file, None).map_err(|e| {
                    let why = clean(&e);
                    if why.contains("endianness") {
                        return self.error(DecodeErrorKind::Syntax, 0, BIG_ENDIAN.to_owned());
                    }
                    let why = match why {
                        // A seek before the start of the file.
                        io if io.contains("os error") => "it points outside the file".to_owned(),
                        why => why,
                    };
                    DecodeError::in_part(
                        &self.location,
                        "footer",
                        self.read,
                        DecodeErrorKind::Syntax,
                        format!("the Arrow IPC file's footer is corrupt ({why})"),
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
        let next = crate::guard(|| reader.next()).unwrap_or_else(|why| {
            Some(Err(ArrowError::IpcError(format!(
                "the reader stopped ({why})"
            ))))
        });
        match next {
            Some(Ok(batch)) => {
                out.push(Decoded::Batch(batch));
                Ok(true)
            }
            Some(Err(e)) => Err(DecodeError::in_part(
                &self.location,
                format!("record batch {index}"),
                self.read,
                DecodeErrorKind::Syntax,
                format!("invalid Arrow IPC file: {}", clean(&e)),
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
