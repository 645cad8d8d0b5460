//! Unit tests of verified results: replication with a quorum, adaptive trust (growth, spot checks,
//! reset on a lie), colluders, and consumers that only ever see accepted inputs.

use super::*;

/// Peers 1..=n, one free slot each.
fn swarm(n: u8) -> Vec<PeerHint> {
    (1..=n).map(|i| hint(i, 0)).collect()
}

fn cfg(policy: VerifyPolicy) -> OwnerConfig {
    OwnerConfig {
        verify: VerifyConfig { policy, seed: 5, ..VerifyConfig::default() },
        ..OwnerConfig::default()
    }
}

/// `n` independent tasks.
fn flat(n: u32) -> Job {
    let m = BlobHash::of(b"m");
    Job::new((0..n).map(|i| TaskSpec::new(format!("t{i}"), m).cost(10)).collect()).unwrap()
}

/// A book in which each of `peers` has `streak` checked agreements.
fn book(peers: &[u8], streak: u32) -> TrustBook {
    let text: String = peers.iter().map(|&p| format!("{} {streak} 0 {streak}\n", peer(p))).collect();
    TrustBook::from_bytes(text.as_bytes()).unwrap()
}

/// The honest output of a descriptor: a hash of its index and its inputs' hashes.
fn honest(d: &TaskDesc) -> BlobHash {
    let mut h = blake3::Hasher::new();
    h.update(&d.task.index.0.to_le_bytes());
    for i in &d.inputs {
        h.update(&i.hash.0);
    }
    BlobHash(*h.finalize().as_bytes())
}

fn lie(d: &TaskDesc) -> BlobHash {
    BlobHash::of(&honest(d).0)
}

/// Who ran what, in order.
type Runs = Vec<(PeerId, TaskIndex)>;

/// Every task's honest output: [`honest`] over its producers' honest outputs.
fn truth(job: &Job) -> Vec<BlobHash> {
    let mut out = vec![BlobHash([0; 32]); job.len()];
    for &i in job.topo_order() {
        let mut h = blake3::Hasher::new();
        h.update(&i.0.to_le_bytes());
        for input in &job.task(i).inputs {
            if let crate::job::Input::Output(p) = input {
                h.update(&out[p.0 as usize].0);
            }
        }
        out[i.0 as usize] = BlobHash(*h.finalize().as_bytes());
    }
    out
}

/// Runs every assignment the owner makes, in order, each reported by its peer with the honest
/// output of what it was handed unless `liar(peer, task)`, until nothing is left; checks that
/// every input an assignment names is a true output (consumers never see an unverified input).
/// Also says whether the job's outputs are the true ones.
fn drive(o: &mut Owner, liar: impl FnMut(PeerId, TaskIndex) -> bool) -> (Runs, bool) {
    drive_with(o, true, liar)
}

