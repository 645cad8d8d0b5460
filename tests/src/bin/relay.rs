//! `shoal-relay`: the fault-injecting UDP relay ([`shoal_tests::relay`]) by hand, for trying Shoal
//! over a bad network. It listens on `--listen`, forwards to `--to` and the replies back, with
//! the same delay, jitter, loss and rate cap in both directions, until SIGINT or SIGTERM; then it
//! prints what it did to stderr and exits with status 0. Bad arguments are refused before any
//! socket is opened (exit status 2).
//!
//! Example: put a worker 20 ms away: `cargo run -p shoal-tests --bin shoal-relay -- --listen
//! 127.0.0.1:7700 --to 127.0.0.1:7600 --delay 20ms --jitter 2ms --loss 0.05 --rate 10MiB`, then
//! bootstrap another worker at port 7700.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shoal_sdk::{parse_duration, parse_size};
use shoal_tests::relay::{Faults, RateLimit, Relay, RelayConfig, RelayStats};
use tokio::signal::unix::{SignalKind, signal};

/// Relay UDP to an address with added delay, jitter, loss and a rate cap, the same in both
/// directions, until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "shoal-relay", version, about)]
struct RelayArgs {
    /// UDP address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// UDP address to forward to.
    #[arg(long, value_name = "ADDR")]
    to: SocketAddr,
    /// One-way delay added in each direction.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    delay: Duration,
    /// Each datagram's delay is drawn uniformly from delay ± jitter (order is kept).
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration)]
    jitter: Duration,
    /// Let jitter reorder datagrams.
    #[arg(long)]
    reorder: bool,
    /// Probability that a datagram is dropped, in each direction (0 to 1).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    loss: f64,
    /// Bandwidth cap per direction, in bytes per second (e.g. 10MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    rate: Option<u64>,
    /// Seed of the loss and jitter draws (the same seed gives the same faults).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(RelayArgs::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-relay: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the relay until a signal.
fn run(args: RelayArgs) -> anyhow::Result<()> {
    let faults = Faults {
        delay: args.delay,
        jitter: args.jitter,
        reorder: args.reorder,
        loss: args.loss,
        rate: args.rate.map(RateLimit::new),
    };
    let cfg = RelayConfig::new(args.listen, args.to, args.seed).both_ways(faults);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        let relay = Relay::start(cfg).await?;
        println!("relay listening on {}, forwarding to {}", relay.local_addr(), args.to);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprint!("{}", stats_text(&relay.stats()));
        relay.stop().await;
        Ok(())
    })
}

fn stats_text(s: &RelayStats) -> String {
    let mut out = format!("clients: {} (refused datagrams: {})\n", s.clients, s.refused_clients);
    for (name, d) in [("to target", s.to_target), ("to clients", s.to_client)] {
        out += &format!(
            "{name}: {} received, {} delivered ({} bytes), {} lost, {} dropped by full queues\n",
            d.received, d.delivered, d.delivered_bytes, d.lost, d.queue_full
        );
    }
    out
}
