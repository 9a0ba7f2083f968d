//! The platform API's resources: API keys, ingest tokens, tracking links, webhook endpoints and filter rules.
//!
//! Every method takes the owning tenant's key prefix and puts it in the `WHERE` clause of every statement, so a
//! tenant can only ever reach its own rows, whatever id it sends: another tenant's id reads as "not found".
//! Lists are ordered by id (time-ordered UUIDv7 for new rows) and paged with an exclusive `after` cursor.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libsql::{Connection, Value};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tracker_protocol::validate_destination;

use crate::{Result, ShortLink, Store, StoreError, Tenant, hash_token, int, open_secret, opt_int, text};

/// Prefix of API keys, so they are recognisable in logs and by secret scanners.
pub const API_KEY_PREFIX: &str = "trk_key_";

/// What an API key may do: `read` (GET), `write` (change links, webhooks and rules), `admin` (manage keys and
/// tokens), `stream` (open live event streams, nothing else: for short-lived browser tokens). Scopes do not imply
/// each other; a key gets exactly the ones it was created with.
pub const SCOPES: &[&str] = &["read", "write", "admin", "stream"];

/// Most rows one page returns.
pub const MAX_PAGE: u32 = 200;

/// One page of a list, and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

fn new_id(kind: &str) -> String {
    format!("{kind}_{}", uuid::Uuid::now_v7().simple())
}

fn random_secret(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill(&mut raw);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// Deletes the tenant's row `id` of `table` (table and column are constants of this module, never input).
async fn delete_owned(
    store: &Store,
    table: &'static str,
    id_column: &'static str,
    what: &str,
    key_prefix: &str,
    id: &str,
) -> Result<()> {
    let sql = format!("DELETE FROM {table} WHERE key_prefix = ?1 AND {id_column} = ?2");
    if store.conn().await?.execute(&sql, [key_prefix, id]).await? == 0 {
        return Err(StoreError::NotFound(format!("{what} {id}")));
    }
    Ok(())
}

pub(crate) fn opt_text(row: &libsql::Row, i: i32, col: &'static str) -> Result<Option<String>> {
    match row.get_value(i)? {
        Value::Text(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        _ => Err(StoreError::BadColumn(col)),
    }
}

fn json_col<T: serde::de::DeserializeOwned>(row: &libsql::Row, i: i32, col: &'static str) -> Result<T> {
    serde_json::from_str(&text(row, i, col)?).map_err(|_| StoreError::BadColumn(col))
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Runs a page query: `sql` must select rows `WHERE ... AND id > ?after ORDER BY id LIMIT ?limit` with the
/// placeholders last; one row more than asked tells whether there is a next page.
pub(crate) async fn page<T>(
    store: &Store,
    sql: &str,
    mut params: Vec<Value>,
    after: Option<&str>,
    limit: u32,
    id: impl Fn(&T) -> &str,
    map: impl Fn(&libsql::Row) -> Result<T>,
) -> Result<Page<T>> {
    let limit = limit.clamp(1, MAX_PAGE);
    params.push(Value::Text(after.unwrap_or_default().to_owned()));
    params.push(Value::Integer(i64::from(limit) + 1));
    let conn = store.conn().await?;
    let mut rows = conn.query(sql, params).await?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().await? {
        items.push(map(&row)?);
    }
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| id(t).to_owned())
    } else {
        None
    };
    Ok(Page { items, next })
}

// ---------------------------------------------------------------------------------------------------------------
// Tenants

/// Per-tenant overrides of the plan's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Platform API requests per minute (the plan's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_requests_per_minute: Option<u32>,
    /// Events per second the filter keeps (no limit when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    /// Days the archive keeps the tenant's events (forever when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// A change to a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    pub name: Option<String>,
    pub plan: Option<String>,
    pub status: Option<String>,
    pub limits: Option<TenantLimits>,
}

const TENANT_COLUMNS: &str = "key_prefix, name, plan, status, created_at, limits, updated_at";

pub(crate) fn tenant_from_row(row: &libsql::Row) -> Result<Tenant> {
    Ok(Tenant {
        key_prefix: text(row, 0, "key_prefix")?,
        name: text(row, 1, "name")?,
        plan: text(row, 2, "plan")?,
        status: text(row, 3, "status")?,
        created_at: int(row, 4, "created_at")?,
        limits: json_col(row, 5, "limits")?,
        updated_at: opt_int(row, 6, "updated_at")?,
    })
}

impl Store {
    pub async fn tenant(&self, key_prefix: &str) -> Result<Option<Tenant>> {
        let conn = self.conn().await?;
        tenant_on(&conn, key_prefix).await
    }

