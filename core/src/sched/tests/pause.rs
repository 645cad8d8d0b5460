//! Unit tests of pausing (the volunteer's donation policy): a paused peer hands other owners'
//! queued tasks back and takes no work, keeps its own jobs' tasks for thieves, advertises no
//! slots, and takes work again when resumed; owners stop placing on it and place there again once
//! it claims work.

use super::*;

fn drained(p: &mut PeerSched) -> Vec<Transmit> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

#[test]
fn a_paused_peer_hands_queued_tasks_back_runs_nothing_and_resumes() {
    let mut rng = SmallRng::seed_from_u64(5);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 1, ..PeerConfig::default() });
    let tasks = (0..3).map(|i| desc(i, u64::from(i))).collect();
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    let running: Vec<u32> = std::iter::from_fn(|| p.poll_run()).map(|d| d.task.index.0).collect();
    assert_eq!(running, vec![2]);
    drained(&mut p);
    assert_eq!(p.load().slots, 1);

    p.handle_pause(t(1), true, &mut rng);
    assert!(p.is_paused() && !p.is_leaving());
    let back = drained(&mut p);
    assert_eq!(
        back.iter().map(|tr| (tr.to, tr.msg.clone())).collect::<Vec<_>>(),
        vec![(
            peer(0),
            SchedMsg::Release {
                job: JOB,
                tasks: vec![(TaskIndex(1), 1, 0), (TaskIndex(0), 1, 0)],
                leaving: true
            }
        )]
    );
    assert_eq!(p.stats().tasks_released, 2);
    let load = p.load();
    assert_eq!((load.slots, load.free_slots, load.ready_tasks), (0, 0, 0), "advertises no slots");
    p.handle_pause(t(1), true, &mut rng);
    assert!(drained(&mut p).is_empty(), "pausing twice is a no-op");

    // New work goes straight back; the running task still reports; nothing starts; no steals.
    p.handle_msg(t(2), peer(0), SchedMsg::Assign { tasks: vec![desc(7, 0)], addrs: vec![] }, &mut rng);
    let id = TaskId { job: JOB, index: TaskIndex(2) };
    let out = OutputRef { hash: BlobHash::of(b"o"), size: 1, inline: Some(vec![1]) };
    p.handle_task_finished(t(3), id, 1, TaskOutcome::Ok { output: out, fuel: 1 }, &mut rng);
    let msgs: Vec<SchedMsg> = drained(&mut p).into_iter().map(|tr| tr.msg).collect();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0], SchedMsg::Release { job: JOB, tasks: vec![(TaskIndex(7), 1, 0)], leaving: true });
    let SchedMsg::Done { load, .. } = &msgs[1] else { panic!("{msgs:?}") };
    assert_eq!(load.slots, 0, "its report says it takes no work");
    p.handle_view(t(4), vec![hint(2, 5)], &mut rng);
    assert!(p.poll_run().is_none(), "nothing starts on a paused peer");
    assert_eq!(p.stats().steals_tried, 0, "a paused peer does not steal");

    // Resumed: it advertises its slots, steals, and runs what it gets.
    p.handle_pause(t(5), false, &mut rng);
    assert_eq!((p.load().slots, p.load().free_slots), (1, 1));
    let steals = drained(&mut p);
    assert!(
        steals.iter().any(|tr| tr.to == peer(2) && matches!(tr.msg, SchedMsg::Steal { .. })),
        "{steals:?}"
    );
    p.handle_msg(t(6), peer(0), SchedMsg::Assign { tasks: vec![desc(8, 0)], addrs: vec![] }, &mut rng);
    assert_eq!(p.poll_run().map(|d| d.task.index), Some(TaskIndex(8)));
}

#[test]
fn a_paused_peer_keeps_its_own_jobs_tasks_queued_for_thieves() {
    let mut rng = SmallRng::seed_from_u64(6);
    // Peer 0 owns the tasks (desc's owner) and is the paused peer here.
    let mut p = PeerSched::new(peer(0), PeerConfig { slots: 1, ..PeerConfig::default() });
    p.handle_pause(t(0), true, &mut rng);
    let tasks = (0..2).map(|i| desc(i, u64::from(i))).collect();
    p.handle_msg(t(1), peer(0), SchedMsg::Assign { tasks, addrs: vec![] }, &mut rng);
    assert!(p.poll_run().is_none(), "paused: its own tasks wait");
    assert!(drained(&mut p).iter().all(|tr| !matches!(tr.msg, SchedMsg::Release { .. })));
    assert_eq!(p.load().ready_tasks, 2, "thieves see them");
    p.handle_msg(t(2), peer(3), SchedMsg::Steal { max: 1, load: hint(3, 0).load }, &mut rng);
    let out = drained(&mut p);
    assert!(
        out.iter().any(|tr| matches!(&tr.msg, SchedMsg::Stolen { tasks, .. } if tasks.len() == 1)),
        "{out:?}"
    );
    p.handle_pause(t(3), false, &mut rng);
    assert!(p.poll_run().is_some(), "resumed: the rest runs here");
}

