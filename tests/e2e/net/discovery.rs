//! Zero-configuration discovery on a LAN (mDNS): peers that are given no bootstrap address find
//! each other, while a fourth machine on the same bridge floods the mDNS group with garbage
//! packets and bogus announcements (wrong version, other swarm, a name that is no peer id, a
//! peer id at an address where nobody listens).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// Runs `f` on a new thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> std::thread::JoinHandle<Result<T, String>> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        shoal_tests::netns::enter(&ns)?;
        f()
    })
}

/// Whether a multicast datagram sent from `from` (at `from_ip`) reaches `to` (at `to_ip`).
fn multicast_works(from: &str, from_ip: Ipv4Addr, to: &str, to_ip: Ipv4Addr) -> Result<(), String> {
    const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 1);
    const PORT: u16 = 47_001;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(to, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).map_err(|e| format!("bind: {e}"))?;
        sock.join_multicast_v4(&GROUP, &to_ip).map_err(|e| format!("join group: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let mut buf = [0u8; 64];
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if &buf[..n] == b"shoal multicast probe" => Ok(()),
            Ok(_) => Err("a stranger's datagram".into()),
            Err(e) => Err(format!("no multicast datagram arrived: {e}")),
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(3)).map_err(|_| "the receiver did not start".to_string())?;
    let sender = in_netns(from, move || {
        let sock = UdpSocket::bind((from_ip, 0)).map_err(|e| format!("bind: {e}"))?;
        for _ in 0..20 {
            sock.send_to(b"shoal multicast probe", (GROUP, PORT)).map_err(|e| format!("send: {e}"))?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    });
    sender.join().map_err(|_| "sender panicked".to_string())??;
    receiver.join().map_err(|_| "receiver panicked".to_string())?
}

/// Hostile mDNS traffic: random bytes, a header promising 65535 records, a name whose
/// compression pointer points at itself, a truncated record.
fn garbage_packets(seed: &mut u64) -> Vec<Vec<u8>> {
    let mut next = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let random: Vec<u8> = (0..(next() % 1400) as usize).map(|_| next() as u8).collect();
    // id 0, flags response+authoritative, 0 questions, 65535 answers, nothing after.
    let promise = vec![0, 0, 0x84, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    // One answer whose owner name is a pointer to itself (offset 12), type PTR, class IN.
    let mut looped =
        vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xc0, 12, 0, 12, 0, 1, 0, 0, 0x11, 0x94, 0, 2];
    looped.extend_from_slice(&[0xc0, 12]);
    // A PTR to `_shoal._udp.local.` cut off in the middle of its rdata.
    let mut cut = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    for label in ["_shoal", "_udp", "local"] {
        cut.push(label.len() as u8);
        cut.extend_from_slice(label.as_bytes());
    }
    cut.extend_from_slice(&[0, 0, 12, 0, 1, 0, 0, 0x11, 0x94, 0, 200, 52, b'a', b'b']);
    vec![random, promise, looped, cut]
}

/// Registers bogus services on the LAN from namespace `ns` at `addr`, says on `ready` once they
/// are announced (it sees them itself), and sends garbage to the mDNS group until `stop` is set.
fn hostile_lan(
    ns: &str,
    addr: Ipv4Addr,
    ready: std::sync::mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<u64, String>> {
    in_netns(ns, move || {
        let daemon = mdns_sd::ServiceDaemon::new().map_err(|e| e.to_string())?;
        let ty = "_shoal._udp.local.";
        let browse = daemon.browse(ty).map_err(|e| e.to_string())?;
        let stranger = || Identity::ephemeral().map(|i| i.peer_id().to_string()).unwrap_or_default();
        let open = "open".to_string();
        let bogus: Vec<(String, [(&str, String); 3])> = vec![
            (stranger(), [("v", "0".into()), ("alpn", "shoal/1".into()), ("swarm", open.clone())]),
            (stranger(), [("v", "1".into()), ("alpn", "shoal/9".into()), ("swarm", open.clone())]),
            (stranger(), [("v", "1".into()), ("alpn", "shoal/1".into()), ("swarm", "beef".into())]),
            ("not-a-peer".into(), [("v", "1".into()), ("alpn", "shoal/1".into()), ("swarm", open.clone())]),
            // A plausible peer where nobody listens: at worst one failed dial.
            (stranger(), [("v", "1".into()), ("alpn", "shoal/1".into()), ("swarm", open.clone())]),
        ];
        for (i, (name, txt)) in bogus.iter().enumerate() {
            let txt: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let host = format!("bogus{i}.local.");
            let info = mdns_sd::ServiceInfo::new(ty, name, &host, std::net::IpAddr::V4(addr), 7600, &txt[..])
                .map_err(|e| e.to_string())?;
            daemon.register(info).map_err(|e| e.to_string())?;
        }
        let mut resolved = BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while resolved.len() < bogus.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match browse.recv_timeout(left) {
                Ok(mdns_sd::ServiceEvent::ServiceResolved(r)) => {
                    resolved.insert(r.fullname.clone());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("bogus services not announced ({resolved:?}): {e}")),
            }
        }
        let _ = ready.send(());
        let sock = UdpSocket::bind((addr, 0)).map_err(|e| format!("bind: {e}"))?;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut sent = 0u64;
        // Bounded: at most 30 s of noise, whatever happens to the test.
        for _ in 0..1500 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            for p in garbage_packets(&mut seed) {
                if sock.send_to(&p, SocketAddrV4::new(MDNS_GROUP, 5353)).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(rx) = daemon.shutdown() {
            let _ = rx.recv_timeout(Duration::from_secs(2));
        }
        Ok(sent)
    })
}

fn mdns_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "mDNS_daemon")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Three peers in separate network namespaces on one bridge, with mDNS on and no bootstrap
/// address, form one overlay (every view holds the other two, and each answers the others'
/// requests) while a fourth machine floods the LAN with garbage and bogus announcements; after
/// they leave, no mDNS daemon thread is left.
#[test]
fn peers_on_a_lan_find_each_other_over_mdns_despite_garbage() {
    if let Some(why) = netns::unavailable() {
        println!("skipped: {why}");
        return;
    }
    const N: usize = 3;
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let tag = format!("{:x}{}", std::process::id() % 0xfffff, RUN.fetch_add(1, Ordering::Relaxed));
    let subnet = 150 + (std::process::id() % 40) as u8;
    let (guard, machines) = match netns::bridged("sd", &tag, N + 1, subnet) {
        Ok(built) => built,
        Err(e) => {
            println!("skipped: could not build the namespaces: {e}");
            return;
        }
    };
    for (i, (ns, _)) in machines.iter().enumerate() {
        if let Err(e) = netns::enable_multicast(ns, &format!("sda{tag}{i}")) {
            println!("skipped: no multicast on the bridge: {e}");
            return;
        }
    }
    let (ns0, ip0) = machines[0].clone();
    let (ns1, ip1) = machines[1].clone();
    if let Err(e) = multicast_works(&ns0, ip0, &ns1, ip1) {
        println!("skipped: multicast does not cross the bridge here: {e}");
        return;
    }
    let (noise_ns, noise_ip) = machines[N].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let noise = hostile_lan(&noise_ns, noise_ip, ready_tx, stop.clone());
    // The peers start into a LAN already full of bogus announcements.
    if ready_rx.recv_timeout(Duration::from_secs(15)).is_err() {
        stop.store(true, Ordering::Relaxed);
        panic!("the noise machine failed: {:?}", noise.join());
    }

    let addrs: Vec<SocketAddr> = machines[..N].iter().map(|&(_, a)| SocketAddr::from((a, 7600))).collect();
    let started = std::time::Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<Result<Duration, String>>();
    let barrier = Arc::new(std::sync::Barrier::new(N));
    let mut threads = Vec::new();
    for (i, (ns, ip)) in machines[..N].iter().cloned().enumerate() {
        let (tx, barrier, all) = (tx.clone(), barrier.clone(), addrs.clone());
        threads.push(in_netns(&ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let report = tx.clone();
            let outcome = rt.block_on(async move {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let mut cfg = NodeConfig::new(dir.path());
                cfg.listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 7600));
                cfg.mdns = true;
                cfg.membership = fast_membership();
                let (node, inbox) = Node::start(cfg).await.map_err(|e| e.to_string())?;
                tokio::spawn(echo(inbox));
                let me = SocketAddr::from((ip, 7600));
                let deadline = tokio::time::Instant::now() + EVENTUALLY;
                loop {
                    let view = node.view();
                    let seen: BTreeSet<SocketAddr> = view.iter().map(|e| e.addr).collect();
                    let others: BTreeSet<SocketAddr> = all.iter().copied().filter(|a| *a != me).collect();
                    if seen == others {
                        for e in &view {
                            let pong =
                                node.request(e.id, &Message::Ping(5)).await.map_err(|e| e.to_string())?;
                            if pong != Message::Pong(5) {
                                return Err(format!("bad pong {pong:?}"));
                            }
                        }
                        break;
                    }
                    if seen.iter().any(|a| !others.contains(a)) {
                        return Err(format!("peer {i}: a stranger in the view: {view:?}"));
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("peer {i} view incomplete: {view:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                report.send(Ok(started.elapsed())).map_err(|e| e.to_string())?;
                let _ = tokio::task::spawn_blocking(move || barrier.wait()).await;
                node.leave().await;
                Ok(())
            });
            if let Err(e) = &outcome {
                let _ = tx.send(Err(e.clone()));
            }
            outcome
        }));
    }
    drop(tx);
    let mut slowest = Duration::ZERO;
    for _ in 0..N {
        let r = rx.recv_timeout(EVENTUALLY * 2).expect("a namespace peer hung");
        slowest = slowest.max(r.expect("namespace peer failed"));
    }
    for t in threads {
        t.join().expect("namespace thread panicked").expect("namespace peer failed");
    }
    stop.store(true, Ordering::Relaxed);
    let sent = noise.join().expect("noise thread panicked").expect("noise machine failed");
    println!("{N} peers found each other over mDNS in {slowest:?}, despite {sent} garbage packets");
    assert!(sent > 0, "the garbage was never sent");
    // Leaving stopped every peer's mDNS daemon (the noise machine's too).
    let t0 = std::time::Instant::now();
    while mdns_threads() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{} mDNS daemon threads still run", mdns_threads());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(guard);
}

/// Asking for mDNS on a loopback listen address is a clear error, not a silent no-op.
#[tokio::test]
async fn mdns_on_a_loopback_address_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(dir.path());
    cfg.mdns = true;
    let e = Node::start(cfg).await.expect_err("mDNS on 127.0.0.1 must be refused").to_string();
    assert!(e.contains("mDNS") && e.contains("127.0.0.1"), "{e}");
}

