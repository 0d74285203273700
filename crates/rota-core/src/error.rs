//! Errors at the three seams. Variants say what the caller can do about them;
//! backend detail rides along as the `source`.

use std::fmt;

/// A boxed error from a backend, kept as the cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a [`crate::Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The job, task or spec does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// What was looked for: `job`, `task`, `spec`.
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// The lease named is no longer held: the attempt is stale (its lease
    /// expired and the task was reclaimed), or the task ended or was cancelled.
    /// The worker must stop working on it.
    #[error("lease lost: task {task} attempt {attempt} is no longer held by this lease")]
    LeaseLost {
        /// The task.
        task: crate::TaskId,
        /// The attempt the caller thought it held.
        attempt: u32,
    },
    /// The request conflicts with what is stored.
    #[error("conflict: {message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// The request itself is invalid.
    #[error("invalid request: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// A failure that may go away when retried (busy database, lost connection).
    #[error("store temporarily unavailable: {0}")]
    Transient(BoxError),
    /// Any other failure of the backend.
    #[error("store failure: {0}")]
    Backend(BoxError),
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// An error from a [`crate::source::Source`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// Nothing exists at the location.
    #[error("{location}: not found")]
    NotFound {
        /// The location, secrets redacted.
        location: String,
    },
    /// The location exists but may not be read with the credentials given.
    #[error("{location}: permission denied")]
    PermissionDenied {
        /// The location, secrets redacted.
        location: String,
    },
    /// The location is not one this source understands.
    #[error("{location}: invalid location: {reason}")]
    InvalidLocation {
        /// The location, secrets redacted.
        location: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The server refused the credentials, or there were none it accepts.
    #[error("{location}: access denied: {hint}")]
    AccessDenied {
        /// The location, secrets redacted.
        location: String,
        /// What was refused and how to fix it, with no secret in it.
        hint: String,
    },
    /// A remote server or protocol failed in a way that is not an I/O error
    /// of this machine (an unexpected status, an object that changed while
    /// it was read).
    #[error("{location}: {reason}")]
    Remote {
        /// The location, secrets redacted.
        location: String,
        /// What went wrong, with no secret in it.
        reason: String,
    },
    /// A connection broke, timed out or could not be made: the same request
    /// may well succeed if tried again (see [`SourceError::is_retryable`]).
    #[error("{location}: {reason}")]
    Interrupted {
        /// The location, secrets redacted.
        location: String,
        /// What broke, and at which byte when reading, with no secret in it.
        reason: String,
    },
    /// Reading or listing failed.
    #[error("{location}: read failed")]
    Io {
        /// The location, secrets redacted.
        location: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// Whether trying again may succeed: a broken or refused connection, a
    /// timeout. Not found, permission and credential errors are final.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Interrupted { .. })
    }
}

/// Where in the input something happened. The byte offset is always known;
/// line, record and column are filled where the format has them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Offset of the record (or the offending byte) from the start of the
    /// decoded input, in bytes.
    pub byte_offset: u64,
    /// 1-based line number, for text formats.
    pub line: Option<u64>,
    /// 1-based record number (data records, not counting a header).
    pub record: Option<u64>,
    /// The column, by name where known.
    pub column: Option<String>,
    /// The part of a structured file the problem lies in, where the format
    /// has parts: `row group 3` (Parquet), `record batch 2` (Arrow IPC),
    /// `sheet 'Orders', cell B7` (workbooks). Shown first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(part) = &self.part {
            parts.push(part.clone());
        }
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        if let Some(record) = self.record {
            parts.push(format!("record {record}"));
        }
        if let Some(column) = &self.column {
            parts.push(format!("column '{column}'"));
        }
        // A part with no byte offset of its own (a sheet cell inside a
        // compressed workbook) says no byte.
        if self.part.is_none() || self.byte_offset > 0 {
            parts.push(format!("byte {}", self.byte_offset));
        }
        f.write_str(&parts.join(", "))
    }
}

/// What kind of decode failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The bytes are not valid in this format.
    Syntax,
    /// A record has a different number of fields than the header or schema.
    FieldCount,
    /// A value does not fit the schema's type.
    Type,
    /// Text that is not valid in the expected encoding.
    Encoding,
    /// A record exceeds the size limit.
    TooLarge,
    /// The input ended inside a record.
    Truncated,
    /// The options given to the decoder are invalid.
    Options,
}

/// A decode failure, always with the location and position of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{location}: {position}: {message}")]
pub struct DecodeError {
    /// The input, as a path or URL with secrets redacted.
    pub location: String,
    /// Where in the input.
    pub position: Position,
    /// What kind of failure.
    pub kind: DecodeErrorKind,
    /// What is wrong, in lowercase words.
    pub message: String,
}

impl DecodeError {
    /// A failure at byte `offset` of the input at `location`, where the
    /// format has no lines or records to name.
    pub fn at_byte(
        location: &str,
        offset: u64,
        kind: DecodeErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            location: location.to_owned(),
            position: Position {
                byte_offset: offset,
                ..Position::default()
            },
            kind,
            message: message.into(),
        }
    }

    /// A failure in a part of a structured file (see [`Position::part`]),
    /// at byte `offset` of the input when the part has one (else 0).
    pub fn in_part(
        location: &str,
        part: impl Into<String>,
        offset: u64,
        kind: DecodeErrorKind,
        message: impl Into<String>,
    ) -> Self {
        let mut error = Self::at_byte(location, offset, kind, message);
        error.position.part = Some(part.into());
        error
    }
}
