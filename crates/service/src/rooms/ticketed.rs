//! A bounded cache of values read from the store that the write path invalidates, where a
//! reader that misses may only fill the entry with what it read if nothing invalidated the
//! entry meanwhile: it takes a [`Ticket`] before reading the store and hands it back with the
//! value, so a read that began before a commit never leaves the state before it behind.
//!
//! Bounded by entries and by the summed [`Weighed::weight`] of the values held; the least
//! recently used entries go first (an entry that goes takes its epoch with it, so every ticket
//! taken before is refused).

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

/// What a value counts for against the cache's weight bound.
pub trait Weighed {
    fn weight(&self) -> usize;
}

impl<T> Weighed for Vec<T> {
    fn weight(&self) -> usize {
        self.len()
    }
}

pub struct Ticketed<K: Hash + Eq, V> {
    inner: Mutex<Inner<K, V>>,
    max_weight: usize,
    max_entries: usize,
}

struct Inner<K: Hash + Eq, V> {
    entries: lru::LruCache<K, Entry<V>>,
    /// The summed weight of the values held.
    held: usize,
    /// Counts evictions and clears: an entry that went away took its epoch with it.
    generation: u64,
}

struct Entry<V> {
    /// Counts the entry's invalidations.
    epoch: u64,
    value: Option<Arc<V>>,
}

/// What a reader that missed saw, to fill the entry with only if it still holds.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    epoch: Option<u64>,
    generation: u64,
}

impl<K: Hash + Eq, V: Weighed> Inner<K, V> {
    fn evict_while_over(&mut self, max_weight: usize, max_entries: usize) {
        while self.held > max_weight || self.entries.len() > max_entries {
            let Some((_, out)) = self.entries.pop_lru() else { break };
            self.held -= out.value.map_or(0, |v| v.weight());
            self.generation += 1;
        }
    }
}

impl<K: Hash + Eq, V: Weighed> Ticketed<K, V> {
    /// A cache holding at most `max_entries` entries and values weighing `max_weight` in all.
    pub fn new(max_weight: usize, max_entries: usize) -> Self {
        Ticketed {
            inner: Mutex::new(Inner { entries: lru::LruCache::unbounded(), held: 0, generation: 0 }),
            max_weight,
            max_entries,
        }
    }

    /// The cached value, or the ticket to fill it with after reading the store.
    pub fn get<Q>(&self, key: &Q) -> Result<Arc<V>, Ticket>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut inner = self.inner.lock();
        let generation = inner.generation;
        match inner.entries.get(key) {
            Some(Entry { value: Some(value), .. }) => Ok(value.clone()),
            Some(entry) => Err(Ticket { epoch: Some(entry.epoch), generation }),
            None => Err(Ticket { epoch: None, generation }),
        }
    }

    /// Fills the entry with what was read from the store after `ticket` was taken, unless an
    /// invalidation came in between.
    pub fn fill<Q>(&self, key: &Q, ticket: Ticket, value: Arc<V>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut inner = self.inner.lock();
        if inner.generation != ticket.generation {
            return;
        }
        let epoch = inner.entries.peek(key).map(|e| e.epoch);
        if epoch != ticket.epoch {
            return;
        }
        inner.held += value.weight();
        let old = inner.entries.push(key.to_owned(), Entry { epoch: epoch.unwrap_or(0), value: Some(value) });
        if let Some((_, old)) = old {
            inner.held -= old.value.map_or(0, |v| v.weight());
        }
        inner.evict_while_over(self.max_weight, self.max_entries);
    }

    /// Forgets the entry's value (it may have changed).
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut inner = self.inner.lock();
        let dropped = match inner.entries.get_mut(key) {
            Some(entry) => {
                entry.epoch += 1;
                entry.value.take().map_or(0, |v| v.weight())
            }
            None => {
                inner.entries.push(key.to_owned(), Entry { epoch: 1, value: None });
                0
            }
        };
        inner.held -= dropped;
        inner.evict_while_over(self.max_weight, self.max_entries);
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.entries.clear();
        inner.held = 0;
        inner.generation += 1;
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.held, inner.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Arc<Vec<u8>> {
        Arc::new(vec![0; n])
    }

    #[test]
    fn a_fill_after_an_invalidation_is_refused() {
        let cache: Ticketed<String, Vec<u8>> = Ticketed::new(100, 10);
        let ticket = cache.get("a").unwrap_err();
        cache.invalidate("a");
        cache.fill("a", ticket, value(2));
        let ticket = cache.get("a").expect_err("the read began before the invalidation");
        cache.fill("a", ticket, value(3));
        assert_eq!(cache.get("a").expect("filled").len(), 3);
        // Invalidating a filled entry empties it; a clear refuses tickets taken before it.
        cache.invalidate("a");
        let ticket = cache.get("a").unwrap_err();
        cache.clear();
        cache.fill("a", ticket, value(1));
        assert!(cache.get("a").is_err());
    }

    #[test]
    fn weight_and_entries_held_are_bounded() {
        let cache: Ticketed<String, Vec<u8>> = Ticketed::new(100, 3);
        for i in 0..5 {
            let key = format!("k{i}");
            let ticket = cache.get(key.as_str()).unwrap_err();
            cache.fill(key.as_str(), ticket, value(50));
        }
        assert_eq!(cache.held(), (100, 2));
        for i in 0..5 {
            let key = format!("s{i}");
            let ticket = cache.get(key.as_str()).unwrap_err();
            cache.fill(key.as_str(), ticket, value(1));
        }
        assert_eq!(cache.held(), (3, 3));
        // A ticket taken before an eviction is refused.
        let ticket = cache.get("x").unwrap_err();
        let other = cache.get("y").unwrap_err();
        cache.fill("y", other, value(1));
        cache.fill("x", ticket, value(1));
        assert!(cache.get("x").is_err());
    }
}