/// [`drive`], checking inputs only if `strict` (a trusted liar's lone result is accepted).
fn drive_with(o: &mut Owner, strict: bool, mut liar: impl FnMut(PeerId, TaskIndex) -> bool) -> (Runs, bool) {
    let truth = truth(o.job());
    let mut queue: std::collections::VecDeque<(PeerId, TaskDesc)> = Default::default();
    let mut runs = Vec::new();
    let mut now = 1;
    let mut timers: Vec<Timer> = Vec::new();
    loop {
        for tr in drain(o) {
            if let SchedMsg::Assign { tasks, .. } = tr.msg {
                queue.extend(tasks.into_iter().map(|d| (tr.to, d)));
            }
        }
        timers.extend(std::iter::from_fn(|| o.poll_timer()));
        let Some((p, d)) = queue.pop_front() else {
            // Nothing runs: time passes to the next timer (a check waiting for a peer).
            if o.is_done() || timers.is_empty() {
                break;
            }
            timers.sort_by_key(|tm| std::cmp::Reverse(tm.at));
            if let Some(tm) = timers.pop() {
                now = now.max(u64::try_from(tm.at.as_millis()).unwrap_or(u64::MAX));
                o.handle_timer(tm.at, tm.token);
            }
            continue;
        };
        for input in d.inputs.iter().filter(|_| strict) {
            assert!(
                truth.contains(&input.hash),
                "{:?} got an unverified input {:?}",
                d.task.index,
                input.hash
            );
        }
        let i = d.task.index;
        let hash = if liar(p, i) { lie(&d) } else { honest(&d) };
        runs.push((p, i));
        let msg = SchedMsg::Done {
            task: d.task,
            attempt: d.attempt,
            output: OutputRef { hash, size: 8, inline: None },
            fuel: 10,
            busy_us: 1,
            load: LoadHint { slots: 1, free_slots: 1, ready_tasks: 0, ready_fuel: 0 },
            earlier: Vec::new(),
        };
        now += 1;
        o.handle_msg(t(now), p, msg).unwrap();
    }
    let ok = o.outputs().iter().zip(&truth).all(|(o, t)| *o == Some(*t));
    (runs, ok)
}

fn events(o: &mut Owner) -> Vec<OwnerEvent> {
    std::iter::from_fn(|| o.poll_event()).collect()
}

fn distinct(runs: &Runs, i: u32) -> std::collections::BTreeSet<PeerId> {
    runs.iter().filter(|r| r.1 == TaskIndex(i)).map(|r| r.0).collect()
}

#[test]
fn replicate_runs_k_times_on_distinct_peers_and_accepts_the_agreement() {
    let c = OwnerConfig { own_slots: 0, ..cfg(VerifyPolicy::Replicate { k: 3, quorum: 2 }) };
    let mut o = Owner::new(JOB, peer(0), flat(4), c, &swarm(6), signer(), t(0));
    let (runs, ok) = drive(&mut o, |_, _| false);
    assert!(o.is_done() && ok);
    for i in 0..4 {
        assert_eq!(runs.iter().filter(|r| r.1 == TaskIndex(i)).count(), 3, "{runs:?}");
        assert_eq!(distinct(&runs, i).len(), 3, "{runs:?}");
    }
    let p = o.progress();
    assert_eq!((p.disagreements, p.verify_runs, p.verify_fuel, p.fuel_used), (0, 8, 80, 120));
    assert!(matches!(o.state(TaskIndex(0)), TaskState::Done { holders, .. } if holders.len() == 3));
}

#[test]
fn replicate_settles_a_disagreement_with_more_runs_and_reports_the_loser() {
    let c = OwnerConfig { own_slots: 0, ..cfg(VerifyPolicy::Replicate { k: 2, quorum: 2 }) };
    let mut o = Owner::new(JOB, peer(0), flat(1), c, &swarm(5), signer(), t(0));
    let mut first = None;
    let (runs, ok) = drive(&mut o, |p, _| *first.get_or_insert(p) == p);
    assert!(o.is_done() && ok);
    assert_eq!(runs.len(), 3, "a lie, then two agreeing runs: {runs:?}");
    let liar = runs[0].0;
    let ev = events(&mut o);
    assert!(ev.contains(&OwnerEvent::Disagreement { task: TaskIndex(0), losers: vec![liar] }), "{ev:?}");
    assert_eq!(o.progress().disagreements, 1);
    assert_eq!(o.trust().get(&liar).caught, 1);
}

