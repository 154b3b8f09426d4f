//! Versioned migrations: `migrations/NNNN_name.sql` (listed in `MIGRATION_FILES`), with
//! `NNNN_name.sqlite.sql` or
//! `NNNN_name.postgres.sql` replacing the shared file for one engine. Each migration runs in its
//! own transaction and is recorded in `schema_migrations`. On PostgreSQL an advisory lock keeps
//! several Myelin processes from migrating at once.

use std::collections::BTreeMap;

use super::{Db, Dialect};
use crate::{StoreError, params};

/// `(file name, SQL)` of every migration file, sorted by name. A test checks that every file in
/// `migrations/` is listed (a build script would be simpler, but its output is shared between
/// checkouts that share a target directory).
pub(crate) const MIGRATION_FILES: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../../migrations/0001_init.sql")),
    ("0002_accounts.sql", include_str!("../../migrations/0002_accounts.sql")),
    ("0003_rooms.sql", include_str!("../../migrations/0003_rooms.sql")),
    ("0004_serial_tables.postgres.sql", include_str!("../../migrations/0004_serial_tables.postgres.sql")),
    ("0004_serial_tables.sqlite.sql", include_str!("../../migrations/0004_serial_tables.sqlite.sql")),
    ("0005_sync.sql", include_str!("../../migrations/0005_sync.sql")),
    ("0006_search.postgres.sql", include_str!("../../migrations/0006_search.postgres.sql")),
    ("0006_search.sqlite.sql", include_str!("../../migrations/0006_search.sqlite.sql")),
    ("0007_push.sql", include_str!("../../migrations/0007_push.sql")),
    (
        "0008_push_actions_keys.postgres.sql",
        include_str!("../../migrations/0008_push_actions_keys.postgres.sql"),
    ),
    ("0008_push_actions_keys.sqlite.sql", include_str!("../../migrations/0008_push_actions_keys.sqlite.sql")),
    ("0009_drop_registration_nonces.sql", include_str!("../../migrations/0009_drop_registration_nonces.sql")),
    ("0010_e2e_keys.sql", include_str!("../../migrations/0010_e2e_keys.sql")),
    ("0011_to_device.sql", include_str!("../../migrations/0011_to_device.sql")),
    ("0012_cross_signing.sql", include_str!("../../migrations/0012_cross_signing.sql")),
    ("0013_device_lists.sql", include_str!("../../migrations/0013_device_lists.sql")),
    ("0014_key_backup.sql", include_str!("../../migrations/0014_key_backup.sql")),
    ("0015_dehydrated_devices.sql", include_str!("../../migrations/0015_dehydrated_devices.sql")),
    ("0016_media.sql", include_str!("../../migrations/0016_media.sql")),
    ("0017_server_keys.sql", include_str!("../../migrations/0017_server_keys.sql")),
    ("0018_remote_events.sql", include_str!("../../migrations/0018_remote_events.sql")),
    (
        "0019_federation_queue.postgres.sql",
        include_str!("../../migrations/0019_federation_queue.postgres.sql"),
    ),
    ("0019_federation_queue.sqlite.sql", include_str!("../../migrations/0019_federation_queue.sqlite.sql")),
    ("0020_stripped_room_state.sql", include_str!("../../migrations/0020_stripped_room_state.sql")),
    ("0021_remote_device_lists.sql", include_str!("../../migrations/0021_remote_device_lists.sql")),
    ("0022_admin_rooms.sql", include_str!("../../migrations/0022_admin_rooms.sql")),
    ("0023_admin_users.sql", include_str!("../../migrations/0023_admin_users.sql")),
    ("0024_user_consent.sql", include_str!("../../migrations/0024_user_consent.sql")),
    ("0025_monthly_active_users.sql", include_str!("../../migrations/0025_monthly_active_users.sql")),
    ("0026_admin_room_task_params.sql", include_str!("../../migrations/0026_admin_room_task_params.sql")),
    ("0027_sliding_sync.sql", include_str!("../../migrations/0027_sliding_sync.sql")),
    ("0028_remote_media.sql", include_str!("../../migrations/0028_remote_media.sql")),
    ("0029_appservices.sql", include_str!("../../migrations/0029_appservices.sql")),
    ("0030_appservice_streams.sql", include_str!("../../migrations/0030_appservice_streams.sql")),
    ("0031_room_stats.sql", include_str!("../../migrations/0031_room_stats.sql")),
    ("0032_open_id_tokens.sql", include_str!("../../migrations/0032_open_id_tokens.sql")),
    ("0033_membership_stream.sql", include_str!("../../migrations/0033_membership_stream.sql")),
    ("0034_room_search.sqlite.sql", include_str!("../../migrations/0034_room_search.sqlite.sql")),
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let listed: Vec<String> = MIGRATION_FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(listed, on_disk, "add new migration files to MIGRATION_FILES");
    }

    #[test]
    fn each_engine_gets_one_file_per_version() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let migrations = migrations_for(dialect).unwrap();
            let versions: Vec<i64> = migrations.iter().map(|m| m.version).collect();
            let mut sorted = versions.clone();
            sorted.dedup();
            assert_eq!(versions, sorted);
            assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>(), "versions are contiguous");
        }
    }
}
