//! The owner side of verified results, as the peer drives it: each job's policy and secret seed,
//! and the trust book its owners share, kept in `<data_dir>/trust.book`.
//!
//! Invariants: every owner starts with a copy of the peer's book and, when its job ends, its book
//! is merged back and the file rewritten atomically (write, then rename), so a crash leaves the
//! old book or the new one, never half of one. An unreadable book is logged and replaced by an
//! empty one (trust is rebuilt; nothing is wrongly trusted).

use std::path::{Path, PathBuf};

use rand::Rng as _;
use shoal_core::job::Job;
use shoal_core::sched::{Owner, OwnerConfig, TrustBook, VerifyPolicy};
use tracing::warn;

use super::Actor;

/// The book's file name in the data directory.
pub const TRUST_BOOK: &str = "trust.book";

/// The peer's trust book and where it lives.
#[derive(Debug)]
pub(crate) struct Books {
    path: PathBuf,
    pub(crate) book: TrustBook,
}

impl Books {
    pub(crate) fn open(data_dir: &Path) -> Books {
        let path = data_dir.join(TRUST_BOOK);
        let book = read_trust_book(data_dir).unwrap_or_else(|e| {
            warn!(path = %path.display(), "cannot read the trust book: {e}; starting a new one");
            TrustBook::new()
        });
        Books { path, book }
    }

    /// Merges a finished owner's book and saves (nothing to do for an empty one: an owner whose
    /// book was already taken back).
    pub(super) fn merge(&mut self, book: &TrustBook) {
        if book.iter().next().is_none() {
            return;
        }
        self.book.merge(book);
        let tmp = self.path.with_extension("book.tmp");
        let saved =
            std::fs::write(&tmp, self.book.to_bytes()).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = saved {
            warn!(path = %self.path.display(), "cannot save the trust book: {e}");
        }
    }
}

/// Reads the trust book in a data directory (for `shoal status`); a missing file is empty.
pub fn read_trust_book(data_dir: &Path) -> Result<TrustBook, String> {
    match std::fs::read(data_dir.join(TRUST_BOOK)) {
        Ok(bytes) => TrustBook::from_bytes(&bytes).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustBook::new()),
        Err(e) => Err(e.to_string()),
    }
}

impl Actor {
    /// The owner settings of `job`: the peer's, with the job's policy (or the peer's default) and
    /// a fresh secret seed for its spot checks.
    pub(super) fn owner_cfg_for(&mut self, job: &Job) -> OwnerConfig {
        let mut cfg = self.owner_cfg.clone();
        cfg.verify.policy = job.verify().unwrap_or(self.default_verify);
        cfg.verify.seed = self.rng.random();
        cfg
    }

    /// Lends the peer's trust book to a new owner.
    pub(super) fn lend_trust(&self, owner: &mut Owner) {
        owner.set_trust(self.books.book.clone());
    }

    /// Takes a finished owner's book back into the peer's.
    pub(super) fn take_trust(&mut self, owner: &mut Owner) {
        let book = owner.take_trust();
        self.books.merge(&book);
    }
}

/// The default policy of a peer's jobs: `configured`, else adaptive in an open swarm (anyone
/// may run its tasks) and none in a private one (its members were let in by its secret).
pub(crate) fn default_policy(configured: Option<VerifyPolicy>, private: bool) -> VerifyPolicy {
    configured.unwrap_or(if private { VerifyPolicy::None } else { VerifyPolicy::Adaptive })
}
