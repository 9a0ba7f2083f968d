//! Exact `event_id` dedup, done once by the filter (where a tenant's events pass in order), so every tier after it
//! (the hot tier, webhooks, the archive and the cold queries over it) sees each event once.
//!
//! The filter keeps the id of every event it keeps, written in the transaction that records its
//! decisions and moves its position, so a crash cannot keep an event without its id or the other way round. An
//! event whose id its tenant already sent within the window is dropped with the reason [`DUPLICATE`]. Old ids are
//! pruned in small chunks between batches, so the filter is never held up for long.
//!
//! A key is 16 bytes: for a UUIDv7 (what the platform and its SDKs mint) the id's own 6-byte millisecond clock,
//! then 10 bytes of SHA-256 over the tenant and the id; for any other id, 16 bytes of that hash. A resend carries
//! the same id, so the same key; a false match needs an 80-bit collision within one millisecond of one tenant's
//! ids. Led by the clock, the keys of live traffic land at the end of the table's B-tree, next to each other, where
//! hashed keys landed anywhere: each batch dirtied a page per key, and the table outgrew the page cache.
//!
//! A batch's keys are kept in blocks (`hot_kept_blocks`): sorted runs of at most [`BLOCK_KEYS`] keys spanning less
//! than [`BLOCK_SPAN`] (about 65 seconds of a UUIDv7's clock), each one row with its first and last key, so a batch of
//! live traffic writes a few rows where it wrote one per event (a B-tree entry each, and a row billed by a hosted
//! libSQL). A key with no neighbour that close (a hashed key, or a lone id) is a row of its own in `hot_kept_ids`,
//! where every key was kept before blocks. A lookup reads the rows of `hot_kept_ids` by key, and the blocks that start
//! less than a span below the key and end at or past it.
//!
//! Ids kept before keys led with the clock are in `hot_seen_ids` (16 bytes of the hash): read as well until the
//! window has passed over them and pruning has emptied the table.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use libsql::Value;
use libsql::params::Params;
use sha2::{Digest, Sha256};
use tracker_protocol::Uuid;

use super::HotStore;
use crate::{Result, StoreError};

/// The drop ledger's reason for an event whose id its tenant already sent.
pub const DUPLICATE: &str = "duplicate";

/// An event's dedup key: its tenant and id, hashed (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeenKey {
    pub(super) key: [u8; 16],
    /// The key an earlier version kept in `hot_seen_ids`.
    pub(super) legacy: [u8; 16],
}

impl SeenKey {
    pub fn new(tenant: &str, event_id: &Uuid) -> SeenKey {
        let mut h = Sha256::new();
        // the length first: no tenant and id pair can be read as another
        h.update((tenant.len() as u64).to_le_bytes());
        h.update(tenant.as_bytes());
        h.update(event_id.as_bytes());
        let digest = h.finalize();
        let mut legacy = [0u8; 16];
        legacy.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
        let mut key = legacy;
        if event_id.get_version_num() == 7 {
            let (clock, hash) = key.split_at_mut(6);
            clock.copy_from_slice(event_id.as_bytes().get(..6).unwrap_or(&[0u8; 6]));
            hash.copy_from_slice(digest.get(..10).unwrap_or(&[0u8; 10]));
        }
        SeenKey { key, legacy }
    }
}

/// Where a pruning pass of the kept ids goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneSeenAt {
    /// [`KEPT`], then [`BLOCKS`], then [`LEGACY`].
    table: &'static str,
    /// The last key (in [`BLOCKS`], the last rowid) the pass went through in that table.
    after: Option<u128>,
}

impl Default for PruneSeenAt {
    /// A pass from the start.
    fn default() -> Self {
        PruneSeenAt { table: KEPT, after: None }
    }
}

/// Ids read per query.
const LOOKUP_CHUNK: usize = 256;
/// Ids written per statement.
const INSERT_CHUNK: usize = 256;
/// Ids read (and the old ones deleted) per pruning step.
pub const PRUNE_CHUNK: i64 = 2_000;
/// Blocks read (and the old ones deleted) per pruning step: up to [`BLOCK_KEYS`] keys each.
const PRUNE_BLOCKS: i64 = 64;
/// The widest a block of kept keys may span, in key units: 2^96, 65.5 seconds of a UUIDv7 key's clock. A lookup reads
/// the blocks that start less than this below its key.
const BLOCK_SPAN: u128 = 1 << 96;
/// Most keys in one block (16 bytes each).
const BLOCK_KEYS: usize = 512;
/// Blocks written per statement.
const BLOCKS_PER_INSERT: usize = 16;

