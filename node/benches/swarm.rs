//! End-to-end benchmarks of the real stack: in-process peers on loopback (QUIC, membership, the
//! scheduler state machines, the wasm sandbox) running jobs of the task programs in `jobs/wasm`,
//! with baselines measured in the same run:
//!
//! - a bare sandbox loop running the same no-op task on one thread (what a task costs with no
//!   scheduler at all);
//! - Dask and Ray on the same workloads, when their JSON lines are given with `--peers FILE`
//!   (`node/benches/compare.sh` runs `../shared/peers/run_peers.py` and this bench in
//!   one command);
//! - the simulator (`shoal-sim`) run on the same DAGs with the task costs measured here, so the
//!   table shows how far its predictions can be trusted.
//!
//! Figures: (a) no-op throughput, one job of N tasks and many concurrent jobs; (b) submit → result
//! latency of a one-task job, p50/p99; (c) fine-grained efficiency at 1 ms and 100 µs spin tasks,
//! E = nominal busy time ÷ (cores × makespan), where nominal busy time is N × g and g is the spin
//! loop's own time (the sandbox's fixed cost per task, measured separately, counts as overhead);
//! (d) makespan ÷ max(work ÷ cores, critical path) for a tree reduce of 1 ms tasks and a tiled
//! Cholesky factorisation, beside the simulator's prediction; (e) idle RSS of a 2-worker swarm of
//! `shoal worker` processes; plus scheduling messages per task and CPU per task by thread kind.
//!
//! Run: `cargo bench -p shoal-node --bench swarm` (`-- --quick` for a smoke run; `-- --help`).

#![allow(clippy::unwrap_used, reason = "a benchmark that fails should stop loudly")]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_core::ids::{BlobHash, TaskIndex};
use shoal_core::job::{InputSpec, Job, TaskSpec};
use shoal_node::{JobOutputs, Peer};
use shoal_sandbox::{Limits, Sandbox, SandboxConfig, TaskModule};
use shoal_sim::dag::SimDag;
use shoal_sim::net::Topology;
use shoal_sim::{SimConfig, simulate};

/// A safety net only: every wait ends on a condition long before this.
const PATIENCE: Duration = Duration::from_secs(600);

// ------------------------------------------------------------------------------------ options

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    /// Cores of each peer; peer 0 owns every job unless said otherwise.
    cores: Vec<u32>,
    /// JSON lines written by run_peers.py (Dask and Ray), to print beside Shoal's figures.
    peers: Option<PathBuf>,
    /// The `shoal` binary for the idle-memory figure.
    shoal_bin: PathBuf,
    /// Only these measurements (comma-separated names), for profiling one at a time.
    only: Option<Vec<String>>,
    /// Jobs journalled to disk with deputies (the default), or neither (`--no-durable`).
    durable: bool,
    /// Async runtime threads shared by the peers (`None`: sized from the machine).
    threads: Option<usize>,
}

const HELP: &str = "swarm bench options:
  --quick              small sizes (smoke run)
  --cores LIST         cores of each peer, e.g. 1,1,0,0 (default 1,1,0,0: four peers, two slots)
  --peers FILE         Dask/Ray JSON lines from run_peers.py, printed beside Shoal's figures
  --shoal-bin PATH     the shoal binary for the idle-memory figure (default target/release/shoal)
  --only LIST          only these: baseline,throughput,latency,fine,tree,cholesky,memory
  --no-durable         jobs are neither journalled to disk nor given deputies (docs/owners.md),
                       to measure what durability costs: run it beside a default run
  --threads N          async runtime threads the peers share (default: the machine's cores,
                       at least 2; task slots run on threads of their own)";

fn opts() -> Opts {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut o = Opts {
        quick: false,
        cores: vec![1, 1, 0, 0],
        peers: None,
        shoal_bin: root.join("target/release/shoal"),
        only: None,
        durable: true,
        threads: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-durable" => o.durable = false,
            "--threads" => {
                let n: usize = args.next().expect("--threads N").parse().expect("--threads: a number");
                assert!(n > 0, "--threads: at least 1");
                o.threads = Some(n);
            }
            "--cores" => {
                let v = args.next().expect("--cores LIST");
                o.cores = v.split(',').map(|c| c.trim().parse().expect("--cores: numbers")).collect();
            }
            "--peers" => o.peers = Some(PathBuf::from(args.next().expect("--peers FILE"))),
            "--shoal-bin" => o.shoal_bin = PathBuf::from(args.next().expect("--shoal-bin PATH")),
            "--only" => {
                o.only = Some(args.next().expect("--only LIST").split(',').map(str::to_string).collect())
            }
            "--help" | "-h" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            // cargo bench passes --bench; anything else is a typo worth stopping for.
            "--bench" => {}
            other => panic!("unknown option {other:?}\n{HELP}"),
        }
    }
    assert!(o.cores.iter().any(|&c| c > 0), "--cores: some peer must have a core");
    o
}

