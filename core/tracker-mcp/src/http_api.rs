//! The platform API over HTTP, as the stdio server reaches it: a node's or the edge's `/api`, with one credential.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::Error;
use crate::catalog::{ApiCall, Catalog, Role};
use crate::server::{Api, ApiAnswer};

/// A platform API at `base_url` (`https://track.example.com`), called with one API key or the admin token.
#[derive(Debug)]
pub struct HttpApi {
    client: reqwest::Client,
    base_url: String,
    credential: String,
    role: OnceCell<Role>,
}

impl HttpApi {
    pub fn new(base_url: &str, credential: &str) -> Result<HttpApi, Error> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(Error::Argument(format!("the API URL must start with https:// or http://, not {base_url}")));
        }
        if credential.is_empty() {
            return Err(Error::Argument("an API key (or the admin token) is needed".into()));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("tracker-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        Ok(HttpApi { client, base_url, credential: credential.to_owned(), role: OnceCell::new() })
    }

    /// The tools of the API this server talks to (from its own `GET /api/openapi.json`, so they always match it).
    pub async fn catalog(&self) -> Result<Catalog, Error> {
        let call = ApiCall { method: "GET".into(), path_and_query: "/openapi.json".into(), body: None };
        let answer = self.send(call).await?;
        match (answer.status, answer.body) {
            (200, Some(doc)) => Catalog::from_openapi(&doc.to_string()),
            (status, _) => Err(Error::Unreachable(format!("GET /api/openapi.json answered {status}"))),
        }
    }

    async fn send(&self, call: ApiCall) -> Result<ApiAnswer, Error> {
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).map_err(|e| Error::Argument(e.to_string()))?;
        let url = format!("{}/api{}", self.base_url, call.path_and_query);
        let mut req = self.client.request(method, &url).bearer_auth(&self.credential);
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(|e| Error::Unreachable(format!("{} {url}: {e}", call.method)))?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| Error::Unreachable(e.to_string()))?;
        let body = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                Error::Unreachable(format!("{url} answered {status} with a body that is not JSON: {e}"))
            })?)
        };
        Ok(ApiAnswer { status, body })
    }
}

impl Api for HttpApi {
    async fn role(&self, _http: Option<&http::request::Parts>) -> Result<Role, Error> {
        self.role
            .get_or_try_init(|| async {
                let me = ApiCall { method: "GET".into(), path_and_query: "/me".into(), body: None };
                let answer = self.send(me).await?;
                let kind = answer.body.as_ref().and_then(|b| b.get("kind")).and_then(Value::as_str);
                match (answer.status, kind) {
                    (200, Some("admin")) => Ok(Role::Admin),
                    (200, Some("tenant")) => Ok(Role::Tenant),
                    (status, _) => {
                        let message = answer
                            .body
                            .as_ref()
                            .and_then(|b| b.pointer("/error/message"))
                            .and_then(Value::as_str)
                            .unwrap_or("no reason given")
                            .to_owned();
                        Err(Error::Refused(format!("the API refused the credential ({status}): {message}")))
                    }
                }
            })
            .await
            .cloned()
    }

    async fn call(&self, _http: Option<&http::request::Parts>, call: ApiCall) -> Result<ApiAnswer, Error> {
        self.send(call).await
    }
}
