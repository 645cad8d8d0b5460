//! Jobs that outlive their owner, in the simulator: the owner's peer dies (`kill_owner`), a
//! deputy takes the job over in the next term, and the job ends with every task done. Every test
//! is seeded and exact.

use shoal_sim::dag::{SimDag, generate};
use shoal_sim::net::Topology;
use shoal_sim::report::{RunSpec, parse_kill, run};
use shoal_sim::{Kill, KillOwner, Metrics, SimConfig, SimError, simulate};

const KINDS: &[&str] = &["forkjoin:16,3", "tree:64", "cholesky:6"];

fn sim(dag: &SimDag, topo: Topology, kill_owner: Option<KillOwner>, kill: Option<Kill>) -> Metrics {
    let mut cfg = SimConfig::new(16, topo, 3);
    cfg.kill_owner = kill_owner;
    cfg.kill = kill;
    simulate(dag, &cfg).expect("simulation starts")
}

fn owner_dies(progress: f64) -> Option<KillOwner> {
    Some(KillOwner { progress, first_deputy: false })
}

#[test]
fn the_job_completes_with_the_clean_outputs_whenever_its_owner_dies() {
    for spec in KINDS {
        let dag = generate(spec, 2).unwrap();
        for topo in [Topology::Lan, Topology::Wan] {
            let clean = sim(&dag, topo, None, None);
            for progress in [0.1, 0.5, 0.9] {
                let m = sim(&dag, topo, owner_dies(progress), None);
                let ctx = format!("{spec} {topo:?} owner killed at {progress}");
                assert_eq!(m.tasks_completed, m.tasks, "{ctx}: {:#?}", m.unfinished);
                assert_eq!((m.owners_killed, m.takeovers, m.peers_killed), (1, 1, 1), "{ctx}");
                assert_eq!(m.deputies_at_owner_kill.len(), 2, "{ctx}");
                assert_eq!(
                    m.owner_peers,
                    [0, m.deputies_at_owner_kill[0]],
                    "{ctx}: the first deputy takes over"
                );
                assert_eq!(m.outputs, clean.outputs, "{ctx}");
                assert!(m.replication_messages > 0, "{ctx}");
                assert!(m.makespan_s > clean.makespan_s, "{ctx}: recovery is not free");
            }
        }
    }
}

#[test]
fn the_second_deputy_takes_over_when_the_first_dies_with_the_owner() {
    for spec in KINDS {
        let dag = generate(spec, 5).unwrap();
        let clean = sim(&dag, Topology::Lan, None, None);
        for progress in [0.1, 0.5, 0.9] {
            let both = Some(KillOwner { progress, first_deputy: true });
            let m = sim(&dag, Topology::Lan, both, None);
            let ctx = format!("{spec} owner and first deputy killed at {progress}");
            assert_eq!(m.tasks_completed, m.tasks, "{ctx}: {:#?}", m.unfinished);
            assert_eq!((m.owners_killed, m.takeovers, m.peers_killed), (1, 1, 2), "{ctx}");
            assert_eq!(
                m.owner_peers,
                [0, m.deputies_at_owner_kill[1]],
                "{ctx}: the second deputy takes over"
            );
            assert_eq!(m.outputs, clean.outputs, "{ctx}");
        }
    }
}

#[test]
fn the_owner_and_a_group_of_peers_can_die_in_one_job() {
    for spec in KINDS {
        let dag = generate(spec, 7).unwrap();
        let clean = sim(&dag, Topology::Lan, None, None);
        // The group first (the owner replaces the deputies it lost), then the owner; and the
        // owner first, then the group (the new owner loses some of its peers).
        for (group, owner) in [(0.3, 0.6), (0.6, 0.3)] {
            let kill = Some(Kill { fraction: 0.25, progress: group });
            let m = sim(&dag, Topology::Lan, owner_dies(owner), kill);
            let ctx = format!("{spec}: a quarter killed at {group}, the owner at {owner}");
            assert_eq!(m.tasks_completed, m.tasks, "{ctx}: {:#?}", m.unfinished);
            assert_eq!((m.owners_killed, m.takeovers, m.peers_killed), (1, 1, 5), "{ctx}");
            assert_eq!(m.outputs, clean.outputs, "{ctx}");
        }
    }
}

