//! `shoal worker --metrics ADDR`: Prometheus metrics of the running peer at `http://ADDR/metrics`
//! (every metric, its type, labels and meaning: docs/observability.md).
//!
//! Collection happens at scrape time: [`PeerMetrics`] is a `prometheus-client` collector that
//! reads the peer's published status, its network counters, view and blob store when the page is
//! asked for, so nothing runs while nobody scrapes. The page is the Prometheus text format
//! (0.0.4), or OpenMetrics text when the scraper's `Accept` asks for it.
//!
//! Invariants: no label carries a peer, job or task id (series are bounded: the refusal reasons
//! are a fixed set); counters come from counters of the node that only grow. The one histogram
//! fed here, the RTT to peers, gets one sample per connected peer per scrape (see
//! [`PeerMetrics::rtt`]); task times are the node's own histogram.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use shoal_node::{Peer, TaskTimes};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Upper bounds of the RTT buckets, seconds: loopback to intercontinental.
const RTT_BOUNDS_S: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The collector: reads the peer on every scrape.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    peer: Arc<Peer>,
    /// The RTT to each connected peer, sampled once per peer on every scrape: a cumulative
    /// histogram whose `rate()` gives the distribution of RTTs over the peers in a window. Kept
    /// here (not a snapshot per scrape) so that its counts only grow, as Prometheus requires.
    rtt: Histogram,
}

