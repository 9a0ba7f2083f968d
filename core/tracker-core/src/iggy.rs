//! Apache Iggy as the platform's logs (`IGGY_URL`; the `iggy` feature, on by default): each behind a local spool
//! that takes the writes Iggy cannot, kept connected for as long as the node runs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;
use tracker_log::{EmbeddedLog, EventLog, SpooledLog};
use tracker_log_iggy::{EVENTS_TOPIC, FILTERED_TOPIC, IggyConfig, IggyLog};

use crate::config::{Config, IggySettings};
use crate::{NodeError, Topic};

fn primary(cfg: &Config, iggy: &IggySettings) -> IggyConfig {
    IggyConfig {
        url: iggy.url.expose().clone(),
        stream: iggy.stream.clone(),
        partitions: cfg.log.partitions,
        retention: cfg.log.retention_age,
        linger: iggy.linger,
        segment_bytes: None,
    }
}

/// The events topic itself, without a spool (`tracker-core import`): what it does not take is an error.
pub(crate) async fn open_raw(cfg: &Config, iggy: &IggySettings) -> Result<Arc<dyn EventLog>, NodeError> {
    // the client retries forever when no server answers
    let primary = primary(cfg, iggy);
    let connect = IggyLog::connect_topic(&primary, EVENTS_TOPIC);
    match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(log) => Ok(Arc::new(log?)),
        Err(_) => Err(NodeError::Cli("Iggy did not answer within 15 s".into())),
    }
}

/// `topic` behind `spool`: the reconnecting and draining tasks are `tasks`', and end when the log is shut down.
pub(crate) fn open_spooled(
    cfg: &Config,
    iggy: &IggySettings,
    spool: EmbeddedLog,
    tasks: &TaskTracker,
    topic: Topic,
) -> Arc<dyn EventLog> {
    let topic = match topic {
        Topic::Events => EVENTS_TOPIC,
        Topic::Filtered => FILTERED_TOPIC,
    };
    let log = Arc::new(SpooledLog::new(spool, iggy.send_timeout, "iggy"));
    tasks.spawn(keep_iggy_connected(log.clone(), primary(cfg, iggy), topic));
    tasks.spawn(log.clone().run_drainer(Duration::from_millis(500)));
    log
}

/// Connects to Iggy, and again whenever the connection is lost, with backoff (1 s doubling to 30 s), for as long as
/// the node runs. Meanwhile the spool takes the writes.
async fn keep_iggy_connected(log: Arc<SpooledLog>, cfg: IggyConfig, topic: &'static str) {
    let mut backoff = Duration::from_secs(1);
    let mut connected = false;
    loop {
        if !connected || !log.status().healthy {
            let attempt = tokio::select! {
                () = log.closed() => return,
                attempt = IggyLog::connect_topic(&cfg, topic) => attempt,
            };
            match attempt {
                Ok(iggy) => {
                    tracing::info!(stream = %cfg.stream, topic, "connected to Iggy");
                    log.attach(Arc::new(iggy));
                    connected = true;
                    backoff = Duration::from_secs(1);
                }
                Err(e) => {
                    let retry_in_secs = backoff.as_secs();
                    tracing::warn!(error = %e, retry_in_secs, "cannot reach Iggy; events are spooled locally");
                    connected = false;
                    log.detach();
                    tokio::select! {
                        () = log.closed() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        tokio::select! {
            () = log.closed() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
