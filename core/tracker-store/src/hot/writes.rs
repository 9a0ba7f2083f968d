//! What the consumers write: the stats consumer's events and counts, the filter's decisions and its pending
//! batches, each in the transaction that moves the consumer's offset (retention is in `prune`).

use std::collections::BTreeMap;

use foldhash::HashMap;

use tracker_protocol::Event;

use super::{HOUR_MS, HotStore, MINUTE_MS, SAMPLES_PER_REASON, to_i64};
use crate::usage::{QuotaAlert, UsageDelta};
use crate::{Result, StoreError, int, text};

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

/// What a filter batch adds to the tenants' usage (see [`crate::usage`]) and to the ids it has kept, in the
/// transaction of its decisions.
#[derive(Debug, Clone, Default)]
pub struct FilterUsage {
    /// The batch's kept events' dedup keys ([`super::dedup`]), and when they were kept (ms).
    pub kept_ids: (Vec<super::SeenKey>, i64),
    /// Redirects and drops per tenant and hour.
    pub counts: UsageDelta,
    /// Billable (kept) events per tenant and month start.
    pub kept: BTreeMap<(String, i64), i64>,
    /// Allowance thresholds reached.
    pub alerts: Vec<QuotaAlert>,
    /// Event ids counted against a hard cap: `(tenant, month, event_id)`.
    pub ids: Vec<(String, i64, String)>,
}

impl HotStore {
    /// Stores the events as one segment, adds them to the counts, and moves `consumer`'s offset in `partition` to
    /// `next_offset`, in one transaction. Returns how many events were stored. The filter drops an event resent by a
    /// client ([`super::dedup`]); a copy of one it kept that reached the filtered log twice is skipped here.
    pub async fn apply_events(
        &self,
        consumer: &str,
        partition: u32,
        next_offset: u64,
        events: &[Event],
    ) -> Result<u64> {
        self.apply_batch(consumer, &[(partition, next_offset)], events).await
    }

    /// [`HotStore::apply_events`] for the events of several partitions, read up to each `(partition, next_offset)`
    /// of `positions`: one segment, the counts, and every partition's position, in one transaction. At low rates a
    /// partition's batch holds an event or two, and what a transaction writes once (a segment, positions, a count row
    /// per tenant, minute, type and param value) is shared by the events of every partition in it.
    pub async fn apply_batch(&self, consumer: &str, positions: &[(u32, u64)], events: &[Event]) -> Result<u64> {
        if self.cardinality.lock().map_or(true, |c| c.needs_reload()) {
            let all = self.all_unbounded().await?;
            if let Ok(mut c) = self.cardinality.lock() {
                c.reloaded(all);
            }
        }
        let unbounded = self.cardinality.lock().map(|c| c.snapshot()).unwrap_or_default();
        let is_unbounded = |tenant: &str, name: &str| unbounded.get(tenant).is_some_and(|n| n.contains(name));
        // events and new count rows per tenant and counted param, for the cardinality watch
        let mut tally: HashMap<(&str, &str), (u32, u32)> = HashMap::default();
        // an event the segments hold already is a copy (a batch read again finds none: its position is committed
        // with its segment); only this consumer writes this partition's tenants, so nothing changes meanwhile
        let copies = self.stored_before(events).await?;
        let fresh: Vec<Event>;
        let events = if copies.is_empty() {
            events
        } else {
            fresh = events.iter().enumerate().filter(|(i, _)| !copies.contains(i)).map(|(_, e)| e.clone()).collect();
            fresh.as_slice()
        };
        let mut accepted = UsageDelta::default();
        let mut counts: HashMap<(&str, i64, &str, &str), i64> = HashMap::default();
        let mut param_counts: HashMap<(&str, &str, i64, &str, &str), i64> = HashMap::default();
        for e in events {
            // imported history is metered by the filter as `imported`, not billed
            if e.auth != tracker_protocol::Auth::Import {
                accepted.add(&e.key_prefix, e.received_at, "accepted", 1);
            }
            let minute = e.timestamp.div_euclid(MINUTE_MS) * MINUTE_MS;
            let tu = e.link().unwrap_or_default();
            *counts.entry((e.key_prefix.as_str(), minute, e.event_type.as_str(), tu)).or_default() += 1;
            for (k, v) in &e.params {
                // an id-like param's values are answered from the events (see `params`)
                if is_unbounded(&e.key_prefix, k) {
                    continue;
                }
                tally.entry((e.key_prefix.as_str(), k.as_str())).or_default().0 += 1;
                *param_counts
                    .entry((e.key_prefix.as_str(), k.as_str(), minute, v.as_str(), e.event_type.as_str()))
                    .or_default() += 1;
            }
        }
        // the CPU work (the counts above, the segment) before this writer's turn: the filter writes meanwhile
        let built = self.build_segment(events).await?;
        // derived from the filtered log, with the position in the same commit
        let conn = self.db.derived_tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        self.add_segment(&tx, events, built).await?;
        // each statement prepared once per batch
        let upsert = tx
            .prepare(
                "INSERT INTO hot_counts (key_prefix, minute, event_type, tu_id, n) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO UPDATE SET n = n + excluded.n",
            )
            .await?;
        // in key order: each upsert lands next to the one before it in the table's B-tree
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_unstable();
        for ((tenant, minute, event_type, tu), n) in counts {
            upsert.execute((tenant, minute, event_type, tu, n)).await?;
            upsert.reset();
        }
        let upsert = tx
            .prepare(
                "INSERT INTO hot_param_counts (key_prefix, name, minute, value, event_type, n)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO UPDATE SET n = n + excluded.n RETURNING n",
            )
            .await?;
        let mut param_counts: Vec<_> = param_counts.into_iter().collect();
        param_counts.sort_unstable();
        for ((tenant, name, minute, value, event_type), n) in param_counts {
            let mut rows = upsert.query((tenant, name, minute, value, event_type, n)).await?;
            // the row is new when it holds this batch's count alone
            let total = match rows.next().await? {
                Some(row) => int(&row, 0, "n")?,
                None => 0,
            };
            drop(rows);
            upsert.reset();
            if total == n {
                tally.entry((tenant, name)).or_default().1 += 1;
            }
        }
        let now = super::params::now_ms();
        let found = self.cardinality.lock().map(|mut c| c.observe(now, tally)).unwrap_or_default();
        super::params::record_unbounded(&tx, &found, now).await?;
        crate::usage::apply(&tx, &accepted).await?;
        for (partition, next_offset) in positions {
            set_offset(&tx, consumer, *partition, *next_offset).await?;
        }
        tx.commit().await?;
        if let Ok(mut c) = self.cardinality.lock() {
            c.found(found);
        }
        Ok(u64::try_from(events.len()).unwrap_or(u64::MAX))
    }

