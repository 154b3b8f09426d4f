//! Remote servers' signing keys: fetched, checked, cached in memory and in the store.
//!
//! A key document (`/_matrix/key/v2/server`) is accepted when its `server_name` is the server
//! asked for and it is signed by that server with a key of its own `verify_keys`; one that came
//! through a notary (`trusted_key_servers`, as Synapse configures them) must also be signed by
//! the notary with one of the `verify_keys` configured for it (unless `accept_keys_insecurely`).
//! A current key is trusted until the document's `valid_until_ts`, at most 7 days after it was
//! fetched (what the spec asks for room versions 5 and later); a key listed in
//! `old_verify_keys` verifies what was signed before its `expired_ts`. Keys are kept in
//! memory in front of the store; concurrent fetches for one server make one request.
//!
//! As in Synapse, notaries are asked first, then the server itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use myelin_config::TrustedKeyServer;
use myelin_store::{ServerKeyDocument, ServerVerifyKeyRecord, Store, StoreError};
use parking_lot::Mutex;
use ruma::serde::Base64;
use ruma::signatures::PublicKeyMap;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, ServerName};
use serde_json::{Value, json};

use crate::client::{FederationClient, FederationError};

/// The longest a fetched key is trusted for current use.
pub const MAX_KEY_VALIDITY_MS: i64 = 7 * 24 * 3600 * 1000;

/// A key lookup failed for a reason other than "no such key".
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One verify key of a remote server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyKey {
    /// Unpadded base64.
    pub public_key: String,
    pub valid_until_ts: i64,
    pub expired_ts: Option<i64>,
}

impl VerifyKey {
    /// Whether the key verifies something signed (or a request made) at `ts`.
    pub fn usable_at(&self, ts: i64) -> bool {
        ts <= self.expired_ts.unwrap_or(self.valid_until_ts)
    }
}

/// What is known of a remote server's keys.
#[derive(Clone, Debug, Default)]
pub struct RemoteServerKeys {
    /// The latest accepted document, as signed by its server.
    pub document: Option<CanonicalJsonObject>,
    pub document_valid_until_ts: i64,
    pub keys: BTreeMap<String, VerifyKey>,
}

struct CacheEntry {
    keys: Arc<RemoteServerKeys>,
    /// When these keys came from the network (`None`: read from the store).
    fetched: Option<Instant>,
}

