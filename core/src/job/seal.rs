//! Signed jobs: a submitter's ed25519 signature over a job's manifest, checkable one task at a
//! time by every peer that runs or passes on a task.
//!
//! The manifest of a job is a blake3 Merkle tree whose leaf `i` commits to task `i` as the
//! submitter wrote it: its index, module hash, arguments, limits and inputs (a literal input by
//! hash and size, another task's output by the producer's index). The submitter signs a
//! [`JobSeal`]: the job id, the number of tasks, the tree's root, an expiry (Unix milliseconds)
//! and its own public key ([`SubmitterKey`], not the peer's identity key). Every descriptor of
//! a sealed job carries the seal and the task's [`SealProof`] (the leaf's path to the root, and
//! which of its inputs are outputs of which producers), so a peer checks a task on its own
//! without the rest of the job: the signature once per job (it is cached), the path per task.
//!
//! Invariants: [`Manifest::sign`] and [`SealProof::check`] agree on the leaf encoding (both go
//! through [`leaf`]); a proof checks only against the exact module, arguments, limits and literal
//! inputs the submitter signed, for the exact index; every check is total (never panics) on
//! whatever a peer sends. What a seal does not cover: the *bytes* of an output input (the owner
//! vouches for them by its descriptor signature; see `docs/trust.md`), and which peer owns the
//! job (a copied seal runs only the work its submitter signed, until it expires).

use ed25519_dalek::{Signer as _, SigningKey};

use super::{Input, Job, Limits};
use crate::ids::{BlobHash, JobId, SubmitterKey, TaskIndex};

/// The submitter's signed statement about a job (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct JobSeal {
    /// The job it seals.
    pub job: JobId,
    /// The submitter's public key.
    pub submitter: SubmitterKey,
    /// Tasks in the job (the tree's leaf count).
    pub tasks: u32,
    /// Root of the manifest's Merkle tree.
    pub root: [u8; 32],
    /// After this instant (Unix milliseconds) no peer takes a task of the job.
    pub expires_unix_ms: u64,
    /// ed25519 signature of [`JobSeal::digest`] by `submitter` (64 bytes).
    pub sig: Vec<u8>,
}

impl JobSeal {
    /// The digest the submitter signs: every field but the signature, domain-separated.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"shoal/job-seal/1");
        h.update(&self.job.0.to_le_bytes());
        h.update(&self.submitter.0);
        h.update(&self.tasks.to_le_bytes());
        h.update(&self.root);
        h.update(&self.expires_unix_ms.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Whether `sig` is `submitter`'s signature of the digest (`verify_strict`).
    pub fn verify_signature(&self) -> bool {
        crate::ids::ed25519_verifies(&self.submitter.0, &self.digest(), &self.sig)
    }
}

/// What a descriptor carries to prove its task is task `index` of a sealed job.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct SealProof {
    /// The job's seal.
    pub seal: JobSeal,
    /// Sibling hashes from the leaf up to the root (levels where the node has no sibling are
    /// skipped; the verifier knows which from `seal.tasks`).
    pub path: Vec<[u8; 32]>,
    /// `(input position, producer index)` for each input that is another task's output; every
    /// other input is a literal one, checked by its hash and size.
    pub outputs: Vec<(u32, u32)>,
}

/// Why a seal or a proof does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The signature is not the submitter's over this seal.
    #[error("the job's signature does not verify")]
    BadSignature,
    /// The task does not match what the submitter signed (module, arguments, limits, inputs or
    /// index), or the proof is malformed.
    #[error("the task does not match its signed manifest")]
    NotInManifest,
    /// The seal names another job, or a different number of tasks than the job has.
    #[error("the seal is for another job")]
    OtherJob,
}

/// One input of a task, as a leaf commits to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafInput {
    /// A literal blob.
    Blob {
        /// Its hash.
        hash: BlobHash,
        /// Its size in bytes.
        size: u64,
    },
    /// The output of task `0`.
    Output(u32),
}

/// The leaf hash of task `index` with these fields.
pub fn leaf(
    index: u32,
    module: &BlobHash,
    args: &[String],
    limits: &Limits,
    inputs: impl ExactSizeIterator<Item = LeafInput>,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"shoal/task-leaf/1");
    h.update(&index.to_le_bytes());
    h.update(&module.0);
    h.update(&(args.len() as u64).to_le_bytes());
    for a in args {
        h.update(&(a.len() as u64).to_le_bytes());
        h.update(a.as_bytes());
    }
    for v in [limits.fuel, limits.memory_bytes, limits.output_bytes, limits.deadline_ms] {
        match v {
            Some(v) => h.update(&[1]).update(&v.to_le_bytes()),
            None => h.update(&[0]),
        };
    }
    h.update(&(inputs.len() as u64).to_le_bytes());
    for input in inputs {
        match input {
            LeafInput::Blob { hash, size } => h.update(&[0]).update(&hash.0).update(&size.to_le_bytes()),
            LeafInput::Output(p) => h.update(&[1]).update(&p.to_le_bytes()),
        };
    }
    *h.finalize().as_bytes()
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"shoal/manifest-node/1");
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

