//! Whole-swarm tests of the real scheduler in the simulator. Every test is seeded and exact:
//! timing never decides an outcome.

use proptest::prelude::*;
use shoal_sim::dag::{SimDag, generate};
use shoal_sim::net::Topology;
use shoal_sim::report::{RunSpec, parse_kill, parse_liars, run};
use shoal_sim::sched_config::VerifyPolicy;
use shoal_sim::{Kill, Metrics, Partition, SchedulerKind, SimConfig, simulate};
use std::time::Duration;

const FAMILIES: &[&str] =
    &["tree:64", "forkjoin:16,3", "cholesky:5", "wavefront:8", "layered:150,8,50", "mapreduce:24,6"];

fn sim(dag: &SimDag, peers: usize, topo: Topology, seed: u64, kill: Option<Kill>) -> Metrics {
    let mut cfg = SimConfig::new(peers, topo, seed);
    cfg.kill = kill;
    simulate(dag, &cfg).expect("simulation starts")
}

#[test]
fn same_seed_same_run_event_for_event() {
    let dag = generate("layered:300,10,50", 5).unwrap();
    let kill = Some(Kill { fraction: 0.25, progress: 0.3 });
    let a = sim(&dag, 24, Topology::Wan, 11, kill);
    let b = sim(&dag, 24, Topology::Wan, 11, kill);
    assert_eq!(
        (a.fingerprint, a.events, a.messages, a.bytes),
        (b.fingerprint, b.events, b.messages, b.bytes)
    );
    assert_eq!(a.makespan_s, b.makespan_s);
    let c = sim(&dag, 24, Topology::Wan, 12, kill);
    assert_ne!(a.fingerprint, c.fingerprint, "another seed gives another run");
}

#[test]
fn without_failures_every_task_runs_exactly_once_under_every_scheduler() {
    for spec in FAMILIES {
        let dag = generate(spec, 1).unwrap();
        for topo in [Topology::Lan, Topology::Wan] {
            for peers in [1, 7, 40] {
                for kind in [SchedulerKind::Shoal, SchedulerKind::Central, SchedulerKind::Random] {
                    let mut cfg = SimConfig::new(peers, topo, 3);
                    cfg.scheduler = kind;
                    let m = simulate(&dag, &cfg).unwrap();
                    let ctx = format!("{spec} {topo:?} {peers} peers {kind:?}");
                    assert_eq!(m.tasks_completed, m.tasks, "{ctx}");
                    assert!(m.runs_per_task.iter().all(|&r| r == 1), "{ctx}: {:?}", m.runs_per_task);
                    assert!(m.ratio >= 1.0 - 1e-9, "{ctx}: beat the lower bound: {}", m.ratio);
                }
            }
        }
    }
}

#[test]
fn schedulers_agree_on_every_output() {
    let dag = generate("cholesky:6", 2).unwrap();
    let mut cfg = SimConfig::new(9, Topology::Lan, 2);
    let shoal = simulate(&dag, &cfg).unwrap();
    cfg.scheduler = SchedulerKind::Central;
    let central = simulate(&dag, &cfg).unwrap();
    assert_eq!(shoal.outputs, central.outputs);
    assert!(shoal.outputs.iter().all(Option::is_some));
}

#[test]
fn killing_peers_loses_nothing_and_gives_the_clean_outputs() {
    for spec in FAMILIES {
        let dag = generate(spec, 4).unwrap();
        for topo in [Topology::Lan, Topology::Wan] {
            let clean = sim(&dag, 16, topo, 9, None);
            for (fraction, progress) in [(0.125, 0.5), (0.5, 0.1), (0.9, 0.8)] {
                let m = sim(&dag, 16, topo, 9, Some(Kill { fraction, progress }));
                let ctx = format!("{spec} {topo:?} kill {fraction}@{progress}");
                assert_eq!(m.tasks_completed, m.tasks, "{ctx}");
                assert!(m.peers_killed > 0, "{ctx}");
                assert_eq!(m.outputs, clean.outputs, "{ctx}");
            }
        }
    }
}

