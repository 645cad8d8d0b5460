//! `shoal worker`: a volunteer's peer. Joins the swarm, runs tasks for others at the lowest OS
//! priority and serves steals and blobs until SIGINT or SIGTERM, then leaves gracefully.
//!
//! Settings come from flags, `SHOAL_*` variables, a config file and defaults ([`crate::settings`]).
//! On start it prints, one per line on stdout, `peer <id>`, `listening <addr>` and
//! `donating <cores> cores, <memory> of task memory (<priority>)` and `data <dir>`, then, with
//! `--bootstrap`, `joined the swarm` once a peer answered; scripts and tests wait for these lines.
//! With `--mdns`, `discovering peers on the LAN (mDNS)` follows `data`; with a donation policy,
//! `donating when: …`; with `--metrics ADDR`, `metrics http://<addr>/metrics` ([`crate::metrics`]);
//! with `--http`, `http http://<addr>/` (the status page, [`crate::page`]); each with the bound
//! address (port 0 resolved), in that order, before `joined the swarm`. Logs go to stderr, as text
//! or JSON (`--log-format`, [`crate::logging`]).
//! While the peer runs, `<data dir>/control.sock` answers `shoal status` and `shoal peers`
//! ([`crate::control`]); the data directory is locked, so a second worker on it is refused.
//! A policy task ([`crate::policy`]) pauses and resumes donating as the volunteer's settings
//! (`run_when`, `hours`, `max_other_cpu_percent`) and `shoal worker pause` / `resume` (its
//! subcommands, which talk to a running worker like `shoal status`) say.
//! The exit status is 0 after a signal-initiated shutdown (also while joining), 2 if no bootstrap
//! peer answered within `--join-timeout` or the settings are bad.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use shoal_net::SwarmSecret;
use shoal_node::{Config, Peer, TaskPriority};
use tokio::signal::unix::{SignalKind, signal};

use crate::cgroup::CgroupFs;
use crate::control::{self, ControlSocket, DataDirLock, PeerInfo, Request, Response, Status};
use crate::metrics;
use crate::policy::{RunWhen, SystemProbes, UserPause};
use crate::settings::{Settings, WorkerFlags};

/// Arguments of `shoal worker`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each setting comes from, highest first: the flag, its SHOAL_* environment \
    variable, the config file, the default (docs/worker.md).\n\n\
    Examples:\n  \
    shoal worker --listen 0.0.0.0:7600\n  \
    shoal worker --bootstrap 192.0.2.10:7600 --cores 2 --memory 1GiB\n  \
    SHOAL_CORES=2 shoal worker --config /etc/shoal/worker.toml\n  \
    shoal worker --bootstrap 192.0.2.10:7600 --http     # status page on http://127.0.0.1:7680/\n  \
    shoal worker --metrics 127.0.0.1:9600 --log-format json   # Prometheus page, JSON logs\n  \
    shoal worker --run-when idle --idle-minutes 10 --hours 22:00-07:00 --max-cpu-percent 50\n  \
    shoal worker pause --data-dir /var/lib/shoal     # stop donating now, until:\n  \
    shoal worker resume --data-dir /var/lib/shoal",
    args_conflicts_with_subcommands = true
)]
pub(crate) struct WorkerArgs {
    #[command(subcommand)]
    action: Option<WorkerAction>,
    #[command(flatten)]
    flags: WorkerFlags,
}

/// What `shoal worker pause` and `resume` do to a running worker.
#[derive(Debug, clap::Subcommand)]
enum WorkerAction {
    /// Stop the running worker donating (it hands queued tasks back and lets running ones finish
    /// within its leave grace) until `shoal worker resume`; overrides its donation policy.
    Pause(crate::cmd_status::StatusArgs),
    /// Let the running worker donate again, as far as its donation policy allows.
    Resume(crate::cmd_status::StatusArgs),
}

