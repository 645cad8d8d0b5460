//! One connection: the Shoal handshake (`Hello`, version, swarm secret) and the per-connection
//! actor that serves the peer's streams.
//!
//! Invariants:
//! - nothing but `Hello` is read from, or sent to, a peer before its `Hello` has been verified
//!   (version compatible, swarm-secret proof valid for *this* TLS session). The acceptor verifies
//!   the dialer's proof before it sends its own, so a stranger learns nothing of the swarm.
//! - every frame from the peer goes through [`crate::frame::read_frame`] (size-checked, validated)
//!   and the inbound token bucket; a malformed or misplaced frame closes the connection with a
//!   code from [`crate::codes`] and a warning naming the peer.
//! - the actor stops when the node's cancellation token fires, and its stream tasks with it.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use shoal_core::ids::PeerId;
use shoal_core::nat::{NatKind, NetMsg};
use shoal_core::wire::{BlobRequest, BlobResponse, Hello, MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, warn};

use crate::codes;
use crate::frame::{FrameError, read_frame, read_frame_limited, read_next_frame, write_frame};
use crate::limits::Bucket;
use crate::node::{DriverCmd, Inbound, Inner, Replier};
use crate::tls::{self, Role};

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// QUIC/TLS failed (unreachable, refused certificate, wrong ALPN, …).
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The dial could not even start (bad address, endpoint closed).
    #[error("connect failed: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The peer's certificate did not yield a peer id, or ALPN was not `shoal/1`.
    #[error("not a shoal peer")]
    NotAPeer,
    /// We reached ourselves.
    #[error("dialled self")]
    SelfDial,
    /// The peer did not finish the handshake in time.
    #[error("handshake timed out")]
    Timeout,
    /// The peer's `Hello` was malformed or missing.
    #[error("bad hello: {0}")]
    Frame(#[from] FrameError),
    /// No protocol version in common.
    #[error(
        "incompatible protocol version: peer speaks {min}..={max}, we speak {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
    )]
    Version {
        /// The peer's oldest version.
        min: u16,
        /// The peer's newest version.
        max: u16,
    },
    /// The swarm secret was missing, wrong, or offered to a public swarm.
    #[error("swarm secret refused")]
    Secret,
    /// The peer closed the connection during the handshake, with this code (see [`codes`]).
    #[error("peer refused the connection: {why} (code {code})")]
    Refused {
        /// The close code.
        code: u64,
        /// Its meaning.
        why: &'static str,
    },
    /// The peer dialled was not the one we expected.
    #[error("expected peer {expected}, reached {actual}")]
    WrongPeer {
        /// Who we dialled.
        expected: PeerId,
        /// Who answered.
        actual: PeerId,
    },
}

impl HandshakeError {
    fn close_code(&self) -> Option<(VarInt, &'static str)> {
        match self {
            HandshakeError::NotAPeer => Some((codes::NOT_A_PEER, "not a shoal peer")),
            HandshakeError::SelfDial => Some((codes::SELF_DIAL, "self dial")),
            HandshakeError::Timeout => Some((codes::HANDSHAKE_TIMEOUT, "handshake timeout")),
            HandshakeError::Frame(e) if e.is_protocol_violation() => Some((codes::PROTOCOL, "bad hello")),
            HandshakeError::Version { .. } => Some((codes::VERSION, "incompatible protocol version")),
            HandshakeError::Secret => Some((codes::SWARM_SECRET, "swarm secret refused")),
            HandshakeError::WrongPeer { .. } => Some((codes::NOT_A_PEER, "wrong peer")),
            _ => None,
        }
    }
}

fn our_hello(inner: &Inner, conn: &Connection, role: Role) -> Message {
    let proof = inner.secret.as_ref().and_then(|s| s.proof(conn, role));
    Message::Hello(Hello { version: PROTOCOL_VERSION, min_version: MIN_PROTOCOL_VERSION, proof })
}

