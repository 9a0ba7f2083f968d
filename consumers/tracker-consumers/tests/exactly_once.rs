//! The consumers against the real embedded log and libSQL: a filter that dies between recording a batch and
//! appending its kept events, consumers whose log offsets fall behind their own, and events delivered to the
//! hot tier twice. Each ends with every raw event either once in the filtered log or once in the drop ledger, and
//! counted once.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use tracker_consumers::{Pipeline, Settings, filter, stats};
use tracker_log::{
    AppendReceipt, EmbeddedLog, EmbeddedLogConfig, EventLog, Filter, LogFuture, LogStatus, Polled, RecordSet,
};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Auth, Event, Uuid, partition_for};
use tracker_store::hot::{EventQuery, GroupBy, HotStore, StatsQuery};
use tracker_store::{Location, Store};

const PARTITIONS: u32 = 4;
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36";

fn log(dir: &std::path::Path, name: &str) -> Arc<dyn EventLog> {
    let cfg = EmbeddedLogConfig {
        partitions: PARTITIONS,
        commit_window: Duration::from_millis(1),
        ..EmbeddedLogConfig::new(dir.join(name))
    };
    Arc::new(EmbeddedLog::open(cfg).unwrap())
}

/// Ten minutes into an hour one to two hours ago: recent (the hot tier prunes old events), and every event of
/// a test in one hour of the ledger.
fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| (tracker_consumers::now_ms() - 7_200_000).div_euclid(3_600_000) * 3_600_000 + 600_000)
}

fn event(n: u64, bot: bool) -> Event {
    Event {
        event_id: Uuid::from_u64_pair(7, n),
        event_type: if n.is_multiple_of(3) { "postback".into() } else { "click".into() },
        timestamp: base_ms() + i64::try_from(n).unwrap() * 1000,
        received_at: base_ms() + i64::try_from(n).unwrap(),
        key_prefix: "acme".into(),
        ip: Some(format!("203.0.113.{}", n % 200)),
        user_agent: Some(if bot { "Googlebot/2.1".into() } else { BROWSER.into() }),
        referer: None,
        accept_language: None,
        request_path: Some("/t".into()),
        request_host: None,
        params: [("click_id".to_string(), format!("c{}", n / 2))].into(),
        raw_payload: None,
        auth: Auth::Link,
        historical: false,
        overflow: false,
    }
}

/// `n` events, every tenth a bot's, in record sets of 50.
fn sets(range: std::ops::Range<u64>) -> Vec<RecordSet> {
    let p = partition_for("acme", PARTITIONS);
    let events: Vec<Event> = range.map(|n| event(n, n.is_multiple_of(10))).collect();
    events
        .chunks(50)
        .map(|chunk| {
            let mut b = RecordSetBuilder::default();
            chunk.iter().for_each(|e| b.push(e));
            RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() }
        })
        .collect()
}

async fn pipeline(dir: &std::path::Path) -> Arc<Pipeline> {
    let store = Store::open(&dir.join("tracker.db")).await.unwrap();
    if store.tenant("acme").await.unwrap().is_none() {
        store.create_tenant("acme", Some("acme"), 0).await.unwrap();
    }
    Arc::new(Pipeline {
        raw: log(dir, "raw"),
        filtered: log(dir, "filtered"),
        store,
        hot: HotStore::connect(&Location::File(dir.join("hot.db"))).await.unwrap(),
        settings: Settings { filter_ip_per_minute: 0, ..Settings::default() },
    })
}

async fn filtered_ids(p: &Pipeline) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for part in 0..PARTITIONS {
        let mut at = 0;
        loop {
            let polled = p.filtered.poll(part, at, 10_000).await.unwrap();
            if polled.next_offset <= at {
                break;
            }
            ids.extend(polled.events.into_iter().map(|(_, e)| e.event_id));
            at = polled.next_offset;
        }
    }
    ids
}

async fn hot_total(p: &Pipeline) -> i64 {
    let q = StatsQuery {
        from: 0,
        to: i64::MAX / 2,
        bucket_ms: 3_600_000,
        group_by: GroupBy::None,
        event_type: None,
        tu_id: None,
        param: None,
    };
    p.hot.stats("acme", &q).await.unwrap().iter().map(|s| s.count).sum()
}

