//! The monthly active user cohort (`monthly_active_users`).

use crate::{Store, StoreError, params};

impl Store {
    /// When `user_id` was last recorded active at or after `since`, if it was.
    pub async fn monthly_active_since(&self, user_id: &str, since: i64) -> Result<Option<i64>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT timestamp FROM monthly_active_users WHERE user_id = $1 AND timestamp >= $2",
                params![user_id, since],
            )
            .await?;
        row.map(|row| row.i64(0)).transpose()
    }

    /// How many users were recorded active at or after `since`.
    pub async fn monthly_active_count(&self, since: i64) -> Result<u64, StoreError> {
        let row = self
            .db
            .query_opt("SELECT COUNT(*) FROM monthly_active_users WHERE timestamp >= $1", params![since])
            .await?;
        Ok(match row {
            Some(row) => row.i64(0)?.max(0) as u64,
            None => 0,
        })
    }

    /// Records `user_id` active at `now`. With a `limit`, a user not yet in the cohort (since
    /// `since`) joins it only while it has fewer than `limit` members (one transaction, so
    /// the cohort never grows past the limit); returns whether the user is in the cohort.
    pub async fn record_monthly_active(
        &self,
        user_id: &str,
        now: i64,
        since: i64,
        limit: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.db
            .transaction(async |tx| {
                if let Some(limit) = limit {
                    let member = tx
                        .query_opt(
                            "SELECT 1 FROM monthly_active_users WHERE user_id = $1 AND timestamp >= $2",
                            params![user_id, since],
                        )
                        .await?
                        .is_some();
                    if !member {
                        let count = match tx
                            .query_opt(
                                "SELECT COUNT(*) FROM monthly_active_users WHERE timestamp >= $1",
                                params![since],
                            )
                            .await?
                        {
                            Some(row) => row.i64(0)?,
                            None => 0,
                        };
                        if count.max(0) as u64 >= limit {
                            return Ok(false);
                        }
                    }
                }
                tx.execute(
                    "INSERT INTO monthly_active_users (user_id, timestamp) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET timestamp = excluded.timestamp",
                    params![user_id, now],
                )
                .await?;
                Ok(true)
            })
            .await
    }
}
