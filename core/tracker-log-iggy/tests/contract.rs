//! The `EventLog` contract against a live Iggy server, in the configuration core nodes use: Iggy behind the local
//! spool (which also keeps the idempotency keys Iggy has no notion of). No Iggy server can be installed on the
//! machines this project is built on, so these tests are `#[ignore]`d (`make test` lists them by name) and run
//! with `--include-ignored` when `IGGY_TEST_ADDR` holds a connection string (`make test` does that when it is set;
//! see the README for `docker run apache/iggy`).

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, SpooledLog, contract};
use tracker_log_iggy::{IggyConfig, IggyLog};

/// The server under test (these tests are ignored unless one is given).
fn iggy_addr() -> String {
    std::env::var("IGGY_TEST_ADDR")
        .expect("set IGGY_TEST_ADDR to an Iggy connection string (iggy://iggy:iggy@127.0.0.1:8090 with apache/iggy)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an Iggy server: set IGGY_TEST_ADDR (make test then runs it)"]
async fn iggy_behind_the_spool_keeps_the_contract() {
    let url = iggy_addr();
    // a fresh stream per run, so earlier runs' messages and offsets do not interfere
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let cfg = IggyConfig {
        url,
        stream: format!("tracker-contract-{run}"),
        partitions: 3,
        retention: None,
        linger: Duration::from_millis(2),
        segment_bytes: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let spool =
            EmbeddedLog::open(EmbeddedLogConfig { partitions: 3, ..EmbeddedLogConfig::new(dir.path()) }).unwrap();
        let log = SpooledLog::new(spool, Duration::from_secs(5), "iggy");
        log.attach(Arc::new(IggyLog::connect(&cfg).await.unwrap()));
        log.drain().await.unwrap();
        Arc::new(log) as Arc<dyn EventLog>
    };
    contract::run("iggy", open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an Iggy server: set IGGY_TEST_ADDR (make test then runs it)"]
async fn members_of_a_consumer_group_share_the_partitions() {
    let url = iggy_addr();
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let cfg = IggyConfig {
        url,
        stream: format!("tracker-groups-{run}"),
        partitions: 4,
        retention: None,
        linger: Duration::from_millis(2),
        segment_bytes: None,
    };
    let producer = IggyLog::connect(&cfg).await.unwrap();
    for p in 0..4 {
        producer.append(vec![contract::set(p, 0..5)], None).await.unwrap();
    }
    // two instances of one consumer join the group; Iggy assigns each partition to one of them
    let members = [IggyLog::connect(&cfg).await.unwrap(), IggyLog::connect(&cfg).await.unwrap()];
    for m in &members {
        let _ = m.poll_group("stats", 1, tracker_log::Filter::ALL).await.unwrap();
    }
    let mut by_member: Vec<std::collections::BTreeMap<u32, Vec<u64>>> = vec![Default::default(); 2];
    for _ in 0..200 {
        let mut idle = true;
        for (i, m) in members.iter().enumerate() {
            if let Some((p, polled)) = m.poll_group("stats", 2, tracker_log::Filter::ALL).await.unwrap() {
                idle = false;
                by_member[i].entry(p).or_default().extend(polled.events.iter().map(|(o, _)| *o));
                m.commit_offset("stats", p, polled.next_offset).await.unwrap();
            }
        }
        if idle {
            break;
        }
    }
    let mut all: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for member in &by_member {
        for (p, offsets) in member {
            assert!(!all.contains_key(p), "partition {p} went to both members: {by_member:?}");
            all.insert(*p, offsets.clone());
        }
    }
    let expected: std::collections::BTreeMap<u32, Vec<u64>> = (0..4).map(|p| (p, (0..5).collect())).collect();
    assert_eq!(all, expected, "every event once, across the members");
    assert!(by_member.iter().all(|m| !m.is_empty()), "both members got work: {by_member:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an Iggy server: set IGGY_TEST_ADDR (make test then runs it)"]
async fn expired_events_are_deleted_and_offsets_carry_on() {
    let url = iggy_addr();
    // one-second expiry and small segments, so sealed segments expire within the server's cleaner interval
    // (start the server with IGGY_DATA_MAINTENANCE_MESSAGES_INTERVAL=1s for a short test)
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let cfg = IggyConfig {
        url,
        stream: format!("tracker-retention-{run}"),
        partitions: 1,
        retention: Some(Duration::from_secs(1)),
        linger: Duration::from_millis(2),
        segment_bytes: Some(1024 * 1024),
    };
    let log = IggyLog::connect(&cfg).await.unwrap();
    // several 1 MiB segments' worth (an event is about 130 bytes as a message)
    for i in 0..40 {
        log.append(vec![contract::set(0, i * 1000..(i + 1) * 1000)], None).await.unwrap();
    }
    let mut first = 0;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let polled = log.poll(0, 0, 10).await.unwrap();
        first = polled.events.first().map_or(u64::MAX, |(o, _)| *o);
        if first > 0 {
            break;
        }
    }
    assert!(first > 0, "the oldest events expired");
    let r = log.append(vec![contract::set(0, 40_000..40_001)], None).await.unwrap();
    assert_eq!(r.parts, vec![(0, 40_000, 1)], "offsets never restart after deletions");
}
