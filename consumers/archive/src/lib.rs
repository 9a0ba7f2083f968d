//! # The archiver
//!
//! Filtered events into an open Delta Lake table, `<base>/events`, partitioned by tenant and date, with a typed
//! schema: params are a `map<string, string>` (queryable natively by any Delta reader), the raw payload is kept
//! as JSON text.
//!
//! Exactly once without any state of its own: each commit carries, for every log partition it covers, a Delta
//! application transaction (`appId` = `tracker-archiver/<partition>`, `version` = the next log offset to archive).
//! The table is the only record of how far the archiver got. A crash before a commit leaves at most unreferenced
//! data files (never read; `VACUUM` removes them) and the same events are written again; a crash after it finds
//! the new versions at start-up and skips what the table holds. One archiver owns a log partition at a time (the
//! log's consumer group assigns them).

mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use tracker_log::{EventLog, Filter};
use tracker_protocol::Event;

pub use schema::{columns, partition_columns, to_batch};

/// The archiver's consumer group in the log.
pub const GROUP: &str = "archiver";

/// How the archiver batches its writes.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// The table's location: a local directory or `s3://bucket/prefix` (R2 through its S3 endpoint).
    pub table_url: url::Url,
    /// Object store options (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials, ...).
    pub storage_options: std::collections::HashMap<String, String>,
    /// A commit is made once this many events wait...
    pub flush_events: usize,
    /// ...or the oldest waiting event has waited this long.
    pub flush_interval: Duration,
}

/// Why archiving failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[error("event log: {0}")]
    Log(#[from] tracker_log::LogError),
}

/// The application id of a log partition's progress in the table.
pub fn app_id(partition: u32) -> String {
    format!("tracker-archiver/{partition}")
}

/// Opens the events table, creating it (empty, with its schema and partitioning) if it does not exist.
pub async fn open_table(settings: &ArchiveSettings) -> Result<DeltaTable, ArchiveError> {
    let ops =
        DeltaTable::try_from_url_with_storage_options(settings.table_url.clone(), settings.storage_options.clone())
            .await?;
    let table = ops
        .create()
        .with_table_name("events")
        .with_columns(columns())
        .with_partition_columns(partition_columns())
        .with_save_mode(SaveMode::Ignore)
        .await?;
    Ok(table)
}

/// How far the table holds each log partition: the next offset to archive.
pub async fn positions(table: &DeltaTable, partitions: u32) -> Result<Vec<u64>, ArchiveError> {
    let snapshot = table.snapshot()?;
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let v = snapshot.transaction_version(table.log_store().as_ref(), app_id(p)).await?;
        out.push(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0));
    }
    Ok(out)
}

/// Events read but not committed yet, per log partition: `(first offset, next offset, events)`.
#[derive(Debug, Default)]
struct Pending {
    parts: BTreeMap<u32, (u64, Vec<Event>)>,
    events: usize,
    since: Option<Instant>,
}

/// Commits everything pending as one Delta version, with each partition's new position as its application
/// transaction. Returns the table after the commit.
async fn flush(table: DeltaTable, pending: &mut Pending) -> Result<DeltaTable, ArchiveError> {
    if pending.events == 0 {
        return Ok(table);
    }
    let events: Vec<&Event> = pending.parts.values().flat_map(|(_, e)| e.iter()).collect();
    let batch = to_batch(&events)?;
    let txns: Vec<Transaction> = pending
        .parts
        .iter()
        .map(|(p, (next, _))| Transaction::new(app_id(*p), i64::try_from(*next).unwrap_or(i64::MAX)))
        .collect();
    let table = table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(partition_columns())
        .with_commit_properties(CommitProperties::default().with_application_transactions(txns))
        .await?;
    *pending = Pending::default();
    Ok(table)
}

/// Archives until `stop` is set; returns the events archived.
pub async fn run(
    log: Arc<dyn EventLog>,
    settings: ArchiveSettings,
    stop: Arc<AtomicBool>,
) -> Result<u64, ArchiveError> {
    let mut table = open_table(&settings).await?;
    let mut at = positions(&table, log.partitions()).await?;
    let mut pending = Pending::default();
    let mut archived = 0u64;
    while !stop.load(Ordering::Acquire) {
        let polled = log.poll_group(GROUP, 8192, Filter::ALL).await?;
        let mut idle = true;
        if let Some((partition, polled)) = polled {
            let i = partition as usize;
            let position = at.get(i).copied().unwrap_or(0);
            // the table is the authority: read from its position when the log's offset is behind or ahead
            let polled = tracker_log::resume_at(&*log, partition, polled, position, 8192).await?;
            let fresh: Vec<Event> = polled.events.into_iter().filter(|(o, _)| *o >= position).map(|(_, e)| e).collect();
            if polled.next_offset > position {
                idle = false;
                pending.events += fresh.len();
                let entry = pending.parts.entry(partition).or_default();
                entry.0 = polled.next_offset;
                entry.1.extend(fresh);
                pending.since.get_or_insert_with(Instant::now);
                if let Some(a) = at.get_mut(i) {
                    *a = polled.next_offset;
                }
            }
        }
        let due = pending.since.is_some_and(|s| s.elapsed() >= settings.flush_interval);
        if pending.events >= settings.flush_events || (due && !pending.parts.is_empty()) {
            let offsets: Vec<(u32, u64)> = pending.parts.iter().map(|(p, (n, _))| (*p, *n)).collect();
            let n = pending.events as u64;
            table = flush(table, &mut pending).await?;
            archived += n;
            for (p, next) in offsets {
                // the log's offset only saves a re-read; the table is the record
                let _ = log.commit_offset(GROUP, p, next).await;
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // what is pending is not lost: it is read again from the table's positions next time
    Ok(archived)
}
