//! Tracking links (short links, `tu_…`) and their click counts.

use std::collections::BTreeMap;

use libsql::{Connection, Value};
use serde::Serialize;
use tracker_protocol::validate_destination;

use crate::{Page, Result, ShortLink, Store, StoreError, int, opt_int, opt_text, page, set_consumer_offset, text};

impl Store {
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

pub(crate) const LINK_COLUMNS: &str = "tu_id, name, destination, fallback_url, created_at, updated_at, expires_at";

pub(crate) fn link_from_row(row: &libsql::Row) -> Result<Link> {
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

pub(crate) fn check_link(link: &Link) -> Result<()> {
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
    pub(crate) async fn not_created(&self, key_prefix: &str, what: &'static str, max: Option<u32>) -> StoreError {
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

/// Clicks recorded on one tracking link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkCount {
    pub clicks: i64,
    pub last_click_at: Option<i64>,
}

pub(crate) async fn link_on(conn: &Connection, key_prefix: &str, tu_id: &str) -> Result<Option<Link>> {
    let sql = format!("SELECT {LINK_COLUMNS} FROM tracking_urls WHERE key_prefix = ?1 AND tu_id = ?2");
    let mut rows = conn.query(&sql, [key_prefix, tu_id]).await?;
    rows.next().await?.map(|r| link_from_row(&r)).transpose()
}
