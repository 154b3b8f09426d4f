//! Server-side key backup (`/room_keys/version` and `/room_keys/keys`) without its HTTP.
//!
//! A user's backups are numbered versions, each with an algorithm and `auth_data`; the highest
//! version not deleted is the current one, the only one keys may be uploaded to. A session
//! already in the backup is replaced only by a better key (see [`replaces`]). Versions are
//! opaque strings to clients; ours are positive integers, and any other string names a version
//! that does not exist.

use std::collections::BTreeMap;

use myelin_core::{ErrCode, MatrixError};
use myelin_store::{BackupKeysState, BackupKeysWrite, BackupVersionRecord, RoomKeyRecord, RoomKeysSelection};
use ruma::{OwnedRoomId, RoomId};
use serde_json::{Map, Value};

use crate::auth::Requester;
use crate::{Error, Result, Services};

/// A backup version as `GET /room_keys/version` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupVersion {
    pub version: String,
    pub algorithm: String,
    pub auth_data: Map<String, Value>,
    /// The number of sessions stored in the version.
    pub count: i64,
    /// Changes whenever the version's keys change.
    pub etag: String,
}

/// One backed-up session (the spec's `KeyBackupData`).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBackupData {
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: Map<String, Value>,
}

/// A version's `etag` and `count` after a write to its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupKeysUpdate {
    pub etag: String,
    pub count: i64,
}

/// Room → session ID → key.
pub type RoomKeys = BTreeMap<OwnedRoomId, BTreeMap<String, KeyBackupData>>;

/// Which keys of a backup a read or a deletion covers.
#[derive(Debug, Clone, Copy)]
pub enum RoomKeysScope<'a> {
    All,
    Room(&'a RoomId),
    Session(&'a RoomId, &'a str),
}

impl<'a> RoomKeysScope<'a> {
    fn selection(self) -> RoomKeysSelection<'a> {
        match self {
            RoomKeysScope::All => RoomKeysSelection::All,
            RoomKeysScope::Room(room_id) => RoomKeysSelection::Room(room_id.as_str()),
            RoomKeysScope::Session(room_id, session_id) => {
                RoomKeysSelection::Session(room_id.as_str(), session_id)
            }
        }
    }
}

/// The spec's rule for a session already in the backup: a verified key beats an unverified
/// one; between keys equally verified, the lower `first_message_index` wins, then the lower
/// `forwarded_count`; when all three are equal the stored key stays.
pub fn replaces(stored: &RoomKeyRecord, new: &RoomKeyRecord) -> bool {
    let rank = |key: &RoomKeyRecord| (!key.is_verified, key.first_message_index, key.forwarded_count);
    rank(new) < rank(stored)
}

/// Our version numbers; `None` for a string we never handed out.
fn parse_version(version: &str) -> Option<i64> {
    if !version.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    version.parse::<i64>().ok().filter(|&version| version > 0)
}

fn unknown_version() -> Error {
    MatrixError::not_found("Unknown backup version").into()
}

fn no_backup() -> Error {
    MatrixError::not_found("No backup found").into()
}

fn parse_object(json: &str, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(json) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Error::internal(format!("stored {what} is not a JSON object"))),
        Err(error) => Err(Error::internal_with(format!("stored {what} is not JSON"), error)),
    }
}

fn version_from_record(record: BackupVersionRecord) -> Result<BackupVersion> {
    Ok(BackupVersion {
        version: record.version.to_string(),
        algorithm: record.algorithm,
        auth_data: parse_object(&record.auth_data, "backup auth_data")?,
        count: record.count,
        etag: record.etag.to_string(),
    })
}

fn key_from_record(record: &RoomKeyRecord) -> Result<KeyBackupData> {
    Ok(KeyBackupData {
        first_message_index: record.first_message_index,
        forwarded_count: record.forwarded_count,
        is_verified: record.is_verified,
        session_data: parse_object(&record.session_data, "backup session_data")?,
    })
}

fn keys_update(write: BackupKeysWrite) -> Result<BackupKeysUpdate> {
    match write {
        BackupKeysWrite::Done(BackupKeysState { etag, count }) => {
            Ok(BackupKeysUpdate { etag: etag.to_string(), count })
        }
        BackupKeysWrite::UnknownVersion => Err(unknown_version()),
        BackupKeysWrite::NotCurrent { current } => Err(MatrixError::new(
            ErrCode::WrongRoomKeysVersion,
            "Wrong backup version: keys can only be uploaded to the current backup",
        )
        .with_extra("current_version", current.to_string())
        .into()),
    }
}

impl Services {
    /// `POST /room_keys/version`: creates a backup version, which becomes the current one.
    pub async fn create_backup_version(
        &self,
        requester: &Requester,
        algorithm: &str,
        auth_data: &Map<String, Value>,
    ) -> Result<String> {
        if algorithm.is_empty() {
            return Err(MatrixError::invalid_param("The backup algorithm must not be empty").into());
        }
        let auth_data = Value::Object(auth_data.clone()).to_string();
        let version =
            self.store.create_backup_version(requester.user_id.as_str(), algorithm, &auth_data).await?;
        Ok(version.to_string())
    }

    /// `GET /room_keys/version[/{version}]`: a version (the current one when `None`) that is
    /// not deleted.
    pub async fn backup_version(
        &self,
        requester: &Requester,
        version: Option<&str>,
    ) -> Result<BackupVersion> {
        let version = match version {
            Some(version) => Some(parse_version(version).ok_or_else(no_backup)?),
            None => None,
        };
        let record =
            self.store.backup_version(requester.user_id.as_str(), version).await?.ok_or_else(no_backup)?;
        version_from_record(record)
    }

