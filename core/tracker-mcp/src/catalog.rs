//! The tools, made from the platform API's OpenAPI document: one tool per operation, its input schema from the
//! operation's parameters and request body, its output schema from its success response, its description from the
//! operation's text plus the `x-mcp.guide` written for a model. Nothing about an operation is written twice: a
//! field added to the API is a field of its tool.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::Error;

/// Who may see and call a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A tenant API key (the tools scoped to the key's tenant).
    Tenant,
    /// The platform admin credential.
    Admin,
    /// Any valid credential.
    Any,
}

/// The caller as the API knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Admin,
    Tenant,
}

impl Audience {
    pub fn admits(self, role: &Role) -> bool {
        matches!((self, role), (Audience::Any, _) | (Audience::Admin, Role::Admin) | (Audience::Tenant, Role::Tenant))
    }
}

/// How a tool's arguments become the request body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyShape {
    None,
    /// The body object's fields are top-level arguments (the common case).
    Fields(Vec<String>),
    /// The body is the `body` argument (its schema is not a plain object, or its fields clash with parameters).
    Whole,
}

/// One tool: an API operation as a model sees it.
#[derive(Debug, Clone)]
pub struct ToolDef {
    pub name: String,
    pub operation_id: String,
    pub title: String,
    pub description: String,
    /// `GET`, `POST`, ...
    pub method: String,
    /// Below `/api`, with `{param}` placeholders.
    pub path: String,
    pub audience: Audience,
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
    pub input_schema: Map<String, Value>,
    pub output_schema: Option<Map<String, Value>>,
    path_params: Vec<String>,
    query_params: Vec<String>,
    body: BodyShape,
}

/// An operation the document has that is deliberately not a tool, and why.
#[derive(Debug, Clone)]
pub struct Excluded {
    pub operation_id: String,
    pub reason: String,
}

/// A request to the platform API, below `/api`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiCall {
    pub method: String,
    pub path_and_query: String,
    pub body: Option<Value>,
}

/// The argument that a destructive tool needs, `true`, before it does anything.
pub const CONFIRM: &str = "confirm";

/// Every tool of one OpenAPI document.
#[derive(Debug, Clone)]
pub struct Catalog {
    tools: Vec<ToolDef>,
    excluded: Vec<Excluded>,
    document: String,
}

impl Catalog {
    /// The tools of the platform API's OpenAPI document (as `GET /api/openapi.json` serves it). Every operation
    /// needs an `x-mcp` object: the tool's guide for a model, or `{"exclude": "<why>"}`.
    pub fn from_openapi(document: &str) -> Result<Catalog, Error> {
        let doc: Value = serde_json::from_str(document).map_err(|e| Error::Document(e.to_string()))?;
        let paths = doc.get("paths").and_then(Value::as_object).ok_or_else(|| doc_err("no paths"))?;
        let mut tools = Vec::new();
        let mut excluded = Vec::new();
        for (path, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (method, op) in item {
                if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                    continue;
                }
                let id =
                    op.get("operationId").and_then(Value::as_str).ok_or_else(|| doc_err("an operation has no id"))?;
                let mcp = op.get("x-mcp").ok_or_else(|| doc_err(format!("{id} has no x-mcp")))?;
                if let Some(reason) = mcp.get("exclude").and_then(Value::as_str) {
                    excluded.push(Excluded { operation_id: id.to_owned(), reason: reason.to_owned() });
                    continue;
                }
                let below_api =
                    path.strip_prefix("/api").ok_or_else(|| doc_err(format!("{path} is not under /api")))?;
                tools.push(tool(&doc, below_api, &method.to_ascii_uppercase(), id, op, mcp)?);
            }
        }
        let mut names = std::collections::BTreeSet::new();
        if let Some(dup) = tools.iter().find(|t| !names.insert(t.name.clone())) {
            return Err(doc_err(format!("two operations are the tool {}", dup.name)));
        }
        Ok(Catalog { tools, excluded, document: document.to_owned() })
    }

    pub fn tools(&self) -> &[ToolDef] {
        &self.tools
    }

    /// The tools a caller may see.
    pub fn tools_for<'a>(&'a self, role: &'a Role) -> impl Iterator<Item = &'a ToolDef> + 'a {
        self.tools.iter().filter(move |t| t.audience.admits(role))
    }

    pub fn tool(&self, name: &str) -> Option<&ToolDef> {
        self.tools.iter().find(|t| t.name == name)
    }

    pub fn excluded(&self) -> &[Excluded] {
        &self.excluded
    }

    /// The OpenAPI document the tools were made from.
    pub fn document(&self) -> &str {
        &self.document
    }
}