fn job_leaf(job: &Job, i: usize) -> [u8; 32] {
    let t = &job.tasks()[i];
    let inputs = t.inputs.iter().map(|input| match *input {
        Input::Blob { hash, size } => LeafInput::Blob { hash, size },
        Input::Output(p) => LeafInput::Output(p.0),
    });
    leaf(i as u32, &t.module, &t.args, &t.limits, inputs)
}

/// A sealed job's Merkle tree, kept by the owner to hand each descriptor its proof.
#[derive(Clone, Debug)]
pub struct Manifest {
    seal: JobSeal,
    /// `levels[0]` are the leaves; each next level pairs the one below (an odd last node moves up
    /// unchanged); the last level is the root alone.
    levels: Vec<Vec<[u8; 32]>>,
}

impl Manifest {
    fn tree(job: &Job) -> Vec<Vec<[u8; 32]>> {
        let mut levels = vec![(0..job.len()).map(|i| job_leaf(job, i)).collect::<Vec<_>>()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let up = below.chunks(2).map(|p| if let [l, r] = p { node(l, r) } else { p[0] }).collect();
            levels.push(up);
        }
        levels
    }

    fn root(levels: &[Vec<[u8; 32]>]) -> [u8; 32] {
        levels.last().and_then(|l| l.first()).copied().unwrap_or_default()
    }

    /// Seals `job` as `id` with the submitter's `key`, valid until `expires_unix_ms`.
    pub fn sign(job: &Job, id: JobId, key: &SigningKey, expires_unix_ms: u64) -> Manifest {
        let levels = Self::tree(job);
        let mut seal = JobSeal {
            job: id,
            submitter: SubmitterKey(key.verifying_key().to_bytes()),
            tasks: job.len() as u32,
            root: Self::root(&levels),
            expires_unix_ms,
            sig: Vec::new(),
        };
        seal.sig = key.sign(&seal.digest()).to_bytes().to_vec();
        Manifest { seal, levels }
    }

    /// Checks a seal made elsewhere against `job` (same tasks, valid signature).
    pub fn check(job: &Job, seal: JobSeal) -> Result<Manifest, SealError> {
        if seal.tasks as usize != job.len() {
            return Err(SealError::OtherJob);
        }
        if !seal.verify_signature() {
            return Err(SealError::BadSignature);
        }
        let levels = Self::tree(job);
        if Self::root(&levels) != seal.root {
            return Err(SealError::NotInManifest);
        }
        Ok(Manifest { seal, levels })
    }

    /// The seal.
    pub fn seal(&self) -> &JobSeal {
        &self.seal
    }

    /// The proof for task `i` of `job` (the job this manifest was made from).
    pub fn proof(&self, job: &Job, i: TaskIndex) -> SealProof {
        let mut path = Vec::new();
        let mut k = i.0 as usize;
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            if let Some(sibling) = level.get(k ^ 1) {
                path.push(*sibling);
            }
            k /= 2;
        }
        let outputs = job.tasks()[i.0 as usize]
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(pos, input)| match input {
                Input::Output(p) => Some((pos as u32, p.0)),
                Input::Blob { .. } => None,
            })
            .collect();
        SealProof { seal: self.seal.clone(), path, outputs }
    }
}