/// Runs the worker until a signal; returns the process exit status.
pub(crate) fn run(args: WorkerArgs) -> anyhow::Result<u8> {
    match args.action {
        Some(WorkerAction::Pause(a)) => return crate::cmd_status::pause(a, true),
        Some(WorkerAction::Resume(a)) => return crate::cmd_status::pause(a, false),
        None => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let settings = crate::settings::load(&args.flags)?;
    crate::logging::init(settings.log_format);
    runtime.block_on(serve(settings))
}

async fn serve(args: Settings) -> anyhow::Result<u8> {
    let started = Instant::now();
    let data_dir = args.data_dir.clone();
    let mut cfg = Config::new(&data_dir);
    cfg.cores = args.cores;
    cfg.memory = args.memory;
    cfg.net.listen = args.listen;
    (cfg.net.bootstrap, cfg.net.bootstrap_names) = shoal_net::Bootstrap::split(&args.bootstrap);
    cfg.net.mdns = args.mdns;
    cfg.net.relay = args.relay.clone();
    cfg.net.blob_budget = args.blob_store_budget;
    cfg.module_cache_budget = args.module_cache_budget;
    cfg.caps = args.caps;
    cfg.sched.trust = crate::trust::policy(&args.trust)?;
    let trust_line = crate::trust::describe(&cfg.sched.trust);
    cfg.leave_grace = args.leave_grace;
    // The kernel's cap where the worker may set one, else the sandbox's duty cycle.
    let cpu_cap = if args.max_cpu_percent < 100 {
        match crate::cgroup::limit(&CgroupFs::system(), std::process::id(), args.cores, args.max_cpu_percent)
        {
            Ok(cgroup) => {
                tracing::info!(cgroup = %cgroup.display(), "max_cpu_percent: cgroup v2 cpu.max");
                CpuCap::Cgroup
            }
            Err(why) => {
                tracing::info!("max_cpu_percent: duty-cycling the task threads ({why})");
                cfg.max_cpu_percent = args.max_cpu_percent;
                CpuCap::DutyCycle
            }
        }
    } else {
        CpuCap::DutyCycle
    };
    if let Some(path) = &args.swarm_secret {
        cfg.net.swarm_secret = Some(SwarmSecret::new(&crate::cmd_submit::read_swarm_secret(path)?));
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    // Held until the process ends: no second worker starts on this directory meanwhile.
    let lock = DataDirLock::acquire(&data_dir)?;
    let socket = ControlSocket::bind(&lock)?;
    let metrics_listener = match args.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
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

    let (cores, memory, joining) = (cfg.cores, cfg.memory, !args.bootstrap.is_empty());
    let bootstrap: Vec<String> = args.bootstrap.iter().map(ToString::to_string).collect();
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
    let user_pause = Arc::new(UserPause::default());
    let metrics_url = match &metrics_listener {
        Some(l) => {
            Some(format!("http://{}/metrics", l.local_addr().context("cannot read the metrics address")?))
        }
        None => None,
    };
    let server = socket
        .serve(
            control::Limits::default(),
            handler(Arc::clone(&peer), &args, started, Arc::clone(&user_pause), metrics_url),
        )
        .context("cannot serve the control socket")?;
    // Dropped (aborted) when the worker leaves.
    let policy_task = tokio::spawn(crate::policy::run(
        Arc::clone(&peer),
        args.policy.clone(),
        SystemProbes::system(),
        Arc::clone(&user_pause),
    ));
    let _policy_task = AbortOnDrop(policy_task);
    let priority = match peer.task_priority() {
        TaskPriority::Idle => "SCHED_IDLE",
        TaskPriority::Nice19 => "nice 19",
        TaskPriority::Normal => "normal priority: the OS refused to lower it",
    };
    println!("peer {}", peer.peer_id());
    println!("listening {}", peer.local_addr());
    println!("donating {cores} cores, {} MiB of task memory ({priority})", memory >> 20);
    println!("data {}", data_dir.display());
    println!("trust: {trust_line}");
    if args.mdns {
        println!("discovering peers on the LAN (mDNS)");
    }
    if let Some(policy) = policy_line(&args, cpu_cap) {
        println!("{policy}");
    }
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let server = metrics::serve(listener, Arc::clone(&peer))?;
            println!("metrics http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
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
                    drop(metrics_server);
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
    // Status requests and scrapes stop first: the worker is going.
    drop(server);
    drop(metrics_server);
    println!("leaving the swarm");
    peer.shutdown().await;
    println!("stopped");
    drop(lock);
    Ok(0)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How `max_cpu_percent` is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CpuCap {
    /// A cgroup v2 `cpu.max` on the worker process.
    Cgroup,
    /// The sandbox pauses task threads between slices.
    DutyCycle,
}

/// `donating when: …` naming the donation policy, `None` for the default (always, all of it).
fn policy_line(s: &Settings, cap: CpuCap) -> Option<String> {
    let mut parts = Vec::new();
    if s.policy.run_when == RunWhen::Idle {
        parts.push(format!("idle for {:?} and on AC power", s.policy.idle_after));
    }
    if !s.policy.hours.is_empty() {
        let hours: Vec<String> = s.policy.hours.iter().map(ToString::to_string).collect();
        parts.push(format!("within {}", hours.join(", ")));
    }
    if let Some(p) = s.policy.max_other_cpu_percent {
        parts.push(format!("other processes under {p}% of the CPU"));
    }
    if s.max_cpu_percent < 100 {
        let how = match cap {
            CpuCap::Cgroup => "cgroup cpu.max",
            CpuCap::DutyCycle => "duty-cycled",
        };
        parts.push(format!("tasks at most {}% of the time ({how})", s.max_cpu_percent));
    }
    (!parts.is_empty()).then(|| format!("donating when: {}", parts.join("; ")))
}

/// Answers control requests from the running peer's state.
fn handler(
    peer: Arc<Peer>,
    settings: &Settings,
    started: Instant,
    user_pause: Arc<UserPause>,
    metrics: Option<String>,
) -> impl Fn(Request) -> Response + Send + Sync + 'static {
    let data_dir = settings.data_dir.display().to_string();
    let data_path = settings.data_dir.clone();
    let config = settings.config.as_ref().map(|p| p.display().to_string());
    let relaying = settings.relay.enabled;
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
                credit_fuel: s.credit_fuel,
                jobs: s.jobs,
                refused: refusals_by_reason(&s.refused),
                sends_dropped: s.sends_dropped,
                peers: peer.node().view().len(),
                uptime_s: started.elapsed().as_secs(),
                paused: s.paused.map(|r| r.name().to_string()),
                handed_back: s.handed_back,
                metrics: metrics.clone(),
                caught_lying: caught_lying(&data_path),
                reachability: {
                    let node = peer.node();
                    let (r, stats) = (node.reachability(), node.stats());
                    control::Reachability {
                        nat: r.kind.to_string(),
                        observed: r.observed,
                        relays: node.relays().iter().map(ToString::to_string).collect(),
                        relaying,
                        relayed_bytes_sent: stats.relayed_bytes_sent,
                        relayed_bytes_received: stats.relayed_bytes_received,
                        relay_bytes_forwarded: stats.relay_bytes_forwarded,
                        relay_refused: stats.relay_refused,
                    }
                },
            }))
        }
        Request::Pause | Request::Resume => {
            let pause = request == Request::Pause;
            user_pause.set(pause);
            Response::Paused(pause)
        }
        Request::Peers => Response::Peers(
            peer.node()
                .view()
                .iter()
                .map(|e| {
                    let path = peer.node().path_of(e.id);
                    PeerInfo {
                        peer_id: e.id.to_string(),
                        addr: e.addr,
                        free_slots: e.hints.free_slots,
                        ready_tasks: e.hints.ready_tasks,
                        age: e.age,
                        path: path.map(|p| {
                            match p {
                                shoal_net::Path::Direct(_) => "direct",
                                shoal_net::Path::Relayed(_) => "relayed",
                            }
                            .to_string()
                        }),
                        relay: match path {
                            Some(shoal_net::Path::Relayed(r)) => Some(r.to_string()),
                            _ => None,
                        },
                    }
                })
                .collect(),
        ),
    }
}

