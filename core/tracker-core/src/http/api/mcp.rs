//! `/mcp`: the MCP server over streamable HTTP (`tracker_mcp`), on every node and, through the edge, at the edge's
//! `/mcp`. The request passed the API's authentication like any `/api` request (a bearer API key or the admin
//! token, counted against the caller's rate limit); each tool call is then one API request made in-process as that
//! caller, through the same handlers, scopes and tenant scoping as `/api`, so no tool reaches further than the
//! credential does.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use tower::ServiceExt;
use tracker_mcp::{ApiAnswer, ApiCall, McpServer, Role};

use super::{Caller, MAX_API_BODY, Principal, Purge};
use crate::state::AppState;

/// Largest API answer a tool returns (a page of events at the largest page size is well below it).
const MAX_ANSWER: usize = 32 << 20;

/// The API as tools see it on a node: the `/api` handlers, called in-process with the MCP request's caller.
#[derive(Debug, Clone)]
pub struct NodeApi {
    state: Arc<AppState>,
    handlers: Router,
}

fn principal(http: Option<&http::request::Parts>) -> Result<Arc<Principal>, tracker_mcp::Error> {
    http.and_then(|p| p.extensions.get::<Arc<Principal>>().cloned())
        .ok_or_else(|| tracker_mcp::Error::Refused("the MCP request was not authenticated".into()))
}

impl tracker_mcp::Api for NodeApi {
    async fn role(&self, http: Option<&http::request::Parts>) -> Result<Role, tracker_mcp::Error> {
        Ok(match principal(http)?.caller {
            Caller::Admin => Role::Admin,
            Caller::Tenant { .. } => Role::Tenant,
        })
    }

    async fn call(&self, http: Option<&http::request::Parts>, call: ApiCall) -> Result<ApiAnswer, tracker_mcp::Error> {
        let principal = principal(http)?;
        let body = call.body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = Request::builder()
            .method(call.method.as_str())
            .uri(&call.path_and_query)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| tracker_mcp::Error::Argument(e.to_string()))?;
        req.extensions_mut().insert(principal);
        let Ok(mut res) = self.handlers.clone().oneshot(req).await;
        if let Some(Purge(keys)) = res.extensions_mut().remove::<Purge>() {
            super::auth::purge(&self.state, &keys);
        }
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| tracker_mcp::Error::Unreachable(format!("reading the answer: {e}")))?;
        let body = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).map_err(|e| tracker_mcp::Error::Unreachable(e.to_string()))?)
        };
        Ok(ApiAnswer { status, body })
    }
}

/// The `/mcp` route (mounted behind the API's authentication middleware).
pub fn route(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let api = Arc::new(NodeApi { handlers: super::handlers(state.clone()), state: state.clone() });
    let catalog = state.tools.clone();
    let service = StreamableHttpService::new(
        move || Ok(McpServer::new(catalog.clone(), api.clone())),
        Arc::new(NeverSessionManager::default()),
        tracker_mcp::streamable_http_config(MAX_API_BODY),
    );
    Router::new().route(
        "/mcp",
        axum::routing::any(move |req: Request| {
            let service = service.clone();
            async move { service.handle(req).await.map(Body::new).into_response() }
        }),
    )
}

/// `GET /api/tools?format=openai|anthropic|mcp&audience=tenant|admin`: the tools for function calling.
pub async fn definitions(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    super::Query(q): super::Query<ToolsQuery>,
) -> Result<Response, crate::http::ApiError> {
    let format = match q.format.as_deref() {
        None => tracker_mcp::export::Format::Mcp,
        Some(f) => tracker_mcp::export::Format::parse(f).ok_or_else(|| {
            crate::http::ApiError::bad_request("invalid_format", "format must be openai, anthropic or mcp")
        })?,
    };
    let role = match q.audience.as_deref() {
        None | Some("tenant") => Role::Tenant,
        Some("admin") => Role::Admin,
        Some(_) => {
            return Err(crate::http::ApiError::bad_request("invalid_audience", "audience must be tenant or admin"));
        }
    };
    let mut res = super::json(StatusCode::OK, &tracker_mcp::export::tools(&state.tools, &role, format));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(res)
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsQuery {
    format: Option<String>,
    audience: Option<String>,
}
