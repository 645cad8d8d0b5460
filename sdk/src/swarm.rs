//! Running jobs on a swarm: [`Swarm::join`] starts an embedded peer that joins an existing swarm and
//! owns the jobs submitted through it; [`Swarm::local`] starts a whole swarm in this process.
//!
//! The embedded peer is a full [`shoal_node::Peer`] (QUIC, membership, the scheduler state
//! machines, the sandbox): it stores the job's modules and literal inputs and serves them to the
//! peers that run its tasks, tracks every task as the job's owner, and fetches the outputs asked
//! for. It donates no cores unless [`SwarmConfig::cores`] says so.
//!
//! Invariants: a [`Submission`]'s outputs are returned exactly once, by [`Submission::outputs`];
//! a [`ProgressStream`] ends (yields `None`) once its job is over; data directories this module
//! creates are removed by [`Swarm::shutdown`] (or when the `Swarm` is dropped).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{SigningKey, TrustPolicy};
use shoal_core::ids::JobId;
use shoal_net::SwarmSecret;
use shoal_node::{Config, JobError, JobHandle, JobOutputs, JobProgress, Peer, StartError, SubmitError};
use tokio::sync::watch;

use crate::builder::CompiledJob;

/// How long [`Swarm::local`] waits for its peers to find each other.
const LOCAL_FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a swarm could not be started or joined, or a job not submitted.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    /// A data directory could not be created.
    #[error("cannot create a data directory for the peer: {0}")]
    DataDir(std::io::Error),
    /// The embedded peer could not start (its listen address is taken, its data directory is
    /// not writable, …).
    #[error("cannot start the peer: {0}")]
    Start(#[from] StartError),
    /// No bootstrap peer answered in time. Nothing is left running.
    #[error(
        "no peer answered at {addrs} within {after:?}: check the addresses, that a `shoal worker` \
         runs there and that UDP is not blocked"
    )]
    NoPeerAnswered {
        /// The bootstrap addresses tried.
        addrs: String,
        /// How long it waited.
        after: Duration,
    },
    /// The peers of [`Swarm::local`] did not all see each other in time.
    #[error("the {peers} local peers did not find each other within {after:?}")]
    NotFormed {
        /// Peers started.
        peers: usize,
        /// How long it waited.
        after: Duration,
    },
    /// [`Swarm::local`] was asked for no peers.
    #[error("a local swarm needs at least one peer")]
    NoPeers,
    /// The job was refused before it started (a blob missing or not matching its hash, …).
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// Settings of the embedded peer that [`Swarm::join`] starts.
///
/// ```
/// use shoal_sdk::SwarmConfig;
///
/// let addr: std::net::SocketAddr = "192.0.2.10:7600".parse()?;
/// let cfg = SwarmConfig::default().bootstrap(addr).cores(1);
/// assert_eq!((cfg.bootstrap, cfg.cores), (vec![addr], 1));
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// Peers to join through. Empty (and no `bootstrap_names`): the embedded peer is a swarm of
    /// its own (give it cores).
    pub bootstrap: Vec<SocketAddr>,
    /// `host:port` names of peers to join through, resolved at every join attempt.
    pub bootstrap_names: Vec<String>,
    /// UDP address the embedded peer listens on (default `0.0.0.0:0`: any port; the peers that
    /// run its tasks connect back to fetch modules and inputs).
    pub listen: SocketAddr,
    /// Where its identity and blobs live. `None` (default): a fresh directory under the system
    /// temp dir, removed at shutdown.
    pub data_dir: Option<PathBuf>,
    /// Tasks it runs itself (default 0: it only owns jobs and serves their blobs).
    pub cores: u32,
    /// Linear memory its tasks may use together (default 256 MiB per core).
    pub memory: Option<u64>,
    /// The private swarm's secret, if the swarm has one.
    pub swarm_secret: Option<Vec<u8>>,
    /// How long to wait for a bootstrap peer to answer (default 10 s).
    pub join_timeout: Duration,
    /// Signs every job submitted unsigned through the `Swarm` (see [`CompiledJob::sign`]).
    pub signing_key: Option<SigningKey>,
    /// Whose tasks the embedded peer runs when it donates cores. `None` (default): a worker's
    /// default, which takes unsigned jobs only in a swarm with a swarm secret (its own jobs, and
    /// those signed by `signing_key`, always).
    pub trust: Option<TrustPolicy>,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            bootstrap: Vec::new(),
            bootstrap_names: Vec::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            data_dir: None,
            cores: 0,
            memory: None,
            swarm_secret: None,
            join_timeout: Duration::from_secs(10),
            signing_key: None,
            trust: None,
        }
    }
}

