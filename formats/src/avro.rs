//! Apache Avro object container files.
//!
//! The header (magic, metadata with the writer's schema and codec, sync
//! marker) and then each block (record count, byte size, data, sync marker)
//! are framed here as bytes arrive, so memory holds one block at a time and a
//! file cut short is noticed, never read as a shorter file. A block is
//! decompressed here too (deflate, snappy, zstandard, bzip2, xz), its output
//! capped, and its records are decoded one by one into Arrow by `arrow-avro`,
//! which maps the logical types (decimal, date, time, timestamps, uuid) and
//! makes a union with null a nullable column. Every error names the block,
//! its byte offset and the record.

use std::fmt::Write as _;
use std::io::Read;
use std::sync::Arc;

use arrow_array::{Array, FixedSizeBinaryArray, RecordBatch, StringArray};

use arrow_avro::reader::{Decoder as AvroDecoder, DecoderMode, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, SchemaStore};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rota_core::format::{DecodeOptions, Decoded, Decoder, Format, Head};
use rota_core::{DecodeError, DecodeErrorKind, OnError};

use crate::options::FormatOptions;

/// The four bytes that open an object container file.
const MAGIC: &[u8] = b"Obj\x01";

/// Length of the sync marker that ends the header and every block.
const SYNC_LEN: usize = 16;

/// Avro object container files.
#[derive(Clone, Copy, Debug, Default)]
pub struct AvroFormat;

impl Format for AvroFormat {
    fn name(&self) -> &'static str {
        "avro"
    }

    fn extensions(&self) -> &'static [&'static str] {
        &["avro"]
    }

    fn describe(&self) -> &'static str {
        "Apache Avro object container files, codecs null, deflate, snappy, zstandard, bzip2 \
         and xz; logical types (decimal, date, time, timestamp, uuid) map to Arrow types; \
         no options (a block may be at most the record size limit, 64 MiB)"
    }

    fn decoder(&self, options: &DecodeOptions) -> Result<Box<dyn Decoder>, DecodeError> {
        let opts = FormatOptions::new(options, &[]);
        opts.no_schema("an Avro file carries its own schema")?;
        opts.finish()?;
        Ok(Box::new(AvroFileDecoder {
            location: options.location.clone(),
            max_block: options.max_record_bytes,
            batch_records: options.batch_records.max(1),
            skip: options.on_error == OnError::Skip,
            buf: Vec::new(),
            base: 0,
            state: State::Header,
            blocks: 0,
            records: 0,
        }))
    }

    fn sniff(&self, head: &Head<'_>) -> u8 {
        if head.bytes.starts_with(b"Obj\x01") {
            100
        } else {
            0
        }
    }
}

/// How a file's blocks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Null,
    Deflate,
    Snappy,
    Zstandard,
    Bzip2,
    Xz,
}

impl Codec {
    fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"null" => Self::Null,
            b"deflate" => Self::Deflate,
            b"snappy" => Self::Snappy,
            b"zstandard" => Self::Zstandard,
            b"bzip2" => Self::Bzip2,
            b"xz" => Self::Xz,
            _ => return None,
        })
    }

    /// The block's data decompressed, refusing output beyond `limit` bytes.
    fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
        match self {
            Self::Null => Ok(data.to_vec()),
            Self::Deflate => read_capped(flate2::read::DeflateDecoder::new(data), limit),
            Self::Zstandard => {
                let reader = zstd::stream::read::Decoder::with_buffer(data)
                    .map_err(|e| format!("zstandard: {e}"))?;
                read_capped(reader, limit)
            }
            Self::Bzip2 => read_capped(bzip2::read::BzDecoder::new(data), limit),
            Self::Xz => read_capped(liblzma::read::XzDecoder::new(data), limit),
            Self::Snappy => {
                // Snappy data, then the CRC-32 of the uncompressed bytes, big-endian.
                let Some((body, crc)) = data.split_last_chunk::<4>() else {
                    return Err("a snappy block shorter than its checksum".into());
                };
                let len = snap::raw::decompress_len(body).map_err(|e| format!("snappy: {e}"))?;
                if len > limit {
                    return Err(too_large(limit));
                }
                let plain = snap::raw::Decoder::new()
                    .decompress_vec(body)
                    .map_err(|e| format!("snappy: {e}"))?;
                if crc32fast::hash(&plain) != u32::from_be_bytes(*crc) {
                    return Err("the snappy block's checksum does not match its data".into());
                }
                Ok(plain)
            }
        }
    }
}

