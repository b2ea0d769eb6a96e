//! Storage over two backends: embedded SQLite (default) and PostgreSQL (a fleet of control
//! planes sharing one database).
//!
//! Each backend has its own migrations (`migrations/sqlite`, `migrations/postgres`, embedded
//! at compile time; no build needs a database). Queries are written once: they use `$N`
//! placeholders, which both drivers accept, and only `TEXT`, 64-bit integers and NULL, which
//! decode the same on both. The `with_tx!` and `with_pool!` macros expand one body per
//! backend, so each copy is type-checked against its own driver without `sqlx::Any`.
//!
//! ## Transactions and locking
//!
//! Every change runs in one transaction, committed only when the whole body succeeded; an
//! early return (`?`) drops the transaction, which rolls it back, so a half-failed request
//! leaves nothing half-written.
//!
//! - SQLite: write transactions start with `BEGIN IMMEDIATE`, taking the database's write lock
//!   up front. Writers are serialized; none can read a stale value and then write, and none
//!   fails upgrading a read lock (`SQLITE_BUSY`) — they wait up to the busy timeout.
//! - PostgreSQL (READ COMMITTED): a change that decides on a region's totals first locks that
//!   region's row (`SELECT … FOR UPDATE`) and a request's lifecycle step locks the request's
//!   row, so concurrent approvals — also from other control-plane processes — queue on the
//!   region and each sees the reservations committed before it.

mod allowlist;
mod apps;
mod edge_cidrs;
mod edges;
mod leases;
mod owners;
mod private_files;
mod requests;
mod usage;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use cloudproxy_api::{
    App, AppKeyInfo, CreatedApp, Edge, EdgeCidrs, EdgeCidrsInput, EdgeInput, EdgeUpdate, Heartbeat,
    Lease, LeaseInput, NewSecret, Owner, Published, RegionSummary, RetiringKey, SyncApp, SyncKey,
    UsageDay, UsageRecord, UsageReport, MAX_EDGE_CIDRS,
};

use crate::error::{ControlError, StoreError};

/// How long a writer waits for SQLite's write lock, and how long a request waits for a pooled
/// connection, before failing.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The database behind the control plane.
#[derive(Debug, Clone)]
pub enum Store {
    /// An embedded SQLite file (or `sqlite::memory:`), the default.
    Sqlite(SqlitePool),
    /// A PostgreSQL server, for several control-plane processes over one database.
    Postgres(PgPool),
}

/// Runs `$body` in a write transaction of either backend, binding the transaction to `$tx`
/// and `$pg` to whether it is PostgreSQL; commits when the body's value is reached.
macro_rules! with_tx {
    ($store:expr, |$tx:ident, $pg:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                #[allow(unused_variables)]
                let $pg = false;
                let value = $body;
                $tx.commit().await?;
                value
            }
            $crate::store::Store::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                #[allow(unused_variables)]
                let $pg = true;
                let value = $body;
                $tx.commit().await?;
                value
            }
        }
    };
}

/// Runs a read-only `$body` on either backend's pool, bound to `$pool`.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Sqlite($pool) => $body,
            $crate::store::Store::Postgres($pool) => $body,
        }
    };
}

pub(crate) use {with_pool, with_tx};

impl Store {
    /// Opens `url` and brings its schema up to date. `sqlite:PATH` (created when missing, 0600
    /// in a 0700 directory; see `private_files`),
    /// `sqlite::memory:` (one connection, gone when the store is dropped) or
    /// `postgres://…`/`postgresql://…`.
    pub async fn open(url: &str) -> Result<Store, ControlError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(LOCK_WAIT)
                .connect(url)
                .await
                .map_err(ControlError::Connect)?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Store::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|_| ControlError::DatabaseUrl(url.into()))?
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(LOCK_WAIT);
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            if !memory {
                private_files::prepare_sqlite(options.get_filename())?;
            }
            let pool = if memory {
                // Every connection to `:memory:` is its own database: keep exactly one, forever.
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(LOCK_WAIT)
                    .connect_with(options)
                    .await
            } else {
                SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(LOCK_WAIT)
                    .connect_with(
                        options
                            .journal_mode(SqliteJournalMode::Wal)
                            .synchronous(SqliteSynchronous::Normal),
                    )
                    .await
            }
            .map_err(ControlError::Connect)?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Store::Sqlite(pool)
        } else {
            return Err(ControlError::DatabaseUrl(url.into()));
        };
        Ok(store)
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The connection pool now: connections open, of which idle, and the most it opens.
    pub fn pool_stats(&self) -> PoolStats {
        let (open, idle, max) = match self {
            Store::Sqlite(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
            Store::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        };
        PoolStats {
            open,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max,
        }
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.close().await,
        }
    }
}

/// The database connection pool, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (idle and in use).
    pub open: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// The row a lookup needed, or [`StoreError::NotFound`] naming what is missing.
pub(crate) fn found<T>(row: Option<T>, what: &'static str, id: &str) -> Result<T, StoreError> {
    row.ok_or_else(|| StoreError::not_found(what, id))
}

/// Ok when a change touched a row (`rows_affected` > 0), else [`StoreError::NotFound`].
pub(crate) fn touched(rows_affected: u64, what: &'static str, id: &str) -> Result<(), StoreError> {
    found((rows_affected > 0).then_some(()), what, id)
}

/// Parses a stored enum spelling.
pub(crate) fn parse_wire<T: crate::model::Wire>(what: &str, s: &str) -> Result<T, StoreError> {
    T::parse(s).ok_or_else(|| StoreError::Corrupt(format!("{what} '{s}'")))
}

/// A random identifier of `bytes` random bytes in lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// SHA-256 of an API key, hex: what `api_keys.key_hash` holds.
pub(crate) fn hash_key(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}
