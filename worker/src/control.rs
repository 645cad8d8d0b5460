//! The worker's local control socket: `<data dir>/control.sock`, a Unix domain socket that
//! `shoal status` and `shoal peers` ask what the worker is doing, and `shoal worker pause` /
//! `resume` tell it to stop or start donating.
//!
//! Protocol: the client sends one JSON request line (`{"cmd":"status"}`, `{"cmd":"peers"}`,
//! `{"cmd":"pause"}` or `{"cmd":"resume"}`), the worker answers with one JSON line
//! (`{"status":{..}}`, `{"peers":[..]}`, `{"paused":true}` / `{"paused":false}` or
//! `{"error":"..."}`) and closes the connection. Types here are shared by server and client.
//!
//! Invariants:
//! - One worker per data directory: [`DataDirLock`] holds an exclusive lock on
//!   `<data dir>/worker.lock` for the worker's lifetime (released by the OS if it dies), and a
//!   [`ControlSocket`] can only be bound under that lock — so a `control.sock` found at bind time
//!   is always stale and is replaced.
//! - The socket file is mode 0600 from the moment it appears under its name (bound in a private
//!   0700 directory, then renamed into place), and is removed when the server stops.
//! - A client cannot hurt the worker: each connection has its own task, a request is capped at
//!   [`Limits::max_request`] bytes and [`Limits::io_timeout`], and at most
//!   [`Limits::max_connections`] are served at once (extra ones are closed at once).

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The socket's file name in the data directory.
pub(crate) const SOCKET_FILE: &str = "control.sock";
/// The longest socket path `bind` accepts.
const MAX_SOCKET_PATH: usize = 107;
/// The lock file's name in the data directory.
pub(crate) const LOCK_FILE: &str = "worker.lock";

/// A request: one JSON line, e.g. `{"cmd":"status"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Request {
    /// The worker's own state.
    Status,
    /// The peers in its membership view.
    Peers,
    /// Stop donating until `Resume` (overrides the donation policy).
    Pause,
    /// Donate again, as far as the donation policy allows.
    Resume,
}

/// What `{"cmd":"status"}` returns (and `shoal status --json` prints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// The worker's peer id (text form).
    pub(crate) peer_id: String,
    /// The `shoal` version the worker runs.
    pub(crate) version: String,
    /// The worker's process id.
    pub(crate) pid: u32,
    /// The UDP address it listens on.
    pub(crate) listen: SocketAddr,
    /// Its data directory.
    pub(crate) data_dir: String,
    /// The config file it read, if any.
    pub(crate) config: Option<String>,
    /// Tasks it runs at once.
    pub(crate) cores: u32,
    /// Task memory donated, in bytes.
    pub(crate) memory: u64,
    /// Tasks running now.
    pub(crate) running: usize,
    /// Tasks in its ready queue.
    pub(crate) queued: u32,
    /// Task runs finished here since start.
    pub(crate) tasks_done: u64,
    /// Fuel used by the successful ones.
    pub(crate) fuel_used: u64,
    /// Credit earned: fuel of this worker's runs that owners paid in signed receipts (all time,
    /// from the data directory's credit log; `shoal credit` lists them).
    #[serde(default)]
    pub(crate) credit_fuel: u64,
    /// Peers that the jobs owned here caught returning wrong results, with how many times
    /// (from the data directory's trust book; docs/verification.md).
    #[serde(default)]
    pub(crate) caught_lying: std::collections::BTreeMap<String, u32>,
    /// Jobs owned here (submitted through this peer) and not finished.
    pub(crate) jobs: usize,
    /// Peer input refused since start, by reason (the counter names of `shoal_core::sched::Refusals`:
    /// `not_owner`, `not_holder`, `stale`, `bad_signature`, `over_caps`, `queue_full`, …); every
    /// reason is listed, zeros included, so scripts can rely on the keys.
    #[serde(default)]
    pub(crate) refused: std::collections::BTreeMap<String, u64>,
    /// Messages to other peers dropped since start (a peer's bounded outbox full, or the peer
    /// unreachable); the protocol's leases recover what they carried.
    #[serde(default)]
    pub(crate) sends_dropped: u64,
    /// Peers in its membership view.
    pub(crate) peers: usize,
    /// Seconds since the worker started.
    pub(crate) uptime_s: u64,
    /// Why it takes no work now (`user`, `not_idle`, `on_battery`, `outside_hours`,
    /// `machine_busy`); `null`: it donates.
    #[serde(default)]
    pub(crate) paused: Option<String>,
    /// Queued tasks handed back to their owners unrun (pauses and leaving).
    #[serde(default)]
    pub(crate) handed_back: u64,
    /// The URL of its Prometheus metrics (`--metrics`), if it serves them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) metrics: Option<String>,
    /// How other peers reach it (docs/nat.md).
    #[serde(default)]
    pub(crate) reachability: Reachability,
}