fn doc_err(what: impl Into<String>) -> Error {
    Error::Document(what.into())
}

/// `listLinks` -> `list_links`.
fn snake_case(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 4);
    for c in id.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn tool(doc: &Value, path: &str, method: &str, id: &str, op: &Value, mcp: &Value) -> Result<ToolDef, Error> {
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let flag = |k: &str| mcp.get(k).and_then(Value::as_bool).unwrap_or(false);
    let audience = match mcp.get("audience").and_then(Value::as_str).unwrap_or("tenant") {
        "tenant" => Audience::Tenant,
        "admin" => Audience::Admin,
        "any" => Audience::Any,
        other => return Err(doc_err(format!("{id}: unknown audience {other}"))),
    };
    let guide = str_of(mcp, "guide");
    if guide.is_empty() {
        return Err(doc_err(format!("{id}: x-mcp.guide is empty (what it is for, when to use it, an example)")));
    }
    let mut defs = BTreeMap::new();
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut path_params = Vec::new();
    let mut query_params = Vec::new();
    for param in op.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        let param = resolve(doc, param)?;
        let name = str_of(param, "name");
        let mut schema = param.get("schema").cloned().unwrap_or_else(|| json!({}));
        if let (Some(obj), Some(d)) = (schema.as_object_mut(), param.get("description").and_then(Value::as_str)) {
            obj.insert("description".into(), d.into());
        }
        collect_refs(doc, &mut schema, &mut defs)?;
        match param.get("in").and_then(Value::as_str) {
            Some("path") => {
                required.push(Value::from(name.clone()));
                path_params.push(name.clone());
            }
            Some("query") => {
                if param.get("required").and_then(Value::as_bool) == Some(true) {
                    required.push(Value::from(name.clone()));
                }
                query_params.push(name.clone());
            }
            _ => continue, // headers (Idempotency-Key) are the transport's, not the model's
        }
        properties.insert(name, schema);
    }
    let mut body = BodyShape::None;
    if let Some(req) = op.get("requestBody") {
        let mut schema = req.pointer("/content/application~1json/schema").cloned().unwrap_or_else(|| json!({}));
        let body_required = req.get("required").and_then(Value::as_bool).unwrap_or(false);
        let resolved = resolve(doc, &schema)?.clone();
        let fields = resolved.get("properties").and_then(Value::as_object);
        match fields {
            Some(fields) if fields.keys().all(|k| !properties.contains_key(k) && k != CONFIRM) => {
                let mut names = Vec::new();
                for (k, v) in fields {
                    let mut v = v.clone();
                    collect_refs(doc, &mut v, &mut defs)?;
                    properties.insert(k.clone(), v);
                    names.push(k.clone());
                }
                for r in resolved.get("required").and_then(Value::as_array).into_iter().flatten() {
                    required.push(r.clone());
                }
                body = BodyShape::Fields(names);
            }
            _ => {
                collect_refs(doc, &mut schema, &mut defs)?;
                properties.insert("body".into(), schema);
                if body_required {
                    required.push("body".into());
                }
                body = BodyShape::Whole;
            }
        }
    }
    let destructive = flag("destructive");
    if destructive {
        properties.insert(
            CONFIRM.into(),
            json!({
                "type": "boolean",
                "const": true,
                "description": "This cannot be undone: set true only after the user has agreed to this change."
            }),
        );
        required.push(CONFIRM.into());
    }
    let mut input = Map::new();
    input.insert("type".into(), "object".into());
    input.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        input.insert("required".into(), Value::Array(required));
    }
    input.insert("additionalProperties".into(), false.into());
    if !defs.is_empty() {
        input.insert("$defs".into(), Value::Object(defs.into_iter().collect()));
    }
    let output_schema = output_schema(doc, op)?;
    let summary = str_of(op, "summary");
    let description = format!("{summary}. {}\n\n{guide}", str_of(op, "description")).trim().to_owned();
    let read_only = method == "GET";
    Ok(ToolDef {
        name: mcp.get("name").and_then(Value::as_str).map_or_else(|| snake_case(id), str::to_owned),
        operation_id: id.to_owned(),
        title: summary,
        description,
        method: method.to_owned(),
        path: path.to_owned(),
        audience,
        read_only,
        destructive,
        // the same change twice has no further effect: reads, replacements and deletions
        idempotent: read_only || matches!(method, "PUT" | "PATCH" | "DELETE"),
        open_world: flag("open_world"),
        input_schema: input,
        output_schema,
        path_params,
        query_params,
        body,
    })
}

