//! Retention: jobs that ended longer ago than [`crate::Config::retain`] are
//! deleted with everything they hold, a bounded batch per store call.
//!
//! It runs as a singleton duty (one node at a time); were two nodes to run
//! it at once, each batch would still take jobs the other is not deleting
//! (the PostgreSQL store skips locked rows; SQLite has one writer).

use std::time::{Duration, Instant};

use crate::State;

/// Jobs deleted per store call.
const BATCH: u32 = 200;

/// How often retention looks for jobs to delete when it has caught up (at
/// most; a retention shorter than twice this is looked at every half of it).
const EVERY: Duration = Duration::from_secs(60);

/// Starts retention, a singleton duty, when the server keeps jobs for a
/// limited time.
pub(crate) fn spawn(state: State) {
    let Some(retain) = state.config.retain else {
        return;
    };
    // A short retention is looked at as often as it needs.
    let every = EVERY.min(retain / 2).max(Duration::from_millis(100));
    crate::duties::spawn(
        state,
        "retention",
        every,
        move |state, stop_by| async move {
            // A period longer than time itself has nothing to delete.
            let Some(cut) = chrono::Duration::from_std(retain)
                .ok()
                .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
            else {
                return;
            };
            // Batch after batch while more are waiting and the term lasts.
            while Instant::now() < stop_by {
                match state.store.delete_ended(cut, BATCH).await {
                    Ok(0) => return,
                    Ok(n) => {
                        tracing::info!(jobs = n, "retention deleted ended jobs");
                        if n < u64::from(BATCH) {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention could not delete ended jobs; will retry");
                        return;
                    }
                }
            }
        },
    );
}
