//! Shared-secret registration nonces (`GET /_synapse/admin/v1/register`): kept in memory, as
//! Synapse does, so that handing one out writes nothing. Each nonce is accepted once, within
//! [`NONCE_TIMEOUT`] of being handed out; at most [`MAX_NONCES`] are kept, the oldest
//! forgotten first, so that unauthenticated requests cannot grow the set without bound. A
//! restart forgets them all (a client asks for a new one).

use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// How long a nonce is accepted (Synapse: 60 seconds).
pub const NONCE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most nonces kept at once.
pub const MAX_NONCES: usize = 10_000;

/// Outstanding nonces, each with when it was handed out.
pub struct RegistrationNonces {
    nonces: Mutex<LruCache<String, Instant>>,
    timeout: Duration,
}

impl Default for RegistrationNonces {
    fn default() -> Self {
        RegistrationNonces::new(MAX_NONCES, NONCE_TIMEOUT)
    }
}

impl RegistrationNonces {
    pub fn new(capacity: usize, timeout: Duration) -> RegistrationNonces {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        RegistrationNonces { nonces: Mutex::new(LruCache::new(capacity)), timeout }
    }

    /// Remembers a nonce handed out at `now`, forgetting the oldest when full.
    pub fn insert(&self, nonce: String, now: Instant) {
        let mut nonces = self.nonces.lock();
        // Expired nonces go first (the oldest are at the back), so they never push out a
        // valid one.
        while let Some((_, created)) = nonces.peek_lru() {
            if now.saturating_duration_since(*created) <= self.timeout {
                break;
            }
            nonces.pop_lru();
        }
        nonces.push(nonce, now);
    }

    /// Spends a nonce: `true` when it was handed out, not spent yet and not expired at `now`.
    pub fn consume(&self, nonce: &str, now: Instant) -> bool {
        let created = self.nonces.lock().pop(nonce);
        created.is_some_and(|created| now.saturating_duration_since(created) <= self.timeout)
    }

    /// How many nonces are kept.
    pub fn len(&self) -> usize {
        self.nonces.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use() {
        let nonces = RegistrationNonces::default();
        let now = Instant::now();
        nonces.insert("a".to_owned(), now);
        assert!(!nonces.consume("b", now));
        assert!(nonces.consume("a", now));
        assert!(!nonces.consume("a", now));
    }

    #[test]
    fn nonces_expire() {
        let nonces = RegistrationNonces::new(10, Duration::from_secs(60));
        let start = Instant::now();
        nonces.insert("old".to_owned(), start);
        nonces.insert("fresh".to_owned(), start + Duration::from_secs(30));
        assert!(!nonces.consume("old", start + Duration::from_secs(61)));
        assert!(nonces.consume("fresh", start + Duration::from_secs(61)));
        // Expired nonces are dropped when new ones arrive.
        nonces.insert("x".to_owned(), start);
        nonces.insert("y".to_owned(), start + Duration::from_secs(120));
        assert_eq!(nonces.len(), 1);
    }

    #[test]
    fn the_oldest_nonce_goes_when_full() {
        let nonces = RegistrationNonces::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for name in ["a", "b", "c", "d"] {
            nonces.insert(name.to_owned(), now);
        }
        assert_eq!(nonces.len(), 3);
        assert!(!nonces.consume("a", now));
        assert!(nonces.consume("b", now));
        assert!(nonces.consume("d", now));
    }
}
