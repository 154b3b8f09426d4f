//! The engine layer: one API over SQLite and PostgreSQL.
//!
//! SQL is written once with PostgreSQL-style `$N` placeholders in the common dialect subset
//! (`ON CONFLICT`, `RETURNING`, CTEs); placeholders are rewritten for SQLite when prepared.
//! Where dialects differ, a migration has a `.sqlite.sql` / `.postgres.sql` variant, and a
//! query picks its text with [`Db::dialect`].

mod migrate;
mod postgres;
mod sqlite;
mod value;

use std::path::Path;
use std::sync::Arc;

use myelin_config::{DatabaseConfig, PostgresConfig};

pub use value::{Row, Value};

use crate::StoreError;

/// Which SQL dialect a query must be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Engine {
    Sqlite(Arc<sqlite::SqliteEngine>),
    Postgres(deadpool_postgres::Pool),
}

/// A handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    engine: Engine,
}

/// An open transaction. Committed by [`Db::transaction`] when the closure returns `Ok`,
/// rolled back otherwise.
pub struct Tx<'a> {
    inner: TxInner<'a>,
}

enum TxInner<'a> {
    Sqlite(sqlite::WriterGuard<'a>),
    Postgres(deadpool_postgres::Transaction<'a>),
}

impl Db {
    /// Opens (creating if needed) the configured database and applies pending migrations.
    pub async fn open(config: &DatabaseConfig) -> Result<Db, StoreError> {
        let db = match config {
            DatabaseConfig::Sqlite { path } => Db::open_sqlite(path)?,
            DatabaseConfig::Postgres(pg) => Db::open_postgres(pg).await?,
        };
        migrate::run(&db).await?;
        Ok(db)
    }

    /// Opens (creating if needed) a SQLite database of its own beside the migrated main one,
    /// holding what `schema` (a migration's statements) makes, run when the file does not hold
    /// `table` yet.
    pub(crate) async fn open_sqlite_with_schema(
        path: &Path,
        table: &str,
        schema: &str,
    ) -> Result<Db, StoreError> {
        let db = Db::open_sqlite(path)?;
        db.transaction(async |tx| {
            let made = tx
                .query_opt(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1",
                    vec![table.into()],
                )
                .await?
                .is_some();
            if !made {
                db.batch(tx, schema).await?;
            }
            Ok(())
        })
        .await?;
        Ok(db)
    }

    fn open_sqlite(path: &Path) -> Result<Db, StoreError> {
        Ok(Db { engine: Engine::Sqlite(Arc::new(sqlite::SqliteEngine::open(path)?)) })
    }

    async fn open_postgres(config: &PostgresConfig) -> Result<Db, StoreError> {
        let pool = postgres::connect(config)?;
        // Fail at start-up, not on the first request, when the server is unreachable.
        let client =
            pool.get().await.map_err(|e| StoreError::Open(format!("cannot connect to PostgreSQL: {e}")))?;
        drop(client);
        Ok(Db { engine: Engine::Postgres(pool) })
    }

    pub fn dialect(&self) -> Dialect {
        match self.engine {
            Engine::Sqlite(_) => Dialect::Sqlite,
            Engine::Postgres(_) => Dialect::Postgres,
        }
    }

    /// How many COMMITs the SQLite writer has made (transactions in one batch share one);
    /// `None` on PostgreSQL, which commits each transaction by itself. For tests.
    pub fn sqlite_commits(&self) -> Option<u64> {
        match &self.engine {
            Engine::Sqlite(engine) => Some(engine.commits()),
            Engine::Postgres(_) => None,
        }
    }

    /// Runs a read-only statement. On SQLite it runs on a read connection, so it does not wait
    /// for the writer; it sees everything committed before it started.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        match &self.engine {
            Engine::Sqlite(engine) => engine.read(sql, &params),
            Engine::Postgres(pool) => postgres::query(&pool.get().await?, sql, &params).await,
        }
    }

    /// Runs a read-only statement that may take long (a full-text search over a whole index).
    /// On SQLite it runs on a blocking thread, so that it never holds up the async workers
    /// (statements otherwise run inline, see [`sqlite`]); PostgreSQL runs it as [`Db::query`]
    /// does, on the server.
    pub async fn query_slow(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        match &self.engine {
            Engine::Sqlite(engine) => {
                let engine = engine.clone();
                let sql = sql.to_owned();
                tokio::task::spawn_blocking(move || engine.read(&sql, &params))
                    .await
                    .map_err(|e| StoreError::Blocking(e.to_string()))?
            }
            Engine::Postgres(pool) => postgres::query(&pool.get().await?, sql, &params).await,
        }
    }

    /// Runs a read-only statement expected to return at most one row.
    pub async fn query_opt(&self, sql: &str, params: Vec<Value>) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs one writing statement in its own transaction; returns the number of rows changed.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => self.transaction(async |tx| tx.execute(sql, params).await).await,
            Engine::Postgres(pool) => postgres::execute(&pool.get().await?, sql, &params).await,
        }
    }

    /// Runs one writing statement that returns rows (`INSERT ... RETURNING`).
    pub async fn execute_returning(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => self.transaction(async |tx| tx.query(sql, params).await).await,
            Engine::Postgres(pool) => postgres::query(&pool.get().await?, sql, &params).await,
        }
    }

    /// Runs `body` inside one transaction: committed if it returns `Ok`, rolled back otherwise.
    /// Returns once the transaction is durable.
    pub async fn transaction<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    {
        let (value, durability) = self.transaction_batched(false, body).await?;
        durability.wait().await?;
        Ok(value)
    }

    /// Runs `body` inside one transaction, committed if it returns `Ok`: returns once the
    /// transaction is committed (visible to every reader, kept if the process dies), without
    /// waiting for its commit to reach the disk. Only for what a power failure may lose at no
    /// cost but a client's restart (sliding sync connection positions): SQLite skips the WAL
    /// fsync, PostgreSQL commits with `synchronous_commit` off.
    pub async fn transaction_unsynced<T, F>(&self, body: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    {
        let (value, durability) = self
            .transaction_batched(false, async |tx| {
                if let TxInner::Postgres(transaction) = &tx.inner {
                    transaction.batch_execute("SET LOCAL synchronous_commit TO OFF").await?;
                }
                body(tx).await
            })
            .await?;
        durability.committed().await?;
        Ok(value)
    }

    /// Runs `body` inside one transaction and returns as soon as its writes are in place, with
    /// a [`Durability`] to wait on before acknowledging them. On SQLite the transaction may
    /// share one commit with others (group commit): it is kept open for later transactions
    /// when writers are queued or when `more_coming` says the caller expects another one
    /// right behind it (e.g. a queue of senders on a room). What it wrote is visible to later
    /// transactions at once, and to readers once committed. A failed group commit fails its
    /// every member. PostgreSQL commits at once (it shares WAL flushes between concurrent
    /// commits by itself).
    pub async fn transaction_batched<T, F>(
        &self,
        more_coming: bool,
        body: F,
    ) -> Result<(T, Durability), StoreError>
    where
        F: AsyncFnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    {
        match &self.engine {
            Engine::Sqlite(engine) => {
                let writer = engine.begin().await?;
                let mut tx = Tx { inner: TxInner::Sqlite(writer) };
                let result = body(&mut tx).await;
                let TxInner::Sqlite(writer) = tx.inner else { unreachable!("engine matches") };
                match result {
                    Ok(value) => {
                        let pending = engine.end(writer, true, more_coming)?;
                        Ok((value, Durability { pending: pending.map(|p| (engine.clone(), p)) }))
                    }
                    Err(error) => {
                        let _ = engine.end(writer, false, more_coming);
                        Err(error)
                    }
                }
            }
            Engine::Postgres(pool) => {
                let mut client = pool.get().await?;
                let transaction = client.transaction().await?;
                let mut tx = Tx { inner: TxInner::Postgres(transaction) };
                let result = body(&mut tx).await;
                let TxInner::Postgres(transaction) = tx.inner else { unreachable!("engine matches") };
                match result {
                    Ok(value) => {
                        transaction.commit().await?;
                        Ok((value, Durability { pending: None }))
                    }
                    Err(error) => {
                        transaction.rollback().await?;
                        Err(error)
                    }
                }
            }
        }
    }

    /// Runs a script of several statements (used by migrations).
    pub(crate) async fn batch(&self, tx: &mut Tx<'_>, script: &str) -> Result<(), StoreError> {
        let _ = self;
        match &mut tx.inner {
            TxInner::Sqlite(connection) => Ok(connection.execute_batch(script)?),
            TxInner::Postgres(transaction) => Ok(transaction.batch_execute(script).await?),
        }
    }
}

