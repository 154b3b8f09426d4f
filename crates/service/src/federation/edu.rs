//! Inbound EDUs, as a transaction carries them: each type goes to the service that owns the
//! feature locally (typing, receipts, presence, to-device, device lists), which checks that
//! the origin speaks for its own users only. Unknown types are ignored.

use ruma::ServerName;
use serde_json::Value;

use crate::{Result, Services};

impl Services {
    /// Handles one EDU of a transaction from `origin`. An EDU that fails its checks is dropped
    /// (the error is logged by the caller); the transaction goes on.
    pub async fn receive_edu(&self, origin: &ServerName, edu_type: &str, content: &Value) -> Result<()> {
        match edu_type {
            "m.typing" => self.receive_typing_edu(origin, content).await,
            "m.receipt" => self.receive_receipt_edu(origin, content).await,
            "m.presence" => self.receive_presence_edu(origin, content).await,
            "m.direct_to_device" => self.receive_to_device_edu(origin, content).await,
            "m.device_list_update" => self.receive_device_list_edu(origin, content).await,
            "m.signing_key_update" => self.receive_signing_key_edu(origin, content).await,
            _ => {
                tracing::debug!(%origin, edu_type, "ignored an EDU");
                Ok(())
            }
        }
    }
}
