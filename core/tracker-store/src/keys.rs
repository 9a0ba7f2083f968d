//! API keys: scoped credentials of the platform API, stored as SHA-256 hashes and shown once.

use serde::Serialize;

use crate::rows::{json_col, new_id, random_secret};
use crate::{Page, Result, Store, StoreError, Tenant, hash_token, int, opt_int, page, text};

/// Prefix of API keys, so they are recognisable in logs and by secret scanners.
pub const API_KEY_PREFIX: &str = "trk_key_";

/// What an API key may do: `read` (GET), `write` (change links, webhooks and rules), `admin` (manage keys and
/// tokens), `stream` (open live event streams, nothing else: for short-lived browser tokens). Scopes do not imply
/// each other; a key gets exactly the ones it was created with.
pub const SCOPES: &[&str] = &["read", "write", "admin", "stream"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub key_id: String,
    pub key_prefix: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

pub(crate) const KEY_COLUMNS: &str = "key_id, key_prefix, name, scopes, created_at, expires_at, revoked_at";

pub(crate) fn key_from_row(row: &libsql::Row) -> Result<ApiKey> {
    Ok(ApiKey {
        key_id: text(row, 0, "key_id")?,
        key_prefix: text(row, 1, "key_prefix")?,
        name: text(row, 2, "name")?,
        scopes: text(row, 3, "scopes")?.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        created_at: int(row, 4, "created_at")?,
        expires_at: opt_int(row, 5, "expires_at")?,
        revoked_at: opt_int(row, 6, "revoked_at")?,
    })
}

/// An API key (or ingest token) and the tenant it belongs to, as authentication finds them.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub key: ApiKey,
    pub tenant: Tenant,
}

impl Store {
    /// Deletes the tenant's keys that have exactly the one scope `scope` and expired before `before` (stream tokens
    /// are made often and are useless once expired).
    pub async fn delete_expired_keys(&self, key_prefix: &str, scope: &str, before: i64) -> Result<u64> {
        let n = self
            .conn()
            .await?
            .execute(
                "DELETE FROM api_keys WHERE key_prefix = ?1 AND scopes = ?2 AND expires_at < ?3",
                (key_prefix, scope, before),
            )
            .await?;
        Ok(n)
    }

    /// Creates an API key with `scopes` (each one of [`SCOPES`]); returns the key (shown once) and its record.
    pub async fn create_api_key(
        &self,
        key_prefix: &str,
        name: &str,
        scopes: &[String],
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(String, ApiKey)> {
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::Invalid("name must be 1 to 200 bytes"));
        }
        if scopes.is_empty() || scopes.iter().any(|s| !SCOPES.contains(&s.as_str())) {
            return Err(StoreError::Invalid("scopes must be a non-empty list of read, write, admin and stream"));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let secret = random_secret(API_KEY_PREFIX);
        let key = ApiKey {
            key_id: new_id("key"),
            key_prefix: key_prefix.to_owned(),
            name: name.to_owned(),
            scopes,
            created_at: now_ms,
            expires_at: expires_at_ms,
            revoked_at: None,
        };
        let n = self
            .conn()
            .await?
            .execute(
                "INSERT INTO api_keys (key_id, key_hash, key_prefix, name, scopes, created_at, expires_at)
                 SELECT ?1, ?2, key_prefix, ?4, ?5, ?6, ?7 FROM tenants WHERE key_prefix = ?3",
                (
                    key.key_id.as_str(),
                    hash_token(&secret),
                    key_prefix,
                    name,
                    key.scopes.join(" "),
                    now_ms,
                    expires_at_ms,
                ),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("tenant {key_prefix}")));
        }
        Ok((secret, key))
    }

    /// The key with this SHA-256 (hex) and its tenant, if the key is neither revoked nor expired. The tenant's
    /// status is the caller's to judge (a suspended tenant may still read its data).
    pub async fn api_key_by_hash(&self, key_hash: &str, now_ms: i64) -> Result<Option<KeyOwner>> {
        let sql = "SELECT k.key_id, k.key_prefix, k.name, k.scopes, k.created_at, k.expires_at, k.revoked_at,
                          t.name, t.plan, t.status, t.created_at, t.limits, t.updated_at, t.beacon_origins, t.intake
                   FROM api_keys k JOIN tenants t ON t.key_prefix = k.key_prefix
                   WHERE k.key_hash = ?1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?2)";
        let conn = self.conn().await?;
        let mut rows = conn.query(sql, (key_hash, now_ms)).await?;
        let Some(row) = rows.next().await? else { return Ok(None) };
        let key = key_from_row(&row)?;
        let tenant = Tenant {
            key_prefix: key.key_prefix.clone(),
            name: text(&row, 7, "name")?,
            plan: text(&row, 8, "plan")?,
            status: text(&row, 9, "status")?,
            created_at: int(&row, 10, "created_at")?,
            limits: json_col(&row, 11, "limits")?,
            updated_at: opt_int(&row, 12, "updated_at")?,
            beacon_origins: json_col(&row, 13, "beacon_origins")?,
            intake: json_col(&row, 14, "intake")?,
        };
        Ok(Some(KeyOwner { key, tenant }))
    }

    pub async fn api_keys_page(&self, key_prefix: &str, after: Option<&str>, limit: u32) -> Result<Page<ApiKey>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_prefix = ?1 AND key_id > ?2 ORDER BY key_id LIMIT ?3"
        );
        page(self, &sql, vec![key_prefix.into()], after, limit, |k: &ApiKey| &k.key_id, key_from_row).await
    }

    pub async fn api_key(&self, key_prefix: &str, key_id: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_prefix = ?1 AND key_id = ?2");
        let conn = self.conn().await?;
        let mut rows = conn.query(&sql, [key_prefix, key_id]).await?;
        rows.next().await?.map(|r| key_from_row(&r)).transpose()
    }

    /// Revokes a key now; revoking twice is not an error (the first time stands).
    pub async fn revoke_api_key(&self, key_prefix: &str, key_id: &str, now_ms: i64) -> Result<ApiKey> {
        self.conn()
            .await?
            .execute(
                "UPDATE api_keys SET revoked_at = ?3 WHERE key_prefix = ?1 AND key_id = ?2 AND revoked_at IS NULL",
                (key_prefix, key_id, now_ms),
            )
            .await?;
        self.api_key(key_prefix, key_id).await?.ok_or_else(|| StoreError::NotFound(format!("API key {key_id}")))
    }
}