impl Opts {
    fn wants(&self, what: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|w| w == what))
    }
    fn slots(&self) -> u32 {
        self.cores.iter().sum()
    }
    /// The runtime's threads: `--threads`, else the machine's cores (at least 2).
    fn runtime_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| machine_cores().max(2))
    }
}

/// The machine's cores (the denominator of every efficiency).
fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ------------------------------------------------------------------------------------ results

/// Which way is better for a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

#[derive(Debug)]
struct Row {
    label: String,
    shoal: Option<f64>,
    fmt: usize,
    better: Better,
    /// (measure, json path) in the peers' lines, if they measure the same thing.
    peer_key: Option<(&'static str, &'static str)>,
    target: String,
}

#[derive(Debug, Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn add(&mut self, label: impl Into<String>, v: f64, fmt: usize, better: Better) -> &mut Row {
        self.rows.push(Row {
            label: label.into(),
            shoal: Some(v),
            fmt,
            better,
            peer_key: None,
            target: String::new(),
        });
        self.rows.last_mut().unwrap()
    }
}

impl Row {
    fn peer(&mut self, measure: &'static str, path: &'static str) -> &mut Row {
        self.peer_key = Some((measure, path));
        self
    }
    fn target(&mut self, t: &str) -> &mut Row {
        self.target = t.to_string();
        self
    }
}

/// (system, measure, JSON path) of one of the peers' figures.
type PeerKey = (String, String, String);

/// Medians of the peers' figures, and the systems' versions.
fn peer_medians(path: &Path, quick: bool) -> (HashMap<PeerKey, f64>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut vals: HashMap<PeerKey, Vec<f64>> = HashMap::new();
    let mut versions = BTreeMap::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v.get("quick").and_then(|q| q.as_bool()) != Some(quick) {
            continue;
        }
        let (Some(sys), Some(measure)) = (v["system"].as_str(), v["measure"].as_str()) else { continue };
        let version = match sys {
            "dask" => format!("dask {}", v["dask"].as_str().unwrap_or("?")),
            _ => format!("{sys} {}", v[sys].as_str().unwrap_or("?")),
        };
        versions.insert(sys.to_string(), version);
        collect(&v, String::new(), &mut |p, x| {
            vals.entry((sys.to_string(), measure.to_string(), p)).or_default().push(x)
        });
    }
    let med = vals
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, v[v.len() / 2])
        })
        .collect();
    (med, versions.into_values().collect())
}

fn collect(v: &serde_json::Value, prefix: String, f: &mut dyn FnMut(String, f64)) {
    match v {
        serde_json::Value::Number(n) => f(prefix, n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                collect(x, p, f);
            }
        }
        _ => {}
    }
}

fn print_table(t: &Table, o: &Opts) {
    let (peers, versions) = match &o.peers {
        Some(p) => peer_medians(p, o.quick),
        None => (HashMap::new(), Vec::new()),
    };
    let systems = ["dask", "ray"];
    let have = |s: &str| peers.keys().any(|k| k.0 == s);
    let shown: Vec<&str> = systems.iter().copied().filter(|s| have(s)).collect();
    println!();
    if !versions.is_empty() {
        println!(
            "peers: {} (median of their runs in {})",
            versions.join(", "),
            o.peers.as_ref().unwrap().display()
        );
    }
    let mut hdr = "| figure | shoal |".to_string();
    let mut sep = "|---|---|".to_string();
    for s in &shown {
        hdr += &format!(" {s} |");
        sep += "---|";
    }
    for s in &shown {
        hdr += &format!(" shoal vs {s} |");
        sep += "---|";
    }
    hdr += " target |";
    sep += "---|";
    println!("{hdr}\n{sep}");
    for r in &t.rows {
        let f = |x: f64| format!("{x:.*}", r.fmt);
        let mut line = format!("| {} | {} |", r.label, r.shoal.map_or("n/a".into(), f));
        let pv: Vec<Option<f64>> = shown
            .iter()
            .map(|s| {
                r.peer_key
                    .and_then(|(m, p)| peers.get(&(s.to_string(), m.to_string(), p.to_string())).copied())
            })
            .collect();
        for v in &pv {
            line += &format!(" {} |", v.map_or(String::new(), f));
        }
        for v in &pv {
            let ratio = match (r.shoal, *v, r.better) {
                (Some(a), Some(b), Better::Higher) if b > 0.0 => format!("{:.1}× better", a / b),
                (Some(a), Some(b), Better::Lower) if a > 0.0 => format!("{:.1}× better", b / a),
                _ => String::new(),
            };
            line += &format!(" {ratio} |");
        }
        line += &format!(" {} |", r.target);
        println!("{line}");
    }
}

// ------------------------------------------------------------------------------------ helpers

fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm")
}

