//! Pooled libSQL connections and numbered migrations, shared by the metadata store and the hot tier.

use libsql::Connection;
use tracker_protocol::Secret;

use crate::{Result, StoreError, int};

/// Idle local connections kept for reuse, and the most statements running at once.
const MAX_IDLE: usize = 16;

/// A connection lent by [`Db::conn`], back to the pool when dropped.
pub(crate) struct Conn<'a> {
    conn: Option<Connection>,
    db: &'a Db,
    /// The connection's count of rows changed when it was lent.
    changes: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // always `Some` until drop
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a lent connection is present until dropped"))
    }
}

impl<'a> Conn<'a> {
    /// Runs a query; the rows keep the connection until they are dropped, so it cannot go back to the pool (and
    /// to another caller) with a statement still open.
    pub(crate) async fn query(self, sql: &str, params: impl libsql::params::IntoParams) -> Result<PooledRows<'a>> {
        let rows = Connection::query(&self, sql, params).await?;
        Ok(PooledRows { rows, _conn: self })
    }
}

/// Rows that hold their connection (fields drop in order: the statement first, then the connection).
pub(crate) struct PooledRows<'a> {
    rows: libsql::Rows,
    _conn: Conn<'a>,
}

impl PooledRows<'_> {
    pub(crate) async fn next(&mut self) -> libsql::Result<Option<libsql::Row>> {
        self.rows.next().await
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.db.count_written(self.conn.as_ref(), self.changes);
        if !self.db.local {
            return;
        }
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.db.idle.lock())
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

/// Where the metadata lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local database file (the default).
    File(std::path::PathBuf),
    /// A remote libSQL server such as Turso (`libsql://`, `https://`), every statement a network round trip.
    Remote { url: String, auth_token: Secret<String> },
    /// An embedded replica: reads from a local file kept in sync with the remote primary, writes forwarded to it
    /// (and visible to this process's next read).
    Replica { path: std::path::PathBuf, url: String, auth_token: Secret<String>, sync_interval: std::time::Duration },
}

/// Idle connections.
type Pool = std::sync::Arc<std::sync::Mutex<Vec<Connection>>>;

/// How a local file's commits reach the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Every commit is on disk before it returns (`FULL`): the metadata, and whatever nothing else could rebuild.
    Full,
    /// Commits are atomic, and on disk at the next checkpoint (`NORMAL` in WAL mode): a power loss can undo the
    /// last commits, never part of one. Only for a transaction whose data is derived from the durable log and
    /// whose position commits with it: an undone commit undoes its position too, and the consumer reads those
    /// events again ([`Db::derived_tx_conn`]).
    Derived,
}

/// A libSQL database: a pool of local connections, or fresh streams to a remote one.
#[derive(Clone)]
pub(crate) struct Db {
    db: std::sync::Arc<libsql::Database>,
    /// Idle connections to a local file.
    idle: std::sync::Arc<std::sync::Mutex<Vec<Connection>>>,
    /// Idle connections for write transactions to a local file (set up once: foreign keys, durability): `FULL`
    /// ones, and `NORMAL` ones for [`Durability::Derived`].
    writers: Pool,
    derived_writers: Pool,
    /// Whether this is the hot tier's file (its writers queue in-process, with a page cache of their own).
    hot: bool,
    /// The hot tier's writers take turns here (FIFO) rather than in SQLite's busy handler, which sleeps for
    /// milliseconds between tries: the filter and the stats consumer run on two threads against one file.
    queue: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    /// Connections in use at once (statements; transactions open their own).
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    local: bool,
    /// Rows the hot tier's statements inserted, updated or deleted ([`HOT_ROWS_WRITTEN`]).
    rows_written: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The metric of rows the hot tier's statements inserted, updated or deleted: what a hosted libSQL such as Turso
/// bills as rows written.
pub const HOT_ROWS_WRITTEN: &str = "tracker_hot_rows_written_total";

impl Db {
    /// Opens the database at `location`, applies `schema` and then the `migrations` it has not seen.
    pub(crate) async fn connect(location: &Location, schema: &str, migrations: &[&str]) -> Result<Db> {
        Db::connect_with(location, schema, migrations, false).await
    }

