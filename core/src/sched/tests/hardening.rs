//! Unit tests of the protocol's hardening: authorised messages, signed descriptors, leases and
//! renews, duplicates, caps on queues, the volunteer's task caps, and hostile numbers.

use super::*;

fn one_task_owner(cfg: OwnerConfig, view: &[PeerHint]) -> Owner {
    let job = Job::new(vec![TaskSpec::new("x", BlobHash::of(b"m")).cost(10)]).unwrap();
    Owner::new(JOB, peer(0), job, cfg, view, signer(), t(0))
}

#[test]
fn only_the_holder_of_the_live_attempt_may_report_it_and_an_early_report_waits_for_its_claim() {
    let mut o = one_task_owner(OwnerConfig { own_slots: 0, ..OwnerConfig::default() }, &[hint(1, 0)]);
    assert_eq!(assigned(&drain(&mut o)), vec![(peer(1), TaskIndex(0), 1)]);
    // A stranger reports it: refused.
    o.handle_msg(t(1), peer(9), done(0, 1, 10)).unwrap();
    o.handle_msg(t(1), peer(9), SchedMsg::Renew { job: JOB, tasks: vec![(TaskIndex(0), 1)] }).unwrap();
    assert!(!o.is_done());
    // The thief's report overtakes the victim's claim: it waits for it, then counts.
    o.handle_msg(t(2), peer(2), done(0, 1, 10)).unwrap();
    assert!(!o.is_done());
    let claim = SchedMsg::Claim { job: JOB, holder: peer(2), tasks: vec![(TaskIndex(0), 1, 1)] };
    o.handle_msg(t(3), peer(1), claim).unwrap();
    assert!(o.is_done(), "{:?}", o.state(TaskIndex(0)));
    assert!(matches!(o.state(TaskIndex(0)), TaskState::Done { holders, .. } if holders == &vec![peer(2)]));
    // Its duplicate is harmless; a stale attempt's report is refused.
    o.handle_msg(t(4), peer(2), done(0, 1, 10)).unwrap();
    o.handle_msg(t(4), peer(2), done(0, 7, 10)).unwrap();
    let p = o.progress();
    assert_eq!((p.done, p.refused.stale), (1, 1));
    assert!(p.refused.not_holder >= 1, "{:?}", p.refused);
}

#[test]
fn a_silent_holder_loses_its_attempt_at_the_lease_and_a_renew_keeps_it() {
    let cfg = OwnerConfig { own_slots: 0, lease_floor: Duration::from_secs(1), ..OwnerConfig::default() };
    let mut o = one_task_owner(cfg, &[hint(1, 0), hint(2, 0)]);
    let first = assigned(&drain(&mut o));
    let (at, _, _) = first[0];
    let lease = std::iter::from_fn(|| o.poll_timer()).last().unwrap();
    assert!(lease.at >= t(1_000) && lease.at < t(1_100), "floor plus 3 x 10 fuel: {lease:?}");
    // A renew at 900 ms pushes the deadline to 1.9 s: the timer at 1 s re-arms instead.
    o.handle_msg(t(900), at, SchedMsg::Renew { job: JOB, tasks: vec![(TaskIndex(0), 1)] }).unwrap();
    o.handle_timer(lease.at, lease.token);
    assert!(drain(&mut o).is_empty());
    let again = o.poll_timer().expect("re-armed");
    assert!(again.at >= t(1_900) && again.at < t(1_901), "{again:?}");
    // Silence past it: re-issued as attempt 2; attempt 1's report no longer counts.
    o.handle_timer(again.at, again.token);
    let next = assigned(&drain(&mut o));
    assert_eq!(next.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(), vec![(TaskIndex(0), 2)]);
    assert_eq!(o.progress().leases_expired, 1);
    o.handle_msg(t(2_000), at, done(0, 1, 10)).unwrap();
    assert!(!o.is_done());
    o.handle_msg(t(2_001), next[0].0, done(0, 2, 10)).unwrap();
    assert!(o.is_done());
}

