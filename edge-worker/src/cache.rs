//! What an isolate remembers between requests, in bounded memory (Workers isolates are single-threaded).
//!
//! [`Bounded`] is a map that forgets its oldest entries when full, so a flood of new keys (random ids, random
//! credentials, many addresses) pushes out only old entries, never everything at once. [`IsolateCache`] holds
//! lookups' answers for a TTL: found records and "not found" in two bounded maps of their own, so that a flood of
//! ids that do not exist (each answer cached so it costs one lookup per TTL) can never push out the records real
//! traffic uses; only records that exist can enter the first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A map of at most `capacity` entries that, when full, forgets the entry inserted longest ago (FIFO).
#[derive(Debug)]
pub struct Bounded<V> {
    capacity: usize,
    map: HashMap<String, (V, u64)>,
    /// Keys in insertion order, with the generation they were inserted at (an entry inserted again, or removed,
    /// leaves a stale element here, skipped when it comes up).
    order: VecDeque<(String, u64)>,
    generation: u64,
}

impl<V> Bounded<V> {
    pub fn new(capacity: usize) -> Self {
        Bounded { capacity: capacity.max(1), map: HashMap::new(), order: VecDeque::new(), generation: 0 }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.map.remove(key).map(|(v, _)| v)
    }

    /// Inserts (or replaces, as the newest) `key`; forgets the oldest entries past the capacity.
    pub fn insert(&mut self, key: &str, value: V) {
        self.generation += 1;
        self.map.insert(key.to_owned(), (value, self.generation));
        self.order.push_back((key.to_owned(), self.generation));
        while self.map.len() > self.capacity {
            let Some((old, generation)) = self.order.pop_front() else { break };
            if self.map.get(&old).is_some_and(|(_, g)| *g == generation) {
                self.map.remove(&old);
            }
        }
        // stale elements (keys inserted again or removed) never outnumber the live ones
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order.retain(|(k, g)| map.get(k).is_some_and(|(_, live)| live == g));
        }
    }
}

/// Found records kept per isolate; and, apart, "not found" answers.
const MAX_FOUND: usize = 10_000;
const MAX_MISSING: usize = 10_000;

/// A TTL cache of lookups' answers, found or not.
#[derive(Debug)]
pub struct IsolateCache<V> {
    ttl_ms: i64,
    found: Bounded<(Arc<V>, i64)>,
    missing: Bounded<i64>,
}

impl<V> IsolateCache<V> {
    pub fn new(ttl_ms: i64) -> Self {
        IsolateCache { ttl_ms, found: Bounded::new(MAX_FOUND), missing: Bounded::new(MAX_MISSING) }
    }

    /// `Some(answer)` while fresh (the answer may be "not found"), `None` when the caller must look it up.
    pub fn get(&self, key: &str, now_ms: i64) -> Option<Option<Arc<V>>> {
        let fresh = |at: i64| now_ms - at < self.ttl_ms;
        if let Some((v, at)) = self.found.get(key) {
            return fresh(*at).then(|| Some(v.clone()));
        }
        self.missing.get(key).filter(|at| fresh(**at)).map(|_| None)
    }

    pub fn remove(&mut self, key: &str) {
        self.found.remove(key);
        self.missing.remove(key);
    }

    pub fn put(&mut self, key: &str, value: Option<Arc<V>>, now_ms: i64) {
        match value {
            Some(v) => {
                self.missing.remove(key);
                self.found.insert(key, (v, now_ms));
            }
            None => {
                self.found.remove(key);
                self.missing.insert(key, now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_negative_ones_are_cached_too() {
        let mut c = IsolateCache::new(1000);
        c.put("a", Some(Arc::new(1)), 0);
        c.put("gone", None, 0);
        assert_eq!(c.get("a", 999), Some(Some(Arc::new(1))));
        assert_eq!(c.get("gone", 10), Some(None), "negative answers are cached too");
        assert_eq!(c.get("a", 1000), None);
        c.put("gone", Some(Arc::new(2)), 5);
        assert_eq!(c.get("gone", 10), Some(Some(Arc::new(2))), "a record created since is found at once");
        c.remove("gone");
        assert_eq!(c.get("gone", 10), None);
    }

    #[test]
    fn a_flood_of_unknown_ids_never_pushes_out_the_records_in_use() {
        let mut c = IsolateCache::new(60_000);
        c.put("hot-link", Some(Arc::new(7)), 0);
        for i in 0..5 * MAX_MISSING {
            c.put(&format!("random-{i}"), None, 1);
        }
        assert_eq!(c.get("hot-link", 2), Some(Some(Arc::new(7))));
        assert!(c.missing.len() <= MAX_MISSING && c.missing.order.len() <= 2 * MAX_MISSING + 1);
        assert_eq!(c.get(&format!("random-{}", 5 * MAX_MISSING - 1), 2), Some(None), "the newest are kept");
        assert_eq!(c.get("random-0", 2), None, "the oldest were forgotten");
    }

    #[test]
    fn a_full_map_forgets_its_oldest_entries_one_at_a_time() {
        let mut b = Bounded::new(3);
        for k in ["a", "b", "c"] {
            b.insert(k, k.len());
        }
        b.insert("a", 9); // inserted again: now the newest
        b.insert("d", 1);
        assert_eq!((b.get("b"), b.get("a"), b.get("c"), b.get("d")), (None, Some(&9), Some(&1), Some(&1)));
        for i in 0..100 {
            b.insert("a", i); // the same key over and over leaves no garbage behind
        }
        assert_eq!(b.len(), 3);
        assert!(b.order.len() <= 7, "{}", b.order.len());
    }
}
