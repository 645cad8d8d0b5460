//! A fault-injecting UDP relay: the project's own stand-in for `tc netem`, which is not available
//! where Shoal is tested.
//!
//! [`Relay::start`] listens on a local address and forwards every datagram it receives to one
//! target address, and the target's replies back to the sender. Each client source address gets
//! its own upstream socket (a NAT-like mapping), so several peers can share one relay and the
//! target tells them apart; the target can also *open* traffic towards a client by sending to
//! that client's upstream socket, as long as the mapping lives. Both directions go through a
//! [`Faults`] pipeline, applied in this order: partition (drop everything), loss (independent,
//! probability [`Faults::loss`]), bandwidth cap ([`RateLimit`]: a token bucket in front of a
//! bounded FIFO queue, tail drop when full), one-way delay ([`Faults::delay`] ± uniform
//! [`Faults::jitter`]). The partition switch is flipped at run time through the handle.
//!
//! Invariants:
//! - **Deterministic faults.** Loss draws and jitter come from one RNG per direction seeded from
//!   [`RelayConfig::seed`] (rand's `StdRng`): for a given build, the same seed and the same
//!   sequence of datagrams (sizes and arrival times) give the same drops and the same delivery
//!   times. The pure part (`Link`) is unit-tested below without sockets.
//! - **Order.** Without jitter, or with [`Faults::reorder`] off (the default), a direction delivers
//!   datagrams in the order it received them: a datagram's delivery time is never earlier than
//!   its predecessor's (jitter then only stretches gaps). With [`Faults::reorder`] on, each
//!   datagram gets its own jittered delay, so jitter larger than the gap between two datagrams
//!   reorders them, on purpose (like netem). Loss and the rate limiter never reorder.
//! - **Bounded.** At most [`RelayConfig::max_clients`] mappings (idle ones, silent for
//!   [`RelayConfig::client_idle`], are evicted first; a new client beyond the bound is refused),
//!   at most [`RelayConfig::max_held_bytes`] waiting bytes per direction, at most
//!   [`RateLimit::queue`] bytes queued at the bottleneck; beyond a bound datagrams are dropped
//!   and counted, never buffered.
//! - **Never panics** on any datagram (any size up to 64 KiB, any source); socket errors are
//!   counted or skipped, and the relay keeps running.
//! - **Stops with its handle**: dropping the [`Relay`] cancels every task (their sockets close
//!   when they notice); [`Relay::stop`] also waits for them, so the ports are free afterwards.
//!
//! Datagrams from the target are accepted on a client's upstream socket only if they come from
//! exactly [`RelayConfig::target`]; anything else is counted as stray and dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Longest delay (fixed plus jitter) or queueing time a configuration may ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Datagrams waiting between the sockets and a direction's scheduler (beyond: dropped, counted
/// as `queue_full`).
const CHANNEL: usize = 4096;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// A bandwidth cap: a token bucket of `burst` bytes filling at `bytes_per_sec`, in front of a FIFO
/// queue of at most `queue` bytes (like `tc tbf rate … burst … limit …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate (bytes per second, at least 1).
    pub bytes_per_sec: u64,
    /// Bytes that may pass at once after a quiet period (at least 1).
    pub burst: u64,
    /// Bytes that may wait for tokens; a datagram that would exceed this is dropped.
    pub queue: u64,
}

impl RateLimit {
    /// A cap of `bytes_per_sec` with a burst of 20 ms worth (at least 16 KiB) and a queue of
    /// 100 ms worth (at least 64 KiB).
    pub fn new(bytes_per_sec: u64) -> Self {
        RateLimit {
            bytes_per_sec,
            burst: (bytes_per_sec / 50).max(16 << 10),
            queue: (bytes_per_sec / 10).max(64 << 10),
        }
    }
}

/// The faults applied to one direction of the relay. The default applies none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Each datagram's delay is drawn uniformly from `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Whether jitter may reorder datagrams (see the module's invariants); off by default.
    pub reorder: bool,
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub loss: f64,
    /// Optional bandwidth cap.
    pub rate: Option<RateLimit>,
}

