//! # Metadata store
//!
//! Tenants, their link keys (with key ids and rotation grace periods), ingest tokens (hashed at rest) and short
//! links, in libSQL: a local file by default. Remote Turso comes with the platform API issue; the schema and the
//! queries are the same.
//!
//! Link signing secrets and encryption keys must be usable to verify links, so they cannot be hashed: with a
//! `SECRETS_KEY` they are sealed at rest with AES-256-GCM (`enc:v1:` values; plain rows written before the key was set
//! still read). API and ingest tokens are only ever stored as SHA-256 hashes and shown once.

mod db;
mod deliveries;
pub mod hot;
pub mod imports;
pub mod plans;
mod resources;
mod settings;
pub mod usage;

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libsql::{Connection, Value};
use rand::Rng as _;
use sha2::{Digest, Sha256};
pub use tracker_protocol::service::{GLOBAL_KEY_PREFIX, ShortLinkRecord as ShortLink, TokenRecord as TokenInfo};
use tracker_protocol::{LinkKey, is_valid_key_prefix, parse_encryption_key};

pub use db::Location;
use db::{Conn, Db};
pub use deliveries::{AttemptOutcome, DELIVERY_STATUSES, DeliveryRecord, DueDelivery, NewDelivery};
pub use plans::{Plan, Plans};
use resources::tenant_from_row;
pub use resources::{
    API_KEY_PREFIX, ApiKey, FilterRule, IngestToken, KeyOwner, Link, LinkCount, LinkSpec, MAX_PAGE, Page, RuleSpec,
    SCOPES, TenantLimits, TenantUpdate, WEBHOOK_SECRET_PREFIX, Webhook, WebhookSpec,
};

