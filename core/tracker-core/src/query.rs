//! Typed queries ([`tracker_query::Query`], asked with `POST /api/query`) routed to the hot, warm or cold tier.
//!
//! - **Hot** is the stats consumer's database in this node: counts per minute for `HOT_COUNTS_RETENTION_DAYS`,
//!   events for `HOT_RETENTION_HOURS`. It answers series and breakdowns.
//! - **Warm** and **cold** are the query functions over the archive: in-process over `ARCHIVE_URL` (the
//!   embedded default), or the Lambda function at `QUERY_URL`, signed with `QUERY_SECRET`.
//!
//! `tier` picks one (`hot`, `warm`, `cold`) or leaves it to the node (`auto`, the default): the tenant's plan
//! says which tiers it may use, the hot tier answers what lies after its **watermark** (the start of its
//! retention, rounded up to the bucket), and the archive answers what lies before it, warm when the rollups can
//! hold the answer and cold otherwise. The two halves are disjoint time ranges, so nothing is counted twice. The
//! answer says who answered (`"tier": "warm+hot"`, with `watermark`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
#[cfg(feature = "query-engines")]
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
#[cfg(feature = "query-engines")]
use tracker_query::router::Engines;
use tracker_query::router::{QueryRequest, Refusal, Tier};
use tracker_query::{Filters, Interval, Query, SeriesGroup};
use tracker_store::StoreError;
use tracker_store::hot::{GroupBy, StatsQuery};

use crate::config::Config;
use crate::state::{AppState, now_ms};

/// Why a query was not answered (the platform API's handler, `http::api::query`, says it over HTTP).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The asked tier cannot answer this kind of query or range.
    #[error("{0}")]
    CannotAnswer(String),
    /// The platform keeps no archive.
    #[error("{0}")]
    TierUnavailable(String),
    /// The tenant's plan does not query the tier needed.
    #[error("{0}")]
    NotInPlan(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Timeout(String),
    /// The query functions failed on it.
    #[error("{0}")]
    Failed(String),
    /// The query functions at `QUERY_URL` did not answer.
    #[error("the query functions did not answer: try again")]
    Unavailable,
    /// The hot tier (too large a scan is `StoreError::Rejected`).
    #[error(transparent)]
    Hot(#[from] StoreError),
}

impl From<Refusal> for QueryError {
    fn from(r: Refusal) -> Self {
        match r.code {
            "invalid_query" => QueryError::Invalid(r.message),
            "tier_cannot_answer" => QueryError::CannotAnswer(r.message),
            "answer_too_large" => QueryError::TooLarge(r.message),
            "query_timeout" => QueryError::Timeout(r.message),
            _ => QueryError::Failed(r.message),
        }
    }
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// Most points a series answer lists (the query functions' own limit).
const MAX_POINTS: usize = 100_000;
/// Groups each half of a merged breakdown lists (the most a breakdown may ask for): the merged ranking is exact
/// when the tenant has no more groups than this in the range.
const MAX_MERGED_GROUPS: usize = 1000;

/// Where the warm and cold tiers are.
#[derive(Debug)]
pub enum ArchiveTiers {
    /// In this process, over the node's archive (the embedded default).
    #[cfg(feature = "query-engines")]
    Local(Arc<Engines>),
    /// The query functions behind `QUERY_URL`.
    Remote { url: String, secret: Vec<u8>, client: reqwest::Client },
    /// `ARCHIVE_URL=off` and no `QUERY_URL`: only the hot tier.
    Off,
}

impl ArchiveTiers {
    pub fn from_config(cfg: &Config) -> Result<ArchiveTiers, String> {
        match (&cfg.query.url, &cfg.consumers.archive) {
            (Some(url), _) => {
                let secret = cfg.query.secret.clone().ok_or("QUERY_SECRET is required with QUERY_URL")?.into_inner();
                let client = reqwest::Client::builder()
                    .timeout(cfg.query.timeout + Duration::from_secs(5))
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(ArchiveTiers::Remote { url: format!("{}/v1/query", url.trim_end_matches('/')), secret, client })
            }
            #[cfg(feature = "query-engines")]
            (None, Some(settings)) => {
                Ok(ArchiveTiers::Local(Arc::new(Engines::new(settings.clone(), cfg.query.timeout))))
            }
            #[cfg(not(feature = "query-engines"))]
            (None, Some(_)) => Err("this node is built without the query engines (the `query-engines` feature): \
                set QUERY_URL to the query functions, or ARCHIVE_URL=off for the hot tier only"
                .into()),
            (None, None) => Ok(ArchiveTiers::Off),
        }
    }

    /// `query` for `tenant` on `tier`.
    pub async fn answer(&self, tenant: &str, tier: Tier, query: &Query) -> Result<Value, QueryError> {
        match self {
            #[cfg(feature = "query-engines")]
            ArchiveTiers::Local(engines) => Ok(engines.answer(tenant, tier, query).await?),
            ArchiveTiers::Remote { url, secret, client } => {
                let request = QueryRequest { tenant: tenant.to_owned(), tier, query: query.clone() };
                let body = serde_json::to_vec(&request).map_err(|e| QueryError::Invalid(e.to_string()))?;
                let now = now_ms();
                let signature = tracker_protocol::intake::sign_query(secret, now, &body).unwrap_or_default();
                let unavailable = |e: String| {
                    tracing::error!(error = %e, "query functions failed");
                    QueryError::Unavailable
                };
                let res = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header(tracker_protocol::intake::TIMESTAMP_HEADER, now.to_string())
                    .header(tracker_protocol::intake::SIGNATURE_HEADER, signature)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                let status = res.status();
                let answer: Value = res.json().await.map_err(|e| unavailable(e.to_string()))?;
                if status.is_success() {
                    return Ok(answer);
                }
                // the function's own refusals reach the caller as they are; its failures are ours to report
                let code = at(at(&answer, "error"), "code").as_str().unwrap_or_default();
                let message = at(at(&answer, "error"), "message").as_str().unwrap_or_default().to_owned();
                match (status.as_u16(), code) {
                    (400, "invalid_query") => Err(QueryError::Invalid(message)),
                    (400, "tier_cannot_answer") => Err(QueryError::CannotAnswer(message)),
                    (413, _) => Err(QueryError::TooLarge(message)),
                    (504, _) => Err(QueryError::Timeout(message)),
                    _ => Err(unavailable(format!("{status}: {answer}"))),
                }
            }
            ArchiveTiers::Off => Err(QueryError::TierUnavailable(
                "this platform keeps no archive (ARCHIVE_URL=off): only the hot tier answers".into(),
            )),
        }
    }
}

/// The tier a query asks for (`auto`: the node picks, see the module's documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    #[default]
    Auto,
    Hot,
    Warm,
    Cold,
}

impl Choice {
    fn name(self) -> &'static str {
        match self {
            Choice::Auto => "auto",
            Choice::Hot => "hot",
            Choice::Warm => "warm",
            Choice::Cold => "cold",
        }
    }
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Warm => "warm",
        Tier::Cold => "cold",
    }
}

