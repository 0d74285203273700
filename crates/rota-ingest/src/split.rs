//! A large line-delimited file (CSV, TSV, NDJSON) read as parts decoded at
//! once, one per core: exactly the records a whole read gives, in order.
//!
//! A cutter thread runs the format's framer over the file and hands out
//! parts (about [`IngestRequest::split_bytes`] each, ending after a whole
//! number of `--batch-rows` records when that is set) as it finds them.
//! Each part is decoded and encoded on a thread of its own into the tasks
//! it makes, which are held until every part before it is stored. The first
//! part is read from the file's start; a later part starts from a guess at
//! what the decoder knows there (the schema inferred from the head, or the
//! end of the last part stored). When the part before it ended knowing
//! something else (a record widened the schema), the guess was wrong and
//! the part is decoded again from that end before it is stored, so every
//! row is typed as a whole read types it. See [`rota_formats::split`].
//!
//! Task keys are `{relative}@{part start, 12 digits}#{seq, 8 digits}`: they
//! depend only on the file and the part size, so an ingest run again with
//! the same `split_bytes` makes the same keys and adds nothing twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rota_core::source::{Entry, ReadAt};
use rota_core::{Job, NewTask, Store};
use rota_formats::split::{Part, PartDecoder, Splitter, Start};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::IngestError;
use crate::pipeline::{Encoder, EntryRun, IngestRequest, Piece, write_group};
use crate::progress::Progress;

/// Bytes read from the file at a time, by the cutter and by each part.
const READ_PIECE: usize = 1 << 20;

/// Parts decoded at once, at most, however many cores there are.
const MAX_THREADS: usize = 8;

/// A file that can be read as parts, and how.
pub(crate) struct Splittable {
    splitter: Splitter,
    read: Arc<dyn ReadAt>,
    format: String,
}

/// Whether `entry` is read as parts: a local file of a line-delimited
/// format, by `--format` or its name, neither compressed nor in another
/// encoding than UTF-8, at least twice `split_bytes` long.
pub(crate) async fn splittable(
    req: &IngestRequest,
    entry: &Entry,
    format: Option<&Arc<dyn rota_core::format::Format>>,
) -> Result<Option<Splittable>, IngestError> {
    let size = entry.size.unwrap_or(0);
    if req.split_bytes == 0 || size < req.split_bytes.saturating_mul(2) {
        return Ok(None);
    }
    if req.encoding.as_deref().is_some_and(|label| {
        rota_formats::text_encoding(label).is_ok_and(|e| !rota_formats::encoding::is_utf8(e))
    }) {
        return Ok(None);
    }
    if rota_formats::Compression::from_suffix(&entry.relative).is_some() {
        return Ok(None);
    }
    let Some(format) = format
        .cloned()
        .or_else(|| rota_formats::by_extension(&entry.relative))
    else {
        return Ok(None);
    };
    let mut options = req.decode.clone();
    options.location.clone_from(&entry.location);
    options.entry = Some(entry.clone());
    let Some(splitter) = Splitter::new(format.name(), &options)? else {
        return Ok(None);
    };
    // Remote files are streamed: a read in parts would fetch them twice
    // (once to find where records end) in many ranged requests.
    let source = req.sources.for_location(&entry.location)?;
    if !source.schemes().contains(&"file") {
        return Ok(None);
    }
    let Some(read) = source.random_access(entry).await? else {
        return Ok(None);
    };
    // A file compressed under a plain name is streamed and unpacked; one
    // that cannot be read here is left to the stream to report.
    let magic = {
        let read = Arc::clone(&read);
        tokio::task::spawn_blocking(move || {
            let mut magic =
                vec![0; rota_formats::compression::MAGIC_BYTES.min(read.size() as usize)];
            read.read_exact_at(0, &mut magic).ok().map(|()| magic)
        })
        .await
        .ok()
        .flatten()
    };
    match magic {
        Some(magic) if matches!(rota_formats::Compression::detect(&magic, None), Ok(None)) => {}
        _ => return Ok(None),
    }
    Ok(Some(Splittable {
        splitter,
        read,
        format: format.name().to_owned(),
    }))
}

/// What decoding one part gave.
struct PartRun {
    part: Part,
    /// The start it was decoded from (none for the first part).
    from: Option<Start>,
    /// The tasks it made, in order.
    tasks: Vec<NewTask>,
    skipped: u64,
    sample: Vec<rota_core::SkippedRecord>,
    /// What its decoder knew at its end.
    end: Option<Start>,
    /// Why it stopped early, if it did (the tasks are those made before).
    error: Option<IngestError>,
}