impl SealProof {
    /// Whether this proof shows that task `index` with these fields is in the sealed manifest.
    /// `inputs` are the descriptor's inputs as `(hash, size, producer if a continuation)`. The
    /// seal's signature is checked separately ([`JobSeal::verify_signature`], cached by callers).
    pub fn check(
        &self,
        index: u32,
        module: &BlobHash,
        args: &[String],
        limits: &Limits,
        inputs: &[(BlobHash, u64, Option<u32>)],
    ) -> Result<(), SealError> {
        let n = self.seal.tasks;
        if index >= n || self.outputs.len() > inputs.len() {
            return Err(SealError::NotInManifest);
        }
        let mut leaf_inputs = Vec::with_capacity(inputs.len());
        for (pos, &(hash, size, after)) in inputs.iter().enumerate() {
            let producer = self.outputs.iter().find(|(p, _)| *p as usize == pos).map(|&(_, t)| t);
            leaf_inputs.push(match (producer, after) {
                (Some(p), Some(a)) if p != a => return Err(SealError::NotInManifest),
                (Some(p), _) => LeafInput::Output(p),
                (None, Some(_)) => return Err(SealError::NotInManifest),
                (None, None) => LeafInput::Blob { hash, size },
            });
        }
        let mut hash = leaf(index, module, args, limits, leaf_inputs.into_iter());
        let (mut k, mut width) = (index as usize, n as usize);
        let mut path = self.path.iter();
        while width > 1 {
            let has_sibling = (k ^ 1) < width;
            if has_sibling {
                let Some(sibling) = path.next() else { return Err(SealError::NotInManifest) };
                hash = if k % 2 == 0 { node(&hash, sibling) } else { node(sibling, &hash) };
            }
            k /= 2;
            width = width.div_ceil(2);
        }
        if path.next().is_some() || hash != self.seal.root {
            return Err(SealError::NotInManifest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{InputSpec, TaskSpec};

    fn job(n: usize) -> Job {
        let m = BlobHash::of(b"module");
        let mut specs = vec![TaskSpec::new("t0", m)];
        for i in 1..n {
            let mut s = TaskSpec::new(format!("t{i}"), m).after(format!("t{}", i / 2));
            s.args = vec![i.to_string()];
            s.inputs.push(InputSpec::Blob { hash: BlobHash::of(&[i as u8]), size: 1 });
            specs.push(s);
        }
        Job::new(specs).unwrap()
    }

    fn desc_inputs(job: &Job, i: usize) -> Vec<(BlobHash, u64, Option<u32>)> {
        job.tasks()[i]
            .inputs
            .iter()
            .map(|input| match *input {
                Input::Blob { hash, size } => (hash, size, None),
                // An output already made: the descriptor carries its hash, not its producer.
                Input::Output(_) => (BlobHash::of(b"some output"), 42, None),
            })
            .collect()
    }

    #[test]
    fn every_task_of_jobs_of_every_size_proves_against_the_signed_root() {
        let key = SigningKey::from_bytes(&[7; 32]);
        for n in [1, 2, 3, 5, 8, 13, 64, 100] {
            let job = job(n);
            let m = Manifest::sign(&job, JobId(n as u128), &key, 1_000);
            assert!(m.seal().verify_signature());
            assert!(Manifest::check(&job, m.seal().clone()).is_ok());
            for i in 0..n {
                let t = &job.tasks()[i];
                let proof = m.proof(&job, TaskIndex(i as u32));
                assert_eq!(
                    proof.check(i as u32, &t.module, &t.args, &t.limits, &desc_inputs(&job, i)),
                    Ok(()),
                    "n {n} task {i}"
                );
            }
        }
    }

    #[test]
    fn any_change_to_a_task_or_the_seal_is_caught() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let job = job(9);
        let m = Manifest::sign(&job, JobId(1), &key, 1_000);
        let t = &job.tasks()[5];
        let inputs = desc_inputs(&job, 5);
        let proof = m.proof(&job, TaskIndex(5));
        let check =
            |p: &SealProof, i: u32, module: &BlobHash, args: &[String], limits: &Limits, inputs: &[_]| {
                p.check(i, module, args, limits, inputs)
            };
        let bad = Err(SealError::NotInManifest);
        assert_eq!(check(&proof, 4, &t.module, &t.args, &t.limits, &inputs), bad, "another index");
        assert_eq!(check(&proof, 5, &BlobHash::of(b"evil"), &t.args, &t.limits, &inputs), bad, "module");
        assert_eq!(check(&proof, 5, &t.module, &["x".into()], &t.limits, &inputs), bad, "args");
        let more_fuel = Limits { fuel: Some(1), ..t.limits.clone() };
        assert_eq!(check(&proof, 5, &t.module, &t.args, &more_fuel, &inputs), bad, "limits");
        let mut literal = inputs.clone();
        literal[1].0 = BlobHash::of(b"other literal");
        assert_eq!(check(&proof, 5, &t.module, &t.args, &t.limits, &literal), bad, "literal input");
        let mut wrong_producer = inputs.clone();
        wrong_producer[0].2 = Some(1);
        assert_eq!(check(&proof, 5, &t.module, &t.args, &t.limits, &wrong_producer), bad, "producer");
        let mut right_producer = inputs.clone();
        right_producer[0].2 = Some(2);
        assert_eq!(check(&proof, 5, &t.module, &t.args, &t.limits, &right_producer), Ok(()));
        let mut short = proof.clone();
        short.path.pop();
        assert_eq!(check(&short, 5, &t.module, &t.args, &t.limits, &inputs), bad, "short path");
        let mut long = proof.clone();
        long.path.push([0; 32]);
        assert_eq!(check(&long, 5, &t.module, &t.args, &t.limits, &inputs), bad, "long path");
        let mut no_outputs = proof.clone();
        no_outputs.outputs.clear();
        assert_eq!(check(&no_outputs, 5, &t.module, &t.args, &t.limits, &inputs), bad, "input kinds");
        let mut later = m.seal().clone();
        later.expires_unix_ms += 1;
        assert!(!later.verify_signature(), "a changed expiry breaks the signature");
        let other = job.clone();
        let mut seal = m.seal().clone();
        seal.root[0] ^= 1;
        assert_eq!(Manifest::check(&other, seal).unwrap_err(), SealError::BadSignature);
        assert_eq!(Manifest::check(&self::job(3), m.seal().clone()).unwrap_err(), SealError::OtherJob);
    }
}
