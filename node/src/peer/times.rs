//! How long task runs took: a fixed-bucket histogram kept by the actor and published in
//! [`PeerStatus::task_times`](super::PeerStatus::task_times) (the worker's metrics read it).
//!
//! Invariants: the bucket bounds are fixed ([`TaskTimes::BOUNDS_S`]); every run lands in exactly
//! one bucket (the last one holds the runs longer than the last bound), so the buckets add up to
//! [`TaskTimes::count`]; counts and the sum only grow (saturating).

use std::time::Duration;

/// Number of finite bucket bounds.
const BUCKETS: usize = 16;

/// A histogram of run times: plain `Copy` data, cheap to publish on every actor step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskTimes {
    /// Runs per bucket (not cumulative): `counts[i]` holds the runs of at most `BOUNDS_S[i]`
    /// seconds and more than the bound before; `counts[BUCKETS]` those above the last bound.
    counts: [u64; BUCKETS + 1],
    /// The runs' total time, in microseconds.
    sum_micros: u64,
}

impl TaskTimes {
    /// The upper bounds of the buckets, in seconds: 1 ms to 30 min, for tasks from a tile of a
    /// demo to the default one-hour cap.
    pub const BOUNDS_S: [f64; BUCKETS] =
        [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0];

    /// Counts one run of `took`.
    pub fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = Self::BOUNDS_S.iter().position(|&b| secs <= b).unwrap_or(BUCKETS);
        self.counts[i] = self.counts[i].saturating_add(1);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }

    /// Runs counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &n| a.saturating_add(n))
    }

    /// The runs' total time, in seconds.
    pub fn sum_secs(&self) -> f64 {
        Duration::from_micros(self.sum_micros).as_secs_f64()
    }

    /// Each bucket's upper bound with its runs, not cumulative (the form `prometheus-client`'s
    /// encoders take); the last bound is `f64::INFINITY`.
    pub fn buckets(&self) -> [(f64, u64); BUCKETS + 1] {
        std::array::from_fn(|i| (Self::BOUNDS_S.get(i).copied().unwrap_or(f64::INFINITY), self.counts[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_land_in_the_first_bucket_that_holds_them_and_add_up() {
        let mut t = TaskTimes::default();
        assert_eq!((t.count(), t.sum_secs()), (0, 0.0));
        t.observe(Duration::from_micros(500));
        t.observe(Duration::from_millis(1));
        t.observe(Duration::from_millis(30));
        t.observe(Duration::from_secs(3600));
        assert_eq!(t.count(), 4);
        let b = t.buckets();
        assert_eq!(b[0], (0.001, 2), "a bound is inclusive");
        assert_eq!(b[5], (0.05, 1));
        assert_eq!(b[BUCKETS], (f64::INFINITY, 1), "an hour is only in +Inf");
        assert_eq!(b.iter().map(|(_, n)| n).sum::<u64>(), t.count());
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0));
        assert!((t.sum_secs() - 3600.0315).abs() < 1e-9, "{}", t.sum_secs());
    }
}
