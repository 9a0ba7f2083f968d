//! Checks answers against the OpenAPI document: the operation exists, the status is documented, and the JSON
//! body matches the documented schema, checked by a JSON Schema validator (the `jsonschema` crate; OpenAPI 3.1
//! schemas are JSON Schema 2020-12) with the document's components to resolve `$ref`s against.

use serde_json::Value;

/// The operation object for a concrete request path (static segments win over `{params}`).
pub fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, &Value)> = None;
    for (template, item) in doc["paths"].as_object()? {
        let t: Vec<&str> = template.split('/').collect();
        if t.len() != segments.len() {
            continue;
        }
        let mut statics = 0;
        let fits = t.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') {
                true
            } else {
                statics += 1;
                t == s
            }
        });
        if fits && best.is_none_or(|(n, _)| statics > n) {
            best = Some((statics, item));
        }
    }
    best.and_then(|(_, item)| item.get(method.to_ascii_lowercase()))
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}")))
        }
        None => schema,
    }
}

pub fn assert_documented(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let op = operation(doc, method, path).unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI document"));
    let responses = &op["responses"];
    let response = responses
        .get(status.to_string())
        .or_else(|| responses.get(format!("{}XX", status / 100)))
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, which the document does not list"));
    let response = resolve(doc, response);
    match response.pointer("/content/application~1json/schema") {
        Some(schema) => {
            // the schema as a document of its own, with the components its `$ref`s point into
            let mut root = schema.clone();
            root["components"] = doc["components"].clone();
            let validator = jsonschema::draft202012::new(&root)
                .unwrap_or_else(|e| panic!("{method} {path} {status}: the documented schema is invalid: {e}"));
            let errors: Vec<String> =
                validator.iter_errors(body).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{method} {path} {status} does not match the document: {errors:#?}\n{body:#}");
        }
        None => assert!(body.is_null(), "{method} {path} {status} has an undocumented body {body}"),
    }
}

/// The check fails where the document says otherwise: a wrong type, a missing required or undocumented property,
/// a `$ref` into the components followed.
#[test]
fn the_check_refuses_what_the_document_does_not_allow() {
    let doc = serde_json::json!({
        "paths": { "/x": { "get": { "responses": { "200": { "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/X" } } } } } } } },
        "components": { "schemas": { "X": {
            "type": "object", "required": ["n"], "additionalProperties": false,
            "properties": { "n": { "type": "integer", "minimum": 0 } } } } }
    });
    assert_documented(&doc, "GET", "/x", 200, &serde_json::json!({ "n": 3 }));
    for bad in [serde_json::json!({ "n": "3" }), serde_json::json!({}), serde_json::json!({ "n": 1, "m": 2 })] {
        let refused = std::panic::catch_unwind(|| assert_documented(&doc, "GET", "/x", 200, &bad));
        assert!(refused.is_err(), "{bad} passed");
    }
}
