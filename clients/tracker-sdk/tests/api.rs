//! The generated API client against a scripted server: paths, methods, credentials, query strings and bodies as
//! the OpenAPI document says, answers typed, refusals with the platform's code.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::sync::{Arc, Mutex};

use axum::extract::RawQuery;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use tracker_sdk::api::{ApiClient, CreateLink, ListEventsQuery};

type Seen = Arc<Mutex<Vec<(Method, String, Option<String>, String, String)>>>;

async fn server() -> (String, Seen) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: axum::http::Uri, RawQuery(q): RawQuery, headers: HeaderMap, body: String| {
            let record = record.clone();
            async move {
                let auth = headers["authorization"].to_str().unwrap().to_owned();
                record.lock().unwrap().push((method.clone(), uri.path().to_owned(), q, auth, body.clone()));
                match (method.as_str(), uri.path()) {
                    ("POST", "/api/links") if body.contains("javascript:") => (
                        StatusCode::BAD_REQUEST,
                        r#"{"error":{"code":"invalid_field","message":"destination must be http(s)"}}"#.to_owned(),
                    )
                        .into_response(),
                    ("POST", "/api/links") | ("GET", "/api/links/tu_1%2Fx") => {
                        r#"{"tu_id":"tu_1","destination":"https://shop.example/","created_at":1,"counts":{"clicks":0}}"#
                            .into_response()
                    }
                    ("GET", "/api/events") => r#"{"data":[],"tier":"hot"}"#.into_response(),
                    _ => StatusCode::NOT_FOUND.into_response(),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn operations_go_where_the_document_says_and_answers_are_typed() {
    let (url, seen) = server().await;
    let platform = ApiClient::new(format!("{url}/"), "trk_key_x");
    let link = CreateLink {
        destination: "https://shop.example/".into(),
        name: Some("spring".into()),
        fallback_url: None,
        expires_at: None,
    };
    let created = platform.create_link(&link).await.unwrap();
    assert_eq!(created.tu_id, "tu_1");
    assert_eq!(platform.get_link("tu_1/x").await.unwrap().destination, "https://shop.example/");
    let query = ListEventsQuery { event_type: Some("purchase".into()), limit: Some(5), ..Default::default() };
    platform.list_events(&query).await.unwrap();
    let refused = CreateLink { destination: "javascript:alert(1)".into(), ..link };
    let err = platform.create_link(&refused).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_field"));

    let seen = seen.lock().unwrap().clone();
    assert_eq!((seen[0].0.as_str(), seen[0].1.as_str()), ("POST", "/api/links"));
    assert_eq!(seen[0].3, "Bearer trk_key_x");
    let sent: serde_json::Value = serde_json::from_str(&seen[0].4).unwrap();
    assert_eq!(sent, serde_json::json!({ "destination": "https://shop.example/", "name": "spring" }));
    assert_eq!(seen[1].1, "/api/links/tu_1%2Fx", "path segments are escaped");
    assert_eq!(seen[2].2.as_deref(), Some("event_type=purchase&limit=5"));
}