    /// Records the filter's decisions on a batch of one or more partitions (a [`PendingBatch`] each) and its intent
    /// to append their kept events, and moves its offsets, in one transaction. The caller then appends each
    /// partition's kept events (idempotently) and says so: in `appended` (the partitions and first offsets of the
    /// recorded batches that reached the filtered log since) of its next call, or with [`HotStore::filter_done`].
    /// Until then, [`HotStore::filter_pending`] lists the batch, to append again after a crash (a no-op for a batch
    /// that landed).
    pub async fn record_filtered(
        &self,
        consumer: &str,
        batches: &[PendingBatch],
        judged: &[Judged<'_>],
        usage: &FilterUsage,
        appended: &[(u32, u64)],
    ) -> Result<()> {
        // a full commit: on disk before the kept events go to the filtered log, so a power loss cannot undo
        // decisions whose events were appended
        let conn = self.db.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        // first, so a batch of a partition in `appended` may be replaced below: its events are in the filtered log
        for (partition, from) in appended {
            tx.execute(MARK_DONE, (consumer, i64::from(*partition), to_i64(*from))).await?;
        }
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
        // each partition's batch must start where this consumer's position is (another member may have moved it
        // meanwhile)
        let mut positions = Vec::with_capacity(batches.len());
        for batch in batches {
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
            positions.push((batch.partition, at));
        }
        // and no other writer kept ids of the partitions since this process did, or its lookups are not trusted
        let range = self.cover(&tx, consumer, &positions).await?;
        // and each partition's previous batch's kept events must be in the filtered log before its record is replaced
        for batch in batches {
            let dropped = serde_json::to_string(&batch.dropped).map_err(|_| StoreError::BadColumn("dropped"))?;
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
        super::dedup::remember(&tx, &usage.kept_ids.0, usage.kept_ids.1).await?;
        for batch in batches {
            set_offset(&tx, consumer, batch.partition, batch.next).await?;
        }
        tx.commit().await?;
        let next: Vec<(u32, u64)> = batches.iter().map(|b| (b.partition, b.next)).collect();
        self.covered(&next, &usage.kept_ids.0, range);
        Ok(())
    }

    /// The kept events of the filter's batch of `partition` from `from` reached the filtered log. Only that batch
    /// is marked: another member that took the partition over may have recorded a later one meanwhile.
    pub async fn filter_done(&self, consumer: &str, partition: u32, from: u64) -> Result<()> {
        self.db.conn().await?.execute(MARK_DONE, (consumer, i64::from(partition), to_i64(from))).await?;
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
}

/// Marks a pending filter batch, by partition and first offset, as in the filtered log.
const MARK_DONE: &str =
    "UPDATE hot_filter_pending SET done = 1 WHERE consumer = ?1 AND partition = ?2 AND from_offset = ?3";

pub(super) async fn set_offset(tx: &libsql::Transaction, consumer: &str, partition: u32, next: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO hot_offsets (consumer, partition, next_offset) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer, partition) DO UPDATE SET next_offset = excluded.next_offset",
        (consumer, i64::from(partition), to_i64(next)),
    )
    .await?;
    Ok(())
}
