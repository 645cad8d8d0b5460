//! Unit tests of the owner and the peer scheduler, stepped by hand with explicit time.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;
use crate::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use crate::job::{Job, TaskSpec};

const JOB: JobId = JobId(42);

/// The owner's key in these tests (peer 0 is a real ed25519 key, so its signatures verify).
fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

fn signer() -> Box<dyn DescSigner> {
    key_signer(key())
}

fn peer(i: u8) -> PeerId {
    if i == 0 { PeerId(key().verifying_key().to_bytes()) } else { PeerId([i; 32]) }
}

fn hint(i: u8, ready: u32) -> PeerHint {
    PeerHint {
        peer: peer(i),
        load: LoadHint {
            slots: 1,
            free_slots: u32::from(ready == 0),
            ready_tasks: ready,
            ready_fuel: u64::from(ready) * 1_000_000_000,
        },
        rtt: Duration::from_millis(1),
    }
}

fn t(ms: u64) -> Time {
    Duration::from_millis(ms)
}

/// a → {b, c} → d, each costing 10 fuel.
fn diamond() -> Job {
    let m = BlobHash::of(b"m");
    Job::new(vec![
        TaskSpec::new("a", m).cost(10),
        TaskSpec::new("b", m).after("a").cost(10),
        TaskSpec::new("c", m).after("a").cost(10),
        TaskSpec::new("d", m).after("b").after("c").cost(10),
    ])
    .unwrap()
}

fn drain(o: &mut Owner) -> Vec<Transmit> {
    std::iter::from_fn(|| o.poll_transmit()).collect()
}

fn assigned(out: &[Transmit]) -> Vec<(PeerId, TaskIndex, u32)> {
    let mut v = Vec::new();
    for tr in out {
        if let SchedMsg::Assign { tasks, .. } = &tr.msg {
            v.extend(tasks.iter().map(|d| (tr.to, d.task.index, d.attempt)));
        }
    }
    v
}

fn done(i: u32, attempt: u32, size: u64) -> SchedMsg {
    SchedMsg::Done {
        task: TaskId { job: JOB, index: TaskIndex(i) },
        attempt,
        output: OutputRef { hash: BlobHash::of(&i.to_le_bytes()), size, inline: None },
        fuel: 10,
        busy_us: 1_000,
        load: LoadHint { slots: 1, free_slots: 1, ready_tasks: 0, ready_fuel: 0 },
        earlier: Vec::new(),
    }
}

#[test]
fn owner_runs_a_diamond_to_completion_with_locality() {
    let cfg = OwnerConfig { continuations: false, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), diamond(), cfg, &[hint(1, 0)], signer(), t(0));
    let out = assigned(&drain(&mut o));
    assert_eq!(out.len(), 1);
    let (at, a, attempt) = out[0];
    assert_eq!((a, attempt), (TaskIndex(0), 1));
    o.handle_msg(t(1), at, done(0, 1, 1 << 20)).unwrap();
    let out = assigned(&drain(&mut o));
    assert_eq!(out.len(), 2, "b and c become ready together");
    assert!(out.iter().any(|x| x.0 == at), "a child goes where a's megabyte is: {out:?}");
    for &(p, i, att) in &out {
        o.handle_msg(t(2), p, done(i.0, att, 100_000)).unwrap();
    }
    let out = assigned(&drain(&mut o));
    assert_eq!(out.iter().map(|x| x.1).collect::<Vec<_>>(), vec![TaskIndex(3)]);
    o.handle_msg(t(3), out[0].0, done(3, 1, 10)).unwrap();
    assert!(o.is_done());
    let events: Vec<_> = std::iter::from_fn(|| o.poll_event()).collect();
    assert_eq!(events.last(), Some(&OwnerEvent::JobDone));
    assert_eq!(o.progress().done, 4);
    assert!(o.outputs().iter().all(Option::is_some));
}

#[test]
fn the_dag_view_names_every_task_with_its_state_and_every_edge_once() {
    let cfg = OwnerConfig { continuations: false, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), diamond(), cfg, &[hint(1, 0)], signer(), t(0));
    let (at, _, attempt) = assigned(&drain(&mut o))[0];
    let dag = o.dag();
    assert_eq!(dag.tasks.iter().map(|t| t.0).collect::<Vec<_>>(), ["a", "b", "c", "d"]);
    assert_eq!(dag.tasks[0].1, &TaskState::Placed { at, attempt });
    assert!(dag.tasks[1..].iter().all(|t| *t.1 == TaskState::Waiting), "{dag:?}");
    let i = TaskIndex;
    assert_eq!(dag.edges, vec![(i(0), i(1)), (i(0), i(2)), (i(1), i(3)), (i(2), i(3))]);
    o.handle_msg(t(1), at, done(0, 1, 10)).unwrap();
    assert!(matches!(o.dag().tasks[0].1, TaskState::Done { .. }));
}