#[test]
fn owners_stop_placing_on_a_paused_peer_and_place_there_again_once_it_claims_work() {
    let job = Job::new((0..6).map(|i| TaskSpec::new(format!("t{i}"), BlobHash::of(b"m")).cost(10)).collect())
        .unwrap();
    let cfg = OwnerConfig { own_slots: 0, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[hint(1, 0), hint(2, 0)], signer(), t(0));
    let first = assigned(&drain(&mut o));
    let on1: Vec<(TaskIndex, u32, u32)> =
        first.iter().filter(|a| a.0 == peer(1)).map(|&(_, i, att)| (i, att, 0)).collect();
    assert!(!on1.is_empty(), "{first:?}");
    // Peer 1 pauses: its tasks go to peer 2, nothing more to peer 1.
    o.handle_msg(t(1), peer(1), SchedMsg::Release { job: JOB, tasks: on1.clone(), leaving: true }).unwrap();
    let again = assigned(&drain(&mut o));
    assert!(again.iter().all(|a| a.0 == peer(2)), "{again:?}");
    // Peer 1 resumes and steals one of peer 2's tasks: peer 2 claims it for peer 1.
    let (_, stolen, attempt) = again[0];
    let claim = SchedMsg::Claim { job: JOB, holder: peer(1), tasks: vec![(stolen, attempt, 1)] };
    o.handle_msg(t(2), peer(2), claim).unwrap();
    // Peer 2 reports everything else; the owner places on peer 1 again.
    let mut placed_on_1 = false;
    let mut pending: Vec<(PeerId, TaskIndex, u32)> =
        first.iter().copied().filter(|a| a.0 == peer(2)).collect();
    pending.extend(again.iter().copied().skip(1));
    for (k, (_, i, att)) in pending.into_iter().enumerate() {
        o.handle_msg(t(3 + k as u64), peer(2), done(i.0, att, 10)).unwrap();
        placed_on_1 |= assigned(&drain(&mut o)).iter().any(|a| a.0 == peer(1));
    }
    o.handle_msg(t(20), peer(1), done(stolen.0, attempt, 10)).unwrap();
    placed_on_1 |= assigned(&drain(&mut o)).iter().any(|a| a.0 == peer(1));
    assert!(placed_on_1, "a resumed peer that claimed work is a placement target again");
}

#[test]
fn a_peer_that_advertised_no_slots_is_a_target_again_when_it_advertises_some() {
    let job =
        Job::new((0..64).map(|i| TaskSpec::new(format!("t{i}"), BlobHash::of(b"m")).cost(10)).collect())
            .unwrap();
    let cfg = OwnerConfig { own_slots: 0, ..OwnerConfig::default() };
    let mut paused = hint(1, 3);
    paused.load.slots = 0;
    paused.load.free_slots = 0;
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[paused, hint(2, 0)], signer(), t(0));
    let first = assigned(&drain(&mut o));
    assert!(
        !first.is_empty() && first.iter().all(|a| a.0 == peer(2)),
        "nothing on a peer with no slots: {first:?}"
    );
    assert!(first.len() < 64, "some tasks are held back for later");
    o.handle_view(t(1), &[paused, hint(2, 3)]);
    assert!(assigned(&drain(&mut o)).iter().all(|a| a.0 != peer(1)), "still paused");
    o.handle_view(t(2), &[hint(1, 0), hint(2, 3)]);
    let next = assigned(&drain(&mut o));
    assert!(next.iter().any(|a| a.0 == peer(1)), "resumed: it gets work: {next:?}");
}

#[test]
fn a_run_abandoned_by_a_pause_goes_back_to_its_owner_as_a_release_not_a_failure() {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 1, ..PeerConfig::default() });
    let mut d = desc(3, 0);
    d.hops = 2;
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks: vec![d.signed()], addrs: vec![] }, &mut rng);
    assert!(p.poll_run().is_some());
    drained(&mut p);
    p.handle_pause(t(1), true, &mut rng);
    assert!(drained(&mut p).is_empty(), "nothing queued to hand back");
    let id = TaskId { job: JOB, index: TaskIndex(3) };
    p.handle_task_abandoned(t(2), id, 1, &mut rng);
    let msgs: Vec<SchedMsg> = drained(&mut p).into_iter().map(|tr| tr.msg).collect();
    assert_eq!(msgs, vec![SchedMsg::Release { job: JOB, tasks: vec![(TaskIndex(3), 1, 2)], leaving: true }]);
    assert_eq!((p.running(), p.stats().tasks_released), (0, 1));
    // Its late end changes nothing.
    let out = OutputRef { hash: BlobHash::of(b"o"), size: 1, inline: None };
    p.handle_task_finished(t(3), id, 1, TaskOutcome::Ok { output: out, fuel: 1 }, &mut rng);
    assert!(drained(&mut p).is_empty());
}
