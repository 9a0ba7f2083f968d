//! # The hot tier
//!
//! What the stats and filter consumers write and the platform API's `/api/events*` and `/api/drops*` routes read:
//! a libSQL database of its own (a local file by default, `HOT_DATABASE_URL` for a shared one), so event writes
//! never contend with the metadata's writers.
//!
//! - **Recent events** per tenant (`hot_events`, JSON as the API shows them) and their params (`hot_params`), kept
//!   for the hot retention, for listings, param filters and the event match.
//! - **Counts** per tenant, minute, event type and short link (`hot_counts`), and per param value
//!   (`hot_param_counts`), kept longer, for time series and breakdowns.
//! - **The drop ledger**: events the filter dropped or flagged, per tenant, hour, action and reason, with a sample.
//!
//! Exactly once: an event is stored once per tenant and `event_id` (`INSERT ... ON CONFLICT DO NOTHING`), and only
//! a new row adds to the counts, all in the transaction that also moves the consumer's offset. Every statement is
//! a constant or built from constant fragments; every value (tenant, event type, param key and value, times) is a
//! bound parameter, and every query takes the tenant as its first condition.

use std::collections::{BTreeMap, HashMap};

use libsql::Value;
use libsql::params::Params;
use serde::Serialize;
use tracker_protocol::Event;

use crate::db::Db;
use crate::usage::{QuotaAlert, UsageDelta, UsageRow};
use crate::{Location, Result, StoreError, int, text};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS hot_events (
    seq INTEGER PRIMARY KEY,
    key_prefix TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    tu_id TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS hot_events_once ON hot_events(key_prefix, event_id);
CREATE INDEX IF NOT EXISTS hot_events_by_time ON hot_events(key_prefix, ts, seq);
CREATE INDEX IF NOT EXISTS hot_events_by_type ON hot_events(key_prefix, event_type, ts, seq);
CREATE INDEX IF NOT EXISTS hot_events_by_link ON hot_events(key_prefix, tu_id, ts, seq);
CREATE TABLE IF NOT EXISTS hot_params (
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    key_prefix TEXT NOT NULL,
    ts INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    PRIMARY KEY (seq, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hot_params_by_value ON hot_params(key_prefix, name, value, ts, seq, event_type);
CREATE TABLE IF NOT EXISTS hot_counts (
    key_prefix TEXT NOT NULL,
    minute INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    tu_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, minute, event_type, tu_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_param_counts (
    key_prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    minute INTEGER NOT NULL,
    value TEXT NOT NULL,
    event_type TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, name, minute, value, event_type)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_drops (
    key_prefix TEXT NOT NULL,
    hour INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, hour, action, reason)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hot_drop_samples (
    id INTEGER PRIMARY KEY,
    key_prefix TEXT NOT NULL,
    hour INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    body TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS hot_drop_samples_by_reason ON hot_drop_samples(key_prefix, reason, hour);
CREATE TABLE IF NOT EXISTS hot_offsets (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) STRICT;
CREATE TABLE IF NOT EXISTS quota_months (
    key_prefix TEXT NOT NULL,
    month INTEGER NOT NULL,
    kept INTEGER NOT NULL,
    PRIMARY KEY (key_prefix, month)
) STRICT;
CREATE TABLE IF NOT EXISTS quota_alerts (
    key_prefix TEXT NOT NULL,
    month INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    allowance INTEGER NOT NULL,
    at INTEGER NOT NULL,
    notified INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_prefix, month, percent)
) STRICT;
CREATE INDEX IF NOT EXISTS quota_alerts_pending ON quota_alerts(notified);
CREATE TABLE IF NOT EXISTS quota_ids (
    key_prefix TEXT NOT NULL,
    month INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (key_prefix, month, event_id)
) STRICT;
CREATE TABLE IF NOT EXISTS usage_marks (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS hot_filter_pending (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    from_offset INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    dropped TEXT NOT NULL,
    done INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) STRICT;
"#;

/// Sample events kept per tenant, hour, action and reason in the drop ledger.
pub const SAMPLES_PER_REASON: i64 = 10;
/// Most rows a stats answer holds; a wider question must narrow its range or grouping.
pub const MAX_SERIES_ROWS: usize = 20_000;
/// Most triggers, and most results, one match reads from the hot tier (about 100 bytes each in memory).
pub const MAX_MATCH_ROWS: usize = 500_000;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What the filter decided about one event that did not pass unchanged.
#[derive(Debug, Clone)]
pub struct Judged<'e> {
    pub event: &'e Event,
    /// `"drop"` or `"flag"`.
    pub action: &'static str,
    pub reason: String,
}

/// A filter batch whose kept events may not have reached the filtered log yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBatch {
    pub partition: u32,
    pub from: u64,
    pub next: u64,
    /// Offsets of the batch's events that were dropped (so a replay keeps exactly the events the first run kept,
    /// even when an event id appears twice in a batch).
    pub dropped: Vec<u64>,
}

/// What a filter batch adds to the tenants' usage (see [`crate::usage`]), in the transaction of its decisions.
#[derive(Debug, Clone, Default)]
pub struct FilterUsage {
    /// Redirects and drops per tenant and hour.
    pub counts: UsageDelta,
    /// Billable (kept) events per tenant and month start.
    pub kept: BTreeMap<(String, i64), i64>,
    /// Allowance thresholds reached.
    pub alerts: Vec<QuotaAlert>,
    /// Event ids counted against a hard cap: `(tenant, month, event_id)`.
    pub ids: Vec<(String, i64, String)>,
}

/// The hot-tier database.
#[derive(Clone)]
pub struct HotStore {
    db: Db,
}

impl std::fmt::Debug for HotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotStore").finish_non_exhaustive()
    }
}

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

/// One drop-ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropRow {
    pub hour: i64,
    pub action: String,
    pub reason: String,
    pub count: i64,
}

