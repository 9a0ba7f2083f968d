//! A core node configured for Apache Iggy whose server is unreachable (a closed port): every event is still
//! accepted, durable in the local spool, reported by `/health/broker` and `/metrics`, and still there after a
//! restart, waiting for Iggy. (Replaying the spool into a log that comes back is tested in `tracker-log`.)

use std::time::Duration;

use crate::common::{Node, now_ms};
use serde_json::{Value, json};
use tracker_core::config::IggySettings;

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn broker(node: &Node) -> (u16, Value) {
    let res = node.http.get(format!("{}/health/broker", node.base)).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_iggy_down_events_are_accepted_into_the_spool_and_survive_a_restart() {
    let port = closed_port();
    let node = Node::start(|c| {
        c.log.iggy = Some(IggySettings {
            url: format!("iggy://tracker:secret@127.0.0.1:{port}").into(),
            stream: "tracker".into(),
            send_timeout: Duration::from_millis(300),
            linger: Duration::from_millis(2),
        });
    })
    .await;
    node.state.store.create_tenant("acme", Some("acme"), now_ms()).await.unwrap();
    let (token, _) = node.state.store.create_ingest_token("acme", "t", None, now_ms()).await.unwrap();
    let batch = json!([{ "event_type": "signup" }, { "event_type": "purchase" }, { "event_type": "refund" }]);
    let res = node.http.post(format!("{}/batch", node.base)).bearer_auth(&token).json(&batch).send().await.unwrap();
    assert_eq!(res.status(), 200, "accepted while Iggy is down");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["accepted"], 3);

    // the drainer refreshes the depth within a second
    let mut spooled = Value::Null;
    for _ in 0..40 {
        let (status, b) = broker(&node).await;
        assert_eq!(status, 503, "the broker is reported unavailable: {b}");
        assert_eq!(b["backend"], "iggy");
        spooled = b["spooled_events"].clone();
        if spooled == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spooled, 3, "three events wait in the spool");
    let metrics = node.http.get(format!("{}/metrics", node.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tracker_log_spooled_events 3"), "{metrics}");

    // durable: a restart finds them in the spool, still waiting for Iggy
    let node = node.restart().await;
    let mut after = Value::Null;
    for _ in 0..40 {
        after = broker(&node).await.1["spooled_events"].clone();
        if after == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after, 3);
    node.stop().await;
}
