//! Cross-signing: each user's master, self-signing and user-signing keys, and the signatures
//! uploaded after the keys they sign. Keys are stored as the JSON text the client uploaded; the
//! service checks them and merges the signatures in when they are read.

use crate::device_lists::record_device_list_change;
use crate::e2e_keys::{IN_LIST_CHUNK, placeholders_from};
use crate::{Row, Store, StoreError, Tx, Value, now_ms, params};

/// One of a user's cross-signing keys.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossSigningKeyRecord {
    /// `master`, `self_signing` or `user_signing`.
    pub key_type: String,
    /// The ed25519 public key (unpadded base64), the key's ID when it is signed.
    pub public_key: String,
    pub key_json: String,
}

/// A signature of a device or cross-signing key (`target_key_id`: a device ID or a public key)
/// by a key of `signer_user_id` (`signer_key_id`: `ed25519:<device ID or public key>`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CrossSigningSignatureRecord {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

fn signature_from_row(row: &Row) -> Result<CrossSigningSignatureRecord, StoreError> {
    Ok(CrossSigningSignatureRecord {
        target_user_id: row.string(0)?,
        target_key_id: row.string(1)?,
        signer_user_id: row.string(2)?,
        signer_key_id: row.string(3)?,
        signature: row.string(4)?,
    })
}

/// Deletes what depends on `user_id`'s key `key_id` (a device ID or a cross-signing public
/// key): the signatures made of it and the signatures made by it.
pub(crate) async fn delete_signatures_of_key(
    tx: &mut Tx<'_>,
    user_id: &str,
    key_id: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM e2e_cross_signing_signatures WHERE target_user_id = $1 AND target_key_id = $2",
        params![user_id, key_id],
    )
    .await?;
    tx.execute(
        "DELETE FROM e2e_cross_signing_signatures WHERE signer_user_id = $1 AND signer_key_id = $2",
        params![user_id, format!("ed25519:{key_id}")],
    )
    .await?;
    Ok(())
}

impl Store {
    /// The user's cross-signing keys (at most one of each type), ordered by type.
    pub async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<CrossSigningKeyRecord>, StoreError> {
        self.db
            .query(
                "SELECT key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = $1
                 ORDER BY key_type",
                params![user_id],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(CrossSigningKeyRecord {
                    key_type: row.string(0)?,
                    public_key: row.string(1)?,
                    key_json: row.string(2)?,
                })
            })
            .collect()
    }

    /// The cross-signing keys of each of `user_ids`, with the user ID.
    pub async fn cross_signing_keys_of_users(
        &self,
        user_ids: &[&str],
    ) -> Result<Vec<(String, CrossSigningKeyRecord)>, StoreError> {
        let mut found = Vec::new();
        for chunk in user_ids.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys
                 WHERE user_id IN ({}) ORDER BY user_id, key_type",
                placeholders_from(1, chunk.len())
            );
            let params = chunk.iter().map(|id| Value::from(*id)).collect();
            for row in self.db.query(&sql, params).await?.iter() {
                found.push((
                    row.string(0)?,
                    CrossSigningKeyRecord {
                        key_type: row.string(1)?,
                        public_key: row.string(2)?,
                        key_json: row.string(3)?,
                    },
                ));
            }
        }
        Ok(found)
    }

    /// The signatures of any key (device or cross-signing) of each of `target_user_ids` made by
    /// the target user himself or by `also_by` (the user asking).
    pub async fn signatures_of_users_keys(
        &self,
        target_user_ids: &[&str],
        also_by: &str,
    ) -> Result<Vec<CrossSigningSignatureRecord>, StoreError> {
        let mut found = Vec::new();
        for chunk in target_user_ids.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
                 FROM e2e_cross_signing_signatures
                 WHERE target_user_id IN ({}) AND (signer_user_id = target_user_id OR signer_user_id = $1)
                 ORDER BY target_user_id, target_key_id, signer_user_id, signer_key_id",
                placeholders_from(2, chunk.len())
            );
            let mut params = params![also_by];
            params.extend(chunk.iter().map(|id| Value::from(*id)));
            for row in self.db.query(&sql, params).await?.iter() {
                found.push(signature_from_row(row)?);
            }
        }
        Ok(found)
    }

    /// Sets the user's cross-signing keys in one transaction, if the user's master public key is
    /// still `expected_master` (what the caller decided on: whether re-authentication was
    /// needed); returns false, writing nothing, otherwise. A key that replaces another of its
    /// type takes the old key's signatures with it: those made of it (a replaced master key's
    /// signatures by devices and by other users) and those made by it (a replaced self-signing
    /// key's signatures of devices, a replaced user-signing key's of other users).
    /// The change is recorded on the device-list stream at `device_list_stream_id` in the same
    /// transaction.
    pub async fn set_cross_signing_keys(
        &self,
        user_id: &str,
        expected_master: Option<&str>,
        keys: &[CrossSigningKeyRecord],
        device_list_stream_id: i64,
    ) -> Result<bool, StoreError> {
        let ts = now_ms();
        self.db
            .transaction(async |tx| {
                let master = tx
                    .query_opt(
                        "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = $1 AND key_type = 'master'",
                        params![user_id],
                    )
                    .await?
                    .map(|row| row.string(0))
                    .transpose()?;
                if master.as_deref() != expected_master {
                    return Ok(false);
                }
                for key in keys {
                    let old = tx
                        .query_opt(
                            "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = $1 AND key_type = $2",
                            params![user_id, key.key_type.as_str()],
                        )
                        .await?
                        .map(|row| row.string(0))
                        .transpose()?;
                    if let Some(old) = old
                        && old != key.public_key
                    {
                        delete_signatures_of_key(tx, user_id, &old).await?;
                    }
                    tx.execute(
                        "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json, ts)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (user_id, key_type) DO UPDATE
                         SET public_key = excluded.public_key, key_json = excluded.key_json, ts = excluded.ts",
                        params![
                            user_id,
                            key.key_type.as_str(),
                            key.public_key.as_str(),
                            key.key_json.as_str(),
                            ts
                        ],
                    )
                    .await?;
                }
                record_device_list_change(tx, device_list_stream_id, user_id, "").await?;
                Ok(true)
            })
            .await
    }

    /// Stores signatures (one already stored for the same target and signing key is replaced),
    /// recording the device-list `changes` (user, device; `""` for the user as a whole) at
    /// `device_list_stream_id` in the same transaction.
    pub async fn add_cross_signing_signatures(
        &self,
        signatures: &[CrossSigningSignatureRecord],
        changes: &[(&str, &str)],
        device_list_stream_id: i64,
    ) -> Result<(), StoreError> {
        if signatures.is_empty() {
            return Ok(());
        }
        self.db
            .transaction(async |tx| {
                for signature in signatures {
                    tx.execute(
                        "INSERT INTO e2e_cross_signing_signatures
                             (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                         DO UPDATE SET signature = excluded.signature",
                        params![
                            signature.target_user_id.as_str(),
                            signature.target_key_id.as_str(),
                            signature.signer_user_id.as_str(),
                            signature.signer_key_id.as_str(),
                            signature.signature.as_str()
                        ],
                    )
                    .await?;
                }
                for (user_id, device_id) in changes {
                    record_device_list_change(tx, device_list_stream_id, user_id, device_id).await?;
                }
                Ok(())
            })
            .await
    }
}