impl SwarmConfig {
    /// Adds a bootstrap address.
    #[must_use]
    pub fn bootstrap(mut self, addr: SocketAddr) -> Self {
        self.bootstrap.push(addr);
        self
    }

    /// Adds a bootstrap peer given as an address or a `host:port` name (see
    /// [`shoal_net::Bootstrap`]).
    #[must_use]
    pub fn bootstrap_peer(mut self, peer: shoal_net::Bootstrap) -> Self {
        match peer {
            shoal_net::Bootstrap::Addr(a) => self.bootstrap.push(a),
            shoal_net::Bootstrap::Name(n) => self.bootstrap_names.push(n),
        }
        self
    }

    /// Sets the cores the embedded peer donates.
    #[must_use]
    pub fn cores(mut self, cores: u32) -> Self {
        self.cores = cores;
        self
    }

    /// The peer configuration for data directory `dir`.
    fn node_config(&self, dir: PathBuf) -> Config {
        let mut cfg = Config::new(dir);
        cfg.cores = self.cores;
        cfg.memory = self.memory.unwrap_or(u64::from(self.cores.max(1)) * (256 << 20));
        cfg.net.listen = self.listen;
        cfg.net.bootstrap = self.bootstrap.clone();
        cfg.net.bootstrap_names = self.bootstrap_names.clone();
        cfg.net.swarm_secret = self.swarm_secret.as_deref().map(SwarmSecret::new);
        cfg.sched.trust = self.trust.clone().unwrap_or_else(|| {
            let mut trust =
                TrustPolicy { accept_unsigned: self.swarm_secret.is_some(), ..TrustPolicy::default() };
            trust.trusted_submitters.extend(self.signing_key.as_ref().map(SigningKey::public));
            trust
        });
        cfg
    }

    /// Signs every job submitted unsigned with `key`.
    #[must_use]
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }
}

/// Peers started by this process: the first owns the jobs submitted through the `Swarm`.
#[derive(Debug)]
pub struct Swarm {
    peers: Vec<Peer>,
    /// Signs jobs submitted unsigned.
    signing_key: Option<SigningKey>,
    /// Data directories created here, removed when dropped (after the peers stopped).
    dirs: Vec<tempfile::TempDir>,
}

impl Swarm {
    /// Starts an embedded peer that joins the swarm through `cfg.bootstrap` and owns the jobs
    /// submitted through the returned `Swarm`. Returns once a bootstrap peer answered (or at once
    /// without bootstrap addresses); fails with [`SwarmError::NoPeerAnswered`] after
    /// `cfg.join_timeout`.
    pub async fn join(cfg: SwarmConfig) -> Result<Swarm, SwarmError> {
        let mut dirs = Vec::new();
        let dir = match &cfg.data_dir {
            Some(d) => d.clone(),
            None => {
                let tmp = temp_dir()?;
                let path = tmp.path().to_path_buf();
                dirs.push(tmp);
                path
            }
        };
        let peer = Peer::start(cfg.node_config(dir)).await?;
        let joining = !cfg.bootstrap.is_empty() || !cfg.bootstrap_names.is_empty();
        if joining && !wait_for_peers(&peer, 1, cfg.join_timeout).await {
            peer.kill().await;
            let addrs: Vec<String> = cfg
                .bootstrap
                .iter()
                .map(ToString::to_string)
                .chain(cfg.bootstrap_names.iter().cloned())
                .collect();
            return Err(SwarmError::NoPeerAnswered { addrs: addrs.join(", "), after: cfg.join_timeout });
        }
        Ok(Swarm { peers: vec![peer], signing_key: cfg.signing_key, dirs })
    }