#[test]
fn owner_reissues_lost_work_and_remakes_lost_outputs_from_lineage() {
    let cfg = OwnerConfig { continuations: false, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), diamond(), cfg, &[hint(1, 0), hint(2, 0)], signer(), t(0));
    drain(&mut o);
    // a is stolen by peer 1 (claimed there) and finishes there with a 1 MiB output.
    let claim = SchedMsg::Claim { job: JOB, holder: peer(1), tasks: vec![(TaskIndex(0), 1, 1)] };
    o.handle_msg(t(1), peer(0), claim).unwrap();
    o.handle_msg(t(1), peer(1), done(0, 1, 1 << 20)).unwrap();
    let mut kids = assigned(&drain(&mut o));
    kids.sort_by_key(|k| k.1);
    assert_eq!(kids[0], (peer(1), TaskIndex(1), 1), "b goes to the data");
    assert_ne!(kids[1].0, peer(1), "c goes elsewhere: peer 1 is full");
    o.handle_msg(t(2), peer(1), done(1, 1, 1 << 20)).unwrap();
    drain(&mut o);
    // Peer 1 dies holding a's and b's outputs; c (not done) still needs a, d needs b.
    o.handle_peer_down(t(3), peer(1));
    let again = assigned(&drain(&mut o));
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!((again[0].1, again[0].2), (TaskIndex(0), 2), "a is re-run from lineage");
    assert_ne!(again[0].0, peer(1));
    assert_eq!(o.state(TaskIndex(1)), &TaskState::Waiting, "b waits for a again");
    assert_eq!(o.progress().done, 0);
    // Reports from the dead peer are ignored.
    o.handle_msg(t(4), peer(1), done(2, 1, 10)).unwrap();
    assert!(!matches!(o.state(TaskIndex(2)), TaskState::Done { .. }));
    // c, placed on a live peer, cannot fetch a's lost output: it waits for a's re-run.
    let c_at = kids[1].0;
    let lost = SchedMsg::Failed {
        task: TaskId { job: JOB, index: TaskIndex(2) },
        attempt: 1,
        kind: FailureKind::InputLost { input: 0 },
    };
    o.handle_msg(t(5), c_at, lost).unwrap();
    assert_eq!(o.state(TaskIndex(2)), &TaskState::Waiting);
    o.handle_msg(t(6), again[0].0, done(0, 2, 1 << 20)).unwrap();
    let mut next: Vec<TaskIndex> = assigned(&drain(&mut o)).iter().map(|x| x.1).collect();
    next.sort();
    assert_eq!(next, vec![TaskIndex(1), TaskIndex(2)]);
}

#[test]
fn task_failures_are_final_and_peer_faults_retry_with_backoff_until_the_bound() {
    let m = BlobHash::of(b"m");
    let job = Job::new(vec![TaskSpec::new("x", m), TaskSpec::new("y", m)]).unwrap();
    let cfg = OwnerConfig { max_attempts: 3, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[], signer(), t(0));
    let out = assigned(&drain(&mut o));
    let fail = |i: u32, attempt: u32, kind: FailureKind| SchedMsg::Failed {
        task: TaskId { job: JOB, index: TaskIndex(i) },
        attempt,
        kind,
    };
    o.handle_msg(t(1), out[0].0, fail(0, 1, FailureKind::Task("exit 3".into()))).unwrap();
    assert!(matches!(o.state(TaskIndex(0)), TaskState::Failed(FailureKind::Task(_))));
    assert!(drain(&mut o).is_empty(), "a deterministic failure is not retried");
    // y: executor faults are retried after a backoff timer, up to max_attempts.
    let mut now = 1;
    for attempt in 1..=3 {
        now += 1;
        o.handle_msg(t(now), peer(0), fail(1, attempt, FailureKind::Executor("oom".into()))).unwrap();
        if attempt == 3 {
            break;
        }
        // Lease timers come first; the retry timer is the latest.
        let timer = std::iter::from_fn(|| o.poll_timer()).last().expect("a retry timer");
        assert!(timer.at > t(now));
        o.handle_timer(timer.at, timer.token + 1000); // stale token: nothing happens
        assert!(drain(&mut o).is_empty());
        o.handle_timer(timer.at, timer.token);
        assert_eq!(assigned(&drain(&mut o)).len(), 1);
    }
    assert!(matches!(o.state(TaskIndex(1)), TaskState::Failed(FailureKind::Executor(_))));
    assert_eq!(o.progress().failed, 2);
}