/// One side of a match: `(key value, ts, seq)`, ordered by key value, then time.
type Side = Vec<(String, i64, i64)>;

struct Sides {
    triggers: Side,
    results: Side,
}

/// A pair found, by the events' `seq`.
struct Paired {
    key: String,
    trigger: i64,
    result: i64,
    time_delta_ms: i64,
}

impl HotStore {
    pub async fn connect(location: &Location) -> Result<HotStore> {
        let schema = format!("{SCHEMA}{}", crate::usage::USAGE_SCHEMA);
        Ok(HotStore { db: Db::connect(location, &schema, &[]).await? })
    }

    pub async fn offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT next_offset FROM hot_offsets WHERE consumer = ?1 AND partition = ?2",
                (consumer, i64::from(partition)),
            )
            .await?;
        match rows.next().await? {
            Some(row) => Ok(u64::try_from(int(&row, 0, "next_offset")?).unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Stores the events that are new (by tenant and `event_id`), adds them to the counts, and moves `consumer`'s
    /// offset in `partition` to `next_offset`, in one transaction. Returns how many events were new.
    pub async fn apply_events(
        &self,
        consumer: &str,
        partition: u32,
        next_offset: u64,
        events: &[Event],
    ) -> Result<u64> {
        let conn = self.db.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut added = 0u64;
        let mut accepted = UsageDelta::default();
        let mut counts: HashMap<(&str, i64, &str, &str), i64> = HashMap::new();
        let mut param_counts: HashMap<(&str, &str, i64, &str, &str), i64> = HashMap::new();
        {
            let insert = tx
                .prepare(
                    "INSERT INTO hot_events (key_prefix, event_id, event_type, ts, received_at, tu_id, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING RETURNING seq",
                )
                .await?;
            let param = tx
                .prepare(
                    "INSERT INTO hot_params (seq, name, value, key_prefix, ts, event_type)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .await?;
            for e in events {
                let body = serde_json::to_string(e).map_err(|_| StoreError::BadColumn("body"))?;
                let id = e.event_id.to_string();
                let tu = e.link().unwrap_or_default();
                let mut rows = insert
                    .query((
                        e.key_prefix.as_str(),
                        id.as_str(),
                        e.event_type.as_str(),
                        e.timestamp,
                        e.received_at,
                        tu,
                        body.as_str(),
                    ))
                    .await?;
                let seq = match rows.next().await? {
                    Some(row) => Some(int(&row, 0, "seq")?),
                    None => None,
                };
                drop(rows);
                insert.reset();
                let Some(seq) = seq else { continue };
                added += 1;
                // imported history is metered by the filter as `imported`, not billed
                if e.auth != tracker_protocol::Auth::Import {
                    accepted.add(&e.key_prefix, e.received_at, "accepted", 1);
                }
                let minute = e.timestamp.div_euclid(MINUTE_MS) * MINUTE_MS;
                *counts.entry((e.key_prefix.as_str(), minute, e.event_type.as_str(), tu)).or_default() += 1;
                for (k, v) in &e.params {
                    param
                        .execute((
                            seq,
                            k.as_str(),
                            v.as_str(),
                            e.key_prefix.as_str(),
                            e.timestamp,
                            e.event_type.as_str(),
                        ))
                        .await?;
                    param.reset();
                    *param_counts
                        .entry((e.key_prefix.as_str(), k.as_str(), minute, v.as_str(), e.event_type.as_str()))
                        .or_default() += 1;
                }
            }
        }
        for ((tenant, minute, event_type, tu), n) in counts {
            tx.execute(
                "INSERT INTO hot_counts (key_prefix, minute, event_type, tu_id, n) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO UPDATE SET n = n + excluded.n",
                (tenant, minute, event_type, tu, n),
            )
            .await?;
        }
        for ((tenant, name, minute, value, event_type), n) in param_counts {
            tx.execute(
                "INSERT INTO hot_param_counts (key_prefix, name, minute, value, event_type, n)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO UPDATE SET n = n + excluded.n",
                (tenant, name, minute, value, event_type, n),
            )
            .await?;
        }
        crate::usage::apply(&tx, &accepted).await?;
        set_offset(&tx, consumer, partition, next_offset).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Records the filter's decisions on one batch and its intent to append the kept events, and moves its offset,
    /// in one transaction. The caller then appends the kept events (idempotently) and calls
    /// [`HotStore::filter_done`]; after a crash in between, [`HotStore::filter_pending`] says what to redo.
    pub async fn record_filtered(
        &self,
        consumer: &str,
        batch: &PendingBatch,
        judged: &[Judged<'_>],
        usage: &FilterUsage,
    ) -> Result<()> {
        let conn = self.db.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut ledger: BTreeMap<(&str, i64, &str, &str), i64> = BTreeMap::new();
        for j in judged {
            let hour = j.event.received_at.div_euclid(HOUR_MS) * HOUR_MS;
            *ledger.entry((j.event.key_prefix.as_str(), hour, j.action, j.reason.as_str())).or_default() += 1;
        }
        for ((tenant, hour, action, reason), n) in &ledger {
            tx.execute(
                "INSERT INTO hot_drops (key_prefix, hour, action, reason, n) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO UPDATE SET n = n + excluded.n",
                (*tenant, *hour, *action, *reason, *n),
            )
            .await?;
        }
        for j in judged {
            let hour = j.event.received_at.div_euclid(HOUR_MS) * HOUR_MS;
            let body = serde_json::to_string(j.event).map_err(|_| StoreError::BadColumn("body"))?;
            tx.execute(
                "INSERT INTO hot_drop_samples (key_prefix, hour, action, reason, body)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE (SELECT COUNT(*) FROM hot_drop_samples
                   WHERE key_prefix = ?1 AND reason = ?4 AND hour = ?2 AND action = ?3) < ?6",
                (j.event.key_prefix.as_str(), hour, j.action, j.reason.as_str(), body.as_str(), SAMPLES_PER_REASON),
            )
            .await?;
        }
        let dropped = serde_json::to_string(&batch.dropped).map_err(|_| StoreError::BadColumn("dropped"))?;
        // the batch must start where this consumer's position is (another member may have moved it meanwhile)
        let mut rows = tx
            .query(
                "SELECT next_offset FROM hot_offsets WHERE consumer = ?1 AND partition = ?2",
                (consumer, i64::from(batch.partition)),
            )
            .await?;
        let at = match rows.next().await? {
            Some(row) => u64::try_from(int(&row, 0, "next_offset")?).unwrap_or(0),
            None => 0,
        };
        drop(rows);
        if at > batch.from {
            return Err(StoreError::Conflict(format!(
                "the {consumer} position in partition {} moved to {at} (batch from {})",
                batch.partition, batch.from
            )));
        }
        // and the previous batch's kept events must be in the filtered log before its record is replaced
        let replaced = tx
            .execute(
                "INSERT INTO hot_filter_pending (consumer, partition, from_offset, next_offset, dropped, done)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0) ON CONFLICT (consumer, partition) DO UPDATE SET
                   from_offset = excluded.from_offset, next_offset = excluded.next_offset,
                   dropped = excluded.dropped, done = 0
                 WHERE hot_filter_pending.done = 1",
                (consumer, i64::from(batch.partition), to_i64(batch.from), to_i64(batch.next), dropped.as_str()),
            )
            .await?;
        if replaced == 0 {
            return Err(StoreError::Conflict(format!(
                "the {consumer} batch pending in partition {} is not appended yet",
                batch.partition
            )));
        }
        crate::usage::apply(&tx, &usage.counts).await?;
        for ((tenant, month), n) in &usage.kept {
            tx.execute(
                "INSERT INTO quota_months (key_prefix, month, kept) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET kept = kept + excluded.kept",
                (tenant.as_str(), *month, *n),
            )
            .await?;
        }
        for (tenant, month, id) in &usage.ids {
            tx.execute(
                "INSERT INTO quota_ids (key_prefix, month, event_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                (tenant.as_str(), *month, id.as_str()),
            )
            .await?;
        }
        for a in &usage.alerts {
            tx.execute(
                "INSERT INTO quota_alerts (key_prefix, month, percent, allowance, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                (a.key_prefix.as_str(), a.month, a.percent, a.allowance, a.at),
            )
            .await?;
        }
        set_offset(&tx, consumer, batch.partition, batch.next).await?;
        tx.commit().await?;
        Ok(())
    }

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

    /// The usage counters of `tenant` (every tenant when `None`) for hours in `[from, to)`.
    pub async fn usage(&self, tenant: Option<&str>, from: i64, to: i64) -> Result<Vec<UsageRow>> {
        let conn = self.db.conn().await?;
        crate::usage::read(&conn, tenant, from, to).await
    }

    /// The kept events of the filter's last batch in `partition` reached the filtered log.
    pub async fn filter_done(&self, consumer: &str, partition: u32) -> Result<()> {
        self.db
            .conn()
            .await?
            .execute(
                "UPDATE hot_filter_pending SET done = 1 WHERE consumer = ?1 AND partition = ?2",
                (consumer, i64::from(partition)),
            )
            .await?;
        Ok(())
    }

    /// The filter batches recorded but not known to be in the filtered log (at most one per partition).
    pub async fn filter_pending(&self, consumer: &str) -> Result<Vec<PendingBatch>> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT partition, from_offset, next_offset, dropped FROM hot_filter_pending
                 WHERE consumer = ?1 AND done = 0 ORDER BY partition",
                [consumer],
            )
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push(PendingBatch {
                partition: u32::try_from(int(&row, 0, "partition")?).map_err(|_| StoreError::BadColumn("partition"))?,
                from: u64::try_from(int(&row, 1, "from_offset")?).unwrap_or(0),
                next: u64::try_from(int(&row, 2, "next_offset")?).unwrap_or(0),
                dropped: serde_json::from_str(&text(&row, 3, "dropped")?)
                    .map_err(|_| StoreError::BadColumn("dropped"))?,
            });
        }
        Ok(out)
    }

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
        let mut push = |v: Value| {
            args.push(v);
            args.len().to_string()
        };
        let sql = match (&q.param, &q.group_by) {
            // counts per minute answer these directly
            (None, GroupBy::Param(name)) => {
                if q.tu_id.is_some() {
                    return Err(StoreError::Rejected("tu_id cannot be combined with group_by=param:<key>".into()));
                }
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
            (Some((name, value)), GroupBy::None | GroupBy::EventType) if q.tu_id.is_none() => {
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

    async fn side(&self, tenant: &str, on: &str, event_type: &str, from: i64, to: i64) -> Result<Side> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                // the index covers the query: one ordered scan, no lookups
                "SELECT value, ts, seq FROM hot_params INDEXED BY hot_params_by_value
                 WHERE key_prefix = ?1 AND name = ?2 AND event_type = ?3 AND ts >= ?4 AND ts < ?5
                 ORDER BY value, ts, seq",
                (tenant, on, event_type, from, to),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            if out.len() >= MAX_MATCH_ROWS {
                return Err(StoreError::Rejected(format!(
                    "more than {MAX_MATCH_ROWS} {event_type:?} events in range: narrow the time range"
                )));
            }
            out.push((text(&row, 0, "value")?, int(&row, 1, "ts")?, int(&row, 2, "seq")?));
        }
        Ok(out)
    }

    async fn bodies(&self, tenant: &str, seqs: &[i64]) -> Result<HashMap<i64, String>> {
        let mut out = HashMap::new();
        for chunk in seqs.chunks(200) {
            let conn = self.db.conn().await?;
            let marks = (0..chunk.len()).map(|i| format!("?{}", i + 2)).collect::<Vec<_>>().join(",");
            let sql = format!("SELECT seq, body FROM hot_events WHERE key_prefix = ?1 AND seq IN ({marks})");
            let mut args = vec![Value::Text(tenant.to_owned())];
            args.extend(chunk.iter().map(|s| Value::Integer(*s)));
            let mut rows = conn.query(&sql, Params::Positional(args)).await?;
            while let Some(row) = rows.next().await? {
                out.insert(int(&row, 0, "seq")?, text(&row, 1, "body")?);
            }
        }
        Ok(out)
    }

    /// Pairs each `result` event with the latest `trigger` event at or before it that has the same value of param
    /// `on`, no more than `window_ms` earlier. A trigger is paired at most once and a result at most once; a result
    /// never precedes its trigger. The answer covers results in `[from, to)`; their triggers may be up to the
    /// window earlier, and results of the window before `from` are paired first (not reported), so adjacent
    /// ranges never pair one trigger twice. `match_rate` is the share of triggers in `[from, to)` that were paired.
    pub async fn match_events(&self, tenant: &str, q: &MatchQuery) -> Result<MatchAnswer> {
        let earlier = q.from.saturating_sub(q.window_ms);
        let sides = Sides {
            triggers: self.side(tenant, &q.on, &q.trigger, earlier.saturating_sub(q.window_ms), q.to).await?,
            results: self.side(tenant, &q.on, &q.result, earlier, q.to).await?,
        };
        let (paired, summary) = pair(&sides, q);
        let seqs: Vec<i64> = paired.iter().flat_map(|p| [p.trigger, p.result]).collect();
        let bodies = self.bodies(tenant, &seqs).await?;
        let body = |seq: i64| bodies.get(&seq).map_or(serde_json::Value::Null, |b| json(b));
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

    /// Deletes events (and their params) received before `events_before`, and counts, ledger rows and samples
    /// older than `counts_before`. Returns the events deleted.
    pub async fn prune(&self, events_before: i64, counts_before: i64) -> Result<u64> {
        let conn = self.db.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        // by time, not by position: an old event stored late (a consumer catching up) sits among new ones
        tx.execute(
            "DELETE FROM hot_params WHERE seq IN (SELECT seq FROM hot_events WHERE received_at < ?1)",
            [events_before],
        )
        .await?;
        let deleted = tx.execute("DELETE FROM hot_events WHERE received_at < ?1", [events_before]).await?;
        tx.execute("DELETE FROM hot_counts WHERE minute < ?1", [counts_before]).await?;
        tx.execute("DELETE FROM hot_drops WHERE hour < ?1", [counts_before]).await?;
        tx.execute("DELETE FROM hot_drop_samples WHERE hour < ?1", [counts_before]).await?;
        tx.execute("DELETE FROM usage_marks WHERE at < ?1", [counts_before]).await?;
        // the ids counted against hard caps are needed for the current month only
        tx.execute("DELETE FROM quota_ids WHERE month < ?1", [tracker_protocol::quota::month_start(counts_before)])
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

async fn set_offset(tx: &libsql::Transaction, consumer: &str, partition: u32, next: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO hot_offsets (consumer, partition, next_offset) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer, partition) DO UPDATE SET next_offset = excluded.next_offset",
        (consumer, i64::from(partition), to_i64(next)),
    )
    .await?;
    Ok(())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// The pairing itself (see [`HotStore::match_events`]): the pairs listed (up to `q.limit`, results in range) and
/// the summary over all of them.
fn pair(sides: &Sides, q: &MatchQuery) -> (Vec<Paired>, MatchSummary) {
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