/// Answers `q` for `tenant` from the tier `choice` names (or the tiers `auto` picks), within the tenant's plan,
/// and meters it in the tenant's usage.
pub async fn answer(
    state: &AppState,
    tenant: &tracker_store::Tenant,
    choice: Choice,
    q: Query,
) -> Result<Value, QueryError> {
    q.validate().map_err(|e| QueryError::Invalid(e.to_string()))?;
    let allowed = state.cfg.plan_of(tenant).query_tiers;
    let may = |c: Choice| allowed.iter().any(|t| t == c.name());
    if choice != Choice::Auto && !may(choice) {
        return Err(QueryError::NotInPlan(format!(
            "the {} plan queries the {} tiers",
            tenant.plan,
            allowed.join(", ")
        )));
    }
    let unbounded = state.outputs.hot.unbounded_params(&tenant.key_prefix).await?;
    let floor = state.outputs.hot.floor(&tenant.key_prefix).await?;
    let watermark = hot_watermark(&state.cfg, &q, &unbounded, floor, state.clock.now_ms());
    let key = tenant.key_prefix.as_str();
    let mut answer = match choice {
        Choice::Hot => {
            if let Some(reason) = hot_refusal(&q) {
                return Err(QueryError::CannotAnswer(reason.into()));
            }
            if q.filters().from < watermark {
                return Err(QueryError::CannotAnswer(format!(
                    "the hot tier holds this query's data from {watermark} on: ask the warm or cold tier"
                )));
            }
            with_tier(hot(state, key, &q).await?, "hot")
        }
        Choice::Warm => with_tier(state.queries.answer(key, Tier::Warm, &q).await?, "warm"),
        Choice::Cold => with_tier(state.queries.answer(key, Tier::Cold, &q).await?, "cold"),
        Choice::Auto => {
            let filters = q.filters();
            let hot_ok = may(Choice::Hot) && hot_refusal(&q).is_none();
            if hot_ok && filters.from >= watermark {
                with_tier(hot(state, key, &q).await?, "hot")
            } else {
                // the archive answers before the watermark; the hot tier after it, when it can
                let split = hot_ok && filters.to > watermark && !has_distinct(&q);
                // a merged breakdown ranks the groups of both halves, so each half lists as many as it may
                let halves = if split { with_top(&q, MAX_MERGED_GROUPS) } else { q.clone() };
                let archived_part = if split { with_range(&halves, filters.from, watermark) } else { q.clone() };
                let tier = if may(Choice::Warm) && tracker_query::warm_refusal(&archived_part).is_none() {
                    Tier::Warm
                } else if may(Choice::Cold) {
                    Tier::Cold
                } else {
                    return Err(QueryError::NotInPlan(format!(
                        "answering this needs the cold tier, and the {} plan queries the {} tiers",
                        tenant.plan,
                        allowed.join(", ")
                    )));
                };
                let archived = state.queries.answer(key, tier, &archived_part).await?;
                if split {
                    let recent = hot(state, key, &with_range(&halves, watermark, filters.to)).await?;
                    let mut merged = merge(&q, archived, recent);
                    put(&mut merged, "tier", json!(format!("{}+hot", tier_name(tier))));
                    put(&mut merged, "watermark", json!(watermark));
                    merged
                } else {
                    with_tier(archived, tier_name(tier))
                }
            }
        }
    };
    put(&mut answer, "query", json!({ "from": q.filters().from, "to": q.filters().to }));
    meter(state, key, &answer).await;
    Ok(answer)
}

