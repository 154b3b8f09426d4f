//! Cross-signing (issue 12): a user's master, self-signing and user-signing keys
//! (`/keys/device_signing/upload`), the signatures made with them (`/keys/signatures/upload`),
//! and both as `/keys/query` shows them.
//!
//! # Layout
//!
//! - Keys: each checked (owner, usage, one ed25519 key whose ID is its public key), the
//!   self-signing and user-signing keys against the master key (the one uploaded with them, or
//!   the stored one). Replacing keys needs user-interactive auth once a master key exists; a
//!   first upload and a repeated identical upload do not (MSC3967, as Synapse).
//! - Signatures: of the user's own devices by the self-signing key, of the user's master key by
//!   the user's devices, of other users' master keys by the user-signing key. Each signed
//!   object must be the stored key (but for `signatures` and `unsigned`); a signature that
//!   does not verify is a failure of its own, the others are stored.
//! - Query: signatures are merged into the keys they sign when read. Those made by a key's
//!   owner are shown to everyone; those made by another user (with the user-signing key) only to
//!   that user, as Synapse.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use myelin_core::{ErrCode, ErrorKind, MatrixError};
use myelin_store::{CrossSigningKeyRecord, CrossSigningSignatureRecord};
use ruma::serde::{Base64, base64::Standard};
use ruma::signatures::{
    SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes,
};
use ruma::{CanonicalJsonValue, OwnedUserId, UserId};
use serde_json::{Map, Value};

use crate::auth::Requester;
use crate::{Error, Result, Services};

pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";

/// What `/keys/device_signing/upload` sends: each key as the client sent it.
#[derive(Debug, Default)]
pub struct CrossSigningUpload {
    pub master_key: Option<Map<String, Value>>,
    pub self_signing_key: Option<Map<String, Value>>,
    pub user_signing_key: Option<Map<String, Value>>,
}

/// What `/keys/signatures/upload` sends: user to key ID (a device ID or a cross-signing public
/// key) to the signed object.
pub type SignedKeys = BTreeMap<OwnedUserId, BTreeMap<String, Map<String, Value>>>;

/// `/keys/signatures/upload`'s signatures that were not stored: user to key ID to why.
pub type SignatureFailures = BTreeMap<OwnedUserId, BTreeMap<String, MatrixError>>;

/// Cross-signing keys as `/keys/query` answers them, signatures merged in.
#[derive(Debug, Default)]
pub struct QueriedCrossSigningKeys {
    pub master_keys: BTreeMap<OwnedUserId, Map<String, Value>>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Map<String, Value>>,
    /// The requester's own only.
    pub user_signing_keys: BTreeMap<OwnedUserId, Map<String, Value>>,
}

/// A stored (or checked) cross-signing key.
#[derive(Clone, Debug)]
struct SigningKey {
    key_type: &'static str,
    public_key: String,
    json: Map<String, Value>,
}

impl SigningKey {
    /// Its ID as a signer: `ed25519:<public key>`.
    fn key_id(&self) -> String {
        format!("ed25519:{}", self.public_key)
    }
}

/// A user's stored cross-signing keys.
#[derive(Debug, Default)]
struct StoredKeys {
    master: Option<SigningKey>,
    self_signing: Option<SigningKey>,
    user_signing: Option<SigningKey>,
}

impl StoredKeys {
    fn get(&self, key_type: &str) -> Option<&SigningKey> {
        match key_type {
            MASTER => self.master.as_ref(),
            SELF_SIGNING => self.self_signing.as_ref(),
            USER_SIGNING => self.user_signing.as_ref(),
            _ => None,
        }
    }
}

fn invalid_signature(message: impl Into<String>) -> Error {
    MatrixError::new(ErrCode::InvalidSignature, message).into()
}

