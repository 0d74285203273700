//! What both stores share: how values are written to and read from
//! columns, how payloads are packed, and the retry rules of a failed attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rota_core::{
    JobStart, JobState, NewJob, PayloadEncoding, RetryPolicy, StoreError, TaskId, TaskState, Timing,
};

pub(crate) fn corrupt(message: String) -> StoreError {
    StoreError::Backend(message.into())
}

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(Box::new(e)))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("stored {what} is not valid: {e}")))
}

pub(crate) fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| corrupt(format!("stored {what} '{text}' is not valid: {e}")))
}

pub(crate) fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| corrupt(format!("stored timestamp {ms} is out of range")))
}

pub(crate) fn opt_time(ms: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    ms.map(time).transpose()
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Invalid {
        message: format!("{what} {n} is too large"),
    })
}

pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(crate) fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// `codec` value of a payload stored as given.
pub(crate) const CODEC_RAW: i64 = 0;
/// `codec` value of a payload stored as an LZ4 block behind its length.
pub(crate) const CODEC_LZ4: i64 = 1;
/// Payloads shorter than this are stored as given.
pub(crate) const PACK_MIN_BYTES: usize = 512;

/// How a payload is stored: its codec, and the stored bytes when they differ
/// from the payload's. Text payloads (JSON, NDJSON, CSV) repeat their keys and
/// shapes row after row and shrink about three times under LZ4, which costs
/// less CPU than moving the difference through the WAL and the checkpoint.
/// Arrow IPC payloads barely shrink and are stored as they are.
pub(crate) fn pack(
    encoding: PayloadEncoding,
    payload: &[u8],
    compress: bool,
) -> (i64, Option<Vec<u8>>) {
    if !compress || encoding == PayloadEncoding::Arrow || payload.len() < PACK_MIN_BYTES {
        return (CODEC_RAW, None);
    }
    let packed = lz4_flex::block::compress_prepend_size(payload);
    if packed.len() + payload.len() / 16 >= payload.len() {
        (CODEC_RAW, None) // incompressible: not worth the decoding
    } else {
        (CODEC_LZ4, Some(packed))
    }
}

/// What the lease protocol needs to know about a task's job.
pub(crate) struct JobInfo {
    pub(crate) state: JobState,
    pub(crate) retry: RetryPolicy,
}

/// Where a task goes after a failed attempt (or an expired lease).
pub(crate) fn after_failure(
    job: &JobInfo,
    attempt: u32,
    max_attempts: u32,
    retryable: bool,
    now: i64,
) -> (TaskState, Option<i64>) {
    if !retryable || attempt >= max_attempts {
        (TaskState::Dead, None)
    } else if job.state.is_terminal() {
        // Nobody will claim it again: its job is cancelled or failed.
        (TaskState::Cancelled, None)
    } else {
        let at = now.saturating_add(millis(job.retry.backoff(attempt)));
        (TaskState::Retrying, Some(at))
    }
}

/// A job's stored timing (none before version 4: the defaults).
pub(crate) fn job_timing(text: Option<&str>) -> Result<Timing, StoreError> {
    text.map(|t| from_json(t, "job timing"))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// When a job's tasks first become claimable: now, or its run-at if later.
pub(crate) fn first_run(timing: &Timing, now: i64) -> i64 {
    timing.run_at.map_or(now, |t| t.timestamp_millis().max(now))
}

/// A stored payload's bytes as its worker gets them, from the codec it was
/// stored with.
pub(crate) fn unpack(codec: i64, data: Vec<u8>, task: TaskId) -> Result<Vec<u8>, StoreError> {
    match codec {
        CODEC_RAW => Ok(data),
        CODEC_LZ4 => lz4_flex::block::decompress_size_prepended(&data)
            .map_err(|e| corrupt(format!("payload of task {task} does not decompress: {e}"))),
        other => Err(corrupt(format!(
            "payload of task {task} has unknown codec {other}"
        ))),
    }
}

/// The states [`rota_core::Store::requeue`] may name, as their names;
/// invalid for any other.
pub(crate) fn requeue_states(states: &[TaskState]) -> Result<Vec<&'static str>, StoreError> {
    let mut names: Vec<&'static str> = Vec::with_capacity(states.len());
    for state in states {
        match state {
            TaskState::Dead | TaskState::Cancelled => names.push(state.as_str()),
            other => {
                return Err(StoreError::Invalid {
                    message: format!(
                        "only dead and cancelled tasks can be requeued, not {other} ones"
                    ),
                });
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// Refuses a requeue on a job that was never released.
pub(crate) fn requeue_released(job: &rota_core::Job) -> Result<(), StoreError> {
    if job.released {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            message: format!(
                "job {} was never released (its ingest failed or still runs); nothing to requeue",
                job.id
            ),
        })
    }
}

/// A new job's columns as both stores write them, checked and encoded.
pub(crate) struct JobColumns {
    pub(crate) params: String,
    pub(crate) retry: String,
    pub(crate) timing: String,
    pub(crate) ingest: Option<String>,
    /// The ingest plan, its holder and the claim's length in milliseconds.
    pub(crate) plan: Option<(String, String, i64)>,
    /// Each callback's URL and events.
    pub(crate) callbacks: Vec<(String, String)>,
}

impl JobColumns {
    /// Checks `job` (at least one attempt, a queue) and encodes it and what
    /// it starts with.
    pub(crate) fn of(job: &NewJob, start: &JobStart) -> Result<Self, StoreError> {
        if job.retry.max_attempts == 0 {
            return Err(StoreError::Invalid {
                message: "retry policy needs max attempts of at least 1".into(),
            });
        }
        if job.queue.is_empty() {
            return Err(StoreError::Invalid {
                message: "a job needs a queue name".into(),
            });
        }
        Ok(Self {
            params: json(&job.params)?,
            retry: json(&job.retry)?,
            timing: json(&job.timing)?,
            ingest: job.ingest.as_ref().map(json).transpose()?,
            plan: start
                .ingest
                .as_ref()
                .map(|p| Ok::<_, StoreError>((json(&p.plan)?, p.holder.clone(), millis(p.lease))))
                .transpose()?,
            callbacks: start
                .callbacks
                .iter()
                .map(|c| Ok::<_, StoreError>((c.url.clone(), json(&c.events)?)))
                .collect::<Result<Vec<_>, _>>()?,
        })
    }
}
