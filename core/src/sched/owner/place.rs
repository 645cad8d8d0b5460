//! Where the owner puts ready tasks, and the per-peer bookkeeping behind it.
//!
//! Invariant: `load[p]` is the number of this job's attempts in state `Placed { at: p }`,
//! `placed`-ness changes only through `Owner::set`, and `by_load` holds exactly the known live
//! peers keyed by their current (load − slots, RTT).

use std::time::Duration;

use super::{Owner, TaskState};
use crate::ids::{PeerId, TaskIndex};
use crate::job::Input;
use crate::sched::peer::PeerHint;

impl Owner {
    pub(super) fn note_view(&mut self, view: &[PeerHint]) {
        let mut idle: Vec<&PeerHint> = view
            .iter()
            .filter(|h| h.peer != self.me && h.load.free_slots > 0 && h.load.ready_tasks == 0)
            .collect();
        idle.sort_by_key(|h| (std::cmp::Reverse(h.rtt), h.peer));
        self.view_idle = idle.iter().map(|h| h.peer).collect();
        self.in_view = view.iter().map(|h| h.peer).collect();
        for h in view {
            if h.peer != self.me && self.dead.remove(&h.peer) {
                // Membership shows it again (a healed partition): usable, its old work written off.
                self.set_cap(h.peer, h.load.slots.min(super::auth::SLOTS_MAX));
            }
            if self.rtt.get(&h.peer) != Some(&h.rtt) {
                let known = self.by_load.remove(&self.load_key(h.peer));
                self.rtt.insert(h.peer, h.rtt);
                if known {
                    self.by_load.insert(self.load_key(h.peer));
                }
            }
            // A peer becomes a target once its hints show it runs tasks: a free slot, or a queue
            // (busy with other work). One that never shows either may donate no cores (drivers
            // that cannot tell report at least one slot) and stays out until it reports a result.
            // A peer that advertised no slots (paused, or reported a result while paused) and
            // advertises some again has resumed.
            let resumed =
                self.caps.get(&h.peer) == Some(&0) && h.load.slots > 0 && !self.leaving.contains(&h.peer);
            let unknown = !self.caps.contains_key(&h.peer);
            if (unknown || resumed) && (h.load.free_slots > 0 || h.load.ready_tasks > 0) {
                self.set_cap(h.peer, h.load.slots.min(super::auth::SLOTS_MAX));
            }
        }
        self.update_near_rtt();
        self.feed_starved(None);
        self.flush();
    }

    pub(super) fn update_near_rtt(&mut self) {
        let live = self.rtt.iter().filter(|(p, _)| !self.dead.contains(p));
        self.near_rtt = live.clone().map(|(_, &r)| r).min().unwrap_or_default();
        let near = self.near_rtt.mul_f64(1.5);
        let slots: u32 = live
            .filter(|&(_, &r)| r <= near)
            .fold(0u32, |n, (p, _)| n.saturating_add(self.caps.get(p).copied().unwrap_or(1)));
        self.near_slots = slots.max(1);
    }

    /// Changes task `i`'s state, keeping the per-peer placement counts right.
    ///
    /// When a placed attempt ends without output (not placed, not done), the continuations
    /// waiting for it at its holder are gone with it: they go back to waiting, recursively.
    pub(super) fn set(&mut self, i: TaskIndex, state: TaskState) {
        let was_placed = matches!(self.recs[i.0 as usize].state, TaskState::Placed { .. });
        if let TaskState::Placed { at, .. } = self.recs[i.0 as usize].state {
            self.add_load(at, -1);
        }
        if self.recs[i.0 as usize].state == TaskState::Ready {
            self.held_fuel = self.held_fuel.saturating_sub(self.recs[i.0 as usize].held);
        }
        if state == TaskState::Ready {
            let cost = self.costs.estimate(&self.job, i);
            self.recs[i.0 as usize].held = cost;
            self.held_fuel = self.held_fuel.saturating_add(cost);
        }
        if let TaskState::Placed { at, .. } = state {
            self.add_load(at, 1);
        }
        let ended = was_placed && !matches!(state, TaskState::Placed { .. } | TaskState::Done { .. });
        if matches!(self.recs[i.0 as usize].state, TaskState::Done { .. })
            && !matches!(state, TaskState::Done { .. })
        {
            self.journal.push(crate::sched::deputy::Change::Undone { task: i });
        }
        self.recs[i.0 as usize].state = state;
        if ended {
            for k in 0..self.job.children(i).len() {
                let c = self.job.children(i)[k];
                if self.recs[c.0 as usize].after == Some(i) {
                    self.recs[c.0 as usize].after = None;
                    if matches!(self.recs[c.0 as usize].state, TaskState::Placed { .. }) {
                        self.set(c, TaskState::Waiting);
                    }
                }
            }
        }
    }

