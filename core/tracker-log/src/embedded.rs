//! The embedded durable log on fjall.
//!
//! Layout (one fjall database, four keyspaces):
//! - `events`: key `partition:u32be || base_offset:u64be`, value a wire record set (stored in blob files: values
//!   are large, so compaction does not rewrite them);
//! - `index`: same key, value `append_ms:i64le || count:u32le || bytes:u64le` (small: offsets, retention and
//!   recovery never read the events themselves);
//! - `offsets`: key `group || 0x00 || partition:u32be`, value the next offset `u64le`;
//! - `idempotency`: key the idempotency key, value `append_ms:i64le || (partition:u32le base:u64le count:u32le)*`;
//! - `meta`: the partition count the log was created with.
//!
//! One writer thread owns all appends: it takes everything queued (group commit), writes it in one atomic fjall
//! batch, and fsyncs when any append in the group waits for durability or when the oldest unsynced append is older
//! than the commit window. Consumers only see offsets below the durable watermark.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracker_protocol::wire;

use crate::{AppendReceipt, EventLog, Filter, LogError, LogFuture, LogStatus, Polled, PolledSets, RawSet, RecordSet};

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct EmbeddedLogConfig {
    pub dir: PathBuf,
    pub partitions: u32,
    /// Longest time an [`EventLog::enqueue`]d append waits for its fsync.
    pub commit_window: Duration,
    /// Appends that may wait for the writer before producers are slowed down (backpressure, never drops).
    pub queue_capacity: usize,
    /// Record sets older than this are deleted (the newest of each partition is always kept).
    pub retention_age: Option<Duration>,
    /// Oldest record sets are deleted while the log holds more than this.
    pub retention_bytes: Option<u64>,
    /// How long an idempotency key answers with its first receipt.
    pub idempotency_ttl: Duration,
    pub retention_interval: Duration,
    /// fjall block cache.
    pub cache_bytes: u64,
}

impl EmbeddedLogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedLogConfig {
            dir: dir.into(),
            partitions: 24,
            commit_window: Duration::from_millis(5),
            queue_capacity: 4096,
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            retention_interval: Duration::from_secs(30),
            cache_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A group's record sets for one partition are merged up to this size (readers fetch whole record sets).
const MAX_SET_BYTES: usize = 1024 * 1024;

/// Record sets at least this large are stored as they come instead of being merged.
const MERGE_BELOW: usize = 64 * 1024;

/// One record set being assembled for a partition within a group.
struct Staged {
    base: u64,
    buf: Vec<u8>,
    count: u32,
    tags: u8,
}

/// What a group writes.
struct Staging {
    now: i64,
    open: BTreeMap<u32, Staged>,
    batch: fjall::OwnedWriteBatch,
    events: u64,
    sets: u64,
}

/// Largest group the writer commits at once.
const MAX_GROUP_BYTES: usize = 8 * 1024 * 1024;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn entry_key(partition: u32, offset: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&partition.to_be_bytes());
    k[4..].copy_from_slice(&offset.to_be_bytes());
    k
}

fn offset_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(4..12)?.try_into().ok()?))
}

#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    base: u64,
    append_ms: i64,
    count: u32,
    bytes: u64,
    /// `tracker_protocol::wire` tags of the set (entries written before tags existed read as unknown).
    tags: u8,
}

impl IndexEntry {
    fn encode(&self) -> [u8; 21] {
        let mut v = [0u8; 21];
        v[..8].copy_from_slice(&self.append_ms.to_le_bytes());
        v[8..12].copy_from_slice(&self.count.to_le_bytes());
        v[12..20].copy_from_slice(&self.bytes.to_le_bytes());
        v[20] = self.tags;
        v
    }

    fn decode(key: &[u8], v: &[u8]) -> Option<IndexEntry> {
        Some(IndexEntry {
            base: offset_of(key)?,
            append_ms: i64::from_le_bytes(v.get(..8)?.try_into().ok()?),
            count: u32::from_le_bytes(v.get(8..12)?.try_into().ok()?),
            bytes: u64::from_le_bytes(v.get(12..20)?.try_into().ok()?),
            tags: v.get(20).copied().unwrap_or(wire::TAGS_UNKNOWN),
        })
    }

    fn end(&self) -> u64 {
        self.base + u64::from(self.count)
    }
}

