//! The [`Node`]: a quinn endpoint, its connections, the membership driver and the blob store.
//!
//! Task structure (all tasks are tracked and stop when the node's cancellation token fires):
//! - the accept loop, which hands each incoming connection to [`crate::conn::accept`];
//! - one actor per connection ([`crate::conn`]), serving the peer's streams;
//! - the membership driver, the only owner of the [`Membership`] state machine: it feeds it
//!   inputs in arrival order with `now` measured from the node's start, arms its timers and
//!   carries out its transmits (each in its own short task, so a slow dial never blocks it).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use quinn::Connection;
use rand::SeedableRng;
use rand::rngs::StdRng;
use shoal_core::ids::{BlobHash, PeerId};
use shoal_core::membership::{
    self, Entry, Event, LoadHint, MemberMsg, Membership, Target, Timer, TimerToken,
};
use shoal_core::nat::NatObserver;
use shoal_core::wire::Message;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::blobs::{BlobError, BlobStore};
use crate::codes;
use crate::conn::{self, FetchFromError, HandshakeError};
use crate::frame::{FrameError, read_frame, write_frame};
use crate::identity::{Identity, IdentityError};
use crate::limits::Limits;
use crate::nat::{self, Reachability};
use crate::relay::{Path, RelayConfig, Relays};
use crate::stats::{Counters, NetStats};
use crate::tls::{self, SwarmSecret, TlsError};

/// Everything a [`Node`] needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// UDP address to listen on (`127.0.0.1:0` picks a free loopback port).
    pub listen: SocketAddr,
    /// Addresses of peers to join through; empty for the first peer of a swarm.
    pub bootstrap: Vec<SocketAddr>,
    /// `host:port` names of peers to join through, resolved at every join attempt.
    pub bootstrap_names: Vec<String>,
    /// Directory for the identity key and the blob store (created if missing).
    pub data_dir: PathBuf,
    /// Private swarm secret; `None` for a public swarm.
    pub swarm_secret: Option<SwarmSecret>,
    /// Per-peer limits.
    pub limits: Limits,
    /// Membership tunables.
    pub membership: membership::Config,
    /// Byte budget of the blob store.
    pub blob_budget: u64,
    /// Advertise this peer and find others on the LAN over mDNS (`docs/membership.md`); needs a
    /// listen address on a LAN interface (not loopback).
    pub mdns: bool,
    /// Whether and how much this peer relays for peers that cannot be reached (`docs/nat.md`).
    pub relay: RelayConfig,
}

impl NodeConfig {
    /// Defaults: loopback, any port, no bootstrap, public swarm, 1 GiB of blobs.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bootstrap: Vec::new(),
            bootstrap_names: Vec::new(),
            data_dir: data_dir.into(),
            swarm_secret: None,
            limits: Limits::default(),
            membership: membership::Config::default(),
            blob_budget: 1 << 30,
            mdns: false,
            relay: RelayConfig::default(),
        }
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The identity could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The blob store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The UDP socket could not be opened.
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No address is known for the peer (not in view, never connected).
    #[error("no known address for peer {0}")]
    UnknownPeer(PeerId),
    /// Connecting (QUIC, TLS or the Shoal handshake) failed.
    #[error("could not connect to {peer}: {source}")]
    Connect {
        /// The peer, when known.
        peer: String,
        /// The cause.
        source: HandshakeError,
    },
    /// A stream to the peer failed.
    #[error("stream to peer failed: {0}")]
    Stream(#[from] FrameError),
    /// The connection was lost.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer did not reply in time.
    #[error("request timed out")]
    Timeout,
    /// The node is shutting down.
    #[error("node is shut down")]
    Shutdown,
    /// mDNS discovery could not start.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
}

/// Why [`Node::fetch_blob`] failed: every holder was tried.
#[derive(Debug, thiserror::Error)]
#[error("could not fetch blob {hash:?} from any of {} holders: {}", .failures.len(), summary(.failures))]
pub struct FetchError {
    /// The blob.
    pub hash: BlobHash,
    /// Each holder tried and why it failed.
    pub failures: Vec<(PeerId, FetchFromError)>,
}

fn summary(f: &[(PeerId, FetchFromError)]) -> String {
    f.iter().map(|(p, e)| format!("{}: {e}", p.short())).collect::<Vec<_>>().join("; ")
}

