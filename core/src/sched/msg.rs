//! The scheduling protocol's messages: the very values the simulator and the QUIC network carry.
//!
//! Routing rule (see [`SchedMsg::owner_job`]): [`SchedMsg::Claim`], [`SchedMsg::Done`] and
//! [`SchedMsg::Failed`] go to the [`Owner`](super::Owner) of the job they name; every other variant
//! goes to the receiving peer's [`PeerSched`](super::PeerSched). A message addressed to the sending
//! peer itself is delivered locally and never touches the network.
//!
//! Every run of a task carries an `attempt` number unique within that task, so reports of
//! different runs of one task (re-issues after faults, or replicas for verification) never mix.

use super::caps::Refusal;
use super::deputy::{Change, JobRecord, JobReport};
use super::receipt::Receipt;
use crate::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use crate::job::{Limits, SealProof};
pub use crate::sansio::LoadHint;

/// Where a task input can be obtained.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum InputSource {
    /// The bytes travel with the task (small outputs).
    Inline(Vec<u8>),
    /// Fetch by hash from any of these peers (the owner holds literal blobs).
    Holders(Vec<PeerId>),
    /// The output of task `task` of the same job, which is queued or running at the receiving peer
    /// (or just ran there): the descriptor is a *continuation* that waits there for its last
    /// producer and starts as soon as it is done, with no round trip to the owner. The input's
    /// `hash` and `size` are unknown (zero) until the peer fills them in from its own run; a peer
    /// that no longer holds `task` hands the continuation back ([`SchedMsg::Release`]).
    After {
        /// The producing task.
        task: TaskIndex,
        /// The producer has no other consumer, so its [`SchedMsg::Done`] may wait and travel with
        /// this task's (in `earlier`).
        merge: bool,
    },
}

/// One input of a task to run, in order.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct InputLoc {
    /// Content hash of the input.
    pub hash: BlobHash,
    /// Its size in bytes.
    pub size: u64,
    /// Where to get it.
    pub source: InputSource,
}

/// Everything a peer needs to run (or pass on) one attempt of a task.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct TaskDesc {
    /// The task.
    pub task: TaskId,
    /// The peer owning the task's job: reports and claims go there.
    pub owner: PeerId,
    /// The owner's term: 0 for the submitter's own, one more at each takeover by a deputy or
    /// resumption after a restart ([`crate::sched::deputy`]). A peer refuses a descriptor whose
    /// `(term, owner)` is below the highest it has seen for the job (a stale owner).
    pub term: u32,
    /// Which run of the task this is (unique per task, chosen by the owner).
    pub attempt: u32,
    /// How many times this attempt has been stolen (orders claims that race each other).
    pub hops: u32,
    /// Ready-queue priority (upward rank in fuel; higher runs first).
    pub priority: u64,
    /// The owner's estimate of the task's cost, in fuel.
    pub cost: u64,
    /// Content hash of the module to run.
    pub module: BlobHash,
    /// Arguments.
    pub args: Vec<String>,
    /// Inputs in order.
    pub inputs: Vec<InputLoc>,
    /// Sandbox limits.
    pub limits: Limits,
    /// How long the owner waits without hearing from the holder of this attempt before it
    /// re-issues it, in milliseconds (see [`SchedMsg::Renew`]).
    pub lease_ms: u64,
    /// Inputs the holder filled in locally from a producer's run here, after verifying the
    /// descriptor: `(input position, producer, merge)` as the owner signed them
    /// ([`InputSource::After`]). Not signed itself: [`TaskDesc::digest`] reads those inputs as
    /// the `After` the owner wrote.
    pub filled: Vec<(u32, TaskIndex, bool)>,
    /// The submitter's seal of the job and this task's proof in its manifest, when the job is
    /// signed (see [`crate::job::seal`]); checked by every peer's trust policy.
    pub seal: Option<SealProof>,
    /// The owner's ed25519 signature of [`TaskDesc::digest`] (64 bytes), so that a thief can check
    /// that the victim that passed the descriptor on did not alter it.
    pub sig: Vec<u8>,
}

impl TaskDesc {
    /// The producer this continuation waits for at its holder ([`InputSource::After`]), and
    /// whether that producer's report may travel with this task's.
    pub fn after(&self) -> Option<(TaskIndex, bool)> {
        self.inputs.iter().find_map(|i| match i.source {
            InputSource::After { task, merge } => Some((task, merge)),
            _ => None,
        })
    }