fn encode_receipt(at_ms: i64, parts: &[(u32, u64, u32)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + parts.len() * 16);
    v.extend_from_slice(&at_ms.to_le_bytes());
    for (p, base, count) in parts {
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&base.to_le_bytes());
        v.extend_from_slice(&count.to_le_bytes());
    }
    v
}

/// `(partition, first offset, count)` per record set of an append.
type Parts = Vec<(u32, u64, u32)>;

fn decode_receipt(v: &[u8]) -> Option<(i64, Parts)> {
    let at = i64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let parts = v
        .get(8..)?
        .chunks_exact(16)
        .filter_map(|c| {
            Some((
                u32::from_le_bytes(c.get(..4)?.try_into().ok()?),
                u64::from_le_bytes(c.get(4..12)?.try_into().ok()?),
                u32::from_le_bytes(c.get(12..16)?.try_into().ok()?),
            ))
        })
        .collect();
    Some((at, parts))
}

#[derive(Debug, Default)]
struct Stats {
    queued: AtomicU64,
    appended_events: AtomicU64,
    appended_record_sets: AtomicU64,
    fsyncs: AtomicU64,
    last_fsync_micros: AtomicU64,
    duplicates: AtomicU64,
    retention_deleted: AtomicU64,
    stored_bytes: AtomicU64,
}

struct Shared {
    db: Database,
    events: Keyspace,
    index: Keyspace,
    offsets: Keyspace,
    idempotency: Keyspace,
    partitions: u32,
    /// Per partition: every offset below this is on disk.
    durable_next: Vec<AtomicU64>,
    /// Appended but not yet fsynced data exists (the ticker only wakes the writer then).
    unsynced: AtomicBool,
    /// Fire-and-forget events waiting for the next commit, per partition, already in record-set layout.
    pending: Vec<Mutex<PendingSet>>,
    pending_bytes: AtomicU64,
    /// Bytes of appends queued for the writer (in KiB permits): producers wait when it is spent.
    budget: Arc<Semaphore>,
    failed: Mutex<Option<String>>,
    stats: Stats,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("partitions", &self.partitions).finish_non_exhaustive()
    }
}

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    fn fail(&self, why: String) {
        tracing::error!(error = %why, "event log writer failed; refusing writes until restart");
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(why);
        }
    }
}

type Ack = oneshot::Sender<Result<AppendReceipt, LogError>>;

/// Events of one partition accumulated between commits: a record set being built in place (header first).
#[derive(Debug)]
struct PendingSet {
    buf: Vec<u8>,
    count: u32,
    tags: u8,
}

impl PendingSet {
    fn new() -> Self {
        PendingSet { buf: empty_set(), count: 0, tags: 0 }
    }
}

fn empty_set() -> Vec<u8> {
    let mut buf = Vec::with_capacity(4096);
    buf.extend_from_slice(&[wire::RECORD_SET_VERSION, 0, 0, 0, 0]);
    buf
}

/// Fire-and-forget events held in memory before the writer is asked to flush at once.
const MAX_PENDING_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes of durable appends that may wait for the writer (backpressure beyond).
const QUEUE_BUDGET_KIB: usize = 16 * 1024;

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes / 1024 + 1).unwrap_or(u32::MAX).min(QUEUE_BUDGET_KIB as u32)
}

enum Cmd {
    Append {
        sets: Vec<RecordSet>,
        idempotency_key: Option<String>,
        ack: Option<Ack>,
        _permit: Option<OwnedSemaphorePermit>,
    },
    /// Commit the pending fire-and-forget events now (timer, or too many pending bytes).
    Tick,
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

impl Cmd {
    fn bytes(&self) -> usize {
        match self {
            Cmd::Append { sets, .. } => sets.iter().map(|s| s.bytes.len()).sum(),
            _ => 0,
        }
    }
}

/// The default [`EventLog`]: durable on local disk, one process.
#[derive(Debug)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Cmd>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl EmbeddedLog {
    /// The receipt remembered under an idempotency key (its own appends' keys, and [`EmbeddedLog::remember`]ed
    /// ones), if it has not expired.
    pub fn recall(&self, key: &str) -> Result<Option<AppendReceipt>, LogError> {
        Ok(self
            .shared
            .idempotency
            .get(key.as_bytes())?
            .and_then(|v| decode_receipt(&v))
            .map(|(_, parts)| AppendReceipt { parts, duplicate: true }))
    }