fn module(name: &str) -> (BlobHash, Vec<u8>) {
    let bytes = std::fs::read(jobs_dir().join(format!("{name}.wasm"))).unwrap();
    (BlobHash::of(&bytes), bytes)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let k = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (k.floor() as usize, k.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time (ns) used so far by this process's threads, grouped by kind (from the thread name).
fn thread_cpu() -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = procfs::process::Process::myself().and_then(|p| p.tasks()) else { return out };
    for task in tasks.flatten() {
        let comm = task.stat().map(|s| s.comm).unwrap_or_default();
        let ns = task.schedstat().map(|s| s.sum_exec_runtime).unwrap_or(0);
        let kind = match comm.as_str() {
            c if c.starts_with("shoal-task") => "task threads",
            c if c.starts_with("tokio-r") => "tokio (network, schedulers)",
            _ => "other",
        };
        *out.entry(kind).or_default() += ns;
    }
    out
}

/// Machine-wide (busy, idle) CPU time in seconds so far, from `/proc/stat`.
fn machine_cpu() -> (f64, f64) {
    use procfs::CurrentSI;
    let Ok(stat) = procfs::KernelStats::current() else { return (0.0, 0.0) };
    let t = stat.total;
    let hz = procfs::ticks_per_second() as f64;
    let idle = t.idle + t.iowait.unwrap_or(0);
    let busy =
        t.user + t.nice + t.system + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0) + t.steal.unwrap_or(0);
    (busy as f64 / hz, idle as f64 / hz)
}

/// Adds where the machine's CPU went during a run that used `ours` seconds of this process's CPU.
fn cpu_shares(t: &mut Table, label: &str, before: (f64, f64), ours: f64) {
    let (busy0, idle0) = before;
    let (busy1, idle1) = machine_cpu();
    let all = (busy1 - busy0) + (idle1 - idle0);
    if all <= 0.0 {
        return;
    }
    let others = ((busy1 - busy0) - ours).max(0.0);
    t.add(format!("{label}: machine CPU used by other processes"), others / all, 3, Better::Neither);
    t.add(format!("{label}: machine CPU idle"), (idle1 - idle0) / all, 3, Better::Neither);
}

fn cpu_delta(before: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    // Threads that ended in between are lost from the later sample; the task threads and
    // runtime workers live as long as the bench.
    thread_cpu()
        .into_iter()
        .map(|(k, v)| (k, v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = procfs::process::Process::new(pid as i32).and_then(|p| p.status());
    status.ok().and_then(|s| s.vmrss).unwrap_or(0)
}

fn pss_kib(pid: u32) -> u64 {
    let Ok(rollup) = procfs::process::Process::new(pid as i32).and_then(|p| p.smaps_rollup()) else {
        return 0;
    };
    rollup.memory_map_rollup.iter().filter_map(|m| m.extension.map.get("Pss")).sum::<u64>() >> 10
}

// ------------------------------------------------------------------------------------ sandbox

/// A local sandbox for calibration and baselines (same settings as a peer's).
struct Local {
    sb: Sandbox,
    noop: std::sync::Arc<TaskModule>,
    spin: std::sync::Arc<TaskModule>,
}

impl Local {
    fn new() -> Local {
        let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 4, ..SandboxConfig::default() }).unwrap();
        let noop = sb.load(&module("noop").1).unwrap();
        let spin = sb.load(&module("spin").1).unwrap();
        Local { sb, noop, spin }
    }

    fn run_spin(&self, iters: u64) -> (Duration, Vec<u8>) {
        let arg = iters.to_string();
        let out = self.sb.run(&self.spin, &[], &[&arg], &Limits::default()).unwrap();
        (out.wall, out.output)
    }

    /// Median wall of `reps` runs of spin with `iters` iterations.
    fn spin_wall(&self, iters: u64, reps: usize) -> f64 {
        median((0..reps).map(|_| self.run_spin(iters).0.as_secs_f64()).collect())
    }
}

/// Spin iterations for `g` seconds of loop time, and the fixed cost of a spin task (seconds).
#[derive(Debug, Clone, Copy)]
struct Calib {
    fixed_s: f64,
    per_iter_s: f64,
}

impl Calib {
    fn measure(l: &Local) -> Calib {
        let (n1, n2) = (20_000u64, 2_000_000u64);
        for _ in 0..20 {
            l.run_spin(n2);
        }
        let t0 = l.spin_wall(0, 201);
        let t1 = l.spin_wall(n1, 101);
        let t2 = l.spin_wall(n2, 31);
        let per_iter_s = (t2 - t1) / (n2 - n1) as f64;
        Calib { fixed_s: t0, per_iter_s }
    }
    fn iters(&self, g: f64) -> u64 {
        (g / self.per_iter_s).round() as u64
    }
}

// ------------------------------------------------------------------------------------ swarm

#[path = "../tests/support/swarm.rs"]
mod support;
use support::Swarm;

impl Swarm {
    fn owner(&self) -> &Peer {
        &self.peers[0]
    }

    fn done(&self) -> Vec<u64> {
        self.peers.iter().map(|p| p.status().tasks_done).collect()
    }

    fn sched_msgs(&self) -> u64 {
        self.peers.iter().map(|p| p.node().stats().sched_sent).sum()
    }

