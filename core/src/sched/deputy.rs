//! Jobs that outlive their owner: the owner's journal, the job as it travels to deputies and to
//! disk, and the deputy's replica with its takeover rule.
//!
//! The owner writes a **journal**: one [`Change`] each time a task is accepted as done (its
//! output, holders, fuel and executor), is undone (its output lost, or discarded by
//! verification), or fails for good, and once if the job is cancelled. Placements, attempts and
//! leases are not journalled: they are rebuilt by re-issuing every task that is not done. The
//! journal is what the owner's node appends to disk (a restarted peer resumes from it) and what
//! it streams to its **deputies** ([`SchedMsg::Deputize`](super::SchedMsg) with the job and the
//! journal so far, then [`SchedMsg::Journal`](super::SchedMsg) batches).
//!
//! A [`Deputy`] keeps the replica. When membership says the owner is gone and every deputy
//! ranked before it is gone too, it takes over ([`Deputy::take_over`]): it becomes the owner of
//! the next **term**. Invariants: terms of a job are ordered by `(term, owner)`; a peer never
//! acts on an owner's descriptor below the highest `(term, owner)` it has seen for the job (see
//! `peer/accept.rs`), so a stale owner that comes back can place nothing; a deputy follows only
//! its owner's journal and ignores one that does not follow on (it asks again from where it
//! is); a restored owner never loses a journalled result (a `Done` stays done unless a later
//! `Undone` says so), and a result is journalled before anyone outside the owner hears of it.

use std::collections::BTreeSet;

use super::msg::{FailureKind, OutputRef};
use super::owner::{Owner, OwnerConfig};
use super::{DescSigner, PeerHint, Time, VerifyPolicy};
use crate::ids::{BlobHash, JobId, PeerId, TaskIndex};
use crate::job::{Input, InputSpec, Job, JobSeal, Limits, TaskSpec};

/// Attempts of a restored owner start at `term << ATTEMPT_TERM_SHIFT`, so they never repeat an
/// attempt number of an earlier term that a peer may still hold.
pub const ATTEMPT_TERM_SHIFT: u32 = 16;

/// One entry of an owner's journal.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum Change {
    /// Task `task` is done: its output, where it lives, its fuel and who ran it.
    Done {
        /// The task.
        task: TaskIndex,
        /// Its output (inline when small).
        output: OutputRef,
        /// Peers holding the output.
        holders: Vec<PeerId>,
        /// Fuel of the accepted run.
        fuel: u64,
        /// The peer whose run was accepted.
        executor: PeerId,
    },
    /// `peer` holds a copy of done task `task`'s output too (a consumer fetched it).
    Holder {
        /// The task.
        task: TaskIndex,
        /// The new holder.
        peer: PeerId,
    },
    /// Task `task` is no longer done (its output was lost, or its result discarded).
    Undone {
        /// The task.
        task: TaskIndex,
    },
    /// Task `task` failed for good: the job has failed.
    Failed {
        /// The task.
        task: TaskIndex,
        /// Why.
        kind: FailureKind,
    },
    /// The submitter cancelled the job.
    Cancelled,
}

/// One task of a [`JobRecord`].
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct TaskRecord {
    /// Its name.
    pub name: String,
    /// Its module.
    pub module: BlobHash,
    /// Arguments.
    pub args: Vec<String>,
    /// Inputs in order.
    pub inputs: Vec<Input>,
    /// Cost hint in fuel.
    pub cost: Option<u64>,
    /// Sandbox limits.
    pub limits: Limits,
}

/// A job as it travels to deputies and is stored on disk: the tasks, the submitter's seal, the
/// verification policy and what the submitter wants back.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// The tasks, by index.
    pub tasks: Vec<TaskRecord>,
    /// The submitter's seal, for a signed job.
    pub seal: Option<JobSeal>,
    /// The verification policy as `[kind, k, quorum]` (kind 0 none, 1 replicate, 2 adaptive);
    /// `None`: the owning peer's default.
    pub verify: Option<[u32; 3]>,
    /// Tasks whose outputs are the job's results.
    pub wanted: Vec<TaskIndex>,
    /// The peer that submitted it (who may cancel an unsigned job).
    pub submitter: PeerId,
    /// How long the outputs of the finished job stay fetchable, in milliseconds.
    pub retention_ms: u64,
}

