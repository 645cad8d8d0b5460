#![allow(clippy::unwrap_used, reason = "tests unwrap to fail loudly")]
//! The SDK end to end: every example job file compiles to the DAG the builder makes, malformed
//! files are reported at the right task, field and line, and the examples compute their documented
//! outputs when run locally in the real sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_core::ids::TaskIndex;
use shoal_core::job::Input;
use shoal_sdk::{BuildError, CompiledJob, Job, JobFile, JobFileErrorKind, load_job_file, local};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> PathBuf {
    root().join("examples/jobs").join(name)
}

fn wasm(name: &str) -> PathBuf {
    root().join("jobs/wasm").join(format!("{name}.wasm"))
}

/// Runs a compiled job in the real sandbox, one task at a time.
fn run_in_sandbox(job: &CompiledJob) -> local::LocalRun {
    local::run_in_sandbox(job).unwrap()
}

fn text_output(job: &CompiledJob, run: &local::LocalRun, name: &str) -> String {
    String::from_utf8(run.output(job.task_index(name).unwrap()).to_vec()).unwrap()
}

const EXAMPLES: [(&str, usize, &[&str]); 8] = [
    ("mandelbrot.toml", 17, &["stitch"]),
    ("pi.toml", 9, &["reduce"]),
    ("primes.toml", 11, &["total"]),
    ("primes-zig.toml", 11, &["total"]),
    ("primes-as.toml", 11, &["total"]),
    ("wordcount.toml", 6, &["top"]),
    ("pow.toml", 9, &["collect"]),
    ("cholesky.toml", 11, &["potrf-0", "trsm-1-0", "trsm-2-0", "potrf-1", "trsm-2-1", "potrf-2", "check"]),
];

#[test]
fn every_example_compiles_to_a_valid_job() {
    for (file, tasks, outputs) in EXAMPLES {
        let job = load_job_file(example(file)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(job.job.len(), tasks, "{file}");
        let names: Vec<&str> = job.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, outputs, "{file}");
        for task in job.job.tasks() {
            assert!(job.blob(&task.module).is_some(), "{file}: module of {}", task.name);
            for input in &task.inputs {
                if let Input::Blob { hash, size } = input {
                    assert_eq!(job.blob(hash).map(|b| b.len() as u64), Some(*size), "{file}: {}", task.name);
                }
            }
        }
    }
}

/// The same job written with the builder: equal task lists mean equal DAGs.
fn assert_same_tasks(a: &CompiledJob, b: &CompiledJob) {
    assert_eq!(a.job.tasks(), b.job.tasks());
    assert_eq!(a.outputs, b.outputs);
    assert_eq!(a.blobs, b.blobs);
}

#[test]
fn the_builder_makes_the_same_dag_as_the_job_files() {
    let mut job = Job::new();
    let mandelbrot = job.module_file(wasm("mandelbrot")).unwrap();
    let stitch = job.module_file(wasm("stitch")).unwrap();
    let mut tiles = Vec::new();
    for y in 0..4 {
        for x in 0..4 {
            let args = ["256", "256", "64", &x.to_string(), &y.to_string(), "256"];
            let tile = job.task(format!("tile-{y}-{x}"), &mandelbrot).args(args).memory(64 << 20);
            tiles.push(tile.timeout(Duration::from_secs(30)).build().unwrap());
        }
    }
    let s = job.task("stitch", &stitch).args(["256", "256", "64"]).inputs(&tiles);
    let s = s.memory(64 << 20).build().unwrap();
    job.output(&s);
    assert_same_tasks(&job.compile().unwrap(), &load_job_file(example("mandelbrot.toml")).unwrap());

    let mut job = Job::new();
    let wc = job.module_file(wasm("wordcount")).unwrap();
    let maps: Vec<_> = (1..6)
        .map(|i| {
            let text = example(&format!("data/text/hamlet-act-{i}.txt"));
            job.task(format!("act-{i}"), &wc).arg("map").input_file(text).build().unwrap()
        })
        .collect();
    let top = job.task("top", &wc).args(["reduce", "20"]).inputs(&maps).build().unwrap();
    let compiled = job.compile().unwrap();
    assert_eq!(compiled.job.parents(top.index()).len(), 5);
    assert_same_tasks(&compiled, &load_job_file(example("wordcount.toml")).unwrap());
}