/// The schema of the operation's JSON success answer, as a self-contained object schema (MCP wants an object at
/// the root); `None` for answers without a body (204).
fn output_schema(doc: &Value, op: &Value) -> Result<Option<Map<String, Value>>, Error> {
    let Some(responses) = op.get("responses").and_then(Value::as_object) else { return Ok(None) };
    let Some((_, ok)) = responses.iter().find(|(code, _)| code.starts_with('2')) else { return Ok(None) };
    let ok = resolve(doc, ok)?;
    let Some(schema) = ok.pointer("/content/application~1json/schema") else { return Ok(None) };
    let mut root = resolve(doc, schema)?.clone();
    let mut defs = BTreeMap::new();
    collect_refs(doc, &mut root, &mut defs)?;
    let Value::Object(mut root) = root else { return Err(doc_err("a response schema is not an object")) };
    root.entry("type").or_insert_with(|| "object".into());
    if root.get("type").and_then(Value::as_str) != Some("object") {
        return Ok(None);
    }
    if !defs.is_empty() {
        root.insert("$defs".into(), Value::Object(defs.into_iter().collect()));
    }
    Ok(Some(root))
}

/// A `$ref` to a component, followed (once; components do not point at components here).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Result<&'a Value, Error> {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').ok_or_else(|| doc_err(format!("external $ref {r}")))?;
            doc.pointer(pointer).ok_or_else(|| doc_err(format!("dangling $ref {r}")))
        }
        None => Ok(v),
    }
}

/// Rewrites `#/components/schemas/X` to `#/$defs/X` and gathers each X (and what it refers to) into `defs`, so a
/// tool's schema stands alone.
fn collect_refs(doc: &Value, v: &mut Value, defs: &mut BTreeMap<String, Value>) -> Result<(), Error> {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .ok_or_else(|| doc_err(format!("$ref {r} in a schema is not a component schema")))?
                    .to_owned();
                *r = format!("#/$defs/{name}");
                if !defs.contains_key(&name) {
                    let pointer = format!("/components/schemas/{}", name.replace('~', "~0").replace('/', "~1"));
                    let mut def = doc.pointer(&pointer).cloned().ok_or_else(|| doc_err(format!("no schema {name}")))?;
                    defs.insert(name.clone(), Value::Null); // placeholder: a schema that refers to itself
                    collect_refs(doc, &mut def, defs)?;
                    defs.insert(name, def);
                }
            }
            for value in map.values_mut() {
                collect_refs(doc, value, defs)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_refs(doc, item, defs)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved characters).
fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A scalar argument as it goes into a path or query.
fn scalar(name: &str, v: &Value) -> Result<String, Error> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(Error::Argument(format!("`{name}` must be a string, a number or a boolean"))),
    }
}