    pub async fn tenants_page(&self, after: Option<&str>, limit: u32) -> Result<Page<Tenant>> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE key_prefix > ?1 ORDER BY key_prefix LIMIT ?2");
        page(self, &sql, vec![], after, limit, |t: &Tenant| &t.key_prefix, tenant_from_row).await
    }

    /// Applies `update` (values checked by the caller) and returns the tenant as it now is; concurrent updates
    /// of one tenant apply one after the other (read and write in one transaction).
    pub async fn update_tenant(&self, key_prefix: &str, update: TenantUpdate, now_ms: i64) -> Result<Tenant> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let Some(mut t) = tenant_on(&tx, key_prefix).await? else {
            return Err(StoreError::NotFound(format!("tenant {key_prefix}")));
        };
        if let Some(name) = update.name {
            if name.is_empty() || name.len() > 200 {
                return Err(StoreError::Invalid("name must be 1 to 200 bytes"));
            }
            t.name = name;
        }
        t.plan = update.plan.unwrap_or(t.plan);
        t.status = update.status.unwrap_or(t.status);
        t.limits = update.limits.unwrap_or(t.limits);
        t.updated_at = Some(now_ms);
        tx.execute(
            "UPDATE tenants SET name = ?2, plan = ?3, status = ?4, limits = ?5, updated_at = ?6 WHERE key_prefix = ?1",
            (key_prefix, t.name.as_str(), t.plan.as_str(), t.status.as_str(), to_json(&t.limits), now_ms),
        )
        .await?;
        tx.commit().await?;
        Ok(t)
    }
}

async fn tenant_on(conn: &Connection, key_prefix: &str) -> Result<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE key_prefix = ?1");
    let mut rows = conn.query(&sql, [key_prefix]).await?;
    rows.next().await?.map(|r| tenant_from_row(&r)).transpose()
}

// ---------------------------------------------------------------------------------------------------------------
// API keys

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

const KEY_COLUMNS: &str = "key_id, key_prefix, name, scopes, created_at, expires_at, revoked_at";

