//! The discrete-event loop: N peers, each running the real [`PeerSched`], one job coordinator on
//! peer 0 (the real [`Owner`], or a baseline), over the modelled [`Net`].
//!
//! Invariants: every event has a virtual time and a sequence number, and events run in
//! (time, sequence) order, so one seed gives one run, event for event; all randomness comes from
//! one ChaCha RNG seeded by the run's seed; a message between distinct peers is counted and sized
//! by its real rkyv serialisation, a message to oneself is delivered locally and not counted; a
//! dead peer receives nothing and its pending timers and task completions are dropped.
//!
//! Membership is modelled, not simulated: every `gossip` period each live peer gets a fresh random
//! partial view (up to `view_size` peers it has not been told are down) with their current load,
//! standing in for a gossip protocol's hints (its messages are not counted here).
//!
//! The job's owner starts on peer 0 and, with [`SimConfig::deputies`] > 0, keeps that many
//! deputies ([`Owner::set_deputies`]): the world holds each peer's [`Deputy`] replicas (per job)
//! and plays the driver's part for the messages [`SchedMsg::for_driver`] names (`Deputize`,
//! `Journal`, `NewOwner`): a `Deputize` is answered with `Deputized` at once (there are no blobs
//! to fetch here), a journal gap with `Deputized { seq: have }`. These replication messages go
//! through the network model like any other, but are counted apart (`replication_messages`,
//! `replication_bytes`), draw their delays and faults from a random stream of their own, and are
//! left out of `events` and the fingerprint, so a run whose owner lives is the same event for
//! event with deputies or without. With [`SimConfig::kill_owner`] the owner's peer dies like a
//! killed peer when that share of the tasks is done (and the first deputy with it, if asked);
//! once membership tells a live deputy of it (after `detect`) and [`Deputy::should_take_over`]
//! says so, that deputy takes the job over in the next term ([`Deputy::take_over`], with the
//! same owner settings), learns every peer membership says is down (the old owner among them),
//! makes up its deputies, and from then on the job's owner-bound messages are handled on its
//! peer. The run ends when the current owner has every task done. A group kill or a partition
//! never picks the current owner.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_core::ids::{BlobHash, JobId, PeerId, TaskId, TaskIndex};
use shoal_core::job::Input;
use shoal_core::sched::deputy::{Deputy, JobRecord, JournalOutcome, Replayed};
use shoal_core::sched::{
    FailureKind, InputSource, LoadHint, Owner, OwnerConfig, PeerConfig, PeerHint, PeerSched, SchedMsg,
    TaskDesc, TaskOutcome, TaskState, Transmit, TrustBook, key_signer,
};

use crate::central::Central;
use crate::dag::{FUEL_PER_SEC, SimDag};
use crate::metrics::Metrics;
use crate::net::{Net, Topology};

/// Which scheduler runs the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    /// Shoal: owner + decentralised work stealing.
    Shoal,
    /// Central list scheduler with global knowledge (HEFT-style).
    Central,
    /// Random placement.
    Random,
}

/// Kill `fraction` of the peers when `progress` of the tasks are done.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kill {
    /// Fraction of peers (owner excluded).
    pub fraction: f64,
    /// Fraction of tasks done.
    pub progress: f64,
}

/// Kill the job's owner when `progress` of the tasks are done (its peer dies like a killed one:
/// its queued and running work and the outputs it held are lost); with `first_deputy`, the first
/// of its deputies dies at the same moment, so the second takes over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KillOwner {
    /// Fraction of tasks done.
    pub progress: f64,
    /// Kill the first deputy too.
    pub first_deputy: bool,
}

/// Cut `fraction` of the peers (never the owner) off from the rest when `progress` of the tasks
/// are done, for `duration`. A cut shorter than failure detection only delays traffic across it
/// (QUIC retransmits); a longer one closes the connections, so each side is told the other is
/// down, and after the heal membership shows them to each other again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Partition {
    /// Fraction of peers on the far side.
    pub fraction: f64,
    /// Fraction of tasks done when it starts.
    pub progress: f64,
    /// How long it lasts.
    pub duration: Duration,
}

/// Faults the network injects between distinct peers, beyond what QUIC hides: a message lost
/// for good (a connection reset, a peer that drops frames), delivered twice, or overtaken.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice (the copy a little later).
    pub duplicate: f64,
    /// Add a random delay of up to one RTT to every message, so later ones overtake earlier.
    pub reorder: bool,
}

/// How liars lie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LieMode {
    /// Every result wrong, each liar its own wrong bytes.
    #[default]
    Consistent,
    /// Each result wrong with probability 0.5 (its own wrong bytes).
    Random,
    /// Every result wrong, all liars the same wrong bytes for a task.
    Collude,
    /// Honest in the first half of a run's jobs (it earns trust), then wrong like `Consistent`:
    /// a trusted peer that turns. The report applies the turn; a world treats it as consistent.
    Turncoat,
}

