//! Server-wide secrets generated once and kept in the database (e.g. a `macaroon_secret_key`
//! that the configuration does not give).

use crate::{Store, StoreError, params};

impl Store {
    /// Returns the secret stored under `name`, storing `generate()` first if there is none.
    /// Safe against concurrent first starts: whichever value lands first wins for everyone.
    pub async fn get_or_create_secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        if let Some(row) =
            self.db.query_opt("SELECT value FROM server_secrets WHERE name = $1", params![name]).await?
        {
            return row.string(0);
        }
        self.db
            .execute(
                "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                params![name, generate()],
            )
            .await?;
        let row = self
            .db
            .query_opt("SELECT value FROM server_secrets WHERE name = $1", params![name])
            .await?
            .ok_or_else(|| StoreError::Decode(format!("secret {name} vanished")))?;
        row.string(0)
    }
}
