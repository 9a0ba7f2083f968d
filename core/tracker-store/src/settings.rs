//! Platform settings an operator changes at run time, and the audit log of operators' changes.
//!
//! The one setting today is the tenant that owns events naming none of their own: clicks on v1 links signed
//! with the server's global secret, and v1 postbacks and pixels without a `key_prefix` (the replaced system kept
//! them under no tenant, where no credential could read them).

use serde::Serialize;

use crate::{Result, Store, StoreError, int, text};

/// The setting naming the tenant of events that name none.
pub const GLOBAL_TENANT_SETTING: &str = "global_tenant";

/// One operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    /// ms since the epoch.
    pub at: i64,
    /// Who did it (`cli`, `admin`, ...).
    pub actor: String,
    pub action: String,
    /// What changed, as JSON.
    pub detail: serde_json::Value,
}

/// Appends an audit entry on `conn` (inside the caller's transaction, so the entry and the change commit together).
pub(crate) async fn audit_on(
    conn: &libsql::Connection,
    actor: &str,
    action: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        (now_ms, actor, action, detail.to_string()),
    )
    .await?;
    Ok(())
}

impl Store {
    /// The tenant that owns events naming none (`None` until an operator assigns one).
    pub async fn global_tenant(&self) -> Result<Option<String>> {
        let conn = self.conn().await?;
        let mut rows = conn.query("SELECT value FROM settings WHERE name = ?1", [GLOBAL_TENANT_SETTING]).await?;
        match rows.next().await? {
            Some(row) => Ok(Some(text(&row, 0, "value")?)),
            None => Ok(None),
        }
    }

    /// Assigns (or, with `None`, unassigns) the tenant that owns events naming none; audited.
    pub async fn assign_global_tenant(&self, key_prefix: Option<&str>, actor: &str, now_ms: i64) -> Result<()> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let before = {
            let mut rows = tx.query("SELECT value FROM settings WHERE name = ?1", [GLOBAL_TENANT_SETTING]).await?;
            match rows.next().await? {
                Some(row) => Some(text(&row, 0, "value")?),
                None => None,
            }
        };
        match key_prefix {
            Some(p) => {
                let mut rows = tx.query("SELECT 1 FROM tenants WHERE key_prefix = ?1", [p]).await?;
                if rows.next().await?.is_none() {
                    drop(rows);
                    tx.rollback().await?;
                    return Err(StoreError::NotFound(format!("tenant {p}")));
                }
                drop(rows);
                tx.execute(
                    "INSERT INTO settings (name, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    (GLOBAL_TENANT_SETTING, p, now_ms),
                )
                .await?;
            }
            None => {
                tx.execute("DELETE FROM settings WHERE name = ?1", [GLOBAL_TENANT_SETTING]).await?;
            }
        }
        let detail = serde_json::json!({ "before": before, "after": key_prefix });
        audit_on(&tx, actor, "assign_global_tenant", &detail, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query("SELECT seq, at, actor, action, detail FROM audit_log ORDER BY seq DESC LIMIT ?1", [limit])
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push(AuditEntry {
                seq: int(&row, 0, "seq")?,
                at: int(&row, 1, "at")?,
                actor: text(&row, 2, "actor")?,
                action: text(&row, 3, "action")?,
                detail: serde_json::from_str(&text(&row, 4, "detail")?).map_err(|_| StoreError::BadColumn("detail"))?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_global_tenant_is_assigned_to_a_tenant_that_exists_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).await.unwrap();
        assert_eq!(store.global_tenant().await.unwrap(), None);
        assert!(matches!(store.assign_global_tenant(Some("nobody"), "cli", 1).await, Err(StoreError::NotFound(_))));
        store.create_tenant("Acme", Some("acme"), 1).await.unwrap();
        store.assign_global_tenant(Some("acme"), "cli", 2).await.unwrap();
        assert_eq!(store.global_tenant().await.unwrap().as_deref(), Some("acme"));
        store.assign_global_tenant(None, "admin", 3).await.unwrap();
        assert_eq!(store.global_tenant().await.unwrap(), None);
        let log = store.audit_log(10).await.unwrap();
        assert_eq!(log.len(), 2, "the refused assignment left no entry");
        assert_eq!(
            (log[0].actor.as_str(), &log[0].detail),
            ("admin", &serde_json::json!({"before": "acme", "after": null}))
        );
        assert_eq!(log[1].detail, serde_json::json!({"before": null, "after": "acme"}));
    }
}