fn too_large(limit: usize) -> String {
    format!("the block decompresses to more than the limit of {limit} bytes")
}

/// Everything `reader` yields, or an error past `limit` bytes.
fn read_capped(reader: impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt compressed data: {e}"))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

/// A zigzag variable-length long at the start of `buf`: `Ok(None)` when
/// more bytes are needed.
fn read_long(buf: &[u8]) -> Result<Option<(i64, usize)>, String> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            #[allow(clippy::cast_possible_wrap)] // zigzag decoding reinterprets the bits
            let v = (value >> 1) as i64 ^ -((value & 1) as i64);
            return Ok(Some((v, i + 1)));
        }
    }
    if buf.len() >= 10 {
        return Err("a variable-length number longer than 10 bytes".into());
    }
    Ok(None)
}

/// A non-negative length or count, at most `max`.
fn read_len(buf: &[u8], what: &str, max: usize) -> Result<Option<(usize, usize)>, String> {
    let Some((v, n)) = read_long(buf)? else {
        return Ok(None);
    };
    match usize::try_from(v) {
        Ok(v) if v <= max => Ok(Some((v, n))),
        Ok(_) => Err(format!("{what} {v} is over the limit of {max}")),
        Err(_) => Err(format!("negative {what} {v}")),
    }
}

/// The parts of a file header this decoder needs.
struct Header {
    schema: String,
    codec: Codec,
    sync: [u8; SYNC_LEN],
}

