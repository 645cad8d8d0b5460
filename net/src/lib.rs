//! Shoal's network layer: who a peer is, how peers talk, and how blobs move.
//!
//! # Concepts
//!
//! - **Identity.** Each peer has an ed25519 key in its data directory (`identity.key`, mode
//!   0600, created on first start). Its [`PeerId`] *is* the public key; the text form is 52
//!   base32 characters.
//! - **Connections.** QUIC (quinn) with TLS 1.3. Both sides present a self-signed certificate
//!   whose key is their peer key; the custom verifiers in [`tls`] accept a certificate only if
//!   its key is an ed25519 key (and, when dialling a known peer, the expected one). ALPN is
//!   `shoal/1`. Anything else is refused during the handshake.
//! - **Hello and swarm secret.** The first stream of a connection carries one `Hello` each way:
//!   protocol versions, and — in a private swarm — a MAC proving knowledge of the swarm secret
//!   over keying material exported from this TLS session (so it cannot be replayed). Nothing
//!   else is exchanged before both `Hello`s check out.
//! - **Messages.** [`shoal_core::wire::Message`] values in length-prefixed rkyv frames. One-way
//!   messages go on unidirectional streams: application messages ([`Node::send`]) back to back on
//!   one long-lived stream per peer (in order, several per packet), membership messages one per
//!   stream. Requests and responses take a bidirectional stream each. Frames are size-checked
//!   before allocation and decoded through validated access; a malformed one closes the
//!   connection with a code from [`codes`].
//! - **Membership.** The sans-IO [`shoal_core::membership::Membership`] runs inside the node,
//!   driven by real connections and timers; the node exposes its view, load hints and events.
//! - **Discovery.** Optionally (`NodeConfig::mdns`), peers on one LAN find each other over mDNS
//!   and join as through a bootstrap address; an announcement is only a hint, checked by the
//!   handshake like any dial (see `docs/membership.md`).
//! - **Reachability.** Peers tell each other the addresses they observe, learn their NAT kind
//!   from that and from dial-backs, punch holes through a mediator both sides know, and fall
//!   back to relays (any reachable peer with [`RelayConfig::enabled`]) whose datagrams run
//!   inside the endpoint's own socket as virtual addresses; see `docs/nat.md`.
//! - **Blobs.** Content-addressed (blake3) files in a [`BlobStore`] with a byte budget; fetched
//!   from holders over QUIC streams, streamed to disk, size-capped and verified before they
//!   become visible; a bad holder is skipped for the next one.
//!
//! This crate is not the scheduler: it moves messages and bytes, and the worker decides what
//! they mean.
//!
//! # Using a node
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_core::membership::LoadHint;
//! use shoal_core::wire::Message;
//! use shoal_net::{Node, NodeConfig};
//!
//! let mut cfg = NodeConfig::new("/var/lib/shoal");
//! cfg.listen = "0.0.0.0:7600".parse()?;
//! cfg.bootstrap = vec!["192.0.2.10:7600".parse()?];
//! let (node, mut inbox) = Node::start(cfg).await?;
//! println!("I am {} on {}", node.peer_id(), node.local_addr());
//!
//! node.set_load_hints(LoadHint { free_slots: 2, ready_tasks: 0, slots: 2, ready_fuel: 0 }).await;
//! for entry in node.view() {
//!     let pong = node.request(entry.id, &Message::Ping(1)).await?;
//!     println!("{} has {:?}, answered {pong:?}", entry.id.short(), entry.hints);
//! }
//! while let Some(msg) = inbox.recv().await {
//!     if let (Message::Ping(n), Some(reply)) = (&msg.message, msg.reply) {
//!         reply.send(Message::Pong(*n))?;
//!     }
//! }
//! node.leave().await;
//! # Ok(()) }
//! ```

pub mod blobs;
pub mod codes;
mod conn;
mod discovery;
pub mod frame;
pub mod identity;
pub mod limits;
mod nat;
mod node;
mod relay;
mod stats;
pub mod tls;
mod tunnel;

pub use blobs::{BlobError, BlobStore, BlobWriter};
pub use conn::{FetchFromError, HandshakeError};
pub use discovery::DiscoveryError;
pub use identity::Identity;
pub use limits::Limits;
pub use nat::Reachability;
pub use node::{
    Bootstrap, FetchError, Inbound, Inbox, Node, NodeConfig, NodeError, Replier, quinn_client_config,
};
pub use relay::{Path, RelayConfig};
pub use shoal_core::ids::{BlobHash, PeerId};
pub use shoal_core::membership::{Entry, Event, LoadHint, RemoveReason};
pub use shoal_core::nat::NatKind;
pub use stats::NetStats;
pub use tls::SwarmSecret;
