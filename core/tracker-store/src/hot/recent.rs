//! The filter's fast path past its kept ids ([`super::dedup`]): the ids of a batch it certainly never kept, known
//! without reading `hot_kept_ids`.
//!
//! Nearly every id the filter sees is new, and looking each one up in the table took a fifth of the filter's time.
//! This keeps in memory the keys the filter of this process kept lately, and a range of keys `lo..hi` in which that
//! memory is complete: every key the table holds in the range, for a partition this process filters, was kept by
//! this process since the range was set. A key in the range that the memory does not hold was never kept, and is
//! not looked up. Any other key is looked up as before: one older than the range (a late event, a resend days
//! later, an import), one whose clock is far ahead, or an id of another version, whose key is a hash.
//!
//! Why the memory is complete:
//! - The range is set inside a filter transaction, which holds the hot tier's write lock. `lo` is just past the
//!   largest key below `hi` the table holds, so at that moment the table holds no key in the range. The same
//!   transaction reads every partition's position (the snapshot).
//! - From then on, this process puts every key it keeps in memory before it relies on the memory again.
//! - Another writer (a second filter process after a rebalance, on a shared hot tier) can keep ids of a partition
//!   only by moving the partition's position in the same commit. So the memory is trusted for a partition only
//!   from a transaction that finds the partition's position where the snapshot or this process's last commit left
//!   it, and each transaction checks that again. When it finds another position, the batch's lookups are not
//!   trusted: the transaction fails, the filter judges the batch again with every id looked up, and the range is set
//!   anew.
//! - `lo` only ever rises: the memory lets go of its oldest minutes (it holds at most [`RECENT_MS`] of clock and
//!   [`MAX_HELD`] keys), and the range shrinks with them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use super::SeenKey;
use crate::{Result, StoreError};

/// How far past the newest clock (or now) a range reaches when it is set; it is set anew when the clocks come
/// within half of it.
const HORIZON_MS: u64 = 3_600_000;
/// The clock span of the keys held in memory, back from the newest.
const RECENT_MS: u64 = 600_000;
/// Most keys held in memory (8-byte fingerprints, about 10 bytes each with the sets' overhead).
pub(super) const MAX_HELD: usize = 4 << 20;
const MINUTE_MS: u64 = 60_000;
/// How far ahead of this machine's clock an id's clock may be and still count as the newest.
const AHEAD_MS: u64 = 60_000;

/// The memory of recently kept keys, and the range in which it is complete.
#[derive(Debug, Default)]
pub(super) struct Recent {
    /// `lo..hi`, keys as big-endian integers; `None` until set.
    range: Option<(u128, u128)>,
    /// Every partition's position when the range was set (a partition with none is at 0).
    snapshot: HashMap<u32, u64>,
    /// Per partition, the position this process committed last: its memory covers that partition while the
    /// position is still this one.
    owned: HashMap<u32, u64>,
    /// Fingerprints of the keys kept in the range, per minute of their clock.
    minutes: BTreeMap<u64, HashSet<u64, BuildHasherDefault<Fingerprints>>>,
    /// How many fingerprints `minutes` holds.
    held: usize,
    /// The newest clock (ms) of the keys in the range seen so far.
    newest: u64,
}

impl Recent {
    /// Of `keys` (of a batch of `partition`), those that may have been kept; the others certainly were not. A clock
    /// more than [`AHEAD_MS`] past `now_ms` does not move the newest clock (a client whose clock runs ahead would
    /// otherwise age the memory).
    pub(super) fn maybe_kept(&mut self, partition: u32, keys: &[SeenKey], now_ms: u64) -> Vec<SeenKey> {
        let Some((lo, hi)) = self.range.filter(|_| self.owned.contains_key(&partition)) else {
            return keys.to_vec();
        };
        let mut asked = Vec::new();
        for k in keys {
            let key = u128::from_be_bytes(k.key);
            if key < lo || key >= hi {
                asked.push(*k);
                continue;
            }
            if clock(key) <= now_ms.saturating_add(AHEAD_MS) {
                self.newest = self.newest.max(clock(key));
            }
            if self.minutes.get(&(clock(key) / MINUTE_MS)).is_some_and(|m| m.contains(&fingerprint(key))) {
                asked.push(*k);
            }
        }
        asked
    }

