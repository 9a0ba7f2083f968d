//! `tracker-consumer`: runs stream consumers as a process of their own, for deployments where the node does not
//! (`CONSUMERS=off`). It reads the same configuration as the node. Each process joins its consumers' groups in the
//! log, so several instances share the partitions (Apache Iggy); the embedded log belongs to one node process, so
//! with it the consumers run inside the node instead.
//!
//! ```text
//! tracker-consumer filter stats webhooks archive
//! ```

use std::sync::Arc;

use tracker_consumers::Which;
use tracker_core::{Config, build_state, pipeline};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracker_consumers::small_pages();
    tracker_core::init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which: Result<Vec<Which>, String> =
        if args.is_empty() { Ok(tracker_consumers::ALL.to_vec()) } else { args.iter().map(|a| a.parse()).collect() };
    let which = match which {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "error: {e}\nusage: tracker-consumer [filter] [stats] [webhooks] [archive]   (all when none is named)"
            );
            return std::process::ExitCode::from(2);
        }
    };
    let cfg = match Config::from_env(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if cfg.log.iggy.is_none() {
        tracing::warn!("no IGGY_URL: reading the embedded log in DATA_DIR, which no node may have open meanwhile");
    }
    // bound before anything is opened: a taken address stops the process with nothing to shut down
    let listener = match cfg.node.consumer_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving /metrics and /health");
                Some(listener)
            }
            Err(e) => {
                eprintln!("error: CONSUMER_LISTEN {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let state = match build_state(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stop = tracker_consumers::CancellationToken::new();
    let signalled = stop.clone();
    tokio::spawn(async move {
        // SIGINT or SIGTERM: stop between batches (output and positions are always consistent)
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        signalled.cancel();
    });
    // metrics and health for the orchestrator: /health answers 503 naming a consumer that died
    let ops = listener.map(|listener| {
        let app = tracker_core::http::ops_router().with_state(state.clone());
        let until = stop.clone().cancelled_owned();
        // the peer's address: /metrics and /health/broker answer this machine without a token
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(until).await })
    });
    tracing::info!(consumers = ?which, "consumers running");
    // a consumer that dies stops the others and the process, which exits with an error to be restarted (the
    // positions are durable: the restart resumes every consumer where it was)
    let liveness = state.consumers.clone();
    let (watched, on_death) = (liveness.clone(), stop.clone());
    tokio::spawn(async move {
        watched.first_death().await;
        on_death.cancel();
    });
    tracker_consumers::run(Arc::new(pipeline(&state)), which, stop.clone(), liveness.clone()).await;
    stop.cancel();
    if let Some(ops) = ops {
        let _ = ops.await;
    }
    if let Some(edge) = &state.cfg.consumers.edge {
        edge.settle().await;
    }
    let _ = state.outputs.filtered.shutdown().await;
    let _ = state.log.shutdown().await;
    let dead = liveness.dead();
    if dead.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("error: consumers died: {}", dead.join(", "));
        std::process::ExitCode::FAILURE
    }
}
