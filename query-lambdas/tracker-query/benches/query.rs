//! Query latency over a generated archive: the cold tier (DataFusion over the `events` table) and the warm tier
//! (Polars over the `rollups` table), for `make bench-query` (`tests/bench/query.sh`), which asks DuckDB the same
//! questions over the same Delta tables in the same run.
//!
//! ```text
//! query [--events N] [--tenants T] --dir DIR [--only NAME]
//! ```
//! Builds `DIR/lake` once (N events over 30 days through the archiver, then OPTIMIZE and VACUUM), reuses it after.
//! Prints `lake=<dir>`, the tenant asked, then one `<name> <tier> <median ms of 5> <answer digest>` line per query.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // a benchmark: a panic is a failure report

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use serde_json::{Value, json};
use tracker_archive::{ArchiveSettings, Maintenance};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog};
use tracker_query::Query;
use tracker_query::router::{Engines, Tier};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 2026-10-01 00:00 UTC.
const START_MS: i64 = 1_790_812_800_000;
const DAYS: i64 = 30;
const TENANT: &str = "tenant000";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

async fn build(dir: &std::path::Path, total: u64, tenants: u64, settings: &ArchiveSettings) {
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.join("log"))).unwrap());
    let spacing_us = u64::try_from(DAYS * 86_400_000_000).unwrap() / total;
    let started = Instant::now();
    let ends = tracker_archive::sample::fill(&*log, total, tenants, START_MS, spacing_us, |_| {}).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop.clone()));
    tracker_archive::sample::wait_read(&*log, &ends).await.unwrap();
    stop.cancel();
    task.await.unwrap().unwrap();
    tracker_archive::maintain(settings, &[], START_MS + (DAYS + 1) * 86_400_000).await.unwrap();
    log.shutdown().await.unwrap();
    drop(log);
    // the lake is what is measured: the log's copy of the events only takes disk space
    let _ = std::fs::remove_dir_all(dir.join("log"));
    eprintln!("archive of {total} events built in {:.1} s", started.elapsed().as_secs_f64());
}

/// A short, comparable fingerprint of an answer: row count and the sum of its counts.
fn digest(answer: &Value) -> String {
    let rows = ["points", "groups", "events", "pairs"].iter().find_map(|k| answer[*k].as_array());
    let n = rows.map_or(0, Vec::len);
    let sum: i64 = rows.into_iter().flatten().filter_map(|r| r["count"].as_i64()).sum();
    match answer.get("summary") {
        Some(s) => format!("rows={n} matched={}", s["matched"]),
        None => format!("rows={n} sum={sum}"),
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("warn,buoyant_kernel=off")).init();
    let total: u64 = arg("--events").map_or(10_000_000, |v| v.parse().unwrap());
    let tenants: u64 = arg("--tenants").map_or(8, |v| v.parse().unwrap());
    let dir = std::path::PathBuf::from(arg("--dir").expect("--dir DIR"));
    let lake = dir.join("lake");
    let settings = ArchiveSettings {
        maintenance: Maintenance { vacuum_retention: Duration::ZERO, ..Maintenance::default() },
        ..ArchiveSettings::new(tracker_archive::parse_base(lake.to_str().unwrap()).unwrap())
    };
    if !lake.join("events/_delta_log").exists() {
        build(&dir, total, tenants, &settings).await;
    }
    println!("lake={}", lake.display());
    println!("tenant={TENANT} from={START_MS} to={}", START_MS + DAYS * 86_400_000);
    let (from, to) = (START_MS, START_MS + DAYS * 86_400_000);
    let all = json!({ "from": from, "to": to });
    let queries = [
        (
            "series_hour_by_type",
            Tier::Cold,
            json!({ "kind": "series", "filters": all, "interval": "hour", "group_by": "event_type" }),
        ),
        (
            "breakdown_sub3_top10_distinct_links",
            Tier::Cold,
            json!({ "kind": "breakdown", "filters": all, "by": "param:sub3", "top": 10, "distinct": "tu_id" }),
        ),
        (
            "events_page_sub2",
            Tier::Cold,
            json!({
                "kind": "events",
                "filters": { "from": from, "to": to, "params": { "sub2": "campaign-16" } },
                "limit": 100
            }),
        ),
        (
            "series_day_sub1",
            Tier::Cold,
            json!({
                "kind": "series",
                "filters": { "from": from, "to": to, "params": { "sub1": "google" } },
                "interval": "day"
            }),
        ),
        (
            "match_click_to_conversion_on_sub1_1h",
            Tier::Cold,
            json!({
                "kind": "match", "filters": all, "trigger": "click", "result": "conversion", "on": "sub1",
                "window_secs": 3600, "limit": 10
            }),
        ),
        (
            "warm_series_day_by_type",
            Tier::Warm,
            json!({ "kind": "series", "filters": all, "interval": "day", "group_by": "event_type" }),
        ),
        (
            "warm_breakdown_links_top10",
            Tier::Warm,
            json!({ "kind": "breakdown", "filters": all, "by": "tu_id", "top": 10 }),
        ),
    ];
    let engines = Engines::new(settings, Duration::from_secs(600));
    let only = arg("--only");
    for (name, tier, q) in queries {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let q: Query = serde_json::from_value(q).unwrap();
        let mut times = Vec::new();
        let mut last = Value::Null;
        for _ in 0..5 {
            let t = Instant::now();
            last = engines.answer(TENANT, tier, &q).await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let tier = if tier == Tier::Warm { "warm" } else { "cold" };
        println!("{name} {tier} {:.1} {} scanned={}", times[2], digest(&last), last["scanned"]);
    }
}
