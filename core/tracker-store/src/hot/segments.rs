//! The recent events as columnar segments ([`tracker_segments`]): each stats batch is one segment, stored with its
//! manifest rows in the transaction that also adds the batch's counts and moves the consumer's position, so a
//! crash at any point leaves either the whole segment and its position or neither (the batch is then read again).
//!
//! - `hot_segments`: one row per segment (its size, level and latest arrival), `hot_segment_data` its bytes (the
//!   Arrow IPC file, in the database itself, so that one commit covers segment, manifest and position, on a local
//!   file as on a shared libSQL server), `hot_segment_tenants` per tenant its rows, time range and Bloom filter.
//! - Small segments (of batches taken under light load) are **merged** in the background, eight of a level into
//!   one of the next ([`HotStore::merge_step`]), so a read opens few; they are **deleted whole** on retention, by
//!   time and by bytes ([`HotStore::expire_segments`]), and each deletion raises the tenant's floor
//!   (`hot_floors`): the hot tier holds every event of the tenant after it, which is where the query router's hot
//!   range starts.
//! - Decoded segments are kept in memory, least recently used first out, within [`CACHE_BYTES`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tracker_protocol::Event;
use tracker_segments::{Bloom, Key, Segment};

use super::HotStore;
use crate::{Result, StoreError, int};

/// Memory the decoded segments may take.
pub(super) const CACHE_BYTES: usize = 64 << 20;
/// Memory the cached Bloom filters may take (all of them are dropped when they would take more).
const BLOOM_CACHE_BYTES: usize = 16 << 20;
/// Segments of a level merged into one of the next.
const FAN_IN: i64 = 8;
/// The level a segment is at, by rows: a batch of up to 64 events is level 0, then ×8 each level; level 3 (a full
/// consumer batch, 4,096 events, and more) is never merged again, so a merge holds at most 32,760 events in
/// memory.
fn level_of(rows: usize) -> i64 {
    match rows {
        0..64 => 0,
        64..512 => 1,
        512..4096 => 2,
        _ => TOP_LEVEL,
    }
}
const TOP_LEVEL: i64 = 3;
/// Times a read lists the segments again when one it listed was merged or deleted meanwhile.
const RETRIES: usize = 5;

/// A segment a read may need: its id and the tenant's latest event time in it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub id: i64,
    pub ts_max: i64,
}

/// Decoded segments, least recently used first out.
#[derive(Debug, Default)]
pub(super) struct Cache {
    segments: HashMap<i64, (Arc<Segment>, u64)>,
    /// Blooms by segment and tenant (a few KB each, read before the segment is).
    blooms: HashMap<(i64, String), Arc<Bloom>>,
    bloom_bytes: usize,
    bytes: usize,
    tick: u64,
}

impl Cache {
    fn get(&mut self, id: i64) -> Option<Arc<Segment>> {
        self.tick += 1;
        let tick = self.tick;
        self.segments.get_mut(&id).map(|(s, used)| {
            *used = tick;
            s.clone()
        })
    }

    fn put(&mut self, id: i64, seg: Arc<Segment>) {
        self.tick += 1;
        self.bytes += seg.memory();
        if let Some((old, _)) = self.segments.insert(id, (seg, self.tick)) {
            self.bytes -= old.memory();
        }
        while self.bytes > CACHE_BYTES && self.segments.len() > 1 {
            let Some(oldest) = self.segments.iter().min_by_key(|(_, (_, used))| *used).map(|(id, _)| *id) else {
                break;
            };
            self.forget(oldest);
        }
    }

    fn forget(&mut self, id: i64) {
        if let Some((s, _)) = self.segments.remove(&id) {
            self.bytes -= s.memory();
        }
        let mut freed = 0;
        self.blooms.retain(|(seg, _), b| {
            freed += if *seg == id { b.bytes() } else { 0 };
            *seg != id
        });
        self.bloom_bytes -= freed;
    }

