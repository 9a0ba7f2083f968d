//! # The core node
//!
//! Serves the tracking endpoints and the batch intake, writes every accepted event to the event log (the embedded
//! durable log by default), and keeps metadata in libSQL. `main` only parses the command line; everything here is
//! a library so that tests run the real server in-process or on a real port.

pub mod cli;
pub mod config;
pub mod http;
#[cfg(feature = "iggy")]
mod iggy;
pub mod live;
pub mod metrics;
pub mod query;
pub mod ratelimit;
pub mod remote;
pub mod state;

/// Webhook deliveries and the address guard (shared with the webhook consumer).
pub use tracker_consumers::delivery as webhook;

use std::future::Future;
use std::sync::Arc;

use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use tracker_log::{EmbeddedLog, EmbeddedLogConfig, EventLog, LogError};
use tracker_store::hot::HotStore;
use tracker_store::{Store, StoreError};

pub use config::Config;
pub use http::router;
pub use state::{AppState, ConsumerOutputs};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    #[error("event log: {0}")]
    Log(#[from] LogError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Cli(String),
}

/// What the binaries log without `RUST_LOG`: our own lines from info up, dependencies' warnings and errors (the
/// Delta kernel logs an ERROR when it finds no table where the archiver is about to create one: off).
pub const DEFAULT_LOG_FILTER: &str = "warn,tracker_core=info,tracker_consumer=info,tracker_consumers=info,\
    tracker_archive=info,tracker_store=info,tracker_log=info,tracker_log_iggy=info,tracker_import=info,\
    tracker_filter=info,tracker_query=info,buoyant_kernel::snapshot::builder=off";

/// Logs to stderr, filtered by `RUST_LOG` ([`DEFAULT_LOG_FILTER`] without it): for the binaries.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// The embedded log configured for this node (`DATA_DIR/log`).
pub fn log_config(cfg: &Config) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        partitions: cfg.log.partitions,
        commit_window: cfg.log.commit_window,
        queue_capacity: cfg.log.queue_capacity,
        retention_age: cfg.log.retention_age,
        retention_bytes: cfg.log.retention_bytes,
        ..EmbeddedLogConfig::new(cfg.data_dir.join("log"))
    }
}

/// Opens the metadata store, sealing link secrets at rest when `SECRETS_KEY` is set.
pub async fn open_store(cfg: &Config) -> Result<Store, NodeError> {
    let store = Store::connect(&cfg.store.database).await?;
    Ok(match &cfg.links.secrets_key {
        Some(key) => {
            let previous: Vec<[u8; 32]> = cfg.links.secrets_key_previous.iter().map(|k| *k.expose()).collect();
            store.with_secrets_keys(*key.expose(), &previous)
        }
        None => store,
    })
}

/// Opens the store and the log and builds the shared state.
pub async fn build_state(cfg: Config) -> Result<Arc<AppState>, NodeError> {
    if cfg.links.secrets_key.is_none() {
        tracing::warn!("SECRETS_KEY is not set: tenant link secrets are stored unsealed in the metadata database");
    }
    let store = open_store(&cfg).await?;
    let hot = HotStore::connect(&cfg.store.hot_database).await?;
    // every task the node starts besides requests and consumers: `serve` waits for them before it returns
    let tasks = TaskTracker::new();
    let log = open_log(&cfg, &tasks, Topic::Events).await?;
    let filtered = open_log(&cfg, &tasks, Topic::Filtered).await?;
    let outputs = ConsumerOutputs { filtered, hot };
    let state = AppState::new(cfg, log, store, outputs, tasks).map_err(NodeError::Cli)?;
    Ok(Arc::new(state))
}

/// The raw event log for a process other than the node (`tracker-core import`): the embedded log (which only one
/// process can open), or with `IGGY_URL` Iggy itself, without a spool: what it does not take is an error, and the
/// import resumes from its recorded position.
pub async fn open_raw_log(cfg: &Config) -> Result<Arc<dyn EventLog>, NodeError> {
    match &cfg.log.iggy {
        None => {
            let mut log_cfg = log_config(cfg);
            log_cfg.dir = cfg.data_dir.join("log");
            Ok(Arc::new(open_embedded(log_cfg).await?))
        }
        #[cfg(feature = "iggy")]
        Some(iggy) => iggy::open_raw(cfg, iggy).await,
        #[cfg(not(feature = "iggy"))]
        Some(_) => Err(no_iggy()),
    }
}

/// Which of the platform's two logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    /// Every accepted event.
    Events,
    /// The events the filter kept.
    Filtered,
}

