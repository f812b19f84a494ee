//! Request rates per principal: a token bucket for each name, refilled at
//! its rate up to its burst. Transport-free; the coordinator asks it before
//! every job API call.
//!
//! Kept by hand, not `governor`: its keyed limiters share one quota and read their own clock (`admit` takes `now`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::Rate;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// The token buckets of every principal that called.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one request from `who`'s bucket at `now`; when it is empty,
    /// returns how long until it holds one again.
    pub fn admit(&self, who: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let burst = f64::from(rate.burst);
        let bucket = buckets.entry(who.to_owned()).or_insert(Bucket { tokens: burst, refilled: now });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_each_name_apart() {
        let limiter = RateLimiter::default();
        let rate = Rate { per_second: 2.0, burst: 3 };
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.admit("alice", rate, t0).unwrap();
        }
        let wait = limiter.admit("alice", rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "one request comes back every 1/rate");
        limiter.admit("bob", rate, t0).unwrap();
        // Half a second later one request is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        limiter.admit("alice", rate, t1).unwrap();
        assert!(limiter.admit("alice", rate, t1).is_err());
        // A long pause refills the bucket to its burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.admit("alice", rate, t2).unwrap();
        }
        assert!(limiter.admit("alice", rate, t2).is_err());
    }
}