/// Counts an answered query in the tenant's usage: one query per tier that answered part of it, and the bytes
/// the archive read.
async fn meter(state: &AppState, tenant: &str, answer: &Value) {
    let now = state.clock.now_ms();
    let mut usage = tracker_store::usage::UsageDelta::default();
    let tiers = answer.get("tier").and_then(Value::as_str).unwrap_or_default();
    for tier in tiers.split('+') {
        let metric = match tier {
            "hot" => "queries_hot",
            "warm" => "queries_warm",
            "cold" => "queries_cold",
            _ => continue,
        };
        usage.add(tenant, now, metric, 1);
    }
    let read = answer.pointer("/scanned/bytes_read").and_then(Value::as_i64).unwrap_or(0);
    usage.add(tenant, now, "bytes_scanned", read);
    if let Err(e) = state.outputs.hot.add_usage(&usage).await {
        tracing::warn!(error = %e, tenant, "query not metered");
    }
}

fn with_tier(mut answer: Value, tier: &str) -> Value {
    put(&mut answer, "tier", json!(tier));
    answer
}

fn has_distinct(q: &Query) -> bool {
    matches!(q, Query::Breakdown { distinct: Some(_), .. })
}

fn with_top(q: &Query, groups: usize) -> Query {
    let mut q = q.clone();
    if let Query::Breakdown { top, .. } = &mut q {
        *top = Some(groups);
    }
    q
}

fn with_range(q: &Query, from: i64, to: i64) -> Query {
    let mut q = q.clone();
    let f = match &mut q {
        Query::Events { filters, .. }
        | Query::Series { filters, .. }
        | Query::Breakdown { filters, .. }
        | Query::Match { filters, .. } => filters,
    };
    f.from = from;
    f.to = to;
    q
}

/// Whether the query reads the hot tier's events (kept for hours) rather than its counts (kept for days): with a
/// param and another condition, or on a param the tenant sends too many values of to count (`unbounded`).
fn reads_hot_events(f: &Filters, group: Option<&SeriesGroup>, unbounded: &BTreeSet<String>) -> bool {
    match f.params.keys().next() {
        Some(name) => {
            unbounded.contains(name)
                || f.tu_id.is_some()
                || matches!(group, Some(SeriesGroup::Link | SeriesGroup::Param(_)))
        }
        None => matches!(group, Some(SeriesGroup::Param(name)) if unbounded.contains(name)),
    }
}

