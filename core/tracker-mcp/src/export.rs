//! The tools for function calling without MCP: OpenAI's and Anthropic's tool formats, and MCP's `tools/list`
//! shape, from the same [`Catalog`]. Served at `/api/tools?format=...` and kept in `docs/tools/`.

use serde_json::{Value, json};

use crate::catalog::{Catalog, Role};
use crate::server::tool_json;

/// A function-calling format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI's Chat Completions and Responses `tools`: `{"type": "function", "function": {...}}`.
    OpenAi,
    /// Anthropic's Messages API `tools`: `{"name", "description", "input_schema"}`.
    Anthropic,
    /// MCP's `tools/list` answer.
    Mcp,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::OpenAi, Format::Anthropic, Format::Mcp];

    pub fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Mcp => "mcp",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// The tools a caller of `role` has, in `format`.
pub fn tools(catalog: &Catalog, role: &Role, format: Format) -> Value {
    let tools = catalog.tools_for(role);
    match format {
        Format::OpenAi => Value::Array(
            tools
                .map(|t| {
                    json!({
                        "type": "function",
                        "function": { "name": t.name, "description": t.description, "parameters": t.input_schema },
                    })
                })
                .collect(),
        ),
        Format::Anthropic => Value::Array(
            tools
                .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.input_schema }))
                .collect(),
        ),
        Format::Mcp => json!({ "tools": tools.map(tool_json).collect::<Vec<_>>() }),
    }
}