    /// In a filter transaction of `partition`, whose position the transaction read as `position`: an error when
    /// another writer moved it since this process committed it (the batch's lookups are not trusted), else the
    /// bound of a new range when one is to be set (see [`Renewal`]).
    pub(super) fn check(&mut self, partition: u32, position: u64, now_ms: u64) -> Result<Option<u128>> {
        let fresh = self.range.is_some_and(|(_, hi)| clock(hi) > self.newest.saturating_add(HORIZON_MS / 2));
        let since = match self.owned.get(&partition) {
            Some(&committed) if committed != position => {
                self.owned.remove(&partition);
                return Err(StoreError::Conflict(format!(
                    "the filter position in partition {partition} moved to {position} (this process left it at \
                     {committed}): its kept ids are looked up again"
                )));
            }
            Some(&committed) => committed,
            // a partition this process has not committed yet joins the range if nobody moved it since the snapshot
            None => self.snapshot.get(&partition).copied().unwrap_or(0),
        };
        if fresh && since == position {
            return Ok(None);
        }
        Ok(Some(u128::from(self.newest.max(now_ms).saturating_add(HORIZON_MS)) << 80))
    }

    /// After the transaction committed: `partition` is at `next`, and `kept` are in the table; with the range and
    /// snapshot it set, if it set them.
    pub(super) fn set(&mut self, partition: u32, next: u64, kept: &[SeenKey], renewal: Option<Renewal>) {
        if let Some(Renewal { lo, hi, snapshot }) = renewal {
            // trusted again from each partition's next transaction that finds it where the snapshot has it
            *self = Recent { range: Some((lo, hi)), snapshot, newest: self.newest, ..Recent::default() };
        }
        self.owned.insert(partition, next);
        let Some((lo, hi)) = self.range else { return };
        for k in kept {
            let key = u128::from_be_bytes(k.key);
            if (lo..hi).contains(&key)
                && self.minutes.entry(clock(key) / MINUTE_MS).or_default().insert(fingerprint(key))
            {
                self.held += 1;
            }
        }
        self.let_go();
    }

    /// Forgets everything: the next transaction of each partition sets a new range.
    pub(super) fn reset(&mut self) {
        *self = Recent::default();
    }

