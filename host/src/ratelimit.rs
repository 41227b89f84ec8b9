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
//! [`AddressLimiter`] does the same per client address for requests that carry no valid
//! credentials (and for `POST /token`), with a fixed quota; refusals beyond it are counted,
//! not recorded one by one, and the count is written as one summary record per address.
//!
//! Threat: one agent (runaway loop, stolen token) exhausting the gateway for everyone, and
//! anyone without a token filling the audit trail or the writer's queue.

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

/// Requests per second an address may have refused for want of valid credentials.
pub const ADDRESS_RATE: f64 = 20.0;
/// Burst of such requests.
pub const ADDRESS_BURST: f64 = 100.0;
/// Addresses tracked before idle ones are swept; beyond it, new addresses share one bucket.
const MAX_ADDRESSES: usize = 65_536;

#[derive(Debug)]
struct AddressBucket {
    tokens: f64,
    last: Instant,
    /// Refusals folded into the next summary.
    absorbed: u64,
}

/// Per-address limiter of unauthenticated requests, bounded in memory. The unknown peer
/// (`None`) and the overflow beyond [`MAX_ADDRESSES`] each share one bucket.
#[derive(Debug, Default)]
pub struct AddressLimiter {
    buckets: Mutex<AddressMap>,
}

#[derive(Debug, Default)]
struct AddressMap {
    buckets: HashMap<Option<std::net::IpAddr>, AddressBucket>,
    /// When the map was last swept (at most once a second, so a flood from many
    /// addresses cannot make every request walk the whole map).
    last_sweep: Option<Instant>,
}

/// The bucket of the addresses that do not fit.
const OVERFLOW: Option<std::net::IpAddr> =
    Some(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));

impl AddressLimiter {
    fn with_bucket<R>(
        &self,
        peer: Option<std::net::IpAddr>,
        f: impl FnOnce(&mut AddressBucket, Instant) -> R,
    ) -> R {
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = &mut *map;
        let mut key = peer;
        if !map.buckets.contains_key(&key) && map.buckets.len() >= MAX_ADDRESSES {
            let due = map
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
            if due {
                map.last_sweep = Some(now);
                map.buckets.retain(|_, b| {
                    b.absorbed > 0 || now.duration_since(b.last) < Duration::from_secs(10)
                });
            }
            if map.buckets.len() >= MAX_ADDRESSES {
                key = OVERFLOW;
            }
        }
        let bucket = map.buckets.entry(key).or_insert_with(|| AddressBucket {
            tokens: ADDRESS_BURST,
            last: now,
            absorbed: 0,
        });
        f(bucket, now)
    }

    /// Takes one request of `peer` from its quota; `Err(retry after seconds)` beyond it.
    pub fn take(&self, peer: Option<std::net::IpAddr>) -> Result<(), u64> {
        self.with_bucket(peer, |b, now| {
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * ADDRESS_RATE).min(ADDRESS_BURST);
            b.last = now;
            if b.tokens < 1.0 {
                return Err((((1.0 - b.tokens) / ADDRESS_RATE).ceil() as u64).max(1));
            }
            b.tokens -= 1.0;
            Ok(())
        })
    }

    /// Counts a refused request of `peer` into its next summary.
    pub fn absorbed(&self, peer: Option<std::net::IpAddr>) {
        self.with_bucket(peer, |b, _| b.absorbed += 1);
    }

    /// The counts to summarise, per address, reset.
    pub fn drain_absorbed(&self) -> Vec<(Option<std::net::IpAddr>, u64)> {
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.buckets
            .iter_mut()
            .filter(|(_, b)| b.absorbed > 0)
            .map(|(k, b)| (*k, std::mem::take(&mut b.absorbed)))
            .collect()
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .buckets
            .len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_burst_then_refusals_are_counted_and_memory_stays_bounded() {
        let limiter = AddressLimiter::default();
        let a = Some("10.0.0.1".parse().unwrap());
        let burst = ADDRESS_BURST as usize;
        let admitted = (0..burst + 50).filter(|_| limiter.take(a).is_ok()).count();
        // A refill of a few tokens during the loop is possible on a slow machine.
        assert!((burst..burst + 5).contains(&admitted), "{admitted}");
        assert!(limiter.take(a).unwrap_err() >= 1);
        // Another address is unaffected.
        assert!(limiter.take(Some("10.0.0.2".parse().unwrap())).is_ok());
        for _ in 0..7 {
            limiter.absorbed(a);
        }
        assert_eq!(limiter.drain_absorbed(), vec![(a, 7)]);
        assert!(limiter.drain_absorbed().is_empty());
        // Many addresses: the map never grows past its bound.
        for i in 0..(MAX_ADDRESSES as u32 + 1000) {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            let _ = limiter.take(Some(ip));
        }
        assert!(limiter.len() <= MAX_ADDRESSES + 1, "{}", limiter.len());
    }

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