impl HotStore {
    /// Which of `keys`, of a batch the filter read from `partition`, were kept before: [`HotStore::seen`], past the
    /// ids this process certainly never kept ([`super::recent`]).
    pub async fn seen_in(&self, partition: u32, keys: &[SeenKey]) -> Result<HashSet<SeenKey>> {
        if self.legacy_ids.load(Ordering::Relaxed) {
            // an earlier version's ids are not in the memory's range: every id is looked up while they last
            return self.seen(keys).await;
        }
        let now = u64::try_from(super::params::now_ms()).unwrap_or(0);
        let asked = self.recent().maybe_kept(partition, keys, now);
        self.seen(&asked).await
    }

    /// The memory of recently kept ids; forgotten (not trusted) if a panic left it half changed.
    pub(super) fn recent(&self) -> std::sync::MutexGuard<'_, super::recent::Recent> {
        self.recent.lock().unwrap_or_else(|poisoned| {
            let mut recent = poisoned.into_inner();
            recent.reset();
            recent
        })
    }

    /// In the filter's (`consumer`'s) transaction of the partitions in `positions`, each with the position it read:
    /// fails when the ids this process remembers of one of them are not to be trusted ([`super::recent`]); else the
    /// range it is to cover from this commit on, with every partition's position, when a new one is due.
    pub(super) async fn cover(
        &self,
        tx: &libsql::Transaction,
        consumer: &str,
        positions: &[(u32, u64)],
    ) -> Result<Option<super::recent::Renewal>> {
        let now = u64::try_from(super::params::now_ms()).unwrap_or(0);
        let mut due = None;
        {
            let mut recent = self.recent();
            for (partition, position) in positions {
                due = recent.check(*partition, *position, now)?.or(due);
            }
        }
        let Some(hi) = due else { return Ok(None) };
        // just past the largest key below `hi`, so the tables hold none between `lo` and `hi`: of the rows, the
        // largest key; of the blocks, the largest first key plus a span, past any key a block starting there holds
        let bound = [Value::Blob(hi.to_be_bytes().to_vec())];
        let mut rows = tx.query(&format!("SELECT max(id) FROM {KEPT} WHERE id < ?1"), bound.clone()).await?;
        let row_lo = max_key(rows.next().await?, "id")?.map_or(0, |k| k.saturating_add(1));
        drop(rows);
        let mut rows = tx.query(&format!("SELECT max(first) FROM {BLOCKS} WHERE first < ?1"), bound).await?;
        let block_lo = max_key(rows.next().await?, "first")?.map_or(0, |k| k.saturating_add(BLOCK_SPAN).min(hi));
        drop(rows);
        let lo = row_lo.max(block_lo);
        let mut snapshot = std::collections::HashMap::new();
        let mut rows =
            tx.query("SELECT partition, next_offset FROM hot_offsets WHERE consumer = ?1", [consumer]).await?;
        while let Some(row) = rows.next().await? {
            let partition =
                u32::try_from(crate::int(&row, 0, "partition")?).map_err(|_| StoreError::BadColumn("partition"))?;
            snapshot.insert(partition, u64::try_from(crate::int(&row, 1, "next_offset")?).unwrap_or(0));
        }
        Ok(Some(super::recent::Renewal { lo, hi, snapshot }))
    }

    /// After the filter's transaction committed: each partition of `positions` is at its position, with `kept`
    /// kept, and the range and snapshot of `renewal` in force if [`HotStore::cover`] gave one.
    pub(super) fn covered(&self, positions: &[(u32, u64)], kept: &[SeenKey], renewal: Option<super::recent::Renewal>) {
        let mut recent = self.recent();
        let (mut kept, mut renewal) = (kept, renewal);
        for (partition, next) in positions {
            // the renewal first (it starts the memory afresh), then every partition's position
            recent.set(*partition, *next, kept, renewal.take());
            kept = &[];
        }
    }

    /// Which of `keys` were kept before (and not yet pruned).
    pub async fn seen(&self, keys: &[SeenKey]) -> Result<HashSet<SeenKey>> {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        let legacy = self.legacy_ids.load(Ordering::Relaxed);
        let conn = self.db.conn().await?;
        let mut out = HashSet::new();
        for chunk in sorted.chunks(LOOKUP_CHUNK) {
            let found = found_in(&conn, KEPT, chunk.iter().map(|k| k.key)).await?;
            out.extend(chunk.iter().filter(|k| found.contains(&k.key)));
            if legacy {
                let found = found_in(&conn, LEGACY, chunk.iter().map(|k| k.legacy)).await?;
                out.extend(chunk.iter().filter(|k| found.contains(&k.legacy)));
            }
        }
        found_in_blocks(&conn, &sorted, &mut out).await?;
        Ok(out)
    }

    /// One pruning step: of the next [`PRUNE_CHUNK`] ids after `at` (in key order), deletes those kept before
    /// `before` (ms). Returns where the next step starts, or `None` once the pass has gone through every table.
    pub async fn prune_seen(&self, at: PruneSeenAt, before: i64) -> Result<Option<PruneSeenAt>> {
        let table = at.table;
        if table == LEGACY && !self.legacy_ids.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // the ids' tables go in key order; the blocks in rowid order
        let (column, chunk, from) = match table {
            BLOCKS => ("rowid", PRUNE_BLOCKS, Value::Integer(at.after.map_or(i64::MIN, to_i64))),
            _ => ("id", PRUNE_CHUNK, Value::Blob(at.after.map_or_else(Vec::new, |k| k.to_be_bytes().to_vec()))),
        };
        let conn = self.db.derived_tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut rows = tx
            .query(
                &format!(
                    "SELECT max({column}), count(*) FROM \
                     (SELECT {column} FROM {table} WHERE {column} > ?1 ORDER BY {column} LIMIT ?2)"
                ),
                Params::Positional(vec![from.clone(), Value::Integer(chunk)]),
            )
            .await?;
        let (last, n) = match rows.next().await? {
            Some(row) => (row.get_value(0)?, crate::int(&row, 1, "count")?),
            None => (Value::Null, 0),
        };
        drop(rows);
        let last = match last {
            Value::Null => None,
            last => {
                let next = match &last {
                    Value::Integer(rowid) => u128::try_from(*rowid).map_err(|_| StoreError::BadColumn("rowid"))?,
                    Value::Blob(key) => key_of(key, "id")?,
                    _ => return Err(StoreError::BadColumn("id")),
                };
                tx.execute(
                    &format!("DELETE FROM {table} WHERE {column} > ?1 AND {column} <= ?2 AND at < ?3"),
                    Params::Positional(vec![from, last, Value::Integer(before)]),
                )
                .await?;
                Some(next)
            }
        };
        let emptied = table == LEGACY && n < PRUNE_CHUNK && {
            let mut rows = tx.query(&format!("SELECT EXISTS (SELECT 1 FROM {LEGACY})"), ()).await?;
            matches!(rows.next().await?.map(|r| crate::int(&r, 0, "exists")).transpose()?, Some(0))
        };
        tx.commit().await?;
        if emptied {
            // the window has passed over every id an earlier version kept: lookups read the current table alone
            self.legacy_ids.store(false, Ordering::Relaxed);
        }
        Ok(match last {
            Some(after) if n >= chunk => Some(PruneSeenAt { table, after: Some(after) }),
            _ if table == KEPT => Some(PruneSeenAt { table: BLOCKS, after: None }),
            _ if table == BLOCKS => Some(PruneSeenAt { table: LEGACY, after: None }),
            _ => None,
        })
    }

    /// Whether `hot_seen_ids` (ids kept by an earlier version) still holds any: read once at start-up.
    pub(super) async fn read_legacy_ids(&self) -> Result<()> {
        let conn = self.db.conn().await?;
        let mut rows = conn.query(&format!("SELECT EXISTS (SELECT 1 FROM {LEGACY})"), ()).await?;
        let any = matches!(rows.next().await?.map(|r| crate::int(&r, 0, "exists")).transpose()?, Some(1));
        self.legacy_ids.store(any, Ordering::Relaxed);
        Ok(())
    }
}