    pub(super) fn load_key(&self, p: PeerId) -> ((i64, Duration), PeerId) {
        let load = i64::from(self.load.get(&p).copied().unwrap_or(0));
        let rtt =
            if p == self.me { Duration::ZERO } else { self.rtt.get(&p).copied().unwrap_or(Duration::MAX) };
        ((load - i64::from(self.caps.get(&p).copied().unwrap_or(1)), rtt), p)
    }

    pub(super) fn add_load(&mut self, p: PeerId, delta: i32) {
        let known = self.by_load.remove(&self.load_key(p));
        let n = self.load.entry(p).or_default();
        *n = n.saturating_add_signed(delta);
        if known {
            self.by_load.insert(self.load_key(p));
        }
    }

    /// Records that `p` runs `slots` tasks at once. A peer with none (it donates no cores: it
    /// only submits, relays or serves blobs) is never a placement target: work queued there
    /// would wait for a thief.
    pub(super) fn set_cap(&mut self, p: PeerId, slots: u32) {
        if self.dead.contains(&p) {
            return;
        }
        self.by_load.remove(&self.load_key(p));
        self.caps.insert(p, slots);
        if slots > 0 {
            self.by_load.insert(self.load_key(p));
        }
    }

    pub(super) fn has_room(&self, p: PeerId) -> bool {
        !self.dead.contains(&p)
            && !self.leaving.contains(&p)
            && self.load.get(&p).copied().unwrap_or(0) < self.caps.get(&p).copied().unwrap_or(1)
    }

    /// Chooses where a ready task goes: the peer with most of its input bytes if it has room, else
    /// the peer whose report made it ready, else a peer known to have room, else the data.
    /// `None`: hold it back (every known peer has its running and queued quota).
    ///
    /// Among the peers with room — the one holding most input bytes, the peer whose report made
    /// the task ready (work-first), and the least loaded nearest known peer — it picks the
    /// earliest estimated start: round trip from the owner plus moving the input bytes it lacks
    /// at [`OwnerConfig::bandwidth`].
    pub(super) fn place(
        &mut self,
        bytes: &mut [(PeerId, u64)],
        hint: Option<PeerId>,
        cost: u64,
    ) -> Option<PeerId> {
        bytes.sort_by_key(|&(p, n)| (std::cmp::Reverse(n), Some(p) != hint, p));
        let total: u64 = bytes.iter().fold(0u64, |a, &(_, n)| a.saturating_add(n));
        let mut cands: Vec<PeerId> = Vec::with_capacity(3);
        if let Some(&(p, _)) = bytes.iter().find(|&&(p, n)| n > 0 && self.has_room(p) && self.worth(p, cost))
        {
            cands.push(p);
        }
        if let Some(h) = hint.filter(|&h| self.has_room(h) && self.worth(h, cost)) {
            cands.push(h);
        }
        cands.extend(self.nearest_free(cost));
        let start = |p: &PeerId| {
            let here = bytes.iter().find(|(q, _)| q == p).map_or(0, |&(_, n)| n);
            let rtt =
                if *p == self.me { Duration::ZERO } else { self.rtt.get(p).copied().unwrap_or_default() };
            rtt + Duration::from_secs_f64((total.saturating_sub(here) as f64 / self.cfg.bandwidth).min(1e9))
        };
        if let Some(p) = cands.iter().min_by_key(|p| start(p)) {
            return Some(*p);
        }
        while let Some(p) = self.view_idle.pop() {
            if self.has_room(p) && self.worth(p, cost) {
                return Some(p);
            }
        }
        // No free slot known: queue it at the least loaded peer worth it (thieves even out the
        // rest), up to the queue quota; beyond it, hold it back. A check is never queued.
        if self.room_only {
            return None;
        }
        let &(_, p) = self.by_load.iter().find(|&&(_, p)| self.worth(p, cost))?;
        let cap = u64::from(self.caps.get(&p).copied().unwrap_or(1));
        let load = u64::from(self.load.get(&p).copied().unwrap_or(0));
        (load < cap * (1 + u64::from(self.cfg.queue_per_slot))).then_some(p)
    }

    /// Whether sending a task of `cost` fuel to `p` can pay: `p` is in the owner's cluster
    /// (RTT within 1.5 × the smallest known), or the round trip is shorter than the task's run
    /// or than the time the held-back work would keep the cluster busy, or the task is a
    /// verification run (`checking`).
    pub(super) fn worth(&self, p: PeerId, cost: u64) -> bool {
        if self.avoid.contains(&p) {
            return false;
        }
        if self.checking {
            return true;
        }
        let rtt = if p == self.me { Duration::ZERO } else { self.rtt.get(&p).copied().unwrap_or_default() };
        let run = cost.max(self.held_fuel / u64::from(self.near_slots));
        rtt <= self
            .near_rtt
            .mul_f64(1.5)
            .max(Duration::from_secs_f64((run as f64 / self.cfg.fuel_per_sec).min(1e9)))
    }