    fn put_bloom(&mut self, id: i64, tenant: &str, bloom: Arc<Bloom>) {
        if self.bloom_bytes + bloom.bytes() > BLOOM_CACHE_BYTES {
            self.blooms.clear();
            self.bloom_bytes = 0;
        }
        self.bloom_bytes += bloom.bytes();
        if let Some(old) = self.blooms.insert((id, tenant.to_owned()), bloom) {
            self.bloom_bytes -= old.bytes();
        }
    }
}

impl HotStore {
    /// `events` as one segment, built before the batch's transaction (so the other writers' turns go on while it
    /// compresses), numbered from the next position as it is now. `None` for no events.
    pub(super) async fn build_segment(&self, events: &[Event]) -> Result<Option<(i64, tracker_segments::Built)>> {
        if events.is_empty() {
            return Ok(None);
        }
        let conn = self.db.conn().await?;
        let next = next_seq(&conn).await?;
        drop(conn);
        Ok(Some((next, number_and_build(events, next)?)))
    }

    /// Adds the segment [`HotStore::build_segment`] made, in `tx` (the batch's transaction). Had another writer
    /// taken positions since, it is built again from the positions now free (a shared hot tier with several stats
    /// consumers), so positions stay unique.
    pub(super) async fn add_segment(
        &self,
        tx: &libsql::Transaction,
        events: &[Event],
        built: Option<(i64, tracker_segments::Built)>,
    ) -> Result<()> {
        let Some((numbered_from, built)) = built else { return Ok(()) };
        let next = next_seq(tx).await?;
        let built = if next == numbered_from { built } else { number_and_build(events, next)? };
        insert(tx, &built, level_of(built.rows)).await?;
        let next = next.saturating_add(i64::try_from(events.len()).unwrap_or(i64::MAX));
        tx.execute(
            "INSERT INTO hot_next_seq (id, next) VALUES (0, ?1) ON CONFLICT DO UPDATE SET next = excluded.next",
            [next],
        )
        .await?;
        Ok(())
    }

    /// Which of `events` the segments already hold (a copy that reached the filtered log twice: a log that
    /// delivers at least once after an outage), or that came earlier in `events`, by index. A copy has the same
    /// tenant, time and id: each segment holding the tenant's events in the batch's time range is gone through
    /// once, its rows in that range looked up by id. (Looking each event up among the rows of its own millisecond
    /// instead took a row per event and millisecond: quadratic for a tenant whose clients send whole-second or
    /// equal times, 5,000 events/s into the hot tier in the all-in-one benchmark.)
    pub(super) async fn stored_before(&self, events: &[Event]) -> Result<std::collections::HashSet<usize>> {
        let mut out = std::collections::HashSet::new();
        // per tenant, the batch's first event of each id
        let mut by_tenant: HashMap<&str, foldhash::HashMap<&[u8], usize>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            match by_tenant.entry(e.key_prefix.as_str()).or_default().entry(e.event_id.as_bytes().as_slice()) {
                std::collections::hash_map::Entry::Vacant(first) => {
                    first.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(_) => {
                    out.insert(i);
                }
            }
        }
        for (tenant, ids) in by_tenant {
            let times = ids.values().filter_map(|i| events.get(*i)).map(|e| e.timestamp);
            let (Some(from), Some(to)) = (times.clone().min(), times.max()) else { continue };
            self.each_segment(tenant, from, to.saturating_add(1), None, |visit| {
                let Some((_, seg)) = visit else { return Ok(true) };
                for r in seg.rows(tenant, from, to.saturating_add(1)) {
                    if let Some(&i) = ids.get(seg.event_id(r))
                        && events.get(i).is_some_and(|e| e.timestamp == seg.ts(r))
                    {
                        out.insert(i);
                    }
                }
                Ok(true)
            })
            .await?;
        }
        Ok(out)
    }

