//! The event match, shared by every tier so that they pair alike: each result event is paired with a trigger
//! event that has the same key (a param's value), at or before it and no more than the window earlier. The
//! latest unpaired trigger for last-touch attribution, the earliest for first-touch. A trigger is paired at most
//! once and a result at most once; a result never precedes its trigger.
//!
//! A range `[from, to)` is answered by pairing, key by key, the results of the window before `from` first (not
//! reported: they consume the triggers they would have consumed in the previous range), so with last touch
//! adjacent ranges never pair one trigger twice. First touch takes the earliest trigger, which results further
//! back may have taken in the previous range: across adjacent ranges it can credit a trigger twice (within one
//! range, never).

/// Which trigger a result is credited to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    /// The earliest unpaired trigger within the window (exact within one range; see the module's note).
    First,
    /// The latest unpaired trigger at or before the result.
    #[default]
    Last,
}

/// How one match is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Start of the reported range, ms: results before it are paired but not reported.
    pub from: i64,
    /// How much earlier than its result a trigger may be, ms.
    pub window_ms: i64,
    pub touch: Touch,
}

/// Counts over the keys paired so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Triggers in the range.
    pub triggers: u64,
    /// Results in the range.
    pub results: u64,
    /// Results in the range that were paired.
    pub matched: u64,
    /// Triggers in the range that were paired with a result in the range.
    pub matched_triggers: u64,
}

impl Counts {
    /// `matched_triggers / triggers` (0 without triggers).
    pub fn match_rate(&self) -> f64 {
        if self.triggers == 0 { 0.0 } else { self.matched_triggers as f64 / self.triggers as f64 }
    }
}

/// Pairs one key's events: `triggers` and `results` are `(time ms, item)` sorted by time. Calls `paired` for each
/// pair whose result is in the range, in result order; adds to `counts`.
pub fn pair_key<T, R>(
    triggers: &[(i64, T)],
    results: &[(i64, R)],
    rules: &Rules,
    counts: &mut Counts,
    mut paired: impl FnMut(&(i64, T), &(i64, R)),
) {
    counts.triggers += triggers.iter().filter(|t| t.0 >= rules.from).count() as u64;
    // the unpaired triggers' indices: each lookup is logarithmic, however many were paired before
    let mut unused: std::collections::BTreeSet<usize> = (0..triggers.len()).collect();
    for r in results {
        let in_range = r.0 >= rules.from;
        counts.results += u64::from(in_range);
        // the triggers at or before the result, within the window
        let end = triggers.partition_point(|t| t.0 <= r.0);
        let start = triggers.partition_point(|t| t.0 < r.0.saturating_sub(rules.window_ms));
        if start >= end {
            continue;
        }
        let found = match rules.touch {
            Touch::Last => unused.range(start..end).next_back().copied(),
            Touch::First => unused.range(start..end).next().copied(),
        };
        let Some((i, t)) = found.and_then(|i| triggers.get(i).map(|t| (i, t))) else { continue };
        unused.remove(&i);
        if in_range {
            counts.matched += 1;
            counts.matched_triggers += u64::from(t.0 >= rules.from);
            paired(t, r);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    fn pairs(t: &[i64], r: &[i64], rules: Rules) -> (Vec<(i64, i64)>, Counts) {
        let t: Vec<(i64, usize)> = t.iter().enumerate().map(|(i, ts)| (*ts, i)).collect();
        let r: Vec<(i64, usize)> = r.iter().enumerate().map(|(i, ts)| (*ts, i)).collect();
        let mut counts = Counts::default();
        let mut out = Vec::new();
        pair_key(&t, &r, &rules, &mut counts, |a, b| out.push((a.0, b.0)));
        (out, counts)
    }

    const LAST: Rules = Rules { from: 0, window_ms: 100, touch: Touch::Last };

    #[test]
    fn last_and_first_touch() {
        assert_eq!(pairs(&[10, 20, 30], &[40], LAST).0, [(30, 40)]);
        assert_eq!(pairs(&[10, 20, 30], &[40], Rules { touch: Touch::First, ..LAST }).0, [(10, 40)]);
        // a trigger once: the second result takes the next one
        assert_eq!(pairs(&[10, 20], &[40, 50], LAST).0, [(20, 40), (10, 50)]);
        // never before its trigger, never outside the window, a trigger at the same time counts
        assert_eq!(pairs(&[50], &[40], LAST).0, []);
        assert_eq!(pairs(&[10], &[200], LAST).0, []);
        assert_eq!(pairs(&[40], &[40], LAST).0, [(40, 40)]);
    }

    #[test]
    fn results_before_the_range_consume_their_triggers_unreported() {
        let (p, c) = pairs(&[10, 20], &[30, 140], Rules { from: 100, ..LAST });
        assert_eq!(p, [], "20 went to the result at 30 (before the range); 10 is out of the window of 140");
        assert_eq!((c.triggers, c.results, c.matched), (0, 1, 0));
    }

    proptest! {
        #[test]
        fn every_pair_is_valid_and_nothing_pairs_twice(
            mut t in proptest::collection::vec(0i64..1000, 0..40),
            mut r in proptest::collection::vec(0i64..1000, 0..40),
            window in 0i64..300,
            first in any::<bool>(),
        ) {
            t.sort_unstable();
            r.sort_unstable();
            let rules = Rules { from: 0, window_ms: window, touch: if first { Touch::First } else { Touch::Last } };
            let tt: Vec<(i64, usize)> = t.iter().enumerate().map(|(i, ts)| (*ts, i)).collect();
            let rr: Vec<(i64, usize)> = r.iter().enumerate().map(|(i, ts)| (*ts, i)).collect();
            let mut counts = Counts::default();
            let mut seen_t = std::collections::HashSet::new();
            let mut seen_r = std::collections::HashSet::new();
            pair_key(&tt, &rr, &rules, &mut counts, |a, b| {
                assert!(a.0 <= b.0 && b.0 - a.0 <= window, "{a:?} {b:?}");
                assert!(seen_t.insert(a.1), "trigger paired twice");
                assert!(seen_r.insert(b.1), "result paired twice");
            });
            prop_assert_eq!(counts.matched as usize, seen_r.len());
            prop_assert!(counts.matched <= counts.triggers.min(counts.results));
        }
    }
}
