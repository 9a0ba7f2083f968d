//! The platform API over real HTTP: every resource's life cycle, tenant isolation whatever ids are sent,
//! credentials and scopes, per-plan rate limits, bad input, the edge's signed entrance, and the OpenAPI document
//! (every answer in these tests is checked against it).

use std::time::Duration;

use crate::common::schema::assert_documented;
use crate::common::{EDGE_SECRET, Node, now_ms};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracker_core::Config;
use tracker_protocol::intake::{CREDENTIAL_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_api};

const ADMIN: &str = "admin-token-0123456789abcdef0123456789";

struct Api {
    node: Node,
    doc: Value,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or_default()
    }
}

impl Api {
    async fn start(tune: impl FnOnce(&mut Config)) -> Api {
        let node = Node::start(|c| {
            c.node.admin_token_sha256 = Some(Sha256::digest(ADMIN.as_bytes()).into());
            tune(c);
        })
        .await;
        let doc: Value =
            node.http.get(format!("{}/api/openapi.json", node.base)).send().await.unwrap().json().await.unwrap();
        Api { node, doc }
    }

    async fn read(&self, method: &str, path: &str, res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        assert_documented(&self.doc, method, path, status, &body);
        Answer { status, body, headers }
    }

    /// A request with a bearer credential (none if empty) and an optional JSON body; the answer is checked
    /// against the OpenAPI document.
    async fn call(&self, method: &str, path: &str, credential: &str, body: Option<Value>) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.node.http.request(m, format!("{}{path}", self.node.base));
        if !credential.is_empty() {
            req = req.bearer_auth(credential);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.read(method, path, req.send().await.unwrap()).await
    }

    /// Creates a tenant on `plan`; returns its initial admin API key and the creation answer.
    async fn tenant(&self, prefix: &str, plan: &str) -> (String, Value) {
        let a = self
            .call("POST", "/api/tenants", ADMIN, Some(json!({ "name": prefix, "key_prefix": prefix, "plan": plan })))
            .await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        (a.body["api_key"]["secret"].as_str().unwrap().to_owned(), a.body)
    }

    async fn key(&self, owner: &str, scopes: &[&str]) -> String {
        let a = self.call("POST", "/api/keys", owner, Some(json!({ "name": "k", "scopes": scopes }))).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["secret"].as_str().unwrap().to_owned()
    }

