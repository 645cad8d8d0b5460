//! Jobs that outlive their owner, as the actor drives them: journals on disk, replicas kept for
//! other owners, takeovers, handovers, and the queries and cancels of `shoal job`.
//!
//! - Every job owned here has a journal file (`crate::journal`): its changes are appended after
//!   each step, before the step's messages leave, so no result anyone outside heard of is
//!   missing from the file.
//! - A `Deputize` from an owner makes this peer a deputy: the job is checked (a valid record,
//!   and the volunteer's trust policy admits its submitter and modules), written to disk, its
//!   modules and literal inputs fetched from the owner, and only then acknowledged. `Journal`
//!   batches are appended as they come (a gap is answered with what is held).
//! - When membership shows the owner gone (and every deputy ranked before this one), or at
//!   once when the owner hands the job over to this peer, the replica becomes an owner of the
//!   next term ([`Deputy::take_over`]): done results stay done, the rest is issued again, and
//!   the wanted outputs are brought here when the job ends, where they stay for the job's
//!   retention time.
//! - A restarted peer reads its journals: a job it owned is resumed in a new term unless a
//!   deputy answers for a newer owner within `Config::takeover_grace`; a job it deputized for is
//!   followed again.
//!
//! Invariants: a replica takes over only once it holds the job's blobs; an owner that hears of
//! a newer term from its deputies steps down and keeps following as a replica; at most
//! [`REPLICAS_MAX`] replicas and [`ENDED_MAX`] ended jobs are kept (the rest are refused or
//! forgotten, oldest first).

use std::time::{Duration, Instant};

use shoal_core::ids::{JobId, PeerId};
use shoal_core::sched::deputy::{Change, Deputy, JobPhase, JobRecord, JobReport, JournalOutcome};
use shoal_core::sched::{OwnerEvent, SchedMsg, Transmit, cancel_digest};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Actor, JobEntry};
use crate::job::{JobProgress, Tracker};
use crate::journal::{Entry, Journal, decode};

/// Most replicas kept for other owners.
pub(crate) const REPLICAS_MAX: usize = 1024;
/// Most ended jobs remembered for queries.
pub(crate) const ENDED_MAX: usize = 4096;

/// A deputy's replica of another owner's job.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) deputy: Deputy,
    journal: Option<Journal>,
    /// The job's blobs are stored here (acknowledged to the owner).
    held: bool,
    /// A fetch of the blobs is under way.
    fetching: bool,
    created: Instant,
    /// A restarted owner asked the swarm whether someone else owns the job now.
    asked: bool,
}

/// A job that ended here, kept for queries until `until`.
#[derive(Debug)]
pub(super) struct Ended {
    report: JobReport,
    until: Instant,
}

/// What the background fetches of the deputy side bring back to the actor.
#[derive(Debug)]
pub(super) enum ReplicaEvent {
    /// The modules and literal inputs of a replica were fetched (or not).
    Blobs { job: JobId, result: Result<(), String> },
    /// A `DeputizeBlobs`'s record and journal, fetched and decoded.
    Deputize { from: PeerId, record: Box<JobRecord>, term: u32, deputies: Vec<PeerId>, changes: Vec<Change> },
}

/// The journal state of a job owned here.
#[derive(Debug, Default)]
pub(super) struct OwnedJournal {
    file: Option<Journal>,
    /// The job, until its file is written: a job's file is created at the first step that
    /// sends a message to another peer (a job that never leaves this peer dies with it, and
    /// its submitter with it, so it needs no file).
    pending: Option<Box<JobRecord>>,
    /// Changes of the owner's journal already written.
    written: usize,
}

impl OwnedJournal {
    /// Writes what the owner journalled since the last call; `remote`: this step sends
    /// messages to other peers (the file is created then, if it was not).
    pub(super) fn persist(
        &mut self,
        data_dir: &std::path::Path,
        me: PeerId,
        owner: &shoal_core::sched::Owner,
        remote: bool,
    ) {
        let changes = owner.journal();
        if remote && let Some(record) = self.pending.take() {
            match Journal::create(data_dir, &record, owner.term(), me, &[], changes) {
                Ok(j) => self.file = Some(j),
                Err(e) => warn!(job = %record.id, "the job is not persisted: {e}"),
            }
            self.written = changes.len();
            return;
        }
        if changes.len() <= self.written {
            return;
        }
        if let Some(file) = &mut self.file {
            let new = Entry::Changes(changes[self.written..].to_vec());
            if let Err(e) = file.append(&new, false) {
                warn!(job = %owner.id(), "the job's journal cannot be written; it is no longer persisted: {e}");
                self.file = None;
            }
        }
        if self.pending.is_none() {
            self.written = changes.len();
        }
    }
}

