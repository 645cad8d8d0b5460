//! Credit: receipts for accepted runs, signed by the job's owner and kept by the executor.
//!
//! When the owner accepts a run's result (under the job's verification policy), it records the
//! run (task, attempt, fuel, output hash) for its executor; a batch of runs leaves as one
//! [`Receipt`], signed once (one ed25519 signature per batch, not per task), in
//! [`SchedMsg::Receipts`](super::SchedMsg::Receipts), apart from the scheduling messages. The
//! executor's peer scheduler keeps only receipts that name itself as executor, come from the owner
//! they name, and verify; the driver persists them.
//!
//! Invariants: a receipt's signature covers every field (domain-separated digest, so it can
//! never pass for a descriptor signature); [`Receipt::keys`] identify the runs it pays for, so a
//! store that counts one run per key counts no run twice, however often a receipt is replayed.

use crate::ids::{BlobHash, JobId, PeerId, TaskIndex};

/// One accepted run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct PaidRun {
    /// The task.
    pub task: TaskIndex,
    /// The run.
    pub attempt: u32,
    /// Fuel the run used: the credit it earns.
    pub fuel: u64,
    /// The output's hash.
    pub output: BlobHash,
}

/// An owner's signed statement that `executor` made these runs of `job`'s tasks and that their
/// results were accepted.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Receipt {
    /// The job.
    pub job: JobId,
    /// The owner that accepted them (its key signs the receipt).
    pub owner: PeerId,
    /// The peer that ran them.
    pub executor: PeerId,
    /// The runs.
    pub runs: Vec<PaidRun>,
    /// The owner's ed25519 signature of [`Receipt::digest`] (64 bytes).
    pub sig: Vec<u8>,
}

impl Receipt {
    /// The digest the owner signs.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"shoal/receipt/1");
        h.update(&self.job.0.to_le_bytes());
        h.update(&self.owner.0);
        h.update(&self.executor.0);
        h.update(&(self.runs.len() as u64).to_le_bytes());
        for r in &self.runs {
            h.update(&r.task.0.to_le_bytes());
            h.update(&r.attempt.to_le_bytes());
            h.update(&r.fuel.to_le_bytes());
            h.update(&r.output.0);
        }
        *h.finalize().as_bytes()
    }

    /// Whether `sig` is the owner's signature of the digest (`verify_strict`).
    pub fn verify(&self) -> bool {
        crate::ids::ed25519_verifies(&self.owner.0, &self.digest(), &self.sig)
    }

    /// The runs this receipt pays for, by key: one run per key counts.
    pub fn keys(&self) -> impl Iterator<Item = ((JobId, PeerId, TaskIndex, u32), &PaidRun)> {
        self.runs.iter().map(|r| ((self.job, self.owner, r.task, r.attempt), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;

    #[test]
    fn a_receipt_verifies_only_as_signed_by_its_owner() {
        let owner = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let run = PaidRun { task: TaskIndex(2), attempt: 3, fuel: 1_000, output: BlobHash::of(b"out") };
        let mut r = Receipt {
            job: JobId(1),
            owner: PeerId(owner.verifying_key().to_bytes()),
            executor: PeerId([4; 32]),
            runs: vec![run, PaidRun { task: TaskIndex(5), ..run }],
            sig: Vec::new(),
        };
        r.sig = owner.sign(&r.digest()).to_bytes().to_vec();
        assert!(r.verify());
        let mut more = r.clone();
        more.runs[1].fuel += 1;
        assert!(!more.verify(), "an inflated receipt does not verify");
        let mut other = r.clone();
        other.executor = PeerId([5; 32]);
        assert!(!other.verify(), "nor one claimed by another executor");
        let mut extra = r.clone();
        extra.runs.push(PaidRun { task: TaskIndex(6), ..run });
        assert!(!extra.verify(), "nor one with a run added");
        let mut self_signed = r.clone();
        let thief = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        self_signed.sig = thief.sign(&r.digest()).to_bytes().to_vec();
        assert!(!self_signed.verify(), "nor one signed by anyone but the owner it names");
    }
}
