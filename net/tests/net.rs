//! Real peers on loopback: overlay formation, failure detection, graceful leave, messaging, blobs,
//! and every refusal the protocol promises, each while the attacked peer keeps serving an honest
//! one. Peers in network namespaces, LAN discovery and injected faults are tested across crates,
//! in `tests/e2e/net.rs` (package `shoal-tests`).
//!
//! Timing never decides a test: conditions are awaited with generous "eventually" bounds.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed unwrap is a failed test")]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::membership::{self, Event, LoadHint, RemoveReason};
use shoal_core::wire::{self, Hello, Message};
use shoal_net::{
    BlobHash, Identity, Inbox, Node, NodeConfig, PeerId, SwarmSecret, codes, quinn_client_config, tls,
};
use tempfile::TempDir;

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
    let (node, inbox) = start_in(dir.path(), bootstrap, secret).await;
    tokio::spawn(echo(inbox));
    Peer { node, _dir: dir }
}

async fn start_in(dir: &std::path::Path, bootstrap: &[SocketAddr], secret: Option<&[u8]>) -> (Node, Inbox) {
    let mut cfg = NodeConfig::new(dir);
    cfg.bootstrap = bootstrap.to_vec();
    cfg.swarm_secret = secret.map(SwarmSecret::new);
    cfg.membership = fast_membership();
    Node::start(cfg).await.unwrap()
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

/// Every peer reaches every other along view edges.
fn connected(nodes: &[&Node]) -> bool {
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
    let views: Vec<Vec<PeerId>> = nodes.iter().map(|n| n.view().iter().map(|e| e.id).collect()).collect();
    (0..nodes.len()).all(|start| {
        let mut seen = BTreeSet::from([ids[start]]);
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for id in &views[i] {
                if let Some(j) = ids.iter().position(|x| x == id)
                    && seen.insert(*id)
                {
                    stack.push(j);
                }
            }
        }
        seen.len() == ids.len()
    })
}

async fn assert_serves(honest: &Node, target: &Node) {
    honest.add_address(target.peer_id(), target.local_addr());
    let pong = honest.request(target.peer_id(), &Message::Ping(77)).await.unwrap();
    assert_eq!(pong, Message::Pong(77));
}

