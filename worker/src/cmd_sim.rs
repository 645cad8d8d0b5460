//! `shoal sim`: the simulator's command line (clap) over the plain [`shoal_sim::report`] API.

use std::path::PathBuf;

use shoal_sim::net::Topology;
use shoal_sim::report::{RunSpec, parse_kill, parse_liars, parse_progress};
use shoal_sim::sched_config::VerifyPolicy;
use shoal_sim::{Kill, KillOwner, Liars, NetFaults, SchedulerKind};

/// Network topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Topo {
    /// One data centre: 0.2 ms RTT, 1 Gbit/s.
    Lan,
    /// Five regions: 20 ms RTT inside a region, 40–200 ms between, 100 Mbit/s.
    Wan,
}

/// Scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Sched {
    /// Shoal: owner + decentralised work stealing.
    Shoal,
    /// Central list scheduler with global knowledge (HEFT-style).
    Central,
    /// Random placement.
    Random,
}

/// Arguments of `shoal sim`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct SimArgs {
    /// DAG to generate, KIND:PARAMS (tree:LEAVES, forkjoin:WIDTH,STAGES, cholesky:TILES,
    /// wavefront:SIDE, layered:TASKS,LAYERS,CCR_PERCENT, mapreduce:MAPPERS,REDUCERS); several
    /// joined by `+` take turns over --jobs.
    #[arg(long, conflicts_with = "workflow", required_unless_present = "workflow")]
    dag: Option<String>,
    /// WfCommons workflow trace (JSON, schema 1.5+) to run instead of a generated DAG.
    #[arg(long)]
    workflow: Option<PathBuf>,
    /// Number of peers.
    #[arg(long, default_value_t = 64)]
    peers: usize,
    /// Task slots per peer.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// Network topology.
    #[arg(long, value_enum, default_value_t = Topo::Lan)]
    topology: Topo,
    /// Seed: the same seed gives the same run, event for event.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scheduler.
    #[arg(long, value_enum, default_value_t = Sched::Shoal)]
    scheduler: Sched,
    /// Kill FRACTION of the peers when PROGRESS of the tasks are done, e.g. 0.125@0.5.
    #[arg(long, value_parser = parse_kill)]
    kill: Option<Kill>,
    /// Kill the job's owner when PROGRESS (0..1) of the tasks are done: a deputy takes the job
    /// over. The same seed also runs without kills, and the report gives the recovery overhead.
    #[arg(long, value_name = "PROGRESS", value_parser = parse_progress)]
    kill_owner: Option<f64>,
    /// With --kill-owner: kill the owner's first deputy at the same moment (the second takes over).
    #[arg(long, requires = "kill_owner")]
    kill_deputy: bool,
    /// Deputies the job's owner keeps, replicating its journal (0: none; the job then dies with
    /// its owner).
    #[arg(long, default_value_t = 2)]
    deputies: usize,
    /// Probability that a message between peers is lost for good, e.g. 0.01.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    loss: f64,
    /// Probability that a message between peers is delivered twice.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    duplicate: f64,
    /// Delay every message by up to one more RTT at random, so messages overtake each other.
    #[arg(long)]
    reorder: bool,
    /// End with one line of JSON holding every metric.
    #[arg(long)]
    json: bool,
    /// Jobs to run one after another in the same swarm (same peers and liars, the owner's trust
    /// book carried over); job J has seed SEED+J. The report sums them.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// FRACTION of the peers (never the owner) report wrong results, MODE consistent (default),
    /// random (each result wrong with probability 0.5), collude (all the same wrong bytes) or
    /// turncoat (honest for the first half of --jobs, then consistent).
    #[arg(long, value_name = "FRACTION[:MODE]", value_parser = parse_liars)]
    liars: Option<Liars>,
    /// How the owner verifies results: none, adaptive, replicate=K (majority) or replicate=K/Q.
    #[arg(long, default_value = "none", value_parser = VerifyPolicy::parse)]
    verify: VerifyPolicy,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.0..=1.0).contains(&p) { Ok(p) } else { Err(format!("need 0 <= P <= 1, got {s:?}")) }
}

