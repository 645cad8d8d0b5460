//! `shoal worker`: a volunteer's peer. Joins the swarm, runs tasks for others at the lowest OS
//! priority and serves steals and blobs until SIGINT or SIGTERM, then leaves gracefully.
//!
//! On start it prints, one per line on stdout, `peer <id>`, `listening <addr>` and
//! `donating <cores> cores, <memory> of task memory (<priority>)` and `data <dir>`, then, with
//! `--bootstrap`, `joined the swarm` once a peer answered; scripts and tests wait for these lines.
//! The exit status is 0 after a signal-initiated shutdown, 2 if no bootstrap peer answered within
//! `--join-timeout`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use shoal_net::SwarmSecret;
use shoal_node::{Config, Peer, TaskPriority};

/// Arguments of `shoal worker`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal worker --listen 0.0.0.0:7600\n  \
    shoal worker --bootstrap 192.0.2.10:7600 --cores 2 --memory 1GiB")]
pub(crate) struct WorkerArgs {
    /// UDP address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:7600")]
    listen: SocketAddr,
    /// Address of a peer already in the swarm; repeat for several.
    #[arg(long, value_name = "ADDR")]
    bootstrap: Vec<SocketAddr>,
    /// Tasks to run at once (default: all cores but one).
    #[arg(long, value_name = "N")]
    cores: Option<u32>,
    /// Linear memory all running tasks may use together, e.g. 2GiB (default: 256MiB per core).
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    memory: Option<u64>,
    /// Where the identity key, blobs and compiled modules live (default: the platform's data
    /// directory, e.g. ~/.local/share/shoal).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A file whose contents are the swarm secret (a private swarm: peers without it cannot join).
    #[arg(long, value_name = "FILE")]
    swarm_secret: Option<PathBuf>,
    /// With --bootstrap: give up (exit 2) if no peer answers within this time, e.g. 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::units::parse_duration)]
    join_timeout: std::time::Duration,
}

/// `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`, else `./shoal-data`.
fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("shoal");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/shoal"),
        None => PathBuf::from("shoal-data"),
    }
}

fn default_cores() -> u32 {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(n.saturating_sub(1).max(1)).unwrap_or(1)
}

/// Runs the worker until a signal; returns the process exit status.
pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: WorkerArgs) -> anyhow::Result<u8> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let mut cfg = Config::new(&data_dir);
    cfg.cores = args.cores.unwrap_or_else(default_cores);
    cfg.memory = args.memory.unwrap_or(u64::from(cfg.cores.max(1)) * (256 << 20));
    cfg.net.listen = args.listen;
    cfg.net.bootstrap = args.bootstrap;
    if let Some(path) = &args.swarm_secret {
        let secret = std::fs::read(path)
            .with_context(|| format!("cannot read the swarm secret {}", path.display()))?;
        anyhow::ensure!(!secret.is_empty(), "the swarm secret file {} is empty", path.display());
        cfg.net.swarm_secret = Some(SwarmSecret::new(&secret));
    }
    let (cores, memory, joining) = (cfg.cores, cfg.memory, !cfg.net.bootstrap.is_empty());
    let bootstrap: Vec<String> = cfg.net.bootstrap.iter().map(ToString::to_string).collect();
    let peer = Peer::start(cfg).await.context("cannot start the peer")?;
    let priority = match peer.task_priority() {
        TaskPriority::Idle => "SCHED_IDLE",
        TaskPriority::Nice19 => "nice 19",
        TaskPriority::Normal => "normal priority: the OS refused to lower it",
    };
    println!("peer {}", peer.peer_id());
    println!("listening {}", peer.local_addr());
    println!("donating {cores} cores, {} MiB of task memory ({priority})", memory >> 20);
    println!("data {}", data_dir.display());
    if joining {
        let joined = tokio::time::timeout(args.join_timeout, async {
            while peer.node().view().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        if joined.is_err() {
            peer.kill().await;
            anyhow::bail!("no peer answered at {} within {:?}", bootstrap.join(", "), args.join_timeout);
        }
        println!("joined the swarm");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    println!("leaving the swarm");
    peer.shutdown().await;
    println!("stopped");
    Ok(0)
}
