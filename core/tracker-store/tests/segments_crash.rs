//! The hot tier killed (SIGKILL) while it writes and merges segments: after each kill, the segments hold exactly
//! the events of the batches whose position was committed, each once, and every segment reads.
//!
//! The test runs itself again as the writer (`HOT_CRASH_WRITER` names its database), kills it at a different
//! moment each round, and checks the database it left.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use tracker_protocol::{Auth, Event, Uuid};
use tracker_store::Location;
use tracker_store::hot::{EventQuery, HotStore};

const BATCH: u64 = 2_000;
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

fn event(n: u64) -> Event {
    let ts = 1_700_000_000_000 + i64::try_from(n).unwrap() * 10;
    Event {
        event_id: Uuid::from_u64_pair(9, n),
        event_type: "click".into(),
        timestamp: ts,
        received_at: ts,
        key_prefix: TENANTS[(n % 3) as usize].into(),
        ip: Some("203.0.113.7".into()),
        user_agent: Some(format!("agent {}", n % 17)),
        referer: None,
        accept_language: None,
        request_path: None,
        request_host: None,
        params: [("click_id".to_owned(), format!("{:x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))].into(),
        raw_payload: None,
        auth: Auth::Link,
        historical: false,
        overflow: false,
    }
}

/// The writer: batches (some small, so merges run too) from where the last run's position is, forever.
async fn write_forever(path: &str) {
    let hot = HotStore::connect(&Location::File(path.into())).await.unwrap();
    let mut at = hot.offset("stats", 0).await.unwrap();
    loop {
        let size = if (at / BATCH).is_multiple_of(4) { BATCH } else { 50 };
        let events: Vec<Event> = (at..at + size).map(event).collect();
        hot.apply_events("stats", 0, at + size, &events).await.unwrap();
        at += size;
        hot.merge_step().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_segment_leaves_exactly_the_committed_batches() {
    if let Ok(path) = std::env::var("HOT_CRASH_WRITER") {
        return write_forever(&path).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hot.db");
    let mut committed = 0;
    for round in 0..4u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_writer_killed_mid_segment_leaves_exactly_the_committed_batches", "--nocapture"])
            .env("HOT_CRASH_WRITER", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700 + 311 * round)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let hot = HotStore::connect(&Location::File(path.clone())).await.unwrap();
        let at = hot.offset("stats", 0).await.unwrap();
        assert!(at > committed, "round {round}: the writer got nowhere ({at})");
        committed = at;
        let (_, rows, _) = hot.segment_totals().await.unwrap();
        assert_eq!(rows, at, "round {round}: the segments hold the committed batches, no more, no less");
        // and every event reads back, once
        let mut ids = BTreeSet::new();
        for tenant in TENANTS {
            let page = hot.events(tenant, &EventQuery { limit: 1_000_000, ..EventQuery::default() }).await.unwrap();
            for e in &page.events {
                let e: Event = serde_json::from_str(e).unwrap();
                assert!(ids.insert(e.event_id), "round {round}: {} twice", e.event_id);
            }
        }
        let want: BTreeSet<Uuid> = (0..at).map(|n| Uuid::from_u64_pair(9, n)).collect();
        assert_eq!(ids, want, "round {round}");
    }
}
