//! The archiver itself: events from the log into the two Delta tables, exactly once (see the crate's docs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction, Version};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use tokio_util::sync::CancellationToken;
use tracker_log::{EventLog, RawSet};
use tracker_protocol::wire::decode_event_view;

use crate::schema::{Rollups, event_batch, event_columns, partition_columns, rollup_columns};
use crate::{ArchiveError, ArchiveSettings, GROUP, Table};

/// Most events one poll reads.
const POLL: usize = 16_384;

/// A point where tests stop the archiver as a crash would: in debug builds, when the fail-rs point `$name` is
/// configured with `return(<text>)` and this archive's table URL `$url` contains that text (so tests running side by
/// side in one process stop only their own archive), the enclosing function returns `ArchiveError::Injected`.
/// Release builds have no such point.
macro_rules! crash_point {
    ($name:literal, $url:expr) => {
        #[cfg(debug_assertions)]
        if fail::eval($name, |only| only).flatten().is_some_and(|only| $url.as_str().contains(only.as_str())) {
            return Err(ArchiveError::Injected($name));
        }
    };
}

/// Opens a table, creating it (empty, with its schema, partitioning and properties) if it does not exist.
pub async fn open_table(settings: &ArchiveSettings, table: Table) -> Result<DeltaTable, ArchiveError> {
    static S3: Once = Once::new();
    S3.call_once(|| deltalake::aws::register_handlers(None));
    let url = settings.table_url(table);
    if url.scheme() == "file"
        && let Ok(dir) = url.to_file_path()
    {
        std::fs::create_dir_all(&dir).map_err(|e| ArchiveError::Location(format!("{url}: {e}")))?;
    }
    let ops = DeltaTable::try_from_url_with_storage_options(url, settings.storage_options.clone()).await?;
    let created = ops
        .create()
        .with_table_name(table.name())
        .with_columns(match table {
            Table::Events => event_columns(),
            Table::Rollups => rollup_columns(),
        })
        .with_partition_columns(partition_columns())
        .with_configuration(settings.maintenance.table_properties())
        .with_save_mode(SaveMode::Ignore)
        .await?;
    Ok(created)
}

