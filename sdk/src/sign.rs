//! Submitters' signing keys: make one, store it, read it back, and sign jobs with it.
//!
//! A signing key is an ed25519 key of the submitter's own, separate from any peer's identity
//! key; volunteers list its public form ([`SubmitterKey`], as [`SigningKey::public`] prints it) in
//! their `trusted_submitters`. Key files are PKCS#8 PEM (`openssl pkey -in FILE` reads them),
//! written with mode 0600 and never overwritten.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use shoal_core::ids::JobId;
pub use shoal_core::ids::SubmitterKey;

use crate::CompiledJob;

/// How long a signature made by [`CompiledJob::sign`] stays valid by default.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A submitter's signing key.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().short())
    }
}

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file exists already (keys are never overwritten).
    #[error("{0} exists already; a signing key is never overwritten (choose another path)")]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// "read" or "write".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a PKCS#8 PEM ed25519 private key.
    #[error("{0} is not a signing key (expected a PKCS#8 PEM ed25519 key, as `shoal key new` writes)")]
    Malformed(PathBuf),
}

impl SigningKey {
    /// The ed25519 signature of `digest` with this key (a cancel of one of its jobs).
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        self.0.sign(digest).to_bytes().to_vec()
    }

    /// A new random key.
    pub fn generate() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// The key whose secret is `seed` (for tests and derived keys).
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Its public form, which volunteers list in `trusted_submitters`.
    pub fn public(&self) -> SubmitterKey {
        SubmitterKey(self.0.verifying_key().to_bytes())
    }

    /// The key as PKCS#8 PEM text.
    pub fn to_pem(&self) -> String {
        match self.0.to_pkcs8_pem(Default::default()) {
            Ok(pem) => pem.to_string(),
            // Encoding a valid 32-byte key into a growable string cannot fail.
            Err(e) => unreachable!("encoding an ed25519 key as PKCS#8 failed: {e}"),
        }
    }

    /// Reads a key from PKCS#8 PEM text.
    pub fn from_pem(pem: &str) -> Option<SigningKey> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem).ok().map(SigningKey)
    }

    /// Writes the key to a new file `path` (mode 0600 on Unix); refuses to overwrite one.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        use std::io::Write as _;
        let io = |source| KeyError::Io { what: "write", path: path.to_path_buf(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                io(e)
            }
        })?;
        file.write_all(self.to_pem().as_bytes()).and_then(|()| file.sync_all()).map_err(io)
    }

    /// Reads a key file written by [`SigningKey::write_new`] (or `shoal key new`).
    pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        })?;
        SigningKey::from_pem(&text).ok_or_else(|| KeyError::Malformed(path.to_path_buf()))
    }
}

impl CompiledJob {
    /// Signs the job with `key` for [`DEFAULT_VALIDITY`]: peers that trust `key` run it, and
    /// no peer takes a task of it whose module, arguments, inputs or limits were changed.
    #[must_use]
    pub fn sign(self, key: &SigningKey) -> CompiledJob {
        self.sign_until(key, SystemTime::now() + DEFAULT_VALIDITY)
    }

    /// Signs the job with `key`; no peer takes a task of it after `expires`.
    #[must_use]
    pub fn sign_until(mut self, key: &SigningKey, expires: SystemTime) -> CompiledJob {
        let expires_ms = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let id = JobId(rand::random());
        self.job = self.job.sign(id, &key.0, expires_ms);
        self
    }

    /// The key that signed the job, if it is signed.
    pub fn signer(&self) -> Option<SubmitterKey> {
        self.job.manifest().map(|m| m.seal().submitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_is_private_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("me.key");
        let key = SigningKey::generate();
        key.write_new(&path).unwrap();
        assert_eq!(SigningKey::read(&path).unwrap().public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(matches!(SigningKey::generate().write_new(&path), Err(KeyError::Exists(_))));
        assert_eq!(SigningKey::read(&path).unwrap().public(), key.public(), "the first key stays");
        std::fs::write(dir.path().join("bad"), "not a key").unwrap();
        let bad = SigningKey::read(&dir.path().join("bad")).unwrap_err();
        assert!(bad.to_string().contains("PKCS#8"), "{bad}");
        assert!(matches!(SigningKey::read(&dir.path().join("none")), Err(KeyError::Io { .. })));
    }

    #[test]
    fn a_public_key_prints_and_parses_back() {
        let key = SigningKey::from_seed([3; 32]);
        let text = key.public().to_string();
        assert_eq!(text.parse::<SubmitterKey>(), Ok(key.public()));
    }
}
