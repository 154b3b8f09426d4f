//! User-interactive authentication sessions.

use serde_json::Value;

use crate::{Store, StoreError, params};

#[derive(Clone, Debug, PartialEq)]
pub struct UiaSessionRecord {
    pub session_id: String,
    pub operation: String,
    pub user_id: Option<String>,
    pub created_ts: i64,
    /// Stage types completed so far.
    pub completed: Vec<String>,
    /// Operation-specific data (e.g. a password hash given in an earlier request).
    pub data: Value,
}

impl Store {
    pub async fn create_uia_session(&self, session: &UiaSessionRecord) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO uia_sessions (session_id, operation, user_id, created_ts, completed, data) VALUES ($1, $2, $3, $4, $5, $6)",
                params![
                    session.session_id.as_str(),
                    session.operation.as_str(),
                    session.user_id.clone(),
                    session.created_ts,
                    serde_json::to_string(&session.completed).unwrap_or_else(|_| "[]".to_owned()),
                    session.data.to_string()
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn get_uia_session(&self, session_id: &str) -> Result<Option<UiaSessionRecord>, StoreError> {
        let row = self
            .db
            .query_opt(
                "SELECT session_id, operation, user_id, created_ts, completed, data FROM uia_sessions WHERE session_id = $1",
                params![session_id],
            )
            .await?;
        row.map(|row| {
            Ok(UiaSessionRecord {
                session_id: row.string(0)?,
                operation: row.string(1)?,
                user_id: row.opt_string(2)?,
                created_ts: row.i64(3)?,
                completed: row.json(4)?,
                data: row.json(5)?,
            })
        })
        .transpose()
    }

    pub async fn update_uia_session(
        &self,
        session_id: &str,
        completed: &[String],
        data: &Value,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE uia_sessions SET completed = $2, data = $3 WHERE session_id = $1",
                params![
                    session_id,
                    serde_json::to_string(completed).unwrap_or_else(|_| "[]".to_owned()),
                    data.to_string()
                ],
            )
            .await?;
        Ok(())
    }

    /// Deletes a session; returns whether it existed (so that only one request can finish it).
    pub async fn delete_uia_session(&self, session_id: &str) -> Result<bool, StoreError> {
        Ok(self.db.execute("DELETE FROM uia_sessions WHERE session_id = $1", params![session_id]).await? > 0)
    }

    pub async fn delete_expired_uia_sessions(&self, created_before: i64) -> Result<u64, StoreError> {
        self.db.execute("DELETE FROM uia_sessions WHERE created_ts < $1", params![created_before]).await
    }

    /// Test and admin helper: moves a session's creation time.
    pub async fn set_uia_session_created(&self, session_id: &str, created_ts: i64) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE uia_sessions SET created_ts = $2 WHERE session_id = $1",
                params![session_id, created_ts],
            )
            .await?;
        Ok(())
    }
}
