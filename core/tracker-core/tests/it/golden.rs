//! Golden queries: each file in `core/tracker-core/tests/golden/` is a `POST /api/query` request with the answer it
//! must get over the dataset below, from every tier the file names. The hot tier's data starts at a watermark in the
//! middle of the dataset, so `auto` answers that span it are merged from the archive and the hot tier, and must
//! still equal the cold tier's answer over the whole range: nothing double counted, nothing lost.
//!
//! `UPDATE_GOLDEN=1` rewrites the expected answers from the cold tier (then review the diff).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracker_archive::{ArchiveSettings, parse_base};

use crate::common::now_ms;
use crate::consumers::Api;

/// 2026-11-01 00:00 UTC: the dataset's three days start here.
const DAY0: i64 = 1_793_491_200_000;
const HOUR: i64 = 3_600_000;
const N: i64 = 2880;

/// Event `i`: one every 90 s (plus a few seconds) over three days.
fn event(i: i64) -> Value {
    let event_type = if i % 5 == 0 {
        "signup"
    } else if i % 2 == 0 {
        "click"
    } else {
        "view"
    };
    let campaign = ["spring", "summer", "fall"][(i % 3) as usize];
    let mut params = json!({ "campaign": campaign, "n": i.to_string() });
    if i % 11 != 0 {
        params["source"] = json!(["google", "meta"][((i / 7) % 2) as usize]);
    }
    json!({
        "event_id": format!("0000e7e0-0000-4000-8000-{i:012x}"),
        "event_type": event_type,
        "timestamp": DAY0 + i * 90_000 + (i % 7) * 1000,
        "params": params,
    })
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The answer without who answered it and what it cost, which differ by tier by design.
fn normalized(mut answer: Value) -> Value {
    if let Some(o) = answer.as_object_mut() {
        for k in ["tier", "scanned", "watermark", "query"] {
            o.remove(k);
        }
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tier_gives_the_golden_answers_and_auto_merges_at_the_watermark() {
    // the hot tier keeps what came after 36 h into the dataset, the archive everything
    let hot_from = DAY0 + 36 * HOUR;
    let retention = Duration::from_millis(u64::try_from(now_ms() - hot_from).unwrap());
    let api = Api::start(|c| {
        let base = parse_base(c.data_dir.join("archive").to_str().unwrap()).unwrap();
        c.consumers.archive =
            Some(ArchiveSettings { flush_interval: Duration::from_millis(200), ..ArchiveSettings::new(base) });
        c.consumers.hot_counts_retention = retention;
        c.consumers.hot_events_retention = retention;
    })
    .await;
    let (key, token) = api.tenant("golden").await;
    let events: Vec<Value> = (0..N).map(event).collect();
    for chunk in events.chunks(500) {
        api.ingest(&token, &Value::Array(chunk.to_vec())).await;
    }
    // a client's resend without an Idempotency-Key, across the watermark: every tier counts these events once
    api.ingest(&token, &Value::Array(events[1200..1700].to_vec())).await;
    let drops = api.until("/api/drops?reason=duplicate", &key, |b| b["totals"][0]["count"] == 500).await;
    assert_eq!(drops["totals"][0]["count"], 500, "each resent event dropped once, as a duplicate: {drops}");
    let (api, key) = (&api, &key);
    let ask = |tier: &str, query: &Value| {
        let body = json!({ "tier": tier, "query": query });
        async move { api.call("POST", "/api/query", key, Some(body)).await }
    };
    // everything archived (cold) and everything after the watermark counted (auto = warm + hot)
    let whole = json!({ "kind": "breakdown", "filters": { "from": DAY0, "to": DAY0 + 72 * HOUR }, "by": "event_type" });
    let started = Instant::now();
    loop {
        let (_, cold) = ask("cold", &whole).await;
        let (_, auto) = ask("auto", &whole).await;
        if cold["total"] == N && auto["total"] == N {
            assert_eq!(auto["tier"], "warm+hot", "{auto}");
            assert_eq!(auto["watermark"], hot_from + HOUR, "the first whole hour the hot tier holds");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not all archived and counted: {cold} {auto}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut files: Vec<_> = std::fs::read_dir(golden_dir()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 8, "the golden requests are missing");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let query = golden["query"].clone();
        if update {
            let (status, cold) = ask("cold", &query).await;
            assert_eq!(status, 200, "{name}: {cold}");
            let (_, auto) = ask("auto", &query).await;
            golden["auto_tier"] = auto["tier"].clone();
            golden["answer"] = normalized(cold);
            std::fs::write(&path, serde_json::to_string_pretty(&golden).unwrap() + "\n").unwrap();
        }
        for tier in golden["tiers"].as_array().unwrap() {
            let tier = tier.as_str().unwrap();
            let (status, answer) = ask(tier, &query).await;
            assert_eq!(status, 200, "{name} on {tier}: {answer}");
            let expected_tier = if tier == "auto" { golden["auto_tier"].clone() } else { json!(tier) };
            assert_eq!(answer["tier"], expected_tier, "{name}: who answered");
            assert_eq!(normalized(answer), golden["answer"], "{name} on {tier}");
        }
    }

    // the query functions as a server of their own (QUERY_URL, as a Lambda function URL would be): the node's
    // signed requests get the same answers; a wrong secret gets none
    let engines = std::sync::Arc::new(tracker_query::router::Engines::new(
        api.node.state.cfg.consumers.archive.clone().unwrap(),
        Duration::from_secs(30),
    ));
    let secret = b"golden-query-secret-0123456789".to_vec();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = tracker_query::router::router(engines, vec![secret.clone()]);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let remote = |secret: &[u8]| {
        let mut cfg = api.node.state.cfg.clone();
        cfg.query.url = Some(url.clone());
        cfg.query.secret = Some(secret.to_vec().into());
        tracker_core::query::ArchiveTiers::from_config(&cfg).unwrap()
    };
    let (remote, forged) = (remote(&secret), remote(b"not-the-query-secret-0123"));
    let whole_series = json!({
        "kind": "series",
        "filters": { "from": DAY0, "to": DAY0 + 72 * HOUR },
        "interval": "day",
        "group_by": "event_type"
    });
    for (tier, name) in [(tracker_query::router::Tier::Warm, "warm"), (tracker_query::router::Tier::Cold, "cold")] {
        let q: tracker_query::Query = serde_json::from_value(whole_series.clone()).unwrap();
        let far = remote.answer("golden", tier, &q).await.unwrap();
        let (_, near) = ask(name, &whole_series).await;
        assert_eq!(normalized(far), normalized(near), "{name} through QUERY_URL");
        let refused = forged.answer("golden", tier, &q).await.unwrap_err();
        assert!(matches!(refused, tracker_core::query::QueryError::Unavailable), "{refused:?}");
        let refused = tracker_core::http::ApiError::from(refused);
        assert_eq!((refused.status.as_u16(), refused.code), (503, "query_unavailable"), "{refused:?}");
    }

    // a tier that cannot answer says why, and a plan without the cold tier cannot force it
    let before = json!({ "kind": "series", "filters": { "from": DAY0, "to": DAY0 + 24 * HOUR }, "interval": "hour" });
    let (status, refused) = ask("hot", &before).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("tier_cannot_answer")), "{refused}");
    let params = json!({
        "kind": "series",
        "filters": { "from": DAY0, "to": DAY0 + HOUR, "params": { "campaign": "fall" } },
        "interval": "hour"
    });
    let (status, refused) = ask("warm", &params).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("tier_cannot_answer")), "{refused}");
    let (s, _) =
        api.call("PATCH", "/api/tenants/golden", crate::consumers::ADMIN, Some(json!({ "plan": "free" }))).await;
    assert_eq!(s, 200);
    let (status, refused) = ask("cold", &before).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("tier_not_in_plan")), "{refused}");
    // on the free plan `auto` still answers what the warm and hot tiers hold, and refuses what needs the cold one
    let (status, answer) = ask("auto", &before).await;
    assert_eq!((status, answer["tier"].as_str()), (200, Some("warm")), "{answer}");
    let (status, refused) = ask("auto", &params).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("tier_not_in_plan")), "{refused}");
}