fn key_from_row(row: &libsql::Row) -> Result<ApiKey> {
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
                          t.name, t.plan, t.status, t.created_at, t.limits, t.updated_at
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

// ---------------------------------------------------------------------------------------------------------------
// Ingest tokens (created and looked up in lib.rs)

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

const TOKEN_COLUMNS: &str = "token_id, name, created_at, expires_at, revoked_at, token_hash";

fn token_from_row(row: &libsql::Row) -> Result<IngestToken> {
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

// ---------------------------------------------------------------------------------------------------------------
// Tracking links

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub tu_id: String,
    pub name: Option<String>,
    pub destination: String,
    pub fallback_url: Option<String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub expires_at: Option<i64>,
}

/// A new link, or a change to one (`None` leaves a field as it is; `Some(None)` clears an optional one).
#[derive(Debug, Clone, Default)]
pub struct LinkSpec {
    pub name: Option<Option<String>>,
    pub destination: Option<String>,
    pub fallback_url: Option<Option<String>>,
    pub expires_at: Option<Option<i64>>,
}

const LINK_COLUMNS: &str = "tu_id, name, destination, fallback_url, created_at, updated_at, expires_at";

fn link_from_row(row: &libsql::Row) -> Result<Link> {
    Ok(Link {
        tu_id: text(row, 0, "tu_id")?,
        name: opt_text(row, 1, "name")?,
        destination: text(row, 2, "destination")?,
        fallback_url: opt_text(row, 3, "fallback_url")?,
        created_at: int(row, 4, "created_at")?,
        updated_at: opt_int(row, 5, "updated_at")?,
        expires_at: opt_int(row, 6, "expires_at")?,
    })
}

fn check_link(link: &Link) -> Result<()> {
    validate_destination(&link.destination)
        .map_err(|_| StoreError::Invalid("destination must be an absolute http(s) URL without credentials"))?;
    if let Some(f) = &link.fallback_url {
        validate_destination(f)
            .map_err(|_| StoreError::Invalid("fallback_url must be an absolute http(s) URL without credentials"))?;
    }
    if link.name.as_ref().is_some_and(|n| n.len() > 200) {
        return Err(StoreError::Invalid("name must be at most 200 bytes"));
    }
    Ok(())
}

impl Link {
    /// What the tracking endpoints (and the edge) need.
    pub fn record(&self, key_prefix: &str) -> ShortLink {
        ShortLink {
            tu_id: self.tu_id.clone(),
            key_prefix: key_prefix.to_owned(),
            destination: self.destination.clone(),
            expires_at: self.expires_at,
            fallback: self.fallback_url.clone(),
            v1: false,
        }
    }
}

impl Store {
    /// Why an insert guarded by a tenant's existence and a limit wrote nothing.
    async fn not_created(&self, key_prefix: &str, what: &'static str, max: Option<u32>) -> StoreError {
        match (self.tenant(key_prefix).await, max) {
            (Ok(Some(_)), Some(max)) => StoreError::OverLimit { what, max },
            (Err(e), _) => e,
            _ => StoreError::NotFound(format!("tenant {key_prefix}")),
        }
    }

    /// Creates a tracking link owned by the tenant.
    pub async fn create_link(&self, key_prefix: &str, spec: LinkSpec, now_ms: i64) -> Result<Link> {
        self.create_link_within(key_prefix, spec, now_ms, None).await
    }

    /// Creates a tracking link if the tenant has fewer than `max` (checked in the insert itself, so concurrent
    /// creations cannot pass the limit together).
    pub async fn create_link_within(
        &self,
        key_prefix: &str,
        spec: LinkSpec,
        now_ms: i64,
        max: Option<u32>,
    ) -> Result<Link> {
        let link = Link {
            tu_id: format!("tu_{}", uuid::Uuid::now_v7()),
            name: spec.name.flatten(),
            destination: spec.destination.ok_or(StoreError::Invalid("destination is required"))?,
            fallback_url: spec.fallback_url.flatten(),
            created_at: now_ms,
            updated_at: None,
            expires_at: spec.expires_at.flatten(),
        };
        check_link(&link)?;
        let n = self
            .conn()
            .await?
            .execute(
                "INSERT INTO tracking_urls (tu_id, key_prefix, name, destination, fallback_url, created_at, expires_at)
                 SELECT ?1, key_prefix, ?3, ?4, ?5, ?6, ?7 FROM tenants WHERE key_prefix = ?2
                   AND (?8 IS NULL OR (SELECT COUNT(*) FROM tracking_urls WHERE key_prefix = ?2) < ?8)",
                (
                    link.tu_id.as_str(),
                    key_prefix,
                    link.name.clone(),
                    link.destination.as_str(),
                    link.fallback_url.clone(),
                    now_ms,
                    link.expires_at,
                    max.map(i64::from),
                ),
            )
            .await?;
        if n == 0 {
            return Err(self.not_created(key_prefix, "links", max).await);
        }
        Ok(link)
    }

    pub async fn link(&self, key_prefix: &str, tu_id: &str) -> Result<Option<Link>> {
        let conn = self.conn().await?;
        link_on(&conn, key_prefix, tu_id).await
    }

    pub async fn links_page(&self, key_prefix: &str, after: Option<&str>, limit: u32) -> Result<Page<Link>> {
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM tracking_urls WHERE key_prefix = ?1 AND tu_id > ?2 ORDER BY tu_id LIMIT ?3"
        );
        page(self, &sql, vec![key_prefix.into()], after, limit, |l: &Link| &l.tu_id, link_from_row).await
    }

    /// Applies `spec` to a link in one transaction (concurrent changes apply one after the other).
    pub async fn update_link(&self, key_prefix: &str, tu_id: &str, spec: LinkSpec, now_ms: i64) -> Result<Link> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut link =
            link_on(&tx, key_prefix, tu_id).await?.ok_or_else(|| StoreError::NotFound(format!("link {tu_id}")))?;
        if let Some(n) = spec.name {
            link.name = n;
        }
        if let Some(d) = spec.destination {
            link.destination = d;
        }
        if let Some(f) = spec.fallback_url {
            link.fallback_url = f;
        }
        if let Some(e) = spec.expires_at {
            link.expires_at = e;
        }
        link.updated_at = Some(now_ms);
        check_link(&link)?;
        tx.execute(
            "UPDATE tracking_urls SET name = ?3, destination = ?4, fallback_url = ?5, expires_at = ?6, updated_at = ?7
                 WHERE key_prefix = ?1 AND tu_id = ?2",
            (
                key_prefix,
                tu_id,
                link.name.clone(),
                link.destination.as_str(),
                link.fallback_url.clone(),
                link.expires_at,
                now_ms,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(link)
    }

    /// Deletes a link and its counts together.
    pub async fn delete_link(&self, key_prefix: &str, tu_id: &str) -> Result<()> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let n =
            tx.execute("DELETE FROM tracking_urls WHERE key_prefix = ?1 AND tu_id = ?2", [key_prefix, tu_id]).await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("link {tu_id}")));
        }
        tx.execute("DELETE FROM link_counts WHERE key_prefix = ?1 AND tu_id = ?2", [key_prefix, tu_id]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Click counts of the tenant's links among `tu_ids` (links never clicked are absent).
    pub async fn link_counts(&self, key_prefix: &str, tu_ids: &[&str]) -> Result<BTreeMap<String, LinkCount>> {
        let mut out = BTreeMap::new();
        if tu_ids.is_empty() {
            return Ok(out);
        }
        let placeholders: Vec<String> = (0..tu_ids.len()).map(|i| format!("?{}", i + 2)).collect();
        let sql = format!(
            "SELECT tu_id, clicks, last_click_at FROM link_counts WHERE key_prefix = ?1 AND tu_id IN ({})",
            placeholders.join(", ")
        );
        let mut params: Vec<Value> = vec![key_prefix.into()];
        params.extend(tu_ids.iter().map(|id| Value::from(*id)));
        let conn = self.conn().await?;
        let mut rows = conn.query(&sql, params).await?;
        while let Some(row) = rows.next().await? {
            let count =
                LinkCount { clicks: int(&row, 1, "clicks")?, last_click_at: opt_int(&row, 2, "last_click_at")? };
            out.insert(text(&row, 0, "tu_id")?, count);
        }
        Ok(out)
    }

    /// Where `consumer` resumes in `partition` (0 if it never committed).
    pub async fn consumer_offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT next_offset FROM consumer_offsets WHERE consumer = ?1 AND partition = ?2",
                (consumer, i64::from(partition)),
            )
            .await?;
        match rows.next().await? {
            Some(row) => Ok(u64::try_from(int(&row, 0, "next_offset")?).unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Adds click counts and moves `consumer`'s offset in `partition` to `next_offset`, in one transaction: a crash
    /// before the commit leaves both as they were (the events are counted again from the old offset), after it
    /// both are done, so no click is lost or counted twice.
    pub async fn add_link_counts(
        &self,
        consumer: &str,
        partition: u32,
        next_offset: u64,
        counts: &[(String, String, LinkCount)],
    ) -> Result<()> {
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        for (key_prefix, tu_id, c) in counts {
            tx.execute(
                "INSERT INTO link_counts (key_prefix, tu_id, clicks, last_click_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key_prefix, tu_id) DO UPDATE SET clicks = clicks + excluded.clicks,
                   last_click_at = MAX(COALESCE(last_click_at, 0), COALESCE(excluded.last_click_at, 0))",
                (key_prefix.as_str(), tu_id.as_str(), c.clicks, c.last_click_at),
            )
            .await?;
        }
        set_consumer_offset(&tx, consumer, partition, next_offset).await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Takes the lease `name` for `holder` until `until_ms` when it is free, expired at `now_ms` or already
    /// `holder`'s (a renewal). Returns whether `holder` holds it: a job only one process may run at a time runs
    /// only while its lease is held.
    pub async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        let conn = self.tx_conn().await?;
        let changed = conn
            .execute(
                "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                 WHERE leases.until <= ?4 OR leases.holder = excluded.holder",
                (name, holder, until_ms, now_ms),
            )
            .await?;
        Ok(changed == 1)
    }

    /// Gives the lease `name` up if `holder` holds it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let conn = self.tx_conn().await?;
        conn.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", (name, holder)).await?;
        Ok(())
    }
}

