//! The local content-addressed blob store: blobs named by their blake3 hash, on disk, under a
//! byte budget with least-recently-used eviction.
//!
//! Invariants:
//! - a blob appears under its final name only complete and verified: bytes go to a temp file in
//!   `tmp/`, which is hashed while written, checked against the expected hash and then renamed
//!   (atomic on POSIX). While the process runs, readers never see a partial blob.
//! - after a crash, the store never returns a blob whose bytes do not match its name. Durability
//!   is not bought with an fsync per blob (two fsyncs per task output cost more than a short
//!   task): instead, opening the store creates a `dirty` marker (made durable at once) and a
//!   clean close flushes the file system and removes it. Opening a store whose marker is still
//!   there — the last process died, or the machine lost power before its writes reached the disk —
//!   re-hashes every blob and deletes those that do not match (a file renamed into place whose
//!   data never reached the disk reads back empty or short). A fresh directory has no marker.
//! - on open, leftover temp files (a crash mid-write) are deleted and the index is rebuilt from
//!   the directory, so the store survives restarts.
//! - the sum of stored sizes stays within the budget: inserting evicts least recently used blobs
//!   first; a blob larger than the whole budget is refused.
//! - storing bytes that are already stored touches no file.
//!
//! The store uses blocking file IO; blobs are written in chunks of at most a network read, which
//! keeps each call short.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use shoal_core::ids::BlobHash;

/// Why a blob store operation failed. The store's index is unchanged by a failed operation.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// A file operation failed.
    #[error("blob store {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes do not hash to the expected value; they were discarded.
    #[error("blob content does not match its hash: expected {expected:?}, got {actual:?}")]
    HashMismatch {
        /// The hash that was asked for.
        expected: BlobHash,
        /// The hash of the bytes received.
        actual: BlobHash,
    },
    /// The blob is larger than allowed (the whole budget, or a transfer cap); it was discarded.
    #[error("blob of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The blob's size.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
}

#[derive(Debug)]
struct Index {
    /// hash → (size, last use tick).
    blobs: HashMap<BlobHash, (u64, u64)>,
    total: u64,
    tick: u64,
    /// Blobs written since the store was opened, not yet known to be on the disk.
    unsynced: HashSet<BlobHash>,
}

/// A disk blob store. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct BlobStore {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    tmp: PathBuf,
    budget: u64,
    index: Mutex<Index>,
    tmp_seq: AtomicU64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