/// A message from a peer. When `reply` is `Some`, the peer waits for an answer
/// (see [`Replier::send`]); dropping it makes the peer's request fail at once.
#[derive(Debug)]
pub struct Inbound {
    /// The authenticated sender.
    pub from: PeerId,
    /// The message.
    pub message: Message,
    /// The way to answer a request; `None` for one-way messages.
    pub reply: Option<Replier>,
}

/// Answers one request.
#[derive(Debug)]
pub struct Replier {
    pub(crate) tx: oneshot::Sender<Message>,
}

impl Replier {
    /// Sends the response. Fails only if the request already timed out.
    pub fn send(self, response: Message) -> Result<(), NodeError> {
        self.tx.send(response).map_err(|_| NodeError::Timeout)
    }
}

/// The stream of application messages received by a node.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Inbound>,
}

impl Inbox {
    /// The next inbound message; `None` once the node has shut down.
    pub async fn recv(&mut self) -> Option<Inbound> {
        self.rx.recv().await
    }
}

/// Inputs of the membership driver.
#[derive(Debug)]
pub(crate) enum DriverCmd {
    Msg {
        from: PeerId,
        addr: SocketAddr,
        msg: MemberMsg,
    },
    SendFailed(PeerId),
    ConnLost(PeerId),
    SetHints(LoadHint),
    Leave(oneshot::Sender<()>),
    /// A peer announced on the LAN (mDNS): join through it.
    Discovered(PeerId, SocketAddr),
    /// A bootstrap name resolved to this address: join through it.
    JoinAddr(SocketAddr),
}

/// State shared by the node's handles and tasks.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) peer_id: PeerId,
    /// The identity (its key signs the descriptors of the jobs this peer owns).
    identity: Identity,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) local_addr: SocketAddr,
    pub(crate) limits: Limits,
    pub(crate) secret: Option<SwarmSecret>,
    pub(crate) conns: Mutex<HashMap<PeerId, Connection>>,
    addrs: Mutex<HashMap<PeerId, SocketAddr>>,
    pub(crate) driver: mpsc::Sender<DriverCmd>,
    view: RwLock<Vec<Entry>>,
    events: broadcast::Sender<Event>,
    pub(crate) inbox: mpsc::Sender<Inbound>,
    pub(crate) blobs: BlobStore,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) counters: Counters,
    /// Each peer's application lane (see [`Inner::send_app`]).
    lanes: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<Option<Lane>>>>>,
    /// The client side of TLS, for dials from other endpoints (dial-backs).
    pub(crate) client_config: quinn::ClientConfig,
    /// The same with keep-alives, for dials while this peer is not known to be public.
    pub(crate) keep_alive_config: quinn::ClientConfig,
    /// Dial-backs served, per asker (one per [`nat::DIAL_BACK_EVERY`]).
    pub(crate) dial_back_gate: nat::Gate<PeerId>,
    /// What other peers observe of our address (see [`crate::nat`]).
    pub(crate) nat: Mutex<NatObserver>,
    /// Dial-backs served at once.
    pub(crate) dial_backs: tokio::sync::Semaphore,
    /// Punch dials running at once.
    pub(crate) punch_dials: Arc<tokio::sync::Semaphore>,
    /// Our punches, per target.
    pub(crate) punches: nat::Gate<PeerId>,
    /// Punches we mediated, per (asker, target).
    pub(crate) mediated: nat::Gate<(PeerId, PeerId)>,
    /// Peers we reached by dialling them: reachable ones, which NATed peers keep connections
    /// to, so they are the first asked to mediate a punch.
    dialled: Mutex<std::collections::HashSet<PeerId>>,
    /// Relayed paths, reservations, and (when offered) the relay's own state.
    pub(crate) relays: Relays,
}

/// The open stream carrying application messages to one peer.
#[derive(Debug)]
struct Lane {
    /// The connection it belongs to (its `stable_id`).
    conn: usize,
    send: quinn::SendStream,
}

/// A running Shoal peer. Cheap to clone; the node stops when [`Node::shutdown`] is called or
/// the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
    _guard: Arc<tokio_util::sync::DropGuard>,
}

