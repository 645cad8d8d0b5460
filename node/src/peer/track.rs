//! Job tracking: owner events turned into progress, fetches of wanted outputs and the job's
//! result; cancellation.
//!
//! Invariants: a job's result is sent once (the tracker's `finish`), when `JobDone` has been seen
//! and no wanted output is still being fetched; the owner is dropped right after, once its last
//! transmits (cancels) are taken.

use shoal_core::ids::JobId;
use shoal_core::sched::{OwnerEvent, Transmit};
use tracing::{info, info_span, warn};

use super::Actor;
use crate::job::{JobError, JobOutputs};

impl Actor {
    pub(super) fn on_event(&mut self, job: JobId, event: OwnerEvent) {
        if self.on_owner_change(job, &event) {
            return;
        }
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let span = info_span!("job", %job);
        let _enter = span.enter();
        match event {
            OwnerEvent::TaskDone(i) => {
                if entry.tracker.wanted.contains(&i) {
                    self.fetch_output(job, i);
                }
            }
            OwnerEvent::Mismatch(i) => warn!(task = i.0, "two runs of a task disagree"),
            OwnerEvent::Disagreement { task, losers } => {
                warn!(task = task.0, ?losers, "runs disagreed; the losers' results are re-made")
            }
            OwnerEvent::TaskFailed(i, kind) => {
                let name = entry.owner.job().task(i).name.clone();
                let reason = shoal_core::sched::deputy::failure_text(&kind);
                warn!(task = %name, "job failed: {reason}");
                entry.tracker.finish(Err(JobError::TaskFailed { name, index: i.0, reason }));
                // Free the holders of its other tasks (`settle` sends this and drops the owner).
                entry.owner.handle_cancel(self.epoch.elapsed());
            }
            OwnerEvent::JobDone => entry.tracker.all_done = true,
            OwnerEvent::Deputies | OwnerEvent::Superseded { .. } => {}
        }
        drop(_enter);
        self.settle(job);
    }

    /// Updates the job's progress; sends its result and forgets it once it is over.
    pub(super) fn settle(&mut self, job: JobId) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let progress = super::deputies::progress_of(entry);
        entry.tracker.progress.send_if_modified(|old| std::mem::replace(old, progress) != progress);
        let t = &mut entry.tracker;
        if !t.finished() && t.all_done && t.fetching == 0 {
            let names = entry.owner.job().tasks();
            let outputs = std::mem::take(&mut t.outputs)
                .into_iter()
                .map(|(i, b)| (names[i.0 as usize].name.clone(), b));
            let result = JobOutputs { outputs: outputs.collect(), progress, elapsed: t.started.elapsed() };
            info!(%job, elapsed = ?result.elapsed, peers = progress.peers_used, "job done");
            // What the job learned of its executors is saved before its submitter hears it ended.
            self.books.merge(&entry.owner.take_trust());
            t.finish(Ok(result));
        }
        if entry.tracker.finished() {
            let last: Vec<Transmit> = std::iter::from_fn(|| entry.owner.poll_transmit()).collect();
            self.finished_owners_refused.add(&entry.owner.refusals());
            if let Some(mut entry) = self.jobs.remove(&job) {
                self.take_trust(&mut entry.owner);
                self.note_job_end(job, &entry.owner, &entry.tracker);
                self.note_ended(job, &mut entry);
            }
            for t in last {
                self.transmit(t);
            }
        }
    }

    /// Cancels job `id` at every peer holding its tasks and forgets it.
    pub(super) fn cancel_job(&mut self, id: JobId, why: JobError) {
        let now = self.now();
        if let Some(entry) = self.jobs.get_mut(&id) {
            entry.owner.handle_cancel(now);
            entry.tracker.finish(Err(why));
        }
        self.drain();
        if let Some(mut entry) = self.jobs.remove(&id) {
            self.take_trust(&mut entry.owner);
            self.finished_owners_refused.add(&entry.owner.refusals());
            self.note_job_end(id, &entry.owner, &entry.tracker);
            self.note_ended(id, &mut entry);
        }
    }
}