#[test]
fn a_holder_renews_attempts_held_past_a_third_of_their_lease_in_one_message() {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 1, stealing: false, ..PeerConfig::default() });
    let tasks = vec![desc(0, 2), desc(1, 1), desc(2, 0)];
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    let timer = p.poll_timer().expect("a renew timer");
    assert_eq!(timer.at, t(10_000), "a third of the 30 s lease");
    p.handle_task_finished(
        t(5_000),
        TaskId { job: JOB, index: TaskIndex(0) },
        1,
        TaskOutcome::Ok { output: OutputRef { hash: BlobHash::of(b"o"), size: 1, inline: None }, fuel: 1 },
        &mut rng,
    );
    transmits(&mut p);
    p.handle_timer(timer.at, timer.token, &mut rng);
    let sent = transmits(&mut p);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let SchedMsg::Renew { tasks, .. } = &sent[0].msg else { panic!("expected Renew: {sent:?}") };
    assert_eq!(tasks, &vec![(TaskIndex(1), 1), (TaskIndex(2), 1)], "the reported one is not renewed");
    assert_eq!(sent[0].to, peer(0));
}

#[test]
fn assigns_and_cancels_count_only_from_the_owner_and_duplicates_never_queue() {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 1, stealing: false, ..PeerConfig::default() });
    p.handle_msg(
        t(0),
        peer(0),
        SchedMsg::Assign { tasks: vec![desc(0, 1), desc(1, 1)], addrs: vec![] },
        &mut rng,
    );
    assert_eq!(p.poll_run().map(|d| d.task.index.0), Some(0));
    // Someone else assigns the owner's task, or repeats it: refused.
    p.handle_msg(t(1), peer(5), SchedMsg::Assign { tasks: vec![desc(2, 1)], addrs: vec![] }, &mut rng);
    p.handle_msg(
        t(1),
        peer(0),
        SchedMsg::Assign { tasks: vec![desc(0, 1), desc(1, 1)], addrs: vec![] },
        &mut rng,
    );
    assert_eq!(p.load().ready_tasks, 1);
    // A stranger's cancel does nothing; the owner's drops the queue.
    p.handle_msg(t(2), peer(5), SchedMsg::Cancel { job: JOB }, &mut rng);
    assert_eq!(p.load().ready_tasks, 1);
    p.handle_msg(t(3), peer(0), SchedMsg::Cancel { job: JOB }, &mut rng);
    assert_eq!(p.load().ready_tasks, 0);
    let r = p.stats().refused;
    assert_eq!((r.not_owner, r.duplicate), (2, 2), "{r:?}");
}

#[test]
fn a_stolen_descriptor_altered_by_its_victim_is_refused_but_a_filled_continuation_verifies() {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut th = PeerSched::new(peer(2), PeerConfig { slots: 1, ..PeerConfig::default() });
    th.handle_view(t(0), vec![hint(1, 4)], &mut rng);
    transmits(&mut th);
    let mut bad = desc(0, 1);
    bad.cost = 1; // The victim lowers the cost estimate.
    assert!(!bad.verify());
    let mut filled = cont(1, 0, true);
    if let InputSource::After { .. } = filled.inputs[0].source {
        filled.filled.push((0, TaskIndex(0), true));
        filled.inputs[0] =
            InputLoc { hash: BlobHash::of(b"o"), size: 1, source: InputSource::Holders(vec![peer(1)]) };
    }
    assert!(filled.verify(), "filled in from the producer's run: still the owner's");
    let mut forged = filled.clone();
    forged.inputs[0].hash = BlobHash::of(b"forged");
    assert!(forged.verify(), "the hash of a filled input is the producer's executor's word");
    forged.args.push("rm -rf".into());
    assert!(!forged.verify());
    let stolen = SchedMsg::Stolen { tasks: vec![bad, filled], load: LoadHint::default(), addrs: vec![] };
    th.handle_msg(t(1), peer(1), stolen, &mut rng);
    assert_eq!(th.poll_run().map(|d| d.task.index.0), Some(1));
    assert_eq!(th.stats().refused.bad_signature, 1);
    // An answer to no request: handed back, not queued.
    let unasked = SchedMsg::Stolen { tasks: vec![desc(5, 1)], load: LoadHint::default(), addrs: vec![] };
    th.handle_msg(t(2), peer(3), unasked, &mut rng);
    let back = transmits(&mut th);
    assert!(back.iter().any(|tr| matches!(tr.msg, SchedMsg::Release { leaving: false, .. })), "{back:?}");
    assert_eq!(th.stats().refused.unsolicited, 1);
}