#[test]
fn builder_errors_name_the_task() {
    let mut job = Job::new();
    let m = job.module(b"\0asm".to_vec());
    let a = job.task("a", &m).build().unwrap();
    let dup = job.task("a", &m).build().unwrap_err();
    assert!(matches!(&dup, BuildError::DuplicateName { task } if task == "a"), "{dup}");
    let missing = job.task("b", &m).input_file("/nonexistent/input.bin").build().unwrap_err();
    assert!(missing.to_string().starts_with("task \"b\": input file /nonexistent/input.bin"), "{missing}");
    let err = job.module_file("/nonexistent/m.wasm").unwrap_err();
    assert!(err.to_string().starts_with("module /nonexistent/m.wasm:"), "{err}");

    let mut other = Job::new();
    let om = other.module(b"x".to_vec());
    let foreign = job.task("c", &om).build().unwrap_err();
    assert_eq!(foreign.to_string(), "task \"c\": its module comes from another Job builder");
    let foreign = other.task("d", &om).input(&a).build().unwrap_err();
    assert_eq!(foreign.to_string(), "task \"d\": input 0 comes from another Job builder");

    job.task("loop-1", &m).input(&a).input_named("loop-2").build().unwrap();
    job.task("loop-2", &m).input_named("loop-1").build().unwrap();
    let cycle = job.compile().unwrap_err();
    assert!(cycle.to_string().contains("loop-"), "{cycle}");
    assert!(cycle.to_string().contains("cycle"), "{cycle}");

    let mut job = Job::new();
    let m = job.module(b"m".to_vec());
    job.task("t", &m).input_named("ghost").build().unwrap();
    let unknown = job.compile().unwrap_err();
    assert_eq!(unknown.to_string(), "task \"t\": input 0 names unknown task \"ghost\"");
    let mut job = Job::new();
    let m = job.module(b"m".to_vec());
    job.task("t", &m).build().unwrap();
    job.output_named("nope");
    assert_eq!(job.compile().unwrap_err().to_string(), "output \"nope\" names no task");
}

#[test]
fn outputs_default_to_the_sinks_and_literals_are_stored_once() {
    let mut job = Job::new();
    let m = job.module(b"m".to_vec());
    let a = job.task("a", &m).input_bytes(b"same".to_vec()).build().unwrap();
    let b = job.task("b", &m).input_bytes(b"same".to_vec()).input(&a).build().unwrap();
    let c = job.task("c", &m).input_bytes(b"other".to_vec()).build().unwrap();
    let compiled = job.compile().unwrap();
    assert_eq!(compiled.outputs, vec![("b".to_string(), b.index()), ("c".to_string(), c.index())]);
    assert_eq!(compiled.blobs.len(), 3);
    assert_eq!(compiled.task_index("c"), Some(TaskIndex(2)));
}

const HEADER: &str = "[modules]\necho = \"../../jobs/wasm/echo.wasm\"\n\n";

/// Parses `body` (after a `[modules]` header naming `echo`) as if it were in examples/jobs/.
fn parse_err(body: &str) -> shoal_sdk::JobFileError {
    let text = format!("{HEADER}{body}");
    let path = example("bad.toml");
    match JobFile::parse(&text, &example(""), &path).and_then(JobFile::compile) {
        Ok(_) => panic!("parsed:\n{text}"),
        Err(e) => e,
    }
}