/// Two peers listening on IPv6 unique-local addresses only (`[fd5e:…::1]:7600`), on one bridge,
/// with mDNS on and no bootstrap address, find each other over IPv6 multicast and talk at their
/// IPv6 addresses.
#[test]
fn peers_on_an_ipv6_lan_find_each_other_over_mdns() {
    if let Some(why) = netns::unavailable() {
        println!("skipped: {why}");
        return;
    }
    let tag = format!("{:x}", std::process::id() % 0xfffff);
    let subnet = 190 + (std::process::id() % 40) as u8;
    let (guard, machines) = netns::bridged("s6", &tag, 2, subnet).expect("could not build the namespaces");
    let mut addrs = Vec::new();
    for (i, (ns, _)) in machines.iter().enumerate() {
        let dev = format!("s6a{tag}{i}");
        netns::enable_multicast(ns, &dev).expect("multicast on the bridge");
        let ip: std::net::Ipv6Addr = format!("fd5e:{subnet:x}::{}", i + 1).parse().unwrap();
        netns::ip(&["-n", ns, "addr", "add", &format!("{ip}/64"), "dev", &dev, "nodad"])
            .expect("an IPv6 address");
        addrs.push(SocketAddr::from((ip, 7600)));
    }
    // IPv6 multicast needs the link-local addresses, which are tentative until DAD is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for (ns, _) in &machines {
        loop {
            let out = std::process::Command::new("ip").args(["-n", ns, "-6", "addr"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("fe80") && !text.contains("tentative") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "IPv6 link-local never ready in {ns}: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let all = addrs.clone();
    let namespaces: Vec<String> = machines.iter().map(|(ns, _)| ns.clone()).collect();
    peers_in_namespaces(&namespaces, move |i| {
        let (me, other) = (all[i], all[1 - i]);
        async move {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let mut cfg = NodeConfig::new(dir.path());
            cfg.listen = me;
            cfg.mdns = true;
            cfg.membership = fast_membership();
            let (node, inbox) = Node::start(cfg).await.map_err(|e| e.to_string())?;
            tokio::spawn(echo(inbox));
            let deadline = tokio::time::Instant::now() + EVENTUALLY;
            let id = loop {
                if let Some(e) = node.view().iter().find(|e| e.addr == other) {
                    break e.id;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("peer {i} never saw {other}: {:?}", node.view()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            match node.request(id, &Message::Ping(6)).await {
                Ok(Message::Pong(6)) => Ok((node, dir)),
                other => Err(format!("peer {i}: bad answer {other:?}")),
            }
        }
    });
    println!("two IPv6-only peers found each other over mDNS at {addrs:?}");
    drop(guard);
}

/// Runs one peer per namespace, each on its own thread and runtime (so every socket it opens
/// lives in its namespace): `body(i)` starts peer `i` and checks what it must. Every peer stays
/// up until all bodies are done (others may still be asking it), then leaves. Panics with the
/// first failure.
fn peers_in_namespaces<F, Fut>(namespaces: &[String], body: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(Node, TempDir), String>>,
{
    let body = Arc::new(body);
    let barrier = Arc::new(std::sync::Barrier::new(namespaces.len()));
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let threads: Vec<_> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let (body, barrier, tx) = (body.clone(), barrier.clone(), tx.clone());
            in_netns(ns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    // A failure is reported at once (the barrier would wait for it forever).
                    let (node, _dir) = match body(i).await {
                        Ok(up) => up,
                        Err(e) => {
                            let _ = tx.send(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    tx.send(Ok(())).map_err(|e| e.to_string())?;
                    let _ = tokio::task::spawn_blocking(move || barrier.wait()).await;
                    node.leave().await;
                    Ok(())
                })
            })
        })
        .collect();
    drop(tx);
    for _ in 0..namespaces.len() {
        rx.recv_timeout(EVENTUALLY * 2).expect("a namespace peer hung").expect("namespace peer failed");
    }
    for t in threads {
        t.join().expect("namespace thread panicked").expect("namespace peer failed");
    }
}
