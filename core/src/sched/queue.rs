//! The ready queue: tasks a peer holds and may run or give away.
//!
//! Invariant: [`ReadyQueue::pop`] returns the highest priority first and, among equal priorities,
//! the task that arrived first (so all-zero priorities give FIFO order). The queued fuel is summed
//! exactly in a `u128` (at most 2^64 tasks of at most 2^64 fuel cannot overflow it).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::msg::TaskDesc;

#[derive(Debug)]
struct Entry {
    priority: u64,
    seq: Reverse<u64>,
    desc: TaskDesc,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(other.priority, other.seq))
    }
}

/// Ready tasks ordered by priority, then arrival.
#[derive(Debug, Default)]
pub struct ReadyQueue {
    heap: BinaryHeap<Entry>,
    seq: u64,
    /// Exact sum of the queued costs (peer-supplied numbers: a u64 sum could overflow).
    fuel: u128,
}

impl ReadyQueue {
    /// Adds a task.
    pub fn push(&mut self, desc: TaskDesc) {
        self.seq += 1;
        self.fuel += u128::from(desc.cost);
        self.heap.push(Entry { priority: desc.priority, seq: Reverse(self.seq), desc });
    }

    /// Removes the highest-priority task.
    pub fn pop(&mut self) -> Option<TaskDesc> {
        let desc = self.heap.pop()?.desc;
        self.fuel -= u128::from(desc.cost);
        Some(desc)
    }

    /// Estimated cost of all queued tasks, in fuel (saturating at `u64::MAX`).
    pub fn fuel(&self) -> u64 {
        u64::try_from(self.fuel).unwrap_or(u64::MAX)
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether some attempt of `task` is queued.
    pub fn contains(&self, task: crate::ids::TaskId) -> bool {
        self.heap.iter().any(|e| e.desc.task == task)
    }

    /// Keeps only the tasks for which `keep` says true.
    pub fn retain(&mut self, mut keep: impl FnMut(&TaskDesc) -> bool) {
        self.heap.retain(|e| keep(&e.desc));
        self.fuel = self.heap.iter().map(|e| u128::from(e.desc.cost)).sum();
    }

    /// Calls `f` on every queued task, in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(&TaskDesc)) {
        for e in &self.heap {
            f(&e.desc);
        }
    }

    /// Removes up to half the tasks, rounded up (`n - n / 2`), at most `max`, highest priority first.
    pub fn steal_half(&mut self, max: u32) -> Vec<TaskDesc> {
        let n = self.heap.len();
        let k = (n - n / 2).min(max as usize);
        (0..k).filter_map(|_| self.pop()).collect()
    }
}
