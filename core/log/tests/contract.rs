//! The contract every `EventLog` implementation passes: order per partition, contiguous offsets that continue
//! after a restart, durable reads, idempotent appends, and consumer groups whose offsets are independent and
//! survive restarts. It runs against the embedded log and against the spooled log (a primary behind a local
//! spool); an Iggy implementation joins the list with `IGGY_TEST_ADDR` (see the README).

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, RecordSet, SpooledLog};
use tracker_protocol::{Auth, Event, Uuid, wire};

fn event(p: u32, n: u64) -> Event {
    Event {
        event_id: Uuid::from_u64_pair(u64::from(p) + 1, n),
        event_type: "signup".into(),
        timestamp: 1_770_704_294_008,
        received_at: 1_770_704_294_008,
        key_prefix: format!("t{p}"),
        ip: None,
        user_agent: None,
        referer: None,
        accept_language: None,
        request_path: None,
        request_host: None,
        params: [("n".to_string(), n.to_string())].into(),
        raw_payload: None,
        auth: Auth::Token,
        historical: false,
    }
}

fn set(p: u32, range: std::ops::Range<u64>) -> RecordSet {
    let events: Vec<Event> = range.map(|n| event(p, n)).collect();
    RecordSet { partition: p, count: events.len() as u32, tags: 0, bytes: wire::encode_record_set(&events) }
}

fn embedded_at(dir: &Path) -> EmbeddedLog {
    EmbeddedLog::open(EmbeddedLogConfig { partitions: 3, ..EmbeddedLogConfig::new(dir) }).unwrap()
}

async fn embedded(dir: PathBuf) -> Arc<dyn EventLog> {
    Arc::new(embedded_at(&dir))
}

/// A primary behind a spool, connected and drained (the steady state).
async fn spooled(dir: PathBuf) -> Arc<dyn EventLog> {
    let log = SpooledLog::new(embedded_at(&dir.join("spool")), Duration::from_secs(2), "spooled");
    log.attach(Arc::new(embedded_at(&dir.join("primary"))));
    log.drain().await.unwrap();
    Arc::new(log)
}

async fn contract<F, Fut>(name: &str, open: F)
where
    F: Fn(PathBuf) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path().to_path_buf()).await;
    assert_eq!(log.partitions(), 3, "{name}");

    // order and contiguous offsets per partition, partitions independent
    let r = log.append(vec![set(0, 0..4), set(1, 0..2)], None).await.unwrap();
    assert_eq!(r.parts, vec![(0, 0, 4), (1, 0, 2)], "{name}");
    log.append(vec![set(0, 4..6)], None).await.unwrap();
    log.enqueue(vec![set(2, 0..3)]).await.unwrap();
    let p0 = log.poll(0, 0, 100).await.unwrap();
    assert_eq!(p0.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>(), "{name}");
    assert_eq!(
        p0.events.iter().map(|(_, e)| e.params["n"].clone()).collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4", "5"]
    );
    assert_eq!(p0.next_offset, 6, "{name}");
    let tail = log.poll(0, 4, 1).await.unwrap();
    assert_eq!((tail.events.len(), tail.events[0].0, tail.next_offset), (1, 4, 5), "{name}: from the middle");
    // enqueued events become readable (durable) within the commit window
    let mut seen = 0;
    for _ in 0..100 {
        seen = log.poll(2, 0, 100).await.unwrap().events.len();
        if seen == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, 3, "{name}");

    // idempotent appends
    let first = log.append(vec![set(1, 2..3)], Some("same".into())).await.unwrap();
    let again = log.append(vec![set(1, 2..3)], Some("same".into())).await.unwrap();
    assert!(!first.duplicate && again.duplicate, "{name}");
    assert_eq!(again.parts, first.parts, "{name}");
    assert_eq!(log.poll(1, 0, 100).await.unwrap().events.len(), 3, "{name}");

    // consumer groups: independent offsets per group and partition
    log.commit_offset("stats", 0, 4).await.unwrap();
    log.commit_offset("webhooks", 0, 2).await.unwrap();
    log.commit_offset("stats", 1, 1).await.unwrap();
    assert_eq!(log.committed_offset("stats", 0).await.unwrap(), Some(4), "{name}");
    assert_eq!(log.committed_offset("webhooks", 0).await.unwrap(), Some(2), "{name}");
    assert_eq!(log.committed_offset("stats", 2).await.unwrap(), None, "{name}");

    // a restart keeps events, offsets and committed offsets, and appends continue after them
    log.shutdown().await.unwrap();
    drop(log);
    let log = open(dir.path().to_path_buf()).await;
    assert_eq!(log.committed_offset("stats", 0).await.unwrap(), Some(4), "{name}");
    let resumed = log.poll(0, 4, 100).await.unwrap();
    assert_eq!(resumed.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![4, 5], "{name}");
    let r = log.append(vec![set(0, 6..7)], None).await.unwrap();
    assert_eq!(r.parts, vec![(0, 6, 1)], "{name}");
    log.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_keeps_the_contract() {
    contract("embedded", embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spooled_log_keeps_the_contract() {
    contract("spooled", spooled).await;
}

#[tokio::test]
async fn iggy_keeps_the_contract() {
    // printed with --nocapture and kept in the output of `make test`, so a skip is never silent
    match std::env::var("IGGY_TEST_ADDR") {
        Err(_) => eprintln!("SKIPPED iggy_keeps_the_contract: IGGY_TEST_ADDR is not set (no Iggy server here)"),
        Ok(addr) => panic!("IGGY_TEST_ADDR={addr} is set, but this build has no Iggy backend yet (issue 5)"),
    }
}
