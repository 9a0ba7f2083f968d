//! `/api/usage...`: what a tenant used (see `tracker_store::usage` for who counts what), its allowance this
//! month, an invoice preview, and the admin's view across tenants.
//!
//! Periods are UTC hours, days or calendar months of when the platform received the events; `from` and `to` are
//! ms since the epoch (`to` exclusive). Counters are summed over a period; gauges (`stored_bytes`) report their
//! latest value in it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracker_protocol::quota::{month_name, month_start, next_month_start, parse_month, ymd};
use tracker_store::usage::{GAUGES, METRICS, UsageRow, hour_of};
use tracker_store::{Plan, Tenant};

use super::{MAX_EXPIRY_MS, Principal, Query, json};
use crate::http::ApiError;
use crate::state::AppState;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Longest range of one report: 400 days (31 days at hourly granularity).
const MAX_DAYS: i64 = 400;
const MAX_HOURLY_DAYS: i64 = 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Granularity {
    Hour,
    Day,
    Month,
}

impl Granularity {
    fn start(self, ms: i64) -> i64 {
        match self {
            Granularity::Hour => hour_of(ms),
            Granularity::Day => ms.div_euclid(DAY_MS) * DAY_MS,
            Granularity::Month => month_start(ms),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Csv,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    from: Option<i64>,
    to: Option<i64>,
    granularity: Option<Granularity>,
    format: Option<Format>,
}

/// The range asked for: by default from the start of this month to the end of the current hour.
fn range(now: i64, from: Option<i64>, to: Option<i64>, max_days: i64) -> Result<(i64, i64), ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_range", m);
    for (name, v) in [("from", from), ("to", to)] {
        if v.is_some_and(|t| !(0..=MAX_EXPIRY_MS).contains(&t)) {
            return Err(bad(format!("{name} must be 0 to {MAX_EXPIRY_MS} (ms since the epoch)")));
        }
    }
    let to = to.unwrap_or(hour_of(now) + HOUR_MS);
    let from = from.unwrap_or(month_start(now).min(to - HOUR_MS));
    if from >= to {
        return Err(bad("from must be before to".into()));
    }
    if to - from > max_days * DAY_MS {
        return Err(bad(format!("the range may span at most {max_days} days")));
    }
    Ok((from, to))
}

/// Every counter of `tenant` (or every tenant) in `[from, to)`, from both stores.
async fn rows(state: &AppState, tenant: Option<&str>, from: i64, to: i64) -> Result<Vec<UsageRow>, ApiError> {
    let mut rows = state.outputs.hot.usage(tenant, from, to).await.map_err(super::events::hot_err)?;
    rows.extend(state.store.usage(tenant, from, to).await?);
    Ok(rows)
}

/// Metric totals, every metric present (zero when nothing was counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Totals(BTreeMap<&'static str, i64>);

impl Default for Totals {
    fn default() -> Self {
        Totals(METRICS.iter().map(|m| (*m, 0)).collect())
    }
}

impl Totals {
    /// Adds one hour's counter; rows must come in hour order for gauges to keep their latest value.
    fn add(&mut self, row: &UsageRow) {
        if let Some(metric) = METRICS.iter().find(|m| **m == row.metric)
            && let Some(v) = self.0.get_mut(metric)
        {
            if GAUGES.contains(metric) { *v = row.n } else { *v += row.n }
        }
    }