/// Fetches and caches remote servers' keys.
pub struct KeyRing {
    client: Arc<FederationClient>,
    store: Store,
    notaries: Vec<TrustedKeyServer>,
    cache: Mutex<HashMap<String, CacheEntry>>,
    fetch_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    fetches: AtomicU64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Verifies that `object` carries a valid signature of `entity` by one of `keys` (other
/// entities' signatures are not looked at).
pub fn verify_signed_by(
    object: &CanonicalJsonObject,
    entity: &str,
    keys: BTreeMap<String, Base64>,
) -> Result<(), String> {
    let mut only_entity = object.clone();
    let signatures = object
        .get("signatures")
        .and_then(|s| match s {
            CanonicalJsonValue::Object(map) => map.get(entity).cloned(),
            _ => None,
        })
        .ok_or_else(|| format!("not signed by {entity}"))?;
    only_entity.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(CanonicalJsonObject::from([(entity.to_owned(), signatures)])),
    );
    let map: PublicKeyMap = BTreeMap::from([(entity.to_owned(), keys)]);
    ruma::signatures::verify_json(&map, &only_entity).map_err(|e| e.to_string())
}

/// Checks a key document claimed to be `server_name`'s; returns it with its keys.
pub fn check_key_document(
    server_name: &str,
    document: &Value,
    now: i64,
) -> Result<(CanonicalJsonObject, i64, Vec<ServerVerifyKeyRecord>), String> {
    let object: CanonicalJsonObject =
        serde_json::from_value(document.clone()).map_err(|e| format!("not canonical JSON: {e}"))?;
    if document.get("server_name").and_then(Value::as_str) != Some(server_name) {
        return Err(format!("the document is not {server_name}'s"));
    }
    let valid_until_ts = document.get("valid_until_ts").and_then(Value::as_i64).ok_or("no valid_until_ts")?;
    let mut verify_keys = BTreeMap::new();
    let mut records = Vec::new();
    let effective_until = valid_until_ts.min(now.saturating_add(MAX_KEY_VALIDITY_MS));
    for (key_id, key) in document.get("verify_keys").and_then(Value::as_object).ok_or("no verify_keys")? {
        let public_key = key.get("key").and_then(Value::as_str).ok_or("a verify key without `key`")?;
        let parsed = Base64::parse(public_key).map_err(|_| format!("{key_id}: bad base64"))?;
        verify_keys.insert(key_id.clone(), parsed);
        records.push(ServerVerifyKeyRecord {
            key_id: key_id.clone(),
            public_key: public_key.trim_end_matches('=').to_owned(),
            valid_until_ts: effective_until,
            expired_ts: None,
        });
    }
    if let Some(old) = document.get("old_verify_keys").and_then(Value::as_object) {
        for (key_id, key) in old {
            let (Some(public_key), Some(expired_ts)) =
                (key.get("key").and_then(Value::as_str), key.get("expired_ts").and_then(Value::as_i64))
            else {
                continue;
            };
            if verify_keys.contains_key(key_id)
                || Base64::<ruma::serde::base64::Standard>::parse(public_key).is_err()
            {
                continue;
            }
            records.push(ServerVerifyKeyRecord {
                key_id: key_id.clone(),
                public_key: public_key.trim_end_matches('=').to_owned(),
                valid_until_ts: expired_ts,
                expired_ts: Some(expired_ts),
            });
        }
    }
    if verify_keys.is_empty() {
        return Err("no verify key".to_owned());
    }
    verify_signed_by(&object, server_name, verify_keys)?;
    Ok((object, valid_until_ts, records))
}

impl KeyRing {
    pub fn new(client: Arc<FederationClient>, store: Store, notaries: Vec<TrustedKeyServer>) -> KeyRing {
        KeyRing {
            client,
            store,
            notaries,
            cache: Mutex::default(),
            fetch_locks: Mutex::default(),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times keys were fetched from the network (for tests and metrics).
    pub fn remote_fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The public key `key_id` of `server`, if it verifies what was signed at `at_ts`:
    /// from memory, the store, or (when unknown or too old there) the network.
    pub async fn verify_key(
        &self,
        server: &ServerName,
        key_id: &str,
        at_ts: i64,
    ) -> Result<Option<String>, KeyError> {
        let usable = |keys: &RemoteServerKeys| {
            keys.keys.get(key_id).filter(|key| key.usable_at(at_ts)).map(|key| key.public_key.clone())
        };
        let known = self.known(server).await?;
        if let Some(key) = usable(&known) {
            return Ok(Some(key));
        }
        let fetched = self.refresh(server).await?;
        Ok(usable(&fetched))
    }

    /// A key document of `server` valid until at least `minimum_valid_until_ts`, when one
    /// can be had; else the latest known one (for the notary API).
    pub async fn key_document(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: i64,
    ) -> Result<Option<CanonicalJsonObject>, KeyError> {
        let known = self.known(server).await?;
        if known.document.is_some() && known.document_valid_until_ts >= minimum_valid_until_ts {
            return Ok(known.document.clone());
        }
        let fetched = self.refresh(server).await?;
        Ok(fetched.document.clone().or_else(|| known.document.clone()))
    }

    /// What memory or the store knows of `server`.
    async fn known(&self, server: &ServerName) -> Result<Arc<RemoteServerKeys>, KeyError> {
        if let Some(entry) = self.cache.lock().get(server.as_str()) {
            return Ok(entry.keys.clone());
        }
        let loaded = Arc::new(self.load(server).await?);
        // A fetch that finished meanwhile wins over what the store said before it.
        let mut cache = self.cache.lock();
        let entry = cache
            .entry(server.as_str().to_owned())
            .or_insert_with(|| CacheEntry { keys: loaded, fetched: None });
        Ok(entry.keys.clone())
    }

    async fn load(&self, server: &ServerName) -> Result<RemoteServerKeys, KeyError> {
        let document = self.store.server_key_document(server.as_str()).await?;
        let keys = self.store.server_verify_keys(server.as_str()).await?;
        Ok(RemoteServerKeys {
            document_valid_until_ts: document.as_ref().map(|d| d.valid_until_ts).unwrap_or_default(),
            document: document.and_then(|d| serde_json::from_str(&d.document).ok()),
            keys: keys
                .into_iter()
                .map(|k| {
                    (
                        k.key_id,
                        VerifyKey {
                            public_key: k.public_key,
                            valid_until_ts: k.valid_until_ts,
                            expired_ts: k.expired_ts,
                        },
                    )
                })
                .collect(),
        })
    }

    /// Fetches `server`'s keys; concurrent callers share one fetch (a caller that waited for
    /// another's fetch takes its result).
    async fn refresh(&self, server: &ServerName) -> Result<Arc<RemoteServerKeys>, KeyError> {
        let asked = Instant::now();
        let lock = self.fetch_locks.lock().entry(server.as_str().to_owned()).or_default().clone();
        let _guard = lock.lock().await;
        if let Some(entry) = self.cache.lock().get(server.as_str())
            && entry.fetched.is_some_and(|fetched| fetched >= asked)
        {
            return Ok(entry.keys.clone());
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        if let Some((document, valid_until_ts, records)) = self.fetch(server).await {
            let text = serde_json::to_string(&document).unwrap_or_default();
            self.store
                .store_server_keys(
                    &ServerKeyDocument {
                        server_name: server.as_str().to_owned(),
                        document: text,
                        valid_until_ts,
                        fetched_ts: now_ms(),
                    },
                    &records,
                )
                .await?;
        }
        // The store merges keys across documents: read back what it keeps.
        let keys = Arc::new(self.load(server).await?);
        self.cache.lock().insert(
            server.as_str().to_owned(),
            CacheEntry { keys: keys.clone(), fetched: Some(Instant::now()) },
        );
        drop(_guard);
        let mut locks = self.fetch_locks.lock();
        if locks.get(server.as_str()).is_some_and(|l| Arc::strong_count(l) <= 2) {
            locks.remove(server.as_str());
        }
        Ok(keys)
    }

    /// A checked key document of `server`: from the notaries, then from the server itself.
    async fn fetch(
        &self,
        server: &ServerName,
    ) -> Option<(CanonicalJsonObject, i64, Vec<ServerVerifyKeyRecord>)> {
        for notary in &self.notaries {
            if notary.server_name == server.as_str()
                || notary.server_name == self.client.server_name().as_str()
            {
                continue;
            }
            match self.fetch_from_notary(notary, server).await {
                Ok(found) => return Some(found),
                Err(error) => {
                    tracing::info!(%server, notary = %notary.server_name, %error, "notary has no keys")
                }
            }
        }
        let direct: Result<Value, FederationError> =
            self.client.get_json(server, "/_matrix/key/v2/server").await;
        match direct
            .map_err(|e| e.to_string())
            .and_then(|doc| check_key_document(server.as_str(), &doc, now_ms()))
        {
            Ok(found) => Some(found),
            Err(error) => {
                tracing::info!(%server, %error, "cannot fetch the server's keys");
                None
            }
        }
    }

    async fn fetch_from_notary(
        &self,
        notary: &TrustedKeyServer,
        server: &ServerName,
    ) -> Result<(CanonicalJsonObject, i64, Vec<ServerVerifyKeyRecord>), String> {
        let notary_keys: BTreeMap<String, Base64> = notary
            .verify_keys
            .iter()
            .filter_map(|(id, key)| Some((id.clone(), Base64::parse(key).ok()?)))
            .collect();
        if notary_keys.is_empty() && !notary.accept_keys_insecurely {
            return Err("no verify_keys configured for it and accept_keys_insecurely is off".to_owned());
        }
        let notary_name = <&ServerName>::try_from(notary.server_name.as_str()).map_err(|e| e.to_string())?;
        let body = json!({ "server_keys": { server.as_str(): {} } });
        let response: Value = self
            .client
            .post_json(notary_name, "/_matrix/key/v2/query", &body)
            .await
            .map_err(|e| e.to_string())?;
        let documents = response.get("server_keys").and_then(Value::as_array).ok_or("no server_keys")?;
        let mut last_error = "no document for the server".to_owned();
        for document in documents {
            if document.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
                continue;
            }
            let checked = check_key_document(server.as_str(), document, now_ms()).and_then(|found| {
                if !notary_keys.is_empty() {
                    verify_signed_by(&found.0, &notary.server_name, notary_keys.clone())?;
                }
                Ok(found)
            });
            match checked {
                Ok((mut object, valid_until_ts, records)) => {
                    // Keep the document as its server signed it.
                    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
                        signatures.retain(|entity, _| entity == server.as_str());
                    }
                    return Ok((object, valid_until_ts, records));
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::signatures::Ed25519KeyPair;

    fn key_pair(version: &str) -> Ed25519KeyPair {
        let der = Ed25519KeyPair::generate();
        Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap()
    }

    fn signed_document(server: &str, pair: &Ed25519KeyPair, valid_until_ts: i64) -> Value {
        let public = Base64::<ruma::serde::base64::Standard>::new(pair.public_key().to_vec()).encode();
        let mut object: CanonicalJsonObject = serde_json::from_value(json!({
            "server_name": server,
            "valid_until_ts": valid_until_ts,
            "verify_keys": { format!("ed25519:{}", pair.version()): { "key": public } },
            "old_verify_keys": { "ed25519:old": { "key": public, "expired_ts": 5 } },
        }))
        .unwrap();
        ruma::signatures::sign_json(server, pair, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }

    #[test]
    fn a_self_signed_document_is_accepted_and_capped_at_seven_days() {
        let pair = key_pair("a");
        let now = 1_000_000;
        let document = signed_document("remote.test", &pair, now + 30 * MAX_KEY_VALIDITY_MS);
        let (_, valid_until, records) = check_key_document("remote.test", &document, now).unwrap();
        assert_eq!(valid_until, now + 30 * MAX_KEY_VALIDITY_MS);
        assert_eq!(records[0].key_id, "ed25519:a");
        assert_eq!(records[0].valid_until_ts, now + MAX_KEY_VALIDITY_MS);
        assert_eq!((records[1].key_id.as_str(), records[1].expired_ts), ("ed25519:old", Some(5)));
        assert!(
            VerifyKey { public_key: String::new(), valid_until_ts: 10, expired_ts: Some(5) }.usable_at(5)
        );
        assert!(
            !VerifyKey { public_key: String::new(), valid_until_ts: 10, expired_ts: Some(5) }.usable_at(6)
        );
    }

    #[test]
    fn documents_of_another_server_or_badly_signed_are_refused() {
        let pair = key_pair("a");
        let document = signed_document("remote.test", &pair, 10);
        assert!(check_key_document("other.test", &document, 0).is_err());
        let mut tampered = document.clone();
        tampered["valid_until_ts"] = json!(11);
        assert!(check_key_document("remote.test", &tampered, 0).is_err());
        // Signed by a key that is not in verify_keys.
        let other = key_pair("b");
        let mut object: CanonicalJsonObject = serde_json::from_value(document).unwrap();
        object.remove("signatures");
        ruma::signatures::sign_json("remote.test", &other, &mut object).unwrap();
        assert!(check_key_document("remote.test", &serde_json::to_value(object).unwrap(), 0).is_err());
    }
}