/// The table of kept ids, the one of blocks of them, and the one of an earlier version's hashed keys.
const KEPT: &str = "hot_kept_ids";
const BLOCKS: &str = "hot_kept_blocks";
const LEGACY: &str = "hot_seen_ids";

fn to_i64(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A 16-byte key read from `column`.
fn key_of(bytes: &[u8], column: &'static str) -> Result<u128> {
    Ok(u128::from_be_bytes(<[u8; 16]>::try_from(bytes).map_err(|_| StoreError::BadColumn(column))?))
}

/// The key of a `max(...)` row; `None` when the table held none.
fn max_key(row: Option<libsql::Row>, column: &'static str) -> Result<Option<u128>> {
    match row.map(|r| r.get_value(0)).transpose()? {
        Some(Value::Blob(b)) => key_of(&b, column).map(Some),
        _ => Ok(None),
    }
}

/// Adds to `out` those of `sorted` (in key order) that a block holds. Keys closer than a span to each other are
/// looked up together: the blocks that start less than a span below the first and no later than the last, and end
/// at or past the first.
async fn found_in_blocks(conn: &libsql::Connection, sorted: &[SeenKey], out: &mut HashSet<SeenKey>) -> Result<()> {
    let mut statement = None;
    let mut rest = sorted;
    while let Some(first) = rest.first() {
        let lo = u128::from_be_bytes(first.key);
        let close = rest.windows(2).take_while(|w| {
            let [a, b] = w else { return false };
            u128::from_be_bytes(b.key) - u128::from_be_bytes(a.key) < BLOCK_SPAN
        });
        let (group, later) = rest.split_at(1 + close.count());
        rest = later;
        let hi = group.last().map_or(lo, |k| u128::from_be_bytes(k.key));
        let statement = match &mut statement {
            Some(s) => s,
            None => statement.insert(
                conn.prepare(&format!("SELECT keys FROM {BLOCKS} WHERE first >= ?1 AND first <= ?2 AND last >= ?3"))
                    .await?,
            ),
        };
        // a block spans less than BLOCK_SPAN: one that starts earlier ends before `lo`
        let since = lo.saturating_sub(BLOCK_SPAN - 1);
        let bounds = [since, hi, lo].map(|k| Value::Blob(k.to_be_bytes().to_vec()));
        let mut rows = statement.query(Params::Positional(bounds.into())).await?;
        while let Some(row) = rows.next().await? {
            let Value::Blob(keys) = row.get_value(0)? else { return Err(StoreError::BadColumn("keys")) };
            for key in keys.chunks_exact(16) {
                if let Ok(i) = group.binary_search_by(|k| k.key.as_slice().cmp(key)) {
                    out.extend(group.get(i));
                }
            }
        }
        drop(rows);
        statement.reset();
    }
    Ok(())
}

/// Which of `keys` `table` holds.
async fn found_in(
    conn: &libsql::Connection,
    table: &str,
    keys: impl ExactSizeIterator<Item = [u8; 16]>,
) -> Result<HashSet<[u8; 16]>> {
    // placeholders only: every key is a bound value
    let marks: Vec<String> = (1..=keys.len()).map(|i| format!("?{i}")).collect();
    let sql = format!("SELECT id FROM {table} WHERE id IN ({})", marks.join(","));
    let mut rows = conn.query(&sql, Params::Positional(keys.map(|k| Value::Blob(k.to_vec())).collect())).await?;
    let mut found = HashSet::new();
    while let Some(row) = rows.next().await? {
        match row.get_value(0)? {
            Value::Blob(b) => found.insert(<[u8; 16]>::try_from(b).map_err(|_| StoreError::BadColumn("id"))?),
            _ => return Err(StoreError::BadColumn("id")),
        };
    }
    Ok(found)
}

/// Records `keys` as kept at `at` (ms), in the filter's transaction: runs of keys close to each other as blocks, and
/// each key with no neighbour close enough as a row (see the module's doc), in key order (next to each other at the
/// end of the tables, for ids led by the clock).
pub(super) async fn remember(tx: &libsql::Transaction, keys: &[SeenKey], at: i64) -> Result<()> {
    let mut sorted: Vec<[u8; 16]> = keys.iter().map(|k| k.key).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let (mut rows, mut blocks) = (Vec::new(), Vec::new());
    for run in runs(&sorted) {
        match run {
            [key] => rows.push(*key),
            run => blocks.push(run),
        }
    }
    // `?1` is the time; then the keys, or each block's first key, last key and keys
    let mut prepared: Option<(usize, libsql::Statement)> = None;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let sql = || {
            let rows: Vec<String> = (2..chunk.len() + 2).map(|i| format!("(?{i}, ?1)")).collect();
            format!("INSERT INTO {KEPT} (id, at) VALUES {} ON CONFLICT DO NOTHING", rows.join(","))
        };
        let params = chunk.iter().map(|k| Value::Blob(k.to_vec()));
        insert(tx, &mut prepared, chunk.len(), sql, at, params).await?;
    }
    let mut prepared = None;
    for chunk in blocks.chunks(BLOCKS_PER_INSERT) {
        let sql = || {
            let rows: Vec<String> =
                (0..chunk.len()).map(|i| format!("(?{}, ?{}, ?1, ?{})", 3 * i + 2, 3 * i + 3, 3 * i + 4)).collect();
            format!("INSERT INTO {BLOCKS} (first, last, at, keys) VALUES {}", rows.join(","))
        };
        let params = chunk.iter().flat_map(|run| {
            let (first, last) = (run.first().copied().unwrap_or_default(), run.last().copied().unwrap_or_default());
            [Value::Blob(first.to_vec()), Value::Blob(last.to_vec()), Value::Blob(run.concat())]
        });
        insert(tx, &mut prepared, chunk.len(), sql, at, params).await?;
    }
    Ok(())
}

