//! Scheduler benchmarks (placeholder driver while tuning).
use shoal_sim::SchedulerKind;
use shoal_sim::cli::{SimArgs, run};
use shoal_sim::net::Topology;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let dag = argv.get(1).cloned().unwrap_or_else(|| "tree:256".into());
    let peers: usize = argv.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let topo = if argv.get(3).map(String::as_str) == Some("wan") { Topology::Wan } else { Topology::Lan };
    for sched in [SchedulerKind::Shoal, SchedulerKind::Central, SchedulerKind::Random] {
        let args = SimArgs {
            dag: Some(dag.clone()),
            workflow: None,
            peers,
            slots: 1,
            topology: topo,
            seed: 1,
            scheduler: sched,
            kill: None,
            json: false,
        };
        let t = std::time::Instant::now();
        let _ = run(&args, &mut std::io::stdout());
        println!("  wall {:?}", t.elapsed());
    }
}
