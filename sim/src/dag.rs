//! Workloads: a [`SimDag`] is a [`Job`] plus what the simulator needs to "run" it (each task's
//! true work and output size), built by the generators here or loaded from a WfCommons trace.
//!
//! Work is in fuel; the simulated executor runs [`FUEL_PER_SEC`] fuel per second. Every task gets
//! its true work as its cost hint, so every scheduler sees the same priorities.
//! Invariant: `work.len() == out_size.len() == job.len()`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_core::ids::BlobHash;
use shoal_core::job::{InputSpec, Job, JobError, TaskSpec};

/// Fuel the simulated executor runs per second.
pub const FUEL_PER_SEC: f64 = 1e9;

/// A job with its true costs.
#[derive(Clone, Debug)]
pub struct SimDag {
    /// The job the schedulers see.
    pub job: Job,
    /// True work of each task, in fuel.
    pub work: Vec<u64>,
    /// Output size of each task, in bytes.
    pub out_size: Vec<u64>,
}

/// Why a DAG could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DagError {
    /// The `KIND:PARAMS` text is not understood.
    #[error("bad --dag {0:?}: {1}")]
    Spec(String, String),
    /// The generated or loaded job is invalid.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A workflow file could not be read or parsed.
    #[error("workflow {path}: {why}")]
    Workflow {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

impl SimDag {
    /// Total work in seconds.
    pub fn total_work_s(&self) -> f64 {
        self.work.iter().map(|&w| w as f64).sum::<f64>() / FUEL_PER_SEC
    }

    /// The critical path (longest chain of work) in seconds.
    pub fn critical_path_s(&self) -> f64 {
        let mut best = vec![0u64; self.job.len()];
        for &i in self.job.topo_order().iter().rev() {
            let below = self.job.children(i).iter().map(|c| best[c.0 as usize]).max().unwrap_or(0);
            best[i.0 as usize] = below + self.work[i.0 as usize];
        }
        best.into_iter().max().unwrap_or(0) as f64 / FUEL_PER_SEC
    }

    /// Lower bound on the makespan with `slots` slots: max(work / slots, critical path).
    pub fn lower_bound_s(&self, slots: usize) -> f64 {
        (self.total_work_s() / slots.max(1) as f64).max(self.critical_path_s())
    }
}

/// Collects tasks while a generator runs.
struct Builder {
    specs: Vec<TaskSpec>,
    work: Vec<u64>,
    out_size: Vec<u64>,
}

impl Builder {
    fn new() -> Self {
        Builder { specs: Vec::new(), work: Vec::new(), out_size: Vec::new() }
    }

    /// Adds a task running `kind` for `secs`, producing `out` bytes, after `parents`; returns its name.
    fn task(&mut self, kind: &str, secs: f64, out: u64, parents: &[usize]) -> usize {
        let fuel = (secs * FUEL_PER_SEC).round().max(1.0) as u64;
        let i = self.specs.len();
        let mut spec = TaskSpec::new(format!("{kind}-{i}"), BlobHash::of(kind.as_bytes())).cost(fuel);
        spec.args = vec![kind.to_string(), i.to_string()];
        spec.inputs = parents.iter().map(|&p| InputSpec::Output(self.specs[p].name.clone())).collect();
        self.specs.push(spec);
        self.work.push(fuel);
        self.out_size.push(out);
        i
    }

    fn finish(self) -> Result<SimDag, DagError> {
        Ok(SimDag { job: Job::new(self.specs)?, work: self.work, out_size: self.out_size })
    }
}

/// Base task duration of the generators, in seconds.
const UNIT: f64 = 0.01;

fn params(spec: &str, text: &str, defaults: &[usize]) -> Result<Vec<usize>, DagError> {
    let mut out = defaults.to_vec();
    if text.is_empty() {
        return Ok(out);
    }
    for (k, p) in text.split(',').enumerate() {
        let v = p.trim().parse::<usize>().map_err(|e| DagError::Spec(spec.into(), format!("{p:?}: {e}")))?;
        if k >= out.len() {
            return Err(DagError::Spec(spec.into(), format!("at most {} parameters", out.len())));
        }
        if v == 0 {
            return Err(DagError::Spec(spec.into(), "parameters must be positive".into()));
        }
        out[k] = v;
    }
    Ok(out)
}

/// The DAG kinds and their parameters, for `--help` and errors.
pub const KINDS: &str = "tree:LEAVES | forkjoin:WIDTH,STAGES | cholesky:TILES | wavefront:SIDE | \
layered:TASKS,LAYERS,CCR_PERCENT | mapreduce:MAPPERS,REDUCERS";

/// Builds a DAG from `KIND:PARAMS` (see [`KINDS`]); durations vary with `seed`.
pub fn generate(spec: &str, seed: u64) -> Result<SimDag, DagError> {
    let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0064_6167);
    let mut b = Builder::new();
    match kind {
        "tree" => {
            let n = params(spec, rest, &[1024])?[0];
            let mut level: Vec<usize> =
                (0..n).map(|_| b.task("leaf", UNIT * jitter(&mut rng), 1024, &[])).collect();
            while level.len() > 1 {
                level =
                    level
                        .chunks(2)
                        .map(|c| {
                            if c.len() == 1 {
                                c[0]
                            } else {
                                b.task("reduce", UNIT * jitter(&mut rng), 1024, c)
                            }
                        })
                        .collect();
            }
        }
        "forkjoin" => {
            let p = params(spec, rest, &[64, 8])?;
            let (w, s) = (p[0], p[1]);
            let mut join = b.task("fork", UNIT, 64 << 10, &[]);
            for _ in 0..s {
                let mid: Vec<usize> = (0..w)
                    .map(|_| b.task("work", UNIT * 4.0 * jitter(&mut rng), 64 << 10, &[join]))
                    .collect();
                join = b.task("join", UNIT, 64 << 10, &mid);
            }
        }
        "cholesky" => {
            let t = params(spec, rest, &[12])?[0];
            cholesky(&mut b, t, &mut rng);
        }
        "wavefront" => {
            let n = params(spec, rest, &[32])?[0];
            let mut grid = vec![vec![0usize; n]; n];
            for i in 0..n {
                for j in 0..n {
                    let mut ps = Vec::new();
                    if i > 0 {
                        ps.push(grid[i - 1][j]);
                    }
                    if j > 0 {
                        ps.push(grid[i][j - 1]);
                    }
                    grid[i][j] = b.task("cell", UNIT * jitter(&mut rng), 4096, &ps);
                }
            }
        }
        "layered" => {
            let p = params(spec, rest, &[1000, 20, 50])?;
            layered(&mut b, p[0], p[1], p[2], &mut rng);
        }
        "mapreduce" => {
            let p = params(spec, rest, &[256, 32])?;
            let (m, r) = (p[0], p[1]);
            let split = b.task("split", UNIT, 4096, &[]);
            let maps: Vec<usize> =
                (0..m).map(|_| b.task("map", UNIT * 5.0 * jitter(&mut rng), 256 << 10, &[split])).collect();
            let reds: Vec<usize> =
                (0..r).map(|_| b.task("reduce", UNIT * 5.0 * jitter(&mut rng), 64 << 10, &maps)).collect();
            b.task("collect", UNIT, 4096, &reds);
        }
        _ => return Err(DagError::Spec(spec.into(), format!("unknown kind; expected {KINDS}"))),
    }
    b.finish()
}