fn check_hello(
    inner: &Inner,
    conn: &Connection,
    msg: Message,
    their_role: Role,
) -> Result<(), HandshakeError> {
    let Message::Hello(h) = msg else {
        return Err(HandshakeError::Frame(FrameError::Wire(shoal_core::wire::WireError::Invalid(
            "first frame is not Hello".into(),
        ))));
    };
    if h.version < MIN_PROTOCOL_VERSION || h.min_version > PROTOCOL_VERSION {
        return Err(HandshakeError::Version { min: h.min_version, max: h.version });
    }
    match (&inner.secret, h.proof) {
        (None, None) => Ok(()),
        (Some(s), Some(p)) if s.verify(conn, their_role, &p) => Ok(()),
        _ => Err(HandshakeError::Secret),
    }
}

/// Identifies the peer of a freshly established QUIC connection (ALPN and certificate).
fn identify(inner: &Inner, conn: &Connection) -> Result<PeerId, HandshakeError> {
    if tls::alpn_of_connection(conn).as_deref() != Some(tls::ALPN) {
        return Err(HandshakeError::NotAPeer);
    }
    let peer = tls::peer_id_of_connection(conn).ok_or(HandshakeError::NotAPeer)?;
    if peer == inner.peer_id {
        return Err(HandshakeError::SelfDial);
    }
    // A relayed path stands for one peer: a relay naming another source is caught here.
    if !inner.relays.admits(conn.remote_address(), peer) {
        let expected = inner.relays.path_of(conn.remote_address()).map_or(peer, |(_, p)| p);
        return Err(HandshakeError::WrongPeer { expected, actual: peer });
    }
    Ok(peer)
}

/// Dialler side of the handshake. On success the connection is registered and its actor runs.
pub(crate) async fn dial(
    inner: &Arc<Inner>,
    expected: Option<PeerId>,
    addr: std::net::SocketAddr,
) -> Result<(PeerId, Connection), HandshakeError> {
    let name = expected.map_or_else(|| tls::ANY_PEER.to_string(), |p| p.to_string());
    let public =
        inner.nat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).kind() == NatKind::Public;
    let config = if public { &inner.client_config } else { &inner.keep_alive_config };
    let connecting = inner.endpoint.connect_with(config.clone(), addr, &name)?;
    let t = inner.limits.handshake_timeout;
    let conn = tokio::time::timeout(t, connecting).await.map_err(|_| HandshakeError::Timeout)??;
    let result = tokio::time::timeout(t, async {
        let peer = identify(inner, &conn)?;
        if let Some(want) = expected
            && want != peer
        {
            return Err(HandshakeError::WrongPeer { expected: want, actual: peer });
        }
        let (mut send, mut recv) = conn.open_bi().await?;
        write_frame(&mut send, &our_hello(inner, &conn, Role::Dialer), inner.limits.max_frame).await?;
        send.finish().map_err(FrameError::from)?;
        let (reply, _) = read_frame(&mut recv, inner.limits.max_frame).await?;
        check_hello(inner, &conn, reply, Role::Acceptor)?;
        Ok(peer)
    })
    .await
    .unwrap_or(Err(HandshakeError::Timeout));
    match result {
        Ok(peer) => {
            let conn = register(inner, peer, conn);
            Ok((peer, conn))
        }
        Err(e) => {
            if let Some((code, why)) = e.close_code() {
                conn.close(code, why.as_bytes());
                return Err(e);
            }
            // The acceptor refused us: report its reason, not the stream error it caused.
            if let Some(quinn::ConnectionError::ApplicationClosed(c)) = conn.close_reason() {
                return Err(HandshakeError::Refused {
                    code: c.error_code.into_inner(),
                    why: codes::name(c.error_code),
                });
            }
            Err(e)
        }
    }
}