impl SimArgs {
    fn spec(&self) -> RunSpec {
        RunSpec {
            dag: self.dag.clone(),
            workflow: self.workflow.clone(),
            peers: self.peers,
            slots: self.slots,
            topology: match self.topology {
                Topo::Lan => Topology::Lan,
                Topo::Wan => Topology::Wan,
            },
            seed: self.seed,
            scheduler: match self.scheduler {
                Sched::Shoal => SchedulerKind::Shoal,
                Sched::Central => SchedulerKind::Central,
                Sched::Random => SchedulerKind::Random,
            },
            kill: self.kill,
            kill_owner: self
                .kill_owner
                .map(|progress| KillOwner { progress, first_deputy: self.kill_deputy }),
            deputies: self.deputies,
            faults: NetFaults { loss: self.loss, duplicate: self.duplicate, reorder: self.reorder },
            json: self.json,
            jobs: self.jobs,
            liars: self.liars,
            verify: self.verify,
        }
    }
}

/// Runs `shoal sim`, printing the report on stdout.
pub(crate) fn run(args: SimArgs) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout().lock();
    shoal_sim::report::run(&args.spec(), &mut stdout)?;
    Ok(0)
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
            "--loss",
            "0.01",
            "--duplicate",
            "0.005",
            "--reorder",
            "--json",
            "--jobs",
            "3",
            "--liars",
            "0.3:collude",
            "--verify",
            "replicate=3",
        ])
        .unwrap();
        let a = cli.sim.spec();
        assert_eq!((a.dag.as_deref(), a.peers, a.slots, a.seed), (Some("tree:8"), 5, 2, 9));
        assert_eq!((a.topology, a.scheduler), (Topology::Wan, SchedulerKind::Central));
        assert_eq!(a.kill, Some(Kill { fraction: 0.125, progress: 0.5 }));
        assert_eq!(a.faults, NetFaults { loss: 0.01, duplicate: 0.005, reorder: true });
        assert!(a.json);
        assert_eq!(a.jobs, 3);
        assert_eq!(a.liars, Some(Liars { fraction: 0.3, mode: shoal_sim::LieMode::Collude }));
        assert_eq!(a.verify, VerifyPolicy::Replicate { k: 3, quorum: 2 });
        assert!(Cli::try_parse_from(["shoal-sim", "--dag", "tree:8", "--liars", "0.3:sometimes"]).is_err());
        assert!(Cli::try_parse_from(["shoal-sim", "--dag", "tree:8", "--verify", "thrice"]).is_err());
        assert!(Cli::try_parse_from(["shoal-sim"]).is_err(), "a workload is required");
        let both = ["shoal-sim", "--dag", "tree:8", "--workflow", "w.json"];
        assert!(Cli::try_parse_from(both).is_err(), "--dag and --workflow exclude each other");
        assert!(Cli::try_parse_from(["shoal-sim", "--dag", "tree:8", "--loss", "2"]).is_err());
        assert_eq!((a.kill_owner, a.deputies), (None, 2), "deputies by default, the owner lives");
    }

    #[test]
    fn parses_the_owner_kill_flags() {
        let cli = Cli::try_parse_from([
            "shoal-sim",
            "--dag",
            "cholesky:12",
            "--kill-owner",
            "0.5",
            "--kill-deputy",
            "--deputies",
            "3",
            "--kill",
            "0.125@0.5",
        ])
        .unwrap();
        let a = cli.sim.spec();
        assert_eq!(a.kill_owner, Some(KillOwner { progress: 0.5, first_deputy: true }));
        assert_eq!(a.deputies, 3);
        assert_eq!(a.kill, Some(Kill { fraction: 0.125, progress: 0.5 }));
        let a =
            Cli::try_parse_from(["shoal-sim", "--dag", "tree:8", "--kill-owner", "0.1"]).unwrap().sim.spec();
        assert_eq!((a.kill_owner, a.deputies), (Some(KillOwner { progress: 0.1, first_deputy: false }), 2));
        let off =
            Cli::try_parse_from(["shoal-sim", "--dag", "tree:8", "--deputies", "0"]).unwrap().sim.spec();
        assert_eq!(off.deputies, 0);
        for bad in ["1.5", "-0.1", "half"] {
            assert!(
                Cli::try_parse_from(["shoal-sim", "--dag", "tree:8", "--kill-owner", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(
            Cli::try_parse_from(["shoal-sim", "--dag", "tree:8", "--kill-deputy"]).is_err(),
            "--kill-deputy needs --kill-owner"
        );
    }
}
