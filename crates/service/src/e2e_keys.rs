//! End-to-end encryption keys (issue 12, step 1): a device's identity keys, its one-time keys
//! and its fallback keys; `/keys/upload`, `/keys/query` and `/keys/claim` without their HTTP.
//! Keys are kept as the JSON objects the clients uploaded (signatures cover them as they are).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use myelin_core::MatrixError;
use myelin_store::{CrossSigningSignatureRecord, KeysUploadRecord, OneTimeKeyRecord};
use ruma::serde::{Base64, base64::Standard};
use ruma::signatures::{
    SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedUserId, UserId};
use serde_json::{Map, Value};

use crate::auth::Requester;
use crate::cross_signing::{QueriedCrossSigningKeys, merge_signatures};
use crate::{Error, Result, Services};

/// What a device uploads: each part as the client sent it.
#[derive(Debug, Default)]
pub struct KeysUpload {
    pub device_keys: Option<Map<String, Value>>,
    /// `algorithm:key_id` to the key (a string, or a signed key object).
    pub one_time_keys: BTreeMap<String, Value>,
    pub fallback_keys: BTreeMap<String, Value>,
}

/// A device's identity keys as uploaded, with its display name.
#[derive(Debug)]
pub struct QueriedDeviceKeys {
    pub keys: Map<String, Value>,
    pub display_name: Option<String>,
}

/// The answer to `/keys/query`.
#[derive(Debug, Default)]
pub struct KeysQueryResult {
    /// User to device to keys; every local user asked for is present (maybe without devices).
    /// Each device's keys carry the signatures its user made of it (with the self-signing key).
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<String, QueriedDeviceKeys>>,
    /// The local users' cross-signing keys, as the requester may see them.
    pub cross_signing: QueriedCrossSigningKeys,
    /// Remote servers that could not be reached in time.
    pub failures: BTreeSet<String>,
}

/// The answer to `/keys/claim`.
#[derive(Debug, Default)]
pub struct KeysClaimResult {
    /// User to device to `algorithm:key_id` to the key.
    pub one_time_keys: BTreeMap<OwnedUserId, BTreeMap<String, BTreeMap<String, Value>>>,
    pub failures: BTreeSet<String>,
}

/// `algorithm:key_id`, both parts non-empty.
fn split_key_id(full_id: &str) -> Result<(&str, &str)> {
    match full_id.split_once(':') {
        Some((algorithm, key_id)) if !algorithm.is_empty() && !key_id.is_empty() => Ok((algorithm, key_id)),
        _ => Err(MatrixError::invalid_param(format!(
            "Malformed key ID {full_id:?}: expected algorithm:key_id"
        ))
        .into()),
    }
}

fn canonical(object: &Map<String, Value>, what: &str) -> Result<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(Value::Object(object.clone())) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        _ => {
            Err(MatrixError::bad_json(format!("{what} is not canonical JSON (integers out of range?)"))
                .into())
        }
    }
}

/// Checks `object`'s signature by `user_id`'s device key `ed25519:device_id` (`public_key`,
/// unpadded base64).
fn check_device_signature(
    object: &Map<String, Value>,
    user_id: &UserId,
    device_id: &str,
    public_key: &str,
    what: &str,
) -> Result<()> {
    let key_id = format!("ed25519:{device_id}");
    let signature = object
        .get("signatures")
        .and_then(|signatures| signatures.get(user_id.as_str()))
        .and_then(|by_user| by_user.get(&key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| MatrixError::invalid_param(format!("{what} is not signed by {key_id}")))?;
    let invalid =
        || Error::from(MatrixError::invalid_param(format!("{what} has an invalid signature by {key_id}")));
    let public_key = Base64::<Standard>::parse(public_key)
        .map_err(|_| MatrixError::invalid_param(format!("The device key {key_id} is not valid base64")))?;
    let signature = Base64::<Standard>::parse(signature).map_err(|_| invalid())?;
    let signed = to_canonical_json_string_for_signing(&canonical(object, what)?).map_err(|_| invalid())?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        signature.as_bytes(),
        signed.as_bytes(),
    )
    .map_err(|_| invalid())
}

