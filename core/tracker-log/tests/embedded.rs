//! The embedded log against its contract: durable appends, idempotency, durable-only reads, consumer offsets,
//! retention and restarts.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::time::Duration;

use tracker_log::contract::set;
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, Filter, LogError, RecordSet};
use tracker_protocol::wire;

fn config(dir: &std::path::Path) -> EmbeddedLogConfig {
    EmbeddedLogConfig { partitions: 4, ..EmbeddedLogConfig::new(dir) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_appends_survive_restart_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    let r = log.append(vec![set(1, 0..10), set(2, 100..103)], None).await.unwrap();
    assert_eq!(r.parts, vec![(1, 0, 10), (2, 0, 3)]);
    let r = log.append(vec![set(1, 10..15)], None).await.unwrap();
    assert_eq!(r.parts, vec![(1, 10, 5)]);
    log.shutdown().await.unwrap();
    drop(log);

    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    let polled = log.poll(1, 0, 1000).await.unwrap();
    let ns: Vec<String> = polled.events.iter().map(|(_, e)| e.params["n"].clone()).collect();
    assert_eq!(ns, (0..15).map(|n| n.to_string()).collect::<Vec<_>>());
    assert_eq!(polled.next_offset, 15);
    // reading from the middle of a record set
    let polled = log.poll(1, 12, 2).await.unwrap();
    assert_eq!(polled.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![12, 13]);
    assert_eq!(polled.next_offset, 14);
    let r = log.append(vec![set(1, 15..16)], None).await.unwrap();
    assert_eq!(r.parts, vec![(1, 15, 1)]);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    let first = log.append(vec![set(0, 0..5)], Some("tenant\0batch-1".into())).await.unwrap();
    let again = log.append(vec![set(0, 0..5)], Some("tenant\0batch-1".into())).await.unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(first.parts, again.parts);
    // concurrent duplicates in one group are caught too
    let (a, b) = tokio::join!(
        log.append(vec![set(0, 5..6)], Some("k2".into())),
        log.append(vec![set(0, 5..6)], Some("k2".into()))
    );
    assert_ne!(a.unwrap().duplicate, b.unwrap().duplicate);
    log.shutdown().await.unwrap();
    drop(log);
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    assert!(log.append(vec![set(0, 0..5)], Some("tenant\0batch-1".into())).await.unwrap().duplicate);
    assert_eq!(log.poll(0, 0, 100).await.unwrap().events.len(), 6);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_events_become_visible_within_the_commit_window() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(EmbeddedLogConfig { commit_window: Duration::from_millis(20), ..config(dir.path()) })
        .unwrap();
    log.enqueue(vec![set(3, 0..2)]).await.unwrap();
    let mut seen = 0;
    for _ in 0..100 {
        seen = log.poll(3, 0, 10).await.unwrap().events.len();
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 2);
    assert!(log.status().fsyncs >= 1);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_offsets_persist() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    assert_eq!(log.committed_offset("stats", 2).await.unwrap(), None);
    log.commit_offset("stats", 2, 42).await.unwrap();
    assert!(matches!(log.commit_offset("bad group", 2, 1).await, Err(LogError::InvalidGroup(_))));
    assert!(matches!(log.commit_offset("stats", 9, 1).await, Err(LogError::NoSuchPartition(9))));
    log.shutdown().await.unwrap();
    drop(log);
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    assert_eq!(log.committed_offset("stats", 2).await.unwrap(), Some(42));
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_keeps_newest_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedLogConfig {
        retention_bytes: Some(1),
        retention_interval: Duration::from_millis(50),
        ..config(dir.path())
    };
    let log = EmbeddedLog::open(cfg.clone()).unwrap();
    for i in 0..5 {
        log.append(vec![set(0, i * 10..i * 10 + 10)], None).await.unwrap();
    }
    let mut deleted = 0;
    for _ in 0..100 {
        deleted = log.status().retention_deleted_record_sets;
        if deleted == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(deleted, 4, "all but the newest record set go");
    let polled = log.poll(0, 0, 100).await.unwrap();
    assert_eq!(polled.events.first().map(|(o, _)| *o), Some(40));
    log.shutdown().await.unwrap();
    drop(log);
    let log = EmbeddedLog::open(cfg).unwrap();
    assert_eq!(log.append(vec![set(0, 50..51)], None).await.unwrap().parts, vec![(0, 50, 1)]);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_count_is_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    EmbeddedLog::open(config(dir.path())).unwrap().shutdown().await.unwrap();
    let err = EmbeddedLog::open(EmbeddedLogConfig { partitions: 8, ..config(dir.path()) }).unwrap_err();
    assert!(matches!(err, LogError::PartitionMismatch { stored: 4, configured: 8, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_merged_but_keep_their_own_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(EmbeddedLog::open(config(dir.path())).unwrap());
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { (i, log.append(vec![set(2, i * 3..i * 3 + 3)], None).await.unwrap()) }));
    }
    for i in 0..20u64 {
        log.enqueue(vec![set(2, 1000 + i..1001 + i)]).await.unwrap();
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.push(t.await.unwrap());
    }
    // each append's receipt points at exactly its own events
    for (i, r) in &receipts {
        let (p, base, count) = r.parts[0];
        assert_eq!((p, count), (2, 3));
        let polled = log.poll(2, base, 3).await.unwrap();
        let ns: Vec<u64> = polled.events.iter().map(|(_, e)| e.params["n"].parse().unwrap()).collect();
        assert_eq!(ns, vec![i * 3, i * 3 + 1, i * 3 + 2]);
    }
    let status = log.status();
    assert!(status.appended_record_sets < 70, "small appends were merged: {} entries", status.appended_record_sets);
    let mut all = log.poll(2, 0, 1000).await.unwrap().events;
    for _ in 0..100 {
        if all.len() == 170 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        all = log.poll(2, 0, 1000).await.unwrap().events;
    }
    assert_eq!(all.len(), 170);
    assert!(all.iter().enumerate().all(|(i, (o, _))| *o == i as u64), "offsets are dense");
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_polls_decode_only_kept_events_and_move_past_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    log.append(vec![set(0, 0..30)], None).await.unwrap();
    // keep the events whose param value ends in 7: the encoding ends with that value, then an absent raw payload
    fn sevens(raw: &[u8]) -> bool {
        raw.ends_with(b"7\0")
    }
    let sevens = Filter { tags: 0, keep: sevens };
    let polled = log.poll_where(0, 0, 20, sevens).await.unwrap();
    assert_eq!(polled.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![7, 17]);
    assert_eq!(polled.next_offset, 20, "the scan limit counts skipped events too");
    let polled = log.poll_where(0, polled.next_offset, 20, sevens).await.unwrap();
    assert_eq!(polled.events.iter().map(|(_, e)| e.params["n"].as_str()).collect::<Vec<_>>(), vec!["27"]);
    assert_eq!(polled.next_offset, 30);
    let polled = log.poll_where(0, 30, 20, sevens).await.unwrap();
    assert!(polled.events.is_empty());
    assert_eq!(polled.next_offset, 30, "caught up");
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_polls_skip_whole_record_sets_without_reading_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(config(dir.path())).unwrap();
    let untagged = RecordSet { tags: 0, ..set(0, 0..100) };
    log.append(vec![untagged], None).await.unwrap();
    log.append(vec![set(0, 100..103)], None).await.unwrap();
    let links = Filter { tags: wire::TAG_LINK, keep: |_| true };
    let polled = log.poll_where(0, 0, 1_000, links).await.unwrap();
    assert_eq!(polled.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![100, 101, 102]);
    assert_eq!(polled.next_offset, 103);
    // a skipped set counts towards the scan limit in full, and the next poll starts after it
    let polled = log.poll_where(0, 10, 50, links).await.unwrap();
    assert!(polled.events.is_empty());
    assert_eq!(polled.next_offset, 100);
    // a plain poll reads everything
    assert_eq!(log.poll(0, 0, 1_000).await.unwrap().events.len(), 103);
    log.shutdown().await.unwrap();
}
