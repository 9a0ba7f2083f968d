//! # The event log
//!
//! [`EventLog`] is shaped after Apache Iggy's model so that the Iggy implementation (`tracker-log-iggy`) fits the
//! same trait: one stream and topic, a fixed number of partitions chosen by tenant key, monotonically increasing
//! per-partition offsets, and consumer groups whose committed offsets live in the log.
//!
//! Producers append *record sets* (many encoded events in one entry, see `tracker_protocol::wire`). An append is
//! either durable before it returns ([`EventLog::append`], used by `/batch`, `/ingest` and the edge intake) or
//! queued and made durable within the commit window ([`EventLog::enqueue`], used by redirects and pixels, which
//! must not wait for a disk). Consumers only ever see durable events.
//!
//! [`EmbeddedLog`] is the default implementation, on the fjall LSM storage engine.

pub mod contract;
mod embedded;
mod spool;

use std::future::Future;
use std::pin::Pin;

pub use embedded::{EmbeddedLog, EmbeddedLogConfig};
pub use spool::SpooledLog;
use tracker_protocol::Event;

/// A boxed future, so the trait stays object-safe (`Arc<dyn EventLog>`).
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LogError>> + Send + 'a>>;

/// A cheap test on an event's encoding, run before decoding it.
pub type Keep = fn(&[u8]) -> bool;

/// What a filtered poll reads: record sets with any of `tags` (`tracker_protocol::wire` `TAG_*`; 0 = every set),
/// and of those, the events `keep` accepts.
#[derive(Debug, Clone, Copy)]
pub struct Filter {
    pub tags: u8,
    pub keep: Keep,
}

/// A record-set tag bit no producer sets (`tracker_protocol::wire` tags use the low bits).
const NO_SET_HAS_THIS_TAG: u8 = 0x40;

impl Filter {
    pub const ALL: Filter = Filter { tags: 0, keep: |_| true };
}

/// Encoded events bound for one partition.
#[derive(Debug, Clone)]
pub struct RecordSet {
    pub partition: u32,
    /// A `tracker_protocol::wire` record set.
    pub bytes: Vec<u8>,
    pub count: u32,
    /// What kinds of events the set holds (`tracker_protocol::wire::tags_of`, or-ed over its events).
    pub tags: u8,
}

/// Where an append landed: `(partition, first offset, event count)` per record set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReceipt {
    pub parts: Vec<(u32, u64, u32)>,
    /// The idempotency key had been seen: nothing was written and `parts` is the first append's receipt.
    pub duplicate: bool,
}

impl AppendReceipt {
    pub fn events(&self) -> u64 {
        self.parts.iter().map(|p| u64::from(p.2)).sum()
    }
}

/// Events read from one partition.
#[derive(Debug, Clone, Default)]
pub struct Polled {
    /// `(offset, event)` in offset order.
    pub events: Vec<(u64, Event)>,
    /// The offset to poll from next.
    pub next_offset: u64,
}

/// Record sets read from one partition as they are stored, for a consumer that reads events in place
/// ([`tracker_protocol::wire::decode_event_view`]) rather than as owned events.
#[derive(Debug, Clone, Default)]
pub struct PolledSets {
    pub sets: Vec<RawSet>,
    /// The offset to poll from next.
    pub next_offset: u64,
}

/// One encoded record set: its event `i` has offset `base + i`; the poll holds those in `from..end`.
#[derive(Debug, Clone, Default)]
pub struct RawSet {
    pub base: u64,
    pub from: u64,
    pub end: u64,
    pub bytes: Vec<u8>,
}

impl RawSet {
    /// Encodes `events` (consecutive offsets from `base`) as one set.
    pub fn encode(base: u64, events: &[Event]) -> RawSet {
        let end = base + events.len() as u64;
        RawSet { base, from: base, end, bytes: tracker_protocol::wire::encode_record_set(events) }
    }

