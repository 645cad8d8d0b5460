//! The job model: a job is a DAG of tasks, validated once when it is built.
//!
//! A submitter describes tasks by name ([`TaskSpec`]); [`Job::new`] resolves names to
//! [`TaskIndex`]es and rejects duplicate names, inputs naming unknown tasks and cycles, each with an
//! error naming the offending task. Invariants of a built [`Job`]: task `i` is `tasks()[i]`, every
//! [`Input::Output`] names an existing task, the graph is acyclic and [`Job::topo_order`] lists every
//! task after all of its producers.
//!
//! Cost hints are in **fuel** (the sandbox's deterministic instruction budget, which executors also
//! report after a run), so hints, learned costs and priorities share one unit. See [`rank`].

pub mod rank;
pub mod seal;

use std::collections::HashMap;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::ids::{BlobHash, JobId, TaskIndex};
use crate::sched::VerifyPolicy;

pub use rank::{CostModel, upward_ranks};
pub use seal::{JobSeal, Manifest, SealError, SealProof};

/// Resource limits the sandbox applies to one run of a task; `None` means the executor's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Limits {
    /// Fuel budget (deterministic instruction count).
    pub fuel: Option<u64>,
    /// Linear-memory cap in bytes.
    pub memory_bytes: Option<u64>,
    /// Output (stdout) cap in bytes.
    pub output_bytes: Option<u64>,
    /// Wall-clock safety deadline in milliseconds.
    pub deadline_ms: Option<u64>,
}

/// One input of a task as the submitter writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSpec {
    /// A literal blob, named by content hash, with its size in bytes.
    Blob {
        /// The blob's hash.
        hash: BlobHash,
        /// The blob's size in bytes.
        size: u64,
    },
    /// The output of the task with this name.
    Output(String),
}

/// A task as the submitter writes it, before validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// Unique name within the job.
    pub name: String,
    /// Content hash of the task's WebAssembly module.
    pub module: BlobHash,
    /// `argv` of the task (after the program name).
    pub args: Vec<String>,
    /// Inputs, concatenated on stdin in this order.
    pub inputs: Vec<InputSpec>,
    /// Estimated cost in fuel; `None` lets the scheduler learn it from the same module's runs.
    pub cost: Option<u64>,
    /// Sandbox limits.
    pub limits: Limits,
}

impl TaskSpec {
    /// A task with no arguments, inputs, cost hint or limits.
    pub fn new(name: impl Into<String>, module: BlobHash) -> Self {
        TaskSpec {
            name: name.into(),
            module,
            args: Vec::new(),
            inputs: Vec::new(),
            cost: None,
            limits: Limits::default(),
        }
    }

    /// Adds the output of task `name` as the next input.
    pub fn after(mut self, name: impl Into<String>) -> Self {
        self.inputs.push(InputSpec::Output(name.into()));
        self
    }

    /// Sets the cost hint in fuel.
    pub fn cost(mut self, fuel: u64) -> Self {
        self.cost = Some(fuel);
        self
    }
}

/// One input of a validated task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub enum Input {
    /// A literal blob.
    Blob {
        /// The blob's hash.
        hash: BlobHash,
        /// The blob's size in bytes.
        size: u64,
    },
    /// The output of another task of the same job.
    Output(TaskIndex),
}

/// A validated task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Unique name within the job.
    pub name: String,
    /// Content hash of the module.
    pub module: BlobHash,
    /// Arguments.
    pub args: Vec<String>,
    /// Inputs in order.
    pub inputs: Vec<Input>,
    /// Cost hint in fuel.
    pub cost: Option<u64>,
    /// Sandbox limits.
    pub limits: Limits,
}