impl Faults {
    fn check(&self, dir: &str) -> Result<(), RelayError> {
        let bad = |why: String| Err(RelayError::Invalid(format!("{dir}: {why}")));
        if !(0.0..=1.0).contains(&self.loss) {
            return bad(format!("loss must be a probability in [0, 1], got {}", self.loss));
        }
        if self.delay.saturating_add(self.jitter) > MAX_DELAY {
            return bad(format!("delay plus jitter must be at most {MAX_DELAY:?}"));
        }
        if let Some(r) = self.rate {
            if r.bytes_per_sec == 0 || r.burst == 0 {
                return bad("rate and burst must be at least 1 byte".into());
            }
            if r.queue / r.bytes_per_sec > MAX_DELAY.as_secs() {
                return bad(format!("queue must drain within {MAX_DELAY:?} at the rate"));
            }
        }
        Ok(())
    }
}

/// Everything a [`Relay`] needs to start.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address clients send to (`127.0.0.1:0` picks a free loopback port).
    pub listen: SocketAddr,
    /// Where their datagrams go.
    pub target: SocketAddr,
    /// Faults on datagrams from clients to the target.
    pub to_target: Faults,
    /// Faults on datagrams from the target back to clients.
    pub to_client: Faults,
    /// Seed of the fault RNGs (see the module's invariants).
    pub seed: u64,
    /// Most client mappings kept at once.
    pub max_clients: usize,
    /// A mapping whose client sent nothing for this long may be evicted for a new client.
    pub client_idle: Duration,
    /// Most bytes waiting (queued or delayed) per direction.
    pub max_held_bytes: usize,
}

impl RelayConfig {
    /// A relay from `listen` to `target` without faults: 64 clients, 60 s idle, 32 MiB held.
    pub fn new(listen: SocketAddr, target: SocketAddr, seed: u64) -> Self {
        RelayConfig {
            listen,
            target,
            to_target: Faults::default(),
            to_client: Faults::default(),
            seed,
            max_clients: 64,
            client_idle: Duration::from_secs(60),
            max_held_bytes: 32 << 20,
        }
    }

    /// Applies `faults` to both directions.
    pub fn both_ways(mut self, faults: Faults) -> Self {
        self.to_client = faults.clone();
        self.to_target = faults;
        self
    }
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration is out of range.
    #[error("invalid relay configuration: {0}")]
    Invalid(String),
    /// The listening socket could not be opened.
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What happened to the datagrams of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams received for this direction.
    pub received: u64,
    /// Datagrams sent on.
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Dropped by the loss probability.
    pub lost: u64,
    /// Dropped because a queue was full (rate limiter, held-bytes bound, or scheduler backlog).
    pub queue_full: u64,
    /// Dropped because the relay was partitioned (on arrival or when due).
    pub partitioned: u64,
    /// Failed to send (socket error).
    pub send_errors: u64,
}

/// A snapshot of a relay's counters (see [`Relay::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to target.
    pub to_target: DirectionStats,
    /// Target to client.
    pub to_client: DirectionStats,
    /// Client mappings open now.
    pub clients: u64,
    /// Datagrams from new clients refused because the mapping table was full.
    pub refused_clients: u64,
    /// Datagrams on an upstream socket that did not come from the target.
    pub stray: u64,
}

#[derive(Debug, Default)]
struct DirCounters {
    received: AtomicU64,
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    lost: AtomicU64,
    queue_full: AtomicU64,
    partitioned: AtomicU64,
    send_errors: AtomicU64,
}

impl DirCounters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            received: g(&self.received),
            delivered: g(&self.delivered),
            delivered_bytes: g(&self.delivered_bytes),
            lost: g(&self.lost),
            queue_full: g(&self.queue_full),
            partitioned: g(&self.partitioned),
            send_errors: g(&self.send_errors),
        }
    }
}

/// State shared by the handle and the tasks.
#[derive(Debug, Default)]
struct Shared {
    partitioned: AtomicBool,
    to_target: DirCounters,
    to_client: DirCounters,
    clients: AtomicU64,
    refused_clients: AtomicU64,
    stray: AtomicU64,
}

/// A running relay. Dropping it stops the relay.
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    _guard: DropGuard,
}

