//! Transparent decompression in front of any decoder: gzip (every member of a
//! multi-member file), zstd (every frame), bzip2 (every stream) and xz (every
//! stream), recognised by their magic bytes, else by the file name's suffix.
//!
//! Decompression is push-style like the decoders, so a file and an upload
//! share it. Output is bounded by [`Limits`]: a total size and an expansion
//! ratio, so a small hostile file cannot make gigabytes out of nothing.
//! Errors of the compressed layer give the offset in the compressed bytes;
//! errors of the format inside give positions in the decompressed bytes, and
//! say so.

use std::fmt;

use rota_core::format::{Decoded, Decoder};
use rota_core::{DecodeError, DecodeErrorKind, Position};

/// A compression format Rota reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (RFC 1952), any number of members.
    Gzip,
    /// Zstandard, any number of frames.
    Zstd,
    /// bzip2, any number of streams.
    Bzip2,
    /// xz, any number of streams.
    Xz,
}

impl Compression {
    /// Every compression, in the order `rota formats` lists them.
    pub const ALL: [Self; 4] = [Self::Gzip, Self::Zstd, Self::Bzip2, Self::Xz];

    /// Its name, as `--compression` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Bzip2 => "bzip2",
            Self::Xz => "xz",
        }
    }

    /// File name suffixes (without the dot) that mean this compression.
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Gzip => &["gz", "gzip"],
            Self::Zstd => &["zst", "zstd"],
            Self::Bzip2 => &["bz2", "bzip2"],
            Self::Xz => &["xz"],
        }
    }

    /// The compression called `name` (case-insensitive).
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// The compression whose magic bytes start `head`, if any. Needs up to
    /// [`MAGIC_BYTES`] bytes to tell.
    pub fn from_magic(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Self::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Self::Zstd)
        } else if head.starts_with(b"BZh") && head.len() > 3 && (b'1'..=b'9').contains(&head[3]) {
            Some(Self::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Self::Xz)
        } else {
            None
        }
    }

    /// The compression of a file from its first bytes (`head`, at least
    /// [`MAGIC_BYTES`] of them unless the file is shorter) and the one its
    /// name's suffix says: the magic bytes decide; a name that says
    /// compression the bytes do not show is an error; else none. The one
    /// place compression is decided.
    ///
    /// # Errors
    /// The name's suffix names a compression the data does not start with.
    pub fn detect(head: &[u8], suffix: Option<Self>) -> Result<Option<Self>, String> {
        match (Self::from_magic(head), suffix) {
            (Some(found), _) => Ok(Some(found)),
            (None, Some(named)) => Err(format!(
                "the name says {named}, but the data does not start like {named} data"
            )),
            (None, None) => Ok(None),
        }
    }

    /// The compression a file name's last suffix names, and the name without
    /// that suffix (`data.csv.gz` → gzip, `data.csv`).
    pub fn from_suffix(name: &str) -> Option<(Self, &str)> {
        let (stem, suffix) = name.rsplit_once('.')?;
        Self::ALL
            .into_iter()
            .find(|c| c.suffixes().iter().any(|s| s.eq_ignore_ascii_case(suffix)))
            .map(|c| (c, stem))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes [`Compression::from_magic`] may need to decide.
pub const MAGIC_BYTES: usize = 6;

/// Bounds on what decompression may produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes per file, at most.
    pub max_output: u64,
    /// Decompressed bytes per compressed byte, at most, once the output has
    /// passed [`Limits::ratio_after`].
    pub max_ratio: u64,
    /// Output below this size is never refused for its ratio: small files of
    /// zeros or repeated rows compress very well and harm no one.
    pub ratio_after: u64,
}

impl Default for Limits {
    /// 1 TiB of output, and at most 1000 bytes out per byte in after 64 MiB.
    /// gzip cannot expand more than about 1032 times; files that do are built
    /// to (nested archives, long runs of zeros).
    fn default() -> Self {
        Self {
            max_output: 1 << 40,
            max_ratio: 1_000,
            ratio_after: 64 << 20,
        }
    }
}

/// Memory an xz stream may ask for: enough for every preset (`xz -9e` needs
/// 65 MiB), refused beyond.
const XZ_MEMORY_LIMIT: u64 = 256 << 20;

/// Scratch space the decompressors write into.
const SCRATCH_BYTES: usize = 256 << 10;

/// gzip headers longer than this (name, comment and extra fields) are refused.
const GZIP_MAX_HEADER: usize = 64 << 10;