    /// Lets go of the minutes older than [`RECENT_MS`] before the newest clock, and of the oldest while more than
    /// [`MAX_HELD`] keys are held, raising `lo` past each.
    fn let_go(&mut self) {
        let keep_from = self.newest.saturating_sub(RECENT_MS) / MINUTE_MS;
        while let Some((&minute, _)) = self.minutes.first_key_value() {
            if minute >= keep_from && self.held <= MAX_HELD {
                break;
            }
            if let Some((_, set)) = self.minutes.pop_first() {
                self.held -= set.len();
            }
            if let Some((lo, hi)) = self.range.as_mut() {
                *lo = (*lo).max(u128::from((minute + 1) * MINUTE_MS) << 80).min(*hi);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held
    }
}

/// A range set by a filter transaction: `lo` just past the largest key below `hi` it read, and every partition's
/// position it read.
#[derive(Debug)]
pub(super) struct Renewal {
    pub lo: u128,
    pub hi: u128,
    pub snapshot: HashMap<u32, u64>,
}

/// A key's leading 6 bytes: the millisecond clock of a UUIDv7's key.
fn clock(key: u128) -> u64 {
    u64::try_from(key >> 80).unwrap_or(u64::MAX)
}

/// A key's last 8 bytes: hash bytes of every key ([`SeenKey`]).
fn fingerprint(key: u128) -> u64 {
    key as u64
}

/// The fingerprints' hasher: they are hash bytes already.
#[derive(Debug, Default)]
struct Fingerprints(u64);

impl Hasher for Fingerprints {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(clock_ms: u64, hash: u64) -> SeenKey {
        let key = (u128::from(clock_ms) << 80) | u128::from(hash);
        SeenKey { key: key.to_be_bytes(), legacy: [0; 16] }
    }

    const NOW: u64 = 1_765_000_000_000;

    #[test]
    fn keys_in_the_range_are_looked_up_only_when_kept() {
        let mut r = Recent::default();
        let asked = [key(NOW, 1), key(NOW, 2)];
        assert_eq!(r.maybe_kept(0, &asked, NOW), asked, "no range yet: every key is looked up");
        let hi = r.check(0, 0, NOW).unwrap().unwrap();
        assert_eq!(clock(hi), NOW + HORIZON_MS);
        let lo = u128::from_be_bytes(key(NOW - 1, 0).key);
        r.set(0, 10, &[key(NOW, 1)], Some(Renewal { lo, hi, snapshot: HashMap::from([(0, 0), (1, 5)]) }));
        assert_eq!(r.maybe_kept(0, &asked, NOW), [key(NOW, 1)], "the kept one only");
        assert_eq!(r.maybe_kept(1, &asked, NOW), asked, "a partition this process has not committed: every key");
        let outside = [key(NOW - 2, 3), key(NOW + HORIZON_MS, 4)];
        assert_eq!(r.maybe_kept(0, &outside, NOW), outside, "below lo and at hi: looked up");
        // the position this process left: trusted, no new range; another: not trusted, and forgotten
        assert_eq!(r.check(0, 10, NOW).unwrap(), None);
        // a partition joins without a new range where the snapshot left it, and not where another writer moved it
        assert_eq!(r.check(1, 5, NOW).unwrap(), None);
        assert!(r.check(1, 6, NOW).unwrap().is_some());
        assert!(r.check(2, 0, NOW).unwrap().is_none(), "no position, none in the snapshot: both at 0");
        let err = r.check(0, 11, NOW).unwrap_err().to_string();
        assert!(err.contains("moved to 11"), "{err}");
        assert_eq!(r.maybe_kept(0, &asked, NOW), asked);
    }

    #[test]
    fn old_minutes_are_let_go_and_lo_rises_past_them() {
        let mut r = Recent::default();
        let hi = r.check(0, 0, NOW).unwrap().unwrap();
        r.set(0, 1, &[key(NOW, 1)], Some(Renewal { lo: 0, hi, snapshot: HashMap::new() }));
        assert_eq!(r.held(), 1);
        // a clock far ahead of this machine's ages nothing
        r.maybe_kept(0, &[key(NOW + 2 * RECENT_MS, 5)], NOW);
        r.set(0, 1, &[], None);
        assert_eq!(r.held(), 1);
        // a key RECENT_MS later makes the first minute too old
        r.maybe_kept(0, &[key(NOW + RECENT_MS + MINUTE_MS, 9)], u64::MAX);
        r.set(0, 2, &[key(NOW + RECENT_MS + MINUTE_MS, 2)], None);
        assert_eq!(r.held(), 1);
        assert_eq!(r.maybe_kept(0, &[key(NOW, 1)], u64::MAX), [key(NOW, 1)], "below lo now: looked up");
        assert_eq!(r.maybe_kept(0, &[key(NOW + RECENT_MS + MINUTE_MS, 3)], u64::MAX), [], "a new key in the range");
        // clocks within half the horizon of hi: the next transaction sets a new range
        r.maybe_kept(0, &[key(clock(hi) - HORIZON_MS / 2 + 1, 4)], u64::MAX);
        assert!(r.check(0, 2, NOW).unwrap().is_some());
    }
}
