//! Local accounts, numeric localpart allocation and rate-limit overrides.

use crate::registration::COMPLETE_REGISTRATION_TOKEN;
use crate::tokens::{NewLoginSession, insert_login_session};
use crate::{Row, Store, StoreError, Tx, now_ms, params};

/// A local account.
#[derive(Clone, Debug, PartialEq)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub created_ts: i64,
    pub is_guest: bool,
    pub admin: bool,
    pub user_type: Option<String>,
    pub deactivated: bool,
    pub erased: bool,
    pub shadow_banned: bool,
    pub locked: bool,
    pub suspended: bool,
    pub appservice_id: Option<String>,
    /// The privacy-policy version the user consented to (`user_consent`), and when.
    pub consent_version: Option<String>,
    pub consent_ts: Option<i64>,
    /// The policy version of the last consent server notice sent to the user.
    pub consent_server_notice_sent: Option<String>,
}

/// What a new account starts with.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub is_guest: bool,
    pub admin: bool,
    pub user_type: Option<String>,
    pub appservice_id: Option<String>,
    pub displayname: Option<String>,
}

const USER_COLUMNS: &str = "user_id, password_hash, created_ts, is_guest, admin, user_type, deactivated, erased, \
     shadow_banned, locked, suspended, appservice_id, consent_version, consent_ts, consent_server_notice_sent";

fn user_from_row(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        user_id: row.string(0)?,
        password_hash: row.opt_string(1)?,
        created_ts: row.i64(2)?,
        is_guest: row.bool(3)?,
        admin: row.bool(4)?,
        user_type: row.opt_string(5)?,
        deactivated: row.bool(6)?,
        erased: row.bool(7)?,
        shadow_banned: row.bool(8)?,
        locked: row.bool(9)?,
        suspended: row.bool(10)?,
        appservice_id: row.opt_string(11)?,
        consent_version: row.opt_string(12)?,
        consent_ts: row.opt_i64(13)?,
        consent_server_notice_sent: row.opt_string(14)?,
    })
}

/// A per-user rate-limit override (both zero: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitOverride {
    pub messages_per_second: i64,
    pub burst_count: i64,
}

async fn insert_user(tx: &mut Tx<'_>, user: &NewUser) -> Result<bool, StoreError> {
    let lower = user.user_id.to_lowercase();
    if tx.query_opt("SELECT 1 FROM users WHERE user_id_lower = $1", params![lower.as_str()]).await?.is_some()
    {
        return Ok(false);
    }
    let inserted = tx
        .execute(
            "INSERT INTO users (user_id, user_id_lower, password_hash, created_ts, is_guest, admin, user_type, appservice_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id) DO NOTHING",
            params![
                user.user_id.as_str(),
                lower.as_str(),
                user.password_hash.clone(),
                now_ms(),
                user.is_guest,
                user.admin,
                user.user_type.clone(),
                user.appservice_id.clone()
            ],
        )
        .await?;
    if inserted == 0 {
        return Ok(false);
    }
    if let Some(displayname) = &user.displayname {
        tx.execute(
            "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, 'displayname', $2)",
            params![user.user_id.as_str(), serde_json::Value::from(displayname.as_str()).to_string()],
        )
        .await?;
    }
    Ok(true)
}

impl Store {
    /// Creates an account (and its display name). Returns `false` when the user ID, compared
    /// case-insensitively, is taken.
    pub async fn create_user(&self, user: &NewUser) -> Result<bool, StoreError> {
        self.db.transaction(async |tx| insert_user(tx, user).await).await
    }

    /// Registers an account in one transaction: the account and its display name, one
    /// completed use of the registration token that allowed it (its reserved use becomes a
    /// completed one), and the device and tokens of its first login. Returns `false`, having
    /// written nothing, when the user ID is taken; a failure midway also leaves nothing behind.
    pub async fn register_user(
        &self,
        user: &NewUser,
        registration_token: Option<&str>,
        session: Option<&NewLoginSession<'_>>,
    ) -> Result<bool, StoreError> {
        self.db
            .transaction(async |tx| {
                if !insert_user(tx, user).await? {
                    return Ok(false);
                }
                if let Some(token) = registration_token {
                    tx.execute(COMPLETE_REGISTRATION_TOKEN, params![token]).await?;
                }
                if let Some(session) = session {
                    insert_login_session(tx, session).await?;
                }
                Ok(true)
            })
            .await
    }

