//! Access, refresh and login tokens, stored as SHA-256 hashes.

use crate::device_lists::{advance_device_list_stream, record_device_list_change};
use crate::{Store, StoreError, Tx, params};

/// What an access token grants.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessTokenRecord {
    pub user_id: String,
    pub device_id: Option<String>,
    pub valid_until_ms: Option<i64>,
    pub refresh_token_hash: Option<String>,
    pub used: bool,
    pub puppets_user_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub user_id: String,
    pub device_id: String,
    pub expiry_ts: Option<i64>,
    pub ultimate_session_expiry_ts: Option<i64>,
    pub next_token_hash: Option<String>,
}

/// A new access token to store.
pub struct NewAccessToken<'a> {
    pub token_hash: &'a str,
    pub user_id: &'a str,
    pub device_id: Option<&'a str>,
    pub valid_until_ms: Option<i64>,
    pub refresh_token_hash: Option<&'a str>,
    pub puppets_user_id: Option<&'a str>,
}

/// A new refresh token to store.
pub struct NewRefreshToken<'a> {
    pub token_hash: &'a str,
    pub expiry_ts: Option<i64>,
    pub ultimate_session_expiry_ts: Option<i64>,
}

/// A login session to store at once: its device (created if missing) and its tokens.
pub struct NewLoginSession<'a> {
    pub device_id: &'a str,
    pub device_display_name: Option<&'a str>,
    pub access_token: NewAccessToken<'a>,
    pub refresh_token: Option<NewRefreshToken<'a>>,
    /// The device-list position a new device (or a display name given to an unnamed one) is
    /// recorded at; `None` when the device is known to exist already.
    pub device_list_stream_id: Option<i64>,
}

