//! What `/api/events` and `/api/events/stats` read: the recent events, newest first, and the counts as time
//! series.

use libsql::Value;
use libsql::params::Params;
use serde::Serialize;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use std::sync::Arc;

use tracker_segments::{Key, Segment};

use super::{HotStore, MAX_SERIES_ROWS};
use crate::{Result, StoreError, int};

/// Listing filters for `GET /api/events`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub event_type: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub tu_id: Option<String>,
    pub param: Option<(String, String)>,
    /// Exclusive: events older than this position (`ts`, `seq`).
    pub before: Option<(i64, i64)>,
    pub limit: u32,
}

/// One page of events, newest first.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Events as JSON text (the API's representation).
    pub events: Vec<String>,
    /// Position of the last event, when there may be more.
    pub next: Option<(i64, i64)>,
}

/// How a time series is grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    None,
    EventType,
    Link,
    Param(String),
}

/// `GET /api/events/stats`.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    pub from: i64,
    pub to: i64,
    /// Bucket width: [`MINUTE_MS`] or [`HOUR_MS`] (60,000 or 3,600,000).
    pub bucket_ms: i64,
    pub group_by: GroupBy,
    pub event_type: Option<String>,
    pub tu_id: Option<String>,
    pub param: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesPoint {
    pub bucket: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub count: i64,
}

impl HotStore {
    /// The tenant's events, newest first: the segments latest first, each read backwards from the end of the
    /// range, until no segment left can hold an event newer than the page's last.
    pub async fn events(&self, tenant: &str, q: &EventQuery) -> Result<EventPage> {
        let limit = usize::try_from(q.limit.max(1)).unwrap_or(usize::MAX);
        let from = q.from.unwrap_or(i64::MIN);
        let mut to = q.to.unwrap_or(i64::MAX);
        if let Some((ts, _)) = q.before {
            to = to.min(ts.saturating_add(1));
        }
        let key = match (&q.param, &q.tu_id) {
            (Some((k, v)), _) => Some(Key::Param(k, v)),
            (None, Some(tu)) => Some(Key::Link(tu)),
            (None, None) => None,
        };
        // the newest `limit + 1` positions `(ts, seq)`, each with where its row is in `found`
        let mut page: BinaryHeap<Reverse<((i64, i64), usize)>> = BinaryHeap::new();
        let mut found: Vec<(Arc<Segment>, usize)> = Vec::new();
        self.each_segment(tenant, from, to, key, |visit| {
            let Some((c, seg)) = visit else {
                page.clear();
                found.clear();
                return Ok(true);
            };
            if page.len() > limit && page.peek().is_some_and(|Reverse((oldest, _))| c.ts_max < oldest.0) {
                return Ok(false);
            }
            for i in seg.rows(tenant, from, to).rev() {
                let at = (seg.ts(i), seg.seq(i));
                if page.len() > limit && page.peek().is_some_and(|Reverse((oldest, _))| at <= *oldest) {
                    break;
                }
                if q.before.is_some_and(|b| at >= b) || !matches(seg, i, q.event_type.as_deref(), q) {
                    continue;
                }
                page.push(Reverse((at, found.len())));
                found.push((seg.clone(), i));
                if page.len() > limit + 1 {
                    page.pop();
                }
            }
            Ok(true)
        })
        .await?;
        let more = page.len() > limit;
        let mut newest: Vec<((i64, i64), usize)> = page.into_iter().map(|Reverse(x)| x).collect();
        newest.sort_unstable_by_key(|(at, _)| Reverse(*at));
        newest.truncate(limit);
        let next = if more { newest.last().map(|(at, _)| *at) } else { None };
        let events = newest
            .iter()
            .filter_map(|(_, n)| found.get(*n))
            .map(|(seg, i)| serde_json::to_string(&seg.event(*i)).map_err(|_| StoreError::BadColumn("body")))
            .collect::<Result<_>>()?;
        Ok(EventPage { events, next })
    }

    /// Counts of the tenant's events in `[q.from, q.to)` per bucket and key, read from the events (for what the
    /// counts do not hold: a param filter with another condition, or a param of too many values to count).
    async fn stats_from_events(&self, tenant: &str, q: &StatsQuery) -> Result<Vec<SeriesPoint>> {
        let key = match (&q.param, &q.tu_id) {
            (Some((k, v)), _) => Some(Key::Param(k, v)),
            (None, Some(tu)) => Some(Key::Link(tu)),
            (None, None) => None,
        };
        let filter = EventQuery { tu_id: q.tu_id.clone(), param: q.param.clone(), ..EventQuery::default() };
        let mut counts: BTreeMap<(i64, Option<String>), i64> = BTreeMap::new();
        let mut too_many = false;
        self.each_segment(tenant, q.from, q.to, key, |visit| {
            let Some((_, seg)) = visit else {
                counts.clear();
                return Ok(true);
            };
            for i in seg.rows(tenant, q.from, q.to) {
                if !matches(seg, i, q.event_type.as_deref(), &filter) {
                    continue;
                }
                let k = match &q.group_by {
                    GroupBy::None => None,
                    GroupBy::EventType => Some(seg.event_type(i)),
                    GroupBy::Link => match seg.tu_id(i) {
                        "" => continue,
                        tu => Some(tu),
                    },
                    GroupBy::Param(name) => match seg.param(i, name) {
                        Some(v) => Some(v),
                        None => continue,
                    },
                };
                let bucket = seg.ts(i).div_euclid(q.bucket_ms) * q.bucket_ms;
                let full = counts.len() >= MAX_SERIES_ROWS;
                match counts.entry((bucket, k.map(str::to_owned))) {
                    std::collections::btree_map::Entry::Occupied(mut n) => *n.get_mut() += 1,
                    std::collections::btree_map::Entry::Vacant(_) if full => too_many = true,
                    std::collections::btree_map::Entry::Vacant(n) => {
                        n.insert(1);
                    }
                }
            }
            Ok(!too_many)
        })
        .await?;
        if too_many {
            return Err(too_many_points());
        }
        Ok(counts.into_iter().map(|((bucket, key), count)| SeriesPoint { bucket, key, count }).collect())
    }

