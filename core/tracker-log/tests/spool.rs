//! The spool in front of a primary log, with real embedded logs on both sides (no test doubles): writes made while
//! the primary is missing or failing are acknowledged from the spool, replayed to the primary in order once it is
//! back, and never duplicated by a replay after a crash.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::Arc;
use std::time::Duration;

use tracker_log::contract::set;
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, LogError, SpooledLog};

fn open(dir: &std::path::Path) -> EmbeddedLog {
    EmbeddedLog::open(EmbeddedLogConfig { partitions: 2, ..EmbeddedLogConfig::new(dir) }).unwrap()
}

/// The `n` params of a partition, in log order.
async fn ns(log: &dyn EventLog, partition: u32) -> Vec<u64> {
    let polled = log.poll(partition, 0, 100_000).await.unwrap();
    polled.events.iter().map(|(_, e)| e.params["n"].parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_a_primary_are_spooled_then_replayed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = SpooledLog::new(open(&dir.path().join("spool")), Duration::from_secs(1), "test");
    log.append(vec![set(0, 0..10)], Some("k1".into())).await.unwrap();
    log.enqueue(vec![set(0, 10..15)]).await.unwrap();
    log.append(vec![set(1, 100..103)], None).await.unwrap();
    let dup = log.append(vec![set(0, 0..10)], Some("k1".into())).await.unwrap();
    assert!(dup.duplicate, "idempotency keys hold in the spool too");
    assert!(matches!(log.poll(0, 0, 10).await, Err(LogError::Unavailable(_))), "nothing to read yet");
    let status = log.status();
    assert!(!status.healthy);
    assert_eq!(status.spooled_events, 18);

    let primary: Arc<dyn EventLog> = Arc::new(open(&dir.path().join("primary")));
    log.attach(primary.clone());
    // until the spool is drained, writes keep going behind what it holds
    log.append(vec![set(0, 15..20)], None).await.unwrap();
    assert!(ns(&*primary, 0).await.is_empty());
    assert_eq!(log.drain().await.unwrap(), 23);
    assert_eq!(ns(&*primary, 0).await, (0..20).collect::<Vec<_>>(), "in order, nothing lost or doubled");
    assert_eq!(ns(&*primary, 1).await, vec![100, 101, 102]);
    assert_eq!(log.spooled().await.unwrap(), 0);
    assert_eq!(log.status().spooled_events, 0);
    // drained: writes go straight to the primary again
    log.append(vec![set(0, 20..22)], None).await.unwrap();
    assert_eq!(ns(&*primary, 0).await.len(), 22);
    assert_eq!(log.spooled().await.unwrap(), 0);
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_primary_sends_writes_to_the_spool_and_a_replayed_drain_does_not_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let log = SpooledLog::new(open(&dir.path().join("spool")), Duration::from_secs(1), "test");
    let primary = Arc::new(open(&dir.path().join("primary")));
    log.attach(primary.clone());
    log.drain().await.unwrap();
    log.append(vec![set(0, 0..5)], None).await.unwrap();
    assert_eq!(ns(&*primary, 0).await.len(), 5, "healthy: straight to the primary");

    // the primary goes away: its writes fail, and the node keeps acknowledging from the spool
    primary.shutdown().await.unwrap();
    log.append(vec![set(0, 5..8)], None).await.unwrap();
    log.enqueue(vec![set(0, 8..9)]).await.unwrap();
    log.spool().flush().await.unwrap();
    assert_eq!(log.spooled().await.unwrap(), 4);
    log.detach();
    drop(primary);

    // it comes back (the same data): the spool is replayed after what it already had
    let primary: Arc<dyn EventLog> = Arc::new(open(&dir.path().join("primary")));
    log.attach(primary.clone());
    assert_eq!(log.drain().await.unwrap(), 4);
    assert_eq!(ns(&*primary, 0).await, (0..9).collect::<Vec<_>>());

    // a crash after the primary took a stretch but before the spool recorded it: the replay is a duplicate
    log.spool().commit_offset("spool-drain", 0, 0).await.unwrap();
    log.drain().await.unwrap();
    assert_eq!(ns(&*primary, 0).await, (0..9).collect::<Vec<_>>(), "no event twice");
    log.shutdown().await.unwrap();
}
