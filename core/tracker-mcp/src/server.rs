//! The MCP server: tools, resources and prompts over an [`Api`].

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, GetPromptRequestParams, GetPromptResponse,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::catalog::{ApiCall, Catalog, Role, ToolDef};
use crate::{Error, prompts};

/// An API answer: the status and the JSON body (`None` for an empty one, as a 204 has).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiAnswer {
    pub status: u16,
    pub body: Option<Value>,
}

/// The platform API as the server reaches it: in-process on a core node, over HTTP from the stdio binary.
///
/// `http` is the head of the MCP HTTP request being served (its extensions carry what the node's authentication
/// found); `None` over stdio, where the credential is the process's own.
pub trait Api: Send + Sync + 'static {
    /// Who the credential is.
    fn role(&self, http: Option<&http::request::Parts>) -> impl Future<Output = Result<Role, Error>> + Send;
    /// One API request, made as the credential's caller.
    fn call(
        &self,
        http: Option<&http::request::Parts>,
        call: ApiCall,
    ) -> impl Future<Output = Result<ApiAnswer, Error>> + Send;
}

/// The MCP server over one [`Api`].
#[derive(Debug)]
pub struct McpServer<A> {
    catalog: Arc<Catalog>,
    api: Arc<A>,
}

impl<A> Clone for McpServer<A> {
    fn clone(&self) -> Self {
        McpServer { catalog: self.catalog.clone(), api: self.api.clone() }
    }
}

/// Streamable HTTP as the core nodes serve it: stateless (any node answers any request, so a fleet behind a load
/// balancer or the edge needs no session affinity), plain JSON answers, and no `Host` or `Origin` allow-list:
/// every request carries its bearer credential, which a DNS-rebound page does not have.
pub fn streamable_http_config(max_body_bytes: usize) -> StreamableHttpServerConfig {
    StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(max_body_bytes)
}

const INSTRUCTIONS: &str = "Tools over one tenant's tracking platform (or, with the admin token, over tenants). \
Events are clicks, impressions, conversions and page views with the tenant's own params; links are signed tracking \
links that redirect. Times are milliseconds since the Unix epoch (UTC) unless a field says otherwise. List tools \
answer a page: pass `next_cursor` back as `cursor` for the next. Tools that delete or revoke need `confirm: true`, \
which you set only after the user agreed. Errors come back as tool errors with the API's code and message.";

fn from_json<T: DeserializeOwned>(v: Value) -> Result<T, McpError> {
    serde_json::from_value(v).map_err(|e| McpError::internal_error(format!("building an answer: {e}"), None))
}

fn http_parts(ctx: &RequestContext<RoleServer>) -> Option<&http::request::Parts> {
    ctx.extensions.get::<http::request::Parts>()
}

/// A tool as MCP lists it.
pub(crate) fn tool_json(t: &ToolDef) -> Value {
    let mut tool = json!({
        "name": t.name,
        "title": t.title,
        "description": t.description,
        "inputSchema": t.input_schema,
        "annotations": {
            "title": t.title,
            "readOnlyHint": t.read_only,
            "destructiveHint": t.destructive,
            "idempotentHint": t.idempotent,
            "openWorldHint": t.open_world,
        },
    });
    if let (Some(out), Some(obj)) = (&t.output_schema, tool.as_object_mut()) {
        obj.insert("outputSchema".into(), Value::Object(out.clone()));
    }
    tool
}

/// A tool error the model reads: the API's code and message (and status), or ours for arguments we refused.
fn tool_error(status: Option<u16>, code: &str, message: &str) -> CallToolResult {
    let error = match status {
        Some(status) => json!({ "error": { "code": code, "message": message }, "status": status }),
        None => json!({ "error": { "code": code, "message": message } }),
    };
    CallToolResult::error(vec![rmcp::model::ContentBlock::text(error.to_string())])
}

impl<A: Api> McpServer<A> {
    pub fn new(catalog: Arc<Catalog>, api: Arc<A>) -> Self {
        McpServer { catalog, api }
    }