/// Ingests `entry` as parts, decoded on as many threads as the machine has
/// cores, counting what it stored in `run` (also when it fails part way).
///
/// # Errors
/// A failed read, store write or decode (under `on_error = fail`, or a
/// framing error under either), as a whole read of the file fails.
pub(crate) async fn run_split(
    store: &Arc<dyn Store>,
    req: &IngestRequest,
    job: &Job,
    entry: &Entry,
    split: Splittable,
    progress: &Arc<Progress>,
    run: &mut EntryRun,
) -> Result<(), IngestError> {
    run.file.format = split.format.clone();
    let size = split.read.size();
    let read_so_far = progress.start_file(&entry.relative, Some(size));
    let stop = Arc::new(AtomicBool::new(false));
    let splitter = Arc::new(split.splitter);
    let align = req.batch.max_rows.unwrap_or(0);

    // The cutter: parts as they are found.
    let (part_tx, mut part_rx) = mpsc::channel::<Part>(64);
    let cutter = {
        let (splitter, read, stop) = (
            Arc::clone(&splitter),
            Arc::clone(&split.read),
            Arc::clone(&stop),
        );
        let part_bytes = req.split_bytes;
        let location = entry.location.clone();
        tokio::task::spawn_blocking(move || -> Result<(), IngestError> {
            let mut cutter = splitter.cutter(part_bytes, align)?;
            let mut parts = Vec::new();
            let mut piece = vec![0; READ_PIECE];
            let mut at = 0u64;
            while at < size && !stop.load(Ordering::Relaxed) {
                let n = usize::try_from((size - at).min(READ_PIECE as u64)).unwrap_or(READ_PIECE);
                read.read_exact_at(at, &mut piece[..n])
                    .map_err(|source| read_failed(&location, source))?;
                at += n as u64;
                let more = cutter.push(&piece[..n], &mut parts);
                for part in parts.drain(..) {
                    if part_tx.blocking_send(part).is_err() {
                        return Ok(());
                    }
                }
                if !more {
                    break;
                }
            }
            cutter.finish(size, &mut parts);
            for part in parts {
                let _ = part_tx.blocking_send(part);
            }
            Ok(())
        })
    };

    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    // Parts decoding or decoded and not yet stored each hold their tasks:
    // memory grows with the window.
    let window = threads.min(MAX_THREADS) + 1;
    let prefix = |part: &Part| format!("{}@{:012}", entry.relative, part.start);
    let start_part = |part: Part, from: Option<Start>| -> JoinHandle<PartRun> {
        let splitter = Arc::clone(&splitter);
        let read = Arc::clone(&split.read);
        let stop = Arc::clone(&stop);
        let encoder = Encoder::new(
            req.batch,
            req.payload,
            prefix(&part),
            entry.location.clone(),
            Arc::clone(progress),
        );
        let on_error = req.decode.on_error;
        let location = entry.location.clone();
        tokio::task::spawn_blocking(move || {
            decode_part(
                &splitter,
                read.as_ref(),
                part,
                from,
                encoder,
                on_error,
                &location,
                &stop,
            )
        })
    };

    let mut guess: Option<Start> = None;
    let mut exact_end: Option<Start> = None;
    let mut running: VecDeque<JoinHandle<PartRun>> = VecDeque::new();
    let mut waiting: VecDeque<Part> = VecDeque::new();
    let mut parts_done = false;
    let mut failed = None;
    let result = async {
        loop {
            // Start parts while there is room: the first from the file's
            // start, later ones from the best guess at hand.
            while running.len() < window {
                let part = match waiting.pop_front() {
                    Some(p) => p,
                    None => match part_rx.try_recv() {
                        Ok(p) => p,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            parts_done = true;
                            break;
                        }
                    },
                };
                if part.index == 0 {
                    // The guess for later parts: what the head's sample gives.
                    let (splitter, read) = (Arc::clone(&splitter), Arc::clone(&split.read));
                    let end = part.end;
                    let head =
                        tokio::task::spawn_blocking(move || splitter.guess(read.as_ref(), end));
                    running.push_back(start_part(part, None));
                    guess = head.await.ok().flatten();
                    continue;
                }
                let Some(from) = exact_end.clone().or_else(|| guess.clone()) else {
                    if running.is_empty() {
                        return Err(no_start(entry, &part));
                    }
                    // Nothing to guess from: the part waits for the exact
                    // end of the one before it.
                    waiting.push_front(part);
                    break;
                };
                running.push_back(start_part(part, Some(from)));
            }
            let room = running.len() < window && waiting.is_empty() && !parts_done;
            let Some(front) = running.front_mut() else {
                if parts_done && waiting.is_empty() {
                    return Ok::<_, IngestError>(());
                }
                // Nothing runs: wait for the cutter's next part.
                match part_rx.recv().await {
                    Some(p) => waiting.push_back(p),
                    None => parts_done = true,
                }
                continue;
            };
            // The first part in flight is stored first; parts the cutter
            // finds meanwhile start on idle cores.
            let done = tokio::select! {
                done = front => done,
                part = part_rx.recv(), if room => {
                    match part {
                        Some(p) => waiting.push_back(p),
                        None => parts_done = true,
                    }
                    continue;
                }
            };
            running.pop_front();
            let mut done =
                done.map_err(|e| IngestError::Encode(format!("decoder thread failed: {e}")))?;
            if done.part.index > 0 {
                let Some(exact) = exact_end.clone() else {
                    return Err(no_start(entry, &done.part));
                };
                if !done.from.as_ref().is_some_and(|from| Splitter::check(from, &exact)) {
                    tracing::debug!(file = %entry.relative, part = done.part.index, "a record before this part widened the schema; decoding it again");
                    done = start_part(done.part, Some(exact))
                        .await
                        .map_err(|e| IngestError::Encode(format!("decoder thread failed: {e}")))?;
                }
            }
            // Stored in order: this part's tasks, then its counts.
            let (added, rows, made) =
                write_group(store, job.id, std::mem::take(&mut done.tasks), progress).await?;
            run.added += added;
            run.file.rows += rows;
            run.file.tasks += made;
            run.file.skipped += done.skipped;
            let room = crate::pipeline::SKIP_SAMPLE.saturating_sub(run.sample.len());
            run.sample.extend(done.sample.into_iter().take(room));
            let bytes = done.part.end - done.part.start;
            Progress::add(&progress.bytes, bytes);
            Progress::add(&read_so_far, bytes);
            if let Some(e) = done.error {
                failed = Some(e);
                return Ok(());
            }
            exact_end = done.end;
        }
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    drop(part_rx);
    for handle in running {
        let _ = handle.await;
    }
    let cut = cutter
        .await
        .map_err(|e| IngestError::Encode(format!("cutter thread failed: {e}")))?;
    progress.end_file(&entry.relative);
    run.file.bytes = read_so_far.load(Ordering::Relaxed);
    result?;
    if let Some(e) = failed {
        return Err(e);
    }
    cut
}

