//! The stream consumers inside a real node (embedded log, libSQL): the filter and its drop ledger, the hot tier
//! behind `/api/events*`, webhook deliveries with retries, dead letters and redelivery, and live SSE, all over
//! real HTTP, with every API answer checked against the OpenAPI document.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::schema::assert_documented;
use crate::common::{Node, now_ms};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracker_core::Config;

pub(crate) const ADMIN: &str = "admin-token-0123456789abcdef0123456789";
pub(crate) const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36";

pub(crate) struct Api {
    pub(crate) node: Node,
    doc: Value,
}

impl Api {
    pub(crate) async fn start(tune: impl FnOnce(&mut Config)) -> Api {
        let node = Node::start(|c| {
            c.node.admin_token_sha256 = Some(Sha256::digest(ADMIN.as_bytes()).into());
            c.node.admin_api_rpm = 100_000;
            tune(c);
        })
        .await;
        let doc: Value =
            node.http.get(format!("{}/api/openapi.json", node.base)).send().await.unwrap().json().await.unwrap();
        Api { node, doc }
    }

    /// A request with a bearer credential and an optional JSON body; `(status, body)`, checked against the
    /// OpenAPI document.
    pub(crate) async fn call(&self, method: &str, path: &str, credential: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.node.http.request(m, format!("{}{path}", self.node.base)).bearer_auth(credential);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        assert_documented(&self.doc, method, path, status, &body);
        (status, body)
    }