    fn get(&self, metric: &str) -> i64 {
        self.0.get(metric).copied().unwrap_or(0)
    }
}

fn sorted(mut rows: Vec<UsageRow>) -> Vec<UsageRow> {
    rows.sort_by(|a, b| (&a.key_prefix, a.hour).cmp(&(&b.key_prefix, b.hour)));
    rows
}

/// The tenant's allowance this month and what is used of it.
async fn allowance(state: &AppState, tenant: &Tenant, plan: &Plan, now: i64) -> Result<serde_json::Value, ApiError> {
    let month = month_start(now);
    let used = state.outputs.hot.quota_kept(&tenant.key_prefix, month).await.map_err(super::events::hot_err)?;
    let blocked = plan.block(used, now);
    Ok(serde_json::json!({
        "period": month_name(now),
        "allowance": plan.monthly_events,
        "used": used,
        "remaining": i64::try_from(plan.monthly_events).unwrap_or(i64::MAX).saturating_sub(used).max(0),
        "hard_cap": plan.hard_cap(),
        "blocked_until": blocked.map(|q| q.blocked_until),
        "resets_at": next_month_start(now),
    }))
}

/// `GET /api/usage`: the caller's usage per period, as JSON or CSV.
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let granularity = q.granularity.unwrap_or(Granularity::Day);
    let max_days = if granularity == Granularity::Hour { MAX_HOURLY_DAYS } else { MAX_DAYS };
    let (from, to) = range(state.clock.now_ms(), q.from, q.to, max_days)?;
    let rows = sorted(rows(&state, Some(&tenant.key_prefix), from, to).await?);
    let mut periods: BTreeMap<i64, Totals> = BTreeMap::new();
    let mut totals = Totals::default();
    // the hours in which events were dropped for the allowance: the quota period the drop ledger shows
    let mut quota_hours: Vec<i64> = Vec::new();
    for r in &rows {
        periods.entry(granularity.start(r.hour)).or_default().add(r);
        totals.add(r);
        if r.metric == "dropped_quota" && r.n > 0 {
            quota_hours.push(r.hour);
        }
    }
    if q.format == Some(Format::Csv) {
        return Ok(csv(&tenant.key_prefix, granularity, &periods));
    }
    let plan = state.cfg.plan_of(tenant);
    let data: Vec<_> = periods
        .into_iter()
        .map(|(start, t)| {
            let mut row = serde_json::to_value(&t.0).unwrap_or_default();
            if let Some(obj) = row.as_object_mut() {
                obj.insert("period_start".into(), start.into());
            }
            row
        })
        .collect();
    let quota_drops = match (quota_hours.first(), quota_hours.last()) {
        (Some(first), Some(last)) => serde_json::json!({
            "events": totals.get("dropped_quota"),
            "from": first,
            "to": last + HOUR_MS,
        }),
        _ => serde_json::Value::Null,
    };
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "from": from,
            "to": to,
            "granularity": granularity_name(granularity),
            "plan": tenant.plan,
            "metrics": METRICS,
            "data": data,
            "totals": totals,
            "quota_drops": quota_drops,
            "allowance": allowance(&state, tenant, &plan, state.clock.now_ms()).await?,
        }),
    ))
}

fn granularity_name(g: Granularity) -> &'static str {
    match g {
        Granularity::Hour => "hour",
        Granularity::Day => "day",
        Granularity::Month => "month",
    }
}

/// The periods as CSV: `period_start` (ms), `period` (ISO 8601, UTC) and one column per metric.
fn csv(tenant: &str, granularity: Granularity, periods: &BTreeMap<i64, Totals>) -> Response {
    let mut out = String::from("period_start,period");
    for m in METRICS {
        out.push(',');
        out.push_str(m);
    }
    out.push('\n');
    for (start, t) in periods {
        let _ = write!(out, "{start},{}", iso(*start, granularity));
        for m in METRICS {
            let _ = write!(out, ",{}", t.get(m));
        }
        out.push('\n');
    }
    let mut res = (StatusCode::OK, out).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // the tenant is a key prefix ([a-z0-9_-]), safe in a header
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"usage-{tenant}.csv\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    res
}