    /// Runs `job` from the owner; returns the result and the submit → result time.
    async fn run(
        &self,
        job: Job,
        blobs: HashMap<BlobHash, Vec<u8>>,
        wanted: Vec<TaskIndex>,
    ) -> (JobOutputs, Duration) {
        let t = Instant::now();
        let h = self.owner().submit_with_outputs(job, blobs, wanted).await.unwrap();
        let out = tokio::time::timeout(PATIENCE, h.wait()).await.unwrap().unwrap();
        (out, t.elapsed())
    }

    async fn shutdown(self) {
        for p in &self.peers {
            p.shutdown().await;
        }
    }
}

/// `n` independent tasks of `module` with `args`.
fn flat_job(prefix: &str, n: usize, module: BlobHash, args: &[String]) -> Job {
    Job::new(
        (0..n)
            .map(|i| TaskSpec { args: args.to_vec(), ..TaskSpec::new(format!("{prefix}{i}"), module) })
            .collect(),
    )
    .unwrap()
}

/// Runs warm-up jobs (`make(n)`: a job of `n` tasks of one module) until every peer with cores
/// has run at least one of their tasks (so it has fetched and compiled the module).
async fn warm(
    s: &Swarm,
    name: &str,
    make: impl Fn(usize) -> Job,
    blobs: &HashMap<BlobHash, Vec<u8>>,
    cores: &[u32],
) {
    for round in 0..20 {
        let before = s.done();
        s.run(make(16 * cores.len()), blobs.clone(), vec![]).await;
        let after = s.done();
        let all = cores.iter().enumerate().all(|(i, &c)| c == 0 || after[i] > before[i]);
        if all {
            return;
        }
        if round == 19 {
            eprintln!("warning: some peer never ran a warm-up task of {name}");
        }
    }
}

// ------------------------------------------------------------------------------------ DAGs

/// A binary tree reduce: `leaves` spin tasks, then pairwise spin tasks taking two inputs.
fn tree_job(leaves: usize, spin: BlobHash, iters: u64) -> Job {
    let args = vec![iters.to_string()];
    let mut specs = Vec::new();
    let mut level: Vec<String> = (0..leaves).map(|i| format!("leaf{i}")).collect();
    for name in &level {
        specs.push(TaskSpec { args: args.clone(), ..TaskSpec::new(name.clone(), spin) });
    }
    let mut depth = 0;
    while level.len() > 1 {
        depth += 1;
        let mut next = Vec::new();
        for (j, pair) in level.chunks(2).enumerate() {
            if pair.len() == 1 {
                next.push(pair[0].clone());
                continue;
            }
            let name = format!("c{depth}_{j}");
            let t = TaskSpec { args: args.clone(), ..TaskSpec::new(name.clone(), spin) }
                .after(&pair[0])
                .after(&pair[1]);
            specs.push(t);
            next.push(name);
        }
        level = next;
    }
    Job::new(specs).unwrap()
}

/// A tile of the tiled Cholesky job: a literal blob or a task's output.
#[derive(Clone, Debug)]
enum Src {
    Blob(BlobHash, u64),
    Task(String),
}

impl Src {
    fn spec(&self) -> InputSpec {
        match self {
            Src::Blob(hash, size) => InputSpec::Blob { hash: *hash, size: *size },
            Src::Task(n) => InputSpec::Output(n.clone()),
        }
    }
}

struct Cholesky {
    job: Job,
    blobs: HashMap<BlobHash, Vec<u8>>,
    /// The tasks whose outputs are the tiles of L.
    l_tiles: Vec<TaskIndex>,
    /// Each task's wall time and output from a sequential run in the local sandbox.
    cost_s: Vec<f64>,
    outputs: Vec<Vec<u8>>,
}