    /// Starts `n` peers in this process, one core each, on loopback (real QUIC between them), in
    /// fresh temp directories; returns once every peer sees every other. The first peer owns the
    /// jobs submitted through the `Swarm` and runs tasks too. For tests and examples.
    ///
    /// ```
    /// use shoal_sdk::{Job, Swarm};
    ///
    /// let wasm = concat!(env!("CARGO_MANIFEST_DIR"), "/../jobs/wasm");
    /// let mut job = Job::new();
    /// let primes = job.module_file(format!("{wasm}/primes.wasm"))?;
    /// let sum = job.module_file(format!("{wasm}/sum.wasm"))?;
    /// let low = job.task("low", &primes).args(["0", "500"]).build()?;
    /// let high = job.task("high", &primes).args(["500", "1000"]).build()?;
    /// job.task("total", &sum).input(&low).input(&high).build()?;
    /// let job = job.compile()?;
    ///
    /// let runtime = tokio::runtime::Runtime::new()?;
    /// let outputs = runtime.block_on(async {
    ///     let swarm = Swarm::local(2).await?;
    ///     let submission = swarm.submit(job).await?;
    ///     let outputs = submission.outputs().await;
    ///     swarm.shutdown().await;
    ///     Ok::<_, Box<dyn std::error::Error>>(outputs?)
    /// })?;
    /// assert_eq!(outputs.get("total"), Some(&b"168\n"[..])); // 168 primes below 1000
    /// assert_eq!(outputs.progress.done, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn local(n: usize) -> Result<Swarm, SwarmError> {
        if n == 0 {
            return Err(SwarmError::NoPeers);
        }
        let mut swarm =
            Swarm { peers: Vec::with_capacity(n), signing_key: None, dirs: Vec::with_capacity(n) };
        // A private swarm of its own: nobody else joins it, and its peers take each other's
        // unsigned jobs.
        let secret = rand::random::<[u8; 32]>().to_vec();
        for _ in 0..n {
            let dir = temp_dir()?;
            let mut cfg = SwarmConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                cores: 1,
                swarm_secret: Some(secret.clone()),
                ..SwarmConfig::default()
            }
            .node_config(dir.path().to_path_buf());
            if let Some(first) = swarm.peers.first() {
                cfg.net.bootstrap = vec![first.local_addr()];
            }
            swarm.dirs.push(dir);
            match Peer::start(cfg).await {
                Ok(peer) => swarm.peers.push(peer),
                Err(e) => {
                    swarm.shutdown().await;
                    return Err(e.into());
                }
            }
        }
        let formed = tokio::time::timeout(LOCAL_FORM_TIMEOUT, async {
            for p in &swarm.peers {
                while p.node().view().len() < n - 1 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
        .await;
        if formed.is_err() {
            swarm.shutdown().await;
            return Err(SwarmError::NotFormed { peers: n, after: LOCAL_FORM_TIMEOUT });
        }
        Ok(swarm)
    }

    /// The peer that owns the jobs submitted here.
    pub fn peer(&self) -> &Peer {
        // `join` and `local` start at least one peer, and nothing removes one.
        &self.peers[0]
    }

    /// Every peer started by this `Swarm` (one for [`Swarm::join`], `n` for [`Swarm::local`]).
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Submits `job`: its blobs are stored on the owning peer and served from there, and its
    /// tasks are scheduled across the swarm. The outputs named in [`CompiledJob::outputs`] come
    /// back through [`Submission::outputs`].
    pub async fn submit(&self, job: CompiledJob) -> Result<Submission, SwarmError> {
        let job = match &self.signing_key {
            Some(key) if job.signer().is_none() => job.sign(key),
            _ => job,
        };
        let wanted = job.outputs.iter().map(|(_, i)| *i).collect();
        let tasks = job.job.len();
        let handle = self.peer().submit_with_outputs(job.job, job.blobs, wanted).await?;
        Ok(Submission { handle, tasks })
    }

    /// Follows job `id` (submitted from anywhere, maybe detached): its status, its outputs once
    /// it ends, or a signed cancel. See [`crate::attach`].
    pub fn attach(&self, id: JobId) -> crate::Attached<'_> {
        crate::Attached::new(self.peer(), id)
    }

    /// Every job the peers in view own, deputize for or finished recently (the freshest
    /// report of each).
    pub async fn jobs(&self) -> Vec<crate::JobReport> {
        crate::attach::list(self.peer()).await
    }

    /// Leaves the swarm gracefully (each peer hands its queued tasks back, see
    /// [`Peer::shutdown`]); jobs still running end with [`JobError::PeerStopped`]. Removes the
    /// data directories this `Swarm` created.
    pub async fn shutdown(self) {
        for p in self.peers.iter().rev() {
            p.shutdown().await;
        }
        drop(self.dirs);
    }
}

