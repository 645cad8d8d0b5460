//! Drivers that feed the state machines arbitrary message sequences from arbitrary peers, for the
//! fuzz targets (`fuzz/`, feature `fuzzing`) and the property tests (which run them on random
//! bytes). Each decodes its input into a sequence of (sender, message, time step) with a small
//! hand-written decoder — every byte string is a valid sequence — and checks the machine's
//! invariants after each step; a violation panics, which is what the fuzzer looks for.
//!
//! Not part of the API: enabled only by the `fuzzing` feature and in tests.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use crate::job::{Job, Limits, TaskSpec};
use crate::membership::{self, MemberMsg};
use crate::sched::{
    DoneReport, FailureKind, InputLoc, InputSource, LoadHint, OutputRef, Owner, OwnerConfig, PeerConfig,
    PeerHint, PeerSched, SchedMsg, TaskCaps, TaskDesc, TaskOutcome, TaskState, key_signer,
};

/// Reads numbers from the fuzz input; past its end every read is zero.
#[derive(Debug)]
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn done(&self) -> bool {
        self.data.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    /// True one time in `n`.
    fn coin(&mut self, n: u8) -> bool {
        self.below(n) == 0
    }
    fn below(&mut self, n: u8) -> u8 {
        if n == 0 { 0 } else { self.u8() % n }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Small mostly, sometimes huge: the numbers a hostile peer would try.
    fn num(&mut self) -> u64 {
        match self.u8() % 4 {
            0 => u64::from(self.u8()),
            1 => u64::MAX - u64::from(self.u8()),
            2 => u64::from(self.u32()),
            _ => u64::from(self.u32()) << 32 | u64::from(self.u32()),
        }
    }
    fn num32(&mut self) -> u32 {
        match self.u8() % 3 {
            0 => u32::from(self.u8()),
            1 => u32::MAX - u32::from(self.u8()),
            _ => self.u32(),
        }
    }
}

const JOB: JobId = JobId(7);
const PEERS: u8 = 5;

fn owner_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42; 32])
}

/// Peer 0 is the owner (a real key); the others are arbitrary ids.
fn peer(i: u8) -> PeerId {
    if i == 0 { PeerId(owner_key().verifying_key().to_bytes()) } else { PeerId([i; 32]) }
}

fn hint(b: &mut Bytes<'_>, p: u8) -> PeerHint {
    PeerHint { peer: peer(p), load: load(b), rtt: Duration::from_micros(b.num() % 10_000_000) }
}

fn load(b: &mut Bytes<'_>) -> LoadHint {
    LoadHint { slots: b.num32(), free_slots: b.num32(), ready_tasks: b.num32(), ready_fuel: b.num() }
}

fn output(b: &mut Bytes<'_>) -> OutputRef {
    let size = b.num();
    let inline = (b.coin(2)).then(|| vec![b.u8(); usize::from(b.u8())]);
    OutputRef { hash: BlobHash([b.u8(); 32]), size, inline }
}

/// A job of 1–12 tasks, each depending on a few earlier ones, with hostile cost hints.
fn job(b: &mut Bytes<'_>) -> Job {
    let n = 1 + b.below(12);
    let m = BlobHash::of(b"m");
    let specs = (0..n)
        .map(|i| {
            let mut s = TaskSpec::new(format!("t{i}"), m);
            for p in 0..i {
                if b.coin(3) {
                    s = s.after(format!("t{p}"));
                }
            }
            if b.coin(2) { s.cost(b.num()) } else { s }
        })
        .collect();
    Job::new(specs).unwrap_or_else(|e| unreachable!("generated jobs are valid: {e}"))
}

