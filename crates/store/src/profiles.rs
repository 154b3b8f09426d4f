//! Profile fields (`displayname`, `avatar_url` and extended fields), stored as JSON values.

use serde_json::{Map, Value};

use crate::{Store, StoreError, params};

impl Store {
    /// All fields of a user's profile.
    pub async fn get_profile(&self, user_id: &str) -> Result<Map<String, Value>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT field, value FROM profile_fields WHERE user_id = $1 ORDER BY field",
                params![user_id],
            )
            .await?;
        let mut profile = Map::new();
        for row in rows {
            profile.insert(row.string(0)?, row.json(1)?);
        }
        Ok(profile)
    }

    pub async fn get_profile_field(&self, user_id: &str, field: &str) -> Result<Option<Value>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT value FROM profile_fields WHERE user_id = $1 AND field = $2",
                params![user_id, field],
            )
            .await?;
        row.map(|r| r.json(0)).transpose()
    }

    /// Sets (or, with `None`, removes) one field.
    pub async fn set_profile_field(
        &self,
        user_id: &str,
        field: &str,
        value: Option<&Value>,
    ) -> Result<(), StoreError> {
        match value {
            Some(value) => {
                self.db
                    .execute(
                        "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id, field) DO UPDATE SET value = $3",
                        params![user_id, field, value.to_string()],
                    )
                    .await?;
            }
            None => {
                self.db
                    .execute(
                        "DELETE FROM profile_fields WHERE user_id = $1 AND field = $2",
                        params![user_id, field],
                    )
                    .await?;
            }
        }
        Ok(())
    }
}