    /// [`Db::connect`], for the hot tier's file when `hot`.
    pub(crate) async fn connect_with(location: &Location, schema: &str, migrations: &[&str], hot: bool) -> Result<Db> {
        let db = match location {
            Location::File(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                libsql::Builder::new_local(path).build().await?
            }
            Location::Remote { url, auth_token } => {
                libsql::Builder::new_remote(url.clone(), auth_token.expose().clone()).build().await?
            }
            Location::Replica { path, url, auth_token, sync_interval } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let db = libsql::Builder::new_remote_replica(path, url.clone(), auth_token.expose().clone())
                    .sync_interval(*sync_interval)
                    .read_your_writes(true)
                    .build()
                    .await?;
                db.sync().await?;
                db
            }
        };
        let local = matches!(location, Location::File(_));
        let db = Db {
            db: std::sync::Arc::new(db),
            idle: Default::default(),
            writers: Default::default(),
            derived_writers: Default::default(),
            hot,
            queue: (local && hot).then(Default::default),
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IDLE)),
            local,
            rows_written: Default::default(),
        };
        if hot {
            metrics::describe_counter!(
                HOT_ROWS_WRITTEN,
                "Rows the hot tier's statements inserted, updated or deleted (a hosted libSQL bills these)."
            );
        }
        let setup = db.tx_conn().await?;
        if local {
            // WAL (a property of the file) lets the CLI write while a node reads; the pragma answers with a row
            let _ = setup.query("PRAGMA journal_mode=WAL", ()).await?;
        }
        setup.execute_batch(schema).await?;
        migrate(&setup, migrations).await?;
        drop(setup);
        Ok(db)
    }

    /// A connection for one statement, held by one caller at a time so no request ever sees another's open
    /// statement or transaction state (a connection holding a read while another commits would fail its next write
    /// with `SQLITE_BUSY_SNAPSHOT`). On a local file, idle connections are reused (opening one costs a file open
    /// and a schema parse); on a remote server every statement gets a stream of its own (servers interrupt
    /// streams that ran a transaction once another writer takes the lock). Rows hold their connection, so it goes
    /// back to the pool only after them.
    pub(crate) async fn conn(&self) -> Result<Conn<'_>> {
        // a bounded number of connections at once: under load, callers queue here instead of opening more
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Io(std::io::Error::other("the store is closed")))?;
        let idle = if self.local { self.idle.lock().ok().and_then(|mut idle| idle.pop()) } else { None };
        let conn = match idle {
            Some(c) => c,
            None => self.open_conn()?,
        };
        let changes = conn.total_changes();
        Ok(Conn { conn: Some(conn), db: self, changes, _permit: permit })
    }

    fn open_conn(&self) -> Result<Connection> {
        let conn = self.db.connect()?;
        if self.local {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
        }
        Ok(conn)
    }

    /// A connection for one transaction, with foreign keys enforced on a local file. Write transactions begin
    /// `IMMEDIATE`: one that reads first and upgrades to a write lock later fails at once when another writer is
    /// active, where an immediate one waits its turn (`busy_timeout`). On a local file the connection is reused
    /// once the transaction has ended (a dropped transaction rolls back; one still open is never reused).
    pub(crate) async fn tx_conn(&self) -> Result<TxConn<'_>> {
        self.writer(Durability::Full).await
    }

    /// [`Db::tx_conn`] for a transaction that may commit with [`Durability::Derived`] (a consumer's output and
    /// position from the durable log, or retention).
    pub(crate) async fn derived_tx_conn(&self) -> Result<TxConn<'_>> {
        self.writer(Durability::Derived).await
    }

    async fn writer(&self, durability: Durability) -> Result<TxConn<'_>> {
        let turn = match &self.queue {
            Some(q) => Some(q.clone().lock_owned().await),
            None => None,
        };
        let pool = match durability {
            Durability::Full => &self.writers,
            Durability::Derived => &self.derived_writers,
        };
        let idle = if self.local { pool.lock().ok().and_then(|mut w| w.pop()) } else { None };
        let conn = match idle {
            Some(c) => c,
            None => {
                let conn = self.open_conn()?;
                if self.local {
                    conn.execute("PRAGMA foreign_keys=ON", ()).await?;
                    if durability == Durability::Derived {
                        conn.execute("PRAGMA synchronous=NORMAL", ()).await?;
                    }
                    if self.hot {
                        // the hot tier's writes land all over its indexes: a page cache of its own (32 MiB), and
                        // statement journals (an upsert's undo within its transaction) in memory, not a temp file
                        conn.execute("PRAGMA cache_size=-32768", ()).await?;
                        conn.execute("PRAGMA temp_store=MEMORY", ()).await?;
                    }
                }
                conn
            }
        };
        let changes = conn.total_changes();
        Ok(TxConn { conn: Some(conn), db: self, pool, changes, _turn: turn })
    }

    /// Rows the hot tier's statements inserted, updated or deleted since it was opened.
    pub(crate) fn rows_written(&self) -> u64 {
        self.rows_written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds what `conn` changed since its count was `changes` to the hot tier's rows written.
    fn count_written(&self, conn: Option<&Connection>, changes: u64) {
        let Some(conn) = conn.filter(|_| self.hot) else { return };
        // a read changes nothing: no metric lookup for it
        let written = conn.total_changes().saturating_sub(changes);
        if written > 0 {
            self.rows_written.fetch_add(written, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!(HOT_ROWS_WRITTEN).increment(written);
        }
    }
}

/// A connection lent by [`Db::tx_conn`] for one transaction, back to the writers' pool when dropped.
pub(crate) struct TxConn<'a> {
    conn: Option<Connection>,
    db: &'a Db,
    /// The pool it goes back to (its durability).
    pool: &'a Pool,
    /// The connection's count of rows changed when it was lent.
    changes: u64,
    /// This writer's turn ([`Db::tx_conn`]), given up after the connection is back in the pool.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl std::ops::Deref for TxConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().unwrap_or_else(|| unreachable!("a lent connection is present until dropped"))
    }
}

