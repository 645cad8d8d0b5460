//! `shoal worker`: a volunteer's peer. Joins the swarm, runs tasks for others at the lowest OS
//! priority and serves steals and blobs until SIGINT or SIGTERM, then leaves gracefully.
//!
//! Settings come from flags, `SHOAL_*` variables, a config file and defaults ([`crate::settings`]).
//! On start it prints, one per line on stdout, `peer <id>`, `listening <addr>` and
//! `donating <cores> cores, <memory> of task memory (<priority>)` and `data <dir>`, then, with
//! `--bootstrap`, `joined the swarm` once a peer answered; scripts and tests wait for these lines.
//! With `--mdns`, `discovering peers on the LAN (mDNS)` follows `data`; with `--http`, the line
//! `http http://<bound addr>/` (the status page, [`crate::page`]; the real port when asked for
//! port 0) comes next, before `joined the swarm`.
//! While the peer runs, `<data dir>/control.sock` answers `shoal status` and `shoal peers`
//! ([`crate::control`]); the data directory is locked, so a second worker on it is refused.
//! The exit status is 0 after a signal-initiated shutdown (also while joining), 2 if no bootstrap
//! peer answered within `--join-timeout` or the settings are bad.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use shoal_net::SwarmSecret;
use shoal_node::{Config, Peer, TaskPriority};
use tokio::signal::unix::{SignalKind, signal};

use crate::control::{self, ControlSocket, DataDirLock, PeerInfo, Request, Response, Status};
use crate::settings::{Settings, WorkerFlags};

/// Arguments of `shoal worker`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Each setting comes from, highest first: the flag, its SHOAL_* environment \
    variable, the config file, the default (docs/worker.md).\n\n\
    Examples:\n  \
    shoal worker --listen 0.0.0.0:7600\n  \
    shoal worker --bootstrap 192.0.2.10:7600 --cores 2 --memory 1GiB\n  \
    SHOAL_CORES=2 shoal worker --config /etc/shoal/worker.toml\n  \
    shoal worker --bootstrap 192.0.2.10:7600 --http     # status page on http://127.0.0.1:7680/")]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    flags: WorkerFlags,
}

/// Runs the worker until a signal; returns the process exit status.
pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let settings = crate::settings::load(&args.flags)?;
    runtime.block_on(serve(settings))
}

async fn serve(args: Settings) -> anyhow::Result<u8> {
    let started = Instant::now();
    let data_dir = args.data_dir.clone();
    let mut cfg = Config::new(&data_dir);
    cfg.cores = args.cores;
    cfg.memory = args.memory;
    cfg.net.listen = args.listen;
    cfg.net.bootstrap = args.bootstrap.clone();
    cfg.net.mdns = args.mdns;
    cfg.net.blob_budget = args.blob_store_budget;
    cfg.module_cache_budget = args.module_cache_budget;
    cfg.caps = args.caps;
    cfg.leave_grace = args.leave_grace;
    if let Some(path) = &args.swarm_secret {
        let secret = std::fs::read(path)
            .with_context(|| format!("cannot read the swarm secret {}", path.display()))?;
        anyhow::ensure!(!secret.is_empty(), "the swarm secret file {} is empty", path.display());
        cfg.net.swarm_secret = Some(SwarmSecret::new(&secret));
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    // Held until the process ends: no second worker starts on this directory meanwhile.
    let lock = DataDirLock::acquire(&data_dir)?;
    let socket = ControlSocket::bind(&lock)?;
    // From here on SIGINT and SIGTERM mean "leave gracefully", even while joining.
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    tokio::pin!(stop);

    let (cores, memory, joining) = (cfg.cores, cfg.memory, !cfg.net.bootstrap.is_empty());
    let bootstrap: Vec<String> = cfg.net.bootstrap.iter().map(ToString::to_string).collect();
    let peer = Arc::new(Peer::start(cfg).await.context("cannot start the peer")?);
    let page = match args.http {
        Some(addr) => match crate::page::serve(addr, peer.monitor(), crate::page::Role::Worker).await {
            Ok(page) => Some(page),
            Err(e) => {
                peer.kill().await;
                return Err(e);
            }
        },
        None => None,
    };
    let server = socket
        .serve(control::Limits::default(), handler(Arc::clone(&peer), &args, started))
        .context("cannot serve the control socket")?;
    let priority = match peer.task_priority() {
        TaskPriority::Idle => "SCHED_IDLE",
        TaskPriority::Nice19 => "nice 19",
        TaskPriority::Normal => "normal priority: the OS refused to lower it",
    };
    println!("peer {}", peer.peer_id());
    println!("listening {}", peer.local_addr());
    println!("donating {cores} cores, {} MiB of task memory ({priority})", memory >> 20);
    println!("data {}", data_dir.display());
    if args.mdns {
        println!("discovering peers on the LAN (mDNS)");
    }
    if let Some(page) = &page {
        println!("http {}", page.url());
    }
    let signalled = if joining {
        let join = tokio::time::timeout(args.join_timeout, async {
            while peer.node().view().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        tokio::select! {
            joined = join => {
                if joined.is_err() {
                    drop(server);
                    peer.kill().await;
                    anyhow::bail!("no peer answered at {} within {:?}", bootstrap.join(", "), args.join_timeout);
                }
                println!("joined the swarm");
                false
            }
            () = &mut stop => true,
        }
    } else {
        false
    };
    if !signalled {
        stop.await;
    }
    // Status requests stop first: the worker is going.
    drop(server);
    println!("leaving the swarm");
    peer.shutdown().await;
    println!("stopped");
    drop(lock);
    Ok(0)
}

/// Answers control requests from the running peer's state.
fn handler(
    peer: Arc<Peer>,
    settings: &Settings,
    started: Instant,
) -> impl Fn(Request) -> Response + Send + Sync + 'static {
    let data_dir = settings.data_dir.display().to_string();
    let config = settings.config.as_ref().map(|p| p.display().to_string());
    move |request| match request {
        Request::Status => {
            let s = peer.status();
            Response::Status(Box::new(Status {
                peer_id: peer.peer_id().to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                listen: peer.local_addr(),
                data_dir: data_dir.clone(),
                config: config.clone(),
                cores: peer.cores(),
                memory: peer.memory(),
                running: s.running,
                queued: s.queued,
                tasks_done: s.tasks_done,
                fuel_used: s.fuel_used,
                jobs: s.jobs,
                refused: refusals_by_reason(&s.refused),
                sends_dropped: s.sends_dropped,
                peers: peer.node().view().len(),
                uptime_s: started.elapsed().as_secs(),
            }))
        }
        Request::Peers => Response::Peers(
            peer.node()
                .view()
                .iter()
                .map(|e| PeerInfo {
                    peer_id: e.id.to_string(),
                    addr: e.addr,
                    free_slots: e.hints.free_slots,
                    ready_tasks: e.hints.ready_tasks,
                    age: e.age,
                })
                .collect(),
        ),
    }
}

/// The refusal counters by name, every reason listed (see [`Status::refused`]).
fn refusals_by_reason(r: &shoal_core::sched::Refusals) -> std::collections::BTreeMap<String, u64> {
    r.by_reason().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
