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
    Relays(std_mpsc::Sender<Vec<PeerId>>),
    PutBlob(Vec<u8>, std_mpsc::Sender<shoal_net::BlobHash>),
    Fetch(shoal_net::BlobHash, PeerId, std_mpsc::Sender<Result<u64, String>>),
    /// Shut the node down (its thread then ends).
    Stop,
}

/// A peer's thread, as the test thread sees it.
type PeerHandle = (PeerId, tokio::sync::mpsc::UnboundedSender<Cmd>);

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
    relay: RelayConfig,
    ready: std_mpsc::Sender<Result<PeerHandle, String>>,
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
            cfg.relay = relay;
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
                    Cmd::Relays(reply) => {
                        let _ = reply.send(node.relays());
                    }
                    Cmd::PutBlob(bytes, reply) => {
                        let _ = reply.send(node.blobs().put(&bytes).map_err(|e| e.to_string())?);
                    }
                    Cmd::Fetch(hash, from, reply) => {
                        let _ = reply.send(node.fetch_blob(hash, &[from]).await.map_err(|e| e.to_string()));
                    }
                    Cmd::Stop => break,
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

/// Sends a command made with a reply channel to a peer's thread and waits for the reply.
fn call<T>(tx: &tokio::sync::mpsc::UnboundedSender<Cmd>, cmd: impl FnOnce(std_mpsc::Sender<T>) -> Cmd) -> T {
    let (rtx, rrx) = std_mpsc::channel();
    tx.send(cmd(rtx)).expect("peer thread gone");
    rrx.recv_timeout(Duration::from_secs(60)).expect("peer thread hung")
}

fn reach(tx: &tokio::sync::mpsc::UnboundedSender<Cmd>) -> Reachability {
    call(tx, Cmd::Reach)
}

/// Starts one peer per machine on its own thread; `setup(i)` gives its bootstrap list and
/// relay settings.
fn start_all(
    machines: &[netns::LabMachine],
    setup: impl Fn(usize) -> (Vec<SocketAddr>, RelayConfig),
) -> (Vec<PeerHandle>, Vec<std::thread::JoinHandle<()>>) {
    let mut peers = Vec::new();
    let mut threads = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (bootstrap, relay) = setup(i);
        let (ns, listen) = (m.ns.clone(), SocketAddr::from((m.addr, PORT)));
        threads.push(std::thread::spawn(move || run_peer(ns, listen, bootstrap, relay, ready_tx)));
        peers.push(ready_rx.recv_timeout(Duration::from_secs(30)).expect("peer did not start").unwrap());
    }
    (peers, threads)
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
    // The two public bootstrap peers offer to relay.
    let (peers, threads) = start_all(&machines, |i| {
        let bootstrap = match i {
            0 => vec![],
            1 => vec![publics[0]],
            _ => publics.clone(),
        };
        (bootstrap, RelayConfig { enabled: i < 2, ..RelayConfig::default() })
    });

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
    let relayed: u64 = peers[..2].iter().map(|(_, tx)| call(tx, Cmd::Stats).relay_bytes_forwarded).sum();
    println!("bytes forwarded by the two relays: {relayed}");
    assert!(relayed > 0, "the relayed pairs went through the relays");
    drop(peers);
    for t in threads {
        t.join().expect("peer thread panicked");
    }
    drop(guard);
}

