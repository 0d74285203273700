//! The ingest pipeline: list → read → decode → chunk/encode → store.
//!
//! Reading runs on the async runtime; decoding and encoding each run on a
//! blocking thread of their own; bounded channels between the stages give
//! backpressure, so memory stays flat whatever the file size. Several files
//! go through their own stages at once, up to a bound. The job is
//! created held: its tasks become claimable only when every file was ingested,
//! and an ingest that fails leaves the job failed with nothing claimable (or,
//! after a failed store write, held for a rerun: see [`ingest`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use futures::{FutureExt, StreamExt};
use rota_core::format::{DecodeOptions, Decoded, Format};
use rota_core::source::{Entry, EntryStream};
use rota_core::{
    BatchPolicy, DecodeError, FileClaim, FileFilter, FileReport, FileState, IngestReport, Job,
    JobId, JobState, NewJob, NewTask, OnError, PayloadEncoding, SkippedRecord, Store, StoreError,
};
use rota_formats::drive::{DriveError, drive};
use tokio::sync::mpsc;

use crate::chunker::Chunker;
use crate::error::IngestError;
use crate::open::{Opened, open_file};
use crate::progress::Progress;

/// Skipped records kept as a sample on the job.
pub const SKIP_SAMPLE: usize = 20;
/// Bytes of payload written to the store per call (or fewer, see `TASKS_PER_WRITE`).
const BYTES_PER_WRITE: usize = 16 << 20;
/// Tasks written to the store per call at most.
const TASKS_PER_WRITE: usize = 256;
/// Source chunks (1 MiB each) queued for the decoder.
const QUEUE_BYTES_CHUNKS: usize = 8;
/// Decoded batches (up to 8192 rows each) queued for the encoder.
const QUEUE_BATCHES: usize = 8;
/// Groups of encoded tasks (one group per decoded batch) queued for the store.
/// Deep enough that a store pausing for a checkpoint's fsync does not stall
/// decoding, the pipeline's critical path; bounded so memory stays flat.
const QUEUE_TASK_GROUPS: usize = 24;

/// What to ingest and how.
#[derive(Clone, Debug)]
pub struct IngestRequest {
    /// A file, a directory, or a `file://` URL.
    pub location: String,
    /// Descend into subdirectories.
    pub recursive: bool,
    /// Only files whose relative path matches.
    pub glob: Option<String>,
    /// Only files of these sizes and modification times.
    pub filter: rota_sources::EntryFilter,
    /// How to reach remote sources (S3 endpoint and credentials).
    pub sources: rota_sources::SourceSettings,
    /// Format name; detected from each file's extension when `None`.
    pub format: Option<String>,
    /// Decoder options (the location is filled in per file).
    pub decode: DecodeOptions,
    /// Bounds on what a compressed file may expand to.
    pub decompression: rota_formats::Limits,
    /// Character encoding of text input (a WHATWG label such as `latin1` or
    /// `utf-16`); UTF-8 when `None`.
    pub encoding: Option<String>,
    /// How records are cut into tasks.
    pub batch: BatchPolicy,
    /// How a task's records are encoded.
    pub payload: PayloadEncoding,
    /// The job to create (its `hold` and `ingest` are set by the pipeline).
    pub job: NewJob,
    /// Files ingested at the same time, at most (at least 1). Each file in
    /// flight has its own read, decode and encode stages and their buffers.
    pub parallel: usize,
    /// A CSV, TSV or NDJSON file at least twice this long (a local file,
    /// uncompressed, UTF-8) is read as parts of about
    /// this many bytes, decoded at once on every core; 0 reads every file
    /// as one stream. Task keys depend on it: an ingest run again under the
    /// same job key must use the same value.
    pub split_bytes: u64,
    /// The node this ingest runs on, when several nodes read the same
    /// job's files (`rota serve` on a shared store): each file is read by
    /// the node that claims it ([`Store::claim_file`]), renewed while it
    /// reads; a node waits for the files others read (and reads those
    /// whose node stopped renewing), and the first to see every file done
    /// releases the job. Its file records name it.
    pub node: Option<String>,
}

/// [`IngestRequest::split_bytes`] unless a request says otherwise: off.
/// On two cores the whole-file pipeline (its read, decode, encode and
/// write stages on threads of their own) is as fast, in far less memory;
/// parts pay on machines with more cores than it has stages.
pub const DEFAULT_SPLIT_BYTES: u64 = 0;

