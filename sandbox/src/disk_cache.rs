//! The on-disk compiled-module cache: serialised modules, authenticated with a keyed MAC and kept
//! under a byte budget.
//!
//! A cache file is native code that `Module::deserialize` maps and runs, so a file is trusted only
//! if this sandbox wrote it: each entry carries `blake3::keyed_hash` under a 32-byte key that is
//! generated randomly on first use and kept in the cache directory (`cache.key`, mode 0600). The
//! MAC covers the file format, the module's content hash and the engine tag as well as the
//! payload, so an entry can neither be altered nor moved under another module's name.
//!
//! Invariants:
//! - An entry whose MAC does not match (damaged, truncated, written by an older format, written
//!   under another key, or forged by anyone who can write the directory but not read the key) is
//!   never deserialised: it is deleted and the module recompiled and written again.
//! - The key file is created atomically (a temporary file of mode 0600, linked into place) and a
//!   key file of the wrong length, readable by group or others, or unreadable is replaced, which
//!   only invalidates the cache. MACs are compared in constant time (`blake3::Hash`'s `PartialEq`).
//! - Entries are written to a temporary file and renamed into place, so a crash never leaves a
//!   half-written entry under its name.
//! - After each write, the entries' total size is brought back under the budget by deleting the
//!   least recently used ones (by modification time, which a hit refreshes), never the entry just
//!   written.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wasmtime::{Engine, Module};

/// The entry format: `MAGIC`, the 32-byte MAC, then the payload (`Module::serialize`).
const MAGIC: &[u8; 8] = b"SHOALCW2";
/// Entries' file extension.
const ENTRY_EXT: &str = "cwasm";
/// The MAC key's file name in the cache directory.
pub(crate) const KEY_FILE: &str = "cache.key";
const KEY_LEN: usize = 32;

/// Serialised modules under a directory.
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_tag: u64,
    key: [u8; KEY_LEN],
    budget_bytes: u64,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("engine_tag", &self.engine_tag)
            .field("budget_bytes", &self.budget_bytes)
            .finish_non_exhaustive()
    }
}

impl DiskCache {
    pub(crate) fn open(dir: &Path, engine: &Engine, budget_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        crate::rewrite::REWRITE_VERSION.hash(&mut h);
        let key = load_or_create_key(dir)?;
        Ok(DiskCache { dir: dir.to_path_buf(), engine_tag: h.finish(), key, budget_bytes })
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{:016x}.{ENTRY_EXT}", self.engine_tag))
    }

    /// The MAC of an entry: keyed blake3 over the format, the module hash, the engine tag and the
    /// payload.
    fn mac(&self, module_hash: &[u8; 32], payload: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(MAGIC);
        h.update(module_hash);
        h.update(&self.engine_tag.to_le_bytes());
        h.update(payload);
        h.finalize()
    }

    /// The cached module, if an authentic entry exists. Any other entry is removed.
    pub(crate) fn load(&self, engine: &Engine, key: &[u8; 32]) -> Option<Module> {
        let path = self.path(key);
        let bytes = std::fs::read(&path).ok()?;
        let authentic = bytes.split_at_checked(MAGIC.len() + 32).and_then(|(head, payload)| {
            let (magic, mac) = head.split_at(MAGIC.len());
            let mac: [u8; 32] = mac.try_into().ok()?;
            // `blake3::Hash`'s `==` is constant-time.
            (magic == MAGIC && blake3::Hash::from_bytes(mac) == self.mac(key, payload)).then_some(payload)
        });
        let Some(payload) = authentic else {
            tracing::warn!(path = %path.display(), "module cache entry failed authentication: removing it and recompiling");
            let _ = std::fs::remove_file(&path);
            return None;
        };
        // SAFETY: `payload` is exactly what `Module::serialize` wrote for an engine with the same
        // compatibility hash: the MAC above, keyed with a secret only this cache directory's
        // owner can read and covering the module hash and engine tag, proves this sandbox wrote
        // these bytes under this name.
        match unsafe { Module::deserialize(engine, payload) } {
            Ok(m) => {
                // A hit makes the entry the most recently used (best effort).
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(m)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unusable module cache entry: recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled module, then evicts to the budget. Failures are logged, never fatal: the
    /// cache is an optimisation.
    pub(crate) fn store(&self, key: &[u8; 32], module: &Module) {
        let path = self.path(key);
        let result = (|| -> std::io::Result<()> {
            let payload = module.serialize().map_err(std::io::Error::other)?;
            let tmp = temporary(&path);
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(self.mac(key, &payload).as_bytes())?;
            f.write_all(&payload)?;
            f.set_modified(SystemTime::now())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        match result {
            Ok(()) => self.evict(&path),
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not write module cache entry")
            }
        }
    }

    /// Deletes the least recently used entries until the total is within the budget, keeping
    /// `keep` (the entry just written) whatever its size.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        let mut entries: Vec<(SystemTime, PathBuf, u64)> = dir
            .filter_map(|e| {
                let e = e.ok()?;
                let path = e.path();
                if path.extension().and_then(|x| x.to_str()) != Some(ENTRY_EXT) {
                    return None;
                }
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, path, meta.len()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, _, len)| len).sum();
        if total <= self.budget_bytes {
            return;
        }
        entries.sort();
        for (_, path, len) in entries {
            if total <= self.budget_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::debug!(path = %path.display(), "evicted module cache entry (over budget)");
            }
            total = total.saturating_sub(len);
        }
    }
}

/// A temporary name next to `path`, unique per process and writer: two threads writing the same
/// file at once must not share one (the second rename would find it gone).
fn temporary(path: &Path) -> PathBuf {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_extension(format!("tmp{}-{n}", std::process::id()))
}

/// Reads the MAC key of `dir`, creating it (or replacing a damaged or exposed one) first.
fn load_or_create_key(dir: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(KEY_FILE);
    // Two rounds: a concurrent process may create the key between our read and our link.
    for _ in 0..2 {
        let existing = match std::fs::File::open(&path) {
            Ok(mut f) => {
                let private = f.metadata()?.permissions().mode() & 0o077 == 0;
                let mut key = Vec::with_capacity(KEY_LEN + 1);
                Read::by_ref(&mut f).take(KEY_LEN as u64 + 1).read_to_end(&mut key)?;
                match <[u8; KEY_LEN]>::try_from(key.as_slice()) {
                    Ok(key) if private => return Ok(key),
                    _ => true,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            // Unreadable (e.g. planted by another user with mode 0600): replace it too.
            Err(_) => true,
        };
        let mut key = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        let tmp = temporary(&path);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        drop(f);
        let placed = if existing {
            tracing::warn!(path = %path.display(), "module cache key damaged or readable by others: replacing it (the cache starts over)");
            let r = std::fs::rename(&tmp, &path);
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r
        } else {
            // `hard_link` fails if the key appeared meanwhile: then read that one.
            let r = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            r
        };
        match placed {
            Ok(()) => return Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("the module cache key kept changing while it was being created"))
}
