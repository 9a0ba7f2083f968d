//! The replaced system's metadata, read from an export of its libSQL (Turso) database, into a [`TenantImport`].
//!
//! Accepted exports: the SQL text of `turso db shell <db> .dump` (or `sqlite3 <file> .dump`), a copy of the
//! database file itself, or a [`TenantImport`] JSON document. A dump is loaded into a scratch in-memory database and
//! read back by column name: that system added columns with `ALTER TABLE`, so their order differs between
//! databases, and a database built by its migration script can lack whole tables.
//!
//! What is read, per tenant (`tenants`): `key_prefix`, `name`, `plan`, `created_at` (seconds), `hmac_secret` (the
//! text its links were signed with) and `encryption_key` (64 hex); its ingest tokens (`ingest_tokens`: only the
//! SHA-256 hex of each token was kept, which is all that is needed, with `expires_at` in seconds, valid through
//! that second, and `revoked`); its short links (`tracking_urls`: `tu_<uuidv7>` ids and destinations, no expiry).
//! Its API keys, webhooks (signed differently there) and filter rules are not brought over.

use std::collections::BTreeMap;
use std::path::Path;

use libsql::Value;
use tracker_store::imports::{ImportedLink, ImportedTenant, ImportedToken, TenantImport};

use crate::ImportError;

/// A row of a table, by column name.
type Row = BTreeMap<String, Value>;

/// How plans of that system map onto this one's.
#[derive(Debug, Clone)]
pub struct PlanMap {
    /// The plans this platform is configured with.
    pub known: Vec<String>,
    /// The plan of a tenant whose plan is not one of them.
    pub default: String,
}

impl PlanMap {
    fn map(&self, plan: Option<&str>) -> String {
        match plan {
            Some(p) if self.known.iter().any(|k| k == p) => p.to_owned(),
            _ => self.default.clone(),
        }
    }
}

/// What an export holds, and what of it could not be read.
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub import: TenantImport,
    /// Tables that are missing, rows that name no tenant, ...
    pub notes: Vec<String>,
}

/// Reads an export file (SQL dump, database file, or a [`TenantImport`] JSON document).
pub async fn read(path: &Path, plans: &PlanMap) -> Result<Export, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::Source(format!("{}: {e}", path.display())))?;
    let text_start = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if text_start == Some(b'{') {
        let mut import: TenantImport = serde_json::from_slice(&bytes)
            .map_err(|e| ImportError::Source(format!("{}: not a tenant import document: {e}", path.display())))?;
        for t in &mut import.tenants {
            t.plan = plans.map(Some(&t.plan));
        }
        return Ok(Export { import, notes: Vec::new() });
    }
    let scratch = tempfile::tempdir().map_err(|e| ImportError::Source(e.to_string()))?;
    let db_path = scratch.path().join("export.db");
    if bytes.starts_with(b"SQLite format 3\0") {
        // a copy: opening a database file may write to it (journal, WAL), and the export is the user's
        std::fs::write(&db_path, &bytes).map_err(|e| ImportError::Source(e.to_string()))?;
    }
    let db = libsql::Builder::new_local(&db_path).build().await?;
    let conn = db.connect()?;
    if !bytes.starts_with(b"SQLite format 3\0") {
        let sql = std::str::from_utf8(&bytes)
            .map_err(|_| ImportError::Source(format!("{}: neither a SQL dump nor a database file", path.display())))?;
        conn.execute_batch(sql)
            .await
            .map_err(|e| ImportError::Source(format!("{}: the dump does not load: {e}", path.display())))?;
    }
    read_db(&conn, plans).await
}

async fn table(conn: &libsql::Connection, name: &str, notes: &mut Vec<String>) -> Result<Vec<Row>, ImportError> {
    let mut exists = conn.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", [name]).await?;
    if exists.next().await?.is_none() {
        notes.push(format!("the export has no {name} table"));
        return Ok(Vec::new());
    }
    drop(exists);
    // the name is one of this module's constants, never input
    let mut rows = conn.query(&format!("SELECT * FROM {name}"), ()).await?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().await? {
        let mut map = Row::new();
        for i in 0..row.column_count() {
            if let Some(col) = row.column_name(i) {
                map.insert(col.to_owned(), row.get_value(i)?);
            }
        }
        out.push(map);
    }
    Ok(out)
}