/// Why a [`JobRecord`] is not a valid job.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The tasks do not form a job.
    #[error("the job's tasks are invalid: {0}")]
    Job(#[from] crate::job::JobError),
    /// The seal does not match the tasks.
    #[error("the job's seal does not match its tasks: {0}")]
    Seal(#[from] crate::job::SealError),
    /// A wanted output names no task, or the verification policy is unknown.
    #[error("the job record is malformed: {0}")]
    Malformed(&'static str),
}

impl JobRecord {
    /// The record of `job` submitted as `id` by `submitter`, whose results are the outputs of
    /// `wanted`, kept after it ends for the job's own retention time, else `retention_ms`.
    pub fn of(id: JobId, job: &Job, wanted: Vec<TaskIndex>, submitter: PeerId, retention_ms: u64) -> Self {
        let tasks = job
            .tasks()
            .iter()
            .map(|t| TaskRecord {
                name: t.name.clone(),
                module: t.module,
                args: t.args.clone(),
                inputs: t.inputs.clone(),
                cost: t.cost,
                limits: t.limits.clone(),
            })
            .collect();
        let verify = job.verify().map(|v| match v {
            VerifyPolicy::None => [0, 0, 0],
            VerifyPolicy::Replicate { k, quorum } => [1, k, quorum],
            VerifyPolicy::Adaptive => [2, 0, 0],
        });
        JobRecord {
            id,
            tasks,
            seal: job.manifest().map(|m| m.seal().clone()),
            verify,
            wanted,
            submitter,
            retention_ms: job
                .retention()
                .map_or(retention_ms, |r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The job again, validated as when it was submitted (names, acyclicity, the seal).
    pub fn to_job(&self) -> Result<Job, RecordError> {
        let n = self.tasks.len();
        let mut specs = Vec::with_capacity(n);
        for t in &self.tasks {
            let mut inputs = Vec::with_capacity(t.inputs.len());
            for input in &t.inputs {
                inputs.push(match *input {
                    Input::Blob { hash, size } => InputSpec::Blob { hash, size },
                    Input::Output(p) => match self.tasks.get(p.0 as usize) {
                        Some(p) => InputSpec::Output(p.name.clone()),
                        None => return Err(RecordError::Malformed("an input names no task")),
                    },
                });
            }
            specs.push(TaskSpec {
                name: t.name.clone(),
                module: t.module,
                args: t.args.clone(),
                inputs,
                cost: t.cost,
                limits: t.limits.clone(),
            });
        }
        let mut job = Job::new(specs)?;
        if let Some(seal) = &self.seal {
            if seal.job != self.id {
                return Err(RecordError::Malformed("the seal is for another job"));
            }
            job = job.with_seal(seal.clone())?;
        }
        if let Some([kind, k, quorum]) = self.verify {
            job = job.with_verify(match kind {
                0 => VerifyPolicy::None,
                1 => VerifyPolicy::Replicate { k, quorum },
                2 => VerifyPolicy::Adaptive,
                _ => return Err(RecordError::Malformed("unknown verification policy")),
            });
        }
        if self.wanted.iter().any(|w| w.0 as usize >= n) {
            return Err(RecordError::Malformed("a wanted output names no task"));
        }
        Ok(job.with_retention(std::time::Duration::from_millis(self.retention_ms)))
    }

    /// Every blob a deputy must hold to run the job alone: modules and literal inputs.
    pub fn blobs(&self) -> BTreeSet<BlobHash> {
        let mut set = BTreeSet::new();
        for t in &self.tasks {
            set.insert(t.module);
            for input in &t.inputs {
                if let Input::Blob { hash, .. } = input {
                    set.insert(*hash);
                }
            }
        }
        set
    }
}

/// How a job stands, as its owner or a deputy reports it
/// ([`SchedMsg::JobStatus`](super::SchedMsg)).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct JobReport {
    /// The job.
    pub job: JobId,
    /// The term the reporter knows.
    pub term: u32,
    /// The owner of that term.
    pub owner: PeerId,
    /// The reporter is that owner (else a deputy).
    pub by_owner: bool,
    /// Its deputies.
    pub deputies: Vec<PeerId>,
    /// The peer that submitted it.
    pub submitter: PeerId,
    /// The submitter's key, for a signed job.
    pub submitter_key: Option<[u8; 32]>,
    /// Tasks in the job.
    pub total: u32,
    /// Tasks done.
    pub done: u32,
    /// Tasks placed (queued or running) at peers.
    pub running: u32,
    /// Fuel of the accepted runs.
    pub fuel_used: u64,
    /// How it stands.
    pub phase: JobPhase,
    /// With `outputs` asked: each wanted task's index, name, output and holders (done ones only).
    pub outputs: Vec<WantedOutput>,
}

/// One result of a job, where it lives.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct WantedOutput {
    /// The task.
    pub task: TaskIndex,
    /// Its name.
    pub name: String,
    /// Its output.
    pub output: OutputRef,
    /// Peers holding it.
    pub holders: Vec<PeerId>,
}

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum JobPhase {
    /// Tasks are still running.
    Running,
    /// Every task is done.
    Done,
    /// A task failed for good: its name and why.
    Failed(String),
    /// The submitter cancelled it.
    Cancelled,
}

impl JobPhase {
    /// Whether the job has ended.
    pub fn ended(&self) -> bool {
        !matches!(self, JobPhase::Running)
    }

    /// A short lower-case name (`running`, `done`, `failed`, `cancelled`).
    pub fn name(&self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Done => "done",
            JobPhase::Failed(_) => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }
}

/// A done task as the journal has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoneTask {
    /// Its output.
    pub output: OutputRef,
    /// Peers holding it.
    pub holders: Vec<PeerId>,
    /// Fuel of the accepted run.
    pub fuel: u64,
    /// Who ran it.
    pub executor: PeerId,
}

/// The state a journal leaves each task in (`None`: not done).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Per task: how it was done, if it is.
    pub done: Vec<Option<DoneTask>>,
    /// The first task failure, if any.
    pub failed: Option<(TaskIndex, FailureKind)>,
    /// The job was cancelled.
    pub cancelled: bool,
}

impl Replayed {
    /// Replays `changes` over a job of `tasks` tasks (changes naming no task are skipped).
    pub fn of(tasks: usize, changes: &[Change]) -> Replayed {
        let mut r = Replayed { done: vec![None; tasks], failed: None, cancelled: false };
        for c in changes {
            match c {
                Change::Done { task, output, holders, fuel, executor } => {
                    if let Some(slot) = r.done.get_mut(task.0 as usize) {
                        *slot = Some(DoneTask {
                            output: output.clone(),
                            holders: holders.clone(),
                            fuel: *fuel,
                            executor: *executor,
                        });
                    }
                }
                Change::Holder { task, peer } => {
                    if let Some(Some(d)) = r.done.get_mut(task.0 as usize)
                        && !d.holders.contains(peer)
                    {
                        d.holders.push(*peer);
                    }
                }
                Change::Undone { task } => {
                    if let Some(slot) = r.done.get_mut(task.0 as usize) {
                        *slot = None;
                    }
                }
                Change::Failed { task, kind } => {
                    if r.failed.is_none() && (task.0 as usize) < tasks {
                        r.failed = Some((*task, kind.clone()));
                    }
                }
                Change::Cancelled => r.cancelled = true,
            }
        }
        r
    }

    /// Tasks done.
    pub fn done_count(&self) -> usize {
        self.done.iter().filter(|d| d.is_some()).count()
    }
}

/// What a deputy made of a journal batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalOutcome {
    /// Applied; the replica now holds this many changes.
    Applied(u64),
    /// It does not follow on: the replica holds this many changes (ask the owner from there).
    Gap(u64),
    /// It comes from a peer that is not this term's owner, or from an older term: ignored.
    Ignored,
}