    /// Remembers the receipt of an append made elsewhere (a primary log without idempotency keys) under `key`, for
    /// the same time as its own keys.
    pub fn remember(&self, key: &str, receipt: &AppendReceipt) -> Result<(), LogError> {
        Ok(self.shared.idempotency.insert(key.as_bytes(), encode_receipt(now_ms(), &receipt.parts))?)
    }

    /// Makes every enqueued event durable now (instead of within the commit window).
    pub async fn flush(&self) -> Result<(), LogError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Cmd::Flush(done)).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)
    }

    /// Opens (or creates) the log and starts its writer. Blocking: call before serving or from `spawn_blocking`.
    pub fn open(cfg: EmbeddedLogConfig) -> Result<EmbeddedLog, LogError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| LogError::Storage(e.into()))?;
        // the journal is a write-ahead copy dropped once the memtable is flushed (where blobs are compressed):
        // compressing it too cost the writer thread an lz4 pass over every record set (about 10% of an import's
        // CPU, measured with perf on 2M events), for space the journal gives back within seconds
        let db = Database::builder(&cfg.dir)
            .cache_size(cfg.cache_bytes)
            .journal_compression(fjall::CompressionType::None)
            .open()?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let partitions = match meta.get("partitions")? {
            Some(v) => {
                let stored = v.as_ref().try_into().map(u32::from_le_bytes).unwrap_or(0);
                if stored != cfg.partitions {
                    return Err(LogError::PartitionMismatch {
                        path: cfg.dir.display().to_string(),
                        stored,
                        configured: cfg.partitions,
                    });
                }
                stored
            }
            None => {
                meta.insert("partitions", cfg.partitions.max(1).to_le_bytes())?;
                db.persist(PersistMode::SyncAll)?;
                cfg.partitions.max(1)
            }
        };
        let events = db.keyspace("events", || {
            // small memtables bound memory: at 1M events/s a 64 MiB default fills in a quarter second and several
            // sealed ones would wait for flushing
            KeyspaceCreateOptions::default()
                .with_kv_separation(Some(KvSeparationOptions::default()))
                .max_memtable_size(8 * 1024 * 1024)
        })?;
        let small = || KeyspaceCreateOptions::default().max_memtable_size(4 * 1024 * 1024);
        let index = db.keyspace("index", small)?;
        let offsets = db.keyspace("offsets", small)?;
        let idempotency = db.keyspace("idempotency", small)?;

        let mut next = vec![0u64; partitions as usize];
        let mut bytes = vec![0u64; partitions as usize];
        for p in 0..partitions {
            for kv in index.prefix(p.to_be_bytes()) {
                let (k, v) = kv.into_inner()?;
                if let Some(e) = IndexEntry::decode(&k, &v)
                    && let (Some(n), Some(b)) = (next.get_mut(p as usize), bytes.get_mut(p as usize))
                {
                    *n = e.end();
                    *b += e.bytes;
                }
            }
        }
        let shared = Arc::new(Shared {
            db,
            events,
            index,
            offsets,
            idempotency,
            partitions,
            durable_next: next.iter().map(|n| AtomicU64::new(*n)).collect(),
            unsynced: AtomicBool::new(false),
            pending: (0..partitions).map(|_| Mutex::new(PendingSet::new())).collect(),
            pending_bytes: AtomicU64::new(0),
            budget: Arc::new(Semaphore::new(QUEUE_BUDGET_KIB)),
            failed: Mutex::new(None),
            stats: Stats { stored_bytes: AtomicU64::new(bytes.iter().sum()), ..Stats::default() },
        });
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let writer = Writer {
            shared: shared.clone(),
            cfg: cfg.clone(),
            next,
            bytes,
            unsynced_since: None,
            last_retention: Instant::now(),
            last_idempotency_sweep: Instant::now(),
        };
        let writer = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Storage(e.into()))?;
        let ticker = {
            // weak: dropping the last EmbeddedLog handle closes the channel and stops the writer
            let tx = tx.downgrade();
            let shared = shared.clone();
            let window = cfg.commit_window.max(Duration::from_micros(100));
            let retention_every = cfg.retention_interval;
            std::thread::Builder::new()
                .name("log-ticker".into())
                .spawn(move || {
                    let mut last = Instant::now();
                    loop {
                        std::thread::sleep(window);
                        let due = last.elapsed() >= retention_every;
                        let Some(tx) = tx.upgrade() else { return };
                        if tx.is_closed() {
                            return;
                        }
                        let idle = !shared.unsynced.load(Ordering::Acquire)
                            && shared.pending_bytes.load(Ordering::Acquire) == 0;
                        if !due && idle {
                            continue;
                        }
                        if due {
                            last = Instant::now();
                        }
                        let _ = tx.try_send(Cmd::Tick);
                    }
                })
                .map_err(|e| LogError::Storage(e.into()))?
        };
        Ok(EmbeddedLog { shared, tx, threads: Mutex::new(vec![writer, ticker]) })
    }

    fn check_sets(&self, sets: &[RecordSet]) -> Result<(), LogError> {
        if let Some(why) = self.shared.failure() {
            return Err(LogError::Failed(why));
        }
        match sets.iter().find(|s| s.partition >= self.shared.partitions) {
            Some(s) => Err(LogError::NoSuchPartition(s.partition)),
            None => Ok(()),
        }
    }
}

