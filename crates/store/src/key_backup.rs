//! Server-side key backup: a user's backup versions and the room keys stored in them.
//!
//! Versions are numbered per user from 1 and never reused: a deleted version keeps its row,
//! marked `deleted`, without its keys. The current version is the highest one not deleted.
//! Every write runs in one transaction that first takes the user's backup lock (on PostgreSQL a
//! transaction-scoped advisory lock on the user; SQLite has one writer), so that concurrent
//! uploads, deletions and new versions of one user are applied one after the other.

use crate::{Dialect, Row, Store, StoreError, Tx, Value, params};

/// A backup version that is not deleted, with the number of sessions stored in it.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupVersionRecord {
    pub version: i64,
    pub algorithm: String,
    /// The `auth_data` object as JSON text.
    pub auth_data: String,
    /// Bumped by every write that changes the version's keys.
    pub etag: i64,
    pub count: i64,
}

/// One backed-up session.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomKeyRecord {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    /// The `session_data` object as JSON text.
    pub session_data: String,
}

/// The version's `etag` and number of sessions after a write to its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupKeysState {
    pub etag: i64,
    pub count: i64,
}

/// What a write to a backup's keys found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupKeysWrite {
    /// Written (or nothing to change); the version's state afterwards.
    Done(BackupKeysState),
    /// The version does not exist or is deleted (nothing written).
    UnknownVersion,
    /// The version exists but is not the user's current one (nothing written).
    NotCurrent { current: i64 },
}

/// Which keys of a version a read or a deletion covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoomKeysSelection<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl RoomKeysSelection<'_> {
    /// The `AND ...` condition after `user_id = $1 AND version = $2`, and its parameters.
    fn condition(&self) -> (&'static str, Vec<Value>) {
        match *self {
            RoomKeysSelection::All => ("", params![]),
            RoomKeysSelection::Room(room_id) => (" AND room_id = $3", params![room_id]),
            RoomKeysSelection::Session(room_id, session_id) => {
                (" AND room_id = $3 AND session_id = $4", params![room_id, session_id])
            }
        }
    }
}

const VERSION_COLUMNS: &str = "v.version, v.algorithm, v.auth_data, v.etag,
    (SELECT COUNT(*) FROM e2e_room_keys k WHERE k.user_id = v.user_id AND k.version = v.version)";

fn version_from_row(row: &Row) -> Result<BackupVersionRecord, StoreError> {
    Ok(BackupVersionRecord {
        version: row.i64(0)?,
        algorithm: row.string(1)?,
        auth_data: row.string(2)?,
        etag: row.i64(3)?,
        count: row.i64(4)?,
    })
}

const KEY_COLUMNS: &str =
    "room_id, session_id, first_message_index, forwarded_count, is_verified, session_data";

fn key_from_row(row: &Row) -> Result<RoomKeyRecord, StoreError> {
    Ok(RoomKeyRecord {
        room_id: row.string(0)?,
        session_id: row.string(1)?,
        first_message_index: row.i64(2)?,
        forwarded_count: row.i64(3)?,
        is_verified: row.bool(4)?,
        session_data: row.string(5)?,
    })
}

/// Takes the user's backup lock until the end of the transaction (PostgreSQL; SQLite
/// transactions already run one at a time). The two-key advisory lock space is apart from the
/// single-key one the migrations use.
async fn lock_user_backups(tx: &mut Tx<'_>, user_id: &str) -> Result<(), StoreError> {
    if tx.dialect() == Dialect::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock(1801675552, hashtext($1))", params![user_id]).await?;
    }
    Ok(())
}

/// The user's current version: the highest one not deleted.
async fn current_version(tx: &mut Tx<'_>, user_id: &str) -> Result<Option<i64>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT MAX(version) FROM e2e_room_keys_versions WHERE user_id = $1 AND NOT deleted",
            params![user_id],
        )
        .await?;
    Ok(row.map(|row| row.opt_i64(0)).transpose()?.flatten())
}

async fn version_exists(tx: &mut Tx<'_>, user_id: &str, version: i64) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM e2e_room_keys_versions WHERE user_id = $1 AND version = $2 AND NOT deleted",
            params![user_id, version],
        )
        .await?
        .is_some())
}