/// Moves `consumer`'s offset in `partition` inside the transaction that stored what it produced.
pub(crate) async fn set_consumer_offset(
    tx: &libsql::Transaction,
    consumer: &str,
    partition: u32,
    next_offset: u64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO consumer_offsets (consumer, partition, next_offset) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer, partition) DO UPDATE SET next_offset = excluded.next_offset",
        (consumer, i64::from(partition), i64::try_from(next_offset).unwrap_or(i64::MAX)),
    )
    .await?;
    Ok(())
}

/// Clicks recorded on one tracking link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCount {
    pub clicks: i64,
    pub last_click_at: Option<i64>,
}

async fn link_on(conn: &Connection, key_prefix: &str, tu_id: &str) -> Result<Option<Link>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM tracking_urls WHERE key_prefix = ?1 AND tu_id = ?2");
    let mut rows = conn.query(&sql, [key_prefix, tu_id]).await?;
    rows.next().await?.map(|r| link_from_row(&r)).transpose()
}

// ---------------------------------------------------------------------------------------------------------------
// Webhook endpoints

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

const WEBHOOK_COLUMNS: &str =
    "webhook_id, url, description, event_types, param_filters, enabled, created_at, updated_at, disabled_reason";

fn webhook_from_row(row: &libsql::Row) -> Result<Webhook> {
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
                    self.sealed(&secret)?,
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
            Some(row) => Ok(Some(open_secret(self.sealer.as_ref(), text(&row, 0, "secret")?)?)),
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

async fn webhook_on(conn: &Connection, key_prefix: &str, webhook_id: &str) -> Result<Option<Webhook>> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE key_prefix = ?1 AND webhook_id = ?2");
    let mut rows = conn.query(&sql, [key_prefix, webhook_id]).await?;
    rows.next().await?.map(|r| webhook_from_row(&r)).transpose()
}

// ---------------------------------------------------------------------------------------------------------------
// Filter rules

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

const RULE_COLUMNS: &str = "rule_id, field, operator, value, action, enabled, description, created_at, updated_at";

fn rule_from_row(row: &libsql::Row) -> Result<FilterRule> {
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
