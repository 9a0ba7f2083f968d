//! Plans, metering and the hard cap, in a real node: a tenant on a small plan clicks past its monthly
//! allowance. Its links keep redirecting; the events past the cap are dropped as `quota` and shown in the drop
//! ledger; usage counts exactly what was accepted and dropped; ingestion answers 429 with `Retry-After` and
//! `RateLimit` headers until the month ends (or the plan changes); the tenant is warned at 80% and 100% by
//! webhook; and the plan's limits on links and webhooks hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracker_protocol::quota::next_month_start;
use tracker_store::{Plan, Plans};

use crate::common::now_ms;
use crate::consumers::{ADMIN, Api, CHROME, receiver};

const ALLOWANCE: u64 = 20;
/// Server events sent first, twice (a client's resend without an `Idempotency-Key`): counted once.
const BATCHED: u64 = 2;
const CLICKS: u64 = 30;
/// The clicks past the allowance.
const OVER: u64 = BATCHED + CLICKS - ALLOWANCE;

fn tiny() -> Plan {
    Plan {
        monthly_events: ALLOWANCE,
        price_cents: 500,
        overage_cents_per_million: None,
        events_per_second: None,
        retention_days: Some(7),
        query_tiers: vec!["hot".into()],
        max_webhooks: Some(1),
        max_links: Some(1),
        api_requests_per_minute: 10_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_plan_clicks_past_its_cap_links_keep_working_and_usage_is_exact() {
    let api = Api::start(|c| {
        c.webhook_allow_private = true;
        c.consumers.plans = Plans::with(BTreeMap::from([("tiny".to_owned(), tiny())])).unwrap();
        // how long the filter uses a tenant's record (FILTER_RULES_RELOAD_MS): short, so the test need not wait
        c.consumers.rules_ttl = Duration::from_millis(100);
    })
    .await;
    let (key, token) = api.tenant("small").await;
    let (s, t) = api.call("PATCH", "/api/tenants/small", ADMIN, Some(json!({ "plan": "tiny" }))).await;
    assert_eq!(s, 200, "{t}");

    // the plan's limits: one webhook endpoint, one link
    let secret = Arc::new(Mutex::new(String::new()));
    let (hook_url, hooks) = receiver(secret.clone(), 0, Duration::ZERO).await;
    let (s, hook) = api
        .call("POST", "/api/webhooks", &key, Some(json!({ "url": hook_url, "event_types": ["usage.threshold"] })))
        .await;
    assert_eq!(s, 201, "{hook}");
    *secret.lock().unwrap() = hook["secret"].as_str().unwrap().to_owned();
    let (s, refused) = api.call("POST", "/api/webhooks", &key, Some(json!({ "url": "https://hooks.example/2" }))).await;
    assert_eq!((s, refused["error"]["code"].as_str()), (403, Some("plan_limit")), "{refused}");
    let (s, link) =
        api.call("POST", "/api/links", &key, Some(json!({ "destination": "https://shop.example/p" }))).await;
    assert_eq!(s, 201, "{link}");
    let (s, refused) =
        api.call("POST", "/api/links", &key, Some(json!({ "destination": "https://shop.example/q" }))).await;
    assert_eq!((s, refused["error"]["code"].as_str()), (403, Some("plan_limit")), "{refused}");

    // two server events, sent twice with the same ids: the copies are dropped as duplicates, counted nowhere
    let sent = json!([{"event_id": "0193a000-0000-7000-8000-000000000001", "event_type": "signup"},
                      {"event_id": "0193a000-0000-7000-8000-000000000002", "event_type": "signup"}]);
    api.ingest(&token, &sent).await;
    api.ingest(&token, &sent).await;

    // 30 clicks on what is left of a 20-event plan: every one is redirected
    let url = link["url"].as_str().unwrap();
    let path = url.get(url.find("/t/").unwrap()..).unwrap().to_owned();
    let click = || async {
        let res =
            api.node.http.get(format!("{}{path}", api.node.base)).header("user-agent", CHROME).send().await.unwrap();
        assert_eq!(res.status(), 307);
        let to = res.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("https://shop.example/p?ad_click_id="), "{to}");
    };
    for _ in 0..CLICKS {
        click().await;
    }

    // usage: exactly the allowance accepted, the rest dropped for the quota, every redirect counted
    let done = |b: &Value| {
        b["totals"]["accepted"].as_u64().unwrap() + b["totals"]["dropped_quota"].as_u64().unwrap() == BATCHED + CLICKS
    };
    let usage = api.until("/api/usage?granularity=hour", &key, done).await;
    let totals = &usage["totals"];
    assert_eq!(totals["accepted"], ALLOWANCE, "{usage}");
    assert_eq!(totals["dropped_quota"], OVER);
    assert_eq!(totals["redirects"], CLICKS);
    assert_eq!(usage["plan"], "tiny");
    let allowance = &usage["allowance"];
    assert_eq!((allowance["used"].as_u64(), allowance["remaining"].as_u64()), (Some(ALLOWANCE), Some(0)));
    assert_eq!(allowance["hard_cap"], true);
    let month_end = next_month_start(now_ms());
    assert_eq!(allowance["blocked_until"], month_end);
    // the hot tier holds the accepted clicks only, and the drop ledger the quota's hours
    let events =
        api.until("/api/events?limit=100", &key, |b| b["data"].as_array().unwrap().len() as u64 == ALLOWANCE).await;
    assert_eq!(events["data"].as_array().unwrap().len() as u64, ALLOWANCE);
    let drops = api.get("/api/drops?reason=quota", &key).await;
    assert_eq!(drops["totals"][0]["count"], OVER, "{drops}");
    let hour = drops["data"][0]["hour"].as_i64().unwrap();
    assert_eq!(usage["quota_drops"]["events"], OVER);
    assert_eq!(usage["quota_drops"]["from"], hour);
    let samples = api.get("/api/drops/samples?reason=quota", &key).await;
    assert!(!samples["data"].as_array().unwrap().is_empty(), "{samples}");

    // ingestion answers 429 with the headers, until the month ends
    let res = api
        .node
        .http
        .post(format!("{}/batch", api.node.base))
        .bearer_auth(&token)
        .json(&json!([{"event_type": "signup"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let h = |n: &str| res.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    let retry: i64 = h("retry-after").unwrap().parse().unwrap();
    let left = (month_end - now_ms()) / 1000;
    assert!((left - 5..=left + 5).contains(&retry), "Retry-After {retry}, {left} s left in the month");
    assert_eq!(h("ratelimit-policy").as_deref(), Some(format!("\"events\";q={ALLOWANCE};w=2592000").as_str()));
    assert_eq!(h("ratelimit"), Some(format!("\"events\";r=0;t={retry}")));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let res = api.node.http.get(format!("{}/p?token={token}&event_type=sale", api.node.base)).send().await.unwrap();
    assert_eq!(res.status(), 429, "a postback is ingestion too");
    // ...while clicks and pixels are still answered (and counted as drops)
    click().await;
    let pixel = api
        .node
        .http
        .get(format!("{}/i?key_prefix=small", api.node.base))
        .header("user-agent", CHROME)
        .send()
        .await
        .unwrap();
    assert_eq!(pixel.status(), 200);
    let usage = api.until("/api/usage", &key, |b| b["totals"]["dropped_quota"] == OVER + 2).await;
    assert_eq!(usage["totals"]["accepted"], ALLOWANCE);
    assert_eq!(usage["totals"]["redirects"], CLICKS + 1);

    // warned at 80% (16 events) and at 100%, once each, signed like every delivery
    let started = Instant::now();
    while hooks.got.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(15), "warnings not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = hooks.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let mut percents: Vec<i64> = got
        .iter()
        .map(|(_, event, body)| {
            assert_eq!(event, "usage.threshold");
            assert_eq!(body["type"], "usage.threshold");
            assert_eq!(body["data"]["allowance"], ALLOWANCE);
            body["data"]["percent"].as_i64().unwrap()
        })
        .collect();
    percents.sort_unstable();
    assert_eq!(percents, [80, 100]);
    let used_at_80 = got.iter().find(|(_, _, b)| b["data"]["percent"] == 80).unwrap().2["data"]["used"].clone();
    assert_eq!(used_at_80, 16);
    let usage = api.until("/api/usage", &key, |b| b["totals"]["webhook_deliveries"] == 2).await;
    assert_eq!(usage["totals"]["webhook_deliveries"], 2);

    // the CSV export has the same numbers
    let csv = api
        .node
        .http
        .get(format!("{}/api/usage?format=csv&granularity=month", api.node.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!((col("accepted"), col("dropped_quota")), ("20", (OVER + 2).to_string().as_str()));
    assert_eq!(col("period"), tracker_protocol::quota::month_name(now_ms()));

    // the invoice: a hard cap bills the plan's price and nothing more
    let invoice = api.get("/api/usage/invoice", &key).await;
    assert_eq!((invoice["billable_events"].as_u64(), invoice["total_cents"].as_u64()), (Some(ALLOWANCE), Some(500)));
    assert_eq!(invoice["final"], false);
    // the admin sees every tenant; a tenant key cannot
    let all = api.get("/api/admin/usage", ADMIN).await;
    let mine = all["data"].as_array().unwrap().iter().find(|t| t["key_prefix"] == "small").unwrap();
    assert_eq!((mine["plan"].as_str(), mine["totals"]["accepted"].as_u64()), (Some("tiny"), Some(ALLOWANCE)));
    let (s, _) = api.call("GET", "/api/admin/usage", &key, None).await;
    assert_eq!(s, 403);
    // bad inputs are 400s that say why
    for bad in [
        "/api/usage?granularity=week",
        "/api/usage?from=10&to=5",
        "/api/usage?granularity=hour&from=0&to=86400000000",
        "/api/usage/invoice?period=2026-13",
    ] {
        let (s, body) = api.call("GET", bad, &key, None).await;
        assert_eq!(s, 400, "{bad}: {body}");
    }

    // a plan with room lifts the block: ingestion at once, the filter once it reads the tenant again
    // (FILTER_RULES_RELOAD_MS)
    let (s, _) = api.call("PATCH", "/api/tenants/small", ADMIN, Some(json!({ "plan": "pro" }))).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    api.ingest(&token, &json!([{"event_type": "signup"}])).await;
    let usage = api.until("/api/usage", &key, |b| b["totals"]["accepted"] == ALLOWANCE + 1).await;
    assert_eq!(usage["allowance"]["hard_cap"], false);
}
