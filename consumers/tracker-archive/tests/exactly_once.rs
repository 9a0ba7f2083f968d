//! The archiver against the real embedded log and Delta tables in a local directory and on a local S3 server:
//! stopped at its crash points (fail-rs, asserted to be reached: data files written without their commit, the events
//! committed with the rollups' commit in flight, both committed before the offsets are shown) and restarted,
//! every event is in `events` exactly once and counted exactly once in `rollups`, while maintenance compacts the
//! tables alongside; retention deletes, compaction and vacuum keep the archiver's positions; any Delta reader
//! (DataFusion here, DuckDB too) reads the tables by tenant and date.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use deltalake::arrow::array::{Array, StringArray};
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;
use tracker_archive::{ArchiveError, ArchiveSettings, Maintenance, Retention, Table, maintain, positions, read_table};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, RecordSet};

#[path = "../../../tests/support/needs.rs"]
mod needs;
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Auth, Event, Uuid, partition_for};

const PARTITIONS: u32 = 4;
/// 2026-11-28 21:06:40 UTC; events are 20 s apart, so acme's 6,000 span 2026-11-28 (520), 11-29 (4,320) and
/// 11-30 (1,160), globex's 3,000 span 11-28 (520) and 11-29 (2,480).
const START_MS: i64 = 1_795_900_000_000;

fn event(tenant: &str, n: u64) -> Event {
    let link = n.is_multiple_of(2).then(|| format!("L{}", n % 3));
    let mut params: std::collections::BTreeMap<String, String> =
        [("click_id".to_string(), format!("c{n}")), ("sub1".to_string(), "google".to_string())].into();
    if let Some(l) = &link {
        params.insert("tu_id".into(), l.clone());
    }
    Event {
        event_id: Uuid::from_u64_pair(u64::from(tenant.len() as u32), n),
        event_type: if n.is_multiple_of(4) { "postback".into() } else { "click".into() },
        timestamp: START_MS + i64::try_from(n).unwrap() * 20_000,
        received_at: START_MS + i64::try_from(n).unwrap() * 20_000,
        key_prefix: tenant.into(),
        ip: Some("203.0.113.9".into()),
        user_agent: Some("Mozilla/5.0".into()),
        referer: None,
        accept_language: None,
        request_path: Some(link.map_or("/p".into(), |l| format!("/t/{l}"))),
        request_host: None,
        params,
        raw_payload: None,
        auth: Auth::Link,
        historical: false,
        overflow: false,
    }
}

fn embedded_log(dir: &std::path::Path) -> Arc<dyn EventLog> {
    Arc::new(EmbeddedLog::open(EmbeddedLogConfig { partitions: PARTITIONS, ..EmbeddedLogConfig::new(dir) }).unwrap())
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

fn local(dir: &std::path::Path) -> ArchiveSettings {
    let base = tracker_archive::parse_base(dir.join("lake").to_str().unwrap()).unwrap();
    ArchiveSettings { flush_events: 700, flush_interval: Duration::from_millis(50), ..ArchiveSettings::new(base) }
}

/// Runs `sql` over both tables; every value as text.
async fn query(settings: &ArchiveSettings, sql: &str) -> Vec<Vec<String>> {
    let ctx = SessionContext::new();
    for t in Table::ALL {
        let table = read_table(settings, t).await.unwrap().expect("the archiver created the table");
        ctx.register_table(t.name(), table.table_provider().await.unwrap()).unwrap();
    }
    let mut rows = Vec::new();
    for b in ctx.sql(sql).await.unwrap().collect().await.unwrap() {
        let cols: Vec<_> =
            b.columns().iter().map(|c| deltalake::arrow::compute::cast(c, &DataType::Utf8).unwrap()).collect();
        for i in 0..b.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| {
                        let s = c.as_any().downcast_ref::<StringArray>().unwrap();
                        if s.is_null(i) { "null".to_owned() } else { s.value(i).to_owned() }
                    })
                    .collect(),
            );
        }
    }
    rows
}

async fn held(settings: &ArchiveSettings, table: Table) -> Vec<u64> {
    match read_table(settings, table).await.unwrap() {
        Some(t) => positions(&t, table, PARTITIONS).await.unwrap(),
        None => vec![0; PARTITIONS as usize],
    }
}