    /// How many of its events the poll holds.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.from)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(offset, encoded event)` for the events the poll holds; `partition` (where the set was read) names it
    /// in errors.
    pub fn events(&self, partition: u32) -> Result<impl Iterator<Item = Result<(u64, &[u8]), LogError>>, LogError> {
        let corrupt = move |source| LogError::Corrupt { partition, offset: self.base, source };
        let events = tracker_protocol::wire::record_set_events(&self.bytes).map_err(corrupt)?;
        Ok((self.base..)
            .zip(events)
            .skip_while(|(o, _)| *o < self.from)
            .take_while(|(o, _)| *o < self.end)
            .map(move |(o, raw)| raw.map(|raw| (o, raw)).map_err(corrupt)))
    }
}

/// What `/health/broker` and `/metrics` show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatus {
    pub backend: &'static str,
    pub healthy: bool,
    pub error: Option<String>,
    pub partitions: u32,
    /// Appends waiting for the writer.
    pub queued: u64,
    pub appended_events: u64,
    pub appended_record_sets: u64,
    pub fsyncs: u64,
    pub last_fsync_micros: u64,
    pub duplicates: u64,
    pub retention_deleted_record_sets: u64,
    /// Bytes of record sets currently held.
    pub stored_bytes: u64,
    /// Events accepted into the local spool that have not reached the primary log yet (spooled backends).
    pub spooled_events: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("storage error: {0}")]
    Storage(#[from] fjall::Error),
    #[error("the log is shutting down")]
    Closed,
    #[error("the log writer failed earlier and refuses writes until restarted: {0}")]
    Failed(String),
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    #[error("partition {0} does not exist")]
    NoSuchPartition(u32),
    #[error("corrupt record set at partition {partition} offset {offset}: {source}")]
    Corrupt { partition: u32, offset: u64, source: tracker_protocol::ProtocolError },
    #[error("invalid consumer group name {0:?}")]
    InvalidGroup(String),
    #[error("the log at {path} was created with {stored} partitions, not {configured}")]
    PartitionMismatch { path: String, stored: u32, configured: u32 },
}

/// For a consumer whose own position (kept with its output) is the authority over the group offset a
/// [`EventLog::poll_group`] read from: the poll as it is when `position` lies within what it read, otherwise a
/// read from `position` (the output store is behind the log's offset, after a restore or a lost commit, so nothing
/// in between is skipped; or ahead of it, so nothing is read twice).
pub async fn resume_at(
    log: &dyn EventLog,
    partition: u32,
    polled: Polled,
    position: u64,
    max_events: usize,
) -> Result<Polled, LogError> {
    let first = polled.events.first().map_or(polled.next_offset, |(o, _)| *o);
    if (first..=polled.next_offset).contains(&position) {
        return Ok(polled);
    }
    log.poll(partition, position, max_events).await
}

