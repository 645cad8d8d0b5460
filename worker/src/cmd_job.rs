//! `shoal job status|wait|cancel|list`: follow jobs from any process that can reach the swarm —
//! a job submitted with `shoal submit --detach`, from another machine, or one whose submitter
//! died. The command joins the swarm with a peer of its own (donating nothing), asks the peers
//! in view, believes the owner of the job's highest term, and leaves.
//!
//! Exit status: 0 when the job is done (or, for `status` and `list`, when the answer came), 1
//! when it failed or was cancelled (`wait`), 2 for anything else (unknown job, unreachable
//! swarm, bad arguments).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use shoal_core::ids::JobId;
use shoal_sdk::{JobPhase, JobReport, Swarm, SwarmConfig};

/// Arguments of `shoal job`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal submit big.toml --bootstrap 192.0.2.10:7600 --detach     # prints the job id\n  \
    shoal job status 5f0c…e1 --bootstrap 192.0.2.10:7600\n  \
    shoal job wait 5f0c…e1 --bootstrap 192.0.2.10:7600 --out results/\n  \
    shoal job cancel 5f0c…e1 --bootstrap 192.0.2.10:7600 --sign-key me.key\n  \
    shoal job list --bootstrap 192.0.2.10:7600 --json")]
pub(crate) struct JobArgs {
    #[command(subcommand)]
    command: JobCommand,
    #[command(flatten)]
    swarm: SwarmArgs,
}

#[derive(Debug, clap::Subcommand)]
enum JobCommand {
    /// How a job stands: its owner, term, deputies and tasks done.
    Status {
        /// The job id (`shoal submit --detach` prints it).
        id: JobId,
    },
    /// Wait for a job to end and write its outputs.
    Wait {
        /// The job id.
        id: JobId,
        /// Write each output to DIR/<task name> (default: a single output goes to stdout).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Give up if no peer knows the job for this long.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::units::parse_duration)]
        patience: Duration,
    },
    /// Cancel a job (signed by its submitter: the job's signing key, or for an unsigned job the
    /// submitting peer's identity, kept with `shoal submit --data-dir DIR` and given here with
    /// the same --data-dir).
    Cancel {
        /// The job id.
        id: JobId,
        /// The key the job was signed with.
        #[arg(long, value_name = "FILE", env = "SHOAL_SIGN_KEY")]
        sign_key: Option<PathBuf>,
    },
    /// Every job the peers in view own, deputize for or finished recently.
    List,
}

/// How `shoal job` reaches the swarm.
#[derive(Debug, clap::Args)]
pub(crate) struct SwarmArgs {
    /// Address (IP:PORT) or name (HOST:PORT) of a peer in the swarm; repeat for several.
    #[arg(long, value_name = "ADDR", global = true)]
    bootstrap: Vec<shoal_net::Bootstrap>,
    /// The swarm secret's file, for a private swarm.
    #[arg(long, value_name = "FILE", env = "SHOAL_SWARM_SECRET", global = true)]
    swarm_secret: Option<PathBuf>,
    /// How long to wait for the swarm to answer.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::units::parse_duration, global = true)]
    join_timeout: Duration,
    /// The peer's directory (its identity: the one that submitted an unsigned job may cancel
    /// it); default: a fresh one, removed at the end.
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
}

/// Runs the command; returns the process exit status.
pub(crate) fn run(args: JobArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(
        !args.swarm.bootstrap.is_empty(),
        "give --bootstrap ADDR: the address of a peer in the swarm that runs the job"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: JobArgs) -> anyhow::Result<u8> {
    let s = &args.swarm;
    let _lock = match &s.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            Some(crate::control::DataDirLock::acquire(d)?)
        }
        None => None,
    };
    let mut cfg = SwarmConfig { data_dir: s.data_dir.clone(), ..SwarmConfig::default() };
    (cfg.bootstrap, cfg.bootstrap_names) = shoal_net::Bootstrap::split(&s.bootstrap);
    cfg.join_timeout = s.join_timeout;
    cfg.swarm_secret = s.swarm_secret.as_deref().map(crate::cmd_submit::read_swarm_secret).transpose()?;
    let swarm = Swarm::join(cfg).await?;
    // Let membership show the rest of the swarm (the job's owner may not be the bootstrap peer).
    settle_view(&swarm).await;
    let result = command(&args, &swarm).await;
    swarm.shutdown().await;
    result
}

/// Waits until the view stops growing (at most 3 s): the owner of a job may be any peer.
async fn settle_view(swarm: &Swarm) {
    let mut last = 0;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = swarm.peer().node().view().len();
        if n == last && n > 0 {
            break;
        }
        last = n;
    }
}