#[test]
fn claims_move_tasks_and_disagreeing_reports_are_flagged() {
    let m = BlobHash::of(b"m");
    let job = Job::new(vec![TaskSpec::new("x", m)]).unwrap();
    let mut o = Owner::new(JOB, peer(0), job, OwnerConfig::default(), &[], signer(), t(0));
    drain(&mut o);
    let claim = |holder, attempt, hops| SchedMsg::Claim {
        job: JOB,
        holder,
        tasks: vec![(TaskIndex(0), attempt, hops)],
    };
    o.handle_msg(t(1), peer(0), claim(peer(5), 9, 1)).unwrap();
    assert_eq!(o.state(TaskIndex(0)), &TaskState::Placed { at: peer(0), attempt: 1 }, "stale attempt");
    // Stolen twice; the claims arrive out of order: the one with more hops wins.
    o.handle_msg(t(1), peer(5), claim(peer(6), 1, 2)).unwrap();
    o.handle_msg(t(1), peer(0), claim(peer(5), 1, 1)).unwrap();
    assert_eq!(o.state(TaskIndex(0)), &TaskState::Placed { at: peer(6), attempt: 1 });
    o.handle_peer_down(t(2), peer(6));
    assert_eq!(assigned(&drain(&mut o)), vec![(peer(0), TaskIndex(0), 2)]);
    // A claim naming a peer already known dead re-issues at once.
    o.handle_msg(t(2), peer(0), claim(peer(6), 2, 1)).unwrap();
    assert_eq!(assigned(&drain(&mut o)), vec![(peer(0), TaskIndex(0), 3)]);
    o.handle_msg(t(3), peer(0), done(0, 3, 10)).unwrap();
    // A report for an attempt that is not the live one, or from a peer that never held it, is
    // refused and counted; it changes nothing.
    let mut other = done(0, 2, 10);
    if let SchedMsg::Done { output, .. } = &mut other {
        output.hash = BlobHash::of(b"a lie");
    }
    o.handle_msg(t(4), peer(7), other).unwrap();
    o.handle_msg(t(4), peer(7), done(0, 3, 10)).unwrap();
    assert_eq!(o.poll_event(), Some(OwnerEvent::TaskDone(TaskIndex(0))));
    assert_eq!(o.poll_event(), Some(OwnerEvent::JobDone));
    assert_eq!(o.poll_event(), None, "no mismatch from a peer that held nothing");
    assert_eq!(o.progress().refused.stale, 3, "{:?}", o.progress().refused); // + the stale claim
    // The holder's report again is harmless (a duplicate); disagreeing with itself is a mismatch.
    o.handle_msg(t(4), peer(0), done(0, 3, 10)).unwrap();
    assert_eq!(o.poll_event(), None, "a duplicate is no mismatch");
    let mut more_fuel = done(0, 3, 10);
    if let SchedMsg::Done { fuel, .. } = &mut more_fuel {
        *fuel += 1;
    }
    o.handle_msg(t(4), peer(0), more_fuel).unwrap();
    assert_eq!(o.poll_event(), Some(OwnerEvent::Mismatch(TaskIndex(0))), "same output, other fuel");
    assert_eq!(o.progress().done, 1);
    assert_eq!(o.reports(TaskIndex(0)).len(), 1);
    let wrong = SchedMsg::Claim { job: JobId(1), holder: peer(1), tasks: vec![] };
    assert_eq!(o.handle_msg(t(5), peer(1), wrong), Err(OwnerError::WrongJob { got: JobId(1), want: JOB }));
    let unknown = SchedMsg::Claim { job: JOB, holder: peer(1), tasks: vec![(TaskIndex(9), 1, 1)] };
    assert_eq!(o.handle_msg(t(5), peer(1), unknown), Err(OwnerError::UnknownTask(TaskIndex(9))));
    let steal = SchedMsg::Steal { max: 1, load: LoadHint::default() };
    assert_eq!(o.handle_msg(t(5), peer(1), steal), Err(OwnerError::NotForOwner));
}

fn desc(i: u32, priority: u64) -> TaskDesc {
    TaskDesc {
        task: TaskId { job: JOB, index: TaskIndex(i) },
        owner: peer(0),
        term: 0,
        attempt: 1,
        hops: 0,
        priority,
        cost: 1_000_000_000,
        module: BlobHash::of(b"m"),
        args: vec![],
        inputs: vec![],
        limits: Default::default(),
        lease_ms: 30_000,
        filled: vec![],
        seal: None,
        sig: vec![],
    }
    .signed()
}

trait Signed {
    fn signed(self) -> Self;
}

impl Signed for TaskDesc {
    fn signed(mut self) -> Self {
        self.sign(signer().as_ref());
        self
    }
}

#[test]
fn ready_queue_pops_by_priority_then_arrival_and_steals_half() {
    let mut q = ReadyQueue::default();
    for (i, p) in [(0, 1), (1, 5), (2, 5), (3, 0), (4, 9)] {
        q.push(desc(i, p));
    }
    let stolen: Vec<u32> = q.steal_half(10).iter().map(|d| d.task.index.0).collect();
    assert_eq!(stolen, vec![4, 1, 2], "n - n/2 of 5 is 3, highest priority first, FIFO among equals");
    assert_eq!(q.pop().map(|d| d.task.index.0), Some(0));
    assert_eq!(q.steal_half(10).len(), 1);
    assert!(q.is_empty());
    assert_eq!(q.fuel(), 0);
}