/// The one `ed25519:<public key>` entry of a cross-signing key's `keys`.
fn public_key_of(key: &Map<String, Value>) -> Option<String> {
    let keys = key.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (key_id, public_key) = keys.iter().next()?;
    let public_key = public_key.as_str()?;
    let decoded = Base64::<Standard>::parse(public_key).ok()?;
    (key_id.strip_prefix("ed25519:") == Some(public_key) && decoded.as_bytes().len() == 32)
        .then(|| public_key.to_owned())
}

/// Checks an uploaded cross-signing key's owner, usage and key (as Synapse: `M_INVALID_PARAM`).
fn check_key(key: &Map<String, Value>, user_id: &UserId, key_type: &'static str) -> Result<SigningKey> {
    if key.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()) {
        return Err(MatrixError::invalid_param(format!(
            "Invalid {key_type} key: its user_id is not {user_id}"
        ))
        .into());
    }
    let usage = key.get("usage").and_then(Value::as_array);
    if !usage.is_some_and(|usage| usage.iter().any(|usage| usage.as_str() == Some(key_type))) {
        return Err(MatrixError::invalid_param(format!(
            "Invalid {key_type} key: its usage lacks {key_type:?}"
        ))
        .into());
    }
    let public_key = public_key_of(key).ok_or_else(|| {
        MatrixError::invalid_param(format!(
            "Invalid {key_type} key: `keys` must hold exactly one ed25519:<public key> entry whose \
             value is that unpadded base64 public key"
        ))
    })?;
    // The rest of the shape (`signatures` a map of users to key IDs to strings), as ruma reads it.
    serde_json::from_value::<ruma::encryption::CrossSigningKey>(Value::Object(key.clone()))
        .map_err(|error| MatrixError::bad_json(format!("Invalid {key_type} key: {error}")))?;
    // Signatures are checked over the canonical form, which needs integers in range.
    canonical_json(key, key_type)?;
    Ok(SigningKey { key_type, public_key, json: key.clone() })
}

fn canonical_json(object: &Map<String, Value>, what: &str) -> Result<String> {
    match CanonicalJsonValue::try_from(Value::Object(object.clone())) {
        Ok(CanonicalJsonValue::Object(object)) => to_canonical_json_string_for_signing(&object)
            .map_err(|_| MatrixError::bad_json(format!("{what} cannot be made canonical JSON")).into()),
        _ => {
            Err(MatrixError::bad_json(format!("{what} is not canonical JSON (integers out of range?)"))
                .into())
        }
    }
}

/// Checks `object`'s signature by `signer`'s key `key_id` whose public key is `public_key`;
/// returns the signature.
fn verify_signature(
    object: &Map<String, Value>,
    signer: &UserId,
    key_id: &str,
    public_key: &str,
    what: &str,
) -> Result<String> {
    let signature = object
        .get("signatures")
        .and_then(|signatures| signatures.get(signer.as_str()))
        .and_then(|by_user| by_user.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_signature(format!("{what} is not signed by {signer}'s key {key_id}")))?;
    let invalid = || invalid_signature(format!("Invalid signature on {what} by {key_id}"));
    let public_key = Base64::<Standard>::parse(public_key).map_err(|_| invalid())?;
    let decoded = Base64::<Standard>::parse(signature).map_err(|_| invalid())?;
    let signed = canonical_json(object, what)?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key.as_bytes(),
        decoded.as_bytes(),
        signed.as_bytes(),
    )
    .map_err(|_| invalid())?;
    Ok(signature.to_owned())
}

/// The object without what signing leaves out.
fn without_signatures(object: &Map<String, Value>) -> Map<String, Value> {
    let mut object = object.clone();
    object.remove("signatures");
    object.remove("unsigned");
    object
}

/// Checks that a signed object is the stored key it claims to sign (but for its signatures).
fn check_same_key(signed: &Map<String, Value>, stored: &Map<String, Value>) -> Result<()> {
    if without_signatures(signed) == without_signatures(stored) {
        Ok(())
    } else {
        Err(MatrixError::invalid_param("The signed object does not match the stored key").into())
    }
}