/// How a worker is reached, as other peers observe it (`shoal status --json`'s `reachability`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reachability {
    /// `public` (reachable unsolicited), `cone` (behind a NAT that hole punching gets through),
    /// `symmetric` (behind a NAT that needs a relay for some peers) or `unknown` (too few
    /// observations yet).
    pub(crate) nat: String,
    /// The addresses other peers see it at, most recent first.
    pub(crate) observed: Vec<SocketAddr>,
    /// The relays holding a reservation for it (peer ids).
    pub(crate) relays: Vec<String>,
    /// Whether it offers to relay for others.
    pub(crate) relaying: bool,
    /// Datagram bytes it sent to other peers through relays.
    #[serde(default)]
    pub(crate) relayed_bytes_sent: u64,
    /// Datagram bytes it received from other peers through relays.
    #[serde(default)]
    pub(crate) relayed_bytes_received: u64,
    /// Datagram bytes it forwarded as a relay.
    #[serde(default)]
    pub(crate) relay_bytes_forwarded: u64,
    /// Datagrams it refused to forward as a relay (no reservation, or over a cap).
    #[serde(default)]
    pub(crate) relay_refused: u64,
}

/// One entry of `{"cmd":"peers"}` (and `shoal peers --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PeerInfo {
    /// The peer's id (text form).
    pub(crate) peer_id: String,
    /// Where it is reached.
    pub(crate) addr: SocketAddr,
    /// Task slots it had free, as last heard.
    pub(crate) free_slots: u32,
    /// Stealable tasks it had queued, as last heard.
    pub(crate) ready_tasks: u32,
    /// Shuffle rounds since it vouched for this entry itself (0 = first-hand).
    pub(crate) age: u32,
    /// How this worker's connection to it runs now: `direct`, `relayed`, or `null` when not
    /// connected.
    #[serde(default)]
    pub(crate) path: Option<String>,
    /// The relay's peer id, when `path` is `relayed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) relay: Option<String>,
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Response {
    Status(Box<Status>),
    Peers(Vec<PeerInfo>),
    /// The answer to `Pause` (`true`) or `Resume` (`false`): the volunteer's pause is now so.
    Paused(bool),
    /// The request was not understood (or not sent in time).
    Error(String),
}

/// What a misbehaving client may cost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest request line, newline included.
    pub(crate) max_request: usize,
    /// Time a client has to send its request, and again to take the response.
    pub(crate) io_timeout: Duration,
    /// Connections served at once.
    pub(crate) max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_request: 4096, io_timeout: Duration::from_secs(5), max_connections: 16 }
    }
}

/// Exclusive use of a data directory by this process, until dropped (or the process dies).
#[derive(Debug)]
pub(crate) struct DataDirLock {
    dir: PathBuf,
    _file: std::fs::File,
}

/// Why a data directory cannot be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another live process holds it.
    Busy(PathBuf),
    /// The lock file cannot be opened or locked.
    Io { path: PathBuf, source: io::Error },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy(dir) => write!(
                f,
                "another shoal worker is running with the data directory {} (it holds {LOCK_FILE}); \
                 two workers cannot share one: give this one another --data-dir",
                dir.display()
            ),
            LockError::Io { path, source } => write!(f, "cannot lock {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Busy(_) => None,
            LockError::Io { source, .. } => Some(source),
        }
    }
}

