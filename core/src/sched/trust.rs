//! The volunteer's trust policy: which submitters' and which modules' tasks this peer runs or
//! passes on, checked on every incoming descriptor before it is queued.
//!
//! A sealed task ([`SealProof`](crate::job::SealProof)) is checked in full: the seal belongs to
//! the task's job, its signature verifies (once per seal: [`SealCache`]), the task is in the
//! signed manifest, and it has not expired (the peer's wall clock is `epoch_unix_ms + now`, so
//! the check stays sans-IO). A task that fails any of these is refused whatever the policy. Then:
//! a module not on [`TrustPolicy::allowed_modules`] (when there is a list) is refused; a task
//! signed by one of [`TrustPolicy::trusted_submitters`] is taken; any other (unsigned, or signed
//! by a key the volunteer does not list) is taken only with [`TrustPolicy::accept_unsigned`].
//! Tasks of jobs the peer owns itself are not checked: a peer trusts its own submissions.
//!
//! Invariant: [`TrustPolicy::check`] is total; it never panics on what a descriptor carries.

use std::collections::{BTreeSet, HashSet};

use super::Time;
use super::msg::TaskDesc;
use crate::ids::{BlobHash, SubmitterKey};

/// What a volunteer runs. The default takes every well-formed task (a library default; the
/// worker's default takes unsigned tasks only in a swarm with a swarm secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Take tasks that are not signed by a trusted submitter.
    pub accept_unsigned: bool,
    /// Submitters whose signed jobs are taken.
    pub trusted_submitters: BTreeSet<SubmitterKey>,
    /// When set, only these modules run here.
    pub allowed_modules: Option<BTreeSet<BlobHash>>,
    /// The Unix time, in milliseconds, of the driver's time zero (for expiry).
    pub epoch_unix_ms: u64,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            accept_unsigned: true,
            trusted_submitters: BTreeSet::new(),
            allowed_modules: None,
            epoch_unix_ms: 0,
        }
    }
}

/// Why the trust policy refused a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum TrustRefusal {
    /// The job is not signed and the peer takes only its trusted submitters' jobs.
    Unsigned,
    /// The job is signed by a submitter the peer does not list.
    Untrusted(SubmitterKey),
    /// The module is not on the peer's allow-list.
    Module(BlobHash),
    /// The seal's signature does not verify, or the task is not in the signed manifest.
    BadSeal,
    /// The seal expired at this Unix time (milliseconds).
    Expired(u64),
}

impl std::fmt::Display for TrustRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustRefusal::Unsigned => f.write_str(
                "is not signed, and the peer accepts jobs only from its trusted submitters \
                 (sign it with `shoal submit --sign-key`, or set accept_unsigned on the workers)",
            ),
            TrustRefusal::Untrusted(key) => write!(
                f,
                "is signed by submitter {key}, and the peer accepts jobs only from its trusted \
                 submitters (list the key in the workers' trusted_submitters)"
            ),
            TrustRefusal::Module(m) => {
                write!(f, "runs module {m}, which is not in the peer's allowed_modules")
            }
            TrustRefusal::BadSeal => {
                f.write_str("carries a signature or manifest that does not verify (tampered or forged)")
            }
            TrustRefusal::Expired(at) => write!(
                f,
                "was signed to expire at Unix time {}.{:03} s, which has passed (sign it again)",
                at / 1000,
                at % 1000
            ),
        }
    }
}

/// Seal digests whose signature verified here, so one job's tasks cost one signature check.
#[derive(Debug, Default)]
pub struct SealCache {
    good: HashSet<[u8; 32]>,
}

/// Most seals remembered as verified (the set is cleared when full).
const SEALS_MAX: usize = 4096;

impl SealCache {
    fn verified(&mut self, seal: &crate::job::JobSeal) -> bool {
        let digest = seal.digest();
        if self.good.contains(&digest) {
            return true;
        }
        if !seal.verify_signature() {
            return false;
        }
        if self.good.len() >= SEALS_MAX {
            self.good.clear();
        }
        self.good.insert(digest);
        true
    }
}

impl TrustPolicy {
    /// Whether this peer would hold (and may come to own) a whole job: sealed by `seal`
    /// (already checked against the job) and running `modules`. The same rules as for one
    /// task, but for every module at once; expiry is checked task by task when they run.
    pub fn admits_job(
        &self,
        seal: Option<&crate::job::JobSeal>,
        modules: &[BlobHash],
    ) -> Result<(), TrustRefusal> {
        if let Some(allowed) = &self.allowed_modules
            && let Some(m) = modules.iter().find(|m| !allowed.contains(m))
        {
            return Err(TrustRefusal::Module(*m));
        }
        match seal.map(|s| s.submitter) {
            Some(key) if self.trusted_submitters.contains(&key) => Ok(()),
            _ if self.accept_unsigned => Ok(()),
            Some(key) => Err(TrustRefusal::Untrusted(key)),
            None => Err(TrustRefusal::Unsigned),
        }
    }

    /// Whether this peer takes `desc` at time `now`.
    pub fn check(&self, desc: &TaskDesc, now: Time, seals: &mut SealCache) -> Result<(), TrustRefusal> {
        let signer = match &desc.seal {
            Some(proof) => {
                let seal = &proof.seal;
                if seal.job != desc.task.job || !seals.verified(seal) {
                    return Err(TrustRefusal::BadSeal);
                }
                let inputs: Vec<_> = (0..desc.inputs.len())
                    .map(|k| {
                        let input = &desc.inputs[k];
                        (input.hash, input.size, desc.producer_of(k).map(|(p, _)| p.0))
                    })
                    .collect();
                proof
                    .check(desc.task.index.0, &desc.module, &desc.args, &desc.limits, &inputs)
                    .map_err(|_| TrustRefusal::BadSeal)?;
                let wall =
                    u64::try_from(now.as_millis()).unwrap_or(u64::MAX).saturating_add(self.epoch_unix_ms);
                if wall > seal.expires_unix_ms {
                    return Err(TrustRefusal::Expired(seal.expires_unix_ms));
                }
                Some(seal.submitter)
            }
            None => None,
        };
        if let Some(allowed) = &self.allowed_modules
            && !allowed.contains(&desc.module)
        {
            return Err(TrustRefusal::Module(desc.module));
        }
        match signer {
            Some(key) if self.trusted_submitters.contains(&key) => Ok(()),
            _ if self.accept_unsigned => Ok(()),
            Some(key) => Err(TrustRefusal::Untrusted(key)),
            None => Err(TrustRefusal::Unsigned),
        }
    }
}
