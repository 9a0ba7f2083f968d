//! The `EventLog` contract against a live Iggy server. No Iggy server can be installed on the machines this
//! project is built on, so the test runs only when `IGGY_TEST_ADDR` holds a connection string (see the README for
//! `docker run apache/iggy`), and says so when it is skipped.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracker_log::{EventLog, contract};
use tracker_log_iggy::{IggyConfig, IggyLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iggy_keeps_the_contract() {
    let Ok(url) = std::env::var("IGGY_TEST_ADDR") else {
        eprintln!(
            "SKIPPED iggy_keeps_the_contract: set IGGY_TEST_ADDR to an Iggy connection string \
             (iggy://iggy:iggy@127.0.0.1:8090 for `docker run apache/iggy`) to run it"
        );
        return;
    };
    // a fresh stream per run, so earlier runs' messages and offsets do not interfere
    let run = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let cfg = IggyConfig { url, stream: format!("tracker-contract-{run}"), partitions: 3, retention: None };
    contract::run("iggy", || async { Arc::new(IggyLog::connect(&cfg).await.unwrap()) as Arc<dyn EventLog> }).await;
}
