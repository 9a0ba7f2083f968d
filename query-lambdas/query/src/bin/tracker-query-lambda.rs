//! `tracker-query-lambda`: cold queries as an AWS Lambda function (built with `cargo lambda build --release`).
//!
//! An invocation is `{"tenant": "<key prefix>", "query": {...}}` (see [`tracker_query::Query`]). The platform API
//! makes it after authenticating the tenant; the function is invoked with IAM credentials and never exposed
//! publicly, so it trusts the tenant it is given and only ever reads that tenant's files. A bad query answers
//! `{"error": {"code": "invalid_query", "message"}}` (the caller's 400); a failure is a function error (its
//! 503). The archive's settings are the same `ARCHIVE_*` variables the node reads; they, and the table handle,
//! are built once per cold start.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};
use tracker_query::{Archive, Query, QueryError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Invocation {
    tenant: String,
    query: Query,
}

fn invalid(message: String) -> Value {
    json!({ "error": { "code": "invalid_query", "message": message } })
}

async fn handle(archive: &Archive, event: Value) -> Result<Value, Error> {
    let invocation: Invocation = match serde_json::from_value(event) {
        Ok(i) => i,
        Err(e) => return Ok(invalid(e.to_string())),
    };
    match archive.answer(&invocation.tenant, &invocation.query).await {
        Ok(answer) => Ok(answer),
        Err(QueryError::Invalid(reason)) => Ok(invalid(reason)),
        Err(e) => Err(e.into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let settings = tracker_archive::from_vars(var, std::path::Path::new("/tmp"))?
        .ok_or("ARCHIVE_URL is off: there is no archive to query")?;
    let archive = Arc::new(Archive::new(settings));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let archive = archive.clone();
        async move { handle(&archive, event.payload).await }
    }))
    .await
}