/// A stored key row as a [`SigningKey`]; `None` for an unknown key type.
fn signing_key_from(record: CrossSigningKeyRecord) -> Result<Option<SigningKey>> {
    let key_type = match record.key_type.as_str() {
        MASTER => MASTER,
        SELF_SIGNING => SELF_SIGNING,
        USER_SIGNING => USER_SIGNING,
        _ => return Ok(None),
    };
    let json = parse_object(&record.key_json, "cross-signing key")?;
    Ok(Some(SigningKey { key_type, public_key: record.public_key, json }))
}

/// Adds stored signatures to the object they sign.
pub(crate) fn merge_signatures<'a>(
    object: &mut Map<String, Value>,
    signatures: impl IntoIterator<Item = &'a CrossSigningSignatureRecord>,
) {
    for record in signatures {
        let all = object.entry("signatures").or_insert_with(|| Value::Object(Map::new()));
        if !all.is_object() {
            *all = Value::Object(Map::new());
        }
        let by_user = all
            .as_object_mut()
            .map(|all| all.entry(record.signer_user_id.clone()).or_insert_with(|| Value::Object(Map::new())));
        if let Some(by_user) = by_user {
            if !by_user.is_object() {
                *by_user = Value::Object(Map::new());
            }
            if let Some(by_user) = by_user.as_object_mut() {
                by_user.insert(record.signer_key_id.clone(), Value::String(record.signature.clone()));
            }
        }
    }
}

fn parse_object(json: &str, what: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str(json) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(Error::internal(format!("stored {what} is not a JSON object"))),
    }
}

impl Services {
    /// The user's stored cross-signing keys.
    async fn stored_cross_signing_keys(&self, user_id: &UserId) -> Result<StoredKeys> {
        let mut keys = StoredKeys::default();
        for record in self.store.cross_signing_keys(user_id.as_str()).await? {
            let Some(key) = signing_key_from(record)? else { continue };
            let slot = match key.key_type {
                MASTER => &mut keys.master,
                SELF_SIGNING => &mut keys.self_signing,
                _ => &mut keys.user_signing,
            };
            *slot = Some(key);
        }
        Ok(keys)
    }

    /// `/keys/device_signing/upload`: checks and stores the requester's cross-signing keys.
    pub async fn upload_cross_signing_keys(
        &self,
        requester: &Requester,
        upload: CrossSigningUpload,
        auth: Option<&Value>,
    ) -> Result<()> {
        let user_id = &requester.user_id;
        let stored = self.stored_cross_signing_keys(user_id).await?;
        let uploaded = [
            (MASTER, &upload.master_key),
            (SELF_SIGNING, &upload.self_signing_key),
            (USER_SIGNING, &upload.user_signing_key),
        ];
        // Sending the stored keys again changes nothing and needs no authentication (MSC3967).
        let changes = uploaded.iter().any(|(key_type, key)| {
            key.as_ref().is_some_and(|key| stored.get(key_type).map(|stored| &stored.json) != Some(key))
        });
        if !changes {
            return Ok(());
        }

        let master = match &upload.master_key {
            Some(key) => check_key(key, user_id, MASTER)?,
            None => {
                stored.master.clone().ok_or_else(|| MatrixError::missing_param("No master key available"))?
            }
        };
        let mut to_store = Vec::new();
        if upload.master_key.is_some() {
            to_store.push(master.clone());
        }
        for (key_type, key) in
            [(SELF_SIGNING, &upload.self_signing_key), (USER_SIGNING, &upload.user_signing_key)]
        {
            if let Some(key) = key {
                let key = check_key(key, user_id, key_type)?;
                verify_signature(
                    &key.json,
                    user_id,
                    &master.key_id(),
                    &master.public_key,
                    &format!("{key_type} key"),
                )?;
                to_store.push(key);
            }
        }
        // A signature names its key by ID: a device and a cross-signing key must not share one.
        for key in &to_store {
            if self.store.get_device(user_id.as_str(), &key.public_key).await?.is_some() {
                return Err(MatrixError::forbidden(format!(
                    "Key ID in use: the {} key's public key is one of your device IDs",
                    key.key_type
                ))
                .into());
            }
        }

        // Replacing keys is confirming one's identity; setting them up the first time is not.
        let expected_master = stored.master.as_ref().map(|master| master.public_key.as_str());
        if expected_master.is_some() {
            self.reauthenticate(requester, "upload_cross_signing_keys", auth).await?;
        }
        let records: Vec<CrossSigningKeyRecord> = to_store
            .iter()
            .map(|key| CrossSigningKeyRecord {
                key_type: key.key_type.to_owned(),
                public_key: key.public_key.clone(),
                key_json: Value::Object(key.json.clone()).to_string(),
            })
            .collect();
        let position = self.streams.device_lists.allocate();
        if !self
            .store
            .set_cross_signing_keys(user_id.as_str(), expected_master, &records, position.value())
            .await?
        {
            // Another request set up or replaced the master key since this one was decided on.
            return Err(MatrixError::unknown(
                "The cross-signing keys changed during this request; try again",
            )
            .with_kind(ErrorKind::Conflict)
            .into());
        }
        self.publish_device_list_change(position, user_id).await;
        Ok(())
    }

