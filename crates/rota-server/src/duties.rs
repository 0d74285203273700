//! Singleton duties: periodic work that one node at a time should do,
//! held through the store ([`rota_core::Store::take_duty`]) in numbered
//! terms, never by host name.
//!
//! A node that holds a duty renews its term between rounds of work; one that
//! cannot renew (the store is unreachable, or another node took the duty
//! after the term ran out) stops the work before its term ends, so two
//! nodes never run one duty at once by the store's clock.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::State;

/// How long a term lasts without renewal.
const TERM: Duration = Duration::from_secs(30);

/// A holder stops working this long before its term would end unrenewed.
const MARGIN: Duration = Duration::from_secs(10);

/// How often a node that does not hold a duty tries to take it.
const TRY_EVERY: Duration = Duration::from_secs(5);

/// Runs `round` every `every` on whichever node holds `duty`, until the
/// server stops (then the term is given up, so another node takes over at
/// once).
pub(crate) fn spawn<F, Fut>(state: State, duty: &'static str, every: Duration, round: F)
where
    F: Fn(State, Instant) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut stopping = state.stopping.subscribe();
        let node = state.node.clone();
        loop {
            let taken = state.store.take_duty(duty, &node, TERM).await;
            let Ok(Some(mut term)) = taken else {
                if let Err(e) = taken {
                    tracing::debug!(duty, error = %e, "cannot take the duty; will try again");
                }
                tokio::select! {
                    () = tokio::time::sleep(TRY_EVERY) => continue,
                    _ = stopping.changed() => return,
                }
            };
            tracing::debug!(duty, term = term.term, "holding the duty");
            // Work stops by then unless a renewal moves it.
            let mut stop_by = Instant::now() + TERM - MARGIN;
            loop {
                round(state.clone(), stop_by).await;
                let stopped = tokio::select! {
                    () = tokio::time::sleep(every.min(TERM / 3)) => false,
                    _ = stopping.changed() => true,
                };
                if stopped {
                    let _ = state.store.release_duty(&term).await;
                    return;
                }
                match state.store.renew_duty(&term, TERM).await {
                    Ok(Some(renewed)) => {
                        term = renewed;
                        stop_by = Instant::now() + TERM - MARGIN;
                    }
                    Ok(None) => {
                        tracing::info!(
                            duty,
                            term = term.term,
                            "the duty's term ended; stepping down"
                        );
                        break;
                    }
                    Err(e) if Instant::now() < stop_by => {
                        tracing::warn!(duty, error = %e, "cannot renew the duty; will try again");
                    }
                    Err(e) => {
                        tracing::warn!(duty, error = %e, "cannot renew the duty in time; stepping down");
                        break;
                    }
                }
            }
        }
    });
}

/// How often expired leases are looked for apart from claims.
const RESCUE_EVERY: Duration = Duration::from_secs(5);

/// Starts the rescue sweep, a singleton duty: leases that ran out are
/// treated as failed attempts even when no worker claims (so a job whose
/// workers all died still ends). Claims rescue too; this only keeps jobs
/// moving when nobody claims.
pub(crate) fn spawn_rescue(state: State) {
    spawn(state, "rescue", RESCUE_EVERY, |state, _| async move {
        match state.store.rescue_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "rescued tasks whose leases ran out"),
            Err(e) => tracing::warn!(error = %e, "cannot rescue expired leases; will retry"),
        }
    });
}