/// Checks the error's line (counted in `body`, from 1), task and field, and a piece of its text.
fn check(body: &str, line: usize, task: Option<&str>, field: Option<&str>, says: &str) {
    let e = parse_err(body);
    let header_lines = HEADER.matches('\n').count();
    assert_eq!(e.line, Some(header_lines + line), "line of: {e}");
    assert_eq!(e.task.as_deref(), task, "task of: {e}");
    assert_eq!(e.field.as_deref(), field, "field of: {e}");
    let text = e.to_string();
    assert!(text.contains(says), "{text:?} does not say {says:?}");
    assert!(
        text.starts_with(&format!("{}:{}:", example("bad.toml").display(), header_lines + line)),
        "{text}"
    );
}

#[test]
fn malformed_files_name_the_field_the_task_and_the_line() {
    let t = "[[task]]\nname = \"a\"\nmodule = \"echo\"\n";
    check(&format!("{t}colour = \"red\"\n"), 4, Some("a"), Some("colour"), "unknown field `colour`");
    check(
        &format!("{t}\n[[task]]\nname = \"b\"\nmodule = \"echo\"\ncost = \"lots\"\n"),
        8,
        Some("b"),
        Some("cost"),
        "invalid type",
    );
    check("[[task]]\nname = \"a\"\n", 1, Some("a"), None, "missing field `module`");
    check(&format!("{t}memory = \"64 MeB\"\n"), 4, Some("a"), Some("memory"), "not a size");
    check(&format!("{t}timeout = \"soon\"\n"), 4, Some("a"), Some("timeout"), "not a duration");
    check(
        "[[task]]\nname = \"a\"\nmodule = \"ehco\"\n",
        3,
        Some("a"),
        Some("module"),
        "no module is called \"ehco\"",
    );
    check(
        &format!("{t}inputs = [{{ task = \"zz\" }}]\n"),
        4,
        Some("a"),
        Some("inputs"),
        "no task is called \"zz\"",
    );
    check(
        &format!("{t}inputs = [{{ task = \"a\", text = \"x\" }}]\n"),
        4,
        Some("a"),
        Some("inputs"),
        "exactly one of",
    );
    check(
        &format!("{t}inputs = [{{ file = \"data/none.bin\" }}]\n"),
        4,
        Some("a"),
        Some("inputs"),
        "data/none.bin",
    );
    check(&format!("{t}inputs = [{{ txt = \"x\" }}]\n"), 4, Some("a"), Some("txt"), "unknown field `txt`");
    check(
        "[[task]]\nname = \"t-{i}\"\nfor = \"i in 0..n\"\nmodule = \"echo\"\n",
        3,
        Some("t-{i}"),
        Some("for"),
        "not an integer",
    );
    check(
        "[[task]]\nname = \"t-{i}\"\nmodule = \"echo\"\n",
        2,
        Some("t-{i}"),
        Some("name"),
        "unknown variable \"i\"",
    );
    check(
        "[[task]]\nname = \"t-{i}\"\nfor = \"i in 0..3\"\nmodule = \"echo\"\nargs = [\"{i / (i - 1)}\"]\n",
        5,
        Some("t-1"),
        Some("args"),
        "division by zero",
    );
    check(
        &format!("{t}\n[[task]]\nname = \"a\"\nmodule = \"echo\"\n"),
        6,
        Some("a"),
        Some("name"),
        "already has this name",
    );
    let cycle = "[[task]]\nname = \"x\"\nmodule = \"echo\"\ninputs = [{ task = \"y\" }]\n\n\
                 [[task]]\nname = \"y\"\nmodule = \"echo\"\ninputs = [{ task = \"x\" }]\n";
    let e = parse_err(cycle);
    assert!(matches!(&*e.kind, JobFileErrorKind::Build(BuildError::Graph(_))), "{e}");
    assert!(e.to_string().contains("cycle"), "{e}");
    let (line, task) = (e.line.unwrap() - HEADER.matches('\n').count(), e.task.clone().unwrap());
    assert!((line, task.as_str()) == (2, "x") || (line, task.as_str()) == (7, "y"), "{e}");
    // A top-level key after a [[task]] belongs to that task.
    check(&format!("{t}outputs = [\"a\"]\n"), 4, Some("a"), Some("outputs"), "unknown field `outputs`");
    let e = parse_err(&format!("outputs = [\"b\"]\n{t}"));
    assert_eq!((e.line, e.field.as_deref()), (Some(4), Some("outputs")), "{e}");

    // A [table] after the tasks is not part of the last task.
    let e = parse_err(&format!("{t}\n[modulez]\nx = 1\n"));
    assert_eq!((e.line, e.task.as_deref()), (Some(8), None), "{e}");
    // An unknown field inside a multi-line array is still named.
    check(&format!("{t}inputs = [\n  {{ txt = \"x\" }},\n]\n"), 5, Some("a"), Some("txt"), "unknown field");

    let e = JobFile::parse("[modules]\nm = \"nowhere.wasm\"\n", Path::new("/tmp"), Path::new("x.toml"))
        .unwrap_err();
    assert_eq!((e.line, e.field.as_deref()), (Some(2), Some("modules.m")), "{e}");
    let text = "[modules]\nm = \"nowhere.wasm\"\n[[task]]\nname = \"uses-m\"\nmodule = \"m\"\n";
    let e = JobFile::parse(text, Path::new("/tmp"), Path::new("x.toml")).unwrap_err();
    assert_eq!((e.line, e.task.as_deref()), (Some(2), Some("uses-m")), "{e}");
    assert!(e.to_string().contains("/tmp/nowhere.wasm"), "{e}");
    let e = JobFile::parse("[[task]\n", Path::new("/tmp"), Path::new("x.toml")).unwrap_err();
    assert_eq!(e.line, Some(1), "{e}");
    let e = load_job_file(example("no-such-file.toml")).unwrap_err();
    assert!(matches!(&*e.kind, JobFileErrorKind::Read(_)), "{e}");
}