/// A push-style decompressor for one compressed file.
pub struct Decompressor {
    compression: Compression,
    location: String,
    limits: Limits,
    codec: Codec,
    /// Compressed bytes taken so far.
    read: u64,
    /// Decompressed bytes produced so far.
    written: u64,
    scratch: Vec<u8>,
}

enum Codec {
    Gzip(Gzip),
    Zstd {
        decoder: Box<zstd::stream::raw::Decoder<'static>>,
        /// Inside a frame (the decoder's last hint was not 0).
        in_frame: bool,
    },
    Bzip2 {
        decoder: Option<bzip2::Decompress>,
    },
    Xz(Box<liblzma::stream::Stream>),
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("compression", &self.compression)
            .field("location", &self.location)
            .field("read", &self.read)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Decompressor {
    /// A decompressor of `compression` for the file at `location`.
    ///
    /// # Errors
    /// When the underlying library cannot set up a decoder.
    pub fn new(
        compression: Compression,
        location: &str,
        limits: Limits,
    ) -> Result<Self, DecodeError> {
        let setup = |e: &dyn fmt::Display| DecodeError {
            location: location.to_owned(),
            position: Position::default(),
            kind: DecodeErrorKind::Options,
            message: format!("cannot start a {compression} decoder: {e}"),
        };
        let codec = match compression {
            Compression::Gzip => Codec::Gzip(Gzip::Header(Vec::new())),
            Compression::Zstd => Codec::Zstd {
                decoder: Box::new(zstd::stream::raw::Decoder::new().map_err(|e| setup(&e))?),
                in_frame: false,
            },
            Compression::Bzip2 => Codec::Bzip2 { decoder: None },
            Compression::Xz => Codec::Xz(Box::new(
                liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMORY_LIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| setup(&e))?,
            )),
        };
        Ok(Self {
            compression,
            location: location.to_owned(),
            limits,
            codec,
            read: 0,
            written: 0,
            scratch: vec![0; SCRATCH_BYTES],
        })
    }

