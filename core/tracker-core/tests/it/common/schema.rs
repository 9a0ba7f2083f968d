//! Checks answers against the OpenAPI document: the operation exists, the status is documented, and the JSON
//! body matches the documented schema. A small JSON Schema subset: `$ref`, `type` (also as a list), `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`, `oneOf`, `anyOf`, `pattern`, `minimum`,
//! `maximum`. Keywords outside it fail the check, so the document cannot silently outgrow the checker.

use serde_json::Value;

const KNOWN: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "oneOf",
    "anyOf",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "format",
    "description",
    "title",
    "example",
    "examples",
    "default",
    "uniqueItems",
];

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

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// Errors of `value` against `schema` (empty when it matches), with JSON pointers.
pub fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let Some(obj) = schema.as_object() else { return };
    for k in obj.keys() {
        assert!(KNOWN.contains(&k.as_str()), "the schema checker does not know `{k}` (at {at})");
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_matches(t, value) => {
            return errors.push(format!("{at}: expected {t}, got {value}"));
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_matches(t.as_str().unwrap_or_default(), value)) => {
            return errors.push(format!("{at}: expected one of {ts:?}, got {value}"));
        }
        _ => {}
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {e:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        errors.push(format!("{at}: {value} is not {c}"));
    }
    if let (Some(p), Some(s)) = (schema.get("pattern").and_then(Value::as_str), value.as_str())
        && !regex::Regex::new(p).unwrap().is_match(s)
    {
        errors.push(format!("{at}: {s:?} does not match {p}"));
    }
    if let Some(n) = value.as_f64() {
        if schema.get("minimum").and_then(Value::as_f64).is_some_and(|m| n < m) {
            errors.push(format!("{at}: {n} is below the minimum"));
        }
        if schema.get("maximum").and_then(Value::as_f64).is_some_and(|m| n > m) {
            errors.push(format!("{at}: {n} is above the maximum"));
        }
    }
    for (key, combine) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let matching = options
                .iter()
                .filter(|o| {
                    let mut e = Vec::new();
                    check(doc, o, value, at, &mut e);
                    e.is_empty()
                })
                .count();
            if matching == 0 || (combine && matching > 1) {
                errors.push(format!("{at}: {matching} of the {key} options match {value}"));
            }
        }
    }
    if let Some(map) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !map.contains_key(r) {
                errors.push(format!("{at}: missing required `{r}`"));
            }
        }
        for (k, v) in map {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, v, &format!("{at}/{k}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{at}: undocumented property `{k}`")),
                    Some(s @ Value::Object(_)) => check(doc, s, v, &format!("{at}/{k}"), errors),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(doc, items, v, &format!("{at}/{i}"), errors);
        }
    }
}

/// Panics unless the answer is documented for the operation and its body matches.
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
            let mut errors = Vec::new();
            check(doc, schema, body, "", &mut errors);
            assert!(errors.is_empty(), "{method} {path} {status} does not match the document: {errors:#?}\n{body:#}");
        }
        None => assert!(body.is_null(), "{method} {path} {status} has an undocumented body {body}"),
    }
}
