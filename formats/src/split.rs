//! Cutting a line-delimited text file (CSV, TSV, NDJSON) into parts that
//! decode apart — on several threads, or on several nodes — and give
//! together exactly the records of one read of the whole file.
//!
//! A [`Cutter`] runs the format's own framer over the file, so a part ends
//! where a record ends as the decoder sees it: never inside a quoted field,
//! never between the CR and LF of a line break. Each [`Part`] knows the
//! byte offset, line and record it starts at, so errors name the place in
//! the file as a whole read would.
//!
//! The first part is decoded from the file's start (its byte order mark,
//! its header, the sample the schema is inferred from). Every later part
//! starts from a [`Start`]: the schema and what the decoder had inferred
//! (the kinds of values each column needs) at the end of the part before
//! it. A whole read widens the schema when a record needs it (an integer
//! column meets `3.5`); a part decoded from a start that is not the one
//! the part before it ended with may differ from a whole read. So parts
//! are decoded from a guessed start (the one inferred from the sample at
//! the file's head, or a later part's end when known), and a part is
//! *exact* when its guess equals the end of the exact part before it;
//! otherwise it is decoded again from that end. [`Splitter::check`] says
//! which; in practice the sample's schema holds and every guess is right.

use arrow_schema::SchemaRef;
use rota_core::DecodeError;
use rota_core::format::{DecodeOptions, Decoder};
use rota_core::source::ReadAt;

use crate::csv::csv_parts;
use crate::json::{JsonBatcher, LineFramer};
use crate::text::{Batcher, Found, Framer, Inferred, TextDecoder};

/// One part of a file: the bytes `start..end`, which begin at a record
/// boundary (or the file's start) and end at one (or the file's end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its number, from 0, in file order.
    pub index: u64,
    /// Offset of its first byte.
    pub start: u64,
    /// Offset past its last byte.
    pub end: u64,
    /// The 1-based line it starts on.
    pub line: u64,
    /// Data records before it (a header is not one).
    pub records: u64,
}

/// What a decoder knows at a record boundary: the schema and what was
/// inferred of the values so far. A later part's decoder starts from one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    schema: SchemaRef,
    inferred: Inferred,
}

impl Start {
    /// The schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

/// A decoder of one part, which can say what it knows when it ends.
pub trait PartDecoder: Decoder {
    /// The schema and what was inferred so far, once the schema is known;
    /// after [`Decoder::finish`], the start of the part that follows.
    fn start(&self) -> Option<Start>;
}

impl<F: Framer, B: Batcher> PartDecoder for TextDecoder<F, B> {
    fn start(&self) -> Option<Start> {
        self.inferred()
            .map(|(schema, inferred)| Start { schema, inferred })
    }
}

/// Which framing a format has.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// CSV or TSV with this default delimiter.
    Csv(u8),
    /// One JSON value per line.
    Lines,
}

/// Makes the cutter and the part decoders of a file of one format, with
/// one set of decoder options.
#[derive(Clone, Debug)]
pub struct Splitter {
    framing: Framing,
    options: DecodeOptions,
}

impl Splitter {
    /// A splitter for files of the format named `format` (`csv`, `tsv` or
    /// `ndjson`); `None` for a format whose records cannot be found without
    /// reading from the start (JSON documents, binary formats).
    ///
    /// # Errors
    /// When `options` are not valid for the format.
    pub fn new(format: &str, options: &DecodeOptions) -> Result<Option<Self>, DecodeError> {
        let framing = match format {
            "csv" => Framing::Csv(b','),
            "tsv" => Framing::Csv(b'\t'),
            "ndjson" => Framing::Lines,
            _ => return Ok(None),
        };
        let splitter = Self {
            framing,
            options: options.clone(),
        };
        splitter.first()?;
        Ok(Some(splitter))
    }

    /// The decoder of the first part: a decoder of the whole file, from its
    /// start (byte order mark, header, schema sample).
    ///
    /// # Errors
    /// When the options are not valid for the format.
    pub fn first(&self) -> Result<Box<dyn PartDecoder>, DecodeError> {
        Ok(match self.framing {
            Framing::Csv(delimiter) => {
                let (framer, batcher) = csv_parts(&self.options, delimiter)?;
                Box::new(TextDecoder::new(framer, batcher, &self.options))
            }
            Framing::Lines => Box::new(TextDecoder::new(
                LineFramer { resume: 0 },
                JsonBatcher::new(&self.options),
                &self.options,
            )),
        })
    }

    /// The decoder of `part` (not the first), starting from `start`.
    ///
    /// # Errors
    /// When the options are not valid for the format.
    pub fn part(&self, start: &Start, part: &Part) -> Result<Box<dyn PartDecoder>, DecodeError> {
        let begin = (start.schema.clone(), start.inferred.clone());
        let (offset, line, records) = (part.start, part.line, part.records);
        Ok(match self.framing {
            Framing::Csv(delimiter) => {
                let (framer, batcher) = csv_parts(&self.options, delimiter)?;
                Box::new(TextDecoder::for_part(
                    framer,
                    batcher,
                    &self.options,
                    begin,
                    offset,
                    line,
                    records,
                ))
            }
            Framing::Lines => Box::new(TextDecoder::for_part(
                LineFramer { resume: 0 },
                JsonBatcher::new(&self.options),
                &self.options,
                begin,
                offset,
                line,
                records,
            )),
        })
    }