async fn bot_drops(p: &Pipeline) -> i64 {
    p.hot.drops("acme", 0, i64::MAX / 2, Some("bot")).await.unwrap().iter().map(|r| r.count).sum()
}

/// Runs the consumers until `done` holds (at most 20 s), then stops them.
async fn run_until(p: &Arc<Pipeline>, which: &[tracker_consumers::Which], done: impl AsyncFn() -> bool) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(tracker_consumers::run(p.clone(), which.to_vec(), stop.clone(), Default::default()));
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(20), "the consumers never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_dies_after_recording_a_batch_appends_exactly_what_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path()).await;
    p.raw.append(sets(0..1000), None).await.unwrap();

    // the filter records its first batch (ledger, decisions, position) and "dies" before appending
    assert!(filter::record_only(&p).await.unwrap());
    assert!(filtered_ids(&p).await.is_empty());
    let recorded_drops = bot_drops(&p).await;
    assert!(recorded_drops > 0);
    // nothing moves past a recorded batch whose kept events are not in the filtered log yet
    p.raw.append(sets(1000..1050), None).await.unwrap();
    let err = filter::record_only(&p).await.unwrap_err();
    assert!(err.contains("not appended yet"), "{err}");
    assert_eq!(bot_drops(&p).await, recorded_drops);

    // restarted, it appends the recorded batch as decided, then carries on with the rest
    let all = [tracker_consumers::Which::Filter, tracker_consumers::Which::Stats];
    run_until(&p, &all, || async { hot_total(&p).await == 945 }).await;
    let ids = filtered_ids(&p).await;
    assert_eq!(ids.len(), 945, "every kept event once");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 945);
    assert_eq!(bot_drops(&p).await, 105, "every bot's event once in the ledger, none twice");
    let samples = p.hot.drop_samples("acme", Some("bot"), 100).await.unwrap();
    assert_eq!(samples.len(), 10, "a bounded sample per hour and reason");

    // the consumers' offsets in the log fall back to zero (as after a lost commit): they skip what their own
    // records say is done, so nothing is filtered, appended or counted again
    let part = partition_for("acme", PARTITIONS);
    p.raw.commit_offset(filter::GROUP, part, 0).await.unwrap();
    p.filtered.commit_offset(stats::GROUP, part, 0).await.unwrap();
    p.raw.append(sets(1050..1100), None).await.unwrap();
    run_until(&p, &all, || async { hot_total(&p).await == 990 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(filtered_ids(&p).await.len(), 990);
    assert_eq!(bot_drops(&p).await, 110);
    assert_eq!(hot_total(&p).await, 990);
    // a batch is marked appended in the next batch's transaction, and a filter that stops marks its last ones
    assert_eq!(p.hot.filter_pending(filter::GROUP).await.unwrap(), vec![], "nothing left to append again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_tier_counts_an_event_delivered_twice_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path()).await;
    // the same 300 kept events reach the filtered log twice (an at-least-once producer, a replayed send)
    let kept: Vec<RecordSet> = sets(0..300);
    p.filtered.append(kept.clone(), None).await.unwrap();
    p.filtered.append(kept, None).await.unwrap();
    let all = [tracker_consumers::Which::Stats];
    let part = partition_for("acme", PARTITIONS);
    // until it has read both copies
    run_until(&p, &all, || async { p.hot.offset(stats::GROUP, part).await.unwrap() == 600 }).await;
    assert_eq!(hot_total(&p).await, 300);
    let q = EventQuery { limit: 1000, ..EventQuery::default() };
    assert_eq!(p.hot.events("acme", &q).await.unwrap().events.len(), 300);
    let by_param = StatsQuery {
        from: 0,
        to: i64::MAX / 2,
        bucket_ms: 3_600_000,
        group_by: GroupBy::Param("click_id".into()),
        event_type: None,
        tu_id: None,
        param: None,
    };
    let points = p.hot.stats("acme", &by_param).await.unwrap();
    assert_eq!(points.iter().map(|s| s.count).sum::<i64>(), 300, "param counts once too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_resent_with_its_id_passes_the_filter_once_even_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path()).await;
    p.raw.append(sets(0..300), None).await.unwrap();
    // the filter records its batch, with the ids it kept, and "dies" before appending
    assert!(filter::record_only(&p).await.unwrap());
    // then the client resends: 200..300 again in a later batch, 350..400 twice in one
    p.raw.append(sets(200..400), None).await.unwrap();
    p.raw.append(sets(350..400), None).await.unwrap();
    let all = [tracker_consumers::Which::Filter, tracker_consumers::Which::Stats];
    // every tenth event is a bot's: 360 of the 400 ids are kept, each once
    run_until(&p, &all, || async { hot_total(&p).await == 360 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids = filtered_ids(&p).await;
    assert_eq!((ids.len(), ids.iter().collect::<HashSet<_>>().len()), (360, 360), "each kept id once");
    assert_eq!(hot_total(&p).await, 360);
    let drops = |reason: &'static str| {
        let p = p.clone();
        async move {
            let rows = p.hot.drops("acme", 0, i64::MAX / 2, Some(reason)).await.unwrap();
            rows.iter().map(|r| r.count).sum::<i64>()
        }
    };
    assert_eq!(drops("duplicate").await, 90 + 45, "the copies of kept events, in the ledger");
    // a copy of an event that was dropped is judged again (it was never kept): the bots' copies are bots again
    assert_eq!(drops("bot").await, 30 + 10 + 10 + 5);
}

/// A log whose consumer-group reads panic: a bug in a consumer, as the process sees it.
#[derive(Debug)]
struct PanicsOnGroupRead(Arc<dyn EventLog>);

impl EventLog for PanicsOnGroupRead {
    fn partitions(&self) -> u32 {
        self.0.partitions()
    }
    fn append(&self, sets: Vec<RecordSet>, key: Option<String>) -> LogFuture<'_, AppendReceipt> {
        self.0.append(sets, key)
    }
    fn enqueue(&self, sets: Vec<RecordSet>) -> LogFuture<'_, ()> {
        self.0.enqueue(sets)
    }
    fn poll_where(&self, partition: u32, from: u64, max: usize, filter: Filter) -> LogFuture<'_, Polled> {
        self.0.poll_where(partition, from, max, filter)
    }
    fn poll_group(&self, _: &str, _: usize, _: Filter) -> LogFuture<'_, Option<(u32, Polled)>> {
        panic!("a consumer bug")
    }
    fn poll_group_besides<'a>(
        &'a self,
        _: &str,
        _: usize,
        _: Filter,
        _: &'a [u32],
    ) -> LogFuture<'a, Option<(u32, Polled)>> {
        panic!("a consumer bug")
    }
    fn commit_offset(&self, group: &str, partition: u32, next: u64) -> LogFuture<'_, ()> {
        self.0.commit_offset(group, partition, next)
    }
    fn committed_offset(&self, group: &str, partition: u32) -> LogFuture<'_, Option<u64>> {
        self.0.committed_offset(group, partition)
    }
    fn status(&self) -> LogStatus {
        self.0.status()
    }
    fn shutdown(&self) -> LogFuture<'_, ()> {
        self.0.shutdown()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_dies_is_named_and_one_that_was_stopped_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = pipeline(dir.path()).await;
    // the filter reads the raw log (panics), stats the filtered one (healthy)
    let p = Arc::new(Pipeline { raw: Arc::new(PanicsOnGroupRead(healthy.raw.clone())), ..(*healthy).clone() });
    let (stop, liveness) = (CancellationToken::new(), Arc::new(tracker_consumers::Liveness::default()));
    let which = vec![tracker_consumers::Which::Filter, tracker_consumers::Which::Stats];
    let task = tokio::spawn(tracker_consumers::run(p, which, stop.clone(), liveness.clone()));
    tokio::time::timeout(Duration::from_secs(10), liveness.first_death()).await.expect("the death is reported");
    assert_eq!(liveness.dead(), ["filter"]);
    // the others run on until the stop, and stopping is not dying
    assert!(!task.is_finished());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    assert_eq!(liveness.dead(), ["filter"]);
}
