//! Reads that survive a broken connection: a byte stream that, when the
//! connection under it breaks, opens the object again at the byte where it
//! broke — if the object is still the one being read — after a jittered,
//! growing pause. A read that cannot be resumed fails saying at which byte;
//! a short read is never passed off as the whole object.

use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use rota_core::SourceError;
use std::ops::Range;

use rota_core::source::{ByteStream, Entry};

/// Breaks in a row, with no byte between them, before a read fails.
pub(crate) const RESUME_ATTEMPTS: u32 = 5;
/// First pause before resuming; doubled each attempt, with jitter.
const RESUME_BACKOFF: Duration = Duration::from_millis(100);

/// Sleeps before the `attempt`-th resumption in a row (from 1): the base
/// pause doubled per attempt, times a random factor in 0.5..1.5.
pub(crate) async fn pause_before(attempt: u32) {
    let pause = RESUME_BACKOFF * 2u32.pow(attempt.saturating_sub(1).min(10));
    let jitter: f64 = rand::rng().random_range(0.5..1.5);
    tokio::time::sleep(pause.mul_f64(jitter)).await;
}

/// Opens one version of an object's bytes from an offset: first to read
/// it, then again after each break.
#[async_trait]
pub(crate) trait Reopen: Send + Sync {
    /// The bytes from `from` up to `end` (the end of the object when
    /// `None`). When `again`, first checks that the object is still the
    /// version that was being read.
    ///
    /// # Errors
    /// [`SourceError::Interrupted`] when the server cannot be reached (worth
    /// another try); a final error when the object changed or is gone.
    async fn open_at(
        &self,
        from: u64,
        end: Option<u64>,
        again: bool,
    ) -> Result<Box<dyn ByteStream>, SourceError>;
}

/// Opens `entry` (or `range` of it) through `reopen`, resuming after breaks.
pub(crate) async fn open_resuming(
    reopen: impl Reopen + 'static,
    entry: &Entry,
    range: Option<Range<u64>>,
) -> Result<Box<dyn ByteStream>, SourceError> {
    let start = range.as_ref().map_or(0, |r| r.start);
    let end = range.as_ref().map(|r| r.end).or(entry.size);
    let first = reopen.open_at(start, end, false).await?;
    Ok(Box::new(Resuming::new(
        first,
        Box::new(reopen),
        crate::redact(&entry.location),
        start,
        end,
    )))
}

/// A stream that resumes by [`Reopen`] when the one under it breaks with a
/// retryable error or ends before `end`.
pub(crate) struct Resuming {
    inner: Option<Box<dyn ByteStream>>,
    reopen: Box<dyn Reopen>,
    /// The object's location, secrets redacted.
    location: String,
    /// The next byte expected.
    pos: u64,
    /// Where the read must end: the end of the range, or the object's size.
    /// `None` when neither is known; then an end is taken as the end.
    end: Option<u64>,
    /// Breaks since the last byte arrived.
    breaks: u32,
}

impl Resuming {
    /// Reads `inner`, which starts at byte `pos` and must reach `end`.
    pub(crate) fn new(
        inner: Box<dyn ByteStream>,
        reopen: Box<dyn Reopen>,
        location: String,
        pos: u64,
        end: Option<u64>,
    ) -> Self {
        Self {
            inner: Some(inner),
            reopen,
            location,
            pos,
            end,
            breaks: 0,
        }
    }

