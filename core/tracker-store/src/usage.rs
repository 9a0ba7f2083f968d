//! Metering: what each tenant used, per hour, as counters named by metric.
//!
//! | metric | counted by | once per |
//! |---|---|---|
//! | `accepted` | the stats consumer, for each event new to the hot tier | tenant and `event_id` |
//! | `imported` | the filter consumer, for each imported event it keeps (history, not billed) | raw log position |
//! | `unauthenticated` | the filter consumer, for each kept event that came without a credential | raw log position |
//! | `dropped_bot`, `_rule`, `_rate`, `_quota`, `_unauthenticated` | the filter, with its ledger | raw log position |
//! | `dropped_invalid` | `/batch` at a core node, or the edge's note of refused elements | request (edge: batch id) |
//! | `redirects` | the filter consumer, for each click a link answered (kept or not) | raw log position |
//! | `webhook_deliveries` | the dispatcher, with the delivery marked delivered (metadata store) | delivery |
//! | `queries_hot`, `queries_warm`, `queries_cold`, `bytes_scanned` | `/api/query` | query |
//! | `stored_bytes` | archive maintenance: the tenant's files in both tables at that hour (a gauge) | hour |
//!
//! The event counters are written in the transactions that move their consumer's position, so replays count
//! nothing twice and crashes lose nothing. Hours are UTC hours of `received_at` (when the platform took the
//! event), so a month's usage is fixed once the month is over, whatever timestamps clients sent. The filter also
//! keeps each tenant's billable events per month (`quota_months`), which its hard cap is judged against, and the
//! 80% and 100% crossings (`quota_alerts`) that the webhook consumer turns into deliveries.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Result, int, text};

/// Every metric, in the order reports list them.
pub const METRICS: &[&str] = &[
    "accepted",
    "imported",
    "unauthenticated",
    "dropped_bot",
    "dropped_rule",
    "dropped_rate",
    "dropped_quota",
    "dropped_unauthenticated",
    "dropped_invalid",
    "redirects",
    "webhook_deliveries",
    "queries_hot",
    "queries_warm",
    "queries_cold",
    "bytes_scanned",
    "stored_bytes",
];

/// Metrics that are levels at a time rather than sums over it: a period reports the latest.
pub const GAUGES: &[&str] = &["stored_bytes"];

pub(crate) const USAGE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS usage_hours (
    key_prefix TEXT NOT NULL,
    hour INTEGER NOT NULL,
    metric TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, hour, metric)
) STRICT;
"#;

/// The drop reason of events past their tenant's budget for events without a credential
/// ([`tracker_protocol::service::IntakeSettings`]).
pub const UNAUTHENTICATED_BUDGET: &str = "unauthenticated_budget";

/// The drop ledger's reason as a usage metric: `bot`, rate rules, the hard cap, or else a tenant rule's id.
pub fn drop_metric(reason: &str) -> &'static str {
    match reason {
        "bot" => "dropped_bot",
        "rate_ip" | "rate_tenant" => "dropped_rate",
        "quota" => "dropped_quota",
        UNAUTHENTICATED_BUDGET => "dropped_unauthenticated",
        _ => "dropped_rule",
    }
}

const HOUR_MS: i64 = 3_600_000;

/// The count at which `percent` of `allowance` is reached (rounded up).
pub fn threshold(allowance: i64, percent: i64) -> i64 {
    let t = (i128::from(allowance) * i128::from(percent) + 99) / 100;
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The hour (ms) holding `ms`.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// One counter of one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub key_prefix: String,
    pub hour: i64,
    pub metric: String,
    pub n: i64,
}

/// Counters to add, by tenant, hour and metric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDelta(pub BTreeMap<(String, i64, &'static str), i64>);

impl UsageDelta {
    pub fn add(&mut self, key_prefix: &str, at_ms: i64, metric: &'static str, n: i64) {
        if n != 0 {
            *self.0.entry((key_prefix.to_owned(), hour_of(at_ms), metric)).or_default() += n;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A crossing of 80% or 100% of a monthly allowance, found by the filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaAlert {
    pub key_prefix: String,
    /// The month's start (ms).
    pub month: i64,
    pub percent: i64,
    pub allowance: i64,
    /// `received_at` of the event that crossed it.
    pub at: i64,
}

/// Adds `delta` in `tx` (gauges are set, counters added).
pub(crate) async fn apply(tx: &libsql::Transaction, delta: &UsageDelta) -> Result<()> {
    for ((tenant, hour, metric), n) in &delta.0 {
        let sql = if GAUGES.contains(metric) {
            "INSERT INTO usage_hours (key_prefix, hour, metric, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET n = excluded.n"
        } else {
            "INSERT INTO usage_hours (key_prefix, hour, metric, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET n = n + excluded.n"
        };
        tx.execute(sql, (tenant.as_str(), *hour, *metric, *n)).await?;
    }
    Ok(())
}

/// The counters of `tenant` (or every tenant) for hours in `[from, to)`.
pub(crate) async fn read(conn: &libsql::Connection, tenant: Option<&str>, from: i64, to: i64) -> Result<Vec<UsageRow>> {
    let mut rows = conn
        .query(
            "SELECT key_prefix, hour, metric, n FROM usage_hours
             WHERE (?1 IS NULL OR key_prefix = ?1) AND hour >= ?2 AND hour < ?3 ORDER BY key_prefix, hour, metric",
            (tenant, hour_of(from), to),
        )
        .await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        out.push(UsageRow {
            key_prefix: text(&row, 0, "key_prefix")?,
            hour: int(&row, 1, "hour")?,
            metric: text(&row, 2, "metric")?,
            n: int(&row, 3, "n")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_round_up_and_never_overflow() {
        assert_eq!((threshold(20, 80), threshold(20, 100)), (16, 20));
        assert_eq!(threshold(3, 80), 3, "80% of 3 events is reached at the third");
        assert_eq!(threshold(1_000_000, 80), 800_000);
        assert_eq!(threshold(i64::MAX, 100), i64::MAX);
        assert!(threshold(i64::MAX, 80) < i64::MAX);
    }

    #[test]
    fn drop_reasons_map_onto_metrics() {
        assert_eq!(drop_metric("bot"), "dropped_bot");
        assert_eq!(drop_metric("rate_ip"), "dropped_rate");
        assert_eq!(drop_metric("quota"), "dropped_quota");
        assert_eq!(drop_metric("rule_0193"), "dropped_rule");
        let mut d = UsageDelta::default();
        d.add("a", 3_600_000 + 5, "accepted", 2);
        d.add("a", 3_600_000 + 9, "accepted", 1);
        d.add("a", 0, "accepted", 0);
        assert_eq!(d.0.into_iter().collect::<Vec<_>>(), [(("a".to_owned(), 3_600_000, "accepted"), 3)]);
    }
}
