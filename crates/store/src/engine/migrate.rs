//! Versioned migrations: `migrations/NNNN_name.sql`, with `NNNN_name.sqlite.sql` or
//! `NNNN_name.postgres.sql` replacing the shared file for one engine. Each migration runs in its
//! own transaction and is recorded in `schema_migrations`. On PostgreSQL an advisory lock keeps
//! several Myelin processes from migrating at once.

use std::collections::BTreeMap;

use super::{Db, Dialect};
use crate::{StoreError, params};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Arbitrary constant identifying Myelin's migration lock.
const ADVISORY_LOCK_KEY: i64 = 0x6d79_656c_696e;

#[derive(Debug)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: String,
    pub(crate) sql: &'static str,
}

/// The migrations for one dialect, in version order.
pub(crate) fn migrations_for(dialect: Dialect) -> Result<Vec<Migration>, StoreError> {
    let mut by_version: BTreeMap<i64, (Option<Migration>, Option<Migration>)> = BTreeMap::new();
    for (file, sql) in MIGRATION_FILES {
        let stem = file.trim_end_matches(".sql");
        let (stem, engine) = match stem.rsplit_once('.') {
            Some((stem, "sqlite")) => (stem, Some(Dialect::Sqlite)),
            Some((stem, "postgres")) => (stem, Some(Dialect::Postgres)),
            Some(_) => return Err(StoreError::Migration(format!("bad migration file name {file}"))),
            None => (stem, None),
        };
        let (version, name) = stem
            .split_once('_')
            .and_then(|(v, n)| Some((v.parse::<i64>().ok()?, n)))
            .ok_or_else(|| StoreError::Migration(format!("bad migration file name {file}")))?;
        let migration = Migration { version, name: name.to_owned(), sql };
        let slot = by_version.entry(version).or_default();
        match engine {
            None => slot.0 = Some(migration),
            Some(engine) if engine == dialect => slot.1 = Some(migration),
            Some(_) => {}
        }
    }
    Ok(by_version.into_values().filter_map(|(shared, specific)| specific.or(shared)).collect())
}

pub(crate) async fn run(db: &Db) -> Result<(), StoreError> {
    let migrations = migrations_for(db.dialect())?;
    db.transaction(async |tx| {
        if tx.dialect() == Dialect::Postgres {
            tx.execute("SELECT pg_advisory_xact_lock($1)", params![ADVISORY_LOCK_KEY]).await?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_ts BIGINT NOT NULL
            )",
            params![],
        )
        .await?;
        let applied: Vec<i64> = tx
            .query("SELECT version FROM schema_migrations ORDER BY version", params![])
            .await?
            .iter()
            .map(|row| row.i64(0))
            .collect::<Result<_, _>>()?;
        if let (Some(&newest_applied), Some(newest_known)) = (applied.last(), migrations.last())
            && newest_applied > newest_known.version
        {
            return Err(StoreError::Migration(format!(
                "the database is at schema version {newest_applied}, newer than this Myelin knows ({}); refusing to start",
                newest_known.version
            )));
        }
        for migration in &migrations {
            if applied.contains(&migration.version) {
                continue;
            }
            tracing::info!(version = migration.version, name = %migration.name, "applying migration");
            db.batch(tx, migration.sql).await.map_err(|e| {
                StoreError::Migration(format!("migration {} ({}) failed: {e}", migration.version, migration.name))
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)",
                params![migration.version, migration.name.as_str(), crate::now_ms()],
            )
            .await?;
        }
        Ok(())
    })
    .await
}
