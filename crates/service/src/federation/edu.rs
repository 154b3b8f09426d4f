//! Inbound EDUs (typing, receipts, presence, to-device, device lists), as a transaction
//! carries them. A stub for now: every type is accepted and ignored; the EDU work fills it.

use ruma::ServerName;
use serde_json::Value;

use crate::{Result, Services};

impl Services {
    /// Handles one EDU of a transaction from `origin`. Unknown types are ignored.
    pub async fn receive_edu(&self, origin: &ServerName, edu_type: &str, _content: &Value) -> Result<()> {
        tracing::debug!(%origin, edu_type, "ignored an EDU");
        Ok(())
    }
}
