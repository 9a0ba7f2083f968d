//! Reading rows (typed columns that name the column when they are not what the schema says), new ids and
//! secrets, deleting a tenant's row, and paging lists by an exclusive cursor.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libsql::Value;
use rand::Rng as _;
use serde::Serialize;

use crate::{Result, Store, StoreError};

/// Most rows one page returns.
pub const MAX_PAGE: u32 = 200;

pub(crate) fn text(row: &libsql::Row, i: i32, col: &'static str) -> Result<String> {
    match row.get_value(i)? {
        Value::Text(s) => Ok(s),
        _ => Err(StoreError::BadColumn(col)),
    }
}

pub(crate) fn int(row: &libsql::Row, i: i32, col: &'static str) -> Result<i64> {
    match row.get_value(i)? {
        Value::Integer(n) => Ok(n),
        _ => Err(StoreError::BadColumn(col)),
    }
}

pub(crate) fn opt_int(row: &libsql::Row, i: i32, col: &'static str) -> Result<Option<i64>> {
    match row.get_value(i)? {
        Value::Integer(n) => Ok(Some(n)),
        Value::Null => Ok(None),
        _ => Err(StoreError::BadColumn(col)),
    }
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

pub(crate) fn random_prefix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6).filter_map(|_| ALPHABET.get(rng.random_range(0..ALPHABET.len())).map(|b| char::from(*b))).collect()
}

/// One page of a list, and the cursor of the next one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

pub(crate) fn new_id(kind: &str) -> String {
    format!("{kind}_{}", uuid::Uuid::now_v7().simple())
}

pub(crate) fn random_secret(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill(&mut raw);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// Deletes the tenant's row `id` of `table` (table and column are constants of this module, never input).
pub(crate) async fn delete_owned(
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

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(row: &libsql::Row, i: i32, col: &'static str) -> Result<T> {
    serde_json::from_str(&text(row, i, col)?).map_err(|_| StoreError::BadColumn(col))
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
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
