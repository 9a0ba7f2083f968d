//! Webhook deliveries: the queue the webhook consumer fills from the filtered events and its dispatcher drains,
//! which is also the delivery log and dead-letter list tenants read and redeliver from.
//!
//! A delivery is created once per endpoint and event (`UNIQUE (webhook_id, event_id)`), in the transaction that
//! moves the consumer's offset, so a replay after a crash queues nothing twice. Its id (`dlv_<UUIDv7>`) is sent with
//! every attempt (`Tracker-Delivery-Id`) so receivers can drop repeats, and orders the queue.

use libsql::Value;
use serde::Serialize;

use crate::{Page, opt_text, page, set_consumer_offset};
use crate::{Result, Store, StoreError, int, opt_int, text};

/// A delivery to queue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub key_prefix: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The JSON body, without its delivery id (added when sent).
    pub data: String,
    /// The body's `type`: `event`, or `usage.threshold` for an allowance warning.
    pub kind: &'static str,
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `dead` (the dead-letter list).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A delivery that is due, with what sending it takes.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery_id: String,
    pub key_prefix: String,
    pub webhook_id: String,
    pub url: String,
    /// As stored (sealed with `SECRETS_KEY`); see [`Store::open_webhook_secret`].
    pub secret: String,
    pub event_type: String,
    pub data: String,
    pub attempts: i64,
    /// The body's `type` (see [`NewDelivery::kind`]).
    pub kind: String,
}

/// What an attempt's outcome does to its delivery.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    Delivered {
        status: u16,
    },
    /// Try again at `retry_at`, or dead-letter it when `None`.
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<i64>,
    },
}

pub const DELIVERY_STATUSES: &[&str] = &["pending", "delivered", "dead"];

const DELIVERY_COLUMNS: &str = "delivery_id, webhook_id, event_id, event_type, status, attempts, next_attempt_at, \
                                last_status, last_error, created_at, updated_at";

fn delivery_from_row(row: &libsql::Row) -> Result<DeliveryRecord> {
    let status = text(row, 4, "status")?;
    Ok(DeliveryRecord {
        delivery_id: text(row, 0, "delivery_id")?,
        webhook_id: text(row, 1, "webhook_id")?,
        event_id: text(row, 2, "event_id")?,
        event_type: text(row, 3, "event_type")?,
        next_attempt_at: if status == "pending" { Some(int(row, 6, "next_attempt_at")?) } else { None },
        status,
        attempts: int(row, 5, "attempts")?,
        last_status: opt_int(row, 7, "last_status")?,
        last_error: opt_text(row, 8, "last_error")?,
        created_at: int(row, 9, "created_at")?,
        updated_at: int(row, 10, "updated_at")?,
    })
}

impl Store {
    /// Queues deliveries (each endpoint and event once) and moves `consumer`'s offset in `partition`, in one
    /// transaction. Returns how many were new.
    pub async fn queue_deliveries(
        &self,
        consumer: &str,
        partition: u32,
        next_offset: u64,
        deliveries: &[NewDelivery],
        now_ms: i64,
    ) -> Result<u64> {
        self.queue(Some((consumer, partition, next_offset)), deliveries, now_ms).await
    }

    /// Queues deliveries that come from no log (allowance warnings); each endpoint and `event_id` once.
    pub async fn queue_notices(&self, deliveries: &[NewDelivery], now_ms: i64) -> Result<u64> {
        self.queue(None, deliveries, now_ms).await
    }