    /// A time series of the tenant's counts.
    pub async fn stats(&self, tenant: &str, q: &StatsQuery) -> Result<Vec<SeriesPoint>> {
        let mut args: Vec<Value> = vec![
            Value::Text(tenant.to_owned()),
            Value::Integer(q.bucket_ms),
            Value::Integer(q.from),
            Value::Integer(q.to),
        ];
        // a param with too many values to count per value is answered from the events ([`super::params`])
        let counted = match (&q.param, &q.group_by) {
            (None, GroupBy::Param(name)) => !self.is_unbounded(tenant, name).await?,
            (Some((name, _)), GroupBy::None | GroupBy::EventType) if q.tu_id.is_none() => {
                !self.is_unbounded(tenant, name).await?
            }
            _ => true,
        };
        let mut push = |v: Value| {
            args.push(v);
            args.len().to_string()
        };
        let sql = match (&q.param, &q.group_by) {
            (None, GroupBy::Param(_)) if q.tu_id.is_some() => {
                return Err(StoreError::Rejected("tu_id cannot be combined with group_by=param:<key>".into()));
            }
            (None, GroupBy::Param(_)) if !counted => return self.stats_from_events(tenant, q).await,
            // counts per minute answer these directly
            (None, GroupBy::Param(name)) => {
                let mut sql = format!(
                    "SELECT (minute / ?2) * ?2 AS b, value, SUM(n) FROM hot_param_counts
                     WHERE key_prefix = ?1 AND name = ?{} AND minute >= ?3 AND minute < ?4",
                    push(Value::Text(name.clone()))
                );
                if let Some(et) = &q.event_type {
                    sql.push_str(&format!(" AND event_type = ?{}", push(Value::Text(et.clone()))));
                }
                sql.push_str(" GROUP BY b, value ORDER BY b, value");
                sql
            }
            (None, group) => {
                let key = match group {
                    GroupBy::EventType => "event_type",
                    GroupBy::Link => "tu_id",
                    _ => "NULL",
                };
                let mut sql = format!(
                    "SELECT (minute / ?2) * ?2 AS b, {key} AS k, SUM(n) FROM hot_counts
                     WHERE key_prefix = ?1 AND minute >= ?3 AND minute < ?4"
                );
                if let Some(et) = &q.event_type {
                    sql.push_str(&format!(" AND event_type = ?{}", push(Value::Text(et.clone()))));
                }
                if let Some(tu) = &q.tu_id {
                    sql.push_str(&format!(" AND tu_id = ?{}", push(Value::Text(tu.clone()))));
                }
                if *group == GroupBy::Link {
                    sql.push_str(" AND tu_id != ''");
                }
                sql.push_str(" GROUP BY b, k ORDER BY b, k");
                sql
            }
            // a param filter with no other condition: the param counts
            (Some((name, value)), GroupBy::None | GroupBy::EventType) if q.tu_id.is_none() && counted => {
                let key = if q.group_by == GroupBy::EventType { "event_type" } else { "NULL" };
                let mut sql = format!(
                    "SELECT (minute / ?2) * ?2 AS b, {key} AS k, SUM(n) FROM hot_param_counts
                     WHERE key_prefix = ?1 AND name = ?{} AND value = ?{} AND minute >= ?3 AND minute < ?4",
                    push(Value::Text(name.clone())),
                    push(Value::Text(value.clone()))
                );
                if let Some(et) = &q.event_type {
                    sql.push_str(&format!(" AND event_type = ?{}", push(Value::Text(et.clone()))));
                }
                sql.push_str(" GROUP BY b, k ORDER BY b, k");
                sql
            }
            // anything else with a param filter: from the recent events themselves
            (Some(_), _) => return self.stats_from_events(tenant, q).await,
        };
        let conn = self.db.conn().await?;
        let mut rows = conn.query(&sql, Params::Positional(args)).await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            if out.len() >= MAX_SERIES_ROWS {
                return Err(too_many_points());
            }
            let key = match row.get_value(1)? {
                Value::Text(s) => Some(s),
                _ => None,
            };
            out.push(SeriesPoint { bucket: int(&row, 0, "bucket")?, key, count: int(&row, 2, "count")? });
        }
        Ok(out)
    }
}

fn too_many_points() -> StoreError {
    StoreError::Rejected(format!(
        "the answer has more than {MAX_SERIES_ROWS} points: \
         narrow the time range, use interval=hour or another group_by"
    ))
}

/// Whether row `i` passes the listing's filters (event type, link, param).
fn matches(seg: &Segment, i: usize, event_type: Option<&str>, q: &EventQuery) -> bool {
    event_type.is_none_or(|et| seg.event_type(i) == et)
        && q.tu_id.as_deref().is_none_or(|tu| seg.tu_id(i) == tu)
        && q.param.as_ref().is_none_or(|(k, v)| seg.param(i, k) == Some(v.as_str()))
}