/// A deputy's replica of one job.
#[derive(Debug, Clone)]
pub struct Deputy {
    record: JobRecord,
    job: Job,
    term: u32,
    owner: PeerId,
    deputies: Vec<PeerId>,
    changes: Vec<Change>,
    /// Kept as changes arrive, so [`Deputy::ended`] costs nothing: tasks done, and whether
    /// the job failed or was cancelled.
    done: Vec<bool>,
    done_count: usize,
    over: bool,
}

impl Deputy {
    /// A replica of `record` owned by `owner` in `term`, with `deputies` in takeover order and
    /// the journal so far. Refuses a record that is not a valid job.
    pub fn new(
        record: JobRecord,
        term: u32,
        owner: PeerId,
        deputies: Vec<PeerId>,
        changes: Vec<Change>,
    ) -> Result<Deputy, RecordError> {
        let job = record.to_job()?;
        let n = job.len();
        let mut d = Deputy {
            record,
            job,
            term,
            owner,
            deputies,
            changes,
            done: vec![false; n],
            done_count: 0,
            over: false,
        };
        d.recount();
        Ok(d)
    }

    /// Rebuilds the running tallies from the whole journal.
    fn recount(&mut self) {
        self.done = vec![false; self.job.len()];
        self.done_count = 0;
        self.over = false;
        for k in 0..self.changes.len() {
            let c = self.changes[k].clone();
            self.tally(&c);
        }
    }