/// Runs one multi-row insert of `n` rows at `at`, with the statement of the last call when it had as many rows.
async fn insert(
    tx: &libsql::Transaction,
    prepared: &mut Option<(usize, libsql::Statement)>,
    n: usize,
    sql: impl FnOnce() -> String,
    at: i64,
    params: impl Iterator<Item = Value>,
) -> Result<()> {
    let statement = match prepared.take() {
        Some((rows, s)) if rows == n => s,
        _ => tx.prepare(&sql()).await?,
    };
    statement.execute(Params::Positional(std::iter::once(Value::Integer(at)).chain(params).collect())).await?;
    statement.reset();
    *prepared = Some((n, statement));
    Ok(())
}

/// `sorted` keys cut into runs of at most [`BLOCK_KEYS`] that span less than [`BLOCK_SPAN`].
fn runs(sorted: &[[u8; 16]]) -> impl Iterator<Item = &[[u8; 16]]> {
    let mut rest = sorted;
    std::iter::from_fn(move || {
        let first = u128::from_be_bytes(*rest.first()?);
        let n = rest.iter().take(BLOCK_KEYS).take_while(|k| u128::from_be_bytes(**k) - first < BLOCK_SPAN).count();
        let (run, later) = rest.split_at(n);
        rest = later;
        Some(run)
    })
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

    #[test]
    fn a_uuid_v7_key_leads_with_the_ids_clock_and_the_legacy_key_is_the_hash() {
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_765_000_000, 123_000_000);
        let (a, b) = (Uuid::new_v7(ts), Uuid::new_v7(ts));
        let (ka, kb) = (SeenKey::new("acme", &a), SeenKey::new("acme", &b));
        assert_eq!(ka.key[..6], a.as_bytes()[..6], "the id's millisecond clock first");
        assert_eq!(ka.key[..6], kb.key[..6]);
        assert_ne!(ka.key, kb.key, "two ids of one millisecond are told apart by the hash");
        assert_eq!(ka.key[6..], ka.legacy[..10]);
        assert_ne!(SeenKey::new("globex", &a).key, ka.key, "tenants never share ids");
        // keys of later ids sort later: live traffic appends to the table's end
        let later = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, 1_765_000_001, 0));
        assert!(SeenKey::new("acme", &later).key > ka.key);
        // any other id keeps the whole hash
        let v4 = Uuid::from_u64_pair(0x0123_4567_89ab_4cde, 0x8123_4567_89ab_cdef);
        assert_eq!(v4.get_version_num(), 4);
        assert_eq!(SeenKey::new("acme", &v4).key, SeenKey::new("acme", &v4).legacy);
    }

    #[test]
    fn close_keys_run_into_blocks_of_bounded_span_and_size() {
        let key = |n: u128| n.to_be_bytes();
        let span = BLOCK_SPAN;
        let sorted: Vec<[u8; 16]> = [0, 1, span - 1, span, 5 * span, 9 * span, 9 * span + 7]
            .into_iter()
            .map(key)
            .chain((0..BLOCK_KEYS as u128 + 3).map(|n| key(20 * span + n)))
            .collect();
        let runs: Vec<usize> = runs(&sorted).map(<[_]>::len).collect();
        // a span from its first key ends a run; so does its size
        assert_eq!(runs, [3, 1, 1, 2, BLOCK_KEYS, 3]);
        assert_eq!(runs.iter().sum::<usize>(), sorted.len());
    }

    #[tokio::test]
    async fn a_batch_of_live_ids_is_a_few_blocks_and_each_id_in_them_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotStore::connect(&crate::Location::File(dir.path().join("hot.db"))).await.unwrap();
        let v7 = |ms: u64| {
            Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000))
        };
        // 2,000 ids of two seconds (live traffic), one far older (a late event), one hashed (another version's id)
        let now = 1_765_000_000_000;
        let mut kept: Vec<SeenKey> = (0..2_000).map(|n| SeenKey::new("a", &v7(now + n))).collect();
        kept.push(SeenKey::new("a", &v7(now - 86_400_000)));
        kept.push(SeenKey::new("a", &Uuid::from_u64_pair(7, 7)));
        let before = hot.rows_written();
        keep(&hot, &kept, 1_000).await;
        assert_eq!(hot.rows_written() - before, 6, "4 blocks and 2 rows written (what a hosted libSQL bills)");
        let count = |table: &'static str| {
            let hot = &hot;
            async move {
                let conn = hot.db.conn().await.unwrap();
                let mut rows = conn.query(&format!("SELECT count(*) FROM {table}"), ()).await.unwrap();
                crate::int(&rows.next().await.unwrap().unwrap(), 0, "count").unwrap()
            }
        };
        assert_eq!(count(BLOCKS).await, 2000_usize.div_ceil(BLOCK_KEYS) as i64, "the live ids: blocks");
        assert_eq!(count(KEPT).await, 2, "the lone ids: rows");
        // every kept id is found, whichever way it was kept; neighbours that were never kept are not
        assert_eq!(hot.seen(&kept).await.unwrap(), kept.iter().copied().collect());
        let never: Vec<SeenKey> = [v7(now - 1), v7(now + 1_000), v7(now + 2_000), v7(now + 70_000)]
            .iter()
            .map(|id| SeenKey::new("a", id))
            .chain([SeenKey::new("b", &v7(now + 5))])
            .collect();
        assert_eq!(hot.seen(&never).await.unwrap(), HashSet::new());
        let mixed = [kept[1_999], never[0], kept[0], kept[2_001]];
        assert_eq!(hot.seen(&mixed).await.unwrap(), HashSet::from([kept[1_999], kept[0], kept[2_001]]));

        // the filter's memory is trusted from just past every key below its range's end, blocks included
        let conn = hot.db.tx_conn().await.unwrap();
        let tx = conn.transaction().await.unwrap();
        let renewal = hot.cover(&tx, "filter", &[(0, 0)]).await.unwrap().expect("a first range");
        let below: Vec<u128> = kept.iter().map(|k| u128::from_be_bytes(k.key)).filter(|k| *k < renewal.hi).collect();
        assert!(below.len() >= 2_000, "the live ids are below the range's end");
        assert!(below.iter().all(|k| *k < renewal.lo), "no kept key in {}..{}", renewal.lo, renewal.hi);
        assert!(renewal.lo <= u128::from_be_bytes(kept[1_999].key) + BLOCK_SPAN, "at most a span past the last");
    }

    /// Keeps `keys` at `at` as the filter's transaction does.
    async fn keep(hot: &HotStore, keys: &[SeenKey], at: i64) {
        let conn = hot.db.tx_conn().await.unwrap();
        let tx = conn.transaction().await.unwrap();
        remember(&tx, keys, at).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn prune_pass(hot: &HotStore, before: i64) -> usize {
        let (mut at, mut steps) = (Some(PruneSeenAt::default()), 0);
        while let Some(next) = at {
            at = hot.prune_seen(next, before).await.unwrap();
            steps += 1;
        }
        steps
    }

    /// The filter's transaction of a batch of `partition` from `from` to `next` that kept `kept`, the partition's
    /// batch before it appended.
    async fn record(hot: &HotStore, partition: u32, from: u64, next: u64, kept: &[SeenKey]) -> Result<()> {
        let batch = crate::hot::PendingBatch { partition, from, next, dropped: Vec::new() };
        let usage = crate::hot::FilterUsage { kept_ids: (kept.to_vec(), 1_000), ..Default::default() };
        // the partition's batch before this one, if any, ended at `from`; its first offset is not tracked here
        hot.db
            .conn()
            .await?
            .execute("UPDATE hot_filter_pending SET done = 1 WHERE partition = ?1", [i64::from(partition)])
            .await?;
        hot.record_filtered("filter", std::slice::from_ref(&batch), &[], &usage, &[]).await
    }

    #[tokio::test]
    async fn a_record_of_several_partitions_covers_each_and_fails_when_another_process_moved_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::Location::File(dir.path().join("hot.db"));
        let (a, b) = (HotStore::connect(&path).await.unwrap(), HotStore::connect(&path).await.unwrap());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let keys = |tenant: &str| -> Vec<SeenKey> {
            (0..200)
                .map(|n| {
                    let ts = uuid::Timestamp::from_unix(uuid::NoContext, now.as_secs(), n * 1_000_000);
                    SeenKey::new(tenant, &Uuid::new_v7(ts))
                })
                .collect()
        };
        let (k0, k1) = (keys("acme"), keys("globex"));
        let batch = |partition, from, next| crate::hot::PendingBatch { partition, from, next, dropped: Vec::new() };
        let usage = |kept: Vec<SeenKey>| crate::hot::FilterUsage { kept_ids: (kept, 1_000), ..Default::default() };
        // `a` records partitions 0 and 1 in one transaction
        let kept = [&k0[..100], &k1[..100]].concat();
        a.record_filtered("filter", &[batch(0, 0, 100), batch(1, 0, 100)], &[], &usage(kept), &[]).await.unwrap();
        // and remembers both: of each partition's 200 ids it looks up only the 100 it kept
        assert_eq!(a.recent().maybe_kept(0, &k0, u64::MAX), &k0[..100]);
        assert_eq!(a.recent().maybe_kept(1, &k1, u64::MAX), &k1[..100]);
        assert_eq!(a.seen_in(1, &k1).await.unwrap(), k1[..100].iter().copied().collect());
        // `b` takes partition 1 over (its batch appended and marked) and keeps ids of it
        b.filter_done("filter", 1, 0).await.unwrap();
        b.record_filtered("filter", &[batch(1, 100, 150)], &[], &usage(k1[100..150].to_vec()), &[]).await.unwrap();
        // `a`'s next record of both partitions fails on partition 1, and nothing of it is written
        let appended = [(0, 0), (1, 0)];
        let err = a
            .record_filtered("filter", &[batch(0, 100, 200), batch(1, 150, 200)], &[], &usage(Vec::new()), &appended)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("partition 1 moved to 150"), "{err}");
        assert_eq!(a.offset("filter", 0).await.unwrap(), 100, "partition 0 did not move either");
        // asked again, `a` looks partition 1's ids up, and finds b's
        assert_eq!(a.seen_in(1, &k1).await.unwrap().len(), 150);
    }

    #[tokio::test]
    async fn ids_another_filter_process_kept_are_found_once_its_commit_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::Location::File(dir.path().join("hot.db"));
        // two processes' hot tiers on one file: the partition moves from `a` to `b` (a rebalance)
        let (a, b) = (HotStore::connect(&path).await.unwrap(), HotStore::connect(&path).await.unwrap());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let keys: Vec<SeenKey> = (0..300)
            .map(|n| {
                let ts = uuid::Timestamp::from_unix(uuid::NoContext, now.as_secs(), n * 1_000_000);
                SeenKey::new("acme", &Uuid::new_v7(ts))
            })
            .collect();
        record(&a, 0, 0, 100, &keys[..100]).await.unwrap();
        // `a` remembers what it kept: of 0..200 it finds its 100, and looks up only those
        assert_eq!(a.seen_in(0, &keys[..200]).await.unwrap(), keys[..100].iter().copied().collect());
        assert_eq!(a.recent().maybe_kept(0, &keys[..200], u64::MAX), &keys[..100]);
        // `b` has no memory of the partition: it looks every id up, and keeps 200..300
        assert_eq!(b.seen_in(0, &keys[..200]).await.unwrap().len(), 100);
        record(&b, 0, 100, 200, &keys[200..]).await.unwrap();
        // `a`'s memory alone would call b's ids new...
        assert_eq!(a.seen_in(0, &keys[200..]).await.unwrap(), HashSet::new());
        // ...so its next transaction of the partition fails, as the position is not the one it left
        let err = record(&a, 0, 200, 300, &keys[200..]).await.unwrap_err().to_string();
        assert!(err.contains("moved to 200"), "{err}");
        // and asked again, it looks them up
        assert_eq!(a.seen_in(0, &keys[200..]).await.unwrap().len(), 100);
        assert_eq!(a.seen_in(0, &keys).await.unwrap().len(), 200);
    }

    /// A filter marks the batch it appended in its next transaction; by then another member may have taken the
    /// partition over and recorded a later batch, which must stay pending until that member appends it.
    #[tokio::test]
    async fn a_late_mark_of_an_appended_batch_marks_that_batch_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::Location::File(dir.path().join("hot.db"));
        let (a, b) = (HotStore::connect(&path).await.unwrap(), HotStore::connect(&path).await.unwrap());
        let batch = |partition, from, next| crate::hot::PendingBatch { partition, from, next, dropped: Vec::new() };
        let usage = crate::hot::FilterUsage::default();
        // `a` records partition 0's batch 0..100 and appends it, but has not marked it yet
        a.record_filtered("filter", &[batch(0, 0, 100)], &[], &usage, &[]).await.unwrap();
        // `b` takes the partition over: appends that batch again (a no-op), marks it, records 100..200
        b.filter_done("filter", 0, 0).await.unwrap();
        b.record_filtered("filter", &[batch(0, 100, 200)], &[], &usage, &[]).await.unwrap();
        // `a`'s next transaction (of another partition) carries its late mark
        a.record_filtered("filter", &[batch(1, 0, 50)], &[], &usage, &[(0, 0)]).await.unwrap();
        let pending = a.filter_pending("filter").await.unwrap();
        assert_eq!(pending, vec![batch(0, 100, 200), batch(1, 0, 50)], "b's batch is still to be appended");
    }

    #[tokio::test]
    async fn kept_ids_are_found_pruned_past_the_window_and_an_earlier_versions_ids_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hot.db");
        let hot = HotStore::connect(&crate::Location::File(path.clone())).await.unwrap();
        let v7 = |secs: u64, n: u32| Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, n * 1_000_000));
        // old ids over several statements and pruning steps: 5,000 live ones in 100 blocks a span apart and 2,500
        // hashed ones; 300 recent ones, one id kept only by tenant b
        let old: Vec<SeenKey> = (0..5_000)
            .map(|n| SeenKey::new("a", &v7(1_765_000_000 + u64::from(n / 50) * 70, n % 50)))
            .chain((0..2_500).map(|n| SeenKey::new("a", &Uuid::from_u64_pair(6, n))))
            .collect();
        let recent: Vec<SeenKey> = (0..300).map(|n| SeenKey::new("a", &Uuid::from_u64_pair(7, n))).collect();
        keep(&hot, &old, 1_000).await;
        keep(&hot, &recent, 9_000).await;
        keep(&hot, &[SeenKey::new("b", &Uuid::from_u64_pair(8, 1))], 9_000).await;
        let asked: Vec<SeenKey> = [
            old[17],
            recent[5],
            SeenKey::new("a", &Uuid::from_u64_pair(8, 1)),
            SeenKey::new("c", &Uuid::from_u64_pair(9, 9)),
        ]
        .into();
        assert_eq!(hot.seen(&asked).await.unwrap(), HashSet::from([old[17], recent[5]]), "b's id is not a's");
        // keeping a key again changes nothing (a batch replayed after a crash)
        keep(&hot, &old[..10], 1_000).await;

        // a pass in steps of PRUNE_CHUNK rows and PRUNE_BLOCKS blocks deletes what was kept before 5,000, nothing else
        let steps = prune_pass(&hot, 5_000).await;
        assert_eq!(steps, 5, "2 steps of rows, 2 of blocks, 1 of the legacy table");
        assert_eq!(hot.seen(&old).await.unwrap(), HashSet::new());
        assert_eq!(hot.seen(&recent).await.unwrap().len(), 300);

        // ids an earlier version kept (hashed keys in hot_seen_ids) are read until pruning has emptied the table
        let legacy = SeenKey::new("a", &v7(1_765_000_100, 1));
        hot.db
            .tx_conn()
            .await
            .unwrap()
            .execute("INSERT INTO hot_seen_ids (id, at) VALUES (?1, 2000)", [Value::Blob(legacy.legacy.to_vec())])
            .await
            .unwrap();
        let reopened = HotStore::connect(&crate::Location::File(path)).await.unwrap();
        assert_eq!(reopened.seen(&[legacy]).await.unwrap(), HashSet::from([legacy]));
        prune_pass(&reopened, 1_500).await;
        assert!(reopened.legacy_ids.load(Ordering::Relaxed), "still inside the window");
        assert_eq!(reopened.seen(&[legacy]).await.unwrap(), HashSet::from([legacy]));
        prune_pass(&reopened, 5_000).await;
        assert!(!reopened.legacy_ids.load(Ordering::Relaxed), "emptied: lookups read the current table alone");
        assert_eq!(reopened.seen(&[legacy]).await.unwrap(), HashSet::new());
        assert_eq!(reopened.seen(&recent).await.unwrap().len(), 300);
    }
}