fn text(row: &Row, col: &str) -> Option<String> {
    match row.get(col) {
        Some(Value::Text(s)) => Some(s.clone()),
        Some(Value::Integer(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn integer(row: &Row, col: &str) -> Option<i64> {
    match row.get(col) {
        Some(Value::Integer(n)) => Some(*n),
        Some(Value::Text(s)) => s.trim().parse().ok(),
        Some(Value::Real(f)) if f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

fn secs_to_ms(s: Option<i64>) -> Option<i64> {
    s.filter(|s| *s > 0).map(|s| s.saturating_mul(1000))
}

async fn read_db(conn: &libsql::Connection, plans: &PlanMap) -> Result<Export, ImportError> {
    let mut notes = Vec::new();
    let tenants = table(conn, "tenants", &mut notes).await?;
    let tokens = table(conn, "ingest_tokens", &mut notes).await?;
    let links = table(conn, "tracking_urls", &mut notes).await?;
    // that system's tenant ids are not ours: rows name their tenant by id (links) or by key prefix (tokens)
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_prefix: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<ImportedTenant> = Vec::new();
    for row in &tenants {
        let (Some(key_prefix), Some(signing_secret)) = (text(row, "key_prefix"), text(row, "hmac_secret")) else {
            notes.push(format!("a tenant row without key_prefix or hmac_secret ({:?}) is skipped", text(row, "id")));
            continue;
        };
        let i = out.len();
        if let Some(id) = text(row, "id") {
            by_id.insert(id, i);
        }
        by_prefix.insert(key_prefix.clone(), i);
        out.push(ImportedTenant {
            name: text(row, "name").filter(|n| !n.is_empty()).unwrap_or_else(|| key_prefix.clone()),
            plan: plans.map(text(row, "plan").as_deref()),
            created_at: secs_to_ms(integer(row, "created_at")),
            signing_secret,
            encryption_key: text(row, "encryption_key").filter(|k| !k.is_empty()),
            ingest_tokens: Vec::new(),
            links: Vec::new(),
            key_prefix,
        });
    }
    for row in &tokens {
        let owner = text(row, "key_prefix")
            .and_then(|p| by_prefix.get(&p).copied())
            .or_else(|| text(row, "tenant_id").and_then(|id| by_id.get(&id).copied()));
        let (Some(i), Some(hash)) = (owner, text(row, "token_hash")) else {
            notes.push(format!("ingest token {:?} names no tenant of the export and is skipped", text(row, "id")));
            continue;
        };
        if let Some(t) = out.get_mut(i) {
            t.ingest_tokens.push(ImportedToken {
                id: text(row, "id").unwrap_or_default(),
                token_hash: hash,
                name: text(row, "name").unwrap_or_else(|| "imported".into()),
                created_at: secs_to_ms(integer(row, "created_at")),
                // valid through the second it names: the first moment it no longer works is the next second
                expires_at: integer(row, "expires_at")
                    .filter(|s| *s > 0)
                    .map(|s| s.saturating_add(1).saturating_mul(1000)),
                revoked: integer(row, "revoked").unwrap_or(0) != 0,
            });
        }
    }
    for row in &links {
        let owner = text(row, "tenant_id").and_then(|id| by_id.get(&id).copied());
        let (Some(i), Some(tu_id), Some(destination)) = (owner, text(row, "id"), text(row, "destination")) else {
            notes.push(format!("short link {:?} names no tenant of the export and is skipped", text(row, "id")));
            continue;
        };
        if let Some(t) = out.get_mut(i) {
            t.links.push(ImportedLink { tu_id, destination, created_at: secs_to_ms(integer(row, "created_at")) });
        }
    }
    Ok(Export { import: TenantImport { tenants: out }, notes })
}
