//! Counters of refused peer input: every message a state machine declines to act on is counted
//! here by reason, never fatal and never a panic. The node shows them in `shoal status`.
//!
//! Invariant: counters only grow (saturating); a refusal leaves the machine's state as it was,
//! except where a field's doc says what was handed back.

/// Messages (or parts of messages: one task of an `Assign`, one report of a `Done`) refused, by
/// reason. The owner fills in the first group, the peer scheduler the second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Owner: a result, claim, release or renew from a peer that does not hold that attempt
    /// (and no claim on the way could make it the holder).
    pub not_holder: u64,
    /// Owner: a report for an attempt that is not the live one (done, failed, re-issued).
    pub stale: u64,
    /// Owner: a message naming a task the job does not have.
    pub unknown_task: u64,
    /// Owner: an early message (from a peer a claim on the way will make the holder) dropped
    /// because the task's buffer of such messages was full.
    pub early_dropped: u64,
    /// Peer: an `Assign` or `Cancel` from a peer that does not own the job.
    pub not_owner: u64,
    /// Peer: a stolen descriptor whose owner signature does not verify.
    pub bad_signature: u64,
    /// Peer: a descriptor for an attempt already held or just run here (a duplicate).
    pub duplicate: u64,
    /// Peer: tasks handed back (`Release`) because the ready queue was at its cap.
    pub queue_full: u64,
    /// Peer: a `Stolen` answer with no steal in flight to that peer (its tasks are handed back).
    pub unsolicited: u64,
    /// Peer: tasks refused because they ask more than the volunteer's caps.
    pub over_caps: u64,
    /// Peer: tasks refused by the volunteer's trust policy (unsigned, untrusted submitter,
    /// module not allowed, bad or expired seal).
    pub untrusted: u64,
    /// Peer: receipts that name another executor, come from a peer other than the owner they
    /// name, or do not verify.
    pub bad_receipt: u64,
    /// Peer: descriptors from a former owner of their job (a later term is known).
    pub superseded: u64,
}

impl Refusals {
    /// Adds one to `counter`, saturating.
    pub(crate) fn bump(counter: &mut u64) {
        *counter = counter.saturating_add(1);
    }

    /// Adds every counter of `other` to this one's, saturating.
    pub fn add(&mut self, other: &Refusals) {
        let pairs = [
            (&mut self.not_holder, other.not_holder),
            (&mut self.stale, other.stale),
            (&mut self.unknown_task, other.unknown_task),
            (&mut self.early_dropped, other.early_dropped),
            (&mut self.not_owner, other.not_owner),
            (&mut self.bad_signature, other.bad_signature),
            (&mut self.duplicate, other.duplicate),
            (&mut self.queue_full, other.queue_full),
            (&mut self.unsolicited, other.unsolicited),
            (&mut self.over_caps, other.over_caps),
            (&mut self.untrusted, other.untrusted),
            (&mut self.bad_receipt, other.bad_receipt),
            (&mut self.superseded, other.superseded),
        ];
        for (mine, theirs) in pairs {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// Every counter with its field's name, in declaration order (for display and JSON).
    pub fn by_reason(&self) -> [(&'static str, u64); 13] {
        [
            ("not_holder", self.not_holder),
            ("stale", self.stale),
            ("unknown_task", self.unknown_task),
            ("early_dropped", self.early_dropped),
            ("not_owner", self.not_owner),
            ("bad_signature", self.bad_signature),
            ("duplicate", self.duplicate),
            ("queue_full", self.queue_full),
            ("unsolicited", self.unsolicited),
            ("over_caps", self.over_caps),
            ("untrusted", self.untrusted),
            ("bad_receipt", self.bad_receipt),
            ("superseded", self.superseded),
        ]
    }

    /// The sum of all counters.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().fold(0u64, |a, &(_, n)| a.saturating_add(n))
    }
}