    /// The segments holding events of `tenant` in `[from, to)`, and that may hold `key` when given, latest first.
    pub(super) async fn candidates(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        key: Option<Key<'_>>,
    ) -> Result<Vec<Candidate>> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT segment, ts_max FROM hot_segment_tenants
                 WHERE key_prefix = ?1 AND ts_max >= ?2 AND ts_min < ?3 ORDER BY ts_max DESC, segment DESC",
                (tenant, from, to),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push(Candidate { id: int(&row, 0, "segment")?, ts_max: int(&row, 1, "ts_max")? });
        }
        drop(rows);
        let Some(key) = key else { return Ok(out) };
        let mut kept = Vec::with_capacity(out.len());
        for c in out {
            match self.bloom(c.id, tenant).await? {
                Some(bloom) if !bloom.may_contain(&key) => {}
                _ => kept.push(c),
            }
        }
        Ok(kept)
    }

    async fn bloom(&self, id: i64, tenant: &str) -> Result<Option<Arc<Bloom>>> {
        let cached = self.segments.lock().ok().and_then(|c| c.blooms.get(&(id, tenant.to_owned())).cloned());
        if cached.is_some() {
            return Ok(cached);
        }
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query("SELECT bloom FROM hot_segment_tenants WHERE key_prefix = ?1 AND segment = ?2", (tenant, id))
            .await?;
        let bloom = match rows.next().await? {
            Some(row) => match row.get_value(0)? {
                libsql::Value::Blob(b) => Bloom::from_bytes(&b).map(Arc::new),
                _ => None,
            },
            None => None,
        };
        if let (Some(b), Ok(mut cache)) = (&bloom, self.segments.lock()) {
            cache.put_bloom(id, tenant, b.clone());
        }
        Ok(bloom)
    }

    /// Segment `id`, decoded (from the cache when it is there); `None` when it was merged or deleted meanwhile.
    pub(super) async fn segment(&self, id: i64) -> Result<Option<Arc<Segment>>> {
        if let Some(s) = self.segments.lock().ok().and_then(|mut c| c.get(id)) {
            return Ok(Some(s));
        }
        let conn = self.db.conn().await?;
        let mut rows = conn.query("SELECT data FROM hot_segment_data WHERE id = ?1", [id]).await?;
        let data = match rows.next().await? {
            Some(row) => match row.get_value(0)? {
                libsql::Value::Blob(b) => b,
                _ => return Err(StoreError::BadColumn("data")),
            },
            None => return Ok(None),
        };
        drop(rows);
        let seg =
            tokio::task::spawn_blocking(move || Segment::decode(&data)).await.map_err(std::io::Error::other)??;
        let seg = Arc::new(seg);
        if let Ok(mut c) = self.segments.lock() {
            c.put(id, seg.clone());
        }
        Ok(Some(seg))
    }

    /// Reads the segments [`HotStore::candidates`] lists, in its order, with `visit` (which answers whether to go
    /// on); when one was merged or deleted meanwhile, `visit` is called with `None` (to clear what it gathered),
    /// and the segments are listed again.
    pub(super) async fn each_segment(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        key: Option<Key<'_>>,
        mut visit: impl FnMut(Option<(&Candidate, &Arc<Segment>)>) -> Result<bool>,
    ) -> Result<()> {
        'listing: for _ in 0..RETRIES {
            for c in self.candidates(tenant, from, to, key).await? {
                let Some(seg) = self.segment(c.id).await? else {
                    visit(None)?;
                    continue 'listing;
                };
                if !visit(Some((&c, &seg)))? {
                    break;
                }
            }
            return Ok(());
        }
        Err(StoreError::Conflict("the hot tier's segments kept changing during the read; try again".into()))
    }

    /// One merge, if a level has [`FAN_IN`] segments: its oldest ones become one of the next level, in one
    /// transaction. Returns whether it merged.
    pub async fn merge_step(&self) -> Result<bool> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query(
                "SELECT id, level FROM hot_segments WHERE level = (SELECT level FROM hot_segments WHERE level < ?1
                   GROUP BY level HAVING COUNT(*) >= ?2 ORDER BY level LIMIT 1)
                 ORDER BY id LIMIT ?2",
                (TOP_LEVEL, FAN_IN),
            )
            .await?;
        let (mut ids, mut level) = (Vec::new(), 0);
        while let Some(row) = rows.next().await? {
            ids.push(int(&row, 0, "id")?);
            level = int(&row, 1, "level")?;
        }
        drop(rows);
        if ids.is_empty() {
            return Ok(false);
        }
        let mut parts = Vec::with_capacity(ids.len());
        for id in &ids {
            match self.segment(*id).await? {
                Some(s) => parts.push(s),
                None => return Ok(false),
            }
        }
        let built = tokio::task::spawn_blocking(move || {
            let events: Vec<(i64, Event)> =
                parts.iter().flat_map(|s| (0..s.len()).map(|i| (s.seq(i), s.event(i)))).collect();
            tracker_segments::build(events.iter().map(|(seq, e)| (*seq, e)).collect())
        })
        .await
        .map_err(std::io::Error::other)??;
        let conn = self.db.derived_tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut removed = 0;
        for id in &ids {
            removed += delete(&tx, *id).await?;
        }
        if removed != ids.len() {
            // another merge or retention took some of them: leave it to the next step
            tx.rollback().await?;
            return Ok(false);
        }
        insert(&tx, &built, level_of(built.rows).max(level + 1)).await?;
        tx.commit().await?;
        self.forget(&ids);
        Ok(true)
    }

    /// Deletes, in one transaction, up to `most` whole segments: those whose events all arrived before `before`
    /// (ms), then the oldest while all of them take more than `max_bytes`. Raises each affected tenant's floor to
    /// the latest event time it lost. Returns the events deleted and whether more may be due.
    pub(super) async fn expire_segments(
        &self,
        tx: &libsql::Transaction,
        before: i64,
        max_bytes: u64,
        most: i64,
    ) -> Result<(u64, Vec<i64>, bool)> {
        let mut rows = tx
            .query(
                "SELECT id, rows, bytes, received_max < ?1 FROM hot_segments ORDER BY received_max, id LIMIT ?2",
                (before, most.saturating_add(1)),
            )
            .await?;
        let mut oldest = Vec::new();
        while let Some(row) = rows.next().await? {
            let bytes = u64::try_from(int(&row, 2, "bytes")?).unwrap_or(0);
            oldest.push((int(&row, 0, "id")?, int(&row, 1, "rows")?, bytes, int(&row, 3, "expired")? != 0));
        }
        drop(rows);
        let mut rows = tx.query("SELECT COALESCE(SUM(bytes), 0) FROM hot_segments", ()).await?;
        let mut total = match rows.next().await? {
            Some(row) => u64::try_from(int(&row, 0, "bytes")?).unwrap_or(0),
            None => 0,
        };
        drop(rows);
        let (mut deleted, mut ids, mut more) = (0u64, Vec::new(), false);
        for (i, (id, n, bytes, expired)) in oldest.into_iter().enumerate() {
            if !expired && total <= max_bytes {
                break;
            }
            if i64::try_from(i).unwrap_or(i64::MAX) >= most {
                more = true;
                break;
            }
            tx.execute(
                "INSERT INTO hot_floors (key_prefix, ts) SELECT key_prefix, ts_max FROM hot_segment_tenants
                 WHERE segment = ?1 ON CONFLICT DO UPDATE SET ts = MAX(ts, excluded.ts)",
                [id],
            )
            .await?;
            delete(tx, id).await?;
            total = total.saturating_sub(bytes);
            deleted += u64::try_from(n).unwrap_or(0);
            ids.push(id);
        }
        Ok((deleted, ids, more))
    }

    pub(super) fn forget(&self, ids: &[i64]) {
        if let Ok(mut c) = self.segments.lock() {
            for id in ids {
                c.forget(*id);
            }
        }
    }

    /// The latest event time of `tenant` the hot tier no longer holds (deleted on retention), if any: it holds
    /// every event of the tenant after it.
    pub async fn floor(&self, tenant: &str) -> Result<Option<i64>> {
        let conn = self.db.conn().await?;
        let mut rows = conn.query("SELECT ts FROM hot_floors WHERE key_prefix = ?1", [tenant]).await?;
        match rows.next().await? {
            Some(row) => Ok(Some(int(&row, 0, "ts")?)),
            None => Ok(None),
        }
    }

    /// The id of every event the hot tier holds, segment by segment, for an operator's check (the chaos run's
    /// ledger). Read it with the node stopped: a merge running meanwhile may show an event twice or not at all.
    pub async fn each_event_id(&self, mut visit: impl FnMut(uuid::Uuid)) -> Result<()> {
        let conn = self.db.conn().await?;
        let mut ids = Vec::new();
        let mut rows = conn.query("SELECT id FROM hot_segments ORDER BY id", ()).await?;
        while let Some(row) = rows.next().await? {
            ids.push(int(&row, 0, "id")?);
        }
        drop(rows);
        for id in ids {
            let Some(seg) = self.segment(id).await? else { continue };
            for i in 0..seg.len() {
                visit(uuid::Uuid::from_slice(seg.event_id(i)).map_err(|_| StoreError::BadColumn("event_id"))?);
            }
        }
        Ok(())
    }

    /// Segments and the bytes they take.
    pub async fn segment_totals(&self) -> Result<(u64, u64, u64)> {
        let conn = self.db.conn().await?;
        let mut rows = conn
            .query("SELECT COUNT(*), COALESCE(SUM(rows), 0), COALESCE(SUM(bytes), 0) FROM hot_segments", ())
            .await?;
        let row = rows.next().await?.ok_or(StoreError::BadColumn("count"))?;
        let n = |i, c| int(&row, i, c).map(|v| u64::try_from(v).unwrap_or(0));
        Ok((n(0, "segments")?, n(1, "rows")?, n(2, "bytes")?))
    }
}