impl DataDirLock {
    /// Takes `dir` (which must exist) for this process, without waiting.
    pub(crate) fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { dir: dir.to_path_buf(), _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Busy(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// The locked directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The path of the control socket of the worker using `data_dir`.
pub(crate) fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// A bound control socket, not serving yet (connections wait in the backlog).
#[derive(Debug)]
pub(crate) struct ControlSocket {
    path: PathBuf,
    /// `None` once handed to the server.
    listener: Option<std::os::unix::net::UnixListener>,
}

impl ControlSocket {
    /// Binds `<data dir>/control.sock` (mode 0600), replacing a stale one: `lock` proves no other
    /// worker uses the directory.
    pub(crate) fn bind(lock: &DataDirLock) -> io::Result<ControlSocket> {
        let path = socket_path(lock.dir());
        // A Unix socket's path must fit `sockaddr_un` (107 bytes and a NUL on Linux); the staged
        // path below is never longer than the final one.
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the control socket path {} is {len} bytes, more than the {MAX_SOCKET_PATH} a Unix socket \
                     allows: use a shorter data directory",
                    path.display()
                ),
            ));
        }
        let private = lock.dir().join(format!(".c{}", std::process::id()));
        let staged = private.join("s");
        let context = |what: &str, p: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
        };
        match std::fs::remove_dir_all(&private) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context("cannot remove", &private, e)),
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|e| context("cannot create", &private, e))?;
        let bound = (|| -> io::Result<std::os::unix::net::UnixListener> {
            let listener = std::os::unix::net::UnixListener::bind(&staged)
                .map_err(|e| context("cannot bind the control socket", &staged, e))?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| context("cannot restrict", &staged, e))?;
            // Atomically replaces a stale socket left by a worker that was killed.
            std::fs::rename(&staged, &path).map_err(|e| context("cannot create", &path, e))?;
            Ok(listener)
        })();
        let _ = std::fs::remove_dir_all(&private);
        let listener = bound?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket { path, listener: Some(listener) })
    }

    /// Serves requests with `handler` on the current tokio runtime until the server is dropped.
    pub(crate) fn serve<H>(mut self, limits: Limits, handler: H) -> io::Result<ControlServer>
    where
        H: Fn(Request) -> Response + Send + Sync + 'static,
    {
        let std_listener =
            self.listener.take().ok_or_else(|| io::Error::other("control socket already served"))?;
        let listener = UnixListener::from_std(std_listener)?;
        let task = tokio::spawn(accept_loop(listener, limits, Arc::new(handler)));
        // The server owns the socket file from here on.
        Ok(ControlServer { path: std::mem::take(&mut self.path), task })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Dropped without serving (e.g. the peer failed to start): take the name away too.
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A serving control socket; dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub(crate) struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop<H>(listener: UnixListener, limits: Limits, handler: Arc<H>)
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("control socket: too many clients, closing one");
            continue;
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, limits, &*handler).await {
                tracing::debug!(error = %e, "control socket: client dropped");
            }
            drop(slot);
        });
    }
}

