//! Tenants: their records, plans and limits, and their link keys (with key ids and rotation grace periods).

use libsql::Connection;
use serde::{Deserialize, Serialize};
use tracker_protocol::service::IntakeSettings;
use tracker_protocol::{LinkKey, is_valid_key_prefix, parse_encryption_key};

use crate::rows::{json_col, random_hex, random_prefix, to_json};
use crate::sealing::key_row;
use crate::{GLOBAL_KEY_PREFIX, Page, Result, Store, StoreError, int, open_secret, opt_int, page, text};

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
    /// The origins the tenant's beacon is accepted from (normalized); empty: every origin.
    pub beacon_origins: Vec<String>,
    /// What the tenant accepts without a credential.
    pub intake: IntakeSettings,
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
            beacon_origins: self.tenant.beacon_origins,
            intake: self.tenant.intake,
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

impl Store {
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
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, key_prefix");
        let mut rows = conn.query(&sql, ()).await?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().await? {
            out.push(tenant_from_row(&row)?);
        }
        Ok(out)
    }

    /// A tenant with all its keys, current key first; `None` if there is no such tenant.
    pub async fn tenant_keys(&self, key_prefix: &str) -> Result<Option<TenantKeys>> {
        let conn = self.conn().await?;
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE key_prefix = ?1");
        let mut rows = conn.query(&sql, [key_prefix]).await?;
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
            let kid = text(&row, 0, "kid")?;
            let open = |i, what| open_secret(sealer, text(&row, i, what)?, &key_row(key_prefix, &kid, what));
            keys.push(LinkKey {
                signing_secret: Some(open(1, "signing_secret")?),
                encryption_key: parse_encryption_key(&open(2, "encryption_key")?),
                kid,
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
}

pub(crate) async fn insert_key(conn: &Connection, key: &NewKey, store: &Store, seq: i64, now_ms: i64) -> Result<()> {
    let row = |what| key_row(&key.key_prefix, &key.kid, what);
    let secret = store.sealed(&key.signing_secret, &row("signing_secret"))?;
    let aes = store.sealed(&key.encryption_key, &row("encryption_key"))?;
    conn.execute(
        "INSERT INTO tenant_keys (key_prefix, kid, seq, signing_secret, encryption_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        (key.key_prefix.as_str(), key.kid.as_str(), seq, secret.as_str(), aes.as_str(), now_ms),
    )
    .await?;
    Ok(())
}

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

pub(crate) const TENANT_COLUMNS: &str =
    "key_prefix, name, plan, status, created_at, limits, updated_at, beacon_origins, intake";

pub(crate) fn tenant_from_row(row: &libsql::Row) -> Result<Tenant> {
    Ok(Tenant {
        key_prefix: text(row, 0, "key_prefix")?,
        name: text(row, 1, "name")?,
        plan: text(row, 2, "plan")?,
        status: text(row, 3, "status")?,
        created_at: int(row, 4, "created_at")?,
        limits: json_col(row, 5, "limits")?,
        updated_at: opt_int(row, 6, "updated_at")?,
        beacon_origins: json_col(row, 7, "beacon_origins")?,
        intake: json_col(row, 8, "intake")?,
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

impl Store {
    /// Replaces the origins the tenant's beacon is accepted from (normalized by the caller).
    pub async fn set_beacon_origins(&self, key_prefix: &str, origins: &[String], now_ms: i64) -> Result<()> {
        let changed = self
            .conn()
            .await?
            .execute(
                "UPDATE tenants SET beacon_origins = ?2, updated_at = ?3 WHERE key_prefix = ?1",
                (key_prefix, to_json(&origins), now_ms),
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("tenant {key_prefix}")));
        }
        Ok(())
    }
}

impl Store {
    /// Replaces what the tenant accepts without a credential.
    pub async fn set_intake(&self, key_prefix: &str, intake: &IntakeSettings, now_ms: i64) -> Result<()> {
        let changed = self
            .conn()
            .await?
            .execute(
                "UPDATE tenants SET intake = ?2, updated_at = ?3 WHERE key_prefix = ?1",
                (key_prefix, to_json(intake), now_ms),
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("tenant {key_prefix}")));
        }
        Ok(())
    }
}

pub(crate) async fn tenant_on(conn: &Connection, key_prefix: &str) -> Result<Option<Tenant>> {
    let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE key_prefix = ?1");
    let mut rows = conn.query(&sql, [key_prefix]).await?;
    rows.next().await?.map(|r| tenant_from_row(&r)).transpose()
}
