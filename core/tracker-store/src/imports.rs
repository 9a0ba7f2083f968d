//! Moving in from the replaced system: its tenants with their key prefixes, signing secrets, encryption keys,
//! ingest tokens (as the SHA-256 hashes it kept) and short links, so that every link and credential already out
//! in the world keeps working; and the positions of event imports, so a re-run or a resumed run stores each
//! event once.
//!
//! [`TenantImport`] is the document an import applies (`tracker-core tenant import` builds it from the replaced
//! system's database export; any other source can write it). [`Store::import_tenants`] applies it in one
//! transaction, audited, or only reports what it would change (`dry_run`). It never overwrites what it did not
//! bring: a key prefix taken by a tenant without the imported secret, a token hash or short link id of another
//! tenant, are reported and skipped.

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tracker_protocol::links::is_valid_short_id;
use tracker_protocol::redirect::MAX_DESTINATION_LEN;
use tracker_protocol::service::GLOBAL_KEY_PREFIX;
use tracker_protocol::{is_valid_key_prefix, parse_encryption_key};

use crate::settings::audit_on;
use crate::{NewKey, Result, Store, StoreError, int, open_secret, opt_int, text};

/// The kid of an imported key.
pub const IMPORTED_KID: &str = "v1";

/// Tenants to bring in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantImport {
    pub tenants: Vec<ImportedTenant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedTenant {
    /// Kept as it was: it is in every signature and short link out there.
    pub key_prefix: String,
    pub name: String,
    /// A plan this platform is configured with (the caller maps or defaults it).
    pub plan: String,
    /// ms since the epoch.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// The link signing secret, used as the text it is (never hex-decoded).
    pub signing_secret: String,
    /// 64 hex characters.
    #[serde(default)]
    pub encryption_key: Option<String>,
    #[serde(default)]
    pub ingest_tokens: Vec<ImportedToken>,
    #[serde(default)]
    pub links: Vec<ImportedLink>,
}

/// An ingest token as the replaced system kept it: only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedToken {
    /// Its id there (kept in ours, `tok_v1_<id>`).
    pub id: String,
    /// Lowercase hex SHA-256 of the whole token text.
    pub token_hash: String,
    pub name: String,
    /// ms since the epoch.
    #[serde(default)]
    pub created_at: Option<i64>,
    /// ms since the epoch: the first moment it no longer works.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked: bool,
}

/// A short link: its id is in every copy of the link out there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedLink {
    pub tu_id: String,
    pub destination: String,
    /// ms since the epoch.
    #[serde(default)]
    pub created_at: Option<i64>,
}

/// What an import did (or, in a dry run, would do) with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Skip,
}

/// One record's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `tenant`, `key`, `token` or `link`.
    pub kind: &'static str,
    /// The key prefix, `<key_prefix>/<kid>`, the token's id there, or the link id (never a secret).
    pub id: String,
    pub action: Action,
    /// Why, for updates and skips.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Counts per action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub create: u64,
    pub update: u64,
    pub unchanged: u64,
    pub skip: u64,
}

impl Counts {
    fn add(&mut self, a: Action) {
        match a {
            Action::Create => self.create += 1,
            Action::Update => self.update += 1,
            Action::Unchanged => self.unchanged += 1,
            Action::Skip => self.skip += 1,
        }
    }
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub tenants: Counts,
    pub keys: Counts,
    pub tokens: Counts,
    pub links: Counts,
    /// Every record that is created, updated or skipped (unchanged ones are only counted).
    pub changes: Vec<Change>,
    /// Hot-path cache entries the import made stale (`tenant:<p>`, `short:<tu_id>`, `token:<sha256>`).
    #[serde(skip)]
    pub purge: Vec<String>,
}

