//! How fast the filter and the stats consumer bring a preloaded log into the hot tier (`make bench-hot`).
//!
//! Preloads `EVENTS` events (default 2,000,000: clicks, impressions and conversions of `TENANTS` tenants, with a
//! click id, a campaign and a country each) into a fresh embedded log, timing the appends (the same-run baseline:
//! the log's own write rate), then runs the filter and the stats consumer as the node does (in-process, on their
//! threads) until the hot tier holds every event, and prints a table: events/s through both, bytes on disk per hot
//! event, rows the hot tier's statements wrote per event (what a hosted libSQL bills) in the drain, in its second half
//! (past the first events of each tenant, whose click ids are counted until the param is found unbounded) and in a
//! retention pass once every event has expired, and the peak RSS during the drain. `TRICKLE=40,400` then sends live
//! traffic at each of those rates (events/s) for `TRICKLE_SECS` (10) and prints the rows written per event at each.
//! The consumers' variables (`HOT_BATCH_LINGER_MS`, `FILTER_BATCH_LINGER_MS`, ...) are read from the environment, as
//! the node reads them. `ROUNDS` (default 1) repeats the whole run on fresh directories and
//! prints the median and range of each figure. `KEEP=1` keeps each round's data directory (its path is printed) for a
//! look inside. The events' times step by a millisecond over `SPREAD_MS` (3,000,000) and start again: `SPREAD_MS=1`
//! gives every event one time, as a client's batches with whole-second times come close to.
//!
//! `cargo run --release -p tracker-consumers --no-default-features --example hot_drain`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a benchmark: a panic is a failed run

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracker_consumers::{CancellationToken, Liveness, Pipeline, Settings, Which};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, RecordSet};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Auth, Event, Uuid, partition_for};
use tracker_store::hot::HotStore;
use tracker_store::{Location, Store, TenantLimits};

// as in the node and tracker-consumer, which run these consumers
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARTITIONS: u32 = 24;
const SET_EVENTS: usize = 1000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn event(n: u64, tenants: u64, now: i64, spread_ms: u64) -> Event {
    live_event(n, tenants, now - 3_600_000 + i64::try_from(n % spread_ms).unwrap_or(0))
}

