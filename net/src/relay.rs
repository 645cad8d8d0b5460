//! Relays: how two peers that cannot punch a hole (a symmetric NAT facing a filtering one) still
//! talk, through a third peer that both can reach. No fixed server: any reachable peer started
//! with [`RelayConfig::enabled`] offers it.
//!
//! - **Reservations.** A peer whose NAT filters
//!   ([`NatObserver::filtered`](shoal_core::nat::NatObserver::filtered)) keeps a reservation at up to [`RESERVATIONS`] relays among the peers it dialled, renewed
//!   every [`RENEW_EVERY`], and replaced when a relay goes away ([`maintain`]).
//! - **Relayed paths.** A peer whose punch towards a target fails, and whose mediator holds the
//!   target's reservation, dials the target at a virtual address that stands for "target via
//!   that relay" ([`crate::tunnel`]). Its datagrams to that address go to the relay on a
//!   [`NetMsg::RelayOut`] stream; the relay forwards them on a [`NetMsg::RelayIn`] stream to the
//!   target, whose endpoint sees them arrive from the virtual address for "asker via relay". The
//!   QUIC connection runs end to end inside: the relay forwards ciphertext it cannot read or
//!   forge, and a relay that names the wrong source fails the TLS check of the peer id.
//! - **Caps.** A relay forwards only to peers holding a reservation, for at most
//!   [`RelayConfig::max_circuits`] pairs at once, each for at most [`RelayConfig::circuit_bytes`]
//!   and [`RelayConfig::circuit_time`] (a circuit over its cap stays closed until that time has
//!   passed since it opened), and at most [`RelayConfig::bytes_per_sec`] in total. What exceeds a
//!   cap is dropped and counted, never queued.
//! - **Upgrades.** A relayed connection never replaces a live direct one, and a direct one
//!   replaces a relayed one (which closes shortly after); meanwhile the peers keep trying to
//!   punch a direct path ([`upgrade`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, RecvStream};
use shoal_core::ids::PeerId;
use shoal_core::nat::NetMsg;
use shoal_core::wire::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info};

use crate::frame::write_frame;
use crate::node::Inner;
use crate::tunnel::{self, Deliver};

/// Reservations a filtered peer keeps.
pub(crate) const RESERVATIONS: usize = 2;
/// How often a reservation is renewed.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(60);
/// How long a reservation lasts at the relay without renewal.
pub(crate) const RESERVATION_TTL: Duration = Duration::from_secs(180);
/// How long after a failed punch a relayed dial starts.
pub(crate) const RELAY_AFTER: Duration = Duration::from_millis(700);
/// Frames queued towards one peer's relay stream.
const LANE_QUEUE: usize = 512;
/// A relay stream with nothing to send for this long is finished.
const LANE_IDLE: Duration = Duration::from_secs(60);
/// Header of one relayed datagram: length (2 bytes) and peer id (32).
const HEADER: usize = 34;
/// Most relayed paths remembered (virtual addresses).
const MAX_PATHS: usize = 4096;

/// What a peer offers as a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Offer to relay for peers that cannot be reached (only sensible on a reachable peer).
    pub enabled: bool,
    /// Peers holding a reservation at once.
    pub max_reservations: usize,
    /// Pairs of peers relayed at once.
    pub max_circuits: usize,
    /// Bytes one circuit may carry.
    pub circuit_bytes: u64,
    /// How long one circuit may last.
    pub circuit_time: Duration,
    /// Bytes per second forwarded in total.
    pub bytes_per_sec: u64,
}

impl Default for RelayConfig {
    /// Off; when on: 128 reservations, 256 circuits of at most 64 MiB and 10 minutes each,
    /// 8 MiB/s in all.
    fn default() -> Self {
        RelayConfig {
            enabled: false,
            max_reservations: 128,
            max_circuits: 256,
            circuit_bytes: 64 << 20,
            circuit_time: Duration::from_secs(600),
            bytes_per_sec: 8 << 20,
        }
    }
}

/// How a connection to a peer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Straight to the peer's address.
    Direct(SocketAddr),
    /// Through this relay.
    Relayed(PeerId),
}

/// What a relay and its clients counted.
#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// One relayed pair of peers, at the relay.
#[derive(Debug)]
struct Circuit {
    opened: Instant,
    bytes: u64,
}

/// Virtual addresses of relayed paths, both ways.
#[derive(Debug, Default)]
struct Paths {
    by_addr: HashMap<SocketAddr, (PeerId, PeerId)>,
    by_pair: HashMap<(PeerId, PeerId), SocketAddr>,
    next: u32,
}

