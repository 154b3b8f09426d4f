//! Registration tokens.

use crate::{Row, Store, StoreError, params};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationTokenRecord {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub pending: i64,
    pub completed: i64,
    pub expiry_time: Option<i64>,
}

impl RegistrationTokenRecord {
    /// Usable now: not expired and with uses left.
    pub fn is_valid(&self, now: i64) -> bool {
        self.expiry_time.is_none_or(|expiry| expiry > now)
            && self.uses_allowed.is_none_or(|allowed| self.pending + self.completed < allowed)
    }
}

fn token_from_row(row: &Row) -> Result<RegistrationTokenRecord, StoreError> {
    Ok(RegistrationTokenRecord {
        token: row.string(0)?,
        uses_allowed: row.opt_i64(1)?,
        pending: row.i64(2)?,
        completed: row.i64(3)?,
        expiry_time: row.opt_i64(4)?,
    })
}

/// Turns a reserved use of token `$1` into a completed one.
pub(crate) const COMPLETE_REGISTRATION_TOKEN: &str =
    "UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END,
     completed = completed + 1 WHERE token = $1";

impl Store {
    /// Returns `false` if the token exists already.
    pub async fn create_registration_token(
        &self,
        token: &RegistrationTokenRecord,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .db
            .execute(
                "INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time) VALUES ($1, $2, 0, 0, $3)
                 ON CONFLICT (token) DO NOTHING",
                params![token.token.as_str(), token.uses_allowed, token.expiry_time],
            )
            .await?;
        Ok(inserted > 0)
    }

    pub async fn get_registration_token(
        &self,
        token: &str,
    ) -> Result<Option<RegistrationTokenRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens WHERE token = $1",
                params![token],
            )
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    pub async fn list_registration_tokens(&self) -> Result<Vec<RegistrationTokenRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT token, uses_allowed, pending, completed, expiry_time FROM registration_tokens ORDER BY token",
                params![],
            )
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Sets `uses_allowed` and `expiry_time` (each only when `Some`, where `Some(None)` clears it).
    pub async fn update_registration_token(
        &self,
        token: &str,
        uses_allowed: Option<Option<i64>>,
        expiry_time: Option<Option<i64>>,
    ) -> Result<Option<RegistrationTokenRecord>, StoreError> {
        if let Some(uses_allowed) = uses_allowed {
            self.db
                .execute(
                    "UPDATE registration_tokens SET uses_allowed = $2 WHERE token = $1",
                    params![token, uses_allowed],
                )
                .await?;
        }
        if let Some(expiry_time) = expiry_time {
            self.db
                .execute(
                    "UPDATE registration_tokens SET expiry_time = $2 WHERE token = $1",
                    params![token, expiry_time],
                )
                .await?;
        }
        self.get_registration_token(token).await
    }

    pub async fn delete_registration_token(&self, token: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("DELETE FROM registration_tokens WHERE token = $1", params![token]).await? > 0)
    }

    /// Reserves one use of a token for a registration in progress; `false` if it is not valid.
    pub async fn reserve_registration_token(&self, token: &str, now: i64) -> Result<bool, StoreError> {
        let changed = self
            .db
            .execute(
                "UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1
                 AND (expiry_time IS NULL OR expiry_time > $2)
                 AND (uses_allowed IS NULL OR pending + completed < uses_allowed)",
                params![token, now],
            )
            .await?;
        Ok(changed > 0)
    }

    /// Turns a reserved use into a completed one.
    pub async fn complete_registration_token(&self, token: &str) -> Result<(), StoreError> {
        self.db.execute(COMPLETE_REGISTRATION_TOKEN, params![token]).await?;
        Ok(())
    }

    /// Gives back a reserved use (the registration was abandoned).
    pub async fn release_registration_token(&self, token: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0",
                params![token],
            )
            .await?;
        Ok(())
    }
}
