//! # The platform API as tools for AI assistants
//!
//! - [`Catalog`]: one tool per operation of the platform API's OpenAPI document, with input and output schemas
//!   taken from it and a guide for models from each operation's `x-mcp` object.
//! - [`McpServer`]: an MCP server (the official `rmcp` SDK) over any [`Api`]: tools, resources (the tenant's links
//!   and webhook endpoints, the OpenAPI document) and prompts. The core node serves it over streamable HTTP at
//!   `/mcp` with calls made in-process as the bearer credential's caller; the `tracker-mcp` binary serves it over
//!   stdio to desktop clients, calling a node's API over HTTP.
//! - [`export`]: the same tools for OpenAI and Anthropic function calling (`/api/tools`, `docs/tools/`).
//!
//! The API decides everything that matters: who the caller is, its tenant, its scopes and its rate limit. A tool
//! call is one API request with the caller's credential; no tool can name a tenant.

mod catalog;
pub mod export;
mod http_api;
mod prompts;
mod server;

pub use catalog::{ApiCall, Audience, CONFIRM, Catalog, Excluded, Role, ToolDef};
pub use http_api::HttpApi;
pub use server::{Api, ApiAnswer, McpServer, streamable_http_config};

/// What can go wrong building the tools or calling one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OpenAPI document does not describe an operation well enough to make a tool of it.
    #[error("the OpenAPI document: {0}")]
    Document(String),
    /// A tool's arguments cannot make a request.
    #[error("invalid arguments: {0}")]
    Argument(String),
    /// A destructive tool was called without `confirm: true`.
    #[error("{0}")]
    Unconfirmed(String),
    /// The API refused the credential.
    #[error("{0}")]
    Refused(String),
    /// The API could not be reached.
    #[error("the platform API could not be reached: {0}")]
    Unreachable(String),
}