/// Drives one [`Owner`] with arbitrary owner-bound messages, timers, views, peer losses and
/// cancels. Invariants: no panic; `done` and `placed` match the task states; a task becomes done
/// only out of a placed attempt; at most 8 reports kept per task.
pub fn owner(data: &[u8]) {
    let mut b = Bytes { data };
    let job = job(&mut b);
    let n = job.len();
    let cfg = OwnerConfig {
        own_slots: u32::from(b.below(3)),
        failure_confirmations: u32::from(b.below(3)),
        continuations: b.coin(2),
        lease_floor: Duration::from_millis(1 + u64::from(b.u8())),
        ..OwnerConfig::default()
    };
    let view: Vec<PeerHint> = (1..PEERS).map(|p| hint(&mut b, p)).collect();
    let mut o = Owner::new(JOB, peer(0), job, cfg, &view, key_signer(owner_key()), Duration::ZERO);
    let mut now = Duration::ZERO;
    let mut timers = Vec::new();
    while !b.done() {
        now += Duration::from_millis(u64::from(b.u8()));
        let before: Vec<TaskState> = (0..n as u32).map(|i| o.state(TaskIndex(i)).clone()).collect();
        let from = peer(b.below(PEERS));
        let i = TaskIndex(u32::from(b.below(n as u8 + 1)));
        // Mostly the live attempt, so that the interesting paths run.
        let live = match o.state(TaskIndex(i.0.min(n as u32 - 1))) {
            TaskState::Placed { attempt, .. } => *attempt,
            _ => 1,
        };
        let attempt = if b.coin(4) { b.num32() } else { live };
        let task = TaskId { job: JOB, index: i };
        // A Done with earlier reports can make a task ready, place it on the sender and report
        // it, all in one message: the one case where a task not placed before a step is done
        // after it.
        let mut chained = false;
        let msg = match b.below(9) {
            0 => Some(SchedMsg::Claim {
                job: JOB,
                holder: peer(b.below(PEERS)),
                tasks: vec![(i, attempt, b.num32())],
            }),
            1 => {
                Some(SchedMsg::Release { job: JOB, tasks: vec![(i, attempt, b.num32())], leaving: b.coin(2) })
            }
            2 | 3 => {
                let earlier: Vec<DoneReport> = (0..b.below(3))
                    .map(|_| DoneReport {
                        task: TaskIndex(u32::from(b.below(n as u8))),
                        attempt: live,
                        output: output(&mut b),
                        fuel: b.num(),
                        busy_us: b.num(),
                    })
                    .collect();
                chained = !earlier.is_empty();
                let (output, fuel, busy_us, load) = (output(&mut b), b.num(), b.num(), load(&mut b));
                Some(SchedMsg::Done { task, attempt, output, fuel, busy_us, load, earlier })
            }
            4 => {
                let kind = match b.below(4) {
                    0 => FailureKind::Task("x".into()),
                    1 => FailureKind::InputLost { input: b.num32() },
                    2 => FailureKind::Executor("y".into()),
                    _ => FailureKind::Refused(crate::sched::Refusal::OverCap {
                        what: crate::sched::CapKind::Fuel,
                        asked: b.num(),
                        cap: b.num(),
                    }),
                };
                Some(SchedMsg::Failed { task, attempt, kind })
            }
            5 => Some(SchedMsg::Renew { job: JOB, tasks: vec![(i, attempt)] }),
            6 => {
                if !timers.is_empty() {
                    let t: crate::sched::Timer = timers.swap_remove(usize::from(b.u8()) % timers.len());
                    now = now.max(t.at);
                    o.handle_timer(now, t.token);
                }
                None
            }
            7 => {
                match b.below(4) {
                    0 => o.handle_peer_down(now, from),
                    1 => o.handle_cancel(now),
                    2 => {
                        let _ = o.handle_output_lost(now, i);
                    }
                    _ => {
                        let view: Vec<PeerHint> = (1..PEERS).map(|p| hint(&mut b, p)).collect();
                        o.handle_view(now, &view);
                    }
                }
                None
            }
            _ => Some(SchedMsg::Steal { max: b.num32(), load: load(&mut b) }),
        };
        if let Some(msg) = msg {
            let _ = o.handle_msg(now, from, msg);
        }
        let chained = chained;
        while o.poll_transmit().is_some() {}
        while o.poll_event().is_some() {}
        timers.extend(std::iter::from_fn(|| o.poll_timer()));
        timers.truncate(4096);
        // Invariants.
        let p = o.progress();
        let states: Vec<&TaskState> = (0..n as u32).map(|i| o.state(TaskIndex(i))).collect();
        let done = states.iter().filter(|s| matches!(s, TaskState::Done { .. })).count();
        let placed = states.iter().filter(|s| matches!(s, TaskState::Placed { .. })).count();
        assert_eq!(p.done, done, "done count");
        assert!(p.done <= p.total);
        assert_eq!(p.placed, placed, "placed count");
        for (k, s) in states.iter().enumerate() {
            if matches!(s, TaskState::Done { .. }) && !matches!(before[k], TaskState::Done { .. }) && !chained
            {
                assert!(
                    matches!(before[k], TaskState::Placed { .. }),
                    "task {k} done out of {:?}",
                    before[k]
                );
            }
            assert!(o.reports(TaskIndex(k as u32)).len() <= 8);
        }
    }
}

