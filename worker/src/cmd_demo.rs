//! `shoal demo`: a real swarm on this machine computing a picture, or any job file.
//!
//! Starts `--peers` separate `shoal worker` processes on loopback (so every task and result
//! really crosses QUIC between processes), submits a job from an owning peer that donates no
//! cores, prints or writes its outputs and a summary. Without `--job` the job is a built-in
//! Mandelbrot render (tiles rendered by the workers, then one task stitching them into a PNG),
//! whose modules are built into the binary, so it works on a fresh clone with nothing installed
//! beyond Rust. With `--job FILE` it is that job file (docs/job-files.md): each wanted output that
//! is short UTF-8 text is printed, the others are written to `--out`. Workers are stopped
//! (SIGTERM, then SIGKILL) and their data directories removed however the demo ends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cmd_submit::{Outcome, SubmitOptions, submit_compiled};

const MANDELBROT: &[u8] = include_bytes!("../../jobs/wasm/mandelbrot.wasm");
const STITCH: &[u8] = include_bytes!("../../jobs/wasm/stitch.wasm");

/// Arguments of `shoal demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal demo --peers 4 --out out/              # writes out/mandelbrot.png\n  \
    shoal demo --job examples/jobs/primes.toml   # prints 78498")]
pub(crate) struct DemoArgs {
    /// Worker processes to start.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    peers: u32,
    /// Run this job file (docs/job-files.md) instead of the built-in Mandelbrot render.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["size", "tile", "iterations"])]
    job: Option<PathBuf>,
    /// Where to write mandelbrot.png, or the outputs of --job that are not printed.
    #[arg(long, value_name = "DIR", default_value = "out")]
    out: PathBuf,
    /// Image width and height in pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=8192))]
    size: u32,
    /// Tile width and height in pixels (one task per tile).
    #[arg(long, value_name = "PIXELS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(16..=8192))]
    tile: u32,
    /// Iterations per pixel.
    #[arg(long, value_name = "N", default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    iterations: u32,
}

/// Worker processes that are stopped when this is dropped.
struct Workers {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                // One that already exited is reaped below.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The demo swarm's secret, in its directory.
const SECRET_FILE: &str = "swarm.secret";

/// Starts one `shoal worker` and returns its listening address (read from its first lines).
fn start_worker(
    workers: &mut Workers,
    index: u32,
    bootstrap: Option<SocketAddr>,
) -> anyhow::Result<SocketAddr> {
    let exe = std::env::current_exe().context("cannot find the shoal executable")?;
    let data = workers.dir.join(format!("worker-{index}"));
    let mut cmd = Command::new(exe);
    cmd.args(["worker", "--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"]).arg(&data);
    cmd.arg("--swarm-secret").arg(workers.dir.join(SECRET_FILE));
    if let Some(addr) = bootstrap {
        cmd.arg("--bootstrap").arg(addr.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start a worker process")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    workers.children.push(child);
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .context("a worker exited before it printed its address")?
            .context("cannot read a worker's output")?;
        if let Some(addr) = line.strip_prefix("listening ") {
            break addr
                .trim()
                .parse::<SocketAddr>()
                .with_context(|| format!("bad worker address {addr:?}"))?;
        }
    };
    // Keep draining the worker's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(addr)
}

/// The Mandelbrot job: one task per tile, then `stitch`, whose output (a PNG) is wanted.
fn mandelbrot_job(args: &DemoArgs) -> anyhow::Result<shoal_sdk::CompiledJob> {
    let mut job = shoal_sdk::Job::new();
    let render = job.module(MANDELBROT);
    let stitch = job.module(STITCH);
    let tiles = args.size.div_ceil(args.tile);
    let (size, tile, iters) = (args.size.to_string(), args.tile.to_string(), args.iterations.to_string());
    let mut handles = Vec::new();
    for ty in 0..tiles {
        for tx in 0..tiles {
            let t = job
                .task(format!("tile-{tx}-{ty}"), &render)
                .args([
                    size.as_str(),
                    size.as_str(),
                    tile.as_str(),
                    &tx.to_string(),
                    &ty.to_string(),
                    iters.as_str(),
                ])
                .build()?;
            handles.push(t);
        }
    }
    let png = job
        .task("mandelbrot.png", &stitch)
        .args([size.as_str(), size.as_str(), tile.as_str()])
        .inputs(&handles)
        .build()?;
    job.output(&png);
    Ok(job.compile()?)
}

/// Outputs at most this long, and valid UTF-8, are printed rather than written to a file.
const PRINT_LIMIT: usize = 1024;

/// Starts the swarm, submits `compiled` through its first worker and stops the workers; returns
/// the number of tasks and the job's outcome.
fn run_on_swarm(peers: u32, compiled: shoal_sdk::CompiledJob) -> anyhow::Result<(usize, Outcome)> {
    let dir = std::env::temp_dir().join(format!("shoal-demo-{}", std::process::id()));
    let mut workers = Workers { children: Vec::new(), dir: dir.clone() };
    // A private swarm: no stranger joins it, and its workers take the demo's unsigned job.
    let secret = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 32]>());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(SECRET_FILE), &secret).context("cannot write the demo's swarm secret")?;
    let first = start_worker(&mut workers, 0, None)?;
    for i in 1..peers {
        start_worker(&mut workers, i, Some(first))?;
    }
    eprintln!("started {peers} worker processes on loopback (first at {first})");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let how = SubmitOptions {
        bootstrap: vec![shoal_net::Bootstrap::Addr(first)],
        cores: 0,
        join_timeout: Duration::from_secs(30),
        show_progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        http: None,
        swarm_secret: Some(secret.into_bytes()),
    };
    let result = runtime.block_on(submit_compiled(&how, &dir.join("owner"), compiled));
    drop(workers);
    result
}

