//! Verified results: a job's [`VerifyPolicy`], the executors' [`TrustBook`], and the owner's
//! judgement of each task's runs (see `docs/verification.md`).
//!
//! Execution is deterministic, so a run's result is its `(output hash, fuel)` pair ("value") and
//! runs of one task on distinct peers are compared bit for bit. Under a policy other than
//! [`VerifyPolicy::None`] a task's successful runs are kept as votes, one per distinct executor,
//! and the task is done only when its votes satisfy the policy; until then it is issued again,
//! one attempt at a time, to a peer that has not voted. Consumers and the job's outputs therefore
//! only ever see accepted values.
//!
//! Invariants: a task in verification has at most [`VOTES_MAX`] votes, from distinct peers; a
//! value is accepted under [`VerifyPolicy::Adaptive`] only when the owner's own run gave it, or a
//! peer trusted *before* this task agreed with it, or it is the lone run of a trusted peer not
//! drawn for a spot check; an agreement raises a peer's streak only when another agreeing voter
//! is the owner or trusted (colluders cannot vouch for each other); a peer whose value lost has
//! its streak reset, its catch count raised (each catch doubles the streak it needs), and its
//! lone (unchecked) accepted results in the job are discarded and re-made with everything
//! downstream of them.

use std::collections::BTreeMap;

use super::{Owner, OwnerEvent, TaskState};
use crate::ids::{BlobHash, PeerId, TaskIndex};
use crate::sched::msg::FailureKind;

/// Most votes (runs on distinct peers) kept for one task: more runs than this without agreement
/// fail the task.
pub(super) const VOTES_MAX: usize = 12;

/// Most catches that still raise the streak a peer needs (beyond: never trusted again).
const CATCHES_MAX: u32 = 8;

/// How the results of a job's tasks are checked before they are used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyPolicy {
    /// The first successful run of a task is its result (no checks).
    #[default]
    None,
    /// Every task runs on at least `k` distinct peers, and a value is accepted once `quorum`
    /// distinct peers agree on it (more runs are made until one does). With fewer live peers
    /// than `k`, the task is accepted when `quorum` agree among those there are, and fails
    /// ("no quorum") when all have run it without a quorum.
    Replicate {
        /// Runs on distinct peers, at least.
        k: u32,
        /// Agreeing distinct peers needed.
        quorum: u32,
    },
    /// Trust-based: an untrusted executor's result is checked by the owner's peer or a trusted
    /// one before it is accepted; a trusted executor's result is accepted alone except for spot
    /// checks drawn at a rate that falls as its streak grows (see [`VerifyConfig`]).
    Adaptive,
}

impl VerifyPolicy {
    /// Parses `none`, `adaptive`, `replicate=K` (majority quorum) or `replicate=K/Q`.
    pub fn parse(s: &str) -> Result<VerifyPolicy, String> {
        let s = s.trim();
        match s {
            "none" => return Ok(VerifyPolicy::None),
            "adaptive" => return Ok(VerifyPolicy::Adaptive),
            _ => {}
        }
        let Some(rest) = s.strip_prefix("replicate=") else {
            return Err(format!("expected none, adaptive, replicate=K or replicate=K/Q, got {s:?}"));
        };
        let num = |x: &str| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}"));
        let (k, quorum) = match rest.split_once('/') {
            Some((k, q)) => (num(k)?, num(q)?),
            None => {
                let k = num(rest)?;
                (k, k / 2 + 1)
            }
        };
        if k < 2 || quorum < 2 || quorum > k || k as usize > VOTES_MAX {
            return Err(format!("need 2 <= Q <= K <= {VOTES_MAX}, got {s:?}"));
        }
        Ok(VerifyPolicy::Replicate { k, quorum })
    }
}