/// Files ingested at the same time unless a request says otherwise.
pub const DEFAULT_PARALLEL_FILES: usize = 4;
/// File records written to the store per call, at most; fewer every
/// [`FILE_RECORD_INTERVAL`].
const FILE_RECORDS_PER_WRITE: usize = 256;
/// How often finished files are recorded in the store, so that an ingest
/// resumed after a crash skips most of what was done.
const FILE_RECORD_INTERVAL: Duration = Duration::from_secs(2);

/// How an ingest ended.
#[derive(Clone, Debug)]
pub struct IngestSummary {
    /// The job, as stored at the end.
    pub job: Job,
    /// Whether this call created the job (false when its key existed).
    pub created: bool,
    /// The job existed and was already fully ingested: nothing was read.
    pub already_ingested: bool,
    /// Tasks this call added (0 on a replay).
    pub added: u64,
    /// What was read and made.
    pub report: IngestReport,
    /// Wall time.
    pub elapsed: Duration,
}

/// Runs an ingest into `store`. Counters in `progress` move as it goes.
///
/// Up to `req.parallel` files are ingested at once, as the listing streams
/// in. Each file's outcome is recorded on the job ([`Store::put_files`]):
/// state, bytes, rows, tasks, skipped records and, if it failed, the error.
/// An ingest resumed under the same job key skips the files its earlier run
/// recorded as done, when their version tag (or size) is unchanged.
///
/// # Errors
/// On an invalid request, a listing failure, a store failure, or — under
/// `on_error = fail` — the first file that fails to read or decode. The
/// first stage to fail stops the others, so an ingest never waits on a stage
/// that has given up. The job (if it was created) is failed with the error
/// and none of its tasks is claimable; except when a store write failed
/// (full disk, file size limit, database locked past the busy timeout) in a
/// job with a key: that job is kept held, none of its tasks claimable, and
/// [`IngestError::StoreHeld`] says so. Running the same ingest again under
/// the same key once the store can be written to finishes it, each row once.
/// Under `on_error = skip` a file that fails part way keeps the tasks made
/// before the failure, is recorded as failed and counted in
/// [`IngestReport::files_failed`], and the others go on.
pub async fn ingest(
    store: Arc<dyn Store>,
    req: IngestRequest,
    progress: Arc<Progress>,
) -> Result<IngestSummary, IngestError> {
    let started = Instant::now();
    // The passwords given in this ingest's URLs serve it alone.
    let req = IngestRequest {
        sources: req.sources.for_ingest(),
        ..req
    };
    // List first: a missing path, or one with nothing to ingest, fails before
    // any job exists.
    let (explicit, listing, first) = check_and_list(&req).await?;

    let mut report = IngestReport {
        source: rota_sources::redact(&req.location),
        format: req.format.clone().unwrap_or_default(),
        payload: req.payload,
        batch: Some(req.batch),
        ..IngestReport::default()
    };
    let mut new_job = req.job.clone();
    new_job.hold = true;
    new_job.ingest = Some(report.clone());
    let (job, created) = store.create_job(new_job).await?;
    if !created {
        if job.released {
            return Ok(IngestSummary {
                report: job.ingest.clone().unwrap_or_default(),
                job,
                created,
                already_ingested: true,
                added: 0,
                elapsed: started.elapsed(),
            });
        }
        if job.state != JobState::Pending {
            return Err(IngestError::Conflict(format!(
                "job {} with key '{}' is {}; use another job key",
                job.id,
                job.key.as_deref().unwrap_or_default(),
                job.state
            )));
        }
        tracing::info!(job = %job.id, "resuming the unfinished ingest of an existing job");
    }

    // A resumed ingest skips the files it finished before, if unchanged.
    let finished = if created {
        HashMap::new()
    } else {
        finished_files(store.as_ref(), job.id).await?
    };
    let mut added = 0;
    let mut formats_seen: Vec<String> = Vec::new();
    let mut records: Vec<FileReport> = Vec::new();
    let mut listing = Some(listing);
    let mut next = Some(first);
    // With several nodes on the job: files another node reads now, and
    // those to claim again (their node may have died).
    let mut elsewhere: Vec<Entry> = Vec::new();
    let mut again: Vec<Entry> = Vec::new();
    let mut closed = false;
    let result = async {
        let parallel = req.parallel.max(1);
        let mut running = futures::stream::FuturesUnordered::new();
        let mut tick = tokio::time::interval(FILE_RECORD_INTERVAL);
        let mut renew = tokio::time::interval(FILE_RENEW_EVERY);
        loop {
            // Keep `parallel` files in flight while the listing has more.
            while running.len() < parallel && !closed {
                let entry = match again.pop().or_else(|| next.take()) {
                    Some(entry) => entry,
                    None => match listing.as_mut() {
                        Some(l) => match l.next_entry().await? {
                            Some(entry) => entry,
                            None => {
                                listing = None;
                                break;
                            }
                        },
                        None => break,
                    },
                };
                if let Some(node) = &req.node {
                    match claim(store.as_ref(), job.id, &entry, node).await? {
                        Claimed::Read => {}
                        Claimed::Skip => continue,
                        Claimed::Elsewhere => {
                            elsewhere.push(entry);
                            continue;
                        }
                        Claimed::Closed => {
                            closed = true;
                            break;
                        }
                    }
                }
                running.push(
                    run_entry(entry, &store, &req, explicit.as_ref(), &job, &progress, &finished)
                        .boxed(),
                );
            }
            if running.is_empty() {
                if closed {
                    break;
                }
                if listing.is_none() && again.is_empty() {
                    if elsewhere.is_empty() {
                        break;
                    }
                    // Wait for the other nodes' files; claim any whose node
                    // stopped renewing.
                    tokio::time::sleep(ELSEWHERE_POLL).await;
                    again.append(&mut elsewhere);
                    continue;
                }
            }
            let run = tokio::select! {
                run = running.next() => match run {
                    Some(run) => run,
                    None => continue,
                },
                _ = tick.tick(), if !records.is_empty() => {
                    store.put_files(job.id, std::mem::take(&mut records)).await?;
                    continue;
                }
                _ = renew.tick(), if req.node.is_some() => {
                    let node = req.node.as_deref().unwrap_or_default();
                    store.renew_files(job.id, node, FILE_LEASE).await?;
                    continue;
                }
            };
            let file = run.file;
            if let Some(e) = run.error {
                let fatal = req.decode.on_error == OnError::Fail
                    || matches!(e, IngestError::Store(_) | IngestError::Conflict(_));
                if fatal {
                    // A file cut short by a store that could not take a
                    // write is not failed: the ingest run again reads it
                    // (its record stays `running`, under a claim that runs
                    // out), as it reads the files it had not reached.
                    if !matches!(&e, IngestError::Store(cause) if keep_held(&job, cause)) {
                        records.push(file);
                    }
                    return Err(e);
                }
                tracing::warn!(error = %e, "a file failed part way; going on with the others");
                report.files_failed += 1;
            } else if run.resumed {
                tracing::info!(file = %file.location, "finished by the interrupted ingest; skipped");
            }
            added += run.added;
            report.files += 1;
            report.bytes += file.bytes;
            report.rows += file.rows;
            report.tasks += file.tasks;
            report.skipped += file.skipped;
            let room = SKIP_SAMPLE.saturating_sub(report.skipped_sample.len());
            report.skipped_sample.extend(run.sample.into_iter().take(room));
            if !file.format.is_empty() && !formats_seen.contains(&file.format) {
                formats_seen.push(file.format.clone());
            }
            Progress::add(&progress.files, 1);
            records.push(file);
            // Other nodes wait for a file's record: it is written at once.
            if records.len() >= FILE_RECORDS_PER_WRITE || req.node.is_some() {
                store.put_files(job.id, std::mem::take(&mut records)).await?;
            }
        }
        Ok::<_, IngestError>(())
    }
    .await;
    report.format = formats_seen.join(",");
    let recorded = store.put_files(job.id, records).await;
    if closed && result.is_ok() && recorded.is_ok() {
        // Another node ended the job's ingest (it read the last file) or
        // the job ended.
        let job = store
            .get_job(job.id)
            .await?
            .ok_or_else(|| IngestError::Conflict(format!("job {} was deleted", job.id)))?;
        if !job.released {
            return Err(IngestError::Conflict(format!(
                "job {} is {} and no longer waits for its ingest",
                job.id, job.state
            )));
        }
        return Ok(IngestSummary {
            report: job.ingest.clone().unwrap_or_default(),
            job,
            created,
            already_ingested: false,
            added,
            elapsed: started.elapsed(),
        });
    }
    // With several nodes, the report counts every node's files.
    let result = match (result, &req.node) {
        (Ok(()), Some(_)) => whole_report(store.as_ref(), job.id, &mut report)
            .await
            .map_err(IngestError::from),
        (result, _) => result,
    };

    match result.and(recorded.map_err(IngestError::from)) {
        Ok(()) => {
            let job = store.release_job(job.id, Some(report.clone())).await?;
            Ok(IngestSummary {
                job,
                created,
                already_ingested: false,
                added,
                report,
                elapsed: started.elapsed(),
            })
        }
        Err(IngestError::Store(cause)) if keep_held(&job, &cause) => {
            // The store could not take a write (full disk, file size limit,
            // database locked past the busy timeout). The job stays held,
            // nothing of it claimable, so that the same ingest run again
            // once the store can be written to finishes it.
            let key = job.key.clone().unwrap_or_default();
            tracing::warn!(job = %job.id, %key, error = %cause, "a store write failed; the job is kept held");
            Err(IngestError::StoreHeld {
                job: job.id,
                key,
                cause,
            })
        }
        Err(e) => {
            if let Err(fail) = store.fail_job(job.id, e.to_string(), Some(report)).await {
                tracing::error!(job = %job.id, error = %fail, "could not mark the job failed");
            }
            Err(e)
        }
    }
}

