//! Jobs that outlive their submitter, end to end on `shoal worker` processes: the submitting
//! `shoal submit` killed with SIGKILL at 10 %, 50 % and 90 % of a job (and with it the first
//! deputy), a detached job while the other workers restart, and `shoal job wait` from a new
//! process getting outputs identical to a clean run's.

use std::process::Child;
use std::time::{Duration, Instant};

use super::*;

/// Workers killed when dropped (a failed test leaves no process behind).
struct Swarm(Vec<Option<Worker>>);

impl Drop for Swarm {
    fn drop(&mut self) {
        for w in self.0.iter_mut().flatten() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

impl Swarm {
    fn start(dir: &Path, n: usize) -> Swarm {
        let first = Worker::start(&dir.join("w0"), None);
        let addr = first.addr;
        let mut all = vec![Some(first)];
        for k in 1..n {
            all.push(Some(Worker::start(&dir.join(format!("w{k}")), Some(addr))));
        }
        Swarm(all)
    }

    fn addr(&self) -> String {
        self.0.iter().flatten().next().map(|w| w.addr.to_string()).unwrap()
    }

    /// Tasks finished on every live worker so far.
    fn tasks_done(&self, dir: &Path) -> u64 {
        (0..self.0.len())
            .filter(|&k| self.0[k].is_some())
            .map(|k| {
                let out =
                    shoal().args(["status", "--json", "--data-dir"]).arg(dir.join(format!("w{k}"))).output();
                let out = out.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                v["tasks_done"].as_u64().unwrap_or(0)
            })
            .sum()
    }

    /// Kills (SIGKILL) the worker whose peer id starts with `id`.
    fn kill(&mut self, id: &str) -> usize {
        let k = self.0.iter().position(|w| w.as_ref().is_some_and(|w| w.id.starts_with(id))).unwrap();
        let mut w = self.0[k].take().unwrap();
        w.child.kill().unwrap();
        w.child.wait().unwrap();
        k
    }
}

/// 16 prime-counting ranges of 250 million (a few seconds of work for three one-core workers)
/// and their sum.
fn long_job(dir: &Path) -> PathBuf {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm");
    let text = format!(
        "[modules]\nprimes = {:?}\nsum = {:?}\n\n[[task]]\nname = \"range-{{i}}\"\nfor = \"i in 0..16\"\n\
         module = \"primes\"\nargs = [\"{{i * 250000000}}\", \"{{(i + 1) * 250000000}}\"]\n\n[[task]]\n\
         name = \"total\"\nmodule = \"sum\"\ninputs = [{{ task = \"range-{{i}}\", for = \"i in 0..16\" }}]\n",
        wasm.join("primes.wasm"),
        wasm.join("sum.wasm"),
    );
    let path = dir.join("long.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// π(4,000,000,000): what every run of [`long_job`] must print.
const LONG_JOB_TOTAL: &[u8] = b"189961812\n";

/// Starts `shoal submit FILE --bootstrap ADDR` (no verification: the test compares outputs
/// itself) and returns it with the job id it prints on stderr.
fn start_submit(file: &Path, addr: &str, extra: &[&str]) -> (Child, String) {
    let mut child = shoal()
        .arg("submit")
        .arg(file)
        .args(["--bootstrap", addr, "--verify", "none"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("job ").and_then(|l| l.strip_suffix(" submitted")) {
                let _ = tx.send(id.to_string());
            }
        }
    });
    let id = rx.recv_timeout(Duration::from_secs(60)).expect("shoal submit never printed the job id");
    (child, id)
}

/// `shoal job ARGS… --bootstrap ADDR --json`, parsed.
fn job_json(args: &[&str], addr: &str) -> (bool, serde_json::Value) {
    let out = shoal().arg("job").args(args).args(["--bootstrap", addr, "--json"]).output().unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("shoal job {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), v)
}

/// `shoal job wait ID --out DIR` from a new process: the job's outputs.
fn wait_for(id: &str, addr: &str, out: &Path) -> Vec<u8> {
    let (ok, v) = job_json(&["wait", id, "--out", out.to_str().unwrap(), "--patience", "60s"], addr);
    assert!(ok, "shoal job wait failed: {v}");
    assert_eq!(v["status"], "done", "{v}");
    std::fs::read(out.join("total")).unwrap()
}

/// Waits until the workers finished `tasks` more runs than `base` (3 minutes at most).
fn until_done(swarm: &Swarm, dir: &Path, base: u64, tasks: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while swarm.tasks_done(dir) < base + tasks {
        assert!(Instant::now() < deadline, "the job never reached {tasks} tasks");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_job_survives_its_submitter_killed_at_10_50_and_90_percent() {
    let dir = tempfile::tempdir().unwrap();
    let file = long_job(dir.path());
    let swarm = Swarm::start(dir.path(), 3);
    let addr = swarm.addr();
    // A clean run first: what every recovered run must give back.
    let (clean, _) = start_submit(&file, &addr, &[]);
    let clean = clean.wait_with_output().unwrap();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    assert_eq!(clean.stdout, LONG_JOB_TOTAL);
    for (k, share) in [0.1, 0.5, 0.9].into_iter().enumerate() {
        let base = swarm.tasks_done(dir.path());
        let (mut submit, id) = start_submit(&file, &addr, &["--cores", "0"]);
        until_done(&swarm, dir.path(), base, (17.0 * share) as u64);
        submit.kill().unwrap();
        submit.wait().unwrap();
        let started = Instant::now();
        let out = wait_for(&id, &addr, &dir.path().join(format!("out{k}")));
        assert_eq!(out, clean.stdout, "killed at {share}: the recovered job's output differs");
        let (_, status) = job_json(&["status", &id], &addr);
        assert!(status["term"].as_u64().unwrap() >= 1, "a deputy owns the job now: {status}");
        println!("killed at {share}: recovered in {:?}: {status}", started.elapsed());
    }
}

#[test]
fn a_job_survives_its_submitter_and_its_first_deputy_killed_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = long_job(dir.path());
    let mut swarm = Swarm::start(dir.path(), 4);
    let addr = swarm.addr();
    let (mut submit, id) = start_submit(&file, &addr, &["--cores", "0"]);
    until_done(&swarm, dir.path(), 0, 8);
    let (_, status) = job_json(&["status", &id], &addr);
    let deputies = status["deputies"].as_array().unwrap().clone();
    assert_eq!(deputies.len(), 2, "{status}");
    submit.kill().unwrap();
    submit.wait().unwrap();
    let first = deputies[0].as_str().unwrap();
    let gone = swarm.kill(first);
    let addr = swarm.addr();
    println!("killed the submitter and the first deputy (worker {gone})");
    let out = wait_for(&id, &addr, &dir.path().join("out"));
    assert_eq!(out, LONG_JOB_TOTAL);
    let (_, status) = job_json(&["status", &id], &addr);
    assert_eq!(status["owner"], deputies[1], "the second deputy took over: {status}");
}

#[test]
fn a_detached_job_completes_while_every_worker_but_its_owner_and_deputies_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let file = long_job(dir.path());
    let mut swarm = Swarm::start(dir.path(), 4);
    let addr = swarm.addr();
    let out = shoal()
        .arg("submit")
        .arg(&file)
        .args(["--bootstrap", &addr, "--verify", "none", "--cores", "0", "--detach"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let id = stdout.lines().last().unwrap().to_string();
    assert_eq!(id.len(), 32, "the job id alone on the last line: {stdout:?}");
    let (_, status) = job_json(&["status", &id], &addr);
    assert_eq!(status["term"], 1, "a deputy owns the detached job: {status}");
    let mut keep: Vec<String> = vec![status["owner"].as_str().unwrap().to_string()];
    keep.extend(status["deputies"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()));
    let restart: Vec<usize> = (0..swarm.0.len())
        .filter(|&k| swarm.0[k].as_ref().is_some_and(|w| !keep.iter().any(|id| id == &w.id)))
        .collect();
    assert!(!restart.is_empty(), "some worker is neither owner nor deputy: {status}");
    let via = swarm.0.iter().flatten().find(|w| keep.contains(&w.id)).map(|w| w.addr).unwrap();
    for k in restart {
        let id = swarm.0[k].as_ref().unwrap().id.clone();
        swarm.kill(&id);
        swarm.0[k] = Some(Worker::start(&dir.path().join(format!("w{k}")), Some(via)));
    }
    let out = wait_for(&id, &via.to_string(), &dir.path().join("out"));
    assert_eq!(out, LONG_JOB_TOTAL);
    // The outputs stay fetchable after the end, from a new process.
    let again = wait_for(&id, &via.to_string(), &dir.path().join("again"));
    assert_eq!(again, LONG_JOB_TOTAL);
    let (ok, list) = job_json(&["list"], &via.to_string());
    assert!(ok && list.as_array().unwrap().iter().any(|j| j["job_id"] == id.as_str()), "{list}");
}

#[test]
fn cancel_needs_the_submitters_key_and_an_unknown_job_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = long_job(dir.path());
    let swarm = Swarm::start(dir.path(), 3);
    let addr = swarm.addr();
    let key = dir.path().join("me.key");
    let other = dir.path().join("other.key");
    for k in [&key, &other] {
        assert!(shoal().args(["key", "new", "--out"]).arg(k).output().unwrap().status.success());
    }
    let out = shoal()
        .arg("submit")
        .arg(&file)
        .args(["--bootstrap", &addr, "--verify", "none", "--cores", "0", "--detach", "--sign-key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    let cancel = |k: &Path| {
        shoal()
            .args(["job", "cancel", &id, "--bootstrap", &addr, "--json", "--sign-key"])
            .arg(k)
            .output()
            .unwrap()
    };
    let refused = cancel(&other);
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    let v: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(v["cancelled"], false);
    let done = cancel(&key);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let (ok, status) = job_json(&["status", &id], &addr);
    assert!(ok && status["status"] == "cancelled", "{status}");
    let (ok, v) = job_json(&["wait", &id], &addr);
    assert!(!ok && v["status"] == "cancelled", "{v}");
    let unknown =
        shoal().args(["job", "status", "0123456789abcdef0123456789abcdef", "--bootstrap", &addr]).output();
    let unknown = unknown.unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("no peer knows job"), "{err}");
}