/// The durable, partitioned event log.
pub trait EventLog: Send + Sync + std::fmt::Debug + 'static {
    fn partitions(&self) -> u32;

    /// Appends atomically and returns once the record sets are on disk (fsync). With an idempotency key that was
    /// seen before (within the retention of keys), nothing is written and the first receipt is returned.
    fn append(&self, sets: Vec<RecordSet>, idempotency_key: Option<String>) -> LogFuture<'_, AppendReceipt>;

    /// Queues an append and returns once the writer accepted it (waiting only for queue space, never for disk).
    /// The events are durable within the commit window.
    fn enqueue(&self, sets: Vec<RecordSet>) -> LogFuture<'_, ()>;

    /// Reads up to about `max_events` durable events of `partition` from `from` on.
    fn poll(&self, partition: u32, from: u64, max_events: usize) -> LogFuture<'_, Polled> {
        self.poll_where(partition, from, max_events, Filter::ALL)
    }

    /// Like [`EventLog::poll`], but reads only the record sets with one of `filter.tags` and decodes only the
    /// events whose encoding `filter.keep` accepts: a consumer that needs a few kinds of events skips the cost of
    /// reading and decoding the others. `max_events` bounds the events scanned (skipped sets count in full), and
    /// `next_offset` moves past every scanned event, kept or not.
    fn poll_where(&self, partition: u32, from: u64, max_events: usize, filter: Filter) -> LogFuture<'_, Polled>;

    /// Like [`EventLog::poll`], but hands out the record sets as stored, undecoded. The default decodes and
    /// encodes again (each run of consecutive offsets as one set); a log that stores sets hands them out as they
    /// are.
    fn poll_sets(&self, partition: u32, from: u64, max_events: usize) -> LogFuture<'_, PolledSets> {
        Box::pin(async move {
            let polled = self.poll(partition, from, max_events).await?;
            let mut sets = Vec::new();
            let mut run: Vec<Event> = Vec::new();
            let mut base = 0;
            for (offset, event) in polled.events {
                if !run.is_empty() && offset != base + run.len() as u64 {
                    sets.push(RawSet::encode(base, &std::mem::take(&mut run)));
                }
                if run.is_empty() {
                    base = offset;
                }
                run.push(event);
            }
            if !run.is_empty() {
                sets.push(RawSet::encode(base, &run));
            }
            Ok(PolledSets { sets, next_offset: polled.next_offset })
        })
    }

    /// Reads for consumer group `group` as one of its members: the log spreads the partitions over the members
    /// that poll (Iggy consumer groups; in a single-process log this member has them all), so several instances
    /// of a consumer share the work. Returns the partition the events came from and the events after the group's
    /// committed offset, or `None` when nothing waits. The consumer commits with [`EventLog::commit_offset`] once
    /// its output is durable; until then the same events come back.
    fn poll_group(&self, group: &str, max_events: usize, filter: Filter) -> LogFuture<'_, Option<(u32, Polled)>> {
        self.poll_group_besides(group, max_events, filter, &[])
    }

    /// [`EventLog::poll_group`] for a member that holds the reads of the partitions in `held`, not committed yet (a
    /// consumer that writes several partitions' events at once): events of another partition, or `None` when none
    /// of the others has any waiting (or, where the log picks the partition, when it picked a held one).
    fn poll_group_besides<'a>(
        &'a self,
        group: &str,
        max_events: usize,
        filter: Filter,
        held: &'a [u32],
    ) -> LogFuture<'a, Option<(u32, Polled)>> {
        let group = group.to_owned();
        Box::pin(async move {
            let n = self.partitions();
            // start somewhere else each time, so one busy partition does not starve the others
            let start = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() % n.max(1));
            for i in 0..n {
                let p = (start + i) % n;
                if held.contains(&p) {
                    continue;
                }
                let from = self.committed_offset(&group, p).await?.unwrap_or(0);
                let polled = self.poll_where(p, from, max_events, filter).await?;
                if polled.next_offset > from {
                    return Ok(Some((p, polled)));
                }
            }
            Ok(None)
        })
    }

    /// The offset the next event appended to `partition` will get (what a reader that wants only new events
    /// starts from). The default scans the partition's index without reading any record set.
    fn end_offset(&self, partition: u32) -> LogFuture<'_, u64> {
        Box::pin(async move {
            // a tag no producer sets: every set is skipped unread, and `next_offset` moves past all of them
            let none = Filter { tags: NO_SET_HAS_THIS_TAG, keep: |_| false };
            let mut at = 0;
            loop {
                let polled = self.poll_where(partition, at, 1 << 30, none).await?;
                if polled.next_offset <= at {
                    return Ok(at);
                }
                at = polled.next_offset;
            }
        })
    }

    /// Stores the next offset `group` will read from `partition`.
    fn commit_offset(&self, group: &str, partition: u32, next_offset: u64) -> LogFuture<'_, ()>;

    fn committed_offset(&self, group: &str, partition: u32) -> LogFuture<'_, Option<u64>>;

    fn status(&self) -> LogStatus;

    /// Makes everything queued durable and stops accepting writes.
    fn shutdown(&self) -> LogFuture<'_, ()>;
}