impl BlobStore {
    /// Opens (or creates) the store in `dir` with a budget of `budget` bytes.
    pub fn open(dir: &Path, budget: u64) -> Result<Self, BlobError> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let marker = dir.join(DIRTY);
        let unclean = marker.exists();
        let mut found: Vec<(std::time::SystemTime, BlobHash, u64)> = Vec::new();
        for e in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            let name = e.file_name();
            let Some(hash) = name.to_str().and_then(|n| n.parse::<BlobHash>().ok()) else { continue };
            let Ok(meta) = e.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if unclean && !holds(&e.path(), &hash) {
                tracing::warn!(blob = %hash.short(), "blob damaged by an unclean stop; deleted");
                let _ = fs::remove_file(e.path());
                continue;
            }
            found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), hash, meta.len()));
        }
        // From now on, until a clean close, the directory may hold blobs not yet on the disk.
        File::create(&marker).and_then(|f| f.sync_all()).map_err(io_err(&marker))?;
        sync_dir(dir);
        found.sort();
        let mut index = Index { blobs: HashMap::new(), total: 0, tick: 0, unsynced: HashSet::new() };
        for (_, hash, size) in found {
            index.tick += 1;
            index.blobs.insert(hash, (size, index.tick));
            index.total += size;
        }
        let store = BlobStore {
            inner: Arc::new(Shared {
                dir: dir.to_path_buf(),
                tmp,
                budget,
                index: Mutex::new(index),
                tmp_seq: AtomicU64::new(0),
            }),
        };
        store.evict_to(budget, None);
        Ok(store)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index inconsistent (every update is a
        // single insert/remove), so a poisoned lock is still usable.
        self.inner.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path_of(&self, hash: &BlobHash) -> PathBuf {
        self.inner.dir.join(hash.to_hex())
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.inner.budget
    }

    /// Bytes currently stored.
    pub fn total_bytes(&self) -> u64 {
        self.index().total
    }

    /// Blobs currently stored.
    pub fn count(&self) -> usize {
        self.index().blobs.len()
    }

    /// Whether the blob is stored.
    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.index().blobs.contains_key(hash)
    }

    /// The size of a stored blob.
    pub fn size_of(&self, hash: &BlobHash) -> Option<u64> {
        self.index().blobs.get(hash).map(|(s, _)| *s)
    }

    /// Stores `bytes`, returning their hash. Bytes already stored touch no file.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobHash, BlobError> {
        let hash = BlobHash::of(bytes);
        if self.touch(&hash).is_some() {
            return Ok(hash);
        }
        let mut w = self.writer(Some(hash))?;
        w.write(bytes)?;
        w.commit()
    }

    /// Marks a stored blob recently used; its size, if it is stored.
    fn touch(&self, hash: &BlobHash) -> Option<u64> {
        let mut idx = self.index();
        idx.tick += 1;
        let tick = idx.tick;
        let e = idx.blobs.get_mut(hash)?;
        e.1 = tick;
        Some(e.0)
    }

    /// Reads a whole blob, marking it recently used.
    pub fn get(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>, BlobError> {
        let Some((mut f, size)) = self.open_blob(hash)? else { return Ok(None) };
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let path = self.path_of(hash);
        f.read_to_end(&mut out).map_err(io_err(&path))?;
        Ok(Some(out))
    }

    /// Opens a stored blob for streaming, marking it recently used. The open file stays readable
    /// even if the blob is evicted meanwhile.
    pub fn open_blob(&self, hash: &BlobHash) -> Result<Option<(File, u64)>, BlobError> {
        let Some(size) = self.touch(hash) else { return Ok(None) };
        let path = self.path_of(hash);
        match File::open(&path) {
            Ok(f) => Ok(Some((f, size))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(hash);
                Ok(None)
            }
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Deletes a blob.
    pub fn remove(&self, hash: &BlobHash) -> Result<bool, BlobError> {
        if !self.forget(hash) {
            return Ok(false);
        }
        let path = self.path_of(hash);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn forget(&self, hash: &BlobHash) -> bool {
        let mut idx = self.index();
        idx.unsynced.remove(hash);
        match idx.blobs.remove(hash) {
            Some((size, _)) => {
                idx.total -= size;
                true
            }
            None => false,
        }
    }

    /// Starts writing a blob. With `expected`, the commit fails unless the bytes hash to it.
    pub fn writer(&self, expected: Option<BlobHash>) -> Result<BlobWriter, BlobError> {
        let n = self.inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.tmp.join(format!("{}-{n}", std::process::id()));
        let file = File::create(&path).map_err(io_err(&path))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            path,
            hasher: blake3::Hasher::new(),
            size: 0,
            expected,
        })
    }

    /// Evicts least recently used blobs (never `keep`) until `total <= target`.
    fn evict_to(&self, target: u64, keep: Option<&BlobHash>) {
        loop {
            let victim = {
                let idx = self.index();
                if idx.total <= target {
                    return;
                }
                idx.blobs
                    .iter()
                    .filter(|(h, _)| Some(*h) != keep)
                    .min_by_key(|(_, (_, t))| *t)
                    .map(|(h, _)| *h)
            };
            let Some(victim) = victim else { return };
            tracing::debug!(blob = %victim.short(), "evicting blob");
            let _ = self.remove(&victim);
        }
    }
}

/// The marker of a store that may hold blobs not yet on the disk (see the module docs).
const DIRTY: &str = "dirty";

/// Whether the file at `path` holds exactly the bytes named `hash`.
fn holds(path: &Path, hash: &BlobHash) -> bool {
    let Ok(mut f) = File::open(path) else { return false };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return BlobHash(*hasher.finalize().as_bytes()) == *hash,
            Ok(n) => {
                hasher.update(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Makes a directory's entries durable (best effort: some file systems refuse).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Drop for Shared {
    /// A clean close: every blob written since the open is flushed to the disk, then the dirty
    /// marker goes. Any failure keeps the marker, so the next open verifies.
    fn drop(&mut self) {
        let written =
            std::mem::take(&mut self.index.get_mut().unwrap_or_else(PoisonError::into_inner).unsynced);
        for hash in written {
            match File::open(self.dir.join(hash.to_hex())).and_then(|f| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // Evicted since.
                Err(_) => return,
            }
        }
        let Ok(d) = File::open(&self.dir) else { return };
        if d.sync_all().is_ok() && fs::remove_file(self.dir.join(DIRTY)).is_ok() {
            let _ = d.sync_all();
        }
    }
}

/// A blob being written; see [`BlobStore::writer`]. Dropping it discards the bytes.
#[derive(Debug)]
pub struct BlobWriter {
    store: BlobStore,
    file: Option<File>,
    path: PathBuf,
    hasher: blake3::Hasher,
    size: u64,
    expected: Option<BlobHash>,
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let budget = self.store.budget();
        self.size += bytes.len() as u64;
        if self.size > budget {
            return Err(BlobError::TooLarge { size: self.size, limit: budget });
        }
        self.hasher.update(bytes);
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(io_err(&self.path)),
            None => Ok(()),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Verifies and publishes the blob under its hash (atomically), evicting older blobs to stay
    /// within the budget. Not fsynced: see the module docs for what keeps a crash harmless.
    pub fn commit(mut self) -> Result<BlobHash, BlobError> {
        let actual = BlobHash(*self.hasher.finalize().as_bytes());
        if let Some(expected) = self.expected
            && expected != actual
        {
            return Err(BlobError::HashMismatch { expected, actual });
        }
        let store = self.store.clone();
        if store.contains(&actual) {
            return Ok(actual);
        }
        self.file.take();
        store.evict_to(store.budget().saturating_sub(self.size), None);
        let dest = store.path_of(&actual);
        fs::rename(&self.path, &dest).map_err(io_err(&dest))?;
        {
            let mut idx = store.index();
            idx.tick += 1;
            let tick = idx.tick;
            if idx.blobs.insert(actual, (self.size, tick)).is_none() {
                idx.total += self.size;
            }
            idx.unsynced.insert(actual);
        }
        // Concurrent commits may have overshot; trim without touching the new blob.
        store.evict_to(store.budget(), Some(&actual));
        Ok(actual)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful rename the temp path no longer exists; this is then a no-op.
        self.file.take();
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_survive_restart_and_temp_files_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let h = s.put(b"hello").unwrap();
        assert_eq!(h, BlobHash::of(b"hello"));
        // A crash mid-write leaves a temp file and no blob.
        let mut w = s.writer(None).unwrap();
        w.write(b"partial").unwrap();
        std::mem::forget(w);
        drop(s);
        let s = BlobStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.get(&h).unwrap().as_deref(), Some(&b"hello"[..]));
        assert!(!s.contains(&BlobHash::of(b"partial")));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(s.total_bytes(), 5);
    }

    #[test]
    fn blobs_damaged_by_an_unclean_stop_are_dropped_and_a_clean_close_needs_no_check() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let good = s.put(b"reached the disk").unwrap();
        let lost = s.put(b"renamed into place, data lost with the power").unwrap();
        assert!(dir.path().join(DIRTY).exists());
        // The process dies without closing the store, and the machine lost the second blob's data.
        std::mem::forget(s);
        fs::write(dir.path().join(lost.to_hex()), b"").unwrap();
        let s = BlobStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.get(&good).unwrap().as_deref(), Some(&b"reached the disk"[..]));
        assert_eq!(s.get(&lost).unwrap(), None);
        assert!(!dir.path().join(lost.to_hex()).exists());
        // A clean close removes the marker, so the next open trusts the directory (as it trusts a
        // directory it never wrote: a holder's files are checked by whoever fetches them).
        drop(s);
        assert!(!dir.path().join(DIRTY).exists());
        fs::write(dir.path().join(good.to_hex()), b"rotten").unwrap();
        let s = BlobStore::open(dir.path(), 1 << 20).unwrap();
        assert!(s.contains(&good));
        // Storing bytes already stored is a no-op, however often.
        let again = s.put(b"rotten").unwrap();
        assert_eq!(s.put(b"rotten").unwrap(), again);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn wrong_hash_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path(), 1 << 20).unwrap();
        let mut w = s.writer(Some(BlobHash::of(b"good"))).unwrap();
        w.write(b"evil").unwrap();
        assert!(matches!(w.commit(), Err(BlobError::HashMismatch { .. })));
        assert!(!s.contains(&BlobHash::of(b"evil")));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(s.total_bytes(), 0);
    }

    #[test]
    fn budget_evicts_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path(), 25).unwrap();
        let a = s.put(&[1u8; 10]).unwrap();
        let b = s.put(&[2u8; 10]).unwrap();
        s.get(&a).unwrap(); // a is now more recent than b
        let c = s.put(&[3u8; 10]).unwrap();
        assert!(s.contains(&a) && s.contains(&c) && !s.contains(&b));
        assert!(s.total_bytes() <= 25);
        assert!(matches!(s.put(&[4u8; 26]), Err(BlobError::TooLarge { .. })));
        // Reopening with a smaller budget trims.
        drop(s);
        let s = BlobStore::open(dir.path(), 10).unwrap();
        assert!(s.total_bytes() <= 10);
    }
}