#[test]
fn peer_runs_up_to_its_slots_and_gives_half_its_queue_to_a_thief() {
    let mut rng = SmallRng::seed_from_u64(1);
    let cfg = PeerConfig { slots: 2, ..PeerConfig::default() };
    let mut v = PeerSched::new(peer(1), cfg);
    let tasks = (0..6).map(|i| desc(i, u64::from(i))).collect();
    v.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    let runs: Vec<u32> = std::iter::from_fn(|| v.poll_run()).map(|d| d.task.index.0).collect();
    assert_eq!(runs, vec![5, 4]);
    v.handle_msg(t(1), peer(2), SchedMsg::Steal { max: 8, load: LoadHint::default() }, &mut rng);
    let claim = v.poll_transmit().unwrap();
    assert_eq!(claim.to, peer(0), "the victim tells the owner who holds the tasks now");
    assert_eq!(
        claim.msg,
        SchedMsg::Claim {
            job: JOB,
            holder: peer(2),
            tasks: vec![(TaskIndex(3), 1, 1), (TaskIndex(2), 1, 1)]
        }
    );
    let reply = v.poll_transmit().unwrap();
    assert_eq!(reply.to, peer(2));
    let SchedMsg::Stolen { tasks, load, .. } = reply.msg else { panic!("expected Stolen") };
    assert_eq!(tasks.iter().map(|d| (d.task.index.0, d.hops)).collect::<Vec<_>>(), vec![(3, 1), (2, 1)]);
    assert_eq!(load.ready_tasks, 2);
    // A finished run is reported to the owner and frees a slot for the next task.
    let out = OutputRef { hash: BlobHash::of(b"o"), size: 1, inline: Some(vec![1]) };
    let id = TaskId { job: JOB, index: TaskIndex(5) };
    v.handle_task_finished(t(2), id, 1, TaskOutcome::Ok { output: out, fuel: 7 }, &mut rng);
    assert_eq!(v.poll_run().map(|d| d.task.index.0), Some(1));
    let report = v.poll_transmit().unwrap();
    assert_eq!(report.to, peer(0));
    assert!(matches!(report.msg, SchedMsg::Done { fuel: 7, .. }));
}

#[test]
fn thief_steals_only_from_loaded_peers_and_backs_off_on_failure() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut th = PeerSched::new(peer(9), PeerConfig::default());
    // Nobody has ready work: no blind probing.
    th.handle_view(t(0), vec![hint(1, 0), hint(2, 0)], &mut rng);
    assert!(th.poll_transmit().is_none());
    th.handle_view(t(0), vec![hint(1, 0), hint(2, 4)], &mut rng);
    let req = th.poll_transmit().unwrap();
    assert_eq!(req.to, peer(2));
    assert!(matches!(req.msg, SchedMsg::Steal { .. }));
    assert!(th.poll_transmit().is_none(), "at most one steal in flight");
    let steal_timer = th.poll_timer().unwrap();
    let load = LoadHint { slots: 1, free_slots: 0, ready_tasks: 2, ready_fuel: 2_000_000_000 };
    th.handle_msg(
        t(1),
        peer(2),
        SchedMsg::Stolen { tasks: vec![desc(0, 1), desc(1, 1)], load, addrs: vec![] },
        &mut rng,
    );
    assert!(th.poll_transmit().is_none(), "the victim, not the thief, claims");
    assert_eq!(th.poll_run().map(|d| d.task.index.0), Some(0));
    th.handle_timer(t(2), steal_timer.token, &mut rng); // answered already: stale
    assert!(th.poll_transmit().is_none());
    assert_eq!(th.stats().steals_won, 1);
    // An empty answer backs off: the next steal waits for the timer.
    let mut th2 = PeerSched::new(peer(8), PeerConfig::default());
    th2.handle_view(t(0), vec![hint(3, 4)], &mut rng);
    assert!(matches!(th2.poll_transmit().map(|t| t.msg), Some(SchedMsg::Steal { .. })));
    let empty = LoadHint { slots: 1, free_slots: 0, ready_tasks: 4, ready_fuel: 4_000_000_000 };
    th2.handle_msg(t(1), peer(3), SchedMsg::Stolen { tasks: vec![], load: empty, addrs: vec![] }, &mut rng);
    assert!(th2.poll_transmit().is_none(), "backing off");
    let timers: Vec<Timer> = std::iter::from_fn(|| th2.poll_timer()).collect();
    let retry = timers.iter().max_by_key(|t| t.token).unwrap();
    assert!(retry.at > t(1));
    th2.handle_timer(retry.at, retry.token, &mut rng);
    assert!(matches!(th2.poll_transmit().map(|t| t.msg), Some(SchedMsg::Steal { .. })));
}

#[test]
fn far_victims_are_only_robbed_of_long_backlogs() {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut th = PeerSched::new(peer(9), PeerConfig::default());
    let mut far = PeerHint { rtt: Duration::from_millis(200), ..hint(1, 1) };
    far.load.ready_fuel = 10_000_000;
    th.handle_view(t(0), vec![far], &mut rng);
    assert!(th.poll_transmit().is_none(), "10 ms of work is not worth a 200 ms round trip");
    let mut far_long = far;
    far_long.load.ready_fuel = 5_000_000_000;
    th.handle_view(t(1), vec![far_long], &mut rng);
    assert!(th.poll_transmit().is_some());
}

