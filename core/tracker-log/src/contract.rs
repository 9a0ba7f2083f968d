//! The contract every [`EventLog`] implementation keeps: order per partition, contiguous offsets that continue
//! after a restart, durable reads, idempotent appends, and consumer groups whose offsets are independent and
//! survive restarts. Test support (it panics on a breach), public so every backend's tests run the same checks.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::missing_panics_doc)] // a test suite

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracker_protocol::{Auth, Event, Uuid, wire};

use crate::{EventLog, RecordSet};

/// Event `n` of a test tenant whose events go to partition `p`: a click recorded from a link, with the param
/// `n` as its last encoded field (tests match on it).
pub fn event(p: u32, n: u64) -> Event {
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
        auth: Auth::Link,
        historical: false,
        overflow: false,
    }
}

/// Events `range` of partition `p` as one record set, tagged like a producer would tag it.
pub fn set(p: u32, range: std::ops::Range<u64>) -> RecordSet {
    let mut b = wire::RecordSetBuilder::default();
    for n in range {
        b.push(&event(p, n));
    }
    RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() }
}

/// Runs the contract against the log `open` returns; `open` is called again after a shutdown and must give the
/// same log back (the same directory, the same server and stream). Panics with `name` on the first breach.
pub async fn run<F, Fut>(name: &str, open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = open().await;
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
    // record sets as stored hold the same events, also from the middle of a set
    for from in [0, 2, 4, 5] {
        let sets = log.poll_sets(0, from, 100).await.unwrap();
        let mut read = Vec::new();
        for set in &sets.sets {
            for item in set.events(0).unwrap() {
                let (offset, raw) = item.unwrap();
                read.push((offset, tracker_protocol::wire::decode_event(raw).unwrap()));
            }
        }
        assert_eq!(read, log.poll(0, from, 100).await.unwrap().events, "{name}: sets from {from}");
        assert_eq!(sets.next_offset, 6, "{name}");
    }
    let part = log.poll_sets(0, 1, 2).await.unwrap();
    let offsets: Vec<u64> = part.sets.iter().flat_map(|s| s.events(0).unwrap().map(|e| e.unwrap().0)).collect();
    assert_eq!((offsets, part.next_offset), (vec![1, 2], 3), "{name}: at most max_events, a set in part");
    let none = log.poll_sets(0, 6, 100).await.unwrap();
    assert!(none.sets.is_empty() && none.next_offset == 6, "{name}: nothing after the end");
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

    // a consumer group's member reads every event once, in order per partition, moving on as it commits
    let mut seen: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for _ in 0..100 {
        let Some((p, polled)) = log.poll_group("archiver", 2, crate::Filter::ALL).await.unwrap() else { break };
        seen.entry(p).or_default().extend(polled.events.iter().map(|(o, _)| *o));
        log.commit_offset("archiver", p, polled.next_offset).await.unwrap();
    }
    let expected: std::collections::BTreeMap<u32, Vec<u64>> =
        [(0, (0..6).collect()), (1, (0..3).collect()), (2, (0..3).collect())].into();
    assert_eq!(seen, expected, "{name}: a group member sees each event once");
    assert!(log.poll_group("archiver", 10, crate::Filter::ALL).await.unwrap().is_none(), "{name}: caught up");

    // a member holding reads of some partitions uncommitted is given the others, then none
    let mut held = Vec::new();
    while let Some((p, polled)) = log.poll_group_besides("merger", 100, crate::Filter::ALL, &held).await.unwrap() {
        assert!(!held.contains(&p) && !polled.events.is_empty(), "{name}: partition {p} again");
        held.push(p);
    }
    held.sort_unstable();
    assert_eq!(held, [0, 1, 2], "{name}: every partition with events, once");
    let (p, _) = log.poll_group("merger", 100, crate::Filter::ALL).await.unwrap().expect("nothing committed yet");
    assert!(log.poll_group_besides("merger", 100, crate::Filter::ALL, &[0, 1, 2]).await.unwrap().is_none(), "{name}");
    assert!(held.contains(&p));

    // a restart keeps events, offsets and committed offsets, and appends continue after them
    log.shutdown().await.unwrap();
    drop(log);
    let log = open().await;
    assert_eq!(log.committed_offset("stats", 0).await.unwrap(), Some(4), "{name}");
    let resumed = log.poll(0, 4, 100).await.unwrap();
    assert_eq!(resumed.events.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![4, 5], "{name}");
    let r = log.append(vec![set(0, 6..7)], None).await.unwrap();
    assert_eq!(r.parts, vec![(0, 6, 1)], "{name}");
    log.shutdown().await.unwrap();
}