impl ImportReport {
    fn note(&mut self, kind: &'static str, id: String, action: Action, reason: Option<String>) {
        match kind {
            "tenant" => self.tenants.add(action),
            "key" => self.keys.add(action),
            "token" => self.tokens.add(action),
            _ => self.links.add(action),
        }
        if action != Action::Unchanged {
            self.changes.push(Change { kind, id, action, reason });
        }
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The id a token gets here: `tok_v1_` and its id there, limited to `[A-Za-z0-9_-]` (64 characters at most).
fn token_id(old: &str, hash: &str) -> String {
    let clean: String = old.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).take(64).collect();
    if clean.is_empty() { format!("tok_v1_{}", hash.get(..16).unwrap_or(hash)) } else { format!("tok_v1_{clean}") }
}

/// The first row of a query, read by `read` while the statement is open.
async fn one_row<T>(
    tx: &libsql::Transaction,
    sql: &str,
    params: impl libsql::params::IntoParams,
    read: impl FnOnce(&libsql::Row) -> Result<T>,
) -> Result<Option<T>> {
    let mut rows = tx.query(sql, params).await?;
    match rows.next().await? {
        Some(row) => Ok(Some(read(&row)?)),
        None => Ok(None),
    }
}

impl Store {
    /// Applies `import` in one transaction (audited as `actor`), or with `dry_run` reports the same outcome and
    /// changes nothing.
    pub async fn import_tenants(
        &self,
        import: &TenantImport,
        dry_run: bool,
        actor: &str,
        now_ms: i64,
    ) -> Result<ImportReport> {
        let mut report = ImportReport { dry_run, ..ImportReport::default() };
        let conn = self.tx_conn().await?;
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        for t in &import.tenants {
            self.import_tenant(&tx, t, &mut report, now_ms).await?;
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            let detail = serde_json::json!({
                "tenants": report.tenants, "keys": report.keys, "tokens": report.tokens, "links": report.links,
            });
            audit_on(&tx, actor, "import_tenants", &detail, now_ms).await?;
            tx.commit().await?;
        }
        Ok(report)
    }

    async fn import_tenant(
        &self,
        tx: &libsql::Transaction,
        t: &ImportedTenant,
        report: &mut ImportReport,
        now_ms: i64,
    ) -> Result<()> {
        let p = t.key_prefix.as_str();
        let skip_all = |report: &mut ImportReport, reason: &str| {
            report.note("tenant", p.to_owned(), Action::Skip, Some(reason.to_owned()));
        };
        if !is_valid_key_prefix(p) || p == GLOBAL_KEY_PREFIX {
            skip_all(report, "the key prefix is not 2 to 32 of [a-z0-9] (or is \"global\")");
            return Ok(());
        }
        if t.name.is_empty() || t.name.len() > 200 {
            skip_all(report, "the name must be 1 to 200 bytes");
            return Ok(());
        }
        if t.signing_secret.is_empty() {
            skip_all(report, "the signing secret is empty");
            return Ok(());
        }
        let aes = match &t.encryption_key {
            Some(k) if parse_encryption_key(k).is_none() => {
                skip_all(report, "the encryption key is not 64 hex characters");
                return Ok(());
            }
            Some(k) => k.trim().to_ascii_lowercase(),
            None => {
                let mut raw = [0u8; 32];
                rand::rng().fill(&mut raw);
                hex::encode(raw)
            }
        };
        let exists = one_row(tx, "SELECT 1 FROM tenants WHERE key_prefix = ?1", [p], |_| Ok(())).await?.is_some();
        if exists {
            // the same tenant imported before holds the secret; a tenant of this platform that happens to have
            // the prefix must not receive another system's secret, tokens or links
            let mut rows = tx.query("SELECT signing_secret, kid FROM tenant_keys WHERE key_prefix = ?1", [p]).await?;
            let mut same = false;
            while let Some(row) = rows.next().await? {
                let bound = crate::sealing::key_row(p, &text(&row, 1, "kid")?, "signing_secret");
                if open_secret(self.sealer(), text(&row, 0, "signing_secret")?, &bound)? == t.signing_secret {
                    same = true;
                }
            }
            drop(rows);
            if !same {
                skip_all(report, "a tenant of this platform has this key prefix and not the imported secret");
                return Ok(());
            }
            report.note("tenant", p.to_owned(), Action::Unchanged, None);
            report.note("key", format!("{p}/{IMPORTED_KID}"), Action::Unchanged, None);
        } else {
            tx.execute(
                "INSERT INTO tenants (key_prefix, name, plan, limits, created_at) VALUES (?1, ?2, ?3, '{}', ?4)",
                (p, t.name.as_str(), t.plan.as_str(), t.created_at.unwrap_or(now_ms)),
            )
            .await?;
            let key = NewKey {
                key_prefix: p.to_owned(),
                kid: IMPORTED_KID.to_owned(),
                signing_secret: t.signing_secret.clone(),
                encryption_key: aes,
            };
            crate::insert_key(tx, &key, self, 1, now_ms).await?;
            report.note("tenant", p.to_owned(), Action::Create, None);
            report.note("key", format!("{p}/{IMPORTED_KID}"), Action::Create, None);
            report.purge.push(format!("tenant:{p}"));
        }
        for token in &t.ingest_tokens {
            self.import_token(tx, p, token, report, now_ms).await?;
        }
        for link in &t.links {
            import_link(tx, p, link, report, now_ms).await?;
        }
        Ok(())
    }

