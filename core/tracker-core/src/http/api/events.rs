//! `/api/events...` and `/api/drops...`: the hot tier's answers (the stats and filter consumers' output), scoped
//! to the caller's tenant. Every answer says which tier answered (`"tier": "hot"`); warm and cold history come
//! with the query functions.
//!
//! Times are milliseconds since the epoch: `from` (inclusive) and `to` (exclusive), or `hours` back from now
//! (the replaced system's `hours=48`). Param keys and values only ever reach the store as bound parameters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracker_store::StoreError;
use tracker_store::hot::{EventQuery, GroupBy, MatchQuery, StatsQuery};

use super::{MAX_EXPIRY_MS, Principal, Query, json};
use crate::http::ApiError;
use crate::state::AppState;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// The time range of a query: `from`/`to`, or `hours` back from now; `default_hours` when neither is given.
#[derive(Debug, Deserialize, Default)]
struct Range {
    from: Option<i64>,
    to: Option<i64>,
    hours: Option<i64>,
}

impl Range {
    fn resolve(&self, now: i64, default_hours: i64, max_days: i64) -> Result<(i64, i64), ApiError> {
        let bad = |m: String| ApiError::bad_request("invalid_range", m);
        for (name, v) in [("from", self.from), ("to", self.to)] {
            if v.is_some_and(|t| !(0..=MAX_EXPIRY_MS).contains(&t)) {
                return Err(bad(format!("{name} must be 0 to {MAX_EXPIRY_MS} (ms since the epoch)")));
            }
        }
        let to = self.to.unwrap_or(now + 60_000);
        let from = match (self.from, self.hours) {
            (Some(_), Some(_)) => return Err(bad("give from or hours, not both".into())),
            (Some(f), None) => f,
            (None, Some(h)) if (1..=max_days * 24).contains(&h) => to - h * HOUR_MS,
            (None, Some(_)) => return Err(bad(format!("hours must be 1 to {}", max_days * 24))),
            (None, None) => to - default_hours * HOUR_MS,
        };
        if from >= to {
            return Err(bad("from must be before to".into()));
        }
        if to - from > max_days * DAY_MS {
            return Err(bad(format!("the range may span at most {max_days} days")));
        }
        Ok((from, to))
    }
}

fn param_filter(key: Option<String>, value: Option<String>) -> Result<Option<(String, String)>, ApiError> {
    match (key, value) {
        (None, None) => Ok(None),
        (Some(k), Some(v)) if !k.is_empty() && k.len() <= 256 && v.len() <= 2048 => Ok(Some((k, v))),
        _ => Err(ApiError::bad_request(
            "invalid_param_filter",
            "param_key and param_value go together (key 1 to 256 bytes, value up to 2048)",
        )),
    }
}

fn short_text(field: &'static str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.len() > 256 => {
            Err(ApiError::bad_request("invalid_query", format!("{field} must be 1 to 256 bytes")))
        }
        other => Ok(other),
    }
}

/// A hot-tier failure as an API error: a query the store refuses as too large is the caller's 400.
pub(crate) fn hot_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Rejected(reason) => ApiError::bad_request("query_too_large", reason),
        other => ApiError::from(other),
    }
}