/// Which way a relay stream carries datagrams (the first frame of the stream says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Way {
    /// To a relay, to forward: each datagram names its destination ([`NetMsg::RelayOut`]).
    ToRelay,
    /// From a relay: each datagram names its source ([`NetMsg::RelayIn`]).
    FromRelay,
}

impl Way {
    fn header(self) -> NetMsg {
        match self {
            Way::ToRelay => NetMsg::RelayOut,
            Way::FromRelay => NetMsg::RelayIn,
        }
    }
}

/// Writers of our relay streams, by peer and way.
type Lanes = HashMap<(PeerId, Way), mpsc::Sender<Vec<u8>>>;

/// The relay state of one node: its paths and reservations as a client, and its reservations
/// and circuits as a relay.
#[derive(Debug)]
pub(crate) struct Relays {
    pub(crate) cfg: RelayConfig,
    deliver: Deliver,
    paths: Mutex<Paths>,
    /// Relays holding our reservation, and when it was last renewed.
    reserved_at: Mutex<BTreeMap<PeerId, Instant>>,
    /// Relays asked for a reservation lately (one ask per relay per minute).
    asked: crate::nat::Gate<PeerId>,
    /// As a relay: reservations and their expiry.
    reservations: Mutex<HashMap<PeerId, Instant>>,
    circuits: Mutex<HashMap<(PeerId, PeerId), Circuit>>,
    /// As a relay: bytes forwarded in the current second.
    rate: Mutex<(Instant, u64)>,
    lanes: Mutex<Lanes>,
    pub(crate) counters: RelayCounters,
}

impl Relays {
    pub(crate) fn new(cfg: RelayConfig, deliver: Deliver) -> Self {
        Relays {
            cfg,
            deliver,
            paths: Mutex::new(Paths::default()),
            reserved_at: Mutex::new(BTreeMap::new()),
            asked: crate::nat::Gate::new(),
            reservations: Mutex::new(HashMap::new()),
            circuits: Mutex::new(HashMap::new()),
            rate: Mutex::new((Instant::now(), 0)),
            lanes: Mutex::new(HashMap::new()),
            counters: RelayCounters::default(),
        }
    }

    /// The virtual address standing for `peer` reached through `relay`.
    pub(crate) fn addr_for(&self, relay: PeerId, peer: PeerId) -> SocketAddr {
        let mut p = self.paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = p.by_pair.get(&(relay, peer)) {
            return *a;
        }
        if p.by_addr.len() >= MAX_PATHS {
            p.by_addr.clear();
            p.by_pair.clear();
        }
        p.next = (p.next % 0x0FFF_FFFE) + 1;
        let a = tunnel::virtual_addr(p.next);
        p.by_addr.insert(a, (relay, peer));
        p.by_pair.insert((relay, peer), a);
        a
    }

    /// The relay and peer a virtual address stands for.
    pub(crate) fn path_of(&self, addr: SocketAddr) -> Option<(PeerId, PeerId)> {
        let addr = shoal_core::nat::canonical(addr);
        self.paths.lock().unwrap_or_else(std::sync::PoisonError::into_inner).by_addr.get(&addr).copied()
    }

    /// Whether a connection from `addr` may be peer `peer`: any real address may; a virtual
    /// one only for the peer it stands for.
    pub(crate) fn admits(&self, addr: SocketAddr, peer: PeerId) -> bool {
        !tunnel::is_virtual(addr) || self.path_of(addr).is_some_and(|(_, p)| p == peer)
    }

    /// The relays holding our reservation.
    pub(crate) fn reserved_at(&self) -> Vec<PeerId> {
        self.reserved_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).keys().copied().collect()
    }

    /// As a relay: whether `peer` holds a live reservation here.
    pub(crate) fn holds_reservation(&self, peer: PeerId) -> bool {
        let r = self.reservations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.get(&peer).is_some_and(|exp| *exp > Instant::now())
    }

    /// As a relay: answers a reservation request from `peer`.
    pub(crate) fn reserve(&self, peer: PeerId) -> NetMsg {
        let refused = NetMsg::Reserved { ok: false, ttl_secs: 0 };
        if !self.cfg.enabled {
            return refused;
        }
        let now = Instant::now();
        let mut r = self.reservations.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.retain(|_, exp| *exp > now);
        if !r.contains_key(&peer) && r.len() >= self.cfg.max_reservations {
            return refused;
        }
        r.insert(peer, now + RESERVATION_TTL);
        NetMsg::Reserved { ok: true, ttl_secs: u32::try_from(RESERVATION_TTL.as_secs()).unwrap_or(u32::MAX) }
    }

    /// As a relay: whether a datagram of `len` bytes from `from` to `to` may be forwarded now
    /// (and accounts for it if so).
    fn admit(&self, from: PeerId, to: PeerId, len: usize) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let now = Instant::now();
        let len = len as u64;
        let time = self.cfg.circuit_time;
        let key = if from < to { (from, to) } else { (to, from) };
        let mut circuits = self.circuits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A circuit opens only towards a peer holding a reservation; once open, it carries
        // the answers too (the asker may hold no reservation).
        if !circuits.contains_key(&key) {
            if !self.holds_reservation(to) {
                return false;
            }
            circuits.retain(|_, c| now.duration_since(c.opened) < time);
            if circuits.len() >= self.cfg.max_circuits {
                return false;
            }
        }
        {
            let mut rate = self.rate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if now.duration_since(rate.0) >= Duration::from_secs(1) {
                *rate = (now, 0);
            }
            if rate.1 + len > self.cfg.bytes_per_sec {
                return false;
            }
            rate.1 += len;
        }
        let c = circuits.entry(key).or_insert(Circuit { opened: now, bytes: 0 });
        if now.duration_since(c.opened) >= time {
            // The circuit's time is up; a new one may open.
            *c = Circuit { opened: now, bytes: 0 };
        }
        if c.bytes + len > self.cfg.circuit_bytes {
            return false;
        }
        c.bytes += len;
        true
    }
}

