//! Large payloads of a file-backed SQLite store, kept outside the database.
//!
//! In WAL mode every byte written to SQLite is written twice (to the WAL, then
//! to the database file at a checkpoint) and read back in between. Payloads
//! are most of an ingest's bytes and are never updated, so large ones go to an
//! append-only file per job instead, `<database>-payloads/<job id>.seg`, and
//! the database keeps only their offset and length.
//!
//! Appends happen only inside a write transaction of the database, whose lock
//! serialises them across processes. The bytes are flushed to disk before the
//! transaction that references them commits, so a committed task never points
//! at bytes that a crash lost. A crash between the two (or a transaction that
//! fails after appending, on a full disk say) leaves unreferenced bytes at the
//! end of the file: the next append to that file, inside its own write
//! transaction, first cuts the file back to the end of its last referenced
//! payload, which it reads from the database. No other process can append or
//! reference bytes meanwhile (the database's write lock is held), and the cut
//! never reaches a referenced byte, so a crash during or after it loses
//! nothing. A process remembers where each file ended after its own last
//! committed append, and reads the database only when the file has another
//! length.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use rota_core::{StoreError, TaskId};

/// Payloads (as stored, after compression) at least this long go to a file.
pub(crate) const FILE_MIN_BYTES: usize = 16 << 10;

/// The directory of payload files that belongs to one database file.
#[derive(Debug)]
pub(crate) struct PayloadFiles {
    dir: PathBuf,
    /// The length of each job's file after this process's last committed
    /// append to it: a file of that length has no unreferenced tail.
    ends: Mutex<HashMap<String, u64>>,
}

impl PayloadFiles {
    /// The payload directory of the database at `db` (created when first needed).
    pub(crate) fn for_database(db: &Path) -> Self {
        let mut name = db.file_name().unwrap_or_default().to_owned();
        name.push("-payloads");
        Self {
            dir: db.with_file_name(name),
            ends: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, job: &str) -> PathBuf {
        self.dir.join(format!("{job}.seg"))
    }

    /// Opens `job`'s file for appending. Call only inside a write transaction.
    ///
    /// Bytes past the end of the last payload the database references (left
    /// by a crash or a failed transaction) are cut off first; `referenced`
    /// says where that end is, and is called only when this process cannot
    /// tell that the file has no such tail.
    pub(crate) fn appender(
        &self,
        job: &str,
        referenced: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<Appender, StoreError> {
        let io = |e: std::io::Error, what: &str| {
            StoreError::Backend(format!("cannot {what} {}: {e}", self.dir.display()).into())
        };
        let new_dir = match std::fs::create_dir(&self.dir) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
            Err(e) => return Err(io(e, "create payload directory")),
        };
        let path = self.path(job);
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(e, "open a payload file in"))?;
        let len = file
            .metadata()
            .map_err(|e| io(e, "read a payload file in"))?
            .len();
        let known = self
            .ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job)
            .copied();
        let end = if len == 0 || known == Some(len) {
            len
        } else {
            match referenced()? {
                // A file shorter than its references has lost bytes; reading
                // those payloads says so. Nothing is cut from it.
                end if end >= len => len,
                end => {
                    file.set_len(end)
                        .map_err(|e| io(e, "cut the unreferenced tail of a payload file in"))?;
                    end
                }
            }
        };
        Ok(Appender {
            file,
            path,
            end,
            // A new name is durable only once its directory is synced too.
            sync_dirs: match (new_dir, existed) {
                (true, _) => vec![
                    self.dir.clone(),
                    self.dir.parent().map(Path::to_path_buf).unwrap_or_default(),
                ],
                (false, false) => vec![self.dir.clone()],
                (false, true) => Vec::new(),
            },
        })
    }

    /// Notes that the transaction which appended to `job`'s file up to `end`
    /// (what [`Appender::sync`] returned) committed.
    pub(crate) fn committed(&self, job: &str, end: u64) {
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        // Only a shortcut (a job missing here costs one query on its next
        // append): kept bounded for a process that lives long.
        if ends.len() >= KNOWN_ENDS && !ends.contains_key(job) {
            ends.clear();
        }
        ends.insert(job.to_owned(), end);
    }

    /// Removes `job`'s file, once no task references it (its job was
    /// deleted). A file already gone is no error.
    pub(crate) fn remove(&self, job: &str) -> Result<(), StoreError> {
        self.ends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(job);
        match std::fs::remove_file(self.path(job)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(StoreError::Backend(
                format!("cannot remove the payload file of job {job}: {e}").into(),
            )),
            _ => Ok(()),
        }
    }

    /// Reads the `len` bytes at `offset` of `job`'s file: `task`'s payload.
    pub(crate) fn read(
        &self,
        job: &str,
        task: TaskId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let path = self.path(job);
        let missing = |e: std::io::Error| {
            StoreError::Backend(
                format!(
                    "payload of task {task} ({len} bytes at offset {offset} of {}) cannot be read: {e}",
                    path.display()
                )
                .into(),
            )
        };
        let file = File::open(&path).map_err(missing)?;
        let len = usize::try_from(len).map_err(|e| missing(std::io::Error::other(e)))?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset).map_err(missing)?;
        Ok(buf)
    }
}

/// Most jobs whose committed end [`PayloadFiles`] remembers.
const KNOWN_ENDS: usize = 4096;

/// Appends payloads to one job's file.
#[derive(Debug)]
pub(crate) struct Appender {
    file: File,
    path: PathBuf,
    end: u64,
    sync_dirs: Vec<PathBuf>,
}

impl Appender {
    /// Writes `bytes` at the end of the file; returns their offset.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<u64, StoreError> {
        let at = self.end;
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| self.error(&e))?;
        self.end += bytes.len() as u64;
        Ok(at)
    }

    /// Flushes what was appended (and any new directory entry) to disk;
    /// returns where the file ends.
    pub(crate) fn sync(self) -> Result<u64, StoreError> {
        self.file.sync_data().map_err(|e| self.error(&e))?;
        // On disk now, and read once by a worker later: the page cache need
        // not hold them meanwhile (a long ingest would fill it, and take
        // fresh memory for every byte written).
        let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed);
        for dir in &self.sync_dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.error(&e))?;
        }
        Ok(self.end)
    }

    fn error(&self, e: &std::io::Error) -> StoreError {
        StoreError::Backend(format!("cannot write {}: {e}", self.path.display()).into())
    }
}