#[test]
fn partitions_that_heal_lose_nothing() {
    let mut rerun_after_long_cut = 0;
    for spec in FAMILIES {
        let dag = generate(spec, 6).unwrap();
        for topo in [Topology::Lan, Topology::Wan] {
            let clean = sim(&dag, 12, topo, 5, None);
            let detect = SimConfig::new(12, topo, 5).detect;
            // Shorter than failure detection (traffic waits), then longer (each side writes the
            // other off, and membership brings them back after the heal).
            for duration in [detect / 2, detect * 3] {
                let mut cfg = SimConfig::new(12, topo, 5);
                cfg.partition = Some(Partition { fraction: 0.5, progress: 0.3, duration });
                let m = simulate(&dag, &cfg).unwrap();
                let ctx = format!("{spec} {topo:?} partition {duration:?}");
                assert_eq!(m.tasks_completed, m.tasks, "{ctx}: {:#?}", m.unfinished);
                assert_eq!(m.outputs, clean.outputs, "{ctx}");
                if duration > detect && m.runs > m.tasks as u64 {
                    rerun_after_long_cut += 1;
                }
            }
        }
    }
    assert!(rerun_after_long_cut > 0, "a long cut should make the owner re-issue some work");
}

#[test]
fn workflow_traces_load_and_complete() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/workflows");
    // The traces live outside the repository (the project's shared directory); the loader's own
    // tests (`wfcommons::tests`) run on inline traces either way.
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!(
            "skipped: no workflow traces at {} (the shared directory ../shared/workflows)",
            dir.display()
        );
        return;
    };
    let mut n = 0;
    for e in entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")) {
        let dag = shoal_sim::wfcommons::load(&e.path()).unwrap();
        let m = sim(&dag, 32, Topology::Lan, 1, Some(Kill { fraction: 0.125, progress: 0.5 }));
        assert_eq!(m.tasks_completed, m.tasks, "{}", e.path().display());
        n += 1;
    }
    assert!(n > 0, "no traces found in {}", dir.display());
}

fn args(dag: &str) -> RunSpec {
    RunSpec { slots: 2, json: true, ..RunSpec::new(dag, 12) }
}

