//! The `EventLog` contract against a live Iggy server, in the configuration core nodes use: Iggy behind the local
//! spool (which also keeps the idempotency keys Iggy has no notion of). No Iggy server can be installed on the
//! machines this project is built on, so the test runs only when `IGGY_TEST_ADDR` holds a connection string (see
//! the README for `docker run apache/iggy`), and says so when it is skipped.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, SpooledLog, contract};
use tracker_log_iggy::{IggyConfig, IggyLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iggy_behind_the_spool_keeps_the_contract() {
    let Ok(url) = std::env::var("IGGY_TEST_ADDR") else {
        eprintln!(
            "SKIPPED iggy_behind_the_spool_keeps_the_contract: set IGGY_TEST_ADDR to an Iggy connection string \
             (iggy://iggy:iggy@127.0.0.1:8090 for `docker run apache/iggy`) to run it"
        );
        return;
    };
    // a fresh stream per run, so earlier runs' messages and offsets do not interfere
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let cfg = IggyConfig {
        url,
        stream: format!("tracker-contract-{run}"),
        partitions: 3,
        retention: None,
        linger: Duration::from_millis(2),
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
async fn members_of_a_consumer_group_share_the_partitions() {
    let Ok(url) = std::env::var("IGGY_TEST_ADDR") else {
        eprintln!("SKIPPED members_of_a_consumer_group_share_the_partitions: IGGY_TEST_ADDR is not set");
        return;
    };
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let cfg = IggyConfig {
        url,
        stream: format!("tracker-groups-{run}"),
        partitions: 4,
        retention: None,
        linger: Duration::from_millis(2),
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