#[test]
fn a_full_queue_hands_the_excess_back_and_hostile_numbers_saturate() {
    let mut rng = SmallRng::seed_from_u64(1);
    let cfg = PeerConfig { slots: 1, stealing: false, max_queued: 2, ..PeerConfig::default() };
    let mut p = PeerSched::new(peer(1), cfg);
    let tasks: Vec<TaskDesc> = (0..5)
        .map(|i| {
            let mut d = desc(i, u64::MAX);
            d.cost = u64::MAX;
            d.signed()
        })
        .collect();
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    assert_eq!(p.running(), 1);
    assert_eq!(p.load().ready_tasks, 2);
    assert_eq!(p.load().ready_fuel, u64::MAX, "saturates");
    let back = transmits(&mut p);
    let SchedMsg::Release { tasks, leaving: false, .. } = &back[0].msg else { panic!("{back:?}") };
    assert_eq!(tasks.len(), 2);
    assert_eq!(p.stats().refused.queue_full, 2);
    let max = LoadHint { slots: u32::MAX, free_slots: u32::MAX, ready_tasks: u32::MAX, ready_fuel: u64::MAX };
    let huge = PeerHint { load: max, ..hint(3, 1) };
    p.handle_view(t(1), vec![huge, huge], &mut rng);
    let mut o = one_task_owner(OwnerConfig::default(), &[huge, PeerHint { peer: peer(4), ..huge }]);
    drain(&mut o);
    let mut d = done(0, 1, u64::MAX);
    if let SchedMsg::Done { load, fuel, busy_us, .. } = &mut d {
        *load =
            LoadHint { slots: u32::MAX, free_slots: u32::MAX, ready_tasks: u32::MAX, ready_fuel: u64::MAX };
        (*fuel, *busy_us) = (u64::MAX, u64::MAX);
    }
    let at = match o.state(TaskIndex(0)) {
        TaskState::Placed { at, .. } => *at,
        s => panic!("{s:?}"),
    };
    o.handle_msg(t(2), at, d).unwrap();
    assert!(o.is_done());
}