pub use settings::{AuditEntry, GLOBAL_TENANT_SETTING};
/// Prefix of ingest tokens, so they are recognisable in logs and by secret scanners.
pub use tracker_protocol::service::INGEST_TOKEN_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] libsql::Error),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    #[error("refused: {0}")]
    Rejected(String),
    #[error("the plan allows at most {max} {what}")]
    OverLimit { what: &'static str, max: u32 },
    #[error("unexpected data in column {0}")]
    BadColumn(&'static str),
    #[error("cannot create the database directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("a sealed secret cannot be opened (wrong or missing SECRETS_KEY) or sealed")]
    Sealed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub key_prefix: String,
    pub name: String,
    pub plan: String,
    /// `active` or `suspended`.
    pub status: String,
    pub created_at: i64,
    pub limits: TenantLimits,
    pub updated_at: Option<i64>,
}

impl Tenant {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// A tenant and every key it has (current first).
#[derive(Debug, Clone)]
pub struct TenantKeys {
    pub tenant: Tenant,
    pub keys: Vec<LinkKey>,
}

impl TenantKeys {
    /// What the tracking endpoints (and the edge) need.
    pub fn record(self) -> tracker_protocol::service::TenantRecord {
        tracker_protocol::service::TenantRecord {
            active: self.tenant.is_active(),
            key_prefix: self.tenant.key_prefix,
            keys: self.keys,
            quota: None,
        }
    }
}

/// Secrets returned once, at creation or rotation.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_prefix: String,
    pub kid: String,
    pub signing_secret: String,
    pub encryption_key: String,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    key_prefix TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL DEFAULT 'free',
    status TEXT NOT NULL DEFAULT 'active',
    created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS tenant_keys (
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    kid TEXT NOT NULL,
    seq INTEGER NOT NULL,
    signing_secret TEXT NOT NULL,
    encryption_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retires_at INTEGER,
    PRIMARY KEY (key_prefix, kid)
) STRICT;
CREATE TABLE IF NOT EXISTS ingest_tokens (
    token_hash TEXT PRIMARY KEY,
    token_id TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS tracking_urls (
    tu_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    destination TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS tracking_urls_by_tenant ON tracking_urls(key_prefix);
"#;

/// Schema changes after the first release, applied in order once each (the `tracker_schema` table records them).
const MIGRATIONS: &[&str] = &[
    // 1: the platform API's resources
    r#"
ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN updated_at INTEGER;
ALTER TABLE tracking_urls ADD COLUMN name TEXT;
ALTER TABLE tracking_urls ADD COLUMN fallback_url TEXT;
ALTER TABLE tracking_urls ADD COLUMN updated_at INTEGER;
CREATE INDEX IF NOT EXISTS ingest_tokens_by_tenant ON ingest_tokens(key_prefix, token_id);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys(key_prefix, key_id);
CREATE TABLE IF NOT EXISTS webhooks (
    webhook_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    event_types TEXT NOT NULL DEFAULT '[]',
    param_filters TEXT NOT NULL DEFAULT '{}',
    secret TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS webhooks_by_tenant ON webhooks(key_prefix, webhook_id);
CREATE TABLE IF NOT EXISTS filter_rules (
    rule_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL REFERENCES tenants(key_prefix),
    field TEXT NOT NULL,
    operator TEXT NOT NULL,
    value TEXT,
    action TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS filter_rules_by_tenant ON filter_rules(key_prefix, rule_id);
"#,
    // 2: click counts per tracking link, and consumer offsets kept in the same transactions as what they produced
    r#"
CREATE TABLE IF NOT EXISTS link_counts (
    key_prefix TEXT NOT NULL,
    tu_id TEXT NOT NULL,
    clicks INTEGER NOT NULL,
    last_click_at INTEGER,
    PRIMARY KEY (key_prefix, tu_id)
) STRICT;
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) STRICT;
"#,
    // 3: webhook deliveries (queue, log and dead letters), endpoints disabled after repeated failures
    r#"
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_id TEXT PRIMARY KEY,
    key_prefix TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    lease_until INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (webhook_id, event_id)
) STRICT;
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_endpoint ON webhook_deliveries(key_prefix, webhook_id, delivery_id);
ALTER TABLE webhooks ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN disabled_reason TEXT;
"#,
    // 4: leases for jobs one process may run at a time (archive maintenance)
    r#"
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until INTEGER NOT NULL
) STRICT;
"#,
    // 5: deliveries that are not events (allowance warnings); the usage table (webhook deliveries are counted with
    // their outcome) is `usage::USAGE_SCHEMA`, created with the schema
    r#"
ALTER TABLE webhook_deliveries ADD COLUMN kind TEXT NOT NULL DEFAULT 'event';
"#,
    // 6: moving in from the replaced system: short links imported from it, platform settings (the tenant of
    // events that name none), the operators' audit log, and the positions of event imports
    r#"
ALTER TABLE tracking_urls ADD COLUMN v1 INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS import_runs (
    run_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    next_row INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
) STRICT;
"#,
];

fn text(row: &libsql::Row, i: i32, col: &'static str) -> Result<String> {
    match row.get_value(i)? {
        Value::Text(s) => Ok(s),
        _ => Err(StoreError::BadColumn(col)),
    }
}

fn int(row: &libsql::Row, i: i32, col: &'static str) -> Result<i64> {
    match row.get_value(i)? {
        Value::Integer(n) => Ok(n),
        _ => Err(StoreError::BadColumn(col)),
    }
}

fn opt_int(row: &libsql::Row, i: i32, col: &'static str) -> Result<Option<i64>> {
    match row.get_value(i)? {
        Value::Integer(n) => Ok(Some(n)),
        Value::Null => Ok(None),
        _ => Err(StoreError::BadColumn(col)),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

fn random_prefix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6).filter_map(|_| ALPHABET.get(rng.random_range(0..ALPHABET.len())).map(|b| char::from(*b))).collect()
}

/// SHA-256 of a token, hex. Tokens carry 256 bits of randomness, so a fast hash is the right tool.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

const SEALED_PREFIX: &str = "enc:v1:";

/// Seals secrets at rest: `enc:v1:` + base64url(nonce || AES-256-GCM ciphertext || tag).
#[derive(Clone)]
struct Sealer(aes_gcm::Aes256Gcm);

impl Sealer {
    fn seal(&self, plain: &str) -> Result<String> {
        use aes_gcm::aead::{Aead, AeadCore, OsRng};
        let nonce = aes_gcm::Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self.0.encrypt(&nonce, plain.as_bytes()).map_err(|_| StoreError::Sealed)?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(blob)))
    }
}

fn open_secret(sealer: Option<&Sealer>, stored: String) -> Result<String> {
    use aes_gcm::aead::Aead;
    let Some(blob) = stored.strip_prefix(SEALED_PREFIX) else { return Ok(stored) };
    let sealer = sealer.ok_or(StoreError::Sealed)?;
    let blob = URL_SAFE_NO_PAD.decode(blob).map_err(|_| StoreError::Sealed)?;
    if blob.len() < 12 {
        return Err(StoreError::Sealed);
    }
    let (nonce, ct) = blob.split_at(12);
    let plain = sealer.0.decrypt(aes_gcm::Nonce::from_slice(nonce), ct).map_err(|_| StoreError::Sealed)?;
    String::from_utf8(plain).map_err(|_| StoreError::Sealed)
}

/// The libSQL metadata store.
#[derive(Clone)]
pub struct Store {
    sealer: Option<Sealer>,
    db: Db,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) a local database file and applies the schema.
    pub async fn open(path: &Path) -> Result<Store> {
        Self::connect(&Location::File(path.to_path_buf())).await
    }

    /// Opens the database at `location` and applies the schema and any migrations it has not seen.
    pub async fn connect(location: &Location) -> Result<Store> {
        let schema = format!("{SCHEMA}{}", usage::USAGE_SCHEMA);
        let db = Db::connect(location, &schema, MIGRATIONS).await?;
        Ok(Store { sealer: None, db })
    }

    /// Seals link secrets written from now on with this key (`SECRETS_KEY`), and opens sealed ones.
    pub fn with_secrets_key(mut self, key: [u8; 32]) -> Store {
        use aes_gcm::KeyInit;
        self.sealer = aes_gcm::Aes256Gcm::new_from_slice(&key).ok().map(Sealer);
        self
    }

    async fn conn(&self) -> Result<Conn<'_>> {
        self.db.conn().await
    }

    async fn tx_conn(&self) -> Result<Connection> {
        self.db.tx_conn().await
    }

    fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    fn sealed(&self, secret: &str) -> Result<String> {
        match &self.sealer {
            Some(s) => s.seal(secret),
            None => Ok(secret.to_owned()),
        }
    }

    /// Creates a tenant on the free plan with its first key (`k1`). A prefix is generated unless given.
    pub async fn create_tenant(&self, name: &str, key_prefix: Option<&str>, now_ms: i64) -> Result<NewKey> {
        self.create_tenant_on(name, key_prefix, "free", &TenantLimits::default(), now_ms).await
    }

    /// Creates a tenant on `plan` with `limits` and its first key (`k1`), in one transaction.
    pub async fn create_tenant_on(
        &self,
        name: &str,
        key_prefix: Option<&str>,
        plan: &str,
        limits: &TenantLimits,
        now_ms: i64,
    ) -> Result<NewKey> {
        let limits = serde_json::to_string(limits).map_err(|_| StoreError::Invalid("limits"))?;
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::Invalid("name must be 1 to 200 bytes"));
        }
        for attempt in 0..8 {
            let prefix = match key_prefix {
                Some(p) => p.to_owned(),
                None => random_prefix(),
            };
            if !is_valid_key_prefix(&prefix) || prefix == GLOBAL_KEY_PREFIX {
                return Err(StoreError::Invalid("key prefix must be 2 to 32 of [a-z0-9] and not \"global\""));
            }
            let conn = self.tx_conn().await?;
            let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO tenants (key_prefix, name, plan, limits, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT DO NOTHING",
                    (prefix.as_str(), name, plan, limits.as_str(), now_ms),
                )
                .await?;
            if inserted == 0 {
                tx.rollback().await?;
                if key_prefix.is_some() || attempt == 7 {
                    return Err(StoreError::Conflict(format!("tenant {prefix}")));
                }
                continue;
            }
            let key = NewKey {
                key_prefix: prefix,
                kid: "k1".into(),
                signing_secret: random_hex(32),
                encryption_key: random_hex(32),
            };
            insert_key(&tx, &key, self, 1, now_ms).await?;
            tx.commit().await?;
            return Ok(key);
        }
        Err(StoreError::Conflict("generated key prefix".into()))
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT key_prefix, name, plan, status, created_at, limits, updated_at FROM tenants
                 ORDER BY created_at, key_prefix",
                (),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push(tenant_from_row(&row)?);
        }
        Ok(out)
    }

    /// A tenant with all its keys, current key first; `None` if there is no such tenant.
    pub async fn tenant_keys(&self, key_prefix: &str) -> Result<Option<TenantKeys>> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT key_prefix, name, plan, status, created_at, limits, updated_at FROM tenants
                 WHERE key_prefix = ?1",
                [key_prefix],
            )
            .await?;
        let Some(row) = rows.next().await? else {
            return Ok(None);
        };
        let tenant = tenant_from_row(&row)?;
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT kid, signing_secret, encryption_key, retires_at FROM tenant_keys
                 WHERE key_prefix = ?1 ORDER BY seq DESC",
                [key_prefix],
            )
            .await?;
        let mut keys = Vec::new();
        while let Some(row) = rows.next().await? {
            let sealer = self.sealer.as_ref();
            keys.push(LinkKey {
                kid: text(&row, 0, "kid")?,
                signing_secret: Some(open_secret(sealer, text(&row, 1, "signing_secret")?)?),
                encryption_key: parse_encryption_key(&open_secret(sealer, text(&row, 2, "encryption_key")?)?),
                retires_at_ms: opt_int(&row, 3, "retires_at")?,
            });
        }
        Ok(Some(TenantKeys { tenant, keys }))
    }

    /// Adds a new current key; every older key keeps verifying links until `now + grace`.
    pub async fn rotate_keys(&self, key_prefix: &str, grace_ms: i64, now_ms: i64) -> Result<NewKey> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut rows =
            tx.query("SELECT COALESCE(MAX(seq), 0) FROM tenant_keys WHERE key_prefix = ?1", [key_prefix]).await?;
        let seq = match rows.next().await? {
            Some(row) => int(&row, 0, "seq")?,
            None => 0,
        };
        drop(rows);
        if seq == 0 {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("tenant {key_prefix}")));
        }
        tx.execute(
            "UPDATE tenant_keys SET retires_at = ?2 WHERE key_prefix = ?1 AND (retires_at IS NULL OR retires_at > ?2)",
            (key_prefix, now_ms.saturating_add(grace_ms.max(0))),
        )
        .await?;
        let key = NewKey {
            key_prefix: key_prefix.to_owned(),
            kid: format!("k{}", seq + 1),
            signing_secret: random_hex(32),
            encryption_key: random_hex(32),
        };
        insert_key(&tx, &key, self, seq + 1, now_ms).await?;
        tx.commit().await?;
        Ok(key)
    }

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

    /// Creates a short link owned by the tenant (a tracking link with just a destination and expiry).
    pub async fn create_short_link(
        &self,
        key_prefix: &str,
        destination: &str,
        expires_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<ShortLink> {
        let spec = LinkSpec {
            destination: Some(destination.to_owned()),
            expires_at: Some(expires_at_ms),
            ..LinkSpec::default()
        };
        Ok(self.create_link(key_prefix, spec, now_ms).await?.record(key_prefix))
    }

    pub async fn short_link(&self, tu_id: &str) -> Result<Option<ShortLink>> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT tu_id, key_prefix, destination, expires_at, fallback_url, v1 FROM tracking_urls
                 WHERE tu_id = ?1",
                [tu_id],
            )
            .await?;
        match rows.next().await? {
            Some(row) => Ok(Some(ShortLink {
                tu_id: text(&row, 0, "tu_id")?,
                key_prefix: text(&row, 1, "key_prefix")?,
                destination: text(&row, 2, "destination")?,
                expires_at: opt_int(&row, 3, "expires_at")?,
                fallback: match row.get_value(4)? {
                    Value::Text(s) => Some(s),
                    _ => None,
                },
                v1: int(&row, 5, "v1")? != 0,
            })),
            None => Ok(None),
        }
    }
}