/// Event `n`, of time `ts`.
fn live_event(n: u64, tenants: u64, ts: i64) -> Event {
    let kind = n % 10;
    let event_type = match kind {
        0..=5 => "click",
        6..=8 => "impression",
        _ => "conversion",
    };
    let mut params = std::collections::BTreeMap::new();
    // conversions carry the click id of a click a few events earlier, as a postback would
    params.insert("click_id".to_owned(), format!("c{}", if kind == 9 { n - 7 } else { n }));
    params.insert("campaign".to_owned(), format!("spring-{}", n % 20));
    params.insert("country".to_owned(), ["US", "DE", "FR", "GB", "BR", "IN", "JP", "CA"][(n % 8) as usize].into());
    Event {
        // a UUIDv7 of the event's time, as the edge and the SDKs mint: the clock, version 7, the variant, then `n`
        event_id: Uuid::from_u64_pair(
            (u64::try_from(ts).unwrap() << 16) | 0x7000 | ((n >> 62) & 0xfff),
            0x8000_0000_0000_0000 | (n & 0x3fff_ffff_ffff_ffff),
        ),
        event_type: event_type.into(),
        timestamp: ts,
        received_at: ts,
        key_prefix: format!("t{:03}", n % tenants),
        ip: Some(format!("198.51.{}.{}", (n / 250) % 250, n % 250)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36".into()),
        referer: None,
        accept_language: Some("en-US".into()),
        request_path: Some("/t".into()),
        request_host: Some("track.example".into()),
        params: params.into_iter().collect(),
        raw_payload: None,
        auth: Auth::Link,
        historical: false,
        overflow: false,
    }
}

struct Round {
    append_per_s: f64,
    drain_per_s: f64,
    bytes_per_event: f64,
    rows_per_event: f64,
    /// The same over the drain's second half: past each tenant's first events, while the stats consumer still counts
    /// an id-like param's values (until it has seen `MIN_EVENTS` of them and calls it unbounded).
    steady_rows_per_event: f64,
    /// Rows retention deletes per event: a whole pruning pass once everything has expired.
    retention_rows_per_event: f64,
    retention_secs: f64,
    peak_rss_mb: f64,
    /// Per `TRICKLE` rate (events/s), the rows written per event at that rate of live traffic.
    trickles: Vec<(u64, f64)>,
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn round(events: u64, tenants: u64) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| -> Arc<dyn EventLog> {
        let cfg = EmbeddedLogConfig { partitions: PARTITIONS, ..EmbeddedLogConfig::new(dir.path().join(name)) };
        Arc::new(EmbeddedLog::open(cfg).unwrap())
    };
    let store = Store::open(&dir.path().join("tracker.db")).await.unwrap();
    for t in 0..tenants {
        let name = format!("t{t:03}");
        // a paid plan with overage: metered, never capped
        store.create_tenant_on(&name, Some(&name), "pro", &TenantLimits::default(), 0).await.unwrap();
    }
    let hot_dir = dir.path().join("hot");
    let pipeline = Arc::new(Pipeline {
        raw: log("raw"),
        filtered: log("filtered"),
        store,
        hot: HotStore::connect(&Location::File(hot_dir.join("hot.db"))).await.unwrap(),
        // the node's variables from the environment (HOT_BATCH_LINGER_MS, FILTER_BATCH_LINGER_MS, ...)
        settings: Settings { filter_ip_per_minute: 0, ..settings_from_env() },
    });

    // preload, in appends of 24 record sets (about what one /batch request of the node's writes)
    let now = tracker_consumers::now_ms();
    let spread_ms = env("SPREAD_MS", 3_000_000).max(1);
    let started = Instant::now();
    let mut builders: Vec<RecordSetBuilder> = (0..PARTITIONS).map(|_| RecordSetBuilder::default()).collect();
    let mut sets = Vec::new();
    for n in 0..events {
        let e = event(n, tenants, now, spread_ms);
        let p = partition_for(&e.key_prefix, PARTITIONS);
        let b = &mut builders[p as usize];
        b.push(&e);
        if b.len() as usize >= SET_EVENTS {
            let b = std::mem::take(b);
            sets.push(RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() });
        }
        if sets.len() >= 24 {
            pipeline.raw.append(std::mem::take(&mut sets), None).await.unwrap();
        }
    }
    for (p, b) in builders.into_iter().enumerate() {
        if !b.is_empty() {
            sets.push(RecordSet { partition: p as u32, count: b.len(), tags: b.tags(), bytes: b.finish() });
        }
    }
    pipeline.raw.append(sets, None).await.unwrap();
    let append_per_s = events as f64 / started.elapsed().as_secs_f64();

    // the drain: filter and stats on the consumers' thread, as in the node
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // the peak RSS from here on
    let stop = CancellationToken::new();
    let started = Instant::now();
    let consumers = tracker_consumers::spawn(
        pipeline.clone(),
        vec![Which::Filter, Which::Stats],
        stop.clone(),
        Arc::new(Liveness::default()),
    )
    .unwrap();
    // the data has no bots and the tenants no limits: every event is kept, and the drain ends once the stats
    // consumer has stored all of them
    let mut half = None;
    loop {
        let stored = stored(&pipeline).await;
        if stored >= events {
            break;
        }
        if half.is_none() && stored >= events / 2 {
            half = Some((stored, pipeline.hot.rows_written()));
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "the drain never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_per_s = events as f64 / started.elapsed().as_secs_f64();
    let peak_rss_mb = peak_rss_mb();
    let drain_written = pipeline.hot.rows_written();
    let mut trickles = Vec::new();
    let mut sent = events;
    for rate in env_list("TRICKLE") {
        let (n, rows) = trickle(&pipeline, sent, tenants, rate).await;
        sent += n;
        trickles.push((rate, rows as f64 / n.max(1) as f64));
    }
    stop.cancel();
    consumers.join().unwrap();
    let bytes_per_event = dir_bytes(&hot_dir) as f64 / sent as f64;
    let rows_per_event = drain_written as f64 / events as f64;
    let (half_stored, half_written) = half.unwrap_or((0, 0));
    let steady_rows_per_event =
        (drain_written - half_written) as f64 / events.saturating_sub(half_stored).max(1) as f64;
    // retention once every event has expired: the rows it deletes are written rows too
    let (written, started) = (pipeline.hot.rows_written(), Instant::now());
    let mut at = tracker_store::hot::PruneAt::Events;
    while at != tracker_store::hot::PruneAt::Done {
        at = pipeline.hot.prune_step(&at, i64::MAX, u64::MAX, i64::MAX).await.unwrap().1;
    }
    let mut seen = Some(tracker_store::hot::PruneSeenAt::default());
    while let Some(at) = seen {
        seen = pipeline.hot.prune_seen(at, i64::MAX).await.unwrap();
    }
    let retention_secs = started.elapsed().as_secs_f64();
    let retention_rows_per_event = (pipeline.hot.rows_written() - written) as f64 / sent as f64;
    // KEEP=1: the data directory stays, for a look inside (its path is printed)
    if std::env::var_os("KEEP").is_some() {
        eprintln!("kept: {}", dir.keep().display());
    }
    Round {
        append_per_s,
        drain_per_s,
        bytes_per_event,
        rows_per_event,
        steady_rows_per_event,
        retention_rows_per_event,
        retention_secs,
        peak_rss_mb,
        trickles,
    }
}

/// Events the stats consumer has stored.
async fn stored(pipeline: &Pipeline) -> u64 {
    let mut stored = 0;
    for p in 0..PARTITIONS {
        stored += pipeline.hot.offset(tracker_consumers::stats::GROUP, p).await.unwrap();
    }
    stored
}

/// Live traffic at `rate` events/s for `TRICKLE_SECS` (10) seconds, events `from` onwards of the time they are sent,
/// appended every 10 ms (the node's commit window is 5 ms), until the hot tier has stored them. Returns how many
/// events, and the rows the hot tier wrote meanwhile: at low rates a batch holds few events, and what it writes
/// once per batch (a segment, positions, counts per tenant and minute) is shared by fewer.
async fn trickle(pipeline: &Pipeline, from: u64, tenants: u64, rate: u64) -> (u64, u64) {
    let secs = env("TRICKLE_SECS", 10);
    let written = pipeline.hot.rows_written();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut n = from;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let due = from + (started.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut builders: Vec<RecordSetBuilder> = (0..PARTITIONS).map(|_| RecordSetBuilder::default()).collect();
        for n in n..due {
            let e = live_event(n, tenants, tracker_consumers::now_ms());
            builders[partition_for(&e.key_prefix, PARTITIONS) as usize].push(&e);
        }
        n = n.max(due);
        let sets: Vec<RecordSet> = (0..PARTITIONS)
            .zip(builders)
            .filter(|(_, b)| !b.is_empty())
            .map(|(p, b)| RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() })
            .collect();
        if !sets.is_empty() {
            pipeline.raw.append(sets, None).await.unwrap();
        }
    }
    while stored(pipeline).await < n {
        assert!(started.elapsed() < Duration::from_secs(secs + 600), "the trickle was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (n - from, pipeline.hot.rows_written() - written)
}

/// The consumers' settings as the node reads them: the declared defaults, and what the environment sets.
fn settings_from_env() -> Settings {
    let declared = [tracker_consumers::SETTINGS, tracker_consumers::webhooks::SETTINGS];
    Settings::from_settings(&tracker_protocol::settings::Settings::new(&declared, |k: &str| std::env::var(k).ok()))
        .expect("valid settings")
}

/// A comma-separated list of numbers from the environment (none when unset).
fn env_list(name: &str) -> Vec<u64> {
    let value = std::env::var(name).unwrap_or_default();
    value.split(',').filter_map(|v| v.trim().replace('_', "").parse().ok()).collect()
}

fn summary(values: &mut [f64], unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    if values.len() == 1 {
        format!("{median:.0}{unit}")
    } else {
        format!("{median:.0}{unit} ({:.0}-{:.0})", values[0], values[values.len() - 1])
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // as the node and tracker-consumer do
    tracker_consumers::small_pages();
    let events = env("EVENTS", 2_000_000);
    let tenants = env("TENANTS", 50).max(1);
    let rounds = env("ROUNDS", 1).max(1);
    let mut all = Vec::new();
    for i in 0..rounds {
        let r = round(events, tenants).await;
        eprintln!(
            "round {}: appended {:.0}/s, drained {:.0}/s, {:.0} B/event, rows written/event {:.4} ({:.4} in the \
             second half) + {:.4} by retention ({:.1} s), peak RSS {:.0} MB",
            i + 1,
            r.append_per_s,
            r.drain_per_s,
            r.bytes_per_event,
            r.rows_per_event,
            r.steady_rows_per_event,
            r.retention_rows_per_event,
            r.retention_secs,
            r.peak_rss_mb
        );
        all.push(r);
    }
    let column = |f: fn(&Round) -> f64| all.iter().map(f).collect::<Vec<f64>>();
    println!("| {events} events, {tenants} tenants, {rounds} round(s) | median (range) |");
    println!("|---|---|");
    println!("| raw log appends (baseline) | {} events/s |", summary(&mut column(|r| r.append_per_s), ""));
    println!("| filter + stats drain to the hot tier | {} events/s |", summary(&mut column(|r| r.drain_per_s), ""));
    println!("| hot tier on disk | {} bytes/event |", summary(&mut column(|r| r.bytes_per_event), ""));
    let median = |f: fn(&Round) -> f64| {
        let mut values = column(f);
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "| hot-tier rows written (what a hosted libSQL bills) | {:.4} per event ({:.4} in the drain's second half), \
         and {:.4} deleted by retention |",
        median(|r| r.rows_per_event),
        median(|r| r.steady_rows_per_event),
        median(|r| r.retention_rows_per_event)
    );
    for (i, (rate, _)) in all[0].trickles.iter().enumerate() {
        let mut rows: Vec<f64> = all.iter().map(|r| r.trickles[i].1).collect();
        rows.sort_by(f64::total_cmp);
        println!("| hot-tier rows written at {rate} live events/s | {:.4} per event (median) |", rows[rows.len() / 2]);
    }
    println!("| retention of all of it (pruning pass) | {} s |", summary(&mut column(|r| r.retention_secs), ""));
    println!("| peak RSS during the drain | {} MB |", summary(&mut column(|r| r.peak_rss_mb), ""));
}
