//! Faults on real sockets from the project's own fault-injecting relay (latency, loss,
//! partitions) and from `tc tbf` rate limits in network namespaces.
//!
//! Topology of the relay tests: peer A listens on loopback; a [`Relay`] listens on its own
//! port and forwards to A; peer B bootstraps at the relay's address and never learns A's own
//! address. Every packet between them crosses the relay, in both directions and whoever dials:
//! - B reaches A at the relay's address (it is the only address B has for A);
//! - A sees B's connection coming from B's *mapping* on the relay (the upstream socket the relay
//!   opened for B's source address); membership records that observed address, so when A dials
//!   or probes B it sends to the mapping, and the relay forwards to B (the mapping behaves like
//!   a full-cone NAT binding between the pair).
//!
//! Each test checks that both peers hold each other only at relay addresses, so the faults are
//! known to apply to all of their traffic.

use super::*;

use shoal_tests::relay::{Faults, Relay, RelayConfig};

const MS: Duration = Duration::from_millis(1);

/// A (direct), the relay in front of A, and B (joined through the relay).
struct Pair {
    a: Peer,
    b: Peer,
    relay: Relay,
}

async fn pair_through_relay(faults: Faults, seed: u64) -> Pair {
    let a = start(&[], None).await;
    let cfg = RelayConfig::new("127.0.0.1:0".parse().unwrap(), a.node.local_addr(), seed).both_ways(faults);
    let relay = Relay::start(cfg).await.unwrap();
    let b = start(&[relay.local_addr()], None).await;
    let p = Pair { a, b, relay };
    eventually("A and B hold each other", || p.both_in_view()).await;
    p.assert_routed_through_relay();
    p
}

fn in_view(holder: &Node, id: PeerId) -> bool {
    holder.view().iter().any(|e| e.id == id)
}

impl Pair {
    fn ids(&self) -> (PeerId, PeerId) {
        (self.a.node.peer_id(), self.b.node.peer_id())
    }

    fn both_in_view(&self) -> bool {
        let (a, b) = self.ids();
        in_view(&self.a.node, b) && in_view(&self.b.node, a)
    }

    fn neither_in_view(&self) -> bool {
        let (a, b) = self.ids();
        !in_view(&self.a.node, b) && !in_view(&self.b.node, a)
    }

    /// B knows A only at the relay; A knows B only at B's mapping on the relay.
    fn assert_routed_through_relay(&self) {
        let (a, b) = self.ids();
        let entry = |holder: &Node, id| holder.view().into_iter().find(|e| e.id == id).map(|e| e.addr);
        assert_eq!(entry(&self.b.node, a), Some(self.relay.local_addr()));
        assert_eq!(self.b.node.address_of(a), Some(self.relay.local_addr()));
        let b_at = self.a.node.address_of(b).unwrap();
        assert_eq!(entry(&self.a.node, b), Some(b_at));
        assert_ne!(b_at, self.b.node.local_addr(), "A learnt B's own address: traffic bypasses the relay");
        assert!(b_at.ip().is_loopback() && b_at != self.relay.local_addr(), "{b_at}");
    }

    async fn shutdown(self) {
        self.b.node.shutdown().await;
        self.a.node.shutdown().await;
        self.relay.stop().await;
    }
}

/// The shortest of `n` ping round trips from `from` to `to`.
async fn min_round_trip(from: &Node, to: PeerId, n: u64) -> Duration {
    let mut best = Duration::MAX;
    for i in 0..n {
        let t = std::time::Instant::now();
        assert_eq!(from.request(to, &Message::Ping(i)).await.unwrap(), Message::Pong(i));
        best = best.min(t.elapsed());
    }
    best
}

