//! Real peers of `shoal-net` across machines and bad networks: in separate Linux network
//! namespaces (when root), finding each other on a LAN over mDNS (`net/discovery.rs`), and through
//! injected faults on real sockets: delay, loss and partitions from [`shoal_tests::relay`], rate
//! limits from `tc tbf` (`net/faults.rs`). Loopback-only protocol tests stay in `net/tests/net.rs`.
//!
//! Timing never decides a test: conditions are awaited with generous "eventually" bounds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::membership;
use shoal_core::wire::Message;
use shoal_net::{BlobHash, Event, Identity, Inbox, Node, NodeConfig, PeerId, RemoveReason, SwarmSecret};
use shoal_tests::netns;
use tempfile::TempDir;

mod discovery;
mod faults;
mod nat;

const EVENTUALLY: Duration = Duration::from_secs(60);

fn fast_membership() -> membership::Config {
    membership::Config {
        shuffle_interval: Duration::from_millis(300),
        probe_interval: Duration::from_millis(300),
        probe_timeout: Duration::from_millis(1000),
        join_retry: Duration::from_millis(500),
        ..membership::Config::default()
    }
}

struct Peer {
    node: Node,
    _dir: TempDir,
}

/// Starts a node whose inbox answers `Ping` requests with `Pong` and drops the rest.
async fn start(bootstrap: &[SocketAddr], secret: Option<&[u8]>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(dir.path());
    cfg.bootstrap = bootstrap.to_vec();
    cfg.swarm_secret = secret.map(SwarmSecret::new);
    cfg.membership = fast_membership();
    let (node, inbox) = Node::start(cfg).await.unwrap();
    tokio::spawn(echo(inbox));
    Peer { node, _dir: dir }
}

async fn echo(mut inbox: Inbox) {
    while let Some(m) = inbox.recv().await {
        if let (Message::Ping(n), Some(reply)) = (&m.message, m.reply) {
            let _ = reply.send(Message::Pong(*n));
        }
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "not within {EVENTUALLY:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three peers, each in its own network namespace with its own address, joined by veth pairs
/// to a bridge in a fourth namespace and losing 10% of inbound packets (nftables `numgen`),
/// form a swarm and answer each other's requests.
#[test]
fn peers_in_separate_network_namespaces_form_a_swarm() {
    if let Some(why) = netns::unavailable() {
        println!("skipped: {why}");
        return;
    }
    const N: usize = 3;
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Short unique names (interface names are limited to 15 bytes).
    let tag = format!(
        "{:x}{}",
        std::process::id() % 0xfffff,
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    // A /24 from the private range, private to these namespaces (no traffic leaves them).
    let subnet = 200 + (std::process::id() % 50) as u8;
    let (guard, machines) = match netns::bridged("sh", &tag, N, subnet) {
        Ok(built) => built,
        Err(e) => {
            println!("skipped: could not build the namespaces: {e}");
            return;
        }
    };
    let peers: Vec<String> = machines.iter().map(|(ns, _)| ns.clone()).collect();
    let addrs: Vec<SocketAddr> = machines.iter().map(|&(_, a)| SocketAddr::from((a, 7600))).collect();
    // 10% inbound packet loss on every peer, from nftables, when it is installed.
    match peers.iter().try_for_each(|ns| netns::drop_inbound_udp(ns, 10, Some(7600))) {
        Ok(()) => println!("namespaces up, 10% inbound loss on each peer (nftables)"),
        Err(e) => println!("namespaces up, no packet loss ({e})"),
    }

    // One thread per peer; each enters its namespace before creating any socket.
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut threads = Vec::new();
    let barrier = Arc::new(std::sync::Barrier::new(N));
    for (i, ns) in peers.iter().enumerate() {
        let (tx, ns, listen, boot) = (tx.clone(), ns.clone(), addrs[i], addrs[0]);
        let all: Vec<SocketAddr> = addrs.clone();
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || {
            let run = || -> Result<(), String> {
                shoal_tests::netns::enter(&ns)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let tx = tx.clone();
                rt.block_on(async move {
                    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                    let mut cfg = NodeConfig::new(dir.path());
                    cfg.listen = listen;
                    cfg.bootstrap = if i == 0 { vec![] } else { vec![boot] };
                    cfg.membership = fast_membership();
                    let (node, inbox) = Node::start(cfg).await.map_err(|e| e.to_string())?;
                    tokio::spawn(echo(inbox));
                    let deadline = tokio::time::Instant::now() + EVENTUALLY;
                    // Wait until the view holds every other peer, at its namespace address.
                    loop {
                        let view = node.view();
                        let seen: BTreeSet<SocketAddr> = view.iter().map(|e| e.addr).collect();
                        if all.iter().filter(|a| **a != listen).all(|a| seen.contains(a)) {
                            // With 10% loss on a loaded machine a handshake can time out (5 s):
                            // a peer asks again, as the node's own users do, until the deadline.
                            for e in &view {
                                loop {
                                    match node.request(e.id, &Message::Ping(9)).await {
                                        Ok(Message::Pong(9)) => break,
                                        Ok(other) => return Err(format!("bad pong {other:?}")),
                                        Err(err) if tokio::time::Instant::now() < deadline => {
                                            println!("peer {i}: ping to {} failed, again: {err}", e.id);
                                            tokio::time::sleep(Duration::from_millis(200)).await;
                                        }
                                        Err(err) => return Err(err.to_string()),
                                    }
                                }
                            }
                            break;
                        }
                        if tokio::time::Instant::now() > deadline {
                            return Err(format!("peer {i} view incomplete: {view:?}"));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    // Stay up until every peer has checked (others may still be asking us).
                    tx.send(Ok(())).map_err(|e| e.to_string())?;
                    let _ = tokio::task::spawn_blocking(move || barrier.wait()).await;
                    node.shutdown().await;
                    Ok(())
                })
            };
            if let Err(e) = run() {
                let _ = tx.send(Err(e));
            }
        }));
    }
    drop(tx);
    for _ in 0..N {
        let r = rx.recv_timeout(EVENTUALLY * 2).expect("a namespace peer hung");
        r.expect("namespace peer failed");
    }
    for t in threads {
        t.join().expect("namespace thread panicked");
    }
    drop(guard);
}