/// Bumps the version's etag when `changed`, and reads its etag and number of sessions.
async fn keys_state(
    tx: &mut Tx<'_>,
    user_id: &str,
    version: i64,
    changed: bool,
) -> Result<BackupKeysState, StoreError> {
    if changed {
        tx.execute(
            "UPDATE e2e_room_keys_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2",
            params![user_id, version],
        )
        .await?;
    }
    let row = tx
        .query_opt(
            "SELECT v.etag,
                 (SELECT COUNT(*) FROM e2e_room_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
             FROM e2e_room_keys_versions v WHERE v.user_id = $1 AND v.version = $2",
            params![user_id, version],
        )
        .await?
        .ok_or_else(|| StoreError::Decode(format!("backup version {version} vanished in its transaction")))?;
    Ok(BackupKeysState { etag: row.i64(0)?, count: row.i64(1)? })
}

impl Store {
    /// Creates the user's next backup version (one above every version it ever had), which
    /// becomes the current one. Returns its number.
    pub async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &str,
    ) -> Result<i64, StoreError> {
        self.db
            .transaction(async |tx| {
                lock_user_backups(tx, user_id).await?;
                let row = tx
                    .query_opt(
                        "SELECT COALESCE(MAX(version), 0) FROM e2e_room_keys_versions WHERE user_id = $1",
                        params![user_id],
                    )
                    .await?;
                let version = row.map(|row| row.i64(0)).transpose()?.unwrap_or(0) + 1;
                tx.execute(
                    "INSERT INTO e2e_room_keys_versions (user_id, version, algorithm, auth_data)
                     VALUES ($1, $2, $3, $4)",
                    params![user_id, version, algorithm, auth_data],
                )
                .await?;
                Ok(version)
            })
            .await
    }

    /// A version that is not deleted: `version`, or the current one when `None`.
    pub async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersionRecord>, StoreError> {
        let row = match version {
            Some(version) => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM e2e_room_keys_versions v
                     WHERE v.user_id = $1 AND v.version = $2 AND NOT v.deleted"
                );
                self.db.query_opt(&sql, params![user_id, version]).await?
            }
            None => {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM e2e_room_keys_versions v
                     WHERE v.user_id = $1 AND NOT v.deleted ORDER BY v.version DESC LIMIT 1"
                );
                self.db.query_opt(&sql, params![user_id]).await?
            }
        };
        row.as_ref().map(version_from_row).transpose()
    }

    /// Replaces a version's `auth_data`; `false` when the version does not exist or is deleted.
    pub async fn update_backup_auth_data(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE e2e_room_keys_versions SET auth_data = $3
                 WHERE user_id = $1 AND version = $2 AND NOT deleted",
                params![user_id, version, auth_data],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Deletes a version and its keys; `false` when the user never had this version (deleting
    /// a deleted version again succeeds).
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool, StoreError> {
        self.db
            .transaction(async |tx| {
                lock_user_backups(tx, user_id).await?;
                let marked = tx
                    .execute(
                        "UPDATE e2e_room_keys_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2",
                        params![user_id, version],
                    )
                    .await?;
                if marked == 0 {
                    return Ok(false);
                }
                tx.execute(
                    "DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2",
                    params![user_id, version],
                )
                .await?;
                Ok(true)
            })
            .await
    }

    /// Stores sessions in the user's current version, which `version` must be. A session
    /// already stored is replaced only when `replaces(stored, new)` says so. The etag is bumped
    /// once when anything was written.
    pub async fn put_room_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: &[RoomKeyRecord],
        replaces: &(dyn Fn(&RoomKeyRecord, &RoomKeyRecord) -> bool + Sync),
    ) -> Result<BackupKeysWrite, StoreError> {
        self.db
            .transaction(async |tx| {
                lock_user_backups(tx, user_id).await?;
                match current_version(tx, user_id).await? {
                    Some(current) if current == version => {}
                    Some(current) if version_exists(tx, user_id, version).await? => {
                        return Ok(BackupKeysWrite::NotCurrent { current });
                    }
                    _ => return Ok(BackupKeysWrite::UnknownVersion),
                }
                let mut changed = false;
                for key in keys {
                    let sql = format!(
                        "SELECT {KEY_COLUMNS} FROM e2e_room_keys
                         WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4"
                    );
                    let stored = tx
                        .query_opt(
                            &sql,
                            params![user_id, version, key.room_id.as_str(), key.session_id.as_str()],
                        )
                        .await?
                        .as_ref()
                        .map(key_from_row)
                        .transpose()?;
                    let values = params![
                        user_id,
                        version,
                        key.room_id.as_str(),
                        key.session_id.as_str(),
                        key.first_message_index,
                        key.forwarded_count,
                        key.is_verified,
                        key.session_data.as_str()
                    ];
                    match stored {
                        None => {
                            tx.execute(
                                "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id,
                                     first_message_index, forwarded_count, is_verified, session_data)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                                values,
                            )
                            .await?;
                            changed = true;
                        }
                        Some(stored) if replaces(&stored, key) => {
                            tx.execute(
                                "UPDATE e2e_room_keys SET first_message_index = $5, forwarded_count = $6,
                                     is_verified = $7, session_data = $8
                                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
                                values,
                            )
                            .await?;
                            changed = true;
                        }
                        Some(_) => {}
                    }
                }
                Ok(BackupKeysWrite::Done(keys_state(tx, user_id, version, changed).await?))
            })
            .await
    }

    /// The sessions `selection` covers in a version that is not deleted (any version, not only
    /// the current one), ordered by room and session; `None` when there is no such version.
    pub async fn room_keys(
        &self,
        user_id: &str,
        version: i64,
        selection: RoomKeysSelection<'_>,
    ) -> Result<Option<Vec<RoomKeyRecord>>, StoreError> {
        if self.backup_version(user_id, Some(version)).await?.is_none() {
            return Ok(None);
        }
        let (condition, extra) = selection.condition();
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM e2e_room_keys WHERE user_id = $1 AND version = $2{condition}
             ORDER BY room_id, session_id"
        );
        let mut values = params![user_id, version];
        values.extend(extra);
        let rows = self.db.query(&sql, values).await?;
        rows.iter().map(key_from_row).collect::<Result<_, _>>().map(Some)
    }

    /// Deletes the sessions `selection` covers from a version that is not deleted (any
    /// version, not only the current one); the etag is bumped when any was deleted.
    pub async fn delete_room_keys(
        &self,
        user_id: &str,
        version: i64,
        selection: RoomKeysSelection<'_>,
    ) -> Result<BackupKeysWrite, StoreError> {
        self.db
            .transaction(async |tx| {
                lock_user_backups(tx, user_id).await?;
                if !version_exists(tx, user_id, version).await? {
                    return Ok(BackupKeysWrite::UnknownVersion);
                }
                let (condition, extra) = selection.condition();
                let sql = format!("DELETE FROM e2e_room_keys WHERE user_id = $1 AND version = $2{condition}");
                let mut values = params![user_id, version];
                values.extend(extra);
                let deleted = tx.execute(&sql, values).await?;
                Ok(BackupKeysWrite::Done(keys_state(tx, user_id, version, deleted > 0).await?))
            })
            .await
    }
}
