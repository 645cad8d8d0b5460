//! In-process swarms of real peers on loopback (QUIC, membership, sandbox) running job DAGs of the
//! task programs in `jobs/wasm`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use shoal_core::ids::{BlobHash, TaskIndex};
use shoal_core::job::{InputSpec, Job, TaskSpec};
use shoal_node::{Config, JobError, Peer};

/// A safety net only: every wait below ends on a condition long before this.
const PATIENCE: Duration = Duration::from_secs(60);

fn module(name: &str) -> (BlobHash, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm").join(format!("{name}.wasm"));
    let bytes = std::fs::read(path).unwrap();
    (BlobHash::of(&bytes), bytes)
}

fn task(name: &str, module: BlobHash, args: &[String]) -> TaskSpec {
    TaskSpec { args: args.to_vec(), ..TaskSpec::new(name, module) }
}

#[path = "support/swarm.rs"]
mod support;
use support::Swarm;

/// Starts `n` one-core peers joined through the first, and waits until every peer sees every
/// other one with a free slot.
async fn swarm(n: usize) -> Swarm {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    Swarm::start(&vec![1; n], PATIENCE).await
}

/// `ranges` prime counts over [0, hi) reduced by two levels of `sum`; the sink is `total`.
fn primes_job(hi: u64, ranges: u64) -> (Job, HashMap<BlobHash, Vec<u8>>) {
    let (primes, primes_bytes) = module("primes");
    let (sum, sum_bytes) = module("sum");
    let step = hi / ranges;
    let mut specs = Vec::new();
    let mut halves = [task("left", sum, &[]), task("right", sum, &[])];
    for k in 0..ranges {
        let name = format!("primes{k}");
        let (lo, end) = (k * step, if k + 1 == ranges { hi } else { (k + 1) * step });
        specs.push(task(&name, primes, &[lo.to_string(), end.to_string()]));
        halves[(k * 2 / ranges) as usize].inputs.push(InputSpec::Output(name));
    }
    specs.extend(halves);
    specs.push(task("total", sum, &[]).after("left").after("right"));
    let blobs = HashMap::from([(primes, primes_bytes), (sum, sum_bytes)]);
    (Job::new(specs).unwrap(), blobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_runs_a_dag_to_the_right_result() {
    let s = swarm(3).await;
    let (job, blobs) = primes_job(10_000_000, 8);
    let index = |name: &str| job.tasks().iter().position(|t| t.name == name).unwrap() as u32;
    let wanted = vec![TaskIndex(index("left")), TaskIndex(index("total"))];
    let handle = s.peers[0].submit_with_outputs(job, blobs, wanted).await.unwrap();
    let progress = handle.watch_progress();
    let out = tokio::time::timeout(PATIENCE, handle.wait()).await.unwrap().unwrap();
    // π(10^7) = 664,579 and π(5·10^6) = 348,513.
    assert_eq!(out.get("total"), Some(&b"664579\n"[..]));
    assert_eq!(out.get("left"), Some(&b"348513\n"[..]));
    assert_eq!(out.outputs.len(), 2, "only the wanted outputs come back");
    assert_eq!(out.progress.done, 11);
    assert_eq!(out.progress.total, 11);
    assert!(out.progress.peers_used >= 2, "the owner spread the work: {:?}", out.progress);
    assert!(out.progress.fuel_used > 10_000_000, "eight sieves of a million numbers: {:?}", out.progress);
    assert!(out.progress.cpu_time > Duration::ZERO && out.progress.cpu_time < PATIENCE, "{:?}", out.progress);
    assert_eq!(progress.borrow().done, 11);
    let ran: u64 = s.peers.iter().map(|p| p.status().tasks_done).sum();
    assert!(ran >= 11, "every task ran somewhere: {ran}");
    for p in &s.peers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_peer_killed_mid_job() {
    let s = swarm(4).await;
    let (job, blobs) = primes_job(100_000_000, 12);
    let handle = s.peers[0].submit(job, blobs).await.unwrap();
    // Kill the first non-owner peer seen running one of the job's tasks.
    let victim = tokio::time::timeout(PATIENCE, async {
        let mut watches: Vec<_> = s.peers[1..].iter().map(Peer::watch_status).collect();
        loop {
            if let Some(i) = watches.iter_mut().position(|w| w.borrow_and_update().running > 0) {
                return i + 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    s.peers[victim].kill().await;
    let out = tokio::time::timeout(PATIENCE, handle.wait()).await.unwrap().unwrap();
    // π(10^8) = 5,761,455.
    assert_eq!(out.get("total"), Some(&b"5761455\n"[..]));
    for (i, p) in s.peers.iter().enumerate() {
        if i != victim {
            p.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deterministic_task_failure_fails_the_job_with_its_reason() {
    let s = swarm(3).await;
    let (sum, sum_bytes) = module("sum");
    let (primes, primes_bytes) = module("primes");
    let junk = b"12 twelve".to_vec();
    let junk_hash = BlobHash::of(&junk);
    let mut bad = task("bad", sum, &[]);
    bad.inputs.push(InputSpec::Blob { hash: junk_hash, size: junk.len() as u64 });
    let job = Job::new(vec![
        task("fine", primes, &["0".into(), "1000".into()]),
        bad,
        task("end", sum, &[]).after("fine").after("bad"),
    ])
    .unwrap();
    let blobs = HashMap::from([(sum, sum_bytes), (primes, primes_bytes), (junk_hash, junk)]);
    let handle = s.peers[1].submit(job, blobs).await.unwrap();
    let err = tokio::time::timeout(PATIENCE, handle.wait()).await.unwrap().unwrap_err();
    match &err {
        JobError::TaskFailed { name, index, reason } => {
            assert_eq!((name.as_str(), *index), ("bad", 1));
            assert!(reason.contains("status 2") && reason.contains("expected an integer"), "{reason}");
        }
        other => panic!("expected the task's failure, got {other:?}"),
    }
    assert!(err.to_string().contains("\"bad\""), "{err}");

    // A job naming a blob nobody gave is refused before it starts.
    let job = Job::new(vec![task("lonely", BlobHash::of(b"no such module"), &[])]).unwrap();
    let refused = s.peers[0].submit(job, HashMap::new()).await.unwrap_err();
    assert!(refused.to_string().contains("lonely"), "{refused}");
    for p in &s.peers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_leaving_gracefully_hands_back_its_queue_and_finishes_its_running_task() {
    let s = swarm(3).await;
    let (job, blobs) = primes_job(100_000_000, 12);
    let handle = s.peers[0].submit(job, blobs).await.unwrap();
    // The first non-owner peer seen running a task with more queued behind it leaves.
    let (leaver, before) = tokio::time::timeout(PATIENCE, async {
        let mut watches: Vec<_> = s.peers[1..].iter().map(Peer::watch_status).collect();
        loop {
            for (i, w) in watches.iter_mut().enumerate() {
                let st = *w.borrow_and_update();
                if st.running > 0 && st.queued > 0 {
                    return (i + 1, st);
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    s.peers[leaver].shutdown().await;
    let after = s.peers[leaver].status();
    assert!(after.handed_back >= 1, "its queued tasks went back to the owner: {before:?} -> {after:?}");
    assert_eq!((after.running, after.queued), (0, 0), "{after:?}");
    assert!(after.tasks_done > before.tasks_done, "its running task finished before it left: {after:?}");
    let out = tokio::time::timeout(PATIENCE, handle.wait()).await.unwrap().unwrap();
    assert_eq!(out.get("total"), Some(&b"5761455\n"[..]));
    for (i, p) in s.peers.iter().enumerate() {
        if i != leaver {
            p.shutdown().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submitters_that_also_run_tasks_reach_each_other() {
    // Submitters donate a core, so they steal each other's tasks right after joining, before
    // membership has told them of each other: the addresses carried with the tasks must do.
    let s = swarm(2).await;
    let mut submitters = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.net.bootstrap = vec![s.peers[0].local_addr()];
        submitters.push(Peer::start(cfg).await.unwrap());
        dirs.push(dir);
    }
    let mut handles = Vec::new();
    for p in &submitters {
        let (job, blobs) = primes_job(20_000_000, 12);
        handles.push(p.submit(job, blobs).await.unwrap());
    }
    for h in handles {
        let out = tokio::time::timeout(Duration::from_secs(30), h.wait()).await.expect("a job hung").unwrap();
        // π(2·10^7) = 1,270,607.
        assert_eq!(out.get("total"), Some(&b"1270607\n"[..]));
    }
    for p in submitters.iter().chain(&s.peers) {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_peer_halts_what_still_runs_after_the_grace_and_hands_it_back_unrun() {
    use shoal_node::PauseReason;
    // Two one-core workers with a short grace, and an owner that donates nothing.
    let mut peers: Vec<Peer> = Vec::new();
    let mut dirs = Vec::new();
    for cores in [0, 1, 1] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.cores = cores;
        cfg.leave_grace = Duration::from_millis(300);
        // One run per task: with the owner donating nothing, adaptive verification would need
        // both workers to run the task, and one of them is paused.
        cfg.verify = Some(shoal_core::sched::VerifyPolicy::None);
        if let Some(first) = peers.first() {
            cfg.net.bootstrap = vec![first.local_addr()];
        }
        peers.push(Peer::start(cfg).await.unwrap());
        dirs.push(dir);
    }
    tokio::time::timeout(PATIENCE, async {
        while peers[0].node().view().iter().filter(|e| e.hints.free_slots > 0).count() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the swarm never formed");
    // One task of a few seconds: π(2·10^8) = 11,078,937.
    let (primes, bytes) = module("primes");
    let job = Job::new(vec![task("all", primes, &["0".into(), "200000000".into()])]).unwrap();
    let handle = peers[0].submit(job, HashMap::from([(primes, bytes)])).await.unwrap();
    let runner = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(i) = (1..3).find(|&i| peers[i].status().running > 0) {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    peers[runner].set_paused(Some(PauseReason::User)).await;
    // Past the grace the run is halted and handed back, not reported as done or failed.
    let st = tokio::time::timeout(PATIENCE, async {
        let mut w = peers[runner].watch_status();
        w.wait_for(|s| s.running == 0).await.unwrap().to_owned()
    })
    .await
    .unwrap();
    assert_eq!(st.paused, Some(PauseReason::User));
    assert_eq!((st.tasks_done, st.handed_back, st.queued), (0, 1, 0), "{st:?}");
    let out = tokio::time::timeout(PATIENCE, handle.wait()).await.unwrap().unwrap();
    assert_eq!(out.get("all"), Some(&b"11078937\n"[..]));
    assert_eq!(out.progress.failed, 0);
    assert_eq!(peers[runner].status().tasks_done, 0, "nothing ran on the paused peer");
    peers[runner].set_paused(None).await;
    tokio::time::timeout(PATIENCE, peers[runner].watch_status().wait_for(|s| s.paused.is_none()))
        .await
        .unwrap()
        .unwrap();
    for p in &peers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_shows_the_runs_and_the_owned_jobs_dag() {
    let s = swarm(2).await;
    let (job, blobs) = primes_job(20_000_000, 4);
    let monitor = s.peers[0].monitor();
    let handle = s.peers[0].submit(job, blobs).await.unwrap();
    // While it runs: the job is listed live, with its DAG and at least one task placed.
    let live = tokio::time::timeout(PATIENCE, async {
        loop {
            let a = monitor.activity().await.unwrap();
            if let Some(j) = a.jobs.iter().find(|j| j.id == handle.id() && j.end.is_none())
                && j.tasks.iter().any(|t| t.phase == shoal_node::TaskPhase::Placed && t.at.is_some())
            {
                return j.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(live.tasks.len(), 7);
    let names: Vec<&str> = live.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["primes0", "primes1", "primes2", "primes3", "left", "right", "total"]);
    assert_eq!(live.edges, [(0, 4), (1, 4), (2, 5), (3, 5), (4, 6), (5, 6)]);
    let id = handle.id();
    tokio::time::timeout(PATIENCE, handle.wait()).await.unwrap().unwrap();
    // Once over: the final picture is kept, every task done; the runs are in the recent rings.
    let a = monitor.activity().await.unwrap();
    let done = a.jobs.iter().find(|j| j.id == id).unwrap();
    assert_eq!(done.end, Some(Ok(())));
    assert!(done.tasks.iter().all(|t| t.phase == shoal_node::TaskPhase::Done), "{done:?}");
    assert_eq!((done.progress.done, done.progress.total), (7, 7));
    let mut runs = Vec::new();
    for p in &s.peers {
        runs.extend(p.monitor().activity().await.unwrap().recent);
    }
    let ok: Vec<_> = runs
        .iter()
        .filter(|r| r.task.job == id && matches!(r.end, Some(shoal_node::RunEnd::Ok { .. })))
        .collect();
    assert!(ok.len() >= 7, "every task ran once at least: {runs:?}");
    assert!(ok.iter().all(|r| r.owner == s.peers[0].peer_id()));
    for p in &s.peers {
        p.shutdown().await;
    }
    assert!(monitor.activity().await.is_none(), "a stopped peer answers nothing");
}

/// The crash-safety test of persisted owners: an owner peer (no deputies, so only its own
/// journal can bring the job back) is killed at seeded random instants of a job and restarted
/// on the same data directory, again and again. Every restart must keep every result its
/// journal held when it died, and the job must end with the right output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_resumes_from_its_journal_wherever_it_was_killed() {
    use rand::{Rng, SeedableRng};
    use shoal_core::sched::deputy::{JobPhase, Replayed};

    let s = swarm(3).await;
    let dir = tempfile::tempdir().unwrap();
    let owner_cfg = || {
        let mut cfg = Config::new(dir.path());
        // One core, as `shoal submit` donates by default. (With none, the tasks it keeps for
        // thieves wait until a fresh incarnation's load hints reach them, which can take longer
        // than its life here.)
        cfg.cores = 1;
        cfg.deputies = 0;
        cfg.takeover_grace = Duration::from_millis(200);
        cfg.verify = Some(shoal_core::sched::VerifyPolicy::None);
        cfg.net.bootstrap = vec![s.peers[0].local_addr()];
        cfg
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for round in 0..6 {
        let owner = Peer::start(owner_cfg()).await.unwrap();
        let (job, blobs) = primes_job(400_000_000, 16);
        let handle = owner.submit(job, blobs).await.unwrap();
        let id = handle.id();
        let journal = shoal_node::journal::path_of(dir.path(), id);
        let mut owner = Some(owner);
        let mut kills = 0;
        // Kill and restart until the job is done: each life is a random 250..1250 ms (the grace, 200 ms, included).
        let report = tokio::time::timeout(PATIENCE, async {
            loop {
                tokio::time::sleep(Duration::from_millis(rng.random_range(250..1250))).await;
                let alive = owner.take().unwrap();
                if let Some(r) = alive.job_report(id, true, Duration::from_millis(50)).await
                    && r.phase == JobPhase::Done
                    && r.by_owner
                {
                    owner = Some(alive);
                    return r;
                }
                alive.kill().await;
                kills += 1;
                let stored = shoal_node::journal::read(&journal).unwrap();
                let held = Replayed::of(stored.record.tasks.len(), &stored.changes);
                let restarted = Peer::start(owner_cfg()).await.unwrap();
                // The resumed owner (after its grace) still holds every result the file held.
                let resumed = loop {
                    match restarted.job_report(id, false, Duration::from_millis(50)).await {
                        Some(r) if r.by_owner && r.owner == restarted.peer_id() && r.term > stored.term => {
                            break r;
                        }
                        // It ended just before the kill: its file says so, and no term follows.
                        Some(r) if stored.ended_unix_ms.is_some() && r.phase == JobPhase::Done => break r,
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                assert!(
                    resumed.done as usize >= held.done_count(),
                    "round {round}: a restart lost results ({} done, the journal held {})",
                    resumed.done,
                    held.done_count()
                );
                println!(
                    "round {round}: killed with {} done on disk, resumed in term {} with {}",
                    held.done_count(),
                    resumed.term,
                    resumed.done
                );
                owner = Some(restarted);
            }
        })
        .await
        .unwrap();
        let owner = owner.unwrap();
        let outputs = owner.fetch_outputs(&report).await.unwrap();
        // π(4·10^8) = 21,336,326.
        assert_eq!(outputs.get("total").map(Vec::as_slice), Some(&b"21336326\n"[..]), "round {round}");
        println!("round {round}: done after {kills} kills, term {}", report.term);
        owner.shutdown().await;
        std::fs::remove_file(&journal).ok();
    }
    for p in &s.peers {
        p.shutdown().await;
    }
}