#[test]
fn replicate_with_too_few_peers_fails_clearly_after_waiting_for_more() {
    let c = OwnerConfig { own_slots: 0, ..cfg(VerifyPolicy::Replicate { k: 3, quorum: 3 }) };
    let mut o = Owner::new(JOB, peer(0), flat(1), c, &swarm(2), signer(), t(0));
    drive(&mut o, |_, _| false);
    let ev = events(&mut o);
    assert!(ev.is_empty() || matches!(ev[0], OwnerEvent::TaskFailed(..)), "{ev:?}");
    assert!(
        matches!(&ev[..], [OwnerEvent::TaskFailed(_, FailureKind::Executor(why))] if why.contains("no 3 of them agreed")),
        "{ev:?}"
    );
    // Quorum 2 among the two there are: accepted.
    let c = OwnerConfig { own_slots: 0, ..cfg(VerifyPolicy::Replicate { k: 3, quorum: 2 }) };
    let mut o = Owner::new(JOB, peer(0), flat(1), c, &swarm(2), signer(), t(0));
    let (_, ok) = drive(&mut o, |_, _| false);
    assert!(o.is_done() && ok);
}

#[test]
fn adaptive_checks_untrusted_results_on_the_owner_and_builds_trust() {
    let mut c = cfg(VerifyPolicy::Adaptive);
    c.verify.trust_streak = 3;
    let mut o = Owner::new(JOB, peer(0), flat(40), c, &swarm(3), signer(), t(0));
    let (runs, ok) = drive(&mut o, |_, _| false);
    assert!(o.is_done() && ok);
    // Every peer's first results were checked by the owner (peer 0) until it was trusted.
    for p in 1..=3 {
        let t = o.trust().get(&peer(p));
        assert!(t.streak >= 3 && t.caught == 0, "{p}: {t:?}");
        assert!(o.trust().trusted(&peer(p), 3));
    }
    assert!(o.progress().verify_runs >= 9, "{:?}", o.progress());
    assert!(o.progress().verify_runs < 40, "trust never lowered the checks: {runs:?}");
    assert_eq!(o.progress().disagreements, 0);
}

#[test]
fn a_trusted_peer_is_accepted_alone_except_for_spot_checks() {
    let mut c = cfg(VerifyPolicy::Adaptive);
    c.verify.spot_min = 0.25;
    c.own_slots = 0; // Checks go to the other trusted peers.
    let n = 400;
    let mut o = Owner::new(JOB, peer(0), flat(n), c, &swarm(4), signer(), t(0));
    o.set_trust(book(&[1, 2, 3, 4], 1_000));
    let (runs, ok) = drive(&mut o, |_, _| false);
    assert!(o.is_done() && ok);
    let checks = runs.len() as u32 - n;
    assert!((60..140).contains(&checks), "about a quarter checked: {checks}");
    // Checked agreements between trusted peers raise their streaks.
    assert!(o.trust().get(&peer(1)).streak > 1_000);
}

#[test]
fn a_lie_resets_trust() {
    let mut c = cfg(VerifyPolicy::Adaptive);
    c.verify.spot_min = 1.0; // Every result is checked.
    c.own_slots = 0;
    let n = 30;
    let mut o = Owner::new(JOB, peer(0), flat(n), c, &swarm(4), signer(), t(0));
    o.set_trust(book(&[1, 2, 3, 4], 1_000_000));
    let (runs, ok) = drive(&mut o, |p, i| p == peer(1) && i == TaskIndex(n - 1));
    assert!(o.is_done() && ok);
    let t1 = o.trust().get(&peer(1));
    assert_eq!((t1.streak, t1.caught), (0, 1), "{t1:?}");
    assert!(!o.trust().trusted(&peer(1), 16));
    assert!(o.trust().trusted(&peer(2), 16));
    assert_eq!(o.progress().disagreements, 1, "{runs:?}");
}

