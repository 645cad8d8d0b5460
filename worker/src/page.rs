//! The live status page of `shoal worker --http ADDR` and `shoal submit --http ADDR`: one HTML
//! page embedded in the binary (`page.html`, inline CSS and JS, no external assets) that shows this
//! peer, its peers with RTT and path, the task runs here now and recently, and the jobs owned here
//! with their DAG's task states; it updates itself from server-sent events.
//!
//! Endpoints: `GET /` (the page), `GET /events` (SSE: an event `status` whose data is the same
//! JSON as `/api/status`, sent when it changes: checked on every status change of the peer, at most every [`MIN_GAP`],
//! and at least every [`TICK`]), `GET /api/status` (JSON).
//!
//! Invariants: the server is read-only (GET only, nothing changes the peer); the page renders
//! every peer-supplied string (task names, ids, failure reasons) with `textContent` or SVG text
//! nodes, never as HTML, and its Content-Security-Policy allows only its own inline script (by
//! hash), its inline style and connections to itself; a server bound to a loopback address
//! answers only requests whose `Host` is a loopback name or an IP literal (a web page elsewhere
//! cannot read it through DNS rebinding).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;
use shoal_node::{Activity, JobView, Monitor, RunEnd, TaskRun};

/// The page, embedded.
const PAGE: &str = include_str!("page.html");
/// How often `/events` looks for changes when the peer's status does not change.
const TICK: Duration = Duration::from_millis(500);
/// The least time between two looks (a status change wakes it sooner than [`TICK`]).
const MIN_GAP: Duration = Duration::from_millis(150);

/// What the page serves for: a volunteer's worker or the submitting peer of `shoal submit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    Worker,
    Submitter,
}

#[derive(Debug)]
struct Shared {
    monitor: Monitor,
    role: Role,
    started: Instant,
    csp: HeaderValue,
    loopback: bool,
}

/// A running status page; dropping it does not stop it (it ends with the runtime).
#[derive(Debug)]
pub(crate) struct StatusPage {
    /// The address it is bound to (the real port when asked for port 0).
    pub(crate) addr: SocketAddr,
}

impl StatusPage {
    /// The page's URL, `http://ADDR/`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// Binds `addr` and serves the page of the peer behind `monitor` until the runtime ends.
pub(crate) async fn serve(addr: SocketAddr, monitor: Monitor, role: Role) -> anyhow::Result<StatusPage> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the status page on {addr} (--http): is the port taken?"))?;
    let bound = listener.local_addr().context("the status page's address")?;
    let shared = Arc::new(Shared {
        monitor,
        role,
        started: Instant::now(),
        csp: HeaderValue::from_str(&content_security_policy(PAGE)).context("the page's CSP header")?,
        loopback: bound.ip().is_loopback(),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/api/status", get(api_status))
        .route("/events", get(events))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), check_host))
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the status page stopped: {e}");
        }
    });
    Ok(StatusPage { addr: bound })
}