    async fn queue(&self, position: Option<(&str, u32, u64)>, deliveries: &[NewDelivery], now_ms: i64) -> Result<u64> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut added = 0;
        for d in deliveries {
            let id = format!("dlv_{}", uuid::Uuid::now_v7().simple());
            added += tx
                .execute(
                    "INSERT INTO webhook_deliveries (delivery_id, key_prefix, webhook_id, event_id, event_type, data,
                       status, attempts, next_attempt_at, created_at, updated_at, kind)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?7, ?8) ON CONFLICT DO NOTHING",
                    (
                        id.as_str(),
                        d.key_prefix.as_str(),
                        d.webhook_id.as_str(),
                        d.event_id.as_str(),
                        d.event_type.as_str(),
                        d.data.as_str(),
                        now_ms,
                        d.kind,
                    ),
                )
                .await?;
        }
        if let Some((consumer, partition, next_offset)) = position {
            set_consumer_offset(&tx, consumer, partition, next_offset).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Claims pending deliveries due at `now_ms` to enabled endpoints, oldest first: each is leased to the caller
    /// until `now_ms + lease_ms` (no other dispatcher, in this process or another, takes it meanwhile), at most
    /// `per_endpoint` leased at once per endpoint counting those still in flight (so one endpoint's backlog never
    /// fills the batch, and its concurrency holds across dispatchers), and `limit` in all.
    pub async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        per_endpoint: u32,
        limit: u32,
    ) -> Result<Vec<DueDelivery>> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut rows = tx
            .query(
                "UPDATE webhook_deliveries SET lease_until = ?2 WHERE delivery_id IN (
                   SELECT delivery_id FROM (
                     SELECT d.delivery_id, d.lease_until >= ?1 AS leased,
                       ROW_NUMBER() OVER (PARTITION BY d.webhook_id
                                          ORDER BY COALESCE(d.lease_until >= ?1, 0) DESC, d.delivery_id) AS nth
                     FROM webhook_deliveries d
                     JOIN webhooks w ON w.webhook_id = d.webhook_id AND w.key_prefix = d.key_prefix AND w.enabled = 1
                     WHERE d.status = 'pending' AND (d.next_attempt_at <= ?1 OR d.lease_until >= ?1))
                   WHERE nth <= ?3 AND NOT COALESCE(leased, 0)
                   ORDER BY delivery_id LIMIT ?4)
                 RETURNING delivery_id, key_prefix, webhook_id, event_type, data, attempts, kind",
                (now_ms, now_ms.saturating_add(lease_ms), i64::from(per_endpoint), i64::from(limit)),
            )
            .await?;
        let mut claimed = Vec::new();
        while let Some(row) = rows.next().await? {
            claimed.push((
                text(&row, 0, "delivery_id")?,
                text(&row, 1, "key_prefix")?,
                text(&row, 2, "webhook_id")?,
                text(&row, 3, "event_type")?,
                text(&row, 4, "data")?,
                int(&row, 5, "attempts")?,
                text(&row, 6, "kind")?,
            ));
        }
        drop(rows);
        let mut endpoints: std::collections::HashMap<String, (String, String)> = Default::default();
        let mut out = Vec::with_capacity(claimed.len());
        for (delivery_id, key_prefix, webhook_id, event_type, data, attempts, kind) in claimed {
            if !endpoints.contains_key(&webhook_id) {
                let mut rows = tx
                    .query(
                        "SELECT url, secret FROM webhooks WHERE webhook_id = ?1 AND key_prefix = ?2",
                        (webhook_id.as_str(), key_prefix.as_str()),
                    )
                    .await?;
                if let Some(row) = rows.next().await? {
                    endpoints.insert(webhook_id.clone(), (text(&row, 0, "url")?, text(&row, 1, "secret")?));
                }
            }
            let Some((url, secret)) = endpoints.get(&webhook_id).cloned() else { continue };
            out.push(DueDelivery {
                delivery_id,
                key_prefix,
                webhook_id,
                url,
                secret,
                event_type,
                data,
                attempts,
                kind,
            });
        }
        tx.commit().await?;
        out.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        Ok(out)
    }

    /// Opens the secret of endpoint `webhook_id` as [`Store::claim_deliveries`] returns it.
    pub fn open_webhook_secret(&self, webhook_id: &str, stored: String) -> Result<String> {
        crate::open_secret(self.sealer(), stored, &crate::sealing::webhook_row(webhook_id))
    }

    /// Records an attempt. A failure adds to the endpoint's run of consecutive failures; at `disable_after` the
    /// endpoint is disabled and its pending deliveries are dead-lettered (the tenant can redeliver them once it
    /// is fixed). A success ends the run. Returns whether the endpoint was disabled now.
    pub async fn record_attempt(
        &self,
        d: &DueDelivery,
        outcome: &AttemptOutcome,
        disable_after: u32,
        now_ms: i64,
    ) -> Result<bool> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut disabled = false;
        match outcome {
            AttemptOutcome::Delivered { status } => {
                let delivered = tx
                    .execute(
                        "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_status = ?2,
                           last_error = NULL, lease_until = NULL, updated_at = ?3
                         WHERE delivery_id = ?1 AND status = 'pending'",
                        (d.delivery_id.as_str(), i64::from(*status), now_ms),
                    )
                    .await?;
                let mut usage = crate::usage::UsageDelta::default();
                usage.add(&d.key_prefix, now_ms, "webhook_deliveries", i64::try_from(delivered).unwrap_or(0));
                crate::usage::apply(&tx, &usage).await?;
                tx.execute(
                    "UPDATE webhooks SET consecutive_failures = 0 WHERE webhook_id = ?1 AND key_prefix = ?2",
                    (d.webhook_id.as_str(), d.key_prefix.as_str()),
                )
                .await?;
            }
            AttemptOutcome::Failed { status, error, retry_at } => {
                let (state, next) = match retry_at {
                    Some(at) => ("pending", *at),
                    None => ("dead", now_ms),
                };
                tx.execute(
                    "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1, next_attempt_at = ?3,
                       last_status = ?4, last_error = ?5, lease_until = NULL, updated_at = ?6
                     WHERE delivery_id = ?1 AND status = 'pending'",
                    (d.delivery_id.as_str(), state, next, status.map(i64::from), error.as_str(), now_ms),
                )
                .await?;
                let mut rows = tx
                    .query(
                        "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1
                         WHERE webhook_id = ?1 AND key_prefix = ?2 RETURNING consecutive_failures, enabled",
                        (d.webhook_id.as_str(), d.key_prefix.as_str()),
                    )
                    .await?;
                let run = match rows.next().await? {
                    Some(row) => (int(&row, 0, "consecutive_failures")?, int(&row, 1, "enabled")? != 0),
                    None => (0, false),
                };
                drop(rows);
                if run.1 && run.0 >= i64::from(disable_after.max(1)) {
                    disabled = true;
                    let reason = format!("disabled after {} consecutive failed attempts; last: {error}", run.0);
                    tx.execute(
                        "UPDATE webhooks SET enabled = 0, disabled_reason = ?3, updated_at = ?4
                         WHERE webhook_id = ?1 AND key_prefix = ?2",
                        (d.webhook_id.as_str(), d.key_prefix.as_str(), reason.as_str(), now_ms),
                    )
                    .await?;
                    tx.execute(
                        "UPDATE webhook_deliveries SET status = 'dead', last_error = COALESCE(last_error, ?2),
                           updated_at = ?3 WHERE webhook_id = ?1 AND status = 'pending'",
                        (d.webhook_id.as_str(), "the endpoint was disabled", now_ms),
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(disabled)
    }

    /// The metadata store's usage counters (webhook deliveries) of `tenant` (every tenant when `None`) for hours
    /// in `[from, to)`.
    pub async fn usage(&self, tenant: Option<&str>, from: i64, to: i64) -> Result<Vec<crate::usage::UsageRow>> {
        let conn = self.conn().await?;
        crate::usage::read(&conn, tenant, from, to).await
    }

    /// One page of an endpoint's delivery log, newest first, optionally of one status (`dead`: the dead letters).
    pub async fn deliveries_page(
        &self,
        key_prefix: &str,
        webhook_id: &str,
        status: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Page<DeliveryRecord>> {
        // newest first: the cursor is exclusive from above, so an absent one is the largest possible id
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE key_prefix = ?1 AND webhook_id = ?2
               AND (?3 IS NULL OR status = ?3) AND delivery_id < ?4 ORDER BY delivery_id DESC LIMIT ?5"
        );
        let params = vec![
            Value::Text(key_prefix.to_owned()),
            Value::Text(webhook_id.to_owned()),
            status.map_or(Value::Null, |s| Value::Text(s.to_owned())),
        ];
        let before = before.unwrap_or("dlv_~");
        page(self, &sql, params, Some(before), limit, |d: &DeliveryRecord| &d.delivery_id, delivery_from_row).await
    }

    /// Queues a delivery again, now, with a fresh set of attempts (from the dead-letter list or the log).
    pub async fn redeliver(
        &self,
        key_prefix: &str,
        webhook_id: &str,
        delivery_id: &str,
        now_ms: i64,
    ) -> Result<DeliveryRecord> {
        let conn = self.conn().await?;
        let sql = format!(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?4, lease_until = NULL,
               updated_at = ?4
             WHERE key_prefix = ?1 AND webhook_id = ?2 AND delivery_id = ?3 RETURNING {DELIVERY_COLUMNS}"
        );
        let mut rows = conn.query(&sql, (key_prefix, webhook_id, delivery_id, now_ms)).await?;
        match rows.next().await? {
            Some(row) => delivery_from_row(&row),
            None => Err(StoreError::NotFound(format!("delivery {delivery_id}"))),
        }
    }

    /// Deletes delivered entries older than `delivered_before` and dead letters older than `dead_before`.
    pub async fn prune_deliveries(&self, delivered_before: i64, dead_before: i64) -> Result<u64> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "DELETE FROM webhook_deliveries WHERE (status = 'delivered' AND updated_at < ?1)
                   OR (status = 'dead' AND updated_at < ?2)",
                (delivered_before, dead_before),
            )
            .await?;
        Ok(n)
    }
}