/// The position the next stored event gets.
async fn next_seq(conn: &libsql::Connection) -> Result<i64> {
    let mut rows = conn.query("SELECT next FROM hot_next_seq WHERE id = 0", ()).await?;
    Ok(match rows.next().await? {
        Some(row) => int(&row, 0, "next")?,
        None => 1,
    })
}

/// A segment of `events`, positioned from `next` in the order they came: a page cursor `(ts, seq)` stays valid
/// across merges.
fn number_and_build(events: &[Event], next: i64) -> Result<tracker_segments::Built> {
    Ok(tracker_segments::build(events.iter().zip(next..).map(|(e, seq)| (seq, e)).collect())?)
}

async fn insert(tx: &libsql::Transaction, built: &tracker_segments::Built, level: i64) -> Result<()> {
    let received_max = built.tenants.iter().map(|t| t.received_max).max().unwrap_or_default();
    let mut rows = tx
        .query(
            "INSERT INTO hot_segments (level, rows, bytes, received_max) VALUES (?1, ?2, ?3, ?4) RETURNING id",
            (
                level,
                i64::try_from(built.rows).unwrap_or(i64::MAX),
                i64::try_from(built.bytes.len()).unwrap_or(i64::MAX),
                received_max,
            ),
        )
        .await?;
    let id = match rows.next().await? {
        Some(row) => int(&row, 0, "id")?,
        None => return Err(StoreError::BadColumn("id")),
    };
    drop(rows);
    tx.execute("INSERT INTO hot_segment_data (id, data) VALUES (?1, ?2)", (id, built.bytes.as_slice())).await?;
    let part = tx
        .prepare(
            "INSERT INTO hot_segment_tenants (key_prefix, segment, ts_min, ts_max, rows, bloom)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .await?;
    for t in &built.tenants {
        part.execute((
            t.tenant.as_str(),
            id,
            t.ts_min,
            t.ts_max,
            i64::try_from(t.rows).unwrap_or(i64::MAX),
            t.bloom.to_bytes(),
        ))
        .await?;
        part.reset();
    }
    Ok(())
}

/// Deletes segment `id`; 1 when it was there.
async fn delete(tx: &libsql::Transaction, id: i64) -> Result<usize> {
    tx.execute("DELETE FROM hot_segment_tenants WHERE segment = ?1", [id]).await?;
    tx.execute("DELETE FROM hot_segment_data WHERE id = ?1", [id]).await?;
    Ok(usize::try_from(tx.execute("DELETE FROM hot_segments WHERE id = ?1", [id]).await?).unwrap_or(0))
}

/// Per-process state of the segments: the cache.
pub(super) type Shared = Arc<Mutex<Cache>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::Location;
    use crate::hot::EventQuery;

    fn event(n: u64) -> Event {
        // ten events per millisecond, each tenant's in a different order than their positions
        let ts = 1_700_000_000_000 + i64::try_from((n * 7919) % 600).unwrap();
        crate::hot::test_event(n, ["acme", "globex"][(n % 2) as usize], ts, ts, &[("c", format!("v{}", n % 13))])
    }

    async fn all_pages(hot: &HotStore, tenant: &str, q: &EventQuery, merge: bool) -> Vec<serde_json::Value> {
        let (mut out, mut before) = (Vec::new(), None);
        loop {
            let page = hot.events(tenant, &EventQuery { before, ..q.clone() }).await.unwrap();
            out.extend(page.events.iter().map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap()));
            // merges between pages: a cursor is a position, which a merge keeps
            while merge && hot.merge_step().await.unwrap() {}
            match page.next {
                Some(next) => before = Some(next),
                None => return out,
            }
        }
    }

    #[tokio::test]
    async fn pages_list_every_event_once_newest_first_across_segments_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotStore::connect(&Location::File(dir.path().join("hot.db"))).await.unwrap();
        let events: Vec<Event> = (0..3000).map(event).collect();
        // batches of 1 to 200 events: many small segments
        let (mut at, mut size) = (0usize, 1usize);
        while at < events.len() {
            let end = (at + size).min(events.len());
            hot.apply_events("stats", 0, end as u64, &events[at..end]).await.unwrap();
            (at, size) = (end, size * 3 % 199 + 1);
        }
        let (segments, rows, _) = hot.segment_totals().await.unwrap();
        assert_eq!(rows, 3000);
        for (q, merge) in [
            (EventQuery { limit: 37, ..EventQuery::default() }, true),
            (EventQuery { limit: 11, param: Some(("c".into(), "v4".into())), ..EventQuery::default() }, false),
            (
                EventQuery {
                    limit: 50,
                    from: Some(1_700_000_000_100),
                    to: Some(1_700_000_000_250),
                    ..Default::default()
                },
                false,
            ),
        ] {
            for tenant in ["acme", "globex"] {
                let got = all_pages(&hot, tenant, &q, merge).await;
                let mut want: Vec<(i64, String)> = events
                    .iter()
                    .filter(|e| e.key_prefix == tenant)
                    .filter(|e| q.param.as_ref().is_none_or(|(k, v)| e.params.get(k) == Some(v)))
                    .filter(|e| q.from.is_none_or(|f| e.timestamp >= f) && q.to.is_none_or(|t| e.timestamp < t))
                    .map(|e| (e.timestamp, e.event_id.to_string()))
                    .collect();
                want.sort();
                let got_ids: Vec<(i64, String)> = got
                    .iter()
                    .map(|e| (e["timestamp"].as_i64().unwrap(), e["event_id"].as_str().unwrap().to_owned()))
                    .collect();
                let mut sorted = got_ids.clone();
                sorted.sort();
                sorted.reverse();
                assert_eq!(got_ids, sorted, "newest first");
                sorted.reverse();
                assert_eq!(sorted, want, "{tenant}: every event once");
            }
        }
        // the merges left fewer, larger segments with the same events
        let (after, rows, _) = hot.segment_totals().await.unwrap();
        assert!(after * 3 <= segments, "{segments} segments, {after} after merging");
        assert_eq!(rows, 3000);
    }

    /// A log that delivers at least once may hand the stats consumer a batch again under new positions: each copy
    /// is found in the segments (or earlier in its batch) and stored once, also among many events of one
    /// millisecond, as a client's batches with whole-second times are.
    #[tokio::test]
    async fn copies_of_stored_events_are_stored_once_also_when_their_times_are_equal() {
        let dir = tempfile::tempdir().unwrap();
        let hot = HotStore::connect(&Location::File(dir.path().join("hot.db"))).await.unwrap();
        let at = |n: u64, ts: i64| crate::hot::test_event(n, ["acme", "globex"][(n % 2) as usize], ts, ts, &[]);
        let first: Vec<Event> = (0..600).map(|n| at(n, 1_700_000_000_000)).collect();
        hot.apply_events("stats", 0, 600, &first).await.unwrap();
        // 300 copies (of both tenants), 300 new events of the same millisecond, a copy within the
        // batch, and the id of an acme event sent by globex: another tenant's event, new
        let mut again: Vec<Event> = (300..900).map(|n| at(n, 1_700_000_000_000)).collect();
        again.push(at(700, 1_700_000_000_000));
        again.push(crate::hot::test_event(2, "globex", 1_700_000_000_000, 1_700_000_000_000, &[]));
        // an id the segments hold at another time is not a copy (a copy has the id's time)
        again.push(at(4, 1_700_000_000_001));
        let copies = hot.stored_before(&again).await.unwrap();
        let mut want: std::collections::HashSet<usize> = (0..300).collect();
        want.insert(600);
        assert_eq!(copies, want);
        hot.apply_events("stats", 0, 1_200, &again).await.unwrap();
        assert_eq!(hot.segment_totals().await.unwrap().1, 900 + 2);
    }

    #[tokio::test]
    async fn a_hot_tier_of_rows_moves_to_segments_and_its_floor_past_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hot.db");
        {
            let db = libsql::Builder::new_local(&path).build().await.unwrap();
            let conn = db.connect().unwrap();
            conn.execute_batch(
                "CREATE TABLE hot_events (seq INTEGER PRIMARY KEY, key_prefix TEXT NOT NULL, event_id TEXT NOT NULL,
                   event_type TEXT NOT NULL, ts INTEGER NOT NULL, received_at INTEGER NOT NULL,
                   tu_id TEXT NOT NULL DEFAULT '', body TEXT NOT NULL);
                 CREATE TABLE hot_params (seq INTEGER NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
                   key_prefix TEXT NOT NULL, ts INTEGER NOT NULL, event_type TEXT NOT NULL);
                 INSERT INTO hot_events (key_prefix, event_id, event_type, ts, received_at, body)
                   VALUES ('acme', 'a', 'click', 100, 100, '{}'), ('acme', 'b', 'click', 250, 250, '{}'),
                          ('globex', 'c', 'click', 90, 90, '{}');",
            )
            .await
            .unwrap();
        }
        let hot = HotStore::connect(&Location::File(path.clone())).await.unwrap();
        assert_eq!(hot.floor("acme").await.unwrap(), Some(250));
        assert_eq!(hot.floor("globex").await.unwrap(), Some(90));
        assert_eq!(hot.floor("initech").await.unwrap(), None);
        hot.apply_events("stats", 0, 1, &[event(1)]).await.unwrap();
        drop(hot);
        // and once only
        let hot = HotStore::connect(&Location::File(path)).await.unwrap();
        assert_eq!(hot.segment_totals().await.unwrap().1, 1);
        assert_eq!(hot.floor("acme").await.unwrap(), Some(250));
    }
}
