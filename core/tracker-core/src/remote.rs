//! `tracker-core api ...`: the platform API from the command line, against a local node or a remote deployment
//! (the edge or a core node): the same operations as the HTTP API, with the same credentials and the same checks.
//! Answers are printed as JSON; an error answer prints its code and message and exits non-zero.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::NodeError;
use crate::config::Config;

/// `key=value` from the command line (`--param`).
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not key=value"))
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the API host (the edge Worker or a core node); default: this node's PUBLIC_URL.
    #[arg(long, env = "TRACKER_API_URL")]
    url: Option<String>,
    /// A tenant API key (`trk_key_...`) or the platform admin token.
    #[arg(long, env = "TRACKER_API_KEY", hide_env_values = true)]
    key: Option<String>,
    #[command(subcommand)]
    command: ApiCmd,
}

#[derive(Debug, Subcommand)]
pub enum ApiCmd {
    /// Who the credential is, and its rate limit.
    Me,
    /// Tenants (admin token).
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// The tenant's API keys (admin scope).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The tenant's ingest tokens (admin scope).
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Tracking links and signed links.
    #[command(subcommand)]
    Links(LinksCmd),
    /// Webhook endpoints.
    #[command(subcommand)]
    Webhooks(WebhooksCmd),
    /// Filter rules.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Any request: `raw GET /api/links`, `raw PATCH /api/rules/<id> --data '{"enabled":false}'`.
    Raw {
        method: String,
        path: String,
        #[arg(long)]
        data: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PageArgs {
    #[arg(long)]
    limit: Option<u32>,
    #[arg(long)]
    cursor: Option<String>,
}

impl PageArgs {
    fn query(&self) -> String {
        let mut q = form_query();
        if let Some(l) = self.limit {
            q.append_pair("limit", &l.to_string());
        }
        if let Some(c) = &self.cursor {
            q.append_pair("cursor", c);
        }
        let q = q.finish();
        if q.is_empty() { q } else { format!("?{q}") }
    }
}

fn form_query() -> url::form_urlencoded::Serializer<'static, String> {
    url::form_urlencoded::Serializer::new(String::new())
}

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// Create a tenant; prints its link keys and first API key (shown once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        plan: Option<String>,
    },
    List(PageArgs),
    Get {
        prefix: String,
    },
    /// Change name, plan, status or the API rate limit.
    Update {
        prefix: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        api_requests_per_minute: Option<u32>,
    },
    Suspend {
        prefix: String,
    },
    Activate {
        prefix: String,
    },
    /// New current link key; older keys verify links for the grace period.
    Rotate {
        prefix: String,
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
    /// Issue an API key for a tenant (for example when it lost its last admin key).
    IssueKey {
        prefix: String,
        #[arg(long)]
        name: String,
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    Create {
        #[arg(long)]
        name: String,
        /// read, write, admin (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// Expiry, ms since the epoch.
        #[arg(long)]
        expires_at: Option<i64>,
    },
    List(PageArgs),
    Get {
        id: String,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        expires_at: Option<i64>,
    },
    List(PageArgs),
    Get {
        id: String,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LinksCmd {
    Create {
        #[arg(long)]
        destination: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        fallback_url: Option<String>,
        #[arg(long)]
        expires_at: Option<i64>,
    },
    List(PageArgs),
    Get {
        tu_id: String,
    },
    /// Change the destination, fallback or expiry (the edge follows within its cache TTL).
    Update {
        tu_id: String,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        fallback_url: Option<String>,
        #[arg(long)]
        expires_at: Option<i64>,
    },
    Delete {
        tu_id: String,
    },
    /// A signed link to a destination or one of the tenant's short links.
    Sign {
        #[arg(long, conflicts_with = "tu_id")]
        destination: Option<String>,
        #[arg(long)]
        tu_id: Option<String>,
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        /// v2 (default), v2_encrypted or v1.
        #[arg(long)]
        format: Option<String>,
        #[arg(long)]
        expires_at: Option<i64>,
        #[arg(long, value_delimiter = ',')]
        ext: Vec<String>,
        #[arg(long)]
        base_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCmd {
    Create {
        #[arg(long)]
        url: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long = "event-type", value_delimiter = ',')]
        event_types: Vec<String>,
        #[arg(long = "param", value_parser = parse_kv)]
        param_filters: Vec<(String, String)>,
    },
    List(PageArgs),
    Get {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
    },
    Delete {
        id: String,
    },
    /// Send a signed test delivery now and show the endpoint's answer.
    Test {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    Create {
        /// user_agent, ip, referer, event_type, host, path, accept_language, key_prefix or param:<key>.
        #[arg(long)]
        field: String,
        /// equals, contains, starts_with, regex, cidr, is_empty.
        #[arg(long)]
        operator: String,
        #[arg(long)]
        value: Option<String>,
        /// drop or flag.
        #[arg(long)]
        action: String,
        #[arg(long)]
        description: Option<String>,
    },
    List(PageArgs),
    Get {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        value: Option<String>,
    },
    Delete {
        id: String,
    },
}

/// A JSON object of the fields that are set.
fn fields<const N: usize>(pairs: [(&str, Option<Value>); N]) -> Value {
    let map: Map<String, Value> = pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v))).collect();
    Value::Object(map)
}

fn some<T: Into<Value>>(v: Option<T>) -> Option<Value> {
    v.map(Into::into)
}

/// An id as one path segment: anything outside the unreserved characters is percent-encoded, so an id can never
/// reach another route (`../`, `?`, `#`).
fn seg(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' if id != "." && id != ".." => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The request a command stands for: method, path and body.
pub fn request(cmd: ApiCmd) -> Result<(String, String, Option<Value>), NodeError> {
    use ApiCmd as A;
    let get = |path: String| Ok(("GET".to_owned(), path, None));
    let send = |method: &str, path: String, body: Value| Ok((method.to_owned(), path, Some(body)));
    let delete = |path: String| Ok(("DELETE".to_owned(), path, None));
    match cmd {
        A::Me => get("/api/me".into()),
        A::Raw { method, path, data } => {
            let body = data
                .map(|d| serde_json::from_str(&d).map_err(|e| NodeError::Cli(format!("--data is not JSON: {e}"))))
                .transpose()?;
            Ok((method.to_ascii_uppercase(), path, body))
        }
        A::Tenants(c) => match c {
            TenantsCmd::Create { name, prefix, plan } => send(
                "POST",
                "/api/tenants".into(),
                fields([("name", some(Some(name))), ("key_prefix", some(prefix)), ("plan", some(plan))]),
            ),
            TenantsCmd::List(p) => get(format!("/api/tenants{}", p.query())),
            TenantsCmd::Get { prefix } => get(format!("/api/tenants/{}", seg(&prefix))),
            TenantsCmd::Update { prefix, name, plan, status, api_requests_per_minute } => {
                let limits = api_requests_per_minute.map(|n| json!({ "api_requests_per_minute": n }));
                let body =
                    fields([("name", some(name)), ("plan", some(plan)), ("status", some(status)), ("limits", limits)]);
                send("PATCH", format!("/api/tenants/{}", seg(&prefix)), body)
            }
            TenantsCmd::Suspend { prefix } => {
                send("PATCH", format!("/api/tenants/{}", seg(&prefix)), json!({ "status": "suspended" }))
            }
            TenantsCmd::Activate { prefix } => {
                send("PATCH", format!("/api/tenants/{}", seg(&prefix)), json!({ "status": "active" }))
            }
            TenantsCmd::Rotate { prefix, grace_seconds } => send(
                "POST",
                format!("/api/tenants/{}/rotate-keys", seg(&prefix)),
                fields([("grace_seconds", some(grace_seconds))]),
            ),
            TenantsCmd::IssueKey { prefix, name, scopes } => send(
                "POST",
                format!("/api/tenants/{}/api-keys", seg(&prefix)),
                fields([("name", some(Some(name))), ("scopes", (!scopes.is_empty()).then(|| json!(scopes)))]),
            ),
        },
        A::Keys(c) => match c {
            KeysCmd::Create { name, scopes, expires_at } => send(
                "POST",
                "/api/keys".into(),
                fields([
                    ("name", some(Some(name))),
                    ("scopes", (!scopes.is_empty()).then(|| json!(scopes))),
                    ("expires_at", some(expires_at)),
                ]),
            ),
            KeysCmd::List(p) => get(format!("/api/keys{}", p.query())),
            KeysCmd::Get { id } => get(format!("/api/keys/{}", seg(&id))),
            KeysCmd::Revoke { id } => delete(format!("/api/keys/{}", seg(&id))),
        },
        A::Tokens(c) => match c {
            TokensCmd::Create { name, expires_at } => {
                send("POST", "/api/tokens".into(), fields([("name", some(name)), ("expires_at", some(expires_at))]))
            }
            TokensCmd::List(p) => get(format!("/api/tokens{}", p.query())),
            TokensCmd::Get { id } => get(format!("/api/tokens/{}", seg(&id))),
            TokensCmd::Revoke { id } => delete(format!("/api/tokens/{}", seg(&id))),
        },
        A::Links(c) => match c {
            LinksCmd::Create { destination, name, fallback_url, expires_at } => send(
                "POST",
                "/api/links".into(),
                fields([
                    ("destination", some(Some(destination))),
                    ("name", some(name)),
                    ("fallback_url", some(fallback_url)),
                    ("expires_at", some(expires_at)),
                ]),
            ),
            LinksCmd::List(p) => get(format!("/api/links{}", p.query())),
            LinksCmd::Get { tu_id } => get(format!("/api/links/{}", seg(&tu_id))),
            LinksCmd::Update { tu_id, destination, name, fallback_url, expires_at } => send(
                "PATCH",
                format!("/api/links/{}", seg(&tu_id)),
                fields([
                    ("destination", some(destination)),
                    ("name", some(name)),
                    ("fallback_url", some(fallback_url)),
                    ("expires_at", some(expires_at)),
                ]),
            ),
            LinksCmd::Delete { tu_id } => delete(format!("/api/links/{}", seg(&tu_id))),
            LinksCmd::Sign { destination, tu_id, params, format, expires_at, ext, base_url } => {
                let params: Map<String, Value> = params.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                send(
                    "POST",
                    "/api/links/sign".into(),
                    fields([
                        ("destination", some(destination)),
                        ("tu_id", some(tu_id)),
                        ("params", (!params.is_empty()).then_some(Value::Object(params))),
                        ("format", some(format)),
                        ("expires_at", some(expires_at)),
                        ("ext", (!ext.is_empty()).then(|| json!(ext))),
                        ("base_url", some(base_url)),
                    ]),
                )
            }
        },
        A::Webhooks(c) => match c {
            WebhooksCmd::Create { url, description, event_types, param_filters } => {
                let filters: Map<String, Value> =
                    param_filters.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                send(
                    "POST",
                    "/api/webhooks".into(),
                    fields([
                        ("url", some(Some(url))),
                        ("description", some(description)),
                        ("event_types", (!event_types.is_empty()).then(|| json!(event_types))),
                        ("param_filters", (!filters.is_empty()).then_some(Value::Object(filters))),
                    ]),
                )
            }
            WebhooksCmd::List(p) => get(format!("/api/webhooks{}", p.query())),
            WebhooksCmd::Get { id } => get(format!("/api/webhooks/{}", seg(&id))),
            WebhooksCmd::Update { id, url, enabled } => send(
                "PATCH",
                format!("/api/webhooks/{}", seg(&id)),
                fields([("url", some(url)), ("enabled", some(enabled))]),
            ),
            WebhooksCmd::Delete { id } => delete(format!("/api/webhooks/{}", seg(&id))),
            WebhooksCmd::Test { id } => send("POST", format!("/api/webhooks/{}/test", seg(&id)), json!({})),
        },
        A::Rules(c) => match c {
            RulesCmd::Create { field, operator, value, action, description } => send(
                "POST",
                "/api/rules".into(),
                fields([
                    ("field", some(Some(field))),
                    ("operator", some(Some(operator))),
                    ("value", some(value)),
                    ("action", some(Some(action))),
                    ("description", some(description)),
                ]),
            ),
            RulesCmd::List(p) => get(format!("/api/rules{}", p.query())),
            RulesCmd::Get { id } => get(format!("/api/rules/{}", seg(&id))),
            RulesCmd::Update { id, enabled, value } => send(
                "PATCH",
                format!("/api/rules/{}", seg(&id)),
                fields([("enabled", some(enabled)), ("value", some(value))]),
            ),
            RulesCmd::Delete { id } => delete(format!("/api/rules/{}", seg(&id))),
        },
    }
}

/// Runs one API command and prints the answer.
pub async fn run(cfg: &Config, args: ApiArgs) -> Result<(), NodeError> {
    let base = args.url.unwrap_or_else(|| cfg.node.public_url.clone());
    let base = base.trim_end_matches('/');
    let remote_plain_http = base.strip_prefix("http://").is_some_and(|rest| {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        !matches!(host, "127.0.0.1" | "localhost" | "[::1]")
    });
    if remote_plain_http && args.key.is_some() {
        eprintln!("warning: sending the credential to {base} over plain http; use https for remote hosts");
    }
    let (method, path, body) = request(args.command)?;
    if !path.starts_with("/api/") {
        return Err(NodeError::Cli(format!("{path:?} is not a platform API path (/api/...)")));
    }
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| NodeError::Cli("bad method".into()))?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| NodeError::Cli(e.to_string()))?;
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(key) = &args.key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.map_err(|e| NodeError::Cli(format!("cannot reach {base}: {e}")))?;
    let status = res.status();
    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let text = res.text().await.map_err(|e| NodeError::Cli(e.to_string()))?;
    let shown = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text.clone());
    if status.is_success() {
        if !shown.is_empty() {
            println!("{shown}");
        }
        return Ok(());
    }
    let parsed: Value = serde_json::from_str(&text).unwrap_or_default();
    let code = parsed.pointer("/error/code").and_then(Value::as_str).unwrap_or("error");
    let message = parsed.pointer("/error/message").and_then(Value::as_str).unwrap_or(text.as_str());
    let retry = retry_after.map(|r| format!(" (retry after {r} s)")).unwrap_or_default();
    Err(NodeError::Cli(format!("{} {code}: {message}{retry}", status.as_u16())))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: ApiCmd,
    }

    fn req(args: &[&str]) -> (String, String, Option<Value>) {
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        request(T::try_parse_from(argv).unwrap().cmd).unwrap()
    }

    #[test]
    fn commands_are_the_api_requests() {
        assert_eq!(req(&["me"]), ("GET".into(), "/api/me".into(), None));
        let (m, p, b) = req(&["links", "update", "tu_1", "--destination", "https://b.example"]);
        assert_eq!((m.as_str(), p.as_str()), ("PATCH", "/api/links/tu_1"));
        assert_eq!(b.unwrap(), json!({ "destination": "https://b.example" }), "only the fields given");
        let (_, p, _) = req(&["links", "list", "--limit", "5", "--cursor", "a b"]);
        assert_eq!(p, "/api/links?limit=5&cursor=a+b");
        let (_, _, b) = req(&["keys", "create", "--name", "ci", "--scope", "read,write"]);
        assert_eq!(b.unwrap(), json!({ "name": "ci", "scopes": ["read", "write"] }));
        let (_, p, b) = req(&["tenants", "rotate", "acme", "--grace-seconds", "60"]);
        assert_eq!((p.as_str(), b.unwrap()), ("/api/tenants/acme/rotate-keys", json!({ "grace_seconds": 60 })));
        let (_, _, b) = req(&["links", "sign", "--destination", "https://a.example", "--param", "c=1"]);
        assert_eq!(b.unwrap(), json!({ "destination": "https://a.example", "params": { "c": "1" } }));
        assert_eq!(req(&["raw", "delete", "/api/rules/r1"]).0, "DELETE");
        // ids cannot escape their path segment
        assert_eq!(req(&["links", "get", "../keys?x=1"]).1, "/api/links/..%2Fkeys%3Fx%3D1");
        assert_eq!(req(&["keys", "revoke", ".."]).1, "/api/keys/%2E%2E");
    }
}