    /// Its compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Decompressed bytes produced so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn error(&self, kind: DecodeErrorKind, at: u64, message: String) -> DecodeError {
        DecodeError::at_byte(
            &self.location,
            at,
            kind,
            format!("{}: {message}", self.compression),
        )
    }

    /// Counts `n` bytes of output against the limits.
    fn produced(&mut self, n: usize) -> Result<(), DecodeError> {
        self.written += n as u64;
        if self.written > self.limits.max_output {
            return Err(self.error(
                DecodeErrorKind::TooLarge,
                self.read,
                format!(
                    "decompressed data exceeds the limit of {} bytes",
                    self.limits.max_output
                ),
            ));
        }
        if self.written > self.limits.ratio_after
            && self.written > self.read.max(1).saturating_mul(self.limits.max_ratio)
        {
            return Err(self.error(
                DecodeErrorKind::TooLarge,
                self.read,
                format!(
                    "{} compressed bytes expand to more than {} bytes, over {} times their \
                     size; refusing a likely decompression bomb",
                    self.read, self.written, self.limits.max_ratio
                ),
            ));
        }
        Ok(())
    }

    /// Decompresses `input`, handing the output to `sink` in pieces.
    ///
    /// # Errors
    /// Corrupt compressed data, a limit exceeded, or an error from `sink`.
    pub fn push(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        // Steps that neither take nor make bytes only change state (a member
        // or stream ends); a few in a row mean the decoder is stuck.
        let mut idle = 0;
        while !input.is_empty() {
            let (taken, made) = self.step(input, false)?;
            input = &input[taken..];
            self.read += taken as u64;
            if made > 0 {
                self.produced(made)?;
                sink(&self.scratch[..made])?;
            }
            idle = if taken == 0 && made == 0 { idle + 1 } else { 0 };
            if idle > 3 {
                return Err(self.error(
                    DecodeErrorKind::Syntax,
                    self.read,
                    "the decoder makes no progress on this data".into(),
                ));
            }
        }
        // Drain output the decoder still holds for the input it has taken.
        loop {
            let (_, made) = self.step(&[], false)?;
            if made == 0 {
                return Ok(());
            }
            self.produced(made)?;
            sink(&self.scratch[..made])?;
        }
    }

    /// Ends the input: flushes what remains and checks the data is complete.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] when the data ends inside a member,
    /// frame or stream; a limit exceeded; an error from `sink`.
    pub fn finish(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        loop {
            let (_, made) = self.step(&[], true)?;
            if made == 0 {
                break;
            }
            self.produced(made)?;
            sink(&self.scratch[..made])?;
        }
        let complete = match &self.codec {
            Codec::Gzip(state) => matches!(state, Gzip::Between | Gzip::Padding),
            Codec::Zstd { in_frame, .. } => !in_frame,
            Codec::Bzip2 { decoder } => decoder.is_none(),
            // The finishing step above fails on an incomplete stream.
            Codec::Xz(_) => true,
        };
        if !complete || self.read == 0 {
            return Err(self.error(
                DecodeErrorKind::Truncated,
                self.read,
                "the compressed data is truncated (it ends before its end marker)".into(),
            ));
        }
        Ok(())
    }

    /// One decoding step: returns (input bytes taken, output bytes made in
    /// `scratch`).
    fn step(&mut self, input: &[u8], finish: bool) -> Result<(usize, usize), DecodeError> {
        let at = self.read;
        let compression = self.compression;
        let location = &self.location;
        let fail = |kind: DecodeErrorKind, offset: u64, message: String| {
            DecodeError::at_byte(location, offset, kind, format!("{compression}: {message}"))
        };
        match &mut self.codec {
            Codec::Gzip(state) => state.step(input, &mut self.scratch, at, &fail),
            Codec::Zstd { decoder, in_frame } => {
                use zstd::stream::raw::Operation;
                if input.is_empty() && !*in_frame {
                    return Ok((0, 0));
                }
                let status = decoder
                    .run_on_buffers(input, &mut self.scratch)
                    .map_err(|e| fail(DecodeErrorKind::Syntax, at, format!("corrupt data: {e}")))?;
                *in_frame = status.remaining != 0;
                if input.is_empty() && status.bytes_written == 0 {
                    return Ok((0, 0));
                }
                Ok((status.bytes_read, status.bytes_written))
            }
            Codec::Bzip2 { decoder } => {
                let Some(d) = decoder else {
                    if input.is_empty() {
                        return Ok((0, 0));
                    }
                    // The next stream's magic may arrive a byte at a time;
                    // its decoder checks whatever the first bytes do not.
                    if !b"BZh".starts_with(&input[..input.len().min(3)]) {
                        return Err(fail(
                            DecodeErrorKind::Syntax,
                            at,
                            "data after the last stream is not another bzip2 stream".into(),
                        ));
                    }
                    *decoder = Some(bzip2::Decompress::new(false));
                    return Ok((0, 0));
                };
                let (in0, out0) = (d.total_in(), d.total_out());
                let status = d
                    .decompress(input, &mut self.scratch)
                    .map_err(|e| fail(DecodeErrorKind::Syntax, at, format!("corrupt data: {e}")))?;
                let taken = usize::try_from(d.total_in() - in0).unwrap_or(0);
                let made = usize::try_from(d.total_out() - out0).unwrap_or(0);
                if status == bzip2::Status::StreamEnd {
                    *decoder = None;
                }
                Ok((taken, made))
            }
            Codec::Xz(stream) => {
                let action = if finish {
                    liblzma::stream::Action::Finish
                } else {
                    liblzma::stream::Action::Run
                };
                let (in0, out0) = (stream.total_in(), stream.total_out());
                let result = stream.process(input, &mut self.scratch, action);
                let taken = usize::try_from(stream.total_in() - in0).unwrap_or(0);
                let made = usize::try_from(stream.total_out() - out0).unwrap_or(0);
                match result {
                    // "No progress possible": at the end, the data stopped short.
                    Ok(liblzma::stream::Status::MemNeeded) if finish && made == 0 => Err(fail(
                        DecodeErrorKind::Truncated,
                        at,
                        "the compressed data is truncated (it ends before its end marker)".into(),
                    )),
                    Ok(_) => Ok((taken, made)),
                    Err(liblzma::stream::Error::MemLimit | liblzma::stream::Error::Mem) => {
                        Err(fail(
                            DecodeErrorKind::TooLarge,
                            at + taken as u64,
                            format!(
                                "the stream needs more than {} MiB of memory to decode",
                                XZ_MEMORY_LIMIT >> 20
                            ),
                        ))
                    }
                    Err(e) => Err(fail(
                        DecodeErrorKind::Syntax,
                        at + taken as u64,
                        format!("corrupt data: {e}"),
                    )),
                }
            }
        }
    }
}

/// Where a gzip decoder is in its file.
enum Gzip {
    /// Collecting a member's header.
    Header(Vec<u8>),
    /// Inflating a member's body.
    Body {
        inflate: Box<flate2::Decompress>,
        crc: crc32fast::Hasher,
        size: u64,
    },
    /// Collecting a member's 8-byte trailer.
    Trailer { crc: u32, size: u64, bytes: Vec<u8> },
    /// After a whole member: the end, or another member.
    Between,
    /// Zero bytes after the last member (some tools pad to a block size).
    Padding,
}

