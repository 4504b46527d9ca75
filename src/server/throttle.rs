//! What keeps one client, or many, from exhausting the server: a per-token rate limit
//! (token bucket, 429), caps on concurrent long polls (per token 429, overall 503), and a
//! budget for the request bodies held in memory at once (503).
//!
//! Everything here is keyed by *known* tokens only (requests without one are refused with
//! 401 before they get here), so its memory is bounded by the tokens file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::server::error::ApiError;
use crate::server::limits::Limits;

/// A per-token request rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests a token may make per second, on average (decimals allowed).
    pub per_second: f64,
    /// Requests a token may make at once after being idle (the bucket's size).
    pub burst: u32,
}

impl Default for RateLimit {
    /// 50 requests per second, bursts of 100: ample for a syncing client (one long poll
    /// and a push now and then), far below what would hurt the server.
    fn default() -> Self {
        RateLimit {
            per_second: 50.0,
            burst: 100,
        }
    }
}

impl RateLimit {
    pub fn check(&self) -> Result<(), String> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(format!(
                "the rate limit must be a positive number of requests per second, got {}",
                self.per_second
            ));
        }
        if self.burst == 0 {
            return Err("the rate limit's burst must be at least 1".into());
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few arithmetic operations that cannot leave the
    // maps inconsistent, even if a panic poisoned the lock.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets, one per token, each starting full.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `token`'s bucket at `now`, or says how long until one is
    /// there.
    pub fn take_at(&self, token: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst);
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(token.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limit.per_second).min(burst);
        bucket.at = bucket.at.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.limit.per_second;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }

    /// [`Self::take_at`] now, as the API error a refused request answers.
    pub fn take(&self, token: &str) -> Result<(), ApiError> {
        self.take_at(token, Instant::now()).map_err(|wait| {
            let retry_after = retry_after_secs(wait);
            ApiError::RateLimited {
                message: format!(
                    "this token may make {} requests per second (bursts of {}); retry in {retry_after} s",
                    self.limit.per_second, self.limit.burst
                ),
                retry_after,
            }
        })
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Concurrent long polls (pulls with `wait` > 0), per token and overall.
#[derive(Debug)]
pub struct LongPolls {
    max_per_token: usize,
    max_total: usize,
    counts: Mutex<(usize, HashMap<String, usize>)>,
}

/// One running long poll; counted until dropped (also when the client hangs up).
#[derive(Debug)]
pub struct LongPollSlot {
    polls: Arc<LongPolls>,
    token: String,
}

impl LongPolls {
    pub fn new(max_per_token: usize, max_total: usize) -> Self {
        LongPolls {
            max_per_token,
            max_total,
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    /// A slot for one more long poll of `token`: 429 past the per-token cap, 503 past the
    /// overall one.
    pub fn enter(self: &Arc<Self>, token: &str) -> Result<LongPollSlot, ApiError> {
        let mut counts = lock(&self.counts);
        let (total, per_token) = &mut *counts;
        let mine = per_token.get(token).copied().unwrap_or(0);
        if mine >= self.max_per_token {
            return Err(ApiError::RateLimited {
                message: format!(
                    "this token already has {mine} long polls waiting (the limit is {}); \
                     retry in 1 s or pull without `wait`",
                    self.max_per_token
                ),
                retry_after: 1,
            });
        }
        if *total >= self.max_total {
            return Err(ApiError::Busy {
                message: format!(
                    "the server already holds {total} long polls (the limit is {}); retry in 1 s",
                    self.max_total
                ),
                retry_after: 1,
            });
        }
        *total += 1;
        per_token.insert(token.to_owned(), mine + 1);
        Ok(LongPollSlot {
            polls: Arc::clone(self),
            token: token.to_owned(),
        })
    }

    /// Long polls running now (all tokens).
    pub fn running(&self) -> usize {
        lock(&self.counts).0
    }
}

impl Drop for LongPollSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.polls.counts);
        let (total, per_token) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(n) = per_token.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_token.remove(&self.token);
            }
        }
    }
}

/// The bytes of request bodies held in memory at once, over every request: a body that
/// would take the total past the budget is refused with 503 (retry later) instead of being
/// buffered.
#[derive(Debug)]
pub struct BodyBudget {
    max: usize,
    used: AtomicUsize,
}