async fn swarm(n: usize) -> Vec<Peer> {
    let first = start(&[], None).await;
    let boot = first.node.local_addr();
    let mut peers = vec![first];
    for _ in 1..n {
        peers.push(start(&[boot], None).await);
    }
    peers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_and_64_peers_form_one_overlay_from_one_bootstrap() {
    for n in [2, 64] {
        let peers = swarm(n).await;
        let nodes: Vec<&Node> = peers.iter().map(|p| &p.node).collect();
        let t = std::time::Instant::now();
        eventually(&format!("{n} peers connected"), || connected(&nodes)).await;
        println!("{n} peers connected after {:?}", t.elapsed());
        let mut stops = tokio::task::JoinSet::new();
        for p in peers {
            stops.spawn(async move { p.node.shutdown().await });
        }
        stops.join_all().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_requests_and_load_hints() {
    let peers = swarm(3).await;
    let (a, b) = (&peers[0].node, &peers[1].node);
    assert_serves(a, b).await;
    // A one-way message arrives with the authenticated sender.
    let dir = tempfile::tempdir().unwrap();
    let (c, mut inbox) = start_in(dir.path(), &[a.local_addr()], None).await;
    a.add_address(c.peer_id(), c.local_addr());
    a.send(c.peer_id(), &Message::Ping(5)).await.unwrap();
    let got = tokio::time::timeout(EVENTUALLY, inbox.recv()).await.unwrap().unwrap();
    assert_eq!((got.from, got.message, got.reply.is_none()), (a.peer_id(), Message::Ping(5), true));
    // One-way messages to one peer share one stream, so they arrive in the order sent.
    for n in 10..300 {
        a.send(c.peer_id(), &Message::Ping(n)).await.unwrap();
    }
    for n in 10..300 {
        let got = tokio::time::timeout(EVENTUALLY, inbox.recv()).await.unwrap().unwrap();
        assert_eq!(got.message, Message::Ping(n));
    }
    let stats = a.stats();
    assert!(stats.frames_sent > 0 && stats.frame_bytes_sent > stats.frames_sent, "{stats:?}");
    assert_eq!(stats.sched_sent, 0, "{stats:?}");
    // QUIC's round-trip estimate to a connected peer is there for the schedulers; none to a
    // peer never talked to.
    let rtt = a.rtt_of(c.peer_id()).expect("connected to c");
    assert!(rtt > Duration::ZERO && rtt < EVENTUALLY, "{rtt:?}");
    assert_eq!(a.rtt_of(PeerId([9; 32])), None);
    // Load hints set by the application (slots and queued fuel too) show up in others' views.
    let hints = LoadHint { free_slots: 4, ready_tasks: 9, slots: 6, ready_fuel: 9_000_000 };
    b.set_load_hints(hints).await;
    eventually("hints seen", || {
        peers.iter().any(|p| p.node.view().iter().any(|e| e.id == b.peer_id() && e.hints == hints))
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _inbox) = start_in(dir.path(), &[], None).await;
    let id = a.peer_id();
    a.shutdown().await;
    let (b, _inbox) = start_in(dir.path(), &[], None).await;
    assert_eq!(b.peer_id(), id);
    assert_eq!(b.peer_id().to_string().parse::<PeerId>().unwrap(), id);
    b.shutdown().await;
}

/// Runs a peer on its own runtime thread so the test can kill it abruptly (no leave, no close).
fn spawn_killable(
    boot: SocketAddr,
) -> (PeerId, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (id, kill, thread) = spawn_killable_in(dir.path().to_path_buf(), boot);
    (id, kill, thread, dir)
}

fn spawn_killable_in(
    dir: std::path::PathBuf,
    boot: SocketAddr,
) -> (PeerId, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (info_tx, info_rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (node, inbox) = rt.block_on(start_in(&dir, &[boot], None));
        rt.spawn(echo(inbox));
        info_tx.send(node.peer_id()).unwrap();
        // Keep driving the runtime until told to die; then drop it without any goodbye.
        rt.block_on(async {
            loop {
                if kill_rx.try_recv().is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        std::mem::forget(node);
        rt.shutdown_background();
    });
    (info_rx.recv().unwrap(), kill_tx, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_leaves_every_view_and_a_leaving_one_is_dropped_as_left() {
    let mut peers = swarm(8).await;
    let boot = peers[0].node.local_addr();
    let (victim, kill, thread, _victim_dir) = spawn_killable(boot);
    eventually("victim known", || {
        peers.iter().filter(|p| p.node.view().iter().any(|e| e.id == victim)).count() >= 2
    })
    .await;
    let nodes: Vec<&Node> = peers.iter().map(|p| &p.node).collect();
    eventually("connected", || connected(&nodes)).await;

    // Kill: every view drops it (bound: a few probe rounds; see docs/membership.md).
    kill.send(()).unwrap();
    thread.join().unwrap();
    let killed_at = std::time::Instant::now();
    eventually("killed peer gone from every view", || {
        peers.iter().all(|p| p.node.view().iter().all(|e| e.id != victim))
    })
    .await;
    // Informational (timing never decides the test): compare with the documented bound.
    println!(
        "killed peer gone from every view after {:?} (bound per holder: {:?})",
        killed_at.elapsed(),
        fast_membership().failure_detection_bound()
    );

    // Graceful leave: holders see `Removed(.., Left)`, not a failure.
    let leaver = peers.pop().unwrap();
    eventually("leaver known", || {
        peers.iter().any(|p| p.node.view().iter().any(|e| e.id == leaver.node.peer_id()))
    })
    .await;
    let mut subs: Vec<_> = peers.iter().map(|p| p.node.subscribe()).collect();
    let had: Vec<bool> =
        peers.iter().map(|p| p.node.view().iter().any(|e| e.id == leaver.node.peer_id())).collect();
    leaver.node.leave().await;
    for (i, sub) in subs.iter_mut().enumerate() {
        if !had[i] {
            continue;
        }
        let reason = tokio::time::timeout(EVENTUALLY, async {
            loop {
                match sub.recv().await {
                    Ok(Event::Removed(id, why)) if id == leaver.node.peer_id() => return why,
                    Ok(_) => {}
                    Err(e) => panic!("event stream: {e}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(reason, RemoveReason::Left);
    }
    for p in &peers {
        p.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_peer_restarting_with_its_identity_is_reachable_again() {
    let a = start(&[], None).await;
    let dir = tempfile::tempdir().unwrap();
    let (id, kill, thread) = spawn_killable_in(dir.path().to_path_buf(), a.node.local_addr());
    eventually("a knows the peer", || a.node.view().iter().any(|e| e.id == id)).await;
    assert_eq!(a.node.request(id, &Message::Ping(1)).await.unwrap(), Message::Pong(1));
    kill.send(()).unwrap();
    thread.join().unwrap();
    // Same data dir ⇒ same id, new port; it rejoins through `a`, and `a` reaches it again even
    // though its old connection to the crashed process has not timed out yet.
    let (again, inbox) = start_in(dir.path(), &[a.node.local_addr()], None).await;
    tokio::spawn(echo(inbox));
    assert_eq!(again.peer_id(), id);
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), a.node.request(id, &Message::Ping(2))).await {
            Ok(Ok(pong)) => {
                assert_eq!(pong, Message::Pong(2));
                break;
            }
            _ => assert!(tokio::time::Instant::now() < deadline, "restarted peer never reachable"),
        }
    }
    again.shutdown().await;
    a.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_move_verified_and_a_lying_holder_is_skipped() {
    let good = vec![7u8; 3 << 20];
    let hash = BlobHash::of(&good);
    // The liar's store holds a file under the good hash with other bytes (a lie, or a rotten disk).
    let liar_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(liar_dir.path().join("blobs")).unwrap();
    std::fs::write(liar_dir.path().join("blobs").join(hash.to_hex()), vec![8u8; 3 << 20]).unwrap();
    let honest = start(&[], None).await;
    let (liar, liar_inbox) = start_in(liar_dir.path(), &[honest.node.local_addr()], None).await;
    tokio::spawn(echo(liar_inbox));
    let fetcher = start(&[honest.node.local_addr()], None).await;
    assert_eq!(honest.node.blobs().put(&good).unwrap(), hash);
    for n in [&honest.node, &liar] {
        fetcher.node.add_address(n.peer_id(), n.local_addr());
    }

    // Only the liar: refused, nothing stored.
    let err = fetcher.node.fetch_blob(hash, &[liar.peer_id()]).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(!fetcher.node.blobs().contains(&hash));
    // Liar first, then an honest holder: the blob arrives intact.
    let size = fetcher.node.fetch_blob(hash, &[liar.peer_id(), honest.node.peer_id()]).await.unwrap();
    assert_eq!(size, good.len() as u64);
    assert_eq!(fetcher.node.blobs().get(&hash).unwrap().unwrap(), good);
    // Only the verified transfer counts.
    let stats = fetcher.node.stats();
    assert_eq!((stats.blobs_fetched, stats.blob_bytes_fetched), (1, good.len() as u64));
    // A blob nobody has.
    let missing = BlobHash::of(b"nobody has this");
    assert!(fetcher.node.fetch_blob(missing, &[honest.node.peer_id()]).await.is_err());
    assert_serves(&fetcher.node, &liar).await;
    for n in [&honest.node, &liar, &fetcher.node] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_swarm_refuses_missing_and_wrong_secrets() {
    let secret = b"correct horse battery staple";
    let a = start(&[], Some(secret)).await;
    let b = start(&[a.node.local_addr()], Some(secret)).await;
    eventually("members see each other", || a.node.view().iter().any(|e| e.id == b.node.peer_id())).await;
    assert_serves(&b.node, &a.node).await;

    let none = start(&[a.node.local_addr()], None).await;
    let wrong = start(&[a.node.local_addr()], Some(b"wrong")).await;
    for outsider in [&none, &wrong] {
        let err = outsider.node.connect_addr(a.node.local_addr()).await.unwrap_err();
        assert!(err.to_string().contains("swarm secret refused"), "{err}");
    }
    // A public peer also refuses a peer that offers a secret.
    assert!(b.node.connect_addr(none.node.local_addr()).await.is_err());
    // They never enter the swarm's views, and learnt nothing of it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for outsider in [&none, &wrong] {
        assert!(a.node.view().iter().all(|e| e.id != outsider.node.peer_id()));
        assert!(outsider.node.view().is_empty(), "outsider learnt {:?}", outsider.node.view());
    }
    assert_serves(&b.node, &a.node).await;
    for p in [&a, &b, &none, &wrong] {
        p.node.shutdown().await;
    }
}

// ---- raw clients that play strangers and attackers ----

fn client_endpoint(cfg: quinn::ClientConfig) -> quinn::Endpoint {
    let mut ep = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    ep.set_default_client_config(cfg);
    ep
}

/// A raw connection that completes the Shoal handshake (public swarm) and then misbehaves.
async fn raw_shoal_connection(target: &Node) -> quinn::Connection {
    let hello = Hello { version: wire::PROTOCOL_VERSION, min_version: 1, proof: None };
    let (conn, reply) = raw_connection_with_hello(target, hello).await;
    let reply = reply.unwrap();
    assert!(matches!(wire::decode_frame(&reply, 1 << 20), Ok((Message::Hello(_), _))));
    conn
}

/// A raw connection (valid certificate and ALPN) that sends `hello` first; returns the reply.
async fn raw_connection_with_hello(
    target: &Node,
    hello: Hello,
) -> (quinn::Connection, Result<Vec<u8>, String>) {
    let id = Identity::ephemeral().unwrap();
    let ep = client_endpoint(quinn_client_config(&id, vec![tls::ALPN.to_vec()]).unwrap());
    let conn = ep.connect(target.local_addr(), &target.peer_id().to_string()).unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&wire::encode_frame(&Message::Hello(hello), 1 << 20).unwrap()).await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1 << 20).await.map_err(|e| e.to_string());
    (conn, reply)
}

async fn closed_with(conn: &quinn::Connection) -> quinn::VarInt {
    match tokio::time::timeout(EVENTUALLY, conn.closed()).await.unwrap() {
        quinn::ConnectionError::ApplicationClosed(c) => c.error_code,
        other => panic!("expected an application close, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_frames_close_only_that_connection() {
    let target = start(&[], None).await;
    let honest = start(&[target.node.local_addr()], None).await;
    honest.node.add_address(target.node.peer_id(), target.node.local_addr());

    // Oversized: a length prefix far above the maximum; the peer must not wait for the bytes.
    let conn = raw_shoal_connection(&target.node).await;
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&(64u32 << 20).to_le_bytes()).await.unwrap();
    assert_eq!(closed_with(&conn).await, codes::PROTOCOL);
    assert_serves(&honest.node, &target.node).await;

    // Malformed: a frame of the announced length that is not a valid message.
    let conn = raw_shoal_connection(&target.node).await;
    let mut s = conn.open_uni().await.unwrap();
    let mut frame = 32u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0xAB; 32]);
    s.write_all(&frame).await.unwrap();
    s.finish().unwrap();
    assert_eq!(closed_with(&conn).await, codes::PROTOCOL);

    // Truncated: the stream ends inside the frame.
    let conn = raw_shoal_connection(&target.node).await;
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&100u32.to_le_bytes()).await.unwrap();
    s.write_all(&[1, 2, 3]).await.unwrap();
    s.finish().unwrap();
    assert_eq!(closed_with(&conn).await, codes::PROTOCOL);

    // A second Hello is a protocol violation too.
    let conn = raw_shoal_connection(&target.node).await;
    let mut s = conn.open_uni().await.unwrap();
    let hello = Message::Hello(Hello { version: 1, min_version: 1, proof: None });
    s.write_all(&wire::encode_frame(&hello, 1 << 20).unwrap()).await.unwrap();
    s.finish().unwrap();
    assert_eq!(closed_with(&conn).await, codes::UNEXPECTED);

    // An incompatible protocol version is refused before anything else is said.
    let (conn, reply) =
        raw_connection_with_hello(&target.node, Hello { version: 99, min_version: 99, proof: None }).await;
    assert!(reply.is_err(), "got a Hello back: {reply:?}");
    assert_eq!(closed_with(&conn).await, codes::VERSION);

    assert_serves(&honest.node, &target.node).await;
    target.node.shutdown().await;
    honest.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_throttled_while_others_are_served() {
    // A target that accepts 64 KiB/s from each peer.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(dir.path());
    cfg.limits.inbound_bytes_per_sec = 64 << 10;
    cfg.limits.inbound_burst = 64 << 10;
    cfg.limits.stream_window = 1 << 20;
    cfg.limits.connection_window = 2 << 20;
    let (target, inbox) = Node::start(cfg).await.unwrap();
    tokio::spawn(echo(inbox));
    let honest = start(&[], None).await;

    // The flood: valid ~600 KB membership frames (entries too old to be used), 8 of them: at
    // 64 KiB/s that needs over a minute of the target's reading, and the 2 MiB connection
    // window stops the sender long before it is done.
    let entry = membership::Entry {
        id: PeerId([5; 32]),
        addr: SocketAddr::from(([127, 0, 0, 1], 9)),
        age: u32::MAX,
        hints: LoadHint::default(),
    };
    let big = Message::Membership(membership::MemberMsg::Shuffle { seq: 1, entries: vec![entry; 10_000] });
    let frame = wire::encode_frame(&big, 1 << 20).unwrap();
    assert!(frame.len() > 500_000);
    let conn = raw_shoal_connection(&target).await;
    let flooder = conn.clone();
    let flood = tokio::spawn(async move {
        for _ in 0..8 {
            let mut s = flooder.open_uni().await?;
            s.write_all(&frame).await?;
            s.finish()?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    // Meanwhile an honest peer is served as usual.
    for _ in 0..20 {
        assert_serves(&honest.node, &target).await;
    }
    assert!(!flood.is_finished(), "the flood was not throttled");
    conn.close(codes::NORMAL, b"done");
    assert_serves(&honest.node, &target).await;
    target.shutdown().await;
    honest.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_during_the_handshake() {
    let target = start(&[], None).await;
    let honest = start(&[target.node.local_addr()], None).await;
    honest.node.add_address(target.node.peer_id(), target.node.local_addr());
    let addr = target.node.local_addr();
    let name = target.node.peer_id().to_string();

    // Wrong ALPN.
    let id = Identity::ephemeral().unwrap();
    let ep = client_endpoint(quinn_client_config(&id, vec![b"shoal/0".to_vec()]).unwrap());
    assert!(ep.connect(addr, &name).unwrap().await.is_err(), "wrong ALPN accepted");
    // No ALPN at all.
    let ep = client_endpoint(quinn_client_config(&id, vec![]).unwrap());
    assert_refused(&ep, addr, &name).await;

    // No client certificate.
    let tls_cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
            .with_no_client_auth();
    let ep = client_endpoint(quic_client(tls_cfg));
    let refused = match ep.connect(addr, &name).unwrap().await {
        Err(_) => true,
        // The server may only notice after the client's handshake completes: then it closes.
        Ok(c) => tokio::time::timeout(EVENTUALLY, c.closed()).await.is_ok(),
    };
    assert!(refused, "missing client certificate accepted");

    // A certificate not bound to an ed25519 key (ECDSA, self-signed).
    let ecdsa = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ecdsa.key_pair.serialize_der().into());
    let tls_cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
            .with_client_auth_cert(vec![ecdsa.cert.der().clone()], key)
            .unwrap();
    assert_refused(&client_endpoint(quic_client(tls_cfg)), addr, &name).await;

    // Impostor: presents the honest peer's certificate but cannot sign with its key.
    let attacker = Identity::ephemeral().unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&attacker.private_key()).unwrap();
    let victim_cert = Identity::ephemeral().unwrap().cert();
    let resolver = Arc::new(Impostor(Arc::new(rustls::sign::CertifiedKey::new(vec![victim_cert], signer))));
    let mut tls_cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything))
            .with_client_cert_resolver(resolver);
    tls_cfg.alpn_protocols = vec![tls::ALPN.to_vec()];
    assert_refused(&client_endpoint(quic_client(tls_cfg)), addr, &name).await;

    // Dialling a peer id at an address where another peer answers: the dialer refuses.
    let someone_else = Identity::ephemeral().unwrap().peer_id();
    honest.node.add_address(someone_else, addr);
    assert!(honest.node.send(someone_else, &Message::Ping(1)).await.is_err());

    // Garbage datagrams.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000u32 {
        let len = 1 + (i as usize * 7919) % 1400;
        let junk: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j * 17) as u8).collect();
        let _ = sock.send_to(&junk, addr);
    }
    assert_serves(&honest.node, &target.node).await;
    target.node.shutdown().await;
    honest.node.shutdown().await;
}

async fn assert_refused(ep: &quinn::Endpoint, addr: SocketAddr, name: &str) {
    let refused = match ep.connect(addr, name).unwrap().await {
        Err(_) => true,
        Ok(c) => tokio::time::timeout(EVENTUALLY, c.closed()).await.is_ok(),
    };
    assert!(refused, "a stranger was accepted");
}

fn quic_client(mut tls_cfg: rustls::ClientConfig) -> quinn::ClientConfig {
    if tls_cfg.alpn_protocols.is_empty() {
        tls_cfg.alpn_protocols = vec![tls::ALPN.to_vec()];
    }
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls_cfg).unwrap();
    quinn::ClientConfig::new(Arc::new(quic))
}

#[derive(Debug)]
struct AcceptAnything;

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519, rustls::SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

#[derive(Debug)]
struct Impostor(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Impostor {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// A peer listening on `[::]` is dual-stack: an IPv4 peer and an IPv6 peer both join through
/// it, it stores the IPv4 one's address in IPv4 form (not IPv4-mapped), and both get answers.
/// Each learns the address it is seen at, and loopback peers are public to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_peer_takes_ipv4_and_ipv6_peers_and_tells_each_its_observed_address() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        println!("skipped: this machine has no IPv6 loopback (::1)");
        return;
    }
    let start_at = |listen: &str, bootstrap: Vec<SocketAddr>| {
        let listen: SocketAddr = listen.parse().unwrap();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = NodeConfig::new(dir.path());
            cfg.listen = listen;
            cfg.bootstrap = bootstrap;
            cfg.membership = fast_membership();
            let (node, inbox) = Node::start(cfg).await.unwrap();
            tokio::spawn(echo(inbox));
            Peer { node, _dir: dir }
        }
    };
    let hub = start_at("[::]:0", vec![]).await;
    let port = hub.node.local_addr().port();
    let v4 = start_at("127.0.0.1:0", vec![SocketAddr::from(([127, 0, 0, 1], port))]).await;
    let v6 = start_at("[::1]:0", vec![format!("[::1]:{port}").parse().unwrap()]).await;
    eventually("both joined the dual-stack peer", || hub.node.view().len() == 2).await;
    let view = hub.node.view();
    let seen = |id: PeerId| view.iter().find(|e| e.id == id).map(|e| e.addr);
    assert_eq!(seen(v4.node.peer_id()), Some(v4.node.local_addr()), "stored in IPv4 form");
    assert_eq!(seen(v6.node.peer_id()), Some(v6.node.local_addr()));
    assert_serves(&v4.node, &hub.node).await;
    assert_serves(&v6.node, &hub.node).await;
    assert_serves(&hub.node, &v4.node).await;
    // Each was told where the hub sees it.
    eventually("observed addresses arrived", || {
        v4.node.reachability().observed == vec![v4.node.local_addr()]
            && v6.node.reachability().observed == vec![v6.node.local_addr()]
    })
    .await;
}

/// Hostile network-layer messages: relay streams towards peers holding no reservation (at a
/// peer that does not relay), a relay frame cut short, a relayed datagram claiming to come from
/// anyone, an answer sent as a request, a punch towards ourselves, a dial-back asked twice at
/// once. None crashes the peer or reaches its application; the misplaced message closes only
/// that connection, and honest peers are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_network_messages_are_refused_without_harm() {
    use shoal_core::nat::NetMsg;
    let target = start(&[], None).await;
    let honest = start(&[target.node.local_addr()], None).await;
    honest.node.add_address(target.node.peer_id(), target.node.local_addr());
    let frame = |m: NetMsg| wire::encode_frame(&Message::Net(m), 1 << 20).unwrap();

    // Datagrams to forward, at a peer that is no relay: refused and counted.
    let conn = raw_shoal_connection(&target.node).await;
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&frame(NetMsg::RelayOut)).await.unwrap();
    for _ in 0..5 {
        let mut datagram = 1200u16.to_le_bytes().to_vec();
        datagram.extend_from_slice(&honest.node.peer_id().0);
        datagram.extend_from_slice(&[7; 1200]);
        s.write_all(&datagram).await.unwrap();
    }
    // A frame cut short: the stream just ends.
    s.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    s.finish().unwrap();
    eventually("refused relay datagrams counted", || target.node.stats().relay_refused >= 5).await;
    assert_eq!(target.node.stats().relay_bytes_forwarded, 0);

    // "Relayed" datagrams from anyone: handed to QUIC as from a virtual address, where they are
    // garbage; nothing is connected, nothing breaks.
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&frame(NetMsg::RelayIn)).await.unwrap();
    let mut datagram = 64u16.to_le_bytes().to_vec();
    datagram.extend_from_slice(&[9; 32]);
    datagram.extend_from_slice(&[0xC3; 64]);
    s.write_all(&datagram).await.unwrap();
    s.finish().unwrap();

    // A punch towards ourselves or an unknown peer: answered "not connected".
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(NetMsg::Punch { target: target.node.peer_id() })).await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    let (answer, _) = wire::decode_frame(&reply, 1 << 20).unwrap();
    assert_eq!(answer, Message::Net(NetMsg::PunchReply { target_addr: None, relay: false }));

    // Two dial-backs at once: one is served (our raw endpoint is no Shoal peer, so the dial-back
    // reaches nobody: not reached), the other gets no answer at all.
    let ask = |conn: quinn::Connection| async move {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&wire::encode_frame(&Message::Net(NetMsg::DialBack), 1 << 20).unwrap()).await.unwrap();
        send.finish().unwrap();
        recv.read_to_end(1 << 20)
            .await
            .ok()
            .and_then(|r| wire::decode_frame(&r, 1 << 20).ok())
            .map(|(m, _)| m)
    };
    let (a, b) = tokio::join!(ask(conn.clone()), ask(conn.clone()));
    let answers: Vec<Message> = [a, b].into_iter().flatten().collect();
    assert_eq!(answers, vec![Message::Net(NetMsg::DialBackResult { reached: false })], "{answers:?}");
    assert_serves(&honest.node, &target.node).await;

    // An answer sent as a request is misplaced: that connection closes.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(NetMsg::Reserved { ok: true, ttl_secs: 9 })).await.unwrap();
    send.finish().unwrap();
    assert_eq!(closed_with(&conn).await, codes::UNEXPECTED);

    // A reservation at a peer that does not relay is refused.
    let conn = raw_shoal_connection(&target.node).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame(NetMsg::Reserve)).await.unwrap();
    send.finish().unwrap();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    let (answer, _) = wire::decode_frame(&reply, 1 << 20).unwrap();
    assert_eq!(answer, Message::Net(NetMsg::Reserved { ok: false, ttl_secs: 0 }));
    assert_serves(&honest.node, &target.node).await;
    target.node.shutdown().await;
    honest.node.shutdown().await;
}
