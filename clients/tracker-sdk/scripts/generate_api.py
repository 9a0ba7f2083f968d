#!/usr/bin/env python3
"""Generates src/api.rs, the typed platform API client, from the OpenAPI document the node serves
(core/tracker-core/src/http/api/openapi.json): a struct per object schema (nested ones named after their parent and
field), a query struct per operation with query parameters, and an async method per operation, named by its
operationId in snake case. ``python3 scripts/generate_api.py`` rewrites the file; ``--check`` fails when it is not
current (make test)."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SPEC = json.loads((HERE / "../../core/tracker-core/src/http/api/openapi.json").read_text())
TARGET = HERE / "src/api.rs"
structs: list[str] = []


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\W]+", name) if part)


def ref(r: str) -> str:
    return r.rsplit("/", 1)[1]


def doc(text: str, indent: str) -> str:
    text = (text or "").strip()
    if not text:
        return ""
    # rustdoc reads these as Markdown: keep text, escape what would start a code block or link
    out = []
    for line in text.split("\n"):
        line = line.replace("[", "\\[").replace("]", "\\]")
        out += textwrap.wrap(line, 116 - len(indent), break_on_hyphens=False, break_long_words=False) or [""]
    return "".join(f"{indent}/// {line}".rstrip() + "\n" for line in out)


def rust_type(s: dict, owner: str, field: str) -> str:
    if not s or set(s) <= {"description", "default"}:
        return "serde_json::Value"
    if "$ref" in s:
        return ref(s["$ref"])
    if "const" in s or "enum" in s:
        return "String"
    if any(k in s for k in ("oneOf", "anyOf", "allOf")):
        return "serde_json::Value"
    types = s.get("type")
    if isinstance(types, list):
        inner = [t for t in types if t != "null"]
        base = rust_type({**s, "type": inner[0]}, owner, field) if len(inner) == 1 else "serde_json::Value"
        return f"Option<{base}>" if "null" in types else base
    if types == "string":
        return "String"
    if types == "integer":
        return "i64"
    if types == "number":
        return "f64"
    if types == "boolean":
        return "bool"
    if types == "array":
        return f"Vec<{rust_type(s.get('items', {}), owner, field)}>"
    if types == "object" or types is None:
        if s.get("properties"):
            name = owner + pascal(field)
            struct(name, s)
            return name
        extra = s.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"std::collections::BTreeMap<String, {rust_type(extra, owner, field)}>"
        return "serde_json::Value"
    return "serde_json::Value"


def field_name(name: str) -> str:
    keywords = {
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "do", "dyn", "else", "enum",
        "extern", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro", "match", "mod", "move",
        "mut", "override", "priv", "pub", "ref", "return", "static", "struct", "trait", "try", "type", "typeof",
        "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
    }
    return f"r#{name}" if name in keywords else name


def struct(name: str, s: dict) -> None:
    required = set(s.get("required", []))
    lines = [doc(s.get("description", ""), ""), "#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]\n"]
    lines.append(f"pub struct {name} {{\n")
    for prop, ps in s["properties"].items():
        t = rust_type(ps, name, prop)
        lines.append(doc(ps.get("description", ""), "    "))
        if prop not in required and not t.startswith("Option<"):
            t = f"Option<{t}>"
        if t.startswith("Option<"):
            lines.append('    #[serde(default, skip_serializing_if = "Option::is_none")]\n')
        lines.append(f"    pub {field_name(prop)}: {t},\n")
    lines.append("}\n")
    structs.append("".join(lines))


aliases = []
for name, s in SPEC["components"]["schemas"].items():
    if s.get("properties") and not any(k in s for k in ("oneOf", "anyOf")):
        struct(name, s)
    else:
        aliases.append(doc(s.get("description", ""), "") + f"pub type {name} = {rust_type(s, name, '')};\n")

methods = []
for path, item in SPEC["paths"].items():
    for method, op in item.items():
        if method not in ("get", "post", "put", "patch", "delete"):
            continue
        params = [SPEC["components"]["parameters"][ref(p["$ref"])] if "$ref" in p else p for p in op.get("parameters", [])]
        path_params = [p for p in params if p["in"] == "path"]
        query_params = [p for p in params if p["in"] == "query"]
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        ok = next((v for k, v in op["responses"].items() if k.startswith("2")), {})
        answer = ok.get("content", {}).get("application/json", {}).get("schema")
        fn = snake(op["operationId"])
        args = ["&self"] + [f"{p['name']}: &str" for p in path_params]
        if body:
            args.append(f"body: &{rust_type(body, pascal(fn), 'body')}")
        query = "None::<&()>"
        if query_params:
            qname = pascal(fn) + "Query"
            struct(qname, {"description": f"The query of `{fn}`.", "properties": {p["name"]: p["schema"] for p in query_params}})
            structs[-1] = structs[-1].replace("Deserialize)]", "Deserialize, Default)]")
            args.append(f"query: &{qname}")
            query = "Some(query)"
        out = rust_type(answer, pascal(fn), "answer") if answer else "()"
        url = re.sub(r"\{(\w+)\}", lambda m: "{}", path)
        fmt_args = "".join(f", segment({p['name']})" for p in path_params)
        summary = ". ".join(x for x in (op.get("summary"), op.get("description")) if x)
        target = f'&format!("{url}"{fmt_args})' if path_params else f'"{path}"'
        call = f'self.request::<_, _, {out}>("{method.upper()}", {target}, {"Some(body)" if body else "None::<&()>"}, {query})'
        if out == "()":
            call = call.replace(f"::<_, _, {out}>", "::<_, _, serde_json::Value>") + ".await.map(|_| ())"
        else:
            call += ".await"
        methods.append(
            doc(f"{summary} `{method.upper()} {path}`", "    ")
            + f"    pub async fn {fn}({', '.join(args)}) -> Result<{out}, SdkError> {{\n        {call}\n    }}\n"
        )

source = f"""//! The platform API, one method per operation of its OpenAPI document.
//!
//! Generated by `scripts/generate_api.py` from the platform's OpenAPI document ({SPEC["info"]["title"]}
//! {SPEC["info"]["version"]}); do not edit.