impl Relay {
    /// Checks `cfg`, binds the listening socket and starts relaying (needs a tokio runtime).
    pub async fn start(cfg: RelayConfig) -> Result<Relay, RelayError> {
        cfg.to_target.check("to_target")?;
        cfg.to_client.check("to_client")?;
        if cfg.max_clients == 0 {
            return Err(RelayError::Invalid("max_clients must be at least 1".into()));
        }
        if cfg.max_held_bytes < MAX_DATAGRAM {
            return Err(RelayError::Invalid(format!("max_held_bytes must be at least {MAX_DATAGRAM}")));
        }
        let listen = UdpSocket::bind(cfg.listen)
            .await
            .map_err(|source| RelayError::Bind { addr: cfg.listen, source })?;
        let local_addr =
            listen.local_addr().map_err(|source| RelayError::Bind { addr: cfg.listen, source })?;
        let listen = Arc::new(listen);
        let shared = Arc::new(Shared::default());
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let start = Instant::now();
        let (up_tx, up_rx) = mpsc::channel(CHANNEL);
        let (down_tx, down_rx) = mpsc::channel(CHANNEL);
        for (faults, rx, dir, stream) in
            [(&cfg.to_target, up_rx, Dir::ToTarget, 0u64), (&cfg.to_client, down_rx, Dir::ToClient, 1)]
        {
            let link = Link::new(faults, cfg.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let sched = Scheduler {
                link,
                rx,
                shared: shared.clone(),
                dir,
                start,
                max_held: cfg.max_held_bytes,
                cancel: cancel.clone(),
            };
            tasks.spawn(sched.run());
        }
        let listener = Listener {
            cfg,
            socket: listen,
            up: up_tx,
            down: down_tx,
            shared: shared.clone(),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
        };
        tasks.spawn(listener.run());
        debug!(%local_addr, "relay started");
        Ok(Relay { local_addr, shared, _guard: cancel.clone().drop_guard(), cancel, tasks })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Drops every datagram, both ways, until [`Relay::heal`] (mappings are kept).
    pub fn partition(&self) {
        self.shared.partitioned.store(true, Ordering::Relaxed);
    }

    /// Ends a partition.
    pub fn heal(&self) {
        self.shared.partitioned.store(false, Ordering::Relaxed);
    }

    /// Whether the relay is partitioned.
    pub fn is_partitioned(&self) -> bool {
        self.shared.partitioned.load(Ordering::Relaxed)
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats {
            to_target: s.to_target.snapshot(),
            to_client: s.to_client.snapshot(),
            clients: s.clients.load(Ordering::Relaxed),
            refused_clients: s.refused_clients.load(Ordering::Relaxed),
            stray: s.stray.load(Ordering::Relaxed),
        }
    }

    /// Stops the relay and waits until every task (and so every socket) is gone.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[derive(Debug, Clone, Copy)]
enum Dir {
    ToTarget,
    ToClient,
}

impl Shared {
    fn counters(&self, dir: Dir) -> &DirCounters {
        match dir {
            Dir::ToTarget => &self.to_target,
            Dir::ToClient => &self.to_client,
        }
    }
}

/// A datagram on its way: its bytes, the socket it leaves by and where it goes.
#[derive(Debug)]
struct Datagram {
    data: Vec<u8>,
    via: Arc<UdpSocket>,
    to: SocketAddr,
}

/// A datagram waiting for its delivery time; ordered by (time, arrival number).
#[derive(Debug)]
struct Pending {
    at: Duration,
    seq: u64,
    dgram: Datagram,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The token bucket of a [`RateLimit`], on a clock given by the caller (time since start).
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    queue: f64,
    /// Tokens at `at`; negative while bytes wait in the queue (their debt).
    tokens: f64,
    at: Duration,
}

impl TokenBucket {
    fn new(r: &RateLimit) -> Self {
        TokenBucket {
            rate: r.bytes_per_sec.max(1) as f64,
            burst: r.burst as f64,
            queue: r.queue as f64,
            tokens: r.burst as f64,
            at: Duration::ZERO,
        }
    }

    /// When a datagram of `len` bytes arriving at `now` leaves the bottleneck (FIFO: never
    /// before an earlier one), or `None` when the queue has no room for it (tail drop).
    fn admit(&mut self, now: Duration, len: usize) -> Option<Duration> {
        if now > self.at {
            let refill = (now - self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.at = now;
        }
        let after = self.tokens - len as f64;
        if after < -self.queue {
            return None;
        }
        self.tokens = after;
        if after >= 0.0 {
            return Some(self.at);
        }
        let wait = Duration::try_from_secs_f64(-after / self.rate).unwrap_or(MAX_DELAY);
        Some(self.at.saturating_add(wait))
    }
}

/// The delay stage: fixed delay plus uniform jitter, in order unless reordering is allowed.
#[derive(Debug)]
struct DelayLine {
    delay: Duration,
    jitter: Duration,
    reorder: bool,
    /// Delivery time of the previous datagram (for in-order delivery).
    last: Duration,
}

impl DelayLine {
    fn deliver_at<R: Rng + ?Sized>(&mut self, departs: Duration, rng: &mut R) -> Duration {
        let base = departs.saturating_add(self.delay);
        let at = if self.jitter.is_zero() {
            base
        } else {
            let j = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
            let offset = rng.random_range(0..=j.saturating_mul(2));
            base.saturating_add(Duration::from_nanos(offset)).saturating_sub(self.jitter).max(departs)
        };
        if self.reorder {
            return at;
        }
        let at = at.max(self.last);
        self.last = at;
        at
    }
}

/// What becomes of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Lost,
    QueueFull,
    At(Duration),
}

/// The pure fault pipeline of one direction (no sockets, no clock): loss, rate, delay.
#[derive(Debug)]
struct Link {
    loss: f64,
    bucket: Option<TokenBucket>,
    delay: DelayLine,
    rng: StdRng,
}

impl Link {
    fn new(f: &Faults, seed: u64) -> Self {
        Link {
            loss: f.loss,
            bucket: f.rate.as_ref().map(TokenBucket::new),
            delay: DelayLine { delay: f.delay, jitter: f.jitter, reorder: f.reorder, last: Duration::ZERO },
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Decides the fate of a datagram of `len` bytes arriving at `now`.
    fn admit(&mut self, now: Duration, len: usize) -> Verdict {
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            return Verdict::Lost;
        }
        let departs = match &mut self.bucket {
            None => now,
            Some(b) => match b.admit(now, len) {
                Some(t) => t,
                None => return Verdict::QueueFull,
            },
        };
        Verdict::At(self.delay.deliver_at(departs, &mut self.rng))
    }
}

/// One direction's scheduler: applies its [`Link`] and sends datagrams when due.
#[derive(Debug)]
struct Scheduler {
    link: Link,
    rx: mpsc::Receiver<Datagram>,
    shared: Arc<Shared>,
    dir: Dir,
    start: Instant,
    max_held: usize,
    cancel: CancellationToken,
}

impl Scheduler {
    async fn run(mut self) {
        let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
        let mut held = 0usize;
        let mut seq = 0u64;
        loop {
            let next = heap.peek().map(|Reverse(p)| p.at);
            let wake =
                next.map(|at| self.start.checked_add(at).unwrap_or_else(|| Instant::now() + MAX_DELAY));
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    let now = self.start.elapsed();
                    while heap.peek().is_some_and(|Reverse(p)| p.at <= now) {
                        let Some(Reverse(p)) = heap.pop() else { break };
                        held = held.saturating_sub(p.dgram.data.len());
                        self.deliver(p.dgram).await;
                    }
                }
                d = self.rx.recv() => {
                    let Some(d) = d else { break };
                    let c = self.shared.counters(self.dir);
                    DirCounters::bump(&c.received);
                    if self.shared.partitioned.load(Ordering::Relaxed) {
                        DirCounters::bump(&c.partitioned);
                        continue;
                    }
                    let len = d.data.len();
                    if held.saturating_add(len) > self.max_held {
                        DirCounters::bump(&c.queue_full);
                        continue;
                    }
                    match self.link.admit(self.start.elapsed(), len) {
                        Verdict::Lost => DirCounters::bump(&c.lost),
                        Verdict::QueueFull => DirCounters::bump(&c.queue_full),
                        Verdict::At(at) => {
                            seq += 1;
                            held += len;
                            heap.push(Reverse(Pending { at, seq, dgram: d }));
                        }
                    }
                }
            }
        }
    }

    async fn deliver(&self, d: Datagram) {
        let c = self.shared.counters(self.dir);
        if self.shared.partitioned.load(Ordering::Relaxed) {
            DirCounters::bump(&c.partitioned);
            return;
        }
        match d.via.send_to(&d.data, d.to).await {
            Ok(n) => {
                DirCounters::bump(&c.delivered);
                c.delivered_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                debug!(to = %d.to, "relay send failed: {e}");
                DirCounters::bump(&c.send_errors);
            }
        }
    }
}

/// A client's mapping: its upstream socket, when it last sent, and the stop switch of the task
/// reading the target's replies.
#[derive(Debug)]
struct Client {
    socket: Arc<UdpSocket>,
    last: Instant,
    stop: CancellationToken,
}

/// The listening socket's task: maps clients to upstream sockets and feeds the to-target
/// direction.
#[derive(Debug)]
struct Listener {
    cfg: RelayConfig,
    socket: Arc<UdpSocket>,
    up: mpsc::Sender<Datagram>,
    down: mpsc::Sender<Datagram>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Listener {
    async fn run(self) {
        let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let got = tokio::select! {
                () = self.cancel.cancelled() => break,
                r = self.socket.recv_from(&mut buf) => r,
            };
            let (n, from) = match got {
                Ok(x) => x,
                Err(e) => {
                    debug!("relay receive failed: {e}");
                    backoff().await;
                    continue;
                }
            };
            let data = buf.get(..n).unwrap_or_default().to_vec();
            let now = Instant::now();
            let via = match clients.get_mut(&from) {
                Some(c) => {
                    c.last = now;
                    c.socket.clone()
                }
                None => match self.open(&mut clients, from, now).await {
                    Some(s) => s,
                    None => {
                        DirCounters::bump(&self.shared.refused_clients);
                        continue;
                    }
                },
            };
            if self.up.try_send(Datagram { data, via, to: self.cfg.target }).is_err() {
                let c = &self.shared.to_target;
                DirCounters::bump(&c.received);
                DirCounters::bump(&c.queue_full);
            }
        }
        for c in clients.values() {
            c.stop.cancel();
        }
    }

    /// Opens a mapping for a new client, evicting idle ones if the table is full.
    async fn open(
        &self,
        clients: &mut HashMap<SocketAddr, Client>,
        from: SocketAddr,
        now: Instant,
    ) -> Option<Arc<UdpSocket>> {
        if clients.len() >= self.cfg.max_clients {
            clients.retain(|_, c| {
                let keep = now.duration_since(c.last) < self.cfg.client_idle;
                if !keep {
                    c.stop.cancel();
                }
                keep
            });
        }
        if clients.len() >= self.cfg.max_clients {
            return None;
        }
        let unspecified = match self.cfg.target.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = match UdpSocket::bind(SocketAddr::new(unspecified, 0)).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                debug!(client = %from, "relay could not open an upstream socket: {e}");
                return None;
            }
        };
        let stop = self.cancel.child_token();
        let upstream = Upstream {
            socket: socket.clone(),
            client: from,
            target: self.cfg.target,
            listen: self.socket.clone(),
            down: self.down.clone(),
            shared: self.shared.clone(),
            stop: stop.clone(),
        };
        self.tasks.spawn(upstream.run());
        clients.insert(from, Client { socket: socket.clone(), last: now, stop });
        self.shared.clients.store(clients.len() as u64, Ordering::Relaxed);
        debug!(client = %from, upstream = ?socket.local_addr().ok(), "relay mapping opened");
        Some(socket)
    }
}