/// Opens an existing table to read it; `None` if it was never created. Readers never create a table: that is
/// the archiver's job (a reader creating it at the same time would conflict with the archiver's first commit).
pub async fn read_table(settings: &ArchiveSettings, table: Table) -> Result<Option<DeltaTable>, ArchiveError> {
    let url = settings.table_url(table);
    match deltalake::open_table_with_storage_options(url, settings.storage_options.clone()).await {
        Ok(t) => Ok(Some(t)),
        Err(deltalake::DeltaTableError::NotATable(_) | deltalake::DeltaTableError::InvalidTableLocation(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How far a table holds each log partition: the next offset it has not archived.
pub async fn positions(delta: &DeltaTable, table: Table, partitions: u32) -> Result<Vec<u64>, ArchiveError> {
    let snapshot = delta.snapshot()?;
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let v = snapshot.transaction_version(delta.log_store().as_ref(), table.app_id(p)).await?;
        out.push(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0));
    }
    Ok(out)
}

/// What was read but not committed yet.
#[derive(Debug, Default)]
struct Pending {
    /// Each poll's events, being converted (on another core) into event rows and rollup counts.
    parts: Vec<(u32, tokio::task::JoinHandle<Result<Converted, ArchiveError>>)>,
    /// Events in `parts` (rows for either table).
    events: usize,
    /// Event rows in `parts`.
    rows: usize,
    /// Per log partition, the next offset once this is committed.
    next: BTreeMap<u32, u64>,
    since: Option<Instant>,
}

/// One poll's events as rows of both tables.
#[derive(Debug)]
struct Converted {
    rows: Option<RecordBatch>,
    rollups: Rollups,
}

impl Pending {
    /// Converts the events of `sets` (read from log partition `partition`) off the reading task, reading them in
    /// place: rows for the events table where `events_from` allows, counts for the rollups where `rollups_from`
    /// does.
    fn add(&mut self, partition: u32, sets: Vec<RawSet>, events_from: u64, rollups_from: u64) {
        let from = |set: &RawSet, at: u64| set.end.saturating_sub(set.from.max(at));
        self.rows += sets.iter().map(|s| from(s, events_from)).sum::<u64>() as usize;
        self.events += sets.iter().map(|s| from(s, events_from.min(rollups_from))).sum::<u64>() as usize;
        self.parts.push((
            partition,
            tokio::spawn(async move {
                let corrupt =
                    |offset, source| ArchiveError::Log(tracker_log::LogError::Corrupt { partition, offset, source });
                let mut views = Vec::with_capacity(sets.iter().map(|s| s.len() as usize).sum());
                let mut offsets = Vec::with_capacity(views.capacity());
                for set in &sets {
                    for item in set.events(partition)? {
                        let (offset, raw) = item?;
                        views.push(decode_event_view(raw).map_err(|e| corrupt(offset, e))?);
                        offsets.push(offset);
                    }
                }
                let mut rollups = Rollups::default();
                rollups.add(views.iter().zip(&offsets).filter(|(_, o)| **o >= rollups_from).map(|(v, _)| v));
                let first_row = offsets.partition_point(|o| *o < events_from);
                let rows = views.get(first_row..).unwrap_or_default();
                let rows = if rows.is_empty() { None } else { Some(event_batch(rows)?) };
                Ok(Converted { rows, rollups })
            }),
        ));
    }

    /// The event rows (with their log partition) and rollup counts of every part, once converted.
    async fn converted(self) -> Result<(Vec<(u32, RecordBatch)>, Rollups), ArchiveError> {
        let mut batches = Vec::with_capacity(self.parts.len());
        let mut rollups = Rollups::default();
        for (partition, part) in self.parts {
            let c = part.await.map_err(|e| ArchiveError::Task(e.to_string()))??;
            batches.extend(c.rows.map(|rows| (partition, rows)));
            rollups.merge(c.rollups);
        }
        Ok((batches, rollups))
    }
}

/// One table and how far it holds each partition.
#[derive(Debug)]
struct Target {
    table: Table,
    delta: DeltaTable,
    held: Vec<u64>,
    /// Every commit up to this version is known: ours, or checked not to have moved a partition.
    known: Option<Version>,
}

/// Attempts at a commit that conflicts with another writer's (a retention delete, say) before giving up.
const COMMIT_ATTEMPTS: usize = 4;

impl Target {
    async fn open(settings: &ArchiveSettings, table: Table, partitions: u32) -> Result<Target, ArchiveError> {
        let delta = open_table(settings, table).await?;
        let held = positions(&delta, table, partitions).await?;
        let known = delta.version();
        Ok(Target { table, delta, held, known })
    }

    /// The fence against another archiver: if anyone else committed since the last known version (maintenance,
    /// or a writer that lost its lease and has not noticed yet), the table's positions must still be this
    /// archiver's. Otherwise it stops: its positions are stale, and writing on would duplicate events.
    async fn fence(&mut self) -> Result<(), ArchiveError> {
        self.delta.update_incremental(None).await?;
        if self.delta.version() == self.known {
            return Ok(());
        }
        let partitions = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
        let now = positions(&self.delta, self.table, partitions).await?;
        if now != self.held {
            return Err(ArchiveError::Moved(self.table.name()));
        }
        self.known = self.delta.version();
        Ok(())
    }

    /// Commits the data files `staged` (see [`stage`]) with the new positions of the partitions they move. A
    /// commit that conflicts with another writer's (a retention delete, a compaction) is retried with the same
    /// files.
    async fn commit(&mut self, staged: Vec<Action>, next: &BTreeMap<u32, u64>) -> Result<(), ArchiveError> {
        if staged.is_empty() {
            // nothing new for this table (it already held these events: a crash between the two commits)
            return Ok(());
        }
        let moved: Vec<(u32, u64)> = next
            .iter()
            .filter(|(p, n)| self.held.get(**p as usize).is_some_and(|h| **n > *h))
            .map(|(p, n)| (*p, *n))
            .collect();
        let txns: Vec<Transaction> = moved
            .iter()
            .map(|(p, n)| Transaction::new(self.table.app_id(*p), i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        let operation =
            DeltaOperation::Write { mode: SaveMode::Append, partition_by: Some(partition_columns()), predicate: None };
        let mut attempt = 1;
        loop {
            self.fence().await?;
            let before = self.delta.version();
            let committed =
                CommitBuilder::from(CommitProperties::default().with_application_transactions(txns.clone()))
                    .with_actions(staged.clone())
                    .build(Some(self.delta.snapshot()?), self.delta.log_store(), operation.clone())
                    .await;
            match committed {
                Ok(done) => {
                    // committed right after the version it read: every commit is known; otherwise another
                    // writer's came in between, and the next fence checks it
                    if Some(done.version()) == before.map(|v| v + 1) && before == self.known {
                        self.known = Some(done.version());
                    }
                    self.delta.state = Some(done.snapshot());
                    break;
                }
                // a concurrent delete or compaction won the race: read the table again and retry (a commit
                // moving the same partitions would fail the fence)
                Err(deltalake::DeltaTableError::Transaction {
                    source: deltalake::kernel::transaction::TransactionError::CommitConflict(conflict),
                }) if attempt < COMMIT_ATTEMPTS => {
                    let table = self.table.name();
                    tracing::info!(table, %conflict, attempt, "archive commit conflicted; retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (p, n) in moved {
            if let Some(h) = self.held.get_mut(p as usize) {
                *h = n;
            }
        }
        if self.table == Table::Events {
            // the events committed, the rollups' commit (made alongside) still in flight: it is dropped
            crash_point!("archive-events-committed", self.delta.table_url());
        }
        Ok(())
    }
}

/// Writes `batches` (rows read from a log partition) as data files of `table`, by concurrent writers (a log
/// partition's tenants are its own, so each tenant and date still gets one file); returns their add actions, for
/// [`Target::commit`]. Files never committed are never read, and VACUUM removes them.
async fn stage(table: &DeltaTable, batches: Vec<(u32, RecordBatch)>) -> Result<Vec<Action>, ArchiveError> {
    let mut writing = Vec::new();
    for group in writer_groups(batches) {
        let mut writer = RecordBatchWriter::for_table(table)?.with_writer_properties(writer_properties());
        writing.push(Staging(tokio::spawn(async move {
            for batch in group {
                writer.write(batch).await?;
            }
            writer.flush().await
        })));
    }
    let mut actions = Vec::new();
    for mut w in writing {
        let adds = (&mut w.0).await.map_err(|e| ArchiveError::Task(e.to_string()))??;
        actions.extend(adds.into_iter().map(Action::Add));
    }
    Ok(actions)
}

/// A writer staging files; aborted when dropped (its files then stay unreferenced).
struct Staging(tokio::task::JoinHandle<Result<Vec<deltalake::kernel::Add>, deltalake::DeltaTableError>>);

impl Drop for Staging {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Concurrent writers for one commit: the rows of each log partition go to one writer, the partitions spread
/// so that the writers get about as many rows each.
fn writer_groups(batches: Vec<(u32, RecordBatch)>) -> Vec<Vec<RecordBatch>> {
    let writers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let mut by_partition: BTreeMap<u32, (usize, Vec<RecordBatch>)> = BTreeMap::new();
    for (p, batch) in batches {
        let entry = by_partition.entry(p).or_default();
        entry.0 += batch.num_rows();
        entry.1.push(batch);
    }
    let mut partitions: Vec<(usize, Vec<RecordBatch>)> = by_partition.into_values().collect();
    partitions.sort_by_key(|(rows, _)| std::cmp::Reverse(*rows));
    let mut groups: Vec<(usize, Vec<RecordBatch>)> =
        (0..writers.min(partitions.len())).map(|_| Default::default()).collect();
    for (rows, batches) in partitions {
        if let Some(least) = groups.iter_mut().min_by_key(|(r, _)| *r) {
            least.0 += rows;
            least.1.extend(batches);
        }
    }
    groups.into_iter().map(|(_, batches)| batches).collect()
}

/// How data files are written: Snappy (fast; OPTIMIZE rewrites them with ZSTD), and no dictionary for columns
/// whose values are unique, where building one only costs time.
fn writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::schema::types::ColumnPath;
    let mut b = deltalake::parquet::file::properties::WriterProperties::builder()
        .set_compression(deltalake::parquet::basic::Compression::SNAPPY);
    for unique in ["event_id", "timestamp", "received_at", "raw_payload"] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    b.build()
}

/// Archives until `stop` is cancelled; returns the events archived. On an error it returns it: nothing is lost, a
/// restart continues from the tables' positions.
///
/// Reading and committing overlap: while one commit is written (Parquet encoding, object store puts), the next
/// batch is read and converted. Commits stay in order, one at a time.
pub async fn run(
    log: Arc<dyn EventLog>,
    settings: ArchiveSettings,
    stop: CancellationToken,
) -> Result<u64, ArchiveError> {
    let partitions = log.partitions();
    let events = Target::open(&settings, Table::Events, partitions).await?;
    let rollups = Target::open(&settings, Table::Rollups, partitions).await?;
    // what each table held at start-up: events below are skipped for it (after a crash between the commits)
    let (events_held, rollups_held) = (events.held.clone(), rollups.held.clone());
    // read from the older of the two tables' positions
    let mut read: Vec<u64> = events_held.iter().zip(&rollups_held).map(|(e, r)| (*e).min(*r)).collect();
    // One archiver reads every partition (it holds the archive's lease), from its own positions. The group offsets
    // only show how far it read: a task of its own commits them, so no fsync of theirs is on the reading path.
    let progress = Progress::start(log.clone(), &read).await?;
    let mut writer = Writer::new(events, rollups);
    let mut pending = Pending::default();
    let mut archived = 0u64;
    let poll = POLL.min(settings.flush_events.max(1));
    let mut turn = 0u32;
    while !stop.is_cancelled() {
        let mut idle = true;
        // the partitions in turn, starting after the last one read: a busy partition does not starve the others
        for i in 0..partitions {
            let partition = (turn + i) % partitions;
            let Some(at) = read.get_mut(partition as usize) else { continue };
            let polled = log.poll_sets(partition, *at, poll).await?;
            if polled.next_offset > *at {
                idle = false;
                let at_least = |held: &[u64]| held.get(partition as usize).copied().unwrap_or(0).max(*at);
                pending.add(partition, polled.sets, at_least(&events_held), at_least(&rollups_held));
                pending.next.insert(partition, polled.next_offset);
                pending.since.get_or_insert_with(Instant::now);
                *at = polled.next_offset;
                turn = partition + 1;
                break;
            }
        }
        let due = pending.since.is_some_and(|s| s.elapsed() >= settings.flush_interval);
        if pending.events >= settings.flush_events || due {
            writer.start(std::mem::take(&mut pending)).await?;
        }
        progress.show(&read);
        if idle {
            archived += writer.settle().await?;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = stop.cancelled() => {}
            }
        }
    }
    // a stop commits what was read (not needed for correctness: it would be read again)
    writer.start(pending).await?;
    archived += writer.settle().await?;
    progress.stop().await;
    Ok(archived)
}

/// The archiver's read positions shown as its group's offsets in the log (for lag metrics and tools; the tables
/// are the authority). A task commits the latest positions it was given, skipping those overtaken meanwhile.
struct Progress {
    tx: tokio::sync::watch::Sender<Vec<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    async fn start(log: Arc<dyn EventLog>, read: &[u64]) -> Result<Progress, ArchiveError> {
        for (p, at) in (0u32..).zip(read) {
            log.commit_offset(GROUP, p, *at).await?;
        }
        let (tx, mut rx) = tokio::sync::watch::channel(read.to_vec());
        let mut shown = read.to_vec();
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let now = rx.borrow_and_update().clone();
                for ((p, at), was) in (0u32..).zip(&now).zip(shown.iter_mut()) {
                    if at == was {
                        continue;
                    }
                    match log.commit_offset(GROUP, p, *at).await {
                        Ok(()) => *was = *at,
                        Err(e) => tracing::warn!(partition = p, error = %e, "archiver: group offset not shown"),
                    }
                }
            }
        });
        Ok(Progress { tx, task })
    }

    fn show(&self, read: &[u64]) {
        self.tx.send_if_modified(|shown| {
            let changed = shown.as_slice() != read;
            if changed {
                shown.copy_from_slice(read);
            }
            changed
        });
    }

    /// Shows the last positions given, then ends the task.
    async fn stop(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// The tables and the commits in flight. The next commit's data files are written while the one before it commits
/// (commits stay in order, one at a time): at most two commits are in flight, so memory stays bounded.
#[derive(Debug)]
struct Writer {
    /// The tables, when no commit is in flight.
    idle: Option<(Target, Target)>,
    /// The latest commit in flight; it owns the one before it, and takes the tables from it.
    busy: Option<Committing>,
    /// The tables as of the last commit, to stage data files with (their schema and partitioning): shared with
    /// the commits, which leave their new state here, so no older snapshot (and its file list) is kept alive.
    layout: Arc<std::sync::Mutex<(DeltaTable, DeltaTable)>>,
    /// Two permits: a commit holds one from its start until it is done.
    slots: Arc<tokio::sync::Semaphore>,
    /// Set by a commit that failed or panicked (the commits after it fail with it).
    failed: Arc<AtomicBool>,
}

/// Sets its flag when dropped armed: a commit task that panics (or is aborted) is seen as failed.
struct FailedUnlessDone(Option<Arc<AtomicBool>>);

impl Drop for FailedUnlessDone {
    fn drop(&mut self) {
        if let Some(failed) = self.0.take() {
            failed.store(true, Ordering::Release);
        }
    }
}

/// A commit in flight, returning the tables and the events committed by it and the commits before it that it
/// waited for; aborted if the archiver is dropped (as a crash would: safe, the commit either happened or not).
#[derive(Debug)]
struct Committing(tokio::task::JoinHandle<Result<(Target, Target, u64), ArchiveError>>);

impl Drop for Committing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Writer {
    fn new(events: Target, rollups: Target) -> Writer {
        let layout = Arc::new(std::sync::Mutex::new((events.delta.clone(), rollups.delta.clone())));
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        Writer { idle: Some((events, rollups)), busy: None, layout, slots, failed: Arc::default() }
    }

    /// Waits for the commits in flight, if any; returns the events they committed.
    async fn settle(&mut self) -> Result<u64, ArchiveError> {
        let Some(mut task) = self.busy.take() else { return Ok(0) };
        let (events, rollups, n) = (&mut task.0).await.map_err(|e| ArchiveError::Task(e.to_string()))??;
        self.idle = Some((events, rollups));
        Ok(n)
    }

    /// Starts committing `pending`: its data files are written at once, its commit follows the one in flight.
    /// Waits only while two commits are in flight.
    async fn start(&mut self, mut pending: Pending) -> Result<(), ArchiveError> {
        if pending.since.is_none() {
            return Ok(());
        }
        let slot = self.slots.clone().acquire_owned().await.map_err(|e| ArchiveError::Task(e.to_string()))?;
        if self.failed.load(Ordering::Acquire) {
            // a commit failed: its error ends the archiver (a restart reads from the tables)
            self.settle().await?;
        }
        let failed = self.failed.clone();
        let before = self.busy.take();
        let idle = self.idle.take();
        let layout = self.layout.clone();
        let (events_layout, rollups_layout) = layout.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let next = std::mem::take(&mut pending.next);
        let events_read = pending.rows as u64;
        let commit = async move {
            let (batches, rollup_counts) = pending.converted().await?;
            let rollup_rows = if rollup_counts.is_empty() { vec![] } else { vec![(0, rollup_counts.batch()?)] };
            // the tables are independent (each takes only what it lacks after a crash between the two): their
            // files are written, and their commits made, side by side
            let (events_staged, rollups_staged) =
                tokio::try_join!(stage(&events_layout, batches), stage(&rollups_layout, rollup_rows))?;
            // data files written, no commit made: they are never read, and VACUUM removes them
            crash_point!("archive-staged", events_layout.table_url());
            let (mut events, mut rollups, committed) = match (before, idle) {
                (Some(mut before), _) => (&mut before.0).await.map_err(|e| ArchiveError::Task(e.to_string()))??,
                (None, Some((events, rollups))) => (events, rollups, 0),
                (None, None) => return Err(ArchiveError::Task("no tables".into())),
            };
            tokio::try_join!(events.commit(events_staged, &next), rollups.commit(rollups_staged, &next))?;
            // both committed, the archiver's group offsets not shown yet
            crash_point!("archive-committed", events.delta.table_url());
            *layout.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                (events.delta.clone(), rollups.delta.clone());
            Ok((events, rollups, committed + events_read))
        };
        self.busy = Some(Committing(tokio::spawn(async move {
            let mut unless_done = FailedUnlessDone(Some(failed));
            let done = commit.await;
            if done.is_ok() {
                unless_done.0 = None;
            }
            drop(unless_done);
            drop(slot);
            done
        })));
        Ok(())
    }
}
