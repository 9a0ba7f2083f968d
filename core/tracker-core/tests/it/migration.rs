//! Moving in from the replaced system, against a real node: its tenants imported from a database export, then
//! exactly what its beacon and SDK send (recorded in `tests/v1/clients.json`), its link shapes, and its archive
//! and generic files imported as history, once across re-runs and crashes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use reqwest::StatusCode;
use serde_json::Value;
use tracker_import::{Format, ImportSettings};
use tracker_protocol::{Auth, Event};

use crate::common::{Node, now_ms};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn clients() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("tests/v1/clients.json")).unwrap()).unwrap()
}

/// The node with the replaced system's tenants imported from `tests/v1/export.sql`, as `tracker-core tenant
/// import` does it.
async fn imported_node() -> Node {
    let node = Node::start(|_| {}).await;
    let plans = tracker_import::v1db::PlanMap { known: vec!["free".into(), "pro".into()], default: "free".into() };
    let export = tracker_import::v1db::read(&repo("tests/v1/export.sql"), &plans).await.unwrap();
    assert!(export.notes.is_empty(), "{:?}", export.notes);
    let report = node.state.store.import_tenants(&export.import, false, "test", now_ms()).await.unwrap();
    assert_eq!((report.tenants.create, report.tokens.create, report.links.create), (2, 2, 2));
    node
}

