//! `/api/rules`: a tenant's filter rules, applied by the filter consumer. A rule reads one field of an event,
//! compares it with an operator, and drops or flags the event on a match. Rules are checked here so the filter
//! never meets one it cannot run: regexes compile within a size limit, CIDRs parse, fields exist.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracker_protocol::is_valid_name;
use tracker_store::{FilterRule, RuleSpec};

use super::{Body, PageQuery, Principal, Query, check_text, json, listing, not_found, nullable, store_err};
use crate::http::ApiError;
use crate::http::Segment;
use crate::state::AppState;

/// Event fields a rule can read, besides `param:<key>`.
pub const FIELDS: &[&str] =
    &["user_agent", "ip", "referer", "event_type", "host", "path", "accept_language", "key_prefix"];
pub const OPERATORS: &[&str] = &["equals", "contains", "starts_with", "regex", "cidr", "is_empty"];
pub const ACTIONS: &[&str] = &["drop", "flag"];

/// Most rules per tenant (every event of the tenant is checked against all of them).
const MAX_RULES: usize = 200;
// the count below reads one page
const _: () = assert!(MAX_RULES as u32 <= tracker_store::MAX_PAGE);

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_rule", reason)
}

/// Whether a rule is one the filter can run.
pub fn check(rule: &FilterRule) -> Result<(), ApiError> {
    let field_ok = FIELDS.contains(&rule.field.as_str())
        || rule.field.strip_prefix("param:").is_some_and(|k| is_valid_name(k, 64));
    if !field_ok {
        return Err(bad(format!("field must be one of {} or param:<key>", FIELDS.join(", "))));
    }
    if !OPERATORS.contains(&rule.operator.as_str()) {
        return Err(bad(format!("operator must be one of {}", OPERATORS.join(", "))));
    }
    if !ACTIONS.contains(&rule.action.as_str()) {
        return Err(bad("action must be drop or flag"));
    }
    check_text("description", &rule.description, 500)?;
    match (rule.operator.as_str(), rule.value.as_deref()) {
        ("is_empty", Some(_)) => return Err(bad("is_empty takes no value")),
        ("is_empty", None) => {}
        (_, None) => return Err(bad("this operator needs a value")),
        (_, Some(v)) if v.is_empty() || v.len() > 1024 => return Err(bad("value must be 1 to 1024 bytes")),
        ("cidr", Some(_)) if rule.field != "ip" => return Err(bad("cidr applies to the ip field")),
        _ => {}
    }
    // the filter compiles it exactly like this: a rule accepted here is one it can run
    tracker_filter::Rule::compile(&rule.rule_id, &rule.field, &rule.operator, rule.value.as_deref(), &rule.action)
        .map(|_| ())
        .map_err(|e| bad(format!("the rule cannot run: {}", e.0)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    field: Option<String>,
    operator: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    value: Option<Option<String>>,
    action: Option<String>,
    enabled: Option<bool>,
    description: Option<String>,
}

impl From<RuleBody> for RuleSpec {
    fn from(b: RuleBody) -> Self {
        RuleSpec {
            field: b.field,
            operator: b.operator,
            value: b.value,
            action: b.action,
            enabled: b.enabled,
            description: b.description,
        }
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Body(body): Body<RuleBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    let rule = FilterRule::blank(state.clock.now_ms()).with(body.into());
    check(&rule)?;
    let existing = state.store.rules_page(&tenant.key_prefix, None, tracker_store::MAX_PAGE).await?;
    if existing.items.len() >= MAX_RULES {
        return Err(ApiError::new(StatusCode::CONFLICT, "too_many_rules", format!("at most {MAX_RULES} rules")));
    }
    state.store.create_rule(&tenant.key_prefix, &rule).await.map_err(store_err("tenant"))?;
    Ok(json(StatusCode::CREATED, &rule))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(q): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let (limit, after) = q.parts()?;
    Ok(listing(state.store.rules_page(&tenant.key_prefix, after.as_deref(), limit).await?, |r| r))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("read")?;
    let rule = state.store.rule(&tenant.key_prefix, &id).await?.ok_or_else(|| not_found("rule"))?;
    Ok(json(StatusCode::OK, &rule))
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
    Body(body): Body<RuleBody>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    let checked = |rule: &FilterRule| check(rule).map_err(|e| e.message);
    let rule = state
        .store
        .update_rule(&tenant.key_prefix, &id, body.into(), state.clock.now_ms(), checked)
        .await
        .map_err(store_err("rule"))?;
    Ok(json(StatusCode::OK, &rule))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant("write")?;
    state.store.delete_rule(&tenant.key_prefix, &id).await.map_err(store_err("rule"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(field: &str, op: &str, value: Option<&str>) -> FilterRule {
        FilterRule::blank(0).with(RuleSpec {
            field: Some(field.into()),
            operator: Some(op.into()),
            value: Some(value.map(String::from)),
            action: Some("drop".into()),
            ..RuleSpec::default()
        })
    }

    #[test]
    fn rules_the_filter_cannot_run_are_refused() {
        assert!(check(&rule("user_agent", "regex", Some("(?i)bot|crawler"))).is_ok());
        assert!(check(&rule("ip", "cidr", Some("203.0.113.0/24"))).is_ok());
        assert!(check(&rule("param:utm_source", "equals", Some("spam"))).is_ok());
        assert!(check(&rule("referer", "is_empty", None)).is_ok());
        assert!(check(&rule("user_agent", "regex", Some("(unclosed"))).is_err());
        assert!(check(&rule("user_agent", "regex", Some("a{1000}{1000}"))).is_err(), "over the size limit");
        assert!(check(&rule("ip", "cidr", Some("203.0.113.0/33"))).is_err());
        assert!(check(&rule("user_agent", "cidr", Some("10.0.0.0/8"))).is_err());
        assert!(check(&rule("cookie", "equals", Some("x"))).is_err());
        assert!(check(&rule("param:", "equals", Some("x"))).is_err());
        assert!(check(&rule("ip", "equals", None)).is_err());
        assert!(check(&rule("ip", "is_empty", Some("x"))).is_err());
        assert!(check(&rule("ip", "matches", Some("x"))).is_err());
    }
}
