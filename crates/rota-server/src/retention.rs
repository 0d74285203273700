//! Retention: jobs that ended longer ago than [`crate::Config::retain`] are
//! deleted with everything they hold, a bounded batch per store call.
//!
//! Every node may run it at once: each batch takes jobs no other node is
//! deleting (the PostgreSQL store skips locked rows; SQLite has one writer).

use std::time::Duration;

use crate::State;

/// Jobs deleted per store call.
const BATCH: u32 = 200;

/// How often retention looks for jobs to delete when it has caught up (at
/// most; a retention shorter than twice this is looked at every half of it).
const EVERY: Duration = Duration::from_secs(60);

/// Starts retention when the server keeps jobs for a limited time.
pub(crate) fn spawn(state: State) {
    let Some(retain) = state.config.retain else {
        return;
    };
    // A short retention is looked at as often as it needs.
    let every = EVERY.min(retain / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut stopping = state.stopping.subscribe();
        loop {
            // A period longer than time itself has nothing to delete.
            let cut = chrono::Duration::from_std(retain)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_sub_signed(d));
            let deleted = match cut {
                Some(cut) => state.store.delete_ended(cut, BATCH).await,
                None => Ok(0),
            };
            let pause = match deleted {
                // More may be waiting: the next batch at once, after
                // letting other work run.
                Ok(n) if n == u64::from(BATCH) => {
                    tracing::info!(jobs = n, "retention deleted ended jobs");
                    Duration::ZERO
                }
                Ok(0) => every,
                Ok(n) => {
                    tracing::info!(jobs = n, "retention deleted ended jobs");
                    every
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention could not delete ended jobs; will retry");
                    every
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stopping.changed() => return,
            }
            tokio::task::yield_now().await;
        }
    });
}
