//! Password hashing compatible with Synapse: bcrypt over the NFKC-normalised password with the
//! configured pepper appended, truncated to bcrypt's 72 bytes. Hashes are computed off the async
//! runtime's threads.

use myelin_config::PasswordConfig;
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// Hashes and checks passwords with the configured cost and pepper.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    rounds: u32,
    pepper: String,
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig) -> PasswordHasher {
        PasswordHasher { rounds: config.bcrypt_rounds, pepper: config.pepper.clone() }
    }

    fn input(&self, password: &str) -> Vec<u8> {
        let mut bytes: Vec<u8> = password.nfkc().collect::<String>().into_bytes();
        bytes.extend_from_slice(self.pepper.as_bytes());
        bytes.truncate(72);
        bytes
    }

    /// Hashes on the calling thread (for the CLI).
    pub fn hash_blocking(&self, password: &str) -> Result<String> {
        bcrypt::hash(self.input(password), self.rounds).map_err(Error::internal)
    }

    /// Checks on the calling thread. A malformed stored hash never matches.
    pub fn verify_blocking(&self, password: &str, stored_hash: &str) -> bool {
        bcrypt::verify(self.input(password), stored_hash).unwrap_or(false)
    }

    pub async fn hash(&self, password: &str) -> Result<String> {
        let hasher = self.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hasher.hash_blocking(&password)).await.map_err(Error::internal)?
    }

    pub async fn verify(&self, password: &str, stored_hash: &str) -> bool {
        let hasher = self.clone();
        let password = password.to_owned();
        let stored_hash = stored_hash.to_owned();
        tokio::task::spawn_blocking(move || hasher.verify_blocking(&password, &stored_hash))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(pepper: &str) -> PasswordHasher {
        PasswordHasher { rounds: 4, pepper: pepper.to_owned() }
    }

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let hasher = hasher("");
        let hash = hasher.hash_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$2b$04$"));
        assert!(hasher.verify_blocking("correct horse", &hash));
        assert!(!hasher.verify_blocking("wrong horse", &hash));
        assert!(!hasher.verify_blocking("correct horse", "not a hash"));
    }

    #[test]
    fn pepper_is_part_of_the_hash() {
        let hash = hasher("pepper").hash_blocking("secret").unwrap();
        assert!(hasher("pepper").verify_blocking("secret", &hash));
        assert!(!hasher("").verify_blocking("secret", &hash));
    }

    #[test]
    fn passwords_are_nfkc_normalised() {
        // U+FB01 (the "fi" ligature) normalises to "fi".
        let hash = hasher("").hash_blocking("\u{FB01}sh").unwrap();
        assert!(hasher("").verify_blocking("fish", &hash));
    }

    #[test]
    fn synapse_hashes_verify() {
        // Produced by Synapse 1.163.2's `hash_password -p hunter2` with `bcrypt_rounds: 4`,
        // without a pepper and with `password_config.pepper: p3pp3r`.
        let plain = "$2b$04$9LkSX7C2AfwVUxi9tX/lCeBWyIFATrmTr6r21Z1LUwrKTT5pWda1i";
        let peppered = "$2b$04$C4kCvfqd4n4Yna20qa5ByeAbaKUHII8TBJ8XY1GPPPxYkmQJ3wKNe";
        assert!(hasher("").verify_blocking("hunter2", plain));
        assert!(!hasher("").verify_blocking("hunter3", plain));
        assert!(hasher("p3pp3r").verify_blocking("hunter2", peppered));
        assert!(!hasher("").verify_blocking("hunter2", peppered));
    }
}
