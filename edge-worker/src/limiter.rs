//! Token buckets per key (tenant, or tenant and client IP) with bounded memory. Checked only after a request is
//! authenticated, so forged traffic can never spend a tenant's budget, and keyed by tenant so one tenant can never
//! spend another's. Buckets live in one isolate: the limit is per edge isolate, a first line of defence before the
//! plan quotas enforced globally.

use std::collections::HashMap;

const MAX_KEYS: usize = 50_000;

#[derive(Debug)]
pub struct Limiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: HashMap<String, (f64, i64)>,
}

impl Limiter {
    /// `rate_per_sec` sustained, bursts of twice that (at least 1).
    pub fn new(rate_per_sec: f64) -> Self {
        Limiter { rate_per_sec, burst: (rate_per_sec * 2.0).max(1.0), buckets: HashMap::new() }
    }

    /// Takes `cost` tokens from `key`'s bucket, or says how many seconds to wait.
    pub fn check(&mut self, key: &str, cost: f64, now_ms: i64) -> Result<(), u64> {
        if self.buckets.len() >= MAX_KEYS && !self.buckets.contains_key(key) {
            // keep memory bounded: forget buckets that have refilled anyway
            let (rate, burst) = (self.rate_per_sec, self.burst);
            self.buckets.retain(|_, (tokens, at)| *tokens + (now_ms - *at) as f64 / 1000.0 * rate < burst);
            if self.buckets.len() >= MAX_KEYS {
                self.buckets.clear();
            }
        }
        let (tokens, at) = self.buckets.entry(key.to_owned()).or_insert((self.burst, now_ms));
        let refilled = (*tokens + (now_ms - *at).max(0) as f64 / 1000.0 * self.rate_per_sec).min(self.burst);
        *at = now_ms;
        if refilled >= cost {
            *tokens = refilled - cost;
            Ok(())
        } else {
            *tokens = refilled;
            let missing = cost.min(self.burst) - refilled;
            Err((missing / self.rate_per_sec.max(f64::MIN_POSITIVE)).ceil().max(1.0) as u64)
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