/// A period's start as ISO 8601: `2026-11`, `2026-11-29` or `2026-11-29T13:00Z`.
fn iso(ms: i64, granularity: Granularity) -> String {
    let (y, m, d) = ymd(ms);
    match granularity {
        Granularity::Month => format!("{y:04}-{m:02}"),
        Granularity::Day => format!("{y:04}-{m:02}-{d:02}"),
        Granularity::Hour => format!("{y:04}-{m:02}-{d:02}T{:02}:00Z", ms.rem_euclid(DAY_MS) / HOUR_MS),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceParams {
    /// `YYYY-MM`; this month by default.
    period: Option<String>,
}

/// The invoice of one month: the plan's price, and the overage on billable (accepted) events.
fn invoice(plan_name: &str, plan: &Plan, period: &str, billable: i64) -> serde_json::Value {
    let billable = u64::try_from(billable).unwrap_or(0);
    let over = billable.saturating_sub(plan.monthly_events);
    let mut lines = vec![serde_json::json!({
        "description": format!("{plan_name} plan, {period}"),
        "quantity": 1,
        "amount_cents": plan.price_cents,
    })];
    if let Some(per_million) = plan.overage_cents_per_million {
        lines.push(serde_json::json!({
            "description": format!(
                "events over the {} included, at {per_million} cents per million",
                plan.monthly_events
            ),
            "quantity": over,
            "amount_cents": plan.price_cents(billable) - plan.price_cents,
        }));
    }
    serde_json::json!({
        "plan": plan_name,
        "period": period,
        "currency": "usd",
        "billable_events": billable,
        "allowance": plan.monthly_events,
        "hard_cap": plan.hard_cap(),
        "lines": lines,
        "total_cents": plan.price_cents(billable),
    })
}

/// `GET /api/usage/invoice`: what the month costs on the tenant's current plan (a preview until the month ends).
pub async fn invoice_preview(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<InvoiceParams>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let now = state.clock.now_ms();
    let from = match q.period.as_deref() {
        None => month_start(now),
        Some(name) => parse_month(name)
            .filter(|m| (0..=MAX_EXPIRY_MS).contains(m))
            .ok_or_else(|| ApiError::bad_request("invalid_period", "period must be a month as YYYY-MM"))?,
    };
    let to = next_month_start(from);
    let mut accepted = 0;
    for r in rows(&state, Some(&tenant.key_prefix), from, to).await? {
        if r.metric == "accepted" {
            accepted += r.n;
        }
    }
    let plan = state.cfg.plan_of(tenant);
    let mut answer = invoice(&tenant.plan, &plan, &month_name(from), accepted);
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("from".into(), from.into());
        obj.insert("to".into(), to.into());
        obj.insert("final".into(), (to <= now).into());
    }
    Ok(json(StatusCode::OK, &answer))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminParams {
    from: Option<i64>,
    to: Option<i64>,
}

/// `GET /api/admin/usage`: every tenant's totals in the range (admin credential).
pub async fn admin(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<AdminParams>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let (from, to) = range(state.clock.now_ms(), q.from, q.to, MAX_DAYS)?;
    let mut by_tenant: BTreeMap<String, Totals> = BTreeMap::new();
    for r in sorted(rows(&state, None, from, to).await?) {
        by_tenant.entry(r.key_prefix.clone()).or_default().add(&r);
    }
    let tenants = state.store.list_tenants().await?;
    let plans: BTreeMap<&str, &str> = tenants.iter().map(|t| (t.key_prefix.as_str(), t.plan.as_str())).collect();
    let data: Vec<_> = by_tenant
        .into_iter()
        .map(|(key_prefix, totals)| {
            serde_json::json!({
                "key_prefix": key_prefix,
                "plan": plans.get(key_prefix.as_str()),
                "totals": totals,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "from": from, "to": to, "metrics": METRICS, "data": data })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_named_in_iso_8601() {
        // 2026-11-29T13:20:00Z
        let t = 1_796_083_200_000 - 2 * DAY_MS + 13 * HOUR_MS + 20 * 60_000;
        assert_eq!(iso(Granularity::Hour.start(t), Granularity::Hour), "2026-11-29T13:00Z");
        assert_eq!(iso(Granularity::Day.start(t), Granularity::Day), "2026-11-29");
        assert_eq!(iso(Granularity::Month.start(t), Granularity::Month), "2026-11");
    }

    #[test]
    fn gauges_keep_their_latest_value_and_counters_add_up() {
        let row = |hour, metric: &str, n| UsageRow { key_prefix: "a".into(), hour, metric: metric.into(), n };
        let mut t = Totals::default();
        for r in [row(0, "accepted", 5), row(0, "stored_bytes", 100), row(1, "accepted", 7), row(1, "stored_bytes", 90)]
        {
            t.add(&r);
        }
        t.add(&row(1, "not_a_metric", 1));
        assert_eq!((t.get("accepted"), t.get("stored_bytes"), t.get("redirects")), (12, 90, 0));
        assert_eq!(t.0.len(), METRICS.len());
    }

    #[test]
    fn an_invoice_bills_the_plan_and_the_overage() {
        let plans = tracker_store::Plans::default();
        let pro = plans.get("pro").unwrap_or_else(|| unreachable!());
        let inv = invoice("pro", pro, "2026-11", 51_500_000);
        assert_eq!(inv.get("total_cents"), Some(&serde_json::json!(10_200)));
        assert_eq!(inv.pointer("/lines/1/quantity"), Some(&serde_json::json!(1_500_000)));
        assert_eq!(inv.pointer("/lines/1/amount_cents"), Some(&serde_json::json!(300)));
        let free = plans.get("free").unwrap_or_else(|| unreachable!());
        let inv = invoice("free", free, "2026-11", 2_000_000);
        assert_eq!(inv.get("total_cents"), Some(&serde_json::json!(0)));
        assert_eq!(inv.get("lines").and_then(|l| l.as_array()).map(Vec::len), Some(1));
    }
}