/// Verification settings of an owner ([`OwnerConfig::verify`](super::OwnerConfig::verify)).
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyConfig {
    /// The job's policy.
    pub policy: VerifyPolicy,
    /// Consecutive checked agreements after which a never-caught peer is trusted; a peer caught
    /// `c` times needs `trust_streak × 2^c`.
    pub trust_streak: u32,
    /// The least spot-check probability of a trusted peer's result. At streak `s ≥ need` it is
    /// `max(spot_min, 1 / (1 + s − need))`: every result is checked at first, then ever fewer.
    pub spot_min: f64,
    /// Seed of the spot-check draws. The driver passes a secret random value: a peer that could
    /// predict the draws could lie only when unchecked.
    pub seed: u64,
    /// How long a check with no peer left to run it waits for membership to show one (a
    /// submitter that just joined sees part of the swarm) before it is settled with the runs
    /// there are, or failed.
    pub patience: std::time::Duration,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            policy: VerifyPolicy::None,
            trust_streak: 16,
            spot_min: 0.04,
            seed: 0,
            patience: std::time::Duration::from_secs(10),
        }
    }
}

/// What the owner knows of one executor's honesty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Consecutive results confirmed by the owner or a trusted peer since the last catch.
    pub streak: u32,
    /// Times its value lost a disagreement.
    pub caught: u32,
    /// Results of it ever confirmed that way.
    pub confirmed: u64,
}

/// Trust records by executor, kept by the driver across jobs (see [`Owner::set_trust`] and
/// [`Owner::take_trust`](super::Owner::take_trust)); [`TrustBook::to_bytes`] and
/// [`TrustBook::from_bytes`] store it.
///
/// [`Owner::set_trust`]: super::Owner::set_trust
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustBook {
    peers: BTreeMap<PeerId, Trust>,
}

/// Why stored trust records could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("trust book line {line}: {why}")]
pub struct TrustBookError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

impl TrustBook {
    /// An empty book: nobody is trusted.
    pub fn new() -> Self {
        TrustBook::default()
    }

    /// The record of `peer` (default: never seen).
    pub fn get(&self, peer: &PeerId) -> Trust {
        self.peers.get(peer).copied().unwrap_or_default()
    }

    /// Every record, by peer.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Trust)> {
        self.peers.iter()
    }

    /// Peers caught at least once, with their records (for displays: who lied).
    pub fn caught(&self) -> impl Iterator<Item = (&PeerId, &Trust)> {
        self.peers.iter().filter(|(_, t)| t.caught > 0)
    }

    /// The streak `peer` needs to be trusted (`u32::MAX`: never again).
    pub fn needs(&self, peer: &PeerId, streak: u32) -> u32 {
        let caught = self.get(peer).caught;
        if caught > CATCHES_MAX { u32::MAX } else { streak.saturating_mul(1 << caught) }
    }

    /// Whether `peer` is trusted under a base streak of `streak`.
    pub fn trusted(&self, peer: &PeerId, streak: u32) -> bool {
        self.get(peer).streak >= self.needs(peer, streak)
    }

    /// Merges `other` (a book another job's owner updated from the same start) into this one:
    /// per peer, the record with more catches wins, then the longer streak (a catch in either
    /// job counts).
    pub fn merge(&mut self, other: &TrustBook) {
        for (&p, &t) in &other.peers {
            let e = self.peers.entry(p).or_default();
            if (t.caught, t.streak) > (e.caught, e.streak) {
                *e = Trust { confirmed: e.confirmed.max(t.confirmed), ..t };
            } else {
                e.confirmed = e.confirmed.max(t.confirmed);
            }
        }
    }

    pub(super) fn agreed(&mut self, peer: PeerId) {
        let t = self.peers.entry(peer).or_default();
        t.streak = t.streak.saturating_add(1);
        t.confirmed = t.confirmed.saturating_add(1);
    }

    pub(super) fn lied(&mut self, peer: PeerId) {
        let t = self.peers.entry(peer).or_default();
        t.streak = 0;
        t.caught = t.caught.saturating_add(1);
    }

    /// The book as text: one line per peer, `PEER STREAK CAUGHT CONFIRMED` (the peer id as
    /// everywhere else: `shoal status`, `shoal peers`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::new();
        for (p, t) in &self.peers {
            s.push_str(&format!("{p} {} {} {}\n", t.streak, t.caught, t.confirmed));
        }
        s.into_bytes()
    }

    /// Reads what [`TrustBook::to_bytes`] wrote (blank lines are skipped).
    pub fn from_bytes(bytes: &[u8]) -> Result<TrustBook, TrustBookError> {
        let text = std::str::from_utf8(bytes).map_err(|e| TrustBookError { line: 0, why: e.to_string() })?;
        let mut book = TrustBook::new();
        for (n, line) in text.lines().enumerate() {
            let err = |why: String| TrustBookError { line: n + 1, why };
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() {
                continue;
            }
            let [id, streak, caught, confirmed] = f[..] else {
                return Err(err(format!("expected 4 fields, got {}", f.len())));
            };
            let id: PeerId = id.parse().map_err(|e: crate::ids::ParseIdError| err(e.to_string()))?;
            let num = |x: &str| x.parse::<u64>().map_err(|e| err(format!("{x:?}: {e}")));
            let trust = Trust {
                streak: u32::try_from(num(streak)?).map_err(|e| err(e.to_string()))?,
                caught: u32::try_from(num(caught)?).map_err(|e| err(e.to_string()))?,
                confirmed: num(confirmed)?,
            };
            book.peers.insert(id, trust);
        }
        Ok(book)
    }
}

