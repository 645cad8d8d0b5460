//! Task priorities: upward rank, the longest remaining path (in estimated fuel) to a sink.
//!
//! A task's estimated cost is its hint if it has one, else the mean fuel of finished tasks of the
//! same module ([`CostModel::learn`]), else the mean over all finished tasks, else
//! [`CostModel::DEFAULT_FUEL`]. Invariant: a task's rank is strictly greater than each child's.

use std::collections::HashMap;

use super::Job;
use crate::ids::{BlobHash, TaskIndex};

/// Costs learned from finished tasks, per module.
#[derive(Clone, Debug, Default)]
pub struct CostModel {
    by_module: HashMap<BlobHash, (u128, u64)>,
    total: (u128, u64),
}

impl CostModel {
    /// Estimate used when nothing is known: half a second at 10^9 fuel per second (Dask's
    /// `unknown-task-duration` prior). Optimistic on purpose: an unknown task is assumed worth a
    /// round trip, so the owner spreads the first tasks and thieves steal them, until the first
    /// report teaches the real cost. A tiny prior made every peer a few milliseconds away look
    /// not worth a task (both the owner's and the thief's RTT gate), so on a loaded machine one
    /// worker could get a whole job.
    pub const DEFAULT_FUEL: u64 = 500_000_000;

    /// Records that a task of `module` used `fuel`.
    pub fn learn(&mut self, module: BlobHash, fuel: u64) {
        let e = self.by_module.entry(module).or_default();
        e.0 += u128::from(fuel);
        e.1 += 1;
        self.total.0 += u128::from(fuel);
        self.total.1 += 1;
    }

    /// Number of finished tasks learned from.
    pub fn samples(&self) -> u64 {
        self.total.1
    }

    /// Estimated fuel of task `i` of `job`.
    pub fn estimate(&self, job: &Job, i: TaskIndex) -> u64 {
        let t = job.task(i);
        if let Some(c) = t.cost {
            return c;
        }
        let mean = |(sum, n): (u128, u64)| (n > 0).then(|| (sum / u128::from(n)) as u64);
        self.by_module
            .get(&t.module)
            .and_then(|&e| mean(e))
            .or_else(|| mean(self.total))
            .unwrap_or(Self::DEFAULT_FUEL)
    }
}

/// Upward rank of every task (index `i` ⇒ task `i`): its estimated cost plus the largest rank of
/// its children, so sinks rank lowest and the critical path's head ranks highest.
pub fn upward_ranks(job: &Job, costs: &CostModel) -> Vec<u64> {
    let mut rank = vec![0u64; job.len()];
    for &i in job.topo_order().iter().rev() {
        let below = job.children(i).iter().map(|c| rank[c.0 as usize]).max().unwrap_or(0);
        rank[i.0 as usize] = below.saturating_add(costs.estimate(job, i).max(1));
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::TaskSpec;

    #[test]
    fn ranks_follow_the_longest_path_and_learned_costs() {
        let a = BlobHash::of(b"a");
        let b = BlobHash::of(b"b");
        let job = Job::new(vec![
            TaskSpec::new("src", a).cost(10),
            TaskSpec::new("long", b).after("src"),
            TaskSpec::new("short", a).after("src").cost(1),
            TaskSpec::new("sink", a).after("long").after("short").cost(5),
        ])
        .unwrap();
        let mut costs = CostModel::default();
        let r = upward_ranks(&job, &costs);
        assert_eq!(r, vec![10 + CostModel::DEFAULT_FUEL + 5, CostModel::DEFAULT_FUEL + 5, 6, 5]);
        costs.learn(b, 100);
        costs.learn(b, 300);
        let r = upward_ranks(&job, &costs);
        assert_eq!(r[1], 205);
        assert_eq!(r[0], 215);
        for i in 0..4u32 {
            for c in job.children(TaskIndex(i)) {
                assert!(r[i as usize] > r[c.0 as usize]);
            }
        }
    }
}
