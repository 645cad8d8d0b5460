//! `shoal submit`: compiles a job file (`shoal-sdk`), starts a peer that joins the swarm and owns
//! the job, waits for it and writes the wanted outputs.
//!
//! The submitting peer lives in a fresh directory under the system temp dir (its own identity, so
//! several submits never share one), removed at the end. Progress goes to stderr, the summary to
//! stdout. Exit status: 0 when the job succeeded, 1 when it failed (the reason names the task),
//! 2 for anything else (bad file, unreachable bootstrap, I/O).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use shoal_node::{Config, JobOutputs, Peer};

/// Arguments of `shoal submit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal submit primes.toml --bootstrap 192.0.2.10:7600 --out results/\n  \
    shoal submit primes.toml            # no bootstrap: runs on this machine alone")]
pub(crate) struct SubmitArgs {
    /// The job file (TOML; see docs/job-files.md).
    jobfile: PathBuf,
    /// Address of a peer in the swarm; repeat for several. None: run the job on this machine.
    #[arg(long, value_name = "ADDR")]
    bootstrap: Vec<SocketAddr>,
    /// Write each wanted output to DIR/<task name> (default: a single output goes to stdout).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Cores the submitting peer donates to the job itself.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cores: u32,
    /// How long to wait for the swarm to answer before giving up, e.g. 10s.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = crate::units::parse_duration)]
    join_timeout: Duration,
    /// Print a one-line JSON summary on stdout instead of the text one.
    #[arg(long)]
    json: bool,
}

/// The `--json` summary.
#[derive(Debug, serde::Serialize)]
struct Summary {
    status: &'static str,
    tasks: usize,
    peers_used: usize,
    elapsed_ms: f64,
    outputs: Vec<OutputSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct OutputSummary {
    task: String,
    bytes: usize,
    blake3: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
}

/// Runs the command; returns the process exit status.
pub(crate) fn run(args: SubmitArgs) -> anyhow::Result<u8> {
    let compiled = shoal_sdk::load_job_file(&args.jobfile)?;
    if args.out.is_none() && compiled.outputs.len() > 1 {
        anyhow::bail!("the job has {} outputs: give --out DIR to write them", compiled.outputs.len());
    }
    let dir = std::env::temp_dir().join(format!("shoal-submit-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(submit(&args, &dir, compiled));
    let _ = std::fs::remove_dir_all(&dir);
    let (tasks, outcome) = result?;
    write_results(&args, tasks, outcome)
}

pub(crate) type Outcome = Result<JobOutputs, shoal_node::JobError>;

async fn submit(
    args: &SubmitArgs,
    dir: &Path,
    compiled: shoal_sdk::CompiledJob,
) -> anyhow::Result<(usize, Outcome)> {
    let how = SubmitOptions {
        bootstrap: args.bootstrap.clone(),
        cores: args.cores,
        join_timeout: args.join_timeout,
        show_progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    submit_compiled(&how, dir, compiled).await
}

/// How [`submit_compiled`] joins the swarm.
#[derive(Debug)]
pub(crate) struct SubmitOptions {
    /// Peers to join through; none runs the job on the submitting peer alone.
    pub(crate) bootstrap: Vec<SocketAddr>,
    /// Cores the submitting peer donates (0: it only owns the job).
    pub(crate) cores: u32,
    /// How long to wait for a bootstrap peer to answer.
    pub(crate) join_timeout: Duration,
    /// Show a progress line on stderr.
    pub(crate) show_progress: bool,
}

/// Starts a peer in `dir` that joins the swarm, owns `compiled` and waits for it; returns the
/// number of tasks and the job's outcome.
pub(crate) async fn submit_compiled(
    how: &SubmitOptions,
    dir: &Path,
    compiled: shoal_sdk::CompiledJob,
) -> anyhow::Result<(usize, Outcome)> {
    let mut cfg = Config::new(dir);
    cfg.cores = how.cores;
    cfg.memory = u64::from(how.cores.max(1)) * (256 << 20);
    cfg.net.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    cfg.net.bootstrap = how.bootstrap.clone();
    let peer = Peer::start(cfg).await.context("cannot start the submitting peer")?;
    if !how.bootstrap.is_empty() {
        let joined = tokio::time::timeout(how.join_timeout, async {
            while peer.node().view().is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if joined.is_err() {
            peer.kill().await;
            let addrs: Vec<String> = how.bootstrap.iter().map(ToString::to_string).collect();
            anyhow::bail!("no peer answered at {} within {:?}", addrs.join(", "), how.join_timeout);
        }
    }
    let tasks = compiled.job.len();
    let wanted = compiled.outputs.iter().map(|(_, i)| *i).collect();
    let handle = peer.submit_with_outputs(compiled.job, compiled.blobs, wanted).await?;
    let mut progress = handle.watch_progress();
    let reporter = how.show_progress.then(|| {
        tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                let p = *progress.borrow_and_update();
                eprint!("\r{}/{} tasks done, {} running, {} peers", p.done, p.total, p.running, p.peers_used);
            }
        })
    });
    let outcome = handle.wait().await;
    if let Some(r) = reporter {
        r.abort();
        eprintln!();
    }
    peer.shutdown().await;
    Ok((tasks, outcome))
}

fn write_results(args: &SubmitArgs, tasks: usize, outcome: Outcome) -> anyhow::Result<u8> {
    let out = match outcome {
        Ok(out) => out,
        Err(e) => {
            if args.json {
                let s = Summary {
                    status: "failed",
                    tasks,
                    peers_used: 0,
                    elapsed_ms: 0.0,
                    outputs: Vec::new(),
                    error: Some(e.to_string()),
                };
                println!("{}", serde_json::to_string(&s)?);
            }
            eprintln!("shoal submit: job failed: {e}");
            return Ok(1);
        }
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut outputs = Vec::new();
    for (task, bytes) in &out.outputs {
        let path = match &args.out {
            Some(dir) => {
                let path = dir.join(task);
                std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
                Some(path)
            }
            None if !args.json => {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(bytes).and_then(|()| stdout.flush()).context("cannot write to stdout")?;
                None
            }
            None => None,
        };
        let blake3 = blake3::hash(bytes).to_hex().to_string();
        outputs.push(OutputSummary { task: task.clone(), bytes: bytes.len(), blake3, path });
    }
    let elapsed_ms = out.elapsed.as_secs_f64() * 1e3;
    if args.json {
        let s = Summary {
            status: "ok",
            tasks,
            peers_used: out.progress.peers_used,
            elapsed_ms,
            outputs,
            error: None,
        };
        println!("{}", serde_json::to_string(&s)?);
    } else {
        eprintln!("{tasks} tasks on {} peers in {elapsed_ms:.0} ms", out.progress.peers_used);
        for o in outputs.iter().filter(|o| o.path.is_some()) {
            if let Some(path) = &o.path {
                eprintln!("{}: {} bytes -> {}", o.task, o.bytes, path.display());
            }
        }
    }
    Ok(0)
}