/// Right-looking tiled Cholesky of a `t·b × t·b` SPD matrix; runs it once sequentially in `l`
/// for the expected outputs and each task's cost.
fn cholesky(l: &Local, t: usize, b: usize) -> Cholesky {
    let (hash, bytes) = module("cholesky");
    let m = l.sb.load(&bytes).unwrap();
    let n = t * b;
    let a =
        |i: usize, j: usize| 1.0 / (1.0 + (i as f64 - j as f64).abs()) + if i == j { n as f64 } else { 0.0 };
    let mut blobs = HashMap::from([(hash, bytes)]);
    let mut cur: Vec<Vec<Src>> = Vec::new();
    for ti in 0..t {
        let mut row = Vec::new();
        for tj in 0..t {
            let tile: Vec<u8> =
                (0..b * b).flat_map(|k| a(ti * b + k / b, tj * b + k % b).to_le_bytes()).collect();
            let h = BlobHash::of(&tile);
            row.push(Src::Blob(h, tile.len() as u64));
            blobs.insert(h, tile);
        }
        cur.push(row);
    }
    let mut specs: Vec<TaskSpec> = Vec::new();
    let mut add = |name: String, kernel: &str, inputs: Vec<&Src>| -> Src {
        let mut spec = TaskSpec { args: vec![kernel.to_string()], ..TaskSpec::new(name.clone(), hash) };
        spec.inputs = inputs.into_iter().map(Src::spec).collect();
        specs.push(spec);
        Src::Task(name)
    };
    let mut l_names = Vec::new();
    for k in 0..t {
        let p = add(format!("potrf-{k}"), "potrf", vec![&cur[k][k]]);
        l_names.push(format!("potrf-{k}"));
        cur[k][k] = p.clone();
        for (i, row) in cur.iter_mut().enumerate().skip(k + 1) {
            row[k] = add(format!("trsm-{i}-{k}"), "trsm", vec![&p, &row[k]]);
            l_names.push(format!("trsm-{i}-{k}"));
        }
        for i in k + 1..t {
            let s = add(format!("syrk-{i}-{k}"), "syrk", vec![&cur[i][i], &cur[i][k]]);
            cur[i][i] = s;
            for j in k + 1..i {
                let g = add(format!("gemm-{i}-{j}-{k}"), "gemm", vec![&cur[i][j], &cur[i][k], &cur[j][k]]);
                cur[i][j] = g;
            }
        }
    }
    let job = Job::new(specs).unwrap();
    // Sequential local run, in index order (tasks were added after their producers).
    let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(job.len());
    let mut cost_s = Vec::with_capacity(job.len());
    for task in job.tasks() {
        let ins: Vec<&[u8]> = task
            .inputs
            .iter()
            .map(|i| match i {
                shoal_core::job::Input::Blob { hash, .. } => blobs[hash].as_slice(),
                shoal_core::job::Input::Output(p) => outputs[p.0 as usize].as_slice(),
            })
            .collect();
        let args: Vec<&str> = task.args.iter().map(String::as_str).collect();
        let out = l.sb.run(&m, &ins, &args, &Limits::default()).unwrap();
        cost_s.push(out.wall.as_secs_f64());
        outputs.push(out.output);
    }
    let index = |name: &str| TaskIndex(job.tasks().iter().position(|x| x.name == name).unwrap() as u32);
    let l_tiles = l_names.iter().map(|n| index(n)).collect();
    Cholesky { job, blobs, l_tiles, cost_s, outputs }
}

/// max(work / cores, critical path) of `job` with per-task costs `cost_s`.
fn bound(job: &Job, cost_s: &[f64], cores: usize) -> (f64, f64, f64) {
    let work: f64 = cost_s.iter().sum();
    let mut best = vec![0f64; job.len()];
    for &i in job.topo_order().iter().rev() {
        let below = job.children(i).iter().map(|c| best[c.0 as usize]).fold(0.0, f64::max);
        best[i.0 as usize] = below + cost_s[i.0 as usize];
    }
    let crit = best.into_iter().fold(0.0, f64::max);
    ((work / cores as f64).max(crit), work, crit)
}

/// The simulator's makespan for `job` with costs `slot_s` (what a task occupies a slot for) and
/// output sizes `out`, on the executing peers of `cores` (uniform slots: their mean).
fn predict(job: &Job, slot_s: &[f64], out: &[u64], cores: &[u32]) -> f64 {
    let exec: Vec<u32> = cores.iter().copied().filter(|&c| c > 0).collect();
    let dag = SimDag {
        job: job.clone(),
        work: slot_s.iter().map(|s| (s * shoal_sim::dag::FUEL_PER_SEC).round().max(1.0) as u64).collect(),
        out_size: out.to_vec(),
    };
    let mut cfg = SimConfig::new(exec.len(), Topology::Lan, 7);
    cfg.peer.slots = (exec.iter().sum::<u32>() / exec.len() as u32).max(1);
    simulate(&dag, &cfg).unwrap().makespan_s
}

// ------------------------------------------------------------------------------------ memory

/// Starts `shoal worker`; returns the child and its listening address once it has printed it
/// (and, with a bootstrap, once it has joined).
fn spawn_worker(bin: &Path, dir: &Path, bootstrap: Option<&str>) -> (Child, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["worker", "--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("listening ") {
            addr = a.trim().to_string();
            if bootstrap.is_none() {
                break;
            }
        }
        if line.starts_with("joined") {
            break;
        }
    }
    // Keep draining stdout so the worker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = procfs::process::Process::new(pid as i32).and_then(|p| p.stat());
    stat.map_or(0, |s| s.utime + s.stime)
}

fn idle_memory(t: &mut Table, o: &Opts) {
    if !o.shoal_bin.exists() {
        eprintln!("(e) skipped: no {} (cargo build --release -p shoal-worker)", o.shoal_bin.display());
        return;
    }
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (mut a, addr) = spawn_worker(&o.shoal_bin, d1.path(), None);
    let (mut b, _) = spawn_worker(&o.shoal_bin, d2.path(), Some(&addr));
    std::thread::sleep(Duration::from_secs(2));
    let pids = [a.id(), b.id()];
    let ticks0: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(if o.quick { 2 } else { 5 }));
    let ticks = pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>() - ticks0;
    let hz = procfs::ticks_per_second() as f64;
    let idle_cpu = ticks as f64 / hz / t0.elapsed().as_secs_f64();
    let rss: u64 = pids.iter().map(|&p| rss_kib(p)).sum();
    let pss: u64 = pids.iter().map(|&p| pss_kib(p)).sum();
    for c in [&mut a, &mut b] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = c.wait();
    }
    t.add("e. idle RSS, 2 `shoal worker` processes (MiB)", rss as f64 / 1024.0, 1, Better::Lower)
        .peer("memory", "after_start.rss_total_mib")
        .target("≤ 40");
    t.add("e. idle PSS, same (MiB)", pss as f64 / 1024.0, 1, Better::Lower)
        .peer("memory", "after_start.uss_total_mib");
    t.add("e. idle CPU of the 2 workers (cores)", idle_cpu, 3, Better::Lower);
}