#[test]
fn a_leaving_peer_hands_queued_and_late_tasks_back_and_takes_no_more() {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 1, ..PeerConfig::default() });
    p.handle_view(t(0), vec![hint(2, 5)], &mut rng);
    let tasks = (0..3).map(|i| desc(i, u64::from(i))).collect();
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    let running: Vec<u32> = std::iter::from_fn(|| p.poll_run()).map(|d| d.task.index.0).collect();
    assert_eq!(running, vec![2]);
    std::iter::from_fn(|| p.poll_transmit()).for_each(drop);

    let steals_before = p.stats().steals_tried;
    p.handle_leave(t(1));
    assert!(p.is_leaving());
    let back: Vec<Transmit> = std::iter::from_fn(|| p.poll_transmit()).collect();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].to, peer(0));
    assert_eq!(
        back[0].msg,
        SchedMsg::Release {
            job: JOB,
            tasks: vec![(TaskIndex(1), 1, 0), (TaskIndex(0), 1, 0)],
            leaving: true
        }
    );
    assert_eq!(p.load().ready_tasks, 0);

    // Work that arrives afterwards goes straight back; the running task still reports; no steals.
    p.handle_msg(t(2), peer(0), SchedMsg::Assign { tasks: vec![desc(7, 0)], addrs: vec![] }, &mut rng);
    let id = TaskId { job: JOB, index: TaskIndex(2) };
    let out = OutputRef { hash: BlobHash::of(b"o"), size: 1, inline: Some(vec![1]) };
    p.handle_task_finished(t(3), id, 1, TaskOutcome::Ok { output: out, fuel: 1 }, &mut rng);
    let msgs: Vec<SchedMsg> = std::iter::from_fn(|| p.poll_transmit()).map(|tr| tr.msg).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0], SchedMsg::Release { job: JOB, tasks: vec![(TaskIndex(7), 1, 0)], leaving: true });
    assert!(matches!(msgs[1], SchedMsg::Done { .. }));
    assert!(p.poll_run().is_none(), "nothing new starts on a leaving peer");
    p.handle_view(t(4), vec![hint(2, 5)], &mut rng);
    assert_eq!(p.stats().steals_tried, steals_before, "a leaving peer does not steal");
}

#[test]
fn the_owner_reissues_released_tasks_at_once_and_never_to_the_leaver() {
    let job = Job::new((0..4).map(|i| TaskSpec::new(format!("t{i}"), BlobHash::of(b"m")).cost(10)).collect())
        .unwrap();
    let cfg = OwnerConfig::default();
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[hint(1, 0), hint(2, 0)], signer(), t(0));
    let first = assigned(&drain(&mut o));
    let on1: Vec<(TaskIndex, u32, u32)> =
        first.iter().filter(|a| a.0 == peer(1)).map(|&(_, i, att)| (i, att, 0)).collect();
    assert!(!on1.is_empty(), "{first:?}");
    o.handle_msg(t(1), peer(1), SchedMsg::Release { job: JOB, tasks: on1.clone(), leaving: true }).unwrap();
    let again = assigned(&drain(&mut o));
    assert_eq!(again.len(), on1.len(), "every released task is issued again at once: {again:?}");
    assert!(again.iter().all(|a| a.0 != peer(1) && a.2 == 2), "{again:?}");
    // A stale release (an older attempt) changes nothing.
    o.handle_msg(t(2), peer(1), SchedMsg::Release { job: JOB, tasks: on1, leaving: true }).unwrap();
    assert!(assigned(&drain(&mut o)).is_empty());
    // The leaver's reports of what it was running still count.
    let p1_running = first.iter().find(|a| a.0 == peer(1));
    assert!(p1_running.is_some());
    assert_eq!(o.progress().failed, 0);
}

#[test]
fn cancel_reaches_every_holder_and_drops_their_queued_tasks() {
    let mut o = Owner::new(JOB, peer(0), diamond(), OwnerConfig::default(), &[hint(1, 0)], signer(), t(0));
    let first = assigned(&drain(&mut o));
    let holder = first[0].0;
    o.handle_cancel(t(1));
    let out = drain(&mut o);
    assert_eq!(out, vec![Transmit { to: holder, msg: SchedMsg::Cancel { job: JOB } }]);
    assert_eq!(o.progress().placed, 0);

    let mut rng = SmallRng::seed_from_u64(5);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 1, ..PeerConfig::default() });
    let mut other = desc(9, 0);
    other.task.job = JobId(7);
    let tasks = vec![desc(0, 3), desc(1, 2), other];
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    assert_eq!(p.load().ready_tasks, 2);
    p.handle_msg(t(1), peer(0), SchedMsg::Cancel { job: JOB }, &mut rng);
    assert_eq!(p.load().ready_tasks, 1, "only the other job's task is left");
}