/// The refusal counters by name, every reason listed (see [`Status::refused`]).
fn refusals_by_reason(r: &shoal_core::sched::Refusals) -> std::collections::BTreeMap<String, u64> {
    r.by_reason().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The peers this worker's jobs caught returning wrong results, from its trust book (an
/// unreadable book lists none: the worker logged why when it read it).
fn caught_lying(data_dir: &std::path::Path) -> std::collections::BTreeMap<String, u32> {
    shoal_node::read_trust_book(data_dir)
        .map(|book| book.caught().map(|(p, t)| (p.to_string(), t.caught)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use clap::Parser;

    use super::*;

    fn worker_args(argv: &[&str]) -> Result<WorkerArgs, clap::Error> {
        match crate::Cli::try_parse_from(argv)?.command {
            crate::Command::Worker(args) => Ok(*args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pause_and_resume_are_subcommands_beside_the_workers_own_flags() {
        let a = worker_args(&["shoal", "worker", "--cores", "2", "--max-cpu-percent", "25"]).unwrap();
        assert!(a.action.is_none());
        assert_eq!((a.flags.cores, a.flags.max_cpu_percent), (Some(2), Some(25)));
        let a = worker_args(&["shoal", "worker", "pause", "--data-dir", "/tmp/w"]).unwrap();
        assert!(matches!(a.action, Some(WorkerAction::Pause(_))), "{a:?}");
        let a = worker_args(&["shoal", "worker", "resume", "--json"]).unwrap();
        assert!(matches!(a.action, Some(WorkerAction::Resume(_))), "{a:?}");
        assert!(
            worker_args(&["shoal", "worker", "--cores", "2", "pause"]).is_err(),
            "flags of a worker with pause"
        );
        assert!(worker_args(&["shoal", "worker", "--run-when", "sometimes"]).is_err());
        assert!(
            worker_args(&["shoal", "worker", "--hours", "22:00-07:00", "--hours", "12:00-13:00"]).is_ok()
        );
    }
}
