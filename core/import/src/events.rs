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

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracker_log::{EventLog, RecordSet};
use tracker_protocol::wire::RecordSetBuilder;
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

/// One chunk's outcome, made on the reading thread.
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
    while let Some(chunk) = rx.recv().await {
        if !chunk.sets.is_empty() {
            log.append(chunk.sets, Some(format!("import\0{run_id}\0{}", chunk.index))).await?;
        }
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

/// The reading thread: rows to chunks of record sets, in row order, from `start` on (rows before it are read only
/// to learn which event ids the source already gave).
fn read(
    mut source: Box<dyn Source>,
    ctx: RowContext,
    start: u64,
    chunk_rows: u64,
    partitions: u32,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> Result<(), ImportError> {
    let mut seen: HashSet<u128> = HashSet::new();
    let mut row_no = 0u64;
    let mut chunk = new_chunk(start / chunk_rows);
    let mut builders: BTreeMap<u32, RecordSetBuilder> = BTreeMap::new();
    while let Some(item) = source.next_row() {
        let n = row_no;
        row_no += 1;
        let built = match item {
            Err(r) => Err(r),
            Ok(Row::Generic(row)) => ctx.generic(row, n).map(Some),
            Ok(Row::V1(row)) => ctx.v1(row, &mut seen),
        };
        if n < start {
            continue;
        }
        match built {
            Ok(Some(event)) => {
                builders.entry(partition_for(&event.key_prefix, partitions)).or_default().push(&event);
                chunk.imported += 1;
            }
            Ok(None) => chunk.duplicates += 1,
            Err(r) => chunk.rejects.push((n, r)),
        }
        if row_no.is_multiple_of(chunk_rows) {
            let full = finish_chunk(chunk, &mut builders, row_no, source.done());
            if tx.blocking_send(full).is_err() {
                return Ok(()); // the writer stopped (its error is the run's)
            }
            chunk = new_chunk(row_no / chunk_rows);
        }
    }
    if row_no > start && !row_no.is_multiple_of(chunk_rows) {
        let _ = tx.blocking_send(finish_chunk(chunk, &mut builders, row_no, source.total()));
    }
    Ok(())
}

fn new_chunk(index: u64) -> Chunk {
    Chunk { index, end: 0, sets: Vec::new(), imported: 0, duplicates: 0, rejects: Vec::new(), done: 0 }
}

fn finish_chunk(mut chunk: Chunk, builders: &mut BTreeMap<u32, RecordSetBuilder>, end: u64, done: u64) -> Chunk {
    chunk.end = end;
    chunk.done = done;
    chunk.sets = std::mem::take(builders)
        .into_iter()
        .map(|(partition, b)| {
            let (count, tags) = (b.len(), b.tags());
            RecordSet { partition, count, tags, bytes: b.finish() }
        })
        .collect();
    chunk
}
