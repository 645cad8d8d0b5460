//! The NAT matrix: peers behind emulated routers (no NAT, full cone, home, symmetric; see
//! [`netns::nat_lab`]) with two public peers, each peer a real node on its own thread inside its
//! own namespace. Checks what each peer learns of its reachability, then has every pair of NATed
//! peers talk, and reports whether and how fast a direct path came up (`docs/nat.md`).

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use shoal_core::membership;
use shoal_core::wire::Message;
use shoal_net::{NatKind, Node, NodeConfig, Path, PeerId, Reachability, RelayConfig};
use shoal_tests::netns::{self, Nat};

use super::echo;

const PORT: u16 = 7600;

/// What the test thread asks a peer's thread to do (on the peer's own runtime, so every socket
/// it opens lives in its namespace).
enum Cmd {
    Reach(std_mpsc::Sender<Reachability>),
    Ping(PeerId, SocketAddr, std_mpsc::Sender<Pinged>),
    Stats(std_mpsc::Sender<shoal_net::NetStats>),
}

/// The outcome of one [`Cmd::Ping`].
struct Pinged {
    result: Result<(), String>,
    took: Duration,
    connected_before: bool,
    path: Option<Path>,
}

/// Membership that leaves peers alone: joins at once, then no shuffles or probes during the
/// test, so every contact between NATed peers is the test's own.
fn quiet_membership() -> membership::Config {
    membership::Config {
        shuffle_interval: Duration::from_secs(600),
        probe_interval: Duration::from_secs(600),
        join_retry: Duration::from_millis(500),
        ..membership::Config::default()
    }
}

fn run_peer(
    ns: String,
    listen: SocketAddr,
    bootstrap: Vec<SocketAddr>,
    relay: bool,
    ready: std_mpsc::Sender<Result<(PeerId, tokio::sync::mpsc::UnboundedSender<Cmd>), String>>,
) {
    let failed = ready.clone();
    let run = move || -> Result<(), String> {
        shoal_tests::netns::enter(&ns)?;
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let mut cfg = NodeConfig::new(dir.path());
            cfg.listen = listen;
            cfg.bootstrap = bootstrap;
            cfg.membership = quiet_membership();
            cfg.relay = RelayConfig { enabled: relay, ..RelayConfig::default() };
            let (node, inbox) = Node::start(cfg).await.map_err(|e| e.to_string())?;
            tokio::spawn(echo(inbox));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            ready.send(Ok((node.peer_id(), tx))).map_err(|e| e.to_string())?;
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Cmd::Reach(reply) => {
                        let _ = reply.send(node.reachability());
                    }
                    Cmd::Ping(peer, addr, reply) => {
                        let connected_before = node.rtt_of(peer).is_some();
                        node.add_address(peer, addr);
                        let started = Instant::now();
                        let result = ping(&node, peer).await;
                        let took = started.elapsed();
                        let path = node.path_of(peer);
                        let _ = reply.send(Pinged { result, took, connected_before, path });
                    }
                    Cmd::Stats(reply) => {
                        let _ = reply.send(node.stats());
                    }
                }
            }
            node.shutdown().await;
            Ok(())
        })
    };
    if let Err(e) = run() {
        let _ = failed.send(Err(e));
    }
}