/// The outputs stated in docs/job-files.md, computed by the real sandbox.
#[test]
fn the_examples_compute_their_documented_outputs() {
    let text = |file: &str| {
        let job = load_job_file(example(file)).unwrap();
        let run = run_in_sandbox(&job);
        text_output(&job, &run, &job.outputs[0].0)
    };
    assert_eq!(text("pi.toml"), "pi ~= 3.141252000 (6282504/8000000)\n");
    assert_eq!(text("primes.toml"), "78498\n");
    let top = text("wordcount.toml");
    assert!(top.starts_with("the\t1150\nand\t983\nto\t764\nof\t672\ni\t578\n"), "{top}");
    assert_eq!(top.lines().count(), 20, "{top}");
    let pow = text("pow.toml");
    let first = "10733 000041481ac20d8676200ee1b9095dfc73af419c7919859a2f0ae23eea866246";
    assert_eq!(pow.lines().next(), Some(first), "{pow}");
    assert_eq!(pow.lines().count(), 8, "{pow}");

    let job = load_job_file(example("mandelbrot.toml")).unwrap();
    let run = run_in_sandbox(&job);
    let (_, stitch) = job.outputs[0];
    let png = run.output(stitch);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&png[12..24], b"IHDR\0\0\x01\0\0\0\x01\0", "a 256x256 image");
    assert_eq!(png.len(), 196_947);

    let job = load_job_file(example("cholesky.toml")).unwrap();
    let run = run_in_sandbox(&job);
    let tiles = ["l00", "l10", "l20", "l11", "l21", "l22"];
    for ((name, i), tile) in job.outputs.iter().zip(tiles) {
        let floats = |b: &[u8]| -> Vec<f64> {
            b.chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
        };
        let want = floats(&std::fs::read(example(&format!("data/cholesky/{tile}.bin"))).unwrap());
        let got = floats(run.output(*i));
        assert_eq!(got.len(), 16, "{name}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-9, "{name}: {got:?} != {want:?}");
        }
    }
    let check = text_output(&job, &run, "check");
    assert!(
        check.starts_with("max |A - L L^T| = 0 over the 12x12 matrix") && check.ends_with(": OK\n"),
        "{check}"
    );
}

