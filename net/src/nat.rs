//! NAT traversal on the node: observed addresses, dial-backs and hole punching (the messages
//! and the classifier are in [`shoal_core::nat`]; the design is in `docs/nat.md`).
//!
//! - After every handshake, each side tells the other where it sees it ([`send_observed`]). A
//!   peer whose observation is news asks that observer for a dial-back ([`ask_dial_back`]).
//! - A dial-back ([`serve_dial_back`]) dials the asker's observed address, and only that one
//!   (the source address of the asker's own connection, so no one can aim it elsewhere), from a
//!   fresh endpoint on another port, and reports whether the QUIC handshake completed. The
//!   dial-back connection is closed with [`codes::DIAL_BACK`] before any `Hello`.
//! - Hole punching ([`punch`]): a dial that has not completed after [`PUNCH_AFTER`] asks up to
//!   [`MEDIATORS`] connected peers to have the target dial back at once ([`serve_punch`],
//!   [`punch_now`]). Both sides then dial each other from their listening sockets: each one's
//!   outgoing packets open its own NAT to the other's. Whichever handshake completes first is
//!   the connection.
//!
//! Bounds: at most [`MAX_DIAL_BACKS`] dial-backs and [`MAX_PUNCH_DIALS`] punch dials run at once
//! (a request beyond is answered "not reached" or dropped), and one punch per target per
//! [`PUNCH_EVERY`], so a peer cannot turn us into a packet cannon.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::Connection;
use shoal_core::ids::PeerId;
use shoal_core::nat::{NatKind, NatObserver, NetMsg, canonical};
use shoal_core::wire::Message;
use tokio::time::Instant;
use tracing::{Instrument, debug, info};

use crate::codes;
use crate::frame::{FrameError, write_frame};
use crate::node::Inner;

/// How long a dial waits before it also asks mediators for a hole punch.
pub(crate) const PUNCH_AFTER: Duration = Duration::from_millis(300);
/// Peers asked at once to mediate one punch (a wave; the next wave goes when none of them is
/// connected to the target).
pub(crate) const MEDIATORS: usize = 3;
/// Most peers asked to mediate one punch, over all waves.
pub(crate) const MAX_MEDIATORS: usize = 12;
/// Least time between two punches towards one target.
pub(crate) const PUNCH_EVERY: Duration = Duration::from_secs(2);
/// Dial-backs served at once.
pub(crate) const MAX_DIAL_BACKS: usize = 4;
/// Punch dials (on a mediator's word) running at once.
pub(crate) const MAX_PUNCH_DIALS: usize = 16;
/// Dial-back answers (for the addresses observed now) after which a peer stops asking.
pub(crate) const DIAL_BACKS_WANTED: usize = 3;
/// Least time between two dial-backs served to one asker.
pub(crate) const DIAL_BACK_EVERY: Duration = Duration::from_secs(10);
/// Time a dial-back's QUIC handshake may take.
pub(crate) const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(3);

/// What this peer knows of how it is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    /// The classification.
    pub kind: NatKind,
    /// The addresses other peers see us at, most recent first.
    pub observed: Vec<SocketAddr>,
    /// How many dial-backs answered for the addresses observed now.
    pub dial_backs: usize,
}

/// Lets an action on a key happen at most once per period (bounded: when full, the oldest
/// half of the keys is forgotten).
#[derive(Debug)]
pub(crate) struct Gate<K> {
    last: std::sync::Mutex<std::collections::HashMap<K, Instant>>,
}

impl<K: std::hash::Hash + Eq + Copy> Gate<K> {
    const MAX_KEYS: usize = 4096;

    pub(crate) fn new() -> Self {
        Gate { last: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }

    /// Whether the action on `key` may happen now (and records it if so).
    pub(crate) fn allow(&self, key: K, every: Duration) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.get(&key).is_some_and(|t| now.duration_since(*t) < every) {
            return false;
        }
        if last.len() >= Self::MAX_KEYS {
            let mut times: Vec<Instant> = last.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            last.retain(|_, t| *t > cut);
        }
        last.insert(key, now);
        true
    }
}