/// Tiled Cholesky factorisation (right-looking): POTRF, TRSM, SYRK and GEMM on `t × t` tiles.
fn cholesky(b: &mut Builder, t: usize, rng: &mut ChaCha8Rng) {
    const TILE: u64 = 128 * 128 * 8;
    let mut last: Vec<Vec<Option<usize>>> = vec![vec![None; t]; t];
    let deps = |v: &[Option<usize>]| v.iter().flatten().copied().collect::<Vec<_>>();
    for k in 0..t {
        let potrf = b.task("potrf", UNIT * jitter(rng), TILE, &deps(&[last[k][k]]));
        last[k][k] = Some(potrf);
        for row in last.iter_mut().skip(k + 1) {
            let trsm = b.task("trsm", UNIT * 3.0 * jitter(rng), TILE, &deps(&[Some(potrf), row[k]]));
            row[k] = Some(trsm);
        }
        for i in k + 1..t {
            let syrk = b.task("syrk", UNIT * 3.0 * jitter(rng), TILE, &deps(&[last[i][k], last[i][i]]));
            last[i][i] = Some(syrk);
            for j in k + 1..i {
                let g = b.task(
                    "gemm",
                    UNIT * 6.0 * jitter(rng),
                    TILE,
                    &deps(&[last[i][k], last[j][k], last[i][j]]),
                );
                last[i][j] = Some(g);
            }
        }
    }
}

/// Random layered DAG in the style of HEFT's generator: `n` tasks in `layers` layers, each task
/// with 1–3 parents in the previous layer, output sizes so that moving an output over the LAN
/// costs about `ccr_percent` % of its producer's work.
fn layered(b: &mut Builder, n: usize, layers: usize, ccr_percent: usize, rng: &mut ChaCha8Rng) {
    let layers = layers.min(n).max(1);
    let mut prev: Vec<usize> = Vec::new();
    let mut made = 0;
    for l in 0..layers {
        let want = (n - made) / (layers - l);
        let width = ((want as f64 * jitter(rng)).round() as usize).clamp(1, n - made - (layers - l - 1));
        let mut cur = Vec::with_capacity(width);
        for _ in 0..width {
            let secs = UNIT * 2.0 * jitter(rng);
            let out = (secs * ccr_percent as f64 / 100.0 * 125e6) as u64;
            let mut ps = Vec::new();
            if !prev.is_empty() {
                for _ in 0..rng.random_range(1..=3) {
                    let p = prev[rng.random_range(0..prev.len())];
                    if !ps.contains(&p) {
                        ps.push(p);
                    }
                }
            }
            cur.push(b.task("node", secs, out, &ps));
        }
        made += width;
        prev = cur;
    }
}

fn jitter(rng: &mut ChaCha8Rng) -> f64 {
    rng.random_range(0.5..1.5)
}