/// Why a job could not be built. Each variant names the offending task.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    /// Two tasks share a name.
    #[error("task {task:?}: another task already has this name")]
    DuplicateName {
        /// The repeated name.
        task: String,
    },
    /// An input names a task that does not exist.
    #[error("task {task:?}: input {input} names unknown task {name:?}")]
    UnknownInput {
        /// The task with the bad input.
        task: String,
        /// Position of the input.
        input: usize,
        /// The unknown name.
        name: String,
    },
    /// The dependencies form a cycle through this task.
    #[error("task {task:?} depends on itself through a cycle")]
    Cycle {
        /// A task on the cycle.
        task: String,
    },
    /// The job has no tasks.
    #[error("a job needs at least one task")]
    Empty,
    /// More tasks than a [`TaskIndex`] can number.
    #[error("a job may have at most {max} tasks")]
    TooManyTasks {
        /// The limit.
        max: u64,
    },
}

/// A validated job DAG.
#[derive(Clone, Debug)]
pub struct Job {
    tasks: Vec<Task>,
    graph: DiGraph<(), ()>,
    parents: Vec<Vec<TaskIndex>>,
    children: Vec<Vec<TaskIndex>>,
    topo: Vec<TaskIndex>,
    /// The submitter's signed manifest, when the job is sealed ([`seal`]).
    manifest: Option<Arc<Manifest>>,
    /// How its results are verified; `None`: the owning peer's default.
    verify: Option<VerifyPolicy>,
    /// How long its outputs stay fetchable once it ended; `None`: the owning peer's default.
    retention: Option<std::time::Duration>,
}

