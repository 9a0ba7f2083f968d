//! A Bloom filter of a tenant's param values and links in one segment: a lookup by value reads only the segments
//! that may hold it. Its hash is fixed (FNV-1a, then split into two by a mixer), so a filter written by one
//! process answers in another; about 10 bits per key, 7 probes: about 1% false positives.

const BITS_PER_KEY: usize = 10;
const PROBES: u64 = 7;

/// A set that may answer "maybe" for a key never inserted, and never "no" for one that was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    /// A filter sized for `keys` keys.
    pub fn with_keys(keys: usize) -> Bloom {
        Bloom { words: vec![0; keys.saturating_mul(BITS_PER_KEY).div_ceil(64).max(1)] }
    }

    pub fn insert(&mut self, key: &Key<'_>) {
        let bits = self.bits();
        for bit in probes(key, bits) {
            if let Some(w) = self.words.get_mut(bit / 64) {
                *w |= 1 << (bit % 64);
            }
        }
    }

    pub fn may_contain(&self, key: &Key<'_>) -> bool {
        probes(key, self.bits()).all(|bit| self.words.get(bit / 64).is_some_and(|w| w & (1 << (bit % 64)) != 0))
    }

    /// Bytes it takes.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Little-endian words.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// `None` unless `bytes` is a whole number of words.
    pub fn from_bytes(bytes: &[u8]) -> Option<Bloom> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(8) {
            return None;
        }
        let words = bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        Some(Bloom { words })
    }

    fn bits(&self) -> usize {
        self.words.len() * 64
    }
}

/// What a segment's filter holds per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// A param's name and value.
    Param(&'a str, &'a str),
    /// A short link's id.
    Link(&'a str),
}

fn probes(key: &Key<'_>, bits: usize) -> impl Iterator<Item = usize> {
    let h = match key {
        Key::Param(name, value) => fnv(&[b"p", name.as_bytes(), &[0], value.as_bytes()]),
        Key::Link(tu) => fnv(&[b"t", tu.as_bytes()]),
    };
    let (h1, h2) = (mix(h), mix(h ^ 0x9e37_79b9_7f4a_7c15) | 1);
    let bits = bits as u64;
    (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
}

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_key_is_found_and_few_others_are() {
        let mut b = Bloom::with_keys(10_000);
        let values: Vec<String> = (0..10_000).map(|n| format!("c{n}")).collect();
        for v in &values {
            b.insert(&Key::Param("click_id", v));
        }
        let b = Bloom::from_bytes(&b.to_bytes()).unwrap_or_else(|| Bloom::with_keys(1));
        assert!(values.iter().all(|v| b.may_contain(&Key::Param("click_id", v))));
        // another name, or a link, with the same text is another key
        let others = (0..10_000).filter(|n| b.may_contain(&Key::Param("sub1", &format!("c{n}")))).count();
        let links = (0..10_000).filter(|n| b.may_contain(&Key::Link(&format!("c{n}")))).count();
        let absent = (10_000..20_000).filter(|n| b.may_contain(&Key::Param("click_id", &format!("c{n}")))).count();
        for false_positives in [others, links, absent] {
            assert!(false_positives < 300, "{false_positives} false positives in 10,000");
        }
    }

    #[test]
    fn bytes_that_are_not_words_are_refused() {
        assert_eq!(Bloom::from_bytes(&[]), None);
        assert_eq!(Bloom::from_bytes(&[1, 2, 3]), None);
        assert!(Bloom::from_bytes(&[0; 16]).is_some());
    }
}