impl Shared {
    fn poll(&self, partition: u32, from: u64, max_events: usize, filter: Filter) -> Result<Polled, LogError> {
        let s = self;
        let durable = s.durable(partition)?;
        let mut out = Polled { events: Vec::new(), next_offset: from };
        let mut scanned = 0usize;
        if from >= durable {
            return Ok(out);
        }
        // the batch's room at once: growing it event by event copies and faults in every larger buffer
        out.events.reserve(max_events.min(usize::try_from(durable - from).unwrap_or(usize::MAX)));
        'outer: for found in s.sets_from(partition, from, durable)? {
            let (k, entry) = found?;
            if filter.tags != 0 && entry.tags & filter.tags == 0 {
                // nothing this reader wants: move past the set without reading it
                let skipped = entry.end() - entry.base.max(from);
                scanned += usize::try_from(skipped).unwrap_or(usize::MAX);
                out.next_offset = entry.end();
                if scanned >= max_events {
                    break;
                }
                continue;
            }
            let Some(set) = s.events.get(k)? else {
                continue;
            };
            let corrupt = |source| LogError::Corrupt { partition, offset: entry.base, source };
            for (i, raw) in wire::record_set_events(&set).map_err(corrupt)?.enumerate() {
                let offset = entry.base + i as u64;
                if offset < from {
                    continue;
                }
                if offset >= durable {
                    break 'outer;
                }
                let raw = raw.map_err(corrupt)?;
                scanned += 1;
                out.next_offset = offset + 1;
                if (filter.keep)(raw) {
                    out.events.push((offset, wire::decode_event(raw).map_err(corrupt)?));
                }
                if scanned >= max_events {
                    break 'outer;
                }
            }
        }
        if scanned == 0 {
            // everything below `durable` from `from` on was deleted by retention: skip ahead
            out.next_offset = out.next_offset.max(from);
        }
        Ok(out)
    }

    /// The offset before which `partition`'s events are durable (readable).
    fn durable(&self, partition: u32) -> Result<u64, LogError> {
        let durable = self.durable_next.get(partition as usize).ok_or(LogError::NoSuchPartition(partition))?;
        Ok(durable.load(Ordering::Acquire))
    }

    /// The index entries (with their keys) of `partition`'s record sets that hold offsets from `from` on and
    /// below `durable`, in order: from the set holding `from`, or the first one after it (retention may have
    /// removed older ones).
    fn sets_from(
        &self,
        partition: u32,
        from: u64,
        durable: u64,
    ) -> Result<impl Iterator<Item = Result<(fjall::UserKey, IndexEntry), LogError>> + '_, LogError> {
        let start = self
            .index
            .range(entry_key(partition, 0)..=entry_key(partition, from))
            .next_back()
            .map(|g| g.key())
            .transpose()?
            .and_then(|k| offset_of(&k))
            .unwrap_or(0);
        Ok(self
            .index
            .range(entry_key(partition, start)..=entry_key(partition, u64::MAX))
            .map(|kv| kv.into_inner().map_err(LogError::from))
            .filter_map(|kv| match kv {
                Ok((k, v)) => IndexEntry::decode(&k, &v).map(|entry| Ok((k, entry))),
                Err(e) => Some(Err(e)),
            })
            .take_while(move |found| found.as_ref().map_or(true, |(_, entry)| entry.base < durable))
            .filter(move |found| found.as_ref().map_or(true, |(_, entry)| entry.end() > from)))
    }

    /// [`EventLog::poll_sets`]: whole stored sets from the one holding `from`, undecoded, until about
    /// `max_events` events.
    fn poll_sets(&self, partition: u32, from: u64, max_events: usize) -> Result<PolledSets, LogError> {
        let durable = self.durable(partition)?;
        let mut out = PolledSets { sets: Vec::new(), next_offset: from };
        if from >= durable {
            return Ok(out);
        }
        let mut scanned = 0u64;
        for found in self.sets_from(partition, from, durable)? {
            let (k, entry) = found?;
            let Some(set) = self.events.get(k)? else {
                continue;
            };
            let start = entry.base.max(from);
            // at most `max_events` in all: the last set may be handed out in part
            let end = entry.end().min(durable).min(start.saturating_add(max_events as u64 - scanned));
            let set = RawSet { base: entry.base, from: start, end, bytes: set.to_vec() };
            scanned += set.len();
            out.next_offset = set.end;
            out.sets.push(set);
            if scanned >= max_events as u64 {
                break;
            }
        }
        // offsets removed by retention are passed over: the scan starts at the first set that is left
        Ok(out)
    }
}

