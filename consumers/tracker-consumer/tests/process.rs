//! `tracker-consumer` as a process: a node with `CONSUMERS=off` takes the events, and the binary (here on the same
//! embedded log, after the node stopped; in production against Iggy beside the nodes) filters them into the hot
//! tier, stops cleanly on SIGTERM and refuses an unknown consumer.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracker_core::{Config, build_state, serve};
use tracker_store::Store;
use tracker_store::hot::{EventQuery, HotStore};

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_run_as_a_process_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let token = {
        let store = Store::open(&dir.path().join("tracker.db")).await.unwrap();
        store.create_tenant("acme", Some("acme"), now_ms()).await.unwrap();
        store.create_ingest_token("acme", "t", None, now_ms()).await.unwrap().0
    };
    // the node, in this process: it takes the events and consumes none of them
    let mut cfg = Config::for_dir(dir.path());
    cfg.node.consumers_in_process = false;
    cfg.log.partitions = 4;
    let state = build_state(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(serve(state, listener, async {
        let _ = stopped.await;
    }));
    let events: Vec<Value> =
        (0..500).map(|i| json!({"event_type": "signup", "params": {"i": i.to_string()}})).collect();
    let res = reqwest::Client::new().post(format!("{base}/batch")).bearer_auth(&token).json(&events).send().await;
    assert_eq!(res.unwrap().status(), 200);
    stop.send(()).unwrap();
    // every task of the node has ended when `serve` returns: its log can be opened by the consumer at once
    node.await.unwrap().unwrap();
    let hot = HotStore::connect(&tracker_store::Location::File(dir.path().join("hot.db"))).await.unwrap();
    let listed = |hot: HotStore| async move {
        let q = EventQuery { limit: 1000, ..Default::default() };
        hot.events("acme", &q).await.unwrap().events.len()
    };
    assert_eq!(listed(hot.clone()).await, 0, "the node itself consumed nothing");

    let ops = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let mut consumer = std::process::Command::new(env!("CARGO_BIN_EXE_tracker-consumer"))
        .args(["filter", "stats"])
        .env("DATA_DIR", dir.path())
        .env("CONSUMER_LISTEN", ops.to_string())
        .env("LOG_PARTITIONS", "4")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let started = Instant::now();
    while listed(hot.clone()).await < 500 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed(hot).await, 500);
    // the process's metrics and health: every event filtered, none left behind in any partition
    let http = reqwest::Client::new();
    let health = http.get(format!("http://{ops}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let metrics = http.get(format!("http://{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    for partition in 0..4 {
        let line = format!("tracker_consumer_lag_events{{group=\"filter\",partition=\"{partition}\"}} 0");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains("tracker_log_appended_events_total"), "the log's gauges: {metrics}");
    assert!(std::process::Command::new("kill").args(["-TERM", &consumer.id().to_string()]).status().unwrap().success());
    assert!(consumer.wait().unwrap().success(), "stops cleanly on SIGTERM");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tracker-consumer")).arg("archiver").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown consumer"));
}