    async fn import_token(
        &self,
        tx: &libsql::Transaction,
        p: &str,
        token: &ImportedToken,
        report: &mut ImportReport,
        now_ms: i64,
    ) -> Result<()> {
        let id = token.id.clone();
        let hash = token.token_hash.to_ascii_lowercase();
        let skip = |report: &mut ImportReport, reason: &str| {
            report.note("token", id.clone(), Action::Skip, Some(reason.to_owned()));
        };
        if !is_sha256_hex(&hash) {
            skip(report, "token_hash is not a SHA-256 in hex");
            return Ok(());
        }
        if token.revoked {
            skip(report, "revoked");
            return Ok(());
        }
        if token.expires_at.is_some_and(|e| e <= now_ms) {
            skip(report, "expired");
            return Ok(());
        }
        let owner = one_row(tx, "SELECT key_prefix FROM ingest_tokens WHERE token_hash = ?1", [hash.as_str()], |row| {
            text(row, 0, "key_prefix")
        })
        .await?;
        if let Some(owner) = owner {
            if owner == p {
                report.note("token", id, Action::Unchanged, None);
            } else {
                skip(report, "another tenant has a token with this hash");
            }
            return Ok(());
        }
        let name: String = token.name.chars().take(200).collect();
        let n = tx
            .execute(
                "INSERT INTO ingest_tokens (token_hash, token_id, key_prefix, name, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                (hash.as_str(), token_id(&id, &hash), p, name, token.created_at.unwrap_or(now_ms), token.expires_at),
            )
            .await?;
        if n == 0 {
            skip(report, "a token with this id exists");
        } else {
            report.note("token", id, Action::Create, None);
            report.purge.push(format!("token:{hash}"));
        }
        Ok(())
    }
}

async fn import_link(
    tx: &libsql::Transaction,
    p: &str,
    link: &ImportedLink,
    report: &mut ImportReport,
    now_ms: i64,
) -> Result<()> {
    let id = link.tu_id.clone();
    if !is_valid_short_id(&id) {
        report.note("link", id, Action::Skip, Some("the id is not tu_<uuid>".into()));
        return Ok(());
    }
    if link.destination.is_empty() || link.destination.len() > MAX_DESTINATION_LEN {
        report.note(
            "link",
            id,
            Action::Skip,
            Some(format!("the destination is empty or over {MAX_DESTINATION_LEN} bytes")),
        );
        return Ok(());
    }
    let existing =
        one_row(tx, "SELECT key_prefix, destination, v1 FROM tracking_urls WHERE tu_id = ?1", [id.as_str()], |row| {
            Ok((text(row, 0, "key_prefix")?, text(row, 1, "destination")?, int(row, 2, "v1")? != 0))
        })
        .await?;
    match existing {
        Some((owner, _, _)) if owner != p => {
            report.note("link", id, Action::Skip, Some("another tenant has a link with this id".into()));
        }
        Some((_, destination, _)) if destination == link.destination => {
            report.note("link", id, Action::Unchanged, None);
        }
        // a link made on this platform keeps its destination; one imported before follows the source
        Some((_, _, false)) => {
            report.note("link", id, Action::Skip, Some("a link of this platform has this id".into()));
        }
        Some(_) => {
            tx.execute(
                "UPDATE tracking_urls SET destination = ?2, updated_at = ?3 WHERE tu_id = ?1",
                (id.as_str(), link.destination.as_str(), now_ms),
            )
            .await?;
            report.purge.push(format!("short:{id}"));
            report.note("link", id, Action::Update, Some("the destination changed".into()));
        }
        None => {
            tx.execute(
                "INSERT INTO tracking_urls (tu_id, key_prefix, destination, created_at, v1) VALUES (?1, ?2, ?3, ?4, 1)",
                (id.as_str(), p, link.destination.as_str(), link.created_at.unwrap_or(now_ms)),
            )
            .await?;
            report.purge.push(format!("short:{id}"));
            report.note("link", id, Action::Create, None);
        }
    }
    Ok(())
}

/// Where an event import stands: the rows of its source that are stored (`next_row`), and its totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportRun {
    pub run_id: String,
    pub source: String,
    pub next_row: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

impl Store {
    /// The run `run_id`, if it started before.
    pub async fn import_run(&self, run_id: &str) -> Result<Option<ImportRun>> {
        let conn = self.conn().await?;
        let mut rows = conn
            .query(
                "SELECT run_id, source, next_row, accepted, rejected, started_at, finished_at FROM import_runs
                 WHERE run_id = ?1",
                [run_id],
            )
            .await?;
        let Some(row) = rows.next().await? else { return Ok(None) };
        let count = |i, col| int(&row, i, col).map(|n| u64::try_from(n).unwrap_or(0));
        Ok(Some(ImportRun {
            run_id: text(&row, 0, "run_id")?,
            source: text(&row, 1, "source")?,
            next_row: count(2, "next_row")?,
            accepted: count(3, "accepted")?,
            rejected: count(4, "rejected")?,
            started_at: int(&row, 5, "started_at")?,
            finished_at: opt_int(&row, 6, "finished_at")?,
        }))
    }