impl EmbeddedLog {
    fn group_key(group: &str, partition: u32) -> Result<Vec<u8>, LogError> {
        if !tracker_protocol::is_valid_name(group, 128) {
            return Err(LogError::InvalidGroup(group.to_owned()));
        }
        let mut k = group.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&partition.to_be_bytes());
        Ok(k)
    }
}

impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.shared.partitions
    }

    fn append(&self, sets: Vec<RecordSet>, idempotency_key: Option<String>) -> LogFuture<'_, AppendReceipt> {
        Box::pin(async move {
            self.check_sets(&sets)?;
            let (ack, rx) = oneshot::channel();
            let bytes = sets.iter().map(|s| s.bytes.len()).sum();
            // bounded by bytes, not by count: a queue of 1,000-event batches must not hold gigabytes
            let permit =
                self.shared.budget.clone().acquire_many_owned(kib(bytes)).await.map_err(|_| LogError::Closed)?;
            self.shared.stats.queued.fetch_add(1, Ordering::Relaxed);
            let cmd = Cmd::Append { sets, idempotency_key, ack: Some(ack), _permit: Some(permit) };
            self.tx.send(cmd).await.map_err(|_| LogError::Closed)?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn enqueue(&self, sets: Vec<RecordSet>) -> LogFuture<'_, ()> {
        Box::pin(async move {
            self.check_sets(&sets)?;
            for set in &sets {
                let events = set.bytes.get(5..).ok_or(LogError::Corrupt {
                    partition: set.partition,
                    offset: 0,
                    source: tracker_protocol::ProtocolError::MalformedRecord { reason: "record set without header" },
                })?;
                let Some(slot) = self.shared.pending.get(set.partition as usize) else { continue };
                let mut slot = slot.lock().map_err(|_| LogError::Failed("pending buffer poisoned".into()))?;
                slot.buf.extend_from_slice(events);
                slot.count += set.count;
                slot.tags |= set.tags;
                // counted while the slot is held: the writer takes the bytes out (and subtracts them) only after,
                // so the count never runs below zero
                self.shared.pending_bytes.fetch_add(events.len() as u64, Ordering::AcqRel);
            }
            let total = self.shared.pending_bytes.load(Ordering::Acquire);
            if total > MAX_PENDING_BYTES {
                // the writer is behind: wait for a commit instead of growing memory (backpressure, never a drop)
                let (done, rx) = oneshot::channel();
                self.tx.send(Cmd::Flush(done)).await.map_err(|_| LogError::Closed)?;
                rx.await.map_err(|_| LogError::Closed)?;
            }
            Ok(())
        })
    }

    fn poll_where(&self, partition: u32, from: u64, max_events: usize, filter: Filter) -> LogFuture<'_, Polled> {
        let shared = self.shared.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || shared.poll(partition, from, max_events, filter))
                .await
                .map_err(|_| LogError::Closed)?
        })
    }

    fn poll_sets(&self, partition: u32, from: u64, max_events: usize) -> LogFuture<'_, PolledSets> {
        let shared = self.shared.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || shared.poll_sets(partition, from, max_events))
                .await
                .map_err(|_| LogError::Closed)?
        })
    }

    fn commit_offset(&self, group: &str, partition: u32, next_offset: u64) -> LogFuture<'_, ()> {
        let key = Self::group_key(group, partition);
        Box::pin(async move {
            let key = key?;
            if partition >= self.shared.partitions {
                return Err(LogError::NoSuchPartition(partition));
            }
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || {
                shared.offsets.insert(key, next_offset.to_le_bytes())?;
                shared.db.persist(PersistMode::SyncData)?;
                Ok(())
            })
            .await
            .map_err(|_| LogError::Closed)?
        })
    }

    fn committed_offset(&self, group: &str, partition: u32) -> LogFuture<'_, Option<u64>> {
        let key = Self::group_key(group, partition);
        Box::pin(async move {
            let v = self.shared.offsets.get(key?)?;
            Ok(v.and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes)))
        })
    }

    fn status(&self) -> LogStatus {
        let st = &self.shared.stats;
        let error = self.shared.failure();
        LogStatus {
            backend: "embedded",
            healthy: error.is_none() && !self.tx.is_closed(),
            error,
            partitions: self.shared.partitions,
            queued: st.queued.load(Ordering::Relaxed),
            appended_events: st.appended_events.load(Ordering::Relaxed),
            appended_record_sets: st.appended_record_sets.load(Ordering::Relaxed),
            fsyncs: st.fsyncs.load(Ordering::Relaxed),
            last_fsync_micros: st.last_fsync_micros.load(Ordering::Relaxed),
            duplicates: st.duplicates.load(Ordering::Relaxed),
            retention_deleted_record_sets: st.retention_deleted.load(Ordering::Relaxed),
            stored_bytes: st.stored_bytes.load(Ordering::Relaxed),
            spooled_events: 0,
        }
    }

    fn shutdown(&self) -> LogFuture<'_, ()> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self.tx.send(Cmd::Shutdown(tx)).await.is_ok() {
                let _ = rx.await;
            }
            let threads: Vec<JoinHandle<()>> =
                self.threads.lock().map(|mut t| t.drain(..).collect()).unwrap_or_default();
            tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await
            .map_err(|_| LogError::Closed)
        })
    }
}