/// Archives until both tables hold `expected` events per tenant's partition.
async fn archive_until(log: &Arc<dyn EventLog>, settings: &ArchiveSettings, expected: &[(&str, u64)]) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop.clone()));
    let started = Instant::now();
    loop {
        let (e, r) = (held(settings, Table::Events).await, held(settings, Table::Rollups).await);
        let at = |v: &[u64], t: &str| v[partition_for(t, PARTITIONS) as usize];
        if expected.iter().all(|(t, n)| at(&e, t) == *n && at(&r, t) == *n) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "archiver stuck at {e:?} / {r:?}");
        assert!(!task.is_finished(), "archiver failed: {:?}", task.await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// The archiver's crash points, in the order a commit passes them: data files written and not committed; the
/// events committed and the rollups' commit in flight; both committed, the group offsets not shown.
const CRASH_POINTS: [&str; 3] = ["archive-staged", "archive-events-committed", "archive-committed"];

/// Runs the archiver until it stops at crash point `point` (fail-rs, for this archive only); asserts it got there.
async fn crash_at(log: &Arc<dyn EventLog>, settings: &ArchiveSettings, point: &'static str) {
    // the archive's own location names it, so archivers of other tests in this process pass the point
    fail::cfg(point, &format!("return({})", settings.base.as_str().trim_end_matches('/'))).unwrap();
    let run = tracker_archive::run(log.clone(), settings.clone(), CancellationToken::new());
    let ended = tokio::time::timeout(Duration::from_secs(60), run).await;
    fail::remove(point);
    match ended {
        Ok(Err(ArchiveError::Injected(at))) => assert_eq!(at, point),
        other => panic!("the archiver did not stop at {point}: {other:?}"),
    }
}

/// Three runs stopped at the crash points, then one to the end while maintenance compacts alongside; checks every
/// event once in `events` and once in `rollups`.
async fn cut_restart_and_count(settings: &ArchiveSettings) {
    let dir = tempfile::tempdir().unwrap();
    let log = embedded_log(&dir.path().join("log"));
    append(&log, "acme", 0..6000).await;
    append(&log, "globex", 0..3000).await;
    for point in CRASH_POINTS {
        crash_at(&log, settings, point).await;
        let (e, r) = (held(settings, Table::Events).await, held(settings, Table::Rollups).await);
        println!("crashed at {point}: events hold {e:?}, rollups {r:?}");
    }
    // maintenance keeps compacting while the archiver appends: neither blocks nor conflicts with the other
    let done = CancellationToken::new();
    let compactor = {
        let (settings, done) = (settings.clone(), done.clone());
        tokio::spawn(async move {
            let (mut runs, mut compacted) = (0, 0);
            while !done.is_cancelled() {
                match maintain(&settings, &[], START_MS).await {
                    Ok(r) => (runs, compacted) = (runs + 1, compacted + r.compacted[0].0),
                    Err(e) => println!("maintenance run failed (retried): {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (runs, compacted)
        })
    };
    archive_until(&log, settings, &[("acme", 6000), ("globex", 3000)]).await;
    done.cancel();
    let (runs, compacted) = compactor.await.unwrap();
    println!("{runs} maintenance runs compacted {compacted} files while archiving");
    assert!(runs > 0, "maintenance ran alongside the archiver");

    let total = query(settings, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events").await;
    assert_eq!(total, [["9000", "9000"]], "every event once");
    let per_day = query(settings, "SELECT tenant, date, COUNT(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2").await;
    let expected_days = [
        ["acme", "2026-11-28", "520"],
        ["acme", "2026-11-29", "4320"],
        ["acme", "2026-11-30", "1160"],
        ["globex", "2026-11-28", "520"],
        ["globex", "2026-11-29", "2480"],
    ];
    assert_eq!(per_day, expected_days, "partitioned by tenant and the event's UTC date");
    // the rollups count each event once: per tenant, type and link they sum to the events table's counts
    let from_events = query(
        settings,
        "SELECT tenant, event_type, COALESCE(tu_id, '-'), COUNT(*) FROM events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .await;
    let from_rollups = query(
        settings,
        "SELECT tenant, event_type, COALESCE(tu_id, '-'), SUM(events) FROM rollups GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .await;
    assert_eq!(from_rollups, from_events, "rollups count every event exactly once");
    assert_eq!(from_events.len(), 14, "per tenant: clicks on 3 links or none, postbacks on 3 links: {from_events:?}");
    let hours = query(settings, "SELECT COUNT(DISTINCT hour), MIN(hour) FROM rollups WHERE tenant = 'acme'").await;
    assert_eq!(hours, [["34", "2026-11-28T21:00:00Z"]], "hourly rows from the event's own time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_anywhere_and_restarted_every_event_is_archived_and_rolled_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let settings = local(dir.path());
    cut_restart_and_count(&settings).await;

    // DuckDB, an independent Delta reader, reads the same counts (and the params as a native map)
    let Some(python) = needs::var("TRACKER_DUCKDB_PYTHON", "the DuckDB check", "a Python with DuckDB's Delta reader")
    else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/archive/duckdb_check.py");
    let lake = dir.path().join("lake");
    let out = std::process::Command::new(python).arg(script).arg(&lake).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let per_day = query(&settings, "SELECT tenant, date, COUNT(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2").await;
    let duck_per: Vec<Vec<String>> = duck["per_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r[2], r[3], "DuckDB sees each event once");
            vec![r[0].as_str().unwrap().to_owned(), r[1].as_str().unwrap().to_owned(), r[2].to_string()]
        })
        .collect();
    assert_eq!(duck_per, per_day, "DuckDB reads what DataFusion reads");
    assert_eq!(duck["sub1_google"], 9000);
    assert_eq!(duck["rollup_events"], 9000, "DuckDB sums the rollups to the same total");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_behind_the_other_takes_only_what_it_lacks() {
    // a crash between the two tables' commits leaves `rollups` behind `events`; here it is lost entirely
    let dir = tempfile::tempdir().unwrap();
    let settings = local(dir.path());
    let log = embedded_log(&dir.path().join("log"));
    append(&log, "acme", 0..2000).await;
    archive_until(&log, &settings, &[("acme", 2000)]).await;
    std::fs::remove_dir_all(dir.path().join("lake/rollups")).unwrap();
    append(&log, "acme", 2000..3000).await;
    archive_until(&log, &settings, &[("acme", 3000)]).await;
    assert_eq!(query(&settings, "SELECT COUNT(DISTINCT event_id), COUNT(*) FROM events").await, [["3000", "3000"]]);
    assert_eq!(query(&settings, "SELECT SUM(events) FROM rollups").await, [["3000"]], "rebuilt from the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_expires_a_tenants_old_days_compacts_and_vacuums_and_keeps_the_positions() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ArchiveSettings {
        maintenance: Maintenance { vacuum_retention: Duration::ZERO, ..Maintenance::default() },
        ..local(dir.path())
    };
    let log = embedded_log(&dir.path().join("log"));
    append(&log, "acme", 0..6000).await;
    append(&log, "globex", 0..3000).await;
    archive_until(&log, &settings, &[("acme", 6000), ("globex", 3000)]).await;
    let files = |t: &str| {
        let mut n = 0;
        // data files (the log's checkpoints are Parquet too)
        for e in walk(&dir.path().join("lake").join(t)) {
            n += usize::from(
                e.extension().is_some_and(|x| x == "parquet") && !e.to_string_lossy().contains("_delta_log"),
            );
        }
        n
    };
    let before = files("events");
    assert!(before > 10, "small commits made many files: {before}");

    // acme keeps one day: on 2026-11-30 12:00 UTC, its 2026-11-28 partition goes; globex keeps everything
    let now = 1_796_040_000_000;
    let retention = [Retention { tenant: "acme".into(), keep_days: 1 }];
    let report = maintain(&settings, &retention, now).await.unwrap();
    println!("{report:?}");
    assert!(report.expired_files[0] > 0 && report.expired_files[1] > 0, "{report:?}");
    let per_tenant = query(&settings, "SELECT tenant, COUNT(*), MIN(date) FROM events GROUP BY 1 ORDER BY 1").await;
    assert_eq!(per_tenant, [["acme", "5480", "2026-11-29"], ["globex", "3000", "2026-11-28"]]);
    assert_eq!(
        query(&settings, "SELECT tenant, SUM(events) FROM rollups GROUP BY 1 ORDER BY 1").await,
        [["acme", "5480"], ["globex", "3000"]],
        "the rollups expire with the events"
    );
    // one file per partition after OPTIMIZE, and VACUUM removed the rest from storage
    assert_eq!(files("events"), 4, "4 partitions left, one file each");
    // what each tenant stores is what is on disk under its partitions of both tables (VACUUM left nothing else)
    for tenant in ["acme", "globex"] {
        let mut on_disk = 0;
        for table in ["events", "rollups"] {
            for e in walk(&dir.path().join("lake").join(table)) {
                let p = e.to_string_lossy();
                if p.ends_with(".parquet") && p.contains(&format!("tenant={tenant}/")) {
                    on_disk += std::fs::metadata(&e).unwrap().len();
                }
            }
        }
        assert!(on_disk > 0);
        assert_eq!(report.stored_bytes.get(tenant), Some(&on_disk), "{tenant}");
    }
    assert_eq!(query(&settings, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events").await, [["8480", "8480"]]);
    // the archiver's positions survive compaction: a restart archives only what is new
    assert_eq!(held(&settings, Table::Events).await, held(&settings, Table::Rollups).await);
    append(&log, "globex", 3000..3100).await;
    archive_until(&log, &settings, &[("acme", 6000), ("globex", 3100)]).await;
    assert_eq!(query(&settings, "SELECT COUNT(*) FROM events WHERE tenant = 'globex'").await, [["3100"]]);
    // nothing to do the second time
    let again = maintain(&settings, &retention, now).await.unwrap();
    assert_eq!(again.expired_files, [0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archivers_at_once_never_write_an_event_twice() {
    // a writer that lost its lease and has not noticed yet: the fence stops whichever's positions went stale
    let dir = tempfile::tempdir().unwrap();
    let settings = local(dir.path());
    let log = embedded_log(&dir.path().join("log"));
    append(&log, "acme", 0..6000).await;
    append(&log, "globex", 0..3000).await;
    let done = CancellationToken::new();
    let mut writers = Vec::new();
    for _ in 0..2 {
        let (log, settings, done) = (log.clone(), settings.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let mut refused = 0;
            while !done.is_cancelled() {
                // each writer restarts after being refused, as the consumer does
                if tracker_archive::run(log.clone(), settings.clone(), done.clone()).await.is_err() {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let started = Instant::now();
    loop {
        let (e, r) = (held(&settings, Table::Events).await, held(&settings, Table::Rollups).await);
        let at = |v: &[u64], t: &str| v[partition_for(t, PARTITIONS) as usize];
        if [("acme", 6000), ("globex", 3000)].iter().all(|(t, n)| at(&e, t) == *n && at(&r, t) == *n) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "stuck at {e:?} / {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.cancel();
    let mut refused = 0;
    for w in writers {
        refused += w.await.unwrap();
    }
    println!("commits refused to a stale writer: {refused}");
    assert_eq!(query(&settings, "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events").await, [["9000", "9000"]]);
    assert_eq!(query(&settings, "SELECT SUM(events) FROM rollups").await, [["9000"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_delete_while_archiving_loses_and_repeats_nothing() {
    // the delete removes files the archiver's next commit "read" (a conflict): the archiver retries
    let dir = tempfile::tempdir().unwrap();
    let settings = local(dir.path());
    let log = embedded_log(&dir.path().join("log"));
    append(&log, "initech", 0..500).await; // all on 2026-11-28
    archive_until(&log, &settings, &[("initech", 500)]).await;
    let stop = CancellationToken::new();
    let archiver = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop.clone()));
    let feeder = {
        let log = log.clone();
        tokio::spawn(async move {
            for chunk in 0..30u64 {
                append(&log, "acme", chunk * 200..(chunk + 1) * 200).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let retention = [Retention { tenant: "initech".into(), keep_days: 1 }];
    let report = maintain(&settings, &retention, 1_796_040_000_000).await.unwrap();
    assert!(report.expired_files[0] > 0, "{report:?}");
    feeder.await.unwrap();
    let started = Instant::now();
    while held(&settings, Table::Rollups).await[partition_for("acme", PARTITIONS) as usize] < 6000 {
        assert!(!archiver.is_finished(), "the archiver gave up: {:?}", archiver.await);
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    archiver.await.unwrap().unwrap();
    let per_tenant = query(&settings, "SELECT tenant, COUNT(*), COUNT(DISTINCT event_id) FROM events GROUP BY 1").await;
    assert_eq!(per_tenant, [["acme", "6000", "6000"]], "initech expired, acme whole");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// moto's S3 server (single-threaded: conditional puts are atomic), on a free port, stopped on drop.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn s3_server(python: &std::ffi::OsStr) -> S3Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/archive/s3_server.py");
    let child = std::process::Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "the S3 server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_path_archives_exactly_once_on_an_s3_compatible_server() {
    let Some(python) = needs::var("TRACKER_S3_PYTHON", "the S3 test", "a Python with moto's S3 server") else {
        return;
    };
    let server = s3_server(&python).await;
    // the bucket, created the way an operator would (moto accepts an unsigned request)
    let created = reqwest::Client::new().put(format!("{}/archive", server.endpoint)).send().await.unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let options: HashMap<String, String> = [
        ("AWS_ENDPOINT_URL", server.endpoint.as_str()),
        ("AWS_REGION", "auto"),
        ("AWS_ACCESS_KEY_ID", "test-key"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_ALLOW_HTTP", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let settings = ArchiveSettings {
        storage_options: options,
        flush_events: 700,
        flush_interval: Duration::from_millis(50),
        ..ArchiveSettings::new(tracker_archive::parse_base("s3://archive/lake").unwrap())
    };
    cut_restart_and_count(&settings).await;
}