    /// After a break described by `cause`: pauses, then opens the rest
    /// again, or fails once breaks in a row pass [`RESUME_ATTEMPTS`].
    async fn resume(&mut self, cause: String) -> Result<(), SourceError> {
        let mut cause = cause;
        loop {
            self.breaks += 1;
            if self.breaks > RESUME_ATTEMPTS {
                return Err(SourceError::Remote {
                    location: self.location.clone(),
                    reason: format!(
                        "the read broke at byte {}{} ({cause}); {RESUME_ATTEMPTS} attempts in \
                         a row to resume it brought no byte",
                        self.pos,
                        self.end.map(|e| format!(" of {e}")).unwrap_or_default()
                    ),
                });
            }
            pause_before(self.breaks).await;
            tracing::info!(
                location = %self.location,
                at = self.pos,
                attempt = self.breaks,
                "resuming a read that broke"
            );
            match self.reopen.open_at(self.pos, self.end, true).await {
                Ok(stream) => {
                    self.inner = Some(stream);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => cause = reason_of(&e),
                Err(e) => {
                    return Err(SourceError::Remote {
                        location: self.location.clone(),
                        reason: format!(
                            "the read broke at byte {} ({cause}) and cannot be resumed: {}",
                            self.pos,
                            reason_of(&e)
                        ),
                    });
                }
            }
        }
    }
}

/// An error's text without its location prefix.
fn reason_of(e: &SourceError) -> String {
    match e {
        SourceError::Interrupted { reason, .. }
        | SourceError::Remote { reason, .. }
        | SourceError::InvalidLocation { reason, .. } => reason.clone(),
        SourceError::AccessDenied { hint, .. } => format!("access denied: {hint}"),
        SourceError::NotFound { .. } => "it is gone".to_owned(),
        SourceError::PermissionDenied { .. } => "permission denied".to_owned(),
        other => other.to_string(),
    }
}

#[async_trait]
impl ByteStream for Resuming {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Ok(None);
            };
            if self.end.is_some_and(|end| self.pos >= end) {
                // Every byte came: let the stream under end cleanly (a
                // protocol may confirm the transfer), then stop.
                let last = inner.next_chunk().await;
                self.inner = None;
                return match last {
                    Ok(Some(_)) => Err(SourceError::Remote {
                        location: self.location.clone(),
                        reason: format!(
                            "the server sent more than the {} bytes expected; the file may have \
                             changed while it was read",
                            self.pos
                        ),
                    }),
                    Ok(None) => Ok(None),
                    Err(e) => {
                        tracing::debug!(location = %self.location, error = %e, "a read that had every byte ended uncleanly");
                        Ok(None)
                    }
                };
            }
            match inner.next_chunk().await {
                Ok(Some(chunk)) => {
                    let len = chunk.len() as u64;
                    if self.end.is_some_and(|end| self.pos + len > end) {
                        return Err(SourceError::Remote {
                            location: self.location.clone(),
                            reason: format!(
                                "the server sent more than the {} bytes expected",
                                self.end.unwrap_or_default()
                            ),
                        });
                    }
                    self.pos += len;
                    self.breaks = 0;
                    return Ok(Some(chunk));
                }
                Ok(None) => match self.end {
                    None => {
                        self.inner = None;
                        return Ok(None);
                    }
                    Some(end) => {
                        self.inner = None;
                        self.resume(format!("the data ended at byte {} of {end}", self.pos))
                            .await?;
                    }
                },
                Err(e) if e.is_retryable() => {
                    self.inner = None;
                    self.resume(reason_of(&e)).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Serves `data[from..end]` in 3-byte chunks, breaking after `cut`
    /// chunks on each of its first `breaks` opens.
    struct Flaky {
        data: Vec<u8>,
        cut: usize,
        breaks: usize,
        opens: Arc<AtomicUsize>,
    }

    struct Chunks {
        data: Vec<u8>,
        at: usize,
        left: Option<usize>,
    }

    #[async_trait]
    impl ByteStream for Chunks {
        async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, SourceError> {
            if let Some(left) = &mut self.left {
                if *left == 0 {
                    return Err(SourceError::Interrupted {
                        location: "x".into(),
                        reason: "connection reset".into(),
                    });
                }
                *left -= 1;
            }
            if self.at >= self.data.len() {
                return Ok(None);
            }
            let end = (self.at + 3).min(self.data.len());
            let chunk = self.data[self.at..end].to_vec();
            self.at = end;
            Ok(Some(chunk))
        }
    }

    #[async_trait]
    impl Reopen for Flaky {
        async fn open_at(
            &self,
            from: u64,
            end: Option<u64>,
            _again: bool,
        ) -> Result<Box<dyn ByteStream>, SourceError> {
            let n = self.opens.fetch_add(1, Ordering::SeqCst);
            let end = end.map_or(self.data.len(), |e| e as usize);
            Ok(Box::new(Chunks {
                data: self.data[from as usize..end].to_vec(),
                at: 0,
                left: (n < self.breaks).then_some(self.cut),
            }))
        }
    }

    async fn read(r: &mut Resuming) -> Result<Vec<u8>, SourceError> {
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().await? {
            out.extend(c);
        }
        Ok(out)
    }

    async fn resuming(data: &[u8], cut: usize, breaks: usize) -> (Resuming, Arc<AtomicUsize>) {
        let opens = Arc::new(AtomicUsize::new(0));
        let flaky = Flaky {
            data: data.to_vec(),
            cut,
            breaks,
            opens: opens.clone(),
        };
        let first = flaky.open_at(0, None, false).await.expect("open");
        let len = data.len() as u64;
        (
            Resuming::new(first, Box::new(flaky), "x".into(), 0, Some(len)),
            opens,
        )
    }

    #[tokio::test]
    async fn breaks_are_resumed_at_their_byte_until_every_byte_came() {
        let data: Vec<u8> = (0..100u8).collect();
        let (mut r, opens) = resuming(&data, 4, 6).await;
        let got = read(&mut r).await.expect("every byte, resumed");
        assert_eq!(got, data);
        assert_eq!(
            opens.load(Ordering::SeqCst),
            7,
            "one open per break, and the first"
        );

        // Breaks with no byte between them fail the read, saying where.
        let (mut r, _) = resuming(&data, 0, 100).await;
        let err = read(&mut r).await.expect_err("never any byte");
        assert!(err.to_string().contains("broke at byte 0 of 100"), "{err}");
    }
}
