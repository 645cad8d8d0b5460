//! A misbehaving peer, built from the same crates, joins a real swarm of honest in-process peers
//! (QUIC on loopback, real sandbox) and attacks it in turn: it cancels others' jobs, reports
//! results for tasks it never got, alters stolen descriptors and passes them on, drops every
//! message, floods `Assign`s and steals, and sends absurd numbers. Each honest job must still
//! complete with the right outputs, no honest peer may panic (the tests run a debug build, so an
//! arithmetic overflow would panic), and the process's memory must stay bounded (it is measured and
//! printed; run with `--nocapture` to see it).
//!
//! The attacker is a bare `shoal_net::Node`: it joins membership like any peer, so honest peers
//! see it in their views, place work on it and answer its steals.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shoal_core::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use shoal_core::job::{InputSpec, Job, TaskSpec};
use shoal_core::sched::{LoadHint, OutputRef, SchedMsg, TaskDesc};
use shoal_core::wire::Message;
use shoal_net::{Inbox, Node, NodeConfig};
use shoal_node::{Config, Peer};

/// A safety net only: every wait ends on a condition long before this.
const PATIENCE: Duration = Duration::from_secs(120);
/// Tasks of the honest job besides its sum: enough that queues form and the attacker can steal.
const RANGES: u64 = 24;

/// What the attacker does, one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    /// Sends `Cancel` for every job it learns of to every honest peer, over and over.
    CancelOthers,
    /// Learns a job's id and owner, then reports forged results for every task and attempt (it
    /// holds none of them).
    ForgeResults,
    /// Steals tasks, alters their arguments and module, and assigns them to honest peers.
    AlterStolen,
    /// Advertises free slots, takes whatever it is given and never answers.
    DropEverything,
    /// Floods every honest peer with `Assign`s of junk tasks and with steals.
    Flood,
    /// Advertises and reports absurd numbers (`u64::MAX` costs, fuel and sizes, `u32::MAX` slots).
    AbsurdNumbers,
}

fn module(name: &str) -> (BlobHash, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm").join(format!("{name}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (BlobHash::of(&bytes), bytes)
}

/// Prime counts over [0, 10^7) in `ranges` ranges, summed by `total` (π(10^7) = 664,579).
fn primes_job(ranges: u64) -> (Job, std::collections::HashMap<BlobHash, Vec<u8>>) {
    let (primes, primes_bytes) = module("primes");
    let (sum, sum_bytes) = module("sum");
    let hi = 10_000_000;
    let step = hi / ranges;
    let mut specs = Vec::new();
    let mut total = TaskSpec::new("total", sum);
    for k in 0..ranges {
        let name = format!("primes{k}");
        let (lo, end) = (k * step, if k + 1 == ranges { hi } else { (k + 1) * step });
        specs.push(TaskSpec { args: vec![lo.to_string(), end.to_string()], ..TaskSpec::new(&name, primes) });
        total.inputs.push(InputSpec::Output(name));
    }
    specs.push(total);
    (Job::new(specs).expect("a valid job"), [(primes, primes_bytes), (sum, sum_bytes)].into())
}

/// The process's resident memory, from /proc (Linux); 0 where it cannot be read.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The hostile peer.
struct Attacker {
    node: Node,
    _dir: tempfile::TempDir,
}

impl Attacker {
    async fn join(bootstrap: SocketAddr) -> (Attacker, Inbox) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cfg = NodeConfig::new(dir.path());
        cfg.bootstrap = vec![bootstrap];
        let (node, inbox) = Node::start(cfg).await.expect("the attacker starts");
        (Attacker { node, _dir: dir }, inbox)
    }

    async fn send(&self, to: PeerId, msg: SchedMsg) {
        // Errors are expected: honest peers may close on a flood.
        let _ = self.node.send(to, &Message::Sched(msg)).await;
    }
}

const ABSURD: LoadHint =
    LoadHint { slots: u32::MAX, free_slots: u32::MAX, ready_tasks: u32::MAX, ready_fuel: u64::MAX };

/// The load the attacker advertises through membership during `attack`.
fn advertised(attack: Attack) -> LoadHint {
    match attack {
        Attack::DropEverything => LoadHint { free_slots: 4, slots: 4, ready_tasks: 0, ready_fuel: 0 },
        Attack::AbsurdNumbers => ABSURD,
        _ => LoadHint { free_slots: 0, slots: 0, ready_tasks: 0, ready_fuel: 0 },
    }
}

