//! The in-memory compiled-module cache: a bounded least-recently-used map (the disk cache is
//! `disk_cache.rs`).
//!
//! Invariants: keys are the blake3 hash of the module's bytes, so a hit is always the same
//! module; the map never holds more than its capacity (at least one entry).

use std::collections::HashMap;
use std::sync::Arc;

/// A bounded least-recently-used map.
#[derive(Debug)]
pub(crate) struct MemoryCache<V> {
    capacity: usize,
    clock: u64,
    entries: HashMap<[u8; 32], (Arc<V>, u64)>,
}

impl<V> MemoryCache<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        MemoryCache { capacity: capacity.max(1), clock: 0, entries: HashMap::new() }
    }

    pub(crate) fn get(&mut self, key: &[u8; 32]) -> Option<Arc<V>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(v, used)| {
            *used = clock;
            v.clone()
        })
    }

    pub(crate) fn insert(&mut self, key: [u8; 32], value: Arc<V>) {
        self.clock += 1;
        if self.entries.len() >= self.capacity
            && !self.entries.contains_key(&key)
            && let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(key, (value, self.clock));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cache_evicts_least_recently_used() {
        let mut c = MemoryCache::new(2);
        c.insert([1; 32], Arc::new(1));
        c.insert([2; 32], Arc::new(2));
        assert_eq!(c.get(&[1; 32]).as_deref(), Some(&1));
        c.insert([3; 32], Arc::new(3));
        assert_eq!(c.len(), 2);
        assert!(c.get(&[2; 32]).is_none(), "2 was least recently used");
        assert!(c.get(&[1; 32]).is_some());
        assert!(c.get(&[3; 32]).is_some());
    }
}
