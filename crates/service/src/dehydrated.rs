//! Dehydrated devices (MSC3814, as Element X uses them): a device a client creates for its user
//! without logging it in (it has no access token), whose keys other devices encrypt to while
//! none of the user's devices is online; a later login rehydrates it from `device_data` and
//! fetches the to-device messages it was sent.
//!
//! - `put_dehydrated_device` creates the device, uploads its keys through [`Services::upload_keys`]
//!   and makes it the user's one dehydrated device; the previous one is deleted through
//!   [`Services::delete_devices`] (with its keys and inbox).
//! - `dehydrated_device` / `delete_dehydrated_device` read and remove it.
//! - `dehydrated_device_events` pages through its to-device inbox with `d<position>` tokens;
//!   a token sent back acknowledges, and deletes, every message up to it.

use myelin_core::MatrixError;
use serde_json::{Map, Value};

use crate::auth::Requester;
use crate::devices::MAX_DEVICE_DISPLAY_NAME_LEN;
use crate::e2e_keys::KeysUpload;
use crate::sessions::MAX_DEVICE_ID_LEN;
use crate::to_device::ToDeviceEvent;
use crate::{Error, Result, Services};

/// What `PUT /dehydrated_device` uploads.
#[derive(Debug)]
pub struct DehydratedDeviceUpload {
    pub device_id: String,
    /// Opaque to the server except for its `algorithm`.
    pub device_data: Map<String, Value>,
    pub initial_device_display_name: Option<String>,
    pub keys: KeysUpload,
}

/// A user's dehydrated device.
#[derive(Debug)]
pub struct DehydratedDevice {
    pub device_id: String,
    pub device_data: Value,
}

/// One page of a dehydrated device's to-device messages.
#[derive(Debug)]
pub struct DehydratedDeviceEvents {
    pub events: Vec<ToDeviceEvent>,
    /// The token of the next page (`d<position>`).
    pub next_batch: String,
    /// Whether more messages wait after this page.
    pub limited: bool,
}

/// A `next_batch` token: `d` and a to-device stream position, as Synapse writes them.
fn parse_batch_token(token: &str) -> Result<i64> {
    token
        .strip_prefix('d')
        .and_then(|position| position.parse::<i64>().ok())
        .filter(|position| *position >= 0)
        .ok_or_else(|| {
            MatrixError::invalid_param(format!("next_batch {token:?} has an invalid format")).into()
        })
}

impl Services {
    /// `PUT /dehydrated_device`: creates the device with its keys and makes it the requester's
    /// dehydrated device, replacing (deleting) the previous one. Returns the device ID.
    ///
    /// The device ID must be new, or the current dehydrated device's (which is then replaced):
    /// a logged-in device never becomes a dehydrated one.
    pub async fn put_dehydrated_device(
        &self,
        requester: &Requester,
        upload: DehydratedDeviceUpload,
    ) -> Result<String> {
        let user_id = requester.user_id.as_str();
        let device_id = upload.device_id;
        if device_id.is_empty() || device_id.len() > MAX_DEVICE_ID_LEN {
            return Err(MatrixError::invalid_param("Invalid device_id").into());
        }
        if !upload.device_data.get("algorithm").is_some_and(Value::is_string) {
            return Err(MatrixError::bad_json("device_data needs a string `algorithm`").into());
        }
        if let Some(name) = &upload.initial_device_display_name
            && name.chars().count() > MAX_DEVICE_DISPLAY_NAME_LEN
        {
            return Err(MatrixError::too_large(format!(
                "Device display name is too long (max {MAX_DEVICE_DISPLAY_NAME_LEN})"
            ))
            .into());
        }
        let device_data = Value::Object(upload.device_data).to_string();

        // Re-uploading under the current dehydrated device's ID replaces it: the old device
        // (and its keys, which the new ones could not replace) goes first, as Synapse does.
        if let Some(current) = self.store.dehydrated_device(user_id).await?
            && current.device_id == device_id
        {
            self.delete_devices(&requester.user_id, std::slice::from_ref(&device_id)).await?;
        }
        let display_name = upload.initial_device_display_name.as_deref();
        if !self.store.create_tokenless_device(user_id, &device_id, display_name).await? {
            return Err(MatrixError::invalid_param(format!(
                "Device {device_id} already exists: a dehydrated device needs a new device ID"
            ))
            .into());
        }
        // The keys go through the one upload path, as the new device's own upload.
        let as_device = Requester { device_id: Some(device_id.clone()), ..requester.clone() };
        let stored = match self.upload_keys(&as_device, upload.keys).await {
            Ok(_) => {
                self.store.set_dehydrated_device(user_id, &device_id, &device_data).await.map_err(Error::from)
            }
            Err(error) => Err(error),
        };
        let previous = match stored {
            Ok(previous) => previous,
            Err(error) => {
                // Nothing of a refused upload stays: the new device goes (with whatever keys).
                self.delete_devices(&requester.user_id, std::slice::from_ref(&device_id)).await?;
                return Err(error);
            }
        };
        if let Some(previous) = previous {
            self.delete_devices(&requester.user_id, &[previous]).await?;
        }
        Ok(device_id)
    }

    /// `GET /dehydrated_device`: the requester's dehydrated device.
    pub async fn dehydrated_device(&self, requester: &Requester) -> Result<DehydratedDevice> {
        let record = self
            .store
            .dehydrated_device(requester.user_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("No dehydrated device available"))?;
        let device_data = serde_json::from_str(&record.device_data)
            .map_err(|error| Error::internal_with("stored device_data is not JSON", error))?;
        Ok(DehydratedDevice { device_id: record.device_id, device_data })
    }

    /// `DELETE /dehydrated_device`: deletes the requester's dehydrated device; returns its ID.
    pub async fn delete_dehydrated_device(&self, requester: &Requester) -> Result<String> {
        let record = self
            .store
            .dehydrated_device(requester.user_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::not_found("No dehydrated device available"))?;
        self.delete_devices(&requester.user_id, std::slice::from_ref(&record.device_id)).await?;
        Ok(record.device_id)
    }

    /// `POST /dehydrated_device/{deviceId}/events`: the dehydrated device's to-device messages
    /// after `since` (a previous page's `next_batch`, which acknowledges and deletes every
    /// message up to it), a page at a time. Only the requester's current dehydrated device.
    pub async fn dehydrated_device_events(
        &self,
        requester: &Requester,
        device_id: &str,
        since: Option<&str>,
    ) -> Result<DehydratedDeviceEvents> {
        let since = since.filter(|token| !token.is_empty()).map(parse_batch_token).transpose()?.unwrap_or(0);
        let current = self.store.dehydrated_device(requester.user_id.as_str()).await?;
        match current {
            None => return Err(MatrixError::forbidden("No dehydrated device exists").into()),
            Some(current) if current.device_id != device_id => {
                return Err(
                    MatrixError::forbidden("You may only fetch messages for your dehydrated device").into()
                );
            }
            Some(_) => {}
        }
        // The dehydrated device's inbox, read and acknowledged as its own syncs would.
        let as_device = Requester { device_id: Some(device_id.to_owned()), ..requester.clone() };
        self.ack_to_device(&as_device, since).await?;
        let now = self.streams.to_device.current();
        let (events, next) =
            self.to_device_for_sync(&as_device, since, now, crate::to_device::MAX_TO_DEVICE_PER_SYNC).await?;
        Ok(DehydratedDeviceEvents { events, next_batch: format!("d{next}"), limited: next != now })
    }
}