fn transport(limits: &Limits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.max_concurrent_streams.into());
    t.max_concurrent_uni_streams(limits.max_concurrent_streams.into());
    // Flow-control windows bound what one peer can make us buffer; large enough for blob
    // transfers to fill a fast link.
    t.stream_receive_window(quinn::VarInt::from_u32(limits.stream_window));
    t.receive_window(quinn::VarInt::from_u32(limits.connection_window));
    t.send_window(u64::from(limits.connection_window));
    if let Ok(idle) = quinn::IdleTimeout::try_from(limits.idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Builds a quinn client config for `id` offering `alpn` (tests use this to play strangers).
pub fn quinn_client_config(id: &Identity, alpn: Vec<Vec<u8>>) -> Result<quinn::ClientConfig, TlsError> {
    let tls = tls::client_config_with_alpn(id, alpn)?;
    let quic =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|_| TlsError::NoInitialCipherSuite)?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

impl Node {
    /// Starts a node: loads (or creates) its identity, opens the blob store, binds the endpoint
    /// and joins the swarm through `cfg.bootstrap` (and, with `cfg.mdns`, through the peers it
    /// finds on the LAN). Returns the node and its inbox.
    pub async fn start(cfg: NodeConfig) -> Result<(Node, Inbox), NodeError> {
        let identity = Identity::load_or_create(&cfg.data_dir)?;
        let blobs = BlobStore::open(&cfg.data_dir.join("blobs"), cfg.blob_budget)?;
        let server_tls = tls::server_config(&identity)?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|_| TlsError::NoInitialCipherSuite)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let transport = Arc::new(transport(&cfg.limits));
        server.transport_config(transport.clone());
        let mut client = quinn_client_config(&identity, vec![tls::ALPN.to_vec()])?;
        client.transport_config(transport);
        let client_config = client.clone();
        // Dials made while this peer may be behind a NAT keep their connection (and the NAT
        // mapping under it) alive; a public peer's dials idle out as usual.
        let mut keep_alive = client.clone();
        let mut kept = self::transport(&cfg.limits);
        kept.keep_alive_interval(cfg.limits.keep_alive);
        keep_alive.transport_config(Arc::new(kept));
        let bind_err = |source| NodeError::Bind { addr: cfg.listen, source };
        let socket = bind_udp(cfg.listen).map_err(bind_err)?;
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let (socket, relay_out, deliver) =
            crate::tunnel::TunnelSocket::new(runtime.wrap_udp_socket(socket).map_err(bind_err)?)
                .map_err(bind_err)?;
        let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            runtime,
        )
        .map_err(bind_err)?;
        endpoint.set_default_client_config(client);
        let local_addr =
            endpoint.local_addr().map_err(|source| NodeError::Bind { addr: cfg.listen, source })?;

        let (driver_tx, driver_rx) = mpsc::channel(4096);
        let (inbox_tx, inbox_rx) = mpsc::channel(1024);
        let (events, _) = broadcast::channel(1024);
        let cancel = CancellationToken::new();
        let peer_id = identity.peer_id();
        let inner = Arc::new(Inner {
            peer_id,
            identity,
            endpoint,
            local_addr,
            limits: cfg.limits.clone(),
            secret: cfg.swarm_secret.clone(),
            conns: Mutex::new(HashMap::new()),
            addrs: Mutex::new(HashMap::new()),
            driver: driver_tx,
            view: RwLock::new(Vec::new()),
            events,
            inbox: inbox_tx,
            blobs,
            cancel: cancel.clone(),
            tasks: TaskTracker::new(),
            counters: Counters::default(),
            lanes: Mutex::new(HashMap::new()),
            client_config,
            keep_alive_config: keep_alive,
            nat: Mutex::new(NatObserver::new()),
            dial_backs: tokio::sync::Semaphore::new(nat::MAX_DIAL_BACKS),
            punch_dials: Arc::new(tokio::sync::Semaphore::new(nat::MAX_PUNCH_DIALS)),
            punches: nat::Gate::new(),
            dial_back_gate: nat::Gate::new(),
            mediated: nat::Gate::new(),
            dialled: Mutex::new(std::collections::HashSet::new()),
            relays: Relays::new(cfg.relay.clone(), deliver),
        });
        let span = tracing::info_span!("node", me = %peer_id.short());
        info!(parent: &span, %local_addr, "node started");
        inner.tasks.spawn(accept_loop(inner.clone()).instrument(span.clone()));
        inner.tasks.spawn(crate::relay::pump(inner.clone(), relay_out).instrument(span.clone()));
        inner.tasks.spawn(crate::relay::maintain(inner.clone()).instrument(span.clone()));
        let m = Membership::new(peer_id, cfg.membership.clone());
        if !cfg.bootstrap_names.is_empty() {
            let names = join_names(
                inner.clone(),
                cfg.bootstrap_names.clone(),
                cfg.membership.join_retry.max(Duration::from_secs(1)),
            );
            inner.tasks.spawn(names.instrument(span.clone()));
        }
        inner.tasks.spawn(run_driver(inner.clone(), m, driver_rx, cfg.bootstrap.clone()).instrument(span));
        let node = Node { inner, _guard: Arc::new(cancel.drop_guard()) };
        if cfg.mdns {
            // On failure the node is dropped here, which stops its tasks.
            crate::discovery::start(&node.inner)?;
        }
        Ok((node, Inbox { rx: inbox_rx }))
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// A signer of task descriptors with this peer's key, for the job owners it runs.
    pub fn desc_signer(&self) -> Box<dyn shoal_core::sched::DescSigner> {
        self.inner.identity.desc_signer()
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The current membership view, with each peer's last known load hints.
    pub fn view(&self) -> Vec<Entry> {
        self.inner.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Subscribes to view changes (peers added, removed and why).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Sets the load hints this peer advertises.
    pub async fn set_load_hints(&self, hints: LoadHint) {
        let _ = self.inner.driver.send(DriverCmd::SetHints(hints)).await;
    }

    /// The round-trip time QUIC currently estimates to `peer`, if connected.
    pub fn rtt_of(&self, peer: PeerId) -> Option<Duration> {
        self.inner.live_connection(peer).map(|c| c.rtt())
    }

    /// How this peer is reached, as far as other peers' observations and dial-backs tell
    /// (see `docs/nat.md`).
    pub fn reachability(&self) -> Reachability {
        let nat = self.inner.nat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Reachability { kind: nat.kind(), observed: nat.addresses(), dial_backs: nat.dial_backs() }
    }

    /// How the current connection to `peer` runs, if there is one.
    pub fn path_of(&self, peer: PeerId) -> Option<Path> {
        let c = self.inner.live_connection(peer)?;
        let addr = c.remote_address();
        Some(match self.inner.relays.path_of(addr) {
            Some((relay, _)) => Path::Relayed(relay),
            None => Path::Direct(shoal_core::nat::canonical(addr)),
        })
    }

    /// The relays holding a reservation for this peer.
    pub fn relays(&self) -> Vec<PeerId> {
        self.inner.relays.reserved_at()
    }

    /// What this node has sent and received so far.
    pub fn stats(&self) -> NetStats {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let relay = &self.inner.relays.counters;
        NetStats {
            relayed_bytes_sent: get(&relay.sent),
            relayed_bytes_received: get(&relay.received),
            relay_bytes_forwarded: get(&relay.forwarded),
            relay_refused: get(&relay.refused),
            ..self.inner.counters.snapshot()
        }
    }

    /// The local blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// Remembers an address for a peer (e.g. learnt out of band).
    pub fn add_address(&self, peer: PeerId, addr: SocketAddr) {
        self.inner.note_addr(peer, addr);
    }

    /// The address this node would dial `peer` at: the last one it was connected at, or learnt
    /// from membership or [`Node::add_address`]; `None` if it never heard of one.
    pub fn address_of(&self, peer: PeerId) -> Option<SocketAddr> {
        self.inner.addr_of(peer)
    }

    /// Connects to the peer at `addr`, whoever it is, and returns its id.
    pub async fn connect_addr(&self, addr: SocketAddr) -> Result<PeerId, NodeError> {
        let (peer, _) = conn::dial(&self.inner, None, addr)
            .await
            .map_err(|source| NodeError::Connect { peer: addr.to_string(), source })?;
        Ok(peer)
    }

    /// Sends a one-way message. Messages to one peer go out on one QUIC stream, in the order
    /// their sends were called (see [`Inner::send_app`]); `Ok` means the message is in that
    /// stream's send buffer (QUIC delivers it unless the connection dies).
    pub async fn send(&self, peer: PeerId, msg: &Message) -> Result<(), NodeError> {
        self.inner.send_app(peer, msg).await
    }

    /// Sends a request and waits for the response (up to the request timeout).
    pub async fn request(&self, peer: PeerId, msg: &Message) -> Result<Message, NodeError> {
        let inner = &self.inner;
        let conn = inner.connection_to(peer).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let n = write_frame(&mut send, msg, inner.limits.max_frame).await?;
        send.finish().map_err(FrameError::from)?;
        inner.counters.sent(msg, n);
        let (resp, _) =
            tokio::time::timeout(inner.limits.request_timeout, read_frame(&mut recv, inner.limits.max_frame))
                .await
                .map_err(|_| NodeError::Timeout)??;
        Ok(resp)
    }

    /// Fetches a blob into the local store from the first holder that delivers bytes matching
    /// `hash`, trying the holders in order. Returns its size. Already-stored blobs return at once.
    pub async fn fetch_blob(&self, hash: BlobHash, holders: &[PeerId]) -> Result<u64, FetchError> {
        if let Some(size) = self.inner.blobs.size_of(&hash) {
            return Ok(size);
        }
        let mut failures = Vec::new();
        for &holder in holders {
            match conn::fetch_from(&self.inner, holder, hash).await {
                Ok(size) => return Ok(size),
                Err(e) => {
                    warn!(peer = %holder, blob = %hash.short(), "blob fetch failed: {e}");
                    failures.push((holder, e));
                }
            }
        }
        Err(FetchError { hash, failures })
    }

    /// Leaves the swarm gracefully (peers drop us from their views at once), then shuts down.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.driver.send(DriverCmd::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
        self.shutdown().await;
    }

    /// Stops every task and closes the endpoint (peers see the connections close).
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.endpoint.close(codes::NORMAL, b"shutdown");
        self.inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.inner.tasks.wait()).await;
        // Give the endpoint a moment to put the CONNECTION_CLOSE frames on the wire; the full
        // draining period (3 PTO) is not worth waiting for.
        let _ = tokio::time::timeout(Duration::from_millis(250), self.inner.endpoint.wait_idle()).await;
    }
}

