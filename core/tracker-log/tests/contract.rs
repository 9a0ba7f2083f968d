//! The `EventLog` contract (`tracker_log::contract`) against the embedded log and the spooled log (a primary
//! behind a local spool). The Iggy backend runs the same contract in `core/tracker-log-iggy/tests`.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, SpooledLog, contract};

fn embedded_at(dir: &Path) -> EmbeddedLog {
    EmbeddedLog::open(EmbeddedLogConfig { partitions: 3, ..EmbeddedLogConfig::new(dir) }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract::run("embedded", || async { Arc::new(embedded_at(dir.path())) as Arc<dyn EventLog> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spooled_log_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    // a primary behind a spool, connected and drained (the steady state)
    let open = || async {
        let log = SpooledLog::new(embedded_at(&dir.path().join("spool")), Duration::from_secs(2), "spooled");
        log.attach(Arc::new(embedded_at(&dir.path().join("primary"))));
        log.drain().await.unwrap();
        Arc::new(log) as Arc<dyn EventLog>
    };
    contract::run("spooled", open).await;
}