impl ToolDef {
    /// The API request for a call with these arguments. Unknown arguments, missing path parameters and a
    /// destructive call without `confirm: true` are refused here, before anything is sent.
    pub fn request(&self, args: &Map<String, Value>) -> Result<ApiCall, Error> {
        let known = self.input_schema.get("properties").and_then(Value::as_object);
        if let Some(unknown) = args.keys().find(|k| !known.is_some_and(|p| p.contains_key(*k))) {
            let names: Vec<&str> = known.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
            return Err(Error::Argument(format!(
                "unknown argument `{unknown}`; {} takes: {}",
                self.name,
                if names.is_empty() { "nothing".to_owned() } else { names.join(", ") }
            )));
        }
        if self.destructive && args.get(CONFIRM) != Some(&Value::Bool(true)) {
            return Err(Error::Unconfirmed(format!(
                "{} cannot be undone: ask the user, then call it again with `{CONFIRM}: true`",
                self.name
            )));
        }
        let mut path = self.path.clone();
        for name in &self.path_params {
            let value = args.get(name).ok_or_else(|| Error::Argument(format!("`{name}` is required")))?;
            let value = scalar(name, value)?;
            if value.is_empty() {
                return Err(Error::Argument(format!("`{name}` must not be empty")));
            }
            path = path.replace(&format!("{{{name}}}"), &segment(&value));
        }
        let mut query = form_urlencoded::Serializer::new(String::new());
        let mut any = false;
        for name in &self.query_params {
            match args.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        query.append_pair(name, &scalar(name, item)?);
                        any = true;
                    }
                }
                Some(v) => {
                    query.append_pair(name, &scalar(name, v)?);
                    any = true;
                }
            }
        }
        if any {
            path = format!("{path}?{}", query.finish());
        }
        let body = match &self.body {
            BodyShape::None => None,
            BodyShape::Whole => Some(args.get("body").cloned().unwrap_or_else(|| json!({}))),
            BodyShape::Fields(fields) => {
                Some(Value::Object(fields.iter().filter_map(|f| args.get(f).map(|v| (f.clone(), v.clone()))).collect()))
            }
        };
        Ok(ApiCall { method: self.method.clone(), path_and_query: path, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r##"{
      "openapi": "3.1.0",
      "paths": {
        "/api/links": {
          "get": {"operationId": "listLinks", "summary": "List links", "description": "Needs read.",
                  "x-mcp": {"guide": "Use it to find a link."},
                  "parameters": [{"$ref": "#/components/parameters/limit"}],
                  "responses": {"200": {"content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/LinkList"}}}}}},
          "post": {"operationId": "createLink", "summary": "Create a link",
                   "x-mcp": {"guide": "Example: destination https://example.com."},
                   "requestBody": {"required": true, "content": {"application/json": {
                       "schema": {"$ref": "#/components/schemas/CreateLink"}}}},
                   "responses": {"201": {"content": {"application/json": {
                       "schema": {"$ref": "#/components/schemas/Link"}}}}}}
        },
        "/api/links/{tu_id}": {
          "delete": {"operationId": "deleteLink", "summary": "Delete a link",
                     "x-mcp": {"guide": "Only when asked.", "destructive": true},
                     "parameters": [{"name": "tu_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                     "responses": {"204": {"description": "gone"}}}
        },
        "/api/session": {"post": {"operationId": "createSession", "x-mcp": {"exclude": "browsers only"}}},
        "/api/tenants": {"get": {"operationId": "listTenants", "summary": "List tenants",
                         "x-mcp": {"guide": "Admin.", "audience": "admin"},
                         "responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}}}}
      },
      "components": {
        "parameters": {"limit": {"name": "limit", "in": "query", "description": "Page size.",
                                 "schema": {"type": "integer"}}},
        "schemas": {
          "Link": {"type": "object", "properties": {"tu_id": {"type": "string"}}},
          "LinkList": {"type": "object", "properties": {"data": {"type": "array",
                                                                  "items": {"$ref": "#/components/schemas/Link"}}}},
          "CreateLink": {"type": "object", "required": ["destination"],
                         "properties": {"destination": {"type": "string"}, "name": {"type": "string"}}}
        }
      }
    }"##;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn operations_become_tools_with_self_contained_schemas() {
        let catalog = Catalog::from_openapi(DOC).expect("catalog");
        let names: Vec<&str> = catalog.tools().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["list_links", "create_link", "delete_link", "list_tenants"]);
        assert_eq!(catalog.excluded()[0].operation_id, "createSession");
        let list = catalog.tool("list_links").expect("list_links");
        assert!(list.read_only && !list.destructive && list.idempotent);
        assert_eq!(list.input_schema["properties"]["limit"]["description"], "Page size.");
        let out = list.output_schema.as_ref().expect("output schema");
        assert_eq!(out["properties"]["data"]["items"]["$ref"], "#/$defs/Link");
        assert_eq!(out["$defs"]["Link"]["properties"]["tu_id"]["type"], "string");
        assert!(list.description.starts_with("List links. Needs read.") && list.description.ends_with("find a link."));
        let create = catalog.tool("create_link").expect("create_link");
        assert_eq!(create.input_schema["required"], json!(["destination"]));
        assert_eq!(create.input_schema["additionalProperties"], false);
        assert!(!create.idempotent && !create.read_only);
        let delete = catalog.tool("delete_link").expect("delete_link");
        assert!(delete.output_schema.is_none());
        assert_eq!(delete.input_schema["required"], json!(["tu_id", CONFIRM]));
        let admin: Vec<&str> = catalog.tools_for(&Role::Admin).map(|t| t.name.as_str()).collect();
        assert_eq!(admin, ["list_tenants"]);
    }

    #[test]
    fn arguments_become_the_request() {
        let catalog = Catalog::from_openapi(DOC).expect("catalog");
        let list = catalog.tool("list_links").expect("tool");
        let call = list.request(&args(json!({"limit": 5}))).expect("request");
        assert_eq!((call.method.as_str(), call.path_and_query.as_str(), call.body), ("GET", "/links?limit=5", None));
        let create = catalog.tool("create_link").expect("tool");
        let call = create.request(&args(json!({"destination": "https://a.example/x y"}))).expect("request");
        assert_eq!(call.body, Some(json!({"destination": "https://a.example/x y"})));
        let delete = catalog.tool("delete_link").expect("tool");
        let call = delete.request(&args(json!({"tu_id": "a/b c", "confirm": true}))).expect("request");
        assert_eq!(call.path_and_query, "/links/a%2Fb%20c");
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let catalog = Catalog::from_openapi(DOC).expect("catalog");
        let delete = catalog.tool("delete_link").expect("tool");
        let unconfirmed = delete.request(&args(json!({"tu_id": "x"}))).expect_err("needs confirm");
        assert!(matches!(unconfirmed, Error::Unconfirmed(_)), "{unconfirmed}");
        let no_id = delete.request(&args(json!({"confirm": true}))).expect_err("needs the id");
        assert!(no_id.to_string().contains("`tu_id` is required"), "{no_id}");
        let unknown = catalog.tool("list_links").expect("tool").request(&args(json!({"tenant": "other"})));
        assert!(unknown.expect_err("unknown").to_string().contains("unknown argument `tenant`"));
        let object = delete.request(&args(json!({"tu_id": {"a": 1}, "confirm": true}))).expect_err("object id");
        assert!(object.to_string().contains("must be a string"), "{object}");
    }

    #[test]
    fn an_operation_without_a_guide_is_an_error() {
        let doc = DOC.replace(r#""x-mcp": {"guide": "Use it to find a link."},"#, "");
        let err = Catalog::from_openapi(&doc).expect_err("no x-mcp");
        assert!(err.to_string().contains("listLinks has no x-mcp"), "{err}");
    }
}