/// Reads one client's upstream socket and feeds the to-client direction.
#[derive(Debug)]
struct Upstream {
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    listen: Arc<UdpSocket>,
    down: mpsc::Sender<Datagram>,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Upstream {
    async fn run(self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let got = tokio::select! {
                () = self.stop.cancelled() => break,
                r = self.socket.recv_from(&mut buf) => r,
            };
            match got {
                Ok((n, from)) if from == self.target => {
                    let data = buf.get(..n).unwrap_or_default().to_vec();
                    let d = Datagram { data, via: self.listen.clone(), to: self.client };
                    if self.down.try_send(d).is_err() {
                        let c = &self.shared.to_client;
                        DirCounters::bump(&c.received);
                        DirCounters::bump(&c.queue_full);
                    }
                }
                Ok(_) => DirCounters::bump(&self.shared.stray),
                Err(e) => {
                    debug!(client = %self.client, "relay upstream receive failed: {e}");
                    backoff().await;
                }
            }
        }
    }
}

/// A short pause after a socket error, so a persistent one cannot spin the task.
async fn backoff() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bucket_passes_the_burst_then_spaces_by_the_rate() {
        // 1000 B/s, 500 B burst, 1000 B queue.
        let mut b = TokenBucket::new(&RateLimit { bytes_per_sec: 1000, burst: 500, queue: 1000 });
        let t0 = Duration::from_secs(1);
        // The burst leaves at once.
        assert_eq!(b.admit(t0, 250), Some(t0));
        assert_eq!(b.admit(t0, 250), Some(t0));
        // Then each 250 B waits for its tokens: 0.25 s apart.
        assert_eq!(b.admit(t0, 250), Some(t0 + 250 * MS));
        assert_eq!(b.admit(t0, 250), Some(t0 + 500 * MS));
        assert_eq!(b.admit(t0, 250), Some(t0 + 750 * MS));
        assert_eq!(b.admit(t0, 250), Some(t0 + 1000 * MS));
        // The queue holds 1000 B of debt: the next one is dropped.
        assert_eq!(b.admit(t0, 1), None);
        // Half a second later 500 B have drained; a 500-byte datagram fits behind the rest.
        assert_eq!(b.admit(t0 + 500 * MS, 500), Some(t0 + 1500 * MS));
        // After a long quiet period the bucket is full again, but only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.admit(later, 500), Some(later));
        assert_eq!(b.admit(later, 100), Some(later + 100 * MS));
    }

    #[test]
    fn bucket_holds_the_rate_over_a_long_run() {
        // 1 MB/s; offer 3 MB/s of 1200-byte datagrams for 2 s: what passes is about 2 MB + burst,
        // and every departure is in order.
        let r = RateLimit::new(1_000_000);
        let mut b = TokenBucket::new(&r);
        let (mut passed, mut last) = (0u64, Duration::ZERO);
        for i in 0..5000u32 {
            let now = Duration::from_micros(u64::from(i) * 400);
            if let Some(t) = b.admit(now, 1200) {
                assert!(t >= last && t >= now);
                assert!(t - now <= Duration::from_millis(100) + MS, "waited {:?}", t - now);
                last = t;
                passed += 1200;
            }
        }
        let bound = 2_000_000 + r.burst + r.queue;
        assert!(passed <= bound && passed >= 2_000_000 - 1200, "passed {passed}");
    }

    fn schedule(f: &Faults, seed: u64, n: u32) -> Vec<Verdict> {
        let mut l = Link::new(f, seed);
        (0..n).map(|i| l.admit(Duration::from_millis(u64::from(i)), 1000)).collect()
    }

    #[test]
    fn delay_schedule_is_a_function_of_the_seed() {
        let f = Faults { delay: 20 * MS, jitter: 5 * MS, loss: 0.1, ..Faults::default() };
        let a = schedule(&f, 7, 1000);
        assert_eq!(a, schedule(&f, 7, 1000));
        assert_ne!(a, schedule(&f, 8, 1000));
        // In order by default, each within delay ± jitter of its arrival (or pushed back by
        // its predecessor), and the loss rate is near 10%.
        let mut last = Duration::ZERO;
        let mut lost = 0;
        for (i, v) in a.iter().enumerate() {
            let sent = Duration::from_millis(i as u64);
            match *v {
                Verdict::At(at) => {
                    assert!(at >= last, "reordered at {i}");
                    assert!(at >= sent + 15 * MS && at <= (sent + 25 * MS).max(last), "{i}: {at:?}");
                    last = at;
                }
                Verdict::Lost => lost += 1,
                Verdict::QueueFull => panic!("no rate limit configured"),
            }
        }
        assert!((60..=140).contains(&lost), "lost {lost} of 1000");
    }

    #[test]
    fn jitter_reorders_only_when_allowed() {
        let f = Faults { delay: 20 * MS, jitter: 5 * MS, reorder: true, ..Faults::default() };
        let times: Vec<Duration> = schedule(&f, 3, 200)
            .into_iter()
            .map(|v| match v {
                Verdict::At(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(times.windows(2).any(|w| w[1] < w[0]), "5 ms of jitter on 1 ms gaps never reordered");
        for (i, t) in times.iter().enumerate() {
            let sent = Duration::from_millis(i as u64);
            assert!(*t >= sent + 15 * MS && *t <= sent + 25 * MS);
        }
        // Without jitter nothing moves: exactly the fixed delay.
        let f = Faults { delay: 20 * MS, ..Faults::default() };
        for (i, v) in schedule(&f, 3, 50).into_iter().enumerate() {
            assert_eq!(v, Verdict::At(Duration::from_millis(i as u64) + 20 * MS));
        }
    }

    #[test]
    fn extreme_settings_do_not_panic() {
        let f = Faults {
            delay: MAX_DELAY,
            jitter: MAX_DELAY,
            reorder: false,
            loss: 1.0,
            rate: Some(RateLimit { bytes_per_sec: 1, burst: 1, queue: u64::MAX }),
        };
        assert!(schedule(&f, 1, 10).iter().all(|v| *v == Verdict::Lost));
        let f = Faults { loss: 0.0, ..f };
        let mut l = Link::new(&f, 1);
        for len in [0, 1, MAX_DATAGRAM, MAX_DATAGRAM] {
            assert!(matches!(l.admit(Duration::MAX, len), Verdict::At(_)));
        }
        // Out-of-range configurations are refused with a reason.
        for bad in [
            Faults { loss: 1.5, ..Faults::default() },
            Faults { loss: f64::NAN, ..Faults::default() },
            Faults { delay: MAX_DELAY, jitter: MS, ..Faults::default() },
            Faults { rate: Some(RateLimit { bytes_per_sec: 0, burst: 1, queue: 1 }), ..Faults::default() },
            Faults {
                rate: Some(RateLimit { bytes_per_sec: 1, burst: 1, queue: u64::MAX }),
                ..Faults::default()
            },
        ] {
            assert!(matches!(bad.check("x"), Err(RelayError::Invalid(_))), "{bad:?}");
        }
    }

    // ---- on sockets ----

    async fn echo_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = s.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        (addr, h)
    }

    async fn client() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    async fn recv(s: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        match tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn relays_both_ways_with_delay_per_client_and_partitions() {
        let (target, _srv) = echo_server().await;
        let faults = Faults { delay: 15 * MS, ..Faults::default() };
        let cfg = RelayConfig::new("127.0.0.1:0".parse().unwrap(), target, 1).both_ways(faults);
        let relay = Relay::start(cfg).await.unwrap();
        let (a, b) = (client().await, client().await);
        // Round trip: at least twice the one-way delay; each client gets its own answers.
        let t = std::time::Instant::now();
        a.send_to(b"from a", relay.local_addr()).await.unwrap();
        b.send_to(b"from b", relay.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await.as_deref(), Some(&b"from a"[..]));
        assert_eq!(recv(&b).await.as_deref(), Some(&b"from b"[..]));
        assert!(t.elapsed() >= 30 * MS, "{:?}", t.elapsed());
        // Largest and empty datagrams pass.
        let big = vec![0xA5; 65_507];
        a.send_to(&big, relay.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await, Some(big));
        a.send_to(b"", relay.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await, Some(vec![]));
        // Partition: nothing passes; heal: traffic flows again on the same mapping.
        relay.partition();
        a.send_to(b"lost", relay.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await, None);
        relay.heal();
        a.send_to(b"again", relay.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await.as_deref(), Some(&b"again"[..]));
        let s = relay.stats();
        assert_eq!((s.clients, s.to_target.partitioned, s.to_target.delivered), (2, 1, 5), "{s:?}");
        // Stopping frees the port.
        let addr = relay.local_addr();
        relay.stop().await;
        UdpSocket::bind(addr).await.unwrap();
    }

    #[tokio::test]
    async fn full_loss_drops_everything_and_the_mapping_table_is_bounded() {
        let (target, _srv) = echo_server().await;
        let mut cfg = RelayConfig::new("127.0.0.1:0".parse().unwrap(), target, 1);
        cfg.max_clients = 1;
        cfg.to_client.loss = 1.0;
        let relay = Relay::start(cfg).await.unwrap();
        let (a, b) = (client().await, client().await);
        a.send_to(b"x", relay.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await, None);
        b.send_to(b"y", relay.local_addr()).await.unwrap();
        assert_eq!(recv(&b).await, None);
        let s = relay.stats();
        assert_eq!((s.to_target.delivered, s.to_client.lost, s.clients, s.refused_clients), (1, 1, 1, 1));
    }
}
