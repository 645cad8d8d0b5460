//! `shoal submit`: compiles a job file (`shoal-sdk`), joins the swarm with an SDK [`Swarm`] whose
//! peer owns the job, waits for it and writes the wanted outputs.
//!
//! The submitting peer lives in a fresh directory under the system temp dir (its own identity, so
//! several submits never share one), removed at the end; with `--data-dir DIR` it lives in DIR
//! (locked while it runs) and keeps its identity and trust book for the next submit. On a
//! terminal, a progress bar (tasks done, throughput, ETA, running tasks and peers used) is drawn
//! on stderr; the summary line
//! (tasks, peers, makespan, CPU time, fuel) goes to stderr, a single output without `--out` to
//! stdout, and with `--json` one JSON line to stdout instead. Ctrl-C cancels the job at every peer
//! holding its tasks. Exit status: 0 when the job succeeded, 1 when it failed or was cancelled
//! (the reason names the task), 2 for anything else (bad file, unreachable bootstrap, I/O).
//! With `--http [ADDR]` the submitting peer serves its status page ([`crate::page`]) and
//! `status page: http://ADDR/#job=<id>` is printed on stderr once the job is submitted; the page
//! stays up [`PAGE_LINGER`] after the job ends so open pages show its final state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use shoal_net::Bootstrap;
use shoal_sdk::{JobOutputs, Swarm, SwarmConfig};

/// Arguments of `shoal submit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal submit primes.toml --bootstrap 192.0.2.10:7600 --out results/\n  \
    shoal submit primes.toml            # no bootstrap: runs on this machine alone\n  \
    shoal submit primes.toml --bootstrap 192.0.2.10:7600 --http   # and watch it on a status page")]
pub(crate) struct SubmitArgs {
    /// The job file (TOML; see docs/job-files.md).
    jobfile: PathBuf,
    /// Address (IP:PORT) or name (HOST:PORT) of a peer in the swarm; repeat for several. None:
    /// run the job on this machine.
    #[arg(long, value_name = "ADDR")]
    bootstrap: Vec<Bootstrap>,
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
    /// The swarm secret's file, to submit to a private swarm (the workers' `--swarm-secret`).
    #[arg(long, value_name = "FILE", env = "SHOAL_SWARM_SECRET")]
    swarm_secret: Option<PathBuf>,
    /// Sign the job with this key (`shoal key new`): workers that list its public form in their
    /// trusted_submitters run it.
    #[arg(long, value_name = "FILE", env = "SHOAL_SIGN_KEY")]
    sign_key: Option<PathBuf>,
    /// How results are verified before they are used: none, adaptive, replicate=K or
    /// replicate=K/Q (overrides the job file's [verify]; default: adaptive in an open swarm,
    /// none in a private one; docs/verification.md).
    #[arg(long, value_name = "POLICY", value_parser = shoal_core::sched::VerifyPolicy::parse)]
    verify: Option<shoal_core::sched::VerifyPolicy>,
    /// Keep the submitting peer in DIR (its identity and its trust book: what its jobs learned of
    /// which peers agree with its own runs), so later submits from DIR check less; default: a
    /// fresh directory, removed at the end.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve the submitting peer's live status page at ADDR (`--http` alone: 127.0.0.1:7680);
    /// its address for the job is printed on stderr. Put the job file before a bare `--http`.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::settings::DEFAULT_HTTP)]
    http: Option<SocketAddr>,
    /// Submit, wait until the job's deputies hold it, hand it to one of them and exit: the job
    /// runs on without this process. The job id is printed alone on the last line of stdout
    /// (`job_id` with --json); follow it with `shoal job wait ID`.
    #[arg(long, conflicts_with_all = ["out", "http"])]
    detach: bool,
}