/// Sends one one-way message on its own stream of `conn`.
async fn send_one(inner: &Inner, conn: &Connection, msg: &Message) -> Result<(), FrameError> {
    let mut send = conn.open_uni().await.map_err(|e| FrameError::Read(e.into()))?;
    let n = write_frame(&mut send, msg, inner.limits.max_frame).await?;
    send.finish().map_err(FrameError::from)?;
    inner.counters.sent(msg, n);
    Ok(())
}

/// Sends a request on `conn` and waits up to `wait` for its answer.
pub(crate) async fn ask(
    inner: &Inner,
    conn: &Connection,
    msg: &Message,
    wait: Duration,
) -> Result<Message, String> {
    let asked = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| FrameError::Read(e.into()))?;
        let n = write_frame(&mut send, msg, inner.limits.max_frame).await?;
        send.finish().map_err(FrameError::from)?;
        inner.counters.sent(msg, n);
        Ok::<_, FrameError>(crate::frame::read_frame(&mut recv, inner.limits.max_frame).await?.0)
    };
    match tokio::time::timeout(wait, asked).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {wait:?}")),
    }
}

/// Sends `msg` on its own stream of `conn` in a task of its own; a failure is only logged
/// (`what` says what was sent), as nothing waits for these messages.
fn send_in_background(inner: &Arc<Inner>, to: PeerId, conn: Connection, msg: Message, what: &'static str) {
    let inner2 = inner.clone();
    inner.tasks.spawn(
        async move {
            if let Err(e) = send_one(&inner2, &conn, &msg).await {
                debug!(peer = %to.short(), "could not send {what}: {e}");
            }
        }
        .in_current_span(),
    );
}

/// Applies `change` to our [`NatObserver`] and logs the new kind when it changed.
fn update_nat<R>(inner: &Inner, addr: SocketAddr, change: impl FnOnce(&mut NatObserver) -> R) -> R {
    let (out, before, after) = {
        let mut nat = inner.nat.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = nat.kind();
        let out = change(&mut nat);
        (out, before, nat.kind())
    };
    if before != after {
        info!(kind = %after, %addr, "reachability changed");
    }
    out
}

/// Tells the peer of a fresh connection where we see it, on that connection.
pub(crate) fn send_observed(inner: &Arc<Inner>, peer: PeerId, conn: &Connection) {
    if crate::tunnel::is_virtual(conn.remote_address()) {
        return; // Over a relay we see a virtual address: nothing the peer could use.
    }
    let msg = Message::Net(NetMsg::Observed { addr: canonical(conn.remote_address()) });
    send_in_background(inner, peer, conn.clone(), msg, "the observed address");
}

/// Handles a one-way [`NetMsg`] from `peer`, received on `conn`.
pub(crate) fn on_one_way(inner: &Arc<Inner>, peer: PeerId, conn: &Connection, msg: NetMsg) {
    match msg {
        NetMsg::Observed { .. } if crate::tunnel::is_virtual(conn.remote_address()) => {
            debug!(peer = %peer.short(), "ignoring an observation over a relayed path");
        }
        NetMsg::Observed { addr } => {
            let ask = update_nat(inner, addr, |nat| {
                let news = nat.observed(peer, conn.remote_address().ip(), addr);
                // Enough answers for the addresses observed now: no more dial-backs until the
                // mapping changes (which makes those answers stale).
                news && nat.wants_dial_back_from(peer) && nat.dial_backs() < DIAL_BACKS_WANTED
            });
            if ask {
                let (inner2, conn) = (inner.clone(), conn.clone());
                inner.tasks.spawn(ask_dial_back(inner2, peer, conn, addr).in_current_span());
            }
        }
        NetMsg::PunchNow { peer: asker, addr } => punch_now(inner, peer, asker, addr),
        other => debug!(peer = %peer.short(), "ignoring one-way {other:?}"),
    }
}

/// How a [`NetMsg`] request is answered.
pub(crate) enum Answer {
    /// With this message.
    Reply(NetMsg),
    /// Not at all (the asker sees the stream reset): too busy.
    Silence,
    /// The message is not a request.
    NotARequest,
}

