//! The server's signing keys.
//!
//! Key files use Synapse's format, one key per line: `ed25519 <version> <unpadded base64 seed>`.
//! The first key of the file signs; `old_signing_keys` from the configuration are published as
//! `old_verify_keys`.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use myelin_config::Config;
use ruma::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};

use crate::util::{now_ms, random_bytes, random_string};
use crate::{Error, Result};

/// One line of a key file.
pub struct SigningKeyEntry {
    pub version: String,
    pub seed: [u8; 32],
}

impl SigningKeyEntry {
    /// A fresh key with a Synapse-style version `a_XXXX`.
    pub fn generate() -> SigningKeyEntry {
        SigningKeyEntry { version: format!("a_{}", random_string(4)), seed: random_bytes::<32>() }
    }

    /// The line as written in the key file.
    pub fn to_line(&self) -> String {
        format!("ed25519 {} {}\n", self.version, STANDARD_NO_PAD.encode(self.seed))
    }

    fn key_pair(&self) -> Result<Ed25519KeyPair> {
        let signing_key = ed25519_dalek::SigningKey::from_bytes(&self.seed);
        let der = signing_key.to_pkcs8_der().map_err(Error::internal)?;
        Ed25519KeyPair::from_der(der.as_bytes(), self.version.clone()).map_err(Error::internal)
    }
}

/// Parses a key file in Synapse's format.
pub fn parse_key_file(text: &str) -> Result<Vec<SigningKeyEntry>, String> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [algorithm, version, key] = parts[..] else {
            return Err(format!("line {}: expected `ed25519 <version> <base64 key>`", index + 1));
        };
        if algorithm != "ed25519" {
            return Err(format!("line {}: unsupported key algorithm {algorithm:?}", index + 1));
        }
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(key.trim_end_matches('='))
            .map_err(|_| format!("line {}: the key is not valid base64", index + 1))?;
        let seed: [u8; 32] =
            bytes.try_into().map_err(|_| format!("line {}: an ed25519 key has 32 bytes", index + 1))?;
        keys.push(SigningKeyEntry { version: version.to_owned(), seed });
    }
    if keys.is_empty() {
        return Err("the key file holds no key".to_owned());
    }
    Ok(keys)
}

