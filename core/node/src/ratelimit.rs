//! Per-key request limits (GCRA: a token bucket without a timer) for the platform API, with the numbers the
//! `RateLimit` and `Retry-After` headers need.

use std::collections::HashMap;
use std::sync::Mutex;

/// Keys tracked before the ones whose buckets are full again are forgotten (they carry no state).
const SWEEP_AT: usize = 50_000;

/// The outcome of one request against a limit of `quota` requests per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub quota: u32,
    pub window_secs: u32,
    /// Requests left that could be made right now.
    pub remaining: u32,
    /// Seconds until the quota is whole again.
    pub reset_secs: u64,
    /// When refused: seconds to wait before the next request can succeed.
    pub retry_after_secs: u64,
}

impl Verdict {
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
    pub fn policy_header(&self) -> String {
        format!("\"api\";q={};w={}", self.quota, self.window_secs)
    }

    /// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    pub fn header(&self) -> String {
        format!("\"api\";r={};t={}", self.remaining, self.reset_secs)
    }
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Theoretical arrival time per key, in ms.
    tat: Mutex<HashMap<String, i64>>,
}

impl RateLimiter {
    /// Counts one request for `key` under a limit of `quota` per `window_secs` (bursts up to the whole quota).
    pub fn check(&self, key: &str, quota: u32, window_secs: u32, now_ms: i64) -> Verdict {
        let quota = quota.max(1);
        let window_ms = i64::from(window_secs.max(1)) * 1000;
        let interval = window_ms / i64::from(quota);
        let mut map = self.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= SWEEP_AT {
            map.retain(|_, tat| *tat > now_ms);
        }
        let tat = map.get(key).copied().unwrap_or(now_ms).max(now_ms);
        let new_tat = tat + interval;
        let secs_up = |ms: i64| u64::try_from((ms + 999) / 1000).unwrap_or(0);
        let remaining = |tat: i64| u32::try_from((window_ms - (tat - now_ms)) / interval.max(1)).unwrap_or(0);
        if new_tat - now_ms > window_ms {
            return Verdict {
                allowed: false,
                quota,
                window_secs,
                remaining: 0,
                reset_secs: secs_up(tat - now_ms),
                retry_after_secs: secs_up(new_tat - now_ms - window_ms).max(1),
            };
        }
        map.insert(key.to_owned(), new_tat);
        Verdict {
            allowed: true,
            quota,
            window_secs,
            remaining: remaining(new_tat),
            reset_secs: secs_up(new_tat - now_ms),
            retry_after_secs: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_quota_then_refuses_with_the_wait_and_recovers() {
        let l = RateLimiter::default();
        for i in 0..3 {
            let v = l.check("t", 3, 60, 0);
            assert!(v.allowed);
            assert_eq!(v.remaining, 2 - i);
        }
        let v = l.check("t", 3, 60, 0);
        assert!(!v.allowed);
        assert_eq!(v.retry_after_secs, 20, "one request's worth of the window");
        assert_eq!(v.header(), "\"api\";r=0;t=60");
        assert_eq!(v.policy_header(), "\"api\";q=3;w=60");
        assert!(l.check("other", 3, 60, 0).allowed, "keys are independent");
        assert!(!l.check("t", 3, 60, 19_999).allowed);
        assert!(l.check("t", 3, 60, 20_000).allowed);
    }
}
