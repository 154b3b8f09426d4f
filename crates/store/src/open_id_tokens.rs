//! OpenID tokens for third parties, by the SHA-256 of the token (the caller hashes).

use crate::{Store, StoreError, params};

impl Store {
    /// Records a token (its hash) for a user, valid until `valid_until_ms`.
    pub async fn insert_open_id_token(
        &self,
        token_hash: &str,
        user_id: &str,
        valid_until_ms: i64,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO open_id_tokens (token, ts_valid_until_ms, user_id) VALUES ($1, $2, $3)",
                params![token_hash, valid_until_ms, user_id],
            )
            .await?;
        Ok(())
    }

    /// The user of a token (its hash) still valid at `now_ms`.
    pub async fn open_id_token_user(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.db
            .query_opt(
                "SELECT user_id FROM open_id_tokens WHERE token = $1 AND ts_valid_until_ms > $2",
                params![token_hash, now_ms],
            )
            .await?
            .map(|row| row.string(0))
            .transpose()
    }

    /// Deletes the tokens no longer valid at `now_ms`; returns how many.
    pub async fn delete_expired_open_id_tokens(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.db.execute("DELETE FROM open_id_tokens WHERE ts_valid_until_ms <= $1", params![now_ms]).await
    }
}