async fn command(args: &JobArgs, swarm: &Swarm) -> anyhow::Result<u8> {
    let json = args.swarm.json;
    match &args.command {
        JobCommand::Status { id } => {
            let report = swarm.attach(*id).status().await?;
            if json {
                println!("{}", serde_json::to_string(&report_json(&report))?);
            } else {
                println!("{}", report_text(&report));
            }
            Ok(0)
        }
        JobCommand::List => {
            let jobs = swarm.jobs().await;
            if json {
                let all: Vec<_> = jobs.iter().map(report_json).collect();
                println!("{}", serde_json::to_string(&all)?);
            } else if jobs.is_empty() {
                eprintln!("no peer in view owns or holds a job");
            } else {
                for r in &jobs {
                    println!("{}", report_text(r));
                }
            }
            Ok(0)
        }
        JobCommand::Cancel { id, sign_key } => {
            let key = sign_key.as_deref().map(shoal_sdk::SigningKey::read).transpose()?;
            let owner = swarm.attach(*id).cancel(key.as_ref()).await?;
            // The owner says so in its next report; give it a moment.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let report = swarm.attach(*id).status().await?;
            let cancelled = report.phase == JobPhase::Cancelled;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"job_id": id.to_string(), "owner": owner.to_string(), "cancelled": cancelled})
                );
            } else if cancelled {
                eprintln!("job {id} cancelled");
            } else {
                eprintln!(
                    "job {id}: the owner did not cancel it ({}): only the job's submitter may (its --sign-key, or the --data-dir it was submitted from)",
                    report.phase.name()
                );
            }
            Ok(if cancelled { 0 } else { 1 })
        }
        JobCommand::Wait { id, out, patience } => {
            let attached = swarm.attach(*id);
            let mut last_done = u32::MAX;
            let report = attached
                .wait(*patience, |r| {
                    if !json && r.done != last_done {
                        last_done = r.done;
                        eprintln!(
                            "job {}: {}/{} tasks done ({}, owner {} term {})",
                            r.job,
                            r.done,
                            r.total,
                            r.phase.name(),
                            r.owner.short(),
                            r.term
                        );
                    }
                })
                .await?;
            if report.phase != JobPhase::Done {
                if json {
                    println!("{}", serde_json::to_string(&report_json(&report))?);
                }
                eprintln!(
                    "shoal job wait: job {id} {}",
                    match &report.phase {
                        JobPhase::Failed(why) => format!("failed: {why}"),
                        _ => "was cancelled".to_string(),
                    }
                );
                return Ok(1);
            }
            let outputs = swarm.peer().fetch_outputs(&report).await.map_err(anyhow::Error::msg)?;
            if out.is_none() && outputs.len() > 1 {
                anyhow::bail!("the job has {} outputs: give --out DIR to write them", outputs.len());
            }
            if let Some(dir) = out {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut listed = Vec::new();
            for (name, bytes) in &outputs {
                match out {
                    Some(dir) => {
                        let path = dir.join(name);
                        std::fs::write(&path, bytes)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        if !json {
                            eprintln!("{name}: {} bytes -> {}", bytes.len(), path.display());
                        }
                    }
                    None if !json => {
                        use std::io::Write;
                        let mut stdout = std::io::stdout().lock();
                        stdout
                            .write_all(bytes)
                            .and_then(|()| stdout.flush())
                            .context("cannot write to stdout")?;
                    }
                    None => {}
                }
                listed.push(serde_json::json!({
                    "task": name, "bytes": bytes.len(), "blake3": blake3::hash(bytes).to_hex().to_string(),
                }));
            }
            if json {
                let mut v = report_json(&report);
                v["outputs"] = serde_json::Value::Array(listed);
                println!("{}", serde_json::to_string(&v)?);
            }
            Ok(0)
        }
    }
}

/// One line for a person.
fn report_text(r: &JobReport) -> String {
    let phase = match &r.phase {
        JobPhase::Failed(why) => format!("failed: {why}"),
        p => p.name().to_string(),
    };
    format!(
        "job {}: {phase}, {}/{} tasks done, {} running; owner {} (term {}), deputies {}",
        r.job,
        r.done,
        r.total,
        r.running,
        r.owner.short(),
        r.term,
        if r.deputies.is_empty() {
            "none".to_string()
        } else {
            r.deputies.iter().map(|d| d.short()).collect::<Vec<_>>().join(", ")
        }
    )
}

/// The `--json` form of a report.
fn report_json(r: &JobReport) -> serde_json::Value {
    let error = match &r.phase {
        JobPhase::Failed(why) => Some(why.clone()),
        _ => None,
    };
    serde_json::json!({
        "job_id": r.job.to_string(),
        "status": r.phase.name(),
        "error": error,
        "total": r.total,
        "done": r.done,
        "running": r.running,
        "fuel": r.fuel_used,
        "owner": r.owner.to_string(),
        "term": r.term,
        "deputies": r.deputies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "submitter": r.submitter.to_string(),
        "signed_by": r.submitter_key.map(|k| shoal_core::ids::SubmitterKey(k).to_string()),
    })
}