impl Inner {
    pub(crate) fn note_addr(&self, peer: PeerId, addr: SocketAddr) {
        if crate::tunnel::is_virtual(addr) {
            return; // A relayed path is not an address to dial later.
        }
        let addr = shoal_core::nat::canonical(addr);
        let mut a = self.addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if a.len() > 65_536 {
            a.clear();
        }
        a.insert(peer, addr);
    }

    pub(crate) fn addr_of(&self, peer: PeerId) -> Option<SocketAddr> {
        self.addrs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&peer).copied()
    }

    /// A live connection to `peer`, dialling its known address if needed.
    pub(crate) async fn connection_to(self: &Arc<Self>, peer: PeerId) -> Result<Connection, NodeError> {
        if self.cancel.is_cancelled() {
            return Err(NodeError::Shutdown);
        }
        let existing =
            self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&peer).cloned();
        if let Some(c) = existing.filter(|c| c.close_reason().is_none()) {
            return Ok(c);
        }
        let addr = self.addr_of(peer).ok_or(NodeError::UnknownPeer(peer))?;
        let dial = conn::dial(self, Some(peer), addr);
        tokio::pin!(dial);
        // A dial that is slow may be blocked by the peer's NAT: ask mediators to have the peer
        // dial us at the same time, and take whichever connection comes up first (ours, or the
        // peer's arriving as an inbound one).
        let failed = |source| NodeError::Connect { peer: peer.to_string(), source };
        tokio::select! {
            r = &mut dial => {
                if r.is_ok() {
                    self.note_dialled(peer);
                }
                return r.map(|(_, c)| c).map_err(failed);
            }
            () = tokio::time::sleep(nat::PUNCH_AFTER) => {}
        }
        // The punch (and, when it fails, the dial through the peer's relays) runs here, so a
        // caller waits for it even when our own direct dial gives up first.
        let punch = nat::punch(self.clone(), peer, Some(addr)).in_current_span();
        tokio::pin!(punch);
        let (mut dial_failed, mut punch_done) = (None, false);
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        loop {
            tokio::select! {
                r = &mut dial, if dial_failed.is_none() => match r {
                    Ok((_, c)) => return Ok(c),
                    Err(source) => dial_failed = Some(source),
                },
                () = &mut punch, if !punch_done => punch_done = true,
                _ = tick.tick() => {
                    if let Some(c) = self.live_connection(peer) {
                        return Ok(c);
                    }
                    if punch_done && let Some(source) = dial_failed.take() {
                        return Err(failed(source));
                    }
                }
            }
        }
    }

    /// The registered connection to `peer`, if it is still open.
    pub(crate) fn live_connection(&self, peer: PeerId) -> Option<Connection> {
        let conns = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        conns.get(&peer).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// Whether we may punch towards `peer` now (one punch per peer per [`nat::PUNCH_EVERY`]).
    pub(crate) fn may_punch(&self, peer: PeerId) -> bool {
        self.punches.allow(peer, nat::PUNCH_EVERY)
    }

    /// Records that we reached `peer` by dialling its address directly (no punch, no relay).
    pub(crate) fn note_dialled(&self, peer: PeerId) {
        let mut d = self.dialled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.len() > 65_536 {
            d.clear();
        }
        d.insert(peer);
    }

    /// Up to `n` live connections (other than to `target`) to ask to mediate a punch towards
    /// `target`: our own relays first, then peers we reached by dialling them directly, nearest
    /// first within each group.
    pub(crate) fn mediators(&self, target: PeerId, n: usize) -> Vec<(PeerId, Connection)> {
        let live: Vec<(PeerId, Connection)> = {
            let conns = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            conns
                .iter()
                .filter(|(p, c)| **p != target && c.close_reason().is_none())
                .map(|(p, c)| (*p, c.clone()))
                .collect()
        };
        let relays = self.relays.reserved_at();
        let dialled = self.dialled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut live = live;
        live.sort_by_key(|(p, c)| (!relays.contains(p), !dialled.contains(p), c.rtt()));
        live.truncate(n);
        live
    }

    /// Writes an application message on the peer's lane: one unidirectional stream per
    /// connection, kept open, carrying frames back to back. Compared with a stream per message,
    /// it saves opening, accepting and closing a stream and a receiving task per message, keeps
    /// messages in order, and lets QUIC pack several small messages into one packet. Membership
    /// messages do not use it (a receiver slow to take application messages must not delay
    /// failure detection). A failed write drops the lane; the next send opens a new one.
    pub(crate) async fn send_app(self: &Arc<Self>, peer: PeerId, msg: &Message) -> Result<(), NodeError> {
        let frame = shoal_core::wire::encode_frame(msg, self.limits.max_frame).map_err(FrameError::from)?;
        let conn = self.connection_to(peer).await?;
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(peer)
            .or_default()
            .clone();
        let mut lane = lane.lock().await;
        let stale = lane.as_ref().is_none_or(|l| l.conn != conn.stable_id());
        if stale {
            *lane = Some(Lane { conn: conn.stable_id(), send: conn.open_uni().await? });
        }
        let Some(l) = lane.as_mut() else { return Err(NodeError::Shutdown) };
        if let Err(e) = l.send.write_all(&frame).await {
            *lane = None;
            return Err(FrameError::from(e).into());
        }
        self.counters.sent(msg, frame.len());
        Ok(())
    }

    /// Forgets the lane to `peer` if it runs on connection `conn` (which has ended).
    pub(crate) fn drop_lane(&self, peer: PeerId, conn: usize) {
        let mut lanes = self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ended = lanes
            .get(&peer)
            .is_some_and(|l| l.try_lock().is_ok_and(|l| l.as_ref().is_none_or(|l| l.conn == conn)));
        if ended {
            lanes.remove(&peer);
        }
    }

    async fn send_uni(self: &Arc<Self>, peer: PeerId, msg: &Message) -> Result<(), NodeError> {
        let conn = self.connection_to(peer).await?;
        let mut send = conn.open_uni().await?;
        let n = write_frame(&mut send, msg, self.limits.max_frame).await?;
        send.finish().map_err(FrameError::from)?;
        self.counters.sent(msg, n);
        Ok(())
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    loop {
        let incoming = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            i = inner.endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { break };
        let cancel = inner.cancel.clone();
        let handshake = conn::accept(inner.clone(), incoming);
        inner.tasks.spawn(
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = handshake => {}
                }
            }
            .in_current_span(),
        );
    }
}