/// Parses the header at the start of `buf`: `Ok(None)` when more bytes are
/// needed, else the header and its length.
fn parse_header(buf: &[u8], max: usize) -> Result<Option<(Header, usize)>, String> {
    macro_rules! need {
        ($e:expr) => {
            match $e? {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let prefix = &buf[..buf.len().min(MAGIC.len())];
    if !MAGIC.starts_with(prefix) {
        return Err(
            "not an Avro object container file (the magic bytes Obj\\x01 are missing)".into(),
        );
    }
    if buf.len() < MAGIC.len() {
        return Ok(None);
    }
    let mut at = MAGIC.len();
    let mut schema = None;
    let mut codec = Codec::Null;
    loop {
        let (count, n) = need!(read_long(&buf[at..]));
        at += n;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            let (_, n) = need!(read_long(&buf[at..]));
            at += n;
        }
        for _ in 0..count.unsigned_abs() {
            let (klen, n) = need!(read_len(&buf[at..], "metadata key length", max));
            at += n;
            let key = need!(Ok::<_, String>(buf.get(at..at + klen)));
            at += klen;
            let (vlen, n) = need!(read_len(&buf[at..], "metadata value length", max));
            at += n;
            let value = need!(Ok::<_, String>(buf.get(at..at + vlen)));
            at += vlen;
            match key {
                b"avro.schema" => {
                    let text = std::str::from_utf8(value)
                        .map_err(|_| "the schema in the header is not UTF-8".to_owned())?;
                    schema = Some(text.to_owned());
                }
                b"avro.codec" => {
                    codec = Codec::from_name(value).ok_or_else(|| {
                        format!(
                            "unsupported codec '{}' (supported: null, deflate, snappy, \
                             zstandard, bzip2, xz)",
                            String::from_utf8_lossy(value)
                        )
                    })?;
                }
                _ => {}
            }
            if at > max {
                return Err(format!(
                    "the header is larger than the limit of {max} bytes"
                ));
            }
        }
    }
    let sync = need!(Ok::<_, String>(buf.get(at..at + SYNC_LEN)));
    let schema = schema.ok_or_else(|| "the header holds no schema (avro.schema)".to_owned())?;
    let header = Header {
        schema,
        codec,
        sync: sync.try_into().map_err(|_| "sync marker".to_owned())?,
    };
    Ok(Some((header, at + SYNC_LEN)))
}

enum State {
    Header,
    Blocks {
        codec: Codec,
        sync: [u8; SYNC_LEN],
        /// The writer's schema, to start over after a skipped block.
        writer: String,
        records: Box<Records>,
    },
}

struct AvroFileDecoder {
    location: String,
    max_block: usize,
    batch_records: usize,
    skip: bool,
    buf: Vec<u8>,
    /// Offset of `buf[0]` in the input.
    base: u64,
    state: State,
    /// Blocks read so far.
    blocks: u64,
    /// Records read so far.
    records: u64,
}

/// The record decoder of `arrow-avro`, and the output schema: the same but
/// for UUID columns, which it yields as 16 bytes and Rota as their text.
struct Records {
    decoder: AvroDecoder,
    schema: SchemaRef,
    /// Top-level columns of UUIDs.
    uuids: Vec<usize>,
}

impl Records {
    /// A decoder of single records written with `schema`.
    fn new(schema: &str, batch_records: usize) -> Result<Box<Self>, String> {
        let mut store = SchemaStore::new();
        let fingerprint = store
            .register(AvroSchema::new(schema.to_owned()))
            .map_err(|e| format!("the file's schema is not usable: {e}"))?;
        let decoder = ReaderBuilder::new()
            .with_batch_size(batch_records)
            .with_writer_schema_store(store)
            .with_active_fingerprint(fingerprint)
            .with_decoder_mode(DecoderMode::UnframedDatum)
            .build_decoder()
            .map_err(|e| format!("the file's schema is not usable: {e}"))?;
        let avro = decoder.schema();
        let mut uuids = Vec::new();
        let fields: Vec<Field> = avro
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let is_uuid = f.data_type() == &DataType::FixedSizeBinary(16)
                    && f.metadata().get("logicalType").map(String::as_str) == Some("uuid");
                if is_uuid {
                    uuids.push(i);
                    Field::new(f.name(), DataType::Utf8, f.is_nullable())
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, avro.metadata().clone()));
        Ok(Box::new(Self {
            decoder,
            schema,
            uuids,
        }))
    }

    /// The records decoded since the last flush, as one batch.
    fn flush(&mut self) -> Result<Option<RecordBatch>, String> {
        let Some(batch) = self.decoder.flush().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if self.uuids.is_empty() {
            return Ok(Some(batch));
        }
        let mut columns = batch.columns().to_vec();
        for &i in &self.uuids {
            let bytes = columns[i]
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or("a UUID column that is not 16-byte values")?;
            let text: StringArray = bytes.iter().map(|v| v.map(uuid_text)).collect();
            columns[i] = Arc::new(text);
        }
        RecordBatch::try_new(self.schema.clone(), columns)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// A UUID's canonical text, `8-4-4-4-12` lowercase hex digits.
fn uuid_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One block's framing, read from the start of the unread bytes.
struct Block {
    count: usize,
    /// Where its data starts and ends, relative to the block's start.
    data: std::ops::Range<usize>,
    /// Its whole length, sync marker included.
    len: usize,
}

/// The framing of the block at the start of `buf`, `Ok(None)` until all of
/// it is here.
fn frame(buf: &[u8], max_block: usize) -> Result<Option<Block>, String> {
    let Some((count, n1)) = read_len(buf, "record count", usize::MAX)? else {
        return Ok(None);
    };
    let Some((size, n2)) = read_len(&buf[n1..], "block size", max_block)
        .map_err(|e| format!("{e} (blocks are limited to the record size limit)"))?
    else {
        return Ok(None);
    };
    let start = n1 + n2;
    let len = start + size + SYNC_LEN;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Block {
        count,
        data: start..start + size,
        len,
    }))
}

impl AvroFileDecoder {
    fn error(&self, kind: DecodeErrorKind, at: u64, message: String) -> DecodeError {
        DecodeError::at_byte(&self.location, at, kind, message)
    }

    /// Decodes the blocks that are whole; at the end of the input (`eof`)
    /// anything left over is an error.
    fn read(&mut self, eof: bool, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let mut pos = 0;
        let result = self.read_from(&mut pos, eof, out);
        self.buf.drain(..pos);
        self.base += pos as u64;
        result
    }

    fn read_from(
        &mut self,
        pos: &mut usize,
        eof: bool,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        if matches!(self.state, State::Header) {
            let parsed = parse_header(&self.buf, self.max_block)
                .map_err(|m| self.error(DecodeErrorKind::Syntax, 0, m))?;
            let Some((header, len)) = parsed else {
                if eof && !self.buf.is_empty() {
                    return Err(self.error(
                        DecodeErrorKind::Truncated,
                        self.base + self.buf.len() as u64,
                        "the input ends inside the Avro header".into(),
                    ));
                }
                return Ok(());
            };
            let records = Records::new(&header.schema, self.batch_records)
                .map_err(|m| self.error(DecodeErrorKind::Syntax, 0, m))?;
            self.state = State::Blocks {
                codec: header.codec,
                sync: header.sync,
                writer: header.schema,
                records,
            };
            self.buf.drain(..len);
            self.base += len as u64;
        }
        loop {
            let rest = &self.buf[*pos..];
            if rest.is_empty() {
                return Ok(());
            }
            let at = self.base + *pos as u64;
            let block = match frame(rest, self.max_block) {
                Ok(Some(block)) => block,
                Ok(None) if !eof => return Ok(()),
                Ok(None) => {
                    return Err(self.block_error(
                        DecodeErrorKind::Truncated,
                        at,
                        &format!(
                            "the input ends inside it ({} bytes of it present)",
                            rest.len()
                        ),
                    ));
                }
                Err(m) => {
                    return Err(self.block_error(DecodeErrorKind::Syntax, at, &m));
                }
            };
            self.blocks += 1;
            let result =
                crate::guard(|| self.decode_block(&block, *pos, at, out)).unwrap_or_else(|why| {
                    Err(self.block_error(
                        DecodeErrorKind::Syntax,
                        at,
                        &format!("the record reader stopped ({why})"),
                    ))
                });
            *pos += block.len;
            match result {
                Ok(()) => {}
                Err(e) if self.skip => {
                    // The framing held, so the next block can be read.
                    self.records += block.count as u64;
                    out.push(Decoded::Skipped {
                        error: e,
                        excerpt: None,
                    });
                    self.restart()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn block_error(&self, kind: DecodeErrorKind, at: u64, message: &str) -> DecodeError {
        let mut e = self.error(kind, at, format!("block {}: {message}", self.blocks + 1));
        e.position.record = Some(self.records + 1);
        e
    }

    /// A fresh record decoder, after a block was skipped part-way.
    fn restart(&mut self) -> Result<(), DecodeError> {
        if let State::Blocks {
            writer, records, ..
        } = &mut self.state
        {
            *records = Records::new(writer, self.batch_records)
                .map_err(|m| DecodeError::at_byte(&self.location, 0, DecodeErrorKind::Syntax, m))?;
        }
        Ok(())
    }

    /// Checks, decompresses and decodes one whole block at `buf[start..]`.
    fn decode_block(
        &mut self,
        block: &Block,
        start: usize,
        at: u64,
        out: &mut Vec<Decoded>,
    ) -> Result<(), DecodeError> {
        let State::Blocks {
            codec,
            sync,
            records: decoder,
            ..
        } = &mut self.state
        else {
            return Ok(());
        };
        let whole = &self.buf[start..start + block.len];
        let fail = |kind, records: u64, message: String| {
            let mut e = DecodeError::at_byte(
                &self.location,
                at,
                kind,
                format!("block {}: {message}", self.blocks),
            );
            e.position.record = Some(records + 1);
            e
        };
        if whole[block.len - SYNC_LEN..] != sync[..] {
            return Err(fail(
                DecodeErrorKind::Syntax,
                self.records,
                "its sync marker does not match the header's (the block is corrupt or \
                 its size is wrong)"
                    .into(),
            ));
        }
        if self.skip {
            // A skipped block must take none of its records with it, so each
            // block starts a batch of its own.
            if let Some(batch) = decoder
                .flush()
                .map_err(|m| fail(DecodeErrorKind::Type, self.records, m))?
            {
                out.push(Decoded::Batch(batch));
            }
        }
        let data = codec
            .decompress(&whole[block.data.clone()], self.max_block)
            .map_err(|m| fail(DecodeErrorKind::Syntax, self.records, m))?;
        if block.count > data.len().max(1) {
            // Records take a byte or more; only a hostile count could loop on.
            return Err(fail(
                DecodeErrorKind::Syntax,
                self.records,
                format!("declares {} records in {} bytes", block.count, data.len()),
            ));
        }
        let mut off = 0;
        for i in 0..block.count as u64 {
            if decoder.decoder.batch_is_full()
                && let Some(batch) = decoder
                    .flush()
                    .map_err(|m| fail(DecodeErrorKind::Type, self.records + i, m))?
            {
                out.push(Decoded::Batch(batch));
            }
            match decoder.decoder.decode(&data[off..]) {
                Ok(n) => off += n,
                Err(e) => {
                    return Err(fail(
                        DecodeErrorKind::Syntax,
                        self.records + i,
                        format!("record {} of {}: {e}", i + 1, block.count),
                    ));
                }
            }
        }
        if off != data.len() {
            return Err(fail(
                DecodeErrorKind::Syntax,
                self.records + block.count as u64,
                format!(
                    "its {} records end at byte {off} of its {} bytes of data",
                    block.count,
                    data.len()
                ),
            ));
        }
        self.records += block.count as u64;
        Ok(())
    }

    fn flush(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if let State::Blocks { records, .. } = &mut self.state
            && let Some(batch) = records.flush().map_err(|m| {
                DecodeError::at_byte(&self.location, self.base, DecodeErrorKind::Type, m)
            })?
        {
            out.push(Decoded::Batch(batch));
        }
        Ok(())
    }
}

impl Decoder for AvroFileDecoder {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(bytes);
        self.read(false, out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        self.read(true, out)?;
        self.flush(out)
    }

    fn schema(&self) -> Option<SchemaRef> {
        match &self.state {
            State::Blocks { records, .. } => Some(records.schema.clone()),
            State::Header => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"s","type":"string"}]}"#;
    const SYNC: [u8; SYNC_LEN] = *b"0123456789abcdef";

    fn long(v: i64) -> Vec<u8> {
        #[allow(clippy::cast_sign_loss)] // zigzag encoding reinterprets the bits
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes(b: &[u8]) -> Vec<u8> {
        let mut out = long(b.len() as i64);
        out.extend_from_slice(b);
        out
    }

    fn header(codec: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(long(2));
        out.extend(bytes(b"avro.schema"));
        out.extend(bytes(SCHEMA.as_bytes()));
        out.extend(bytes(b"avro.codec"));
        out.extend(bytes(codec.as_bytes()));
        out.extend(long(0));
        out.extend(SYNC);
        out
    }

    fn block(count: i64, data: &[u8]) -> Vec<u8> {
        let mut out = long(count);
        out.extend(bytes(data));
        out.extend(SYNC);
        out
    }

    fn decode(input: &[u8], max_record_bytes: usize) -> Result<u64, DecodeError> {
        let options = DecodeOptions {
            location: "hostile.avro".into(),
            max_record_bytes,
            ..DecodeOptions::default()
        };
        let mut d = AvroFormat.decoder(&options)?;
        let mut out = Vec::new();
        for piece in input.chunks(64 << 10) {
            d.push(piece, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out
            .iter()
            .map(|d| match d {
                Decoded::Batch(b) => b.num_rows() as u64,
                Decoded::Skipped { .. } => 0,
            })
            .sum())
    }

    #[test]
    fn a_block_that_inflates_past_the_limit_is_refused() {
        // 64 MiB of one repeated record, deflated to a few kB.
        let record = bytes(b"x");
        let count = (64 << 20) / record.len();
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..count {
            z.write_all(&record).expect("deflate");
        }
        let packed = z.finish().expect("deflate");
        assert!(packed.len() < 1 << 20, "{}", packed.len());
        let mut input = header("deflate");
        input.extend(block(count as i64, &packed));
        let err = decode(&input, 1 << 20).expect_err("refused");
        assert!(
            err.message
                .contains("decompresses to more than the limit of 1048576 bytes"),
            "{err}"
        );
        assert_eq!(err.position.record, Some(1));
        // Within the limit, the same block decodes.
        assert_eq!(decode(&input, 128 << 20).expect("decodes"), count as u64);
    }

    #[test]
    fn a_hostile_record_count_or_block_size_is_refused_before_decoding() {
        let mut input = header("null");
        input.extend(block(1 << 40, b"\x02x"));
        let err = decode(&input, 1 << 20).expect_err("refused");
        assert!(
            err.message
                .contains("declares 1099511627776 records in 2 bytes"),
            "{err}"
        );

        // A size past the limit is refused from the block's first bytes.
        let mut input = header("null");
        let at = input.len() as u64;
        input.extend(long(1));
        input.extend(long(1 << 30));
        let err = decode(&input, 1 << 20).expect_err("refused");
        assert!(
            err.message
                .contains("block size 1073741824 is over the limit"),
            "{err}"
        );
        assert_eq!(err.position.byte_offset, at);
    }

    #[test]
    fn trailing_bytes_inside_a_block_are_an_error() {
        let mut input = header("null");
        input.extend(block(1, b"\x02xJUNK"));
        let err = decode(&input, 1 << 20).expect_err("refused");
        assert!(
            err.message.contains("records end at byte 2 of its 6 bytes"),
            "{err}"
        );
    }

    #[test]
    fn uuid_text_is_canonical() {
        let bytes: Vec<u8> = (0..16).collect();
        assert_eq!(uuid_text(&bytes), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
