//! Ledgers: the tenants' usage and quota (what billing and hard caps read) and the filter's drop ledger.

use libsql::Value;
use libsql::params::Params;
use serde::Serialize;

use super::{HOUR_MS, HotStore};
use crate::usage::{QuotaAlert, UsageDelta, UsageRow};
use crate::{Result, int, text};

/// One drop-ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRow {
    pub hour: i64,
    pub action: String,
    pub reason: String,
    pub count: i64,
}

impl HotStore {
    /// Billable events the filter kept for `tenant` in the month starting at `month`.
    pub async fn quota_kept(&self, tenant: &str, month: i64) -> Result<i64> {
        let conn = self.db.conn().await?;
        let mut rows =
            conn.query("SELECT kept FROM quota_months WHERE key_prefix = ?1 AND month = ?2", (tenant, month)).await?;
        match rows.next().await? {
            Some(row) => int(&row, 0, "kept"),
            None => Ok(0),
        }
    }

    /// Which of `ids` the filter already counted against `tenant`'s hard cap in the month starting at `month`.
    pub async fn quota_counted(&self, tenant: &str, month: i64, ids: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            // placeholders only (`?3, ?4, ...`): every id is a bound value
            let marks: Vec<String> = (0..chunk.len()).map(|i| format!("?{}", i + 3)).collect();
            let sql = format!(
                "SELECT event_id FROM quota_ids WHERE key_prefix = ?1 AND month = ?2 AND event_id IN ({})",
                marks.join(", ")
            );
            let mut params = vec![Value::Text(tenant.to_owned()), Value::Integer(month)];
            params.extend(chunk.iter().map(|id| Value::Text(id.clone())));
            let conn = self.db.conn().await?;
            let mut rows = conn.query(&sql, Params::Positional(params)).await?;
            while let Some(row) = rows.next().await? {
                out.push(text(&row, 0, "event_id")?);
            }
        }
        Ok(out)
    }

    /// Allowance crossings not yet turned into webhook deliveries, oldest first.
    pub async fn pending_alerts(&self, limit: u32) -> Result<Vec<QuotaAlert>> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT key_prefix, month, percent, allowance, at FROM quota_alerts WHERE notified = 0
                 ORDER BY at LIMIT ?1",
                [i64::from(limit)],
            )
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push(QuotaAlert {
                key_prefix: text(&row, 0, "key_prefix")?,
                month: int(&row, 1, "month")?,
                percent: int(&row, 2, "percent")?,
                allowance: int(&row, 3, "allowance")?,
                at: int(&row, 4, "at")?,
            });
        }
        Ok(out)
    }

    /// The alert's deliveries are queued.
    pub async fn alert_notified(&self, a: &QuotaAlert) -> Result<()> {
        self.db
            .conn()
            .await?
            .execute(
                "UPDATE quota_alerts SET notified = 1 WHERE key_prefix = ?1 AND month = ?2 AND percent = ?3",
                (a.key_prefix.as_str(), a.month, a.percent),
            )
            .await?;
        Ok(())
    }

    /// Adds usage outside a consumer's transaction (the API's own counters: queries, bytes scanned, refused
    /// batch elements, stored bytes).
    pub async fn add_usage(&self, delta: &UsageDelta) -> Result<()> {
        if delta.is_empty() {
            return Ok(());
        }
        let conn = self.db.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        crate::usage::apply(&tx, delta).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds usage once per `id` (a retried message with the same id adds nothing); `true` if it was added. Ids
    /// are kept for the counts' retention.
    pub async fn add_usage_once(&self, id: &str, delta: &UsageDelta, now_ms: i64) -> Result<bool> {
        let conn = self.db.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let new =
            tx.execute("INSERT INTO usage_marks (id, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING", (id, now_ms)).await?;
        if new > 0 {
            crate::usage::apply(&tx, delta).await?;
        }
        tx.commit().await?;
        Ok(new > 0)
    }

    /// The sum of `tenant`'s counter `metric` over hours in `[from, to)`.
    pub async fn usage_total(&self, tenant: &str, metric: &str, from: i64, to: i64) -> Result<i64> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT COALESCE(SUM(n), 0) FROM usage_hours
                 WHERE key_prefix = ?1 AND hour >= ?2 AND hour < ?3 AND metric = ?4",
                (tenant, from, to, metric),
            )
            .await?;
        match rows.next().await? {
            Some(row) => int(&row, 0, "sum"),
            None => Ok(0),
        }
    }

    /// The usage counters of `tenant` (every tenant when `None`) for hours in `[from, to)`.
    pub async fn usage(&self, tenant: Option<&str>, from: i64, to: i64) -> Result<Vec<UsageRow>> {
        let conn = self.db.conn().await?;
        crate::usage::read(&conn, tenant, from, to).await
    }

    /// The drop ledger: per hour, action and reason.
    pub async fn drops(&self, tenant: &str, from: i64, to: i64, reason: Option<&str>) -> Result<Vec<DropRow>> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT hour, action, reason, n FROM hot_drops WHERE key_prefix = ?1 AND hour >= ?2 AND hour < ?3
                   AND (?4 IS NULL OR reason = ?4) ORDER BY hour, action, reason",
                (tenant, from.div_euclid(HOUR_MS) * HOUR_MS, to, reason),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push(DropRow {
                hour: int(&row, 0, "hour")?,
                action: text(&row, 1, "action")?,
                reason: text(&row, 2, "reason")?,
                count: int(&row, 3, "n")?,
            });
        }
        Ok(out)
    }

    /// Sample events of the drop ledger, newest first: `(hour, action, reason, event JSON)`.
    pub async fn drop_samples(
        &self,
        tenant: &str,
        reason: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(i64, String, String, String)>> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT hour, action, reason, body FROM hot_drop_samples WHERE key_prefix = ?1
                   AND (?2 IS NULL OR reason = ?2) ORDER BY id DESC LIMIT ?3",
                (tenant, reason, i64::from(limit)),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push((
                int(&row, 0, "hour")?,
                text(&row, 1, "action")?,
                text(&row, 2, "reason")?,
                text(&row, 3, "body")?,
            ));
        }
        Ok(out)
    }
}