async fn ping(node: &Node, peer: PeerId) -> Result<(), String> {
    match node.request(peer, &Message::Ping(7)).await {
        Ok(Message::Pong(7)) => Ok(()),
        Ok(other) => Err(format!("bad answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn reach(tx: &tokio::sync::mpsc::UnboundedSender<Cmd>) -> Reachability {
    let (rtx, rrx) = std_mpsc::channel();
    tx.send(Cmd::Reach(rtx)).expect("peer thread gone");
    rrx.recv_timeout(Duration::from_secs(10)).expect("peer thread hung")
}

/// Two public peers (which offer to relay), and two peers behind each kind of router. Every
/// peer classifies its own router right; every pair connects: directly (hole punched where a
/// NAT filters) unless a symmetric NAT faces one that filters by port, and through a relay then.
#[test]
fn peers_behind_every_kind_of_nat_reach_each_other() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    if let Some(why) = netns::unavailable().or_else(netns::nft_unavailable) {
        println!("skipped: {why}");
        return;
    }
    use Nat::{FullCone, Home, Symmetric};
    // Two public bootstrap peers, then two peers behind each kind of router (one with none).
    let nats = [Nat::None, Nat::None, Nat::None, FullCone, FullCone, Home, Home, Symmetric, Symmetric];
    let tag = format!("{:x}", std::process::id() % 0xfffff);
    let subnet = 150 + (std::process::id() % 40) as u8;
    let (guard, machines) =
        netns::nat_lab("nt", &tag, subnet, &nats, PORT).expect("could not build the NAT lab");
    let publics: Vec<SocketAddr> = machines[..2].iter().map(|m| SocketAddr::from((m.addr, PORT))).collect();
    let mut peers = Vec::new();
    let mut threads = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let bootstrap = match i {
            0 => vec![],
            1 => vec![publics[0]],
            _ => publics.clone(),
        };
        let (ns, listen) = (m.ns.clone(), SocketAddr::from((m.addr, PORT)));
        // The two bootstrap peers offer to relay.
        threads.push(std::thread::spawn(move || run_peer(ns, listen, bootstrap, i < 2, ready_tx)));
        let (id, tx) = ready_rx.recv_timeout(Duration::from_secs(30)).expect("peer did not start").unwrap();
        peers.push((id, tx));
    }

    // Wait until each peer has heard from both public peers and had its dial-backs answered.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut kinds = vec![NatKind::Unknown; nats.len()];
    let mut observed = vec![Vec::new(); nats.len()];
    loop {
        let mut settled = true;
        for (i, (_, tx)) in peers.iter().enumerate() {
            let r = reach(tx);
            kinds[i] = r.kind;
            observed[i].clone_from(&r.observed);
            settled &= r.kind != NatKind::Unknown && r.dial_backs >= 2;
        }
        if settled || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("reachability:");
    for (i, m) in machines.iter().enumerate() {
        println!(
            "  peer {i} behind {:<9} at {}: {} (observed {:?})",
            m.nat.name(),
            m.addr,
            kinds[i],
            observed[i]
        );
    }
    let expected = |nat: Nat| match nat {
        Nat::None | Nat::FullCone => NatKind::Public,
        Nat::Home => NatKind::Cone,
        Nat::Symmetric => NatKind::Symmetric,
    };
    for (i, m) in machines.iter().enumerate() {
        assert_eq!(kinds[i], expected(m.nat), "peer {i} behind {} classified wrong", m.nat.name());
    }

    // Every pair of non-bootstrap peers, one dial each, at the address the public peers see.
    let mut rows = Vec::new();
    let mut times = Vec::new();
    for i in 2..machines.len() {
        // One dial per pair, from the more reachable side (the harder dial is the punch's job).
        for j in i + 1..machines.len() {
            let (target, _) = &peers[j];
            let addr = observed[j].first().copied().expect("peer has an observed address");
            let (rtx, rrx) = std_mpsc::channel();
            peers[i].1.send(Cmd::Ping(*target, addr, rtx)).expect("peer thread gone");
            let p = rrx.recv_timeout(Duration::from_secs(60)).expect("ping hung");
            let (a, b) = (machines[i].nat, machines[j].nat);
            let how = match (&p.result, p.path) {
                (Err(_), _) => "NOT CONNECTED".to_string(),
                (Ok(()), Some(Path::Direct(_))) => "direct".to_string(),
                (Ok(()), Some(Path::Relayed(r))) => format!("relayed by {}", r.short()),
                (Ok(()), None) => "connected, then lost".to_string(),
            };
            let before = if p.connected_before { " (was already connected)" } else { "" };
            println!("  {:<9} -> {:<9}: {how} in {:?}{before}", a.name(), b.name(), p.took);
            if let Err(e) = &p.result {
                println!("      ({e})");
            }
            let direct = matches!(p.path, Some(Path::Direct(_)));
            if p.result.is_ok() && direct && !p.connected_before {
                times.push(p.took);
            }
            rows.push((a, b, p.result.is_ok(), direct));
        }
    }
    times.sort();
    if let (Some(p50), Some(max)) = (times.get(times.len() / 2), times.last()) {
        println!("time to a direct path over {} pairs: p50 {p50:?}, max {max:?}", times.len());
    }
    for (a, b, ok, direct) in rows {
        assert!(ok, "{} -> {} did not connect", a.name(), b.name());
        // A symmetric NAT facing anything that filters by port needs a relay; all else punches.
        let needs_relay = matches!((a, b), (Home, Symmetric) | (Symmetric, Home | Symmetric));
        assert_eq!(!direct, needs_relay, "{} -> {}: direct {direct}", a.name(), b.name());
    }
    let relayed: u64 = peers[..2]
        .iter()
        .map(|(_, tx)| {
            let (rtx, rrx) = std_mpsc::channel();
            tx.send(Cmd::Stats(rtx)).expect("peer thread gone");
            rrx.recv_timeout(Duration::from_secs(10)).expect("peer thread hung").relay_bytes_forwarded
        })
        .sum();
    println!("bytes forwarded by the two relays: {relayed}");
    assert!(relayed > 0, "the relayed pairs went through the relays");
    drop(peers);
    for t in threads {
        t.join().expect("peer thread panicked");
    }
    drop(guard);
}
