//! Cold queries over a real archive (the archiver writes it from an embedded log): answers match counts computed
//! independently from the generated events, pages cover every event once, and a tenant's query never sees
//! another tenant's events or files.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use serde_json::{Value, json};
use tracker_archive::{ArchiveSettings, Table, positions, read_table};
use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, RecordSet};
use tracker_protocol::wire::RecordSetBuilder;
use tracker_protocol::{Auth, Event, Uuid, partition_for};
use tracker_query::{Query, QueryError, answer};

const PARTITIONS: u32 = 2;
/// 2026-11-28 00:00 UTC.
const DAY0: i64 = 1_795_824_000_000;
const TRICKY: &str = "it's \"quoted\" ' OR 1=1 --";

/// Event `n` of `tenant`: one every 90 s over three days; every third a conversion; sub1 cycles.
fn event(tenant: &str, n: u64) -> Event {
    let click = !n.is_multiple_of(3);
    let sub1 = if n.is_multiple_of(7) { TRICKY.to_string() } else { ["google", "meta"][(n % 2) as usize].to_string() };
    let link = format!("L{}", n % 4);
    Event {
        event_id: Uuid::from_u64_pair(u64::from(tenant.as_bytes()[0]), n),
        event_type: if click { "click".into() } else { "conversion".into() },
        timestamp: DAY0 + i64::try_from(n).unwrap() * 90_000,
        received_at: DAY0 + i64::try_from(n).unwrap() * 90_000,
        key_prefix: tenant.into(),
        ip: None,
        user_agent: None,
        referer: None,
        accept_language: None,
        request_path: click.then(|| format!("/t/{link}")),
        request_host: None,
        params: [("tu_id".to_string(), link), ("sub1".to_string(), sub1), ("n".to_string(), n.to_string())].into(),
        raw_payload: None,
        auth: Auth::Link,
        historical: false,
        overflow: false,
    }
}

const N: u64 = 2880; // three days

struct Lake {
    _dir: tempfile::TempDir,
    settings: ArchiveSettings,
}

async fn lake() -> Lake {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(EmbeddedLogConfig {
            partitions: PARTITIONS,
            ..EmbeddedLogConfig::new(dir.path().join("log"))
        })
        .unwrap(),
    );
    for tenant in ["acme", "globex"] {
        let p = partition_for(tenant, PARTITIONS);
        let events: Vec<Event> = (0..N).map(|n| event(tenant, n)).collect();
        let sets = events
            .chunks(400)
            .map(|c| {
                let mut b = RecordSetBuilder::default();
                c.iter().for_each(|e| b.push(e));
                RecordSet { partition: p, count: b.len(), tags: b.tags(), bytes: b.finish() }
            })
            .collect();
        log.append(sets, None).await.unwrap();
    }
    let base = tracker_archive::parse_base(dir.path().join("lake").to_str().unwrap()).unwrap();
    let settings = ArchiveSettings {
        flush_events: 1000,
        flush_interval: Duration::from_millis(100),
        ..ArchiveSettings::new(base)
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(tracker_archive::run(log.clone(), settings.clone(), stop.clone()));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(t) = read_table(&settings, Table::Events).await.unwrap()
            && positions(&t, Table::Events, PARTITIONS).await.unwrap().iter().sum::<u64>() == 2 * N
        {
            break;
        }
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    Lake { _dir: dir, settings }
}

fn query(v: Value) -> Query {
    serde_json::from_value(v).unwrap()
}