/// A fraction of the peers (never the owner) report wrong output hashes (with the right fuel:
/// only the bytes differ).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Liars {
    /// Fraction of all peers, rounded; chosen from the swarm seed, so the same peers lie in every
    /// job of a run.
    pub fraction: f64,
    /// How they lie.
    pub mode: LieMode,
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of peers.
    pub peers: usize,
    /// Topology.
    pub topology: Topology,
    /// Seed of everything random.
    pub seed: u64,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Failure injection.
    pub kill: Option<Kill>,
    /// Kill the job's owner (a deputy takes over).
    pub kill_owner: Option<KillOwner>,
    /// Deputies the owner keeps (0: none; the job dies with its owner).
    pub deputies: usize,
    /// A network partition that heals.
    pub partition: Option<Partition>,
    /// Peer scheduler settings (slots included).
    pub peer: PeerConfig,
    /// Owner settings.
    pub owner: OwnerConfig,
    /// Membership view refresh period.
    pub gossip: Duration,
    /// Peers in a view.
    pub view_size: usize,
    /// Time for membership to report a dead peer.
    pub detect: Duration,
    /// Message loss, duplication and reordering.
    pub faults: NetFaults,
    /// Peers that lie about their results.
    pub liars: Option<Liars>,
    /// Seed of the peers' identities and of who lies (`None`: `seed`). Jobs run one after
    /// another in one swarm share it (and their trust book) and differ in `seed`.
    pub swarm_seed: Option<u64>,
}

impl SimConfig {
    /// Defaults for `peers` peers on `topology`.
    pub fn new(peers: usize, topology: Topology, seed: u64) -> Self {
        let wan = topology == Topology::Wan;
        SimConfig {
            peers: peers.max(1),
            topology,
            seed,
            scheduler: SchedulerKind::Shoal,
            kill: None,
            kill_owner: None,
            deputies: 2,
            partition: None,
            peer: PeerConfig {
                backoff_min: if wan { Duration::from_millis(20) } else { Duration::from_millis(1) },
                backoff_max: if wan { Duration::from_millis(1000) } else { Duration::from_millis(100) },
                ..PeerConfig::default()
            },
            // Leases sized to the network (a few worst round trips plus renew periods): each silent
            // holder costs about one lease.
            owner: OwnerConfig {
                lease_floor: if wan { Duration::from_millis(1500) } else { Duration::from_millis(200) },
                ..OwnerConfig::default()
            },
            gossip: if wan { Duration::from_millis(250) } else { Duration::from_millis(20) },
            view_size: 64,
            detect: if wan { Duration::from_secs(2) } else { Duration::from_millis(200) },
            faults: NetFaults::default(),
            liars: None,
            swarm_seed: None,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Failure injection needs the Shoal scheduler.
    #[error(
        "--kill, --kill-owner and partitions need --scheduler shoal: the baselines do not recover from failures"
    )]
    KillNeedsShoal,
    /// Killing the owner needs deputies to take over.
    #[error("--kill-owner needs --deputies 1 or more: without a deputy the job dies with its owner")]
    KillOwnerNeedsDeputies,
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "Deliver, the big one (a SchedMsg), is most events: boxing it would allocate per message"
)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        msg: SchedMsg,
    },
    PeerTimer {
        peer: usize,
        token: u64,
    },
    OwnerTimer {
        token: u64,
        /// Which owner armed it (a takeover's owner starts a new generation).
        generation: u32,
    },
    Finish {
        peer: usize,
        task: TaskId,
        attempt: u32,
        outcome: TaskOutcome,
    },
    Down {
        peer: usize,
    },
    /// A long partition is detected: each side is told the other is down.
    Split,
    Heal,
    Gossip,
}

impl Ev {
    fn tag(&self) -> (u64, u64) {
        match self {
            Ev::Deliver { from, to, .. } => (1, (*from as u64) << 32 | *to as u64),
            Ev::PeerTimer { peer, token } => (2, (*peer as u64) << 32 ^ token),
            Ev::OwnerTimer { token, .. } => (3, *token),
            Ev::Finish { peer, task, .. } => (4, (*peer as u64) << 32 | u64::from(task.index.0)),
            Ev::Down { peer } => (5, *peer as u64),
            Ev::Gossip => (6, 0),
            Ev::Split => (7, 0),
            Ev::Heal => (8, 0),
        }
    }
}

#[derive(Debug)]
struct Item {
    at: Duration,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// What owners replaced by a takeover counted (the metrics add it to the last owner's).
#[derive(Debug, Default)]
struct Former {
    leases_expired: u64,
    refused: u64,
    disagreements: u64,
    discarded: u64,
    verify_runs: u64,
}

/// Whether `msg` replicates a job to its deputies (counted apart, with its own randomness).
fn replication(msg: &SchedMsg) -> bool {
    matches!(
        msg,
        SchedMsg::Deputize { .. }
            | SchedMsg::Journal { .. }
            | SchedMsg::Deputized { .. }
            | SchedMsg::NewOwner { .. }
    )
}

#[derive(Debug)]
enum Coord {
    Shoal(Box<Owner>),
    Central(Box<Central>),
}

struct World<'a> {
    cfg: &'a SimConfig,
    dag: &'a SimDag,
    net: Net,
    rng: ChaCha8Rng,
    now: Duration,
    queue: BinaryHeap<Reverse<Item>>,
    seq: u64,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, usize>,
    alive: Vec<bool>,
    told_down: Vec<bool>,
    /// Which side of the partition each peer is on (`true`: cut off).
    side: Vec<bool>,
    /// The partition in force: (heal time, whether it outlasts failure detection).
    cut: Option<(Duration, bool)>,
    /// Whether the two sides have been told of each other's loss (until the heal).
    split: bool,
    partitioned: bool,
    kill_done: bool,
    peers: Vec<PeerSched>,
    coord: Coord,
    /// The peer the coordinator runs on (the job's current owner).
    owner_at: usize,
    /// Bumped at each takeover (older owner timers are dropped).
    generation: u32,
    /// Each peer's job replicas (as a deputy).
    replicas: Vec<HashMap<JobId, Deputy>>,
    /// Peers' signing keys (a deputy that takes over signs with its own).
    keys: Vec<ed25519_dalek::SigningKey>,
    /// The owner's settings (a deputy takes over with the same).
    owner_cfg: OwnerConfig,
    /// Random stream of replication messages (their delays and faults), apart from `rng`.
    rep_rng: ChaCha8Rng,
    owner_killed: bool,
    takeovers: u64,
    /// Counts of owners that were replaced.
    former: Former,
    /// Per task at the owner's kill: `None` not done; `Some(lost)` done, `lost` if its output
    /// lived only on the owner's peer (not inline).
    done_at_owner_kill: Vec<Option<bool>>,
    runs_at_owner_kill: Vec<u32>,
    /// The owner's deputies, in takeover order, when it was killed.
    deputies_at_owner_kill: Vec<usize>,
    /// The peers that owned the job, in turn.
    owner_peers: Vec<usize>,
    killed: usize,
    messages: u64,
    /// Credit receipt batches sent (not counted in `messages`).
    receipt_messages: u64,
    /// Replication messages (`Deputize`, `Journal`, `Deputized`, `NewOwner`) sent, and their
    /// bytes (not counted in `messages` and `bytes`).
    replication_messages: u64,
    replication_bytes: u64,
    bytes: u64,
    /// Messages the injected faults lost, and duplicated.
    lost: u64,
    duplicated: u64,
    runs: Vec<u32>,
    compute: Duration,
    events: u64,
    fingerprint: u64,
    last_finish: Duration,
    fetched: u64,
    /// Which peers lie.
    liar: Vec<bool>,
    /// Each task's true output (what honest runs on true inputs give).
    truth: Vec<BlobHash>,
    /// Fuel of every run that computed.
    executed: u64,
    /// Whether any load may have changed since the last gossip round.
    dirty: bool,
    /// Gossip rounds skipped in a row because nothing changed.
    quiet: u32,
}

