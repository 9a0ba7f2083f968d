//! The archiver against the real embedded log and a Delta table in a local directory: stopped at arbitrary
//! points (an aborted task: data files may be written without their commit) and restarted, every event is in the
//! table exactly once, and any Delta reader (DataFusion here) reads it by tenant and date.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use deltalake::datafusion::prelude::SessionContext;
use tracker_archive::{ArchiveSettings, open_table, positions};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, RecordSet};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Auth, Event, Uuid, partition_for};

const PARTITIONS: u32 = 4;

fn event(tenant: &str, n: u64) -> Event {
    Event {
        event_id: Uuid::from_u64_pair(u64::from(tenant.len() as u32), n),
        event_type: if n.is_multiple_of(4) { "postback".into() } else { "click".into() },
        // two days of events, so two date partitions per tenant
        timestamp: 1_795_900_000_000 + i64::try_from(n).unwrap() * 20_000,
        received_at: 1_795_900_000_000 + i64::try_from(n).unwrap() * 20_000,
        key_prefix: tenant.into(),
        ip: Some("203.0.113.9".into()),
        user_agent: Some("Mozilla/5.0".into()),
        referer: None,
        accept_language: None,
        request_path: Some("/t".into()),
        request_host: None,
        params: [("click_id".to_string(), format!("c{n}")), ("sub1".to_string(), "google".to_string())].into(),
        raw_payload: None,
        auth: Auth::Link,
        historical: false,
    }
}

async fn append(log: &Arc<dyn EventLog>, tenant: &str, range: std::ops::Range<u64>) {
    let p = partition_for(tenant, PARTITIONS);
    let events: Vec<Event> = range.map(|n| event(tenant, n)).collect();
    let sets: Vec<RecordSet> = events
        .chunks(500)
        .map(|chunk| {
            let mut b = RecordSetBuilder::default();
            chunk.iter().for_each(|e| b.push(e));
            RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() }
        })
        .collect();
    log.append(sets, None).await.unwrap();
}

async fn counts(settings: &ArchiveSettings) -> (i64, i64, Vec<(String, String, i64)>) {
    let table = open_table(settings).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("events", table.table_provider().await.unwrap()).unwrap();
    let total = ctx.sql("SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM events").await.unwrap();
    let batches = total.collect().await.unwrap();
    let col = |i: usize| {
        batches[0].column(i).as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().unwrap().value(0)
    };
    let (n, d) = (col(0), col(1));
    let per = ctx
        .sql("SELECT tenant, date, COUNT(*) FROM events GROUP BY tenant, date ORDER BY tenant, date")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut rows = Vec::new();
    for b in per {
        let t = deltalake::arrow::compute::cast(b.column(0), &deltalake::arrow::datatypes::DataType::Utf8).unwrap();
        let dt = deltalake::arrow::compute::cast(b.column(1), &deltalake::arrow::datatypes::DataType::Utf8).unwrap();
        let t = t.as_any().downcast_ref::<deltalake::arrow::array::StringArray>().unwrap();
        let dt = dt.as_any().downcast_ref::<deltalake::arrow::array::StringArray>().unwrap();
        let c = b.column(2).as_any().downcast_ref::<deltalake::arrow::array::Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            rows.push((t.value(i).to_owned(), dt.value(i).to_owned(), c.value(i)));
        }
    }
    (n, d, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_anywhere_and_restarted_every_event_is_archived_once() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(EmbeddedLogConfig {
            partitions: PARTITIONS,
            ..EmbeddedLogConfig::new(dir.path().join("log"))
        })
        .unwrap(),
    );
    append(&log, "acme", 0..6000).await;
    append(&log, "globex", 0..3000).await;
    let settings = ArchiveSettings {
        table_url: deltalake::ensure_table_uri(dir.path().join("lake/events").to_str().unwrap()).unwrap(),
        storage_options: Default::default(),
        flush_events: 700,
        flush_interval: Duration::from_millis(50),
    };
    // three runs cut short at different points (mid-write or between commits), then one to the end
    for cut_ms in [40u64, 120, 260] {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop));
        tokio::time::sleep(Duration::from_millis(cut_ms)).await;
        task.abort();
        let _ = task.await;
        let at = positions(&open_table(&settings).await.unwrap(), PARTITIONS).await.unwrap();
        println!("cut after {cut_ms} ms: the table holds log positions {at:?}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop.clone()));
    let started = Instant::now();
    loop {
        let table = open_table(&settings).await.unwrap();
        let at = positions(&table, PARTITIONS).await.unwrap();
        let done = at[partition_for("acme", PARTITIONS) as usize] == 6000
            && at[partition_for("globex", PARTITIONS) as usize] == 3000;
        if done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "archiver stuck at {at:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    task.await.unwrap().unwrap();
    let (n, distinct, per) = counts(&settings).await;
    assert_eq!((n, distinct), (9000, 9000), "every event once");
    let acme: i64 = per.iter().filter(|r| r.0 == "acme").map(|r| r.2).sum();
    assert_eq!(acme, 6000);
    assert!(per.iter().filter(|r| r.0 == "acme").count() >= 2, "partitioned by date: {per:?}");

    // DuckDB, an independent Delta reader, reads the same counts (and the params as a native map)
    let Some(python) = std::env::var_os("TRACKER_DUCKDB_PYTHON") else {
        println!("SKIPPED the DuckDB check: TRACKER_DUCKDB_PYTHON is not set (make test sets it)");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/archive/duckdb_check.py");
    let out = std::process::Command::new(python).arg(script).arg(dir.path().join("lake/events")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let duck_per: Vec<(String, String, i64)> = duck["per_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r[2], r[3], "DuckDB sees each event once");
            (r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned(), r[2].as_i64().unwrap())
        })
        .collect();
    assert_eq!(duck_per, per, "DuckDB reads what DataFusion reads");
    assert_eq!(duck["sub1_google"], 9000);
}