/// Bytes held for one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(max: usize) -> Self {
        BodyBudget {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// An empty reservation, grown with [`Reservation::grow_to`].
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    /// Bytes reserved now, over every request.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Reservation {
    /// Holds `bytes` in total for this request: 503 if the budget cannot cover them (the
    /// reservation keeps what it had).
    pub fn grow_to(&mut self, bytes: usize) -> Result<(), ApiError> {
        if bytes <= self.bytes {
            return Ok(());
        }
        let more = bytes - self.bytes;
        let budget = &self.budget;
        let taken = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|total| *total <= budget.max)
            });
        match taken {
            Ok(_) => {
                self.bytes = bytes;
                Ok(())
            }
            Err(used) => Err(ApiError::Busy {
                message: format!(
                    "the server is holding {used} bytes of request bodies (the budget is {}); \
                     retry in 1 s",
                    budget.max
                ),
                retry_after: 1,
            }),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The shared state of every guard above.
#[derive(Debug)]
pub struct Throttle {
    pub rate: Option<RateLimiter>,
    pub long_polls: Arc<LongPolls>,
    pub bodies: Arc<BodyBudget>,
}

impl Throttle {
    pub fn new(rate: Option<RateLimit>, limits: &Limits) -> Self {
        Throttle {
            rate: rate.map(RateLimiter::new),
            long_polls: Arc::new(LongPolls::new(
                limits.max_long_polls_per_token,
                limits.max_long_polls,
            )),
            bodies: Arc::new(BodyBudget::new(limits.max_buffered_bytes)),
        }
    }

    /// Counts one request of `token` against its rate limit.
    pub fn admit(&self, token: &str) -> Result<(), ApiError> {
        match &self.rate {
            Some(rate) => rate.take(token),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_refill_at_the_rate() {
        let rate = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rate.take_at("a", t0).is_ok());
        }
        let wait = rate.take_at("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another token has its own bucket.
        assert!(rate.take_at("b", t0).is_ok());
        // Half a second later: one more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(rate.take_at("a", t1).is_ok());
        assert!(rate.take_at("a", t1).is_err());
        // An hour later the bucket is full again, not fuller.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(rate.take_at("a", t2).is_ok());
        }
        assert!(rate.take_at("a", t2).is_err());
        // A clock that goes backwards refills nothing and breaks nothing.
        assert!(rate.take_at("a", t0).is_err());
    }

    #[test]
    fn slow_rates_say_how_long_to_wait() {
        let rate = RateLimiter::new(RateLimit {
            per_second: 0.01,
            burst: 1,
        });
        let t0 = Instant::now();
        assert!(rate.take_at("a", t0).is_ok());
        assert_eq!(retry_after_secs(rate.take_at("a", t0).unwrap_err()), 100);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert!(RateLimit {
            per_second: 0.0,
            burst: 1
        }
        .check()
        .is_err());
        assert!(RateLimit {
            per_second: 1.0,
            burst: 0
        }
        .check()
        .is_err());
        assert!(RateLimit::default().check().is_ok());
    }

    #[test]
    fn long_polls_are_capped_per_token_and_overall() {
        let polls = Arc::new(LongPolls::new(2, 3));
        let a1 = polls.enter("a").unwrap();
        let a2 = polls.enter("a").unwrap();
        assert_eq!(polls.enter("a").unwrap_err().status().as_u16(), 429);
        let b1 = polls.enter("b").unwrap();
        assert_eq!(polls.enter("b").unwrap_err().status().as_u16(), 503);
        assert_eq!(polls.running(), 3);
        drop(a1);
        let b2 = polls.enter("b").unwrap();
        drop((a2, b1, b2));
        assert_eq!(polls.running(), 0);
        assert!(lock(&polls.counts).1.is_empty());
    }

    #[test]
    fn body_budget_is_shared_and_given_back() {
        let budget = Arc::new(BodyBudget::new(100));
        let mut r1 = budget.reserve();
        r1.grow_to(60).unwrap();
        let mut r2 = budget.reserve();
        assert_eq!(r2.grow_to(50).unwrap_err().status().as_u16(), 503);
        r2.grow_to(40).unwrap();
        assert_eq!(budget.used(), 100);
        r1.grow_to(10).unwrap(); // never shrinks
        drop(r1);
        assert_eq!(budget.used(), 40);
        drop(r2);
        assert_eq!(budget.used(), 0);
    }
}