    fn tally(&mut self, c: &Change) {
        match c {
            Change::Done { task, .. } => {
                if let Some(d) = self.done.get_mut(task.0 as usize)
                    && !*d
                {
                    *d = true;
                    self.done_count += 1;
                }
            }
            Change::Undone { task } => {
                if let Some(d) = self.done.get_mut(task.0 as usize)
                    && *d
                {
                    *d = false;
                    self.done_count -= 1;
                }
            }
            Change::Failed { .. } | Change::Cancelled => self.over = true,
            Change::Holder { .. } => {}
        }
    }

    /// Whether the journal says the job ended (every task done, a task failed, or cancelled).
    pub fn ended(&self) -> bool {
        self.over || self.done_count == self.job.len()
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.record.id
    }

    /// The job as submitted.
    pub fn record(&self) -> &JobRecord {
        &self.record
    }

    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The term followed.
    pub fn term(&self) -> u32 {
        self.term
    }

    /// The owner of that term.
    pub fn owner(&self) -> PeerId {
        self.owner
    }

    /// The deputies, in takeover order.
    pub fn deputies(&self) -> &[PeerId] {
        &self.deputies
    }

    /// The journal held.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// A newer `Deputize` from `from` for `term`: replaces the replica if `(term, from)` is not
    /// older than the one followed. Returns whether it did.
    pub fn handle_deputize(
        &mut self,
        from: PeerId,
        term: u32,
        deputies: Vec<PeerId>,
        changes: Vec<Change>,
    ) -> bool {
        if (term, from) < (self.term, self.owner) {
            return false;
        }
        self.deputies = deputies;
        // The same owner's journal only grows: a snapshot shorter than what is held is an old
        // one that arrived late (a node's deputize travels as blobs, fetched while newer
        // batches arrive), and must not undo them.
        if (term, from) == (self.term, self.owner) && changes.len() < self.changes.len() {
            return true;
        }
        self.term = term;
        self.owner = from;
        self.changes = changes;
        self.recount();
        true
    }

    /// A journal batch from `from`, with the deputies' takeover order as the owner has it now.
    pub fn handle_journal(
        &mut self,
        from: PeerId,
        term: u32,
        seq: u64,
        changes: Vec<Change>,
        deputies: Vec<PeerId>,
    ) -> JournalOutcome {
        if from != self.owner || term != self.term {
            return JournalOutcome::Ignored;
        }
        if !deputies.is_empty() {
            self.deputies = deputies;
        }
        let have = self.changes.len() as u64;
        if seq > have {
            return JournalOutcome::Gap(have);
        }
        // Overlap with what is held is skipped (a resend after a gap).
        let skip = usize::try_from(have - seq).unwrap_or(usize::MAX);
        for c in changes.into_iter().skip(skip) {
            self.tally(&c);
            self.changes.push(c);
        }
        JournalOutcome::Applied(self.changes.len() as u64)
    }

    /// `from` says `owner` owns `term` now. A deputy believes the owner it follows handing over,
    /// or a fellow deputy that took over (never a stranger); returns whether it now follows
    /// `owner` in `term`.
    pub fn handle_new_owner(&mut self, from: PeerId, term: u32, owner: PeerId) -> bool {
        let newer = (term, owner) > (self.term, self.owner);
        let fellow = self.deputies.contains(&owner) && (from == owner || from == self.owner);
        if newer && fellow {
            self.term = term;
            self.owner = owner;
            true
        } else {
            false
        }
    }