type Fail<'a> = dyn Fn(DecodeErrorKind, u64, String) -> DecodeError + 'a;

impl Gzip {
    fn step(
        &mut self,
        input: &[u8],
        out: &mut [u8],
        at: u64,
        fail: &Fail<'_>,
    ) -> Result<(usize, usize), DecodeError> {
        match self {
            Self::Between | Self::Padding if input.is_empty() => Ok((0, 0)),
            Self::Between if input[0] == 0 => {
                *self = Self::Padding;
                Ok((0, 0))
            }
            Self::Between => {
                *self = Self::Header(Vec::new());
                Ok((0, 0))
            }
            Self::Padding => match input.iter().position(|&b| b != 0) {
                None => Ok((input.len(), 0)),
                Some(i) => Err(fail(
                    DecodeErrorKind::Syntax,
                    at + i as u64,
                    "data after the last member is neither a gzip member nor padding".into(),
                )),
            },
            Self::Header(bytes) => {
                if input.is_empty() {
                    return Ok((0, 0));
                }
                let before = bytes.len();
                let take = input.len().min(GZIP_MAX_HEADER + 1 - before);
                bytes.extend_from_slice(&input[..take]);
                let start = at - before as u64;
                match gzip_header_len(bytes).map_err(|m| fail(DecodeErrorKind::Syntax, start, m))? {
                    Some(len) => {
                        *self = Self::Body {
                            inflate: Box::new(flate2::Decompress::new(false)),
                            crc: crc32fast::Hasher::new(),
                            size: 0,
                        };
                        Ok((len - before, 0))
                    }
                    None if bytes.len() > GZIP_MAX_HEADER => Err(fail(
                        DecodeErrorKind::TooLarge,
                        start,
                        format!("member header is longer than {GZIP_MAX_HEADER} bytes"),
                    )),
                    None => Ok((take, 0)),
                }
            }
            Self::Body { inflate, crc, size } => {
                let (in0, out0) = (inflate.total_in(), inflate.total_out());
                let status = inflate
                    .decompress(input, out, flate2::FlushDecompress::None)
                    .map_err(|e| {
                        fail(
                            DecodeErrorKind::Syntax,
                            at,
                            format!("corrupt deflate data: {e}"),
                        )
                    })?;
                let taken = usize::try_from(inflate.total_in() - in0).unwrap_or(0);
                let made = usize::try_from(inflate.total_out() - out0).unwrap_or(0);
                crc.update(&out[..made]);
                *size += made as u64;
                if status == flate2::Status::StreamEnd {
                    let crc = std::mem::take(crc).finalize();
                    *self = Self::Trailer {
                        crc,
                        size: *size,
                        bytes: Vec::with_capacity(8),
                    };
                }
                Ok((taken, made))
            }
            Self::Trailer { crc, size, bytes } => {
                if input.is_empty() {
                    return Ok((0, 0));
                }
                let take = input.len().min(8 - bytes.len());
                bytes.extend_from_slice(&input[..take]);
                if bytes.len() == 8 {
                    let want_crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let want_size = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                    let start = at + take as u64 - 8;
                    if want_crc != *crc {
                        return Err(fail(
                            DecodeErrorKind::Syntax,
                            start,
                            format!(
                                "member checksum mismatch (stored {want_crc:08x}, data {crc:08x})"
                            ),
                        ));
                    }
                    // ISIZE is the size modulo 2^32.
                    if u64::from(want_size) != *size & 0xffff_ffff {
                        return Err(fail(
                            DecodeErrorKind::Syntax,
                            start,
                            format!(
                                "member size mismatch (stored {want_size}, data {})",
                                *size & 0xffff_ffff
                            ),
                        ));
                    }
                    *self = Self::Between;
                }
                Ok((take, 0))
            }
        }
    }
}

