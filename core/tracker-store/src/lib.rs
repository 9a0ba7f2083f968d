//! # Metadata store
//!
//! Tenants, their link keys (with key ids and rotation grace periods), API keys, ingest tokens and dashboard
//! sessions (hashed at rest), tracking links, webhook endpoints and their deliveries, filter rules, leases and
//! consumer positions, usage and plans, in libSQL: a local file by default, a remote server (Turso) or an embedded
//! replica of one, with the same schema and queries. One module per aggregate; every tenant-owned row is read and
//! written with its tenant's key prefix in the `WHERE` clause, so a tenant only ever reaches its own rows.
//!
//! Link signing secrets and encryption keys must be usable to verify links, so they cannot be hashed: with a
//! `SECRETS_KEY` they are sealed at rest with AES-256-GCM (`enc:v1:` values; plain rows written before the key was set
//! still read). API and ingest tokens are only ever stored as SHA-256 hashes and shown once.

mod db;
mod deliveries;
pub mod hot;
pub mod imports;
mod keys;
mod links;
pub mod plans;
mod positions;
mod replays;
mod rows;
mod rules;
mod schema;
mod sealing;
mod sessions;
mod settings;
mod tenants;
mod tokens;
pub mod usage;
mod webhooks;

use std::path::Path;

use sha2::{Digest, Sha256};
pub use tracker_protocol::service::{GLOBAL_KEY_PREFIX, ShortLinkRecord as ShortLink, TokenRecord as TokenInfo};

