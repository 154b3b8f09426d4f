//! Stripped room state other servers sent with invites and knocks of local users (migration
//! 0020), by the member event it came with.

use crate::{Store, StoreError, params};

impl Store {
    /// Records the stripped state (a JSON array) that came with a member event; a second
    /// record for the same event replaces the first.
    pub async fn put_stripped_room_state(
        &self,
        event_id: &str,
        room_id: &str,
        events: &str,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO stripped_room_state (event_id, room_id, events) VALUES ($1, $2, $3)
                 ON CONFLICT (event_id) DO UPDATE SET events = EXCLUDED.events",
                params![event_id, room_id, events],
            )
            .await?;
        Ok(())
    }

    /// The stripped state (a JSON array) that came with a member event, if any.
    pub async fn stripped_room_state(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_opt("SELECT events FROM stripped_room_state WHERE event_id = $1", params![event_id])
            .await?;
        row.map(|r| r.string(0)).transpose()
    }
}
