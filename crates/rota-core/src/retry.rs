//! Retry backoff: exponential with jitter.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a failed task is retried.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; after the last a task is dead.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; it doubles per attempt.
    pub backoff_base_ms: u64,
    /// Upper bound of a single delay, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before retrying after attempt `attempt` (1-based) failed:
    /// `base * 2^(attempt-1)`, capped at `max`, then jittered uniformly into
    /// its upper half so that a burst of failures does not retry in lockstep.
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(62);
        let full = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_max_ms);
        let half = full / 2;
        let jitter = if full > half {
            rand::rng().random_range(0..=full - half)
        } else {
            0
        };
        Duration::from_millis(half + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
        };
        for _ in 0..100 {
            let d1 = p.backoff(1).as_millis();
            assert!((50..=100).contains(&d1), "{d1}");
            let d3 = p.backoff(3).as_millis();
            assert!((200..=400).contains(&d3), "{d3}");
            let d9 = p.backoff(9).as_millis();
            assert!((500..=1_000).contains(&d9), "{d9}");
        }
        assert!(p.backoff(u32::MAX).as_millis() <= 1_000);
    }
}
