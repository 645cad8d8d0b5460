//! Wanted outputs brought to this peer: one task per fetch, its result fed back to the actor
//! as a [`Fetched`].
//!
//! Invariants: `Tracker::fetching` counts fetches under way (incremented here, decremented when
//! the result comes back, never below zero); an output that cannot be fetched is written off and
//! re-made through the owner (`handle_output_lost`), never reported as a job result.

use shoal_core::ids::{JobId, TaskIndex};
use shoal_core::sched::TaskState;
use tracing::{Instrument, debug, warn};

use super::Actor;

/// A wanted output fetched to this peer (or not).
#[derive(Debug)]
pub(super) struct Fetched {
    job: JobId,
    task: TaskIndex,
    bytes: Result<Vec<u8>, String>,
}

impl Actor {
    /// Brings a wanted output to this peer.
    pub(super) fn fetch_output(&mut self, job: JobId, i: TaskIndex) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        let TaskState::Done { output, holders } = entry.owner.state(i) else { return };
        if let Some(bytes) = &output.inline {
            entry.tracker.outputs.insert(i, bytes.clone());
            return;
        }
        entry.tracker.fetching += 1;
        let (hash, holders) = (output.hash, holders.clone());
        let node = self.node.clone();
        let tx = self.fetch_tx.clone();
        tokio::spawn(
            async move {
                let bytes = match node.fetch_blob(hash, &holders).await {
                    Ok(_) => node
                        .blobs()
                        .get(&hash)
                        .map_err(|e| e.to_string())
                        .and_then(|b| b.ok_or_else(|| "evicted from the blob store".to_string())),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(Fetched { job, task: i, bytes });
            }
            .in_current_span(),
        );
    }

    pub(super) fn on_fetched(&mut self, f: Fetched) {
        let Some(entry) = self.jobs.get_mut(&f.job) else { return };
        entry.tracker.fetching = entry.tracker.fetching.saturating_sub(1);
        match f.bytes {
            Ok(bytes) => {
                entry.tracker.outputs.insert(f.task, bytes);
            }
            Err(reason) => {
                // Re-made from lineage (bounded by the owner's loss limit, after which the task
                // fails and so does the job); the next TaskDone fetches it again.
                let name = &entry.owner.job().task(f.task).name;
                warn!(job = %f.job, task = %name, "wanted output unavailable ({reason}): re-making it");
                entry.tracker.all_done = false;
                if let Err(e) = entry.owner.handle_output_lost(self.epoch.elapsed(), f.task) {
                    debug!("owner refused an output loss: {e}");
                }
                self.drain();
            }
        }
        self.settle(f.job);
    }
}