/// The `--json` summary.
#[derive(Debug, serde::Serialize)]
struct Summary {
    status: &'static str,
    tasks: usize,
    peers_used: usize,
    elapsed_ms: f64,
    cpu_ms: f64,
    fuel: u64,
    /// Runs made only to check another's result (verification), in `fuel` too.
    verify_runs: u64,
    /// Tasks whose runs disagreed (a peer returned a wrong result).
    disagreements: u64,
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
    let mut compiled = shoal_sdk::load_job_file(&args.jobfile)?;
    if let Some(policy) = args.verify {
        compiled.job = compiled.job.with_verify(policy);
    }
    if let Some(path) = &args.sign_key {
        let key = shoal_sdk::SigningKey::read(path)?;
        compiled = compiled.sign(&key);
    }
    if args.detach {
        anyhow::ensure!(
            !args.bootstrap.is_empty(),
            "--detach hands the job to other peers: give --bootstrap ADDR of a swarm to run it"
        );
    } else if args.out.is_none() && compiled.outputs.len() > 1 {
        anyhow::bail!("the job has {} outputs: give --out DIR to write them", compiled.outputs.len());
    }
    let kept = args.data_dir.is_some();
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("shoal-submit-{}", std::process::id())),
    };
    // A kept directory holds one peer identity: one submit (or worker) at a time uses it.
    let _lock = if kept {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Some(crate::control::DataDirLock::acquire(&dir)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if args.detach {
        let result = runtime.block_on(submit_detached(&args, &dir, compiled));
        if !kept {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (id, owner) = result?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"status": "detached", "job_id": id.to_string(), "owner": owner.to_string()})
            );
        } else {
            eprintln!(
                "job handed to peer {}; follow it with: shoal job wait {id} --bootstrap ADDR",
                owner.short()
            );
            println!("{id}");
        }
        return Ok(0);
    }
    let result = runtime.block_on(submit(&args, &dir, compiled));
    if !kept {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (tasks, outcome) = result?;
    write_results(&args, tasks, outcome)
}

/// How long the status page stays up after the job ended (pages update every 0.5 s at most).
const PAGE_LINGER: Duration = Duration::from_secs(1);

pub(crate) type Outcome = Result<JobOutputs, shoal_sdk::JobError>;

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
        http: args.http,
        swarm_secret: args.swarm_secret.as_deref().map(read_swarm_secret).transpose()?,
    };
    submit_compiled(&how, dir, compiled).await
}

/// How long `--detach` waits for the job's deputies to hold it.
const DETACH_PATIENCE: Duration = Duration::from_secs(60);

/// Submits the job, waits for its deputies, hands it over and leaves; returns the job's id and
/// its new owner.
async fn submit_detached(
    args: &SubmitArgs,
    dir: &Path,
    compiled: shoal_sdk::CompiledJob,
) -> anyhow::Result<(shoal_core::ids::JobId, shoal_core::ids::PeerId)> {
    let mut cfg = SwarmConfig { data_dir: Some(dir.to_path_buf()), ..SwarmConfig::default() };
    cfg.cores = args.cores;
    (cfg.bootstrap, cfg.bootstrap_names) = Bootstrap::split(&args.bootstrap);
    cfg.join_timeout = args.join_timeout;
    cfg.swarm_secret = args.swarm_secret.as_deref().map(read_swarm_secret).transpose()?;
    let swarm = Swarm::join(cfg).await?;
    let submission = match swarm.submit(compiled).await {
        Ok(s) => s,
        Err(e) => {
            swarm.shutdown().await;
            return Err(e.into());
        }
    };
    let id = submission.id();
    let owner = submission.detach(DETACH_PATIENCE).await;
    swarm.shutdown().await;
    Ok((id, owner.context("cannot detach from the job; it was cancelled")?))
}

/// How [`submit_compiled`] joins the swarm.
#[derive(Debug)]
pub(crate) struct SubmitOptions {
    /// Peers to join through; none runs the job on the submitting peer alone.
    pub(crate) bootstrap: Vec<Bootstrap>,
    /// Cores the submitting peer donates (0: it only owns the job).
    pub(crate) cores: u32,
    /// How long to wait for a bootstrap peer to answer.
    pub(crate) join_timeout: Duration,
    /// Show a progress bar on stderr.
    pub(crate) show_progress: bool,
    /// The private swarm's secret, if it has one.
    pub(crate) swarm_secret: Option<Vec<u8>>,
    /// Serve the submitting peer's status page here.
    pub(crate) http: Option<SocketAddr>,
}

