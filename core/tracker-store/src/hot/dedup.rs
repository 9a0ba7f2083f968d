//! Exact `event_id` dedup, done once by the filter (where a tenant's events pass in order), so every tier after it
//! (the hot tier, webhooks, the archive and the cold queries over it) sees each event once.
//!
//! The filter keeps the id of every event it keeps (`hot_seen_ids`), written in the transaction that records its
//! decisions and moves its position, so a crash cannot keep an event without its id or the other way round. An
//! event whose id its tenant already sent within the window is dropped with the reason [`DUPLICATE`]. Ids are
//! kept as the first 16 bytes of SHA-256 over the tenant and the id (one fixed-width key per event, so the table
//! stays small; a false match needs a 128-bit collision). Old ids are pruned in small chunks between batches, so
//! the filter is never held up for long.

use std::collections::HashSet;

use libsql::Value;
use libsql::params::Params;
use sha2::{Digest, Sha256};
use tracker_protocol::Uuid;

use super::HotStore;
use crate::{Result, StoreError};

/// The drop ledger's reason for an event whose id its tenant already sent.
pub const DUPLICATE: &str = "duplicate";

/// An event's dedup key: its tenant and id, hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeenKey([u8; 16]);

impl SeenKey {
    pub fn new(tenant: &str, event_id: &Uuid) -> SeenKey {
        let mut h = Sha256::new();
        // the length first: no tenant and id pair can be read as another
        h.update((tenant.len() as u64).to_le_bytes());
        h.update(tenant.as_bytes());
        h.update(event_id.as_bytes());
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
        SeenKey(key)
    }
}

/// Ids read per query.
const LOOKUP_CHUNK: usize = 256;
/// Ids read (and the old ones deleted) per pruning step.
pub const PRUNE_CHUNK: i64 = 2_000;

impl HotStore {
    /// Which of `keys` were kept before (and not yet pruned).
    pub async fn seen(&self, keys: &[SeenKey]) -> Result<HashSet<SeenKey>> {
        let mut out = HashSet::new();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            // placeholders only: every key is a bound value
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
            let sql = format!("SELECT id FROM hot_seen_ids WHERE id IN ({})", marks.join(","));
            let params = chunk.iter().map(|k| Value::Blob(k.0.to_vec())).collect();
            let conn = self.db.conn().await?;
            let mut rows = conn.query(&sql, Params::Positional(params)).await?;
            while let Some(row) = rows.next().await? {
                match row.get_value(0)? {
                    Value::Blob(b) => {
                        let key: [u8; 16] = b.try_into().map_err(|_| StoreError::BadColumn("id"))?;
                        out.insert(SeenKey(key));
                    }
                    _ => return Err(StoreError::BadColumn("id")),
                }
            }
        }
        Ok(out)
    }

    /// One pruning step: of the next [`PRUNE_CHUNK`] ids after `after` (in key order), deletes those kept before
    /// `before` (ms). Returns where the next step starts, or `None` once the whole table was gone through.
    pub async fn prune_seen(&self, after: Option<SeenKey>, before: i64) -> Result<Option<SeenKey>> {
        let conn = self.db.derived_tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let from = Value::Blob(after.map_or_else(Vec::new, |k| k.0.to_vec()));
        let mut rows = tx
            .query(
                "SELECT max(id), count(*) FROM (SELECT id FROM hot_seen_ids WHERE id > ?1 ORDER BY id LIMIT ?2)",
                Params::Positional(vec![from.clone(), Value::Integer(PRUNE_CHUNK)]),
            )
            .await?;
        let (last, n) = match rows.next().await? {
            Some(row) => (row.get_value(0)?, crate::int(&row, 1, "count")?),
            None => (Value::Null, 0),
        };
        drop(rows);
        let Value::Blob(last) = last else {
            tx.commit().await?;
            return Ok(None);
        };
        tx.execute(
            "DELETE FROM hot_seen_ids WHERE id > ?1 AND id <= ?2 AND at < ?3",
            Params::Positional(vec![from, Value::Blob(last.clone()), Value::Integer(before)]),
        )
        .await?;
        tx.commit().await?;
        if n < PRUNE_CHUNK {
            return Ok(None);
        }
        let key: [u8; 16] = last.try_into().map_err(|_| StoreError::BadColumn("id"))?;
        Ok(Some(SeenKey(key)))
    }
}

/// Records `keys` as kept at `at` (ms), in the filter's transaction.
pub(super) async fn remember(tx: &libsql::Transaction, keys: &[SeenKey], at: i64) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let insert = tx.prepare("INSERT INTO hot_seen_ids (id, at) VALUES (?1, ?2) ON CONFLICT DO NOTHING").await?;
    for k in keys {
        insert.execute(Params::Positional(vec![Value::Blob(k.0.to_vec()), Value::Integer(at)])).await?;
        insert.reset();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_tenant_and_the_id_together() {
        let id = Uuid::from_u64_pair(1, 2);
        assert_eq!(SeenKey::new("acme", &id), SeenKey::new("acme", &id));
        assert_ne!(SeenKey::new("acme", &id), SeenKey::new("globex", &id), "tenants never share ids");
        assert_ne!(SeenKey::new("acme", &id), SeenKey::new("acme", &Uuid::from_u64_pair(1, 3)));
        assert_ne!(SeenKey::new("ab", &id), SeenKey::new("a", &id));
    }
}
