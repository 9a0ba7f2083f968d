//! `tracker-query-lambda`: the query functions' router ([`tracker_query::router`]) as an AWS Lambda function
//! behind a function URL (built with `cargo lambda build --release`), or, outside Lambda, as a local HTTP server
//! on `QUERY_LISTEN` (127.0.0.1:8090).
//!
//! Configuration, read once per cold start with the engines and their table handles: the variables declared in
//! [`tracker_query::router::SETTINGS`] and the archive's, exactly as the core node reads them.

use std::sync::Arc;
use std::time::Duration;

use tracker_protocol::settings::Settings;
use tracker_query::router::{Engines, SETTINGS, router};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let under_lambda = var("AWS_LAMBDA_RUNTIME_API").is_some();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // our own lines from info up, dependencies' warnings (the Delta kernel's missing-table ERROR: off)
                .unwrap_or_else(|_| {
                    "warn,tracker_query=info,tracker_query_lambda=info,buoyant_kernel::snapshot::builder=off".into()
                }),
        )
        .with_ansi(!under_lambda)
        .without_time()
        .init();
    let sections = [SETTINGS, tracker_archive::SETTINGS];
    let src = Settings::new(&sections, var);
    let secrets: Vec<Vec<u8>> = src
        .get("QUERY_SECRET")
        .ok_or("QUERY_SECRET is not set: requests name their tenant, so only signed ones are answered")?
        .split(',')
        .map(|s| s.trim().as_bytes().to_vec())
        .filter(|s| s.len() >= 16)
        .collect();
    if secrets.is_empty() {
        return Err("QUERY_SECRET: each secret must be at least 16 bytes".into());
    }
    let timeout = src.number("QUERY_TIMEOUT_SECS", 1..=900)?;
    let data_dir = std::path::Path::new("/tmp");
    let settings =
        tracker_archive::from_settings(&src, data_dir)?.ok_or("ARCHIVE_URL is off: there is no archive to query")?;
    let engines = Arc::new(Engines::new(settings, Duration::from_secs(timeout)));
    let app = router(engines, secrets);
    if under_lambda {
        return lambda_http::run(app).await;
    }
    let listen: String = src.value("QUERY_LISTEN")?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "query functions listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