/// Stores `tasks` in `job`, several per write; returns the tasks added (new
/// to the store), the rows and the tasks stored.
pub(crate) async fn write_group(
    store: &Arc<dyn Store>,
    job: JobId,
    tasks: Vec<NewTask>,
    progress: &Progress,
) -> Result<(u64, u64, u64), IngestError> {
    let (mut added, mut rows, mut made) = (0, 0, 0);
    let mut tasks = tasks.into_iter().peekable();
    while tasks.peek().is_some() {
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(task) =
            tasks.next_if(|_| group.len() < TASKS_PER_WRITE && bytes < BYTES_PER_WRITE)
        {
            bytes += task.payload.len();
            group.push(task);
        }
        let n = group.len() as u64;
        let r: u64 = group.iter().map(|t| t.rows).sum();
        added += store.add_tasks(job, group).await?;
        rows += r;
        made += n;
        Progress::add(&progress.rows, r);
        Progress::add(&progress.tasks, n);
    }
    Ok((added, rows, made))
}

/// How long a node's claim on a file it reads lasts unless renewed: a file
/// whose node died is read again by another this long after, at most.
const FILE_LEASE: Duration = Duration::from_secs(15);
/// How often a node renews its claims on the files it reads.
const FILE_RENEW_EVERY: Duration = Duration::from_secs(5);
/// How often a node that read all it could looks whether the files other
/// nodes read are done.
const ELSEWHERE_POLL: Duration = Duration::from_millis(500);