/// Runs `dag` under `cfg` and measures it.
pub fn simulate(dag: &SimDag, cfg: &SimConfig) -> Result<Metrics, SimError> {
    simulate_with_trust(dag, cfg, &mut TrustBook::new())
}

/// [`simulate`] with the owner's trust records `trust` from earlier jobs of the same swarm
/// (`cfg.swarm_seed`); they are updated in place.
pub fn simulate_with_trust(
    dag: &SimDag,
    cfg: &SimConfig,
    trust: &mut TrustBook,
) -> Result<Metrics, SimError> {
    if (cfg.kill.is_some() || cfg.kill_owner.is_some() || cfg.partition.is_some())
        && cfg.scheduler != SchedulerKind::Shoal
    {
        return Err(SimError::KillNeedsShoal);
    }
    if cfg.kill_owner.is_some() && cfg.deputies == 0 {
        return Err(SimError::KillOwnerNeedsDeputies);
    }
    let n = cfg.peers;
    let swarm = cfg.swarm_seed.unwrap_or(cfg.seed);
    // Real ed25519 keys (the owner signs descriptors, thieves verify them), from the seed.
    let keys: Vec<ed25519_dalek::SigningKey> = (0..n as u32)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k[8..16].copy_from_slice(&swarm.to_le_bytes());
            ed25519_dalek::SigningKey::from_bytes(&k)
        })
        .collect();
    let ids: Vec<PeerId> = keys.iter().map(|k| PeerId(k.verifying_key().to_bytes())).collect();
    let net = Net::new(cfg.topology, n, cfg.seed);
    let job_id = JobId(u128::from(cfg.seed) << 64 | 0x0053_484f_414c);
    let mut peer_cfg = cfg.peer.clone();
    if cfg.scheduler != SchedulerKind::Shoal {
        peer_cfg.stealing = false;
    }
    let peers: Vec<PeerSched> = ids.iter().map(|&id| PeerSched::new(id, peer_cfg.clone())).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut owner_cfg = cfg.owner.clone();
    owner_cfg.verify.seed ^= cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let coord = match cfg.scheduler {
        SchedulerKind::Shoal => {
            let loads: Vec<LoadHint> = peers.iter().map(PeerSched::load).collect();
            let known: Vec<usize> = (0..n).collect();
            let view = make_view(0, &known, &loads, cfg.view_size, &ids, &net, &mut rng);
            let signer = key_signer(keys[0].clone());
            let mut owner =
                Owner::new(job_id, ids[0], dag.job.clone(), owner_cfg.clone(), &view, signer, Duration::ZERO);
            if cfg.deputies > 0 {
                let record = JobRecord::of(job_id, &dag.job, dag.job.sinks().collect(), ids[0], 0);
                owner.set_deputies(record, cfg.deputies);
            }
            owner.set_trust(std::mem::take(trust));
            Coord::Shoal(Box::new(owner))
        }
        kind => Coord::Central(Box::new(Central::new(
            job_id,
            dag.job.clone(),
            kind == SchedulerKind::Random,
            ids.clone(),
            net.clone(),
            cfg.peer.slots,
        ))),
    };
    let mut w = World {
        cfg,
        dag,
        net,
        rng,
        now: Duration::ZERO,
        queue: BinaryHeap::new(),
        seq: 0,
        index: ids.iter().enumerate().map(|(i, &id)| (id, i)).collect(),
        ids,
        alive: vec![true; n],
        told_down: vec![false; n],
        side: vec![false; n],
        cut: None,
        split: false,
        partitioned: false,
        kill_done: false,
        peers,
        coord,
        owner_at: 0,
        generation: 0,
        replicas: vec![HashMap::new(); n],
        keys,
        owner_cfg,
        rep_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5245_504c_4943_4153),
        owner_killed: false,
        takeovers: 0,
        former: Former::default(),
        done_at_owner_kill: Vec::new(),
        runs_at_owner_kill: Vec::new(),
        deputies_at_owner_kill: Vec::new(),
        owner_peers: vec![0],
        killed: 0,
        messages: 0,
        receipt_messages: 0,
        replication_messages: 0,
        replication_bytes: 0,
        bytes: 0,
        lost: 0,
        duplicated: 0,
        runs: vec![0; dag.job.len()],
        compute: Duration::ZERO,
        events: 0,
        fingerprint: 0xcbf2_9ce4_8422_2325,
        last_finish: Duration::ZERO,
        fetched: 0,
        liar: liars(n, cfg.liars, swarm),
        truth: truth(dag),
        executed: 0,
        dirty: true,
        quiet: 0,
    };
    let m = w.run();
    if let Coord::Shoal(o) = &mut w.coord {
        *trust = o.take_trust();
    }
    Ok(m)
}