#[test]
fn marked_outputs_and_nested_loops() {
    let body = "outputs = [\"sum\", \"cell-1-0\"]\n\n[modules]\necho = \"../../jobs/wasm/echo.wasm\"\n\n\
                [[task]]\nname = \"cell-{r}-{c}\"\nfor = \"r in 0..2, c in 0..2\"\nmodule = \"echo\"\n\
                inputs = [{ text = \"{r * 10 + c};\" }]\noutput = true\n\n\
                [[task]]\nname = \"sum\"\nmodule = \"echo\"\n\
                inputs = [{ task = \"cell-{r}-{c}\", for = \"c in 0..2, r in 0..2\" }, { text = \"{{}}\" }]\n";
    let job = JobFile::parse(body, &example(""), &example("t.toml")).unwrap().compile().unwrap();
    let names: Vec<&str> = job.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["cell-0-0", "cell-0-1", "cell-1-0", "cell-1-1", "sum"]);
    let run = run_in_sandbox(&job);
    // The input loop runs c outermost: column by column.
    assert_eq!(text_output(&job, &run, "sum"), "0;10;1;11;{}");
}

/// Jobs on an in-process swarm through the SDK's `Swarm`: progress, typed failure, cancellation.
mod swarm {
    use super::*;
    use shoal_sdk::{JobError, Swarm, SwarmConfig, SwarmError};

    const PATIENCE: Duration = Duration::from_secs(60);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    /// `n` independent spin tasks of about 100 ms each.
    fn spins(n: usize) -> CompiledJob {
        let mut job = Job::new();
        let spin = job.module_file(wasm("spin")).unwrap();
        for i in 0..n {
            job.task(format!("spin{i}"), &spin).arg((150_000_000 + i).to_string()).build().unwrap();
        }
        job.compile().unwrap()
    }

    #[test]
    fn a_failing_task_is_a_typed_error_naming_it_and_progress_streams_end() {
        runtime().block_on(async {
            let swarm = Swarm::local(2).await.unwrap();
            let mut job = Job::new();
            let sum = job.module_file(wasm("sum")).unwrap();
            let primes = job.module_file(wasm("primes")).unwrap();
            let fine = job.task("fine", &primes).args(["0", "100"]).build().unwrap();
            job.task("bad", &sum).input(&fine).input_bytes(b"twelve".to_vec()).build().unwrap();
            let submission = swarm.submit(job.compile().unwrap()).await.unwrap();
            assert_eq!(submission.tasks(), 2);
            let mut stream = submission.progress_stream();
            let err = tokio::time::timeout(PATIENCE, submission.outputs()).await.unwrap().unwrap_err();
            match &err {
                JobError::TaskFailed { name, reason, .. } => {
                    assert_eq!(name, "bad");
                    assert!(reason.contains("expected an integer"), "{reason}");
                }
                other => panic!("expected the task's failure, got {other:?}"),
            }
            let ended =
                tokio::time::timeout(PATIENCE, async { while stream.next().await.is_some() {} }).await;
            assert!(ended.is_ok(), "the progress stream ends with the job");
            swarm.shutdown().await;
        });
    }