pub(crate) async fn insert_key(conn: &Connection, key: &NewKey, store: &Store, seq: i64, now_ms: i64) -> Result<()> {
    let (secret, aes) = (store.sealed(&key.signing_secret)?, store.sealed(&key.encryption_key)?);
    conn.execute(
        "INSERT INTO tenant_keys (key_prefix, kid, seq, signing_secret, encryption_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        (key.key_prefix.as_str(), key.kid.as_str(), seq, secret.as_str(), aes.as_str(), now_ms),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_770_704_294_008;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("meta/tracker.db")).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn tenants_keys_and_rotation() {
        let (_d, s) = store().await;
        let k1 = s.create_tenant("Acme", None, NOW).await.unwrap();
        assert!(is_valid_key_prefix(&k1.key_prefix));
        assert_eq!(k1.signing_secret.len(), 64);
        assert!(matches!(s.create_tenant("Again", Some(&k1.key_prefix), NOW).await, Err(StoreError::Conflict(_))));
        assert!(matches!(s.create_tenant("G", Some("global"), NOW).await, Err(StoreError::Invalid(_))));

        let k2 = s.rotate_keys(&k1.key_prefix, 1000, NOW).await.unwrap();
        assert_eq!(k2.kid, "k2");
        let tk = s.tenant_keys(&k1.key_prefix).await.unwrap().unwrap();
        assert_eq!(tk.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), vec!["k2", "k1"]);
        assert_eq!(tk.keys[0].retires_at_ms, None);
        assert_eq!(tk.keys[1].retires_at_ms, Some(NOW + 1000));
        assert_eq!(tk.keys[1].signing_secret.as_deref(), Some(k1.signing_secret.as_str()));
        // a second rotation does not extend the first key's grace period
        s.rotate_keys(&k1.key_prefix, 1_000_000, NOW + 10).await.unwrap();
        let tk = s.tenant_keys(&k1.key_prefix).await.unwrap().unwrap();
        assert_eq!(tk.keys[2].retires_at_ms, Some(NOW + 1000));
        assert!(s.tenant_keys("nope").await.unwrap().is_none());
        assert!(matches!(s.rotate_keys("nope", 1, NOW).await, Err(StoreError::NotFound(_))));
    }

    #[tokio::test]
    async fn link_secrets_are_sealed_at_rest_with_a_secrets_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let plain = Store::open(&path).await.unwrap();
        let old = plain.create_tenant("Old", Some("old"), NOW).await.unwrap();
        let s = Store::open(&path).await.unwrap().with_secrets_key([7; 32]);
        let k = s.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
        let conn = s.conn().await.unwrap();
        let mut rows = conn
            .query("SELECT signing_secret, encryption_key FROM tenant_keys WHERE key_prefix = 'acme'", ())
            .await
            .unwrap();
        let row = rows.next().await.unwrap().unwrap();
        for (i, secret) in [&k.signing_secret, &k.encryption_key].into_iter().enumerate() {
            let stored = text(&row, i as i32, "secret").unwrap();
            assert!(stored.starts_with(SEALED_PREFIX) && !stored.contains(secret.as_str()), "sealed at rest");
        }
        let keys = s.tenant_keys("acme").await.unwrap().unwrap().keys;
        assert_eq!(keys[0].signing_secret.as_deref(), Some(k.signing_secret.as_str()));
        // rows written before the key was configured still read
        let keys = s.tenant_keys("old").await.unwrap().unwrap().keys;
        assert_eq!(keys[0].signing_secret.as_deref(), Some(old.signing_secret.as_str()));
        // without the key, or with another one, sealed secrets do not open
        assert!(matches!(plain.tenant_keys("acme").await, Err(StoreError::Sealed)));
        let other = Store::open(&path).await.unwrap().with_secrets_key([8; 32]);
        assert!(matches!(other.tenant_keys("acme").await, Err(StoreError::Sealed)));
    }

    #[tokio::test]
    async fn tokens_are_hashed_expire_and_revoke() {
        let (_d, s) = store().await;
        let t = s.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
        let (token, id) = s.create_ingest_token(&t.key_prefix, "ci", Some(NOW + 10), NOW).await.unwrap();
        assert!(token.starts_with(INGEST_TOKEN_PREFIX));
        let info = s.lookup_ingest_token(&token, NOW).await.unwrap().unwrap();
        assert_eq!(info.key_prefix, "acme");
        assert!(s.lookup_ingest_token(&token, NOW + 10).await.unwrap().is_none(), "expired");
        assert!(s.lookup_ingest_token("trk_ing_guess", NOW).await.unwrap().is_none());
        // the plaintext is nowhere in the database
        let conn = s.conn().await.unwrap();
        let mut rows = conn.query("SELECT token_hash FROM ingest_tokens", ()).await.unwrap();
        let stored = text(&rows.next().await.unwrap().unwrap(), 0, "token_hash").unwrap();
        assert_ne!(stored, token);
        assert_eq!(stored, hash_token(&token));
        // another tenant cannot revoke it
        s.create_tenant("Other", Some("other"), NOW).await.unwrap();
        assert!(s.revoke_ingest_token("other", &id, NOW).await.is_err());
        s.revoke_ingest_token("acme", &id, NOW).await.unwrap();
        assert!(s.lookup_ingest_token(&token, NOW).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_starting_together_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { Store::open(&path).await })
            })
            .collect();
        for o in opens {
            o.await.unwrap().unwrap();
        }
        let s = Store::open(&path).await.unwrap();
        let conn = s.conn().await.unwrap();
        let mut rows = conn.query("SELECT COUNT(*), MAX(version) FROM tracker_schema", ()).await.unwrap();
        let row = rows.next().await.unwrap().unwrap();
        assert_eq!(int(&row, 0, "count").unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(int(&row, 1, "max").unwrap(), MIGRATIONS.len() as i64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_do_not_see_each_others_transactions() {
        let (_d, s) = store().await;
        s.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                match i % 4 {
                    0 => s.rotate_keys("acme", 1_000, NOW + i).await.map(|_| ()),
                    1 => {
                        let spec =
                            LinkSpec { destination: Some(format!("https://a.example/{i}")), ..LinkSpec::default() };
                        s.create_link("acme", spec, NOW).await.map(|_| ())
                    }
                    2 => s.tenant_keys("acme").await.map(|_| ()),
                    _ => s.create_tenant(&format!("t{i}"), None, NOW).await.map(|_| ()),
                }
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let keys = s.tenant_keys("acme").await.unwrap().unwrap().keys;
        assert_eq!(keys.len(), 11, "every rotation applied exactly once");
        assert_eq!(s.links_page("acme", None, 200).await.unwrap().items.len(), 10);
    }

    #[tokio::test]
    async fn short_links_belong_to_a_tenant() {
        let (_d, s) = store().await;
        s.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
        let l = s.create_short_link("acme", "https://a.com/x", None, NOW).await.unwrap();
        assert!(tracker_protocol::links::is_valid_short_id(&l.tu_id));
        assert_eq!(s.short_link(&l.tu_id).await.unwrap(), Some(l));
        assert!(s.create_short_link("acme", "javascript:x", None, NOW).await.is_err());
        assert!(s.create_short_link("ghost", "https://a.com", None, NOW).await.is_err());
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires_or_is_released() {
        let (_d, s) = store().await;
        assert!(s.acquire_lease("job", "a", NOW, NOW + 1000).await.unwrap());
        assert!(!s.acquire_lease("job", "b", NOW + 10, NOW + 2000).await.unwrap(), "held by a");
        assert!(s.acquire_lease("job", "a", NOW + 10, NOW + 2000).await.unwrap(), "a renews");
        assert!(s.acquire_lease("other", "b", NOW, NOW + 1000).await.unwrap(), "leases are per name");
        s.release_lease("job", "b").await.unwrap(); // not b's: no effect
        assert!(!s.acquire_lease("job", "b", NOW + 20, NOW + 2000).await.unwrap());
        assert!(s.acquire_lease("job", "b", NOW + 2000, NOW + 3000).await.unwrap(), "expired: taken over");
        s.release_lease("job", "b").await.unwrap();
        assert!(s.acquire_lease("job", "a", NOW + 2001, NOW + 3000).await.unwrap(), "released: free");
    }
}
