//! Filter rules: what the filter consumer drops or flags, per tenant.

use serde::Serialize;

use crate::rows::{delete_owned, new_id};
use crate::{Page, Result, Store, StoreError, int, opt_text, page, text};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterRule {
    pub rule_id: String,
    pub field: String,
    pub operator: String,
    pub value: Option<String>,
    pub action: String,
    pub enabled: bool,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new rule, or a change to one (`None` leaves a field as it is); the caller checks that the result makes sense.
#[derive(Debug, Clone, Default)]
pub struct RuleSpec {
    pub field: Option<String>,
    pub operator: Option<String>,
    pub value: Option<Option<String>>,
    pub action: Option<String>,
    pub enabled: Option<bool>,
    pub description: Option<String>,
}

impl FilterRule {
    /// The rule with `spec` applied (not stored).
    pub fn with(mut self, spec: RuleSpec) -> FilterRule {
        if let Some(f) = spec.field {
            self.field = f;
        }
        if let Some(o) = spec.operator {
            self.operator = o;
        }
        if let Some(v) = spec.value {
            self.value = v;
        }
        if let Some(a) = spec.action {
            self.action = a;
        }
        if let Some(e) = spec.enabled {
            self.enabled = e;
        }
        if let Some(d) = spec.description {
            self.description = d;
        }
        self
    }

    /// A rule with nothing set yet, `enabled`.
    pub fn blank(now_ms: i64) -> FilterRule {
        FilterRule {
            rule_id: new_id("rule"),
            field: String::new(),
            operator: String::new(),
            value: None,
            action: String::new(),
            enabled: true,
            description: String::new(),
            created_at: now_ms,
            updated_at: now_ms,
        }
    }
}

pub(crate) const RULE_COLUMNS: &str =
    "rule_id, field, operator, value, action, enabled, description, created_at, updated_at";

pub(crate) fn rule_from_row(row: &libsql::Row) -> Result<FilterRule> {
    Ok(FilterRule {
        rule_id: text(row, 0, "rule_id")?,
        field: text(row, 1, "field")?,
        operator: text(row, 2, "operator")?,
        value: opt_text(row, 3, "value")?,
        action: text(row, 4, "action")?,
        enabled: int(row, 5, "enabled")? != 0,
        description: text(row, 6, "description")?,
        created_at: int(row, 7, "created_at")?,
        updated_at: int(row, 8, "updated_at")?,
    })
}

impl Store {
    /// Stores a new rule (built with [`FilterRule::blank`] and checked by the caller).
    pub async fn create_rule(&self, key_prefix: &str, rule: &FilterRule) -> Result<()> {
        let n = self
            .conn()
            .await?
            .execute(
                "INSERT INTO filter_rules (rule_id, key_prefix, field, operator, value, action, enabled, description,
                   created_at, updated_at)
                 SELECT ?1, key_prefix, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 FROM tenants WHERE key_prefix = ?2",
                libsql::params![
                    rule.rule_id.as_str(),
                    key_prefix,
                    rule.field.as_str(),
                    rule.operator.as_str(),
                    rule.value.clone(),
                    rule.action.as_str(),
                    i64::from(rule.enabled),
                    rule.description.as_str(),
                    rule.created_at,
                    rule.updated_at
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("tenant {key_prefix}")));
        }
        Ok(())
    }

    pub async fn rule(&self, key_prefix: &str, rule_id: &str) -> Result<Option<FilterRule>> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM filter_rules WHERE key_prefix = ?1 AND rule_id = ?2");
        let conn = self.conn().await?;
        let mut rows = conn.query(&sql, [key_prefix, rule_id]).await?;
        rows.next().await?.map(|r| rule_from_row(&r)).transpose()
    }

    pub async fn rules_page(&self, key_prefix: &str, after: Option<&str>, limit: u32) -> Result<Page<FilterRule>> {
        let sql = format!(
            "SELECT {RULE_COLUMNS} FROM filter_rules WHERE key_prefix = ?1 AND rule_id > ?2 ORDER BY rule_id LIMIT ?3"
        );
        page(self, &sql, vec![key_prefix.into()], after, limit, |r: &FilterRule| &r.rule_id, rule_from_row).await
    }

    /// Applies `spec` to a rule in one transaction, if `check` accepts the result (its reason is returned as
    /// [`StoreError::Rejected`]); concurrent changes apply one after the other.
    pub async fn update_rule(
        &self,
        key_prefix: &str,
        rule_id: &str,
        spec: RuleSpec,
        now_ms: i64,
        check: impl FnOnce(&FilterRule) -> std::result::Result<(), String>,
    ) -> Result<FilterRule> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let sql = format!("SELECT {RULE_COLUMNS} FROM filter_rules WHERE key_prefix = ?1 AND rule_id = ?2");
        let mut rows = tx.query(&sql, [key_prefix, rule_id]).await?;
        let current = rows.next().await?.map(|r| rule_from_row(&r)).transpose()?;
        drop(rows);
        let mut rule = current.ok_or_else(|| StoreError::NotFound(format!("rule {rule_id}")))?.with(spec);
        rule.updated_at = now_ms;
        check(&rule).map_err(StoreError::Rejected)?;
        tx.execute(
            "UPDATE filter_rules SET field = ?3, operator = ?4, value = ?5, action = ?6, enabled = ?7, description = ?8,
               updated_at = ?9
             WHERE key_prefix = ?1 AND rule_id = ?2",
            libsql::params![
                key_prefix,
                rule.rule_id.as_str(),
                rule.field.as_str(),
                rule.operator.as_str(),
                rule.value.clone(),
                rule.action.as_str(),
                i64::from(rule.enabled),
                rule.description.as_str(),
                rule.updated_at
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(rule)
    }

    pub async fn delete_rule(&self, key_prefix: &str, rule_id: &str) -> Result<()> {
        delete_owned(self, "filter_rules", "rule_id", "rule", key_prefix, rule_id).await
    }
}