/// Runs the demo; returns the process exit status.
pub(crate) fn run(args: DemoArgs) -> anyhow::Result<u8> {
    if let Some(file) = &args.job {
        return run_job_file(&args, file);
    }
    let compiled = mandelbrot_job(&args)?;
    let started = Instant::now();
    let (tasks, outcome) = run_on_swarm(args.peers, compiled)?;
    let Some(out) = succeeded(outcome) else { return Ok(1) };
    let png = out.get("mandelbrot.png").context("the stitch task's output is missing")?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join("mandelbrot.png");
    std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "{} tasks ({}x{} tiles + stitch) on {} peers: job {:.0} ms, total with start-up {:.1} s",
        tasks,
        args.size.div_ceil(args.tile),
        args.size.div_ceil(args.tile),
        out.progress.peers_used,
        out.elapsed.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    println!("wrote {} ({} bytes, {}x{} PNG)", path.display(), png.len(), args.size, args.size);
    Ok(0)
}

/// The job's outputs, or `None` after saying on stderr why it failed.
fn succeeded(outcome: crate::cmd_submit::Outcome) -> Option<shoal_sdk::JobOutputs> {
    outcome.map_err(|e| eprintln!("shoal demo: job failed: {e}")).ok()
}

/// `shoal demo --job FILE`: the job file's outputs, in its order, printed or written to `--out`.
fn run_job_file(args: &DemoArgs, file: &Path) -> anyhow::Result<u8> {
    let compiled = shoal_sdk::load_job_file(file)?;
    let names: Vec<String> = compiled.outputs.iter().map(|(name, _)| name.clone()).collect();
    let started = Instant::now();
    let (tasks, outcome) = run_on_swarm(args.peers, compiled)?;
    let Some(out) = succeeded(outcome) else { return Ok(1) };
    println!(
        "{} tasks of {} on {} peers: job {:.0} ms, total with start-up {:.1} s",
        tasks,
        file.display(),
        out.progress.peers_used,
        out.elapsed.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    for name in &names {
        let bytes = out.get(name).with_context(|| format!("the output of task {name:?} is missing"))?;
        match std::str::from_utf8(bytes) {
            Ok(text) if bytes.len() <= PRINT_LIMIT && !text.contains('\0') => {
                match text.strip_suffix('\n').filter(|line| !line.contains('\n')) {
                    Some(line) => println!("{name}: {line}"),
                    None if text.is_empty() => println!("{name}: (empty)"),
                    None => print!("{name}:\n{text}{}", if text.ends_with('\n') { "" } else { "\n" }),
                }
            }
            _ => {
                std::fs::create_dir_all(&args.out)
                    .with_context(|| format!("cannot create {}", args.out.display()))?;
                let path = args.out.join(file_name(name, bytes));
                std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
                println!("{name}: wrote {} ({} bytes)", path.display(), bytes.len());
            }
        }
    }
    Ok(0)
}

/// The file an output is written to: the task's name with path separators replaced (so it stays
/// inside `--out`), and `.png` added to a PNG whose name has no extension.
fn file_name(task: &str, bytes: &[u8]) -> String {
    let mut name: String =
        task.chars().map(|c| if matches!(c, '/' | '\\' | '\0') { '_' } else { c }).collect();
    if name.starts_with('.') {
        name.insert(0, '_');
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && !name.contains('.') {
        name.push_str(".png");
    }
    name
}