/// What to do with a listed file when several nodes read the job's files.
enum Claimed {
    /// Read it: this node has the claim.
    Read,
    /// Leave it: read already, unchanged since.
    Skip,
    /// Another node reads it now.
    Elsewhere,
    /// The job no longer waits for its ingest.
    Closed,
}

/// Claims `entry` for `node`, or says why not.
async fn claim(
    store: &dyn Store,
    job: JobId,
    entry: &Entry,
    node: &str,
) -> Result<Claimed, StoreError> {
    let stub = empty_record(entry, FileState::Running, Some(node.to_owned()));
    let mut answer = store
        .claim_file(job, stub.clone(), node, FILE_LEASE, false)
        .await?;
    if let FileClaim::Finished(before) = &answer
        && !unchanged(before, entry)
    {
        // Changed since it was read: read it again.
        answer = store.claim_file(job, stub, node, FILE_LEASE, true).await?;
    }
    Ok(match answer {
        FileClaim::Yours => Claimed::Read,
        FileClaim::Finished(_) => Claimed::Skip,
        FileClaim::Elsewhere => Claimed::Elsewhere,
        FileClaim::Closed => Claimed::Closed,
    })
}

/// The record of `entry` before anything of it was read.
fn empty_record(entry: &Entry, state: FileState, node: Option<String>) -> FileReport {
    FileReport {
        relative: entry.relative.clone(),
        location: rota_sources::redact(&entry.location),
        size: entry.size,
        etag: entry.etag.clone(),
        format: String::new(),
        state,
        bytes: 0,
        rows: 0,
        tasks: 0,
        skipped: 0,
        error: None,
        node,
    }
}

