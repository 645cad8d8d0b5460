//! Network benchmarks, each against a baseline measured in the same run on the same machine:
//!
//! - request/response round trip between two nodes on loopback (p50, p99) vs a plain UDP
//!   ping-pong between two sockets;
//! - blob transfer throughput (fetch, verify, fsync, publish) vs a plain TCP copy of the same
//!   bytes.
//!
//! Run: `cargo bench -p shoal-net --bench net` (prints a table).

#![allow(clippy::unwrap_used, reason = "a benchmark that fails should stop loudly")]

use std::time::{Duration, Instant};

use shoal_core::wire::Message;
use shoal_net::{BlobHash, Inbox, Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUND_TRIPS: usize = 5_000;
const WARMUP: usize = 300;
const BLOB_BYTES: usize = 64 << 20;
const BLOB_RUNS: usize = 3;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn echo(mut inbox: Inbox) {
    while let Some(m) = inbox.recv().await {
        if let (Message::Ping(n), Some(reply)) = (&m.message, m.reply) {
            let _ = reply.send(Message::Pong(*n));
        }
    }
}

async fn node(dir: &std::path::Path) -> Node {
    let mut cfg = NodeConfig::new(dir);
    cfg.blob_budget = 4 * BLOB_BYTES as u64;
    let (n, inbox) = Node::start(cfg).await.unwrap();
    tokio::spawn(echo(inbox));
    n
}

async fn shoal_rtt(a: &Node, b: &Node) -> Vec<Duration> {
    a.add_address(b.peer_id(), b.local_addr());
    for i in 0..WARMUP {
        a.request(b.peer_id(), &Message::Ping(i as u64)).await.unwrap();
    }
    let mut out = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let t = Instant::now();
        let r = a.request(b.peer_id(), &Message::Ping(i as u64)).await.unwrap();
        out.push(t.elapsed());
        assert_eq!(r, Message::Pong(i as u64));
    }
    out.sort();
    out
}

async fn udp_rtt() -> Vec<Duration> {
    let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b_addr = b.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = b.recv_from(&mut buf).await {
            let _ = b.send_to(&buf[..n], from).await;
        }
    });
    let mut buf = [0u8; 64];
    let mut out = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        a.send_to(&(i as u64).to_le_bytes(), b_addr).await.unwrap();
        a.recv_from(&mut buf).await.unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

async fn shoal_blob(a: &Node, b: &Node, bytes: &[u8]) -> Duration {
    let hash: BlobHash = b.blobs().put(bytes).unwrap();
    a.add_address(b.peer_id(), b.local_addr());
    let mut times = Vec::new();
    for _ in 0..BLOB_RUNS {
        a.blobs().remove(&hash).unwrap();
        let t = Instant::now();
        a.fetch_blob(hash, &[b.peer_id()]).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

async fn tcp_copy(bytes: &'static [u8]) -> Duration {
    let mut times = Vec::new();
    for _ in 0..BLOB_RUNS {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(bytes).await.unwrap();
        });
        let t = Instant::now();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::with_capacity(bytes.len());
        s.read_to_end(&mut got).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(got.len(), bytes.len());
    }
    times.sort();
    times[times.len() / 2]
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (node(da.path()).await, node(db.path()).await);

        let udp = udp_rtt().await;
        let shoal = shoal_rtt(&a, &b).await;
        println!("request/response round trip, loopback, {ROUND_TRIPS} samples");
        println!("{:<28} {:>10} {:>10}", "", "p50", "p99");
        for (name, v) in [("UDP ping-pong (baseline)", &udp), ("shoal request/response", &shoal)] {
            println!("{name:<28} {:>10.1?} {:>10.1?}", percentile(v, 0.5), percentile(v, 0.99));
        }
        println!(
            "{:<28} {:>9.2}x {:>9.2}x",
            "ratio shoal/UDP",
            percentile(&shoal, 0.5).as_secs_f64() / percentile(&udp, 0.5).as_secs_f64(),
            percentile(&shoal, 0.99).as_secs_f64() / percentile(&udp, 0.99).as_secs_f64()
        );

        let bytes: &'static [u8] = Box::leak((0..BLOB_BYTES).map(|i| (i * 31 % 251) as u8).collect());
        let tcp = tcp_copy(bytes).await;
        let blob = shoal_blob(&a, &b, bytes).await;
        println!();
        println!("blob transfer, {} MiB, median of {BLOB_RUNS}", BLOB_BYTES >> 20);
        println!("{:<28} {:>10} {:>12}", "", "time", "MiB/s");
        println!("{:<28} {:>10.1?} {:>12.0}", "TCP copy (baseline)", tcp, mib_per_s(BLOB_BYTES, tcp));
        println!("{:<28} {:>10.1?} {:>12.0}", "shoal fetch_blob", blob, mib_per_s(BLOB_BYTES, blob));
        println!("{:<28} {:>11.2}x", "throughput ratio shoal/TCP", tcp.as_secs_f64() / blob.as_secs_f64());
        a.shutdown().await;
        b.shutdown().await;
    });
}
