//! One simulated run with a printed report: the plain API behind the `shoal sim` command (whose
//! command-line parsing lives in the binary). [`run`] takes a [`RunSpec`], prints two summary lines
//! and, with `json`, a final line holding one JSON object with every field of [`Metrics`] (among
//! them `makespan_s`, `lower_bound_s`, `ratio`, `tasks`, `tasks_completed`, `peers`,
//! `messages_per_task`, `bytes_per_task`, `messages_lost`, `leases_expired`, and for verified
//! runs `jobs`, `jobs_completed`, `wrong_outputs_accepted`, `verification_overhead`,
//! `disagreements`; `replication_messages_per_task`, `replication_bytes_per_task`,
//! `owners_killed`, `takeovers`, and with a killed owner `recovery`: the same seed is run a
//! second time without any kill, and the report gives makespan(killed) ÷ makespan(clean), the
//! share of work lost and re-made, the bound `1 + lost + 0.10` and whether it holds).

use std::io::Write;
use std::path::PathBuf;

use crate::dag::{DagError, KINDS, SimDag, generate};
use crate::metrics::{Metrics, Recovery};
use crate::net::Topology;
use crate::world::{
    Kill, KillOwner, Liars, LieMode, NetFaults, SchedulerKind, SimConfig, SimError, simulate_with_trust,
};
use shoal_core::sched::{TrustBook, VerifyPolicy};

/// What to simulate and how to report it.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// DAG to generate, `KIND:PARAMS` (see [`generate`]); or
    pub dag: Option<String>,
    /// a WfCommons workflow trace (JSON, schema 1.5+) to run instead.
    pub workflow: Option<PathBuf>,
    /// Number of peers.
    pub peers: usize,
    /// Task slots per peer.
    pub slots: u32,
    /// Network topology.
    pub topology: Topology,
    /// Seed: the same seed gives the same run, event for event.
    pub seed: u64,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Kill a fraction of the peers at some progress.
    pub kill: Option<Kill>,
    /// Kill the job's owner at some progress (a deputy takes over); the report then compares
    /// the run with the same seed run without any kill.
    pub kill_owner: Option<KillOwner>,
    /// Deputies each job's owner keeps (0: none).
    pub deputies: usize,
    /// Message loss, duplication and reordering between peers.
    pub faults: NetFaults,
    /// End with one line of JSON holding every metric.
    pub json: bool,
    /// Jobs to run one after another in the same swarm (same peers, same liars, the owner's trust
    /// book carried over); job `j` has seed `seed + j` and, when `dag` lists several DAGs
    /// separated by `+`, the `j`-th of them in turn. The report sums them.
    pub jobs: usize,
    /// Peers that lie about results.
    pub liars: Option<Liars>,
    /// How the owner verifies results.
    pub verify: VerifyPolicy,
}

