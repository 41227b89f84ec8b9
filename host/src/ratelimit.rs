//! Per-principal rate limiting (a token bucket per agent, refilled continuously) and the
//! per-minute call count policies see as `context.rate`.
//!
//! Each agent has its own quota (its record's `rate_limit`, else the gateway default), which
//! is why this is a small bucket map rather than a single-quota keyed limiter. Buckets are
//! sharded by a hash of the agent to keep lock contention low, and idle buckets are dropped
//! when a shard grows large, so memory stays bounded whatever the number of agents.
//!
//! Invariants: a refused request is told when to retry (whole seconds, at least 1); a rate
//! of 0 disables the limit for that principal; time never runs backwards (monotonic clock).
//!
//! Threat: one agent (runaway loop, stolen token) exhausting the gateway for everyone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Buckets per shard before idle ones are swept.
const SWEEP_AT: usize = 4096;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    window_start: Instant,
    window_calls: i64,
}

/// The limiter.
#[derive(Debug)]
pub struct RateLimiter {
    default_rate: u32,
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

/// A request that was let through: the principal's calls in the current minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Calls in the current one-minute window, this one included.
    pub rate: i64,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until a call will be admitted.
    pub retry_after_secs: u64,
}

impl RateLimiter {
    /// A limiter admitting `default_rate` calls per second per principal (burst: twice
    /// that), 0 meaning unlimited.
    pub fn new(default_rate: u32) -> Self {
        Self {
            default_rate,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Admits or refuses one request of `principal`, whose own rate (if any) overrides the
    /// default.
    pub fn check(&self, principal: &str, rate: Option<u32>) -> Result<Admitted, Limited> {
        let rate = rate.unwrap_or(self.default_rate);
        let shard = blake3::hash(principal.as_bytes()).as_bytes()[0] as usize % SHARDS;
        let now = Instant::now();
        let mut buckets = self.shards[shard]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(principal) {
            buckets.retain(|_, b| now.duration_since(b.last) < Duration::from_secs(60));
        }
        let burst = f64::from(rate) * 2.0;
        let bucket = buckets
            .entry(principal.to_owned())
            .or_insert_with(|| Bucket {
                tokens: burst,
                last: now,
                window_start: now,
                window_calls: 0,
            });
        if now.duration_since(bucket.window_start) >= Duration::from_secs(60) {
            bucket.window_start = now;
            bucket.window_calls = 0;
        }
        if rate > 0 {
            let elapsed = now.duration_since(bucket.last).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * f64::from(rate)).min(burst);
            bucket.last = now;
            if bucket.tokens < 1.0 {
                let wait = (1.0 - bucket.tokens) / f64::from(rate);
                return Err(Limited {
                    retry_after_secs: (wait.ceil() as u64).max(1),
                });
            }
            bucket.tokens -= 1.0;
        } else {
            bucket.last = now;
        }
        bucket.window_calls += 1;
        Ok(Admitted {
            rate: bucket.window_calls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after_and_per_principal_quota() {
        let limiter = RateLimiter::new(2);
        // Burst of 4 (twice the rate), then refused.
        for i in 1..=4 {
            assert_eq!(limiter.check("a", None).unwrap().rate, i);
        }
        let limited = limiter.check("a", None).unwrap_err();
        assert_eq!(limited.retry_after_secs, 1);
        // Another principal is unaffected; its own quota of 0 means unlimited.
        for _ in 0..100 {
            assert!(limiter.check("b", Some(0)).is_ok());
        }
        assert_eq!(limiter.check("b", Some(0)).unwrap().rate, 101);
    }
}