/// Acceptor side: runs the handshake on an incoming connection, then the actor.
pub(crate) async fn accept(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let t = inner.limits.handshake_timeout;
    let conn = match tokio::time::timeout(t, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            debug!(%remote, "inbound handshake failed: {e}");
            return;
        }
        Err(_) => {
            debug!(%remote, "inbound handshake timed out");
            return;
        }
    };
    let result = tokio::time::timeout(t, async {
        let peer = identify(&inner, &conn)?;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let (hello, _) = read_frame(&mut recv, inner.limits.max_frame).await?;
        check_hello(&inner, &conn, hello, Role::Dialer)?;
        write_frame(&mut send, &our_hello(&inner, &conn, Role::Acceptor), inner.limits.max_frame).await?;
        send.finish().map_err(FrameError::from)?;
        Ok::<_, HandshakeError>(peer)
    })
    .await
    .unwrap_or(Err(HandshakeError::Timeout));
    match result {
        Ok(peer) => {
            register(&inner, peer, conn);
        }
        Err(HandshakeError::Connection(quinn::ConnectionError::ApplicationClosed(c)))
            if c.error_code == codes::DIAL_BACK =>
        {
            debug!(%remote, "dial-back reached us");
        }
        Err(e) => {
            warn!(%remote, "refused inbound connection: {e}");
            if let Some((code, why)) = e.close_code() {
                conn.close(code, why.as_bytes());
            }
        }
    }
}

/// Records a verified connection as the one to use for sending to `peer` and starts its actor.
///
/// The newest connection wins: it is proven live right now, while an older one may lead to a
/// process that has since restarted (it then dies by idle timeout). An older connection keeps its
/// actor, so anything the peer still sends on it is served.
fn register(inner: &Arc<Inner>, peer: PeerId, conn: Connection) -> Connection {
    inner.note_addr(peer, conn.remote_address());
    let relayed = crate::tunnel::is_virtual(conn.remote_address());
    // A relayed connection never displaces a live direct one; a direct one retires a relayed one.
    let (current, displaced) = {
        let mut conns = inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = conns.get(&peer).filter(|c| c.close_reason().is_none()).cloned();
        let old_relayed = old.as_ref().is_some_and(|c| crate::tunnel::is_virtual(c.remote_address()));
        if relayed && old.is_some() && !old_relayed {
            (false, None)
        } else {
            conns.insert(peer, conn.clone());
            (true, old.filter(|_| old_relayed && !relayed))
        }
    };
    if let Some(old) = displaced {
        crate::relay::retire(inner, old);
    }
    if !current {
        crate::relay::retire(inner, conn.clone());
    } else if relayed {
        inner.tasks.spawn(crate::relay::upgrade(inner.clone(), peer, inner.addr_of(peer)));
    }
    let span = tracing::info_span!("conn", peer = %peer.short(), remote = %conn.remote_address());
    let actor_inner = inner.clone();
    inner.tasks.spawn(run_actor(actor_inner, peer, conn.clone()).instrument(span.clone()));
    span.in_scope(|| crate::nat::send_observed(inner, peer, &conn));
    conn
}

/// Why a stream handler closes the connection.
struct Fault {
    code: VarInt,
    why: String,
}

impl From<FrameError> for Option<Fault> {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Wire(shoal_core::wire::WireError::TooLarge { .. }) => {
                Some(Fault { code: codes::PROTOCOL, why: e.to_string() })
            }
            e if e.is_protocol_violation() => Some(Fault { code: codes::PROTOCOL, why: e.to_string() }),
            // Transport trouble on one stream is not the peer's fault.
            _ => None,
        }
    }
}

fn unexpected(what: &str) -> Option<Fault> {
    Some(Fault { code: codes::UNEXPECTED, why: format!("unexpected {what}") })
}

/// The actor: accepts the peer's streams until the connection ends or the node stops.
async fn run_actor(inner: Arc<Inner>, peer: PeerId, conn: Connection) {
    debug!("connection up");
    inner.counters.conn_up(&conn);
    let bucket = Arc::new(Bucket::new(inner.limits.inbound_bytes_per_sec, inner.limits.inbound_burst));
    let mut streams: JoinSet<Option<Fault>> = JoinSet::new();
    let cancelled = loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => break true,
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    streams.spawn(handle_uni(inner.clone(), peer, conn.clone(), bucket.clone(), recv));
                }
                Err(e) => { debug!("connection closed: {e}"); break false; }
            },
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    streams.spawn(handle_bi(inner.clone(), peer, conn.clone(), bucket.clone(), send, recv));
                }
                Err(e) => { debug!("connection closed: {e}"); break false; }
            },
            Some(done) = streams.join_next(), if !streams.is_empty() => {
                if let Ok(Some(fault)) = done {
                    warn!(peer = %peer, code = %fault.code, "closing connection: {}", fault.why);
                    conn.close(fault.code, fault.why.as_bytes());
                    break false;
                }
            }
        }
    };
    streams.abort_all();
    inner.counters.conn_down(&conn);
    let was_current = {
        let mut conns = inner.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match conns.get(&peer) {
            Some(c) if c.stable_id() == conn.stable_id() => {
                conns.remove(&peer);
                true
            }
            _ => false,
        }
    };
    inner.drop_lane(peer, conn.stable_id());
    if !cancelled && was_current {
        let _ = inner.driver.try_send(DriverCmd::ConnLost(peer));
    }
}