/// The device's ed25519 and curve25519 keys (`keys` of a device keys object).
fn identity_keys(device_keys: &Map<String, Value>, device_id: &str) -> (Option<String>, Option<String>) {
    let keys = device_keys.get("keys");
    let key = |algorithm: &str| {
        keys.and_then(|keys| keys.get(format!("{algorithm}:{device_id}")))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    (key("ed25519"), key("curve25519"))
}

fn parse_stored(json: &str) -> Result<Value> {
    serde_json::from_str(json).map_err(|error| Error::internal_with("stored key is not JSON", error))
}

impl Services {
    /// `/keys/upload`: stores the device's identity keys, one-time keys and fallback keys;
    /// returns how many one-time keys the device has left, by algorithm.
    pub async fn upload_keys(
        &self,
        requester: &Requester,
        upload: KeysUpload,
    ) -> Result<BTreeMap<String, i64>> {
        let device_id = requester.device_id.as_deref().ok_or_else(|| {
            MatrixError::invalid_param("Uploading keys needs an access token with a device")
        })?;
        let user_id = requester.user_id.as_str();

        // Everything is checked before anything is written: a refused upload stores nothing.
        let (mut ed25519_key, device_keys_to_store) = match &upload.device_keys {
            Some(device_keys) => {
                let (ed25519, to_store) =
                    self.check_device_keys(&requester.user_id, device_id, device_keys).await?;
                (Some(ed25519), to_store)
            }
            None => (None, None),
        };
        let has_keys = !(upload.one_time_keys.is_empty() && upload.fallback_keys.is_empty());
        if ed25519_key.is_none()
            && has_keys
            && let Some(stored) = self.store.device_keys(user_id, device_id).await?
            && let Value::Object(stored) = parse_stored(&stored)?
        {
            ed25519_key = identity_keys(&stored, device_id).0;
        }
        let check_key = |full_id: &str, key: &Value| -> Result<OneTimeKeyRecord> {
            let (algorithm, key_id) = split_key_id(full_id)?;
            match (algorithm, key) {
                ("curve25519", Value::String(_)) => {}
                ("curve25519", _) => {
                    return Err(MatrixError::bad_json(format!("The key {full_id} must be a string")).into());
                }
                ("signed_curve25519", Value::Object(object)) => {
                    if !object.get("key").is_some_and(Value::is_string) {
                        return Err(
                            MatrixError::bad_json(format!("The key {full_id} has no string `key`")).into()
                        );
                    }
                    if let Some(public_key) = &ed25519_key {
                        check_device_signature(object, &requester.user_id, device_id, public_key, full_id)?;
                    }
                }
                ("signed_curve25519", _) => {
                    return Err(MatrixError::bad_json(format!(
                        "The key {full_id} must be a signed key object"
                    ))
                    .into());
                }
                // Other algorithms are kept as they are, as Synapse does.
                _ => {}
            }
            Ok(OneTimeKeyRecord {
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                key_json: key.to_string(),
            })
        };

        let mut one_time_keys = Vec::with_capacity(upload.one_time_keys.len());
        for (full_id, key) in &upload.one_time_keys {
            one_time_keys.push(check_key(full_id, key)?);
        }
        let mut fallback_keys = Vec::with_capacity(upload.fallback_keys.len());
        for (full_id, key) in &upload.fallback_keys {
            fallback_keys.push(check_key(full_id, key)?);
        }

        // A one-time key ID already in use must come with the same key (a client retrying an
        // upload); another key under that ID is refused, as Synapse does. One transaction
        // writes everything; if a concurrent upload stored one of the new IDs meanwhile, the
        // write fails as a whole and the IDs are checked once more.
        let key_ids: Vec<String> = one_time_keys.iter().map(|key| key.key_id.clone()).collect();
        for attempt in 0..2 {
            let existing = self.store.one_time_keys_by_id(user_id, device_id, &key_ids).await?;
            let mut new_keys = Vec::with_capacity(one_time_keys.len());
            for key in &one_time_keys {
                let stored =
                    existing.iter().find(|old| old.algorithm == key.algorithm && old.key_id == key.key_id);
                match stored {
                    None => new_keys.push(key.clone()),
                    Some(old) if parse_stored(&old.key_json)? == parse_stored(&key.key_json)? => {}
                    Some(_) => {
                        return Err(MatrixError::invalid_param(format!(
                            "One time key {}:{} already exists with different content",
                            key.algorithm, key.key_id
                        ))
                        .into());
                    }
                }
            }
            // New or changed identity keys are a device-list change.
            let position = device_keys_to_store.as_ref().map(|_| self.streams.device_lists.allocate());
            let upload = KeysUploadRecord {
                device_keys: device_keys_to_store
                    .as_deref()
                    .zip(position.as_ref().map(|position| position.value())),
                one_time_keys: &new_keys,
                fallback_keys: &fallback_keys,
            };
            match self.store.upload_keys(user_id, device_id, upload).await {
                Err(error) if error.is_unique_violation() && attempt == 0 => continue,
                result => result?,
            }
            if let Some(position) = position {
                self.publish_device_list_change(position, &requester.user_id).await;
            }
            break;
        }
        self.one_time_key_counts(user_id, device_id).await
    }

    /// The device's one-time keys left, by algorithm (`/keys/upload`'s `one_time_key_counts`
    /// and sync's `device_one_time_keys_count`). `signed_curve25519` is always present, as
    /// Synapse does: clients read a missing count as "unknown" and upload nothing.
    pub(crate) async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<BTreeMap<String, i64>> {
        let mut counts = self.store.count_one_time_keys(user_id, device_id).await?;
        counts.entry("signed_curve25519".to_owned()).or_insert(0);
        Ok(counts)
    }

    /// The algorithms of the device's fallback keys not handed out yet (sync's
    /// `device_unused_fallback_key_types`).
    pub(crate) async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>> {
        Ok(self.store.unused_fallback_key_algorithms(user_id, device_id).await?)
    }

    /// Checks a device's uploaded identity keys; returns its ed25519 key and, unless the same
    /// keys are already stored, the JSON to store.
    async fn check_device_keys(
        &self,
        user_id: &UserId,
        device_id: &str,
        device_keys: &Map<String, Value>,
    ) -> Result<(String, Option<String>)> {
        let parsed: ruma::encryption::DeviceKeys = serde_json::from_value(Value::Object(device_keys.clone()))
            .map_err(|error| MatrixError::bad_json(format!("Invalid device_keys: {error}")))?;
        if parsed.user_id != user_id {
            return Err(
                MatrixError::invalid_param("user_id in device_keys does not match the requester").into()
            );
        }
        if parsed.device_id.as_str() != device_id {
            return Err(MatrixError::invalid_param(
                "device_id in device_keys does not match the requester's device",
            )
            .into());
        }
        let (Some(ed25519), curve25519) = identity_keys(device_keys, device_id) else {
            return Err(
                MatrixError::invalid_param(format!("device_keys has no key ed25519:{device_id}")).into()
            );
        };
        check_device_signature(device_keys, user_id, device_id, &ed25519, "device_keys")?;

        // What servers add is not part of the device's keys.
        let mut to_store = device_keys.clone();
        to_store.remove("unsigned");
        if let Some(stored) = self.store.device_keys(user_id.as_str(), device_id).await? {
            let Value::Object(stored) = parse_stored(&stored)? else {
                return Err(Error::internal("stored device keys are not an object"));
            };
            if stored == to_store {
                return Ok((ed25519, None));
            }
            // A device's identity keys never change: new keys need a new device.
            if identity_keys(&stored, device_id) != (Some(ed25519.clone()), curve25519) {
                return Err(MatrixError::invalid_param(format!(
                    "Device {device_id} already has different identity keys; use a new device"
                ))
                .into());
            }
        }
        Ok((ed25519, Some(Value::Object(to_store).to_string())))
    }

    /// `/keys/query`: the identity keys of the users' devices (all of them for an empty list)
    /// and their cross-signing keys, as `requester` may see them.
    /// Remote users' keys are asked of their servers (or read from the tracked device lists)
    /// within `timeout`; servers that could not answer are in `failures`.
    pub async fn query_keys(
        &self,
        requester: &UserId,
        requested: &BTreeMap<OwnedUserId, Vec<String>>,
        timeout: Option<std::time::Duration>,
    ) -> Result<KeysQueryResult> {
        let (local, remote): (BTreeMap<_, _>, BTreeMap<_, _>) = requested
            .iter()
            .map(|(user_id, devices)| (user_id.clone(), devices.clone()))
            .partition(|(user_id, _)| user_id.server_name().as_str() == self.server_name());
        let mut result = self.query_local_keys(Some(requester), &local).await?;
        if !remote.is_empty() {
            let timeout = timeout.unwrap_or(crate::federation::remote_keys::DEFAULT_TIMEOUT);
            self.query_remote_keys(Some(requester), &remote, timeout, &mut result).await?;
        }
        Ok(result)
    }

    /// `/keys/claim` for a client: local devices here, remote ones from their servers within
    /// `timeout` (servers that could not answer are in `failures`).
    pub async fn claim_keys_for_client(
        &self,
        claims: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
        timeout: Option<std::time::Duration>,
    ) -> Result<KeysClaimResult> {
        let (local, remote): (BTreeMap<_, _>, BTreeMap<_, _>) = claims
            .iter()
            .map(|(user_id, devices)| (user_id.clone(), devices.clone()))
            .partition(|(user_id, _)| user_id.server_name().as_str() == self.server_name());
        let mut result = self.claim_keys(&local).await?;
        if !remote.is_empty() {
            let timeout = timeout.unwrap_or(crate::federation::remote_keys::DEFAULT_TIMEOUT);
            self.claim_remote_keys(&remote, timeout, &mut result).await;
        }
        Ok(result)
    }

    /// The keys of local users as `requester` may see them; `None` for another server, which
    /// sees no user-signing key and only the signatures the users made themselves.
    pub(crate) async fn query_local_keys(
        &self,
        requester: Option<&UserId>,
        requested: &BTreeMap<OwnedUserId, Vec<String>>,
    ) -> Result<KeysQueryResult> {
        let mut result = KeysQueryResult::default();
        // Local users by ID, with the devices asked for (none: all of them).
        let mut local: HashMap<&str, (&OwnedUserId, &[String])> = HashMap::new();
        for (user_id, device_ids) in requested {
            if user_id.server_name().as_str() != self.server_name() {
                result.failures.insert(user_id.server_name().to_string());
                continue;
            }
            local.insert(user_id.as_str(), (user_id, device_ids.as_slice()));
            result.device_keys.insert(user_id.clone(), BTreeMap::new());
        }
        // Three reads for all the users: their devices' keys, their cross-signing keys, and
        // the signatures of both by themselves or by the requester.
        let user_ids: Vec<&str> = local.keys().copied().collect();
        let records = self.store.device_keys_of_users(&user_ids).await?;
        // No user ID is empty: without a requester, only the owners' own signatures match.
        let signer = requester.map_or("", |requester| requester.as_str());
        let signatures = self.store.signatures_of_users_keys(&user_ids, signer).await?;
        let mut signatures_of: HashMap<(&str, &str), Vec<&CrossSigningSignatureRecord>> = HashMap::new();
        for signature in &signatures {
            signatures_of
                .entry((signature.target_user_id.as_str(), signature.target_key_id.as_str()))
                .or_default()
                .push(signature);
        }
        for (user_id, record) in records {
            let Some((owned_user_id, wanted)) = local.get(user_id.as_str()) else { continue };
            if !wanted.is_empty() && !wanted.contains(&record.device_id) {
                continue;
            }
            let Value::Object(mut keys) = parse_stored(&record.key_json)? else {
                return Err(Error::internal("stored device keys are not an object"));
            };
            // A device is signed by its owner's self-signing key only.
            let by_owner = signatures_of
                .get(&(user_id.as_str(), record.device_id.as_str()))
                .into_iter()
                .flatten()
                .copied()
                .filter(|signature| signature.signer_user_id == user_id);
            merge_signatures(&mut keys, by_owner);
            if let Some(devices) = result.device_keys.get_mut(*owned_user_id) {
                devices
                    .insert(record.device_id, QueriedDeviceKeys { keys, display_name: record.display_name });
            }
        }
        result.cross_signing = self.query_cross_signing_keys(requester, &user_ids, &signatures_of).await?;
        Ok(result)
    }

    /// `/keys/claim`: for each device, its oldest one-time key of the algorithm, or its
    /// fallback key when none is left. Each one-time key is handed out once.
    pub async fn claim_keys(
        &self,
        claims: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<KeysClaimResult> {
        let mut result = KeysClaimResult::default();
        for (user_id, devices) in claims {
            if user_id.server_name().as_str() != self.server_name() {
                result.failures.insert(user_id.server_name().to_string());
                continue;
            }
            for (device_id, algorithm) in devices {
                let claimed =
                    match self.store.claim_one_time_key(user_id.as_str(), device_id, algorithm).await? {
                        Some(key) => Some(key),
                        None => self.store.claim_fallback_key(user_id.as_str(), device_id, algorithm).await?,
                    };
                if let Some(key) = claimed {
                    result
                        .one_time_keys
                        .entry(user_id.clone())
                        .or_default()
                        .entry(device_id.clone())
                        .or_default()
                        .insert(format!("{}:{}", key.algorithm, key.key_id), parse_stored(&key.key_json)?);
                }
            }
        }
        Ok(result)
    }
}