    /// `PUT /room_keys/version/{version}`: replaces a version's `auth_data`. The algorithm must
    /// stay the same, and a `version` in the body must name the version of the path.
    pub async fn update_backup_version(
        &self,
        requester: &Requester,
        version: &str,
        body_version: Option<&str>,
        algorithm: &str,
        auth_data: &Map<String, Value>,
    ) -> Result<()> {
        if body_version.is_some_and(|body_version| body_version != version) {
            return Err(MatrixError::invalid_param("Version in body does not match").into());
        }
        let user_id = requester.user_id.as_str();
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let stored = self.store.backup_version(user_id, Some(number)).await?.ok_or_else(unknown_version)?;
        if stored.algorithm != algorithm {
            return Err(MatrixError::invalid_param("Algorithm does not match").into());
        }
        let auth_data = Value::Object(auth_data.clone()).to_string();
        // The algorithm of a version never changes; only a deletion can come in between.
        if !self.store.update_backup_auth_data(user_id, number, &auth_data).await? {
            return Err(unknown_version());
        }
        Ok(())
    }

    /// `DELETE /room_keys/version/{version}`: deletes a version and its keys. Deleting a
    /// version deleted before succeeds; one that never existed is `M_NOT_FOUND`.
    pub async fn delete_backup_version(&self, requester: &Requester, version: &str) -> Result<()> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        if !self.store.delete_backup_version(requester.user_id.as_str(), number).await? {
            return Err(unknown_version());
        }
        Ok(())
    }

    /// `PUT /room_keys/keys[/{roomId}[/{sessionId}]]`: stores sessions in the current backup
    /// version, all of them or none. A stale version is `M_WRONG_ROOM_KEYS_VERSION` with the
    /// current version; an unknown one `M_NOT_FOUND`.
    pub async fn put_room_keys(
        &self,
        requester: &Requester,
        version: &str,
        keys: &RoomKeys,
    ) -> Result<BackupKeysUpdate> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let mut records = Vec::new();
        for (room_id, sessions) in keys {
            for (session_id, key) in sessions {
                if session_id.is_empty() {
                    return Err(MatrixError::invalid_param(format!(
                        "Empty session ID in the keys of {room_id}"
                    ))
                    .into());
                }
                records.push(RoomKeyRecord {
                    room_id: room_id.to_string(),
                    session_id: session_id.clone(),
                    first_message_index: key.first_message_index,
                    forwarded_count: key.forwarded_count,
                    is_verified: key.is_verified,
                    session_data: Value::Object(key.session_data.clone()).to_string(),
                });
            }
        }
        let write = self.store.put_room_keys(requester.user_id.as_str(), number, &records, &replaces).await?;
        keys_update(write)
    }

    /// `GET /room_keys/keys[/{roomId}]`: the sessions of a backup version (any version not
    /// deleted), by room.
    pub async fn room_keys(
        &self,
        requester: &Requester,
        version: &str,
        scope: RoomKeysScope<'_>,
    ) -> Result<RoomKeys> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let records = self
            .store
            .room_keys(requester.user_id.as_str(), number, scope.selection())
            .await?
            .ok_or_else(unknown_version)?;
        let mut keys = RoomKeys::new();
        for record in &records {
            let room_id = RoomId::parse(&record.room_id)
                .map_err(|error| Error::internal_with("stored backup room ID is invalid", error))?;
            keys.entry(room_id).or_default().insert(record.session_id.clone(), key_from_record(record)?);
        }
        Ok(keys)
    }

    /// `GET /room_keys/keys/{roomId}/{sessionId}`: one session, `M_NOT_FOUND` when the backup
    /// version does not hold it.
    pub async fn room_key(
        &self,
        requester: &Requester,
        version: &str,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<KeyBackupData> {
        let keys = self.room_keys(requester, version, RoomKeysScope::Session(room_id, session_id)).await?;
        keys.get(room_id)
            .and_then(|sessions| sessions.get(session_id))
            .cloned()
            .ok_or_else(|| MatrixError::not_found("No room_keys found").into())
    }

    /// `DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`: deletes sessions from a backup
    /// version (any version not deleted).
    pub async fn delete_room_keys(
        &self,
        requester: &Requester,
        version: &str,
        scope: RoomKeysScope<'_>,
    ) -> Result<BackupKeysUpdate> {
        let number = parse_version(version).ok_or_else(unknown_version)?;
        let write =
            self.store.delete_room_keys(requester.user_id.as_str(), number, scope.selection()).await?;
        keys_update(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(is_verified: bool, first_message_index: i64, forwarded_count: i64) -> RoomKeyRecord {
        RoomKeyRecord {
            room_id: "!room:test".to_owned(),
            session_id: "session".to_owned(),
            first_message_index,
            forwarded_count,
            is_verified,
            session_data: "{}".to_owned(),
        }
    }

    #[test]
    fn the_better_key_replaces_the_stored_one() {
        // (stored, new, replaced)
        let cases = [
            (key(false, 5, 5), key(true, 9, 9), true),
            (key(true, 5, 5), key(false, 0, 0), false),
            (key(true, 5, 5), key(true, 4, 9), true),
            (key(true, 5, 5), key(true, 6, 0), false),
            (key(false, 5, 5), key(false, 5, 4), true),
            (key(false, 5, 5), key(false, 5, 6), false),
            (key(false, 5, 5), key(false, 5, 5), false),
        ];
        for (stored, new, replaced) in cases {
            assert_eq!(replaces(&stored, &new), replaced, "stored {stored:?}, new {new:?}");
        }
    }

    #[test]
    fn only_positive_integers_are_versions() {
        assert_eq!(parse_version("1"), Some(1));
        assert_eq!(parse_version("42"), Some(42));
        for bad in ["", "0", "-1", "+1", "1.0", "abc", " 1", "99999999999999999999"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
    }
}