/// Fills `report`'s counts from every file record of `job`: with several
/// nodes, each read some of the files.
async fn whole_report(
    store: &dyn Store,
    job: JobId,
    report: &mut IngestReport,
) -> Result<(), StoreError> {
    let (mut files, mut failed, mut bytes, mut rows, mut tasks, mut skipped) = (0, 0, 0, 0, 0, 0);
    let mut formats: Vec<String> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_files(
                job,
                FileFilter {
                    after: after.take(),
                    ..FileFilter::default()
                },
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.relative.clone());
        for f in &page {
            files += 1;
            failed += u64::from(f.state == FileState::Failed);
            bytes += f.bytes;
            rows += f.rows;
            tasks += f.tasks;
            skipped += f.skipped;
            if !f.format.is_empty() && !formats.contains(&f.format) {
                formats.push(f.format.clone());
            }
        }
    }
    report.files = files;
    report.files_failed = failed;
    report.bytes = bytes;
    report.rows = rows;
    report.tasks = tasks;
    report.skipped = skipped;
    report.format = formats.join(",");
    Ok(())
}

/// Whether a store failure leaves `job` held rather than failed: when the
/// store could not write (not when it refused the request) and the job has
/// a key that an ingest run again can resume it by. A job without a key
/// cannot be resumed, so it is failed.
fn keep_held(job: &Job, cause: &StoreError) -> bool {
    job.key.is_some() && matches!(cause, StoreError::Transient(_) | StoreError::Backend(_))
}

/// The files a job's earlier, interrupted ingest finished, by relative path.
async fn finished_files(
    store: &dyn Store,
    job: JobId,
) -> Result<HashMap<String, FileReport>, IngestError> {
    let mut done = HashMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_files(
                job,
                FileFilter {
                    state: Some(FileState::Done),
                    after: after.take(),
                    limit: 0,
                },
            )
            .await?;
        let Some(last) = page.last() else {
            return Ok(done);
        };
        after = Some(last.relative.clone());
        done.extend(page.into_iter().map(|f| (f.relative.clone(), f)));
    }
}

/// Whether `entry` is the file `before` recorded: same location, and the
/// same version tag or, without one, the same size. A file the source can
/// say nothing about is read again.
fn unchanged(before: &FileReport, entry: &Entry) -> bool {
    let location = rota_sources::redact(&entry.location);
    before.location == location
        && match (&before.etag, &entry.etag) {
            (Some(a), Some(b)) => a == b,
            (None, None) => before.size.is_some() && before.size == entry.size,
            _ => false,
        }
}

/// Ingests one listed entry, or skips it when the interrupted run it
/// resumes finished it.
async fn run_entry(
    entry: Entry,
    store: &Arc<dyn Store>,
    req: &IngestRequest,
    explicit: Option<&Arc<dyn Format>>,
    job: &Job,
    progress: &Arc<Progress>,
    finished: &HashMap<String, FileReport>,
) -> EntryRun {
    if let Some(before) = finished.get(&entry.relative)
        && unchanged(before, &entry)
    {
        return EntryRun {
            file: before.clone(),
            error: None,
            added: 0,
            sample: Vec::new(),
            resumed: true,
        };
    }
    ingest_entry(store, req, explicit, job, &entry, progress).await
}

/// What ingesting one file gave.
pub(crate) struct EntryRun {
    /// Its record.
    pub(crate) file: FileReport,
    /// Why it failed, when it did (the record holds the text).
    pub(crate) error: Option<IngestError>,
    /// Tasks it added to the store.
    pub(crate) added: u64,
    /// A sample of the records it skipped.
    pub(crate) sample: Vec<SkippedRecord>,
    /// Whether it was skipped, finished by an earlier run of the ingest.
    pub(crate) resumed: bool,
}

/// Ingests one listed file; never fails itself, the run says how it went.
async fn ingest_entry(
    store: &Arc<dyn Store>,
    req: &IngestRequest,
    explicit: Option<&Arc<dyn Format>>,
    job: &Job,
    entry: &Entry,
    progress: &Arc<Progress>,
) -> EntryRun {
    let mut run = EntryRun {
        file: empty_record(entry, FileState::Done, req.node.clone()),
        error: None,
        added: 0,
        sample: Vec::new(),
        resumed: false,
    };
    let result = match crate::split::splittable(req, entry, explicit).await {
        Ok(Some(split)) => {
            crate::split::run_split(store, req, job, entry, split, progress, &mut run).await
        }
        Ok(None) => run_whole(store, req, explicit, job, entry, progress, &mut run).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        run.file.state = FileState::Failed;
        run.file.error = Some(e.to_string());
        run.error = Some(e);
    }
    run
}

