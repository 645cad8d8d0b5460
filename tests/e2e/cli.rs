//! The `shoal` command end to end: real processes running real task programs from `jobs/`.

use shoal_core::ids::BlobHash;
use shoal_core::job::{Job, TaskSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod control;
mod donate;
mod examples;
mod metrics;
mod nat;
mod netns;
mod owners;
mod page;
mod trust;

/// The `shoal` command: this package's `shoal-e2e` binary, built from `shoal-worker`'s library.
/// Its workers take unsigned jobs (a worker outside a private swarm does not by default): the
/// tests of signed jobs (`trust.rs`, `netns.rs`) set their own trust flags, which override this.
fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-e2e"));
    cmd.env("SHOAL_ACCEPT_UNSIGNED", "true");
    cmd
}

/// Runs `shoal demo --peers 2 ARGS… --out OUT` to the end, checks it succeeded, returns stdout.
fn demo(args: &[&std::ffi::OsStr], out: &Path) -> String {
    let done =
        shoal().args(["demo", "--peers", "2"]).args(args).arg("--out").arg(out).stdin(Stdio::null()).output();
    let done = done.unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(done.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&done.stderr));
    stdout
}

fn job(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm").join(format!("{name}.wasm"))
}

fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn runs_a_task_with_args_and_prints_its_output() {
    let out = run_with_stdin(shoal().arg("run").arg(job("primes")).args(["--", "0", "100000"]), b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"9592\n");
}