#[test]
fn a_task_over_the_volunteers_caps_is_refused_placed_elsewhere_and_failed_when_all_refuse() {
    let mut rng = SmallRng::seed_from_u64(1);
    let caps = TaskCaps { max_fuel: Some(1_000), ..TaskCaps::default() };
    let mut p =
        PeerSched::new(peer(1), PeerConfig { slots: 1, stealing: false, caps, ..PeerConfig::default() });
    let mut big = desc(0, 1);
    big.limits.fuel = Some(5_000);
    let big = big.signed();
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks: vec![big], addrs: vec![] }, &mut rng);
    assert!(p.poll_run().is_none());
    let sent = transmits(&mut p);
    let SchedMsg::Failed { kind: FailureKind::Refused(r), .. } = &sent[0].msg else { panic!("{sent:?}") };
    assert_eq!(*r, Refusal::OverCap { what: CapKind::Fuel, asked: 5_000, cap: 1_000 });
    // The owner places it on a peer that has not refused it, and fails it once all have.
    let job = Job::new(vec![TaskSpec::new("x", BlobHash::of(b"m")).cost(10)]).unwrap();
    let cfg = OwnerConfig { own_slots: 0, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[hint(1, 0), hint(2, 0)], signer(), t(0));
    let refuse = |attempt| SchedMsg::Failed {
        task: TaskId { job: JOB, index: TaskIndex(0) },
        attempt,
        kind: FailureKind::Refused(*r),
    };
    let (first, _, _) = assigned(&drain(&mut o))[0];
    o.handle_msg(t(1), first, refuse(1)).unwrap();
    let (second, _, attempt) = assigned(&drain(&mut o))[0];
    assert_ne!(second, first, "not placed again where it was refused");
    o.handle_msg(t(2), second, refuse(attempt)).unwrap();
    assert!(assigned(&drain(&mut o)).is_empty());
    let events: Vec<_> = std::iter::from_fn(|| o.poll_event()).collect();
    assert_eq!(events, vec![OwnerEvent::TaskFailed(TaskIndex(0), FailureKind::Refused(*r))]);
}

#[test]
fn a_submitter_donating_no_cores_fails_a_task_every_runner_refused_instead_of_keeping_it() {
    let r = Refusal::OverCap { what: CapKind::Fuel, asked: 5_000, cap: 1_000 };
    let refuse = |attempt| SchedMsg::Failed {
        task: TaskId { job: JOB, index: TaskIndex(0) },
        attempt,
        kind: FailureKind::Refused(r),
    };
    for own_runs in [false, true] {
        let cfg = OwnerConfig { own_slots: 1, own_runs, ..OwnerConfig::default() };
        let mut o = one_task_owner(cfg, &[hint(1, 0)]);
        let mut events = Vec::new();
        for step in 1..=4 {
            let Some(&(at, _, attempt)) = assigned(&drain(&mut o)).first() else { break };
            if at == peer(0) {
                if !own_runs {
                    // Queued at the submitter for thieves: peer 1 steals it (the victim's claim
                    // moves the attempt) and refuses it.
                    let claim = SchedMsg::Claim {
                        job: JOB,
                        holder: peer(1),
                        tasks: vec![(TaskIndex(0), attempt, 1)],
                    };
                    o.handle_msg(t(step), peer(0), claim).unwrap();
                    o.handle_msg(t(step), peer(1), refuse(attempt)).unwrap();
                }
            } else {
                o.handle_msg(t(step), at, refuse(attempt)).unwrap();
            }
            events.extend(std::iter::from_fn(|| o.poll_event()));
        }
        if own_runs {
            // The owner's own peer runs tasks and has no cap: the task waits there.
            assert!(events.is_empty(), "{events:?}");
            assert!(!o.is_done());
        } else {
            assert_eq!(events, vec![OwnerEvent::TaskFailed(TaskIndex(0), FailureKind::Refused(r))]);
        }
    }
}

#[test]
fn a_result_its_holder_cannot_serve_is_made_again_elsewhere_or_there_when_nobody_else_can() {
    for view in [&[hint(1, 0), hint(2, 0)][..], &[hint(1, 0)][..]] {
        let mut o = one_task_owner(OwnerConfig { own_slots: 0, ..OwnerConfig::default() }, view);
        let (liar, _, attempt) = assigned(&drain(&mut o))[0];
        // Not inline: only the holder has it, and it will not serve it.
        o.handle_msg(t(1), liar, done(0, attempt, 10)).unwrap();
        assert!(o.is_done());
        o.handle_output_lost(t(2), TaskIndex(0)).unwrap();
        let again = assigned(&drain(&mut o));
        assert_eq!(again.len(), 1, "{again:?}");
        if view.len() > 1 {
            assert_ne!(again[0].0, liar, "not made again where it could not be served");
        } else {
            assert_eq!(again[0].0, liar, "the only peer gets it again rather than none");
        }
    }
}