impl PeerMetrics {
    pub(crate) fn new(peer: Arc<Peer>) -> Self {
        PeerMetrics { peer, rtt: Histogram::new(RTT_BOUNDS_S) }
    }
}

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, unit, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, unit: Option<&Unit>, v: u64) -> fmt::Result {
    let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

fn task_times(e: &mut DescriptorEncoder<'_>, t: &TaskTimes) -> fmt::Result {
    let mut m = e.encode_descriptor(
        "shoal_task_duration",
        "How long task runs finished here took, start to outcome (input fetches included).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    m.encode_histogram::<NoLabelSet>(t.sum_secs(), t.count(), &t.buckets(), None)
}

impl Collector for PeerMetrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let s = self.peer.status();
        let node = self.peer.node();
        let net = node.stats();
        let view = node.view();
        let e = &mut e;

        let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        info.encode(e.encode_descriptor(
            "shoal_build",
            "The shoal worker's version.",
            None,
            info.metric_type(),
        )?)?;

        // Tasks.
        counter(e, "shoal_tasks_run", "Task runs finished here, successful or not.", None, s.tasks_done)?;
        counter(e, "shoal_tasks_failed", "Task runs finished here that failed.", None, s.tasks_failed)?;
        counter(
            e,
            "shoal_fuel_used",
            "Fuel (WebAssembly work units) used by successful runs.",
            None,
            s.fuel_used,
        )?;
        task_times(e, &s.task_times)?;
        let mut m = e.encode_descriptor(
            "shoal_refused",
            "Peer input refused, by reason (docs/protocol-hardening.md).",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in s.refused.by_reason() {
            m.encode_family(&[("reason", reason)])?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        counter(
            e,
            "shoal_tasks_handed_back",
            "Queued tasks handed back to their owners unrun (a graceful leave).",
            None,
            s.handed_back,
        )?;
        gauge(e, "shoal_tasks_running", "Tasks running now.", None, s.running as u64)?;
        gauge(
            e,
            "shoal_tasks_queued",
            "Tasks in the ready queue (the queue's length).",
            None,
            u64::from(s.queued),
        )?;
        gauge(
            e,
            "shoal_cores",
            "Tasks this worker runs at once (cores donated).",
            None,
            u64::from(self.peer.cores()),
        )?;
        gauge(e, "shoal_jobs_owned", "Jobs submitted to this peer and not finished.", None, s.jobs as u64)?;

        // Stealing.
        counter(e, "shoal_steals_tried", "Steal requests sent to other peers.", None, s.steals_tried)?;
        counter(
            e,
            "shoal_steals_won",
            "Steal requests answered with at least one task.",
            None,
            s.steals_won,
        )?;
        counter(e, "shoal_tasks_stolen", "Tasks received by stealing.", None, s.tasks_stolen)?;

        // Network.
        gauge(e, "shoal_peers_known", "Peers in this peer's membership view.", None, view.len() as u64)?;
        counter(
            e,
            "shoal_network_sent",
            "Bytes sent in UDP datagrams to other peers (QUIC's count).",
            Some(&Unit::Bytes),
            net.udp_bytes_sent,
        )?;
        counter(
            e,
            "shoal_network_received",
            "Bytes received in UDP datagrams from other peers (QUIC's count).",
            Some(&Unit::Bytes),
            net.udp_bytes_received,
        )?;
        counter(e, "shoal_messages_sent", "Scheduling messages sent to other peers.", None, net.sched_sent)?;
        counter(e, "shoal_messages_received", "Scheduling messages received.", None, net.sched_received)?;
        counter(
            e,
            "shoal_sends_dropped",
            "Messages to other peers dropped: an outbox full or the peer unreachable.",
            None,
            s.sends_dropped,
        )?;
        counter(e, "shoal_blobs_fetched", "Blobs fetched from other peers.", None, net.blobs_fetched)?;
        counter(
            e,
            "shoal_blobs_fetched",
            "Bytes of the blobs fetched from other peers.",
            Some(&Unit::Bytes),
            net.blob_bytes_fetched,
        )?;
        counter(
            e,
            "shoal_relayed_sent",
            "Datagram bytes sent to other peers through relays (docs/nat.md).",
            Some(&Unit::Bytes),
            net.relayed_bytes_sent,
        )?;
        counter(
            e,
            "shoal_relayed_received",
            "Datagram bytes received from other peers through relays.",
            Some(&Unit::Bytes),
            net.relayed_bytes_received,
        )?;
        counter(
            e,
            "shoal_relay_forwarded",
            "Datagram bytes this worker forwarded as a relay.",
            Some(&Unit::Bytes),
            net.relay_bytes_forwarded,
        )?;
        counter(
            e,
            "shoal_relay_refused",
            "Datagrams this worker refused to forward as a relay (no reservation, or over a cap).",
            None,
            net.relay_refused,
        )?;
        for entry in &view {
            if let Some(rtt) = node.rtt_of(entry.id) {
                self.rtt.observe(rtt.as_secs_f64());
            }
        }
        self.rtt.encode(e.encode_descriptor(
            "shoal_peer_rtt",
            "Round-trip time to the connected peers: one sample per peer per scrape.",
            Some(&Unit::Seconds),
            self.rtt.metric_type(),
        )?)?;

        // Disk.
        let blobs = node.blobs();
        gauge(
            e,
            "shoal_blob_store",
            "Bytes held in the blob store.",
            Some(&Unit::Bytes),
            blobs.total_bytes(),
        )?;
        gauge(e, "shoal_blob_store_blobs", "Blobs held in the blob store.", None, blobs.count() as u64)?;
        gauge(
            e,
            "shoal_blob_store_budget",
            "The blob store's disk budget.",
            Some(&Unit::Bytes),
            blobs.budget(),
        )?;
        Ok(())
    }
}

/// The registry behind the page.
fn registry(peer: Arc<Peer>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(PeerMetrics::new(peer)));
    r
}

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
async fn page(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let open = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, content_type) = if open {
        (prometheus_client::encoding::text::encode(&mut body, &registry), OPENMETRICS)
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body),
        Err(fmt::Error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode the metrics\n".to_string(),
        ),
    }
}

/// `GET /`: where the metrics are.
async fn index() -> &'static str {
    "shoal worker: Prometheus metrics at /metrics\n"
}

/// Binds the metrics address (before the peer starts, so a taken port fails fast).
pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve metrics on {addr}: choose another --metrics address (port 0 picks a free one)")
    })
}

/// The metrics server; dropping it stops it.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    /// The address it serves at (the bound one: a port 0 resolved).
    pub(crate) addr: SocketAddr,
    /// Dropping it ends the server's graceful shutdown wait.
    _stop: oneshot::Sender<()>,
}

/// Serves `peer`'s metrics on `listener` until the returned server is dropped.
pub(crate) fn serve(listener: TcpListener, peer: Arc<Peer>) -> anyhow::Result<MetricsServer> {
    let addr = listener.local_addr().context("cannot read the metrics address")?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(page))
        .route("/", axum::routing::get(index))
        .with_state(Arc::new(registry(peer)));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!("the metrics server stopped: {e}");
        }
    });
    Ok(MetricsServer { addr, _stop: stop })
}