#[test]
fn a_lost_wanted_output_is_remade_with_its_lost_producers() {
    let mut o = Owner::new(JOB, peer(0), diamond(), OwnerConfig::default(), &[hint(1, 0)], signer(), t(0));
    let mut out = assigned(&drain(&mut o));
    let mut attempts = std::collections::HashMap::new();
    // Run the whole diamond on whoever it was given to.
    while let Some((p, i, att)) = out.pop() {
        attempts.insert(i, att);
        o.handle_msg(t(1), p, done(i.0, att, 1 << 20)).unwrap();
        out.extend(assigned(&drain(&mut o)));
    }
    assert!(o.is_done());
    std::iter::from_fn(|| o.poll_event()).for_each(drop);
    // The sink's output cannot be fetched: d is made again (its inputs are still held).
    o.handle_output_lost(t(2), TaskIndex(3)).unwrap();
    assert!(!o.is_done());
    let again = assigned(&drain(&mut o));
    assert_eq!(again.iter().map(|a| (a.1, a.2)).collect::<Vec<_>>(), vec![(TaskIndex(3), 2)]);
    o.handle_msg(t(3), again[0].0, done(3, 2, 1 << 20)).unwrap();
    let events: Vec<_> = std::iter::from_fn(|| o.poll_event()).collect();
    assert_eq!(events, vec![OwnerEvent::TaskDone(TaskIndex(3)), OwnerEvent::JobDone]);
    assert_eq!(o.handle_output_lost(t(4), TaskIndex(9)), Err(OwnerError::UnknownTask(TaskIndex(9))));
}

// ---- continuations ----

/// a → b → c, each costing 10 fuel.
fn chain() -> Job {
    let m = BlobHash::of(b"m");
    Job::new(vec![
        TaskSpec::new("a", m).cost(10),
        TaskSpec::new("b", m).after("a").cost(10),
        TaskSpec::new("c", m).after("b").cost(10),
    ])
    .unwrap()
}

fn report(i: u32, attempt: u32) -> DoneReport {
    DoneReport {
        task: TaskIndex(i),
        attempt,
        output: OutputRef { hash: BlobHash::of(&i.to_le_bytes()), size: 1 << 20, inline: None },
        fuel: 10,
        busy_us: 1_000,
    }
}

fn after_of(d: &TaskDesc) -> Option<(u32, bool)> {
    d.after().map(|(p, merge)| (p.0, merge))
}

#[test]
fn a_chain_goes_out_in_one_assign_and_its_reports_come_back_in_one_done() {
    let mut o = Owner::new(JOB, peer(0), chain(), OwnerConfig::default(), &[hint(1, 0)], signer(), t(0));
    let out = drain(&mut o);
    assert_eq!(out.len(), 1, "one message for the whole chain: {out:?}");
    let SchedMsg::Assign { tasks, .. } = &out[0].msg else { panic!("expected Assign") };
    let got: Vec<_> = tasks.iter().map(|d| (d.task.index.0, after_of(d))).collect();
    assert_eq!(got, vec![(0, None), (1, Some((0, true))), (2, Some((1, true)))]);
    let at = out[0].to;
    // The holder runs the chain and reports it at the end, oldest first.
    let SchedMsg::Done { load, .. } = done(2, 1, 1 << 20) else { unreachable!() };
    let last = report(2, 1);
    let msg = SchedMsg::Done {
        task: TaskId { job: JOB, index: last.task },
        attempt: 1,
        output: last.output,
        fuel: 10,
        busy_us: 1_000,
        load,
        earlier: vec![report(0, 1), report(1, 1)],
    };
    o.handle_msg(t(5), at, msg).unwrap();
    assert!(o.is_done());
    let after: Vec<_> = drain(&mut o).into_iter().map(|t| t.msg).collect();
    assert!(matches!(after[..], [SchedMsg::Receipts { .. }]), "nothing is assigned twice: {after:?}");
    assert_eq!(o.progress().done, 3);
}

