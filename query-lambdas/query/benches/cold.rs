//! Cold-query latency over a generated archive (issue 8, in progress: the DuckDB half, running the same
//! questions as SQL over the same Delta table, and its script are still to come; so far compared by hand).
//!
//! ```text
//! cold [--events N] [--tenants T] --dir DIR
//! ```
//! Builds `DIR/lake` once (N events over 30 days through the archiver, then OPTIMIZE and VACUUM), reuses it after.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // a benchmark: a panic is a failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tracker_archive::{ArchiveSettings, Maintenance};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog};
use tracker_query::{Archive, Query};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 2026-10-01 00:00 UTC.
const START_MS: i64 = 1_790_812_800_000;
const DAYS: i64 = 30;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

async fn build(dir: &std::path::Path, total: u64, tenants: u64, settings: &ArchiveSettings) {
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.join("log"))).unwrap());
    let spacing_us = u64::try_from(DAYS * 86_400_000_000).unwrap() / total;
    let started = Instant::now();
    let ends = tracker_archive::sample::fill(&*log, total, tenants, START_MS, spacing_us, |_| {}).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop.clone()));
    tracker_archive::sample::wait_read(&*log, &ends).await.unwrap();
    stop.store(true, Ordering::Release);
    task.await.unwrap().unwrap();
    tracker_archive::maintain(settings, &[], START_MS + (DAYS + 1) * 86_400_000).await.unwrap();
    log.shutdown().await.unwrap();
    eprintln!("archive of {total} events built in {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::main]
async fn main() {
    let total: u64 = arg("--events").map_or(10_000_000, |v| v.parse().unwrap());
    let tenants: u64 = arg("--tenants").map_or(10, |v| v.parse().unwrap());
    let dir = std::path::PathBuf::from(arg("--dir").expect("--dir DIR"));
    let lake = dir.join("lake");
    let settings = ArchiveSettings {
        maintenance: Maintenance { vacuum_retention: Duration::ZERO, ..Maintenance::default() },
        ..ArchiveSettings::new(tracker_archive::parse_base(lake.to_str().unwrap()).unwrap())
    };
    if !lake.join("events/_delta_log").exists() {
        build(&dir, total, tenants, &settings).await;
    }
    println!("lake={}", lake.join("events").display());
    let (from, to) = (START_MS, START_MS + DAYS * 86_400_000);
    let all = json!({ "from": from, "to": to });
    let queries = [
        (
            "series_hour_by_type",
            json!({ "kind": "series", "filters": all, "interval": "hour", "group_by": "event_type" }),
        ),
        (
            "breakdown_sub3_top10_distinct_links",
            json!({ "kind": "breakdown", "filters": all, "by": "param:sub3", "top": 10, "distinct": "tu_id" }),
        ),
        (
            "events_page_sub2",
            json!({ "kind": "events", "filters": { "from": from, "to": to, "params": { "sub2": "campaign-10" } }, "limit": 100 }),
        ),
        (
            "series_day_sub1",
            json!({ "kind": "series", "filters": { "from": from, "to": to, "params": { "sub1": "google" } }, "interval": "day" }),
        ),
    ];
    let archive = Archive::new(settings);
    for (name, q) in queries {
        let q: Query = serde_json::from_value(q).unwrap();
        let mut times = Vec::new();
        let mut last = serde_json::Value::Null;
        for _ in 0..5 {
            let t = Instant::now();
            last = archive.answer("tenant000", &q).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!("q_{name}_ms={:.1}", times[2]);
        println!("q_{name}_scanned={}", last["scanned"]);
    }
}