    /// `/keys/signatures/upload`: checks each signature against its signing key and the key it
    /// signs, stores the good ones and returns why the others were refused.
    pub async fn upload_cross_signing_signatures(
        &self,
        requester: &Requester,
        signed: SignedKeys,
    ) -> Result<SignatureFailures> {
        let user_id = &requester.user_id;
        let mut failures = SignatureFailures::new();
        let mut to_store = Vec::new();
        let own = self.stored_cross_signing_keys(user_id).await?;
        for (target_user, objects) in &signed {
            for (key_id, object) in objects {
                let checked = if target_user == user_id {
                    self.check_own_signature(user_id, &own, key_id, object).await
                } else {
                    self.check_other_user_signature(user_id, &own, target_user, key_id, object).await
                };
                match checked {
                    Ok(records) => to_store.extend(records),
                    Err(Error::Matrix(error)) => {
                        failures.entry(target_user.clone()).or_default().insert(key_id.clone(), error);
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        if !to_store.is_empty() {
            // What changed: a device of the requester's signed by their self-signing key is that
            // device (other servers get its keys, signature included, in an
            // `m.device_list_update`, as from Synapse); a signed master key is its user as a
            // whole (the requester's own goes out in an `m.signing_key_update`; another user's,
            // signed by the requester, goes to no other server, as in Synapse).
            let own_master = own.master.as_ref().map(|master| master.public_key.as_str());
            let changes: BTreeSet<(&str, &str)> = to_store
                .iter()
                .map(|signature| {
                    let own_device = signature.target_user_id == user_id.as_str()
                        && Some(signature.target_key_id.as_str()) != own_master;
                    let device = if own_device { signature.target_key_id.as_str() } else { "" };
                    (signature.target_user_id.as_str(), device)
                })
                .collect();
            let changes: Vec<(&str, &str)> = changes.into_iter().collect();
            let position = self.streams.device_lists.allocate();
            self.store.add_cross_signing_signatures(&to_store, &changes, position.value()).await?;
            // This change's own position (see `publish_device_list_change`).
            let stream_id = position.value();
            position.finish();
            // The signed users' devices are fetched again by everyone sharing a room with them,
            // the signer included (Synapse tells only the signer about signatures of other
            // users' keys; here the others re-fetch and see no signature that is not theirs).
            let targets: BTreeSet<&str> = changes.iter().map(|(target, _)| *target).collect();
            for target in targets {
                if let Ok(target) = UserId::parse(target) {
                    self.notify_device_list_change(&target).await;
                }
            }
            self.wake_appservices();
            self.queue_device_list_edus(user_id, stream_id).await;
        }
        Ok(failures)
    }

    /// A signature of one of the user's own keys: a device by the self-signing key, or the
    /// master key by devices.
    async fn check_own_signature(
        &self,
        user_id: &UserId,
        own: &StoredKeys,
        key_id: &str,
        object: &Map<String, Value>,
    ) -> Result<Vec<CrossSigningSignatureRecord>> {
        if let Some(master) = own.master.as_ref().filter(|master| master.public_key == key_id) {
            return self.check_master_key_signatures(user_id, master, object).await;
        }
        let stored_device = self
            .store
            .device_keys(user_id.as_str(), key_id)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("Unknown device {key_id}")))?;
        let stored_device = parse_object(&stored_device, "device keys")?;
        let self_signing = own
            .self_signing
            .as_ref()
            .ok_or_else(|| MatrixError::not_found("No self-signing key is uploaded"))?;
        check_same_key(object, &stored_device)?;
        let signer_key_id = self_signing.key_id();
        let signature = verify_signature(
            object,
            user_id,
            &signer_key_id,
            &self_signing.public_key,
            &format!("device {key_id}"),
        )?;
        Ok(vec![record(user_id, key_id, user_id, &signer_key_id, signature)])
    }

    /// The user's devices' signatures of the user's master key: each by a device's ed25519
    /// key, and valid.
    async fn check_master_key_signatures(
        &self,
        user_id: &UserId,
        master: &SigningKey,
        object: &Map<String, Value>,
    ) -> Result<Vec<CrossSigningSignatureRecord>> {
        check_same_key(object, &master.json)?;
        let signatures = object
            .get("signatures")
            .and_then(|signatures| signatures.get(user_id.as_str()))
            .and_then(Value::as_object)
            .ok_or_else(|| invalid_signature("The master key carries no signature of yours"))?;
        let mut records = Vec::new();
        for signer_key_id in signatures.keys() {
            // The master key's own signature is part of the key as uploaded.
            if *signer_key_id == master.key_id() {
                continue;
            }
            let device_id = signer_key_id
                .strip_prefix("ed25519:")
                .ok_or_else(|| invalid_signature(format!("{signer_key_id} is not an ed25519 device key")))?;
            let device = match self.store.device_keys(user_id.as_str(), device_id).await? {
                Some(device) => parse_object(&device, "device keys")?,
                None => return Err(invalid_signature(format!("Signed by an unknown device {device_id}"))),
            };
            let public_key = device
                .get("keys")
                .and_then(|keys| keys.get(signer_key_id))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid_signature(format!("Device {device_id} has no key {signer_key_id}")))?;
            let signature = verify_signature(object, user_id, signer_key_id, public_key, "master key")?;
            records.push(record(user_id, &master.public_key, user_id, signer_key_id, signature));
        }
        if records.is_empty() {
            return Err(invalid_signature("The master key carries no signature by one of your devices"));
        }
        Ok(records)
    }

    /// Another user's master key signed by the requester's user-signing key.
    async fn check_other_user_signature(
        &self,
        user_id: &UserId,
        own: &StoredKeys,
        target_user: &UserId,
        key_id: &str,
        object: &Map<String, Value>,
    ) -> Result<Vec<CrossSigningSignatureRecord>> {
        let user_signing = own
            .user_signing
            .as_ref()
            .ok_or_else(|| MatrixError::not_found("No user-signing key is uploaded"))?;
        // A remote user's master key as their server gives it (or as tracked here).
        let master = if target_user.server_name().as_str() == self.server_name() {
            self.stored_cross_signing_keys(target_user).await?.master
        } else {
            match self.remote_master_key(target_user).await? {
                Some(key) => Some(check_key(&key, target_user, MASTER)?),
                None => None,
            }
        };
        let master =
            master.ok_or_else(|| MatrixError::not_found(format!("No master key known for {target_user}")))?;
        if master.public_key != key_id {
            return Err(MatrixError::not_found(format!(
                "{key_id} is not {target_user}'s master key: only master keys of other users can be signed"
            ))
            .into());
        }
        check_same_key(object, &master.json)?;
        let signer_key_id = user_signing.key_id();
        let signature =
            verify_signature(object, user_id, &signer_key_id, &user_signing.public_key, "master key")?;
        Ok(vec![record(target_user, key_id, user_id, &signer_key_id, signature)])
    }

    /// The cross-signing keys of `user_ids` (local users) as `/keys/query` shows them to
    /// `requester`: master and self-signing keys of everyone, the user-signing key of the
    /// requester only, each with the signatures of it by its owner or by the requester
    /// (`signatures_of`, by target user and key ID).
    pub(crate) async fn query_cross_signing_keys(
        &self,
        requester: Option<&UserId>,
        user_ids: &[&str],
        signatures_of: &HashMap<(&str, &str), Vec<&CrossSigningSignatureRecord>>,
    ) -> Result<QueriedCrossSigningKeys> {
        let mut result = QueriedCrossSigningKeys::default();
        for (user_id, record) in self.store.cross_signing_keys_of_users(user_ids).await? {
            let Some(key) = signing_key_from(record)? else { continue };
            let by_requester = |signer: &str| requester.is_some_and(|requester| requester.as_str() == signer);
            if key.key_type == USER_SIGNING && !by_requester(&user_id) {
                continue;
            }
            let Ok(owned_user_id) = OwnedUserId::try_from(user_id.as_str()) else {
                return Err(Error::internal("stored cross-signing key of an invalid user ID"));
            };
            let mut json = key.json;
            let signatures = signatures_of
                .get(&(user_id.as_str(), key.public_key.as_str()))
                .into_iter()
                .flatten()
                .copied()
                .filter(|s| s.signer_user_id == user_id || by_requester(&s.signer_user_id));
            merge_signatures(&mut json, signatures);
            let map = match key.key_type {
                MASTER => &mut result.master_keys,
                SELF_SIGNING => &mut result.self_signing_keys,
                _ => &mut result.user_signing_keys,
            };
            map.insert(owned_user_id, json);
        }
        Ok(result)
    }
}

/// Adds `requester`'s stored signatures of remote users' master keys (uploaded here, never sent
/// to their servers) to `master_keys`, as `/keys/query` shows them to the requester; a signature
/// of a key that is no longer the user's master key is left out.
impl Services {
    pub(crate) async fn add_signatures_of_remote_master_keys(
        &self,
        requester: &UserId,
        master_keys: &mut BTreeMap<OwnedUserId, Map<String, Value>>,
    ) -> Result<()> {
        let remote: Vec<&str> = master_keys
            .keys()
            .filter(|user_id| user_id.server_name().as_str() != self.server_name())
            .map(|user_id| user_id.as_str())
            .collect();
        if remote.is_empty() {
            return Ok(());
        }
        let signatures = self.store.signatures_of_users_keys(&remote, requester.as_str()).await?;
        for (user_id, key) in master_keys.iter_mut() {
            let Some(public_key) = public_key_of(key) else { continue };
            let by_requester = signatures.iter().filter(|signature| {
                signature.target_user_id == user_id.as_str()
                    && signature.target_key_id == public_key
                    && signature.signer_user_id == requester.as_str()
            });
            merge_signatures(key, by_requester);
        }
        Ok(())
    }
}

/// The verified signature `signature` by `signer`'s key `signer_key_id` of `target_user`'s key
/// `target_key_id`.
fn record(
    target_user: &UserId,
    target_key_id: &str,
    signer: &UserId,
    signer_key_id: &str,
    signature: String,
) -> CrossSigningSignatureRecord {
    CrossSigningSignatureRecord {
        target_user_id: target_user.to_string(),
        target_key_id: target_key_id.to_owned(),
        signer_user_id: signer.to_string(),
        signer_key_id: signer_key_id.to_owned(),
        signature,
    }
}
