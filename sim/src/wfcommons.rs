//! Loader for WfCommons workflow traces (JSON schema 1.5+).
//!
//! Reads `workflow.specification.tasks[]` (id, parents, inputFiles, outputFiles),
//! `workflow.specification.files[]` (id, sizeInBytes) and `workflow.execution.tasks[]`
//! (id, runtimeInSeconds). Each trace task becomes one task whose inputs are its parents' outputs
//! followed by the input files no task produces (literal blobs at the owner). A task's output is
//! one blob: the sum of its output files (so a consumer fetches all of a producer's files, an
//! overestimate when it needs only some). The module is named after the trace's program (task id
//! without its `_ID…` suffix), so learned costs group by program.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use shoal_core::ids::BlobHash;
use shoal_core::job::{InputSpec, Job, TaskSpec};

use crate::dag::{DagError, FUEL_PER_SEC, SimDag};

#[derive(Deserialize)]
struct Trace {
    workflow: Workflow,
}

#[derive(Deserialize)]
struct Workflow {
    specification: Spec,
    execution: Execution,
}

#[derive(Deserialize)]
struct Spec {
    tasks: Vec<SpecTask>,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecTask {
    id: String,
    #[serde(default)]
    parents: Vec<String>,
    #[serde(default)]
    input_files: Vec<String>,
    #[serde(default)]
    output_files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    id: String,
    #[serde(default)]
    size_in_bytes: u64,
}

#[derive(Deserialize)]
struct Execution {
    tasks: Vec<ExecTask>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecTask {
    id: String,
    #[serde(default)]
    runtime_in_seconds: f64,
}

/// Parses a WfCommons trace from JSON text; `path` is only used in errors.
pub fn parse(path: &str, text: &str) -> Result<SimDag, DagError> {
    let bad = |why: String| DagError::Workflow { path: path.to_string(), why };
    let trace: Trace = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let spec = trace.workflow.specification;
    let sizes: HashMap<&str, u64> = spec.files.iter().map(|f| (f.id.as_str(), f.size_in_bytes)).collect();
    let runtime: HashMap<&str, f64> =
        trace.workflow.execution.tasks.iter().map(|t| (t.id.as_str(), t.runtime_in_seconds)).collect();
    let produced: HashSet<&str> =
        spec.tasks.iter().flat_map(|t| t.output_files.iter().map(String::as_str)).collect();
    let mut specs = Vec::with_capacity(spec.tasks.len());
    let mut work = Vec::with_capacity(spec.tasks.len());
    let mut out_size = Vec::with_capacity(spec.tasks.len());
    for t in &spec.tasks {
        let secs =
            *runtime.get(t.id.as_str()).ok_or_else(|| bad(format!("no runtime for task {:?}", t.id)))?;
        let fuel = (secs.max(0.0) * FUEL_PER_SEC).round().max(1.0) as u64;
        let program = t.id.split("_ID").next().unwrap_or(&t.id);
        let mut s = TaskSpec::new(t.id.clone(), BlobHash::of(program.as_bytes())).cost(fuel);
        s.args = vec![program.to_string()];
        s.inputs = t.parents.iter().map(|p| InputSpec::Output(p.clone())).collect();
        for f in t.input_files.iter().filter(|f| !produced.contains(f.as_str())) {
            let size = sizes.get(f.as_str()).copied().unwrap_or(0);
            s.inputs.push(InputSpec::Blob { hash: BlobHash::of(f.as_bytes()), size });
        }
        specs.push(s);
        work.push(fuel);
        out_size.push(t.output_files.iter().map(|f| sizes.get(f.as_str()).copied().unwrap_or(0)).sum());
    }
    Ok(SimDag { job: Job::new(specs)?, work, out_size })
}

/// Reads and parses a trace file.
pub fn load(path: &std::path::Path) -> Result<SimDag, DagError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DagError::Workflow { path: path.display().to_string(), why: e.to_string() })?;
    parse(&path.display().to_string(), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_small_trace_and_rejects_a_dangling_parent() {
        let text = r#"{"workflow":{"specification":{"tasks":[
            {"id":"a_ID1","parents":[],"inputFiles":["in"],"outputFiles":["x"]},
            {"id":"b_ID2","parents":["a_ID1"],"inputFiles":["x"],"outputFiles":["y"]}],
            "files":[{"id":"in","sizeInBytes":10},{"id":"x","sizeInBytes":20},{"id":"y","sizeInBytes":5}]},
            "execution":{"tasks":[{"id":"a_ID1","runtimeInSeconds":1.5},{"id":"b_ID2","runtimeInSeconds":0.5}]}}}"#;
        let dag = parse("t", text).unwrap();
        assert_eq!(dag.job.len(), 2);
        assert_eq!(dag.work, vec![1_500_000_000, 500_000_000]);
        assert_eq!(dag.out_size, vec![20, 5]);
        assert_eq!(dag.job.tasks()[0].inputs.len(), 1);
        assert!((dag.critical_path_s() - 2.0).abs() < 1e-9);
        let bad = text.replace(r#""parents":["a_ID1"]"#, r#""parents":["zz"]"#);
        let err = parse("t", &bad).unwrap_err().to_string();
        assert!(err.contains("b_ID2") && err.contains("zz"), "{err}");
    }
}