/// Ingests one file as one stream.
async fn run_whole(
    store: &Arc<dyn Store>,
    req: &IngestRequest,
    explicit: Option<&Arc<dyn Format>>,
    job: &Job,
    entry: &Entry,
    progress: &Arc<Progress>,
    run: &mut EntryRun,
) -> Result<(), IngestError> {
    match open_file(req, entry, explicit).await {
        Ok(opened) => {
            run.file.format = opened.format.name().to_owned();
            let read = progress.start_file(&entry.relative, entry.size);
            let mut stats = FileStats::default();
            let result =
                run_file(store, req, job, entry, opened, progress, &read, &mut stats).await;
            progress.end_file(&entry.relative);
            run.file.bytes = read.load(Ordering::Relaxed);
            run.file.rows = stats.rows;
            run.file.tasks = stats.tasks;
            run.file.skipped = stats.skipped;
            run.added = stats.added;
            run.sample = stats.sample;
            result
        }
        Err(e) => Err(e),
    }
}

/// Checks the request, then lists its files; returns the format it names,
/// the listing, and the first file.
pub(crate) async fn check_and_list(
    req: &IngestRequest,
) -> Result<(Option<Arc<dyn Format>>, Box<dyn EntryStream>, Entry), IngestError> {
    req.batch.validate().map_err(IngestError::Invalid)?;
    let explicit = match &req.format {
        Some(name) => Some(rota_formats::by_name(name).ok_or_else(|| {
            IngestError::Invalid(format!(
                "unknown format '{name}' (known: {})",
                rota_formats::names().join(", ")
            ))
        })?),
        None => None,
    };
    if let Some(label) = &req.encoding {
        rota_formats::text_encoding(label).map_err(IngestError::Invalid)?;
    }
    let list = rota_sources::list_request(&req.location, req.recursive, req.glob.as_deref())?;
    let source = req.sources.for_location(&list.location)?;
    let listing = source.list(&list).await?;
    let mut listing = req.filter.clone().apply(listing)?;
    let Some(first) = listing.next_entry().await? else {
        return Err(IngestError::Invalid(format!(
            "{}: no files to ingest{}",
            rota_sources::redact(&req.location),
            match (&list.glob, list.recursive) {
                _ if !req.filter.is_empty() => {
                    " (none passes the --exclude, --min-size, --max-size and --modified-since \
                     filters)"
                        .to_owned()
                }
                (Some(g), _) => format!(" match '{g}'"),
                (None, false) => " (pass --recursive to descend into subdirectories)".to_owned(),
                (None, true) => String::new(),
            }
        )));
    };
    Ok((explicit, listing, first))
}

/// Decompresses what the read stage sends and passes it on to the decoder.
/// Ends quietly when the decoder stops first (its error explains why).
fn unpack_stage(
    compression: rota_formats::Compression,
    location: &str,
    limits: rota_formats::Limits,
    mut packed: mpsc::Receiver<Vec<u8>>,
    plain: &mpsc::Sender<Vec<u8>>,
) -> Result<(), DecodeError> {
    let mut unpacker = rota_formats::Decompressor::new(compression, location, limits)?;
    let stopped = std::cell::Cell::new(false);
    // Once the decoder stops, the rest of the chunk at hand is dropped and
    // no more is read.
    let mut sink = |bytes: &[u8]| {
        if !stopped.get() && plain.blocking_send(bytes.to_vec()).is_err() {
            stopped.set(true);
        }
        Ok(())
    };
    while let Some(chunk) = packed.blocking_recv() {
        unpacker.push(&chunk, &mut sink)?;
        if stopped.get() {
            return Ok(());
        }
    }
    unpacker.finish(&mut sink)
}

/// What the decode thread hands the encode thread.
pub(crate) enum Piece {
    Batch(RecordBatch),
    Skipped(SkippedRecord),
}

impl From<Decoded> for Piece {
    fn from(d: Decoded) -> Self {
        match d {
            Decoded::Batch(b) => Self::Batch(b),
            Decoded::Skipped { error, excerpt } => Self::Skipped(SkippedRecord {
                error: error.to_string(),
                excerpt,
            }),
        }
    }
}

/// The chunk-and-encode stage: decoded pieces in, tasks out, skipped
/// records counted and sampled.
pub(crate) struct Encoder {
    policy: BatchPolicy,
    encoding: PayloadEncoding,
    /// Task keys start with it.
    prefix: String,
    /// The file, for error messages.
    location: String,
    progress: Arc<Progress>,
    chunker: Option<Chunker>,
    /// Records skipped.
    pub(crate) skipped: u64,
    /// A sample of them.
    pub(crate) sample: Vec<SkippedRecord>,
}