impl Job {
    /// Validates `specs` into a job; task `i` of the job is `specs[i]`.
    pub fn new(specs: Vec<TaskSpec>) -> Result<Job, JobError> {
        if specs.is_empty() {
            return Err(JobError::Empty);
        }
        if u32::try_from(specs.len()).is_err() {
            return Err(JobError::TooManyTasks { max: u64::from(u32::MAX) });
        }
        let mut names: HashMap<&str, u32> = HashMap::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            if names.insert(s.name.as_str(), i as u32).is_some() {
                return Err(JobError::DuplicateName { task: s.name.clone() });
            }
        }
        let mut graph = DiGraph::<(), ()>::with_capacity(specs.len(), specs.len());
        for _ in &specs {
            graph.add_node(());
        }
        let mut parents = vec![Vec::new(); specs.len()];
        let mut children = vec![Vec::new(); specs.len()];
        let mut tasks = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let mut inputs = Vec::with_capacity(s.inputs.len());
            for (k, input) in s.inputs.iter().enumerate() {
                inputs.push(match input {
                    InputSpec::Blob { hash, size } => Input::Blob { hash: *hash, size: *size },
                    InputSpec::Output(name) => {
                        let Some(&p) = names.get(name.as_str()) else {
                            return Err(JobError::UnknownInput {
                                task: s.name.clone(),
                                input: k,
                                name: name.clone(),
                            });
                        };
                        if !parents[i].contains(&TaskIndex(p)) {
                            parents[i].push(TaskIndex(p));
                            children[p as usize].push(TaskIndex(i as u32));
                            graph.add_edge(NodeIndex::new(p as usize), NodeIndex::new(i), ());
                        }
                        Input::Output(TaskIndex(p))
                    }
                });
            }
            tasks.push(Task {
                name: s.name.clone(),
                module: s.module,
                args: s.args.clone(),
                inputs,
                cost: s.cost,
                limits: s.limits.clone(),
            });
        }
        let topo = petgraph::algo::toposort(&graph, None)
            .map_err(|c| JobError::Cycle { task: tasks[c.node_id().index()].name.clone() })?;
        let topo = topo.into_iter().map(|n| TaskIndex(n.index() as u32)).collect();
        Ok(Job { tasks, graph, parents, children, topo, manifest: None, verify: None, retention: None })
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Always false: a built job has at least one task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// All tasks, by index.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Task `i`.
    pub fn task(&self, i: TaskIndex) -> &Task {
        &self.tasks[i.0 as usize]
    }

    /// The distinct tasks whose outputs `i` consumes.
    pub fn parents(&self, i: TaskIndex) -> &[TaskIndex] {
        &self.parents[i.0 as usize]
    }

    /// The distinct tasks that consume the output of `i`.
    pub fn children(&self, i: TaskIndex) -> &[TaskIndex] {
        &self.children[i.0 as usize]
    }

    /// Every task, each after all its producers.
    pub fn topo_order(&self) -> &[TaskIndex] {
        &self.topo
    }

    /// The dependency graph (node `i` is task `i`, edges go producer → consumer).
    pub fn graph(&self) -> &DiGraph<(), ()> {
        &self.graph
    }

    /// Seals the job as `id` with the submitter's signing `key`, valid until `expires_unix_ms`
    /// (see [`seal`]): a sealed job runs on peers that check its submitter.
    pub fn sign(mut self, id: JobId, key: &ed25519_dalek::SigningKey, expires_unix_ms: u64) -> Job {
        self.manifest = Some(Arc::new(Manifest::sign(&self, id, key, expires_unix_ms)));
        self
    }

    /// Attaches a seal made elsewhere (by the submitter, for exactly these tasks).
    pub fn with_seal(mut self, seal: JobSeal) -> Result<Job, SealError> {
        self.manifest = Some(Arc::new(Manifest::check(&self, seal)?));
        Ok(self)
    }

    /// Sets how the job's results are verified (see [`VerifyPolicy`]).
    pub fn with_verify(mut self, policy: VerifyPolicy) -> Job {
        self.verify = Some(policy);
        self
    }

    /// Sets how long the job's outputs stay fetchable after it ended (`shoal job wait`; see
    /// docs/owners.md).
    pub fn with_retention(mut self, retention: std::time::Duration) -> Job {
        self.retention = Some(retention);
        self
    }

    /// How long the job's outputs stay fetchable after it ended, if the submitter said.
    pub fn retention(&self) -> Option<std::time::Duration> {
        self.retention
    }

    /// How the job's results are verified, if the submitter said; else the owning peer decides.
    pub fn verify(&self) -> Option<VerifyPolicy> {
        self.verify
    }

    /// The submitter's manifest, if the job is sealed.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_deref()
    }

    /// Tasks whose output no other task consumes: their outputs are the job's results.
    pub fn sinks(&self) -> impl Iterator<Item = TaskIndex> + '_ {
        (0..self.tasks.len() as u32).map(TaskIndex).filter(|&i| self.children(i).is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> BlobHash {
        BlobHash::of(b"module")
    }

    #[test]
    fn builds_a_diamond_in_topological_order() {
        let job = Job::new(vec![
            TaskSpec::new("d", m()).after("b").after("c"),
            TaskSpec::new("b", m()).after("a"),
            TaskSpec::new("c", m()).after("a"),
            TaskSpec::new("a", m()),
        ])
        .unwrap();
        let pos = |i: u32| job.topo_order().iter().position(|&t| t == TaskIndex(i)).unwrap();
        assert!(pos(3) < pos(1) && pos(3) < pos(2) && pos(1) < pos(0) && pos(2) < pos(0));
        assert_eq!(job.parents(TaskIndex(0)), &[TaskIndex(1), TaskIndex(2)]);
        assert_eq!(job.sinks().collect::<Vec<_>>(), vec![TaskIndex(0)]);
    }

    #[test]
    fn rejects_duplicates_unknown_inputs_and_cycles_naming_the_task() {
        let dup = Job::new(vec![TaskSpec::new("a", m()), TaskSpec::new("a", m())]).unwrap_err();
        assert_eq!(dup, JobError::DuplicateName { task: "a".into() });
        let unknown = Job::new(vec![TaskSpec::new("a", m()).after("zz")]).unwrap_err();
        assert_eq!(unknown, JobError::UnknownInput { task: "a".into(), input: 0, name: "zz".into() });
        let cycle = Job::new(vec![
            TaskSpec::new("x", m()),
            TaskSpec::new("a", m()).after("b"),
            TaskSpec::new("b", m()).after("a"),
        ])
        .unwrap_err();
        assert!(matches!(&cycle, JobError::Cycle { task } if task == "a" || task == "b"), "{cycle}");
        assert!(cycle.to_string().contains("cycle"));
        let self_loop = Job::new(vec![TaskSpec::new("s", m()).after("s")]).unwrap_err();
        assert_eq!(self_loop, JobError::Cycle { task: "s".into() });
        assert_eq!(Job::new(vec![]).unwrap_err(), JobError::Empty);
    }
}