#![allow(clippy::doc_markdown, clippy::too_many_lines, missing_docs)]

use serde::{{Deserialize, Serialize}};

// the document has a schema named `Error`: the SDK's own is `SdkError` here
use crate::Error as SdkError;

{"".join(a + chr(10) for a in aliases)}{chr(10).join(structs)}
/// The platform API. Refusals are [`SdkError::Refused`] with the platform's error code and HTTP status.
///
/// ```no_run
/// # async fn example() -> Result<(), tracker_sdk::Error> {{
/// use tracker_sdk::api::{{ApiClient, CreateLink}};
///
/// let platform = ApiClient::new("https://track.example.com", "trk_key_...");
/// let link = platform.create_link(&CreateLink {{
///     destination: "https://shop.example/".into(),
///     name: Some("spring".into()),
///     fallback_url: None,
///     expires_at: None,
/// }}).await?;
/// println!("{{}}", link.tu_id);
/// # Ok(()) }}
/// ```
#[derive(Debug, Clone)]
pub struct ApiClient {{
    base: String,
    key: String,
    http: reqwest::Client,
}}

fn segment(value: &str) -> String {{
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}}

impl ApiClient {{
    /// `base_url` is the platform's, e.g. `https://track.example.com`; `api_key` a tenant API key or the admin
    /// credential.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {{
        ApiClient {{
            base: base_url.into().trim_end_matches('/').to_owned(),
            key: api_key.into(),
            http: reqwest::Client::new(),
        }}
    }}

    async fn request<B: Serialize, Q: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Result<T, SdkError> {{
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| SdkError::Network(e.to_string()))?;
        let mut request = self.http.request(method, format!("{{}}{{path}}", self.base)).bearer_auth(&self.key);
        if let Some(query) = query {{
            request = request.query(query);
        }}
        if let Some(body) = body {{
            request = request.json(body);
        }}
        let answer = request.send().await.map_err(|e| SdkError::Network(e.to_string()))?;
        let status = answer.status().as_u16();
        let text = answer.text().await.map_err(|e| SdkError::Network(e.to_string()))?;
        if !(200..300).contains(&status) {{
            return Err(SdkError::from_answer(status, &text));
        }}
        serde_json::from_str(if text.is_empty() {{ "null" }} else {{ &text }}).map_err(|e| SdkError::Network(e.to_string()))
    }}

{chr(10).join(methods)}}}
"""

# formatted as `cargo fmt` would (the repository's rustfmt.toml), so the file is both generated and formatted
formatted = subprocess.run(
    ["rustfmt", "--edition", "2024", "--config-path", str(HERE / "../../rustfmt.toml"), "--emit", "stdout", "-q"],
    input=source, capture_output=True, text=True,
)
if formatted.returncode != 0:
    sys.exit(f"rustfmt refused the generated source:\n{formatted.stderr}")
source = formatted.stdout

if "--check" in sys.argv:
    current = TARGET.read_text() if TARGET.exists() else ""
    if current != source:
        sys.exit("clients/tracker-sdk/src/api.rs is not generated from the current OpenAPI document: "
                 "run python3 clients/tracker-sdk/scripts/generate_api.py (then cargo fmt)")
    print(f"api.rs is current ({len(methods)} operations)")
else:
    TARGET.write_text(source)
    print(f"wrote src/api.rs ({len(methods)} operations)")