fn desc(b: &mut Bytes<'_>, owner: u8, attempt: u32) -> TaskDesc {
    let index = TaskIndex(u32::from(b.below(8)));
    let inputs = (0..b.below(3))
        .map(|_| InputLoc {
            hash: BlobHash([b.u8(); 32]),
            size: b.num(),
            source: match b.below(3) {
                0 => InputSource::Inline(vec![b.u8(); usize::from(b.below(4))]),
                1 => InputSource::Holders(vec![peer(b.below(PEERS))]),
                _ => InputSource::After { task: TaskIndex(u32::from(b.below(8))), merge: b.coin(2) },
            },
        })
        .collect();
    let limits = Limits {
        fuel: (b.coin(2)).then(|| b.num()),
        memory_bytes: (b.coin(2)).then(|| b.num()),
        output_bytes: None,
        deadline_ms: None,
    };
    let mut d = TaskDesc {
        task: TaskId { job: JobId(u128::from(b.below(2))), index },
        owner: peer(owner),
        term: 0,
        attempt,
        hops: b.num32(),
        priority: b.num(),
        cost: b.num(),
        module: BlobHash::of(b"m"),
        args: Vec::new(),
        inputs,
        limits,
        lease_ms: b.num() % 1_000_000,
        filled: Vec::new(),
        seal: None,
        sig: Vec::new(),
    };
    if owner == 0 {
        d.sign(key_signer(owner_key()).as_ref());
    }
    d
}

/// Drives one [`PeerSched`] (peer 1) with arbitrary messages from arbitrary peers, runs that
/// finish, timers, views, losses and a leave. Invariants: no panic; at most `slots` running and
/// no attempt started twice while running; queue within its cap; a descriptor altered in
/// transit (attempt ≥ 1000 here) never runs.
pub fn peer_sched(data: &[u8]) {
    let mut b = Bytes { data };
    let cfg = PeerConfig {
        slots: 1 + u32::from(b.below(3)),
        max_queued: 1 + usize::from(b.below(16)),
        caps: TaskCaps { max_fuel: (b.coin(2)).then(|| b.num()), ..TaskCaps::default() },
        ..PeerConfig::default()
    };
    let (slots, max_queued) = (cfg.slots as usize, cfg.max_queued);
    let mut p = PeerSched::new(peer(1), cfg);
    let mut rng = SmallRng::seed_from_u64(u64::from(b.u8()));
    let mut now = Duration::ZERO;
    let mut running: Vec<TaskDesc> = Vec::new();
    let mut timers: Vec<crate::sched::Timer> = Vec::new();
    while !b.done() {
        now += Duration::from_millis(u64::from(b.u8()));
        let from = b.below(PEERS);
        match b.below(9) {
            0 | 1 => {
                let owner = if b.coin(4) { b.below(PEERS) } else { from };
                let tasks = (0..b.below(6))
                    .map(|_| {
                        let attempt = 1 + u32::from(b.below(3));
                        desc(&mut b, owner, attempt)
                    })
                    .collect();
                p.handle_msg(now, peer(from), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
            }
            2 => {
                let tasks = (0..b.below(6))
                    .map(|_| {
                        let attempt = 1 + u32::from(b.below(3));
                        let mut d = desc(&mut b, 0, attempt);
                        if b.coin(3) {
                            d.attempt += 1000; // Altered after signing: must never run.
                        }
                        d
                    })
                    .collect();
                let load = load(&mut b);
                p.handle_msg(now, peer(from), SchedMsg::Stolen { tasks, load, addrs: vec![] }, &mut rng);
            }
            3 => {
                let msg = SchedMsg::Steal { max: b.num32(), load: load(&mut b) };
                p.handle_msg(now, peer(from), msg, &mut rng);
            }
            4 => p.handle_msg(
                now,
                peer(from),
                SchedMsg::Cancel { job: JobId(u128::from(b.below(2))) },
                &mut rng,
            ),
            5 => {
                if !running.is_empty() {
                    let d = running.swap_remove(usize::from(b.u8()) % running.len());
                    let outcome = if b.coin(3) {
                        TaskOutcome::Failed(FailureKind::Executor("x".into()))
                    } else {
                        TaskOutcome::Ok { output: output(&mut b), fuel: b.num() }
                    };
                    p.handle_task_finished(now, d.task, d.attempt, outcome, &mut rng);
                }
            }
            6 => {
                if !timers.is_empty() {
                    let t = timers.swap_remove(usize::from(b.u8()) % timers.len());
                    now = now.max(t.at);
                    p.handle_timer(now, t.token, &mut rng);
                }
            }
            7 => {
                let view = (0..PEERS).map(|q| hint(&mut b, q)).collect();
                p.handle_view(now, view, &mut rng);
            }
            _ => match b.below(3) {
                0 => p.handle_peer_down(now, peer(from), &mut rng),
                1 => p.handle_leave(now),
                _ => p.handle_msg(now, peer(from), SchedMsg::Renew { job: JOB, tasks: vec![] }, &mut rng),
            },
        }
        while p.poll_transmit().is_some() {}
        timers.extend(std::iter::from_fn(|| p.poll_timer()));
        timers.truncate(4096);
        while let Some(d) = p.poll_run() {
            assert!(d.attempt < 1000, "an altered descriptor ran: {d:?}");
            assert!(
                !running.iter().any(|r| r.task == d.task && r.attempt == d.attempt),
                "attempt started twice at once: {:?}",
                d.task
            );
            running.push(d);
        }
        assert!(p.running() <= slots, "more running than slots");
        assert_eq!(p.running(), running.len());
        let l = p.load();
        assert!(l.ready_tasks as usize <= max_queued, "queue over its cap");
    }
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 4000))
}