    pub(crate) async fn get(&self, path: &str, key: &str) -> Value {
        let (status, body) = self.call("GET", path, key, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// A tenant with its admin API key, raised API limits and an ingest token.
    pub(crate) async fn tenant(&self, prefix: &str) -> (String, String) {
        let (s, created) = self
            .call(
                "POST",
                "/api/tenants",
                ADMIN,
                Some(json!({ "name": prefix, "key_prefix": prefix, "plan": "enterprise" })),
            )
            .await;
        assert_eq!(s, 201, "{created}");
        let admin_key = created["api_key"]["secret"].as_str().unwrap().to_owned();
        let (s, key) = self
            .call("POST", "/api/keys", &admin_key, Some(json!({ "name": "rw", "scopes": ["read", "write"] })))
            .await;
        assert_eq!(s, 201);
        let (s, token) = self.call("POST", "/api/tokens", &admin_key, Some(json!({ "name": "server" }))).await;
        assert_eq!(s, 201, "{token}");
        (key["secret"].as_str().unwrap().to_owned(), token["secret"].as_str().unwrap().to_owned())
    }

    pub(crate) async fn ingest(&self, token: &str, events: &Value) {
        let res = self
            .node
            .http
            .post(format!("{}/batch", self.node.base))
            .bearer_auth(token)
            .json(events)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"].as_u64().unwrap() as usize, events.as_array().unwrap().len(), "{body}");
    }

    /// Polls `path` until `done` holds for its answer (at most 10 s).
    pub(crate) async fn until(&self, path: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let body = self.get(path, key).await;
            if done(&body) {
                return body;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "{path} never got there: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn total_of(stats: &Value, key: &str) -> i64 {
    stats["totals"].as_array().unwrap().iter().find(|t| t["key"] == key).map_or(0, |t| t["count"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_events_reach_the_hot_routes_and_drops_reach_the_ledger() {
    // the filter reads a tenant's rules again this often (FILTER_RULES_RELOAD_MS): short, so the test need not wait
    let api = Api::start(|c| c.consumers.rules_ttl = Duration::from_millis(100)).await;
    let (key, token) = api.tenant("acme").await;
    let (beta_key, beta_token) = api.tenant("beta").await;
    // a tenant rule, through the API: drop traffic from a known spam source
    let (s, rule) = api
        .call(
            "POST",
            "/api/rules",
            &key,
            Some(json!({ "field": "param:utm_source", "operator": "equals", "value": "spamnet", "action": "drop" })),
        )
        .await;
    assert_eq!(s, 201, "{rule}");
    let rule_id = rule["rule_id"].as_str().unwrap().to_owned();
    // the filter reads rules again within FILTER_RULES_RELOAD_MS; wait for that so the rule applies
    tokio::time::sleep(Duration::from_millis(150)).await;

    let t0 = now_ms() - 60_000;
    let at = |s: i64| t0 + s * 1000;
    // clicks c1..c4, conversions: c1 (once), c2 twice (only one can pair), c3 before its click (cannot pair),
    // c9 without a click; and one click from a spam source the rule drops
    let events = json!([
        {"event_type": "click", "timestamp": at(1), "params": {"click_id": "c1", "sub1": "google"}},
        {"event_type": "click", "timestamp": at(2), "params": {"click_id": "c2", "sub1": "google"}},
        {"event_type": "click", "timestamp": at(10), "params": {"click_id": "c3", "sub1": "bing"}},
        {"event_type": "click", "timestamp": at(3), "params": {"click_id": "c4", "sub1": "bing"}},
        {"event_type": "postback", "timestamp": at(5), "params": {"click_id": "c1", "payout": "2.5"}},
        {"event_type": "postback", "timestamp": at(6), "params": {"click_id": "c2"}},
        {"event_type": "postback", "timestamp": at(7), "params": {"click_id": "c2"}},
        {"event_type": "postback", "timestamp": at(8), "params": {"click_id": "c3"}},
        {"event_type": "postback", "timestamp": at(9), "params": {"click_id": "c9"}},
        {"event_type": "click", "timestamp": at(4), "params": {"click_id": "c5", "utm_source": "spamnet"}},
    ]);
    api.ingest(&token, &events).await;
    api.ingest(&beta_token, &json!([{"event_type": "click", "params": {"click_id": "c1"}}])).await;

    // a browser click and a bot click on a tracking link, at the node's edge-less endpoint
    let (s, link) =
        api.call("POST", "/api/links", &key, Some(json!({ "destination": "https://shop.example/p" }))).await;
    assert_eq!(s, 201);
    let url = link["url"].as_str().unwrap();
    let path = url.get(url.find("/t/").unwrap()..).unwrap();
    let clicked_at = Instant::now();
    let res = api.node.http.get(format!("{}{path}", api.node.base)).header("user-agent", CHROME).send().await.unwrap();
    assert_eq!(res.status(), 307);
    let res =
        api.node.http.get(format!("{}{path}", api.node.base)).header("user-agent", "curl/8.4").send().await.unwrap();
    assert_eq!(res.status(), 307, "bots are redirected too; they are only left out of the data");
    let tu_id = link["tu_id"].as_str().unwrap().to_owned();
    let listed =
        api.until(&format!("/api/events?tu_id={tu_id}"), &key, |b| !b["data"].as_array().unwrap().is_empty()).await;
    let visible_after = clicked_at.elapsed();
    println!("a click at the node was visible in /api/events after {} ms", visible_after.as_millis());
    assert!(visible_after < Duration::from_secs(2), "{visible_after:?}");
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "the bot's click was filtered out: {listed}");
    assert_eq!(listed["tier"], "hot");

    // every kept event, newest first, paged; nothing of beta's
    let all = api.until("/api/events?limit=100", &key, |b| b["data"].as_array().unwrap().len() == 10).await;
    let ts: Vec<i64> = all["data"].as_array().unwrap().iter().map(|e| e["timestamp"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");
    assert!(all["data"].as_array().unwrap().iter().all(|e| e["key_prefix"] == "acme"));
    let first = api.get("/api/events?limit=4", &key).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = api.get(&format!("/api/events?limit=4&cursor={cursor}"), &key).await;
    let third_cursor = second["next_cursor"].as_str().unwrap();
    let third = api.get(&format!("/api/events?limit=4&cursor={third_cursor}"), &key).await;
    let paged: Vec<&Value> = [&first, &second, &third].iter().flat_map(|p| p["data"].as_array().unwrap()).collect();
    assert_eq!(paged.len(), 10);
    assert_eq!(third["next_cursor"], Value::Null);
    assert_eq!(api.get("/api/events", &beta_key).await["data"].as_array().unwrap().len(), 1);

    // param filters are bound values: a quote in them is just a value that matches nothing
    let c2 = api.get("/api/events?param_key=click_id&param_value=c2", &key).await;
    assert_eq!(c2["data"].as_array().unwrap().len(), 3);
    let odd = api.get("/api/events?param_key=click_id&param_value=c2'%20OR%20'1'='1", &key).await;
    assert_eq!(odd["data"].as_array().unwrap().len(), 0);
    let typed = api.get("/api/events?event_type=postback&param_key=click_id&param_value=c2", &key).await;
    assert_eq!(typed["data"].as_array().unwrap().len(), 2);

    // stats: per event type, per param value (breakdown), filtered by a param
    let range = format!("from={}&to={}", t0 - 3_600_000, now_ms() + 60_000);
    let by_type = api.get(&format!("/api/events/stats?group_by=event_type&{range}"), &key).await;
    assert_eq!(total_of(&by_type, "click"), 5, "{by_type}");
    assert_eq!(total_of(&by_type, "postback"), 5);
    assert_eq!(by_type["total"], 10);
    let by_sub = api.get(&format!("/api/events/stats?group_by=param:sub1&interval=minute&{range}"), &key).await;
    assert_eq!((total_of(&by_sub, "google"), total_of(&by_sub, "bing")), (2, 2), "{by_sub}");
    let google = api.get(&format!("/api/events/stats?param_key=sub1&param_value=google&{range}"), &key).await;
    assert_eq!(google["total"], 2);
    let by_link = api.get(&format!("/api/events/stats?group_by=tu_id&{range}"), &key).await;
    assert_eq!(total_of(&by_link, &tu_id), 1);

    // match: c1 pairs, c2 pairs once (the second conversion finds no unpaired click), c3's conversion came
    // before its click and c9 has none
    let m = api.get(&format!("/api/events/match?trigger=click&result=postback&on=click_id&{range}"), &key).await;
    let pairs: Vec<(&str, i64)> = m["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["time_delta_ms"].as_i64().unwrap()))
        .collect();
    assert_eq!(pairs, vec![("c1", 4000), ("c2", 4000)], "{m}");
    assert_eq!(m["summary"]["matched"], 2);
    assert_eq!(m["summary"]["results"], 5);
    assert_eq!(m["summary"]["triggers"], 4, "c1..c4: the spam click was dropped, the link click has no click_id");
    assert!(m["pairs"].as_array().unwrap().iter().all(|p| p["trigger_event"]["event_type"] == "click"));
    assert_eq!(m["summary"]["match_rate"].as_f64().unwrap(), 0.5);
    let short = api
        .get(&format!("/api/events/match?trigger=click&result=postback&on=click_id&window_secs=3&{range}"), &key)
        .await;
    assert_eq!(short["summary"]["matched"], 0, "both pairs are 4 s apart");

    // the drop ledger: the bot click and the rule's drop, with samples
    let drops = api.until("/api/drops?hours=2", &key, |b| b["totals"].as_array().unwrap().len() == 2).await;
    let totals: Vec<(String, i64)> = drops["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["reason"].as_str().unwrap().to_owned(), t["count"].as_i64().unwrap()))
        .collect();
    let mut want = vec![("bot".to_owned(), 1), (rule_id.clone(), 1)];
    want.sort();
    assert_eq!(totals, want);
    let samples = api.get(&format!("/api/drops/samples?reason={rule_id}"), &key).await;
    assert_eq!(samples["data"][0]["event"]["params"]["click_id"], "c5");
    assert_eq!(api.get("/api/drops?hours=2", &beta_key).await["data"].as_array().unwrap().len(), 0);

    // bad input is a 400 that says why
    for bad in [
        "/api/events?param_key=x",
        "/api/events?limit=0",
        "/api/events?cursor=nope",
        "/api/events?from=10&to=5",
        "/api/events/stats?group_by=color",
        "/api/events/stats?interval=week",
        "/api/events/stats?interval=minute&hours=500",
        "/api/events/match?trigger=click&result=postback",
        "/api/events/match?trigger=click&result=postback&on=x&window_secs=0",
        "/api/drops?hours=0",
    ] {
        let (s, body) = api.call("GET", bad, &key, None).await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
    api.node.stop().await;
}

/// A webhook receiver: answers each delivery with the next status of its script (then 200), after `delay`.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    /// Deliveries answered 200: (delivery id, event type header, body).
    pub(crate) got: Arc<Mutex<Vec<(String, String, Value)>>>,
    /// Every signed attempt, in arrival order: (delivery id, body).
    tried: Arc<Mutex<Vec<(String, Value)>>>,
}

pub(crate) async fn receiver(
    secret_slot: Arc<Mutex<String>>,
    fail_first: usize,
    delay: Duration,
) -> (String, Receiver) {
    use axum::http::HeaderMap;
    let rx = Receiver::default();
    let seen = rx.got.clone();
    let tried = rx.tried.clone();
    let attempts: Arc<Mutex<std::collections::HashMap<String, usize>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (seen, attempts, secret, tried) = (seen.clone(), attempts.clone(), secret_slot.clone(), tried.clone());
            async move {
                tokio::time::sleep(delay).await;
                let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
                let secret = secret.lock().unwrap().clone();
                let now = now_ms() / 1000;
                // refuse anything not signed by the endpoint's secret within five minutes
                if tracker_protocol::webhook::verify(&secret, &h("tracker-signature"), &body, now, 300).is_err() {
                    return axum::http::StatusCode::UNAUTHORIZED;
                }
                let id = h("tracker-delivery-id");
                tried.lock().unwrap().push((id.clone(), serde_json::from_slice(&body).unwrap()));
                let n = {
                    let mut a = attempts.lock().unwrap();
                    let n = a.entry(id.clone()).or_default();
                    *n += 1;
                    *n
                };
                if n <= fail_first {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                seen.lock().unwrap().push((id, h("tracker-event"), serde_json::from_slice(&body).unwrap()));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_in_order_dead_lettered_and_redelivered() {
    let api = Api::start(|c| {
        c.webhook_allow_private = true;
        let w = &mut c.consumers.webhooks;
        w.concurrency = 1;
        w.max_attempts = 3;
        w.retry_base = Duration::from_millis(100);
        w.retry_max = Duration::from_millis(400);
        // above the flaky endpoint's worst run (its 5 deliveries fail twice each), below the down one's 15
        w.disable_after = 12;
    })
    .await;
    let (key, token) = api.tenant("acme").await;

    // a flaky endpoint (every delivery fails twice, then succeeds), a slow one, and one that is down
    let flaky_secret = Arc::new(Mutex::new(String::new()));
    let (flaky_url, flaky) = receiver(flaky_secret.clone(), 2, Duration::ZERO).await;
    let slow_secret = Arc::new(Mutex::new(String::new()));
    let (slow_url, slow) = receiver(slow_secret.clone(), 0, Duration::from_millis(700)).await;
    let down_secret = Arc::new(Mutex::new(String::new()));
    let create = |url: String, types: Value| json!({ "url": url, "event_types": types });
    let mut ids = Vec::new();
    for (url, slot, types) in [
        (flaky_url, &flaky_secret, json!(["signup"])),
        (slow_url, &slow_secret, json!([])),
        ("http://127.0.0.1:9/down".to_owned(), &down_secret, json!(["signup"])),
    ] {
        let (s, hook) = api.call("POST", "/api/webhooks", &key, Some(create(url, types))).await;
        assert_eq!(s, 201, "{hook}");
        *slot.lock().unwrap() = hook["secret"].as_str().unwrap().to_owned();
        ids.push(hook["webhook"]["webhook_id"].as_str().unwrap().to_owned());
    }
    let started = Instant::now();
    let events: Vec<Value> = (0..5).map(|i| json!({"event_type": "signup", "params": {"n": i.to_string()}})).collect();
    api.ingest(&token, &Value::Array(events)).await;
    api.ingest(&token, &json!([{"event_type": "pageview"}])).await;

    // the flaky endpoint gets each signup, after two failed attempts each; first attempts come in event order
    let deadline = Instant::now() + Duration::from_secs(20);
    while flaky.got.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "flaky endpoint got {:?}", flaky.got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flaky_done = started.elapsed();
    let got = flaky.got.lock().unwrap().clone();
    let mut delivered: Vec<String> =
        got.iter().map(|(_, _, b)| b["data"]["params"]["n"].as_str().unwrap().to_owned()).collect();
    delivered.sort();
    assert_eq!(delivered, ["0", "1", "2", "3", "4"], "each once");
    let tried = flaky.tried.lock().unwrap().clone();
    let mut first_attempts = Vec::new();
    for (_, body) in &tried {
        let n = body["data"]["params"]["n"].as_str().unwrap().to_owned();
        if !first_attempts.contains(&n) {
            first_attempts.push(n);
        }
    }
    assert_eq!(first_attempts, ["0", "1", "2", "3", "4"], "first attempts in event order (concurrency 1)");
    assert_eq!(tried.len(), 15, "three attempts each");
    assert!(
        got.iter().all(|(id, event, body)| body["id"] == id.as_str() && event == "signup" && body["type"] == "event")
    );
    // the slow endpoint (700 ms per delivery, one at a time) did not hold the flaky one back
    assert!(slow.got.lock().unwrap().len() < 6, "the slow endpoint is still at it when the flaky one is done");
    println!("flaky endpoint done after {flaky_done:?}; slow endpoint at {}", slow.got.lock().unwrap().len());

    let log = api
        .until(&format!("/api/webhooks/{}/deliveries", ids[0]), &key, |b| {
            b["data"].as_array().unwrap().iter().all(|d| d["status"] == "delivered")
        })
        .await;
    assert_eq!(log["data"].as_array().unwrap().len(), 5);
    assert!(log["data"].as_array().unwrap().iter().all(|d| d["attempts"] == 3 && d["last_status"] == 200));

    // the endpoint that is down: each delivery dead-lettered after 3 attempts, and after 6 failed attempts in a
    // row the endpoint is disabled, its remaining deliveries dead-lettered too
    let down = &ids[2];
    let dead = api
        .until(&format!("/api/webhooks/{down}/deliveries?status=dead"), &key, |b| {
            b["data"].as_array().unwrap().len() == 5
        })
        .await;
    let hook = api.get(&format!("/api/webhooks/{down}"), &key).await;
    assert_eq!(hook["enabled"], false, "{hook}");
    assert!(hook["disabled_reason"].as_str().unwrap().contains("consecutive failed attempts"));
    let one = dead["data"][0]["delivery_id"].as_str().unwrap().to_owned();
    let redeliver = format!("/api/webhooks/{down}/deliveries/{one}/redeliver");
    let (s, body) = api.call("POST", &redeliver, &key, None).await;
    assert_eq!((s, body["error"]["code"].as_str().unwrap()), (409, "webhook_disabled"));

    // fixed: point it at a working receiver, enable it, redeliver one dead letter: it arrives, signed, once
    let (fixed_url, fixed) = receiver(down_secret.clone(), 0, Duration::ZERO).await;
    let (s, _) = api
        .call("PATCH", &format!("/api/webhooks/{down}"), &key, Some(json!({ "url": fixed_url, "enabled": true })))
        .await;
    assert_eq!(s, 200);
    let (s, body) = api.call("POST", &redeliver, &key, None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "pending");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fixed.got.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the redelivery never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = fixed.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the redelivered one; the other dead letters stay dead");
    assert_eq!(got[0].0, one);
    let log = api.get(&format!("/api/webhooks/{down}/deliveries?status=delivered"), &key).await;
    assert_eq!(log["data"][0]["delivery_id"], one.as_str());
    assert_eq!(log["data"][0]["attempts"], 1);

    // the outcomes are counted (at least this test's: other tests of this process deliver too)
    let metrics = api.node.http.get(format!("{}/metrics", api.node.base)).send().await.unwrap().text().await.unwrap();
    let count = |outcome: &str| -> u64 {
        let line = format!("tracker_webhook_attempts_total{{outcome=\"{outcome}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(line.as_str())).map_or(0, |v| v.parse().unwrap())
    };
    assert!(count("delivered") >= 6 && count("failed") >= 5 && count("dead_lettered") >= 1, "{metrics}");
    assert!(metrics.contains("tracker_webhook_endpoints_disabled_total "), "{metrics}");

    // another tenant sees none of it
    let (other_key, _) = api.tenant("beta").await;
    let (s, _) = api.call("GET", &format!("/api/webhooks/{down}/deliveries"), &other_key, None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call("POST", &redeliver, &other_key, None).await;
    assert_eq!(s, 404);
    api.node.stop().await;
}

/// A live stream read with a real HTTP client, frame by frame.
struct Live {
    res: reqwest::Response,
    buf: String,
    /// Where the unread part of `buf` starts.
    at: usize,
}

#[derive(Debug, Clone, Default)]
struct Frame {
    id: Option<u64>,
    event: Option<String>,
    data: String,
    comment: bool,
}

impl Live {
    async fn open(api: &Api, query: &str, bearer: Option<&str>, last_id: Option<u64>) -> Live {
        let mut req = api.node.http.get(format!("{}/sse/events{query}", api.node.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Live { res, buf: String::new(), at: 0 }
    }

    /// The next frame (comments included), waiting at most 10 s.
    async fn frame(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buf.get(self.at..).unwrap().find("\n\n") {
                let block = self.buf.get(self.at..self.at + end).unwrap().to_owned();
                self.at += end + 2;
                let mut f = Frame::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        f.id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        f.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        f.data.push_str(v);
                    } else if line.starts_with(':') {
                        f.comment = true;
                    }
                }
                return f;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.res.chunk()).await.unwrap().unwrap();
            self.buf.drain(..self.at);
            self.at = 0;
            self.buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }

    /// Whether the node ends the stream within `secs` (what it sends before is skipped).
    async fn ended(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, self.res.chunk()).await {
                Ok(Ok(None) | Err(_)) => return true,
                Ok(Ok(Some(_))) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// The next event frame, skipping comments and `retry:` lines.
    async fn event(&mut self) -> (u64, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no event within 10 s");
            let f = self.frame().await;
            if let Some(id) = f.id {
                return (id, serde_json::from_str(&f.data).unwrap());
            }
            assert!(f.event.is_none(), "unexpected {f:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_are_the_tenants_own_filtered_and_resume_after_the_last_id() {
    let api = Api::start(|c| {
        c.node.sse_keepalive = Duration::from_secs(1);
        c.node.sse_backlog = 8;
    })
    .await;
    let (key, token) = api.tenant("acme").await;
    let (_, beta_token) = api.tenant("beta").await;

    // a browser gets a short-lived token that opens streams and nothing else
    let (s, minted) = api.call("POST", "/api/sse/tokens", &key, Some(json!({ "ttl_secs": 120 }))).await;
    assert_eq!(s, 201, "{minted}");
    let stream_token = minted["token"].as_str().unwrap().to_owned();
    let (s, body) = api.call("GET", "/api/links", &stream_token, None).await;
    assert_eq!((s, body["error"]["code"].as_str().unwrap()), (403, "missing_scope"));
    let anonymous = api.node.http.get(format!("{}/sse/events", api.node.base)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong =
        api.node.http.get(format!("{}/sse/events?access_token=trk_key_nope", api.node.base)).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // a key may travel in a URL only when it is short-lived, whatever its scopes
    let stream_key = json!({ "name": "s", "scopes": ["stream"] });
    let (s, forever) = api.call("POST", "/api/tenants/acme/api-keys", ADMIN, Some(stream_key)).await;
    assert_eq!(s, 201, "{forever}");
    let in_url = format!("{}/sse/events?access_token={}", api.node.base, forever["secret"].as_str().unwrap());
    let long_lived = api.node.http.get(in_url).send().await.unwrap();
    assert_eq!(long_lived.status(), 403);
    assert_eq!(long_lived.json::<serde_json::Value>().await.unwrap()["error"]["code"], "key_in_url");
    let bad_id = api
        .node
        .http
        .get(format!("{}/sse/events", api.node.base))
        .bearer_auth(&key)
        .header("last-event-id", "x")
        .send();
    assert_eq!(bad_id.await.unwrap().status(), 400);

    let mut purchases =
        Live::open(&api, &format!("?event_type=purchase&access_token={stream_token}"), None, None).await;
    let mut everything = Live::open(&api, "", Some(&key), None).await;
    let ev = |t: &str, n: &str| json!({"event_type": t, "params": {"n": n}});
    api.ingest(&token, &json!([ev("pageview", "1"), ev("purchase", "p1")])).await;
    api.ingest(&beta_token, &json!([ev("purchase", "beta")])).await;
    api.ingest(&token, &json!([ev("purchase", "p2")])).await;

    let (_, a) = purchases.event().await;
    let (_, b) = purchases.event().await;
    assert_eq!((a["params"]["n"].as_str(), b["params"]["n"].as_str()), (Some("p1"), Some("p2")));
    assert!([&a, &b].iter().all(|e| e["key_prefix"] == "acme"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (id, e) = everything.event().await;
        seen.push((id, e["params"]["n"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), ["1", "p1", "p2"], "never beta's");
    // idle streams get keep-alives
    let f = everything.frame().await;
    assert!(f.comment && f.id.is_none(), "{f:?}");
    drop(everything);

    // a reconnect with the id of p1 gets p2 and what came while it was away, then live events
    api.ingest(&token, &json!([ev("purchase", "p3")])).await;
    let mut resumed = Live::open(&api, "", Some(&key), Some(seen[1].0)).await;
    let (_, x) = resumed.event().await;
    let (_, y) = resumed.event().await;
    assert_eq!((x["params"]["n"].as_str(), y["params"]["n"].as_str()), (Some("p2"), Some("p3")));
    api.ingest(&token, &json!([ev("purchase", "p4")])).await;
    assert_eq!(resumed.event().await.1["params"]["n"], "p4");

    // a client that stops reading is told it lagged, and is not waited for: the others keep getting events
    let mut stalled = Live::open(&api, "", Some(&key), None).await;
    let batch: Vec<Value> = (0..40)
        .map(|i| {
            let params = json!({"a": "x".repeat(1000), "b": "y".repeat(1000), "i": i.to_string()});
            json!({"event_type": "bulk", "params": params})
        })
        .collect();
    let batch = Value::Array(batch);
    // about 20 MB fills the stalled client's queue and socket buffers (which the kernel may grow to several MB
    // each way); then a trickle of small batches (more broadcasts than the backlog of 8) overflows its backlog
    for _ in 0..250 {
        api.ingest(&token, &batch).await;
    }
    for i in 0..40 {
        api.ingest(&token, &json!([ev("tick", &i.to_string())])).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    api.ingest(&token, &json!([ev("purchase", "after")])).await;
    let mut got = Vec::new();
    while got.last().is_none_or(|n| n != "after") {
        got.push(purchases.event().await.1["params"]["n"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ["p3", "p4", "after"], "a stalled client holds no one back");
    let mut lagged = None;
    let mut events = 0;
    // keep-alive comments may come between events (the ticks missed while the client was not reading are made
    // up once it reads); a stream that keeps sending nothing but them has gone idle without a lag notice
    let mut idle = 0;
    for _ in 0..12_000 {
        let f = stalled.frame().await;
        events += usize::from(f.id.is_some());
        idle = if f.comment && events > 0 { idle + 1 } else { 0 };
        assert!(idle < 5, "the stream went idle after {events} events without a lag notice");
        if f.event.as_deref() == Some("lagged") {
            lagged = Some(f);
            break;
        }
    }
    let lagged = lagged.expect("the stalled client was told it lagged");
    let info: Value = serde_json::from_str(&lagged.data).unwrap();
    assert!(info["missed_to_id"].as_u64().unwrap() >= info["missed_from_id"].as_u64().unwrap(), "{info}");
    // the node stops even with a client that is not reading (the resumed stream): streams end at shutdown, and
    // connections still stuck after the grace period are dropped
    drop((stalled, purchases));
    let stopping = Instant::now();
    api.node.stop().await;
    assert!(stopping.elapsed() < tracker_core::SHUTDOWN_GRACE + Duration::from_secs(5));
    drop(resumed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_capped_and_end_with_their_key() {
    let api = Api::start(|c| {
        c.node.sse_keepalive = Duration::from_secs(1);
        c.node.sse_max_streams_per_tenant = 2;
    })
    .await;
    let (key, _) = api.tenant("acme").await;
    let (s, admin) =
        api.call("POST", "/api/tenants/acme/api-keys", ADMIN, Some(json!({ "name": "a", "scopes": ["admin"] }))).await;
    assert_eq!(s, 201, "{admin}");
    let admin = admin["secret"].as_str().unwrap().to_owned();
    let (_, minted) = api.call("POST", "/api/sse/tokens", &key, Some(json!({ "ttl_secs": 60 }))).await;
    let (token, token_id) = (minted["token"].as_str().unwrap(), minted["key_id"].as_str().unwrap());

    let mut by_token = Live::open(&api, &format!("?access_token={token}"), None, None).await;
    let _by_key = Live::open(&api, "", Some(&key), None).await;
    // a third of the same tenant: refused; another tenant's: served
    let third = api.node.http.get(format!("{}/sse/events", api.node.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(third.json::<Value>().await.unwrap()["error"]["code"], "too_many_streams");
    let (beta, _) = api.tenant("beta").await;
    let _beta = Live::open(&api, "", Some(&beta), None).await;

    // revoking the token ends its stream within the keep-alive interval, which frees its place
    let (s, _) = api.call("DELETE", &format!("/api/keys/{token_id}"), &admin, None).await;
    assert_eq!(s, 200);
    assert!(by_token.ended(5).await, "the revoked token's stream is still open");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _again = Live::open(&api, "", Some(&key), None).await;
    api.node.stop().await;
}
