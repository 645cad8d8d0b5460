//! The volunteer's trust policy on real descriptors: an owner sealing a job's tasks, peers
//! taking or refusing them, and the owner failing a task no peer takes. And credit: the owner's
//! receipts for accepted runs, and what an executor keeps of them.

use std::collections::BTreeSet;

use super::*;
use crate::ids::SubmitterKey;
use crate::sched::{TrustPolicy, TrustRefusal};

fn submitter(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

fn public(key: &ed25519_dalek::SigningKey) -> SubmitterKey {
    SubmitterKey(key.verifying_key().to_bytes())
}

/// 1 s after the Unix epoch is the peers' time zero; seals expire at 10 s.
const EPOCH_MS: u64 = 1_000;
const EXPIRES_MS: u64 = 10_000;

/// The descriptors the owner of `job` (sealed by `signer`, if any) assigns to peer 1.
fn descs(job: Job, sealer: Option<&ed25519_dalek::SigningKey>) -> Vec<TaskDesc> {
    let job = match sealer {
        Some(k) => job.sign(JOB, k, EXPIRES_MS),
        None => job,
    };
    let cfg = OwnerConfig { own_slots: 0, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[hint(1, 0)], signer(), t(0));
    drain(&mut o)
        .into_iter()
        .flat_map(|tr| match tr.msg {
            SchedMsg::Assign { tasks, .. } => tasks,
            _ => Vec::new(),
        })
        .collect()
}

/// What peer 1 with `trust` does with `descs` at `now`: the tasks it runs and its refusals.
fn offer(trust: TrustPolicy, descs: Vec<TaskDesc>, now: Time) -> (Vec<u32>, Vec<FailureKind>) {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut p = PeerSched::new(peer(1), PeerConfig { slots: 4, trust, ..PeerConfig::default() });
    p.handle_msg(now, peer(0), SchedMsg::Assign { tasks: descs, addrs: vec![] }, &mut rng);
    let runs = std::iter::from_fn(|| p.poll_run()).map(|d| d.task.index.0).collect();
    let refusals = std::iter::from_fn(|| p.poll_transmit())
        .filter_map(|tr| match tr.msg {
            SchedMsg::Failed { kind, .. } => Some(kind),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(p.stats().refused.untrusted, refusals.len() as u64);
    (runs, refusals)
}

fn policy(accept_unsigned: bool, trusted: &[SubmitterKey]) -> TrustPolicy {
    TrustPolicy {
        accept_unsigned,
        trusted_submitters: trusted.iter().copied().collect(),
        allowed_modules: None,
        epoch_unix_ms: EPOCH_MS,
    }
}

/// Every task offered (the source, and the continuations sent with it) was refused for `why`.
fn assert_all(refusals: &[FailureKind], why: TrustRefusal) {
    assert!(!refusals.is_empty() && refusals.iter().all(|r| *r == refused(why)), "{refusals:?} vs {why:?}");
}

fn refused(why: TrustRefusal) -> FailureKind {
    FailureKind::Refused(Refusal::Trust(why))
}

#[test]
fn a_peer_that_trusts_key_a_runs_a_job_signed_by_a_and_refuses_b_and_unsigned_ones() {
    let (a, b) = (submitter(1), submitter(2));
    let only_a = policy(false, &[public(&a)]);
    let (runs, refusals) = offer(only_a.clone(), descs(diamond(), Some(&a)), t(0));
    assert_eq!((runs, refusals), (vec![0], vec![]), "the source task of the diamond runs");

    let (runs, refusals) = offer(only_a.clone(), descs(diamond(), Some(&b)), t(0));
    assert!(runs.is_empty());
    assert_all(&refusals, TrustRefusal::Untrusted(public(&b)));
    let (runs, refusals) = offer(only_a, descs(diamond(), None), t(0));
    assert!(runs.is_empty());
    assert_all(&refusals, TrustRefusal::Unsigned);
    let text = refused(TrustRefusal::Unsigned);
    let FailureKind::Refused(r) = text else { unreachable!() };
    assert!(r.to_string().contains("accepts jobs only from its trusted submitters"), "{r}");

    // A peer that takes unsigned work takes both; one that lists nobody and takes no unsigned
    // work takes nothing.
    assert_eq!(offer(policy(true, &[]), descs(diamond(), Some(&b)), t(0)).0, vec![0]);
    assert_eq!(offer(policy(true, &[]), descs(diamond(), None), t(0)).0, vec![0]);
    assert!(offer(policy(false, &[]), descs(diamond(), Some(&a)), t(0)).0.is_empty());
}

#[test]
fn a_tampered_or_expired_seal_is_refused_even_by_a_peer_that_takes_unsigned_work() {
    let a = submitter(1);
    let open = policy(true, &[public(&a)]);
    // Past the expiry (epoch 1 s + 9.5 s = 10.5 s > 10 s).
    let (runs, refusals) = offer(open.clone(), descs(diamond(), Some(&a)), t(9_500));
    assert!(runs.is_empty());
    assert_all(&refusals, TrustRefusal::Expired(EXPIRES_MS));

    // The owner (or a relay) changes the task after sealing and signs the descriptor again: the
    // descriptor signature holds, the manifest does not.
    let mut tampered = descs(diamond(), Some(&a));
    tampered[0].args.push("--evil".into());
    tampered[0].sign(signer().as_ref());
    let (runs, refusals) = offer(open.clone(), tampered, t(0));
    assert!(runs.is_empty());
    assert_all(&refusals, TrustRefusal::BadSeal);

    // A seal whose signature was forged for another expiry.
    let mut forged = descs(diamond(), Some(&a));
    if let Some(proof) = forged[0].seal.as_mut() {
        proof.seal.expires_unix_ms = u64::MAX;
    }
    forged[0].sign(signer().as_ref());
    assert_all(&offer(open.clone(), forged, t(0)).1, TrustRefusal::BadSeal);

    // A seal of another job.
    let mut moved = descs(diamond(), Some(&a));
    moved[0].task.job = JobId(7);
    moved[0].sign(signer().as_ref());
    assert_all(&offer(open, moved, t(0)).1, TrustRefusal::BadSeal);
}

#[test]
fn a_module_allow_list_refuses_other_modules_whoever_signed_them() {
    let a = submitter(1);
    let mut trust = policy(true, &[public(&a)]);
    trust.allowed_modules = Some(BTreeSet::from([BlobHash::of(b"another")]));
    let (runs, refusals) = offer(trust.clone(), descs(diamond(), Some(&a)), t(0));
    assert!(runs.is_empty());
    assert_all(&refusals, TrustRefusal::Module(BlobHash::of(b"m")));
    trust.allowed_modules = Some(BTreeSet::from([BlobHash::of(b"m")]));
    assert_eq!(offer(trust, descs(diamond(), Some(&a)), t(0)).0, vec![0]);
}

#[test]
fn every_descriptor_of_a_sealed_job_passes_down_a_chain_of_continuations_and_thefts() {
    // The whole diamond, run to the end on one strict peer: every descriptor the owner sends
    // (ready ones, and the consumers once their inputs are made) passes the check.
    let a = submitter(1);
    let job = diamond().sign(JOB, &a, EXPIRES_MS);
    let cfg = OwnerConfig { own_slots: 0, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[hint(1, 0)], signer(), t(0));
    let mut rng = SmallRng::seed_from_u64(1);
    let mut p = PeerSched::new(
        peer(1),
        PeerConfig { slots: 4, trust: policy(false, &[public(&a)]), ..PeerConfig::default() },
    );
    for step in 0..20 {
        for tr in drain(&mut o) {
            p.handle_msg(t(step), peer(0), tr.msg, &mut rng);
        }
        let runs: Vec<TaskDesc> = std::iter::from_fn(|| p.poll_run()).collect();
        for d in runs {
            let out = OutputRef { hash: BlobHash::of(&[d.task.index.0 as u8]), size: 1, inline: None };
            p.handle_task_finished(
                t(step),
                d.task,
                d.attempt,
                TaskOutcome::Ok { output: out, fuel: 10 },
                &mut rng,
            );
        }
        for tr in std::iter::from_fn(|| p.poll_transmit()).collect::<Vec<_>>() {
            if tr.to == peer(0) {
                o.handle_msg(t(step), peer(1), tr.msg).unwrap();
            }
        }
        if o.is_done() {
            break;
        }
    }
    assert!(o.is_done(), "{:?}", o.progress());
    assert_eq!(p.stats().refused.untrusted, 0);
}

#[test]
fn a_job_no_peer_takes_fails_with_the_trust_reason_instead_of_hanging() {
    let b = submitter(2);
    let cfg = OwnerConfig { own_slots: 0, ..OwnerConfig::default() };
    let job = diamond().sign(JOB, &b, EXPIRES_MS);
    let mut o = Owner::new(JOB, peer(0), job, cfg, &[hint(1, 0), hint(2, 0)], signer(), t(0));
    let strict = policy(false, &[public(&submitter(1))]);
    let mut peers: Vec<PeerSched> = (1..=2)
        .map(|i| PeerSched::new(peer(i), PeerConfig { trust: strict.clone(), ..PeerConfig::default() }))
        .collect();
    let mut rng = SmallRng::seed_from_u64(1);
    for step in 0..10 {
        for tr in drain(&mut o) {
            let k = usize::from(tr.to.0[0]).saturating_sub(1).min(1);
            peers[k].handle_msg(t(step), peer(0), tr.msg, &mut rng);
            for back in std::iter::from_fn(|| peers[k].poll_transmit()).collect::<Vec<_>>() {
                o.handle_msg(t(step), peer(k as u8 + 1), back.msg).unwrap();
            }
        }
    }
    let events: Vec<_> = std::iter::from_fn(|| o.poll_event()).collect();
    assert_eq!(
        events,
        vec![OwnerEvent::TaskFailed(TaskIndex(0), refused(TrustRefusal::Untrusted(public(&b))))]
    );
}

/// A job of `n` independent tasks, each costing 10 fuel.
fn bag(n: u32) -> Job {
    let m = BlobHash::of(b"m");
    Job::new((0..n).map(|i| TaskSpec::new(format!("t{i}"), m).cost(10)).collect()).unwrap()
}

#[test]
fn every_accepted_run_is_paid_once_in_signed_batches_and_only_its_executor_keeps_them() {
    let n = 100;
    let cfg = OwnerConfig { own_slots: 0, ..OwnerConfig::default() };
    let mut o = Owner::new(JOB, peer(0), bag(n), cfg, &[hint(1, 0)], signer(), t(0));
    let mut receipts = Vec::new();
    let mut placed: Vec<(PeerId, TaskIndex, u32)> = assigned(&drain(&mut o));
    let mut step = 1;
    while let Some((at, i, attempt)) = placed.pop() {
        o.handle_msg(t(step), at, done(i.0, attempt, 1)).unwrap();
        for tr in drain(&mut o) {
            match tr.msg {
                SchedMsg::Receipts { receipts: r } => receipts.extend(r.into_iter().map(|r| (tr.to, r))),
                SchedMsg::Assign { tasks, .. } => {
                    placed.extend(tasks.iter().map(|d| (tr.to, d.task.index, d.attempt)));
                }
                _ => {}
            }
        }
        step += 1;
    }
    assert!(o.is_done());
    // 100 runs: one full batch of 64 while the job runs, the other 36 when it ends.
    let sizes: Vec<usize> = receipts.iter().map(|(_, r)| r.runs.len()).collect();
    assert_eq!(sizes, vec![64, 36]);
    let mut paid: Vec<u32> = receipts.iter().flat_map(|(_, r)| r.runs.iter().map(|run| run.task.0)).collect();
    paid.sort_unstable();
    assert_eq!(paid, (0..n).collect::<Vec<_>>(), "each task paid once");
    for (to, r) in &receipts {
        assert_eq!((*to, r.executor, r.owner), (peer(1), peer(1), peer(0)));
        assert!(r.verify());
    }

    // The executor keeps its own receipts from their owner; another peer's, a forged one or one
    // sent by someone else than the owner it names are dropped and counted.
    let mut rng = SmallRng::seed_from_u64(1);
    let mut p = PeerSched::new(peer(1), PeerConfig::default());
    let good = receipts[0].1.clone();
    let mut forged = good.clone();
    forged.runs[0].fuel *= 1000;
    p.handle_msg(t(0), peer(0), SchedMsg::Receipts { receipts: vec![good.clone(), forged] }, &mut rng);
    p.handle_msg(t(0), peer(2), SchedMsg::Receipts { receipts: vec![good.clone()] }, &mut rng);
    let mut theirs = PeerSched::new(peer(3), PeerConfig::default());
    theirs.handle_msg(t(0), peer(0), SchedMsg::Receipts { receipts: vec![good.clone()] }, &mut rng);
    assert_eq!(std::iter::from_fn(|| p.poll_receipt()).collect::<Vec<_>>(), vec![good]);
    assert_eq!(p.stats().refused.bad_receipt, 2);
    assert!(theirs.poll_receipt().is_none());
    assert_eq!(theirs.stats().refused.bad_receipt, 1);
}