/// A submitted job: follow its progress, cancel it, or wait for its outputs.
#[derive(Debug)]
pub struct Submission {
    handle: JobHandle,
    tasks: usize,
}

impl Submission {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.handle.id()
    }

    /// Detaches from the job: waits (up to `patience`) until its deputies hold it, then hands it
    /// to one of them, which owns it from then on. The submitter may then shut its `Swarm` down;
    /// anyone can follow the job with [`Swarm::attach`]. Returns the new owner.
    pub async fn detach(
        self,
        patience: Duration,
    ) -> Result<shoal_core::ids::PeerId, shoal_node::DetachError> {
        self.handle.detach(patience).await
    }

    /// Tasks in the job.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// The progress as last reported.
    pub fn progress(&self) -> JobProgress {
        self.handle.progress()
    }

    /// A stream of progress reports: one per change, ending when the job is over.
    pub fn progress_stream(&self) -> ProgressStream {
        ProgressStream { rx: self.handle.watch_progress() }
    }

    /// Cancels the job: every peer holding its tasks is told to drop them, and
    /// [`Submission::outputs`] returns [`JobError::Cancelled`].
    pub async fn cancel(&self) {
        self.handle.cancel().await;
    }

    /// A handle that cancels the job while [`Submission::outputs`] waits (from another task or
    /// thread).
    pub fn canceller(&self) -> shoal_node::JobCanceller {
        self.handle.canceller()
    }

    /// Waits for the job to end and returns the wanted outputs (by task name), or why it failed.
    pub async fn outputs(self) -> Result<JobOutputs, JobError> {
        self.handle.wait().await
    }
}

/// Progress reports of one job (see [`Submission::progress_stream`]).
#[derive(Debug)]
pub struct ProgressStream {
    rx: watch::Receiver<JobProgress>,
}

impl ProgressStream {
    /// The next change of progress; `None` once the job is over. Reports may be coalesced: a
    /// slow reader sees the latest counts, never a stale one.
    pub async fn next(&mut self) -> Option<JobProgress> {
        self.rx.changed().await.ok()?;
        Some(*self.rx.borrow_and_update())
    }
}

fn temp_dir() -> Result<tempfile::TempDir, SwarmError> {
    tempfile::Builder::new().prefix("shoal-peer-").tempdir().map_err(SwarmError::DataDir)
}

/// Whether `peer` sees at least `n` other peers within `timeout`.
async fn wait_for_peers(peer: &Peer, n: usize, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, async {
        while peer.node().view().len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}