    /// The producer whose output input `k` is, as the owner wrote it ([`InputSource::After`]),
    /// whether or not the holder has filled it in since; `None` for any other input.
    pub fn producer_of(&self, k: usize) -> Option<(TaskIndex, bool)> {
        match self.inputs.get(k)?.source {
            InputSource::After { task, merge } => Some((task, merge)),
            _ => self.filled.iter().find(|f| f.0 as usize == k).map(|f| (f.1, f.2)),
        }
    }
}

impl TaskDesc {
    /// The blake3 digest of the parts of this descriptor the owner fixed: task, owner, attempt,
    /// priority, cost, lease, module, args, each input's hash and size (or the producer, for a
    /// continuation's input, filled in or not), limits and the seal (not its proof path, which
    /// the seal's root checks). `hops`, input sources (where to fetch:
    /// hints, checked by hash) and `sig` are left out.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"shoal/task-desc/1");
        h.update(&self.task.job.0.to_le_bytes());
        h.update(&self.task.index.0.to_le_bytes());
        h.update(&self.owner.0);
        h.update(&self.term.to_le_bytes());
        h.update(&self.attempt.to_le_bytes());
        h.update(&self.priority.to_le_bytes());
        h.update(&self.cost.to_le_bytes());
        h.update(&self.lease_ms.to_le_bytes());
        h.update(&self.module.0);
        h.update(&(self.args.len() as u64).to_le_bytes());
        for a in &self.args {
            h.update(&(a.len() as u64).to_le_bytes());
            h.update(a.as_bytes());
        }
        h.update(&(self.inputs.len() as u64).to_le_bytes());
        for (k, input) in self.inputs.iter().enumerate() {
            match self.producer_of(k) {
                Some((task, merge)) => {
                    h.update(&[1]);
                    h.update(&task.0.to_le_bytes());
                    h.update(&[u8::from(merge)]);
                }
                None => {
                    h.update(&[0]);
                    h.update(&input.hash.0);
                    h.update(&input.size.to_le_bytes());
                }
            }
        }
        let l = &self.limits;
        for v in [l.fuel, l.memory_bytes, l.output_bytes, l.deadline_ms] {
            match v {
                Some(v) => h.update(&[1]).update(&v.to_le_bytes()),
                None => h.update(&[0]),
            };
        }
        match &self.seal {
            Some(proof) => h.update(&[1]).update(&proof.seal.digest()),
            None => h.update(&[0]),
        };
        *h.finalize().as_bytes()
    }

    /// Signs the descriptor with `signer` (the owner's key).
    pub fn sign(&mut self, signer: &dyn DescSigner) {
        self.sig = signer.sign(&self.digest()).to_vec();
    }

    /// Whether `sig` is `owner`'s signature of [`TaskDesc::digest`] (`verify_strict`).
    pub fn verify(&self) -> bool {
        crate::ids::ed25519_verifies(&self.owner.0, &self.digest(), &self.sig)
    }

    /// Estimated bytes of the inputs whose size is known, saturating.
    pub fn input_bytes(&self) -> u64 {
        self.inputs.iter().fold(0u64, |n, i| n.saturating_add(i.size))
    }
}

/// Signs descriptor digests with the owner's ed25519 key, which stays with the driver: the
/// [`Owner`](super::Owner) holds only this.
pub trait DescSigner: Send {
    /// The 64-byte ed25519 signature of `digest`.
    fn sign(&self, digest: &[u8; 32]) -> [u8; 64];
}

impl<F: Fn(&[u8; 32]) -> [u8; 64] + Send> DescSigner for F {
    fn sign(&self, digest: &[u8; 32]) -> [u8; 64] {
        self(digest)
    }
}

/// A signer for `key` (the driver keeps the key; this closure owns a copy).
pub fn key_signer(key: ed25519_dalek::SigningKey) -> Box<dyn DescSigner> {
    use ed25519_dalek::Signer as _;
    Box::new(move |d: &[u8; 32]| key.sign(d).to_bytes())
}