/// Which of `n` peers lie: a fraction of them, never peer 0 (the owner), chosen from `swarm`.
fn liars(n: usize, liars: Option<Liars>, swarm: u64) -> Vec<bool> {
    let mut liar = vec![false; n];
    let Some(l) = liars else { return liar };
    let mut pick: Vec<usize> = (1..n).collect();
    pick.shuffle(&mut ChaCha8Rng::seed_from_u64(swarm ^ 0x4c49_4152));
    let k = ((l.fraction * n as f64).round() as usize).min(pick.len());
    for &p in &pick[..k] {
        liar[p] = true;
    }
    liar
}

/// The hash an honest executor gives task `i` handed `inputs`' hashes (the sim's stand-in for
/// running it).
fn run_hash(i: TaskIndex, inputs: impl Iterator<Item = BlobHash>) -> BlobHash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&i.0.to_le_bytes());
    for h in inputs {
        hasher.update(&h.0);
    }
    BlobHash(*hasher.finalize().as_bytes())
}

/// Every task's true output: honest runs all the way up.
fn truth(dag: &SimDag) -> Vec<BlobHash> {
    let mut out = vec![BlobHash([0; 32]); dag.job.len()];
    for &i in dag.job.topo_order() {
        let inputs = dag.job.task(i).inputs.iter().map(|input| match *input {
            Input::Blob { hash, .. } => hash,
            Input::Output(p) => out[p.0 as usize],
        });
        out[i.0 as usize] = run_hash(i, inputs);
    }
    out
}

/// A random partial view for peer `p`: up to `size` of the `known` peers with their current load.
fn make_view(
    p: usize,
    known: &[usize],
    loads: &[LoadHint],
    size: usize,
    ids: &[PeerId],
    net: &Net,
    rng: &mut ChaCha8Rng,
) -> Vec<PeerHint> {
    let pick: Vec<usize> = if known.len() <= size + 1 {
        known.to_vec()
    } else {
        (0..size).map(|_| known[rng.random_range(0..known.len())]).collect()
    };
    let mut view: Vec<PeerHint> = Vec::with_capacity(pick.len());
    for q in pick {
        if q != p && !view.iter().any(|h| h.peer == ids[q]) {
            view.push(PeerHint { peer: ids[q], load: loads[q], rtt: net.rtt(p, q) });
        }
    }
    view
}