    /// Whether `me` should take over now: the owner is down, and so is every deputy ranked
    /// before `me` (or `me` is not listed and every listed deputy is down).
    pub fn should_take_over(&self, me: PeerId, is_down: &dyn Fn(&PeerId) -> bool) -> bool {
        if !is_down(&self.owner) {
            return false;
        }
        self.deputies.iter().take_while(|&&d| d != me).all(is_down)
    }

    /// How the job stands, as this replica knows it; with `outputs`, where each wanted output
    /// that is done lives.
    pub fn report(&self, me: PeerId, outputs: bool) -> JobReport {
        let r = Replayed::of(self.job.len(), &self.changes);
        let mut report = report_of(
            &self.record,
            &self.job,
            &r,
            self.term,
            self.owner,
            me == self.owner,
            &self.deputies,
            0,
        );
        if outputs {
            for &i in &self.record.wanted {
                if let Some(Some(d)) = r.done.get(i.0 as usize) {
                    report.outputs.push(WantedOutput {
                        task: i,
                        name: self.job.task(i).name.clone(),
                        output: d.output.clone(),
                        holders: d.holders.clone(),
                    });
                }
            }
        }
        report
    }

    /// Follows `owner` in `term` (learnt from that owner's own report), keeping the journal.
    pub fn follow(&mut self, term: u32, owner: PeerId) {
        if (term, owner) > (self.term, self.owner) {
            self.term = term;
            self.owner = owner;
        }
    }

    /// The term a takeover starts: one above the one followed.
    pub fn next_term(&self) -> u32 {
        self.term.saturating_add(1)
    }

    /// Takes the job over as `me`, owner of `term` (normally [`Deputy::next_term`]; a handover
    /// names it): the journal's done tasks stay done, everything else is issued again. The
    /// other deputies are kept and told; the driver asks for more with
    /// [`Owner::set_deputies`].
    pub fn take_over(
        &self,
        me: PeerId,
        term: u32,
        cfg: OwnerConfig,
        view: &[PeerHint],
        signer: Box<dyn DescSigner>,
        now: Time,
    ) -> Owner {
        let deputies = self.deputies.iter().copied().filter(|&d| d != me && d != self.owner).collect();
        Owner::restore(
            self.job.clone(),
            self.record.clone(),
            term,
            &self.changes,
            deputies,
            me,
            cfg,
            view,
            signer,
            now,
        )
    }
}

/// A report of `record` in the state `r`.
#[allow(clippy::too_many_arguments, reason = "one call site each, all parts of one report")]
pub(crate) fn report_of(
    record: &JobRecord,
    job: &Job,
    r: &Replayed,
    term: u32,
    owner: PeerId,
    by_owner: bool,
    deputies: &[PeerId],
    running: u32,
) -> JobReport {
    let done = r.done_count();
    let phase = if r.cancelled {
        JobPhase::Cancelled
    } else if let Some((task, kind)) = &r.failed {
        JobPhase::Failed(format!("task {:?} failed: {}", job.task(*task).name, failure_text(kind)))
    } else if done == job.len() {
        JobPhase::Done
    } else {
        JobPhase::Running
    };
    JobReport {
        job: record.id,
        term,
        owner,
        by_owner,
        deputies: deputies.to_vec(),
        submitter: record.submitter,
        submitter_key: record.seal.as_ref().map(|s| s.submitter.0),
        total: job.len() as u32,
        done: done as u32,
        running,
        fuel_used: r.done.iter().flatten().map(|d| d.fuel).fold(0u64, u64::saturating_add),
        phase,
        outputs: Vec::new(),
    }
}

/// The submitter's words for a failure.
pub fn failure_text(kind: &FailureKind) -> String {
    match kind {
        FailureKind::Task(s) => s.clone(),
        FailureKind::InputLost { input } => format!("input {input} was lost on every holder"),
        FailureKind::Executor(s) => format!("no peer could run it: {s}"),
        FailureKind::Refused(r) => format!("no peer accepts it: it {r}"),
    }
}
