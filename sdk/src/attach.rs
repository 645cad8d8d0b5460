//! Jobs that outlive their submitter: [`Submission::detach`](crate::Submission::detach) hands a
//! running job to its deputies and lets the submitter go; [`Swarm::attach`](crate::Swarm::attach)
//! follows a job by id from any process that can reach the swarm — its status, its outputs once
//! it ends (from the peers that hold them), or a cancel signed by its submitter.
//!
//! Invariants: an [`Attached`] asks the swarm afresh each time (the owner may change between
//! calls: a deputy takes over under a new term), and believes the owner of the highest term that
//! answers; outputs are returned only for a job whose owner reports it done.

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_core::ids::{JobId, PeerId};
use shoal_core::sched::cancel_digest;
pub use shoal_core::sched::deputy::{JobPhase, JobReport, WantedOutput};
use shoal_node::{Peer, best_report};

use crate::SigningKey;

/// How long one query waits for the peers' answers.
const QUERY_PATIENCE: Duration = Duration::from_millis(800);
/// Between two queries while waiting for a job to end.
const POLL: Duration = Duration::from_millis(500);

/// Why following a job failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No peer in view knows the job.
    #[error(
        "no peer knows job {0}: check the id, and that this process joined the swarm that runs it \
         (its owner keeps a finished job for its retention time, a day by default)"
    )]
    NotFound(JobId),
    /// The job failed or was cancelled.
    #[error("job {job} {}", match .phase { JobPhase::Failed(why) => format!("failed: {why}"), _ => "was cancelled".to_string() })]
    Ended {
        /// The job.
        job: JobId,
        /// How it ended.
        phase: JobPhase,
    },
    /// An output could not be fetched from any peer holding it.
    #[error("job {job} is done but its outputs could not be fetched: {reason}")]
    Outputs {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
}

/// A job followed by id (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub struct Attached<'a> {
    peer: &'a Peer,
    id: JobId,
}

impl<'a> Attached<'a> {
    pub(crate) fn new(peer: &'a Peer, id: JobId) -> Self {
        Attached { peer, id }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// How the job stands now, as its owner (or, if the owner does not answer, a deputy)
    /// reports it.
    pub async fn status(&self) -> Result<JobReport, AttachError> {
        self.peer.job_report(self.id, false, QUERY_PATIENCE).await.ok_or(AttachError::NotFound(self.id))
    }

    /// Waits until the job ends (`progress` is called with each report), and returns the last
    /// report, with where its outputs live. A job no peer knows fails after `patience`.
    pub async fn wait(
        &self,
        patience: Duration,
        mut progress: impl FnMut(&JobReport),
    ) -> Result<JobReport, AttachError> {
        let unknown_since = tokio::time::Instant::now();
        loop {
            match self.peer.job_report(self.id, true, QUERY_PATIENCE).await {
                Some(r) if r.phase.ended() => {
                    progress(&r);
                    return Ok(r);
                }
                Some(r) => progress(&r),
                None if unknown_since.elapsed() > patience => return Err(AttachError::NotFound(self.id)),
                None => {}
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the job to end and fetches its wanted outputs, by task name. A failed or
    /// cancelled job is an [`AttachError::Ended`].
    pub async fn outputs(&self, patience: Duration) -> Result<BTreeMap<String, Vec<u8>>, AttachError> {
        let report = self.wait(patience, |_| {}).await?;
        if report.phase != JobPhase::Done {
            return Err(AttachError::Ended { job: self.id, phase: report.phase });
        }
        self.peer.fetch_outputs(&report).await.map_err(|reason| AttachError::Outputs { job: self.id, reason })
    }

    /// Cancels the job at its owner, signed with the submitter's `key` (for a signed job), or
    /// with this peer's own key (for an unsigned job submitted from this peer's data
    /// directory). The owner refuses a cancel signed by anyone else. Returns the owner asked.
    pub async fn cancel(&self, key: Option<&SigningKey>) -> Result<PeerId, AttachError> {
        let report = self.status().await?;
        let digest = cancel_digest(self.id);
        let sig = match key {
            Some(k) => k.sign_digest(&digest),
            None => self.peer.sign_digest(&digest),
        };
        self.peer.cancel_remote(self.id, report.owner, sig).await;
        Ok(report.owner)
    }
}

/// Every job the peers in view own, deputize for or finished, the freshest report of each.
pub(crate) async fn list(peer: &Peer) -> Vec<JobReport> {
    let answers = peer.query_jobs(None, false, QUERY_PATIENCE).await;
    let mut by_job: BTreeMap<JobId, Vec<JobReport>> = BTreeMap::new();
    for (_, r) in answers {
        by_job.entry(r.job).or_default().push(r);
    }
    by_job.into_values().filter_map(best_report).collect()
}
