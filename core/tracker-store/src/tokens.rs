//! Ingest tokens: credentials of `/batch`, `/ingest` and postbacks, stored as SHA-256 hashes and shown once.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use serde::Serialize;

use crate::{INGEST_TOKEN_PREFIX, Page, Result, Store, StoreError, TokenInfo, hash_token, int, opt_int, page, text};

impl Store {
    /// Creates an ingest token and returns `(token, token_id)`; only the hash is stored.
    pub async fn create_ingest_token(
        &self,
        key_prefix: &str,
        name: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(String, String)> {
        let mut raw = [0u8; 32];
        rand::rng().fill(&mut raw);
        let token = format!("{INGEST_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
        let token_id = format!("tok_{}", uuid::Uuid::now_v7().simple());
        let n = self
            .conn()
            .await?
            .execute(
                "INSERT INTO ingest_tokens (token_hash, token_id, key_prefix, name, created_at, expires_at)
                 SELECT ?1, ?2, key_prefix, ?4, ?5, ?6 FROM tenants WHERE key_prefix = ?3",
                (hash_token(&token), token_id.as_str(), key_prefix, name, now_ms, expires_at_ms),
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("tenant {key_prefix}")));
        }
        Ok((token, token_id))
    }

    /// The tenant a token belongs to, if it is valid now (whether the tenant is active is the caller's check, so a
    /// suspended tenant's requests are told so). Lookup is by hash (an index probe), so no comparison of
    /// secret bytes happens in a data-dependent time.
    pub async fn lookup_ingest_token(&self, token: &str, now_ms: i64) -> Result<Option<TokenInfo>> {
        if !tracker_protocol::service::is_ingest_token_shape(token) {
            return Ok(None);
        }
        self.lookup_ingest_token_hash(&hash_token(token), now_ms).await
    }

    /// Like [`Store::lookup_ingest_token`] with the SHA-256 (hex) of the token, as the edge sends it.
    pub async fn lookup_ingest_token_hash(&self, token_hash: &str, now_ms: i64) -> Result<Option<TokenInfo>> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT token_id, key_prefix FROM ingest_tokens
                 WHERE token_hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
                (token_hash, now_ms),
            )
            .await?;
        match rows.next().await? {
            Some(row) => {
                Ok(Some(TokenInfo { token_id: text(&row, 0, "token_id")?, key_prefix: text(&row, 1, "key_prefix")? }))
            }
            None => Ok(None),
        }
    }

    /// Revokes a token now and returns it (with its hash, so caches keyed by it can be dropped). Revoking twice
    /// is not an error: the first time stands.
    pub async fn revoke_ingest_token(&self, key_prefix: &str, token_id: &str, now_ms: i64) -> Result<IngestToken> {
        self.conn()
            .await?
            .execute(
                "UPDATE ingest_tokens SET revoked_at = ?3
                 WHERE key_prefix = ?1 AND token_id = ?2 AND revoked_at IS NULL",
                (key_prefix, token_id, now_ms),
            )
            .await?;
        self.ingest_token(key_prefix, token_id).await?.ok_or_else(|| StoreError::NotFound(format!("token {token_id}")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestToken {
    pub token_id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[serde(skip)]
    pub token_hash: String,
}

pub(crate) const TOKEN_COLUMNS: &str = "token_id, name, created_at, expires_at, revoked_at, token_hash";

pub(crate) fn token_from_row(row: &libsql::Row) -> Result<IngestToken> {
    Ok(IngestToken {
        token_id: text(row, 0, "token_id")?,
        name: text(row, 1, "name")?,
        created_at: int(row, 2, "created_at")?,
        expires_at: opt_int(row, 3, "expires_at")?,
        revoked_at: opt_int(row, 4, "revoked_at")?,
        token_hash: text(row, 5, "token_hash")?,
    })
}

impl Store {
    pub async fn ingest_tokens_page(
        &self,
        key_prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<IngestToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM ingest_tokens
             WHERE key_prefix = ?1 AND token_id > ?2 ORDER BY token_id LIMIT ?3"
        );
        page(self, &sql, vec![key_prefix.into()], after, limit, |t: &IngestToken| &t.token_id, token_from_row).await
    }

    pub async fn ingest_token(&self, key_prefix: &str, token_id: &str) -> Result<Option<IngestToken>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM ingest_tokens WHERE key_prefix = ?1 AND token_id = ?2");
        let conn = self.conn().await?;
        let mut rows = conn.query(&sql, [key_prefix, token_id]).await?;
        rows.next().await?.map(|r| token_from_row(&r)).transpose()
    }
}