// ------------------------------------------------------------------------------------ main

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let o = opts();
    let cores = machine_cores();
    let quick = o.quick;
    println!(
        "shoal swarm bench: {} peers with cores {:?} ({} slots) on a {cores}-core machine{}{}",
        o.cores.len(),
        o.cores,
        o.slots(),
        if quick { ", --quick" } else { "" },
        if o.durable { "" } else { ", --no-durable (no journal, no deputies)" }
    );
    let mut t = Table::default();
    let local = Local::new();

    // Baseline: the bare sandbox, one thread.
    let n_base = if quick { 2_000 } else { 20_000 };
    let (base_rate, base_us) = {
        for _ in 0..200 {
            local.sb.run(&local.noop, &[], &[], &Limits::default()).unwrap();
        }
        let t0 = Instant::now();
        for _ in 0..n_base {
            local.sb.run(&local.noop, &[], &[], &Limits::default()).unwrap();
        }
        let el = t0.elapsed().as_secs_f64();
        (n_base as f64 / el, el / n_base as f64 * 1e6)
    };
    if o.wants("baseline") {
        t.add("baseline: bare sandbox no-op loop, 1 thread (tasks/s)", base_rate, 0, Better::Higher);
        t.add("baseline: bare sandbox no-op (µs/task)", base_us, 1, Better::Lower).target("≤ 10");
    }
    let calib = Calib::measure(&local);
    eprintln!(
        "calibration: spin task fixed cost {:.1} µs, {:.3} ns/iteration",
        calib.fixed_s * 1e6,
        calib.per_iter_s * 1e9
    );

    let threads = o.runtime_threads();
    eprintln!("runtime: {threads} async threads (--threads; default: the machine's cores, at least 2)");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    let rss0 = rss_kib(std::process::id());
    let durable = o.durable;
    // SHOAL_BENCH_DEPUTIES=N / SHOAL_BENCH_PERSIST=0: one part of durability at a time.
    let deputies: Option<usize> = std::env::var("SHOAL_BENCH_DEPUTIES").ok().and_then(|v| v.parse().ok());
    let persist = std::env::var("SHOAL_BENCH_PERSIST").map_or(true, |v| v != "0");
    let tweak = move |cfg: &mut shoal_node::Config| {
        if !durable {
            cfg.persist_jobs = false;
            cfg.deputies = 0;
        }
        if let Some(d) = deputies {
            cfg.deputies = d;
        }
        cfg.persist_jobs &= persist;
    };
    let mut s = rt.block_on(Swarm::start_with(&o.cores, PATIENCE, tweak));
    if std::env::var("SHOAL_BENCH_REMOTE_FIRST").is_ok() {
        // Debugging aid: peer 1 sorts before the owner on the owner's placement ties.
        while s.peers[1].peer_id() > s.peers[0].peer_id() {
            rt.block_on(s.shutdown());
            s = rt.block_on(Swarm::start_with(&o.cores, PATIENCE, tweak));
        }
    }
    let rss1 = rss_kib(std::process::id());
    eprintln!("swarm up; in-process RSS grew {:.1} MiB", (rss1 as f64 - rss0 as f64) / 1024.0);

    let (noop, noop_bytes) = module("noop");
    let (spin, spin_bytes) = module("spin");
    let mut blobs = HashMap::from([(noop, noop_bytes), (spin, spin_bytes)]);
    rt.block_on(warm(&s, "noop", |n| flat_job("w", n, noop, &[]), &blobs, &o.cores));
    let ms = calib.iters(0.001).to_string();
    rt.block_on(warm(&s, "spin", |n| flat_job("w", n, spin, std::slice::from_ref(&ms)), &blobs, &o.cores));
    blobs.clear(); // Stored on the owner from now on.

    // (a) throughput.
    if o.wants("throughput") {
        let n = if quick { 2_000 } else { 20_000 };
        let msgs0 = s.sched_msgs();
        let cpu0 = thread_cpu();
        let d0 = s.done();
        let (_, el) = rt.block_on(s.run(flat_job("t", n, noop, &[]), HashMap::new(), vec![]));
        let d1 = s.done();
        eprintln!(
            "throughput: tasks run per peer {:?}",
            d1.iter().zip(&d0).map(|(a, b)| a - b).collect::<Vec<_>>()
        );
        let cpu = cpu_delta(&cpu0);
        let msgs = s.sched_msgs() - msgs0;
        let rate = n as f64 / el.as_secs_f64();
        t.add(format!("a. no-op throughput, 1 job × {n} tasks (tasks/s)"), rate, 0, Better::Higher)
            .peer("noop_throughput", "tasks_per_s")
            .target("≥ 50,000");
        t.add("a. … ÷ bare sandbox loop on 1 thread", rate / base_rate, 3, Better::Higher);
        t.add("a. scheduling messages per task", msgs as f64 / n as f64, 2, Better::Lower).target("≤ 1.5");
        for (k, ns) in &cpu {
            t.add(format!("a. CPU per task, {k} (µs)"), *ns as f64 / 1e3 / n as f64, 1, Better::Lower);
        }
    }

    // (b) latency.
    if o.wants("latency") {
        let runs = if quick { 50 } else { 500 };
        let mut lat = Vec::with_capacity(runs);
        let mut by_owner = 0;
        rt.block_on(async {
            for _ in 0..20 {
                s.run(flat_job("l", 1, noop, &[]), HashMap::new(), vec![]).await;
            }
            for _ in 0..runs {
                let before = s.owner().status().tasks_done;
                let (_, el) = s.run(flat_job("l", 1, noop, &[]), HashMap::new(), vec![]).await;
                lat.push(el.as_secs_f64() * 1e6);
                by_owner += usize::from(s.owner().status().tasks_done > before);
            }
        });
        let slow = lat.iter().filter(|&&l| l > 10_000.0).count();
        lat.sort_by(f64::total_cmp);
        t.add(format!("b. no-op round trip p50, {runs} jobs (µs)"), percentile(&lat, 0.5), 0, Better::Lower)
            .peer("noop_latency", "p50_us")
            .target("< 300");
        t.add("b. no-op round trip p99 (µs)", percentile(&lat, 0.99), 0, Better::Lower)
            .peer("noop_latency", "p99_us")
            .target("< 1,000");
        // The owner places a lone task on the least loaded peer, ties broken by peer id: itself,
        // another peer, or (a known gap) a peer that donates no cores, where it waits for a thief.
        t.add(
            "b. … share of those tasks the submitting peer ran itself",
            by_owner as f64 / runs as f64,
            2,
            Better::Neither,
        );
        t.add(
            "b. … round trips over 10 ms (task held by a 0-core peer until stolen)",
            slow as f64,
            0,
            Better::Lower,
        );
    }

    // (a) continued: concurrent jobs, after the latency runs (which want a quiet swarm).
    if o.wants("throughput") {
        // Many jobs at once, from every peer that donates cores (an owner without cores still
        // queues its own tasks at itself: see docs/benchmarks.md).
        let owners: Vec<&Peer> = s.peers.iter().filter(|p| p.cores() > 0).collect();
        let (jobs, per) = if quick { (8, 250) } else { (40, 500) };
        let t0 = Instant::now();
        rt.block_on(async {
            let mut handles = Vec::new();
            for j in 0..jobs {
                let p = owners[j % owners.len()];
                let h = p.submit(flat_job("m", per, noop, &[]), {
                    let mut b = HashMap::new();
                    if !p.node().blobs().contains(&noop) {
                        b.insert(noop, module("noop").1);
                    }
                    b
                });
                handles.push(h.await.unwrap());
            }
            for h in handles {
                tokio::time::timeout(PATIENCE, h.wait()).await.unwrap().unwrap();
            }
        });
        let rate_many = (jobs * per) as f64 / t0.elapsed().as_secs_f64();
        t.add(
            format!("a. no-op throughput, {jobs} jobs × {per} at once from {} peers (tasks/s)", owners.len()),
            rate_many,
            0,
            Better::Higher,
        );
    }

    // (c) fine-grained efficiency.
    if o.wants("fine") {
        let target_work: f64 = if quick { 1.0 } else { 10.0 };
        for (g, tag, key, target) in [
            (0.001, "1 ms", "fine_grained_1ms", "≥ 0.90"),
            (0.0001, "100 µs", "fine_grained_100us", "≥ 0.60"),
        ] {
            let n = ((target_work / g).round() as usize).min(40_000);
            let iters = calib.iters(g);
            let g_real = iters as f64 * calib.per_iter_s;
            let job = flat_job("f", n, spin, &[iters.to_string()]);
            let cpu0 = thread_cpu();
            let m0 = machine_cpu();
            let (res, el) = rt.block_on(s.run(job, HashMap::new(), vec![]));
            let cpu = cpu_delta(&cpu0);
            let ours = cpu.values().sum::<u64>() as f64 / 1e9;
            let makespan = el.as_secs_f64();
            let denom = cores.min(o.slots() as usize) as f64 * makespan;
            let e = n as f64 * g_real / denom;
            let task_cpu = cpu.get("task threads").copied().unwrap_or(0) as f64 / 1e9;
            t.add(format!("c. g={tag}: N"), n as f64, 0, Better::Neither).peer(key, "n_tasks");
            t.add(format!("c. g={tag}: makespan (s)"), makespan, 2, Better::Lower).peer(key, "makespan_s");
            t.add(format!("c. g={tag}: efficiency E (nominal N·g)"), e, 3, Better::Higher)
                .peer(key, "efficiency")
                .target(target);
            let reported = res.progress.cpu_time.as_secs_f64();
            t.add(
                format!("c. g={tag}: reported slot time ÷ (cores × makespan)"),
                reported / denom,
                3,
                Better::Neither,
            );
            t.add(
                format!("c. g={tag}: task-thread CPU ÷ (cores × makespan)"),
                task_cpu / denom,
                3,
                Better::Neither,
            );
            t.add(
                format!("c. g={tag}: all swarm CPU ÷ (cores × makespan)"),
                ours / denom,
                3,
                Better::Neither,
            );
            cpu_shares(&mut t, &format!("c. g={tag}"), m0, ours);
        }
    }

    // (d) tree reduce and Cholesky, beside the simulator.
    let eff_cores = cores.min(o.slots() as usize);
    if o.wants("tree") {
        let leaves = if quick { 256 } else { 4096 };
        let iters = calib.iters(0.001);
        let g = iters as f64 * calib.per_iter_s;
        // What one task occupies a slot for in the bare sandbox: the loop and the fixed cost.
        let slot_s = g + calib.fixed_s;
        let expect = local.run_spin(iters).1;
        let job = tree_job(leaves, spin, iters);
        let root = job.sinks().next().unwrap();
        let (out, el) = rt.block_on(s.run(job.clone(), HashMap::new(), vec![root]));
        assert_eq!(out.outputs.values().next().unwrap(), &expect, "the tree's root output");
        let makespan = el.as_secs_f64();
        let nominal = vec![g; job.len()];
        let (b, _, _) = bound(&job, &nominal, eff_cores);
        let pred = predict(&job, &vec![slot_s; job.len()], &vec![expect.len() as u64; job.len()], &o.cores);
        t.add(format!("d. tree {leaves} leaves, 1 ms: makespan (s)"), makespan, 2, Better::Lower)
            .peer("tree_reduce", "makespan_s");
        t.add("d. tree: max(work/cores, crit. path) (s)", b, 3, Better::Neither)
            .peer("tree_reduce", "lower_bound_s");
        t.add("d. tree: makespan ÷ bound", makespan / b, 2, Better::Lower)
            .peer("tree_reduce", "ratio")
            .target("≤ 1.15");
        t.add(
            "d. tree: simulator's makespan ÷ bound (same DAG, measured costs)",
            pred / b,
            2,
            Better::Neither,
        );
    }
    if o.wants("cholesky") {
        let (tiles, b) = if quick { (5, 96) } else { (10, 192) };
        let ch = cholesky(&local, tiles, b);
        // Warm-up: potrf of a 1×1 tile on every executing peer.
        let (chash, cbytes) = module("cholesky");
        let one = 4.0f64.to_le_bytes().to_vec();
        let one_hash = BlobHash::of(&one);
        let warm_blobs = HashMap::from([(chash, cbytes), (one_hash, one)]);
        let make = |n: usize| {
            let specs = (0..n).map(|i| {
                let mut t = TaskSpec { args: vec!["potrf".into()], ..TaskSpec::new(format!("w{i}"), chash) };
                t.inputs.push(InputSpec::Blob { hash: one_hash, size: 8 });
                t
            });
            Job::new(specs.collect()).unwrap()
        };
        rt.block_on(warm(&s, "cholesky", make, &warm_blobs, &o.cores));
        let (out, el) = rt.block_on(s.run(ch.job.clone(), ch.blobs.clone(), ch.l_tiles.clone()));
        for &i in &ch.l_tiles {
            let name = &ch.job.task(i).name;
            assert_eq!(out.outputs[name], ch.outputs[i.0 as usize], "tile {name} differs from the local run");
        }
        let makespan = el.as_secs_f64();
        let (bd, work, crit) = bound(&ch.job, &ch.cost_s, eff_cores);
        let sizes: Vec<u64> = ch.outputs.iter().map(|o| o.len() as u64).collect();
        let pred = predict(&ch.job, &ch.cost_s, &sizes, &o.cores);
        let label = format!("d. cholesky {tiles}×{tiles} tiles of {b}² ({} tasks)", ch.job.len());
        t.add(format!("{label}: makespan (s)"), makespan, 3, Better::Lower);
        t.add(
            format!("d. cholesky: work {work:.3} s, crit. path {crit:.3} s: bound (s)"),
            bd,
            3,
            Better::Neither,
        );
        t.add("d. cholesky: makespan ÷ bound", makespan / bd, 2, Better::Lower).target("≤ 1.3");
        t.add("d. cholesky: simulator's makespan ÷ bound", pred / bd, 2, Better::Neither);
    }
    let stats: Vec<_> = s.peers.iter().map(|p| p.node().stats()).collect();
    eprintln!("net stats per peer: {stats:?}");
    rt.block_on(s.shutdown());
    t.add(
        "e. in-process: RSS growth starting the swarm (MiB)",
        (rss1 as f64 - rss0 as f64) / 1024.0,
        1,
        Better::Lower,
    );
    if o.wants("memory") {
        idle_memory(&mut t, &o);
    }
    print_table(&t, &o);
}