/// Runs `attack` from a fresh attacker against `honest` until `stop`; returns how many tasks
/// the honest peers gave it (assigned or stolen).
async fn run_attack(
    attack: Attack,
    attacker: Arc<Attacker>,
    mut inbox: Inbox,
    honest: Vec<PeerId>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    submitted: Arc<std::sync::Mutex<Option<(JobId, PeerId)>>>,
) -> u64 {
    let absurd = ABSURD;
    let mut taken = 0u64;
    let mut jobs: HashSet<(JobId, PeerId)> = HashSet::new();
    // Tasks it was given: a wrong result for one of those is a lying executor, which only
    // verification catches (issue 10's replication). The forger never steals, so it holds
    // nothing: a forged `Done` sent before a steal would otherwise count once the victim's claim
    // made it the holder (the owner keeps a thief's early reports for that claim).
    let mut held: HashSet<TaskId> = HashSet::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        // Steal from everyone (every attack but dropping and forging learns jobs this way; the
        // forger is told the job's id and owner, as anyone watching the swarm could learn them).
        if attack == Attack::ForgeResults {
            jobs.extend(submitted.lock().ok().and_then(|s| *s));
        } else if attack != Attack::DropEverything {
            for &p in &honest {
                let max = if attack == Attack::AbsurdNumbers { u32::MAX } else { 4 };
                let load = if attack == Attack::AbsurdNumbers { absurd } else { LoadHint::default() };
                attacker.send(p, SchedMsg::Steal { max, load }).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Read what came in meanwhile.
        let deadline = tokio::time::sleep(Duration::from_millis(20));
        tokio::pin!(deadline);
        let mut got: Vec<(PeerId, TaskDesc)> = Vec::new();
        loop {
            tokio::select! {
                () = &mut deadline => break,
                inbound = inbox.recv() => {
                    let Some(inbound) = inbound else { return taken };
                    if let Message::Sched(SchedMsg::Assign { tasks, .. } | SchedMsg::Stolen { tasks, .. }) =
                        inbound.message
                    {
                        got.extend(tasks.into_iter().map(|t| (inbound.from, t)));
                    }
                }
            }
        }
        taken += got.len() as u64;
        for (_, t) in &got {
            jobs.insert((t.task.job, t.owner));
            held.insert(t.task);
        }
        match attack {
            Attack::CancelOthers => {
                for &(job, _) in &jobs {
                    for &p in &honest {
                        attacker.send(p, SchedMsg::Cancel { job }).await;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Attack::ForgeResults => {
                for &(job, owner) in &jobs {
                    for index in 0..16 {
                        for attempt in 0..4 {
                            let forged = b"666\n".to_vec();
                            let output =
                                OutputRef { hash: BlobHash::of(&forged), size: 4, inline: Some(forged) };
                            let task = TaskId { job, index: TaskIndex(index) };
                            if held.contains(&task) {
                                continue;
                            }
                            let msg = SchedMsg::Done {
                                task,
                                attempt,
                                output,
                                fuel: 1,
                                busy_us: 1,
                                load: LoadHint::default(),
                                earlier: Vec::new(),
                            };
                            attacker.send(owner, msg).await;
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Attack::AlterStolen => {
                for (k, (_, t)) in got.iter().enumerate() {
                    let mut altered = t.clone();
                    altered.args = vec!["0".into(), "10".into()];
                    altered.priority = u64::MAX;
                    let to = honest[k % honest.len()];
                    attacker
                        .send(to, SchedMsg::Assign { tasks: vec![altered.clone()], addrs: Vec::new() })
                        .await;
                    attacker
                        .send(
                            to,
                            SchedMsg::Stolen {
                                tasks: vec![altered],
                                load: LoadHint::default(),
                                addrs: Vec::new(),
                            },
                        )
                        .await;
                    sent.fetch_add(2, Ordering::Relaxed);
                }
            }
            Attack::DropEverything => {}
            Attack::Flood => {
                for &p in &honest {
                    let mut tasks = Vec::new();
                    for i in 0..256u32 {
                        // Junk claiming to come from the attacker itself as owner (signed by
                        // nobody) and from an honest peer (an owner it cannot sign for).
                        let owner = if i % 2 == 0 { attacker.node.peer_id() } else { p };
                        tasks.push(TaskDesc {
                            task: TaskId {
                                job: JobId(u128::from(round) << 32 | u128::from(i)),
                                index: TaskIndex(i),
                            },
                            owner,
                            term: 0,
                            attempt: 1,
                            hops: 0,
                            priority: u64::MAX,
                            cost: u64::MAX,
                            module: BlobHash::of(b"no such module"),
                            args: vec!["x".repeat(64); 16],
                            inputs: Vec::new(),
                            limits: Default::default(),
                            lease_ms: u64::MAX,
                            filled: Vec::new(),
                            seal: None,
                            sig: vec![0; 64],
                        });
                    }
                    attacker.send(p, SchedMsg::Assign { tasks, addrs: Vec::new() }).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    // And steals, back to back (at most one is answered at a time).
                    for _ in 0..64 {
                        attacker.send(p, SchedMsg::Steal { max: 64, load: LoadHint::default() }).await;
                    }
                    sent.fetch_add(64, Ordering::Relaxed);
                }
            }
            Attack::AbsurdNumbers => {
                for (from, t) in &got {
                    let output = OutputRef { hash: BlobHash::of(b"x"), size: u64::MAX, inline: None };
                    let msg = SchedMsg::Done {
                        task: t.task,
                        attempt: t.attempt,
                        output,
                        fuel: u64::MAX,
                        busy_us: u64::MAX,
                        load: absurd,
                        earlier: Vec::new(),
                    };
                    attacker.send(t.owner, msg).await;
                    let claim = SchedMsg::Claim {
                        job: t.task.job,
                        holder: attacker.node.peer_id(),
                        tasks: vec![(t.task.index, u32::MAX, u32::MAX)],
                    };
                    attacker.send(t.owner, claim).await;
                    attacker.send(*from, SchedMsg::Steal { max: u32::MAX, load: absurd }).await;
                    sent.fetch_add(3, Ordering::Relaxed);
                }
            }
        }
    }
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_jobs_survive_a_misbehaving_peer() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut peers: Vec<Peer> = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cfg = Config::new(dir.path());
        cfg.cores = 1;
        cfg.memory = 256 << 20;
        // A thief that sits on what it stole costs its victims one lease: a short one keeps the
        // test quick (the default, 30 s, is sized for the internet).
        cfg.owner.lease_floor = Duration::from_secs(2);
        if let Some(first) = peers.first() {
            cfg.net.bootstrap = vec![first.local_addr()];
        }
        peers.push(Peer::start(cfg).await.expect("an honest peer starts"));
        dirs.push(dir);
    }
    let honest: Vec<PeerId> = peers.iter().map(Peer::peer_id).collect();
    let rss_start = rss_bytes();
    for attack in [
        Attack::CancelOthers,
        Attack::ForgeResults,
        Attack::AlterStolen,
        Attack::DropEverything,
        Attack::Flood,
        Attack::AbsurdNumbers,
    ] {
        let (attacker, inbox) = Attacker::join(peers[0].local_addr()).await;
        let attacker = Arc::new(attacker);
        let hints = advertised(attack);
        attacker.node.set_load_hints(hints).await;
        // Wait until every honest peer knows the attacker and its advertised load, so it is in
        // play from the start.
        tokio::time::timeout(PATIENCE, async {
            while !peers
                .iter()
                .all(|p| p.node().view().iter().any(|e| e.id == attacker.node.peer_id() && e.hints == hints))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the attacker joined every view");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let submitted = Arc::new(std::sync::Mutex::new(None));
        let attacking = tokio::spawn(run_attack(
            attack,
            Arc::clone(&attacker),
            inbox,
            honest.clone(),
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&submitted),
        ));
        let started = std::time::Instant::now();
        let refused_before: u64 = peers.iter().map(|p| p.status().refused.total()).sum();
        let (job, blobs) = primes_job(RANGES);
        let total = TaskIndex(RANGES as u32);
        let handle = peers[0].submit_with_outputs(job, blobs, vec![total]).await.expect("submitted");
        if let Ok(mut s) = submitted.lock() {
            *s = Some((handle.id(), honest[0]));
        }
        let out = tokio::time::timeout(PATIENCE, handle.wait())
            .await
            .unwrap_or_else(|_| panic!("{attack:?}: the honest job hung"))
            .unwrap_or_else(|e| panic!("{attack:?}: the honest job failed: {e}"));
        stop.store(true, Ordering::Relaxed);
        let taken = attacking.await.expect("the attacker's loop ended");
        attacker.node.shutdown().await;
        assert_eq!(out.get("total"), Some(&b"664579\n"[..]), "{attack:?}: wrong output");
        let refused: u64 = peers.iter().map(|p| p.status().refused.total()).sum::<u64>() - refused_before;
        println!(
            "{attack:?}: honest job done in {:.2} s with the right output; it was given {taken} tasks \
             and sent {} messages; honest peers refused {refused} of them; RSS {} MiB",
            started.elapsed().as_secs_f64(),
            sent.load(Ordering::Relaxed),
            rss_bytes() >> 20,
        );
    }
    let rss_end = rss_bytes();
    println!(
        "RSS of the whole test process: {} MiB before the attacks, {} MiB after",
        rss_start >> 20,
        rss_end >> 20
    );
    assert!(
        rss_end < rss_start + (512 << 20),
        "memory grew by {} MiB under attack",
        (rss_end - rss_start) >> 20
    );
    for p in &peers {
        p.shutdown().await;
    }
}

/// Four in-process peers of one core each (real QUIC, real wasm) joined through the first, the
/// last one lying if `liar`; returns once every view holds the others.
async fn verifying_swarm(liar: bool) -> (Vec<Peer>, Vec<tempfile::TempDir>) {
    let mut peers: Vec<Peer> = Vec::new();
    let mut dirs = Vec::new();
    for k in 0..4 {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cfg = Config::new(dir.path());
        cfg.cores = 1;
        cfg.memory = 256 << 20;
        cfg.corrupt_outputs = liar && k == 3;
        if let Some(first) = peers.first() {
            cfg.net.bootstrap = vec![first.local_addr()];
        }
        peers.push(Peer::start(cfg).await.expect("a peer starts"));
        dirs.push(dir);
    }
    tokio::time::timeout(PATIENCE, async {
        while peers.iter().any(|p| p.node().view().len() < 3) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the swarm formed");
    (peers, dirs)
}

/// Runs π(10⁷) in 13 tasks under adaptive verification, owned by `peer`; checks its output.
async fn verified_primes(peer: &Peer) -> shoal_node::JobOutputs {
    let (job, blobs) = primes_job(12);
    let job = job.with_verify(shoal_core::sched::VerifyPolicy::Adaptive);
    let handle = peer.submit_with_outputs(job, blobs, vec![TaskIndex(12)]).await.expect("submitted");
    let out =
        tokio::time::timeout(PATIENCE, handle.wait()).await.expect("in time").expect("the job ends well");
    assert_eq!(out.get("total"), Some(&b"664579\n"[..]), "π(10^7), whoever lied");
    out
}

/// A volunteer that lies consistently (every output it makes has one byte more, and it serves
/// those bytes) changes no output of a job under adaptive verification, is caught, and stays
/// caught in the owner's trust book on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_worker_changes_no_output_and_is_caught() {
    let (peers, dirs) = verifying_swarm(true).await;
    let liar = peers[3].peer_id();
    let mut disagreements = 0;
    let mut jobs = 0;
    // Until the liar has run something and been caught (it steals and is placed on like anyone).
    while disagreements == 0 && jobs < 6 {
        let out = verified_primes(&peers[0]).await;
        disagreements += out.progress.disagreements;
        assert!(out.progress.verify_runs > 0, "results were checked: {:?}", out.progress);
        jobs += 1;
    }
    assert!(disagreements > 0, "the liar ran nothing in {jobs} jobs");
    let book = shoal_node::read_trust_book(dirs[0].path()).expect("the owner's trust book");
    let caught: Vec<PeerId> = book.caught().map(|(p, _)| *p).collect();
    assert_eq!(caught, vec![liar], "only the liar is marked");
    println!("{jobs} jobs, {disagreements} disagreements; the liar is caught in the owner's book");
    for p in peers.iter().rev() {
        p.shutdown().await;
    }
}

/// With no liar, adaptive verification's cost on a real swarm falls as the owner's trust in the
/// other peers grows (its book carried from job to job): the share of fuel spent on checks is
/// printed per job, and the last jobs check less than the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_verification_checks_less_as_trust_grows_on_a_real_swarm() {
    let (peers, _dirs) = verifying_swarm(false).await;
    let mut shares = Vec::new();
    for _ in 0..12 {
        let p = verified_primes(&peers[0]).await.progress;
        assert_eq!(p.disagreements, 0, "{p:?}");
        shares.push(p.verify_fuel as f64 / (p.fuel_used - p.verify_fuel).max(1) as f64);
    }
    let text: Vec<String> = shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
    println!("extra fuel for checks, job by job: {}", text.join(" "));
    let (first, last) = (shares[0], shares[shares.len() - 3..].iter().sum::<f64>() / 3.0);
    assert!(last < first, "checks did not fall as trust grew: {text:?}");
    for p in peers.iter().rev() {
        p.shutdown().await;
    }
}
