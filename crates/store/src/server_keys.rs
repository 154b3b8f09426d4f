//! Remote servers' signing keys: the latest verified key document of each server and every
//! verify key seen, current or retired.

use crate::{Store, StoreError, params};

/// A server's latest verified `/_matrix/key/v2/server` document, as signed.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerKeyDocument {
    pub server_name: String,
    /// The signed document, as JSON text.
    pub document: String,
    pub valid_until_ts: i64,
    pub fetched_ts: i64,
}

/// One verify key of a server.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerVerifyKeyRecord {
    pub key_id: String,
    /// Unpadded base64.
    pub public_key: String,
    /// Until when the key may be trusted for current requests and events (milliseconds).
    pub valid_until_ts: i64,
    /// When the server retired the key (listed in `old_verify_keys`); `None` while current.
    pub expired_ts: Option<i64>,
}

impl Store {
    /// Stores a verified key document and its keys, in one transaction. A key keeps the
    /// latest `valid_until_ts` seen; a retired key keeps its `expired_ts`.
    pub async fn store_server_keys(
        &self,
        document: &ServerKeyDocument,
        keys: &[ServerVerifyKeyRecord],
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                tx.execute(
                    "INSERT INTO server_key_documents (server_name, document, valid_until_ts, fetched_ts)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (server_name) DO UPDATE SET document = $2, valid_until_ts = $3, fetched_ts = $4",
                    params![
                        document.server_name.as_str(),
                        document.document.as_str(),
                        document.valid_until_ts,
                        document.fetched_ts
                    ],
                )
                .await?;
                for key in keys {
                    tx.execute(
                        "INSERT INTO server_verify_keys (server_name, key_id, public_key, valid_until_ts, expired_ts)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = $3,
                         valid_until_ts = CASE WHEN server_verify_keys.valid_until_ts > $4
                             THEN server_verify_keys.valid_until_ts ELSE $4 END,
                         expired_ts = COALESCE($5, server_verify_keys.expired_ts)",
                        params![
                            document.server_name.as_str(),
                            key.key_id.as_str(),
                            key.public_key.as_str(),
                            key.valid_until_ts,
                            key.expired_ts
                        ],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }

    /// The latest key document stored for `server_name`.
    pub async fn server_key_document(
        &self,
        server_name: &str,
    ) -> Result<Option<ServerKeyDocument>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT server_name, document, valid_until_ts, fetched_ts FROM server_key_documents WHERE server_name = $1",
                params![server_name],
            )
            .await?;
        row.map(|row| {
            Ok(ServerKeyDocument {
                server_name: row.string(0)?,
                document: row.string(1)?,
                valid_until_ts: row.i64(2)?,
                fetched_ts: row.i64(3)?,
            })
        })
        .transpose()
    }

    /// Every verify key stored for `server_name`, current and retired.
    pub async fn server_verify_keys(
        &self,
        server_name: &str,
    ) -> Result<Vec<ServerVerifyKeyRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT key_id, public_key, valid_until_ts, expired_ts FROM server_verify_keys
                 WHERE server_name = $1 ORDER BY key_id",
                params![server_name],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ServerVerifyKeyRecord {
                    key_id: row.string(0)?,
                    public_key: row.string(1)?,
                    valid_until_ts: row.i64(2)?,
                    expired_ts: row.opt_i64(3)?,
                })
            })
            .collect()
    }
}