impl Encoder {
    pub(crate) fn new(
        policy: BatchPolicy,
        encoding: PayloadEncoding,
        prefix: String,
        location: String,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            policy,
            encoding,
            prefix,
            location,
            progress,
            chunker: None,
            skipped: 0,
            sample: Vec::new(),
        }
    }

    /// An encoding failure names the file it happened in.
    fn in_file(location: &str, e: IngestError) -> IngestError {
        match e {
            IngestError::Encode(why) => IngestError::Encode(format!("{location}: {why}")),
            other => other,
        }
    }

    /// Takes one piece; appends the tasks that filled up to `tasks`.
    pub(crate) fn piece(
        &mut self,
        piece: Piece,
        tasks: &mut Vec<NewTask>,
    ) -> Result<(), IngestError> {
        match piece {
            Piece::Batch(batch) => {
                let chunker = match &mut self.chunker {
                    Some(c) => c,
                    slot => slot.insert(
                        Chunker::new(
                            self.policy,
                            self.encoding,
                            &batch.schema(),
                            self.prefix.clone(),
                        )
                        .map_err(|e| Self::in_file(&self.location, e))?,
                    ),
                };
                chunker
                    .push(&batch, tasks)
                    .map_err(|e| Self::in_file(&self.location, e))
            }
            Piece::Skipped(record) => {
                self.skipped += 1;
                Progress::add(&self.progress.skipped, 1);
                if self.sample.len() < SKIP_SAMPLE {
                    self.sample.push(record);
                }
                Ok(())
            }
        }
    }

    /// Appends the last, partial task.
    pub(crate) fn finish(&mut self, tasks: &mut Vec<NewTask>) -> Result<(), IngestError> {
        match &mut self.chunker {
            Some(chunker) => chunker
                .finish(tasks)
                .map_err(|e| Self::in_file(&self.location, e)),
            None => Ok(()),
        }
    }
}

/// What one file gave, so far: counted whether or not it was read whole.
#[derive(Debug, Default)]
struct FileStats {
    /// Records stored as task payload.
    rows: u64,
    /// Tasks made (stored, new or not).
    tasks: u64,
    /// Tasks that were new to the store.
    added: u64,
    /// Records skipped.
    skipped: u64,
    /// A sample of the records skipped.
    sample: Vec<SkippedRecord>,
}

