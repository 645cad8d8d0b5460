//! The `shoal sim` command: argument parsing ([`SimArgs`]) and [`run`].
//!
//! `--json` makes the last line of the output one JSON object with every field of [`Metrics`]
//! (among them `makespan_s`, `lower_bound_s`, `ratio`, `tasks`, `tasks_completed`, `peers`,
//! `messages_per_task`, `bytes_per_task`).

use std::io::Write;
use std::path::PathBuf;

use crate::dag::{DagError, KINDS, SimDag, generate};
use crate::metrics::Metrics;
use crate::net::Topology;
use crate::world::{Kill, SchedulerKind, SimConfig, SimError, simulate};

/// Arguments of `shoal sim`.
#[derive(Clone, Debug, clap::Args)]
pub struct SimArgs {
    /// DAG to generate, KIND:PARAMS (tree:LEAVES, forkjoin:WIDTH,STAGES, cholesky:TILES,
    /// wavefront:SIDE, layered:TASKS,LAYERS,CCR_PERCENT, mapreduce:MAPPERS,REDUCERS).
    #[arg(long, conflicts_with = "workflow", required_unless_present = "workflow")]
    pub dag: Option<String>,
    /// WfCommons workflow trace (JSON, schema 1.5+) to run instead of a generated DAG.
    #[arg(long)]
    pub workflow: Option<PathBuf>,
    /// Number of peers.
    #[arg(long, default_value_t = 64)]
    pub peers: usize,
    /// Task slots per peer.
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Network topology.
    #[arg(long, value_enum, default_value_t = Topology::Lan)]
    pub topology: Topology,
    /// Seed: the same seed gives the same run, event for event.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scheduler.
    #[arg(long, value_enum, default_value_t = SchedulerKind::Shoal)]
    pub scheduler: SchedulerKind,
    /// Kill FRACTION of the peers when PROGRESS of the tasks are done, e.g. 0.125@0.5.
    #[arg(long, value_parser = parse_kill)]
    pub kill: Option<Kill>,
    /// Probability that a message between peers is lost for good.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Probability that a message between peers is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate: f64,
    /// Delay every message by up to one more RTT at random, so messages overtake each other.
    #[arg(long)]
    pub reorder: bool,
    /// End with one line of JSON holding every metric.
    #[arg(long)]
    pub json: bool,
}

/// Why `shoal sim` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
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

/// Loads the workload `args` names.
pub fn workload(args: &SimArgs) -> Result<SimDag, CliError> {
    match (&args.dag, &args.workflow) {
        (Some(spec), _) => Ok(generate(spec, args.seed)?),
        (None, Some(path)) => Ok(crate::wfcommons::load(path)?),
        (None, None) => Err(CliError::NoWorkload),
    }
}

/// Runs `shoal sim` with `args`, writing a report (and with `--json`, a final JSON line) to `out`.
pub fn run(args: &SimArgs, out: &mut dyn Write) -> Result<Metrics, CliError> {
    let dag = workload(args)?;
    let mut cfg = SimConfig::new(args.peers, args.topology, args.seed);
    cfg.peer.slots = args.slots.max(1);
    cfg.scheduler = args.scheduler;
    cfg.kill = args.kill;
    cfg.faults = crate::world::NetFaults { loss: args.loss, duplicate: args.duplicate, reorder: args.reorder };
    let m = simulate(&dag, &cfg)?;
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
    if args.json {
        let line = serde_json::to_string(&m).map_err(|e| CliError::Io(e.into()))?;
        writeln!(out, "{line}")?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn parses_the_documented_flags() {
        <Cli as clap::CommandFactory>::command().debug_assert();
        let cli = Cli::try_parse_from([
            "shoal-sim",
            "--dag",
            "tree:8",
            "--peers",
            "5",
            "--slots",
            "2",
            "--topology",
            "wan",
            "--seed",
            "9",
            "--scheduler",
            "central",
            "--kill",
            "0.125@0.5",
            "--json",
        ])
        .unwrap();
        let a = cli.sim;
        assert_eq!((a.dag.as_deref(), a.peers, a.slots, a.seed), (Some("tree:8"), 5, 2, 9));
        assert_eq!((a.topology, a.scheduler), (Topology::Wan, SchedulerKind::Central));
        assert_eq!(a.kill, Some(Kill { fraction: 0.125, progress: 0.5 }));
        assert!(a.json);
        assert!(Cli::try_parse_from(["shoal-sim"]).is_err(), "a workload is required");
        let both = ["shoal-sim", "--dag", "tree:8", "--workflow", "w.json"];
        assert!(Cli::try_parse_from(both).is_err(), "--dag and --workflow exclude each other");
    }
}