fn raw(body: String) -> Box<RawValue> {
    RawValue::from_string(body).unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    event_type: Option<String>,
    tu_id: Option<String>,
    param_key: Option<String>,
    param_value: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    hours: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /api/events`: the tenant's recent events, newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit must be 1 to 1000"));
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => {
            let parsed = c.split_once('_').and_then(|(t, s)| Some((t.parse().ok()?, s.parse().ok()?)));
            Some(parsed.ok_or_else(|| ApiError::bad_request("invalid_cursor", "not a cursor this route returned"))?)
        }
    };
    let range = Range { from: q.from, to: q.to, hours: q.hours };
    let (from, to) = if range.from.is_none() && range.to.is_none() && range.hours.is_none() {
        (None, None)
    } else {
        let (f, t) = range.resolve(state.clock.now_ms(), 24, 400)?;
        (Some(f), Some(t))
    };
    let query = EventQuery {
        event_type: short_text("event_type", q.event_type)?,
        from,
        to,
        tu_id: short_text("tu_id", q.tu_id)?,
        param: param_filter(q.param_key, q.param_value)?,
        before,
        limit,
    };
    let page = state.outputs.hot.events(&tenant.key_prefix, &query).await.map_err(hot_err)?;
    let data: Vec<Box<RawValue>> = page.events.into_iter().map(raw).collect();
    let next = page.next.map(|(ts, seq)| format!("{ts}_{seq}"));
    Ok(json(StatusCode::OK, &serde_json::json!({ "data": data, "next_cursor": next, "tier": "hot" })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    interval: Option<String>,
    group_by: Option<String>,
    event_type: Option<String>,
    tu_id: Option<String>,
    param_key: Option<String>,
    param_value: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    hours: Option<i64>,
}

/// `GET /api/events/stats`: counts per hour or minute, optionally grouped.
pub async fn stats(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<StatsParams>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let (bucket_ms, max_days, name) = match q.interval.as_deref().unwrap_or("hour") {
        "hour" => (HOUR_MS, 400, "hour"),
        "minute" => (60_000, 7, "minute"),
        _ => return Err(ApiError::bad_request("invalid_interval", "interval must be hour or minute")),
    };
    let (from, to) = Range { from: q.from, to: q.to, hours: q.hours }.resolve(state.clock.now_ms(), 24, max_days)?;
    let group_by = match q.group_by.as_deref() {
        None => GroupBy::None,
        Some("event_type") => GroupBy::EventType,
        Some("tu_id") => GroupBy::Link,
        Some(other) => match other.strip_prefix("param:") {
            Some(k) if !k.is_empty() && k.len() <= 256 => GroupBy::Param(k.to_owned()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_group_by",
                    "group_by must be event_type, tu_id or param:<key>",
                ));
            }
        },
    };
    // buckets start on their boundary
    let from = from.div_euclid(bucket_ms) * bucket_ms;
    let query = StatsQuery {
        from,
        to,
        bucket_ms,
        group_by: group_by.clone(),
        event_type: short_text("event_type", q.event_type)?,
        tu_id: short_text("tu_id", q.tu_id)?,
        param: param_filter(q.param_key, q.param_value)?,
    };
    let series = state.outputs.hot.stats(&tenant.key_prefix, &query).await.map_err(hot_err)?;
    let mut totals: BTreeMap<Option<String>, i64> = BTreeMap::new();
    for point in &series {
        *totals.entry(point.key.clone()).or_default() += point.count;
    }
    let total: i64 = totals.values().sum();
    let mut totals: Vec<_> =
        totals.into_iter().map(|(key, count)| serde_json::json!({ "key": key, "count": count })).collect();
    totals.sort_by_key(|t| std::cmp::Reverse(t["count"].as_i64().unwrap_or(0)));
    let group = q.group_by.filter(|_| group_by != GroupBy::None);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "tier": "hot",
            "interval": name,
            "from": from,
            "to": to,
            "group_by": group,
            "series": series,
            "totals": totals,
            "total": total,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchParams {
    trigger: Option<String>,
    result: Option<String>,
    on: Option<String>,
    window_secs: Option<i64>,
    from: Option<i64>,
    to: Option<i64>,
    hours: Option<i64>,
    limit: Option<usize>,
}

/// `GET /api/events/match?trigger=&result=&on=`: each result paired with the latest earlier trigger that shares
/// the value of param `on`, within the window; never a result before its trigger, never a pair twice.
pub async fn matches(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<MatchParams>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let need = |v: Option<String>, name: &'static str| {
        short_text(name, v)?.ok_or_else(|| ApiError::bad_request("invalid_query", format!("{name} is required")))
    };
    let (trigger, result, on) = (need(q.trigger, "trigger")?, need(q.result, "result")?, need(q.on, "on")?);
    let window_secs = q.window_secs.unwrap_or(7 * 24 * 3600);
    if !(1..=90 * 24 * 3600).contains(&window_secs) {
        return Err(ApiError::bad_request("invalid_window", "window_secs must be 1 to 7776000 (90 days)"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit must be 1 to 1000"));
    }
    let (from, to) = Range { from: q.from, to: q.to, hours: q.hours }.resolve(state.clock.now_ms(), 7 * 24, 400)?;
    let query = MatchQuery { trigger, result, on, from, to, window_ms: window_secs * 1000, limit };
    let answer = state.outputs.hot.match_events(&tenant.key_prefix, &query).await.map_err(hot_err)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "tier": "hot",
            "trigger": query.trigger,
            "result": query.result,
            "on": query.on,
            "from": from,
            "to": to,
            "window_secs": window_secs,
            "pairs": answer.pairs,
            "summary": answer.summary,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropParams {
    reason: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    hours: Option<i64>,
}

/// `GET /api/drops`: the drop ledger, what the filter dropped or flagged per hour and reason (`bot`,
/// `rate_ip`, `rate_tenant`, or the id of the tenant's rule).
pub async fn drops(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<DropParams>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let (from, to) = Range { from: q.from, to: q.to, hours: q.hours }.resolve(state.clock.now_ms(), 24, 400)?;
    let reason = short_text("reason", q.reason)?;
    let rows = state.outputs.hot.drops(&tenant.key_prefix, from, to, reason.as_deref()).await.map_err(hot_err)?;
    let mut totals: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in &rows {
        *totals.entry((r.action.clone(), r.reason.clone())).or_default() += r.count;
    }
    let totals: Vec<_> = totals
        .into_iter()
        .map(|((action, reason), count)| serde_json::json!({ "action": action, "reason": reason, "count": count }))
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "from": from, "to": to, "data": rows, "totals": totals })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleParams {
    reason: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/drops/samples`: example events the filter dropped or flagged (up to ten per hour and reason kept).
pub async fn samples(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<SampleParams>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit must be 1 to 200"));
    }
    let reason = short_text("reason", q.reason)?;
    let rows = state.outputs.hot.drop_samples(&tenant.key_prefix, reason.as_deref(), limit).await.map_err(hot_err)?;
    let data: Vec<_> = rows
        .into_iter()
        .map(|(hour, action, reason, body)| {
            serde_json::json!({ "hour": hour, "action": action, "reason": reason, "event": raw(body) })
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "data": data })))
}
