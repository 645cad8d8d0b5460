//! Compiled-module caches: a bounded in-memory map and an on-disk store of serialised modules.
//!
//! Invariants:
//! - Keys are the blake3 hash of the module's bytes (plus, on disk, the engine's compatibility
//!   hash), so a cache hit is always the same module compiled by a compatible engine.
//! - A disk entry is trusted only after its checksum matches: a damaged or truncated file is
//!   deleted and the module recompiled, never deserialised. Entries are written to a temporary
//!   file and renamed into place, so a crash never leaves a half-written entry under its name.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"SHOALCW1";

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

/// Serialised modules under a directory.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_tag: u64,
}

impl DiskCache {
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        crate::rewrite::REWRITE_VERSION.hash(&mut h);
        Ok(DiskCache { dir: dir.to_path_buf(), engine_tag: h.finish() })
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{:016x}.cwasm", self.engine_tag))
    }

    /// The cached module, if a sound entry exists. A damaged entry is removed.
    pub(crate) fn load(&self, engine: &Engine, key: &[u8; 32]) -> Option<Module> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        let payload = match bytes.split_at_checked(MAGIC.len() + 32) {
            Some((head, payload))
                if &head[..MAGIC.len()] == MAGIC
                    && head[MAGIC.len()..] == *blake3::hash(payload).as_bytes() =>
            {
                payload
            }
            _ => {
                tracing::warn!(path = %path.display(), "damaged module cache entry: removing it and recompiling");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        // SAFETY: `payload` is exactly what `Module::serialize` wrote for an engine with the same
        // compatibility hash: the file name carries that hash and the blake3 checksum above
        // proves the bytes are unchanged since we wrote them into our own cache directory.
        match unsafe { Module::deserialize(engine, payload) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unusable module cache entry: recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled module. Failures are logged, never fatal: the cache is an optimisation.
    pub(crate) fn store(&self, key: &[u8; 32], module: &Module) {
        let result = (|| -> std::io::Result<()> {
            let payload = module.serialize().map_err(std::io::Error::other)?;
            let path = self.path(key);
            // Unique per writer: two threads compiling the same module at once must not share a
            // temporary file (the second rename would find it gone).
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(blake3::hash(&payload).as_bytes())?;
            f.write_all(&payload)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write module cache entry");
        }
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
