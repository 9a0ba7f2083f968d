//! An event import run: a source's rows, in order, turned into events ([`crate::rows`]) and appended to the raw
//! event log in chunks of [`ImportSettings::chunk_rows`] rows.
//!
//! Exactly once, across re-runs and crashes: a run is named by its source's fingerprint and its settings; each
//! chunk is appended with the idempotency key `import\0<run>\0<chunk>` and the run's position (the next row) is
//! recorded in the metadata store once the chunk is durable. A re-run of a finished run does nothing; a run that
//! stopped resumes at its position, and a chunk that was appended just before a crash (its position not yet
//! recorded) is found by its key and not written again (keys are kept 24 hours). Rows without an `event_id` get one
//! derived from the run and the row's number, so they too are the same events on every attempt.
//!
//! Rejected rows are listed in the rejects file (one JSON object a line: source, row, code, message); after a
//! resumed crash the rows of the chunk in flight may be listed twice.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracker_log::{EventLog, RecordSet};
use tracker_protocol::wire::{EventView, RecordSetBuilder};
use tracker_protocol::{Limits, partition_for};
use tracker_store::Store;
use tracker_store::imports::ImportRun;

use crate::ImportError;
use crate::rows::{Reject, RowContext};
use crate::sources::{self, Format, Row, Source};

/// How a run reads and writes.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    pub format: Format,
    /// The tenant of rows that name none.
    pub tenant: Option<String>,
    /// Where rejected rows are listed.
    pub rejects: PathBuf,
    /// Rows per appended chunk (and per recorded position).
    pub chunk_rows: usize,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    pub limits: Limits,
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub source: String,
    pub run_id: String,
    /// The run had finished before: nothing was read.
    pub already_done: bool,
    /// The row it started from (a resumed run's position).
    pub resumed_at: u64,
    /// Rows read in this run (from `resumed_at` on).
    pub rows: u64,
    /// Events appended to the log.
    pub imported: u64,
    /// Rows that were another copy of an event already imported from the source.
    pub duplicates: u64,
    /// Rejected rows by reason.
    pub rejected: BTreeMap<String, u64>,
    pub seconds: f64,
}

impl Summary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn events_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.imported as f64 / self.seconds } else { 0.0 }
    }
}

/// The room a partition's record set of a chunk starts with (grown as needed): about what a chunk of 20,000
/// events spread over 20 tenants fills, so that most sets never move.
const SET_BYTES: usize = 256 * 1024;

/// One chunk's outcome, made on the reading thread.
#[derive(Default)]
struct Chunk {
    index: u64,
    /// The row after the chunk's last.
    end: u64,
    sets: Vec<RecordSet>,
    imported: u64,
    duplicates: u64,
    rejects: Vec<(u64, Reject)>,
    done: u64,
}

/// Opens the source at `location` and its fingerprint.
async fn open(location: &str, format: Format) -> Result<(Box<dyn Source>, String), ImportError> {
    let path = Path::new(location);
    Ok(match format {
        Format::Ndjson => (Box::new(sources::Ndjson::open(path)?), sources::file_fingerprint(path)?),
        Format::Csv => (Box::new(sources::Csv::open(path)?), sources::file_fingerprint(path)?),
        Format::Parquet => (Box::new(sources::Parquet::open(path)?), sources::file_fingerprint(path)?),
        Format::V1Archive => {
            let (archive, fingerprint) = sources::V1Archive::open(location).await?;
            (Box::new(archive), fingerprint)
        }
    })
}