/// Creates a key file with one fresh key. Never overwrites an existing file.
pub fn write_new_key_file(path: &Path) -> Result<SigningKeyEntry> {
    use std::io::Write as _;
    let entry = SigningKeyEntry::generate();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::internal)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).map_err(|e| Error::internal(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(entry.to_line().as_bytes()).map_err(Error::internal)?;
    Ok(entry)
}

/// The key that signs for this server, and the retired ones it still publishes.
pub struct ServerKeys {
    server_name: String,
    key_pair: std::sync::Arc<Ed25519KeyPair>,
    key_id: String,
    public_key: String,
    old_verify_keys: BTreeMap<String, Value>,
    validity_ms: u64,
}

impl ServerKeys {
    /// Reads `signing_key_path`, creating it with a fresh key when it does not exist.
    pub fn load_or_generate(config: &Config) -> Result<ServerKeys> {
        let path = &config.keys.signing_key_path;
        let entry = match std::fs::read_to_string(path) {
            Ok(text) => parse_key_file(&text)
                .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?
                .swap_remove(0),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "generating a new signing key");
                write_new_key_file(path)?
            }
            Err(error) => {
                return Err(Error::internal(format!("cannot read {}: {error}", path.display())));
            }
        };
        let mut old_verify_keys = BTreeMap::new();
        for (key_id, value) in &config.keys.old_signing_keys {
            let key = value.get("key").and_then(Value::as_str);
            let expired_ts = value.get("expired_ts").and_then(Value::as_u64);
            match (key, expired_ts) {
                (Some(key), Some(expired_ts)) => {
                    old_verify_keys.insert(key_id.clone(), json!({"key": key, "expired_ts": expired_ts}));
                }
                _ => tracing::warn!(%key_id, "old_signing_keys entry needs `key` and `expired_ts`; ignored"),
            }
        }
        ServerKeys::from_entry(
            &config.server.server_name,
            &entry,
            old_verify_keys,
            config.keys.key_refresh_interval.0,
        )
    }

    pub fn from_entry(
        server_name: &str,
        entry: &SigningKeyEntry,
        old_verify_keys: BTreeMap<String, Value>,
        validity_ms: u64,
    ) -> Result<ServerKeys> {
        let key_pair = entry.key_pair()?;
        let public_key = STANDARD_NO_PAD.encode(key_pair.public_key());
        Ok(ServerKeys {
            server_name: server_name.to_owned(),
            key_pair: std::sync::Arc::new(key_pair),
            key_id: format!("ed25519:{}", entry.version),
            public_key,
            old_verify_keys,
            validity_ms,
        })
    }

    /// The signing key pair.
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.key_pair
    }

    /// The signing key pair, shared (for the federation client's request signatures).
    pub fn shared_key_pair(&self) -> std::sync::Arc<Ed25519KeyPair> {
        self.key_pair.clone()
    }

    /// `ed25519:<version>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, unpadded base64.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Adds this server's signature to a JSON object.
    pub fn sign(&self, object: &mut CanonicalJsonObject) -> Result<()> {
        ruma::signatures::sign_json(&self.server_name, self.key_pair.as_ref(), object)
            .map_err(Error::internal)
    }

    /// The signed response of `GET /_matrix/key/v2/server`.
    pub fn server_keys_document(&self) -> Result<Value> {
        let document = json!({
            "server_name": self.server_name,
            "valid_until_ts": now_ms() + self.validity_ms,
            "verify_keys": { &self.key_id: { "key": self.public_key } },
            "old_verify_keys": self.old_verify_keys,
        });
        let mut object: CanonicalJsonObject = serde_json::from_value(document).map_err(Error::internal)?;
        self.sign(&mut object)?;
        serde_json::to_value(object).map_err(Error::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_in_synapse_format() {
        let entry = SigningKeyEntry::generate();
        let line = entry.to_line();
        assert!(line.starts_with("ed25519 a_"));
        let parsed = parse_key_file(&line).unwrap();
        assert_eq!(parsed[0].version, entry.version);
        assert_eq!(parsed[0].seed, entry.seed);
    }

    #[test]
    fn a_key_generated_by_synapse_parses() {
        // The shape Synapse's --generate-config writes.
        let parsed = parse_key_file("ed25519 a_jxFJ y4IsZGr+kEEuquSYpzV2dkXAT6PZGr2VCYzi3VSiqy0\n").unwrap();
        assert_eq!(parsed[0].version, "a_jxFJ");
    }

    #[test]
    fn malformed_key_files_are_refused() {
        assert!(parse_key_file("").is_err());
        assert!(parse_key_file("ed25519 a_x").is_err());
        assert!(parse_key_file("rsa a_x AAAA").is_err());
        assert!(parse_key_file("ed25519 a_x !!!!").is_err());
        assert!(parse_key_file("ed25519 a_x AAAA").is_err());
    }

    #[test]
    fn server_keys_document_verifies_with_its_own_key() {
        let entry = SigningKeyEntry::generate();
        let keys = ServerKeys::from_entry("example.org", &entry, BTreeMap::new(), 86_400_000).unwrap();
        let document = keys.server_keys_document().unwrap();
        let object: CanonicalJsonObject = serde_json::from_value(document).unwrap();
        let mut key_set = BTreeMap::new();
        key_set.insert(keys.key_id().to_owned(), ruma::serde::Base64::parse(keys.public_key()).unwrap());
        let mut key_map = BTreeMap::new();
        key_map.insert("example.org".to_owned(), key_set);
        ruma::signatures::verify_json(&key_map, &object).unwrap();
    }
}