/// Drives one [`membership::Membership`] with arbitrary messages from arbitrary peers (many
/// distinct ids, hostile entries) and timers. Invariants: no panic; the view stays within
/// `view_size`, never holds the local peer, never holds a peer twice.
pub fn membership(data: &[u8]) {
    let mut b = Bytes { data };
    let cfg =
        membership::Config { view_size: 1 + usize::from(b.below(8)), max_tracked: 16, ..Default::default() };
    let view_size = cfg.view_size;
    let me = PeerId([0; 32]);
    let mut m = membership::Membership::new(me, cfg);
    let mut rng = SmallRng::seed_from_u64(u64::from(b.u8()));
    let mut now = Duration::ZERO;
    m.handle_join(now, &[addr(1)]);
    let mut timers = Vec::new();
    let id = |b: &mut Bytes<'_>| PeerId([b.u8() % 64; 32]);
    let hints = |b: &mut Bytes<'_>| load(b);
    while !b.done() {
        now += Duration::from_millis(u64::from(b.u8()) * 8);
        let from = id(&mut b);
        let entries = |b: &mut Bytes<'_>| {
            (0..b.below(20))
                .map(|_| membership::Entry {
                    id: PeerId([b.u8() % 64; 32]),
                    addr: addr(b.u8()),
                    age: b.num32(),
                    hints: hints(b),
                })
                .collect::<Vec<_>>()
        };
        let msg = match b.below(9) {
            0 => Some(MemberMsg::Join { hints: hints(&mut b) }),
            1 => Some(MemberMsg::JoinReply { entries: entries(&mut b) }),
            2 => Some(MemberMsg::Shuffle { seq: b.num(), entries: entries(&mut b) }),
            3 => Some(MemberMsg::ShuffleReply { seq: b.num(), entries: entries(&mut b) }),
            4 => Some(MemberMsg::Probe { seq: b.num(), hints: hints(&mut b) }),
            5 => Some(MemberMsg::ProbeAck { seq: b.num(), hints: hints(&mut b) }),
            6 => Some(MemberMsg::Leave),
            7 => {
                if !timers.is_empty() {
                    let t: membership::Timer = timers.swap_remove(usize::from(b.u8()) % timers.len());
                    now = now.max(t.at);
                    m.handle_timer(now, t.token, &mut rng);
                }
                None
            }
            _ => {
                match b.below(3) {
                    0 => m.handle_send_failed(now, from),
                    1 => m.handle_connection_lost(now, from),
                    _ => m.handle_leave(now),
                }
                None
            }
        };
        if let Some(msg) = msg {
            m.handle_message(now, from, addr(b.u8()), msg, &mut rng);
        }
        while m.poll_transmit().is_some() {}
        while m.poll_event().is_some() {}
        timers.extend(std::iter::from_fn(|| m.poll_timer()));
        timers.truncate(4096);
        let view: Vec<PeerId> = m.view().map(|e| e.id).collect();
        assert!(view.len() <= view_size, "view over its size");
        assert!(!view.contains(&me), "self in view");
        let distinct: BTreeSet<&PeerId> = view.iter().collect();
        assert_eq!(distinct.len(), view.len(), "a peer twice in view");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn owner_survives_arbitrary_peers(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            super::owner(&data);
        }

        #[test]
        fn peer_scheduler_survives_arbitrary_peers(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            super::peer_sched(&data);
        }

        #[test]
        fn membership_survives_arbitrary_peers(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            super::membership(&data);
        }
    }
}