/// The CSP for `page`: nothing from elsewhere; its one inline `<script>` allowed by hash.
fn content_security_policy(page: &str) -> String {
    use sha2::Digest;
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(body, _)| body);
    let hash = data_encoding::BASE64.encode(&sha2::Sha256::digest(script.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Refuses a request to a loopback-bound page whose `Host` is a name other than `localhost`.
async fn check_host(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if s.loopback {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !host_is_local(host) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this status page answers on loopback addresses only\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Whether a `Host` header names an IP literal or `localhost` (with or without a port).
fn host_is_local(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn page(State(s): State<Arc<Shared>>) -> Response {
    let mut resp = Html(PAGE).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, s.csp.clone());
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn api_status(State(s): State<Arc<Shared>>) -> Response {
    let mut resp = Json(snapshot(&s).await).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Server-sent events: the snapshot as JSON whenever it changes (checked when the peer's status
/// changes and every [`TICK`]); ends when the peer stops.
async fn events(
    State(s): State<Arc<Shared>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    struct St {
        shared: Arc<Shared>,
        status: tokio::sync::watch::Receiver<shoal_node::PeerStatus>,
        last: String,
        first: bool,
        over: bool,
    }
    let status = s.monitor.watch_status();
    let init = St { shared: s, status, last: String::new(), first: true, over: false };
    let stream = futures_util::stream::unfold(init, |mut st| async move {
        loop {
            if st.over {
                return None;
            }
            if !st.first {
                // At most one snapshot per MIN_GAP: a busy peer changes status many times a second.
                tokio::time::sleep(MIN_GAP).await;
                tokio::select! {
                    _ = st.status.changed() => {}
                    () = tokio::time::sleep(TICK) => {}
                }
            }
            st.first = false;
            let snap = snapshot(&st.shared).await;
            // A stopped peer: send its last picture, then end the stream.
            st.over = !snap.peer.live;
            let json = serde_json::to_string(&snap).unwrap_or_default();
            if json != st.last {
                st.last.clone_from(&json);
                return Some((Ok(Event::default().event("status").data(json)), st));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `/api/status` and each event's data.
#[derive(Debug, Serialize)]
struct Snapshot {
    version: &'static str,
    role: Role,
    uptime_s: u64,
    peer: PeerJson,
    peers: Vec<NeighbourJson>,
    running: Vec<RunJson>,
    recent: Vec<RunJson>,
    jobs: Vec<JobJson>,
}

#[derive(Debug, Serialize)]
struct PeerJson {
    id: String,
    addr: SocketAddr,
    cores: u32,
    memory: u64,
    /// `running` (donating) or `paused`.
    state: &'static str,
    /// Why it is paused (`user`, `not_idle`, …), and in words.
    paused: Option<&'static str>,
    paused_why: Option<String>,
    /// The actor still answers.
    live: bool,
    tasks_running: usize,
    tasks_queued: u32,
    tasks_done: u64,
    /// Fuel of the successful runs here: what this peer earned.
    fuel_earned: u64,
    jobs_owned: usize,
}

#[derive(Debug, Serialize)]
struct NeighbourJson {
    id: String,
    addr: SocketAddr,
    /// QUIC's estimate on the live connection; `None` when not talking to it now.
    rtt_ms: Option<f64>,
    /// How it is reached: `direct` (relays do not exist yet).
    path: &'static str,
    free_slots: u32,
    ready_tasks: u32,
    age: u32,
}

#[derive(Debug, Serialize)]
struct RunJson {
    task: String,
    job: String,
    index: u32,
    attempt: u32,
    owner: String,
    module: String,
    started_ms: u64,
    duration_ms: u64,
    /// `running`, `ok` or `failed`.
    outcome: &'static str,
    fuel: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct TaskJson {
    name: String,
    state: &'static str,
    at: Option<String>,
}

#[derive(Debug, Serialize)]
struct JobJson {
    id: String,
    /// `running`, `done` or `failed`.
    state: &'static str,
    error: Option<String>,
    total: usize,
    done: usize,
    placed: usize,
    failed: usize,
    peers_used: usize,
    fuel_used: u64,
    elapsed_s: f64,
    tasks: Vec<TaskJson>,
    edges: Vec<(u32, u32)>,
}

async fn snapshot(s: &Shared) -> Snapshot {
    let m = &s.monitor;
    let status = m.status();
    let activity = m.activity().await;
    let live = activity.is_some();
    let Activity { running, recent, jobs } = activity.unwrap_or_default();
    let peers = m
        .node()
        .view()
        .into_iter()
        .map(|e| NeighbourJson {
            id: e.id.to_string(),
            addr: e.addr,
            rtt_ms: m.node().rtt_of(e.id).map(|d| d.as_secs_f64() * 1e3),
            path: "direct",
            free_slots: e.hints.free_slots,
            ready_tasks: e.hints.ready_tasks,
            age: e.age,
        })
        .collect();
    Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        role: s.role,
        uptime_s: s.started.elapsed().as_secs(),
        peer: PeerJson {
            id: m.peer_id().to_string(),
            addr: m.local_addr(),
            cores: m.cores(),
            memory: m.memory(),
            state: if status.paused.is_some() { "paused" } else { "running" },
            paused: status.paused.map(|p| p.name()),
            paused_why: status.paused.map(|p| p.to_string()),
            live,
            tasks_running: status.running,
            tasks_queued: status.queued,
            tasks_done: status.tasks_done,
            fuel_earned: status.fuel_used,
            jobs_owned: status.jobs,
        },
        peers,
        running: running.iter().map(run_json).collect(),
        recent: recent.iter().map(run_json).collect(),
        jobs: jobs.iter().map(job_json).collect(),
    }
}

fn run_json(r: &TaskRun) -> RunJson {
    let (outcome, fuel, error) = match &r.end {
        None => ("running", None, None),
        Some(RunEnd::Ok { fuel }) => ("ok", Some(*fuel), None),
        Some(RunEnd::Failed(why)) => ("failed", None, Some(why.clone())),
    };
    RunJson {
        task: r.task.to_string(),
        job: r.task.job.to_string(),
        index: r.task.index.0,
        attempt: r.attempt,
        owner: r.owner.to_string(),
        module: r.module.short(),
        started_ms: r.started.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        duration_ms: r.elapsed.as_millis() as u64,
        outcome,
        fuel,
        error,
    }
}

fn job_json(j: &JobView) -> JobJson {
    let (state, error) = match &j.end {
        None => ("running", None),
        Some(Ok(())) => ("done", None),
        Some(Err(why)) => ("failed", Some(why.clone())),
    };
    let p = &j.progress;
    JobJson {
        id: j.id.to_string(),
        state,
        error,
        total: p.total,
        done: p.done,
        placed: p.running,
        failed: p.failed,
        peers_used: p.peers_used,
        fuel_used: p.fuel_used,
        elapsed_s: j.elapsed.as_secs_f64(),
        tasks: j
            .tasks
            .iter()
            .map(|t| TaskJson {
                name: t.name.clone(),
                state: t.phase.name(),
                at: t.at.map(|p| p.to_string()),
            })
            .collect(),
        edges: j.edges.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_and_ip_literals_pass_the_host_check() {
        for ok in ["127.0.0.1:7680", "localhost:80", "LOCALHOST", "[::1]:7680", "10.0.0.2:1", "[fe80::1]"] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in ["evil.example:7680", "", "127.0.0.1.nip.io:7680", "[evil]:1"] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }

    #[test]
    fn the_csp_allows_exactly_the_pages_script() {
        let csp = content_security_policy("<p>x</p><script>run()</script>");
        use sha2::Digest;
        let want = data_encoding::BASE64.encode(&sha2::Sha256::digest(b"run()"));
        assert!(csp.contains(&format!("script-src 'sha256-{want}'")), "{csp}");
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
        assert_eq!(PAGE.matches("<script>").count(), 1, "the page has one inline script, hashed whole");
        assert!(!PAGE.contains("innerHTML"), "peer-supplied strings are never rendered as HTML");
        assert!(!PAGE.contains("src=\"http") && !PAGE.contains("href=\"http"), "no external assets");
    }
}