async fn all_events(node: &Node, at_least: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for _ in 0..200 {
        out.clear();
        for p in 0..node.state.log.partitions() {
            out.extend(node.state.log.poll(p, 0, 1_000_000).await.unwrap().events.into_iter().map(|(_, e)| e));
        }
        if out.len() >= at_least {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    out
}

fn on_node(node: &Node, url: &str) -> String {
    url.replace("https://track.example.com", &node.base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replaced_clients_work_unchanged_after_an_import() {
    let node = imported_node().await;
    let c = clients();
    let token = c["tenant"]["ingest_token"].as_str().unwrap();

    // its beacon: every recorded send, as the browser sent it
    for send in c["beacon"]["sends"].as_array().unwrap() {
        let res = node
            .http
            .post(format!("{}/t/auto", node.base))
            .header("content-type", send["content_type"].as_str().unwrap())
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
            .body(send["body"].as_str().unwrap().to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "{}", send["name"]);
    }

    // its SDK's batch client: a base URL that carries the token; the plain /batch says how
    let batch = c["sdk_batch"]["body"].as_str().unwrap().to_owned();
    let post_batch = |path: String| {
        node.http
            .post(format!("{}{path}", node.base))
            .header("content-type", "application/json")
            .body(batch.clone())
            .send()
    };
    let res = post_batch(format!("/v1/{token}/batch")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["accepted"], 2, "the SDK reads `accepted`");
    let res = post_batch("/batch".into()).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.unwrap().contains("/v1/<ingest token>"));
    assert_eq!(post_batch("/v1/pt_6vct_wrong/batch".into()).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // its link builders' URLs
    let urls = &c["sdk_urls"];
    let res = node.http.get(on_node(&node, urls["buildSignedClickUrl"]["url"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    assert!(res.headers()["location"].to_str().unwrap().starts_with("https://offer.example/landing?a=1&ad_click_id="));
    let res =
        node.http.get(on_node(&node, urls["buildTrackedClickUrl"]["url"].as_str().unwrap())).send().await.unwrap();
    assert!(
        res.headers()["location"].to_str().unwrap().starts_with("https://offer.example/spring?ref=tu&ad_click_id=")
    );
    // postbacks and pixels name no tenant: until one is assigned the postback is refused, the pixel still an image
    let postback = on_node(&node, urls["buildPostbackUrl"]["url"].as_str().unwrap());
    let impression = on_node(&node, urls["buildImpressionUrl"]["url"].as_str().unwrap());
    let res = node.http.get(&postback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = node.http.get(&impression).send().await.unwrap();
    assert_eq!(
        (res.status(), res.headers()["x-tracker-refused"].to_str().unwrap()),
        (StatusCode::OK, "missing_key_prefix")
    );
    assert_eq!(&res.bytes().await.unwrap()[..6], b"GIF89a");
    node.state.store.assign_global_tenant(Some("6vct"), "test", now_ms()).await.unwrap();
    assert_eq!(node.http.get(&postback).send().await.unwrap().status(), StatusCode::OK);
    let res = node.http.get(&impression).send().await.unwrap();
    assert!(res.headers().get("x-tracker-refused").is_none());
    // a postback URL on the token's base URL is authenticated
    let res = node.http.get(postback.replace("/p?", &format!("/v1/{token}/p?"))).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["authenticated"], true);

    // short links it made: unsigned, and signed by another imported tenant, still redirect for their owner
    let tu = c["tenant"]["short_link"].as_str().unwrap();
    let res = node.get_path(&format!("/t/{tu}?sub1=x&utm%5Bsource%5D=mail")).await;
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    let k9 = tracker_protocol::links::v1_short_url("", &"0123456789abcdef".repeat(4), Some("k9zz"), tu, &[]).unwrap();
    assert_eq!(node.get_path(&k9).await.status(), StatusCode::TEMPORARY_REDIRECT);

    let events = all_events(&node, 14).await;
    assert_eq!(events.len(), 14, "5 beacons, 2 batched, 2 clicks, 2 postbacks, 1 pixel, 2 more short clicks");
    assert!(events.iter().all(|e| e.key_prefix == "6vct"), "every event is the tenant's");
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(token), "the token in the base URL is never stored");
    let by = |t: &str| events.iter().filter(|e| e.event_type == t).collect::<Vec<_>>();
    let pageviews = by("pageview");
    assert_eq!(pageviews.len(), 4);
    assert!(pageviews.iter().all(|e| e.params["session_id"].len() == 32 && e.params["screen_width"] == "800"));
    assert!(pageviews.iter().any(|e| e.params["page"] == "/checkout?step=2"), "SPA navigations are pageviews");
    let out = by("outbound_click");
    assert_eq!(out[0].params["href"], "https://partner.example/offer?x=1");
    assert_eq!(out[0].params["text"], "Partner offer");
    assert_eq!(out[0].params["ad_click_id"], "019c4633-5078-7411-8858-4aeafb6298bb");
    let signup = by("signup")[0];
    assert_eq!((signup.auth, signup.overflow, signup.params["plan"].as_str()), (Auth::Token, true, "pro"));
    let raw: Value = serde_json::from_str(signup.raw_payload.as_ref().unwrap().as_str()).unwrap();
    assert_eq!(raw["overflow"]["params"][0], serde_json::json!(["utm[source]", "news"]));
    assert_eq!(raw["v1"]["request_path"], "/signup");
    let clicks = by("click");
    assert!(clicks.iter().all(|e| e.auth == Auth::Link && !e.params.contains_key("key_prefix")));
    assert!(clicks.iter().any(|e| e.params.get("v").map(String::as_str) == Some("2")), "a param named v stays a param");
    let short = clicks.iter().filter(|e| e.link() == Some(tu)).count();
    assert_eq!(short, 3, "{clicks:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_links_belong_to_the_assigned_tenant() {
    let node = Node::start(|c| c.links.hmac_secret = Some(String::from("global-secret").into())).await;
    node.state.store.create_tenant("Platform", Some("platform"), now_ms()).await.unwrap();
    let link = tracker_protocol::links::v1_signed_url("", "global-secret", None, "https://a.example/", &[]).unwrap();
    assert_eq!(node.get_path(&link).await.status(), StatusCode::TEMPORARY_REDIRECT);
    node.state.store.assign_global_tenant(Some("platform"), "test", now_ms()).await.unwrap();
    node.state.invalidate("tenant:global");
    assert_eq!(node.get_path(&link).await.status(), StatusCode::TEMPORARY_REDIRECT);
    let events = all_events(&node, 2).await;
    let owners: Vec<&str> = events.iter().map(|e| e.key_prefix.as_str()).collect();
    assert_eq!(owners, ["global", "platform"], "before the assignment no tenant could read it; after, the platform's");
    node.stop().await;
}

impl Node {
    async fn get_path(&self, path_and_query: &str) -> reqwest::Response {
        self.http.get(format!("{}{}", self.base, path_and_query)).send().await.unwrap()
    }
}

/// A row of the replaced system's archive: event id, tenant, type, time, params.
type V1Row<'a> = (&'a str, &'a str, &'a str, i64, &'a str);

/// The replaced system's `events` table: its columns, partitioned by `tenant_id` and `date_path`.
fn v1_batch(rows: &[V1Row<'_>]) -> RecordBatch {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let schema = Arc::new(Schema::new(vec![
        text("event_id", false),
        text("tenant_id", false),
        text("tu_id", false),
        text("event_type", false),
        Field::new("timestamp_ms", DataType::Int64, false),
        text("ip", false),
        text("user_agent", false),
        text("referer", true),
        text("request_path", false),
        text("request_host", false),
        text("params", false),
        text("raw_payload", true),
        text("date_path", false),
        text("event_hour", false),
    ]));
    let col = |f: &dyn Fn(&V1Row<'_>) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        col(&|r| Some(r.0.to_owned())),
        col(&|r| Some(r.1.to_owned())),
        col(&|r| {
            Some(if r.2 == "click" { "tu_019502a1-7b3c-7def-8abc-1234567890ab".into() } else { "_no_link".into() })
        }),
        col(&|r| Some(r.2.to_owned())),
        Arc::new(rows.iter().map(|r| r.3).collect::<Int64Array>()),
        col(&|_| Some("203.0.113.5".into())),
        col(&|_| Some("Mozilla/5.0".into())),
        col(&|_| None),
        col(&|r| Some(if r.2 == "click" { "/t".into() } else { "/p".into() })),
        col(&|_| Some("track.example.com".into())),
        col(&|r| Some(r.4.to_owned())),
        col(&|_| None),
        col(&|r| Some(chrono_day(r.3))),
        col(&|_| Some("09".into())),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn chrono_day(ms: i64) -> String {
    let (y, m, d) = tracker_protocol::quota::ymd(ms);
    format!("{y:04}-{m:02}-{d:02}")
}

fn settings(format: Format, dir: &Path, tenant: Option<&str>) -> ImportSettings {
    ImportSettings {
        format,
        tenant: tenant.map(str::to_owned),
        rejects: dir.join("rejects.ndjson"),
        chunk_rows: 7,
        progress: false,
        limits: tracker_protocol::Limits::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_imported_once_across_reruns_and_crashes() {
    let node = imported_node().await;
    node.state.store.assign_global_tenant(Some("k9zz"), "test", now_ms()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (&node.state.store, node.state.log.clone());
    let day = 1_767_225_600_000; // 2026-01-01

    // the replaced system's archive: two appends, the second repeating an event (its archiver delivered at least
    // once), then a compaction that leaves the files it replaced in place (that system never vacuumed)
    let table_dir = dir.path().join("events");
    std::fs::create_dir_all(&table_dir).unwrap();
    let url = url::Url::from_directory_path(&table_dir).unwrap();
    let id = |i: u32| format!("019b7a{i:02x}-5078-7411-8858-4aeafb6298bb");
    let first: Vec<(String, &str, &str, i64, &str)> = (0..12)
        .map(|i| {
            (
                id(i),
                if i == 11 { "_global" } else { "6vct" },
                if i % 3 == 0 { "click" } else { "postback" },
                day + i64::from(i) * 60_000,
                r#"{"key_prefix":"6vct","sub1":"a","utm[x]":"y"}"#,
            )
        })
        .collect();
    let rows: Vec<_> = first.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3, r.4)).collect();
    let table = deltalake::DeltaTable::try_from_url(url.clone()).await.unwrap();
    let table = table.write(vec![v1_batch(&rows)]).with_partition_columns(["tenant_id", "date_path"]).await.unwrap();
    let (id3, id40) = (id(3), id(40));
    let again =
        [(id3.as_str(), "6vct", "click", day + 180_000, first[3].4), (id40.as_str(), "nobody", "postback", day, "{}")];
    let table = table.write(vec![v1_batch(&again)]).with_partition_columns(["tenant_id", "date_path"]).await.unwrap();
    let (_table, metrics) = table.optimize().await.unwrap();
    assert!(metrics.num_files_removed > 0, "the compaction replaced files");
    let location = table_dir.to_str().unwrap();
    assert_eq!(Format::guess(location), Some(Format::V1Archive));

    let s =
        tracker_import::import(log.clone(), store, location, &settings(Format::V1Archive, dir.path(), None), now_ms())
            .await
            .unwrap();
    assert_eq!((s.rows, s.imported, s.duplicates, s.rejected_total()), (14, 12, 1, 1), "{s:?}");
    assert_eq!(s.rejected["unknown_tenant"], 1);
    let events = all_events(&node, 12).await;
    assert_eq!(events.len(), 12);
    assert_eq!(events.iter().map(|e| e.event_id).collect::<HashSet<_>>().len(), 12);
    for e in &events {
        assert!(e.auth == Auth::Import && e.historical && e.overflow, "{e:?}");
    }
    assert_eq!(
        events.iter().filter(|e| e.key_prefix == "k9zz").count(),
        1,
        "the global row went to the assigned tenant"
    );
    assert_eq!(events.iter().filter(|e| e.link().is_some()).count(), 4, "clicks on short links count per link");

    // a re-run does nothing; a run that crashed after a chunk was appended but before its position was recorded
    // appends nothing twice
    let s =
        tracker_import::import(log.clone(), store, location, &settings(Format::V1Archive, dir.path(), None), now_ms())
            .await
            .unwrap();
    assert!(s.already_done);
    let mut run = store.import_run(&s.run_id).await.unwrap().unwrap();
    (run.next_row, run.finished_at) = (7, None);
    store.save_import_run(&run, now_ms()).await.unwrap();
    let s =
        tracker_import::import(log.clone(), store, location, &settings(Format::V1Archive, dir.path(), None), now_ms())
            .await
            .unwrap();
    assert_eq!((s.resumed_at, s.rows, s.imported + s.duplicates + s.rejected_total()), (7, 7, 7));
    assert_eq!(all_events(&node, 12).await.len(), 12, "the resumed chunk was found by its key");
    let rejects = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap();
    let first: Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
    assert_eq!((first["code"].as_str(), first["source"].as_str()), (Some("unknown_tenant"), Some(location)));

    // generic files, each with one bad row
    let ndjson = dir.path().join("h.ndjson");
    let mut lines: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"event_type":"signup","timestamp":{},"params":{{"n":{i}}}}}"#, day + i * 1000))
        .collect();
    lines.push(r#"{"event_type":"signup","key_prefix":"6vct","params":{"bad key":"1"}}"#.into());
    lines.push(format!(
        r#"{{"event":{{"event_type":"sale","key_prefix":"6vct","timestamp":{day}}},"offset":9,"partition":1}}"#
    ));
    std::fs::write(&ndjson, lines.join("\n") + "\n").unwrap();
    let s = tracker_import::import(
        log.clone(),
        store,
        ndjson.to_str().unwrap(),
        &settings(Format::Ndjson, dir.path(), Some("k9zz")),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!((s.rows, s.imported, s.rejected_total()), (22, 21, 1));
    assert_eq!(s.rejected["invalid_param_key"], 1);
    let csv = dir.path().join("h.csv");
    let rows = [
        "event_type,key_prefix,timestamp,campaign,params".to_owned(),
        format!(r#"click,6vct,{day},spring,"{{""sub1"":""x""}}""#),
        "click,6vct,not-a-time,spring,".to_owned(),
    ];
    std::fs::write(&csv, rows.join("\n") + "\n").unwrap();
    let s = tracker_import::import(
        log.clone(),
        store,
        csv.to_str().unwrap(),
        &settings(Format::Csv, dir.path(), None),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!((s.imported, s.rejected_total()), (1, 1));
    let events = all_events(&node, 34).await;
    let csv_event = events.iter().find(|e| e.params.get("campaign").map(String::as_str) == Some("spring")).unwrap();
    assert_eq!(csv_event.params["sub1"], "x");
    assert_eq!(events.len(), 12 + 21 + 1);
    node.stop().await;
}

/// Through the consumers: imported history is kept whatever the plan's cap and rate (it is not this month's
/// traffic), metered as `imported` and not billed; what a v1 link carried beyond the event model is in the drop
/// ledger as flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_history_is_not_billed_and_overflow_is_flagged() {
    use crate::consumers::{ADMIN, Api};
    use std::collections::BTreeMap;
    use tracker_store::{Plan, Plans};
    let capped = Plan {
        monthly_events: 5,
        price_cents: 0,
        overage_cents_per_million: None,
        events_per_second: Some(2),
        retention_days: None,
        query_tiers: vec!["hot".into()],
        max_webhooks: None,
        max_links: None,
        api_requests_per_minute: 10_000,
    };
    let api = Api::start(|c| {
        c.consumers.plans = Plans::with(BTreeMap::from([("capped".to_owned(), capped)])).unwrap();
    })
    .await;
    let (key, _) = api.tenant("acme").await;
    let (s, _) = api.call("PATCH", "/api/tenants/acme", ADMIN, Some(serde_json::json!({ "plan": "capped" }))).await;
    assert_eq!(s, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.ndjson");
    let now = now_ms();
    let lines: Vec<String> = (0..40)
        .map(|i| format!(r#"{{"event_type":"sale","timestamp":{},"params":{{"n":"{i}"}}}}"#, now - 3_600_000 + i))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let node = &api.node;
    let s = tracker_import::import(
        node.state.log.clone(),
        &node.state.store,
        file.to_str().unwrap(),
        &settings(Format::Ndjson, dir.path(), Some("acme")),
        now,
    )
    .await
    .unwrap();
    assert_eq!(s.imported, 40);
    // a v1 link of the tenant with a param the event model cannot hold
    let k = node.state.store.tenant_keys("acme").await.unwrap().unwrap().keys.remove(0);
    let link = tracker_protocol::links::v1_signed_url(
        "",
        k.signing_secret.as_deref().unwrap(),
        Some("acme"),
        "https://a.example/",
        &[],
    )
    .unwrap();
    let res = node
        .http
        .get(format!("{}{link}&utm%5Bsource%5D=x", node.base))
        .header("user-agent", crate::consumers::CHROME)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 307);

    let usage = api
        .until("/api/usage?granularity=hour", &key, |b| b["totals"]["imported"] == 40 && b["totals"]["accepted"] == 1)
        .await;
    assert_eq!(
        (usage["totals"]["dropped_quota"].as_u64(), usage["totals"]["dropped_rate"].as_u64()),
        (Some(0), Some(0)),
        "{usage}"
    );
    assert_eq!(usage["allowance"]["used"], 1, "history does not use the month's allowance");
    let drops = api.until("/api/drops?hours=2", &key, |b| !b["totals"].as_array().unwrap().is_empty()).await;
    assert_eq!(drops["totals"][0]["reason"], "overflow", "{drops}");
    let samples = api.get("/api/drops/samples?reason=overflow", &key).await;
    assert_eq!(samples["data"][0]["event"]["raw_payload"]["overflow"]["params"][0][0], "utm[source]");
}