/// A successful run reported late, inside a later [`SchedMsg::Done`] of the same job (a producer
/// whose only consumer ran after it on the same peer: see [`InputSource::After`]).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct DoneReport {
    /// The task.
    pub task: TaskIndex,
    /// Which attempt.
    pub attempt: u32,
    /// The output.
    pub output: OutputRef,
    /// Fuel used.
    pub fuel: u64,
    /// Microseconds the run held its slot.
    pub busy_us: u64,
}

/// A finished task's output.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct OutputRef {
    /// Content hash of the output.
    pub hash: BlobHash,
    /// Its size in bytes.
    pub size: u64,
    /// The bytes themselves when small (see [`OwnerConfig::inline_max`](super::OwnerConfig)).
    pub inline: Option<Vec<u8>>,
}

/// Why a run of a task failed. Only [`FailureKind::Task`] is the task's own fault.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum FailureKind {
    /// The task failed deterministically (trap, non-zero exit, a limit): running it again on
    /// another peer gives the same failure. The text says which, for the submitter.
    Task(String),
    /// Input number `input` could not be fetched from any listed holder.
    InputLost {
        /// Position of the input.
        input: u32,
    },
    /// The executing peer could not run it (shutting down, out of resources, internal error).
    Executor(String),
    /// The peer refuses the task: it asks more than one of the volunteer's caps
    /// ([`TaskCaps`](super::TaskCaps)). Not a fault of the task or the peer: the owner places it on
    /// a peer that accepts it, and fails the job with this reason when none does.
    Refused(Refusal),
}

/// Where a peer named in a message can be reached: filled in by the driver (the state machines
/// leave these lists empty) so that a receiver can reach an owner or an input holder it has never
/// heard of — a thief that stole a task from a peer it knows, of an owner it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct PeerAddr {
    /// The peer.
    pub peer: PeerId,
    /// An address it was reached at.
    pub addr: std::net::SocketAddr,
}