/// Carries out one membership transmit; reports failure back to the driver.
async fn transmit(inner: Arc<Inner>, to: Target, msg: MemberMsg, wait_ack: bool) {
    let framed = Message::Membership(msg);
    let (peer, result) = match to {
        Target::Peer(peer, addr) => {
            // The membership view holds the freshest address it knows (first-hand when it can).
            inner.note_addr(peer, addr);
            (Some(peer), send_member(&inner, peer, &framed, wait_ack).await)
        }
        Target::Addr(addr) if addr == inner.local_addr => return,
        Target::Addr(addr) => match conn::dial(&inner, None, addr).await {
            Ok((peer, _)) => {
                inner.note_dialled(peer);
                (Some(peer), send_member(&inner, peer, &framed, wait_ack).await)
            }
            Err(e) => {
                debug!(%addr, "bootstrap dial failed: {e}");
                return;
            }
        },
    };
    if let (Some(peer), Err(e)) = (peer, result) {
        debug!(peer = %peer.short(), "membership send failed: {e}");
        let _ = inner.driver.try_send(DriverCmd::SendFailed(peer));
    }
}

/// Joins through a peer found by discovery, as through a bootstrap address, but dialling it
/// as the announced peer: TLS refuses anyone else, so a spoofed announcement only costs a dial.
async fn join_discovered(inner: Arc<Inner>, peer: PeerId, addr: SocketAddr, join: MemberMsg) {
    if let Err(e) = conn::dial(&inner, Some(peer), addr).await {
        debug!(peer = %peer.short(), %addr, "discovered peer: dial failed: {e}");
        return;
    }
    inner.note_dialled(peer);
    if let Err(e) = send_member(&inner, peer, &Message::Membership(join), false).await {
        debug!(peer = %peer.short(), "discovered peer: join failed: {e}");
    }
}

