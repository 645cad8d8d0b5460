//! The baselines, run in the same simulator over the same peers and messages: a central list
//! scheduler with global knowledge (HEFT-style) and naive random placement.
//!
//! **Central**: the coordinator (peer 0) knows every peer's free slots exactly and the network's
//! RTTs and bandwidth. Ready tasks wait in its queue by upward rank; whenever a slot is free, the
//! highest-ranked ready task goes to the free peer where it can start earliest (dispatch latency
//! plus fetching its inputs), chosen among the free holders of its inputs and the 8 free peers
//! nearest the coordinator. **Random**: every task is sent, as soon as it is ready, to a uniformly
//! random peer, whose queue is FIFO. Neither recovers from failures (the simulator refuses
//! `--kill` with them). Invariant: `free[p]` is peer `p`'s slots minus tasks sent to it and not
//! yet reported done.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use rand::{Rng, RngCore};
use shoal_core::ids::{JobId, PeerId, TaskId, TaskIndex};
use shoal_core::job::{CostModel, Input, Job, upward_ranks};
use shoal_core::sched::{InputLoc, InputSource, OutputRef, SchedMsg, TaskDesc, Transmit};

use crate::net::Net;

/// A central coordinator (central or random baseline).
#[derive(Debug)]
pub(crate) struct Central {
    id: JobId,
    job: Job,
    random: bool,
    ids: Vec<PeerId>,
    net: Net,
    ranks: Vec<u64>,
    missing: Vec<usize>,
    outputs: Vec<Option<(OutputRef, usize)>>,
    done: usize,
    ready: BinaryHeap<(u64, std::cmp::Reverse<u32>)>,
    free: Vec<u32>,
    /// Peers with a free slot, by (RTT from the coordinator, index).
    free_set: BTreeSet<(Duration, usize)>,
    out: VecDeque<Transmit>,
}

impl Central {
    pub(crate) fn new(id: JobId, job: Job, random: bool, ids: Vec<PeerId>, net: Net, slots: u32) -> Self {
        let ranks = upward_ranks(&job, &CostModel::default());
        let missing: Vec<usize> = (0..job.len() as u32).map(|i| job.parents(TaskIndex(i)).len()).collect();
        let free = vec![slots; ids.len()];
        let free_set = (0..ids.len()).map(|p| (net.rtt(0, p), p)).collect();
        let mut c = Central {
            id,
            outputs: vec![None; job.len()],
            job,
            random,
            ids,
            net,
            ranks,
            missing,
            done: 0,
            ready: BinaryHeap::new(),
            free,
            free_set,
            out: VecDeque::new(),
        };
        for i in 0..c.job.len() as u32 {
            if c.missing[i as usize] == 0 {
                c.ready.push((c.ranks[i as usize], std::cmp::Reverse(i)));
            }
        }
        c
    }

    pub(crate) fn done(&self) -> usize {
        self.done
    }