#[test]
fn a_caught_trusted_peer_loses_its_lone_results_and_what_was_made_from_them() {
    // A chain t0 → … → t5 on three trusted peers (the owner runs nothing); peer 1 turned and lies
    // on every result. Its lies are accepted alone until a spot check catches one: then every
    // lone result of it, and everything made from them, is made again.
    let m = BlobHash::of(b"m");
    let mut specs = vec![TaskSpec::new("t0", m).cost(10)];
    for k in 1..6 {
        specs.push(TaskSpec::new(format!("t{k}"), m).after(format!("t{}", k - 1)).cost(10));
    }
    let job = Job::new(specs).unwrap();
    let (mut caught, mut remade) = (0, 0);
    for seed in 0..24 {
        let mut c = cfg(VerifyPolicy::Adaptive);
        c.verify.spot_min = 0.3;
        c.verify.seed = seed;
        c.own_slots = 0;
        let mut o = Owner::new(JOB, peer(0), job.clone(), c, &swarm(3), signer(), t(0));
        o.set_trust(book(&[1, 2, 3], 1_000_000_000));
        let (_, ok) = drive_with(&mut o, false, |p, _| p == peer(1));
        assert!(o.is_done());
        if o.trust().get(&peer(1)).caught > 0 {
            caught += 1;
            assert!(ok, "seed {seed}: a caught liar's lone result survived");
            remade += usize::from(o.progress().discarded > 0);
        }
    }
    assert!(caught > 0 && remade > 0, "no seed caught the liar after a lone lie: {caught} {remade}");
}

#[test]
fn colluders_cannot_vouch_for_each_other() {
    // Peers 1 and 2 collude (same wrong bytes), untrusted; the owner's peer settles every task.
    let mut c = cfg(VerifyPolicy::Adaptive);
    c.verify.trust_streak = 2;
    let mut o = Owner::new(JOB, peer(0), flat(30), c, &swarm(2), signer(), t(0));
    let colluder = |p: PeerId| p == peer(1) || p == peer(2);
    let (_, ok) = drive(&mut o, |p, _| colluder(p));
    assert!(o.is_done() && ok, "the owner's own runs settle it");
    for p in [1, 2] {
        let t = o.trust().get(&peer(p));
        assert_eq!(t.streak, 0, "{p}: {t:?}");
        assert!(!o.trust().trusted(&peer(p), 2));
    }
    assert!(o.progress().disagreements > 0);
}

#[test]
fn consumers_start_only_on_accepted_inputs() {
    // The driver asserts every input it is handed is an accepted honest output.
    let c = OwnerConfig { own_slots: 0, ..cfg(VerifyPolicy::Replicate { k: 2, quorum: 2 }) };
    let m = BlobHash::of(b"m");
    let mut specs = vec![TaskSpec::new("root", m).cost(10)];
    for k in 0..8 {
        specs.push(TaskSpec::new(format!("mid{k}"), m).after("root").cost(10));
    }
    let mut last = TaskSpec::new("sink", m).cost(10);
    for k in 0..8 {
        last = last.after(format!("mid{k}"));
    }
    specs.push(last);
    let job = Job::new(specs).unwrap();
    let mut o = Owner::new(JOB, peer(0), job, c, &swarm(4), signer(), t(0));
    let (_, ok) = drive(&mut o, |p, _| p == peer(3));
    assert!(o.is_done() && ok);
    // Adaptive too, with a colluding pair.
    let mut o = Owner::new(JOB, peer(0), diamond(), cfg(VerifyPolicy::Adaptive), &swarm(3), signer(), t(0));
    let (_, ok) = drive(&mut o, |p, _| p != peer(3) && p != peer(0));
    assert!(o.is_done() && ok);
}

#[test]
fn without_any_peer_that_can_check_two_agreeing_runs_will_do() {
    // The owner runs nothing and nobody is trusted: adaptive accepts two agreeing distinct peers
    // (two runs a task, not one per peer), and builds no trust from them.
    let c = OwnerConfig { own_slots: 0, own_runs: false, ..cfg(VerifyPolicy::Adaptive) };
    let mut o = Owner::new(JOB, peer(0), flat(10), c, &swarm(4), signer(), t(0));
    let (runs, ok) = drive(&mut o, |_, _| false);
    assert!(o.is_done() && ok);
    assert_eq!(runs.len(), 20, "{runs:?}");
    assert!(o.trust().iter().all(|(_, t)| t.streak == 0));
}

