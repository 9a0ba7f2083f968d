//! A core node on a real port for the integration tests.

#![allow(dead_code)] // each test module uses part of it

pub mod schema;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracker_core::{AppState, Config, build_state, serve};

pub const EDGE_SECRET: &str = "edge-secret-0123456789abcdef0123456789";

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

pub struct Node {
    pub base: String,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub http: reqwest::Client,
    cfg: Config,
    _dir: tempfile::TempDir,
}

impl Node {
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::for_dir(dir.path());
        cfg.links.cache_ttl = Duration::ZERO;
        cfg.log.partitions = 4;
        cfg.log.commit_window = Duration::from_millis(2);
        cfg.edge.secrets = vec![EDGE_SECRET.as_bytes().to_vec()].into();
        tune(&mut cfg);
        Self::start_with(cfg, dir).await
    }

    /// Stops the node gracefully and starts it again on the same data (a new port).
    pub async fn restart(mut self) -> Node {
        self.shut().await;
        // the log is single-process: every handle must be gone before it opens again
        let Node { state, cfg, _dir: dir, .. } = self;
        drop(state);
        Self::start_with(cfg, dir).await
    }

    async fn start_with(cfg: Config, dir: tempfile::TempDir) -> Node {
        // a stopped node's tasks have all ended: its log opens again at once
        let state = build_state(cfg.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                serve(state, listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }
        });
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Node { base, state, stop: Some(stop), task: Some(task), http, cfg, _dir: dir }
    }

    pub async fn stop(mut self) {
        self.shut().await;
    }

    async fn shut(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}