impl Actor {
    /// Starts journalling a job just submitted here, and asks its owner for deputies.
    pub(super) fn start_journal(&mut self, id: JobId, entry: &mut JobEntry) {
        let wanted = entry.tracker.wanted.iter().copied().collect::<std::collections::BTreeSet<_>>();
        let record =
            JobRecord::of(id, entry.owner.job(), wanted.into_iter().collect(), self.me, self.retention_ms());
        if self.deputies_wanted > 0 {
            entry.owner.set_deputies(record.clone(), self.deputies_wanted);
        }
        if self.persist {
            entry.journal.pending = Some(Box::new(record));
        }
    }

    fn retention_ms(&self) -> u64 {
        u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX)
    }

    /// Owner events about deputies and takeovers; `true` if the event was one of those.
    pub(super) fn on_owner_change(&mut self, job: JobId, event: &OwnerEvent) -> bool {
        match *event {
            OwnerEvent::Deputies => {
                if let Some(entry) = self.jobs.get_mut(&job) {
                    let deputies: Vec<PeerId> = entry.owner.deputies().into_iter().map(|d| d.0).collect();
                    let term = entry.owner.term();
                    if let Some(file) = &mut entry.journal.file {
                        let _ = file.append(&Entry::Term { term, owner: self.me, deputies }, false);
                    }
                    let p = progress_of(entry);
                    entry.tracker.progress.send_if_modified(|old| std::mem::replace(old, p) != p);
                }
                true
            }
            OwnerEvent::Superseded { term, owner } => {
                self.step_down(job, term, owner);
                true
            }
            _ => false,
        }
    }

    /// The job owned here moved to `owner` in `term`: the submitter (if any) is told, and the
    /// peer keeps following the job as a replica.
    fn step_down(&mut self, job: JobId, term: u32, owner: PeerId) {
        let Some(mut entry) = self.jobs.remove(&job) else { return };
        info!(%job, term, owner = %owner.short(), "the job moved to another owner");
        let last: Vec<Transmit> = std::iter::from_fn(|| entry.owner.poll_transmit()).collect();
        for t in last {
            self.transmit(t);
        }
        entry.tracker.finish(Err(crate::JobError::Moved { owner, term }));
        self.take_trust(&mut entry.owner);
        let record = entry.owner.record().cloned().unwrap_or_else(|| {
            JobRecord::of(job, entry.owner.job(), entry.tracker.wanted.iter().copied().collect(), self.me, 0)
        });
        let deputies: Vec<PeerId> = entry.owner.deputies().into_iter().map(|d| d.0).collect();
        let changes = entry.owner.journal().to_vec();
        match Deputy::new(record, term, owner, deputies.clone(), changes) {
            Ok(deputy) => {
                let mut journal = entry.journal.file.take();
                if let Some(file) = &mut journal {
                    let _ = file.append(&Entry::Term { term, owner, deputies }, true);
                }
                let replica = Replica {
                    deputy,
                    journal,
                    held: true,
                    fetching: false,
                    created: Instant::now(),
                    asked: true,
                };
                self.replicas.insert(job, replica);
            }
            Err(e) => warn!(%job, "cannot keep following the job: {e}"),
        }
    }

    /// A message for the driver (see `SchedMsg::for_driver`).
    pub(super) fn on_job_msg(&mut self, from: PeerId, msg: SchedMsg) {
        let now = self.now();
        match msg {
            SchedMsg::Deputize { record, term, deputies, changes } => {
                self.on_deputize(from, *record, term, deputies, changes);
            }
            msg @ SchedMsg::DeputizeBlobs { .. } => self.on_deputize_blobs(from, msg),
            SchedMsg::Journal { job, term, seq, changes, deputies } => {
                let Some(r) = self.replicas.get_mut(&job) else { return };
                match r.deputy.handle_journal(from, term, seq, changes, deputies) {
                    JournalOutcome::Applied(have) => {
                        if let Some(file) = &mut r.journal {
                            let from_seq = usize::try_from(seq).unwrap_or(usize::MAX);
                            let new = r
                                .deputy
                                .changes()
                                .get(from_seq..)
                                .map(<[Change]>::to_vec)
                                .unwrap_or_default();
                            if let Err(e) = file.append(&Entry::Changes(new), false) {
                                warn!(%job, "the replica's journal cannot be written: {e}");
                                r.journal = None;
                            }
                        }
                        debug!(%job, have, "journal applied");
                        self.retire_if_ended(job);
                    }
                    JournalOutcome::Gap(have) => {
                        let msg = SchedMsg::Deputized { job, term, seq: have };
                        self.transmit(Transmit { to: from, msg });
                    }
                    JournalOutcome::Ignored => {
                        // An owner of an older term: tell it who owns the job now.
                        let known = (r.deputy.term(), r.deputy.owner());
                        if (term, from) < known {
                            let msg = SchedMsg::NewOwner { job, term: known.0, owner: known.1 };
                            self.transmit(Transmit { to: from, msg });
                        }
                    }
                }
            }
            SchedMsg::NewOwner { job, term, owner } => {
                if let Some(entry) = self.jobs.get_mut(&job) {
                    entry.owner.handle_new_owner(now, from, term, owner);
                    return;
                }
                let Some(r) = self.replicas.get_mut(&job) else { return };
                if owner == self.me && from == r.deputy.owner() && term > r.deputy.term() {
                    info!(%job, term, "the owner handed the job over");
                    self.take_over(job, term);
                } else if r.deputy.handle_new_owner(from, term, owner) {
                    let deputies = r.deputy.deputies().to_vec();
                    if let Some(file) = &mut r.journal {
                        let _ = file.append(&Entry::Term { term, owner, deputies }, true);
                    }
                }
            }
            SchedMsg::JobQuery { job, outputs } => {
                let ids = self.asked_about(job);
                for id in ids {
                    if let Some(report) = self.report_of(id, outputs) {
                        self.transmit(Transmit { to: from, msg: SchedMsg::JobStatus(Box::new(report)) });
                    }
                }
            }
            SchedMsg::JobStatus(report) => {
                // A restarted owner learns that someone else owns its job now.
                if let Some(r) = self.replicas.get_mut(&report.job)
                    && report.by_owner
                    && report.owner == from
                {
                    r.deputy.follow(report.term, report.owner);
                }
                self.queries.retain(|(want, tx)| {
                    if want.is_none_or(|w| w == report.job) {
                        tx.send((from, (*report).clone())).is_ok()
                    } else {
                        !tx.is_closed()
                    }
                });
            }
            SchedMsg::CancelJob { job, sig } => {
                let Some(entry) = self.jobs.get(&job) else { return };
                let record = entry.owner.record();
                let key = record
                    .and_then(|r| r.seal.as_ref().map(|s| s.submitter.0))
                    .or_else(|| record.map(|r| r.submitter.0))
                    .unwrap_or(self.me.0);
                if shoal_core::ids::ed25519_verifies(&key, &cancel_digest(job), &sig) {
                    info!(%job, peer = %from.short(), "job cancelled by its submitter");
                    self.cancel_job(job, crate::JobError::Cancelled);
                } else {
                    warn!(%job, peer = %from.short(), "a cancel not signed by the job's submitter was refused");
                }
            }
            _ => {}
        }
    }

    fn on_deputize(
        &mut self,
        from: PeerId,
        record: JobRecord,
        term: u32,
        deputies: Vec<PeerId>,
        changes: Vec<Change>,
    ) {
        let job = record.id;
        let now = self.now();
        if let Some(entry) = self.jobs.get_mut(&job) {
            // Another peer thinks it owns this job.
            entry.owner.handle_new_owner(now, from, term, from);
            return;
        }
        if let Some(r) = self.replicas.get_mut(&job) {
            if !r.deputy.handle_deputize(from, term, deputies.clone(), changes) {
                let msg = SchedMsg::NewOwner { job, term: r.deputy.term(), owner: r.deputy.owner() };
                self.transmit(Transmit { to: from, msg });
                return;
            }
            r.journal = self
                .persist
                .then(|| Journal::create(&self.data_dir, &record, term, from, &deputies, r.deputy.changes()))
                .and_then(|j| j.map_err(|e| warn!(%job, "the replica is not persisted: {e}")).ok());
            if r.held {
                let seq = r.deputy.changes().len() as u64;
                self.transmit(Transmit { to: from, msg: SchedMsg::Deputized { job, term, seq } });
            }
            return;
        }
        if self.replicas.len() >= REPLICAS_MAX {
            warn!(%job, "too many replicas held; a deputize was refused");
            return;
        }
        let modules: Vec<_> = record.tasks.iter().map(|t| t.module).collect();
        if let Err(why) = self.trust.admits_job(record.seal.as_ref(), &modules) {
            info!(%job, peer = %from.short(), "not a deputy for this job: it {why}");
            return;
        }
        let deputy = match Deputy::new(record, term, from, deputies, changes) {
            Ok(d) => d,
            Err(e) => {
                warn!(%job, peer = %from.short(), "a deputize with a bad job was refused: {e}");
                return;
            }
        };
        let journal = self
            .persist
            .then(|| {
                Journal::create(
                    &self.data_dir,
                    deputy.record(),
                    term,
                    from,
                    deputy.deputies(),
                    deputy.changes(),
                )
            })
            .and_then(|j| j.map_err(|e| warn!(%job, "the replica is not persisted: {e}")).ok());
        info!(%job, owner = %from.short(), term, "deputy for a job");
        self.replicas.insert(
            job,
            Replica { deputy, journal, held: false, fetching: false, created: Instant::now(), asked: true },
        );
        self.fetch_replica_blobs(job);
        self.retire_if_ended(job);
    }

    /// A replica whose journal says the job ended (done, failed or cancelled) is kept only to
    /// answer queries for the job's retention time; it never takes over.
    fn retire_if_ended(&mut self, job: JobId) {
        let Some(r) = self.replicas.get(&job) else { return };
        if !r.deputy.ended() {
            return;
        }
        let mut report = r.deputy.report(self.me, true);
        if !report.phase.ended() {
            return;
        }
        // A done job's outputs are fetched here too: held by the owner, their executors and
        // this deputy for the job's retention time.
        if report.phase == JobPhase::Done {
            let wanted: Vec<_> = report
                .outputs
                .iter()
                .filter(|o| o.output.inline.is_none())
                .map(|o| (o.output.hash, o.holders.clone()))
                .collect();
            for o in &mut report.outputs {
                if o.output.inline.is_none() && !o.holders.contains(&self.me) {
                    o.holders.insert(0, self.me);
                }
            }
            let node = self.node.clone();
            tokio::spawn(
                async move {
                    for (hash, holders) in wanted {
                        if let Err(e) = node.fetch_blob(hash, &holders).await {
                            debug!("a deputy could not keep an output of its ended job: {e}");
                        }
                    }
                }
                .instrument(info_span!("deputy", %job)),
            );
        }
        let retention = Duration::from_millis(r.deputy.record().retention_ms);
        if let Some(mut r) = self.replicas.remove(&job)
            && let Some(file) = &mut r.journal
        {
            let _ = file.append(&Entry::Ended { at_unix_ms: super::handle::unix_ms_now() }, false);
        }
        debug!(%job, phase = report.phase.name(), "the job a replica followed ended");
        self.ended.insert(job, Ended { report, until: Instant::now() + retention });
    }

    /// Brings every module and literal input of a replica here, from its owner.
    fn fetch_replica_blobs(&mut self, job: JobId) {
        let Some(r) = self.replicas.get_mut(&job) else { return };
        if r.fetching {
            return;
        }
        r.fetching = true;
        let owner = r.deputy.owner();
        let blobs: Vec<_> = r.deputy.record().blobs().into_iter().collect();
        let node = self.node.clone();
        let tx = self.replica_tx.clone();
        tokio::spawn(
            async move {
                let mut result = Ok(());
                for hash in blobs {
                    if node.blobs().contains(&hash) {
                        continue;
                    }
                    if let Err(e) = node.fetch_blob(hash, &[owner]).await {
                        result = Err(format!("blob {} unavailable: {e}", hash.short()));
                        break;
                    }
                }
                let _ = tx.send(ReplicaEvent::Blobs { job, result });
            }
            .instrument(info_span!("deputy", %job)),
        );
    }

    pub(super) fn on_replica_event(&mut self, e: ReplicaEvent) {
        match e {
            ReplicaEvent::Blobs { job, result } => self.on_blobs_fetched(job, result),
            ReplicaEvent::Deputize { from, record, term, deputies, changes } => {
                self.on_deputize(from, *record, term, deputies, changes);
                self.drain();
            }
        }
    }

    /// A `Deputize` leaves as a `DeputizeBlobs`: its record and journal go into this peer's
    /// blob store, for the deputy to fetch.
    pub(super) fn deputize_by_blobs(&mut self, msg: SchedMsg) -> SchedMsg {
        let SchedMsg::Deputize { record, term, deputies, changes } = msg else { return msg };
        let job = record.id;
        let stored = (|| -> Result<_, shoal_net::BlobError> {
            let r = rkyv::to_bytes::<rkyv::rancor::Error>(&*record).map(|b| b.into_vec()).unwrap_or_default();
            let c = rkyv::to_bytes::<rkyv::rancor::Error>(&changes).map(|b| b.into_vec()).unwrap_or_default();
            Ok((self.node.blobs().put(&r)?, self.node.blobs().put(&c)?))
        })();
        match stored {
            Ok((record, changes)) => SchedMsg::DeputizeBlobs { job, term, deputies, record, changes },
            Err(e) => {
                // Sent whole instead: small jobs still fit in a frame.
                warn!(%job, "cannot store the job for its deputies: {e}");
                SchedMsg::Deputize { record, term, deputies, changes }
            }
        }
    }

    /// A `DeputizeBlobs` from `from`: its blobs are fetched and decoded in the background.
    fn on_deputize_blobs(&mut self, from: PeerId, msg: SchedMsg) {
        let SchedMsg::DeputizeBlobs { job, term, deputies, record, changes } = msg else { return };
        let now = self.now();
        if let Some(entry) = self.jobs.get_mut(&job) {
            entry.owner.handle_new_owner(now, from, term, from);
            return;
        }
        if let Some(r) = self.replicas.get(&job)
            && (term, from) < (r.deputy.term(), r.deputy.owner())
        {
            let msg = SchedMsg::NewOwner { job, term: r.deputy.term(), owner: r.deputy.owner() };
            self.transmit(Transmit { to: from, msg });
            return;
        }
        let node = self.node.clone();
        let tx = self.replica_tx.clone();
        tokio::spawn(
            async move {
                let fetched = async {
                    let mut parts = Vec::with_capacity(2);
                    for hash in [record, changes] {
                        node.fetch_blob(hash, &[from]).await.map_err(|e| e.to_string())?;
                        let bytes = node.blobs().get(&hash).map_err(|e| e.to_string())?;
                        parts.push(bytes.ok_or("evicted from the blob store")?);
                    }
                    let record: JobRecord = decode(&parts[0])?;
                    let changes: Vec<Change> = decode(&parts[1])?;
                    if record.id != job {
                        return Err("the record is for another job".to_string());
                    }
                    Ok::<_, String>((record, changes))
                };
                match fetched.await {
                    Ok((record, changes)) => {
                        let record = Box::new(record);
                        let _ = tx.send(ReplicaEvent::Deputize { from, record, term, deputies, changes });
                    }
                    Err(e) => warn!(peer = %from.short(), "a job to deputize for could not be fetched: {e}"),
                }
            }
            .instrument(info_span!("deputy", %job)),
        );
    }

    fn on_blobs_fetched(&mut self, job: JobId, result: Result<(), String>) {
        let Some(r) = self.replicas.get_mut(&job) else { return };
        r.fetching = false;
        match result {
            Ok(()) => {
                r.held = true;
                let (to, term, seq) = (r.deputy.owner(), r.deputy.term(), r.deputy.changes().len() as u64);
                self.transmit(Transmit { to, msg: SchedMsg::Deputized { job, term, seq } });
                self.drain();
            }
            Err(e) => {
                warn!(job = %job, "a deputy could not fetch the job's blobs ({e}); it drops the job");
                self.replicas.remove(&job);
            }
        }
    }

    /// Replicas whose owner (and every deputy ranked before this peer) is gone take over.
    pub(super) fn check_takeovers(&mut self) {
        if self.leaving_until.is_some() {
            return;
        }
        let in_view: std::collections::HashSet<PeerId> = self.node.view().iter().map(|e| e.id).collect();
        let mut due = Vec::new();
        for (&job, r) in &mut self.replicas {
            if !r.held {
                continue;
            }
            let owner = r.deputy.owner();
            // A restarted owner first asks whether someone else owns its job now.
            if owner == self.me && !r.asked && !in_view.is_empty() {
                r.asked = true;
                for &p in &in_view {
                    let msg = SchedMsg::JobQuery { job: Some(job), outputs: false };
                    self.outbox.send(p, shoal_core::wire::Message::Sched(msg));
                }
            }
            let patient = r.created.elapsed() < self.takeover_grace;
            let me = self.me;
            let gone = &self.gone;
            let is_down = |p: &PeerId| {
                if *p == me {
                    return owner == me && !patient;
                }
                !in_view.contains(p) && (gone.contains(p) || !patient)
            };
            if r.deputy.should_take_over(me, &is_down) {
                due.push((job, r.deputy.next_term()));
            }
        }
        for (job, term) in due {
            self.take_over(job, term);
        }
    }

    /// This peer becomes the owner of `job` in `term`.
    fn take_over(&mut self, job: JobId, term: u32) {
        let Some(mut r) = self.replicas.remove(&job) else { return };
        if !r.held {
            self.replicas.insert(job, r);
            return;
        }
        let old = r.deputy.owner();
        info!(%job, term, old_owner = %old.short(), "taking the job over");
        let view = self.view();
        let cfg = self.owner_cfg_for(r.deputy.job());
        let signer = self.node.desc_signer();
        let now = self.now();
        let mut owner = r.deputy.take_over(self.me, term, cfg, &view, signer, now);
        self.lend_trust(&mut owner);
        if old != self.me {
            owner.handle_peer_down(now, old);
        }
        owner.set_deputies(r.deputy.record().clone(), self.deputies_wanted);
        let deputies: Vec<PeerId> = owner.deputies().into_iter().map(|d| d.0).collect();
        if let Some(file) = &mut r.journal {
            let _ = file.append(&Entry::Term { term, owner: self.me, deputies }, true);
        }
        let (progress, _) = watch::channel(JobProgress::default());
        let (result, _) = oneshot::channel();
        let tracker = Tracker::new(r.deputy.record().wanted.clone(), progress, result);
        let journal = OwnedJournal { file: r.journal.take(), pending: None, written: owner.journal().len() };
        let wanted = r.deputy.record().wanted.clone();
        self.jobs.insert(job, JobEntry { owner, tracker, journal });
        // Wanted outputs done before the takeover are brought here too (no TaskDone comes).
        for i in wanted {
            if self
                .jobs
                .get(&job)
                .is_some_and(|e| matches!(e.owner.state(i), shoal_core::sched::TaskState::Done { .. }))
            {
                self.fetch_output(job, i);
            }
        }
        self.drain();
    }

    /// The jobs a query about `job` covers (`None`: every job owned, followed or ended here).
    fn asked_about(&self, job: Option<JobId>) -> Vec<JobId> {
        match job {
            Some(id) => vec![id],
            None => self.jobs.keys().chain(self.replicas.keys()).chain(self.ended.keys()).copied().collect(),
        }
    }

    /// A report of `id` as this peer knows it: the owner's, an ended job's, or a replica's.
    pub(super) fn report_of(&self, id: JobId, outputs: bool) -> Option<JobReport> {
        if let Some(entry) = self.jobs.get(&id) {
            let mut report = entry.owner.report(outputs);
            for o in &mut report.outputs {
                if entry.tracker.outputs.contains_key(&o.task) && !o.holders.contains(&self.me) {
                    o.holders.insert(0, self.me);
                }
            }
            return Some(report);
        }
        if let Some(e) = self.ended.get(&id) {
            let mut report = e.report.clone();
            if !outputs {
                report.outputs.clear();
            }
            return Some(report);
        }
        self.replicas.get(&id).map(|r| r.deputy.report(self.me, outputs))
    }

    /// Remembers how a job owned here ended (for queries during its retention time), and
    /// marks its journal ended.
    pub(super) fn note_ended(&mut self, id: JobId, entry: &mut JobEntry) {
        let mut report = entry.owner.report(true);
        if entry.tracker.ended.as_ref().is_some_and(Result::is_err) && report.phase == JobPhase::Running {
            report.phase =
                JobPhase::Failed(entry.tracker.ended.clone().and_then(Result::err).unwrap_or_default());
        }
        for o in &mut report.outputs {
            if self.node.blobs().contains(&o.output.hash) && !o.holders.contains(&self.me) {
                o.holders.insert(0, self.me);
            }
        }
        if let Some(file) = &mut entry.journal.file {
            let _ = file.append(&Entry::Ended { at_unix_ms: super::handle::unix_ms_now() }, false);
        }
        let retention = entry
            .owner
            .record()
            .map(|r| Duration::from_millis(r.retention_ms))
            .or(entry.owner.job().retention())
            .unwrap_or(self.retention);
        if self.ended.len() >= ENDED_MAX
            && let Some(oldest) = self.ended.iter().min_by_key(|(_, e)| e.until).map(|(k, _)| *k)
        {
            self.ended.remove(&oldest);
        }
        self.ended.insert(id, Ended { report, until: Instant::now() + retention });
    }

    /// Forgets ended jobs past their retention time (their journals too).
    pub(super) fn prune_ended(&mut self) {
        let now = Instant::now();
        let data_dir = self.data_dir.clone();
        self.ended.retain(|id, e| {
            let keep = e.until > now;
            if !keep {
                let _ = std::fs::remove_file(crate::journal::path_of(&data_dir, *id));
            }
            keep
        });
    }

    /// Loads the journals a previous run of this peer left: ended jobs are remembered for
    /// queries, the others become replicas (a job owned here is resumed after
    /// `Config::takeover_grace` unless someone else owns it now).
    pub(super) fn load_journals(&mut self) {
        if !self.persist {
            return;
        }
        let (stored, bad) = crate::journal::read_all(&self.data_dir);
        for e in bad {
            warn!("skipped a job journal: {e}");
        }
        let now_ms = super::handle::unix_ms_now();
        for (path, s) in stored {
            let job = s.record.id;
            if s.bad_tail {
                warn!(%job, "the job's journal ends in a torn record (a crash mid-write); resuming from what precedes it");
            }
            let deputy =
                match Deputy::new(s.record.clone(), s.term, s.owner, s.deputies.clone(), s.changes.clone()) {
                    Ok(d) => d,
                    Err(e) => {
                        warn!(%job, "skipped a job journal with a bad job: {e}");
                        continue;
                    }
                };
            if let Some(at) = s.ended_unix_ms {
                let age = Duration::from_millis(now_ms.saturating_sub(at));
                let retention = Duration::from_millis(s.record.retention_ms);
                if age < retention {
                    let report = deputy.report(self.me, true);
                    self.ended.insert(job, Ended { report, until: Instant::now() + (retention - age) });
                } else {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let journal = Journal::open(&path).map_err(|e| warn!(%job, "{e}")).ok();
            let mine = s.owner == self.me;
            info!(%job, term = s.term, done = deputy.report(self.me, false).done, "resuming a job from its journal");
            self.replicas.insert(
                job,
                Replica {
                    deputy,
                    journal,
                    held: true,
                    fetching: false,
                    created: Instant::now(),
                    asked: !mine,
                },
            );
        }
    }

    /// Sends `report`s of `job` (or of every job) that peers answer to `tx` (see
    /// [`super::Peer::query_jobs`]).
    pub(super) fn start_query(
        &mut self,
        job: Option<JobId>,
        outputs: bool,
        tx: mpsc::UnboundedSender<(PeerId, JobReport)>,
    ) {
        for id in self.asked_about(job) {
            if let Some(report) = self.report_of(id, outputs) {
                let _ = tx.send((self.me, report));
            }
        }
        for e in self.node.view() {
            self.outbox.send(e.id, shoal_core::wire::Message::Sched(SchedMsg::JobQuery { job, outputs }));
        }
        self.queries.push((job, tx));
    }
}

/// A job's progress with its deputies.
pub(super) fn progress_of(entry: &JobEntry) -> JobProgress {
    let mut p = JobProgress::from(entry.owner.progress());
    let deputies = entry.owner.deputies();
    p.deputies = deputies.iter().filter(|d| d.1).count() as u32;
    p.deputies_ready = entry.owner.deputies_ready();
    p.term = entry.owner.term();
    p
}