/// `len` bytes that do not compress (blob contents).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_through_a_relay_with_25ms_each_way_form_an_overlay_and_fetch_a_blob() {
    let p = pair_through_relay(Faults { delay: 25 * MS, ..Faults::default() }, 1).await;
    let (a, b) = p.ids();
    // A round trip crosses the relay twice: at least 2 × 25 ms, whichever side asks.
    let ba = min_round_trip(&p.b.node, a, 5).await;
    let ab = min_round_trip(&p.a.node, b, 5).await;
    println!("round trip through the relay (25 ms each way): B->A {ba:?}, A->B {ab:?}");
    assert!(ba >= 50 * MS && ab >= 50 * MS, "B->A {ba:?}, A->B {ab:?}");

    // A blob of 384 KiB from A to B arrives verified.
    let data = noise(384 << 10, 7);
    let hash = p.a.node.blobs().put(&data).unwrap();
    let before = p.relay.stats().to_client.delivered_bytes;
    let t = std::time::Instant::now();
    assert_eq!(p.b.node.fetch_blob(hash, &[a]).await.unwrap(), data.len() as u64);
    let took = t.elapsed();
    assert_eq!(p.b.node.blobs().get(&hash).unwrap().unwrap(), data);
    let carried = p.relay.stats().to_client.delivered_bytes - before;
    println!("384 KiB blob through the relay in {took:?} ({carried} bytes relayed to B)");
    assert!(carried >= data.len() as u64, "the blob did not cross the relay: {carried} bytes");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_blobs_survive_10_percent_loss_each_way() {
    let faults = Faults { delay: 10 * MS, jitter: 2 * MS, loss: 0.10, ..Faults::default() };
    let p = pair_through_relay(faults, 2).await;
    let (a, b) = p.ids();
    for i in 0..30u64 {
        let (from, to) = if i % 2 == 0 { (&p.b.node, a) } else { (&p.a.node, b) };
        assert_eq!(from.request(to, &Message::Ping(i)).await.unwrap(), Message::Pong(i));
    }
    let data = noise(256 << 10, 9);
    let hash = p.a.node.blobs().put(&data).unwrap();
    p.b.node.fetch_blob(hash, &[a]).await.unwrap();
    assert_eq!(p.b.node.blobs().get(&hash).unwrap().unwrap(), data);
    let s = p.relay.stats();
    println!("relay under 10% loss: {s:?}");
    // The loss really happened, in both directions (QUIC retransmitted around it).
    assert!(s.to_target.lost > 0 && s.to_client.lost > 0, "{s:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_longer_than_failure_detection_drops_the_peer_and_healing_brings_it_back() {
    let p = pair_through_relay(Faults { delay: 5 * MS, ..Faults::default() }, 3).await;
    let (a, b) = p.ids();
    let (mut a_events, mut b_events) = (p.a.node.subscribe(), p.b.node.subscribe());

    p.relay.partition();
    let cut = std::time::Instant::now();
    eventually("each side dropped the other", || p.neither_in_view()).await;
    println!(
        "partitioned peers dropped each other after {:?} (bound per holder: {:?})",
        cut.elapsed(),
        fast_membership().failure_detection_bound()
    );
    // Dropped as failed (missed probes), not as having left.
    for (events, gone) in [(&mut a_events, b), (&mut b_events, a)] {
        let why = loop {
            match events.try_recv() {
                Ok(Event::Removed(id, why)) if id == gone => break why,
                Ok(_) => {}
                Err(e) => panic!("no removal event for {}: {e}", gone.short()),
            }
        };
        assert_eq!(why, RemoveReason::Failed);
    }
    // Nothing crosses: a request cannot be answered while the partition lasts.
    let across = tokio::time::timeout(300 * MS, p.b.node.request(a, &Message::Ping(1))).await;
    assert!(!matches!(across, Ok(Ok(_))), "a request crossed the partition: {across:?}");

    // Heal: B, whose view is empty, retries its bootstrap (the relay) and A takes it back
    // (a peer that talks first-hand is alive again, whatever A concluded before).
    p.relay.heal();
    let healed = std::time::Instant::now();
    eventually("A and B hold each other again", || p.both_in_view()).await;
    println!("rejoined {:?} after the heal", healed.elapsed());
    p.assert_routed_through_relay();
    assert_eq!(p.b.node.request(a, &Message::Ping(3)).await.unwrap(), Message::Pong(3));
    assert_eq!(p.a.node.request(b, &Message::Ping(2)).await.unwrap(), Message::Pong(2));
    assert!(p.relay.stats().to_target.partitioned > 0);
    p.shutdown().await;
}

// ---- tc tbf in network namespaces ----

/// Runs `f` on a fresh thread inside network namespace `ns`, on its own current-thread runtime.
fn in_namespace<T, F, Fut>(ns: String, f: F) -> std::thread::JoinHandle<Result<T, String>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    std::thread::spawn(move || {
        shoal_tests::netns::enter(&ns)?;
        let rt =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(f())
    })
}

