//! A peer's long-term identity: an ed25519 key kept in the data directory.
//!
//! Invariants: the key file is created once, with mode 0600, written completely (temp file +
//! fsync + rename) before it is used, and reused on every later start; a key file readable by
//! group or others is refused rather than silently trusted. The [`PeerId`] is the public key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use rand::RngCore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shoal_core::ids::PeerId;

/// Name of the key file inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed; nothing was created.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("identity file {0} is corrupt (expected 32 bytes)")]
    Corrupt(PathBuf),
    /// The key file can be read by other users; it is not used.
    #[error("identity file {path} has mode {mode:o}; it must be 0600 (chmod 600 it)")]
    Permissions {
        /// The file concerned.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The certificate for the key could not be made.
    #[error("could not make the TLS certificate: {0}")]
    Cert(String),
}

/// A peer's key pair and the self-signed certificate that carries its public key.
pub struct Identity {
    key: SigningKey,
    cert: CertificateDer<'static>,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("peer_id", &self.peer_id()).finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the identity from `data_dir`, creating it (and the directory) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io { path: path.clone(), source };
        fs::create_dir_all(data_dir).map_err(io)?;
        match fs::read(&path) {
            Ok(bytes) => {
                let mode = fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::Permissions { path, mode });
                }
                let secret: [u8; 32] = bytes.try_into().map_err(|_| IdentityError::Corrupt(path.clone()))?;
                Self::from_secret(secret)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                let tmp = data_dir.join(format!(".{KEY_FILE}.tmp"));
                let _ = fs::remove_file(&tmp);
                let mut f =
                    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
                f.write_all(&secret).map_err(io)?;
                f.sync_all().map_err(io)?;
                fs::rename(&tmp, &path).map_err(io)?;
                if let Ok(d) = fs::File::open(data_dir) {
                    let _ = d.sync_all();
                }
                Self::from_secret(secret)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// An identity from a raw 32-byte ed25519 secret (tests, and keys kept elsewhere).
    pub fn from_secret(secret: [u8; 32]) -> Result<Self, IdentityError> {
        let key = SigningKey::from_bytes(&secret);
        let pkcs8 = key.to_pkcs8_der().map_err(|e| IdentityError::Cert(e.to_string()))?.as_bytes().to_vec();
        let cert = make_cert(&pkcs8)?;
        Ok(Identity { key, cert, pkcs8 })
    }

    /// A fresh random identity that is not stored anywhere.
    pub fn ephemeral() -> Result<Self, IdentityError> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    /// A signer of task descriptors with this identity's key (for the job owners this peer runs:
    /// see `shoal_core::sched::TaskDesc::sign`).
    pub fn desc_signer(&self) -> Box<dyn shoal_core::sched::DescSigner> {
        shoal_core::sched::key_signer(self.key.clone())
    }

    /// This identity's peer id (the public key).
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.key.verifying_key().to_bytes())
    }

    /// The self-signed certificate carrying the public key.
    pub fn cert(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// The private key in PKCS#8 form, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }
}

/// A self-signed certificate whose subject public key is the ed25519 key in `pkcs8`.
fn make_cert(pkcs8: &[u8]) -> Result<CertificateDer<'static>, IdentityError> {
    let der = PrivatePkcs8KeyDer::from(pkcs8.to_vec());
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
        .map_err(|e| IdentityError::Cert(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec!["shoal".to_string()])
        .map_err(|e| IdentityError::Cert(e.to_string()))?;
    let cert = params.self_signed(&kp).map_err(|e| IdentityError::Cert(e.to_string()))?;
    Ok(cert.der().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert_ne!(a.peer_id(), Identity::ephemeral().unwrap().peer_id());
        assert_eq!(crate::tls::peer_id_of_cert(&a.cert()).unwrap(), a.peer_id());
    }

    #[test]
    fn world_readable_or_corrupt_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Identity::load_or_create(dir.path()), Err(IdentityError::Permissions { .. })));
        fs::write(&path, b"short").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Identity::load_or_create(dir.path()), Err(IdentityError::Corrupt(_))));
    }
}