/// Serves one unidirectional stream: a sequence of frames (one for membership messages, any
/// number on a peer's application lane, see [`Inner::send_app`]) until it ends.
async fn handle_uni(
    inner: Arc<Inner>,
    peer: PeerId,
    conn: Connection,
    bucket: Arc<Bucket>,
    mut recv: RecvStream,
) -> Option<Fault> {
    loop {
        let msg = match read_next_frame(&mut recv, inner.limits.max_frame, Some(&bucket)).await {
            Ok(Some((m, _))) => m,
            Ok(None) => return None,
            Err(e) => return e.into(),
        };
        match msg {
            Message::Membership(m) => {
                let addr = shoal_core::nat::canonical(conn.remote_address());
                let cmd = DriverCmd::Msg { from: peer, addr, msg: m };
                let _ = inner.driver.send(cmd).await;
            }
            Message::Hello(_) => return unexpected("Hello"),
            Message::Net(NetMsg::RelayOut) => {
                crate::relay::serve_stream(inner, peer, crate::relay::Way::ToRelay, recv).await;
                return None;
            }
            Message::Net(NetMsg::RelayIn) => {
                crate::relay::serve_stream(inner, peer, crate::relay::Way::FromRelay, recv).await;
                return None;
            }
            Message::Net(m) => crate::nat::on_one_way(&inner, peer, &conn, m),
            Message::BlobRequest(_) | Message::BlobResponse(_) => {
                return unexpected("blob message on a one-way stream");
            }
            other => {
                if matches!(other, Message::Sched(_)) {
                    inner.counters.sched_received();
                }
                if inner.inbox.send(Inbound { from: peer, message: other, reply: None }).await.is_err() {
                    return None; // The node is stopping.
                }
            }
        }
    }
}

