//! Relations, threads and bundled aggregations.

use serde_json::Value;

use super::RoomEvent;
use crate::auth::Requester;
use crate::{Result, Services};

impl Services {
    /// The `m.relations` of an event's `unsigned`, if anything relates to it.
    pub async fn bundled_aggregations(
        &self,
        event: &RoomEvent,
        requester: Option<&Requester>,
    ) -> Result<Option<Value>> {
        let _ = (event, requester);
        Ok(None)
    }
}