/// Answers a [`NetMsg`] request from `peer` on `conn`.
pub(crate) async fn on_request(inner: &Arc<Inner>, peer: PeerId, conn: &Connection, msg: NetMsg) -> Answer {
    match msg {
        NetMsg::DialBack => match serve_dial_back(inner, peer, conn).await {
            Some(reached) => Answer::Reply(NetMsg::DialBackResult { reached }),
            None => Answer::Silence,
        },
        NetMsg::Reserve => Answer::Reply(inner.relays.reserve(peer)),
        NetMsg::Punch { target } => {
            let target_addr = serve_punch(inner, peer, conn, target);
            let relay = target_addr.is_some() && inner.relays.holds_reservation(target);
            Answer::Reply(NetMsg::PunchReply { target_addr, relay })
        }
        _ => Answer::NotARequest,
    }
}

/// Asks `peer` (which sees us at `addr`) to dial us back, and records the answer.
async fn ask_dial_back(inner: Arc<Inner>, peer: PeerId, conn: Connection, addr: SocketAddr) {
    let wait = DIAL_BACK_TIMEOUT * 2 + inner.limits.request_timeout;
    let mut asked = ask(&inner, &conn, &Message::Net(NetMsg::DialBack), wait).await;
    // A busy or briefly unreachable peer gets two more tries.
    for _ in 0..2 {
        if asked.is_ok() || conn.close_reason().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        asked = ask(&inner, &conn, &Message::Net(NetMsg::DialBack), wait).await;
    }
    match asked {
        Ok(Message::Net(NetMsg::DialBackResult { reached })) => {
            debug!(peer = %peer.short(), %addr, reached, "dial-back answered");
            update_nat(&inner, addr, |nat| nat.dial_back(peer, addr, reached));
        }
        Ok(other) => debug!(peer = %peer.short(), "unexpected dial-back answer {other:?}"),
        Err(e) => debug!(peer = %peer.short(), "dial-back request failed: {e}"),
    }
}

/// Dials `peer` at the address its connection `conn` comes from, from a fresh endpoint, and
/// says whether the QUIC handshake completed (`None`: too busy to try).
async fn serve_dial_back(inner: &Arc<Inner>, peer: PeerId, conn: &Connection) -> Option<bool> {
    let target = conn.remote_address();
    if crate::tunnel::is_virtual(target) {
        return Some(false); // Reached over a relay: not reachable unsolicited, as far as we know.
    }
    // Busy: wait a little for a turn; give no answer at all rather than a false "not reached".
    let Ok(Ok(_permit)) = tokio::time::timeout(DIAL_BACK_TIMEOUT, inner.dial_backs.acquire()).await else {
        debug!(peer = %peer.short(), "dial-back not served: too many at once");
        return None;
    };
    if !inner.dial_back_gate.allow(peer, DIAL_BACK_EVERY) {
        debug!(peer = %peer.short(), "dial-back not served: asked again too soon");
        return None;
    }
    let bind: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = match quinn::Endpoint::client(bind) {
        Ok(mut e) => {
            e.set_default_client_config(inner.client_config.clone());
            e
        }
        Err(e) => {
            debug!("dial-back: could not open an endpoint: {e}");
            return None;
        }
    };
    let reached = match endpoint.connect(target, &peer.to_string()) {
        Ok(connecting) => match tokio::time::timeout(DIAL_BACK_TIMEOUT, connecting).await {
            Ok(Ok(c)) => {
                c.close(codes::DIAL_BACK, b"dial-back");
                true
            }
            Ok(Err(e)) => {
                debug!(peer = %peer.short(), %target, "dial-back failed: {e}");
                false
            }
            Err(_) => false,
        },
        Err(e) => {
            debug!(peer = %peer.short(), %target, "dial-back could not start: {e}");
            false
        }
    };
    // Let the close reach the peer.
    let _ = tokio::time::timeout(Duration::from_millis(200), endpoint.wait_idle()).await;
    Some(reached)
}