async fn handle_bi(
    inner: Arc<Inner>,
    peer: PeerId,
    conn: Connection,
    bucket: Arc<Bucket>,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Option<Fault> {
    let (msg, _) = match read_frame_limited(&mut recv, inner.limits.max_frame, Some(&bucket)).await {
        Ok(m) => m,
        Err(e) => return e.into(),
    };
    match msg {
        Message::BlobRequest(req) => {
            if let Err(e) = serve_blob(&inner, &mut send, req).await {
                debug!(peer = %peer, "blob serve failed: {e}");
            }
            None
        }
        Message::Hello(_) => unexpected("Hello"),
        Message::Net(m) => match crate::nat::on_request(&inner, peer, &conn, m).await {
            crate::nat::Answer::Reply(reply) => {
                if write_frame(&mut send, &Message::Net(reply), inner.limits.max_frame).await.is_ok() {
                    let _ = send.finish();
                }
                None
            }
            crate::nat::Answer::Silence => {
                let _ = send.reset(codes::NORMAL);
                None
            }
            crate::nat::Answer::NotARequest => unexpected("one-way network message on a request stream"),
        },
        Message::Membership(_) => unexpected("membership message on a request stream"),
        Message::BlobResponse(_) => unexpected("BlobResponse as a request"),
        other => {
            let (tx, rx) = oneshot::channel();
            let inbound = Inbound { from: peer, message: other, reply: Some(Replier { tx }) };
            if inner.inbox.send(inbound).await.is_err() {
                return None;
            }
            match tokio::time::timeout(inner.limits.request_timeout, rx).await {
                Ok(Ok(reply)) => {
                    if write_frame(&mut send, &reply, inner.limits.max_frame).await.is_ok() {
                        let _ = send.finish();
                    }
                }
                // No reply: reset so the requester fails fast instead of timing out.
                _ => {
                    let _ = send.reset(codes::NORMAL);
                }
            }
            None
        }
    }
}

const CHUNK: usize = 256 * 1024;

async fn serve_blob(inner: &Inner, send: &mut SendStream, req: BlobRequest) -> Result<(), FrameError> {
    let found = inner.blobs.open_blob(&req.hash).ok().flatten();
    let limit = req.max_size.min(inner.limits.max_blob_size);
    let Some((mut file, size)) = found.filter(|(_, size)| *size <= limit) else {
        let header = Message::BlobResponse(BlobResponse { hash: req.hash, size: None });
        write_frame(send, &header, inner.limits.max_frame).await?;
        send.finish()?;
        return Ok(());
    };
    let header = Message::BlobResponse(BlobResponse { hash: req.hash, size: Some(size) });
    write_frame(send, &header, inner.limits.max_frame).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        send.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    send.finish()?;
    Ok(())
}

/// Why fetching a blob from one holder failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchFromError {
    /// Could not reach the holder.
    #[error(transparent)]
    Connect(#[from] crate::node::NodeError),
    /// The stream failed or the header was malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The holder does not have the blob (or it exceeds our cap).
    #[error("holder does not have the blob")]
    NotFound,
    /// The header was for another blob, or announced too many bytes.
    #[error("bad blob header")]
    BadHeader,
    /// The stream ended early or carried more bytes than announced.
    #[error("blob transfer had the wrong length")]
    WrongLength,
    /// Store failure or hash mismatch.
    #[error(transparent)]
    Store(#[from] crate::blobs::BlobError),
    /// The transfer stalled.
    #[error("blob transfer timed out")]
    Timeout,
}

/// Fetches `hash` from `holder` into the store, streaming and verifying it.
pub(crate) async fn fetch_from(
    inner: &Arc<Inner>,
    holder: PeerId,
    hash: shoal_core::ids::BlobHash,
) -> Result<u64, FetchFromError> {
    let conn = inner.connection_to(holder).await?;
    let t = inner.limits.request_timeout;
    let max = inner.limits.max_blob_size.min(inner.blobs.budget());
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| FrameError::Read(e.into()))?;
    let req = Message::BlobRequest(BlobRequest { hash, max_size: max });
    write_frame(&mut send, &req, inner.limits.max_frame).await?;
    send.finish().map_err(FrameError::from)?;
    let (header, _) = tokio::time::timeout(t, read_frame(&mut recv, inner.limits.max_frame))
        .await
        .map_err(|_| FetchFromError::Timeout)??;
    let size = match header {
        Message::BlobResponse(BlobResponse { hash: h, size: Some(s) }) if h == hash && s <= max => s,
        Message::BlobResponse(BlobResponse { hash: h, size: None }) if h == hash => {
            return Err(FetchFromError::NotFound);
        }
        _ => return Err(FetchFromError::BadHeader),
    };
    let mut writer = inner.blobs.writer(Some(hash))?;
    // Network chunks are packet-sized; batch them so the file and the hasher see large writes.
    let mut batch: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut received = 0u64;
    loop {
        let chunk = tokio::time::timeout(t, recv.read_chunk(CHUNK, true))
            .await
            .map_err(|_| FetchFromError::Timeout)?
            .map_err(FrameError::from)?;
        let Some(c) = chunk else { break };
        received += c.bytes.len() as u64;
        if received > size {
            return Err(FetchFromError::WrongLength);
        }
        batch.extend_from_slice(&c.bytes);
        if batch.len() >= CHUNK {
            writer.write(&batch)?;
            batch.clear();
        }
    }
    writer.write(&batch)?;
    if writer.len() != size {
        return Err(FetchFromError::WrongLength);
    }
    writer.commit()?;
    inner.counters.fetched(size);
    Ok(size)
}

/// How long a graceful close waits for the peer to acknowledge a message.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(1);