/// One relayed datagram in its stream layout.
fn encode(peer: PeerId, datagram: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(datagram.len()).ok()?;
    let mut out = Vec::with_capacity(HEADER + datagram.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&peer.0);
    out.extend_from_slice(datagram);
    Some(out)
}

/// Queues `frame` on our relay stream of way `way` to `to`, opening the stream (and its writer
/// task) if needed. A full queue drops the frame.
fn lane_send(inner: &Arc<Inner>, to: PeerId, way: Way, frame: Vec<u8>) {
    let relays = &inner.relays;
    let mut lanes = relays.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(tx) = lanes.get(&(to, way))
        && !tx.is_closed()
    {
        let _ = tx.try_send(frame);
        return;
    }
    let (tx, rx) = mpsc::channel(LANE_QUEUE);
    let _ = tx.try_send(frame);
    lanes.insert((to, way), tx);
    drop(lanes);
    let inner2 = inner.clone();
    inner.tasks.spawn(
        async move {
            if let Err(e) = run_lane(&inner2, to, way, rx).await {
                debug!(peer = %to.short(), "relay stream ended: {e}");
            }
            let mut lanes = inner2.relays.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if lanes.get(&(to, way)).is_some_and(mpsc::Sender::is_closed) {
                lanes.remove(&(to, way));
            }
        }
        .in_current_span(),
    );
}

