//! The consumers' batches against the real embedded log and libSQL: one transaction gathers what waits in every
//! partition, a small batch waits for more (up to `hot_batch_linger`, `filter_batch_linger`), and a full one, or a
//! stop, does not; a filter that dies after recording a batch of several partitions appends each one's events once.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use tracker_consumers::{BATCH, Pipeline, Settings, Which, filter, stats};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, RecordSet};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Auth, Event, Uuid, partition_for};
use tracker_store::hot::HotStore;
use tracker_store::{Location, Store};

const PARTITIONS: u32 = 4;

fn event(tenant: &str, n: u64) -> Event {
    let now = tracker_consumers::now_ms();
    Event {
        event_id: Uuid::now_v7(),
        event_type: "click".into(),
        timestamp: now,
        received_at: now,
        key_prefix: tenant.into(),
        ip: None,
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36".into()),
        referer: None,
        accept_language: None,
        request_path: Some("/t".into()),
        request_host: None,
        params: [("campaign".to_string(), format!("c{}", n % 3))].into(),
        raw_payload: None,
        auth: Auth::Link,
        historical: false,
        overflow: false,
    }
}

/// A tenant whose events go to partition `p`.
fn tenant_of(p: u32) -> String {
    (0..).map(|n| format!("t{n}")).find(|t| partition_for(t, PARTITIONS) == p).unwrap()
}

/// Appends `n` events of partition `p`'s tenant to the filtered log.
async fn append(pipeline: &Pipeline, p: u32, n: u64) {
    pipeline.filtered.append(vec![set(p, n)], None).await.unwrap();
}

/// A record set of `n` events of partition `p`'s tenant.
fn set(p: u32, n: u64) -> RecordSet {
    let tenant = tenant_of(p);
    let mut b = RecordSetBuilder::default();
    (0..n).for_each(|i| b.push(&event(&tenant, i)));
    RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() }
}

async fn pipeline(dir: &std::path::Path, linger: Duration) -> Arc<Pipeline> {
    let log = |name: &str| -> Arc<dyn EventLog> {
        let cfg = EmbeddedLogConfig {
            partitions: PARTITIONS,
            commit_window: Duration::from_millis(1),
            ..EmbeddedLogConfig::new(dir.join(name))
        };
        Arc::new(EmbeddedLog::open(cfg).unwrap())
    };
    Arc::new(Pipeline {
        raw: log("raw"),
        filtered: log("filtered"),
        store: Store::open(&dir.join("tracker.db")).await.unwrap(),
        hot: HotStore::connect(&Location::File(dir.join("hot.db"))).await.unwrap(),
        settings: Settings { hot_batch_linger: linger, filter_batch_linger: linger, ..Settings::default() },
    })
}

/// The stats consumer's position in each partition.
async fn positions(p: &Pipeline) -> Vec<u64> {
    let mut out = Vec::new();
    for part in 0..PARTITIONS {
        out.push(p.hot.offset(stats::GROUP, part).await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_small_batch_gathers_every_partition_and_waits_for_more_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), Duration::from_secs(30)).await;
    append(&p, 0, 2).await;
    append(&p, 1, 2).await;
    let written = p.hot.rows_written();
    let stop = CancellationToken::new();
    let step = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { stats::step(&p, &stop).await }
    });
    // the step waits: what arrives meanwhile in a partition it has not read joins its batch
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!step.is_finished(), "a batch of 4 events waits for more");
    append(&p, 2, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!step.is_finished(), "5 events: still waiting");
    assert_eq!(positions(&p).await, [0, 0, 0, 0], "nothing written while it waits");
    // a quarter of a batch ends the wait at once
    append(&p, 3, BATCH as u64).await;
    let stored = tokio::time::timeout(Duration::from_secs(10), step).await.expect("a filled batch waits no more");
    assert!(stored.unwrap().unwrap());
    assert_eq!(positions(&p).await, [2, 2, 1, BATCH as u64 - 5], "four partitions' events in one batch of BATCH");
    // one transaction: a segment, a position per partition, and per tenant its counts per minute and type, per
    // campaign, and its usage: 27 rows (a transaction per partition would write a segment each, and more)
    let rows = p.hot.rows_written() - written;
    assert!(rows <= 30, "{rows} rows for the batch");
    // the rest of partition 3 is the next batch's (stopping: it does not wait)
    stop.cancel();
    assert!(stats::step(&p, &stop).await.unwrap());
    assert_eq!(positions(&p).await[3], BATCH as u64);
}