const INSERT_ACCESS_TOKEN: &str = "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, valid_until_ms, refresh_token_hash, puppets_user_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const INSERT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expiry_ts, ultimate_session_expiry_ts)
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Stores a login session's device and tokens inside `tx`.
pub(crate) async fn insert_login_session(
    tx: &mut Tx<'_>,
    session: &NewLoginSession<'_>,
) -> Result<(), StoreError> {
    let access = &session.access_token;
    let inserted = tx
        .execute(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, device_id) DO NOTHING",
            params![access.user_id, session.device_id, session.device_display_name, crate::now_ms()],
        )
        .await?;
    let mut renamed = 0;
    if inserted == 0 && session.device_display_name.is_some() {
        renamed = tx
            .execute(
                "UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2 AND display_name IS NULL",
                params![access.user_id, session.device_id, session.device_display_name],
            )
            .await?;
    }
    if let Some(stream_id) = session.device_list_stream_id {
        if inserted > 0 || renamed > 0 {
            record_device_list_change(tx, stream_id, access.user_id, session.device_id).await?;
        } else {
            advance_device_list_stream(tx, stream_id).await?;
        }
    }
    if let Some(refresh) = &session.refresh_token {
        tx.execute(
            INSERT_REFRESH_TOKEN,
            params![
                refresh.token_hash,
                access.user_id,
                session.device_id,
                crate::now_ms(),
                refresh.expiry_ts,
                refresh.ultimate_session_expiry_ts
            ],
        )
        .await?;
    }
    tx.execute(
        INSERT_ACCESS_TOKEN,
        params![
            access.token_hash,
            access.user_id,
            access.device_id,
            crate::now_ms(),
            access.valid_until_ms,
            access.refresh_token_hash,
            access.puppets_user_id
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Stores a login session (its device, created if missing, and its tokens) in one
    /// transaction.
    pub async fn store_login_session(&self, session: &NewLoginSession<'_>) -> Result<(), StoreError> {
        self.db.transaction(async |tx| insert_login_session(tx, session).await).await
    }

    pub async fn insert_access_token(&self, token: &NewAccessToken<'_>) -> Result<(), StoreError> {
        self.db
            .execute(
                INSERT_ACCESS_TOKEN,
                params![
                    token.token_hash,
                    token.user_id,
                    token.device_id,
                    crate::now_ms(),
                    token.valid_until_ms,
                    token.refresh_token_hash,
                    token.puppets_user_id
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn get_access_token(&self, token_hash: &str) -> Result<Option<AccessTokenRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT user_id, device_id, valid_until_ms, refresh_token_hash, used, puppets_user_id
                 FROM access_tokens WHERE token_hash = $1",
                params![token_hash],
            )
            .await?;
        row.map(|row| {
            Ok(AccessTokenRecord {
                user_id: row.string(0)?,
                device_id: row.opt_string(1)?,
                valid_until_ms: row.opt_i64(2)?,
                refresh_token_hash: row.opt_string(3)?,
                used: row.bool(4)?,
                puppets_user_id: row.opt_string(5)?,
            })
        })
        .transpose()
    }

    /// Marks a token used for the first time and revokes the refresh token that preceded the
    /// one it was issued with (the spec's refresh-token rotation).
    pub async fn mark_access_token_used(
        &self,
        token_hash: &str,
        refresh_token_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                tx.execute("UPDATE access_tokens SET used = TRUE WHERE token_hash = $1", params![token_hash])
                    .await?;
                if let Some(refresh) = refresh_token_hash {
                    tx.execute("DELETE FROM refresh_tokens WHERE next_token_hash = $1", params![refresh])
                        .await?;
                }
                Ok(())
            })
            .await
    }

    pub async fn delete_access_token(&self, token_hash: &str) -> Result<(), StoreError> {
        self.db.execute("DELETE FROM access_tokens WHERE token_hash = $1", params![token_hash]).await?;
        Ok(())
    }

    /// Deletes every access and refresh token of a user except, optionally, one device's.
    /// Returns the hashes of the access tokens deleted.
    pub async fn delete_user_tokens(
        &self,
        user_id: &str,
        except_device_id: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        self.db
            .transaction(async |tx| {
                let rows = match except_device_id {
                    Some(device_id) => {
                        tx.query(
                            "SELECT token_hash FROM access_tokens WHERE user_id = $1 AND (device_id IS NULL OR device_id <> $2)",
                            params![user_id, device_id],
                        )
                        .await?
                    }
                    None => tx.query("SELECT token_hash FROM access_tokens WHERE user_id = $1", params![user_id]).await?,
                };
                let hashes = rows.iter().map(|r| r.string(0)).collect::<Result<Vec<_>, _>>()?;
                for hash in &hashes {
                    tx.execute("DELETE FROM access_tokens WHERE token_hash = $1", params![hash.as_str()]).await?;
                }
                match except_device_id {
                    Some(device_id) => {
                        tx.execute(
                            "DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id <> $2",
                            params![user_id, device_id],
                        )
                        .await?
                    }
                    None => tx.execute("DELETE FROM refresh_tokens WHERE user_id = $1", params![user_id]).await?,
                };
                Ok(hashes)
            })
            .await
    }

    /// Hashes of the access tokens of some devices (to evict them from caches).
    pub async fn access_tokens_of_devices(
        &self,
        user_id: &str,
        device_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut hashes = Vec::new();
        for device_id in device_ids {
            let rows = self
                .db
                .query(
                    "SELECT token_hash FROM access_tokens WHERE user_id = $1 AND device_id = $2",
                    params![user_id, device_id.as_str()],
                )
                .await?;
            for row in rows {
                hashes.push(row.string(0)?);
            }
        }
        Ok(hashes)
    }

    pub async fn insert_refresh_token(
        &self,
        token_hash: &str,
        user_id: &str,
        device_id: &str,
        expiry_ts: Option<i64>,
        ultimate_session_expiry_ts: Option<i64>,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                INSERT_REFRESH_TOKEN,
                params![
                    token_hash,
                    user_id,
                    device_id,
                    crate::now_ms(),
                    expiry_ts,
                    ultimate_session_expiry_ts
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn get_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshTokenRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT token_hash, user_id, device_id, expiry_ts, ultimate_session_expiry_ts, next_token_hash
                 FROM refresh_tokens WHERE token_hash = $1",
                params![token_hash],
            )
            .await?;
        row.map(|row| {
            Ok(RefreshTokenRecord {
                token_hash: row.string(0)?,
                user_id: row.string(1)?,
                device_id: row.string(2)?,
                expiry_ts: row.opt_i64(3)?,
                ultimate_session_expiry_ts: row.opt_i64(4)?,
                next_token_hash: row.opt_string(5)?,
            })
        })
        .transpose()
    }

    /// Records the successor of a refresh token, replacing any earlier successor (and that
    /// successor's access tokens, which were never used).
    pub async fn replace_refresh_token_successor(
        &self,
        token_hash: &str,
        next_hash: &str,
    ) -> Result<(), StoreError> {
        self.db
            .transaction(async |tx| {
                if let Some(row) = tx
                    .query_opt(
                        "SELECT next_token_hash FROM refresh_tokens WHERE token_hash = $1",
                        params![token_hash],
                    )
                    .await?
                    && let Some(previous) = row.opt_string(0)?
                {
                    tx.execute(
                        "DELETE FROM access_tokens WHERE refresh_token_hash = $1",
                        params![previous.as_str()],
                    )
                    .await?;
                    tx.execute(
                        "DELETE FROM refresh_tokens WHERE token_hash = $1",
                        params![previous.as_str()],
                    )
                    .await?;
                }
                tx.execute(
                    "UPDATE refresh_tokens SET next_token_hash = $2 WHERE token_hash = $1",
                    params![token_hash, next_hash],
                )
                .await?;
                Ok(())
            })
            .await
    }

    /// Revokes the refresh token that `token_hash` succeeded (used when the successor is used).
    pub async fn revoke_refresh_token_predecessor(&self, token_hash: &str) -> Result<(), StoreError> {
        self.db.execute("DELETE FROM refresh_tokens WHERE next_token_hash = $1", params![token_hash]).await?;
        Ok(())
    }

    pub async fn delete_refresh_token(&self, token_hash: &str) -> Result<(), StoreError> {
        self.db.execute("DELETE FROM refresh_tokens WHERE token_hash = $1", params![token_hash]).await?;
        Ok(())
    }

    pub async fn insert_login_token(
        &self,
        token_hash: &str,
        user_id: &str,
        expiry_ts: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO login_tokens (token_hash, user_id, expiry_ts) VALUES ($1, $2, $3)",
                params![token_hash, user_id, expiry_ts],
            )
            .await?;
        Ok(())
    }

    /// Consumes a login token: returns its user if it exists, is unexpired and unused.
    pub async fn consume_login_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let rows = self
            .db
            .execute_returning(
                "UPDATE login_tokens SET used_ts = $2 WHERE token_hash = $1 AND used_ts IS NULL AND expiry_ts > $2
                 RETURNING user_id",
                params![token_hash, now],
            )
            .await?;
        rows.first().map(|r| r.string(0)).transpose()
    }
}
