//! Identifiers shared by every layer: peers, jobs, tasks and content-addressed blobs.
//!
//! Invariant: every id is a plain value (`Copy`, totally ordered, hashable) with a fixed-size
//! archived form, so ids can be used as map keys and inside rkyv messages without allocation.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;

/// Number of characters of a [`PeerId`]'s text form that [`PeerId::short`] keeps.
pub const SHORT_ID_CHARS: usize = 10;

/// Why a text could not be read as an id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseIdError {
    /// The text is not base32 (peer ids) or hex (hashes) of the right length.
    #[error("not a valid {kind}: expected {expected}, got {got:?}")]
    Invalid {
        /// Which kind of id was being parsed.
        kind: &'static str,
        /// What the text should look like.
        expected: &'static str,
        /// The text, cut to 80 characters.
        got: String,
    },
}

fn invalid(kind: &'static str, expected: &'static str, s: &str) -> ParseIdError {
    ParseIdError::Invalid { kind, expected, got: s.chars().take(80).collect() }
}

/// Whether `sig` is `key`'s ed25519 signature of `digest` (`verify_strict`: no malleable
/// signatures, no weak keys); false for anything malformed.
pub fn ed25519_verifies(key: &[u8; 32], digest: &[u8; 32], sig: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(key) else { return false };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
    key.verify_strict(digest, &sig).is_ok()
}

/// The text form of an ed25519 public key id: the key in lowercase base32 without padding (52
/// characters), copy-pasteable and case-insensitive on input.
macro_rules! key_id_text {
    ($name:ident, $kind:literal) => {
        impl $name {
            /// The first [`SHORT_ID_CHARS`] characters of the text form, for logs and tables.
            pub fn short(&self) -> String {
                let mut s = self.to_string();
                s.truncate(SHORT_ID_CHARS);
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                const EXPECTED: &str = "52 base32 characters (a-z, 2-7)";
                let bytes = BASE32_NOPAD
                    .decode(s.trim().to_ascii_uppercase().as_bytes())
                    .map_err(|_| invalid($kind, EXPECTED, s))?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| invalid($kind, EXPECTED, s))?;
                Ok($name(key))
            }
        }
    };
}

/// A peer's identity: its ed25519 public key (32 bytes).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct PeerId(pub [u8; 32]);

key_id_text!(PeerId, "peer id");

/// A submitter's signing identity: the ed25519 public key that signs its jobs' manifests (see
/// [`crate::job::seal`]), separate from any peer's identity key. Volunteers list the ones they
/// trust in `trusted_submitters`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct SubmitterKey(pub [u8; 32]);

key_id_text!(SubmitterKey, "submitter key");

/// The blake3 hash of a blob's bytes: blobs (modules, inputs, outputs) are named by their content.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    /// The hash in lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// The first 12 hex characters, for logs.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.short())
    }
}

impl FromStr for BlobHash {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "64 hex characters";
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.trim().as_bytes())
            .map_err(|_| invalid("blob hash", EXPECTED, s))?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| invalid("blob hash", EXPECTED, s))?;
        Ok(BlobHash(hash))
    }
}

/// A job: chosen by its owner at submission (random, 128 bits), unique across the swarm.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct JobId(pub u128);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl FromStr for JobId {
    type Err = ParseIdError;

    /// The 32 hexadecimal digits [`JobId`]'s `Display` prints.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "32 hexadecimal digits";
        let s = s.trim();
        if s.len() != 32 {
            return Err(invalid("job id", EXPECTED, s));
        }
        u128::from_str_radix(s, 16).map(JobId).map_err(|_| invalid("job id", EXPECTED, s))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({:08x})", (self.0 >> 96) as u32)
    }
}

/// A task within a job: its index in the job's task list.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct TaskIndex(pub u32);

impl fmt::Debug for TaskIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A task anywhere in the swarm: its job and its index in that job.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct TaskId {
    /// The job the task belongs to.
    pub job: JobId,
    /// The task's index in the job.
    pub index: TaskIndex,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}/{}", (self.job.0 >> 96) as u32, self.index.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_text_round_trips_and_is_case_insensitive() {
        let id = PeerId([7; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert_eq!(text.parse::<PeerId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<PeerId>(), Ok(id));
        assert_eq!(id.short().len(), SHORT_ID_CHARS);
    }

    #[test]
    fn bad_peer_id_text_is_refused_with_what_was_expected() {
        let err = "not-an-id".parse::<PeerId>().unwrap_err();
        assert!(err.to_string().contains("52 base32 characters"), "{err}");
        let too_short = PeerId([1; 32]).to_string()[..50].to_string();
        assert!(too_short.parse::<PeerId>().is_err());
    }

    #[test]
    fn blob_hash_hex_round_trips() {
        let h = BlobHash::of(b"hello");
        assert_eq!(h.to_hex(), blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(h.to_hex().parse::<BlobHash>(), Ok(h));
        assert!("zz".parse::<BlobHash>().is_err());
    }
}