    #[test]
    fn cancelling_a_job_stops_its_queued_tasks_on_every_peer() {
        runtime().block_on(async {
            let swarm = Swarm::local(3).await.unwrap();
            let submission = swarm.submit(spins(40)).await.unwrap();
            let mut stream = submission.progress_stream();
            tokio::time::timeout(PATIENCE, async {
                while stream.next().await.is_some_and(|p| p.done == 0) {}
            })
            .await
            .unwrap();
            submission.cancel().await;
            let err = tokio::time::timeout(PATIENCE, submission.outputs()).await.unwrap().unwrap_err();
            assert_eq!(err, JobError::Cancelled);
            // Every peer empties its queue at once; only runs already started finish.
            tokio::time::timeout(PATIENCE, async {
                while swarm.peers().iter().any(|p| p.status().queued > 0 || p.status().running > 0) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap();
            let ran: u64 = swarm.peers().iter().map(|p| p.status().tasks_done).sum();
            // Up to 15 were queued on the peers (5 per one-slot peer); only the runs under way at
            // the cancel may finish.
            assert!(ran <= 8, "{ran} tasks ran: the cancel did not reach the holders");
            swarm.shutdown().await;
        });
    }

    #[test]
    fn joining_through_an_unreachable_address_is_a_clear_error() {
        runtime().block_on(async {
            // A bound but silent UDP socket: nobody answers the QUIC handshake.
            let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut cfg = SwarmConfig::default().bootstrap(silent.local_addr().unwrap());
            cfg.listen = "127.0.0.1:0".parse().unwrap();
            cfg.join_timeout = Duration::from_millis(500);
            let err = Swarm::join(cfg).await.unwrap_err();
            assert!(matches!(err, SwarmError::NoPeerAnswered { .. }), "{err:?}");
            assert!(err.to_string().contains("no peer answered at 127.0.0.1:"), "{err}");
            assert!(matches!(Swarm::local(0).await, Err(SwarmError::NoPeers)));
        });
    }
}

#[test]
fn a_job_file_says_how_its_results_are_verified_and_a_bad_policy_is_located() {
    use shoal_core::sched::VerifyPolicy;
    let task = "[[task]]\nname = \"a\"\nmodule = \"echo\"\n";
    let parse = |verify: &str| {
        let text = format!("{HEADER}{verify}{task}");
        JobFile::parse(&text, &example(""), &example("v.toml"))
            .and_then(JobFile::compile)
            .map(|c| c.job.verify())
    };
    assert_eq!(parse("").unwrap(), None, "the submitting peer decides");
    assert_eq!(parse("[verify]\npolicy = \"adaptive\"\n\n").unwrap(), Some(VerifyPolicy::Adaptive));
    assert_eq!(
        parse("[verify]\npolicy = \"replicate\"\nk = 3\nquorum = 2\n\n").unwrap(),
        Some(VerifyPolicy::Replicate { k: 3, quorum: 2 })
    );
    assert_eq!(
        parse("[verify]\npolicy = \"replicate=3\"\n\n").unwrap(),
        Some(VerifyPolicy::Replicate { k: 3, quorum: 2 })
    );
    check(
        "[verify]\npolicy = \"sometimes\"\n\n[[task]]\nname = \"a\"\nmodule = \"echo\"\n",
        2,
        None,
        Some("verify.policy"),
        "expected none, adaptive",
    );
    check(
        "[verify]\npolicy = \"adaptive\"\nk = 3\n\n[[task]]\nname = \"a\"\nmodule = \"echo\"\n",
        2,
        None,
        Some("verify.policy"),
        "k and quorum go with",
    );
}

#[test]
fn a_job_file_says_how_long_its_outputs_are_kept_and_a_bad_duration_is_located() {
    let task = "[[task]]\nname = \"a\"\nmodule = \"echo\"\n";
    let parse = |top: &str| {
        // Top-level keys come before the first table.
        let text = format!("{top}{HEADER}{task}");
        JobFile::parse(&text, &example(""), &example("r.toml"))
            .and_then(JobFile::compile)
            .map(|c| c.job.retention())
    };
    assert_eq!(parse("").unwrap(), None, "the owning peer decides (a day)");
    assert_eq!(parse("retention = \"2h\"\n").unwrap(), Some(Duration::from_secs(7200)));
    let e = parse("retention = \"soon\"\n").unwrap_err();
    assert_eq!((e.line, e.field.as_deref()), (Some(1), Some("retention")), "{e}");
    assert!(e.to_string().contains("is not a duration"), "{e}");
}