    async fn role(&self, ctx: &RequestContext<RoleServer>) -> Result<Role, McpError> {
        self.api.role(http_parts(ctx)).await.map_err(|e| McpError::invalid_request(e.to_string(), None))
    }

    /// A tool call: the request its arguments make, sent as the caller, the answer as the result.
    pub async fn call(
        &self,
        http: Option<&http::request::Parts>,
        tool: &ToolDef,
        args: &Map<String, Value>,
    ) -> CallToolResult {
        let call = match tool.request(args) {
            Ok(call) => call,
            Err(e @ Error::Unconfirmed(_)) => return tool_error(None, "confirmation_required", &e.to_string()),
            Err(e) => return tool_error(None, "invalid_arguments", &e.to_string()),
        };
        let answer = match self.api.call(http, call).await {
            Ok(answer) => answer,
            Err(e) => return tool_error(None, "unavailable", &e.to_string()),
        };
        if !(200..300).contains(&answer.status) {
            let err = answer.body.as_ref().and_then(|b| b.get("error"));
            let field = |k: &str| err.and_then(|e| e.get(k)).and_then(Value::as_str).unwrap_or_default().to_owned();
            let (code, message) = (field("code"), field("message"));
            let code = if code.is_empty() { "api_error".to_owned() } else { code };
            return tool_error(Some(answer.status), &code, &message);
        }
        match answer.body {
            Some(body) => {
                let text = body.to_string();
                let mut result = CallToolResult::success(vec![rmcp::model::ContentBlock::text(text)]);
                if tool.output_schema.is_some() && body.is_object() {
                    result.structured_content = Some(body);
                }
                result
            }
            None => CallToolResult::success(vec![rmcp::model::ContentBlock::text(format!(
                "done ({} {}: {})",
                tool.method, tool.path, answer.status
            ))]),
        }
    }

    /// A JSON resource read through the API (a link, a webhook endpoint).
    async fn read_json(&self, ctx: &RequestContext<RoleServer>, uri: &str, path: String) -> Result<Value, McpError> {
        let call = ApiCall { method: "GET".into(), path_and_query: path, body: None };
        let answer =
            self.api.call(http_parts(ctx), call).await.map_err(|e| McpError::internal_error(e.to_string(), None))?;
        match (answer.status, answer.body) {
            (200, Some(body)) => Ok(body),
            (404, _) => Err(McpError::resource_not_found(format!("no such resource: {uri}"), None)),
            (status, body) => Err(McpError::invalid_request(
                format!("the API answered {status}"),
                body.and_then(|b| b.get("error").cloned()),
            )),
        }
    }

    /// One page of a list route as resources: `(resources, next API cursor)`.
    async fn resource_page(
        &self,
        ctx: &RequestContext<RoleServer>,
        kind: &str,
        cursor: &str,
    ) -> Result<(Vec<Value>, Option<String>), McpError> {
        let mut path = format!("/{kind}?limit=100");
        if !cursor.is_empty() {
            path.push_str("&cursor=");
            path.push_str(&form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>());
        }
        let page = self.read_json(ctx, kind, path).await?;
        let (id_field, label) = if kind == "links" { ("tu_id", "name") } else { ("webhook_id", "url") };
        let items = page.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        let resources = items
            .iter()
            .filter_map(|item| {
                let id = item.get(id_field)?.as_str()?;
                let label = item.get(label).and_then(Value::as_str).filter(|l| !l.is_empty()).unwrap_or(id);
                let what = if kind == "links" { "tracking link" } else { "webhook endpoint" };
                Some(json!({
                    "uri": format!("tracker://{kind}/{id}"),
                    "name": format!("{what} {id}"),
                    "title": label,
                    "description": format!("The {what} {id} as the API describes it."),
                    "mimeType": "application/json",
                }))
            })
            .collect();
        let next = page.get("next_cursor").and_then(Value::as_str).map(str::to_owned);
        Ok((resources, next))
    }
}