/// Whether a transaction from [`Db::transaction_batched`] is committed yet.
///
/// Dropped without [`Durability::wait`] (its waiter was cancelled), it still sees the batch
/// committed, on a task of its own: an open batch must never wait for a writer that is gone.
#[must_use = "a transaction is not durable until its commit is waited for"]
pub struct Durability {
    pending: Option<(Arc<sqlite::SqliteEngine>, sqlite::PendingCommit)>,
}

impl Durability {
    /// Waits until the transaction is on disk; fails if its batch could not be committed.
    pub async fn wait(mut self) -> Result<(), StoreError> {
        match self.pending.take() {
            None => Ok(()),
            Some((engine, pending)) => pending.wait(&engine).await,
        }
    }
}

impl Durability {
    /// Waits until the transaction is committed, not for the commit to reach the disk (see
    /// [`Db::transaction_unsynced`]). Cancelled, it leaves the commit to [`Drop`].
    async fn committed(mut self) -> Result<(), StoreError> {
        if let Some((engine, pending)) = &self.pending {
            pending.committed(engine).await?;
        }
        self.pending = None;
        Ok(())
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        if let Some((engine, pending)) = self.pending.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(error) = pending.wait(&engine).await {
                    tracing::warn!(%error, "an abandoned transaction's batch failed to commit");
                }
            });
        }
    }
}

impl Tx<'_> {
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            TxInner::Sqlite(_) => Dialect::Sqlite,
            TxInner::Postgres(_) => Dialect::Postgres,
        }
    }

    pub async fn query(&mut self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        match &mut self.inner {
            TxInner::Sqlite(connection) => sqlite::query(connection, sql, &params),
            TxInner::Postgres(transaction) => postgres::query(&*transaction, sql, &params).await,
        }
    }

    pub async fn query_opt(&mut self, sql: &str, params: Vec<Value>) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    pub async fn execute(&mut self, sql: &str, params: Vec<Value>) -> Result<u64, StoreError> {
        match &mut self.inner {
            TxInner::Sqlite(connection) => sqlite::execute(connection, sql, &params),
            TxInner::Postgres(transaction) => postgres::execute(&*transaction, sql, &params).await,
        }
    }
}
