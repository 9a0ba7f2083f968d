//! `tracker-mcp`: the platform's MCP server over stdio, for desktop assistants. It calls a node's (or the edge's)
//! platform API with one credential, and takes its tools from that API's own OpenAPI document.
//!
//! ```json
//! { "mcpServers": { "tracker": { "command": "tracker-mcp",
//!     "env": { "TRACKER_API_URL": "https://track.example.com", "TRACKER_API_KEY": "trk_key_..." } } } }
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use rmcp::ServiceExt;
use tracker_mcp::{HttpApi, McpServer};

#[derive(Debug, Parser)]
#[command(name = "tracker-mcp", version, about = "The tracking platform's MCP server over stdio")]
struct Args {
    /// The platform's base URL (a core node or the edge), without `/api`.
    #[arg(long, env = "TRACKER_API_URL")]
    api_url: Option<String>,
    /// A tenant API key (or the platform admin token): it decides the tenant, the scopes and the rate limit.
    #[arg(long, env = "TRACKER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // stdout is the protocol: logs go to stderr
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracker-mcp: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // named here rather than by clap, whose message leaves out the environment variable desktop clients set
    let url = args.api_url.ok_or("the platform's URL is needed: TRACKER_API_URL (or --api-url)")?;
    let key = args.api_key.ok_or("an API key (or the admin token) is needed: TRACKER_API_KEY (or --api-key)")?;
    let api = HttpApi::new(&url, &key)?;
    let catalog = api.catalog().await?;
    let server = McpServer::new(Arc::new(catalog), Arc::new(api));
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