/// A scheduling message.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum SchedMsg {
    /// Owner → peer: put these tasks in your ready queue.
    Assign {
        /// The tasks.
        tasks: Vec<TaskDesc>,
        /// Addresses of the owners and input holders the tasks name (see [`PeerAddr`]).
        addrs: Vec<PeerAddr>,
    },
    /// Thief → victim: give me up to `max` ready tasks.
    Steal {
        /// Most tasks the thief wants.
        max: u32,
        /// The thief's load.
        load: LoadHint,
    },
    /// Victim → thief: the answer to a [`SchedMsg::Steal`], possibly empty.
    Stolen {
        /// The tasks given away, highest priority first.
        tasks: Vec<TaskDesc>,
        /// The victim's load after giving them.
        load: LoadHint,
        /// Addresses of the owners and input holders the tasks name (see [`PeerAddr`]).
        addrs: Vec<PeerAddr>,
    },
    /// Victim → owner: these attempts of `job`'s tasks were just stolen by `holder`. Sent by the
    /// victim, so the owner learns the new holder even if the thief dies before running them.
    Claim {
        /// The job.
        job: JobId,
        /// The thief now holding them.
        holder: PeerId,
        /// `(task, attempt, hops)`: `hops` as carried by the stolen descriptor.
        tasks: Vec<(TaskIndex, u32, u32)>,
    },
    /// Executor → owner: an attempt finished; the output stays on the executor (unless inline).
    Done {
        /// The task.
        task: TaskId,
        /// Which attempt.
        attempt: u32,
        /// The output.
        output: OutputRef,
        /// Fuel used.
        fuel: u64,
        /// Microseconds the run held its slot (fetching inputs and running), as the executor's
        /// clock measured it: the submitter's CPU-time figure.
        busy_us: u64,
        /// The executor's load once the run ended (lets the owner place work where slots are free).
        load: LoadHint,
        /// Earlier runs of the same job on the same executor whose reports waited for this one
        /// (producers of continuations), oldest first; the owner takes them before this one.
        earlier: Vec<DoneReport>,
    },
    /// Executor → owner: an attempt failed.
    Failed {
        /// The task.
        task: TaskId,
        /// Which attempt.
        attempt: u32,
        /// Why.
        kind: FailureKind,
    },
    /// Holder → owner: these queued attempts of `job`'s tasks are handed back unrun. With
    /// `leaving`, because the holder is leaving the swarm: the owner re-issues them elsewhere at
    /// once (it is not a fault) and places nothing more on the holder. Without, they are
    /// continuations whose producer the holder no longer has (it was stolen or failed meanwhile):
    /// the owner places them again once their producer is done.
    Release {
        /// The job.
        job: JobId,
        /// `(task, attempt, hops)`: `hops` as carried by the descriptor (orders it against claims).
        tasks: Vec<(TaskIndex, u32, u32)>,
        /// The holder is leaving the swarm.
        leaving: bool,
    },
    /// Holder → owner: these attempts of `job`'s tasks are still queued, running or reported
    /// later here (keeps their leases alive; sent only for attempts held longer than a third of
    /// their lease since the holder last spoke of them).
    Renew {
        /// The job.
        job: JobId,
        /// `(task, attempt)`.
        tasks: Vec<(TaskIndex, u32)>,
    },
    /// Owner → a peer holding some of `job`'s tasks: the job is over (cancelled or failed); drop
    /// its queued tasks.
    Cancel {
        /// The job.
        job: JobId,
    },
    /// Owner → executor: signed receipts for its accepted runs (credit, see
    /// [`receipt`](super::receipt)); batched, and not a scheduling message.
    Receipts {
        /// The receipts, each naming the receiver as executor.
        receipts: Vec<Receipt>,
    },
    /// Owner → deputy: keep a replica of `job` (see [`crate::sched::deputy`]): the job itself,
    /// the owner's term, its deputies in takeover order, and every change so far.
    Deputize {
        /// The job, as submitted.
        record: Box<JobRecord>,
        /// The owner's term.
        term: u32,
        /// The deputies, in takeover order (the receiver among them).
        deputies: Vec<PeerId>,
        /// Every change of the owner's journal so far, in order.
        changes: Vec<Change>,
    },
    /// Owner → deputy: the next changes of `job`'s journal, the first being change number `seq`.
    Journal {
        /// The job.
        job: JobId,
        /// The owner's term.
        term: u32,
        /// The number of the first change (the count of changes before it).
        seq: u64,
        /// The changes, in order.
        changes: Vec<Change>,
        /// The deputies in takeover order now (those holding the job first).
        deputies: Vec<PeerId>,
    },
    /// [`SchedMsg::Deputize`] as a node sends it: the job's record and the journal so far are
    /// blobs (rkyv forms of a `JobRecord` and a `Vec<Change>`) held by the sender, for the
    /// deputy to fetch: a big job's record does not fit in a frame.
    DeputizeBlobs {
        /// The job.
        job: JobId,
        /// The owner's term.
        term: u32,
        /// The deputies, in takeover order.
        deputies: Vec<PeerId>,
        /// The record's blob.
        record: crate::ids::BlobHash,
        /// The journal's blob.
        changes: crate::ids::BlobHash,
    },
    /// Deputy → owner: the deputy holds `job` (its modules and literal inputs too) and its
    /// journal up to `seq` changes. Sent for a `Deputize` once the blobs are stored, and for a
    /// `Journal` that does not follow on (a gap: the owner sends the journal again from `seq`).
    Deputized {
        /// The job.
        job: JobId,
        /// The term acknowledged.
        term: u32,
        /// Changes held.
        seq: u64,
    },
    /// New owner → the job's deputies (and the owner it replaces): `term` of `job` is owned by
    /// the sender now; a deputy follows it, an owner with a lower `(term, id)` steps down. An
    /// owner or deputy also says it to a peer that spoke for a lower term, naming the owner it
    /// knows (`owner`).
    NewOwner {
        /// The job.
        job: JobId,
        /// The new term.
        term: u32,
        /// The owner of that term.
        owner: PeerId,
    },
    /// Any peer → a job's owner or deputies: how is `job`? Answered with [`SchedMsg::JobStatus`]
    /// (by owners and deputies; others stay silent). `job: None` asks for every job the
    /// receiver owns, deputizes for or finished (one answer each).
    JobQuery {
        /// The job (`None`: all).
        job: Option<JobId>,
        /// Ask for the outputs' locations too (for `shoal job wait`).
        outputs: bool,
    },
    /// The answer to a [`SchedMsg::JobQuery`].
    JobStatus(Box<JobReport>),
    /// Submitter → a job's owner: cancel the job. `sig` is the ed25519 signature of
    /// [`cancel_digest`] by the job's submitter key (the seal's) or, for an unsigned job, by the
    /// peer that submitted it.
    CancelJob {
        /// The job.
        job: JobId,
        /// The signature.
        sig: Vec<u8>,
    },
}

