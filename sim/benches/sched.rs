//! Scheduler benchmarks: prints tables (no timing harness; every figure is a ratio from one run,
//! except the simulator's own wall-clock speed).
//!
//! `cargo bench -p shoal-sim --bench sched` runs everything (a few minutes on 2 cores);
//! `-- --quick` runs a smaller grid (16 and 256 peers, a 20,000-task speed test);
//! `-- ratio|ablation|recovery|faults|speed` runs one section.

use std::path::PathBuf;
use std::time::Instant;

use shoal_sim::dag::{SimDag, generate};
use shoal_sim::net::Topology;
use shoal_sim::sched_config::VictimChoice;
use shoal_sim::{Kill, Metrics, NetFaults, SchedulerKind, SimConfig, simulate};

const DAGS: &[&str] =
    &["tree:1024", "forkjoin:64,8", "cholesky:12", "wavefront:32", "layered:1000,20,50", "mapreduce:256,32"];

fn workloads() -> Vec<(String, SimDag)> {
    let mut out: Vec<(String, SimDag)> =
        DAGS.iter().map(|d| (d.to_string(), generate(d, 1).unwrap_or_else(|e| panic!("{d}: {e}")))).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    for f in files {
        let name = f.file_stem().map(|s| s.to_string_lossy().split('-').next().unwrap_or("wf").to_string());
        match shoal_sim::wfcommons::load(&f) {
            Ok(dag) => out.push((format!("wf:{}", name.unwrap_or_default()), dag)),
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    out
}

fn run(dag: &SimDag, cfg: &SimConfig) -> Metrics {
    simulate(dag, cfg).unwrap_or_else(|e| panic!("{e}"))
}

fn geo(xs: &[f64]) -> f64 {
    (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len().max(1) as f64).exp()
}

fn ratio_section(quick: bool) {
    let peers: &[usize] = if quick { &[16, 256] } else { &[16, 64, 256, 1000] };
    let seeds: &[u64] = if quick { &[1] } else { &[1, 2, 3] };
    println!(
        "\n## makespan / lower bound (shoal, central, random on the same seeds; geo-mean over seeds {seeds:?})\n"
    );
    println!(
        "| workload | net | peers | shoal | central | random | shoal/central | msgs/task | bytes/task |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut lan = Vec::new();
    let mut wan_big = Vec::new();
    let mut msgs = Vec::new();
    let mut lan_vs_central = Vec::new();
    for (name, dag) in workloads() {
        for topo in [Topology::Lan, Topology::Wan] {
            for &n in peers {
                let mut row: [Vec<f64>; 6] = Default::default();
                for &seed in seeds {
                    let mut cfg = SimConfig::new(n, topo, seed);
                    let s = run(&dag, &cfg);
                    cfg.scheduler = SchedulerKind::Central;
                    let c = run(&dag, &cfg);
                    cfg.scheduler = SchedulerKind::Random;
                    let r = run(&dag, &cfg);
                    assert_eq!(s.tasks_completed, s.tasks, "{name} {topo:?} {n}: shoal did not finish");
                    let cells = [s.ratio, c.ratio, r.ratio, s.makespan_s / c.makespan_s];
                    for (k, v) in cells.into_iter().chain([s.messages_per_task, s.bytes_per_task]).enumerate()
                    {
                        row[k].push(v);
                    }
                }
                let g: Vec<f64> = row.iter().map(|v| geo(v)).collect();
                println!(
                    "| {name} | {topo:?} | {n} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.0} |",
                    g[0], g[1], g[2], g[3], g[4], g[5]
                );
                msgs.push(g[4]);
                if topo == Topology::Lan {
                    lan.push(g[0]);
                    lan_vs_central.push(g[3]);
                } else if n == *peers.last().unwrap_or(&n) {
                    wan_big.push(g[3]);
                }
            }
        }
    }
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "\nLAN shoal ratio: geo-mean {:.3} (target <= 1.15), worst {:.3} (target <= 1.3)",
        geo(&lan),
        worst(&lan)
    );
    println!(
        "LAN shoal / central makespan: geo-mean {:.3}, worst {:.3}",
        geo(&lan_vs_central),
        worst(&lan_vs_central)
    );
    println!(
        "WAN at {} peers, shoal / central makespan: geo-mean {:.3}, worst {:.3} (target <= 1.10)",
        peers.last().unwrap_or(&0),
        geo(&wan_big),
        worst(&wan_big)
    );
    println!("messages per task: geo-mean {:.2}, worst {:.2} (target <= 1.5)", geo(&msgs), worst(&msgs));
}

fn ablation_section() {
    println!("\n## ablations: makespan / lower bound (input MB fetched per task, messages per task)\n");
    println!(
        "| workload | net | peers | full | FIFO queues | uniform victims | locality off | no continuations |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let cases = ["cholesky:12", "layered:1000,20,50", "mapreduce:256,32", "forkjoin:64,8", "wavefront:32"];
    for (d, (topo, n)) in
        cases.iter().flat_map(|d| [(Topology::Lan, 16), (Topology::Wan, 64)].map(|c| (d, c)))
    {
        let dag = generate(d, 1).unwrap_or_else(|e| panic!("{e}"));
        let base = SimConfig::new(n, topo, 1);
        let mut fifo = base.clone();
        fifo.owner.ranked = false;
        let mut uniform = base.clone();
        uniform.peer.victims = VictimChoice::Uniform;
        let mut noloc = base.clone();
        noloc.owner.locality = false;
        let mut nocont = base.clone();
        nocont.owner.continuations = false;
        let cell = |cfg: &SimConfig| {
            let m = run(&dag, cfg);
            format!(
                "{:.3} ({:.2} MB, {:.1} msg)",
                m.ratio,
                m.fetched_bytes_per_task / 1e6,
                m.messages_per_task
            )
        };
        println!(
            "| {d} | {topo:?} | {n} | {} | {} | {} | {} | {} |",
            cell(&base),
            cell(&fifo),
            cell(&uniform),
            cell(&noloc),
            cell(&nocont)
        );
    }
}

/// Task durations ×20 (a 0.2 s unit), so failure detection (0.2 s LAN, 2 s WAN) is small
/// against the job, as it is for real volunteer jobs.
const RECOVERY_SCALE: u64 = 20;

fn recovery_section() {
    println!(
        "\n## recovery: kill 1/8 of the peers at half progress (64 peers; task work x{RECOVERY_SCALE})\n"
    );
    println!(
        "| workload | net | clean s | killed s | slowdown | re-run work share | budget (1+share+0.10) | met | same outputs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for d in ["tree:1024", "cholesky:12", "layered:1000,20,50", "mapreduce:256,32", "wavefront:32"] {
        let mut dag = generate(d, 1).unwrap_or_else(|e| panic!("{e}"));
        dag.work.iter_mut().for_each(|w| *w *= RECOVERY_SCALE);
        for topo in [Topology::Lan, Topology::Wan] {
            let mut cfg = SimConfig::new(64, topo, 1);
            let clean = run(&dag, &cfg);
            cfg.kill = Some(Kill { fraction: 0.125, progress: 0.5 });
            let k = run(&dag, &cfg);
            let slow = k.makespan_s / clean.makespan_s;
            let budget = 1.0 + k.rerun_work_share + 0.10;
            println!(
                "| {d} | {topo:?} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
                clean.makespan_s,
                k.makespan_s,
                slow,
                k.rerun_work_share,
                budget,
                if slow <= budget { "yes" } else { "NO" },
                if k.outputs == clean.outputs && k.tasks_completed == k.tasks { "yes" } else { "NO" }
            );
        }
    }
}

fn faults_section(quick: bool) {
    let peers: &[usize] = if quick { &[64] } else { &[64, 1000] };
    println!("\n## a lying network: 1 % loss, 0.5 % duplication, reordering (same seed, same DAG)\n");
    println!(
        "| workload | net | peers | clean s | faulty s | slowdown | msgs/task clean | msgs/task faulty | lost | leases expired | same outputs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut slow = Vec::new();
    let mut msgs = Vec::new();
    for d in DAGS {
        let dag = generate(d, 1).unwrap_or_else(|e| panic!("{e}"));
        for topo in [Topology::Lan, Topology::Wan] {
            for &n in peers {
                let mut cfg = SimConfig::new(n, topo, 1);
                let clean = run(&dag, &cfg);
                cfg.faults = NetFaults { loss: 0.01, duplicate: 0.005, reorder: true };
                let f = run(&dag, &cfg);
                let ok = f.outputs == clean.outputs && f.tasks_completed == f.tasks;
                println!(
                    "| {d} | {topo:?} | {n} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} | {} | {} | {} |",
                    clean.makespan_s,
                    f.makespan_s,
                    f.makespan_s / clean.makespan_s,
                    clean.messages_per_task,
                    f.messages_per_task,
                    f.messages_lost,
                    f.leases_expired,
                    if ok { "yes" } else { "NO" }
                );
                slow.push(f.makespan_s / clean.makespan_s);
                msgs.push(clean.messages_per_task);
            }
        }
    }
    println!(
        "\nslowdown under faults: geo-mean {:.3}; clean messages per task: geo-mean {:.2}",
        geo(&slow),
        geo(&msgs)
    );
}

fn speed_section(quick: bool) {
    let tasks = if quick { 20_000 } else { 100_000 };
    let spec = format!("layered:{tasks},200,20");
    let dag = generate(&spec, 1).unwrap_or_else(|e| panic!("{e}"));
    let cfg = SimConfig::new(1000, Topology::Lan, 1);
    let t = Instant::now();
    let m = run(&dag, &cfg);
    let wall = t.elapsed();
    println!("\n## simulator speed\n");
    println!(
        "{spec} on 1000 peers (LAN): {}/{} tasks done in {:.2} s wall ({} events, {:.0} events/s; \
         ratio {:.3}, {:.2} msgs/task; target < 60 s for 100k tasks)",
        m.tasks_completed,
        m.tasks,
        wall.as_secs_f64(),
        m.events,
        m.events as f64 / wall.as_secs_f64(),
        m.ratio,
        m.messages_per_task
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
    let want = |s: &str| only.is_empty() || only.contains(&s);
    println!("# shoal scheduler benchmarks{}", if quick { " (--quick)" } else { "" });
    let t = Instant::now();
    if want("ratio") {
        ratio_section(quick);
    }
    if want("ablation") {
        ablation_section();
    }
    if want("recovery") {
        recovery_section();
    }
    if want("faults") {
        faults_section(quick);
    }
    if want("speed") {
        speed_section(quick);
    }
    println!("\n(total {:.0} s)", t.elapsed().as_secs_f64());
}
