//! A network that lies: every generated DAG kind completes, with the clean run's outputs, when
//! messages between peers are lost, duplicated and reordered (leases re-issue what silence
//! stranded; authorisation and idempotent reports keep duplicates from counting twice).

use shoal_sim::dag::generate;
use shoal_sim::net::Topology;
use shoal_sim::{NetFaults, SimConfig, simulate};

const SMALL: &[&str] =
    &["tree:32", "forkjoin:8,3", "cholesky:4", "wavefront:6", "layered:80,6,50", "mapreduce:12,4"];

fn faults() -> NetFaults {
    NetFaults { loss: 0.01, duplicate: 0.005, reorder: true }
}

fn check(spec: &str, peers: usize, topo: Topology, seed: u64) {
    let dag = generate(spec, seed).expect("a valid DAG spec");
    let clean = simulate(&dag, &SimConfig::new(peers, topo, seed)).expect("runs");
    let mut cfg = SimConfig::new(peers, topo, seed);
    cfg.faults = faults();
    let m = simulate(&dag, &cfg).expect("runs");
    let ctx = format!("{spec} {topo:?} {peers} peers seed {seed}: {:?}", m.unfinished);
    assert_eq!(m.tasks_completed, m.tasks, "{ctx}");
    assert_eq!(m.outputs, clean.outputs, "{ctx}");
    assert_eq!(clean.tasks_completed, clean.tasks, "{ctx}");
}

#[test]
fn every_dag_kind_completes_with_loss_duplication_and_reordering_at_64_peers() {
    for spec in SMALL {
        for topo in [Topology::Lan, Topology::Wan] {
            check(spec, 64, topo, 3);
        }
    }
}

#[test]
fn every_dag_kind_completes_with_loss_duplication_and_reordering_at_1000_peers() {
    for spec in SMALL {
        for topo in [Topology::Lan, Topology::Wan] {
            check(spec, 1000, topo, 5);
        }
    }
}

#[test]
fn heavy_loss_still_completes() {
    let dag = generate("layered:60,5,50", 2).unwrap();
    for topo in [Topology::Lan, Topology::Wan] {
        let mut cfg = SimConfig::new(16, topo, 2);
        cfg.faults = NetFaults { loss: 0.1, duplicate: 0.1, reorder: true };
        let m = simulate(&dag, &cfg).unwrap();
        assert_eq!(m.tasks_completed, m.tasks, "{topo:?}: {:?}", m.unfinished);
        assert!(m.messages_lost > 0 && m.messages_duplicated > 0);
    }
}
