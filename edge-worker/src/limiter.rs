//! Token buckets per key (tenant, or tenant and client IP) with bounded memory. Checked only after a request is
//! authenticated, so forged traffic can never spend a tenant's budget, and keyed by tenant so one tenant can never
//! spend another's. Buckets live in one isolate: the limit is per edge isolate, a first line of defence before the
//! plan quotas enforced globally.

use crate::cache::Bounded;

/// Buckets kept; past them the oldest are forgotten (a forgotten key starts again with a full bucket).
const MAX_KEYS: usize = 50_000;

#[derive(Debug)]
pub struct Limiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: Bounded<(f64, i64)>,
}

impl Limiter {
    /// `rate_per_sec` sustained, bursts of twice that (at least 1).
    pub fn new(rate_per_sec: f64) -> Self {
        Limiter { rate_per_sec, burst: (rate_per_sec * 2.0).max(1.0), buckets: Bounded::new(MAX_KEYS) }
    }

    /// Takes `cost` tokens from `key`'s bucket, or says how many seconds to wait.
    pub fn check(&mut self, key: &str, cost: f64, now_ms: i64) -> Result<(), u64> {
        if self.buckets.get(key).is_none() {
            self.buckets.insert(key, (self.burst, now_ms));
        }
        let (rate, burst) = (self.rate_per_sec, self.burst);
        let Some((tokens, at)) = self.buckets.get_mut(key) else { return Ok(()) };
        let refilled = (*tokens + (now_ms - *at).max(0) as f64 / 1000.0 * rate).min(burst);
        *at = now_ms;
        if refilled >= cost {
            *tokens = refilled - cost;
            Ok(())
        } else {
            *tokens = refilled;
            let missing = cost.min(burst) - refilled;
            Err((missing / rate.max(f64::MIN_POSITIVE)).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_then_refills_per_key() {
        let mut l = Limiter::new(10.0);
        for _ in 0..20 {
            assert!(l.check("acme", 1.0, 0).is_ok());
        }
        assert_eq!(l.check("acme", 1.0, 0), Err(1));
        assert!(l.check("other", 1.0, 0).is_ok(), "one tenant never spends another's budget");
        assert!(l.check("acme", 1.0, 100).is_ok(), "refills at the rate");
        assert!(l.check("acme", 5.0, 100).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let mut l = Limiter::new(1.0);
        for i in 0..MAX_KEYS + 10 {
            let _ = l.check(&i.to_string(), 1.0, 0);
        }
        assert!(l.buckets.len() <= MAX_KEYS);
    }
}