/// Reads one request line and writes one response line.
async fn serve_one(
    stream: UnixStream,
    limits: Limits,
    handler: &(dyn Fn(Request) -> Response + Send + Sync),
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let cap = u64::try_from(limits.max_request).unwrap_or(u64::MAX).saturating_add(1);
    let mut reader = tokio::io::BufReader::new(read.take(cap));
    let mut line = Vec::new();
    let response = match tokio::time::timeout(limits.io_timeout, reader.read_until(b'\n', &mut line)).await {
        Err(_) => Response::Error(format!("no request line within {:?}", limits.io_timeout)),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > limits.max_request => {
            Response::Error(format!("request longer than {} bytes", limits.max_request))
        }
        Ok(Ok(_)) => parse_request(&line).map_or_else(Response::Error, handler),
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    tokio::time::timeout(limits.io_timeout, async {
        write.write_all(&out).await?;
        write.shutdown().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client did not take the response"))?
}

fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|_| "the request is not UTF-8".to_string())?;
    serde_json::from_str(text.trim())
        .map_err(|e| format!("bad request ({e}): expected {{\"cmd\":\"status\"}}, {{\"cmd\":\"peers\"}}, {{\"cmd\":\"pause\"}} or {{\"cmd\":\"resume\"}}"))
}

/// Sends `request` to the worker listening on `socket` and returns its response (blocking, each
/// step bounded by `timeout`). `NotFound` / `ConnectionRefused` mean no worker runs there.
pub(crate) fn query(socket: &Path, request: Request, timeout: Duration) -> io::Result<Response> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(&request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    // Responses are small; a worker never sends megabytes, and a reader bound keeps it so.
    io::BufReader::new(io::Read::take(&stream, 64 << 20)).read_line(&mut reply)?;
    serde_json::from_str(reply.trim()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable reply from the worker ({e}): {reply:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn status() -> Status {
        Status {
            peer_id: "p".into(),
            version: "0".into(),
            pid: 1,
            listen: "127.0.0.1:1".parse().unwrap(),
            data_dir: "/d".into(),
            config: None,
            cores: 1,
            memory: 2,
            running: 0,
            queued: 0,
            tasks_done: 3,
            fuel_used: 4,
            credit_fuel: 4,
            caught_lying: [("abc".to_string(), 1)].into(),
            jobs: 0,
            refused: [("over_caps".to_string(), 2)].into(),
            sends_dropped: 0,
            peers: 0,
            uptime_s: 5,
            paused: Some("user".into()),
            handed_back: 2,
            metrics: None,
            reachability: Reachability {
                nat: "cone".into(),
                observed: vec!["203.0.113.7:7600".parse().unwrap()],
                relays: vec!["r".into()],
                relaying: false,
                ..Reachability::default()
            },
        }
    }

    fn handler(r: Request) -> Response {
        match r {
            Request::Status => Response::Status(Box::new(status())),
            Request::Peers => Response::Peers(vec![]),
            Request::Pause => Response::Paused(true),
            Request::Resume => Response::Paused(false),
        }
    }

    async fn raw(path: &Path, send: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(send).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn ask(path: &Path, r: Request) -> Response {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || query(&path, r, Duration::from_secs(5))).await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn answers_requests_and_survives_bad_clients() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let limits = Limits { max_request: 64, io_timeout: Duration::from_millis(200), max_connections: 4 };
        let socket = ControlSocket::bind(&lock).unwrap();
        let path = socket_path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let server = socket.serve(limits, handler).unwrap();

        assert_eq!(ask(&path, Request::Status).await, Response::Status(Box::new(status())));
        assert_eq!(ask(&path, Request::Peers).await, Response::Peers(vec![]));
        assert_eq!(ask(&path, Request::Pause).await, Response::Paused(true));
        assert_eq!(raw(&path, b"{\"cmd\":\"resume\"}\n").await, "{\"paused\":false}\n");
        // No trailing newline but a closed write half is a request too.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(br#"{"cmd":"peers"}"#).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "{\"peers\":[]}\n");

        let out = raw(&path, b"garbage\n").await;
        assert!(out.starts_with("{\"error\":\"bad request"), "{out}");
        let out = raw(&path, b"{\"cmd\":\"reboot\"}\n").await;
        assert!(out.contains("unknown variant `reboot`"), "{out}");
        // The worker stops reading at the cap and closes with the rest unread, so the client may
        // see its connection reset instead of the answer.
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&[b'x'; 1000]).await.unwrap();
        let mut out = String::new();
        match s.read_to_string(&mut out).await {
            Ok(_) => assert!(out.contains("request longer than 64 bytes"), "{out}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        }
        let out = raw(&path, &[0xff, 0xfe, b'\n']).await;
        assert!(out.contains("not UTF-8"), "{out}");

        // Silent clients hold their slots only until the timeout; meanwhile extra ones are
        // turned away, and afterwards requests are served again.
        let mut idle = Vec::new();
        for _ in 0..6 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        let mut timed_out = String::new();
        idle[0].read_to_string(&mut timed_out).await.unwrap();
        assert!(timed_out.contains("no request line within"), "{timed_out}");
        drop(idle);
        assert_eq!(ask(&path, Request::Status).await, Response::Status(Box::new(status())));

        drop(server);
        assert!(!path.exists(), "the socket file is removed when the server stops");
        let e = query(&path, Request::Status, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn one_worker_per_data_dir_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let e = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(e, LockError::Busy(_)), "{e}");
        assert!(e.to_string().contains("another shoal worker is running"), "{e}");

        // A killed worker leaves its socket file behind: nothing answers on it.
        let stale = socket_path(dir.path());
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let e = query(&stale, Request::Status, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let server = ControlSocket::bind(&lock).unwrap().serve(Limits::default(), handler).unwrap();
        assert_eq!(ask(&stale, Request::Status).await, Response::Status(Box::new(status())));
        drop(server);
        drop(lock);
        // Released: the next worker takes the directory.
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let socket = ControlSocket::bind(&lock).unwrap();
        drop(socket);
        assert!(!stale.exists(), "an unused socket is removed too");
        let deep = dir.path().join("d".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let e = ControlSocket::bind(&DataDirLock::acquire(&deep).unwrap()).unwrap_err();
        assert!(e.to_string().contains("use a shorter data directory"), "{e}");
        std::fs::remove_dir_all(&deep).unwrap();
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(LOCK_FILE)]);
    }
}