#[tokio::test]
async fn a_stop_or_no_linger_ends_the_wait_and_what_was_read_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), Duration::from_secs(30)).await;
    append(&p, 1, 3).await;
    let stop = CancellationToken::new();
    let step = tokio::spawn({
        let (p, stop) = (p.clone(), stop.clone());
        async move { stats::step(&p, &stop).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let stored = tokio::time::timeout(Duration::from_secs(5), step).await.expect("a stop ends the wait");
    assert!(stored.unwrap().unwrap());
    assert_eq!(positions(&p).await, [0, 3, 0, 0]);

    // without a linger a step stores what waits and returns
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), Duration::ZERO).await;
    append(&p, 2, 3).await;
    append(&p, 0, 1).await;
    let live = CancellationToken::new();
    assert!(tokio::time::timeout(Duration::from_secs(5), stats::step(&p, &live)).await.unwrap().unwrap());
    assert_eq!(positions(&p).await, [1, 0, 3, 0]);
    assert!(!stats::step(&p, &live).await.unwrap(), "nothing waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_batch_of_several_partitions_is_one_record_and_each_is_appended_once_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), Duration::from_secs(30)).await;
    for part in 0..3 {
        let tenant = tenant_of(part);
        p.store.create_tenant(&tenant, Some(&tenant), 0).await.unwrap();
    }
    let sizes = [3, 2, 4];
    for (part, n) in sizes.iter().enumerate() {
        p.raw.append(vec![set(part as u32, *n)], None).await.unwrap();
    }
    // the filter records the three partitions' batches in one transaction, and dies before appending them
    let written = p.hot.rows_written();
    assert!(filter::record_only(&p).await.unwrap());
    let rows = p.hot.rows_written() - written;
    let pending = p.hot.filter_pending(filter::GROUP).await.unwrap();
    let ranges: Vec<(u32, u64, u64)> = pending.iter().map(|b| (b.partition, b.from, b.next)).collect();
    assert_eq!(ranges, [(0, 0, 3), (1, 0, 2), (2, 0, 4)], "one record per partition, all pending");
    for part in 0..3 {
        assert_eq!(p.hot.offset(filter::GROUP, part).await.unwrap(), sizes[part as usize]);
    }
    // a pending record and a position per partition, each tenant's kept ids (a block), usage and monthly quota, and
    // on the free plan (hard-capped) each event's id counted against the cap: at most 24 rows
    assert!(rows <= 24, "{rows} rows for the batch");

    // a restart appends each partition's kept events, once, and judges nothing twice
    let stop = CancellationToken::new();
    let task = tokio::spawn(tracker_consumers::run(p.clone(), vec![Which::Filter], stop.clone(), Default::default()));
    let started = std::time::Instant::now();
    let filtered = || async {
        let mut n = Vec::new();
        for part in 0..PARTITIONS {
            n.push(p.filtered.poll(part, 0, 1_000).await.unwrap().events.len());
        }
        n
    };
    while filtered().await[..3] != [3, 2, 4] {
        assert!(started.elapsed() < Duration::from_secs(20), "the pending batches were never appended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(filtered().await, [3, 2, 4, 0], "each partition's kept events once");
    assert_eq!(p.hot.filter_pending(filter::GROUP).await.unwrap(), [], "every batch marked appended");
}