/// One successful run of a task in verification.
#[derive(Clone, Debug)]
pub(super) struct Vote {
    pub peer: PeerId,
    pub attempt: u32,
    pub value: (BlobHash, u64),
    pub output: crate::sched::msg::OutputRef,
    pub busy_us: u64,
}

/// What the votes of a task say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Accept this value.
    Accept((BlobHash, u64)),
    /// Run the task again on another peer.
    More,
}

impl Owner {
    /// Replaces the executors' trust records with `book` (the driver's, carried over from earlier
    /// jobs). Call it right after [`Owner::new`], before any message.
    pub fn set_trust(&mut self, book: TrustBook) {
        self.trust = book;
    }

    /// The executors' trust records as this job left them so far.
    pub fn trust(&self) -> &TrustBook {
        &self.trust
    }

    /// Takes the trust records out (for the driver to keep for the next job), leaving an empty
    /// book.
    pub fn take_trust(&mut self) -> TrustBook {
        std::mem::take(&mut self.trust)
    }

    /// Whether `p`'s run can check another: the owner's own peer, or a trusted one.
    fn anchored(&self, p: PeerId) -> bool {
        p == self.me || self.trust.trusted(&p, self.cfg.verify.trust_streak)
    }

    /// Live peers that could still run `i` for verification (not leaving, not voted, not
    /// refused); with `anchored`, only those whose run can check another.
    fn fresh_peers(&self, i: TaskIndex, anchored: bool) -> impl Iterator<Item = PeerId> + '_ {
        let rec = &self.recs[i.0 as usize];
        self.caps
            .iter()
            .filter(|&(p, &slots)| slots > 0 && !self.dead.contains(p) && !self.leaving.contains(p))
            .filter(|&(p, _)| self.cfg.own_runs || *p != self.me)
            .map(|(&p, _)| p)
            .filter(move |p| !rec.votes.iter().any(|v| v.peer == *p) && !rec.refused_by.contains(p))
            .filter(move |&p| !anchored || self.anchored(p))
    }

    /// Adds to `avoid` the peers a run of `i` in verification must not go to: those that voted
    /// and, under [`VerifyPolicy::Adaptive`] while some peer that can check is there, every peer
    /// that cannot (the check then waits for a free slot on one that can: `room_only`); waives
    /// the distance rule (`checking`) when no peer left for it is near enough.
    pub(super) fn avoid_for_checks(&mut self, i: TaskIndex) {
        let rec = &self.recs[i.0 as usize];
        if rec.votes.is_empty() {
            return;
        }
        self.avoid.extend(rec.votes.iter().map(|v| v.peer));
        if self.cfg.verify.policy == VerifyPolicy::Adaptive
            && rec.known.is_none()
            && self.fresh_peers(i, true).next().is_some()
        {
            let weak: Vec<PeerId> = self.caps.keys().copied().filter(|&p| !self.anchored(p)).collect();
            self.avoid.extend(weak);
            self.room_only = true;
        }
        // Distance is waived only when no peer left for the check is near enough (they may all
        // have voted): a far check delays the task more than waiting for a near peer.
        let cost = self.costs.estimate(&self.job, i);
        let near = self.fresh_peers(i, false).any(|p| self.worth(p, cost));
        self.checking = !near;
    }

    /// Whether a trusted peer's lone run (attempt `attempt` of `i`) is drawn for a spot check.
    fn spot_check(&self, i: TaskIndex, peer: PeerId, attempt: u32) -> bool {
        let v = &self.cfg.verify;
        let t = self.trust.get(&peer);
        let over = t.streak.saturating_sub(self.trust.needs(&peer, v.trust_streak));
        let p = (1.0 / (1.0 + f64::from(over))).max(v.spot_min);
        let id = self.id.0;
        draw(v.seed, &[id as u64, (id >> 64) as u64, u64::from(i.0), u64::from(attempt)]) < p
    }

    /// What the votes of `i` say under the job's policy.
    fn judge(&self, i: TaskIndex) -> Verdict {
        let rec = &self.recs[i.0 as usize];
        let votes = &rec.votes;
        if let Some(k) = rec.known {
            return if votes.iter().any(|v| v.value == k) { Verdict::Accept(k) } else { Verdict::More };
        }
        let tally = tally(votes);
        let Some((top, ps)) = tally.first() else { return Verdict::More };
        match self.cfg.verify.policy {
            VerifyPolicy::None => Verdict::Accept(*top),
            VerifyPolicy::Replicate { k, quorum } => {
                if ps.len() >= quorum as usize && votes.len() >= k as usize {
                    Verdict::Accept(*top)
                } else {
                    Verdict::More
                }
            }
            VerifyPolicy::Adaptive => {
                if let Some(v) = votes.iter().find(|v| v.peer == self.me) {
                    return Verdict::Accept(v.value); // The owner's own run is the reference.
                }
                if let [v] = &votes[..] {
                    let lone = self.anchored(v.peer) && !self.spot_check(i, v.peer, v.attempt);
                    return if lone { Verdict::Accept(v.value) } else { Verdict::More };
                }
                let anchors = |ps: &[PeerId]| ps.iter().filter(|&&p| self.anchored(p)).count();
                let a = anchors(ps);
                let most = tally[1..].iter().all(|(_, qs)| qs.len() < ps.len());
                let beaten = !most || tally[1..].iter().any(|(_, qs)| anchors(qs) >= a);
                // No run can be checked (the owner runs nothing and no live peer is trusted): two
                // agreeing peers with more votes than any other value will do (weak: colluders
                // can agree too).
                let weak = !votes.iter().any(|v| self.anchored(v.peer))
                    && self.fresh_peers(i, true).next().is_none();
                if ps.len() >= 2 && ((a >= 1 && !beaten) || (weak && most)) {
                    Verdict::Accept(*top)
                } else {
                    Verdict::More
                }
            }
        }
    }

    /// A successful run of `i` by its holder while the task is not done, under a verifying
    /// policy.
    pub(super) fn on_vote(&mut self, i: TaskIndex, vote: Vote) {
        let (fuel, busy_us) = (vote.value.1, vote.busy_us);
        self.fuel_used = self.fuel_used.saturating_add(fuel);
        self.busy_us = self.busy_us.saturating_add(busy_us);
        let rec = &mut self.recs[i.0 as usize];
        if !rec.votes.is_empty() {
            self.verify_runs = self.verify_runs.saturating_add(1);
            self.verify_fuel = self.verify_fuel.saturating_add(fuel);
        }
        // A peer that runs the task again (it stole its own check) adds no vote.
        if !rec.votes.iter().any(|v| v.peer == vote.peer) && rec.votes.len() < VOTES_MAX {
            rec.votes.push(vote);
        }
        match self.judge(i) {
            Verdict::Accept(value) => self.conclude(i, value),
            Verdict::More => self.run_again(i),
        }
    }

    /// Issues `i` once more for verification, to a peer that has not run it; settles it with
    /// what there is when no such peer is left (or fails it).
    fn run_again(&mut self, i: TaskIndex) {
        self.set(i, TaskState::Waiting);
        if self.over {
            return;
        }
        if self.short_of_peers(i) {
            self.starve(i);
        } else if self.inputs_ready(i) {
            self.issue(i, None);
        }
    }

    /// `i` is in verification and no peer in view can run it again: it waits (state `Waiting`)
    /// for membership to show one, up to [`VerifyConfig::patience`] from the first time, then is
    /// settled with the runs there are ([`Owner::settle_exhausted`]).
    pub(super) fn starve(&mut self, i: TaskIndex) {
        self.set(i, TaskState::Waiting);
        if self.recs[i.0 as usize].votes.len() >= VOTES_MAX {
            // No peer that membership may show can add a vote.
            self.starved.remove(&i);
            self.settle_exhausted(i);
            return;
        }
        let deadline = match self.starved.get(&i) {
            Some(&at) => at,
            None => {
                let at = self.now.saturating_add(self.cfg.verify.patience);
                self.starved.insert(i, at);
                self.next_token += 1;
                let token = self.next_token;
                self.retries.insert(token, (i, super::TimerKind::Starved));
                self.timers.push_back(crate::sched::Timer { at, token });
                at
            }
        };
        if self.now >= deadline {
            self.starved.remove(&i);
            self.settle_exhausted(i);
        }
    }

    /// Tasks waiting for a peer to check them that the view now offers one are issued; at a
    /// starving task's deadline (`timer`), it is settled if it still has none.
    pub(super) fn feed_starved(&mut self, timer: Option<TaskIndex>) {
        let waiting: Vec<TaskIndex> = self.starved.keys().copied().collect();
        for i in waiting {
            if self.recs[i.0 as usize].state != TaskState::Waiting || self.over {
                self.starved.remove(&i);
            } else if !self.short_of_peers(i) {
                self.starved.remove(&i);
                if self.inputs_ready(i) {
                    self.issue(i, None);
                }
            } else if timer == Some(i) {
                self.starve(i);
            }
        }
    }

    /// Whether `i` is in verification and no further run of it can help: [`VOTES_MAX`] peers
    /// ran it, or every live peer able to has.
    pub(super) fn short_of_peers(&self, i: TaskIndex) -> bool {
        let votes = self.recs[i.0 as usize].votes.len();
        votes > 0 && (votes >= VOTES_MAX || self.fresh_peers(i, false).next().is_none())
    }

    /// Every live peer ran `i` (or [`VOTES_MAX`] did) without the policy being met: the value
    /// most peers agree on is accepted if it has the quorum (replicate) or at least two voters
    /// and more than any other (adaptive, with no owner's or trusted peer's run possible);
    /// otherwise the task fails.
    pub(super) fn settle_exhausted(&mut self, i: TaskIndex) {
        let tally = tally(&self.recs[i.0 as usize].votes);
        let need = match self.cfg.verify.policy {
            VerifyPolicy::Replicate { quorum, .. } => quorum as usize,
            _ => 2,
        };
        let best = tally
            .first()
            .filter(|(_, ps)| ps.len() >= need && tally[1..].iter().all(|(_, qs)| qs.len() < ps.len()));
        match best {
            Some(&(value, _)) => self.conclude(i, value),
            None => {
                let n = self.recs[i.0 as usize].votes.len();
                let why = format!(
                    "verification: {n} distinct peers ran it and no {need} of them agreed (too few \
                     live peers to reach the policy)"
                );
                self.fail(i, FailureKind::Executor(why));
            }
        }
    }

    /// Accepts `value` for `i`: the peers that gave it hold the output; the others lost (their
    /// trust is reset and their lone results re-made); agreeing peers with a checking partner
    /// gain trust.
    fn conclude(&mut self, i: TaskIndex, value: (BlobHash, u64)) {
        let votes = std::mem::take(&mut self.recs[i.0 as usize].votes);
        let (win, lose): (Vec<&Vote>, Vec<&Vote>) = votes.iter().partition(|v| v.value == value);
        let anchored: Vec<bool> = win.iter().map(|v| self.anchored(v.peer)).collect();
        for (k, v) in win.iter().enumerate() {
            let partner = anchored.iter().enumerate().any(|(j, &a)| j != k && a);
            if v.peer != self.me && partner {
                self.trust.agreed(v.peer);
            }
        }
        let checked = win.len() >= 2
            || win.iter().any(|v| v.peer == self.me)
            || self.recs[i.0 as usize].known == Some(value);
        let mut losers: Vec<PeerId> = lose.iter().map(|v| v.peer).collect();
        let Some(&last) = win.last() else { return };
        // Every run that gave the accepted value is paid (the losers' are not), and its peer
        // counts among the job's.
        for v in &win {
            self.grant(i, v.peer, v.attempt, value.0, value.1);
            self.peers_used.insert(v.peer);
        }
        if let Some((peer, was)) = self.recs[i.0 as usize].lone.take()
            && was != value
        {
            // Re-made (its output was lost), it gives another value than the lone run accepted
            // before: that peer lied, and the consumers ran on its bytes.
            if !losers.contains(&peer) {
                losers.push(peer);
            }
            let mut reset = Vec::new();
            for k in 0..self.job.children(i).len() {
                let c = self.job.children(i)[k];
                self.reset_downstream(c, &mut reset);
            }
        }
        let holders: Vec<PeerId> =
            win.iter().map(|v| v.peer).filter(|p| !self.dead.contains(p)).take(super::HOLDERS_MAX).collect();
        let rec = &mut self.recs[i.0 as usize];
        rec.known = checked.then_some(value);
        rec.lone = (!checked).then_some((last.peer, value));
        let holders = if holders.is_empty() { vec![last.peer] } else { holders };
        self.accept(i, (last.peer, last.attempt), last.output.clone(), holders, value.1);
        if !losers.is_empty() {
            for &l in &losers {
                self.trust.lied(l);
            }
            self.disagreements = self.disagreements.saturating_add(losers.len() as u64);
            self.events.push_back(OwnerEvent::Disagreement { task: i, losers: losers.clone() });
            for l in losers {
                self.discard_lone(l);
            }
        }
    }

    /// `liar` was caught: every result of this job accepted on its lone, unchecked run is
    /// discarded, and it and everything made from it are made again.
    fn discard_lone(&mut self, liar: PeerId) {
        let mut reset = Vec::new();
        for k in 0..self.recs.len() {
            if self.recs[k].lone.is_some_and(|(p, _)| p == liar) && self.is_task_done(TaskIndex(k as u32)) {
                self.discarded = self.discarded.saturating_add(1);
                self.reset_downstream(TaskIndex(k as u32), &mut reset);
            }
        }
        for k in 0..self.job.len() {
            let i = self.job.topo_order()[k];
            if reset.contains(&i)
                && self.recs[i.0 as usize].state == TaskState::Waiting
                && self.inputs_ready(i)
            {
                self.issue(i, None);
            }
        }
    }

    /// Takes `i` and every task downstream of it back to waiting, forgetting their results
    /// (their inputs change); adds them to `reset`.
    fn reset_downstream(&mut self, i: TaskIndex, reset: &mut Vec<TaskIndex>) {
        let mut stack = vec![i];
        while let Some(j) = stack.pop() {
            if reset.contains(&j) {
                continue;
            }
            reset.push(j);
            match self.recs[j.0 as usize].state {
                TaskState::Failed(_) => continue,
                TaskState::Done { .. } => {
                    self.done -= 1;
                    self.set(j, TaskState::Waiting);
                }
                _ => self.set(j, TaskState::Waiting),
            }
            let rec = &mut self.recs[j.0 as usize];
            rec.votes.clear();
            rec.known = None;
            rec.lone = None;
            stack.extend(self.job.children(j).iter().copied());
        }
    }
}

