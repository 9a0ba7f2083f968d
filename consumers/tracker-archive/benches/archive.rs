//! Archive throughput: events/s from the embedded log into the Delta tables, then `OPTIMIZE` and the data file
//! sizes before and after. Run by `tests/bench/archive.sh` (`make bench-archive`), which also measures DuckDB
//! writing the same events to partitioned Parquet as the baseline, and repeats this against a local S3 server.
//!
//! ```text
//! archive [--events N] [--tenants T] [--base URL] [--ndjson FILE]
//! ```
//! `--base` takes `s3://bucket/prefix` with the `AWS_*` storage options from the environment; the default is a
//! temporary directory. `--ndjson` also writes the events as NDJSON for the baseline.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // a benchmark: a panic is a failure report

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use tracker_archive::{ArchiveSettings, Maintenance, Table, open_table, positions};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog};

// as in the node and tracker-consumer, which run the archiver in production
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn sizes(dir: &std::path::Path) -> Vec<u64> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(sizes(&path));
        } else if path.extension().is_some_and(|x| x == "parquet") {
            out.push(e.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    out
}

/// The data files a table's current version references.
async fn live_files(settings: &ArchiveSettings, table: Table) -> Vec<u64> {
    let delta = tracker_archive::read_table(settings, table).await.unwrap().unwrap();
    let mut out: Vec<u64> =
        delta.snapshot().unwrap().log_data().iter().map(|f| u64::try_from(f.size()).unwrap_or(0)).collect();
    out.sort_unstable();
    out
}

fn describe(files: &[u64]) -> String {
    if files.is_empty() {
        return "no files".into();
    }
    let mb = |b: u64| b as f64 / 1e6;
    let total: u64 = files.iter().sum();
    format!(
        "{} files, {:.1} MB: min {:.2} MB, median {:.2} MB, max {:.2} MB",
        files.len(),
        mb(total),
        mb(files[0]),
        mb(files[files.len() / 2]),
        mb(files[files.len() - 1])
    )
}

#[tokio::main]
async fn main() {
    let total: u64 = arg("--events").map_or(2_000_000, |v| v.parse().unwrap());
    let tenants: u64 = arg("--tenants").map_or(20, |v| v.parse().unwrap());
    let work = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(work.path().join("log"))).unwrap());
    let partitions = log.partitions();
    let start_ms = 1_795_900_000_000;

    // the log, filled as the filter would: record sets of up to 1,000 events per partition
    let filled = Instant::now();
    let mut ndjson = arg("--ndjson").map(|p| std::io::BufWriter::new(std::fs::File::create(p).unwrap()));
    let ends = tracker_archive::sample::fill(&*log, total, tenants, start_ms, 50, |e| {
        if let Some(out) = ndjson.as_mut() {
            let mut row = serde_json::to_value(e).unwrap();
            row["tenant"] = e.key_prefix.clone().into();
            row["date"] = tracker_archive::date_of(e.timestamp).into();
            serde_json::to_writer(&mut *out, &row).unwrap();
            out.write_all(b"\n").unwrap();
        }
    })
    .await
    .unwrap();
    drop(ndjson);
    eprintln!("log filled with {total} events in {:.1} s", filled.elapsed().as_secs_f64());

    let base = match arg("--base") {
        Some(b) => tracker_archive::parse_base(&b).unwrap(),
        None => tracker_archive::parse_base(work.path().join("lake").to_str().unwrap()).unwrap(),
    };
    let storage_options = std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect();
    let settings = ArchiveSettings {
        storage_options,
        maintenance: Maintenance { vacuum_retention: Duration::ZERO, ..Maintenance::default() },
        ..ArchiveSettings::new(base)
    };
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut task = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop.clone()));
    let reading = tokio::spawn({
        let (log, ends) = (log.clone(), ends.clone());
        async move { tracker_archive::sample::wait_read(&*log, &ends).await }
    });
    tokio::select! {
        r = reading => r.unwrap().unwrap(),
        r = &mut task => panic!("the archiver stopped: {r:?}"),
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let table = open_table(&settings, Table::Events).await.unwrap();
    assert_eq!(positions(&table, Table::Events, partitions).await.unwrap(), ends, "the table holds every event");
    let before = live_files(&settings, Table::Events).await;

    let compacting = Instant::now();
    let report = tracker_archive::maintain(&settings, &[], start_ms + 86_400_000 * 30).await.unwrap();
    let optimize_secs = compacting.elapsed().as_secs_f64();
    let after = live_files(&settings, Table::Events).await;
    let rollups = live_files(&settings, Table::Rollups).await;

    println!("archived_events={total}");
    println!("archive_seconds={secs:.2}");
    println!("archive_events_per_second={:.0}", total as f64 / secs);
    println!("files_before_optimize={}", describe(&before));
    println!("files_after_optimize={}", describe(&after));
    println!("rollup_files_after_optimize={}", describe(&rollups));
    println!("maintenance_seconds={optimize_secs:.2}");
    println!("maintenance={report:?}");
    if settings.base.scheme() == "file" {
        let on_disk = sizes(&settings.base.to_file_path().unwrap());
        println!("parquet_files_on_disk_after_vacuum={}", on_disk.len());
    }
}