#[test]
fn a_continuation_waits_where_its_last_producer_is_and_is_taken_back_when_that_fails() {
    let mut o = Owner::new(
        JOB,
        peer(0),
        diamond(),
        OwnerConfig::default(),
        &[hint(1, 0), hint(2, 0)],
        signer(),
        t(0),
    );
    let first = assigned(&drain(&mut o));
    // a goes out with one of b, c as its continuation (one per slot of the holder).
    assert_eq!(first.len(), 2, "{first:?}");
    let a_at = first[0].0;
    o.handle_msg(t(1), a_at, done(0, 1, 10)).unwrap();
    let next = drain(&mut o);
    let placed = assigned(&next);
    assert_eq!(placed.len(), 1, "only the child that is not a continuation is placed now: {next:?}");
    let (c_at, c, _) = placed[0];
    let b = TaskIndex(1 + 2 - c.0); // The other child: the continuation of a.
    // b finishes (with a's report first); d now waits only for c: it goes to c's holder.
    o.handle_msg(t(2), a_at, done(b.0, 1, 10)).unwrap();
    let out = drain(&mut o);
    let SchedMsg::Assign { tasks, .. } = &out[0].msg else { panic!("expected Assign: {out:?}") };
    assert_eq!(out[0].to, c_at);
    assert_eq!((tasks[0].task.index, after_of(&tasks[0])), (TaskIndex(3), Some((c.0, true))));
    assert!(matches!(o.state(TaskIndex(3)), TaskState::Placed { .. }));
    // c's run fails (a peer fault): d cannot run there any more and waits again.
    let failed = SchedMsg::Failed {
        task: TaskId { job: JOB, index: c },
        attempt: 1,
        kind: FailureKind::Executor("x".into()),
    };
    o.handle_msg(t(3), c_at, failed).unwrap();
    assert_eq!(o.state(TaskIndex(3)), &TaskState::Waiting);
    // A late hand-back of that continuation (the holder no longer had c) is harmless.
    let back = SchedMsg::Release { job: JOB, tasks: vec![(TaskIndex(3), 1, 0)], leaving: false };
    o.handle_msg(t(3), c_at, back).unwrap();
    assert_eq!(o.state(TaskIndex(3)), &TaskState::Waiting);
    assert!(drain(&mut o).iter().all(|tr| !matches!(tr.msg, SchedMsg::Assign { .. })));
    // ... and the holder is not taken for a leaver: work still goes there.
    let retry = std::iter::from_fn(|| o.poll_timer()).last().unwrap();
    o.handle_timer(retry.at, retry.token);
    let again = assigned(&drain(&mut o));
    assert_eq!(again.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(), vec![(c, 2), (TaskIndex(3), 2)]);
}

fn cont(i: u32, producer: u32, merge: bool) -> TaskDesc {
    let mut d = desc(i, 0);
    d.inputs = vec![InputLoc {
        hash: BlobHash([0; 32]),
        size: 0,
        source: InputSource::After { task: TaskIndex(producer), merge },
    }];
    d.signed()
}

fn transmits(p: &mut PeerSched) -> Vec<Transmit> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

#[test]
fn a_peer_starts_a_continuation_when_its_producer_ends_and_reports_both_at_once() {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 1, stealing: false, ..PeerConfig::default() });
    let tasks = vec![desc(0, 5), cont(1, 0, true), cont(2, 1, true)];
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    assert_eq!(p.poll_run().map(|d| d.task.index.0), Some(0));
    assert!(p.poll_run().is_none(), "continuations wait for their producers");
    let out = OutputRef { hash: BlobHash::of(b"a"), size: 1 << 20, inline: None };
    let id = |i| TaskId { job: JOB, index: TaskIndex(i) };
    p.handle_task_finished(t(1), id(0), 1, TaskOutcome::Ok { output: out.clone(), fuel: 3 }, &mut rng);
    let next = p.poll_run().unwrap();
    assert_eq!(next.task.index.0, 1, "the continuation starts at once");
    assert_eq!(
        next.inputs[0],
        InputLoc { hash: out.hash, size: out.size, source: InputSource::Holders(vec![peer(1)]) },
        "its input is the producer's output, here"
    );
    assert!(transmits(&mut p).is_empty(), "a's report waits for b's");
    let small = OutputRef { hash: BlobHash::of(b"b"), size: 1, inline: Some(vec![7]) };
    p.handle_task_finished(t(2), id(1), 1, TaskOutcome::Ok { output: small, fuel: 4 }, &mut rng);
    let c = p.poll_run().unwrap();
    assert_eq!(c.inputs[0].source, InputSource::Inline(vec![7]), "small outputs are filled in inline");
    let out_c = OutputRef { hash: BlobHash::of(b"c"), size: 1, inline: None };
    p.handle_task_finished(t(3), id(2), 1, TaskOutcome::Ok { output: out_c, fuel: 5 }, &mut rng);
    let sent = transmits(&mut p);
    assert_eq!(sent.len(), 1, "three runs, one report: {sent:?}");
    let SchedMsg::Done { task, earlier, fuel, .. } = &sent[0].msg else { panic!("expected Done") };
    assert_eq!((task.index.0, *fuel), (2, 5));
    assert_eq!(earlier.iter().map(|r| (r.task.0, r.fuel)).collect::<Vec<_>>(), vec![(0, 3), (1, 4)]);
}