/// The digest a submitter signs to cancel `job`.
pub fn cancel_digest(job: JobId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"shoal/cancel-job/1");
    h.update(&job.0.to_le_bytes());
    *h.finalize().as_bytes()
}

impl SchedMsg {
    /// The job whose owner must handle this message, or `None` if the peer scheduler handles it.
    pub fn owner_job(&self) -> Option<JobId> {
        match self {
            SchedMsg::Claim { job, .. } | SchedMsg::Release { job, .. } | SchedMsg::Renew { job, .. } => {
                Some(*job)
            }
            SchedMsg::Done { task, .. } | SchedMsg::Failed { task, .. } => Some(task.job),
            SchedMsg::Deputized { job, .. } => Some(*job),
            SchedMsg::Deputize { .. }
            | SchedMsg::DeputizeBlobs { .. }
            | SchedMsg::Journal { .. }
            | SchedMsg::NewOwner { .. }
            | SchedMsg::JobQuery { .. }
            | SchedMsg::JobStatus(_)
            | SchedMsg::CancelJob { .. } => None,
            SchedMsg::Assign { .. }
            | SchedMsg::Steal { .. }
            | SchedMsg::Stolen { .. }
            | SchedMsg::Cancel { .. }
            | SchedMsg::Receipts { .. } => None,
        }
    }

    /// Whether the driver handles this message itself (job replicas, takeovers, queries and
    /// cancels: see [`crate::sched::deputy`]), rather than an owner or the peer scheduler.
    pub fn for_driver(&self) -> bool {
        matches!(
            self,
            SchedMsg::Deputize { .. }
                | SchedMsg::DeputizeBlobs { .. }
                | SchedMsg::Journal { .. }
                | SchedMsg::NewOwner { .. }
                | SchedMsg::JobQuery { .. }
                | SchedMsg::JobStatus(_)
                | SchedMsg::CancelJob { .. }
        )
    }

    /// The rkyv-serialised form (what goes in a frame).
    pub fn to_bytes(&self) -> Vec<u8> {
        match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(b) => b.into_vec(),
            // Serialising owned, in-memory values into a growable buffer cannot fail.
            Err(e) => unreachable!("serialising a SchedMsg failed: {e}"),
        }
    }

    /// Reads a message from untrusted bytes, validating them first.
    pub fn from_bytes(bytes: &[u8]) -> Result<SchedMsg, rkyv::rancor::Error> {
        rkyv::from_bytes::<SchedMsg, rkyv::rancor::Error>(bytes)
    }
}

/// A scheduling message to send.
pub type Transmit = crate::sansio::Transmit<SchedMsg>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_route() {
        let task = TaskId { job: JobId(7), index: TaskIndex(3) };
        let msg = SchedMsg::Done {
            task,
            attempt: 2,
            output: OutputRef { hash: BlobHash::of(b"x"), size: 1, inline: Some(b"x".to_vec()) },
            fuel: 99,
            busy_us: 1_500,
            load: LoadHint::default(),
            earlier: vec![DoneReport {
                task: TaskIndex(2),
                attempt: 1,
                output: OutputRef { hash: BlobHash::of(b"y"), size: 1, inline: None },
                fuel: 5,
                busy_us: 10,
            }],
        };
        let bytes = msg.to_bytes();
        assert_eq!(SchedMsg::from_bytes(&bytes).unwrap(), msg);
        assert_eq!(msg.owner_job(), Some(JobId(7)));
        let steal = SchedMsg::Steal { max: 4, load: LoadHint::default() };
        assert_eq!(steal.owner_job(), None);
        assert!(SchedMsg::from_bytes(&bytes[..bytes.len() / 2]).is_err());
        let release = SchedMsg::Release { job: JobId(7), tasks: vec![(TaskIndex(3), 2, 1)], leaving: true };
        assert_eq!(SchedMsg::from_bytes(&release.to_bytes()).unwrap(), release);
        assert_eq!(release.owner_job(), Some(JobId(7)), "a release goes to the job's owner");
        let cancel = SchedMsg::Cancel { job: JobId(7) };
        assert_eq!(SchedMsg::from_bytes(&cancel.to_bytes()).unwrap(), cancel);
        assert_eq!(cancel.owner_job(), None, "a cancel goes to the holder's peer scheduler");
    }
}
