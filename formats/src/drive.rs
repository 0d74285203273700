//! The one loop that drives a push [`Decoder`]: every piece of input in
//! turn, then the end, then whatever the decoder read once the input was
//! whole. The ingest pipeline, its dry run and the tests all drive decoders
//! with it.

use rota_core::DecodeError;
use rota_core::format::{Decoded, Decoder};

/// Why driving a decoder stopped short.
#[derive(Debug)]
pub enum DriveError<E> {
    /// The decoder refused the input.
    Decode(DecodeError),
    /// The input could not be read.
    Input(E),
}

/// How far [`end`] reads a finished decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// Everything it holds.
    Drained,
    /// Only until it knows how many records the input holds (a format that
    /// records its count, such as Parquet, need not be read out).
    Counted,
}

/// Hands each output in `out` to `sink`, in order; false when the sink
/// wants no more (the rest is dropped).
fn forward(out: &mut Vec<Decoded>, sink: &mut impl FnMut(Decoded) -> bool) -> bool {
    for decoded in out.drain(..) {
        if !sink(decoded) {
            return false;
        }
    }
    true
}

/// Pushes every piece of `input` into `decoder`, handing what it yields to
/// `sink` as it comes; returns false when the sink stopped early.
///
/// # Errors
/// The first input error, or the decoder's first error.
pub fn feed<B: AsRef<[u8]>, E>(
    decoder: &mut dyn Decoder,
    input: impl IntoIterator<Item = Result<B, E>>,
    mut sink: impl FnMut(Decoded) -> bool,
) -> Result<bool, DriveError<E>> {
    let mut out = Vec::new();
    for piece in input {
        let piece = piece.map_err(DriveError::Input)?;
        decoder
            .push(piece.as_ref(), &mut out)
            .map_err(DriveError::Decode)?;
        if !forward(&mut out, &mut sink) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Tells `decoder` its input ended and hands the rest to `sink`, up to
/// `until`; returns false when the sink stopped early.
///
/// # Errors
/// The decoder's first error.
pub fn end(
    decoder: &mut dyn Decoder,
    until: Until,
    mut sink: impl FnMut(Decoded) -> bool,
) -> Result<bool, DecodeError> {
    let mut out = Vec::new();
    decoder.finish(&mut out)?;
    if !forward(&mut out, &mut sink) {
        return Ok(false);
    }
    if until == Until::Counted && decoder.total_rows().is_some() {
        return Ok(true);
    }
    loop {
        let more = decoder.drain(&mut out)?;
        if !forward(&mut out, &mut sink) {
            return Ok(false);
        }
        if !more {
            return Ok(true);
        }
    }
}

/// [`feed`], then [`end`] until drained: the whole input through `decoder`.
///
/// # Errors
/// As [`feed`] and [`end`].
pub fn drive<B: AsRef<[u8]>, E>(
    decoder: &mut dyn Decoder,
    input: impl IntoIterator<Item = Result<B, E>>,
    mut sink: impl FnMut(Decoded) -> bool,
) -> Result<bool, DriveError<E>> {
    if !feed(decoder, input, &mut sink)? {
        return Ok(false);
    }
    end(decoder, Until::Drained, sink).map_err(DriveError::Decode)
}

/// [`drive`] over bytes in memory, cut into pieces of `split` bytes (the
/// whole at once when 0), collecting every output; for tests and tools.
///
/// # Errors
/// The decoder's first error.
pub fn decode_all(
    decoder: &mut dyn Decoder,
    bytes: &[u8],
    split: usize,
) -> Result<Vec<Decoded>, DecodeError> {
    let step = if split == 0 {
        bytes.len().max(1)
    } else {
        split
    };
    let mut all = Vec::new();
    drive(
        decoder,
        bytes.chunks(step).map(Ok::<_, std::convert::Infallible>),
        |d| {
            all.push(d);
            true
        },
    )
    .map_err(|e| match e {
        DriveError::Decode(e) => e,
        DriveError::Input(never) => match never {},
    })?;
    Ok(all)
}