#[test]
fn a_remade_result_that_differs_from_a_lone_one_catches_its_liar_and_remakes_the_consumers() {
    // Peer 1, trusted and not spot-checked, runs `a` alone and lies; `b` and `c` go out on its
    // bytes. Its output is then lost and `a` re-made elsewhere: the new value differs, so peer 1
    // lied, and `b`, `c` (and `d`) are made again on the true bytes.
    let mut c = cfg(VerifyPolicy::Adaptive);
    c.verify.spot_min = 0.0;
    c.own_slots = 0;
    let mut o = Owner::new(JOB, peer(0), diamond(), c, &[hint(1, 0)], signer(), t(0));
    o.set_trust(book(&[1, 2, 3], 1_000_000_000));
    let a = assigned(&drain(&mut o));
    assert_eq!(a, vec![(peer(1), TaskIndex(0), 1)]);
    let wrong = OutputRef { hash: BlobHash::of(b"lie"), size: 8, inline: None };
    let msg = SchedMsg::Done {
        task: TaskId { job: JOB, index: TaskIndex(0) },
        attempt: 1,
        output: wrong,
        fuel: 10,
        busy_us: 1,
        load: LoadHint { slots: 1, free_slots: 1, ready_tasks: 0, ready_fuel: 0 },
        earlier: Vec::new(),
    };
    o.handle_msg(t(1), peer(1), msg).unwrap();
    assert_eq!(assigned(&drain(&mut o)).len(), 2, "b and c went out on the lone result");
    o.handle_view(t(2), &[hint(1, 0), hint(2, 0), hint(3, 0)]);
    o.handle_output_lost(t(3), TaskIndex(0)).unwrap();
    let (_, ok) = drive(&mut o, |_, _| false);
    assert!(o.is_done() && ok);
    let ev = events(&mut o);
    assert!(ev.contains(&OwnerEvent::Disagreement { task: TaskIndex(0), losers: vec![peer(1)] }), "{ev:?}");
    assert_eq!(o.trust().get(&peer(1)).caught, 1);
}

#[test]
fn a_check_short_of_peers_waits_for_membership_to_show_one_before_settling() {
    // Three runs wanted, two peers in view (a submitter that has just joined sees part of the
    // swarm): the third run waits, and goes to the peer the view shows next.
    let c = OwnerConfig { own_slots: 0, ..cfg(VerifyPolicy::Replicate { k: 3, quorum: 3 }) };
    let mut o = Owner::new(JOB, peer(0), flat(1), c, &swarm(2), signer(), t(0));
    for step in 1..=2 {
        let (at, i, attempt) = assigned(&drain(&mut o))[0];
        o.handle_msg(t(step), at, done(i.0, attempt, 8)).unwrap();
    }
    assert!(assigned(&drain(&mut o)).is_empty(), "no third peer yet");
    let timers: Vec<Timer> = std::iter::from_fn(|| o.poll_timer()).collect();
    assert!(timers.iter().any(|tm| tm.at >= t(2) + Duration::from_secs(10)), "{timers:?}");
    assert!(events(&mut o).iter().all(|e| !matches!(e, OwnerEvent::TaskFailed(..))), "not failed yet");
    o.handle_view(t(3_000), &swarm(3));
    let third = assigned(&drain(&mut o));
    assert_eq!(third.len(), 1, "the new peer runs it");
    assert_eq!(third[0].0, peer(3));
    o.handle_msg(t(3_001), peer(3), done(0, third[0].2, 8)).unwrap();
    assert!(o.is_done());
    // The wait's timer, firing later, changes nothing.
    for tm in timers {
        o.handle_timer(tm.at, tm.token);
    }
    assert!(o.is_done() && events(&mut o).iter().all(|e| !matches!(e, OwnerEvent::TaskFailed(..))));
}
