//! The owner's side of credit: every accepted run is paid in a signed [`Receipt`], batched per
//! executor.
//!
//! Invariants: a run is recorded once, where its result is accepted; runs wait per executor until
//! [`RECEIPT_BATCH`] of them are pending or the job is over, then leave in one signed receipt in
//! one [`SchedMsg::Receipts`], so credit costs one signature and about one message per
//! `RECEIPT_BATCH` tasks. Runs still pending when the owner dies are unpaid.

use super::Owner;
use crate::ids::{BlobHash, PeerId, TaskIndex};
use crate::sched::msg::{SchedMsg, Transmit};
use crate::sched::receipt::{PaidRun, Receipt};

/// Receipts pending for one executor before they are sent.
pub(super) const RECEIPT_BATCH: usize = 64;

impl Owner {
    /// Records `executor`'s run `attempt` of `i`, accepted with (`output`, `fuel`), for payment.
    pub(super) fn grant(
        &mut self,
        i: TaskIndex,
        executor: PeerId,
        attempt: u32,
        output: BlobHash,
        fuel: u64,
    ) {
        if !self.cfg.receipts {
            return;
        }
        let pending = self.unpaid.entry(executor).or_default();
        pending.push(PaidRun { task: i, attempt, fuel, output });
        if pending.len() >= RECEIPT_BATCH {
            let runs = std::mem::take(pending);
            self.pay(executor, runs);
        }
    }

    /// Pays every pending run once the job is over.
    pub(super) fn flush_receipts(&mut self) {
        if !(self.is_done() || self.over || self.failed > 0) {
            return;
        }
        for (executor, runs) in std::mem::take(&mut self.unpaid) {
            if !runs.is_empty() {
                self.pay(executor, runs);
            }
        }
    }

    fn pay(&mut self, executor: PeerId, runs: Vec<PaidRun>) {
        let mut r = Receipt { job: self.id, owner: self.me, executor, runs, sig: Vec::new() };
        r.sig = self.signer.0.sign(&r.digest()).to_vec();
        self.out.push_back(Transmit { to: executor, msg: SchedMsg::Receipts { receipts: vec![r] } });
    }
}