async fn ask(lake: &Lake, tenant: &str, v: Value) -> Value {
    answer(&lake.settings, tenant, &query(v)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_answers_match_the_events_and_stay_within_the_tenant() {
    let lake = lake().await;
    let all = json!({ "from": DAY0, "to": DAY0 + 3 * 86_400_000 });

    // pages cover every event once, in time order, and only the caller's
    let (mut seen, mut cursor, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let page =
            ask(&lake, "acme", json!({ "kind": "events", "filters": all, "limit": 1000, "cursor": cursor })).await;
        assert_eq!(page["tier"], "cold");
        for e in page["events"].as_array().unwrap() {
            seen.push(e["params"]["n"].as_str().unwrap().parse::<u64>().unwrap());
        }
        pages += 1;
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..N).collect::<Vec<_>>(), "every acme event once, in time order");

    // hourly series by event type equals the counts computed from the generated events
    let series =
        ask(&lake, "acme", json!({ "kind": "series", "filters": all, "interval": "hour", "group_by": "event_type" }))
            .await;
    let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for n in 0..N {
        let e = event("acme", n);
        *expected.entry((e.timestamp / 3_600_000 * 3_600_000, e.event_type)).or_default() += 1;
    }
    let got: BTreeMap<(i64, String), i64> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ((p["t"].as_i64().unwrap(), p["group"].as_str().unwrap().to_owned()), p["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, expected);

    // a param value full of quotes is a value, matched exactly
    let tricky = json!({ "from": DAY0, "to": DAY0 + 3 * 86_400_000, "params": { "sub1": TRICKY } });
    let daily = ask(&lake, "acme", json!({ "kind": "series", "filters": tricky, "interval": "day" })).await;
    let total: i64 = daily["points"].as_array().unwrap().iter().map(|p| p["count"].as_i64().unwrap()).sum();
    assert_eq!(total, (0..N).filter(|n| n.is_multiple_of(7)).count() as i64);
    assert_eq!(daily["points"].as_array().unwrap().len(), 3, "one bucket per UTC day");

    // group by a param; a link filter (clicks on L1 only)
    let by_sub1 = ask(
        &lake,
        "acme",
        json!({ "kind": "series", "filters": { "from": DAY0, "to": DAY0 + 86_400_000, "tu_id": "L1" },
                "interval": "day", "group_by": "param:sub1" }),
    )
    .await;
    let groups: BTreeMap<String, i64> = by_sub1["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["group"].as_str().unwrap().to_owned(), p["count"].as_i64().unwrap()))
        .collect();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for n in (0..960u64).filter(|n| n % 4 == 1 && !n.is_multiple_of(3)) {
        *want.entry(event("acme", n).params["sub1"].clone()).or_default() += 1;
    }
    assert_eq!(groups, want);

    // breakdown: the top two sub1 values with their distinct links, the rest as other
    let top = ask(
        &lake,
        "acme",
        json!({ "kind": "breakdown", "filters": all, "by": "param:sub1", "top": 2, "distinct": "tu_id" }),
    )
    .await;
    let mut by_value: BTreeMap<String, (i64, std::collections::BTreeSet<String>)> = BTreeMap::new();
    for n in 0..N {
        let e = event("acme", n);
        let entry = by_value.entry(e.params["sub1"].clone()).or_default();
        entry.0 += 1;
        entry.1.extend(e.link().map(str::to_owned));
    }
    let mut ranked: Vec<(String, i64, usize)> =
        by_value.into_iter().map(|(k, (n, links))| (k, n, links.len())).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let listed: Vec<(String, i64, usize)> = top["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_owned(),
                g["count"].as_i64().unwrap(),
                g["distinct"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(listed, ranked[..2]);
    assert_eq!(top["other"]["count"].as_i64(), Some(ranked[2..].iter().map(|r| r.1).sum()));
    assert_eq!(top["total"], N);

    // one day's query reads only that day's files of the tenant
    let one_day = ask(
        &lake,
        "acme",
        json!({
            "kind": "series", "filters": { "from": DAY0 + 86_400_000, "to": DAY0 + 2 * 86_400_000 }, "interval": "day"
        }),
    )
    .await;
    let three_days = ask(&lake, "acme", json!({ "kind": "series", "filters": all, "interval": "day" })).await;
    let files = |a: &Value| a["scanned"]["files"].as_u64().unwrap();
    assert!(files(&one_day) > 0 && files(&one_day) < files(&three_days), "{one_day} / {three_days}");
    assert!(three_days["scanned"]["bytes"].as_u64().unwrap() > 0);
    let acme_files: u64 = std::fs::read_dir(lake._dir.path().join("lake/events/tenant=acme"))
        .unwrap()
        .map(|day| std::fs::read_dir(day.unwrap().path()).unwrap().count() as u64)
        .sum();
    assert_eq!(files(&three_days), acme_files, "exactly acme's files, none of globex's");
    assert_eq!(one_day["points"][0]["count"], 960);

    // isolation: globex asking for acme's exact event sees nothing of acme's
    let acme_only = json!({ "from": DAY0, "to": DAY0 + 3 * 86_400_000, "params": { "n": "5" } });
    let globex = ask(&lake, "globex", json!({ "kind": "events", "filters": acme_only })).await;
    let ids: Vec<&str> = globex["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [event("globex", 5).event_id.to_string()], "its own event n=5, not acme's");
    let prefix = ask(&lake, "acm", json!({ "kind": "series", "filters": all, "interval": "day" })).await;
    assert_eq!(prefix["scanned"]["files"], 0, "a tenant whose id is a prefix of another's reads none of its files");
    // the range is [from, to): an event exactly at `to` is not in it
    let edge = ask(&lake, "acme", json!({ "kind": "events", "filters": { "from": DAY0, "to": DAY0 + 90_000 } })).await;
    assert_eq!(edge["events"].as_array().unwrap().len(), 1);
    assert_eq!(series["truncated"], false);
    let nobody = ask(&lake, "initech", json!({ "kind": "series", "filters": all, "interval": "day" })).await;
    assert_eq!(nobody["points"], json!([]));
    assert_eq!(nobody["scanned"]["files"], 0, "a tenant without files scans nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cold_match_pairs_exactly_as_the_hot_tier_does() {
    let lake = lake().await;
    // the same events in the hot tier (SQLite), an independent implementation of the same query
    let hot_db = lake._dir.path().join("hot.db");
    let hot = tracker_store::hot::HotStore::connect(&tracker_store::Location::File(hot_db)).await.unwrap();
    let events: Vec<Event> = (0..N).map(|n| event("acme", n)).collect();
    hot.apply_events("stats", 0, N, &events).await.unwrap();
    // day two only: results of the window before it consume their triggers first
    let (from, to, window_secs) = (DAY0 + 86_400_000, DAY0 + 2 * 86_400_000, 600);
    let hot_answer = hot
        .match_events(
            "acme",
            &tracker_store::hot::MatchQuery {
                trigger: "click".into(),
                result: "conversion".into(),
                on: "tu_id".into(),
                from,
                to,
                window_ms: window_secs * 1000,
                limit: 1000,
            },
        )
        .await
        .unwrap();
    let cold = ask(
        &lake,
        "acme",
        json!({ "kind": "match", "filters": { "from": from, "to": to }, "trigger": "click", "result": "conversion",
                "on": "tu_id", "window_secs": window_secs, "limit": 1000 }),
    )
    .await;
    let summary = &cold["summary"];
    let h = &hot_answer.summary;
    assert_eq!(
        (summary["triggers"].as_u64(), summary["results"].as_u64(), summary["matched"].as_u64()),
        (Some(h.triggers), Some(h.results), Some(h.matched))
    );
    assert!(h.matched > 100 && h.match_rate < 0.6, "paired results and unpaired triggers: {h:?}");
    assert_eq!(summary["match_rate"].as_f64(), Some(h.match_rate));
    let id = |v: &Value| v["event_id"].as_str().unwrap().to_owned();
    let hot_pairs: std::collections::BTreeSet<(String, String)> =
        hot_answer.pairs.iter().map(|p| (id(&p.trigger_event), id(&p.result_event))).collect();
    let cold_pairs: std::collections::BTreeSet<(String, String)> = cold["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["trigger_event_id"].as_str().unwrap().to_owned(), p["result_event_id"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(cold_pairs, hot_pairs, "the same pairs");
    let histogram: u64 = summary["histogram"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(histogram, h.matched);
    assert!(summary["time_delta_ms"]["max"].as_i64().unwrap() <= window_secs * 1000);

    // first touch credits earlier triggers: the same number of pairs here, longer times to result
    let first = ask(
        &lake,
        "acme",
        json!({ "kind": "match", "filters": { "from": from, "to": to }, "trigger": "click", "result": "conversion",
                "on": "tu_id", "window_secs": window_secs, "touch": "first", "limit": 0 }),
    )
    .await;
    assert_eq!(first["pairs"], json!([]));
    let p50 = |a: &Value| a["summary"]["time_delta_ms"]["p50"].as_i64().unwrap();
    assert!(p50(&first) >= p50(&cold), "first touch credits earlier triggers");
}

/// A Lambda Runtime API (the interface AWS Lambda and `cargo lambda watch` serve): hands out `events` one by one
/// and records what the function answers, `(request id, "response" or "error", body)`.
async fn runtime_api(events: Vec<Value>) -> (String, tokio::sync::mpsc::UnboundedReceiver<(String, String, Value)>) {
    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    type Queue = Arc<tokio::sync::Mutex<std::vec::IntoIter<Value>>>;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let queue: Queue = Arc::new(tokio::sync::Mutex::new(events.into_iter()));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = {
        let served = served.clone();
        move |State(queue): State<Queue>| async move {
            let Some(event) = queue.lock().await.next() else {
                std::future::pending::<()>().await; // no more invocations: the function waits, as on AWS
                unreachable!()
            };
            let id = format!("req-{}", served.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
            let deadline = (std::time::SystemTime::now() + Duration::from_secs(60))
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            (
                [
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    ("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:000000000000:function:q".into()),
                    ("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000".into()),
                ],
                axum::Json(event),
            )
        }
    };
    let reply = |kind: &'static str| {
        let tx = tx.clone();
        move |Path(id): Path<String>, body: axum::body::Bytes| async move {
            tx.send((id, kind.to_owned(), serde_json::from_slice(&body).unwrap_or(Value::Null))).unwrap();
            axum::http::StatusCode::ACCEPTED
        }
    };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(reply("response")))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(reply("error")))
        .with_state(queue);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rx)
}

const SECRET: &str = "query-secret-0123456789abcdef";

/// A signed `POST /v1/query` body and its headers.
fn signed(request: &Value) -> (String, String, String) {
    let body = request.to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let sig = tracker_protocol::intake::sign_query(SECRET.as_bytes(), now, body.as_bytes()).unwrap();
    (body, now.to_string(), sig)
}

/// What AWS Lambda hands a function behind a function URL (the API Gateway v2 payload).
fn function_url_event(body: String, headers: Value) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/query",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "q",
            "domainName": "q.lambda-url.us-east-1.on.aws",
            "domainPrefix": "q",
            "http": {
                "method": "POST", "path": "/v1/query", "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1", "userAgent": "core"
            },
            "requestId": "r",
            "routeKey": "$default",
            "stage": "$default",
            "time": "29/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_function_answers_function_url_requests_through_the_runtime_api() {
    let lake = lake().await;
    let all = json!({ "from": DAY0, "to": DAY0 + 3 * 86_400_000 });
    let requests = [
        json!({ "tenant": "acme", "tier": "cold", "query": { "kind": "series", "filters": all, "interval": "day" } }),
        json!({ "tenant": "acme", "tier": "warm", "query": { "kind": "series", "filters": all, "interval": "day" } }),
        json!({
            "tenant": "acme", "tier": "cold", "query": { "kind": "series", "filters": all, "interval": "fortnight" }
        }),
        json!({ "tenant": "../globex", "tier": "cold", "query": { "kind": "events", "filters": all } }),
        json!({
            "tenant": "globex", "tier": "warm", "query": { "kind": "breakdown", "filters": all, "by": "event_type" }
        }),
    ];
    let mut events: Vec<Value> = requests
        .iter()
        .map(|r| {
            let (body, ts, sig) = signed(r);
            function_url_event(
                body,
                json!({ "content-type": "application/json", "x-tracker-timestamp": ts, "x-tracker-signature": sig }),
            )
        })
        .collect();
    // the body names the tenant: an unsigned one, or one signed for another body, is refused
    let (_, ts, sig) = signed(&requests[0]);
    events.push(function_url_event(
        requests[4].to_string(),
        json!({ "x-tracker-timestamp": ts, "x-tracker-signature": sig }),
    ));
    let (api, mut replies) = runtime_api(events).await;
    let started = std::time::Instant::now();
    let mut function = std::process::Command::new(env!("CARGO_BIN_EXE_tracker-query-lambda"))
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "tracker-query")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("ARCHIVE_URL", lake.settings.base.as_str())
        .env("QUERY_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 6 {
        let reply = tokio::time::timeout(Duration::from_secs(60), replies.recv()).await.unwrap().unwrap();
        if got.is_empty() {
            println!("cold start to first answer: {:?}", started.elapsed());
        }
        got.push(reply);
    }
    let _ = function.kill();
    let _ = function.wait();
    assert!(got.iter().all(|(_, kind, _)| kind == "response"), "{got:?}");
    let answers: Vec<(i64, Value)> = got
        .iter()
        .map(|(_, _, r)| {
            (r["statusCode"].as_i64().unwrap(), serde_json::from_str(r["body"].as_str().unwrap()).unwrap())
        })
        .collect();
    let total = |a: &Value| a["points"].as_array().unwrap().iter().map(|p| p["count"].as_i64().unwrap()).sum::<i64>();
    assert_eq!((answers[0].0, answers[0].1["tier"].as_str(), total(&answers[0].1)), (200, Some("cold"), N as i64));
    assert_eq!((answers[1].0, answers[1].1["tier"].as_str()), (200, Some("warm")));
    assert_eq!(answers[1].1["points"], answers[0].1["points"], "warm and cold agree");
    assert_eq!((answers[2].0, &answers[2].1["error"]["code"]), (400, &json!("invalid_query")));
    assert_eq!((answers[3].0, &answers[3].1["error"]["code"]), (400, &json!("invalid_query")));
    assert_eq!((answers[4].0, &answers[4].1["total"]), (200, &json!(N)), "globex's own events");
    assert_eq!((answers[5].0, &answers[5].1["error"]["code"]), (401, &json!("unauthorized")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_answers_equal_cold_answers_and_refuse_what_rollups_cannot_hold() {
    let lake = lake().await;
    let engines = tracker_query::router::Engines::new(lake.settings.clone(), Duration::from_secs(30));
    use tracker_query::router::Tier;
    let ranges = [(DAY0, DAY0 + 3 * 86_400_000), (DAY0 + 5 * 3_600_000, DAY0 + 29 * 3_600_000)];
    for (from, to) in ranges {
        for tu_id in [None, Some("L1")] {
            let f = json!({ "from": from, "to": to, "tu_id": tu_id });
            let fc = json!({ "from": from, "to": to, "tu_id": tu_id, "event_types": ["conversion"] });
            for q in [
                json!({ "kind": "series", "filters": f, "interval": "hour" }),
                json!({ "kind": "series", "filters": f, "interval": "day", "group_by": "event_type" }),
                json!({ "kind": "series", "filters": fc, "interval": "hour", "group_by": "tu_id" }),
                json!({ "kind": "series", "filters": f, "interval": "day", "group_by": "date" }),
                json!({ "kind": "breakdown", "filters": f, "by": "tu_id", "top": 2, "distinct": "event_type" }),
                json!({ "kind": "breakdown", "filters": f, "by": "event_type", "distinct": "tu_id" }),
                json!({ "kind": "breakdown", "filters": fc, "by": "date", "top": 1 }),
            ] {
                let query = query(q.clone());
                let mut warm = engines.answer("acme", Tier::Warm, &query).await.unwrap();
                let mut cold = engines.answer("acme", Tier::Cold, &query).await.unwrap();
                assert_eq!((warm["tier"].take(), cold["tier"].take()), (json!("warm"), json!("cold")));
                let (ws, cs) = (warm["scanned"].take(), cold["scanned"].take());
                assert_eq!(warm, cold, "{q}");
                assert!(
                    ws["bytes"].as_u64().unwrap() * 4 < cs["bytes"].as_u64().unwrap(),
                    "rollups are smaller: {ws} {cs}"
                );
            }
        }
    }
    let f = json!({ "from": DAY0, "to": DAY0 + 86_400_000 });
    for (q, reason) in [
        (json!({ "kind": "series", "filters": f, "interval": "minute" }), "minute"),
        (
            json!({ "kind": "series", "filters": { "from": DAY0 + 1, "to": DAY0 + 7_200_000 }, "interval": "hour" }),
            "on the hour",
        ),
        (
            json!({
                "kind": "series",
                "filters": { "from": DAY0, "to": DAY0 + 86_400_000, "params": { "sub1": "meta" } },
                "interval": "hour"
            }),
            "params",
        ),
        (json!({ "kind": "breakdown", "filters": f, "by": "param:sub1" }), "params"),
        (json!({ "kind": "breakdown", "filters": f, "by": "event_type", "distinct": "ip" }), "distinct"),
        (json!({ "kind": "events", "filters": f }), "listings"),
        (
            json!({ "kind": "series", "filters": { "from": DAY0 - 100 * 86_400_000, "to": DAY0 }, "interval": "day" }),
            "90 days",
        ),
    ] {
        let refusal = engines.answer("acme", Tier::Warm, &query(q.clone())).await.unwrap_err();
        assert_eq!(refusal.code, "tier_cannot_answer", "{q}");
        assert!(refusal.message.contains(reason), "{q}: {}", refusal.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_router_serves_locally_with_signatures_checked() {
    let lake = lake().await;
    let engines = Arc::new(tracker_query::router::Engines::new(lake.settings.clone(), Duration::from_secs(30)));
    let app = tracker_query::router::router(engines, vec![SECRET.as_bytes().to_vec()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/query", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let filters = json!({ "from": DAY0, "to": DAY0 + 86_400_000 });
    let query = json!({ "kind": "breakdown", "filters": filters, "by": "event_type" });
    let request = json!({ "tenant": "acme", "tier": "cold", "query": query });
    let (body, ts, sig) = signed(&request);
    let post = |body: String, ts: String, sig: String| {
        http.post(&url).header("x-tracker-timestamp", ts).header("x-tracker-signature", sig).body(body).send()
    };
    let ok = post(body.clone(), ts.clone(), sig.clone()).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["total"], 960);
    let stale = (ts.parse::<i64>().unwrap() - 10 * 60 * 1000).to_string();
    let stale_sig =
        tracker_protocol::intake::sign_query(SECRET.as_bytes(), stale.parse().unwrap(), body.as_bytes()).unwrap();
    for (b, t, s, status) in [
        (body.replace("acme", "globex"), ts.clone(), sig.clone(), 401),
        (body.clone(), ts.clone(), "v1=00".into(), 401),
        (body.clone(), stale, stale_sig, 401),
        (
            "{\"tenant\":\"acme\"}".to_string(),
            ts.clone(),
            tracker_protocol::intake::sign_query(SECRET.as_bytes(), ts.parse().unwrap(), b"{\"tenant\":\"acme\"}")
                .unwrap(),
            400,
        ),
    ] {
        let res = post(b.clone(), t, s).await.unwrap();
        assert_eq!(res.status(), status, "{b}");
        assert!(res.json::<Value>().await.unwrap()["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ArchiveSettings::new(tracker_archive::parse_base(dir.path().to_str().unwrap()).unwrap());
    let f = json!({ "from": DAY0, "to": DAY0 + 1000 });
    for (request, reason) in [
        (json!({ "kind": "events", "filters": { "from": DAY0, "to": DAY0 } }), "from must be before to"),
        (json!({ "kind": "events", "filters": { "from": 0, "to": DAY0 } }), "longer than 400 days"),
        (json!({ "kind": "events", "filters": f, "limit": 0 }), "limit"),
        (json!({ "kind": "events", "filters": f, "cursor": "12:nope" }), "cursor"),
        (
            json!({
                "kind": "series", "filters": { "from": DAY0, "to": DAY0 + 200 * 86_400_000 }, "interval": "minute"
            }),
            "too many buckets",
        ),
    ] {
        match answer(&settings, "acme", &query(request.clone())).await {
            Err(QueryError::Invalid(r)) => assert!(r.contains(reason), "{request}: {r}"),
            other => panic!("{request}: {other:?}"),
        }
    }
    for bad in [
        json!({ "kind": "sql", "filters": f }),
        json!({ "kind": "series", "filters": f, "interval": "week" }),
        json!({ "kind": "series", "filters": f, "interval": "day", "group_by": "param:" }),
        json!({ "kind": "breakdown", "filters": f, "by": "event_type", "distinct": "raw_payload" }),
        json!({ "kind": "events", "filters": f, "tenant": "globex" }),
        json!({ "kind": "events", "filters": { "from": DAY0, "to": DAY0 + 1, "key_prefix": "globex" } }),
    ] {
        assert!(serde_json::from_value::<Query>(bad.clone()).is_err(), "{bad}");
    }
    match answer(&settings, "../acme", &query(json!({ "kind": "events", "filters": f }))).await {
        Err(QueryError::Invalid(r)) => assert!(r.contains("tenant"), "{r}"),
        other => panic!("{other:?}"),
    }
    // no archive yet: an empty answer, not an error
    let empty = answer(&settings, "acme", &query(json!({ "kind": "events", "filters": f }))).await.unwrap();
    assert_eq!(empty["events"], json!([]));
}