/// The length of the gzip member header at the start of `b`, `None` when
/// more bytes are needed.
fn gzip_header_len(b: &[u8]) -> Result<Option<usize>, String> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if b.len() >= 2 && b[..2] != [0x1f, 0x8b] {
        return Err("not a gzip member (bad magic bytes)".into());
    }
    if b.len() < 10 {
        return Ok(None);
    }
    if b[2] != 8 {
        return Err(format!(
            "unknown compression method {} (only deflate, 8)",
            b[2]
        ));
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        return Err(format!("reserved header flags set ({flags:#04x})"));
    }
    let mut i = 10;
    if flags & FEXTRA != 0 {
        if b.len() < i + 2 {
            return Ok(None);
        }
        i += 2 + usize::from(u16::from_le_bytes([b[i], b[i + 1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match b.get(i..).and_then(|rest| memchr::memchr(0, rest)) {
                Some(nul) => i += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        i += 2;
    }
    Ok((b.len() >= i).then_some(i))
}

/// A decoder that sniffs its input for compression and decompresses it (if
/// compressed) into the format's decoder.
pub struct Decompressing {
    inner: Box<dyn Decoder>,
    location: String,
    limits: Limits,
    /// The compression the file name suggests, used when the magic is silent.
    suffix: Option<Compression>,
    state: Sniff,
}

enum Sniff {
    /// The first bytes, until there are enough to decide.
    Head(Vec<u8>),
    Plain,
    Compressed(Box<Decompressor>),
}

impl fmt::Debug for Decompressing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressing")
            .field("location", &self.location)
            .field("suffix", &self.suffix)
            .finish_non_exhaustive()
    }
}

impl Decompressing {
    /// Wraps `inner`, the decoder for the file at `location`; `suffix` is the
    /// compression its name ends in, if any.
    pub fn new(
        inner: Box<dyn Decoder>,
        location: &str,
        suffix: Option<Compression>,
        limits: Limits,
    ) -> Self {
        Self {
            inner,
            location: location.to_owned(),
            limits,
            suffix,
            state: Sniff::Head(Vec::with_capacity(MAGIC_BYTES)),
        }
    }

    /// The compression found, once the first bytes have been seen.
    pub fn compression(&self) -> Option<Compression> {
        match &self.state {
            Sniff::Compressed(d) => Some(d.compression()),
            _ => None,
        }
    }

    /// Decides from `head` (the first bytes, or all of a short file).
    fn decide(&mut self, head: &[u8]) -> Result<(), DecodeError> {
        let found = Compression::detect(head, self.suffix).map_err(|message| DecodeError {
            location: self.location.clone(),
            position: Position::default(),
            kind: DecodeErrorKind::Syntax,
            message,
        })?;
        self.state = match found {
            Some(found) => Sniff::Compressed(Box::new(Decompressor::new(
                found,
                &self.location,
                self.limits,
            )?)),
            None => Sniff::Plain,
        };
        Ok(())
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        let inner = &mut self.inner;
        match &mut self.state {
            Sniff::Head(_) => Ok(()),
            Sniff::Plain => inner.push(bytes, out),
            Sniff::Compressed(d) => {
                let name = d.compression();
                d.push(bytes, &mut |chunk| {
                    inner.push(chunk, out).map_err(|e| in_decompressed(e, name))
                })
            }
        }
    }
}

/// Marks an error of the inner format as positioned in decompressed bytes.
pub fn in_decompressed(mut e: DecodeError, compression: Compression) -> DecodeError {
    e.message.push_str(&format!(
        " (position in the {compression}-decompressed data)"
    ));
    e
}

impl Decoder for Decompressing {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if let Sniff::Head(head) = &mut self.state {
            head.extend_from_slice(bytes);
            if head.len() < MAGIC_BYTES {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.decide(&head)?;
            return self.feed(&head, out);
        }
        self.feed(bytes, out)
    }

    fn finish(&mut self, out: &mut Vec<Decoded>) -> Result<(), DecodeError> {
        if let Sniff::Head(head) = &mut self.state {
            let head = std::mem::take(head);
            if head.is_empty() && self.suffix.is_none() {
                self.state = Sniff::Plain;
            } else {
                self.decide(&head)?;
                self.feed(&head, out)?;
            }
        }
        let inner = &mut self.inner;
        match &mut self.state {
            Sniff::Compressed(d) => {
                let name = d.compression();
                d.finish(&mut |chunk| {
                    inner.push(chunk, out).map_err(|e| in_decompressed(e, name))
                })?;
                inner.finish(out).map_err(|e| in_decompressed(e, name))
            }
            _ => inner.finish(out),
        }
    }

    fn drain(&mut self, out: &mut Vec<Decoded>) -> Result<bool, DecodeError> {
        let compression = self.compression();
        self.inner.drain(out).map_err(|e| match compression {
            Some(c) => in_decompressed(e, c),
            None => e,
        })
    }

    fn schema(&self) -> Option<arrow_schema::SchemaRef> {
        self.inner.schema()
    }

    fn total_rows(&self) -> Option<u64> {
        self.inner.total_rows()
    }
}