    /// Whether `p` holds fewer of this job's tasks than its slots plus queue quota.
    pub(super) fn below_quota(&self, p: PeerId) -> bool {
        let cap = u64::from(self.caps.get(&p).copied().unwrap_or(1));
        u64::from(self.load.get(&p).copied().unwrap_or(0)) < cap * (1 + u64::from(self.cfg.queue_per_slot))
    }

    /// The least loaded, nearest known peer with at most one task per slot that is worth `cost`.
    pub(super) fn nearest_low(&self, cost: u64) -> Option<PeerId> {
        let low = self.by_load.iter().take_while(|&&((slack, _), _)| slack <= 0);
        low.map(|&(_, p)| p).find(|&p| self.worth(p, cost))
    }

    /// The least loaded, nearest known peer with a free slot that is worth a task of `cost`.
    pub(super) fn nearest_free(&self, cost: u64) -> Option<PeerId> {
        self.by_load
            .iter()
            .take_while(|&&((slack, _), _)| slack < 0)
            .find(|&&(_, p)| self.worth(p, cost))
            .map(|&(_, p)| p)
    }

    /// Input bytes of task `i` on each holder (literal blobs count for the owner).
    pub(super) fn input_bytes(&self, i: TaskIndex) -> Vec<(PeerId, u64)> {
        let mut bytes: Vec<(PeerId, u64)> = Vec::new();
        let mut add = |p: PeerId, n: u64| match bytes.iter_mut().find(|(q, _)| *q == p) {
            Some(e) => e.1 = e.1.saturating_add(n),
            None => bytes.push((p, n)),
        };
        for input in &self.job.task(i).inputs {
            match *input {
                Input::Blob { size, .. } => add(self.me, size),
                Input::Output(p) => {
                    if let TaskState::Done { output, holders } = &self.recs[p.0 as usize].state
                        && output.inline.is_none()
                    {
                        for &h in holders {
                            add(h, output.size);
                        }
                    }
                }
            }
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::ids::{BlobHash, JobId, PeerId};
    use crate::job::{Job, TaskSpec};
    use crate::sched::{LoadHint, Owner, OwnerConfig, PeerHint, SchedMsg, Transmit};

    fn hint(peer: PeerId, slots: u32, free_slots: u32, ready_tasks: u32) -> PeerHint {
        PeerHint {
            peer,
            load: LoadHint { slots, free_slots, ready_tasks, ready_fuel: 0 },
            rtt: Duration::ZERO,
        }
    }

    fn targets(out: &[Transmit]) -> Vec<PeerId> {
        out.iter().filter(|t| matches!(t.msg, SchedMsg::Assign { .. })).map(|t| t.to).collect()
    }

    fn sent(o: &mut Owner) -> Vec<PeerId> {
        targets(&std::iter::from_fn(|| o.poll_transmit()).collect::<Vec<_>>())
    }

    #[test]
    fn work_goes_only_to_peers_that_run_tasks() {
        let (me, busy, relay, none) = (PeerId([9; 32]), PeerId([5; 32]), PeerId([1; 32]), PeerId([2; 32]));
        let m = BlobHash::of(b"m");
        let job = Job::new((0..60).map(|i| TaskSpec::new(format!("t{i}"), m)).collect()).unwrap();
        // `relay` donates no cores but its driver cannot tell (one slot, never free, nothing
        // queued); `none` says it has no slots (yet holds a queue); `busy` runs other work. The
        // relay and `none` sort first on every tie.
        let view = [hint(relay, 1, 0, 0), hint(none, 0, 0, 2), hint(busy, 1, 0, 3)];
        let mut o = Owner::new(
            JobId(1),
            me,
            job,
            OwnerConfig::default(),
            &view,
            Box::new(|_: &[u8; 32]| [0; 64]),
            Duration::ZERO,
        );
        let to = sent(&mut o);
        assert!(to.contains(&busy), "a busy peer still gets a queue: {to:?}");
        assert!(!to.contains(&relay) && !to.contains(&none), "work placed where nothing runs it: {to:?}");
        // Seen with a free slot, the relay was a worker after all.
        o.handle_view(Duration::ZERO, &[hint(relay, 1, 1, 0), hint(none, 0, 0, 2), hint(busy, 1, 0, 3)]);
        let to = sent(&mut o);
        assert!(to.contains(&relay), "{to:?}");
        assert!(!to.contains(&none), "{to:?}");
    }
}