impl Drop for TxConn<'_> {
    fn drop(&mut self) {
        self.db.count_written(self.conn.as_ref(), self.changes);
        if !self.db.local {
            return;
        }
        if let (Some(conn), Ok(mut idle)) = (self.conn.take(), self.pool.lock())
            && conn.is_autocommit()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
    }
}

/// Applies the migrations this database has not seen, each in one `IMMEDIATE` transaction with its version record
/// (a table, not `PRAGMA user_version`, so it works on remote servers too). The version is read inside the
/// transaction, so nodes starting together apply each migration once: the others wait for the lock and skip it.
async fn migrate(conn: &Connection, migrations: &[&str]) -> Result<()> {
    conn.execute("CREATE TABLE IF NOT EXISTS tracker_schema (version INTEGER PRIMARY KEY) STRICT", ()).await?;
    for (i, sql) in migrations.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let tx = conn.transaction_with_behavior(libsql::TransactionBehavior::Immediate).await?;
        let mut rows = tx.query("SELECT COALESCE(MAX(version), 0) FROM tracker_schema", ()).await?;
        let applied = match rows.next().await? {
            Some(row) => int(&row, 0, "version")?,
            None => 0,
        };
        drop(rows);
        if applied >= version {
            tx.rollback().await?;
            continue;
        }
        tx.execute_batch(sql).await?;
        tx.execute("INSERT INTO tracker_schema (version) VALUES (?1)", [version]).await?;
        tx.commit().await?;
        tracing::info!(version, "schema migrated");
    }
    Ok(())
}