async fn send_member(
    inner: &Arc<Inner>,
    peer: PeerId,
    msg: &Message,
    wait_ack: bool,
) -> Result<(), NodeError> {
    if !wait_ack {
        return inner.send_uni(peer, msg).await;
    }
    let conn = inner.connection_to(peer).await?;
    let mut send = conn.open_uni().await?;
    let n = write_frame(&mut send, msg, inner.limits.max_frame).await?;
    send.finish().map_err(FrameError::from)?;
    inner.counters.sent(msg, n);
    let _ = tokio::time::timeout(conn::ACK_WAIT, send.stopped()).await;
    Ok(())
}

async fn run_driver(
    inner: Arc<Inner>,
    mut m: Membership,
    mut rx: mpsc::Receiver<DriverCmd>,
    bootstrap: Vec<SocketAddr>,
) {
    let start = Instant::now();
    let mut rng = StdRng::from_os_rng();
    let mut timers: BTreeMap<(Duration, u64), TimerToken> = BTreeMap::new();
    let mut timer_seq = 0u64;
    m.handle_join(start.elapsed(), &bootstrap);
    let mut pending_leave: Option<oneshot::Sender<()>> = None;
    loop {
        let mut leave_sends = Vec::new();
        // Flush outputs.
        while let Some(t) = m.poll_transmit() {
            let leaving = matches!(t.msg, MemberMsg::Leave);
            let h = tokio::spawn(transmit(inner.clone(), t.to, t.msg, leaving).in_current_span());
            if leaving {
                leave_sends.push(h);
            }
        }
        while let Some(Timer { at, token }) = m.poll_timer() {
            timer_seq += 1;
            timers.insert((at, timer_seq), token);
        }
        while let Some(ev) = m.poll_event() {
            if let Event::Added(e) = ev {
                inner.note_addr(e.id, e.addr);
            }
            let _ = inner.events.send(ev);
        }
        // Published after every step, not only on view events: probes and shuffles refresh the
        // load hints of entries that stay in the view, and thieves need the fresh ones.
        *inner.view.write().unwrap_or_else(std::sync::PoisonError::into_inner) = m.view().copied().collect();
        if let Some(tx) = pending_leave.take() {
            for h in leave_sends {
                let _ = h.await;
            }
            let _ = tx.send(());
        }
        let next = timers.keys().next().map(|(at, _)| *at);
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let now = start.elapsed();
                match cmd {
                    DriverCmd::Msg { from, addr, msg } => m.handle_message(now, from, addr, msg, &mut rng),
                    DriverCmd::SendFailed(peer) => m.handle_send_failed(now, peer),
                    DriverCmd::ConnLost(peer) => m.handle_connection_lost(now, peer),
                    DriverCmd::SetHints(h) => m.handle_hints(now, h),
                    DriverCmd::Leave(tx) => {
                        m.handle_leave(now);
                        pending_leave = Some(tx);
                    }
                    DriverCmd::JoinAddr(addr) => {
                        if !m.has_left() {
                            let join = MemberMsg::Join { hints: m.hints() };
                            tokio::spawn(transmit(inner.clone(), Target::Addr(addr), join, false).in_current_span());
                        }
                    }
                    DriverCmd::Discovered(peer, addr) => {
                        if !m.has_left() && peer != m.me() && m.get(&peer).is_none() {
                            let join = MemberMsg::Join { hints: m.hints() };
                            tokio::spawn(join_discovered(inner.clone(), peer, addr, join).in_current_span());
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(start + next.unwrap_or_default()), if next.is_some() => {
                let now = start.elapsed();
                while let Some(entry) = timers.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let timer = entry.remove();
                    m.handle_timer(now, timer, &mut rng);
                }
            }
        }
    }
}

/// Binds the endpoint's UDP socket. An IPv6 address is dual-stack (`[::]:7600` takes IPv4
/// peers too, which then appear as IPv4-mapped addresses and are canonicalised where stored).
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A peer to join through: an IP address and port, or a DNS name and port, which is resolved
/// again at every join attempt (so a bootstrap host that moves is followed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Bootstrap {
    /// `192.0.2.10:7600`, `[2001:db8::1]:7600`.
    Addr(SocketAddr),
    /// `seed.example.org:7600`.
    Name(String),
}