impl World<'_> {
    fn push(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Item { at, seq: self.seq, ev }));
    }

    fn done(&self) -> usize {
        match &self.coord {
            Coord::Shoal(o) => o.done(),
            Coord::Central(c) => c.done(),
        }
    }

    fn run(&mut self) -> Metrics {
        if let Coord::Central(c) = &mut self.coord {
            c.dispatch(&mut self.rng);
        }
        self.gossip();
        self.drain(0);
        let total = self.dag.job.len();
        let max_work = self.dag.work.iter().copied().max().unwrap_or(0) as f64 / FUEL_PER_SEC;
        let stall = Duration::from_secs_f64(10.0 * max_work + 60.0);
        while self.done() < total {
            let Some(Reverse(item)) = self.queue.pop() else { break };
            if item.at > self.last_finish + stall {
                break;
            }
            self.now = item.at;
            // Replication is counted apart (see the module doc).
            if !matches!(&item.ev, Ev::Deliver { msg, .. } if replication(msg)) {
                self.events += 1;
                let (a, b) = item.ev.tag();
                for x in [item.at.as_nanos() as u64, a, b] {
                    self.fingerprint = (self.fingerprint ^ x).wrapping_mul(0x100_0000_01b3);
                }
                if !matches!(item.ev, Ev::Gossip | Ev::PeerTimer { .. } | Ev::OwnerTimer { .. }) {
                    self.dirty = true;
                }
            }
            self.step(item.ev);
        }
        self.metrics()
    }

    fn step(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Deliver { from, to, msg } => {
                if !self.alive[to] {
                    return;
                }
                if msg.for_driver() {
                    self.driver_msg(from, to, msg);
                } else if msg.owner_job().is_some() {
                    if to != self.owner_at {
                        return; // Not the job's owner (any more).
                    }
                    let progress = !replication(&msg);
                    match &mut self.coord {
                        Coord::Shoal(o) => {
                            // Every owner-bound message the simulator routes names this job.
                            let _ = o.handle_msg(now, self.ids[from], msg);
                        }
                        Coord::Central(c) => c.handle_msg(from, msg, &mut self.rng),
                    }
                    if progress {
                        self.maybe_kill();
                        self.maybe_partition();
                    }
                    self.drain(to);
                    if progress {
                        self.maybe_kill_owner();
                    }
                } else {
                    self.peers[to].handle_msg(now, self.ids[from], msg, &mut self.rng);
                    self.drain(to);
                }
            }
            Ev::PeerTimer { peer, token } => {
                if self.alive[peer] {
                    self.peers[peer].handle_timer(now, token, &mut self.rng);
                    self.drain(peer);
                }
            }
            Ev::OwnerTimer { token, generation } => {
                if generation != self.generation || !self.alive[self.owner_at] {
                    return; // Armed by an owner that is gone.
                }
                if let Coord::Shoal(o) = &mut self.coord {
                    o.handle_timer(now, token);
                }
                self.drain(self.owner_at);
            }
            Ev::Finish { peer, task, attempt, outcome } => {
                if self.alive[peer] {
                    self.last_finish = now;
                    self.peers[peer].handle_task_finished(now, task, attempt, outcome, &mut self.rng);
                    self.drain(peer);
                }
            }
            Ev::Down { peer } => {
                self.told_down[peer] = true;
                for q in 0..self.peers.len() {
                    if self.alive[q] {
                        self.peers[q].handle_peer_down(now, self.ids[peer], &mut self.rng);
                        self.drain(q);
                    }
                }
                if self.alive[self.owner_at] {
                    if let Coord::Shoal(o) = &mut self.coord {
                        o.handle_peer_down(now, self.ids[peer]);
                    }
                    self.drain(self.owner_at);
                } else {
                    self.maybe_take_over();
                }
            }
            Ev::Split => {
                self.split = true;
                let n = self.peers.len();
                for p in 0..n {
                    if !self.alive[p] {
                        continue;
                    }
                    for q in 0..n {
                        if self.side[q] == self.side[p] {
                            continue;
                        }
                        self.peers[p].handle_peer_down(now, self.ids[q], &mut self.rng);
                        if p == self.owner_at
                            && let Coord::Shoal(o) = &mut self.coord
                        {
                            o.handle_peer_down(now, self.ids[q]);
                        }
                    }
                    self.drain(p);
                }
            }
            Ev::Heal => {
                self.cut = None;
                self.split = false;
                self.dirty = true;
            }
            Ev::Gossip => self.gossip(),
        }
    }

    /// Whether traffic between `a` and `b` crosses the partition: `None` if not, else the
    /// heal time and whether the connections are closed (traffic lost rather than delayed).
    fn crossing(&self, a: usize, b: usize) -> Option<(Duration, bool)> {
        self.cut.filter(|_| self.side[a] != self.side[b])
    }

    fn maybe_partition(&mut self) {
        let Some(part) = self.cfg.partition else { return };
        let total = self.dag.job.len() as f64;
        if self.partitioned || (self.done() as f64) < part.progress * total {
            return;
        }
        self.partitioned = true;
        let owner = self.owner_at;
        let mut far: Vec<usize> = (0..self.peers.len()).filter(|&p| p != owner).collect();
        far.shuffle(&mut self.rng);
        let k = ((part.fraction * self.peers.len() as f64).round() as usize).max(1).min(far.len());
        for &p in far.iter().take(k) {
            self.side[p] = true;
        }
        let closed = part.duration >= self.cfg.detect;
        self.cut = Some((self.now + part.duration, closed));
        if closed {
            self.push(self.now + self.cfg.detect, Ev::Split);
        }
        self.push(self.now + part.duration, Ev::Heal);
    }

    /// Sends everything peer `p` (and, on the owner's peer, the coordinator) wants sent, started
    /// or armed.
    fn drain(&mut self, p: usize) {
        if p == self.owner_at {
            loop {
                let t = match &mut self.coord {
                    Coord::Shoal(o) => o.poll_transmit(),
                    Coord::Central(c) => c.poll_transmit(),
                };
                let Some(t) = t else { break };
                self.send(p, t);
            }
            let mut timers = Vec::new();
            if let Coord::Shoal(o) = &mut self.coord {
                timers.extend(std::iter::from_fn(|| o.poll_timer()));
            }
            for t in timers {
                self.push(t.at.max(self.now), Ev::OwnerTimer { token: t.token, generation: self.generation });
            }
        }
        while let Some(t) = self.peers[p].poll_transmit() {
            self.send(p, t);
        }
        while let Some(d) = self.peers[p].poll_run() {
            self.start(p, d);
        }
        while let Some(t) = self.peers[p].poll_timer() {
            self.push(t.at.max(self.now), Ev::PeerTimer { peer: p, token: t.token });
        }
    }

    fn send(&mut self, from: usize, t: Transmit) {
        let Some(&to) = self.index.get(&t.to) else { return };
        let delay = if to == from {
            Duration::ZERO
        } else {
            let size = t.msg.to_bytes().len() as u64;
            let replicating = replication(&t.msg);
            // Credit receipts and replication are not scheduling messages: counted apart.
            if matches!(t.msg, SchedMsg::Receipts { .. }) {
                self.receipt_messages += 1;
            } else if replicating {
                self.replication_messages += 1;
                self.replication_bytes += size;
            } else {
                self.messages += 1;
                self.bytes += size;
            }
            // Replication draws from its own stream, so it leaves the rest of the run as it was.
            let rng = if replicating { &mut self.rep_rng } else { &mut self.rng };
            let mut delay = self.net.delay(from, to, size, rng);
            let faults = self.cfg.faults;
            if faults.reorder {
                delay += self.net.rtt(from, to).mul_f64(rng.random_range(0.0..1.0));
            }
            // Faults are counted for scheduling messages (and receipts) only.
            let counted = u64::from(!replicating);
            if faults.loss > 0.0 && rng.random_bool(faults.loss.min(1.0)) {
                self.lost += counted;
                return;
            }
            if faults.duplicate > 0.0 && rng.random_bool(faults.duplicate.min(1.0)) {
                self.duplicated += counted;
                let again = delay + self.net.rtt(from, to).mul_f64(rng.random_range(0.0..1.0));
                self.push(self.now + again, Ev::Deliver { from, to, msg: t.msg.clone() });
            }
            match self.crossing(from, to) {
                None => delay,
                Some((_, true)) => return, // The connection is gone.
                Some((heal, false)) => heal.saturating_sub(self.now) + delay,
            }
        };
        self.push(self.now + delay, Ev::Deliver { from, to, msg: t.msg });
    }

    /// The executor model: fetch inputs from the nearest live holder, then compute.
    fn start(&mut self, p: usize, d: TaskDesc) {
        let i = d.task.index.0 as usize;
        self.runs[i] += 1;
        let mut fetch = Duration::ZERO;
        let mut lost = None;
        for (k, input) in d.inputs.iter().enumerate() {
            if let InputSource::Holders(hs) = &input.source {
                let best = hs
                    .iter()
                    .filter_map(|h| self.index.get(h).copied())
                    .filter(|&h| self.alive[h] && !matches!(self.crossing(h, p), Some((_, true))))
                    .min_by_key(|&h| (self.crossing(h, p).is_some(), self.net.rtt(h, p), h));
                match best {
                    Some(h) => {
                        if h != p {
                            self.fetched += input.size;
                        }
                        let wait = self.crossing(h, p).map_or(Duration::ZERO, |(heal, _)| heal - self.now);
                        fetch = fetch.max(wait + self.net.fetch(h, p, input.size, &mut self.rng));
                    }
                    None => lost = lost.or(Some(k as u32)),
                }
            } else if matches!(input.source, InputSource::After { .. }) {
                lost = lost.or(Some(k as u32)); // Never reaches an executor unfilled.
            }
        }
        let compute = Duration::from_secs_f64(self.dag.work[i] as f64 / FUEL_PER_SEC);
        let (at, outcome) = match lost {
            Some(input) => (self.now + fetch, TaskOutcome::Failed(FailureKind::InputLost { input })),
            None => {
                self.compute += compute;
                let size = self.dag.out_size[i];
                let inline = (size <= self.cfg.owner.inline_max).then(|| vec![0u8; size as usize]);
                self.executed += self.dag.work[i];
                let hash =
                    self.result(p, d.task.index, run_hash(d.task.index, d.inputs.iter().map(|x| x.hash)));
                let output = shoal_core::sched::OutputRef { hash, size, inline };
                (self.now + fetch + compute, TaskOutcome::Ok { output, fuel: self.dag.work[i] })
            }
        };
        self.push(at, Ev::Finish { peer: p, task: d.task, attempt: d.attempt, outcome });
    }

    /// What peer `p` reports for task `i` whose honest output is `hash`: a liar's wrong bytes
    /// per its mode.
    fn result(&mut self, p: usize, i: TaskIndex, hash: BlobHash) -> BlobHash {
        let Some(l) = self.cfg.liars.filter(|_| self.liar[p]) else { return hash };
        // Each liar's own wrong bytes (distinct for every peer index, beyond 256 peers too).
        let own = || run_hash(i, [hash, BlobHash::of(&(p as u64).to_le_bytes())].into_iter());
        match l.mode {
            LieMode::Consistent | LieMode::Turncoat => own(),
            LieMode::Random if self.rng.random_bool(0.5) => own(),
            LieMode::Random => hash,
            LieMode::Collude => run_hash(i, [hash, hash].into_iter()),
        }
    }

    fn gossip(&mut self) {
        let next = self.now + self.cfg.gossip;
        self.push(next, Ev::Gossip);
        // Loads unchanged: views would only reshuffle, so do that one round in ten (saves time on
        // long tasks without starving thieves whose view misses the loaded peers).
        if !self.dirty && self.quiet < 9 {
            self.quiet += 1;
            return;
        }
        self.dirty = false;
        self.quiet = 0;
        let n = self.peers.len();
        let loads: Vec<_> =
            (0..n).map(|q| if self.alive[q] { self.peers[q].load() } else { LoadHint::default() }).collect();
        let known: Vec<usize> = (0..n).filter(|&q| !self.told_down[q]).collect();
        let sides: [Vec<usize>; 2] =
            [false, true].map(|s| known.iter().copied().filter(|&q| self.side[q] == s).collect());
        for p in 0..n {
            if !self.alive[p] {
                continue;
            }
            let known = if self.split { &sides[usize::from(self.side[p])] } else { &known };
            let view = make_view(p, known, &loads, self.cfg.view_size, &self.ids, &self.net, &mut self.rng);
            if p == self.owner_at
                && let Coord::Shoal(o) = &mut self.coord
            {
                o.handle_view(self.now, &view);
            }
            self.peers[p].handle_view(self.now, view, &mut self.rng);
            self.drain(p);
        }
    }

    fn maybe_kill(&mut self) {
        let Some(kill) = self.cfg.kill else { return };
        let total = self.dag.job.len() as f64;
        if self.kill_done || (self.done() as f64) < kill.progress * total {
            return;
        }
        self.kill_done = true;
        let owner = self.owner_at;
        let mut victims: Vec<usize> = (0..self.peers.len()).filter(|&p| p != owner).collect();
        victims.shuffle(&mut self.rng);
        let k = ((kill.fraction * self.peers.len() as f64).round() as usize).max(1).min(victims.len());
        for &v in &victims[..k] {
            self.alive[v] = false;
            let at = self.now + self.cfg.detect;
            self.push(at, Ev::Down { peer: v });
        }
        self.killed += k;
    }

    /// Kills the owner's peer (and its first deputy, if asked) once its share of tasks is done.
    fn maybe_kill_owner(&mut self) {
        let Some(kill) = self.cfg.kill_owner else { return };
        let total = self.dag.job.len() as f64;
        let done = self.done();
        // A job already done has no owner left to kill.
        if self.owner_killed || (done as f64) < kill.progress * total || done == self.dag.job.len() {
            return;
        }
        let Coord::Shoal(o) = &self.coord else { return };
        self.owner_killed = true;
        // What the deputies know of each done task's output: the journal's holders (its
        // executor; copies made later are not journalled).
        let me = self.ids[self.owner_at];
        let journal = Replayed::of(self.dag.job.len(), o.journal());
        self.done_at_owner_kill = (0..self.dag.job.len())
            .map(|i| match (o.state(TaskIndex(i as u32)), &journal.done[i]) {
                (TaskState::Done { .. }, Some(d)) => {
                    Some(d.output.inline.is_none() && d.holders.iter().all(|&h| h == me))
                }
                (TaskState::Done { .. }, None) => Some(true),
                _ => None,
            })
            .collect();
        self.runs_at_owner_kill = self.runs.clone();
        self.deputies_at_owner_kill =
            o.deputies().iter().filter_map(|(d, _)| self.index.get(d).copied()).collect();
        let mut victims = vec![self.owner_at];
        if kill.first_deputy
            && let Some(&d) = self.deputies_at_owner_kill.first()
        {
            victims.push(d);
        }
        for v in victims {
            if self.alive[v] {
                self.alive[v] = false;
                self.killed += 1;
                let at = self.now + self.cfg.detect;
                self.push(at, Ev::Down { peer: v });
            }
        }
    }

    /// With the owner dead: the live deputy that should take over (now that membership told it
    /// the owner, and every deputy ranked before it, are down) becomes the job's owner.
    fn maybe_take_over(&mut self) {
        let Coord::Shoal(_) = &self.coord else { return };
        let job = self.job_id();
        let down = |p: &PeerId| self.index.get(p).is_none_or(|&q| self.told_down[q]);
        // Should two claim it (replicas that missed a list change), the higher (term, peer) wins,
        // as it would supersede the other.
        let heir = (0..self.peers.len())
            .filter(|&d| self.alive[d])
            .filter_map(|d| self.replicas[d].get(&job).map(|r| (d, r)))
            .filter(|(d, r)| r.should_take_over(self.ids[*d], &down))
            .max_by_key(|(d, r)| (r.next_term(), self.ids[*d]))
            .map(|(d, _)| d);
        let Some(d) = heir else { return };
        let Some(replica) = self.replicas[d].remove(&job) else { return };
        let now = self.now;
        let n = self.peers.len();
        let loads: Vec<_> =
            (0..n).map(|q| if self.alive[q] { self.peers[q].load() } else { LoadHint::default() }).collect();
        let known: Vec<usize> = (0..n).filter(|&q| !self.told_down[q]).collect();
        let view = make_view(d, &known, &loads, self.cfg.view_size, &self.ids, &self.net, &mut self.rng);
        let signer = key_signer(self.keys[d].clone());
        let mut owner =
            replica.take_over(self.ids[d], replica.next_term(), self.owner_cfg.clone(), &view, signer, now);
        if let Coord::Shoal(old) = &mut self.coord {
            // The swarm's trust book stays with whoever owns its jobs.
            owner.set_trust(old.take_trust());
            let p = old.progress();
            self.former.leases_expired += p.leases_expired;
            self.former.refused += p.refused.total();
            self.former.disagreements += p.disagreements;
            self.former.discarded += p.discarded;
            self.former.verify_runs += p.verify_runs;
        }
        // Membership tells it who is down: the old owner, and any other peer.
        for q in 0..n {
            if self.told_down[q] {
                owner.handle_peer_down(now, self.ids[q]);
            }
        }
        owner.set_deputies(replica.record().clone(), self.cfg.deputies);
        self.coord = Coord::Shoal(Box::new(owner));
        self.owner_at = d;
        self.owner_peers.push(d);
        self.generation += 1;
        self.takeovers += 1;
        self.drain(d);
    }

    fn job_id(&self) -> JobId {
        match &self.coord {
            Coord::Shoal(o) => o.id(),
            Coord::Central(_) => JobId(0),
        }
    }

    /// A message the driver handles on peer `to` (replicas, takeovers); queries, statuses and
    /// cancels are not modelled.
    fn driver_msg(&mut self, from: usize, to: usize, msg: SchedMsg) {
        let now = self.now;
        let sender = self.ids[from];
        let owner_here = to == self.owner_at && self.alive[to];
        match msg {
            SchedMsg::Deputize { record, term, deputies, changes } => {
                let job = record.id;
                if owner_here
                    && let Coord::Shoal(o) = &mut self.coord
                    && o.id() == job
                {
                    // A peer that thinks it owns the job.
                    o.handle_new_owner(now, sender, term, sender);
                    self.drain(to);
                    return;
                }
                let seq = changes.len() as u64;
                let held = match self.replicas[to].get_mut(&job) {
                    Some(r) => r.handle_deputize(sender, term, deputies, changes),
                    None => match Deputy::new(*record, term, sender, deputies, changes) {
                        Ok(r) => {
                            self.replicas[to].insert(job, r);
                            true
                        }
                        Err(_) => false,
                    },
                };
                if held {
                    let msg = SchedMsg::Deputized { job, term, seq };
                    self.send(to, Transmit { to: sender, msg });
                }
            }
            SchedMsg::Journal { job, term, seq, changes, deputies } => {
                let Some(r) = self.replicas[to].get_mut(&job) else { return };
                if let JournalOutcome::Gap(have) = r.handle_journal(sender, term, seq, changes, deputies) {
                    let msg = SchedMsg::Deputized { job, term, seq: have };
                    self.send(to, Transmit { to: sender, msg });
                }
            }
            SchedMsg::NewOwner { job, term, owner } => {
                if owner_here
                    && let Coord::Shoal(o) = &mut self.coord
                    && o.id() == job
                {
                    o.handle_new_owner(now, sender, term, owner);
                    self.drain(to);
                } else if let Some(r) = self.replicas[to].get_mut(&job) {
                    r.handle_new_owner(sender, term, owner);
                }
            }
            _ => {}
        }
    }

    fn metrics(&self) -> Metrics {
        let slots = self.cfg.peer.slots.max(1);
        let lower = self.dag.lower_bound_s(self.peers.len() * slots as usize);
        let makespan = self.now.as_secs_f64();
        let tasks = self.dag.job.len();
        let stats = self.peers.iter().map(PeerSched::stats);
        let (tried, won) = stats.fold((0, 0), |(t, w), s| (t + s.steals_tried, w + s.steals_won));
        let capacity = makespan * (self.peers.len() * slots as usize) as f64;
        let rerun: f64 = self
            .runs
            .iter()
            .zip(&self.dag.work)
            .map(|(&r, &w)| f64::from(r.saturating_sub(1)) * w as f64)
            .sum::<f64>()
            / FUEL_PER_SEC;
        let outputs = match &self.coord {
            Coord::Shoal(o) => o.outputs(),
            Coord::Central(c) => c.outputs(),
        };
        let wrong = outputs.iter().zip(&self.truth).filter(|(o, t)| o.is_some_and(|o| o != **t)).count();
        let work: u64 = self.dag.work.iter().sum();
        let progress = match &self.coord {
            Coord::Shoal(o) => o.progress(),
            Coord::Central(_) => Default::default(),
        };
        Metrics {
            scheduler: format!("{:?}", self.cfg.scheduler).to_lowercase(),
            makespan_s: makespan,
            lower_bound_s: lower,
            ratio: if lower > 0.0 { makespan / lower } else { 0.0 },
            tasks,
            tasks_completed: self.done(),
            peers: self.peers.len(),
            slots,
            peers_killed: self.killed,
            messages: self.messages,
            bytes: self.bytes,
            messages_per_task: self.messages as f64 / tasks as f64,
            receipt_messages_per_task: self.receipt_messages as f64 / tasks as f64,
            replication_messages: self.replication_messages,
            replication_bytes: self.replication_bytes,
            replication_messages_per_task: self.replication_messages as f64 / tasks as f64,
            replication_bytes_per_task: self.replication_bytes as f64 / tasks as f64,
            owners_killed: u64::from(self.owner_killed),
            takeovers: self.takeovers,
            recovery: None,
            done_at_owner_kill: self.done_at_owner_kill.clone(),
            runs_at_owner_kill: self.runs_at_owner_kill.clone(),
            deputies_at_owner_kill: self.deputies_at_owner_kill.clone(),
            owner_peers: self.owner_peers.clone(),
            bytes_per_task: self.bytes as f64 / tasks as f64,
            steals_tried: tried,
            steals_won: won,
            idle_fraction: if capacity > 0.0 { 1.0 - self.compute.as_secs_f64() / capacity } else { 0.0 },
            runs: self.runs.iter().map(|&r| u64::from(r)).sum(),
            fetched_bytes_per_task: self.fetched as f64 / tasks as f64,
            rerun_work_share: rerun / self.dag.total_work_s().max(f64::MIN_POSITIVE),
            events: self.events,
            fingerprint: self.fingerprint,
            messages_lost: self.lost,
            messages_duplicated: self.duplicated,
            leases_expired: match &self.coord {
                Coord::Shoal(o) => o.progress().leases_expired,
                Coord::Central(_) => 0,
            } + self.former.leases_expired,
            refused: match &self.coord {
                Coord::Shoal(o) => o.progress().refused.total(),
                Coord::Central(_) => 0,
            } + self.former.refused
                + self.peers.iter().map(|p| p.stats().refused.total()).sum::<u64>(),
            liars: self.liar.iter().filter(|&&l| l).count(),
            jobs: 1,
            jobs_completed: u64::from(self.done() == tasks),
            wrong_outputs_accepted: wrong as u64,
            fuel_executed: self.executed,
            fuel_unverified: work,
            verification_overhead: self.executed as f64 / work.max(1) as f64 - 1.0,
            disagreements: progress.disagreements + self.former.disagreements,
            discarded: progress.discarded + self.former.discarded,
            verify_runs: progress.verify_runs + self.former.verify_runs,
            outputs,
            runs_per_task: self.runs.clone(),
            unfinished: match &self.coord {
                Coord::Shoal(o) => (0..tasks as u32)
                    .map(TaskIndex)
                    .filter(|&i| !matches!(o.state(i), TaskState::Done { .. }))
                    .take(20)
                    .map(|i| format!("{i:?}: {:?}", o.state(i)))
                    .collect(),
                Coord::Central(_) => Vec::new(),
            },
        }
    }
}