#[test]
fn cli_json_last_line_has_the_promised_fields() {
    let mut a = args("tree:32");
    a.kill = Some(parse_kill("0.125@0.5").unwrap());
    let mut out = Vec::new();
    run(&a, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    for key in [
        "makespan_s",
        "lower_bound_s",
        "ratio",
        "tasks",
        "tasks_completed",
        "peers",
        "messages_per_task",
        "bytes_per_task",
        "wrong_outputs_accepted",
        "verification_overhead",
        "disagreements",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {last}");
    }
    assert_eq!(v["tasks"], 63);
    assert_eq!(v["tasks_completed"], 63);
    assert_eq!(v["peers"], 12);
    assert!(parse_kill("half").is_err());
    assert!(parse_kill("1.5@0.5").is_err());
    let err = run(&args("pyramid:3"), &mut Vec::new()).unwrap_err().to_string();
    assert!(err.contains("unknown kind") && err.contains("tree:LEAVES"), "{err}");
    let mut central = args("tree:8");
    central.scheduler = SchedulerKind::Central;
    central.kill = a.kill;
    assert!(run(&central, &mut Vec::new()).is_err(), "baselines refuse --kill");
}

/// `jobs` jobs of mixed DAG kinds in one 16-peer swarm under `verify`, with `liars`.
fn verified(seed: u64, jobs: usize, verify: &str, liars: Option<&str>) -> Metrics {
    let mut a = RunSpec::new("tree:16+cholesky:4+forkjoin:6,3+mapreduce:6,3+wavefront:5+layered:40,5,50", 16);
    a.seed = seed;
    a.jobs = jobs;
    a.verify = VerifyPolicy::parse(verify).expect("policy");
    a.liars = liars.map(|l| parse_liars(l).expect("liars"));
    run(&a, &mut Vec::new()).expect("run")
}

#[test]
fn adaptive_verification_accepts_no_wrong_output_from_liars_of_any_kind() {
    for seed in 1..=5 {
        for fraction in ["0.1", "0.3"] {
            for mode in ["consistent", "random", "collude"] {
                let liars = format!("{fraction}:{mode}");
                let m = verified(seed, 12, "adaptive", Some(&liars));
                let what = format!("seed {seed}, liars {liars}: {m:?}");
                assert!(m.liars > 0, "{what}");
                assert_eq!(m.wrong_outputs_accepted, 0, "{what}");
                assert_eq!((m.jobs_completed, m.tasks_completed), (m.jobs, m.tasks), "{what}");
                if mode != "random" {
                    assert!(m.disagreements > 0, "{what}");
                }
            }
        }
    }
}

#[test]
fn replication_stops_lone_liars_but_not_colluders_and_no_verification_stops_nothing() {
    let m = verified(3, 12, "replicate=3", Some("0.3:consistent"));
    assert_eq!((m.wrong_outputs_accepted, m.jobs_completed), (0, m.jobs), "{m:?}");
    assert!(m.verification_overhead >= 2.0, "{m:?}");
    let m = verified(3, 12, "replicate=2", Some("0.3:collude"));
    assert!(m.wrong_outputs_accepted > 0, "two colluders agree on the same wrong bytes: {m:?}");
    let m = verified(3, 12, "none", Some("0.1:consistent"));
    assert!(m.wrong_outputs_accepted > 0 && m.verification_overhead == 0.0, "{m:?}");
}

#[test]
fn a_trusted_peer_that_turns_is_caught_by_spot_checks_and_its_lone_results_are_remade() {
    // The limit of adaptive verification, measured: turncoats earn trust in the first 40 jobs,
    // then lie; spot checks catch each, its unchecked results in that job are re-made, and it is
    // never trusted again; what it slipped through before its catch (earlier jobs) stands.
    let m = verified(2, 80, "adaptive", Some("0.2:turncoat"));
    assert_eq!((m.jobs_completed, m.liars), (80, 3), "{m:?}");
    assert!(m.disagreements >= 3, "turncoats are caught: {m:?}");
    assert!(m.discarded > 0, "{m:?}");
    assert!(m.wrong_outputs_accepted < m.tasks as u64 / 20, "{m:?}");
}

#[test]
fn adaptive_verification_costs_at_most_ten_percent_once_trust_is_built() {
    let m = verified(1, 300, "adaptive", None);
    assert_eq!((m.wrong_outputs_accepted, m.disagreements, m.jobs_completed), (0, 0, 300), "{m:?}");
    assert!(m.verification_overhead <= 0.10, "{m:?}");
    // A verified run is as deterministic as any.
    let again = verified(1, 300, "adaptive", None);
    assert_eq!((again.fingerprint, again.fuel_executed), (m.fingerprint, m.fuel_executed));
}

#[test]
fn verification_short_of_honest_peers_fails_tasks_clearly_and_never_hangs() {
    // 6 peers, half of them liars, a third killed mid-job: replicate=3 may run out of distinct
    // peers; such a task fails with the reason, none is left held for peers that are gone.
    for seed in 1..=8 {
        let mut a = RunSpec::new("layered:30,5,50+tree:8+wavefront:4", 6);
        a.seed = seed;
        a.jobs = 4;
        a.verify = VerifyPolicy::Replicate { k: 3, quorum: 2 };
        a.liars = Some(parse_liars("0.5").unwrap());
        a.kill = Some(parse_kill("0.3@0.5").unwrap());
        let m = run(&a, &mut Vec::new()).unwrap();
        assert_eq!(m.wrong_outputs_accepted, 0, "seed {seed}: {m:?}");
        // What is left is failed, or waits for a failed producer.
        for u in &m.unfinished {
            let failed = u.contains("Failed") && u.contains("verification");
            assert!(failed || u.ends_with(": Waiting"), "seed {seed}: {u}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random layered DAGs on random swarms under random failure schedules (kills, and maybe a
    /// partition that heals): the job always completes with the outputs of a clean run.
    #[test]
    fn random_dags_survive_random_failures(
        tasks in 2usize..120,
        layers in 1usize..12,
        ccr in 1usize..200,
        peers in 2usize..30,
        slots in 1u32..3,
        wan in any::<bool>(),
        fraction in 0.0f64..0.95,
        progress in 0.0f64..1.0,
        cut in proptest::option::of((0.0f64..0.9, 0.0f64..1.0, 0u64..5000)),
        seed in any::<u64>(),
    ) {
        let dag = generate(&format!("layered:{tasks},{layers},{ccr}"), seed).unwrap();
        let topo = if wan { Topology::Wan } else { Topology::Lan };
        let mut cfg = SimConfig::new(peers, topo, seed);
        cfg.peer.slots = slots;
        let clean = simulate(&dag, &cfg).unwrap();
        prop_assert_eq!(clean.tasks_completed, clean.tasks);
        prop_assert!(clean.runs_per_task.iter().all(|&r| r == 1));
        cfg.kill = Some(Kill { fraction, progress });
        cfg.partition = cut.map(|(fraction, progress, ms)| Partition {
            fraction,
            progress,
            duration: Duration::from_millis(ms),
        });
        let hurt = simulate(&dag, &cfg).unwrap();
        prop_assert_eq!(hurt.tasks_completed, hurt.tasks);
        prop_assert_eq!(&hurt.outputs, &clean.outputs);
    }
}

/// Found by `random_dags_survive_random_failures`.
#[test]
fn regression_seed_8397894497854780079() {
    let seed = 8397894497854780079;
    let dag = generate("layered:60,9,80", seed).unwrap();
    let mut cfg = SimConfig::new(4, Topology::Wan, seed);
    cfg.kill = Some(Kill { fraction: 0.5743876545860166, progress: 0.15800665812885875 });
    let m = simulate(&dag, &cfg).unwrap();
    // The thief died before claiming a stolen task, so the owner thought it was still at the
    // (live) victim and never re-issued it: claims now come from the victim.
    assert_eq!(m.tasks_completed, m.tasks, "{m:?}");
}

/// Found by `random_dags_survive_random_failures`: all peers but the owner die late in the job.
#[test]
fn regression_seed_457943074886872102() {
    let seed = 457943074886872102;
    let dag = generate("layered:67,10,119", seed).unwrap();
    let mut cfg = SimConfig::new(6, Topology::Lan, seed);
    cfg.kill = Some(Kill { fraction: 0.8975647847816267, progress: 0.8883099727074955 });
    let m = simulate(&dag, &cfg).unwrap();
    assert_eq!(m.tasks_completed, m.tasks, "{:#?}", m.unfinished);
}

/// Found by `random_dags_survive_random_failures`: 19 of 20 peers die, one layer of 40 tasks.
#[test]
fn regression_seed_13554049761032293431() {
    let seed = 13554049761032293431;
    let dag = generate("layered:40,1,1", seed).unwrap();
    let mut cfg = SimConfig::new(20, Topology::Lan, seed);
    cfg.kill = Some(Kill { fraction: 0.9288767236177936, progress: 0.6772421283855241 });
    let m = simulate(&dag, &cfg).unwrap();
    assert_eq!(m.tasks_completed, m.tasks, "{:#?}", m.unfinished);
}

/// Found by a wider stress run: a one-peer swarm has nobody to kill but the owner.
#[test]
fn kill_with_only_the_owner_is_a_no_op() {
    let dag = generate("tree:8", 1).unwrap();
    let m = sim(&dag, 1, Topology::Lan, 1, Some(Kill { fraction: 0.5, progress: 0.5 }));
    assert_eq!((m.tasks_completed, m.peers_killed), (m.tasks, 0));
}

#[test]
fn ablation_settings_still_finish_every_task_once() {
    let dag = generate("cholesky:5", 3).unwrap();
    for (fifo, uniform, locality) in [(true, false, true), (false, true, true), (false, false, false)] {
        let mut cfg = SimConfig::new(10, Topology::Wan, 3);
        cfg.owner.ranked = !fifo;
        cfg.owner.locality = locality;
        if uniform {
            cfg.peer.victims = shoal_sim::sched_config::VictimChoice::Uniform;
        }
        let m = simulate(&dag, &cfg).unwrap();
        assert_eq!(m.tasks_completed, m.tasks);
        assert!(m.runs_per_task.iter().all(|&r| r == 1));
    }
}
