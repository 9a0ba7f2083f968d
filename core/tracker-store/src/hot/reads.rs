//! What `/api/events` and `/api/events/stats` read: the recent events, newest first, and the counts as time
//! series.

use libsql::Value;
use libsql::params::Params;
use serde::Serialize;

use super::{HotStore, MAX_SERIES_ROWS};
use crate::{Result, StoreError, int, text};

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
    /// The tenant's events, newest first.
    pub async fn events(&self, tenant: &str, q: &EventQuery) -> Result<EventPage> {
        // fragments are constants; every value is bound
        let mut args: Vec<Value> = vec![Value::Text(tenant.to_owned())];
        let mut sql = String::from("SELECT e.ts, e.seq, e.body FROM ");
        let (t, s) = if let Some((k, v)) = &q.param {
            sql.push_str("hot_params p JOIN hot_events e ON e.seq = p.seq WHERE p.key_prefix = ?1 AND p.name = ?");
            args.push(Value::Text(k.clone()));
            sql.push_str(&args.len().to_string());
            sql.push_str(" AND p.value = ?");
            args.push(Value::Text(v.clone()));
            sql.push_str(&args.len().to_string());
            sql.push_str(" AND e.key_prefix = ?1");
            ("p.ts", "p.seq")
        } else {
            sql.push_str("hot_events e WHERE e.key_prefix = ?1");
            ("e.ts", "e.seq")
        };
        let mut bind = |sql: &mut String, cond: &str, v: Value| {
            args.push(v);
            sql.push_str(cond);
            sql.push_str(&args.len().to_string());
        };
        if let Some(et) = &q.event_type {
            bind(&mut sql, " AND e.event_type = ?", Value::Text(et.clone()));
        }
        if let Some(tu) = &q.tu_id {
            bind(&mut sql, " AND e.tu_id = ?", Value::Text(tu.clone()));
        }
        if let Some(from) = q.from {
            bind(&mut sql, &format!(" AND {t} >= ?"), Value::Integer(from));
        }
        if let Some(to) = q.to {
            bind(&mut sql, &format!(" AND {t} < ?"), Value::Integer(to));
        }
        if let Some((ts, seq)) = q.before {
            bind(&mut sql, &format!(" AND ({t}, {s}) < (?"), Value::Integer(ts));
            bind(&mut sql, ", ?", Value::Integer(seq));
            sql.push(')');
        }
        let limit = i64::from(q.limit.max(1));
        bind(&mut sql, &format!(" ORDER BY {t} DESC, {s} DESC LIMIT ?"), Value::Integer(limit + 1));
        let conn = self.db.conn().await?;
        let mut rows = conn.query(&sql, Params::Positional(args)).await?;
        let mut events = Vec::new();
        let mut last = None;
        let mut more = false;
        while let Some(row) = rows.next().await? {
            if events.len() as i64 == limit {
                more = true;
                break;
            }
            last = Some((int(&row, 0, "ts")?, int(&row, 1, "seq")?));
            events.push(text(&row, 2, "body")?);
        }
        Ok(EventPage { events, next: if more { last } else { None } })
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
            // counts per minute answer these directly, or the events for a param of too many values to count
            (None, GroupBy::Param(name)) => {
                // constant fragments only
                let (time, count, table) =
                    if counted { ("minute", "SUM(n)", "hot_param_counts") } else { ("ts", "COUNT(*)", "hot_params") };
                let mut sql = format!(
                    "SELECT ({time} / ?2) * ?2 AS b, value, {count} FROM {table}
                     WHERE key_prefix = ?1 AND name = ?{} AND {time} >= ?3 AND {time} < ?4",
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
            (Some((name, value)), group) => {
                let (key, join) = match group {
                    GroupBy::EventType => ("e.event_type", String::new()),
                    GroupBy::Link => ("e.tu_id", String::new()),
                    GroupBy::Param(other) => (
                        "g.value",
                        format!(
                            " JOIN hot_params g ON g.seq = p.seq AND g.name = ?{}",
                            push(Value::Text(other.clone()))
                        ),
                    ),
                    GroupBy::None => ("NULL", String::new()),
                };
                let mut sql = format!(
                    "SELECT (p.ts / ?2) * ?2 AS b, {key} AS k, COUNT(*) FROM hot_params p
                     JOIN hot_events e ON e.seq = p.seq{join}
                     WHERE p.key_prefix = ?1 AND p.name = ?{} AND p.value = ?{} AND p.ts >= ?3 AND p.ts < ?4",
                    push(Value::Text(name.clone())),
                    push(Value::Text(value.clone()))
                );
                if let Some(et) = &q.event_type {
                    sql.push_str(&format!(" AND e.event_type = ?{}", push(Value::Text(et.clone()))));
                }
                if let Some(tu) = &q.tu_id {
                    sql.push_str(&format!(" AND e.tu_id = ?{}", push(Value::Text(tu.clone()))));
                }
                if *group == GroupBy::Link {
                    sql.push_str(" AND e.tu_id != ''");
                }
                sql.push_str(" GROUP BY b, k ORDER BY b, k");
                sql
            }
        };
        let conn = self.db.conn().await?;
        let mut rows = conn.query(&sql, Params::Positional(args)).await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            if out.len() >= MAX_SERIES_ROWS {
                return Err(StoreError::Rejected(format!(
                    "the answer has more than {MAX_SERIES_ROWS} points: \
                     narrow the time range, use interval=hour or another group_by"
                )));
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