#[test]
fn no_task_done_before_the_owner_died_runs_again_unless_its_output_died_with_it() {
    let mut kept = 0;
    let mut lost = 0;
    for spec in KINDS {
        let dag = generate(spec, 4).unwrap();
        for progress in [0.1, 0.5, 0.9] {
            let m = sim(&dag, Topology::Lan, owner_dies(progress), None);
            let ctx = format!("{spec} owner killed at {progress}");
            assert_eq!(m.tasks_completed, m.tasks, "{ctx}");
            assert_eq!(m.done_at_owner_kill.len(), m.tasks, "{ctx}");
            for (i, done) in m.done_at_owner_kill.iter().enumerate() {
                match done {
                    Some(false) => {
                        kept += 1;
                        assert_eq!(
                            m.runs_per_task[i], m.runs_at_owner_kill[i],
                            "{ctx}: task {i} was done, its output safe, and it ran again"
                        );
                    }
                    Some(true) => lost += 1,
                    None => {}
                }
            }
        }
    }
    assert!(kept > 0, "some tasks were done before the owner died");
    assert!(lost > 0, "the owner's peer held some outputs (it runs tasks too)");
}

#[test]
fn deputies_leave_a_run_whose_owner_lives_unchanged_event_for_event() {
    for spec in KINDS {
        let dag = generate(spec, 1).unwrap();
        for topo in [Topology::Lan, Topology::Wan] {
            let mut cfg = SimConfig::new(16, topo, 8);
            cfg.kill = Some(Kill { fraction: 0.25, progress: 0.5 });
            cfg.deputies = 0;
            let off = simulate(&dag, &cfg).unwrap();
            cfg.deputies = 2;
            let on = simulate(&dag, &cfg).unwrap();
            let ctx = format!("{spec} {topo:?}");
            assert_eq!(
                (off.fingerprint, off.events, off.messages, off.bytes, off.makespan_s),
                (on.fingerprint, on.events, on.messages, on.bytes, on.makespan_s),
                "{ctx}"
            );
            assert_eq!(off.replication_messages, 0, "{ctx}");
            assert!(on.replication_messages > 0 && on.replication_bytes > 0, "{ctx}");
        }
    }
}

#[test]
fn an_owner_kill_is_deterministic_and_needs_deputies() {
    let dag = generate("layered:150,8,50", 3).unwrap();
    let mut cfg = SimConfig::new(24, Topology::Wan, 11);
    cfg.kill_owner = Some(KillOwner { progress: 0.4, first_deputy: true });
    let a = simulate(&dag, &cfg).unwrap();
    let b = simulate(&dag, &cfg).unwrap();
    assert_eq!((a.fingerprint, a.events, a.makespan_s), (b.fingerprint, b.events, b.makespan_s));
    assert_eq!(a.tasks_completed, a.tasks);
    cfg.deputies = 0;
    assert!(matches!(simulate(&dag, &cfg), Err(SimError::KillOwnerNeedsDeputies)));
}

#[test]
fn the_report_gives_the_recovery_overhead_against_a_clean_run() {
    let mut a = RunSpec { json: true, ..RunSpec::new("cholesky:6", 16) };
    a.kill_owner = Some(KillOwner { progress: 0.5, first_deputy: false });
    a.kill = Some(parse_kill("0.125@0.3").unwrap());
    let mut out = Vec::new();
    let m = run(&a, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let r = m.recovery.expect("recovery figures");
    assert_eq!(m.tasks_completed, m.tasks);
    assert!(r.makespan_ratio > 1.0 && r.lost_share > 0.0, "{r:?}");
    assert!((r.bound - (1.0 + r.lost_share + 0.10)).abs() < 1e-12, "{r:?}");
    assert_eq!(r.holds, r.makespan_ratio <= r.bound);
    assert!((r.makespan_ratio - m.makespan_s / r.clean_makespan_s).abs() < 1e-12);
    assert!(text.contains("recovery: makespan") && text.contains("replication messages/task"), "{text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    for key in ["makespan_ratio", "lost_share", "bound", "holds", "clean_makespan_s", "detect_share"] {
        assert!(v["recovery"].get(key).is_some(), "missing recovery.{key}: {v}");
    }
    for key in ["replication_messages_per_task", "replication_bytes_per_task", "owners_killed", "takeovers"] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    // Without an owner kill there is nothing to compare.
    a.kill_owner = None;
    assert!(run(&a, &mut Vec::new()).unwrap().recovery.is_none());
}