/// Where the hot tier's data for `q` starts: its retention before `now` and, for what it reads from the events,
/// after the latest event time it deleted (`floor`: segments go whole, and before their time when they take too
/// much disk), rounded up to the query's bucket so that no bucket is split between tiers.
fn hot_watermark(cfg: &Config, q: &Query, unbounded: &BTreeSet<String>, floor: Option<i64>, now: i64) -> i64 {
    let (group, bucket) = match q {
        Query::Series { group_by, interval, .. } => (group_by.as_ref(), interval_ms(*interval)),
        Query::Breakdown { by, .. } => (Some(by), HOUR_MS),
        Query::Events { .. } | Query::Match { .. } => (None, HOUR_MS),
    };
    let s = &cfg.consumers;
    let events = reads_hot_events(&q.filters(), group, unbounded);
    let kept = if events { s.hot_events_retention } else { s.hot_counts_retention };
    let mut start = now.saturating_sub(i64::try_from(kept.as_millis()).unwrap_or(i64::MAX));
    if let (true, Some(floor)) = (events, floor) {
        start = start.max(floor);
    }
    // a bucket is whole on one side: the first bucket that starts at or after the retention's start
    start.div_euclid(bucket).saturating_add(1).saturating_mul(bucket)
}

fn interval_ms(i: Interval) -> i64 {
    match i {
        Interval::Minute => MINUTE_MS,
        Interval::Hour => HOUR_MS,
        Interval::Day => DAY_MS,
    }
}

/// Why the hot tier cannot answer `q`, or `None`.
fn hot_refusal(q: &Query) -> Option<&'static str> {
    let (f, group) = match q {
        Query::Series { filters, group_by, .. } => (filters, group_by.as_ref()),
        Query::Breakdown { filters, by, distinct, .. } => {
            if distinct.is_some() {
                return Some("the hot tier keeps counts: distinct counts are the cold tier's");
            }
            (filters, Some(by))
        }
        Query::Events { .. } | Query::Match { .. } => {
            return Some(
                "the hot tier lists and matches events at GET /api/events and GET /api/events/match; \
                 here they are the cold tier's",
            );
        }
    };
    if f.event_types.len() > 1 || f.params.len() > 1 {
        return Some("the hot tier filters on at most one event type and one param");
    }
    if f.from.rem_euclid(MINUTE_MS) != 0 || f.to.rem_euclid(MINUTE_MS) != 0 {
        return Some("the hot tier counts per minute: from and to must be on the minute");
    }
    if matches!(group, Some(SeriesGroup::Param(_))) && f.tu_id.is_some() && f.params.is_empty() {
        return Some("the hot tier cannot group by a param within one link");
    }
    None
}

/// One `(bucket start, group, count)` per point, in the archive's order: by time, then group (none first).
type Points = Vec<(i64, Option<String>, i64)>;

fn by_time_then_group(a: &(i64, Option<String>, i64), b: &(i64, Option<String>, i64)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1))
}

/// The hot tier's counts for `f` per `bucket_ms`, grouped as the archive groups them: events without a link or
/// without the param form the `null` group.
async fn hot_points(
    state: &AppState,
    tenant: &str,
    f: &Filters,
    bucket_ms: i64,
    group: Option<&SeriesGroup>,
) -> Result<Points, QueryError> {
    let stats = |group_by: GroupBy| StatsQuery {
        from: f.from,
        to: f.to,
        bucket_ms,
        group_by,
        event_type: f.event_types.first().cloned(),
        tu_id: f.tu_id.clone(),
        param: f.params.iter().next().map(|(k, v)| (k.clone(), v.clone())),
    };
    let hot = &state.outputs.hot;
    let all = hot.stats(tenant, &stats(GroupBy::None)).await?;
    let mut points: Points = match group {
        None => all.iter().map(|p| (p.bucket, None, p.count)).collect(),
        Some(SeriesGroup::Date) => {
            all.iter().map(|p| (p.bucket, Some(tracker_archive::date_of(p.bucket)), p.count)).collect()
        }
        Some(SeriesGroup::EventType) => {
            let rows = hot.stats(tenant, &stats(GroupBy::EventType)).await?;
            rows.into_iter().map(|p| (p.bucket, p.key, p.count)).collect()
        }
        Some(g @ (SeriesGroup::Link | SeriesGroup::Param(_))) => {
            let by = match g {
                SeriesGroup::Param(k) => GroupBy::Param(k.clone()),
                _ => GroupBy::Link,
            };
            let rows = hot.stats(tenant, &stats(by)).await?;
            let mut grouped: BTreeMap<i64, i64> = BTreeMap::new();
            let mut points: Points = Vec::with_capacity(rows.len());
            for p in rows {
                *grouped.entry(p.bucket).or_default() += p.count;
                points.push((p.bucket, p.key.filter(|k| !k.is_empty()), p.count));
            }
            for p in &all {
                let rest = p.count - grouped.get(&p.bucket).copied().unwrap_or(0);
                if rest > 0 {
                    points.push((p.bucket, None, rest));
                }
            }
            points
        }
    };
    points.sort_by(by_time_then_group);
    Ok(points)
}

