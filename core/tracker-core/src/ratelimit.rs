//! Per-key request limits (GCRA: a token bucket without a timer) for the platform API, with the numbers the
//! `RateLimit` and `Retry-After` headers need.
//!
//! Written here rather than taken from `governor`: each key's quota is its tenant's plan, read per request (a plan
//! change applies at once), the time is the caller's (the tests drive it), and the answer carries what is left and
//! when the quota is whole again; `governor` fixes one quota per limiter and keeps its own clock.

use std::collections::HashMap;
use std::sync::Mutex;

/// Largest quota per window (the configuration refuses more).
pub const MAX_QUOTA: u32 = 1_000_000;

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
    /// Theoretical arrival time per key, in µs (so quotas far above one per ms per window still have a
    /// non-zero emission interval).
    tat: Mutex<HashMap<String, i64>>,
}

impl RateLimiter {
    /// Counts one request for `key` under a limit of `quota` per `window_secs` (bursts up to the whole quota).
    pub fn check(&self, key: &str, quota: u32, window_secs: u32, now_ms: i64) -> Verdict {
        let quota = quota.clamp(1, MAX_QUOTA);
        let now = now_ms.saturating_mul(1000);
        let window = i64::from(window_secs.max(1)) * 1_000_000;
        let interval = (window / i64::from(quota)).max(1);
        let mut map = self.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= SWEEP_AT {
            map.retain(|_, tat| *tat > now);
        }
        let tat = map.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let secs_up = |us: i64| u64::try_from((us + 999_999) / 1_000_000).unwrap_or(0);
        if new_tat - now > window {
            return Verdict {
                allowed: false,
                quota,
                window_secs,
                remaining: 0,
                reset_secs: secs_up(tat - now),
                retry_after_secs: secs_up(new_tat - now - window).max(1),
            };
        }
        map.insert(key.to_owned(), new_tat);
        Verdict {
            allowed: true,
            quota,
            window_secs,
            remaining: u32::try_from((window - (new_tat - now)) / interval).unwrap_or(0),
            reset_secs: secs_up(new_tat - now),
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

    #[test]
    fn large_quotas_still_limit() {
        let l = RateLimiter::default();
        let allowed = (0..200_000).filter(|_| l.check("big", 100_000, 60, 0).allowed).count();
        assert_eq!(allowed, 100_000);
    }
}
