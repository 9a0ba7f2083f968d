//! The core node over real HTTP on a real port: every endpoint, every rejection path, tenant isolation, and the
//! crash test (SIGKILL after acknowledged batches, restart, every acknowledged event exactly once).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tracker_protocol::links::{v1_encrypted_url, v1_short_url, v1_signed_url};
use tracker_protocol::{Event, LinkKind, V2Link, intake};
use tracker_store::{NewKey, Store};

use crate::common::{EDGE_SECRET, Node, now_ms};

impl Node {
    async fn tenant(&self, prefix: &str) -> NewKey {
        self.state.store.create_tenant(prefix, Some(prefix), now_ms()).await.unwrap()
    }

    async fn token(&self, prefix: &str) -> String {
        self.state.store.create_ingest_token(prefix, "test", None, now_ms()).await.unwrap().0
    }

    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.http.get(format!("{}{}", self.base, path_and_query)).send().await.unwrap()
    }

    async fn post(&self, path: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{}", self.base, path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// Durable events in the log, waiting up to 2 s for `at_least` of them.
    async fn events(&self, at_least: usize) -> Vec<Event> {
        let mut out = Vec::new();
        for _ in 0..200 {
            out.clear();
            for p in 0..self.state.log.partitions() {
                let polled = self.state.log.poll(p, 0, 100_000).await.unwrap();
                out.extend(polled.events.into_iter().map(|(_, e)| e));
            }
            if out.len() >= at_least {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out
    }
}

async fn error_code(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_owned())
}

fn path(url: &str) -> &str {
    url.strip_prefix("http://x").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_redirect_with_click_id_and_are_stored() {
    let node = Node::start(|_| {}).await;
    let k = node.tenant("acme").await;
    let link = V2Link {
        kind: LinkKind::Click,
        key_prefix: "acme",
        kid: &k.kid,
        target: "https://shop.example/p?a=1#buy",
        expires_at: None,
        ext: &["gclid"],
        params: &[("campaign", "spring")],
    };
    let url = link.signed_url("http://x", &k.signing_secret).unwrap();
    let res = node
        .http
        .get(format!("{}{}&gclid=G1", node.base, path(&url)))
        .header("user-agent", "UA/1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(res.headers()["cache-control"], "no-store, max-age=0");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let (before, frag) = location.split_once('#').unwrap();
    assert_eq!(frag, "buy");
    let click_id = before.strip_prefix("https://shop.example/p?a=1&ad_click_id=").unwrap();

    // the v1 format, signed with the tenant's secret
    let v1 =
        v1_signed_url("http://x", &k.signing_secret, Some("acme"), "https://shop.example/", &[("sub1", "s")]).unwrap();
    assert_eq!(node.get(path(&v1)).await.status(), StatusCode::TEMPORARY_REDIRECT);

    let events = node.events(2).await;
    assert_eq!(events.len(), 2);
    let click = events
        .iter()
        .find(|e| e.event_id.to_string() == click_id)
        .expect("the redirect's click id is the stored event id");
    assert_eq!(click.event_type, "click");
    assert_eq!(click.key_prefix, "acme");
    assert_eq!(click.params, BTreeMap::from([("campaign".into(), "spring".into()), ("gclid".into(), "G1".into())]));
    assert_eq!(click.user_agent.as_deref(), Some("UA/1"));
    assert_eq!(click.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(click.request_path.as_deref(), Some("/t"));
    assert_eq!(click.event_id.get_version_num(), 7);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_links_get_precise_4xx_and_never_a_redirect() {
    let node = Node::start(|c| c.links.hmac_secret = Some(String::from("global-secret").into())).await;
    let k = node.tenant("acme").await;
    let v2 = |target: &str, expires_at: Option<i64>, kid: &str, secret: &str| {
        V2Link { kind: LinkKind::Click, key_prefix: "acme", kid, target, expires_at, ext: &[], params: &[("c", "1")] }
            .signed_url("http://x", secret)
            .unwrap()
    };
    let good = v2("https://a.example/", None, &k.kid, &k.signing_secret);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("/t".into(), StatusCode::BAD_REQUEST, "missing_link_params"),
        ("/t?url=https://a.example/&sig=zz".into(), StatusCode::BAD_REQUEST, "malformed_signature"),
        (path(&good).replace("c=1", "c=2"), StatusCode::FORBIDDEN, "invalid_signature"),
        (path(&v2("https://a.example/", None, &k.kid, "wrong")).to_owned(), StatusCode::FORBIDDEN, "invalid_signature"),
        (
            path(&v2("https://a.example/", Some(1_000_000_000), &k.kid, &k.signing_secret)).to_owned(),
            StatusCode::GONE,
            "link_expired",
        ),
        (
            path(&v2("javascript:alert(1)", None, &k.kid, &k.signing_secret)).to_owned(),
            StatusCode::BAD_REQUEST,
            "destination_scheme_not_allowed",
        ),
        (
            path(&v2("https://a.example/", None, "k9", &k.signing_secret)).to_owned(),
            StatusCode::FORBIDDEN,
            "unknown_key_id",
        ),
        (path(&good).replace("k=acme.", "k=nobody."), StatusCode::NOT_FOUND, "unknown_tenant"),
        (format!("{}&c=3", path(&good)), StatusCode::BAD_REQUEST, "duplicate_param"),
        (
            path(&v1_signed_url("http://x", "not-the-secret", None, "https://a.example/", &[]).unwrap()).to_owned(),
            StatusCode::FORBIDDEN,
            "invalid_signature",
        ),
        (
            path(&v1_encrypted_url("http://x", &[7; 32], [1; 12], "https://a.example/", &[]).unwrap()).to_owned(),
            StatusCode::BAD_REQUEST,
            "link_format_disabled",
        ),
        ("/t/tu_nope?sig=00".into(), StatusCode::BAD_REQUEST, "malformed_signature"),
        ("/t/%FF%FE?sig=00".into(), StatusCode::BAD_REQUEST, "invalid_path"),
        ("/nowhere".into(), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (p, status, code) in cases {
        let res = node.get(&p).await;
        assert!(res.headers().get("location").is_none(), "{p} must not redirect");
        assert_eq!(error_code(res).await, (status, code.to_owned()), "{p}");
    }
    // a signed destination with credentials is followed as a browser would: to the host after the `@`, without them
    let res = node.get(path(&v2("https://u@evil.example/", None, &k.kid, &k.signing_secret))).await;
    assert!(res.headers()["location"].to_str().unwrap().starts_with("https://evil.example/?ad_click_id="));
    // the global secret still works for unprefixed v1 links
    let global = v1_signed_url("http://x", "global-secret", None, "https://a.example/", &[]).unwrap();
    assert_eq!(node.get(path(&global)).await.status(), StatusCode::TEMPORARY_REDIRECT);
    let owners: Vec<String> = node.events(2).await.into_iter().map(|e| e.key_prefix).collect();
    assert!(owners.contains(&"global".to_owned()) && owners.contains(&"acme".to_owned()), "{owners:?}");
    let res = node.http.post(format!("{}/t", node.base)).send().await.unwrap();
    assert_eq!(error_code(res).await, (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into()));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_links_and_key_rotation_grace() {
    let aes = [5u8; 32];
    let node = Node::start(|c| {
        c.links.encryption_key = Some(aes.into());
        c.links.url_mode = tracker_protocol::V1Mode::Any;
    })
    .await;
    let k1 = node.tenant("acme").await;
    let v1 = v1_encrypted_url("http://x", &aes, [3; 12], "https://hidden.example/", &[("s", "1")]);
    assert!(v1.is_err(), "s is reserved");
    let v1 = v1_encrypted_url("http://x", &aes, [3; 12], "https://hidden.example/", &[("sub", "1")]).unwrap();
    let res = node.get(path(&v1)).await;
    assert!(res.headers()["location"].to_str().unwrap().starts_with("https://hidden.example/?ad_click_id="));

    let enc_key = tracker_protocol::parse_encryption_key(&k1.encryption_key).unwrap();
    fn link(kid: &str) -> V2Link<'_> {
        V2Link {
            kind: LinkKind::Click,
            key_prefix: "acme",
            kid,
            target: "https://a.example/",
            expires_at: None,
            ext: &[],
            params: &[],
        }
    }
    let old_signed = link(&k1.kid).signed_url("http://x", &k1.signing_secret).unwrap();
    let old_encrypted = link(&k1.kid).encrypted_url("http://x", &enc_key, [4; 12]).unwrap();
    let old_v1 = v1_signed_url("http://x", &k1.signing_secret, Some("acme"), "https://a.example/", &[]).unwrap();

    // rotate with a grace period: old links keep working, new key works too
    let k2 = node.state.store.rotate_keys("acme", 60_000, now_ms()).await.unwrap();
    for url in [&old_signed, &old_encrypted, &old_v1] {
        assert_eq!(node.get(path(url)).await.status(), StatusCode::TEMPORARY_REDIRECT, "{url}");
    }
    let new_signed = link(&k2.kid).signed_url("http://x", &k2.signing_secret).unwrap();
    assert_eq!(node.get(path(&new_signed)).await.status(), StatusCode::TEMPORARY_REDIRECT);
    // once the grace period is over (rotate again with no grace) the first key is refused
    node.state.store.rotate_keys("acme", 0, now_ms()).await.unwrap();
    assert_eq!(error_code(node.get(path(&old_signed)).await).await, (StatusCode::FORBIDDEN, "unknown_key_id".into()));
    assert_eq!(error_code(node.get(path(&old_v1)).await).await, (StatusCode::FORBIDDEN, "invalid_signature".into()));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_links_resolve_only_for_their_tenant() {
    let node = Node::start(|_| {}).await;
    let acme = node.tenant("acme").await;
    let evil = node.tenant("evil").await;
    let link = node.state.store.create_short_link("acme", "https://acme.example/offer", None, now_ms()).await.unwrap();
    let url = v1_short_url("http://x", &acme.signing_secret, Some("acme"), &link.tu_id, &[("sub1", "x")]).unwrap();
    let res = node.get(path(&url)).await;
    assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
    assert!(res.headers()["location"].to_str().unwrap().starts_with("https://acme.example/offer?ad_click_id="));
    let v2 = V2Link {
        kind: LinkKind::Short,
        key_prefix: "acme",
        kid: &acme.kid,
        target: &link.tu_id,
        expires_at: None,
        ext: &[],
        params: &[],
    };
    assert_eq!(
        node.get(path(&v2.signed_url("http://x", &acme.signing_secret).unwrap())).await.status(),
        StatusCode::TEMPORARY_REDIRECT
    );
    let events = node.events(2).await;
    assert!(events.iter().all(|e| e.params.get("tu_id") == Some(&link.tu_id)));

    // another tenant signing acme's short link id with its own valid secret gets nothing
    let stolen = v1_short_url("http://x", &evil.signing_secret, Some("evil"), &link.tu_id, &[]).unwrap();
    assert_eq!(error_code(node.get(path(&stolen)).await).await, (StatusCode::NOT_FOUND, "unknown_short_link".into()));
    let expired = node
        .state
        .store
        .create_short_link("acme", "https://acme.example/", Some(now_ms() - 1), now_ms())
        .await
        .unwrap();
    let url = v1_short_url("http://x", &acme.signing_secret, Some("acme"), &expired.tu_id, &[]).unwrap();
    assert_eq!(error_code(node.get(path(&url)).await).await, (StatusCode::GONE, "link_expired".into()));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacon_postback_and_impression() {
    let node = Node::start(|_| {}).await;
    let acme = node.tenant("acme").await;
    node.tenant("other").await;
    let token = node.token("acme").await;
    let other_token = node.token("other").await;

    // navigator.sendBeacon sends text/plain
    let res = node
        .http
        .post(format!("{}/t/auto", node.base))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(concat!(
            r#"{"key":"acme","url":"https://site.example/a","referrer":"https://google.com/","#,
            r#""ad_click_id":"x1","params":{"lang":"en"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let pre = node.http.request(reqwest::Method::OPTIONS, format!("{}/t/auto", node.base)).send().await.unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert!(pre.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let res = node.post("/t/auto", None, r#"{"key":"ghost"}"#).await;
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert_eq!(error_code(res).await, (StatusCode::NOT_FOUND, "unknown_tenant".into()));
    assert_eq!(error_code(node.post("/t/auto", None, "not json").await).await.1, "invalid_beacon");
    assert_eq!(error_code(node.post("/t/auto", None, vec![b'x'; 70_000]).await).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    // postbacks: open (marked unauthenticated), by token, by v2 signature
    let res = node.get("/p?key_prefix=acme&event_type=purchase&click_id=c1&amount=10").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["authenticated"], false);
    let res = node.get(&format!("/p?token={token}&click_id=c2")).await;
    assert_eq!(res.json::<Value>().await.unwrap()["authenticated"], true);
    let signed = V2Link {
        kind: LinkKind::Postback,
        key_prefix: "acme",
        kid: &acme.kid,
        target: "",
        expires_at: None,
        ext: &[],
        params: &[("event_type", "sale"), ("click_id", "c3")],
    }
    .signed_url("http://x", &acme.signing_secret)
    .unwrap();
    assert_eq!(node.get(path(&signed)).await.status(), StatusCode::OK);
    assert_eq!(error_code(node.get(&path(&signed).replace("c3", "c4")).await).await.1, "invalid_signature");
    assert_eq!(
        error_code(node.get("/p?click_id=1").await).await,
        (StatusCode::BAD_REQUEST, "missing_key_prefix".into())
    );
    assert_eq!(error_code(node.get("/p?token=trk_ing_wrong").await).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_code(node.get(&format!("/p?token={other_token}&key_prefix=acme")).await).await,
        (StatusCode::FORBIDDEN, "tenant_mismatch".into())
    );

    let res = node.get("/i?key_prefix=acme&creative=7").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/gif");
    assert!(res.headers()["cache-control"].to_str().unwrap().contains("no-store"));
    assert_eq!(&res.bytes().await.unwrap()[..6], b"GIF89a");

    let events = node.events(5).await;
    let by_type: HashMap<&str, &Event> = events.iter().map(|e| (e.event_type.as_str(), e)).collect();
    let pv = by_type["pageview"];
    assert_eq!(pv.referer.as_deref(), Some("https://google.com/"));
    assert_eq!(pv.params["ad_click_id"], "x1");
    assert_eq!(by_type["purchase"].auth, tracker_protocol::Auth::None);
    assert_eq!(by_type["purchase"].params["amount"], "10");
    assert_eq!(by_type["postback"].auth, tracker_protocol::Auth::Token);
    assert!(!by_type["postback"].params.contains_key("token"), "credentials are never stored as params");
    assert_eq!(by_type["sale"].auth, tracker_protocol::Auth::Signature);
    assert_eq!(by_type["impression"].params["creative"], "7");
    assert!(events.iter().all(|e| e.key_prefix == "acme"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_ingest_take_the_tenant_from_the_token() {
    let node = Node::start(|c| c.links.max_batch_size = 3).await;
    node.tenant("acme").await;
    let token = node.token("acme").await;
    let id = "019c4633-5078-7411-8858-4aeafb6298bb";
    let body = json!([
        {"event_id": id, "event_type": "signup", "params": {"plan": "pro", "seats": 3}},
        {"event_type": "bad type"},
        {"event_type": "x", "key_prefix": "other"}
    ])
    .to_string();
    let res = node
        .http
        .post(format!("{}/batch", node.base))
        .bearer_auth(&token)
        .header("idempotency-key", "b-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert_eq!(v["rejected"][0]["code"], "invalid_event_type");
    assert_eq!(v["rejected"][1]["code"], "invalid_event_body");
    // a retry with the same key is answered without writing again
    let res = node
        .http
        .post(format!("{}/batch", node.base))
        .bearer_auth(&token)
        .header("idempotency-key", "b-1")
        .body(body)
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!((v["accepted"].as_u64(), v["duplicate"].as_bool()), (Some(1), Some(true)));

    assert_eq!(error_code(node.post("/batch", None, "[]").await).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(node.post("/batch", Some("trk_ing_forged"), "[]").await).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(node.post("/batch", Some(&token), "[]").await).await.1, "empty_batch");
    assert_eq!(error_code(node.post("/batch", Some(&token), "{oops").await).await.1, "invalid_batch");
    assert_eq!(
        error_code(node.post("/batch", Some(&token), "[1,2,3,4]").await).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large".into())
    );
    let res = node.post("/batch", Some(&token), r#"{"events":[{"event_type":"x","timestamp":99999999999999}]}"#).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.json::<Value>().await.unwrap()["rejected"][0]["code"], "timestamp_in_future");

    let res = node.post("/ingest", Some(&token), r#"{"event_type":"purchase","params":{"order":"o1"}}"#).await;
    assert_eq!(res.status(), StatusCode::OK);
    let ingested = res.json::<Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    assert_eq!(error_code(node.post("/ingest", Some(&token), r#"{"params":{}}"#).await).await.1, "invalid_event_body");

    // acknowledged means durable: the events are readable right away, with the token's tenant
    let events = node.events(2).await;
    assert_eq!(events.len(), 2);
    assert!(events.iter().any(|e| e.event_id.to_string() == id && e.params["seats"] == "3"));
    assert!(events.iter().any(|e| e.event_id.to_string() == ingested));
    assert!(events.iter().all(|e| e.key_prefix == "acme" && e.auth == tracker_protocol::Auth::Token));
    node.stop().await;
}

fn edge_event(key_prefix: &str, n: u32) -> Value {
    json!({
        "event_id": tracker_protocol::Uuid::now_v7(),
        "event_type": "click",
        "timestamp": now_ms(),
        "received_at": now_ms(),
        "key_prefix": key_prefix,
        "params": {"n": n.to_string()},
        "auth": "link"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_batches_are_signed_fresh_and_idempotent() {
    let node = Node::start(|_| {}).await;
    node.tenant("acme").await;
    node.tenant("beta").await;
    let body = json!({"events": [edge_event("acme", 1), edge_event("beta", 2), edge_event("ghost", 3)]}).to_string();
    let send = |ts: i64, batch: &str, secret: &str, body: String| {
        let sig = intake::sign_batch(secret.as_bytes(), ts, batch, body.as_bytes()).unwrap();
        node.http
            .post(format!("{}/internal/v1/edge/batches", node.base))
            .header(intake::SIGNATURE_HEADER, sig)
            .header(intake::TIMESTAMP_HEADER, ts.to_string())
            .header(intake::BATCH_ID_HEADER, batch)
            .body(body)
            .send()
    };
    let res = send(now_ms(), "b1", EDGE_SECRET, body.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"][0]["code"], "unknown_tenant");
    let v: Value = send(now_ms(), "b1", EDGE_SECRET, body.clone()).await.unwrap().json().await.unwrap();
    assert_eq!((v["accepted"].as_u64(), v["duplicate"].as_bool()), (Some(2), Some(true)));

    assert_eq!(
        send(now_ms(), "b2", "wrong-secret-wrong-secret-wrong-secret", body.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(now_ms() - 3_600_000, "b3", EDGE_SECRET, body.clone()).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let res = node.post("/internal/v1/edge/batches", None, body).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(node.events(2).await.len(), 2);
    node.stop().await;

    let closed = Node::start(|c| c.edge.secrets = Default::default()).await;
    let res = closed.post("/internal/v1/edge/batches", None, "{}").await;
    assert_eq!(error_code(res).await, (StatusCode::NOT_FOUND, "edge_intake_disabled".into()));
    closed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_lookups_are_signed_and_return_the_records_the_edge_caches() {
    let node = Node::start(|_| {}).await;
    let acme = node.tenant("acme").await;
    let token = node.token("acme").await;
    let link = node.state.store.create_short_link("acme", "https://acme.example/", None, now_ms()).await.unwrap();
    let lookup = |path: String, secret: &str, ts: i64| {
        let sig = intake::sign_lookup(secret.as_bytes(), ts, &path).unwrap();
        node.http
            .get(format!("{}{path}", node.base))
            .header(intake::SIGNATURE_HEADER, sig)
            .header(intake::TIMESTAMP_HEADER, ts.to_string())
            .send()
    };
    let tenant: tracker_protocol::service::TenantRecord =
        lookup("/internal/v1/tenants/acme".into(), EDGE_SECRET, now_ms()).await.unwrap().json().await.unwrap();
    assert!(tenant.active);
    assert_eq!(tenant.keys[0].signing_secret.as_deref(), Some(acme.signing_secret.as_str()));
    let short: Value = lookup(format!("/internal/v1/short-links/{}", link.tu_id), EDGE_SECRET, now_ms())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(short["destination"], "https://acme.example/");
    let hash = tracker_store::hash_token(&token);
    let tok: Value =
        lookup(format!("/internal/v1/tokens/{hash}"), EDGE_SECRET, now_ms()).await.unwrap().json().await.unwrap();
    assert_eq!(tok["key_prefix"], "acme");

    assert_eq!(
        lookup("/internal/v1/tenants/nobody".into(), EDGE_SECRET, now_ms()).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // a signature for one path does not open another, nor does a stale or forged one
    let sig = intake::sign_lookup(EDGE_SECRET.as_bytes(), now_ms(), "/internal/v1/tenants/other").unwrap();
    let res = node
        .http
        .get(format!("{}/internal/v1/tenants/acme", node.base))
        .header(intake::SIGNATURE_HEADER, sig)
        .header(intake::TIMESTAMP_HEADER, now_ms().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        lookup("/internal/v1/tenants/acme".into(), "forged-secret-forged-secret-forged", now_ms())
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        lookup("/internal/v1/tenants/acme".into(), EDGE_SECRET, now_ms() - 3_600_000).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(node.get("/internal/v1/tenants/acme").await.status(), StatusCode::UNAUTHORIZED);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_broker_and_metrics() {
    let node = Node::start(|_| {}).await;
    assert_eq!(node.get("/health").await.json::<Value>().await.unwrap()["status"], "ok");
    let broker: Value = node.get("/health/broker").await.json().await.unwrap();
    assert_eq!(broker["backend"], "embedded");
    assert_eq!(broker["partitions"], 4);
    let text = node.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("tracker_log_healthy 1"), "{text}");
    // a consumer of the node that died (consumers' own tests show how one is found dead) makes the node unhealthy
    node.state.consumers.died("stats");
    let res = node.get("/health").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.json::<Value>().await.unwrap()["dead_consumers"], json!(["stats"]));
    node.stop().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Crash safety: the real binary, SIGKILL, restart.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Proc {
    child: std::process::Child,
    base: String,
}

impl Drop for Proc {
    /// A test that fails halfway must not leave its node running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(dir: &std::path::Path, port: u16) -> Proc {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tracker-core"))
        .arg("serve")
        .env("DATA_DIR", dir)
        .env("PORT", port.to_string())
        .env("LOG_PARTITIONS", "4")
        .env("RUST_LOG", "warn")
        .env("WEBHOOK_ALLOW_PRIVATE", "true")
        .env("ARCHIVE_FLUSH_SECS", "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Proc { child, base: format!("http://127.0.0.1:{port}") }
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node at {base} did not become healthy");
}

/// Rows, distinct event ids and the rollups' total for acme in the archive.
async fn archive_counts(settings: &tracker_archive::ArchiveSettings) -> (i64, i64, i64) {
    use deltalake::arrow::array::Int64Array;
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    for t in tracker_archive::Table::ALL {
        let Some(table) = tracker_archive::read_table(settings, t).await.unwrap() else {
            return (0, 0, 0); // not created yet
        };
        ctx.register_table(t.name(), table.table_provider().await.unwrap()).unwrap();
    }
    let sql = "SELECT (SELECT COUNT(*) FROM events WHERE tenant = 'acme'),
                      (SELECT COUNT(DISTINCT event_id) FROM events WHERE tenant = 'acme'),
                      (SELECT COALESCE(SUM(events), 0) FROM rollups WHERE tenant = 'acme')";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let v = |i: usize| batches[0].column(i).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
    (v(0), v(1), v(2))
}

/// `/metrics` of a process running one node (the real binary: a process's metrics are its node's): refusals by
/// endpoint and code, cache lookups, each consumer group's lag per partition; and request ids on every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_node_did_and_every_answer_carries_a_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tracker-core"))
            .args(args)
            .env("DATA_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&["tenant", "create", "--name", "Acme", "--prefix", "acme"]);
    let link = cli(&["link", "sign", "acme", "https://shop.example/p"]);
    let node = spawn_node(dir.path(), free_port());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    wait_healthy(&http, &node.base).await;
    let refused = http.get(format!("{}/t?url=x", node.base)).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let made = refused.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()), "a new id: {made}");
    let given = http.get(format!("{}/health", node.base)).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42", "the caller's id is kept");
    // a tracking redirect, which browsers follow, carries an id only when the caller gave one (nothing records
    // request spans under RUST_LOG=warn)
    let click = format!("{}/t?{}", node.base, link.trim().split_once("/t?").unwrap().1);
    let redirect = http.get(&click).send().await.unwrap();
    assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
    assert!(redirect.headers().get("x-request-id").is_none());
    let redirect = http.get(&click).header("x-request-id", "ad-42").send().await.unwrap();
    assert_eq!(
        (redirect.status(), &redirect.headers()["x-request-id"]),
        (StatusCode::TEMPORARY_REDIRECT, &"ad-42".parse().unwrap())
    );
    // a short link that does not exist: the tenant cache misses once
    http.get(format!("{}/t/tu_01890a5d-ac96-774b-bcce-b302099a8057", node.base)).send().await.unwrap();
    let text = http.get(format!("{}/metrics", node.base)).send().await.unwrap().text().await.unwrap();
    for line in [
        "tracker_requests_rejected_total{endpoint=\"click\",code=\"missing_link_params\"} 1",
        "tracker_log_healthy 1",
        "tracker_cache_lookups_total{cache=\"short_links\",result=\"miss\"} 1",
        "tracker_consumer_lag_events{group=\"filter\",partition=\"0\"} 0",
        "tracker_consumer_lag_events{group=\"archiver\",partition=\"3\"} 0",
        "tracker_live_streams 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }
    assert!(text.contains("tracker_redirect_duration_seconds_bucket{le=\"0.00005\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_event_retries_do_not_duplicate_and_sigterm_flushes() {
    // also the consumers': killed with the node mid-batch, they lose and double-count nothing
    let dir = tempfile::tempdir().unwrap();
    // a webhook receiver for the events of every writer's batch 3: (delivery id, event id) of each delivery
    let received: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let hook_url = {
        let received = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let id = headers["tracker-delivery-id"].to_str().unwrap().to_owned();
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    received.lock().unwrap().push((id, body["data"]["event_id"].as_str().unwrap().to_owned()));
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    };
    let (token, hook_id) = {
        let store = Store::open(&dir.path().join("tracker.db")).await.unwrap();
        store.create_tenant("acme", Some("acme"), now_ms()).await.unwrap();
        let spec = tracker_store::WebhookSpec {
            url: Some(hook_url),
            param_filters: Some([("b".to_string(), "3".to_string())].into()),
            ..Default::default()
        };
        let hook = store.create_webhook("acme", spec, now_ms()).await.unwrap().0;
        (store.create_ingest_token("acme", "crash", None, now_ms()).await.unwrap().0, hook.webhook_id)
    };
    let http = reqwest::Client::new();
    let port = free_port();
    let mut proc = spawn_node(dir.path(), port);
    wait_healthy(&http, &proc.base).await;

    // 4 concurrent writers send 200-event batches with their own ids until the node dies under them
    let batch = |w: usize, b: usize| -> (String, Vec<String>) {
        let ids: Vec<String> = (0..200).map(|_| tracker_protocol::Uuid::now_v7().to_string()).collect();
        let events: Vec<Value> = ids
            .iter()
            .map(|id| json!({"event_id": id, "event_type": "load", "params": {"w": w.to_string(), "b": b.to_string()}}))
            .collect();
        (serde_json::to_string(&events).unwrap(), ids)
    };
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let (pending_tx, mut pending_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Vec<String>)>();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, token, acked_tx, pending_tx) =
            (http.clone(), proc.base.clone(), token.clone(), acked_tx.clone(), pending_tx.clone());
        writers.push(tokio::spawn(async move {
            for b in 0.. {
                let (body, ids) = batch(w, b);
                let key = format!("w{w}-b{b}");
                let res = http
                    .post(format!("{base}/batch"))
                    .bearer_auth(&token)
                    .header("idempotency-key", &key)
                    .body(body.clone())
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_success() => acked_tx.send(ids).unwrap(),
                    // no answer: the client does not know; it will retry after the restart
                    _ => {
                        pending_tx.send((key, body, ids)).unwrap();
                        return;
                    }
                }
            }
        }));
    }
    drop((acked_tx, pending_tx));
    // let some batches be acknowledged, then kill without any chance to flush
    let mut acked: Vec<String> = Vec::new();
    while acked.len() < 4_000 {
        acked.extend(acked_rx.recv().await.unwrap());
    }
    // and the consumers are at work (the hot tier has some of them), so the kill lands in their batches too
    let hot_db = tracker_store::Location::File(dir.path().join("hot.db"));
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let hot = tracker_store::hot::HotStore::connect(&hot_db).await.unwrap();
        let page = hot.events("acme", &tracker_store::hot::EventQuery { limit: 1, ..Default::default() }).await;
        if page.is_ok_and(|p| !p.events.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    while let Ok(ids) = acked_rx.try_recv() {
        acked.extend(ids);
    }
    let mut pending = Vec::new();
    while let Ok(p) = pending_rx.try_recv() {
        pending.push(p);
    }
    assert!(!pending.is_empty(), "writers stop only when the node dies");

    // restart; the clients retry what they never got an answer for, with the same idempotency keys
    let mut proc = spawn_node(dir.path(), port);
    wait_healthy(&http, &proc.base).await;
    let mut retried = Vec::new();
    for (key, body, ids) in pending {
        let res = http
            .post(format!("{}/batch", proc.base))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        retried.extend(ids);
    }
    // clicks do not wait for the disk; a graceful stop (SIGTERM) right after them must still flush them
    let link = {
        let store = Store::open(&dir.path().join("tracker.db")).await.unwrap();
        let k = store.tenant_keys("acme").await.unwrap().unwrap().keys.remove(0);
        let v2 = V2Link {
            kind: LinkKind::Click,
            key_prefix: "acme",
            kid: &k.kid,
            target: "https://a.example/",
            expires_at: None,
            ext: &[],
            params: &[],
        };
        v2.signed_url(&proc.base, k.signing_secret.as_deref().unwrap()).unwrap()
    };
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut clicks = Vec::new();
    for _ in 0..200 {
        let res = no_redirect.get(&link).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TEMPORARY_REDIRECT);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        clicks.push(location.rsplit_once("ad_click_id=").unwrap().1.to_owned());
    }
    // the consumers, killed mid-batch with the node, catch up without loss or double count: every batch event
    // (token-authenticated, so never judged a bot) once in the hot tier, every click (no user agent: a bot)
    // once in the drop ledger
    let hot =
        tracker_store::hot::HotStore::connect(&tracker_store::Location::File(dir.path().join("hot.db"))).await.unwrap();
    let everything = tracker_store::hot::StatsQuery {
        from: 0,
        to: i64::MAX / 2,
        bucket_ms: 3_600_000,
        group_by: tracker_store::hot::GroupBy::None,
        event_type: None,
        tu_id: None,
        param: None,
    };
    let want = i64::try_from(acked.len() + retried.len()).unwrap();
    let started = std::time::Instant::now();
    let (mut counted, mut bots) = (0, 0);
    while (counted, bots) != (want, 200) && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        counted = hot.stats("acme", &everything).await.unwrap().iter().map(|p| p.count).sum::<i64>();
        bots = hot.drops("acme", 0, i64::MAX / 2, Some("bot")).await.unwrap().iter().map(|r| r.count).sum::<i64>();
    }
    assert_eq!((counted, bots), (want, 200), "the hot tier counts each event once; the ledger each bot click once");
    // and so does the tenant's usage, written in the same transactions: each event accepted once, each bot click
    // dropped once, each redirect counted once, and the month's billable count the same
    let usage = hot.usage(Some("acme"), 0, i64::MAX / 2).await.unwrap();
    let metered = |m: &str| usage.iter().filter(|r| r.metric == m).map(|r| r.n).sum::<i64>();
    assert_eq!(
        (metered("accepted"), metered("dropped_bot"), metered("redirects")),
        (want, 200, 200),
        "usage counts each event once across the kill"
    );
    let month = tracker_protocol::quota::month_start(now_ms());
    assert_eq!(hot.quota_kept("acme", month).await.unwrap(), want, "the allowance counts each kept event once");

    // the webhook consumer queued each batch-3 event once, and each was delivered (at least once, by one id)
    let batch3 = tracker_store::hot::StatsQuery { param: Some(("b".into(), "3".into())), ..everything.clone() };
    let want = usize::try_from(hot.stats("acme", &batch3).await.unwrap().iter().map(|p| p.count).sum::<i64>()).unwrap();
    assert!(want >= 200, "writers got past batch 3 before the kill");
    let started = std::time::Instant::now();
    let distinct = |r: &[(String, String)]| r.iter().map(|(_, e)| e.clone()).collect::<std::collections::HashSet<_>>();
    // deliveries in flight at the kill stay leased for the dispatcher's 60 s lease, and count against the
    // endpoint's concurrency until then: allow for the lease on top of the delivery time
    while distinct(&received.lock().unwrap()).len() < want && started.elapsed() < Duration::from_secs(150) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(distinct(&got).len(), want, "every matching event was delivered");
    let mut delivery_of: HashMap<String, String> = HashMap::new();
    for (delivery, event) in &got {
        let first = delivery_of.entry(event.clone()).or_insert_with(|| delivery.clone());
        assert_eq!(first, delivery, "an event redelivered under another delivery id was queued twice");
    }
    let store = Store::open(&dir.path().join("tracker.db")).await.unwrap();
    let (mut queued, mut cursor) = (0, None::<String>);
    loop {
        let page = store.deliveries_page("acme", &hook_id, None, cursor.as_deref(), 200).await.unwrap();
        queued += page.items.len();
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(queued, want, "one delivery per event in the delivery log");
    // each delivery is metered once, when it is recorded as delivered: one the receiver had taken when the node was
    // killed, before it was recorded, is sent again once its 60 s lease is over, and metered then
    let started = std::time::Instant::now();
    let delivered =
        || async { store.usage(Some("acme"), 0, i64::MAX / 2).await.unwrap().iter().map(|r| r.n).sum::<i64>() };
    while delivered().await < i64::try_from(want).unwrap() && started.elapsed() < Duration::from_secs(150) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered().await, i64::try_from(want).unwrap(), "webhook deliveries metered once each");
    drop((hot, store));

    // the archiver, killed mid-commit with the node, has every kept event once in `events` and once in `rollups`
    let want = i64::try_from(acked.len() + retried.len()).unwrap();
    let archive = tracker_archive::ArchiveSettings::new(
        tracker_archive::parse_base(dir.path().join("archive").to_str().unwrap()).unwrap(),
    );
    let started = std::time::Instant::now();
    let mut archived = (0, 0, 0);
    // the rollups commit follows the events commit: wait for both
    while archived != (want, want, want) && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        archived = archive_counts(&archive).await;
    }
    assert_eq!(archived, (want, want, want), "rows, distinct event ids, rollup total");

    let pid = proc.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(proc.child.wait().unwrap().success());

    let filtered = tracker_log::EmbeddedLog::open(tracker_log::EmbeddedLogConfig {
        partitions: 4,
        ..tracker_log::EmbeddedLogConfig::new(dir.path().join("filtered"))
    })
    .unwrap();
    let mut kept: HashMap<String, u32> = HashMap::new();
    for p in 0..4 {
        let mut from = 0;
        loop {
            let polled = tracker_log::EventLog::poll(&filtered, p, from, 50_000).await.unwrap();
            if polled.events.is_empty() {
                break;
            }
            for (_, e) in &polled.events {
                *kept.entry(e.event_id.to_string()).or_default() += 1;
            }
            from = polled.next_offset;
        }
    }
    tracker_log::EventLog::shutdown(&filtered).await.unwrap();
    assert_eq!(kept.len(), acked.len() + retried.len(), "every kept event is in the filtered log");
    assert!(kept.values().all(|n| *n == 1), "and only once");

    let log = tracker_log::EmbeddedLog::open(tracker_log::EmbeddedLogConfig {
        partitions: 4,
        ..tracker_log::EmbeddedLogConfig::new(dir.path().join("log"))
    })
    .unwrap();
    use tracker_log::EventLog as _;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for p in 0..4 {
        let mut from = 0;
        loop {
            let polled = log.poll(p, from, 50_000).await.unwrap();
            if polled.events.is_empty() {
                break;
            }
            for (_, e) in &polled.events {
                *seen.entry(e.event_id.to_string()).or_default() += 1;
            }
            from = polled.next_offset;
        }
    }
    log.shutdown().await.unwrap();
    let missing_clicks = clicks.iter().filter(|id| !seen.contains_key(*id)).count();
    assert_eq!(missing_clicks, 0, "clicks answered before SIGTERM are flushed by the graceful shutdown");
    let missing = acked.iter().chain(&retried).filter(|id| !seen.contains_key(*id)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    println!(
        "acknowledged {} before SIGKILL, retried {} after restart, stored {}",
        acked.len(),
        retried.len(),
        seen.len()
    );
    assert_eq!(missing, 0, "every acknowledged or retried event is stored");
    assert_eq!(duplicated, 0, "no event is stored twice");
    assert_eq!(seen.len(), acked.len() + retried.len() + clicks.len(), "nothing else is stored");
}

/// Sends a request head and the start of a chunked body that never ends; returns the status line the node answers
/// with while the body is still open (or panics after 5 s: the node waited for a body it should not have read).
async fn answer_before_the_body_ends(base: &str, path: &str, token: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let chunked = "content-type: application/json\r\ntransfer-encoding: chunked\r\n";
    let head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}{chunked}\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // 256 KiB of `[0,0,0,...` in chunks, never closed
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "0,".repeat(32 * 1024));
    stream.write_all(b"2\r\n[0\r\n").await.unwrap();
    // a node that stopped reading may leave these writes waiting: they get 2 s, the answer is what counts
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        for _ in 0..4 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break; // the node closed the connection after answering
            }
        }
    })
    .await;
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer while the body is still open")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_refuses_before_reading_bodies_it_cannot_take() {
    let node = Node::start(|c| c.links.max_batch_size = 3).await;
    node.tenant("acme").await;
    let token = node.token("acme").await;
    // no credential, or a forged one: refused from the headers, the endless body never read
    assert_eq!(answer_before_the_body_ends(&node.base, "/batch", None).await, "HTTP/1.1 401 Unauthorized");
    let forged = answer_before_the_body_ends(&node.base, "/ingest", Some("trk_ing_forged")).await;
    assert_eq!(forged, "HTTP/1.1 401 Unauthorized");
    // a real token: read only up to what 3 events can fill, then refused
    let long = answer_before_the_body_ends(&node.base, "/batch", Some(&token)).await;
    assert_eq!(long, "HTTP/1.1 413 Payload Too Large");
    let (status, code) = error_code(node.post("/ingest", Some(&token), "x".repeat(64 * 1024)).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    // within the byte limit, a long array stops being read at its fourth element
    let many = format!("[{}{{}}]", "{},".repeat(20_000));
    let (status, code) = error_code(node.post("/batch", Some(&token), many).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_in_flight_requests_are_shed_at_once() {
    use tokio::io::AsyncWriteExt as _;
    let node = Node::start(|c| c.node.max_in_flight = 1).await;
    node.tenant("acme").await;
    let token = node.token("acme").await;
    // one request in the works: a batch whose body is still on its way
    let addr = node.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /batch HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-length: 100\r\n\r\n[{{}}"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = node.http.get(format!("{}/health", node.base)).send().await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.json::<Value>().await.unwrap()["error"]["code"], "overloaded");
    // the slow client goes: the node takes requests again
    drop(slow);
    let mut healthy = false;
    for _ in 0..50 {
        if node.http.get(format!("{}/health", node.base)).send().await.unwrap().status() == StatusCode::OK {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "the node never took requests again");
    node.stop().await;
}

/// The CLI prints no link a click would refuse: a destination the platform would not take is an error, naming why.
#[test]
fn the_cli_refuses_to_sign_links_to_destinations_a_click_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tracker-core"))
            .args(args)
            .env("DATA_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    assert!(cli(&["tenant", "create", "--name", "Acme", "--prefix", "acme"]).status.success());
    let good = cli(&["link", "sign", "acme", "https://shop.example/p?x=1"]);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(String::from_utf8_lossy(&good.stdout).contains("url=https%3A%2F%2Fshop.example"));
    for (dest, why) in [
        ("javascript:alert(1)", "http or https"),
        ("/relative", "http or https"),
        ("https://user@shop.example/", "credentials"),
        ("https://shop.example:99999/", "port"),
    ] {
        for format in ["v2", "v1"] {
            let out = cli(&["link", "sign", "acme", dest, "--format", format]);
            assert!(!out.status.success(), "{dest} ({format}) was signed: {}", String::from_utf8_lossy(&out.stdout));
            assert!(out.stdout.is_empty(), "no link printed for {dest}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(why), "{dest}: {err}");
        }
    }
}

/// `tracker-core health` (the image's health check and the exec probes): 0 only when the node on this machine says
/// it is healthy; the event log's health with `--broker`, over loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_exits_zero_only_for_a_healthy_node() {
    let node = Node::start(|_| {}).await;
    let port = node.base.rsplit(':').next().unwrap().to_owned();
    let health = |port: String, args: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tracker-core"))
                .arg("health")
                .args(args)
                .env("PORT", port)
                // as in a container: every address (so the command asks over loopback), with the key that needs
                .env("HOST", "0.0.0.0")
                .env("SECRETS_KEY", "11".repeat(32))
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    for args in [&[][..], &["--broker"][..]] {
        let out = health(port.clone(), args).await.unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("200 OK ok"), "{args:?}");
    }
    node.stop().await;
    // nothing listens there any more
    let out = health(port, &[]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/health"));
}