/// One of the platform's logs: the embedded log in `DATA_DIR/<dir>`, or with `IGGY_URL` the Iggy topic behind a
/// local spool in `DATA_DIR/<spool>` that holds what Iggy could not take, until it can (the reconnecting and
/// draining tasks are `tasks`', and end when the log is shut down).
async fn open_log(cfg: &Config, tasks: &TaskTracker, topic: Topic) -> Result<Arc<dyn EventLog>, NodeError> {
    let (dir, spool) = match topic {
        Topic::Events => ("log", "spool"),
        Topic::Filtered => ("filtered", "filtered-spool"),
    };
    let mut log_cfg = log_config(cfg);
    match &cfg.log.iggy {
        None => {
            log_cfg.dir = cfg.data_dir.join(dir);
            Ok(Arc::new(open_embedded(log_cfg).await?))
        }
        #[cfg(feature = "iggy")]
        Some(iggy) => {
            log_cfg.dir = cfg.data_dir.join(spool);
            let spool = open_embedded(log_cfg).await?;
            Ok(iggy::open_spooled(cfg, iggy, spool, tasks, topic))
        }
        #[cfg(not(feature = "iggy"))]
        Some(_) => {
            let _ = (spool, tasks);
            Err(no_iggy())
        }
    }
}

#[cfg(not(feature = "iggy"))]
fn no_iggy() -> NodeError {
    NodeError::Cli("IGGY_URL is set, and this build has no Iggy client (build with the `iggy` feature)".into())
}

/// What the stream consumers need, from the node's state.
pub fn pipeline(state: &AppState) -> tracker_consumers::Pipeline {
    tracker_consumers::Pipeline {
        raw: state.log.clone(),
        filtered: state.outputs.filtered.clone(),
        store: state.store.clone(),
        hot: state.outputs.hot.clone(),
        settings: tracker_consumers::Settings {
            webhooks: tracker_consumers::webhooks::WebhookSettings {
                allow_private: state.cfg.webhook_allow_private,
                ..state.cfg.consumers.webhooks.clone()
            },
            ..state.cfg.consumers.clone()
        },
    }
}

async fn open_embedded(cfg: EmbeddedLogConfig) -> Result<EmbeddedLog, NodeError> {
    tokio::task::spawn_blocking(move || EmbeddedLog::open(cfg))
        .await
        .map_err(|e| NodeError::Io(std::io::Error::other(e)))?
        .map_err(NodeError::from)
}

/// How long a graceful shutdown waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests and makes every queued
/// event durable before returning. Every task the node started has ended by then, so the same data can be opened
/// again at once.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let app = router(state.clone());
    // tells the consumers to stop, between batches, once the last request was answered
    let stop = tokio_util::sync::CancellationToken::new();
    state.tasks.spawn(stop.clone().run_until_cancelled_owned(metrics::keep_recorder()));
    let counter = tracker_consumers::link_counts::spawn(
        state.log.clone(),
        state.store.clone(),
        state.consumers.clone(),
        state.link_counter.clone(),
        stop.clone(),
    )?;
    let consumers = if state.cfg.node.consumers_in_process {
        Some(tracker_consumers::spawn(
            Arc::new(pipeline(&state)),
            tracker_consumers::ALL.to_vec(),
            stop.clone(),
            state.consumers.clone(),
        )?)
    } else {
        None
    };
    tracing::info!(addr = %listener.local_addr()?, partitions = state.log.partitions(), "core node listening");
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let graceful = http::server::serve(listener, app, state.cfg.node.header_timeout, {
        let live = state.live.clone();
        async move {
            shutdown.await;
            // live streams never end on their own: end them, or the graceful shutdown would wait forever
            live.close();
            let _ = stopping.send(());
        }
    });
    // a client that stopped reading can hold its connection open forever: past the grace period it is dropped
    let served = tokio::select! {
        served = graceful => served,
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            let grace_secs = SHUTDOWN_GRACE.as_secs();
            tracing::warn!(grace_secs, "connections still open after the grace period were dropped");
            Ok(())
        }
    };
    // the counts commit with their offsets, so stopping between batches loses nothing
    stop.cancel();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = counter.join();
        consumers.map(std::thread::JoinHandle::join)
    })
    .await;
    if let Some(edge) = &state.cfg.consumers.edge {
        edge.settle().await;
    }
    served?;
    state.log.shutdown().await?;
    state.outputs.filtered.shutdown().await?;
    // the live tails and streams ended with the HTTP server; the Iggy tasks end with the logs
    state.tasks.close();
    state.tasks.wait().await;
    tracing::info!("event log flushed; core node stopped");
    Ok(())
}