struct Writer {
    shared: Arc<Shared>,
    cfg: EmbeddedLogConfig,
    next: Vec<u64>,
    bytes: Vec<u64>,
    unsynced_since: Option<Instant>,
    last_retention: Instant,
    last_idempotency_sweep: Instant,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut size = first.bytes();
            let mut group = vec![first];
            while size < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(cmd) => {
                        size += cmd.bytes();
                        group.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            if let Some(done) = self.process(group) {
                rx.close();
                // answer whatever raced in after the shutdown request, then persist everything
                let mut rest = Vec::new();
                while let Ok(cmd) = rx.try_recv() {
                    rest.push(cmd);
                }
                self.process(rest);
                let _ = self.shared.db.persist(PersistMode::SyncAll);
                let _ = done.send(());
                return;
            }
        }
        // every handle is gone: commit what is still pending before the database closes
        self.process(vec![Cmd::Tick]);
        let _ = self.shared.db.persist(PersistMode::SyncAll);
    }

    /// Writes one group; returns the shutdown acknowledgement if the group asked for it.
    ///
    /// Record sets bound for the same partition are merged (up to [`MAX_SET_BYTES`]) so that many small appends,
    /// such as postbacks or a window of clicks, become one entry, and everything is committed in one atomic batch.
    fn process(&mut self, group: Vec<Cmd>) -> Option<oneshot::Sender<()>> {
        let s = self.shared.clone();
        let mut staged = Staging { now: now_ms(), open: BTreeMap::new(), batch: s.db.batch(), events: 0, sets: 0 };
        let mut acks: Vec<(Ack, Result<AppendReceipt, LogError>)> = Vec::new();
        let mut in_group: HashMap<String, Parts> = HashMap::new();
        let mut shutdown = None;
        let mut flushed = Vec::new();
        let mut tick = false;
        let mut wants_sync = false;
        for cmd in group {
            let (sets, idem, ack) = match cmd {
                Cmd::Tick => {
                    tick = true;
                    continue;
                }
                Cmd::Flush(done) => {
                    tick = true;
                    flushed.push(done);
                    continue;
                }
                Cmd::Shutdown(done) => {
                    shutdown = Some(done);
                    continue;
                }
                Cmd::Append { sets, idempotency_key, ack, _permit } => (sets, idempotency_key, ack),
            };
            s.stats.queued.fetch_sub(1, Ordering::Relaxed);
            if let Some(why) = s.failure() {
                if let Some(ack) = ack {
                    acks.push((ack, Err(LogError::Failed(why))));
                }
                continue;
            }
            if let Some(key) = &idem {
                let seen = match in_group.get(key) {
                    Some(parts) => Some(parts.clone()),
                    None => match s.idempotency.get(key.as_bytes()) {
                        Ok(v) => v.and_then(|v| decode_receipt(&v)).map(|(_, parts)| parts),
                        Err(e) => {
                            if let Some(ack) = ack {
                                acks.push((ack, Err(e.into())));
                            }
                            continue;
                        }
                    },
                };
                if let Some(parts) = seen {
                    s.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    if let Some(ack) = ack {
                        // a duplicate is durable only once its original is: sync with the group
                        wants_sync = true;
                        acks.push((ack, Ok(AppendReceipt { parts, duplicate: true })));
                    }
                    continue;
                }
            }
            let mut parts = Vec::with_capacity(sets.len());
            for set in sets {
                if let Some(base) = self.stage(&mut staged, set.partition, set.bytes, set.count, set.tags) {
                    parts.push((set.partition, base, set.count));
                }
            }
            if let Some(key) = idem {
                staged.batch.insert(&s.idempotency, key.as_bytes(), encode_receipt(staged.now, &parts));
                in_group.insert(key, parts.clone());
            }
            if let Some(ack) = ack {
                wants_sync = true;
                acks.push((ack, Ok(AppendReceipt { parts, duplicate: false })));
            }
        }
        if s.pending_bytes.load(Ordering::Acquire) > 0 && s.failure().is_none() {
            let mut drained = 0u64;
            for (p, slot) in s.pending.iter().enumerate() {
                let taken = match slot.lock() {
                    Ok(mut slot) if slot.count > 0 => std::mem::replace(&mut *slot, PendingSet::new()),
                    _ => continue,
                };
                drained += taken.buf.len() as u64 - 5;
                self.stage(&mut staged, p as u32, taken.buf, taken.count, taken.tags);
            }
            s.pending_bytes.fetch_sub(drained, Ordering::AcqRel);
        }
        let wrote = !staged.open.is_empty() || staged.sets > 0;
        let open: Vec<(u32, Staged)> = std::mem::take(&mut staged.open).into_iter().collect();
        for (p, set) in open {
            self.emit(&mut staged, p, set);
        }
        let Staging { batch, events, sets, .. } = staged;
        if !batch.is_empty()
            && let Err(e) = batch.commit()
        {
            s.fail(format!("write failed: {e}"));
        }
        if wrote && self.unsynced_since.is_none() {
            self.unsynced_since = Some(Instant::now());
            s.unsynced.store(true, Ordering::Release);
        }
        let window_over = self.unsynced_since.is_some_and(|t| t.elapsed() >= self.cfg.commit_window);
        if self.unsynced_since.is_some() && (wants_sync || window_over || tick || shutdown.is_some()) {
            self.sync();
        }
        s.stats.appended_events.fetch_add(events, Ordering::Relaxed);
        s.stats.appended_record_sets.fetch_add(sets, Ordering::Relaxed);
        let failure = s.failure();
        for (ack, result) in acks {
            let result = match (&failure, result) {
                (Some(why), Ok(_)) => Err(LogError::Failed(why.clone())),
                (_, r) => r,
            };
            let _ = ack.send(result);
        }
        for done in flushed {
            let _ = done.send(());
        }
        if tick && self.last_retention.elapsed() >= self.cfg.retention_interval {
            self.last_retention = Instant::now();
            if let Err(e) = self.retention() {
                tracing::warn!(error = %e, "log retention failed; will retry");
            }
        }
        shutdown
    }

    /// Assigns offsets to a record set (with its header) and merges it into the partition's open entry.
    fn stage(&mut self, staged: &mut Staging, partition: u32, bytes: Vec<u8>, count: u32, tags: u8) -> Option<u64> {
        let next = self.next.get_mut(partition as usize)?;
        let base = *next;
        *next += u64::from(count);
        let fits = staged.open.get(&partition).is_some_and(|o| o.buf.len() + bytes.len() <= MAX_SET_BYTES);
        if !fits && let Some(full) = staged.open.remove(&partition) {
            self.emit(staged, partition, full);
        }
        if bytes.len() >= MERGE_BELOW {
            // already a large record set: store it as it is (no copy), after whatever was open before it
            self.emit(staged, partition, Staged { base, buf: bytes, count, tags });
            return Some(base);
        }
        match staged.open.get_mut(&partition) {
            Some(open) => {
                open.buf.extend_from_slice(bytes.get(5..).unwrap_or_default());
                open.count += count;
                open.tags |= tags;
            }
            None => {
                staged.open.insert(partition, Staged { base, buf: bytes, count, tags });
            }
        }
        Some(base)
    }

    /// Puts a finished record set and its index entry into the group's batch.
    fn emit(&mut self, staged: &mut Staging, partition: u32, mut set: Staged) {
        let s = &self.shared;
        if let Some(header) = set.buf.get_mut(1..5) {
            header.copy_from_slice(&set.count.to_le_bytes());
        }
        let entry = IndexEntry {
            base: set.base,
            append_ms: staged.now,
            count: set.count,
            bytes: set.buf.len() as u64,
            tags: set.tags,
        };
        if let Some(b) = self.bytes.get_mut(partition as usize) {
            *b += entry.bytes;
        }
        s.stats.stored_bytes.fetch_add(entry.bytes, Ordering::Relaxed);
        staged.batch.insert(&s.index, entry_key(partition, set.base), entry.encode());
        staged.batch.insert(&s.events, entry_key(partition, set.base), set.buf);
        staged.events += u64::from(set.count);
        staged.sets += 1;
    }

    fn sync(&mut self) {
        let s = &self.shared;
        let started = Instant::now();
        match s.db.persist(PersistMode::SyncData) {
            Ok(()) => {
                for (d, n) in s.durable_next.iter().zip(&self.next) {
                    d.store(*n, Ordering::Release);
                }
                self.unsynced_since = None;
                s.unsynced.store(false, Ordering::Release);
                s.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                s.stats.last_fsync_micros.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Err(e) => s.fail(format!("fsync failed: {e}")),
        }
    }

    /// Deletes record sets past the age or size limit (never a partition's newest, so offsets never restart)
    /// and idempotency keys past their TTL.
    fn retention(&mut self) -> Result<(), LogError> {
        let s = self.shared.clone();
        let now = now_ms();
        let mut batch = s.db.batch();
        let mut deleted = 0u64;
        let cutoff = self.cfg.retention_age.map(|a| now - a.as_millis() as i64);
        let mut total: u64 = self.bytes.iter().sum();
        let limit = self.cfg.retention_bytes;
        // partitions' record sets, oldest first, minus each partition's newest
        let mut heads: Vec<std::collections::VecDeque<IndexEntry>> = Vec::with_capacity(self.next.len());
        for p in 0..s.partitions {
            let mut entries: std::collections::VecDeque<IndexEntry> = std::collections::VecDeque::new();
            for kv in s.index.prefix(p.to_be_bytes()) {
                let (k, v) = kv.into_inner()?;
                if let Some(e) = IndexEntry::decode(&k, &v) {
                    entries.push_back(e);
                }
            }
            entries.pop_back();
            heads.push(entries);
        }
        loop {
            let oldest = heads
                .iter()
                .enumerate()
                .filter_map(|(p, q)| q.front().map(|e| (p, *e)))
                .min_by_key(|(_, e)| e.append_ms);
            let Some((p, e)) = oldest else { break };
            let too_old = cutoff.is_some_and(|c| e.append_ms < c);
            let too_big = limit.is_some_and(|l| total > l);
            if !too_old && !too_big {
                break;
            }
            if let Some(q) = heads.get_mut(p) {
                q.pop_front();
            }
            let key = entry_key(p as u32, e.base);
            batch.remove(&s.index, key);
            batch.remove(&s.events, key);
            if let Some(b) = self.bytes.get_mut(p) {
                *b -= e.bytes;
            }
            total -= e.bytes;
            s.stats.stored_bytes.fetch_sub(e.bytes, Ordering::Relaxed);
            deleted += 1;
        }
        if self.last_idempotency_sweep.elapsed() >= Duration::from_secs(600) {
            self.last_idempotency_sweep = Instant::now();
            let ttl_cutoff = now - self.cfg.idempotency_ttl.as_millis() as i64;
            for kv in s.idempotency.iter() {
                let (k, v) = kv.into_inner()?;
                if decode_receipt(&v).is_some_and(|(at, _)| at < ttl_cutoff) {
                    batch.remove(&s.idempotency, k);
                }
            }
        }
        if !batch.is_empty() {
            batch.commit()?;
        }
        if deleted > 0 {
            s.stats.retention_deleted.fetch_add(deleted, Ordering::Relaxed);
            tracing::info!(record_sets = deleted, "log retention removed old record sets");
        }
        Ok(())
    }
}