    /// Records how far a run got (after the rows before `next_row` are durable in the log).
    pub async fn save_import_run(&self, run: &ImportRun, now_ms: i64) -> Result<()> {
        let signed = |n: u64| i64::try_from(n).map_err(|_| StoreError::Invalid("count out of range"));
        self.conn()
            .await?
            .execute(
                "INSERT INTO import_runs
                   (run_id, source, next_row, accepted, rejected, started_at, updated_at, finished_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT DO UPDATE SET next_row = excluded.next_row, accepted = excluded.accepted,
                   rejected = excluded.rejected, updated_at = excluded.updated_at, finished_at = excluded.finished_at",
                (
                    run.run_id.as_str(),
                    run.source.as_str(),
                    signed(run.next_row)?,
                    signed(run.accepted)?,
                    signed(run.rejected)?,
                    run.started_at,
                    now_ms,
                    run.finished_at,
                ),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    const NOW: i64 = 1_770_704_294_008;
    const TU: &str = "tu_019502a1-7b3c-7def-8abc-1234567890ab";

    fn sample() -> TenantImport {
        TenantImport {
            tenants: vec![ImportedTenant {
                key_prefix: "6vct".into(),
                name: "Six".into(),
                plan: "free".into(),
                created_at: Some(1_700_000_000_000),
                signing_secret: "a".repeat(64),
                encryption_key: Some("b".repeat(64)),
                ingest_tokens: vec![
                    ImportedToken {
                        id: "0lh4t3ab".into(),
                        token_hash: hex::encode(sha2::Sha256::digest(b"pt_6vct_abcdefghijklmnopqrstuvwxyz012345")),
                        name: "server".into(),
                        created_at: None,
                        expires_at: None,
                        revoked: false,
                    },
                    ImportedToken {
                        id: "gone".into(),
                        token_hash: "c".repeat(64),
                        name: "old".into(),
                        created_at: None,
                        expires_at: None,
                        revoked: true,
                    },
                ],
                links: vec![ImportedLink {
                    tu_id: TU.into(),
                    destination: "https://offer.example/x".into(),
                    created_at: None,
                }],
            }],
        }
    }

    #[tokio::test]
    async fn an_import_brings_credentials_and_links_once_and_a_dry_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).await.unwrap();
        let dry = store.import_tenants(&sample(), true, "cli", NOW).await.unwrap();
        assert_eq!((dry.tenants.create, dry.tokens.create, dry.tokens.skip, dry.links.create), (1, 1, 1, 1));
        assert!(store.tenant_keys("6vct").await.unwrap().is_none(), "a dry run writes nothing");
        assert!(store.audit_log(5).await.unwrap().is_empty());

        let done = store.import_tenants(&sample(), false, "cli", NOW).await.unwrap();
        assert_eq!(done.changes, dry.changes);
        let keys = store.tenant_keys("6vct").await.unwrap().unwrap();
        assert_eq!(keys.keys[0].kid, IMPORTED_KID);
        assert_eq!(keys.keys[0].signing_secret.as_deref(), Some("a".repeat(64).as_str()));
        assert_eq!(keys.keys[0].encryption_key, Some([0xbb; 32]));
        let token = store.lookup_ingest_token("pt_6vct_abcdefghijklmnopqrstuvwxyz012345", NOW).await.unwrap().unwrap();
        assert_eq!((token.key_prefix.as_str(), token.token_id.as_str()), ("6vct", "tok_v1_0lh4t3ab"));
        let link = store.short_link(TU).await.unwrap().unwrap();
        assert!(link.v1 && link.key_prefix == "6vct");
        assert_eq!(store.audit_log(5).await.unwrap()[0].action, "import_tenants");

        // again: nothing to do; a moved destination follows the source
        let again = store.import_tenants(&sample(), false, "cli", NOW).await.unwrap();
        assert_eq!((again.tenants.unchanged, again.tokens.unchanged, again.links.unchanged), (1, 1, 1));
        let mut moved = sample();
        moved.tenants[0].links[0].destination = "https://offer.example/y".into();
        assert_eq!(store.import_tenants(&moved, false, "cli", NOW).await.unwrap().links.update, 1);
        assert_eq!(store.short_link(TU).await.unwrap().unwrap().destination, "https://offer.example/y");
    }

    #[tokio::test]
    async fn an_import_never_takes_over_what_is_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).await.unwrap();
        store.create_tenant("Native", Some("6vct"), NOW).await.unwrap();
        let r = store.import_tenants(&sample(), false, "cli", NOW).await.unwrap();
        assert_eq!((r.tenants.skip, r.tokens.create, r.links.create), (1, 0, 0));
        assert!(store.short_link(TU).await.unwrap().is_none());
        assert_eq!(store.tenant_keys("6vct").await.unwrap().unwrap().keys.len(), 1);
        // a link id that another tenant holds is skipped
        let mut other = sample();
        other.tenants[0].key_prefix = "zz12".into();
        store.create_tenant("Owner", Some("ab12"), NOW).await.unwrap();
        store
            .conn()
            .await
            .unwrap()
            .execute(
                "INSERT INTO tracking_urls (tu_id, key_prefix, destination, created_at)
                 VALUES (?1, 'ab12', 'https://a.example/', 0)",
                [TU],
            )
            .await
            .unwrap();
        let r = store.import_tenants(&other, false, "cli", NOW).await.unwrap();
        assert_eq!((r.tenants.create, r.links.skip), (1, 1));
        assert_eq!(store.short_link(TU).await.unwrap().unwrap().key_prefix, "ab12");
    }
}