/// Ingests one file. What it stored is counted in `stats` even when it
/// fails part way.
#[allow(clippy::too_many_arguments, clippy::too_many_lines)] // one pipeline, its stages side by side
async fn run_file(
    store: &Arc<dyn Store>,
    req: &IngestRequest,
    job: &Job,
    entry: &Entry,
    opened: Opened,
    progress: &Arc<Progress>,
    read_so_far: &Arc<AtomicU64>,
    stats: &mut FileStats,
) -> Result<(), IngestError> {
    // Compressed input is unpacked on a thread of its own, beside decoding.
    let Opened {
        mut decoder,
        head,
        stream,
        compression: packed,
        in_place_bytes,
        ..
    } = opened;

    let (bytes_tx, read_rx) = mpsc::channel::<Vec<u8>>(QUEUE_BYTES_CHUNKS);
    let (unpack, mut bytes_rx) = match packed {
        Some(compression) => {
            let (plain_tx, plain_rx) = mpsc::channel::<Vec<u8>>(QUEUE_BYTES_CHUNKS);
            let location = entry.location.clone();
            let limits = req.decompression;
            let handle = tokio::task::spawn_blocking(move || {
                unpack_stage(compression, &location, limits, read_rx, &plain_tx)
            });
            (Some(handle), plain_rx)
        }
        None => (None, read_rx),
    };
    let (piece_tx, piece_rx) = std::sync::mpsc::sync_channel::<Piece>(QUEUE_BATCHES);
    let (task_tx, task_rx) = mpsc::channel::<Vec<NewTask>>(QUEUE_TASK_GROUPS);

    // Decode: bytes in, batches and skips out.
    let decode = tokio::task::spawn_blocking(move || {
        // When the encoder stopped, its error wins.
        let mut forward = |d: Decoded| piece_tx.send(Piece::from(d)).is_ok();
        let inside = |e: DecodeError| match packed {
            Some(c) => rota_formats::compression::in_decompressed(e, c),
            None => e,
        };
        let input = std::iter::from_fn(|| bytes_rx.blocking_recv()).map(Ok::<_, Infallible>);
        match drive(decoder.as_mut(), input, &mut forward) {
            Ok(_) => Ok(decoder.schema()),
            Err(DriveError::Decode(e)) => Err(IngestError::from(inside(e))),
            Err(DriveError::Input(never)) => match never {},
        }
    });

    // Chunk and encode: batches in, tasks out.
    let policy = req.batch;
    let encoding = req.payload;
    let prefix = entry.relative.clone();
    let encode_progress = progress.clone();
    let location = entry.location.clone();
    let encode = tokio::task::spawn_blocking(move || {
        let mut encoder = Encoder::new(policy, encoding, prefix, location, encode_progress);
        let mut tasks = Vec::new();
        for piece in piece_rx {
            encoder.piece(piece, &mut tasks)?;
            if !tasks.is_empty() && task_tx.blocking_send(std::mem::take(&mut tasks)).is_err() {
                break; // the writer stopped; its error wins
            }
        }
        encoder.finish(&mut tasks)?;
        if !tasks.is_empty() {
            let _ = task_tx.blocking_send(tasks);
        }
        Ok::<_, IngestError>((encoder.skipped, encoder.sample))
    });

    // Read: source bytes to the decoder.
    let read_progress = progress.clone();
    let read = async move {
        let Some(mut stream) = stream else {
            // Read in place by the decoder.
            Progress::add(&read_progress.bytes, in_place_bytes);
            Progress::add(read_so_far, in_place_bytes);
            return Ok(());
        };
        let mut next = Some(head).filter(|h| !h.is_empty());
        if next.is_none() {
            next = stream.next_chunk().await?;
        }
        while let Some(chunk) = next {
            Progress::add(&read_progress.bytes, chunk.len() as u64);
            Progress::add(read_so_far, chunk.len() as u64);
            if bytes_tx.send(chunk).await.is_err() {
                break; // the decoder stopped; its error wins
            }
            // A source slow to give more (an upload still arriving) is not
            // waited for once the decoder has stopped.
            next = tokio::select! {
                chunk = stream.next_chunk() => chunk?,
                () = bytes_tx.closed() => break,
            };
        }
        Ok::<_, IngestError>(())
    };

    // Store: tasks into the job, several per write. The write stage owns
    // the receiving end of its channel: when a write fails, the channel
    // closes with it, so the encoder's next send fails and the stages before
    // it stop in turn instead of waiting for a reader that is gone.
    let (mut added, mut rows, mut made) = (0u64, 0u64, 0u64);
    let write = async {
        let mut task_rx = task_rx;
        let mut group: Vec<NewTask> = Vec::new();
        let mut group_bytes = 0usize;
        loop {
            let next = task_rx.recv().await;
            let done = next.is_none();
            for task in next.into_iter().flatten() {
                group_bytes += task.payload.len();
                group.push(task);
            }
            if !group.is_empty()
                && (done || group.len() >= TASKS_PER_WRITE || group_bytes >= BYTES_PER_WRITE)
            {
                let n = group.len() as u64;
                let r: u64 = group.iter().map(|t| t.rows).sum();
                added += store.add_tasks(job.id, std::mem::take(&mut group)).await?;
                group_bytes = 0;
                rows += r;
                made += n;
                Progress::add(&progress.rows, r);
                Progress::add(&progress.tasks, n);
            }
            if done {
                return Ok::<_, IngestError>(());
            }
        }
    };

    // A failed write also stops the read stage at once (dropping its sender
    // ends the decoder's input), whatever the source is waiting for.
    let (stop_read, read_stopped) = tokio::sync::oneshot::channel::<()>();
    let read = async move {
        tokio::select! {
            res = read => res,
            Ok(()) = read_stopped => Ok(()),
        }
    };
    let write = async move {
        let res = write.await;
        if res.is_err() {
            let _ = stop_read.send(());
        }
        res
    };
    let (read_res, write_res) = tokio::join!(read, write);
    let unpack_res = match unpack {
        Some(handle) => handle
            .await
            .map_err(|e| IngestError::Encode(format!("decompression thread failed: {e}")))?,
        None => Ok(()),
    };
    let decode_res = decode
        .await
        .map_err(|e| IngestError::Encode(format!("decoder thread failed: {e}")))?;
    let encode_res = encode
        .await
        .map_err(|e| IngestError::Encode(format!("encoder thread failed: {e}")))?;
    stats.added = added;
    stats.rows = rows;
    stats.tasks = made;
    if let Ok((skipped, sample)) = &encode_res {
        stats.skipped = *skipped;
        stats.sample.clone_from(sample);
    }
    // A failed store write stopped the stages before it: it is the cause.
    // Otherwise the first stage to fail explains the others' failures.
    write_res?;
    read_res?;
    unpack_res?;
    decode_res?;
    encode_res?;
    Ok(())
}