/// Imports the source at `location` into `log`.
pub async fn import(
    log: Arc<dyn EventLog>,
    store: &Store,
    location: &str,
    settings: &ImportSettings,
    now_ms: i64,
) -> Result<Summary, ImportError> {
    let started = Instant::now();
    let (source, fingerprint) = open(location, settings.format).await?;
    let global_tenant = store.global_tenant().await?;
    let digest = Sha256::digest(
        format!(
            "{}\0{}\0{}\0{}",
            settings.format.name(),
            settings.tenant.as_deref().unwrap_or_default(),
            global_tenant.as_deref().unwrap_or_default(),
            fingerprint
        )
        .as_bytes(),
    );
    let run_id = hex::encode(digest.get(..16).unwrap_or_default());
    let mut summary = Summary { source: location.to_owned(), run_id: run_id.clone(), ..Summary::default() };
    let mut run = match store.import_run(&run_id).await? {
        Some(run) if run.finished_at.is_some() => {
            summary.already_done = true;
            return Ok(summary);
        }
        Some(run) => run,
        None => ImportRun {
            run_id: run_id.clone(),
            source: location.to_owned(),
            next_row: 0,
            accepted: 0,
            rejected: 0,
            started_at: now_ms,
            finished_at: None,
        },
    };
    summary.resumed_at = run.next_row;
    let tenants = store.list_tenants().await?.into_iter().map(|t| t.key_prefix).collect::<HashSet<_>>();
    if let Some(t) = &settings.tenant
        && !tenants.contains(t)
    {
        return Err(ImportError::Source(format!("--tenant {t}: no such tenant on this platform")));
    }
    let ctx = RowContext {
        tenants,
        default_tenant: settings.tenant.clone(),
        global_tenant,
        run_id: run_id.clone(),
        limits: settings.limits.clone(),
        now: now_ms,
    };
    let bar = progress_bar(settings.progress, source.total());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let chunk_rows = settings.chunk_rows.max(1) as u64;
    let (partitions, start) = (log.partitions(), run.next_row);
    let reading = tokio::task::spawn_blocking(move || read(source, ctx, start, chunk_rows, partitions, &tx));
    let mut rejects = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&settings.rejects)
        .map_err(|e| ImportError::Source(format!("{}: {e}", settings.rejects.display())))?;
    // two chunks in flight: the log commits one while the next is handed over (positions still recorded in order)
    let mut in_flight: VecDeque<(tokio::task::JoinHandle<Result<(), tracker_log::LogError>>, Chunk)> = VecDeque::new();
    loop {
        let next = if in_flight.len() < 2 { rx.recv().await } else { None };
        if let Some(mut chunk) = next {
            let (log, sets) = (log.clone(), std::mem::take(&mut chunk.sets));
            let key = format!("import\0{run_id}\0{}", chunk.index);
            let append = tokio::spawn(async move {
                if !sets.is_empty() {
                    log.append(sets, Some(key)).await?;
                }
                Ok(())
            });
            in_flight.push_back((append, chunk));
            if in_flight.len() < 2 {
                continue;
            }
        }
        let Some((append, chunk)) = in_flight.pop_front() else { break };
        append.await.map_err(|e| ImportError::Source(format!("an append stopped: {e}")))??;
        for (row, r) in &chunk.rejects {
            let line = serde_json::json!({ "source": location, "row": row, "code": r.code, "message": r.message });
            writeln!(rejects, "{line}")?;
            *summary.rejected.entry(r.code.to_owned()).or_default() += 1;
        }
        rejects.flush()?;
        summary.rows += chunk.end.saturating_sub(run.next_row);
        summary.imported += chunk.imported;
        summary.duplicates += chunk.duplicates;
        run.next_row = chunk.end;
        run.accepted += chunk.imported;
        run.rejected += chunk.rejects.len() as u64;
        store.save_import_run(&run, now_ms).await?;
        bar.set_position(chunk.done);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{} events, {:.0}/s, {} rejected",
            summary.imported,
            summary.imported as f64 / secs,
            summary.rejected_total()
        ));
    }
    reading.await.map_err(|e| ImportError::Source(format!("the reader stopped: {e}")))??;
    run.finished_at = Some(now_ms);
    store.save_import_run(&run, now_ms).await?;
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn progress_bar(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {elapsed_precise} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Hashes an event id by folding its halves: ids are random in their low bits (UUIDv4, v7, and the ids an import
/// derives), so a keyed hash (SipHash, 6% of an import's time) buys nothing; the multiply spreads any that are not.
#[derive(Default, Clone, Copy)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u128(&mut self, id: u128) {
        self.0 = ((id as u64) ^ ((id >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdSet = HashSet<u128, std::hash::BuildHasherDefault<IdHasher>>;

/// The event ids a source gave so far, in shards so that both building threads can check theirs at once.
struct Seen([std::sync::Mutex<IdSet>; 16]);

impl Seen {
    fn new() -> Seen {
        Seen(std::array::from_fn(|_| std::sync::Mutex::new(IdSet::default())))
    }

    /// `true` if `id` is new. Of two copies in one chunk exactly one is new, whichever thread meets it first.
    fn insert(&self, id: u128) -> bool {
        let shard = self.0.get((id >> 64) as usize % 16).unwrap_or(&self.0[0]);
        shard.lock().map(|mut s| s.insert(id)).unwrap_or(true)
    }

    fn reserve(&self, n: usize) {
        for shard in &self.0 {
            if let Ok(mut s) = shard.lock() {
                s.reserve(n / 16);
            }
        }
    }
}

/// What one thread made of part of a chunk: its events encoded per partition, in row order.
#[derive(Default)]
struct Part {
    sets: BTreeMap<u32, RecordSetBuilder>,
    imported: u64,
    duplicates: u64,
    rejects: Vec<(u64, Reject)>,
}

impl Part {
    /// Takes an event built from row `n` (encoded by `push`), unless the source gave it before; rows before
    /// `start` only add their ids to `seen`.
    #[allow(clippy::too_many_arguments)] // the event's id and partition, the run's state, and how to encode it
    fn take(
        &mut self,
        seen: &Seen,
        n: u64,
        start: u64,
        id: tracker_protocol::Uuid,
        key_prefix: &str,
        partitions: u32,
        push: impl FnOnce(&mut RecordSetBuilder),
    ) {
        // an event the source gave before is not imported again (the replaced system's archive holds some
        // twice); rows before the start are read for this alone
        let new = seen.insert(id.as_u128());
        if n < start {
            return;
        }
        if !new {
            self.duplicates += 1;
            return;
        }
        let partition = partition_for(key_prefix, partitions);
        push(self.sets.entry(partition).or_insert_with(|| RecordSetBuilder::with_capacity(SET_BYTES)));
        self.imported += 1;
    }
}

/// Builds and encodes rows `from..` of `items`: generic rows as views of their text (no copies), the replaced
/// system's archive rows as events.
fn build_part(
    ctx: &RowContext,
    seen: &Seen,
    from: u64,
    items: Vec<Result<Row, Reject>>,
    start: u64,
    partitions: u32,
) -> Part {
    let mut part = Part::default();
    for (item, n) in items.into_iter().zip(from..) {
        let mut take_view = |view: &EventView<'_>| {
            part.take(seen, n, start, view.event_id, view.key_prefix, partitions, |b| b.push_view(view));
        };
        let result = match item {
            Err(r) => Err(r),
            Ok(Row::Json(line)) => Row::parse_ref(&line).and_then(|row| ctx.view(&row, n).map(|view| take_view(&view))),
            Ok(Row::Generic(row)) => ctx.view(&row.as_row_ref(), n).map(|view| take_view(&view)),
            Ok(Row::V1(row)) => ctx.v1(*row).map(|e| {
                part.take(seen, n, start, e.event_id, &e.key_prefix, partitions, |b| b.push(&e));
            }),
        };
        if let Err(r) = result
            && n >= start
        {
            part.rejects.push((n, r));
        }
    }
    part
}

/// The reading thread: rows to chunks of record sets, in row order, from `start` on (rows before it are read only
/// to learn which event ids the source already gave: about 30 bytes of memory per event). Each chunk's rows are
/// read in order, then built into events and encoded on two cores: a helper that lives as long as the run (so its
/// allocator's memory is reused, not faulted in anew) takes the larger part, this thread reads the next chunk and
/// builds the rest.
fn read(
    mut source: Box<dyn Source>,
    ctx: RowContext,
    start: u64,
    chunk_rows: u64,
    partitions: u32,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> Result<(), ImportError> {
    let seen = Seen::new();
    let (ctx, seen) = (&ctx, &seen);
    let chunk_len = usize::try_from(chunk_rows).unwrap_or(usize::MAX);
    let (work_tx, work_rx) = std::sync::mpsc::sync_channel::<(u64, Vec<Result<Row, Reject>>)>(1);
    let (part_tx, part_rx) = std::sync::mpsc::sync_channel::<Part>(1);
    // the closure owns `work_tx`: when it returns, the helper's queue closes and the helper ends, as the scope waits
    std::thread::scope(move |s| {
        s.spawn(move || {
            for (from, items) in work_rx {
                if part_tx.send(build_part(ctx, seen, from, items, start, partitions)).is_err() {
                    break;
                }
            }
        });
        let read_chunk = |source: &mut Box<dyn Source>| -> Vec<Result<Row, Reject>> {
            let mut items = Vec::with_capacity(chunk_len.min(1 << 20));
            items.extend(std::iter::from_fn(|| source.next_row()).take(chunk_len));
            items
        };
        let mut items = read_chunk(&mut source);
        if source.total() > source.done() && source.done() > 0 {
            // the source's size over what one chunk took: room for its ids, grown once, not many times
            let estimate = u128::from(source.total()) * items.len() as u128 / u128::from(source.done());
            seen.reserve(usize::try_from(estimate.min(50_000_000)).unwrap_or(0));
        }
        let mut row_no = 0u64;
        while !items.is_empty() {
            let first = row_no;
            row_no += items.len() as u64;
            let done = source.done();
            // the helper builds the larger part while this thread reads the next chunk and builds the rest
            let second = items.split_off(items.len() * 9 / 20);
            let middle = first + items.len() as u64;
            let helper_gone = || ImportError::Source("a row could not be built".into());
            work_tx.send((middle, second)).map_err(|_| helper_gone())?;
            let next = read_chunk(&mut source);
            let a = build_part(ctx, seen, first, std::mem::replace(&mut items, next), start, partitions);
            let b = part_rx.recv().map_err(|_| helper_gone())?;
            if row_no <= start {
                continue;
            }
            let mut chunk = Chunk {
                index: first / chunk_rows,
                end: row_no,
                imported: a.imported + b.imported,
                duplicates: a.duplicates + b.duplicates,
                rejects: a.rejects,
                done,
                ..Chunk::default()
            };
            chunk.rejects.extend(b.rejects);
            // per partition, the first half's set before the second's: the log holds them in row order
            for (partition, builder) in a.sets.into_iter().chain(b.sets) {
                let (count, tags) = (builder.len(), builder.tags());
                chunk.sets.push(RecordSet { partition, count, tags, bytes: builder.finish() });
            }
            if tx.blocking_send(chunk).is_err() {
                return Ok(()); // the writer stopped (its error is the run's)
            }
        }
        Ok(())
    })
}