impl std::str::FromStr for Bootstrap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Bootstrap::Addr(a));
        }
        let bad = || {
            format!(
                "`{s}` is not an address: expected HOST:PORT, e.g. 192.0.2.10:7600 or seed.example.org:7600"
            )
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
        };
        if port.parse::<u16>().is_err()
            || host.len() > 253
            || !host.trim_end_matches('.').split('.').all(label_ok)
        {
            return Err(bad());
        }
        Ok(Bootstrap::Name(s.to_string()))
    }
}

impl std::fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bootstrap::Addr(a) => a.fmt(f),
            Bootstrap::Name(n) => f.write_str(n),
        }
    }
}

impl Bootstrap {
    /// Splits a list into its addresses and its names (for [`NodeConfig`]).
    pub fn split(list: &[Bootstrap]) -> (Vec<SocketAddr>, Vec<String>) {
        let mut addrs = Vec::new();
        let mut names = Vec::new();
        for b in list {
            match b {
                Bootstrap::Addr(a) => addrs.push(*a),
                Bootstrap::Name(n) => names.push(n.clone()),
            }
        }
        (addrs, names)
    }
}

/// Joins through the bootstrap names: resolves them and sends `Join` to every address they
/// resolve to, again every `retry` while the view is empty (a name that does not resolve now
/// may later).
async fn join_names(inner: Arc<Inner>, names: Vec<String>, retry: Duration) {
    loop {
        let empty = inner.view.read().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty();
        if empty {
            for name in &names {
                match tokio::net::lookup_host(name.as_str()).await {
                    Ok(addrs) => {
                        for addr in addrs {
                            debug!(%name, %addr, "joining through a bootstrap name");
                            let _ = inner.driver.send(DriverCmd::JoinAddr(addr)).await;
                        }
                    }
                    Err(e) => warn!(%name, "cannot resolve the bootstrap name: {e}"),
                }
            }
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

#[cfg(test)]
mod bootstrap_tests {
    use super::Bootstrap;

    #[test]
    fn addresses_and_names_parse_and_garbage_is_refused_with_the_expected_form() {
        assert_eq!("192.0.2.10:7600".parse(), Ok(Bootstrap::Addr("192.0.2.10:7600".parse().unwrap())));
        assert_eq!("[2001:db8::1]:7600".parse(), Ok(Bootstrap::Addr("[2001:db8::1]:7600".parse().unwrap())));
        assert_eq!("seed.example.org:7600".parse(), Ok(Bootstrap::Name("seed.example.org:7600".into())));
        assert_eq!("localhost:1".parse::<Bootstrap>().unwrap().to_string(), "localhost:1");
        for bad in
            ["seed.example.org", "seed:port", "seed:70000", ":7600", "a b:1", "-x.org:1", "2001:db8::1:7600x"]
        {
            let e = bad.parse::<Bootstrap>().unwrap_err();
            assert!(e.contains("expected HOST:PORT"), "{bad}: {e}");
        }
        let (addrs, names) = Bootstrap::split(&["10.0.0.1:1".parse().unwrap(), "h:2".parse().unwrap()]);
        assert_eq!((addrs.len(), names), (1, vec!["h:2".to_string()]));
    }
}