    pub async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = $1");
        self.db.query_opt(&sql, params![user_id]).await?.as_ref().map(user_from_row).transpose()
    }

    /// Accounts whose ID matches case-insensitively (several only for legacy data).
    pub async fn get_users_case_insensitive(&self, user_id: &str) -> Result<Vec<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id_lower = $1 ORDER BY user_id");
        self.db.query(&sql, params![user_id.to_lowercase()]).await?.iter().map(user_from_row).collect()
    }

    /// Reserves the next number for a generated localpart.
    pub async fn next_generated_localpart(&self) -> Result<i64, StoreError> {
        let rows = self
            .db
            .execute_returning(
                "UPDATE user_id_seq SET next_value = next_value + 1 WHERE id = 1 RETURNING next_value - 1",
                params![],
            )
            .await?;
        rows.first().ok_or_else(|| StoreError::Decode("user_id_seq is empty".to_owned()))?.i64(0)
    }

    pub async fn set_password_hash(
        &self,
        user_id: &str,
        password_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE users SET password_hash = $2 WHERE user_id = $1",
                params![user_id, password_hash],
            )
            .await?;
        Ok(())
    }

    /// Records the privacy-policy version a user consented to; false when there is no such user.
    pub async fn set_consent_version(&self, user_id: &str, version: &str) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE users SET consent_version = $2, consent_ts = $3 WHERE user_id = $1",
                params![user_id, version, now_ms()],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Records that the consent server notice for `version` was sent to a user.
    pub async fn set_consent_server_notice_sent(
        &self,
        user_id: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE users SET consent_server_notice_sent = $2 WHERE user_id = $1",
                params![user_id, version],
            )
            .await?;
        Ok(())
    }

    pub async fn set_admin(&self, user_id: &str, admin: bool) -> Result<(), StoreError> {
        self.db.execute("UPDATE users SET admin = $2 WHERE user_id = $1", params![user_id, admin]).await?;
        Ok(())
    }

    /// Marks an account deactivated and removes everything that lets it sign in: password,
    /// access, refresh and login tokens, devices (with their end-to-end encryption keys,
    /// to-device inboxes and dehydrated device, as deleting a device removes them), its
    /// profile, and its key backups, as Synapse does.
    pub async fn deactivate_user(&self, user_id: &str, erase: bool) -> Result<(), StoreError> {
        self.delete_sliding_sync_positions_apart(user_id, None).await?;
        self.db
            .transaction(async |tx| {
                tx.execute(
                    "UPDATE users SET deactivated = TRUE, erased = $2, password_hash = NULL WHERE user_id = $1",
                    params![user_id, erase],
                )
                .await?;
                let user_tables = ["login_tokens", "profile_fields", "e2e_room_keys", "e2e_room_keys_versions"];
                for table in crate::devices::DEVICE_TABLES.iter().chain(&user_tables) {
                    tx.execute(&format!("DELETE FROM {table} WHERE user_id = $1"), params![user_id]).await?;
                }
                Ok(())
            })
            .await
    }

    pub async fn get_ratelimit_override(
        &self,
        user_id: &str,
    ) -> Result<Option<RateLimitOverride>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT messages_per_second, burst_count FROM ratelimit_override WHERE user_id = $1",
                params![user_id],
            )
            .await?;
        row.map(|row| {
            Ok(RateLimitOverride {
                messages_per_second: row.opt_i64(0)?.unwrap_or(0),
                burst_count: row.opt_i64(1)?.unwrap_or(0),
            })
        })
        .transpose()
    }

    pub async fn set_ratelimit_override(
        &self,
        user_id: &str,
        value: Option<RateLimitOverride>,
    ) -> Result<(), StoreError> {
        match value {
            Some(value) => {
                self.db
                    .execute(
                        "INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id) DO UPDATE SET messages_per_second = $2, burst_count = $3",
                        params![user_id, value.messages_per_second, value.burst_count],
                    )
                    .await?;
            }
            None => {
                self.db
                    .execute("DELETE FROM ratelimit_override WHERE user_id = $1", params![user_id])
                    .await?;
            }
        }
        Ok(())
    }
}