impl RunSpec {
    /// A run of the generated DAG `dag` on `peers` LAN peers, one slot each, seed 1, no faults.
    pub fn new(dag: &str, peers: usize) -> RunSpec {
        RunSpec {
            dag: Some(dag.to_string()),
            workflow: None,
            peers,
            slots: 1,
            topology: Topology::Lan,
            seed: 1,
            scheduler: SchedulerKind::Shoal,
            kill: None,
            kill_owner: None,
            deputies: 2,
            faults: NetFaults::default(),
            json: false,
            jobs: 1,
            liars: None,
            verify: VerifyPolicy::None,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The DAG or workflow could not be made.
    #[error(transparent)]
    Dag(#[from] DagError),
    /// The run could not start.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// Neither `--dag` nor `--workflow` was given.
    #[error("give --dag KIND:PARAMS ({KINDS}) or --workflow FILE")]
    NoWorkload,
}

/// Parses `FRACTION@PROGRESS`.
pub fn parse_kill(s: &str) -> Result<Kill, String> {
    let (f, p) = s.split_once('@').ok_or_else(|| format!("expected FRACTION@PROGRESS, got {s:?}"))?;
    let num = |x: &str| x.trim().parse::<f64>().map_err(|e| format!("{x:?}: {e}"));
    let (fraction, progress) = (num(f)?, num(p)?);
    if !(0.0..1.0).contains(&fraction) || !(0.0..=1.0).contains(&progress) {
        return Err(format!("need 0 <= FRACTION < 1 and 0 <= PROGRESS <= 1, got {s:?}"));
    }
    Ok(Kill { fraction, progress })
}

/// Parses a share of the tasks done, `0 <= PROGRESS <= 1` (`--kill-owner`).
pub fn parse_progress(s: &str) -> Result<f64, String> {
    let p = s.trim().parse::<f64>().map_err(|e| format!("{s:?}: {e}"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("need 0 <= PROGRESS <= 1, got {s:?}"));
    }
    Ok(p)
}

/// Parses `FRACTION[:MODE]`, MODE one of `consistent` (the default), `random`, `collude`,
/// `turncoat`.
pub fn parse_liars(s: &str) -> Result<Liars, String> {
    let (f, mode) = s.split_once(':').unwrap_or((s, "consistent"));
    let fraction = f.trim().parse::<f64>().map_err(|e| format!("{f:?}: {e}"))?;
    if !(0.0..1.0).contains(&fraction) {
        return Err(format!("need 0 <= FRACTION < 1, got {s:?}"));
    }
    let mode = match mode.trim() {
        "consistent" => LieMode::Consistent,
        "random" => LieMode::Random,
        "collude" => LieMode::Collude,
        "turncoat" => LieMode::Turncoat,
        m => return Err(format!("lie mode {m:?}: expected consistent, random, collude or turncoat")),
    };
    Ok(Liars { fraction, mode })
}

/// Runs every job of `args` (with its kills, or, `kills` false, without any), summed.
fn series(args: &RunSpec, kills: bool) -> Result<Metrics, RunError> {
    let mut trust = TrustBook::new();
    let mut total: Option<Metrics> = None;
    for job in 0..args.jobs.max(1) {
        let dag = workload(args, job)?;
        let mut cfg = SimConfig::new(args.peers, args.topology, args.seed.wrapping_add(job as u64));
        cfg.swarm_seed = Some(args.seed);
        cfg.peer.slots = args.slots.max(1);
        cfg.scheduler = args.scheduler;
        cfg.deputies = args.deputies;
        if kills {
            cfg.kill = args.kill;
            cfg.kill_owner = args.kill_owner;
        }
        cfg.faults = args.faults;
        // Turncoats lie from the middle job on.
        cfg.liars = args.liars.filter(|l| l.mode != LieMode::Turncoat || job >= args.jobs / 2);
        cfg.owner.verify.policy = args.verify;
        cfg.owner.verify.seed = args.seed;
        let m = simulate_with_trust(&dag, &cfg, &mut trust)?;
        match &mut total {
            Some(t) => t.absorb(&m),
            None => total = Some(m),
        }
    }
    total.ok_or(RunError::NoWorkload)
}

/// Loads the workload `args` names (for job `job` of the run: its seed, and its DAG of a
/// `+`-separated list).
pub fn workload(args: &RunSpec, job: usize) -> Result<SimDag, RunError> {
    let seed = args.seed.wrapping_add(job as u64);
    match (&args.dag, &args.workflow) {
        (Some(spec), _) => {
            let specs: Vec<&str> = spec.split('+').collect();
            Ok(generate(specs[job % specs.len()], seed)?)
        }
        (None, Some(path)) => Ok(crate::wfcommons::load(path)?),
        (None, None) => Err(RunError::NoWorkload),
    }
}

/// Runs `args`, writing a report (and with `--json`, a final JSON line) to `out`.
pub fn run(args: &RunSpec, out: &mut dyn Write) -> Result<Metrics, RunError> {
    let mut m = series(args, true)?;
    if args.kill_owner.is_some() {
        // The clean makespan is not known inside a run: the same seeds again, without kills.
        let clean = series(args, false)?;
        let detect = SimConfig::new(args.peers, args.topology, args.seed).detect;
        m.recovery = Some(Recovery::of(&m, &clean, detect));
    }
    writeln!(
        out,
        "{} tasks on {} peers x {} slots ({:?}, {}): makespan {:.3} s, bound {:.3} s, ratio {:.3}",
        m.tasks, m.peers, m.slots, args.topology, m.scheduler, m.makespan_s, m.lower_bound_s, m.ratio
    )?;
    writeln!(
        out,
        "completed {}/{}, runs {}, killed {}, messages/task {:.2}, bytes/task {:.0}, steals {}/{} won, idle {:.1}%",
        m.tasks_completed,
        m.tasks,
        m.runs,
        m.peers_killed,
        m.messages_per_task,
        m.bytes_per_task,
        m.steals_won,
        m.steals_tried,
        m.idle_fraction * 100.0
    )?;
    if args.faults != NetFaults::default() {
        writeln!(
            out,
            "faults: {} messages lost, {} duplicated; {} leases expired; {} messages refused",
            m.messages_lost, m.messages_duplicated, m.leases_expired, m.refused
        )?;
    }
    if args.liars.is_some() || args.verify != VerifyPolicy::None || m.jobs > 1 {
        writeln!(
            out,
            "verify {:?}: {}/{} jobs completed, {} liars, {} wrong outputs accepted, overhead {:.1}%, \
             {} disagreements, {} results discarded",
            args.verify,
            m.jobs_completed,
            m.jobs,
            m.liars,
            m.wrong_outputs_accepted,
            m.verification_overhead * 100.0,
            m.disagreements,
            m.discarded
        )?;
    }
    if m.replication_messages > 0 || m.owners_killed > 0 {
        writeln!(
            out,
            "replication: {} deputies, replication messages/task {:.2}, replication bytes/task {:.0}; \
             owners killed {}, takeovers {}",
            args.deputies,
            m.replication_messages_per_task,
            m.replication_bytes_per_task,
            m.owners_killed,
            m.takeovers
        )?;
    }
    if let Some(r) = &m.recovery {
        writeln!(
            out,
            "recovery: makespan {:.3} s killed / {:.3} s clean = {:.3}, lost work {:.1}%, \
             bound 1 + {:.3} + 0.10 = {:.3}: {} (failure detection alone: {:.1}% of the clean makespan)",
            r.killed_makespan_s,
            r.clean_makespan_s,
            r.makespan_ratio,
            r.lost_share * 100.0,
            r.lost_share,
            r.bound,
            if r.holds { "holds" } else { "exceeded" },
            r.detect_share * 100.0
        )?;
    }
    for u in m.unfinished.iter().take(5) {
        writeln!(out, "unfinished: {u}")?;
    }
    if args.json {
        let line = serde_json::to_string(&m).map_err(|e| RunError::Io(e.into()))?;
        writeln!(out, "{line}")?;
    }
    Ok(m)
}