/// Joins the swarm with an SDK [`Swarm`] whose peer lives in `dir`, submits `compiled`, shows
/// its progress and waits for it; returns the number of tasks and the job's outcome. The peer
/// leaves the swarm before this returns. Ctrl-C cancels the job (its holders drop its tasks).
pub(crate) async fn submit_compiled(
    how: &SubmitOptions,
    dir: &Path,
    compiled: shoal_sdk::CompiledJob,
) -> anyhow::Result<(usize, Outcome)> {
    let mut cfg = SwarmConfig { data_dir: Some(dir.to_path_buf()), ..SwarmConfig::default() };
    cfg.cores = how.cores;
    (cfg.bootstrap, cfg.bootstrap_names) = Bootstrap::split(&how.bootstrap);
    cfg.join_timeout = how.join_timeout;
    cfg.swarm_secret.clone_from(&how.swarm_secret);
    let swarm = Swarm::join(cfg).await?;
    let page = match how.http {
        Some(addr) => {
            match crate::page::serve(addr, swarm.peer().monitor(), crate::page::Role::Submitter).await {
                Ok(page) => Some(page),
                Err(e) => {
                    swarm.shutdown().await;
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let tasks = compiled.job.len();
    let submission = match swarm.submit(compiled).await {
        Ok(s) => s,
        Err(e) => {
            swarm.shutdown().await;
            return Err(e.into());
        }
    };
    if let Some(page) = &page {
        eprintln!("status page: {}#job={}", page.url(), submission.id());
    }
    // Its id, before anything else can happen to this process: the job outlives it
    // (`shoal job wait ID` from anywhere).
    eprintln!("job {} submitted", submission.id());
    let bar = how.show_progress.then(|| progress_bar(tasks));
    let mut stream = submission.progress_stream();
    let reporter = bar.clone().map(|bar| {
        tokio::spawn(async move {
            while let Some(p) = stream.next().await {
                bar.set_position(p.done as u64);
                let deputies = match p.deputies {
                    0 => String::new(),
                    1 => ", 1 deputy holds it".to_string(),
                    n => format!(", {n} deputies hold it"),
                };
                bar.set_message(format!("{} running, {} used{deputies}", p.running, peers(p.peers_used)));
            }
        })
    });
    let outcome = tokio::select! {
        outcome = submission.outputs() => outcome,
        _ = tokio::signal::ctrl_c() => Err(shoal_sdk::JobError::Cancelled),
    };
    if let Some(r) = reporter {
        r.abort();
    }
    if let Some(bar) = bar {
        if let Ok(out) = &outcome {
            bar.set_position(out.progress.done as u64);
        }
        bar.finish_and_clear();
    }
    if page.is_some() {
        // Let open pages receive the job's final state before the peer and its page go.
        tokio::time::sleep(PAGE_LINGER).await;
    }
    swarm.shutdown().await;
    Ok((tasks, outcome))
}

/// A bar for `tasks` tasks with throughput and ETA, drawn on stderr when it is a terminal.
fn progress_bar(tasks: usize) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(tasks as u64), indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks · {rate} · ETA {eta} · {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.1} tasks/s", state.per_sec());
    });
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One line saying what the job took: tasks, peers, makespan, CPU time (with the parallelism it
/// implies) and fuel.
pub(crate) fn summary_line(tasks: usize, out: &JobOutputs) -> String {
    let p = &out.progress;
    let makespan = out.elapsed.as_secs_f64();
    let cpu = p.cpu_time.as_secs_f64();
    let parallel = if makespan > 0.0 { cpu / makespan } else { 0.0 };
    format!(
        "{tasks} tasks on {}: makespan {makespan:.2} s, CPU time {cpu:.2} s ({parallel:.1}x parallel), fuel {}",
        peers(p.peers_used),
        fuel_text(p.fuel_used)
    )
}

/// "1 peer", "3 peers".
fn peers(n: usize) -> String {
    if n == 1 { "1 peer".to_string() } else { format!("{n} peers") }
}

/// `1.23e9`-style fuel, readable at a glance.
fn fuel_text(fuel: u64) -> String {
    if fuel < 10_000 { fuel.to_string() } else { format!("{:.2e}", fuel as f64) }
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
                    cpu_ms: 0.0,
                    fuel: 0,
                    verify_runs: 0,
                    disagreements: 0,
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
            cpu_ms: out.progress.cpu_time.as_secs_f64() * 1e3,
            fuel: out.progress.fuel_used,
            verify_runs: out.progress.verify_runs,
            disagreements: out.progress.disagreements,
            outputs,
            error: None,
        };
        println!("{}", serde_json::to_string(&s)?);
    } else {
        eprintln!("{}", summary_line(tasks, &out));
        for o in outputs.iter().filter(|o| o.path.is_some()) {
            if let Some(path) = &o.path {
                eprintln!("{}: {} bytes -> {}", o.task, o.bytes, path.display());
            }
        }
    }
    Ok(0)
}

/// The swarm secret in the file at `path` (its bytes, as the workers read it); an unreadable or
/// empty file is an error naming it.
pub(crate) fn read_swarm_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let secret =
        std::fs::read(path).with_context(|| format!("cannot read the swarm secret {}", path.display()))?;
    anyhow::ensure!(!secret.is_empty(), "the swarm secret file {} is empty", path.display());
    Ok(secret)
}