#[test]
fn stdin_is_the_input_and_multiple_inputs_are_split_for_the_task() {
    let out = run_with_stdin(shoal().arg("run").arg(job("echo")), b"piped bytes");
    assert_eq!(out.stdout, b"piped bytes");

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, "1 2 3").unwrap();
    std::fs::write(&b, "40").unwrap();
    // Without SHOAL_INPUT_SIZES "3" and "40" would run together into 340.
    let out = shoal().arg("run").arg(job("sum")).arg("--input").arg(&a).arg("-i").arg(&b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"46\n");

    let m1 = dir.path().join("m1");
    let m2 = dir.path().join("m2");
    std::fs::write(dir.path().join("t1"), "a b a").unwrap();
    std::fs::write(dir.path().join("t2"), "b c").unwrap();
    for (t, m) in [("t1", &m1), ("t2", &m2)] {
        let st = shoal()
            .arg("run")
            .arg(job("wordcount"))
            .arg("-i")
            .arg(dir.path().join(t))
            .arg("--output")
            .arg(m)
            .args(["--", "map"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = shoal()
        .arg("run")
        .arg(job("wordcount"))
        .arg("-i")
        .arg(&m1)
        .arg("-i")
        .arg(&m2)
        .args(["--", "reduce"])
        .output();
    let out = out.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "a\t2\nb\t2\nc\t1\n");
}

#[test]
fn json_summary_describes_success_and_failure() {
    let out = run_with_stdin(shoal().arg("run").arg("--json").arg(job("pi")).args(["--", "3", "1000"]), b"");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["exit_code"], 0);
    assert!(v["fuel"].as_u64().unwrap() > 1000);
    assert!(v["wall_ms"].as_f64().is_some());
    assert_eq!(v["output_bytes"].as_u64().unwrap() as usize, "HHH 1000\n".len());
    assert_eq!(v["output_blake3"].as_str().unwrap().len(), 64);

    let out = run_with_stdin(
        shoal().args(["run", "--json", "--fuel", "5000"]).arg(job("spin")).args(["--", "100000000"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error_kind"], "out_of_fuel");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("out of fuel"), "{stderr}");
}

#[test]
fn a_failing_task_exits_1_with_a_one_line_reason_and_its_log() {
    let out = run_with_stdin(shoal().arg("run").arg(job("primes")).args(["--", "x", "1"]), b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("argument 1 (lo) is not an integer"), "the task's log is shown: {stderr}");
    assert!(stderr.lines().any(|l| l == "shoal run: task failed: task exited with status 2"), "{stderr}");

    let out = run_with_stdin(
        shoal()
            .args(["run", "--memory", "1MiB"])
            .arg(job("mandelbrot"))
            .args(["--", "64", "64", "64", "0", "0", "10"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of memory"));

    let out = run_with_stdin(
        shoal()
            .args(["run", "--timeout", "200ms", "--fuel", "100000000000000"])
            .arg(job("spin"))
            .args(["--", "100000000000"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("deadline"));
}

#[test]
fn wat_modules_run_and_bad_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("hello.wat");
    std::fs::write(
        &wat,
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
           (memory (export "memory") 1) (data (i32.const 16) "hi\n") (data (i32.const 0) "\10\00\00\00\03\00\00\00")
           (func (export "_start") (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap();
    let out = run_with_stdin(shoal().arg("run").arg(&wat), b"");
    assert_eq!(out.stdout, b"hi\n");

    let out = shoal().arg("run").arg(dir.path().join("missing.wasm")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read module"));

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let out = run_with_stdin(shoal().arg("run").arg(&junk), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid module"));

    let out = shoal().args(["run", "--memory", "lots"]).arg(job("noop")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size"));
}

#[test]
fn sim_prints_a_json_summary() {
    let out = shoal()
        .args(["sim", "--dag", "forkjoin:8,3", "--peers", "16", "--seed", "7", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["tasks"], v["tasks_completed"]);
    assert!(v["ratio"].as_f64().unwrap() >= 1.0);
}

/// Sends `sig` to a child process.
fn signal(child: &std::process::Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with the pid of a child we have not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// A `shoal worker` process and its stdout lines, read on a thread.
struct Worker {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    id: String,
    addr: std::net::SocketAddr,
    /// Its `trust: …` start-up line: whose jobs it runs.
    trust: String,
}

impl Worker {
    fn start(dir: &Path, bootstrap: Option<std::net::SocketAddr>) -> Worker {
        Worker::start_with(dir, bootstrap, &[])
    }

    fn start_with(dir: &Path, bootstrap: Option<std::net::SocketAddr>, extra: &[&std::ffi::OsStr]) -> Worker {
        let mut cmd = shoal();
        cmd.arg("worker").args(["--listen", "127.0.0.1:0", "--cores", "1", "--memory", "256MiB"]);
        cmd.args(extra);
        cmd.arg("--data-dir").arg(dir);
        if let Some(b) = bootstrap {
            cmd.arg("--bootstrap").arg(b.to_string());
        }
        let (mut w, donating, _data) = Worker::spawn(&mut cmd);
        assert!(donating.starts_with("donating 1 cores, 256 MiB of task memory"), "{donating}");
        if bootstrap.is_some() {
            assert_eq!(w.next_line(), "joined the swarm");
        }
        w
    }

    /// Starts the worker `cmd` describes and reads its start-up lines: returns it with its
    /// `donating …` line and its data directory.
    fn spawn(cmd: &mut Command) -> (Worker, String, String) {
        Worker::spawn_logging(cmd, Stdio::null())
    }

    /// [`Worker::spawn`] with the worker's stderr (its log) going to `stderr`.
    fn spawn_logging(cmd: &mut Command, stderr: Stdio) -> (Worker, String, String) {
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut w =
            Worker { child, lines, id: String::new(), addr: ([0, 0, 0, 0], 0).into(), trust: String::new() };
        w.id = w.next_line().strip_prefix("peer ").unwrap().to_string();
        w.addr = w.next_line().strip_prefix("listening ").unwrap().parse().unwrap();
        let donating = w.next_line();
        let data = w.next_line().strip_prefix("data ").unwrap().to_string();
        w.trust = w.next_line().strip_prefix("trust: ").unwrap().to_string();
        (w, donating, data)
    }

    /// The next line the worker prints (waits up to a minute).
    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(l) => l,
            Err(e) => panic!("no line from the worker ({e})"),
        }
    }

    /// Sends SIGTERM, checks the worker exits cleanly and returns its remaining stdout lines.
    fn stop(mut self) -> Vec<String> {
        signal(&self.child, libc::SIGTERM);
        let status = self.child.wait().unwrap();
        let lines: Vec<String> = self.lines.iter().collect();
        assert!(status.success(), "{status:?} {lines:?}");
        lines
    }
}

/// Three `shoal worker` processes on loopback, the last two bootstrapping from the first.
fn three_workers(dir: &Path) -> Vec<Worker> {
    let first = Worker::start(&dir.join("w0"), None);
    let second = Worker::start(&dir.join("w1"), Some(first.addr));
    let third = Worker::start(&dir.join("w2"), Some(first.addr));
    vec![first, second, third]
}

/// A submitting peer in this process that joins through the first worker; returns once every
/// worker is in its view.
async fn submitter_seeing(dir: &Path, workers: &[Worker]) -> shoal_node::Peer {
    let mut cfg = shoal_node::Config::new(dir);
    cfg.net.bootstrap = vec![workers[0].addr];
    let peer = shoal_node::Peer::start(cfg).await.unwrap();
    let ids: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while !ids.iter().all(|id| peer.node().view().iter().any(|e| e.id.to_string() == *id)) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the workers never all showed up in the view");
    peer
}

#[test]
fn workers_form_a_swarm_run_a_submitted_job_and_leave_on_sigterm() {
    use shoal_core::ids::BlobHash;
    use shoal_core::job::{Job, TaskSpec};

    let dir = tempfile::tempdir().unwrap();
    let workers = three_workers(dir.path());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        // A submitting peer in this process joins through the first worker and sees all three.
        let peer = submitter_seeing(&dir.path().join("submitter"), &workers).await;

        let primes = std::fs::read(job("primes")).unwrap();
        let sum = std::fs::read(job("sum")).unwrap();
        let (p, s) = (BlobHash::of(&primes), BlobHash::of(&sum));
        let mut specs: Vec<TaskSpec> = (0..6u64)
            .map(|k| TaskSpec {
                args: vec![(k * 1_000_000).to_string(), ((k + 1) * 1_000_000).to_string()],
                ..TaskSpec::new(format!("p{k}"), p)
            })
            .collect();
        let mut total = TaskSpec::new("total", s);
        for k in 0..6 {
            total = total.after(format!("p{k}"));
        }
        specs.push(total);
        let handle = peer
            .submit(Job::new(specs).unwrap(), std::collections::HashMap::from([(p, primes), (s, sum)]))
            .await
            .unwrap();
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(120), handle.wait()).await.unwrap().unwrap();
        // π(6·10^6) = 412,849.
        assert_eq!(out.get("total"), Some(&b"412849\n"[..]));
        assert!(out.progress.peers_used >= 2, "{:?}", out.progress);
        peer.shutdown().await;
    });

    // The same through `shoal submit` and a job file.
    let file = primes_job_file(dir.path());
    let out_dir = dir.path().join("out");
    let out = shoal()
        .arg("submit")
        .arg(&file)
        // By name: `localhost:PORT` is resolved at each join attempt.
        .args(["--bootstrap", &format!("localhost:{}", workers[1].addr.port()), "--json", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "ok", "{summary}");
    assert_eq!(summary["tasks"], 11, "{summary}");
    assert_eq!(std::fs::read(out_dir.join("total")).unwrap(), b"664579\n");

    for w in workers {
        let lines = w.stop();
        assert_eq!(lines.last().map(String::as_str), Some("stopped"), "{lines:?}");
    }
}

/// Prime counting below 10^7 in 10 ranges, summed (π(10^7) = 664,579).
fn primes_job_file(dir: &Path) -> PathBuf {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm");
    let text = format!(
        "[modules]\nprimes = {:?}\nsum = {:?}\n\n[[task]]\nname = \"range-{{i}}\"\nfor = \"i in 0..10\"\n\
         module = \"primes\"\nargs = [\"{{i * 1000000}}\", \"{{(i + 1) * 1000000}}\"]\n\n[[task]]\n\
         name = \"total\"\nmodule = \"sum\"\ninputs = [{{ task = \"range-{{i}}\", for = \"i in 0..10\" }}]\n",
        wasm.join("primes.wasm"),
        wasm.join("sum.wasm"),
    );
    let path = dir.join("primes.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn submit_alone_runs_locally_and_an_unreachable_bootstrap_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = primes_job_file(dir.path());
    let out = shoal().arg("submit").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"664579\n");

    // Nobody listens on the discard port.
    let out = shoal()
        .arg("submit")
        .arg(&file)
        .args(["--bootstrap", "127.0.0.1:9", "--join-timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no peer answered at 127.0.0.1:9"), "{stderr}");

    // A job file with a mistake: exit 2 before joining anything, naming the line, task and field.
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&file).unwrap().replace("args = [", "argz = [");
    std::fs::write(&bad, text).unwrap();
    let out = shoal().arg("submit").arg(&bad).args(["--bootstrap", "127.0.0.1:9"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:") && stderr.contains("argz"), "{stderr}");
    assert_eq!(stderr.matches("unknown field").count(), 1, "said once: {stderr}");
    assert!(!stderr.contains("no peer answered"), "the file is checked before joining: {stderr}");

    // A name that does not resolve: the same clear error, naming it.
    let out = shoal()
        .arg("submit")
        .arg(&file)
        .args(["--bootstrap", "nosuch.invalid:7600", "--join-timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no peer answered at nosuch.invalid:7600"), "{stderr}");

    // A worker too.
    let out = shoal()
        .arg("worker")
        .args(["--listen", "127.0.0.1:0", "--bootstrap", "127.0.0.1:9", "--join-timeout", "1s", "--data-dir"])
        .arg(dir.path().join("w"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no peer answered at 127.0.0.1:9"), "{stderr}");
}

#[test]
fn a_worker_killed_with_sigkill_mid_job_loses_nothing_but_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut workers = three_workers(dir.path());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let peer = submitter_seeing(&dir.path().join("submitter"), &workers).await;

        let (job, blobs) = primes_job(16, 100_000_000 / 16);
        let handle = peer.submit(job, blobs).await.unwrap();
        // Once work is out on the peers, SIGKILL a worker: no goodbye, no closed connections.
        let mut progress = handle.watch_progress();
        progress.wait_for(|p| p.running >= 2).await.unwrap();
        signal(&workers[1].child, libc::SIGKILL);
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(120), handle.wait()).await.unwrap().unwrap();
        // π(10^8) = 5,761,455.
        assert_eq!(out.get("total"), Some(&b"5761455\n"[..]));
        peer.shutdown().await;
    });

    let killed = workers.remove(1);
    let mut child = killed.child;
    assert!(!child.wait().unwrap().success());
    for w in workers {
        w.stop();
    }
}

#[test]
fn another_swarm_secret_keeps_a_worker_and_a_submitter_out() {
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    std::fs::write(&ours, "our swarm").unwrap();
    std::fs::write(&theirs, "another swarm").unwrap();
    let secret = |f: &Path| [std::ffi::OsStr::new("--swarm-secret"), f.as_os_str()].map(|s| s.to_os_string());
    let [flag, file] = secret(&ours);
    let first = Worker::start_with(&dir.path().join("w0"), None, &[&flag, &file]);
    // Same secret: joins.
    let friend = Worker::start_with(&dir.path().join("w1"), Some(first.addr), &[&flag, &file]);
    // Another secret: refused at the handshake, so it never joins nor receives a task.
    let [flag2, file2] = secret(&theirs);
    let mut child = shoal()
        .arg("worker")
        .args(["--listen", "127.0.0.1:0", "--join-timeout", "2s", "--bootstrap", &first.addr.to_string()])
        .arg(&flag2)
        .arg(&file2)
        .arg("--data-dir")
        .arg(dir.path().join("w2"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must exit on its own; one that joined would run until signalled.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a worker with another swarm secret joined the swarm");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no peer answered"), "{stderr}");
    // `shoal submit` with the swarm's secret runs a job there (its own peer donates nothing);
    // with another secret it is refused like the worker; with an empty file it says so.
    let jobfile = primes_job_file(dir.path());
    let submit = |secret: &Path| {
        shoal()
            .arg("submit")
            .arg(&jobfile)
            .args(["--cores", "0", "--join-timeout", "3s", "--bootstrap", &first.addr.to_string()])
            .arg("--swarm-secret")
            .arg(secret)
            .output()
            .unwrap()
    };
    let ok = submit(&ours);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "664579", "π(10^7)");
    let refused = submit(&theirs);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no peer answered"));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let bad = submit(&empty);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is empty"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    for w in [friend, first] {
        w.stop();
    }
}

#[test]
fn demo_computes_a_png_on_a_swarm_of_worker_processes_and_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--size", "96", "--tile", "32", "--iterations", "100"].map(std::ffi::OsStr::new);
    let stdout = demo(&args, dir.path());
    assert!(stdout.contains("10 tasks (3x3 tiles + stitch)"), "{stdout}");
    let png = std::fs::read(dir.path().join("mandelbrot.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 96, "width");
    assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 96, "height");
    // The first tile rendered locally is in the swarm's image, byte for byte (deterministic tasks;
    // the stitcher writes uncompressed deflate blocks, so the first pixel row appears verbatim).
    let tile = run_with_stdin(
        shoal().arg("run").arg(job("mandelbrot")).args(["--", "96", "96", "32", "0", "0", "100"]),
        b"",
    );
    assert_eq!(tile.stdout.len(), 32 * 32 * 3);
    let first_row = &tile.stdout[..32 * 3];
    assert!(png.windows(first_row.len()).any(|w| w == first_row), "tile (0,0) row 0 is in the PNG");
}

/// A volunteer's cap on one task, end to end from a job file: two workers that accept at most 10^6
/// fuel per task refuse a task asking 10^10; the submitter (donating no cores) sees the job fail
/// with the refusal naming the setting, instead of waiting forever. A task within the cap runs.
#[test]
fn a_task_asking_more_than_the_workers_caps_is_refused_with_that_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cap: [&std::ffi::OsStr; 2] = ["--max-task-fuel".as_ref(), "1e6".as_ref()];
    let first = Worker::start_with(&dir.path().join("w0"), None, &cap);
    let second = Worker::start_with(&dir.path().join("w1"), Some(first.addr), &cap);
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm");
    let file = |name: &str, fuel: u64| {
        let text = format!(
            "[modules]\nprimes = {:?}\n\n[[task]]\nname = \"count\"\nmodule = \"primes\"\n\
             args = [\"0\", \"100\"]\nfuel = {fuel}\n",
            wasm.join("primes.wasm"),
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let submit = |path: &Path| {
        shoal()
            .arg("submit")
            .arg(path)
            .args(["--cores", "0", "--bootstrap", &first.addr.to_string()])
            .output()
            .unwrap()
    };
    let out = submit(&file("greedy.toml", 10_000_000_000));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("count") && stderr.contains("max_task_fuel is 1000000"), "{stderr}");
    let out = submit(&file("modest.toml", 1_000_000));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"25\n", "π(100) = 25");
    second.stop();
    first.stop();
}

/// Whether `cmd` (a command line) runs and exits 0 with `arg`.
fn tool_runs(cmd: &[&str], arg: &str) -> bool {
    Command::new(cmd[0]).args(&cmd[1..]).arg(arg).output().is_ok_and(|o| o.status.success())
}

#[test]
fn a_new_task_skeleton_builds_and_runs_on_a_local_swarm_in_c_zig_and_assemblyscript() {
    let zig_env = std::env::var("ZIG").unwrap_or_default();
    let zig: Vec<&str> = if zig_env.trim().is_empty() {
        vec!["python3", "-m", "ziglang"]
    } else {
        zig_env.split_whitespace().collect()
    };
    let langs = [
        (
            "c",
            tool_runs(&["clang"], "--version"),
            "clang (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32)",
        ),
        ("zig", tool_runs(&zig, "version"), "Zig (pip install ziglang==0.17.1, or set ZIG)"),
        (
            "assemblyscript",
            tool_runs(&["npm"], "--version"),
            "npm (Debian: npm; the compiler comes from the registry)",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (lang, available, needs) in langs {
        if !available {
            eprintln!("SKIPPED: `shoal new task --lang {lang}` end to end: no {needs} here");
            continue;
        }
        let task_dir = dir.path().join(format!("hello-{lang}"));
        let out = shoal()
            .args(["new", "task", "hello", "--lang", lang, "--dir"])
            .arg(&task_dir)
            .env("ZIG", zig.join(" "))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("built ") && task_dir.join("hello.wasm").is_file(), "{stdout}");
        let job = task_dir.join("job.toml");
        let printed = demo(&["--job".as_ref(), job.as_os_str()], &dir.path().join(format!("out-{lang}")));
        assert!(
            printed.lines().any(|l| l == "hello: hello, shoal: 2 input(s), 11 bytes"),
            "{lang}: {printed}"
        );
        // A second time: refused, nothing overwritten.
        let again = shoal().args(["new", "task", "hello", "--dir"]).arg(&task_dir).output().unwrap();
        assert_eq!(again.status.code(), Some(2), "an error exits 2");
        assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    }
}

/// Prime counting in `n` ranges of `step` from 0, summed by a `total` task.
fn primes_job(n: u64, step: u64) -> (Job, std::collections::HashMap<BlobHash, Vec<u8>>) {
    let primes = std::fs::read(job("primes")).unwrap();
    let sum = std::fs::read(job("sum")).unwrap();
    let (p, s) = (BlobHash::of(&primes), BlobHash::of(&sum));
    let mut specs: Vec<TaskSpec> = (0..n)
        .map(|k| TaskSpec {
            args: vec![(k * step).to_string(), ((k + 1) * step).to_string()],
            ..TaskSpec::new(format!("p{k}"), p)
        })
        .collect();
    let mut total = TaskSpec::new("total", s);
    for k in 0..n {
        total = total.after(format!("p{k}"));
    }
    specs.push(total);
    (Job::new(specs).unwrap(), std::collections::HashMap::from([(p, primes), (s, sum)]))
}