#[test]
fn continuations_move_with_their_producer_go_back_without_it_and_die_with_it() {
    let mut rng = SmallRng::seed_from_u64(2);
    let cfg = PeerConfig { slots: 1, stealing: false, ..PeerConfig::default() };
    let mut v = PeerSched::new(peer(1), cfg.clone());
    // Running 0; queued 1 with its continuation 2.
    let tasks = vec![desc(0, 9), desc(1, 1), cont(2, 1, true)];
    v.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    assert_eq!(v.poll_run().map(|d| d.task.index.0), Some(0));
    v.handle_msg(t(1), peer(2), SchedMsg::Steal { max: 8, load: LoadHint::default() }, &mut rng);
    let sent = transmits(&mut v);
    let claim = SchedMsg::Claim {
        job: JOB,
        holder: peer(2),
        tasks: vec![(TaskIndex(1), 1, 1), (TaskIndex(2), 1, 1)],
    };
    assert_eq!(sent[0].msg, claim, "the owner learns both moved");
    let SchedMsg::Stolen { tasks, .. } = sent[1].msg.clone() else { panic!("expected Stolen") };
    assert_eq!(tasks.iter().map(|d| d.task.index.0).collect::<Vec<_>>(), vec![1, 2]);
    // The thief (which asked) keeps the continuation waiting for its producer.
    let mut th = PeerSched::new(peer(2), PeerConfig { stealing: true, ..cfg });
    th.handle_view(t(2), vec![hint(1, 2)], &mut rng);
    assert!(matches!(transmits(&mut th)[..], [Transmit { msg: SchedMsg::Steal { .. }, .. }]));
    th.handle_msg(
        t(2),
        peer(1),
        SchedMsg::Stolen { tasks, load: LoadHint::default(), addrs: vec![] },
        &mut rng,
    );
    assert_eq!(th.poll_run().map(|d| d.task.index.0), Some(1));
    assert!(th.poll_run().is_none());
    // A continuation whose producer is not here goes back to the owner (not as a leave).
    v.handle_msg(t(3), peer(0), SchedMsg::Assign { tasks: vec![cont(3, 1, false)], addrs: vec![] }, &mut rng);
    let back = transmits(&mut v);
    assert_eq!(
        back[0].msg,
        SchedMsg::Release { job: JOB, tasks: vec![(TaskIndex(3), 1, 0)], leaving: false }
    );
    // The producer fails at the thief: its continuation is dropped and only the failure is sent.
    let id = TaskId { job: JOB, index: TaskIndex(1) };
    th.handle_task_finished(t(4), id, 1, TaskOutcome::Failed(FailureKind::Executor("x".into())), &mut rng);
    assert!(th.poll_run().is_none());
    let sent = transmits(&mut th);
    assert_eq!(sent.len(), 1);
    assert!(matches!(sent[0].msg, SchedMsg::Failed { .. }));
    // A producer that just finished still serves a late continuation (its report already left).
    let out = OutputRef { hash: BlobHash::of(b"z"), size: 1, inline: None };
    v.handle_task_finished(
        t(5),
        TaskId { job: JOB, index: TaskIndex(0) },
        1,
        TaskOutcome::Ok { output: out, fuel: 1 },
        &mut rng,
    );
    assert!(matches!(transmits(&mut v)[0].msg, SchedMsg::Done { .. }));
    v.handle_msg(t(6), peer(0), SchedMsg::Assign { tasks: vec![cont(4, 0, false)], addrs: vec![] }, &mut rng);
    assert_eq!(v.poll_run().map(|d| d.task.index.0), Some(4));
}

#[test]
fn a_consumer_keeps_a_copy_so_its_producer_is_not_remade_when_the_producer_dies() {
    let m = BlobHash::of(b"m");
    let job = Job::new(vec![
        TaskSpec::new("a", m).cost(10),
        TaskSpec::new("b", m).after("a").cost(10),
        TaskSpec::new("c", m).after("a").after("b").cost(10),
    ])
    .unwrap();
    let cfg = OwnerConfig { continuations: false, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[hint(1, 0), hint(2, 0)], signer(), t(0));
    let a_at = assigned(&drain(&mut o))[0].0;
    o.handle_msg(t(1), a_at, done(0, 1, 1 << 20)).unwrap();
    let b_at = assigned(&drain(&mut o))[0].0;
    // b ran elsewhere: it fetched a's output and keeps it.
    let other = if a_at == peer(1) { peer(2) } else { peer(1) };
    let claim = SchedMsg::Claim { job: JOB, holder: other, tasks: vec![(TaskIndex(1), 1, 1)] };
    o.handle_msg(t(1), b_at, claim).unwrap();
    o.handle_msg(t(2), other, done(1, 1, 1 << 20)).unwrap();
    let TaskState::Done { holders, .. } = o.state(TaskIndex(0)) else { panic!("a is done") };
    assert_eq!(holders, &vec![a_at, other]);
    let c = drain(&mut o);
    assert_eq!(assigned(&c).iter().map(|x| x.1).collect::<Vec<_>>(), vec![TaskIndex(2)]);
    // a's producer dies: a's output still lives at b's executor, so nothing is re-made.
    o.handle_peer_down(t(3), a_at);
    assert!(matches!(o.state(TaskIndex(0)), TaskState::Done { .. }), "{:?}", o.state(TaskIndex(0)));
    assert!(assigned(&drain(&mut o)).iter().all(|x| x.1 != TaskIndex(0)), "a is not re-run");
}

mod deputy;
mod hardening;
mod pause;
mod trust;
mod verify;