/// Three public relays with a 256 KiB cap per circuit, two peers behind home NATs and one behind
/// a symmetric NAT. A blob bigger than the cap does not get through a relay (the relay refuses
/// what is over, and counts it); the symmetric peer replaces a relay that goes away, and a fresh
/// peer still reaches it through a relay.
#[test]
fn a_relay_enforces_its_caps_and_a_peer_replaces_a_relay_that_goes_away() {
    if let Some(why) = netns::unavailable().or_else(netns::nft_unavailable) {
        println!("skipped: {why}");
        return;
    }
    let nats = [Nat::None, Nat::None, Nat::None, Nat::Home, Nat::Home, Nat::Symmetric];
    let tag = format!("{:x}", std::process::id() % 0xfffff);
    let subnet = 110 + (std::process::id() % 30) as u8;
    let (guard, machines) =
        netns::nat_lab("nr", &tag, subnet, &nats, PORT).expect("could not build the NAT lab");
    let publics: Vec<SocketAddr> = machines[..3].iter().map(|m| SocketAddr::from((m.addr, PORT))).collect();
    let caps = RelayConfig { enabled: true, circuit_bytes: 256 << 10, ..RelayConfig::default() };
    let (peers, threads) = start_all(&machines, |i| {
        let bootstrap = if i == 0 { vec![] } else { vec![publics[0]] };
        let bootstrap = if i < 3 { bootstrap } else { publics.clone() };
        (bootstrap, if i < 3 { caps.clone() } else { RelayConfig::default() })
    });
    let (home, home2, sym) = (&peers[3], &peers[4], &peers[5]);
    let relays_of = |p: &PeerHandle| call(&p.1, Cmd::Relays);
    let deadline = Instant::now() + Duration::from_secs(40);
    while relays_of(sym).len() < 2 {
        assert!(Instant::now() < deadline, "the symmetric peer got two relays: {:?}", relays_of(sym));
        std::thread::sleep(Duration::from_millis(200));
    }
    let sym_addr = reach(&sym.1).observed[0];

    // A relayed path carries small messages...
    let pinged = call(&home.1, |r| Cmd::Ping(sym.0, sym_addr, r));
    assert!(pinged.result.is_ok(), "{:?}", pinged.result);
    let Some(Path::Relayed(relay)) = pinged.path else { panic!("home -> symmetric is relayed") };
    println!("home -> symmetric relayed by {}", relay.short());
    // ...but not a blob over the circuit's cap.
    let blob: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let hash = call(&sym.1, |r| Cmd::PutBlob(blob, r));
    let fetched = call(&home.1, |r| Cmd::Fetch(hash, sym.0, r));
    assert!(fetched.is_err(), "a 1 MiB blob went through a 256 KiB circuit: {fetched:?}");
    let by_relay = peers.iter().position(|p| p.0 == relay).expect("the relay is one of ours");
    let refused = call(&peers[by_relay].1, Cmd::Stats).relay_refused;
    println!("over the cap: fetch failed ({}), the relay refused {refused} datagrams", fetched.unwrap_err());
    assert!(refused > 0, "the relay counted what it refused");

    // One of the symmetric peer's relays goes away: it reserves at the third.
    let before = relays_of(sym);
    let gone = before[0];
    let gone_at = peers.iter().position(|p| p.0 == gone).expect("a relay of ours");
    peers[gone_at].1.send(Cmd::Stop).expect("relay thread gone");
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(40);
    loop {
        let now = relays_of(sym);
        if now.len() == 2 && !now.contains(&gone) {
            println!(
                "in {:?}, relays {:?} -> {:?}",
                stopped.elapsed(),
                before.iter().map(|p| p.short()).collect::<Vec<_>>(),
                now.iter().map(|p| p.short()).collect::<Vec<_>>()
            );
            break;
        }
        assert!(Instant::now() < deadline, "the symmetric peer replaced its lost relay: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A peer that never talked to it still reaches it, through a relay that is up.
    let pinged = call(&home2.1, |r| Cmd::Ping(sym.0, sym_addr, r));
    assert!(pinged.result.is_ok(), "{:?}", pinged.result);
    match pinged.path {
        Some(Path::Relayed(r)) => assert_ne!(r, gone, "not through the relay that went away"),
        other => panic!("home -> symmetric is relayed, not {other:?}"),
    }
    drop(peers);
    for t in threads {
        t.join().expect("peer thread panicked");
    }
    drop(guard);
}
