//! Unit tests of jobs that outlive their owner: the journal, deputies, takeover in a new term,
//! handover, and peers refusing a stale owner.

use super::*;
use crate::sched::deputy::{Change, Deputy, JobPhase, JobRecord, JournalOutcome};

fn swarm(n: u8) -> Vec<PeerHint> {
    (1..=n).map(|i| hint(i, 0)).collect()
}

fn record(job: &Job) -> JobRecord {
    JobRecord::of(JOB, job, job.sinks().collect(), peer(0), 60_000)
}

fn cfg() -> OwnerConfig {
    OwnerConfig { continuations: false, ..OwnerConfig::default() }
}

/// The deputize messages in `out`, by receiver.
fn deputized(out: &[Transmit]) -> Vec<(PeerId, u32, Vec<PeerId>, usize)> {
    out.iter()
        .filter_map(|tr| match &tr.msg {
            SchedMsg::Deputize { term, deputies, changes, .. } => {
                Some((tr.to, *term, deputies.clone(), changes.len()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_record_round_trips_to_the_same_job_and_refuses_a_bad_one() {
    let job = diamond().with_verify(VerifyPolicy::Replicate { k: 3, quorum: 2 });
    let r = record(&job);
    let back = r.to_job().unwrap();
    assert_eq!(back.tasks(), job.tasks());
    assert_eq!(back.verify(), job.verify());
    assert_eq!(r.blobs().len(), 1, "one module, no literal inputs");
    let mut bad = r.clone();
    bad.tasks[0].inputs.push(crate::job::Input::Output(TaskIndex(3)));
    assert!(bad.to_job().is_err(), "a cycle is refused");
    let mut bad = r;
    bad.wanted.push(TaskIndex(9));
    assert!(bad.to_job().is_err(), "a wanted output that names no task is refused");
}

#[test]
fn the_owner_journals_results_streams_them_to_its_deputies_and_replaces_a_lost_one() {
    let job = diamond();
    let mut o = Owner::new(JOB, peer(0), job.clone(), cfg(), &swarm(3), signer(), t(0));
    o.set_deputies(record(&job), 2);
    let out = drain(&mut o);
    let d = deputized(&out);
    assert_eq!(d.len(), 2, "two deputies: {d:?}");
    let deputies: Vec<PeerId> = d.iter().map(|x| x.0).collect();
    assert!(d.iter().all(|x| x.1 == 0 && x.2 == deputies));
    assert!(!o.deputies_ready());
    for &p in &deputies {
        o.handle_msg(t(1), p, SchedMsg::Deputized { job: JOB, term: 0, seq: 0 }).unwrap();
    }
    assert!(o.deputies_ready());
    let (at, _, attempt) = assigned(&out)[0];
    o.handle_msg(t(2), at, done(0, attempt, 10)).unwrap();
    let out = drain(&mut o);
    let journals: Vec<_> = out
        .iter()
        .filter_map(|tr| match &tr.msg {
            // Batches with no change tell the deputies a new takeover order (after each ack).
            SchedMsg::Journal { seq, changes, .. } if !changes.is_empty() => {
                Some((tr.to, *seq, changes.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(journals.len(), 2, "each deputy hears of the result: {journals:?}");
    assert!(
        journals.iter().all(|j| j.1 == 0 && matches!(j.2[..], [Change::Done { task: TaskIndex(0), .. }]))
    );
    assert_eq!(o.journal().len(), 1);
    // A deputy dies: another peer is deputized with the whole journal.
    o.handle_peer_down(t(3), deputies[0]);
    let d = deputized(&drain(&mut o));
    assert!(d.iter().any(|x| !deputies.contains(&x.0) && x.3 == 1), "a new deputy gets the journal: {d:?}");
    assert_eq!(o.deputies().len(), 2);
}

#[test]
fn a_deputy_takes_over_in_the_next_term_keeps_done_results_and_reissues_the_rest() {
    let job = diamond();
    // The owner runs nothing itself, so a's output lives on another peer and survives it.
    let cfg = || OwnerConfig { own_slots: 0, own_runs: false, ..self::cfg() };
    let mut o = Owner::new(JOB, peer(0), job.clone(), cfg(), &swarm(3), signer(), t(0));
    o.set_deputies(record(&job), 2);
    let out = drain(&mut o);
    let (at, _, attempt) = assigned(&out)[0];
    o.handle_msg(t(1), at, done(0, attempt, 10)).unwrap();
    let d = deputized(&out);
    let (first, second) = (d[0].0, d[1].0);
    let mut dep = Deputy::new(record(&job), 0, peer(0), vec![first, second], Vec::new()).unwrap();
    for tr in drain(&mut o) {
        if let SchedMsg::Journal { term, seq, changes, deputies, .. } = tr.msg
            && tr.to == first
        {
            assert_eq!(dep.handle_journal(peer(0), term, seq, changes, deputies), JournalOutcome::Applied(1));
        }
    }
    // A journal from anyone but the owner, or one that skips ahead, is not applied.
    assert_eq!(dep.handle_journal(second, 0, 1, vec![Change::Cancelled], vec![]), JournalOutcome::Ignored);
    assert_eq!(dep.handle_journal(peer(0), 0, 5, vec![Change::Cancelled], vec![]), JournalOutcome::Gap(1));
    // The owner is gone: the first deputy takes over, the second waits for it.
    let down = |p: &PeerId| *p == peer(0);
    assert!(dep.should_take_over(first, &down));
    assert!(!dep.should_take_over(second, &down));
    let both = |p: &PeerId| *p == peer(0) || *p == first;
    assert!(dep.should_take_over(second, &both));
    let view: Vec<PeerHint> = swarm(3).into_iter().filter(|h| h.peer != first).collect();
    let mut new = dep.take_over(first, 1, cfg(), &view, signer(), t(5));
    new.handle_peer_down(t(5), peer(0));
    assert_eq!(new.term(), 1);
    assert!(matches!(new.state(TaskIndex(0)), TaskState::Done { .. }), "a's result is kept");
    let out = drain(&mut new);
    let issued: Vec<_> = out
        .iter()
        .filter_map(|tr| match &tr.msg {
            SchedMsg::Assign { tasks, .. } => Some(tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut reissued: Vec<TaskIndex> = issued.iter().map(|d| d.task.index).collect();
    reissued.sort();
    assert_eq!(reissued, [TaskIndex(1), TaskIndex(2)]);
    assert!(issued.iter().all(|d| d.term == 1 && d.owner == first && d.attempt > 1 << 16));
    assert!(deputized(&out).iter().any(|x| x.0 == second && x.1 == 1), "the other deputy follows term 1");
    let report = new.report(false);
    assert_eq!((report.term, report.owner, report.done, report.phase), (1, first, 1, JobPhase::Running));
}

#[test]
fn peers_refuse_a_stale_owner_and_drop_what_it_queued_when_a_newer_term_arrives() {
    let mut p = PeerSched::new(peer(5), PeerConfig { slots: 0, ..PeerConfig::default() });
    let mut rng = SmallRng::seed_from_u64(1);
    let old = desc(0, 1);
    p.handle_msg(t(0), peer(0), SchedMsg::Assign { tasks: vec![old], addrs: vec![] }, &mut rng);
    assert_eq!(p.load().ready_tasks, 1);
    // A newer owner (term 1, a peer whose key signs descriptors: the same test key) re-issues.
    let mut newer = desc(1, 1);
    newer.term = 1;
    newer.attempt = 1 << 16 | 1;
    let newer = newer.signed();
    p.handle_msg(t(1), peer(0), SchedMsg::Assign { tasks: vec![newer], addrs: vec![] }, &mut rng);
    assert_eq!(p.load().ready_tasks, 1, "the term-0 task is dropped, the term-1 one queued");
    // The old term again: refused, and its owner told who owns the job now.
    let mut stale = desc(2, 1);
    stale.attempt = 7;
    p.handle_msg(t(2), peer(0), SchedMsg::Assign { tasks: vec![stale.signed()], addrs: vec![] }, &mut rng);
    assert_eq!(p.stats().refused.superseded, 1);
    let out = transmits(&mut p);
    assert!(
        out.iter().any(|tr| matches!(
            &tr.msg,
            SchedMsg::Failed { kind: FailureKind::Refused(Refusal::Superseded { term: 1, .. }), .. }
        )),
        "{out:?}"
    );
}

#[test]
fn a_handover_makes_a_deputy_owner_of_the_next_term_and_the_old_owner_steps_down() {
    let job = diamond();
    let mut o = Owner::new(JOB, peer(0), job.clone(), cfg(), &swarm(2), signer(), t(0));
    o.set_deputies(record(&job), 2);
    assert_eq!(o.handover(t(1)), None, "no deputy holds the job yet");
    let d = deputized(&drain(&mut o));
    o.handle_msg(t(1), d[0].0, SchedMsg::Deputized { job: JOB, term: 0, seq: 0 }).unwrap();
    assert_eq!(o.handover(t(2)), Some(d[0].0));
    let out = drain(&mut o);
    let told: Vec<PeerId> = out
        .iter()
        .filter_map(|tr| match tr.msg {
            SchedMsg::NewOwner { term: 1, owner, .. } if owner == d[0].0 => Some(tr.to),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 2, "every deputy hears of the new owner: {out:?}");
    let events: Vec<_> = std::iter::from_fn(|| o.poll_event()).collect();
    assert!(events.contains(&OwnerEvent::Superseded { term: 1, owner: d[0].0 }));
    assert_eq!(o.report(false).owner, d[0].0, "queries are sent on to the new owner");
    // Only a deputy can take the job over: a stranger's claim is not believed.
    let mut o2 = Owner::new(JOB, peer(0), job, cfg(), &swarm(2), signer(), t(0));
    assert!(!o2.handle_new_owner(t(1), peer(9), 3, peer(9)), "a stranger cannot depose the owner");
    assert!(!o2.handle_new_owner(t(1), peer(8), 4, peer(9)));
    assert_eq!(o2.superseded(), None);
}

#[test]
fn a_journal_replays_failures_and_cancels_into_the_restored_owner() {
    let job = diamond();
    let changes = vec![
        Change::Done {
            task: TaskIndex(0),
            output: OutputRef { hash: BlobHash::of(b"a"), size: 1, inline: Some(b"a".to_vec()) },
            holders: vec![peer(1)],
            fuel: 10,
            executor: peer(1),
        },
        Change::Failed { task: TaskIndex(1), kind: FailureKind::Task("exit 1".into()) },
    ];
    let mut o = Owner::restore(
        job.clone(),
        record(&job),
        2,
        &changes,
        vec![],
        peer(0),
        cfg(),
        &swarm(2),
        signer(),
        t(0),
    );
    let events: Vec<_> = std::iter::from_fn(|| o.poll_event()).collect();
    assert!(matches!(events[..], [OwnerEvent::TaskFailed(TaskIndex(1), _)]), "{events:?}");
    assert!(assigned(&drain(&mut o)).is_empty(), "a failed job places nothing");
    assert!(matches!(o.report(false).phase, JobPhase::Failed(ref s) if s.contains("exit 1")));
    let cancelled = [changes[0].clone(), Change::Cancelled];
    let o = Owner::restore(
        job.clone(),
        record(&job),
        2,
        &cancelled,
        vec![],
        peer(0),
        cfg(),
        &swarm(2),
        signer(),
        t(0),
    );
    assert_eq!(o.report(false).phase, JobPhase::Cancelled);
}

#[test]
fn deputies_come_after_deputize_after_and_the_journal_travels_in_batches() {
    let job = diamond();
    let cfg = OwnerConfig {
        deputize_after: std::time::Duration::from_millis(200),
        journal_every: std::time::Duration::from_millis(50),
        ..self::cfg()
    };
    let mut o = Owner::new(JOB, peer(0), job.clone(), cfg, &swarm(3), signer(), t(0));
    o.set_deputies(record(&job), 2);
    let out = drain(&mut o);
    assert!(deputized(&out).is_empty(), "no deputies before 200 ms");
    let timers: Vec<_> = std::iter::from_fn(|| o.poll_timer()).collect();
    let at_200 = timers.iter().find(|tm| tm.at == t(200)).expect("a timer at 200 ms").token;
    o.handle_timer(t(200), at_200);
    let d = deputized(&drain(&mut o));
    assert_eq!(d.len(), 2, "{d:?}");
    for x in &d {
        o.handle_msg(t(201), x.0, SchedMsg::Deputized { job: JOB, term: 0, seq: 0 }).unwrap();
    }
    let _ = drain(&mut o);
    // Two results 10 ms apart, after a batch went out at 201 ms: they wait for 251 ms and go
    // out together.
    let (at, _, attempt) = assigned(&out)[0];
    o.handle_msg(t(210), at, done(0, attempt, 10)).unwrap();
    let journals = |out: &[Transmit]| {
        out.iter()
            .filter(|tr| matches!(&tr.msg, SchedMsg::Journal { changes, .. } if !changes.is_empty()))
            .count()
    };
    assert_eq!(journals(&drain(&mut o)), 0, "held until the interval is over");
    let timers: Vec<_> = std::iter::from_fn(|| o.poll_timer()).collect();
    let stream =
        timers.iter().filter(|tm| tm.at == t(251)).map(|tm| tm.token).next().expect("a stream timer");
    o.handle_timer(t(251), stream);
    let out = drain(&mut o);
    assert_eq!(journals(&out), 2, "one batch per deputy: {out:?}");
}

#[test]
fn the_jobs_end_reaches_the_deputies_at_once_whatever_the_interval() {
    let job = Job::new(vec![TaskSpec::new("only", BlobHash::of(b"m")).cost(10)]).unwrap();
    let cfg = OwnerConfig { journal_every: std::time::Duration::from_secs(10), ..self::cfg() };
    let mut o = Owner::new(JOB, peer(0), job.clone(), cfg, &swarm(3), signer(), t(0));
    o.set_deputies(record(&job), 2);
    let out = drain(&mut o);
    for x in deputized(&out) {
        o.handle_msg(t(1), x.0, SchedMsg::Deputized { job: JOB, term: 0, seq: 0 }).unwrap();
    }
    let _ = drain(&mut o);
    let (at, _, attempt) = assigned(&out)[0];
    o.handle_msg(t(2), at, done(0, attempt, 10)).unwrap();
    assert!(o.is_done());
    let sent = drain(&mut o)
        .iter()
        .filter(|tr| matches!(&tr.msg, SchedMsg::Journal { changes, .. } if !changes.is_empty()))
        .count();
    assert_eq!(sent, 2, "both deputies hear the last result in the same step");
}

#[test]
fn a_late_snapshot_from_the_same_owner_does_not_undo_newer_journal_batches() {
    let job = diamond();
    let done0 = Change::Done {
        task: TaskIndex(0),
        output: OutputRef { hash: BlobHash::of(b"a"), size: 1, inline: Some(b"a".to_vec()) },
        holders: vec![peer(1)],
        fuel: 10,
        executor: peer(1),
    };
    let mut dep = Deputy::new(record(&job), 0, peer(0), vec![peer(2)], vec![]).unwrap();
    assert_eq!(dep.handle_journal(peer(0), 0, 0, vec![done0.clone()], vec![]), JournalOutcome::Applied(1));
    // The snapshot the owner sent before that batch arrives after it.
    assert!(dep.handle_deputize(peer(0), 0, vec![peer(2), peer(3)], vec![]));
    assert_eq!(dep.changes(), [done0], "the newer batch is kept");
    assert_eq!(dep.deputies(), [peer(2), peer(3)], "the deputies' order is taken");
    // A snapshot of a newer term replaces the replica.
    assert!(dep.handle_deputize(peer(2), 1, vec![peer(3)], vec![]));
    assert!(dep.changes().is_empty() && dep.term() == 1 && dep.owner() == peer(2));
}