/// Two peers on two "machines" (network namespaces bridged by veth pairs); the holder's veth
/// sends through `tc tbf` at 500 kB/s; a 512 KiB blob fetched from it cannot arrive faster than
/// the limiter lets it (checked with a generous 3x margin: this checks the limiter, not QUIC).
#[test]
fn a_tc_tbf_rate_limit_bounds_a_blob_transfer_between_namespaces() {
    if let Some(why) = netns::unavailable() {
        println!("skipped: {why}");
        return;
    }
    if !std::process::Command::new("tc").arg("-V").output().is_ok_and(|o| o.status.success()) {
        println!("skipped: needs the `tc` command (iproute2)");
        return;
    }
    const RATE: u64 = 500_000;
    const SIZE: usize = 512 << 10;
    let tag = format!("{:x}", std::process::id() % 0xfffff);
    let subnet = 150 + (std::process::id() % 50) as u8;
    let (guard, machines) = match netns::bridged("sf", &tag, 2, subnet) {
        Ok(built) => built,
        Err(e) => {
            println!("skipped: could not build the namespaces: {e}");
            return;
        }
    };
    // Machine 0's end of its veth pair (named by `netns::bridged`).
    if let Err(e) = netns::rate_limit(&machines[0].0, &format!("sfa{tag}0"), RATE) {
        println!("skipped: {e}");
        return;
    }
    let addrs: Vec<SocketAddr> = machines.iter().map(|&(_, a)| SocketAddr::from((a, 7600))).collect();

    let (held_tx, held_rx) = std::sync::mpsc::channel::<(PeerId, BlobHash, Vec<u8>)>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder_addr = addrs[0];
    let holder = in_namespace(machines[0].0.clone(), move || async move {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cfg = NodeConfig::new(dir.path());
        cfg.listen = holder_addr;
        let (node, _inbox) = Node::start(cfg).await.map_err(|e| e.to_string())?;
        let data = noise(SIZE, 11);
        let hash = node.blobs().put(&data).map_err(|e| e.to_string())?;
        held_tx.send((node.peer_id(), hash, data)).map_err(|e| e.to_string())?;
        // Serve until the fetcher is done.
        let _ = tokio::task::spawn_blocking(move || done_rx.recv_timeout(EVENTUALLY)).await;
        node.shutdown().await;
        Ok(())
    });
    let (holder_id, hash, data) = held_rx.recv_timeout(EVENTUALLY).expect("holder did not start");
    let fetcher_addr = addrs[1];
    let fetcher = in_namespace(machines[1].0.clone(), move || async move {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cfg = NodeConfig::new(dir.path());
        cfg.listen = fetcher_addr;
        let (node, _inbox) = Node::start(cfg).await.map_err(|e| e.to_string())?;
        node.add_address(holder_id, holder_addr);
        // Connect first, so the measured time is the transfer's.
        node.connect_addr(holder_addr).await.map_err(|e| e.to_string())?;
        let t = std::time::Instant::now();
        node.fetch_blob(hash, &[holder_id]).await.map_err(|e| e.to_string())?;
        let took = t.elapsed();
        let got = node.blobs().get(&hash).map_err(|e| e.to_string())?;
        node.shutdown().await;
        Ok((took, got))
    });
    let fetched = fetcher.join().expect("fetcher panicked");
    let _ = done_tx.send(());
    holder.join().expect("holder panicked").expect("holder failed");
    let (took, got) = fetched.expect("fetch failed");
    assert_eq!(got.as_deref(), Some(&data[..]), "the blob arrived altered");
    let rate = SIZE as f64 / took.as_secs_f64();
    println!("512 KiB through tc tbf at {RATE} B/s: {took:?}, {rate:.0} B/s");
    assert!(rate < 3.0 * RATE as f64, "{rate:.0} B/s through a {RATE} B/s limiter");
    drop(guard);
}
