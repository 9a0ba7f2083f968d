//! `GET /api/events/match`: each result paired with the latest earlier trigger sharing a param value.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use tracker_segments::Segment;

use super::{HotStore, MAX_MATCH_ROWS};
use crate::{Result, StoreError};

/// `GET /api/events/match`.
#[derive(Debug, Clone)]
pub struct MatchQuery {
    pub trigger: String,
    pub result: String,
    pub on: String,
    pub from: i64,
    pub to: i64,
    pub window_ms: i64,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchPair {
    pub key: String,
    pub trigger_event: serde_json::Value,
    pub result_event: serde_json::Value,
    pub time_delta_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchSummary {
    pub triggers: u64,
    pub results: u64,
    pub matched: u64,
    pub unmatched_results: u64,
    /// `matched / triggers` (0 without triggers).
    pub match_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_time_delta_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchAnswer {
    pub pairs: Vec<MatchPair>,
    pub summary: MatchSummary,
}

/// One side of a match: `(key value, ts, seq)`, ordered by key value, then time.
pub(super) type Side = Vec<(String, i64, i64)>;

/// Where each event of a match's sides is, by `seq`: its segment and row.
type Rows = HashMap<i64, (Arc<Segment>, usize)>;

pub(super) struct Sides {
    triggers: Side,
    results: Side,
}

/// A pair found, by the events' `seq`.
pub(super) struct Paired {
    key: String,
    trigger: i64,
    result: i64,
    time_delta_ms: i64,
}

impl HotStore {
    /// Both sides of a match in one pass over the tenant's segments: triggers in `[t_from, to)`, results in
    /// `[r_from, to)`, and where each row is, for the pairs' events.
    async fn sides(&self, tenant: &str, q: &MatchQuery, t_from: i64, r_from: i64) -> Result<(Sides, Rows)> {
        let (mut sides, mut rows) = (Sides { triggers: Vec::new(), results: Vec::new() }, Rows::new());
        let mut full = None;
        let from = t_from.min(r_from);
        self.each_segment(tenant, from, q.to, None, |visit| {
            let Some((_, seg)) = visit else {
                sides.triggers.clear();
                sides.results.clear();
                rows.clear();
                return Ok(true);
            };
            for i in seg.rows(tenant, from, q.to) {
                let (ts, et) = (seg.ts(i), seg.event_type(i));
                let side = if et == q.trigger && ts >= t_from {
                    &mut sides.triggers
                } else if et == q.result && ts >= r_from {
                    &mut sides.results
                } else {
                    continue;
                };
                let Some(value) = seg.param(i, &q.on) else { continue };
                if side.len() >= MAX_MATCH_ROWS {
                    full = Some(et.to_owned());
                    return Ok(false);
                }
                side.push((value.to_owned(), ts, seg.seq(i)));
                rows.insert(seg.seq(i), (seg.clone(), i));
            }
            Ok(true)
        })
        .await?;
        if let Some(event_type) = full {
            return Err(StoreError::Rejected(format!(
                "more than {MAX_MATCH_ROWS} {event_type:?} events in range: narrow the time range"
            )));
        }
        sides.triggers.sort_unstable();
        sides.results.sort_unstable();
        Ok((sides, rows))
    }

    /// Pairs each `result` event with the latest `trigger` event at or before it that has the same value of param
    /// `on`, no more than `window_ms` earlier. A trigger is paired at most once and a result at most once; a result
    /// never precedes its trigger. The answer covers results in `[from, to)`; their triggers may be up to the
    /// window earlier, and results of the window before `from` are paired first (not reported), so adjacent
    /// ranges never pair one trigger twice. `match_rate` is the share of triggers in `[from, to)` that were paired.
    pub async fn match_events(&self, tenant: &str, q: &MatchQuery) -> Result<MatchAnswer> {
        let earlier = q.from.saturating_sub(q.window_ms);
        let (sides, rows) = self.sides(tenant, q, earlier.saturating_sub(q.window_ms), earlier).await?;
        let (paired, summary) = pair(&sides, q);
        let body = |seq: i64| {
            rows.get(&seq)
                .and_then(|(seg, i)| serde_json::to_value(seg.event(*i)).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        let pairs = paired
            .into_iter()
            .map(|p| MatchPair {
                trigger_event: body(p.trigger),
                result_event: body(p.result),
                key: p.key,
                time_delta_ms: p.time_delta_ms,
            })
            .collect();
        Ok(MatchAnswer { pairs, summary })
    }
}

/// The pairing itself (see [`HotStore::match_events`]): the pairs listed (up to `q.limit`, results in range) and
/// the summary over all of them.
pub(super) fn pair(sides: &Sides, q: &MatchQuery) -> (Vec<Paired>, MatchSummary) {
    use tracker_protocol::matching::{Counts, Rules, Touch, pair_key};
    let rules = Rules { from: q.from, window_ms: q.window_ms, touch: Touch::Last };
    let (mut pairs, mut deltas, mut counts) = (Vec::new(), Vec::new(), Counts::default());
    let (ts, rs) = (&sides.triggers, &sides.results);
    let mut t_i = 0usize;
    let mut r_i = 0usize;
    while let Some(key) = rs.get(r_i).map(|r| r.0.as_str()) {
        let r_end = r_i + rs.get(r_i..).map_or(0, |s| s.iter().take_while(|r| r.0 == key).count());
        // the triggers with the same key value (triggers of keys without results count as unpaired)
        while ts.get(t_i).is_some_and(|t| t.0.as_str() < key) {
            counts.triggers += u64::from(ts.get(t_i).is_some_and(|t| t.1 >= q.from));
            t_i += 1;
        }
        let t_start = t_i;
        while ts.get(t_i).is_some_and(|t| t.0 == key) {
            t_i += 1;
        }
        let group: Vec<(i64, i64)> = ts.get(t_start..t_i).unwrap_or_default().iter().map(|t| (t.1, t.2)).collect();
        let results: Vec<(i64, i64)> = rs.get(r_i..r_end).unwrap_or_default().iter().map(|r| (r.1, r.2)).collect();
        pair_key(&group, &results, &rules, &mut counts, |t, r| {
            deltas.push(r.0 - t.0);
            if pairs.len() < q.limit {
                pairs.push(Paired { key: key.to_owned(), trigger: t.1, result: r.1, time_delta_ms: r.0 - t.0 });
            }
        });
        r_i = r_end;
    }
    counts.triggers += ts.get(t_i..).unwrap_or_default().iter().filter(|t| t.1 >= q.from).count() as u64;
    deltas.sort_unstable();
    let summary = MatchSummary {
        triggers: counts.triggers,
        results: counts.results,
        matched: counts.matched,
        unmatched_results: counts.results - counts.matched,
        match_rate: counts.match_rate(),
        median_time_delta_ms: deltas.get(deltas.len() / 2).copied(),
    };
    (pairs, summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn q(window_ms: i64) -> MatchQuery {
        MatchQuery {
            trigger: "click".into(),
            result: "postback".into(),
            on: "click_id".into(),
            from: 0,
            to: 1_000_000,
            window_ms,
            limit: 100,
        }
    }

    fn side(rows: &[(&str, i64, i64)]) -> Side {
        let mut v: Vec<_> = rows.iter().map(|(k, t, s)| (k.to_string(), *t, *s)).collect();
        v.sort();
        v
    }

    #[test]
    fn results_pair_with_the_latest_earlier_unpaired_trigger_once() {
        let sides = Sides {
            triggers: side(&[("a", 100, 1), ("a", 200, 2), ("b", 50, 3), ("c", 900, 9), ("d", 300, 20)]),
            results: side(&[
                ("a", 250, 10),
                ("a", 260, 11),
                ("a", 270, 12),
                ("b", 40, 13),
                ("c", 800, 14),
                ("d", 300, 15),
            ]),
        };
        let (pairs, summary) = pair(&sides, &q(1_000));
        let got: Vec<_> = pairs.iter().map(|p| (p.key.as_str(), p.trigger, p.result, p.time_delta_ms)).collect();
        // a: 250 takes the latest (200), 260 the earlier one (100), 270 finds none left; b and c: the result
        // precedes its only trigger, so neither pairs; d: the same millisecond is not "before"
        assert_eq!(got, vec![("a", 2, 10, 50), ("a", 1, 11, 160), ("d", 20, 15, 0)]);
        assert_eq!(summary.matched, 3);
        assert_eq!(summary.unmatched_results, 3);
        assert_eq!(summary.triggers, 5);
        assert!((summary.match_rate - 0.6).abs() < 1e-9);
        // a window shorter than 160 ms leaves the second pair out
        assert_eq!(pair(&sides, &q(100)).1.matched, 2);
    }

    #[test]
    fn a_trigger_paired_before_the_range_is_not_paired_again_inside_it() {
        let sides = Sides { triggers: side(&[("a", 100, 1)]), results: side(&[("a", 150, 2), ("a", 250, 3)]) };
        // the range starts at 200: the result at 150 (before it) already took the only trigger
        let (pairs, summary) = pair(&sides, &MatchQuery { from: 200, ..q(1_000) });
        assert!(pairs.is_empty());
        assert_eq!((summary.results, summary.matched, summary.triggers), (1, 0, 0));
        assert_eq!(summary.match_rate, 0.0);
    }
}
