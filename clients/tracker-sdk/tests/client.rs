//! The batch client against a scripted HTTP server: what it sends, how it retries, what it gives up on.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use tracker_sdk::{Client, ClientOptions, Error, TrackEvent};

#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: String,
    at: Instant,
}

type Script = Arc<Mutex<Vec<(u16, Option<&'static str>, &'static str)>>>;

/// A server answering each request with the next scripted (status, Retry-After, body); then 200 with everything
/// accepted. Returns its URL and what it saw.
async fn server(script: Vec<(u16, Option<&'static str>, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(Mutex::new(script.into_iter().rev().collect()));
    let app = axum::Router::new().route(
        "/batch",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: HeaderMap, body: String| async move {
                let n = serde_json::from_str::<Vec<serde_json::Value>>(&body).map_or(0, |v| v.len());
                seen.lock().unwrap().push(Seen { headers, body, at: Instant::now() });
                let next = script.lock().unwrap().pop();
                match next {
                    Some((status, after, answer)) => {
                        let mut h = HeaderMap::new();
                        if let Some(a) = after {
                            h.insert("retry-after", a.parse().unwrap());
                        }
                        (StatusCode::from_u16(status).unwrap(), h, answer.to_owned()).into_response()
                    }
                    None => format!(r#"{{"accepted":{n},"rejected":[]}}"#).into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn options(url: &str) -> ClientOptions {
    let mut o = ClientOptions::new(url, "trk_ing_x");
    o.flush_interval = Duration::ZERO;
    o.initial_backoff = Duration::from_millis(5);
    o
}

#[tokio::test]
async fn batches_by_size_with_token_ids_and_one_idempotency_key_each() {
    let (url, seen) = server(vec![]).await;
    let mut o = options(&format!("{url}/"));
    o.batch_size = 2;
    let client = Client::new(o);
    for n in 1..=3 {
        client.track(TrackEvent::new("signup").param("n", n.to_string())).unwrap();
    }
    assert_eq!(client.close().await.unwrap(), 3);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].headers["authorization"], "Bearer trk_ing_x");
    assert_ne!(seen[0].headers["idempotency-key"], seen[1].headers["idempotency-key"]);
    let events: Vec<serde_json::Value> =
        seen.iter().flat_map(|s| serde_json::from_str::<Vec<serde_json::Value>>(&s.body).unwrap()).collect();
    assert_eq!(events.iter().map(|e| e["params"]["n"].as_str().unwrap()).collect::<Vec<_>>(), ["1", "2", "3"]);
    for e in &events {
        assert_eq!(e["event_id"].as_str().unwrap().chars().nth(14), Some('7'), "a UUIDv7");
        assert!(e["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    }
}

#[tokio::test]
async fn a_failed_send_is_retried_with_the_same_key_and_body_after_retry_after() {
    let (url, seen) = server(vec![
        (503, None, r#"{"error":{"code":"unavailable","message":"down"}}"#),
        (429, Some("1"), r#"{"error":{"code":"rate_limited","message":"slow"}}"#),
    ])
    .await;
    let client = Client::new(options(&url));
    client.track(TrackEvent::new("a")).unwrap();
    assert_eq!(client.flush().await.unwrap(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.headers["idempotency-key"] == seen[0].headers["idempotency-key"]));
    assert!(seen.iter().all(|s| s.body == seen[0].body));
    assert!(seen[2].at - seen[1].at >= Duration::from_millis(950), "waited for Retry-After");
}

#[tokio::test]
async fn a_final_refusal_is_not_retried_and_reaches_on_error() {
    let (url, seen) = server(vec![(400, None, r#"{"error":{"code":"invalid_json","message":"bad"}}"#)]).await;
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut o = options(&url);
    o.on_error = Some({
        let failed = failed.clone();
        Arc::new(move |e: &Error, events: &[TrackEvent]| failed.lock().unwrap().push((e.to_string(), events.len())))
    });
    let client = Client::new(o);
    client.track(TrackEvent::new("a")).unwrap();
    let err = client.flush().await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_json"));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(failed.lock().unwrap()[0].1, 1);
    assert_eq!(client.pending(), 0);
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_ends_the_attempts() {
    let (url, seen) =
        server(vec![(429, Some("86400"), r#"{"error":{"code":"quota_exceeded","message":"cap"}}"#)]).await;
    let client = Client::new(options(&url));
    client.track(TrackEvent::new("a")).unwrap();
    assert_eq!(client.flush().await.unwrap_err().code(), Some("quota_exceeded"));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_full_queue_refuses_new_events_and_a_closed_client_refuses_all() {
    let (url, _) = server(vec![]).await;
    let mut o = options(&url);
    o.max_queue = 2;
    let client = Client::new(o);
    client.track(TrackEvent::new("a")).unwrap();
    client.track(TrackEvent::new("b")).unwrap();
    assert!(matches!(client.track(TrackEvent::new("c")), Err(Error::NotQueued("the queue is full"))));
    assert_eq!(client.pending(), 2);
}

#[tokio::test]
async fn the_interval_sends_on_its_own() {
    let (url, seen) = server(vec![]).await;
    let mut o = options(&url);
    o.flush_interval = Duration::from_millis(50);
    let client = Client::new(o);
    client.track(TrackEvent::new("a")).unwrap();
    assert_eq!(seen_at_least(&seen, 1).await, 1);
    client.close().await.unwrap();
}

/// Waits until the server has seen `n` requests (or 5 s have passed); how many it saw.
async fn seen_at_least(seen: &Arc<Mutex<Vec<Seen>>>, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().len()
}

#[tokio::test]
async fn a_retry_after_date_is_waited_for() {
    // HTTP dates have whole seconds: two seconds ahead is at least one second from now
    let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    let at: &'static str = Box::leak(at.into_boxed_str());
    let (url, seen) = server(vec![(503, Some(at), r#"{"error":{"code":"unavailable","message":"later"}}"#)]).await;
    let client = Client::new(options(&url));
    client.track(TrackEvent::new("a")).unwrap();
    assert_eq!(client.flush().await.unwrap(), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].at - seen[0].at >= Duration::from_millis(950), "waited until the date");
}

#[tokio::test]
async fn without_an_interval_a_full_batch_still_goes_on_its_own() {
    let (url, seen) = server(vec![]).await;
    let mut o = options(&url);
    o.batch_size = 2;
    let client = Client::new(o);
    client.track(TrackEvent::new("a")).unwrap();
    client.track(TrackEvent::new("b")).unwrap();
    assert_eq!(seen_at_least(&seen, 1).await, 1, "sent without flush");
    assert_eq!(client.pending(), 0);
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_dropped_client_sends_what_it_queued() {
    let (url, seen) = server(vec![]).await;
    let mut o = options(&url);
    o.flush_interval = Duration::from_secs(3600);
    let client = Client::new(o);
    client.track(TrackEvent::new("a")).unwrap();
    client.track(TrackEvent::new("b")).unwrap();
    drop(client);
    assert_eq!(seen_at_least(&seen, 1).await, 1);
    let events: Vec<serde_json::Value> = serde_json::from_str(&seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(events.len(), 2);
}