impl<A: Api> ServerHandler for McpServer<A> {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder().enable_tools().enable_resources().enable_prompts().build();
        let info = json!({ "name": "tracker-mcp", "title": "Tracker", "version": env!("CARGO_PKG_VERSION") });
        let mut config = ServerConfig::new(capabilities).with_instructions(INSTRUCTIONS);
        if let Ok(info) = serde_json::from_value(info) {
            config = config.with_server_info(info);
        }
        config
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let role = self.role(&ctx).await?;
        let tools: Vec<Value> = self.catalog.tools_for(&role).map(tool_json).collect();
        from_json(json!({ "tools": tools }))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let role = self.role(&ctx).await?;
        let Some(tool) = self.catalog.tool(&request.name).filter(|t| t.audience.admits(&role)) else {
            return Err(McpError::invalid_params(format!("no tool named {}", request.name), None));
        };
        let args = request.arguments.unwrap_or_default();
        Ok(self.call(http_parts(&ctx), tool, &args).await.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let role = self.role(&ctx).await?;
        let cursor = request.and_then(|r| r.cursor).unwrap_or_default();
        let mut resources = Vec::new();
        // the cursor is `<kind>:<the API's cursor>`: links first, then webhook endpoints
        let (kind, api_cursor) = match cursor.split_once(':') {
            Some((kind @ ("links" | "webhooks"), rest)) => (kind, rest.to_owned()),
            None if cursor.is_empty() => {
                resources.push(json!({
                    "uri": OPENAPI_URI,
                    "name": "openapi.json",
                    "title": "The platform API (OpenAPI 3.1)",
                    "description": "Every operation of the platform API, its parameters and answers.",
                    "mimeType": "application/json",
                }));
                ("links", String::new())
            }
            _ => return Err(McpError::invalid_params("the cursor is not one this server gave", None)),
        };
        if role == Role::Admin {
            return from_json(json!({ "resources": resources }));
        }
        let (page, next) = self.resource_page(&ctx, kind, &api_cursor).await?;
        resources.extend(page);
        let next_cursor = match (kind, next) {
            (_, Some(next)) => Some(format!("{kind}:{next}")),
            ("links", None) => Some("webhooks:".to_owned()),
            _ => None,
        };
        from_json(json!({ "resources": resources, "nextCursor": next_cursor }))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        from_json(json!({ "resourceTemplates": [
            {
                "uriTemplate": "tracker://links/{tu_id}",
                "name": "tracking link",
                "description": "One of the tenant's tracking links by its id (tu_id).",
                "mimeType": "application/json",
            },
            {
                "uriTemplate": "tracker://webhooks/{webhook_id}",
                "name": "webhook endpoint",
                "description": "One of the tenant's webhook endpoints by its id.",
                "mimeType": "application/json",
            },
        ]}))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri;
        let text = if uri == OPENAPI_URI {
            self.catalog.document().to_owned()
        } else {
            let (kind, id) = uri
                .strip_prefix("tracker://")
                .and_then(|rest| rest.split_once('/'))
                .filter(|(kind, id)| matches!(*kind, "links" | "webhooks") && !id.is_empty() && !id.contains('/'))
                .ok_or_else(|| McpError::resource_not_found(format!("no such resource: {uri}"), None))?;
            let id = form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
            self.read_json(&ctx, &uri, format!("/{kind}/{id}")).await?.to_string()
        };
        let result: ReadResourceResult =
            from_json(json!({ "contents": [{ "uri": uri, "mimeType": "application/json", "text": text }] }))?;
        Ok(result.into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        from_json(json!({ "prompts": prompts::list() }))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let args = request.arguments.unwrap_or_default();
        let prompt = prompts::get(&request.name, &args).map_err(|e| McpError::invalid_params(e, None))?;
        let result: rmcp::model::GetPromptResult = from_json(prompt)?;
        Ok(result.into())
    }
}

/// The OpenAPI document as a resource.
pub const OPENAPI_URI: &str = "tracker://openapi.json";