/// The part before `part` ended knowing no schema, which a decoder that
/// read to the end of its input always does; a bug if it happens.
fn no_start(entry: &Entry, part: &Part) -> IngestError {
    IngestError::Encode(format!(
        "{}: the part of the file before byte {} ended with no schema to go on from",
        entry.location, part.start
    ))
}

/// A failed read of the file at `location`.
fn read_failed(location: &str, source: std::io::Error) -> IngestError {
    IngestError::Source(rota_core::SourceError::Io {
        location: location.to_owned(),
        source,
    })
}

/// Decodes and encodes one part on this thread.
#[allow(clippy::too_many_arguments)] // one part's whole context
fn decode_part(
    splitter: &Splitter,
    read: &dyn ReadAt,
    part: Part,
    from: Option<Start>,
    mut encoder: Encoder,
    on_error: rota_core::OnError,
    location: &str,
    stop: &AtomicBool,
) -> PartRun {
    let mut run = PartRun {
        part,
        from: from.clone(),
        tasks: Vec::new(),
        skipped: 0,
        sample: Vec::new(),
        end: None,
        error: None,
    };
    let decoder: Box<dyn PartDecoder> = match match &from {
        None => splitter.first(),
        Some(start) => splitter.part(start, &part),
    } {
        Ok(d) => d,
        Err(e) => {
            run.error = Some(e.into());
            return run;
        }
    };
    let mut decoder =
        rota_formats::plain::Plain::new(decoder, location, on_error).starting_at(part.records);
    let mut out = Vec::new();
    let mut piece = vec![0; READ_PIECE];
    let mut at = part.start;
    let result = (|| {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = usize::try_from((part.end - at).min(READ_PIECE as u64)).unwrap_or(READ_PIECE);
            if n == 0 {
                rota_core::format::Decoder::finish(&mut decoder, &mut out)?;
            } else {
                read.read_exact_at(at, &mut piece[..n])
                    .map_err(|source| read_failed(location, source))?;
                at += n as u64;
                rota_core::format::Decoder::push(&mut decoder, &piece[..n], &mut out)?;
            }
            for d in out.drain(..) {
                encoder.piece(Piece::from(d), &mut run.tasks)?;
            }
            if n == 0 {
                encoder.finish(&mut run.tasks)?;
                return Ok::<_, IngestError>(());
            }
        }
    })();
    // What was decoded before a failure is kept, as a whole read keeps it.
    for d in out.drain(..) {
        if encoder.piece(Piece::from(d), &mut run.tasks).is_err() {
            break;
        }
    }
    if let Err(e) = result {
        let _ = encoder.finish(&mut run.tasks);
        run.error = Some(e);
    }
    run.end = decoder.inner().start();
    run.skipped = encoder.skipped;
    run.sample = std::mem::take(&mut encoder.sample);
    run
}
