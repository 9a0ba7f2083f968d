//! Leases (jobs only one process may run at a time) and consumer positions kept with what they produced.

use crate::{Result, Store, int};

impl Store {
    /// Where `consumer` resumes in `partition` (0 if it never committed).
    pub async fn consumer_offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT next_offset FROM consumer_offsets WHERE consumer = ?1 AND partition = ?2",
                (consumer, i64::from(partition)),
            )
            .await?;
        match rows.next().await? {
            Some(row) => Ok(u64::try_from(int(&row, 0, "next_offset")?).unwrap_or(0)),
            None => Ok(0),
        }
    }
}

impl Store {
    /// Takes the lease `name` for `holder` until `until_ms` when it is free, expired at `now_ms` or already
    /// `holder`'s (a renewal). Returns whether `holder` holds it: a job only one process may run at a time runs
    /// only while its lease is held.
    pub async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        let conn = self.tx_conn().await?;
        let changed = conn
            .execute(
                "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                 WHERE leases.until <= ?4 OR leases.holder = excluded.holder",
                (name, holder, until_ms, now_ms),
            )
            .await?;
        Ok(changed == 1)
    }

    /// Gives the lease `name` up if `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let conn = self.tx_conn().await?;
        conn.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", (name, holder)).await?;
        Ok(())
    }
}

/// Moves `consumer`'s offset in `partition` inside the transaction that stored what it produced.
pub(crate) async fn set_consumer_offset(
    tx: &libsql::Transaction,
    consumer: &str,
    partition: u32,
    next_offset: u64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO consumer_offsets (consumer, partition, next_offset) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer, partition) DO UPDATE SET next_offset = excluded.next_offset",
        (consumer, i64::from(partition), i64::try_from(next_offset).unwrap_or(i64::MAX)),
    )
    .await?;
    Ok(())
}