/// A mediator's part: if we hold a live connection to `target`, tell it to dial `asker` (at
/// the address we see the asker at) and answer where we see `target`.
fn serve_punch(inner: &Arc<Inner>, asker: PeerId, conn: &Connection, target: PeerId) -> Option<SocketAddr> {
    // An asker we reach through a relay has no address the target could dial.
    let relayed = crate::tunnel::is_virtual(conn.remote_address());
    if relayed
        || target == asker
        || target == inner.peer_id
        || !inner.mediated.allow((asker, target), PUNCH_EVERY)
    {
        return None;
    }
    let to_target = inner.live_connection(target)?;
    let target_addr = canonical(to_target.remote_address());
    let msg = Message::Net(NetMsg::PunchNow { peer: asker, addr: canonical(conn.remote_address()) });
    send_in_background(inner, target, to_target, msg, "a punch request");
    debug!(asker = %asker.short(), target = %target.short(), "mediating a hole punch");
    Some(target_addr)
}

/// The target's part: `mediator` says `asker`, seen at `addr`, is dialling us; dial it now.
fn punch_now(inner: &Arc<Inner>, mediator: PeerId, asker: PeerId, addr: SocketAddr) {
    if asker == inner.peer_id || inner.live_connection(asker).is_some() || !inner.may_punch(asker) {
        return;
    }
    let Ok(permit) = inner.punch_dials.clone().try_acquire_owned() else {
        debug!(peer = %asker.short(), "punch dropped: too many at once");
        return;
    };
    debug!(peer = %asker.short(), mediator = %mediator.short(), %addr, "punching towards a peer");
    let inner2 = inner.clone();
    inner.tasks.spawn(
        async move {
            let started = Instant::now();
            match crate::conn::dial(&inner2, Some(asker), addr).await {
                Ok(_) => debug!(peer = %asker.short(), took = ?started.elapsed(), "punched"),
                Err(e) => debug!(peer = %asker.short(), "punch dial failed: {e}"),
            }
            drop(permit);
        }
        .in_current_span(),
    );
}

/// The dialler's part: asks connected peers, [`MEDIATORS`] at a time and at most
/// [`MAX_MEDIATORS`], to have `target` dial us, until one reached it and one holds its relay
/// reservation; a mediator that sees `target` elsewhere than `known` makes us dial that address
/// too. If no connection comes up, dials `target` through the relays named.
pub(crate) async fn punch(inner: Arc<Inner>, target: PeerId, known: Option<SocketAddr>) {
    if !inner.may_punch(target) {
        return;
    }
    let mediators = inner.mediators(target, MAX_MEDIATORS);
    debug!(peer = %target.short(), candidates = mediators.len(), "asking for a hole punch");
    let mut dialled: Vec<SocketAddr> = known.into_iter().collect();
    let mut relays = Vec::new();
    for wave in mediators.chunks(MEDIATORS) {
        let mut asks = tokio::task::JoinSet::new();
        for (mediator, conn) in wave {
            let (inner, mediator, conn) = (inner.clone(), *mediator, conn.clone());
            asks.spawn(async move {
                let msg = Message::Net(NetMsg::Punch { target });
                match ask(&inner, &conn, &msg, inner.limits.request_timeout).await {
                    Ok(Message::Net(NetMsg::PunchReply { target_addr: Some(a), relay })) => {
                        Some((mediator, a, relay))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        debug!(mediator = %mediator.short(), "punch request failed: {e}");
                        None
                    }
                }
            });
        }
        let mut mediated = false;
        while let Some(done) = asks.join_next().await {
            let Ok(Some((mediator, addr, relay))) = done else { continue };
            mediated = true;
            if relay {
                relays.push(mediator);
            }
            let addr = canonical(addr);
            if dialled.contains(&addr) || inner.live_connection(target).is_some() {
                continue;
            }
            dialled.push(addr);
            let inner2 = inner.clone();
            inner.tasks.spawn(
                async move {
                    if let Err(e) = crate::conn::dial(&inner2, Some(target), addr).await {
                        debug!(peer = %target.short(), %addr, "dial at the mediator's address failed: {e}");
                    }
                }
                .in_current_span(),
            );
        }
        // Later waves only while no mediator reached the target, or none holds its relay.
        if (mediated && !relays.is_empty()) || inner.live_connection(target).is_some() {
            break;
        }
    }
    if relays.is_empty() {
        if inner.live_connection(target).is_none() {
            debug!(peer = %target.short(), "no mediator holds a relay reservation of the peer");
        }
        return;
    }
    // If the punch does not bring a connection up soon, go through a relay of the target's.
    crate::relay::dial_via(inner, target, relays).await;
}