    /// A cutter into parts of at least `part_bytes` (the last may be
    /// shorter), each ending after a multiple of `align` records when
    /// `align` is above 1, so that parts cut into whole batches of that
    /// many records. The first part holds at least the records the schema
    /// is inferred from.
    ///
    /// # Errors
    /// When the options are not valid for the format.
    pub fn cutter(&self, part_bytes: u64, align: u64) -> Result<Cutter, DecodeError> {
        let (framer, header): (Box<dyn Framer>, bool) = match self.framing {
            Framing::Csv(delimiter) => {
                let (framer, batcher) = csv_parts(&self.options, delimiter)?;
                (Box::new(framer), batcher.has_header())
            }
            Framing::Lines => (Box::new(LineFramer { resume: 0 }), false),
        };
        // The schema is inferred from the first records together: they stay
        // in the first part.
        let sample = if self.options.schema.is_none() {
            self.options.infer_records.max(1) as u64
        } else {
            0
        };
        Ok(Cutter {
            framer,
            header,
            sample,
            part_bytes: part_bytes.max(1),
            align: align.max(1),
            max_record: self.options.max_record_bytes,
            buf: Vec::new(),
            base: 0,
            pos: 0,
            line: 1,
            records: 0,
            bom_checked: false,
            stopped: false,
            next: Part {
                index: 0,
                start: 0,
                end: 0,
                line: 1,
                records: 0,
            },
        })
    }

    /// A guess at the start of every later part: what the first part's
    /// decoder knows once it inferred the schema from the sample at the
    /// file's head, read from `read` up to `end` (the first part's end) a
    /// piece at a time. `None` when the head does not decode (the first
    /// part's decoder reports why).
    #[must_use]
    pub fn guess(&self, read: &dyn ReadAt, end: u64) -> Option<Start> {
        const PIECE: u64 = 1 << 20;
        let mut decoder = self.first().ok()?;
        let mut out = Vec::new();
        let mut at = 0;
        while at < end {
            let mut piece = vec![0; usize::try_from(PIECE.min(end - at)).ok()?];
            read.read_exact_at(at, &mut piece).ok()?;
            at += piece.len() as u64;
            decoder.push(&piece, &mut out).ok()?;
            out.clear();
            if let Some(start) = decoder.start() {
                return Some(start);
            }
        }
        decoder.finish(&mut out).ok()?;
        decoder.start()
    }

    /// Whether a part decoded from `guess` is what a whole read gives:
    /// `guess` equals `exact_before`, the start the exact decode of the
    /// part before it ended with.
    #[must_use]
    pub fn check(guess: &Start, exact_before: &Start) -> bool {
        guess == exact_before
    }
}

/// Finds where parts end, as the bytes of a file stream through it.
pub struct Cutter {
    framer: Box<dyn Framer>,
    /// The header line is still to come.
    header: bool,
    /// Records the first part holds at least: the sample the schema is
    /// inferred from.
    sample: u64,
    part_bytes: u64,
    align: u64,
    max_record: usize,
    buf: Vec<u8>,
    /// Offset of `buf[0]` in the file.
    base: u64,
    /// Start of the next unframed record in `buf`.
    pos: usize,
    line: u64,
    records: u64,
    bom_checked: bool,
    /// Framing failed or a record outgrew the limit: the rest of the file
    /// is one part, and its decoder reports the problem.
    stopped: bool,
    /// The part being found (its end not yet).
    next: Part,
}

impl Cutter {
    /// Takes the next bytes of the file; adds the parts whose end they
    /// showed to `out`. Returns `false` once nothing more can be cut (the
    /// rest of the file is the last part): the caller may stop reading.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Part>) -> bool {
        if self.stopped {
            return false;
        }
        self.buf.extend_from_slice(bytes);
        self.run(false, out);
        !self.stopped
    }

    /// Ends the file, `size` bytes long; adds the last part to `out`.
    pub fn finish(&mut self, size: u64, out: &mut Vec<Part>) {
        if !self.stopped {
            self.run(true, out);
        }
        if size > self.next.start || self.next.index == 0 {
            out.push(Part {
                end: size,
                ..self.next
            });
        }
    }

    fn run(&mut self, eof: bool, out: &mut Vec<Part>) {
        if !self.bom_checked {
            if self.buf.len() < 3 && !eof {
                return;
            }
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.pos = 3;
            }
            self.bom_checked = true;
        }
        loop {
            match self.framer.next(&self.buf, self.pos, eof) {
                Ok(Found::Record(frame)) => {
                    self.line += frame.newlines;
                    self.pos = frame.next;
                    if self.header {
                        self.header = false;
                    } else {
                        self.records += 1;
                    }
                    self.cut(out);
                }
                Ok(Found::Gap { next, newlines }) => {
                    self.line += newlines;
                    self.pos = next;
                    self.cut(out);
                }
                Ok(Found::NeedMore) => {
                    if self.buf.len() - self.pos > self.max_record {
                        self.stopped = true;
                    }
                    break;
                }
                Ok(Found::End) => break,
                Err(_) => {
                    self.stopped = true;
                    break;
                }
            }
        }
        // What was framed is not needed again; the framer's resume point is
        // relative to `pos`, which stays the start of the unframed record.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
    }

    /// Ends the part being found here, at `base + pos`, if it is long
    /// enough and the records before it are a multiple of `align`.
    fn cut(&mut self, out: &mut Vec<Part>) {
        let at = self.base + self.pos as u64;
        if self.header
            || self.records < self.sample
            || at - self.next.start < self.part_bytes
            || !self.records.is_multiple_of(self.align)
        {
            return;
        }
        out.push(Part {
            end: at,
            ..self.next
        });
        self.next = Part {
            index: self.next.index + 1,
            start: at,
            end: at,
            line: self.line,
            records: self.records,
        };
    }
}
