//! A small TTL cache for one isolate (Workers isolates are single-threaded), holding positive and negative
//! answers so that a hot link costs no KV read and a flood of unknown ids costs one lookup per TTL.

use std::collections::HashMap;
use std::sync::Arc;

/// Entries kept before the cache is cleared wholesale (bounds memory against random ids).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub struct IsolateCache<V> {
    ttl_ms: i64,
    map: HashMap<String, (Option<Arc<V>>, i64)>,
}

impl<V> IsolateCache<V> {
    pub fn new(ttl_ms: i64) -> Self {
        IsolateCache { ttl_ms, map: HashMap::new() }
    }

    /// `Some(answer)` while fresh (the answer may be "not found"), `None` when the caller must look it up.
    pub fn get(&self, key: &str, now_ms: i64) -> Option<Option<Arc<V>>> {
        self.map.get(key).filter(|(_, at)| now_ms - at < self.ttl_ms).map(|(v, _)| v.clone())
    }

    pub fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }

    pub fn put(&mut self, key: &str, value: Option<Arc<V>>, now_ms: i64) {
        if self.map.len() >= MAX_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key.to_owned(), (value, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_memory_is_bounded() {
        let mut c = IsolateCache::new(1000);
        c.put("a", Some(Arc::new(1)), 0);
        c.put("gone", None, 0);
        assert_eq!(c.get("a", 999), Some(Some(Arc::new(1))));
        assert_eq!(c.get("gone", 10), Some(None), "negative answers are cached too");
        assert_eq!(c.get("a", 1000), None);
        for i in 0..MAX_ENTRIES + 5 {
            c.put(&i.to_string(), None, 0);
        }
        assert!(c.map.len() <= MAX_ENTRIES);
    }
}