async fn run_lane(
    inner: &Arc<Inner>,
    to: PeerId,
    way: Way,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> Result<(), String> {
    let conn = inner.live_connection(to).ok_or("no connection")?;
    if tunnel::is_virtual(conn.remote_address()) {
        return Err("relays are only used over direct connections".into());
    }
    let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
    let header = Message::Net(way.header());
    write_frame(&mut send, &header, inner.limits.max_frame).await.map_err(|e| e.to_string())?;
    loop {
        let frame = tokio::select! {
            _ = inner.cancel.cancelled() => return Ok(()),
            f = tokio::time::timeout(LANE_IDLE, rx.recv()) => match f {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => break,
            },
        };
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
    }
    rx.close();
    let _ = send.finish();
    Ok(())
}

/// Reads relayed datagrams from a stream of `from` until it ends: forwards them when they go
/// [`Way::ToRelay`] (we relay), delivers them to the endpoint when they come
/// [`Way::FromRelay`].
pub(crate) async fn serve_stream(inner: Arc<Inner>, from: PeerId, way: Way, mut recv: RecvStream) {
    let mut header = [0u8; HEADER];
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        if recv.read_exact(&mut header).await.is_err() {
            return;
        }
        let len = usize::from(u16::from_le_bytes([header[0], header[1]]));
        let mut id = [0u8; 32];
        id.copy_from_slice(&header[2..]);
        let peer = PeerId(id);
        let Some(datagram) = buf.get_mut(..len) else { return };
        if recv.read_exact(datagram).await.is_err() {
            return;
        }
        let relays = &inner.relays;
        if way == Way::FromRelay {
            // A datagram from `peer`, relayed by `from`.
            let addr = relays.addr_for(from, peer);
            relays.counters.received.fetch_add(len as u64, Ordering::Relaxed);
            relays.deliver.deliver(addr, datagram.to_vec());
        } else if peer != from && relays.admit(from, peer, len) {
            // A datagram for `peer`, to forward.
            if let Some(frame) = encode(from, datagram) {
                relays.counters.forwarded.fetch_add(len as u64, Ordering::Relaxed);
                lane_send(&inner, peer, Way::FromRelay, frame);
            }
        } else {
            relays.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Carries the endpoint's datagrams for virtual addresses to their relays.
pub(crate) async fn pump(inner: Arc<Inner>, mut outgoing: tunnel::Outgoing) {
    loop {
        let next = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            n = outgoing.recv() => n,
        };
        let Some((addr, datagram)) = next else { return };
        let Some((relay, peer)) = inner.relays.path_of(addr) else { continue };
        if let Some(frame) = encode(peer, &datagram) {
            inner.relays.counters.sent.fetch_add(datagram.len() as u64, Ordering::Relaxed);
            lane_send(&inner, relay, Way::ToRelay, frame);
        }
    }
}

/// Dials `target` through each of `relays` in turn until a connection comes up.
pub(crate) async fn dial_via(inner: Arc<Inner>, target: PeerId, relays: Vec<PeerId>) {
    tokio::time::sleep(RELAY_AFTER).await;
    for relay in relays {
        if inner.live_connection(target).is_some() {
            return;
        }
        let addr = inner.relays.addr_for(relay, target);
        match crate::conn::dial(&inner, Some(target), addr).await {
            Ok(_) => {
                info!(peer = %target.short(), relay = %relay.short(), "connected through a relay");
                return;
            }
            Err(e) => debug!(peer = %target.short(), relay = %relay.short(), "relayed dial failed: {e}"),
        }
    }
}

/// After a relayed connection to `peer` came up: keeps trying to punch a direct path for a
/// minute (every 5 s), then every minute while the connection stays relayed.
pub(crate) async fn upgrade(inner: Arc<Inner>, peer: PeerId, direct: Option<SocketAddr>) {
    let mut tries = 0u32;
    loop {
        let wait = if tries < 12 { Duration::from_secs(5) } else { Duration::from_secs(60) };
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        tries += 1;
        let Some(current) = inner.live_connection(peer) else { return };
        if !tunnel::is_virtual(current.remote_address()) {
            return;
        }
        let Some(addr) = direct else {
            // Without a direct address, only the peer's side can try; a mediator tells it.
            crate::nat::punch(inner.clone(), peer, None).await;
            continue;
        };
        let dial = crate::conn::dial(&inner, Some(peer), addr);
        let punch = crate::nat::punch(inner.clone(), peer, Some(addr));
        let (dialled, ()) = tokio::join!(dial, punch);
        if dialled.is_ok() {
            info!(peer = %peer.short(), "relayed connection upgraded to a direct path");
        }
    }
}

/// Closes a relayed connection a little after a direct one replaced it (streams in flight on it
/// get that long to finish).
pub(crate) fn retire(inner: &Arc<Inner>, old: Connection) {
    inner.tasks.spawn(
        async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            old.close(crate::codes::NORMAL, b"direct path found");
        }
        .in_current_span(),
    );
}

/// Keeps this peer's reservations while its NAT filters: drops those whose relay went away,
/// renews, and reserves at new relays (peers it dialled that accept) up to [`RESERVATIONS`].
pub(crate) async fn maintain(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let filtered = inner.nat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).filtered();
        let relays = &inner.relays;
        let held: Vec<(PeerId, Instant)> = {
            let mut r = relays.reserved_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            r.retain(|relay, _| filtered && inner.live_connection(*relay).is_some());
            r.iter().map(|(p, t)| (*p, *t)).collect()
        };
        for (relay, renewed) in &held {
            if renewed.elapsed() >= RENEW_EVERY {
                reserve_at(&inner, *relay).await;
            }
        }
        if !filtered || held.len() >= RESERVATIONS {
            continue;
        }
        let candidates = inner.mediators(inner.peer_id, 16);
        for (relay, _) in candidates {
            if relays.reserved_at().len() >= RESERVATIONS {
                break;
            }
            if held.iter().any(|(p, _)| *p == relay) || !relays.asked.allow(relay, Duration::from_secs(60)) {
                continue;
            }
            reserve_at(&inner, relay).await;
        }
    }
}

async fn reserve_at(inner: &Arc<Inner>, relay: PeerId) {
    let Some(conn) = inner.live_connection(relay) else { return };
    if tunnel::is_virtual(conn.remote_address()) {
        return;
    }
    let answer =
        crate::nat::ask(inner, &conn, &Message::Net(NetMsg::Reserve), inner.limits.request_timeout).await;
    let mut r = inner.relays.reserved_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match answer {
        Ok(Message::Net(NetMsg::Reserved { ok: true, .. })) => {
            if r.insert(relay, Instant::now()).is_none() {
                info!(relay = %relay.short(), "reserved a relay");
            }
        }
        Ok(_) => {
            r.remove(&relay);
        }
        Err(e) => debug!(relay = %relay.short(), "reservation failed: {e}"),
    }
}