/// The hot tier's answer to a series or breakdown, in the archive's answer shape.
async fn hot(state: &AppState, tenant: &str, q: &Query) -> Result<Value, QueryError> {
    match q {
        Query::Series { filters, interval, group_by } => {
            let points = hot_points(state, tenant, filters, interval_ms(*interval), group_by.as_ref()).await?;
            Ok(series(points, group_by.is_some()))
        }
        Query::Breakdown { filters, by, top, .. } => {
            let points = hot_points(state, tenant, filters, DAY_MS, Some(by)).await?;
            let mut groups: BTreeMap<Option<String>, i64> = BTreeMap::new();
            for (_, g, n) in points {
                *groups.entry(g).or_default() += n;
            }
            Ok(breakdown(groups, top.unwrap_or(10)))
        }
        Query::Events { .. } | Query::Match { .. } => {
            Err(QueryError::CannotAnswer(hot_refusal(q).unwrap_or_default().into()))
        }
    }
}

fn series(mut points: Points, grouped: bool) -> Value {
    let truncated = points.len() > MAX_POINTS;
    points.truncate(MAX_POINTS);
    let points: Vec<Value> = points
        .into_iter()
        .map(|(t, g, n)| {
            let mut point = Map::new();
            point.insert("t".into(), json!(t));
            if grouped {
                point.insert("group".into(), json!(g));
            }
            point.insert("count".into(), json!(n));
            Value::Object(point)
        })
        .collect();
    json!({ "points": points, "truncated": truncated })
}

/// Groups largest first (ties by group, none first), the first `top` listed and the rest as `other`.
fn breakdown(groups: BTreeMap<Option<String>, i64>, top: usize) -> Value {
    let total: i64 = groups.values().sum();
    let mut rows: Vec<(Option<String>, i64)> = groups.into_iter().filter(|(_, n)| *n > 0).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(top);
    let listed: i64 = rows.iter().map(|(_, n)| n).sum();
    let groups: Vec<Value> = rows.into_iter().map(|(g, n)| json!({ "group": g, "count": n })).collect();
    let other = if total > listed { json!({ "count": total - listed }) } else { Value::Null };
    json!({ "groups": groups, "other": other, "total": total })
}

fn text_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// `v[key]`, or `null` (without the index operator's panic on non-objects).
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

/// Sets `v[key]` when `v` is an object (every answer is).
fn put(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}

/// The archive's answer before the watermark and the hot tier's after it, as one answer.
fn merge(q: &Query, archived: Value, recent: Value) -> Value {
    let scanned = at(&archived, "scanned").clone();
    let int = |v: &Value, key: &str| at(v, key).as_i64().unwrap_or(0);
    let list = |v: &Value, key: &str| at(v, key).as_array().cloned().unwrap_or_default();
    let mut merged = match q {
        Query::Series { group_by, .. } => {
            let mut points: Points = Vec::new();
            for answer in [&archived, &recent] {
                for p in list(answer, "points") {
                    points.push((int(&p, "t"), text_of(at(&p, "group")), int(&p, "count")));
                }
            }
            points.sort_by(by_time_then_group);
            let truncated = [&archived, &recent].iter().any(|a| at(a, "truncated").as_bool().unwrap_or(false));
            let mut answer = series(points, group_by.is_some());
            if truncated {
                put(&mut answer, "truncated", json!(true));
            }
            answer
        }
        Query::Breakdown { top, .. } => {
            // each half lists up to MAX_MERGED_GROUPS groups and sums the rest as `other`: the merged ranking
            // comes from both lists, the total stays exact, and `other` is what the listed groups do not cover
            let mut groups: BTreeMap<Option<String>, i64> = BTreeMap::new();
            let mut total = 0;
            for answer in [&archived, &recent] {
                for g in list(answer, "groups") {
                    *groups.entry(text_of(at(&g, "group"))).or_default() += int(&g, "count");
                }
                total += int(answer, "total");
            }
            let mut answer = breakdown(groups, top.unwrap_or(10));
            let listed: i64 = list(&answer, "groups").iter().map(|g| int(g, "count")).sum();
            put(&mut answer, "total", json!(total));
            put(&mut answer, "other", if total > listed { json!({ "count": total - listed }) } else { Value::Null });
            answer
        }
        Query::Events { .. } | Query::Match { .. } => archived,
    };
    put(&mut merged, "scanned", scanned);
    merged
}