    /// Follows a link on the node; `(status, location or error code)`.
    async fn click(&self, url: &str) -> (u16, String) {
        let path = url.get(url.find("/t").unwrap()..).unwrap();
        let res = self.node.http.get(format!("{}{path}", self.node.base)).send().await.unwrap();
        let status = res.status().as_u16();
        if let Some(l) = res.headers().get("location") {
            return (status, l.to_str().unwrap().to_owned());
        }
        let body: Value = res.json().await.unwrap_or_default();
        (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_keys_and_links_through_their_whole_life() {
    let api = Api::start(|_| {}).await;
    let (key, created) = api.tenant("acme", "pro").await;
    assert_eq!(created["tenant"]["plan"], "pro");
    assert_eq!(created["signing_key"]["kid"], "k1");
    assert!(key.starts_with("trk_key_"));

    let me = api.call("GET", "/api/me", &key, None).await;
    assert_eq!(me.body["key_prefix"], "acme");
    assert_eq!(me.body["api_requests_per_minute"], 600, "the pro plan's limit");

    // a tracking link: create, click, change the destination (the node follows at once), delete
    let link = api
        .call("POST", "/api/links", &key, Some(json!({ "destination": "https://shop.example/a", "name": "spring" })))
        .await;
    assert_eq!(link.status, 201);
    let tu = link.body["tu_id"].as_str().unwrap().to_owned();
    let url = link.body["url"].as_str().unwrap().to_owned();
    assert!(api.click(&url).await.1.starts_with("https://shop.example/a?ad_click_id="));
    let changed = api
        .call("PATCH", &format!("/api/links/{tu}"), &key, Some(json!({ "destination": "https://shop.example/b" })))
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body["name"], "spring", "fields not sent are kept");
    assert!(api.click(&url).await.1.starts_with("https://shop.example/b?"));
    // an expiry must be a time (one in the past means "expired now"), a fallback can be set, null clears a field
    let bad = api.call("PATCH", &format!("/api/links/{tu}"), &key, Some(json!({ "expires_at": -1 }))).await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_field"));
    let cleared = api
        .call(
            "PATCH",
            &format!("/api/links/{tu}"),
            &key,
            Some(json!({ "name": null, "fallback_url": "https://shop.example/over" })),
        )
        .await;
    assert_eq!(cleared.body["name"], Value::Null);
    let got = api.call("GET", &format!("/api/links/{tu}"), &key, None).await;
    assert_eq!(got.body["fallback_url"], "https://shop.example/over");
    // two clicks so far (before and after the destination change), counted from the log
    let counted = eventually(|| async {
        let c = api.call("GET", &format!("/api/links/{tu}"), &key, None).await.body["counts"].clone();
        (c["clicks"] == 2).then_some(c)
    })
    .await;
    assert!(counted["last_click_at"].as_i64().unwrap() > now_ms() - 60_000);

    // pages: three more links, two per page, every link exactly once
    for i in 0..3 {
        api.call("POST", "/api/links", &key, Some(json!({ "destination": format!("https://shop.example/{i}") }))).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page = api.call("GET", &format!("/api/links?limit=2{q}"), &key, None).await;
        seen.extend(page.body["data"].as_array().unwrap().iter().map(|l| l["tu_id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
    assert!(seen.contains(&tu));

    let gone = api.call("DELETE", &format!("/api/links/{tu}"), &key, None).await;
    assert_eq!(gone.status, 204);
    assert_eq!(api.click(&url).await, (404, "unknown_short_link".into()));
    assert_eq!(api.call("DELETE", &format!("/api/links/{tu}"), &key, None).await.status, 404);

    // signed links in every format click through
    // (`seed` is v1's earlier name here, still accepted)
    for format in ["v2", "v2_encrypted", "v1", "seed"] {
        let body = json!({ "destination": "https://shop.example/p", "params": { "campaign": "c1" }, "format": format });
        let signed = api.call("POST", "/api/links/sign", &key, Some(body)).await;
        assert_eq!(signed.status, 200, "{format}: {:?}", signed.body);
        assert_eq!(signed.body["format"], if format == "seed" { "v1" } else { format });
        let (status, location) = api.click(signed.body["url"].as_str().unwrap()).await;
        assert_eq!(status, 307, "{format}: {location}");
    }
    let bad = api.call("POST", "/api/links/sign", &key, Some(json!({ "destination": "javascript:alert(1)" }))).await;
    assert_eq!(bad.status, 400);
    let both = api
        .call("POST", "/api/links/sign", &key, Some(json!({ "destination": "https://a.example", "tu_id": "tu_x" })))
        .await;
    assert_eq!(both.status, 400);
    // a tracking host is a plain host name (or address) with an optional port and path
    for base_url in ["http://0*", "https://user@t.example", "ftp://t.example", "https://t.example/a b", "https://"] {
        let body = json!({ "destination": "https://a.example/", "base_url": base_url });
        let refused = api.call("POST", "/api/links/sign", &key, Some(body)).await;
        assert_eq!(
            (refused.status, refused.body["error"]["code"].as_str()),
            (400, Some("invalid_field")),
            "{base_url}"
        );
    }
    let body = json!({ "destination": "https://a.example/", "base_url": "https://go.shop.example:8443/r/" });
    let based = api.call("POST", "/api/links/sign", &key, Some(body)).await;
    assert!(
        based.body["url"].as_str().unwrap().starts_with("https://go.shop.example:8443/r/t?v=2&"),
        "{:?}",
        based.body
    );

    // tenants: list (admin), suspend (changes refused, reads allowed), reactivate
    let list = api.call("GET", "/api/tenants", ADMIN, None).await;
    assert_eq!(list.body["data"][0]["key_prefix"], "acme");
    let t = api.call("POST", "/api/tokens", &key, Some(json!({ "name": "server" }))).await;
    let (token, token_id) =
        (t.body["secret"].as_str().unwrap().to_owned(), t.body["token"]["token_id"].as_str().unwrap().to_owned());
    let ingest = || {
        let req = api.node.http.post(format!("{}/ingest", api.node.base)).bearer_auth(&token);
        async move { req.json(&json!({ "event_type": "signup" })).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ingest().await, 200);
    let s = api.call("PATCH", "/api/tenants/acme", ADMIN, Some(json!({ "status": "suspended" }))).await;
    assert_eq!(ingest().await, 403, "a suspended tenant's tokens stop with it");
    assert_eq!(s.body["status"], "suspended");
    let refused = api.call("POST", "/api/links", &key, Some(json!({ "destination": "https://a.example" }))).await;
    assert_eq!((refused.status, refused.code()), (403, "tenant_suspended"));
    assert_eq!(api.call("GET", "/api/links", &key, None).await.status, 200);
    // it can still see and revoke its credentials (a leak does not wait for reactivation)
    assert_eq!(api.call("GET", "/api/keys", &key, None).await.status, 200);
    assert_eq!(api.call("DELETE", &format!("/api/tokens/{token_id}"), &key, None).await.status, 200);
    api.call("PATCH", "/api/tenants/acme", ADMIN, Some(json!({ "status": "active" }))).await;
    api.node.stop().await;
}

/// Polls `check` for up to 5 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(mut check: impl FnMut() -> F) -> T {
    for _ in 0..100 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_counts_survive_restarts_without_double_counting() {
    let api = Api::start(|_| {}).await;
    let (key, _) = api.tenant("acme", "pro").await;
    let link = api.call("POST", "/api/links", &key, Some(json!({ "destination": "https://shop.example/" }))).await;
    let (tu, url) = (link.body["tu_id"].as_str().unwrap().to_owned(), link.body["url"].as_str().unwrap().to_owned());
    // events a tenant sends itself do not count as clicks on a link
    let token = api.call("POST", "/api/tokens", &key, None).await.body["secret"].as_str().unwrap().to_owned();
    let forged = json!({ "event_type": "click", "params": { "tu_id": tu } });
    let res = api.node.http.post(format!("{}/ingest", api.node.base)).bearer_auth(&token).json(&forged).send().await;
    assert_eq!(res.unwrap().status(), 200);
    // nor can a click link that names the link in a param (here one a visitor could append, through `ext`)
    let sign = json!({ "destination": "https://shop.example/", "ext": ["tu_id"] });
    let other = api.call("POST", "/api/links/sign", &key, Some(sign)).await.body["url"].as_str().unwrap().to_owned();
    assert_eq!(api.click(&format!("{other}&tu_id={tu}")).await.0, 307);
    for _ in 0..3 {
        assert_eq!(api.click(&url).await.0, 307);
    }
    let clicks = |api: &Api| {
        let (key, tu) = (key.clone(), tu.clone());
        let http = api.node.http.clone();
        let base = api.node.base.clone();
        async move {
            let res = http.get(format!("{base}/api/links/{tu}")).bearer_auth(key).send().await.unwrap();
            res.json::<Value>().await.unwrap()["counts"]["clicks"].as_i64().unwrap()
        }
    };
    eventually(|| async { (clicks(&api).await == 3).then_some(()) }).await;
    let Api { node, doc } = api;
    let api = Api { node: node.restart().await, doc };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(clicks(&api).await, 3, "a restart re-reads the log without counting again");
    assert_eq!(api.click(&url).await.0, 307);
    eventually(|| async { (clicks(&api).await == 4).then_some(()) }).await;
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_links_working_through_the_grace_period_only() {
    let api = Api::start(|_| {}).await;
    let (key, _) = api.tenant("acme", "free").await;
    let old = api.call("POST", "/api/links/sign", &key, Some(json!({ "destination": "https://shop.example/" }))).await;
    let old_url = old.body["url"].as_str().unwrap().to_owned();
    assert_eq!(old.body["kid"], "k1");

    let rotated = api.call("POST", "/api/tenants/acme/rotate-keys", ADMIN, Some(json!({ "grace_seconds": 2 }))).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.body);
    assert_eq!(rotated.body["kid"], "k2");
    let new = api.call("POST", "/api/links/sign", &key, Some(json!({ "destination": "https://shop.example/" }))).await;
    assert_eq!(new.body["kid"], "k2", "links are signed with the new key at once");
    let new_url = new.body["url"].as_str().unwrap().to_owned();

    assert_eq!(api.click(&old_url).await.0, 307, "old links work during the grace period");
    assert_eq!(api.click(&new_url).await.0, 307);
    let detail = api.call("GET", "/api/tenants/acme", ADMIN, None).await;
    assert_eq!(detail.body["keys"][0]["kid"], "k2");
    assert!(detail.body["keys"][1]["retires_at"].as_i64().unwrap() <= now_ms() + 2_000);
    api.node.state.clock.advance(Duration::from_millis(2_100));
    let (status, code) = api.click(&old_url).await;
    assert!((400..500).contains(&status) && !code.is_empty(), "old links fail after the grace period: {status} {code}");
    assert_eq!(api.click(&new_url).await.0, 307);
    let too_long =
        api.call("POST", "/api/tenants/acme/rotate-keys", ADMIN, Some(json!({ "grace_seconds": 99_999_999 }))).await;
    assert_eq!(too_long.status, 400);
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_can_never_reach_another_tenants_data() {
    let api = Api::start(|c| c.webhook_allow_private = true).await;
    let (a, _) = api.tenant("alpha", "pro").await;
    let (b, _) = api.tenant("bravo", "pro").await;
    // bravo's resources
    let link = api.call("POST", "/api/links", &b, Some(json!({ "destination": "https://b.example/" }))).await;
    let hook = api.call("POST", "/api/webhooks", &b, Some(json!({ "url": "https://hooks.b.example/in" }))).await;
    let rule = api
        .call(
            "POST",
            "/api/rules",
            &b,
            Some(json!({ "field": "user_agent", "operator": "contains", "value": "bot", "action": "drop" })),
        )
        .await;
    let token = api.call("POST", "/api/tokens", &b, Some(json!({ "name": "server" }))).await;
    let keys = api.call("GET", "/api/keys", &b, None).await;
    let ids = [
        ("links", link.body["tu_id"].as_str().unwrap().to_owned()),
        ("webhooks", hook.body["webhook"]["webhook_id"].as_str().unwrap().to_owned()),
        ("rules", rule.body["rule_id"].as_str().unwrap().to_owned()),
        ("tokens", token.body["token"]["token_id"].as_str().unwrap().to_owned()),
        ("keys", keys.body["data"][0]["key_id"].as_str().unwrap().to_owned()),
    ];
    for (kind, id) in &ids {
        let path = format!("/api/{kind}/{id}");
        assert_eq!(api.call("GET", &path, &a, None).await.status, 404, "GET {path} with alpha's key");
        assert_eq!(api.call("DELETE", &path, &a, None).await.status, 404, "DELETE {path} with alpha's key");
        if matches!(*kind, "links" | "webhooks" | "rules") {
            let patch = api.call("PATCH", &path, &a, Some(json!({ "description": "mine" }))).await;
            assert!(matches!(patch.status, 400 | 404), "PATCH {path}: {}", patch.status);
            let patch = api.call("PATCH", &path, &a, Some(json!({ "enabled": false }))).await;
            assert!(matches!(patch.status, 400 | 404), "PATCH {path}: {}", patch.status);
        }
        // and bravo still has it, unchanged
        assert_eq!(api.call("GET", &path, &b, None).await.status, 200, "{path} is still bravo's");
        // lists only ever show the caller's own
        let list = api.call("GET", &format!("/api/{kind}"), &a, None).await;
        assert!(!list.body.to_string().contains(id.as_str()), "alpha's list of {kind} shows bravo's {id}");
    }
    let test = api.call("POST", &format!("/api/webhooks/{}/test", ids[1].1), &a, None).await;
    assert_eq!(test.status, 404);
    let sign = api.call("POST", "/api/links/sign", &a, Some(json!({ "tu_id": ids[0].1 }))).await;
    assert_eq!(sign.status, 404, "alpha cannot sign a link to bravo's short link");
    let upd = api
        .call("PATCH", &format!("/api/links/{}", ids[0].1), &a, Some(json!({ "destination": "https://evil.example" })))
        .await;
    assert_eq!(upd.status, 404);
    let still = api.call("GET", &format!("/api/links/{}", ids[0].1), &b, None).await;
    assert_eq!(still.body["destination"], "https://b.example/");

    // tenant keys cannot use the admin routes, the admin credential cannot act inside a tenant
    for (method, path) in [("GET", "/api/tenants"), ("GET", "/api/tenants/bravo"), ("PATCH", "/api/tenants/bravo")] {
        let body = (method == "PATCH").then(|| json!({ "plan": "enterprise" }));
        let r = api.call(method, path, &a, body).await;
        assert_eq!((r.status, r.code()), (403, "admin_only"), "{method} {path}");
    }
    let r = api.call("POST", "/api/tenants/bravo/rotate-keys", &a, None).await;
    assert_eq!(r.status, 403);
    let r = api.call("GET", "/api/links", ADMIN, None).await;
    assert_eq!((r.status, r.code()), (403, "tenant_only"));

    // scopes: a read key reads, cannot write or manage keys; a write key cannot manage keys
    let read = api.key(&a, &["read"]).await;
    let write = api.key(&a, &["read", "write"]).await;
    assert_eq!(api.call("GET", "/api/links", &read, None).await.status, 200);
    let r = api.call("POST", "/api/links", &read, Some(json!({ "destination": "https://a.example" }))).await;
    assert_eq!((r.status, r.code()), (403, "missing_scope"));
    assert_eq!(
        api.call("POST", "/api/links", &write, Some(json!({ "destination": "https://a.example" }))).await.status,
        201
    );
    assert_eq!(api.call("GET", "/api/keys", &write, None).await.status, 403);
    assert_eq!(api.call("POST", "/api/tokens", &write, None).await.status, 403);
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_credentials_stop_working_at_once() {
    let api = Api::start(|c| c.links.cache_ttl = Duration::from_secs(60)).await;
    let (admin_key, _) = api.tenant("acme", "pro").await;
    let key = api.key(&admin_key, &["read"]).await;
    assert_eq!(api.call("GET", "/api/me", &key, None).await.status, 200);
    let id = api.call("GET", "/api/me", &key, None).await.body["key_id"].as_str().unwrap().to_owned();
    let revoked = api.call("DELETE", &format!("/api/keys/{id}"), &admin_key, None).await;
    assert!(revoked.body["revoked_at"].is_i64());
    let r = api.call("GET", "/api/me", &key, None).await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
    assert_eq!(r.header("www-authenticate"), "Bearer realm=\"tracker\"");

    let soon = now_ms() + 1_000;
    let a = api
        .call("POST", "/api/keys", &admin_key, Some(json!({ "name": "short", "scopes": ["read"], "expires_at": soon })))
        .await;
    let short = a.body["secret"].as_str().unwrap().to_owned();
    assert_eq!(api.call("GET", "/api/me", &short, None).await.status, 200);
    api.node.state.clock.advance(Duration::from_millis(1_100));
    assert_eq!(api.call("GET", "/api/me", &short, None).await.status, 401);

    // an ingest token works on /ingest until it is revoked through the API, even with a long cache TTL
    let t = api.call("POST", "/api/tokens", &admin_key, Some(json!({ "name": "server" }))).await;
    let (token, token_id) =
        (t.body["secret"].as_str().unwrap().to_owned(), t.body["token"]["token_id"].as_str().unwrap().to_owned());
    let ingest = |tok: String| {
        let http = api.node.http.clone();
        let url = format!("{}/ingest", api.node.base);
        async move {
            http.post(url)
                .bearer_auth(tok)
                .json(&json!({ "event_type": "signup" }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(ingest(token.clone()).await, 200);
    api.call("DELETE", &format!("/api/tokens/{token_id}"), &admin_key, None).await;
    assert_eq!(ingest(token.clone()).await, 401, "revocation through the API purges the node's token cache");
    assert_eq!(api.call("GET", "/api/me", "trk_key_guess", None).await.status, 401);
    assert_eq!(api.call("GET", "/api/me", "", None).await.code(), "missing_credentials");
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_follow_the_plan_and_say_so_in_headers() {
    let api = Api::start(|_| {}).await;
    let (key, _) = api.tenant("tiny", "free").await;
    let (other, _) = api.tenant("other", "free").await;
    let set = api
        .call("PATCH", "/api/tenants/tiny", ADMIN, Some(json!({ "limits": { "api_requests_per_minute": 3 } })))
        .await;
    assert_eq!(set.body["limits"]["api_requests_per_minute"], 3);
    for remaining in [2, 1, 0] {
        let a = api.call("GET", "/api/me", &key, None).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("ratelimit-policy"), "\"api\";q=3;w=60");
        assert!(a.header("ratelimit").starts_with(&format!("\"api\";r={remaining};t=")), "{}", a.header("ratelimit"));
    }
    let limited = api.call("GET", "/api/links", &key, None).await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    assert_eq!(limited.header("retry-after"), "20");
    assert!(limited.header("ratelimit").starts_with("\"api\";r=0;"));
    let fine = api.call("GET", "/api/me", &other, None).await;
    assert_eq!(fine.status, 200, "another tenant has its own budget");
    assert_eq!(fine.header("ratelimit-policy"), "\"api\";q=60;w=60", "the free plan's limit");
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_4xx_that_says_why() {
    let api = Api::start(|_| {}).await;
    let (key, _) = api.tenant("acme", "pro").await;
    type Case<'a> = (&'a str, &'a str, &'a str, Option<Value>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", "/api/tenants", ADMIN, Some(json!({ "name": "x", "key_prefix": "acme" })), 409, "conflict"),
        ("POST", "/api/tenants", ADMIN, Some(json!({ "name": "x", "key_prefix": "Bad!" })), 400, "invalid_key_prefix"),
        ("POST", "/api/tenants", ADMIN, Some(json!({ "name": "x", "plan": "gold" })), 400, "invalid_plan"),
        ("POST", "/api/tenants", ADMIN, Some(json!({ "name": "" })), 400, "invalid_field"),
        ("POST", "/api/tenants", ADMIN, Some(json!({ "nme": "typo" })), 400, "invalid_body"),
        ("PATCH", "/api/tenants/acme", ADMIN, Some(json!({ "status": "deleted" })), 400, "invalid_status"),
        ("PATCH", "/api/tenants/ghost", ADMIN, Some(json!({ "plan": "pro" })), 404, "not_found"),
        ("POST", "/api/keys", &key, Some(json!({ "name": "k", "scopes": ["root"] })), 400, "invalid_scopes"),
        (
            "POST",
            "/api/keys",
            &key,
            Some(json!({ "name": "k", "expires_at": 33_000_000_000_000_i64 })),
            400,
            "invalid_field",
        ),
        ("POST", "/api/tokens", &key, Some(json!([null, null])), 400, "invalid_body"),
        ("POST", "/api/links", &key, Some(json!({ "destination": "javascript:alert(1)" })), 400, "invalid_field"),
        ("POST", "/api/links", &key, Some(json!({ "destination": "https://u:p@a.example" })), 400, "invalid_field"),
        ("POST", "/api/links", &key, Some(json!({})), 400, "invalid_field"),
        ("POST", "/api/links", &key, Some(json!({ "destination": 5 })), 400, "invalid_body"),
        (
            "POST",
            "/api/links/sign",
            &key,
            Some(json!({ "destination": "https://a.example", "format": "v9" })),
            400,
            "invalid_format",
        ),
        (
            "POST",
            "/api/links/sign",
            &key,
            Some(json!({ "destination": "https://a.example", "params": { "sig": "x" } })),
            400,
            "invalid_param",
        ),
        ("POST", "/api/webhooks", &key, Some(json!({ "url": "http://169.254.169.254/latest" })), 400, "invalid_url"),
        ("POST", "/api/webhooks", &key, Some(json!({ "url": "http://localhost:8080/" })), 400, "invalid_url"),
        (
            "POST",
            "/api/webhooks",
            &key,
            Some(json!({ "url": "https://h.example", "event_types": ["bad type"] })),
            400,
            "invalid_field",
        ),
        (
            "POST",
            "/api/rules",
            &key,
            Some(json!({ "field": "ua", "operator": "equals", "value": "x", "action": "drop" })),
            400,
            "invalid_rule",
        ),
        (
            "POST",
            "/api/rules",
            &key,
            Some(json!({ "field": "user_agent", "operator": "regex", "value": "(", "action": "drop" })),
            400,
            "invalid_rule",
        ),
        (
            "POST",
            "/api/rules",
            &key,
            Some(json!({ "field": "ip", "operator": "cidr", "value": "10.0.0.0/99", "action": "flag" })),
            400,
            "invalid_rule",
        ),
        ("GET", "/api/links?limit=0", &key, None, 400, "invalid_limit"),
        ("GET", "/api/links?limit=abc", &key, None, 400, "invalid_query"),
        ("GET", "/api/links?cursor=", &key, None, 400, "invalid_cursor"),
        ("GET", "/api/links?cursor=tu_0", &key, None, 200, ""),
        ("GET", "/api/links/tu_nope", &key, None, 404, "not_found"),
        ("GET", "/api/events?hours=0", &key, None, 400, "invalid_range"),
        ("GET", "/api/events/stats?group_by=param:", &key, None, 400, "invalid_group_by"),
        ("GET", "/api/events/match?trigger=a&result=b", &key, None, 400, "invalid_query"),
        ("GET", "/api/drops/samples?limit=500", &key, None, 400, "invalid_limit"),
        ("GET", "/api/webhooks/wh_nope/deliveries?status=lost", &key, None, 400, "invalid_status"),
        ("POST", "/api/sse/tokens", &key, Some(json!({ "ttl_secs": 5 })), 400, "invalid_field"),
    ];
    for (method, path, cred, body, status, code) in cases {
        let a = api.call(method, path, cred, body.clone()).await;
        assert_eq!((a.status, a.code()), (status, code), "{method} {path} {body:?}: {:?}", a.body);
        if status >= 400 {
            assert!(!a.body["error"]["message"].as_str().unwrap().is_empty());
        }
    }
    // a change that would make a rule unrunnable is refused and leaves the rule as it was
    let rule = api
        .call(
            "POST",
            "/api/rules",
            &key,
            Some(json!({ "field": "user_agent", "operator": "contains", "value": "bot", "action": "drop" })),
        )
        .await;
    let path = format!("/api/rules/{}", rule.body["rule_id"].as_str().unwrap());
    let bad = api.call("PATCH", &path, &key, Some(json!({ "operator": "cidr", "value": "10.0.0.0/8" }))).await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_rule"));
    assert_eq!(api.call("GET", &path, &key, None).await.body["operator"], "contains");
    let ok = api.call("PATCH", &path, &key, Some(json!({ "enabled": false }))).await;
    assert_eq!((ok.status, ok.body["enabled"].clone(), ok.body["value"].clone()), (200, json!(false), json!("bot")));
    // not JSON, or not even declared as JSON
    let res = api
        .node
        .http
        .post(format!("{}/api/links", api.node.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    let a = api.read("POST", "/api/links", res).await;
    assert_eq!((a.status, a.code()), (400, "invalid_body"));
    let res = api
        .node
        .http
        .post(format!("{}/api/links", api.node.base))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(api.read("POST", "/api/links", res).await.status, 415);
    let res = api
        .node
        .http
        .post(format!("{}/api/links", api.node.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(api.read("POST", "/api/links", res).await.status, 413);
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_test_deliveries_are_signed_and_the_endpoint_answer_is_reported() {
    use axum::http::HeaderMap;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, Vec<u8>)>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let api = Api::start(|c| c.webhook_allow_private = true).await;
    let (key, _) = api.tenant("acme", "pro").await;
    let created = api
        .call(
            "POST",
            "/api/webhooks",
            &key,
            Some(json!({ "url": hook_url, "event_types": ["purchase"], "param_filters": { "plan": "pro" } })),
        )
        .await;
    assert_eq!(created.status, 201);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created.body["webhook"]["webhook_id"].as_str().unwrap().to_owned();
    assert!(
        !api.call("GET", &format!("/api/webhooks/{id}"), &key, None).await.body.to_string().contains(&secret),
        "shown once"
    );

    let test = api.call("POST", &format!("/api/webhooks/{id}/test"), &key, None).await;
    assert_eq!(test.body["delivered"], true, "{:?}", test.body);
    assert_eq!(test.body["status"], 200);
    let (headers, body) = rx.recv().await.unwrap();
    let sig = headers["tracker-signature"].to_str().unwrap();
    let now = now_ms() / 1000;
    tracker_protocol::webhook::verify(&secret, sig, &body, now, 300).unwrap();
    assert!(tracker_protocol::webhook::verify("whsec_other", sig, &body, now, 300).is_err());
    assert_eq!(headers["tracker-event"], "webhook.test");
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["id"], test.body["delivery_id"]);
    assert_eq!(headers["tracker-delivery-id"].to_str().unwrap(), payload["id"].as_str().unwrap());

    let off = api.call("PATCH", &format!("/api/webhooks/{id}"), &key, Some(json!({ "enabled": false }))).await;
    assert_eq!(off.body["enabled"], false);
    assert_eq!(off.body["event_types"], json!(["purchase"]), "other fields kept");
    // an endpoint that is down is reported, not an error of the API
    let dead = api
        .call("PATCH", &format!("/api/webhooks/{id}"), &key, Some(json!({ "url": "http://127.0.0.1:9/none" })))
        .await;
    assert_eq!(dead.status, 200);
    let failed = api.call("POST", &format!("/api/webhooks/{id}/test"), &key, None).await;
    assert_eq!(failed.body["delivered"], false);
    assert!(failed.body["error"].as_str().is_some());
    assert_eq!(api.call("DELETE", &format!("/api/webhooks/{id}"), &key, None).await.status, 204);
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_entrance_needs_a_valid_signature_and_gets_purges() {
    let api = Api::start(|_| {}).await;
    let (key, _) = api.tenant("acme", "pro").await;
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let link = api.call("POST", "/api/links", &key, Some(json!({ "destination": "https://a.example/" }))).await;
    let tu = link.body["tu_id"].as_str().unwrap().to_owned();
    let path = format!("/links/{tu}");
    let body = br#"{"destination":"https://b.example/"}"#;
    // a second node sharing the first one's metadata store (as a fleet shares Turso)
    let database = api.node.state.cfg.store.database.clone();
    let other = Node::start(|c| c.store.database = database).await;
    let send_to = |base: &str, ts: i64, sig: String, cred: String| {
        api.node
            .http
            .patch(format!("{base}/internal/v1/api{path}"))
            .header(SIGNATURE_HEADER, sig)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(CREDENTIAL_HEADER, cred)
            .header("x-tracker-public-url", "https://edge.example")
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
    };
    let send = |ts: i64, sig: String, cred: String| send_to(&api.node.base, ts, sig, cred);
    let ts = now_ms();
    let signed = |name: &str| match name {
        "content-type" => Some("application/json"),
        "x-tracker-public-url" => Some("https://edge.example"),
        _ => None,
    };
    let good = sign_api(EDGE_SECRET.as_bytes(), ts, "PATCH", &path, &hash, signed, body).unwrap();
    let res = send(ts, good.clone(), hash.clone()).await.unwrap();
    assert_eq!(res.status(), 200);
    // the same signed change again, within the window: a replay, refused
    let again = send(ts, good.clone(), hash.clone()).await.unwrap();
    assert_eq!(again.status(), 401);
    assert!(again.text().await.unwrap().contains("replay"));
    let elsewhere = send_to(&other.base, ts, good.clone(), hash.clone()).await.unwrap();
    assert_eq!(elsewhere.status(), 401, "a replay sent to another node of the fleet is refused too");
    assert!(elsewhere.text().await.unwrap().contains("replay"));
    other.stop().await;
    assert_eq!(res.headers()["x-tracker-edge-purge"], format!("short:{tu}").as_str());
    let v: Value = res.json().await.unwrap();
    assert!(v["url"].as_str().unwrap().starts_with("https://edge.example/t/"), "links point at the edge");
    // the signature covers the credential: another tenant's hash under the same signature is refused
    assert_eq!(send(ts, good, hex::encode(Sha256::digest(b"trk_key_other"))).await.unwrap().status(), 401);
    let wrong = sign_api(b"not-the-edge-secret-0123456789abcdef", ts, "PATCH", &path, &hash, signed, body).unwrap();
    assert_eq!(send(ts, wrong, hash.clone()).await.unwrap().status(), 401);
    let old = now_ms() - 10 * 60_000;
    let stale = sign_api(EDGE_SECRET.as_bytes(), old, "PATCH", &path, &hash, signed, body).unwrap();
    assert_eq!(send(old, stale, hash.clone()).await.unwrap().status(), 401, "outside the replay window");
    // direct callers never see the purge header
    let direct =
        api.call("PATCH", &format!("/api{path}"), &key, Some(json!({ "destination": "https://c.example/" }))).await;
    assert!(direct.headers.get("x-tracker-edge-purge").is_none());
    api.node.stop().await;
}

/// The coverage test of the MCP tools: every operation the API serves is a tool, or one of the few left out on
/// purpose (each with its reason in the document); and `docs/tools/` holds the function-calling definitions the
/// node serves (`TRACKER_UPDATE_TOOLS=1` rewrites them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_operation_is_an_mcp_tool_unless_left_out_for_a_stated_reason() {
    let api = Api::start(|_| {}).await;
    let catalog = tracker_mcp::Catalog::from_openapi(&api.doc.to_string()).unwrap();
    let tools: std::collections::BTreeSet<&str> = catalog.tools().iter().map(|t| t.operation_id.as_str()).collect();
    let left_out: Vec<&str> = catalog.excluded().iter().map(|e| e.operation_id.as_str()).collect();
    for (method, path) in tracker_core::http::api::ROUTES {
        let id = api.doc["paths"][format!("/api{path}")][method]["operationId"].as_str().unwrap();
        assert!(tools.contains(id) || left_out.contains(&id), "{method} {path} ({id}) has no tool");
    }
    assert_eq!(tools.len() + left_out.len(), tracker_core::http::api::ROUTES.len(), "an operation is two tools");
    // leaving an operation out is a decision, made here: browser sign-in, the live stream's browser token, and
    // the two documents the tools are made from and exported as
    let mut expected = [
        "getOpenApiDocument",
        "getToolDefinitions",
        "getSession",
        "createSession",
        "deleteSession",
        "createStreamToken",
    ];
    expected.sort_unstable();
    let mut left_out = left_out;
    left_out.sort_unstable();
    assert_eq!(left_out, expected);
    assert!(catalog.excluded().iter().all(|e| e.reason.len() > 20), "each left-out operation says why");
    for tool in catalog.tools() {
        assert!(tool.description.len() > 80, "{} needs a description a model can act on", tool.name);
        assert_eq!(tool.read_only, tool.method == "GET", "{}", tool.name);
        if tool.destructive {
            assert!(tool.input_schema["required"].as_array().unwrap().contains(&json!(tracker_mcp::CONFIRM)));
        }
    }
    let destructive: Vec<&str> = catalog.tools().iter().filter(|t| t.destructive).map(|t| t.name.as_str()).collect();
    for method_delete in catalog.tools().iter().filter(|t| t.method == "DELETE") {
        assert!(destructive.contains(&method_delete.name.as_str()), "{} deletes: it needs confirm", method_delete.name);
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tools");
    for format in tracker_mcp::export::Format::ALL {
        for (role, suffix) in [(tracker_mcp::Role::Tenant, ""), (tracker_mcp::Role::Admin, "-admin")] {
            let file = dir.join(format!("{}{suffix}.json", format.name()));
            let served = api
                .node
                .http
                .get(format!(
                    "{}/api/tools?format={}&audience={}",
                    api.node.base,
                    format.name(),
                    if suffix.is_empty() { "tenant" } else { "admin" }
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(served.status(), 200);
            let served: Value = served.json().await.unwrap();
            assert_eq!(served, tracker_mcp::export::tools(&catalog, &role, format));
            let text = serde_json::to_string_pretty(&served).unwrap() + "\n";
            if std::env::var_os("TRACKER_UPDATE_TOOLS").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&file, &text).unwrap();
            }
            let kept = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(
                kept == text,
                "{} is not what the node serves: TRACKER_UPDATE_TOOLS=1 cargo nextest run -p tracker-core \
                 every_api_operation_is_an_mcp_tool",
                file.display()
            );
        }
    }
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_served_operations() {
    let api = Api::start(|_| {}).await;
    assert_eq!(api.doc["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in api.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys().filter(|k| *k != "parameters") {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> =
        tracker_core::http::api::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), format!("/api{p}"))).collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    // and every documented operation is answered by its route, not by the fallback
    for (method, path) in &served {
        let concrete = path.replace("{key_prefix}", "acme").replace(['{', '}'], "");
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let res = api.node.http.request(m, format!("{}{concrete}", api.node.base)).send().await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or_default();
        assert!(
            !matches!(status, 404 | 405)
                || body["error"]["code"] == "not_found" && body["error"]["message"] != "no such endpoint",
            "{method} {path} is not routed: {status} {body}"
        );
    }
    api.node.stop().await;
}

impl Api {
    /// A request with a dashboard session's cookie and, if given, its CSRF token.
    async fn with_session(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.node.http.request(m, format!("{}{path}", self.node.base)).header("cookie", cookie);
        if let Some(token) = csrf {
            req = req.header("x-csrf-token", token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.read(method, path, req.send().await.unwrap()).await
    }

    /// Signs in with `credential`; the answer and the `Cookie` header the browser would send back.
    async fn sign_in(&self, credential: &str) -> (Answer, String) {
        let a = self.call("POST", "/api/session", "", Some(json!({ "credential": credential }))).await;
        let cookie = a.header("set-cookie").split(';').next().unwrap_or_default().to_owned();
        (a, cookie)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_acts_with_its_keys_scopes_and_needs_its_csrf_token_for_changes() {
    let api = Api::start(|_| {}).await;
    let (owner, _) = api.tenant("acme", "pro").await;
    let writer = api.key(&owner, &["read", "write"]).await;
    let (signed_in, cookie) = api.sign_in(&writer).await;
    assert_eq!(signed_in.status, 201, "{:?}", signed_in.body);
    let set_cookie = signed_in.header("set-cookie");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(set_cookie.split("; ").any(|a| a == attr), "{attr} in {set_cookie}");
    }
    assert!(set_cookie.starts_with("__Host-tracker_session=trk_ses_"), "{set_cookie}");
    assert!(!set_cookie.contains(&writer), "the key itself never reaches the browser");
    assert_eq!(signed_in.body["kind"], "tenant");
    assert_eq!(signed_in.body["key_prefix"], "acme");
    assert_eq!(signed_in.body["scopes"], json!(["read", "write"]));
    let csrf = signed_in.body["csrf_token"].as_str().unwrap().to_owned();

    // the cookie is the credential; a reload gets the same CSRF token back
    let me = api.with_session("GET", "/api/me", &cookie, None, None).await;
    assert_eq!((me.status, me.body["key_prefix"].as_str()), (200, Some("acme")));
    let again = api.with_session("GET", "/api/session", &cookie, None, None).await;
    assert_eq!(again.body["csrf_token"], csrf.as_str());

    // changes need the token, exactly
    let link = Some(json!({ "destination": "https://shop.example/" }));
    let none = api.with_session("POST", "/api/links", &cookie, None, link.clone()).await;
    assert_eq!((none.status, none.code()), (403, "csrf_token_mismatch"));
    let wrong = api.with_session("POST", "/api/links", &cookie, Some("x".repeat(43).as_str()), link.clone()).await;
    assert_eq!((wrong.status, wrong.code()), (403, "csrf_token_mismatch"));
    let made = api.with_session("POST", "/api/links", &cookie, Some(&csrf), link.clone()).await;
    assert_eq!(made.status, 201, "{:?}", made.body);

    // the key's scopes decide: a read-only key's session reads but does not change
    let reader = api.key(&owner, &["read"]).await;
    let (_, read_cookie) = api.sign_in(&reader).await;
    let read_csrf = api.with_session("GET", "/api/session", &read_cookie, None, None).await.body["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = api.with_session("POST", "/api/links", &read_cookie, Some(&read_csrf), link.clone()).await;
    assert_eq!((refused.status, refused.code()), (403, "missing_scope"));
    assert_eq!(api.with_session("GET", "/api/links", &read_cookie, None, None).await.status, 200);

    // revoking the key ends its sessions at once
    let key_id = api.call("GET", "/api/me", &reader, None).await.body["key_id"].as_str().unwrap().to_owned();
    assert_eq!(api.call("DELETE", &format!("/api/keys/{key_id}"), &owner, None).await.status, 200);
    let ended = api.with_session("GET", "/api/links", &read_cookie, None, None).await;
    assert_eq!((ended.status, ended.code()), (401, "invalid_session"));

    // signing out needs the token too, ends the session everywhere and clears the cookie
    let no_token = api.with_session("DELETE", "/api/session", &cookie, None, None).await;
    assert_eq!(no_token.status, 403);
    let out = api.with_session("DELETE", "/api/session", &cookie, Some(&csrf), None).await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let after = api.with_session("GET", "/api/me", &cookie, None, None).await;
    assert_eq!((after.status, after.code()), (401, "invalid_session"));
    // a bearer key has no session to show or end
    assert_eq!(api.call("GET", "/api/session", &owner, None).await.code(), "no_session");
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_refuses_bad_credentials_and_the_operator_gets_an_operator_session() {
    let api = Api::start(|_| {}).await;
    let (owner, _) = api.tenant("acme", "pro").await;
    let (bad, cookie) = api.sign_in("trk_key_not-a-key").await;
    assert_eq!((bad.status, bad.code(), cookie.as_str()), (401, "invalid_credentials", ""));
    assert_eq!(api.call("POST", "/api/session", "", Some(json!({ "credential": "" }))).await.code(), "invalid_body");
    // login CSRF: a body that is not declared JSON, or a browser's request from another site, signs nobody in
    let sign_in = |content_type: &'static str, site: Option<&'static str>| {
        let mut req = api
            .node
            .http
            .post(format!("{}/api/session", api.node.base))
            .header("content-type", content_type)
            .body(json!({ "credential": owner }).to_string());
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        req.send()
    };
    let form = api.read("POST", "/api/session", sign_in("text/plain", None).await.unwrap()).await;
    assert_eq!((form.status, form.code()), (415, "unsupported_media_type"));
    let other_site =
        api.read("POST", "/api/session", sign_in("application/json", Some("cross-site")).await.unwrap()).await;
    assert_eq!((other_site.status, other_site.code()), (403, "cross_site_sign_in"));
    let unknown = api.call("POST", "/api/session", "", Some(json!({ "key": owner }))).await;
    assert_eq!((unknown.status, unknown.code()), (400, "invalid_body"));
    // a live stream token (meant for EventSource URLs) cannot open a session
    let token =
        api.call("POST", "/api/sse/tokens", &owner, Some(json!({}))).await.body["token"].as_str().unwrap().to_owned();
    assert_eq!(api.sign_in(&token).await.0.code(), "stream_token");
    // a made-up cookie is no session, and neither is a second cookie beside a real one
    let forged = api.with_session("GET", "/api/me", "__Host-tracker_session=trk_ses_forged", None, None).await;
    assert_eq!((forged.status, forged.code()), (401, "invalid_session"));
    let (_, real) = api.sign_in(&owner).await;
    let two = format!("{real}; __Host-tracker_session=trk_ses_x");
    assert_eq!(api.with_session("GET", "/api/me", &two, None, None).await.code(), "invalid_session");

    let (admin, admin_cookie) = api.sign_in(ADMIN).await;
    assert_eq!((admin.status, admin.body["kind"].as_str()), (201, Some("admin")));
    assert_eq!(admin.body["key_prefix"], Value::Null);
    assert_eq!(api.with_session("GET", "/api/tenants", &admin_cookie, None, None).await.status, 200);
    let tenant_route = api.with_session("GET", "/api/links", &admin_cookie, None, None).await;
    assert_eq!(tenant_route.code(), "tenant_only");

    // one address gets 20 sign-ins a minute (8 so far)
    for _ in 0..12 {
        assert_eq!(api.sign_in("trk_key_guess").await.0.status, 401);
    }
    let limited = api.sign_in("trk_key_guess").await.0;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    assert!(limited.header("retry-after").parse::<u64>().unwrap() > 0);
    assert!(limited.header("ratelimit-policy").contains("q=20"), "{:?}", limited.headers);
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_signs_in_with_the_credentials_hash_and_forwards_sessions_as_their_hash() {
    let api = Api::start(|_| {}).await;
    let (owner, _) = api.tenant("acme", "pro").await;
    let edge = |method: &'static str, path: &'static str, credential: String, csrf: Option<String>, body: &[u8]| {
        let ts = now_ms();
        let csrf_value = csrf.as_deref();
        let signed = |name: &str| match name {
            "content-type" => Some("application/json"),
            "x-csrf-token" => csrf_value,
            _ => None,
        };
        let sig = sign_api(EDGE_SECRET.as_bytes(), ts, method, path, &credential, signed, body).unwrap();
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = api
            .node
            .http
            .request(m, format!("{}/internal/v1/api{path}", api.node.base))
            .header(SIGNATURE_HEADER, sig)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(CREDENTIAL_HEADER, credential)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(token) = csrf {
            req = req.header("x-csrf-token", token);
        }
        req.send()
    };
    // the raw key never crosses: the edge sends its hash, the body is empty
    let res = edge("POST", "/session", hex::encode(Sha256::digest(owner.as_bytes())), None, b"").await.unwrap();
    assert_eq!(res.status(), 201);
    let secret = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap().1;
    let session = format!("session:{}", hex::encode(Sha256::digest(secret.as_bytes())));
    let body: Value = res.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let me = edge("GET", "/me", session.clone(), None, b"").await.unwrap();
    assert_eq!(me.status(), 200);
    let link = br#"{"destination":"https://shop.example/"}"#;
    assert_eq!(edge("POST", "/links", session.clone(), None, link).await.unwrap().status(), 403);
    assert_eq!(edge("POST", "/links", session.clone(), Some(csrf), link).await.unwrap().status(), 201);
    // a session's hash cannot sign in again
    assert_eq!(edge("POST", "/session", session, None, b"").await.unwrap().status(), 401);
    api.node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_its_dashboard() {
    let node = Node::start(|_| {}).await;
    let get = |path: &str, encoding: &str| {
        node.http.get(format!("{}{path}", node.base)).header("accept-encoding", encoding).send()
    };
    let page = get("/dashboard/", "identity").await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    let script = html.split("src=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    assert!(script.starts_with("/dashboard/assets/"), "{script}");
    let js = get(&script, "gzip").await.unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-encoding"], "gzip");
    assert!(js.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    let etag = js.headers()["etag"].to_str().unwrap().to_owned();
    let cached = node.http.get(format!("{}{script}", node.base)).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(cached.status(), 304);
    let bare = node.http.get(format!("{}/dashboard", node.base)).send().await.unwrap();
    assert_eq!((bare.status().as_u16(), bare.headers()["location"].to_str().unwrap()), (308, "/dashboard/"));
    assert_eq!(get("/dashboard/assets/nope.js", "").await.unwrap().status(), 404);
    node.stop().await;
}