    pub(crate) fn outputs(&self) -> Vec<Option<shoal_core::ids::BlobHash>> {
        self.outputs.iter().map(|o| o.as_ref().map(|(r, _)| r.hash)).collect()
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Handles a `Done` report from peer index `from`, then dispatches.
    pub(crate) fn handle_msg(&mut self, from: usize, msg: SchedMsg, rng: &mut dyn RngCore) {
        if let SchedMsg::Done { task, output, .. } = msg {
            let i = task.index.0 as usize;
            if !self.random {
                self.set_free(from, self.free[from] + 1);
            }
            if self.outputs[i].is_none() {
                self.outputs[i] = Some((output, from));
                self.done += 1;
                for k in 0..self.job.children(task.index).len() {
                    let c = self.job.children(task.index)[k];
                    self.missing[c.0 as usize] -= 1;
                    if self.missing[c.0 as usize] == 0 {
                        self.ready.push((self.ranks[c.0 as usize], std::cmp::Reverse(c.0)));
                    }
                }
            }
        }
        self.dispatch(rng);
    }

    fn set_free(&mut self, p: usize, n: u32) {
        let key = (self.net.rtt(0, p), p);
        if n == 0 {
            self.free_set.remove(&key);
        } else {
            self.free_set.insert(key);
        }
        self.free[p] = n;
    }

    /// Sends ready tasks out: all of them (random) or while slots are free (central).
    pub(crate) fn dispatch(&mut self, rng: &mut dyn RngCore) {
        let mut batch: BTreeMap<usize, Vec<TaskDesc>> = BTreeMap::new();
        if !self.random && self.free_set.is_empty() {
            return;
        }
        while let Some((_, std::cmp::Reverse(i))) = self.ready.pop() {
            let i = TaskIndex(i);
            let at = if self.random { rng.random_range(0..self.ids.len()) } else { self.best_peer(i) };
            let desc = self.desc(i);
            batch.entry(at).or_default().push(desc);
            if !self.random {
                self.set_free(at, self.free[at] - 1);
                if self.free_set.is_empty() {
                    break;
                }
            }
        }
        for (at, tasks) in batch {
            self.out
                .push_back(Transmit { to: self.ids[at], msg: SchedMsg::Assign { tasks, addrs: Vec::new() } });
        }
    }

    fn best_peer(&self, i: TaskIndex) -> usize {
        let mut cands: Vec<usize> = self.free_set.iter().take(8).map(|&(_, p)| p).collect();
        for input in &self.job.task(i).inputs {
            if let Input::Output(p) = input
                && let Some((_, h)) = &self.outputs[p.0 as usize]
                && self.free[*h] > 0
                && !cands.contains(h)
            {
                cands.push(*h);
            }
        }
        let start = |p: usize| {
            let fetch = self
                .job
                .task(i)
                .inputs
                .iter()
                .filter_map(|input| match input {
                    Input::Output(q) => self.outputs[q.0 as usize].as_ref().map(|(o, h)| {
                        if o.inline.is_some() || *h == p {
                            Duration::ZERO
                        } else {
                            self.net.transfer(*h, p, o.size)
                        }
                    }),
                    Input::Blob { size, .. } => Some(self.net.transfer(0, p, *size)),
                })
                .max()
                .unwrap_or(Duration::ZERO);
            (self.net.rtt(0, p) / 2 + fetch, p)
        };
        cands.into_iter().map(start).min().map_or(0, |(_, p)| p)
    }

    fn desc(&self, i: TaskIndex) -> TaskDesc {
        let t = self.job.task(i);
        let inputs = t
            .inputs
            .iter()
            .map(|input| match input {
                Input::Blob { hash, size } => {
                    InputLoc { hash: *hash, size: *size, source: InputSource::Holders(vec![self.ids[0]]) }
                }
                Input::Output(p) => match &self.outputs[p.0 as usize] {
                    Some((o, h)) => InputLoc {
                        hash: o.hash,
                        size: o.size,
                        source: match &o.inline {
                            Some(b) => InputSource::Inline(b.clone()),
                            None => InputSource::Holders(vec![self.ids[*h]]),
                        },
                    },
                    None => unreachable!("task {i:?} dispatched before its input {p:?} was done"),
                },
            })
            .collect();
        TaskDesc {
            task: TaskId { job: self.id, index: i },
            owner: self.ids[0],
            term: 0,
            attempt: 1,
            hops: 0,
            priority: if self.random { 0 } else { self.ranks[i.0 as usize] },
            cost: t.cost.unwrap_or(CostModel::DEFAULT_FUEL),
            module: t.module,
            args: t.args.clone(),
            inputs,
            limits: t.limits.clone(),
            // The baselines have no leases: their network never loses a message.
            lease_ms: u64::MAX,
            filled: Vec::new(),
            seal: None,
            sig: Vec::new(),
        }
    }
}