/// A deterministic draw in `[0, 1)` from `seed` and `parts` (splitmix64).
pub(super) fn draw(seed: u64, parts: &[u64]) -> f64 {
    let mut x = seed;
    for &p in parts {
        x ^= p;
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Distinct values among `votes` with their voters, most voted first (ties: first voted first).
pub(super) fn tally(votes: &[Vote]) -> Vec<((BlobHash, u64), Vec<PeerId>)> {
    let mut out: Vec<((BlobHash, u64), Vec<PeerId>)> = Vec::new();
    for v in votes {
        match out.iter_mut().find(|(val, _)| *val == v.value) {
            Some((_, ps)) => ps.push(v.peer),
            None => out.push((v.value, vec![v.peer])),
        }
    }
    out.sort_by_key(|(_, ps)| std::cmp::Reverse(ps.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!(VerifyPolicy::parse("none"), Ok(VerifyPolicy::None));
        assert_eq!(VerifyPolicy::parse("adaptive"), Ok(VerifyPolicy::Adaptive));
        assert_eq!(VerifyPolicy::parse("replicate=3"), Ok(VerifyPolicy::Replicate { k: 3, quorum: 2 }));
        assert_eq!(VerifyPolicy::parse("replicate=2"), Ok(VerifyPolicy::Replicate { k: 2, quorum: 2 }));
        assert_eq!(VerifyPolicy::parse("replicate=5/4"), Ok(VerifyPolicy::Replicate { k: 5, quorum: 4 }));
        for bad in ["replicate=1", "replicate=3/4", "replicate=x", "twice", "replicate=99"] {
            assert!(VerifyPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trust_book_round_trips_and_rejects_garbage() {
        let mut b = TrustBook::new();
        b.agreed(PeerId([1; 32]));
        b.agreed(PeerId([1; 32]));
        b.lied(PeerId([2; 32]));
        let back = TrustBook::from_bytes(&b.to_bytes()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.get(&PeerId([1; 32])), Trust { streak: 2, caught: 0, confirmed: 2 });
        assert_eq!(back.caught().count(), 1);
        for bad in [&b"zz 1 2 3\n"[..], b"00 1 2 3\n", b"a b\n", &[0xff, 0xfe]] {
            assert!(TrustBook::from_bytes(bad).is_err());
        }
        // A catch doubles the streak needed; too many, and never again.
        assert_eq!(back.needs(&PeerId([2; 32]), 16), 32);
        assert!(!back.trusted(&PeerId([1; 32]), 3) && back.trusted(&PeerId([1; 32]), 2));
        let mut liar = TrustBook::new();
        for _ in 0..=CATCHES_MAX {
            liar.lied(PeerId([3; 32]));
        }
        assert_eq!(liar.needs(&PeerId([3; 32]), 16), u32::MAX);
        // Merging: a catch anywhere wins over a streak elsewhere.
        let mut a = b.clone();
        let mut other = b.clone();
        other.lied(PeerId([1; 32]));
        a.agreed(PeerId([1; 32]));
        a.merge(&other);
        assert_eq!(a.get(&PeerId([1; 32])), Trust { streak: 0, caught: 1, confirmed: 3 });
        a.merge(&liar);
        assert_eq!(a.get(&PeerId([3; 32])).caught, CATCHES_MAX + 1);
    }

    #[test]
    fn draws_are_uniform_enough_and_deterministic() {
        let n = 10_000;
        let below = (0..n).filter(|&i| draw(7, &[i, 3]) < 0.25).count();
        assert!((2_200..2_800).contains(&below), "{below}");
        assert_eq!(draw(1, &[2, 3]), draw(1, &[2, 3]));
        assert_ne!(draw(1, &[2, 3]), draw(2, &[2, 3]));
    }
}
