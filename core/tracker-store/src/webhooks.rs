//! Webhook endpoints (their signing secrets sealed like link secrets).

use std::collections::BTreeMap;

use libsql::Connection;
use serde::Serialize;

use crate::rows::{delete_owned, json_col, new_id, random_secret, to_json};
use crate::sealing::webhook_row;
use crate::{Page, Result, Store, StoreError, int, open_secret, opt_text, page, text};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub webhook_id: String,
    pub url: String,
    pub description: String,
    /// Event types delivered; empty means all.
    pub event_types: Vec<String>,
    /// Params an event must carry with exactly these values; empty means no condition.
    pub param_filters: BTreeMap<String, String>,
    pub enabled: bool,
    /// Why the platform disabled the endpoint (after repeated failed deliveries); cleared when it is enabled.
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A new webhook endpoint, or a change to one (`None` leaves a field as it is).
#[derive(Debug, Clone, Default)]
pub struct WebhookSpec {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub param_filters: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
}

/// Prefix of webhook signing secrets.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

pub(crate) const WEBHOOK_COLUMNS: &str =
    "webhook_id, url, description, event_types, param_filters, enabled, created_at, updated_at, disabled_reason";

pub(crate) fn webhook_from_row(row: &libsql::Row) -> Result<Webhook> {
    Ok(Webhook {
        webhook_id: text(row, 0, "webhook_id")?,
        url: text(row, 1, "url")?,
        description: text(row, 2, "description")?,
        event_types: json_col(row, 3, "event_types")?,
        param_filters: json_col(row, 4, "param_filters")?,
        enabled: int(row, 5, "enabled")? != 0,
        created_at: int(row, 6, "created_at")?,
        updated_at: int(row, 7, "updated_at")?,
        disabled_reason: opt_text(row, 8, "disabled_reason")?,
    })
}

impl Webhook {
    fn apply(&mut self, spec: WebhookSpec) {
        if let Some(u) = spec.url {
            self.url = u;
        }
        if let Some(d) = spec.description {
            self.description = d;
        }
        if let Some(e) = spec.event_types {
            self.event_types = e;
        }
        if let Some(p) = spec.param_filters {
            self.param_filters = p;
        }
        if let Some(e) = spec.enabled {
            self.enabled = e;
        }
    }
}

impl Store {
    /// Creates an endpoint (URL checked by the caller) and returns it with its signing secret (shown once; kept
    /// sealed with `SECRETS_KEY`, because deliveries must be signed with it).
    pub async fn create_webhook(&self, key_prefix: &str, spec: WebhookSpec, now_ms: i64) -> Result<(Webhook, String)> {
        self.create_webhook_within(key_prefix, spec, now_ms, None).await
    }

    /// Creates an endpoint if the tenant has fewer than `max` (checked in the insert itself).
    pub async fn create_webhook_within(
        &self,
        key_prefix: &str,
        spec: WebhookSpec,
        now_ms: i64,
        max: Option<u32>,
    ) -> Result<(Webhook, String)> {
        let mut hook = Webhook {
            webhook_id: new_id("wh"),
            url: String::new(),
            description: String::new(),
            event_types: Vec::new(),
            param_filters: BTreeMap::new(),
            enabled: true,
            disabled_reason: None,
            created_at: now_ms,
            updated_at: now_ms,
        };
        hook.apply(spec);
        if hook.url.is_empty() {
            return Err(StoreError::Invalid("url is required"));
        }
        let secret = random_secret(WEBHOOK_SECRET_PREFIX);
        let n = self
            .conn()
            .await?
            .execute(
                "INSERT INTO webhooks (webhook_id, key_prefix, url, description, event_types, param_filters, secret,
                   enabled, created_at, updated_at)
                 SELECT ?1, key_prefix, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9 FROM tenants WHERE key_prefix = ?2
                   AND (?10 IS NULL OR (SELECT COUNT(*) FROM webhooks WHERE key_prefix = ?2) < ?10)",
                (
                    hook.webhook_id.as_str(),
                    key_prefix,
                    hook.url.as_str(),
                    hook.description.as_str(),
                    to_json(&hook.event_types),
                    to_json(&hook.param_filters),
                    self.sealed(&secret, &webhook_row(&hook.webhook_id))?,
                    i64::from(hook.enabled),
                    now_ms,
                    max.map(i64::from),
                ),
            )
            .await?;
        if n == 0 {
            return Err(self.not_created(key_prefix, "webhook endpoints", max).await);
        }
        Ok((hook, secret))
    }

    pub async fn webhook(&self, key_prefix: &str, webhook_id: &str) -> Result<Option<Webhook>> {
        let conn = self.conn().await?;
        webhook_on(&conn, key_prefix, webhook_id).await
    }

    /// The signing secret of an endpoint (for deliveries).
    pub async fn webhook_secret(&self, key_prefix: &str, webhook_id: &str) -> Result<Option<String>> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query("SELECT secret FROM webhooks WHERE key_prefix = ?1 AND webhook_id = ?2", [key_prefix, webhook_id])
            .await?;
        match rows.next().await? {
            Some(row) => {
                Ok(Some(open_secret(self.sealer.as_ref(), text(&row, 0, "secret")?, &webhook_row(webhook_id))?))
            }
            None => Ok(None),
        }
    }

    pub async fn webhooks_page(&self, key_prefix: &str, after: Option<&str>, limit: u32) -> Result<Page<Webhook>> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE key_prefix = ?1 AND webhook_id > ?2 ORDER BY webhook_id LIMIT ?3"
        );
        page(self, &sql, vec![key_prefix.into()], after, limit, |w: &Webhook| &w.webhook_id, webhook_from_row).await
    }

    pub async fn update_webhook(
        &self,
        key_prefix: &str,
        webhook_id: &str,
        spec: WebhookSpec,
        now_ms: i64,
    ) -> Result<Webhook> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut hook = webhook_on(&tx, key_prefix, webhook_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("webhook {webhook_id}")))?;
        hook.apply(spec);
        hook.updated_at = now_ms;
        if hook.enabled {
            hook.disabled_reason = None;
        }
        // enabling an endpoint starts its run of failures afresh
        tx.execute(
            "UPDATE webhooks SET url = ?3, description = ?4, event_types = ?5, param_filters = ?6, enabled = ?7,
                   updated_at = ?8,
                   disabled_reason = CASE WHEN ?7 = 1 THEN NULL ELSE disabled_reason END,
                   consecutive_failures = CASE WHEN ?7 = 1 AND enabled = 0 THEN 0 ELSE consecutive_failures END
                 WHERE key_prefix = ?1 AND webhook_id = ?2",
            (
                key_prefix,
                webhook_id,
                hook.url.as_str(),
                hook.description.as_str(),
                to_json(&hook.event_types),
                to_json(&hook.param_filters),
                i64::from(hook.enabled),
                now_ms,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(hook)
    }

    pub async fn delete_webhook(&self, key_prefix: &str, webhook_id: &str) -> Result<()> {
        delete_owned(self, "webhooks", "webhook_id", "webhook", key_prefix, webhook_id).await
    }
}

pub(crate) async fn webhook_on(conn: &Connection, key_prefix: &str, webhook_id: &str) -> Result<Option<Webhook>> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE key_prefix = ?1 AND webhook_id = ?2");
    let mut rows = conn.query(&sql, [key_prefix, webhook_id]).await?;
    rows.next().await?.map(|r| webhook_from_row(&r)).transpose()
}