use db::{Conn, Db};
pub use db::{HOT_ROWS_WRITTEN, Location};
pub use deliveries::{AttemptOutcome, DELIVERY_STATUSES, DeliveryRecord, DueDelivery, NewDelivery};
pub use keys::{API_KEY_PREFIX, ApiKey, KeyOwner, SCOPES};
pub use links::{Link, LinkCount, LinkSpec};
pub use plans::{Plan, Plans};
pub(crate) use positions::set_consumer_offset;
pub use rows::{MAX_PAGE, Page};
pub(crate) use rows::{int, opt_int, opt_text, page, text};
pub use rules::{FilterRule, RuleSpec};
use schema::{MIGRATIONS, SCHEMA};
use sealing::Sealer;
pub(crate) use sealing::open_secret;
pub use sessions::{SESSION_SECRET_PREFIX, Session, SessionOpener, SessionOwner};
pub use settings::{AuditEntry, GLOBAL_TENANT_SETTING};
pub(crate) use tenants::insert_key;
pub use tenants::{NewKey, Tenant, TenantKeys, TenantLimits, TenantUpdate};
pub use tokens::IngestToken;
/// Prefix of ingest tokens, so they are recognisable in logs and by secret scanners.
pub use tracker_protocol::service::INGEST_TOKEN_PREFIX;
pub use webhooks::{WEBHOOK_SECRET_PREFIX, Webhook, WebhookSpec};

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
    #[error("hot tier segment: {0}")]
    Segment(#[from] tracker_segments::SegmentError),
    #[error("a sealed secret cannot be opened (wrong or missing SECRETS_KEY) or sealed")]
    Sealed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// SHA-256 of a token, hex. Tokens carry 256 bits of randomness, so a fast hash is the right tool.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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
    pub fn with_secrets_key(self, key: [u8; 32]) -> Store {
        self.with_secrets_keys(key, &[])
    }

    /// As [`Store::with_secrets_key`], and also opens values sealed under `previous` keys (`SECRETS_KEY_PREVIOUS`,
    /// while rotating); [`Store::reseal_secrets`] moves them to `key`.
    pub fn with_secrets_keys(mut self, key: [u8; 32], previous: &[[u8; 32]]) -> Store {
        self.sealer = Some(Sealer::new(&key, previous));
        self
    }

    async fn conn(&self) -> Result<Conn<'_>> {
        self.db.conn().await
    }

    async fn tx_conn(&self) -> Result<db::TxConn<'_>> {
        self.db.tx_conn().await
    }

    fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    /// `secret` as `row` stores it: sealed and bound to the row with `SECRETS_KEY`, else as it is.
    fn sealed(&self, secret: &str, row: &str) -> Result<String> {
        match &self.sealer {
            Some(s) => s.seal(secret, row),
            None => Ok(secret.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::BOUND_PREFIX;
    use tracker_protocol::is_valid_key_prefix;

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
            assert!(stored.starts_with(BOUND_PREFIX) && !stored.contains(secret.as_str()), "sealed at rest");
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

        // resealing binds what was written before the key (and is a no-op the second time)
        assert!(s.reseal_secrets().await.unwrap() >= 2, "old's two secrets");
        assert_eq!(s.reseal_secrets().await.unwrap(), 0);
        let keys = s.tenant_keys("old").await.unwrap().unwrap().keys;
        assert_eq!(keys[0].signing_secret.as_deref(), Some(old.signing_secret.as_str()));
        assert!(matches!(plain.reseal_secrets().await, Err(StoreError::Invalid(_))), "resealing needs the key");

        // a sealed value is bound to its row: copied to another tenant's key, it opens nowhere
        s.create_tenant("Other", Some("other"), NOW).await.unwrap();
        let conn = s.conn().await.unwrap();
        conn.execute(
            "UPDATE tenant_keys SET signing_secret = (SELECT signing_secret FROM tenant_keys WHERE key_prefix = 'acme')
             WHERE key_prefix = 'other'",
            (),
        )
        .await
        .unwrap();
        assert!(matches!(s.tenant_keys("other").await, Err(StoreError::Sealed)));
        // and a value no key opens stops a reseal (it would be lost when a previous key goes)
        assert!(matches!(s.reseal_secrets().await, Err(StoreError::Sealed)));
    }

    /// Rotating `SECRETS_KEY` without a moment when a node cannot open a secret: every node first opens both keys,
    /// then seals with the new one, `reseal` moves every value to it, and the old key goes.
    #[tokio::test]
    async fn the_secrets_key_rotates_through_previous_keys_and_a_reseal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (old, new) = ([1; 32], [2; 32]);
        let open = |key: [u8; 32], previous: &[[u8; 32]]| {
            let previous = previous.to_vec();
            let path = path.clone();
            async move { Store::open(&path).await.unwrap().with_secrets_keys(key, &previous) }
        };
        let before = open(old, &[]).await;
        let acme = before.create_tenant("Acme", Some("acme"), NOW).await.unwrap();
        let spec = WebhookSpec { url: Some("https://hooks.example/in".into()), ..Default::default() };
        let (hook, hook_secret) = before.create_webhook("acme", spec, NOW).await.unwrap();
        // step 1, on every node: the new key opens too, the old one still seals
        let step1 = open(old, &[new]).await;
        // step 2: the new key seals; what the old one sealed still opens, on step-1 and step-2 nodes alike
        let step2 = open(new, &[old]).await;
        let beta = step2.create_tenant("Beta", Some("beta"), NOW).await.unwrap();
        for node in [&step1, &step2] {
            let keys = node.tenant_keys("beta").await.unwrap().unwrap().keys;
            assert_eq!(keys[0].signing_secret.as_deref(), Some(beta.signing_secret.as_str()));
            let keys = node.tenant_keys("acme").await.unwrap().unwrap().keys;
            assert_eq!(keys[0].signing_secret.as_deref(), Some(acme.signing_secret.as_str()));
        }
        let new_only = open(new, &[]).await;
        assert!(matches!(new_only.tenant_keys("acme").await, Err(StoreError::Sealed)), "not moved yet");
        // a key that opens nothing there fails the reseal, which then changes nothing
        assert!(matches!(open([3; 32], &[]).await.reseal_secrets().await, Err(StoreError::Sealed)));
        // step 3: reseal moves acme's two link secrets and the endpoint's secret to the new key; once
        assert_eq!(step2.reseal_secrets().await.unwrap(), 3);
        assert_eq!(step2.reseal_secrets().await.unwrap(), 0);
        // step 4: the new key alone opens everything, the old one nothing
        let keys = new_only.tenant_keys("acme").await.unwrap().unwrap().keys;
        assert_eq!(keys[0].signing_secret.as_deref(), Some(acme.signing_secret.as_str()));
        let opened = new_only.webhook_secret("acme", &hook.webhook_id).await.unwrap();
        assert_eq!(opened.as_deref(), Some(hook_secret.as_str()));
        assert!(matches!(open(old, &[]).await.tenant_keys("beta").await, Err(StoreError::Sealed)));
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

    #[tokio::test]
    async fn a_claimed_delivery_is_its_dispatchers_until_the_lease_ends() {
        let (_d, s) = store().await;
        let tenant = s.create_tenant("Acme", None, NOW).await.unwrap().key_prefix;
        let spec = WebhookSpec { url: Some("https://hooks.example/in".into()), ..Default::default() };
        let (hook, _) = s.create_webhook(&tenant, spec, NOW).await.unwrap();
        let delivery = |n: u32| NewDelivery {
            key_prefix: tenant.clone(),
            webhook_id: hook.webhook_id.clone(),
            event_id: format!("event-{n}"),
            event_type: "click".into(),
            data: "{}".into(),
            kind: "event",
        };
        assert_eq!(s.queue_notices(&[delivery(1), delivery(2)], NOW).await.unwrap(), 2);

        let first = s.claim_deliveries(NOW, 30_000, 4, 100).await.unwrap();
        assert_eq!(first.len(), 2, "both due at once");
        assert!(s.claim_deliveries(NOW + 29_999, 30_000, 4, 100).await.unwrap().is_empty(), "leased: nobody else");
        // the dispatcher died without recording an attempt: another takes them when the lease ends
        let again = s.claim_deliveries(NOW + 30_001, 30_000, 4, 100).await.unwrap();
        let ids = |d: &[DueDelivery]| d.iter().map(|d| d.delivery_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&again), ids(&first));
        // one in flight per endpoint: a fresh delivery waits while the endpoint's lease is held
        assert_eq!(s.queue_notices(&[delivery(3)], NOW + 30_002).await.unwrap(), 1);
        assert!(s.claim_deliveries(NOW + 30_002, 30_000, 2, 100).await.unwrap().is_empty(), "2 of 2 in flight");
        assert_eq!(s.claim_deliveries(NOW + 30_002, 30_000, 3, 100).await.unwrap().len(), 1, "a third slot");
    }
}
