//! Donation policies end to end: `shoal worker pause` / `resume` on real worker processes (a
//! paused worker hands its queued tasks back and runs none until resumed, while the job completes
//! on another worker), and `--max-cpu-percent 25` measured from `/proc/<pid>/stat`.

use std::time::{Duration, Instant};

use super::*;

/// `shoal status --json` of the worker in `dir`.
fn status(dir: &Path) -> serde_json::Value {
    let out = shoal().args(["status", "--json", "--data-dir"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `shoal worker pause|resume --data-dir DIR`; returns its stdout.
fn worker_cmd(cmd: &str, dir: &Path) -> String {
    let out = shoal().args(["worker", cmd, "--data-dir"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "shoal worker {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls the status of `dir` until `done` holds (60 s at most).
fn status_until(dir: &Path, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(dir);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A submitting peer in this process that donates no cores (so only the workers run tasks),
/// joined through `workers[0]` and seeing every worker. Its jobs are not verified: with the
/// other worker paused, no second peer could check a result (adaptive verification would fail
/// the job for want of one, as it should).
async fn submitter(dir: &Path, workers: &[&Worker]) -> shoal_node::Peer {
    let mut cfg = shoal_node::Config::new(dir);
    cfg.cores = 0;
    cfg.verify = Some(shoal_core::sched::VerifyPolicy::None);
    cfg.net.bootstrap = vec![workers[0].addr];
    let peer = shoal_node::Peer::start(cfg).await.unwrap();
    let ids: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !ids.iter().all(|id| peer.node().view().iter().any(|e| e.id.to_string() == *id)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the workers never all showed up in the view");
    peer
}

fn count(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or_else(|| panic!("{key} in {s}"))
}

#[test]
fn a_paused_worker_hands_its_queued_tasks_back_and_runs_none_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (d0, d1) = (dir.path().join("w0"), dir.path().join("w1"));
    let grace: [&std::ffi::OsStr; 2] = ["--leave-grace".as_ref(), "2s".as_ref()];
    let w0 = Worker::start_with(&d0, None, &grace);
    let w1 = Worker::start_with(&d1, Some(w0.addr), &grace);
    assert_eq!(status(&d1)["paused"], serde_json::Value::Null);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let peer = submitter(&dir.path().join("submitter"), &[&w0, &w1]).await;
        // 24 ranges of 4,166,667 cover [0, 100,000,008): π(10^8) = 5,761,455, and 100,000,007 is
        // prime. More than two one-core workers run at once, so both
        // hold queued tasks.
        let (job, blobs) = primes_job(24, 100_000_000 / 24 + 1);
        let handle = peer.submit(job, blobs).await.unwrap();
        let d1c = d1.clone();
        let before = tokio::task::spawn_blocking(move || {
            status_until(&d1c, "running and queueing work", |s| {
                count(s, "running") > 0 && count(s, "queued") > 0
            })
        })
        .await
        .unwrap();
        println!("w1 before the pause: {before}");

        let said = worker_cmd("pause", &d1);
        assert!(said.starts_with("paused:"), "{said}");
        let d1c = d1.clone();
        let paused = tokio::task::spawn_blocking(move || {
            status_until(&d1c, "paused with its queue handed back", |s| {
                s["paused"] == "user" && count(s, "queued") == 0 && count(s, "handed_back") > 0
            })
        })
        .await
        .unwrap();
        println!("w1 paused: {paused}");
        // Within the grace (2 s) the task it was running finishes or is halted; then nothing runs.
        let d1c = d1.clone();
        let idle =
            tokio::task::spawn_blocking(move || status_until(&d1c, "idle", |s| count(s, "running") == 0))
                .await
                .unwrap();
        let done_while_paused = count(&idle, "tasks_done");

        let out = tokio::time::timeout(Duration::from_secs(180), handle.wait()).await.unwrap().unwrap();
        assert_eq!(out.get("total"), Some(&b"5761456\n"[..]), "the job completes on the other worker");
        let after = status(&d1);
        println!("w1 when the job was done: {after}");
        assert_eq!(after["paused"], "user");
        assert_eq!(count(&after, "tasks_done"), done_while_paused, "a paused worker runs nothing");
        assert_eq!((count(&after, "running"), count(&after, "queued")), (0, 0));
        let text = shoal().args(["status", "--data-dir"]).arg(&d1).output().unwrap();
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(text.contains("donating:") && text.contains("no: paused by the volunteer (user)"), "{text}");

        // Resumed: it advertises its slots again and runs tasks of the next job.
        let said = worker_cmd("resume", &d1);
        assert!(said.starts_with("resumed:"), "{said}");
        let d1c = d1.clone();
        tokio::task::spawn_blocking(move || status_until(&d1c, "resumed", |s| s["paused"].is_null()))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), async {
            while !peer.node().view().iter().any(|e| e.id.to_string() == w1.id && e.hints.free_slots > 0) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the resumed worker never advertised a free slot");
        // π(6·10^6) = 412,849.
        let (job, blobs) = primes_job(12, 500_000);
        let out = peer.submit(job, blobs).await.unwrap();
        let out = tokio::time::timeout(Duration::from_secs(180), out.wait()).await.unwrap().unwrap();
        assert_eq!(out.get("total"), Some(&b"412849\n"[..]));
        let resumed = status(&d1);
        println!("w1 after the second job: {resumed}");
        assert!(
            count(&resumed, "tasks_done") > done_while_paused,
            "a resumed worker runs tasks again: {resumed}"
        );
        peer.shutdown().await;
    });
    w0.stop();
    w1.stop();
}

/// utime + stime of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn max_cpu_percent_25_keeps_a_busy_worker_near_a_quarter_of_a_core() {
    if !Path::new("/proc/self/stat").exists() {
        println!("skipped: no /proc to measure CPU time from");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d0 = dir.path().join("w0");
    let extra: [&std::ffi::OsStr; 4] =
        ["--max-cpu-percent".as_ref(), "25".as_ref(), "--leave-grace".as_ref(), "1s".as_ref()];
    let w0 = Worker::start_with(&d0, None, &extra);
    let pid = w0.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let peer = submitter(&dir.path().join("submitter"), &[&w0]).await;
        // One long task: prime counting far beyond what runs in the measurement.
        let (job, blobs) = primes_job(1, 4_000_000_000);
        let handle = peer.submit(job, blobs).await.unwrap();
        let d0c = d0.clone();
        tokio::task::spawn_blocking(move || status_until(&d0c, "running the task", |s| count(s, "running") == 1))
            .await
            .unwrap();
        // Past the module's compilation (not throttled), then measure over a few seconds.
        tokio::time::sleep(Duration::from_secs(2)).await;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let (t0, c0) = (Instant::now(), cpu_ticks(pid));
        tokio::time::sleep(Duration::from_secs(6)).await;
        let (wall, used) = (t0.elapsed().as_secs_f64(), (cpu_ticks(pid) - c0) as f64 / hz);
        let share = used / wall * 100.0;
        println!("max_cpu_percent = 25: the busy worker used {used:.2} s of CPU in {wall:.2} s: {share:.1} % of a core");
        assert_eq!(count(&status(&d0), "running"), 1, "the task ran all along");
        // The cap bounds the share from above whatever else runs; from below only an idle
        // machine does (the task runs at SCHED_IDLE, so parallel tests can starve it), so a
        // low figure is reported, not failed.
        assert!(share <= 45.0, "{share:.1} % of a core, expected about 25 % at most");
        if share < 10.0 {
            println!("note: the machine was busy ({share:.1} %): only the upper bound was checked");
        }
        handle.cancel().await;
        peer.kill().await;
    });
    w0.stop();
}
