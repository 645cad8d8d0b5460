//! Signed jobs through `shoal`: keys made with `shoal key`, workers that trust only some
//! submitters, and the reasons a submitter reads when no worker takes its job.

use super::{Worker, primes_job_file, shoal};
use std::path::Path;

/// Makes a key with `shoal key new` and returns its public form as `shoal key show` prints it.
fn new_key(path: &Path) -> String {
    let out = shoal().args(["key", "new", "--out"]).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let shown = shoal().args(["key", "show"]).arg(path).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), public, "show prints what new printed");
    public
}

#[test]
fn a_worker_trusting_key_a_runs_jobs_signed_by_a_and_refuses_b_and_unsigned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    let (public_a, public_b) = (new_key(&a), new_key(&b));
    assert_ne!(public_a, public_b);
    let again = shoal().args(["key", "new", "--out"]).arg(&a).output().unwrap();
    assert_eq!(again.status.code(), Some(2), "a key is never overwritten");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let trusted = dir.path().join("trusted");
    std::fs::write(&trusted, format!("# the lab's key\n{public_a}\n")).unwrap();
    let flags =
        [std::ffi::OsStr::new("--accept-unsigned=false"), "--trusted-submitters".as_ref(), trusted.as_ref()];
    let first = Worker::start_with(&dir.path().join("w0"), None, &flags);
    assert_eq!(first.trust, "runs jobs signed by its 1 trusted submitters only");
    let second = Worker::start_with(&dir.path().join("w1"), Some(first.addr), &flags);

    let job = primes_job_file(dir.path());
    let submit = |key: Option<&Path>| {
        let mut cmd = shoal();
        cmd.arg("submit").arg(&job).args(["--cores", "0", "--bootstrap", &first.addr.to_string()]);
        if let Some(k) = key {
            cmd.arg("--sign-key").arg(k);
        }
        cmd.output().unwrap()
    };
    let out = submit(Some(&a));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"664579\n", "π(10^7)");
    // Twice more with a JSON summary: unverified, then under the open swarm's default (adaptive:
    // with a submitter donating no cores, two workers agreeing make a result).
    let summaries: Vec<serde_json::Value> = [&["--verify", "none"][..], &[]]
        .iter()
        .map(|extra| {
            let mut cmd = shoal();
            cmd.arg("submit").arg(&job).args([
                "--json",
                "--cores",
                "0",
                "--bootstrap",
                &first.addr.to_string(),
            ]);
            let out = cmd.args(*extra).arg("--sign-key").arg(&a).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        })
        .collect();
    let want = blake3::hash(b"664579\n").to_hex().to_string();
    for s in &summaries {
        assert_eq!(s["outputs"][0]["blake3"], want.as_str(), "{s}");
        assert_eq!(s["disagreements"], 0, "{s}");
    }
    assert_eq!(summaries[0]["verify_runs"], 0, "{}", summaries[0]);
    assert!(summaries[1]["verify_runs"].as_u64().unwrap_or(0) > 0, "{}", summaries[1]);

    let out = submit(Some(&b));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("is signed by submitter {public_b}")), "{stderr}");
    assert!(stderr.contains("accepts jobs only from its trusted submitters"), "{stderr}");

    let out = submit(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not signed"), "{stderr}");

    // The refusals count in the workers' status, by reason.
    let status =
        shoal().args(["status", "--json", "--data-dir"]).arg(dir.path().join("w0")).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["refused"]["untrusted"].as_u64().unwrap_or(0) > 0, "{status}");
    second.stop();
    first.stop();

    // Credit: every accepted run of the three jobs was paid to the worker that made it, once,
    // checks included (they agreed); the receipts' fuel adds up.
    let credit = |w: &str| {
        let out = shoal().args(["credit", "--json", "--data-dir"]).arg(dir.path().join(w)).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let (c0, c1) = (credit("w0"), credit("w1"));
    let earned = c0["total_fuel"].as_u64().unwrap() + c1["total_fuel"].as_u64().unwrap();
    let runs = c0["runs"].as_u64().unwrap() + c1["runs"].as_u64().unwrap();
    let fuel = |s: &serde_json::Value| s["fuel"].as_u64().unwrap();
    // The first and third jobs ran under the open swarm's default (adaptive): with a submitter
    // that runs nothing, a result stands when both workers agree, so both runs of every task
    // are paid; the second, unverified, paid one run a task. Fuel is deterministic: each job's
    // tasks cost what the unverified job reported.
    assert_eq!(runs, 11 + 2 * 2 * 11, "{c0} {c1}");
    assert_eq!(earned, 5 * fuel(&summaries[0]), "{c0} {c1} {summaries:?}");
    assert_eq!(c0["bad_records"], 0);
    assert_eq!(c0["receipts"].as_array().unwrap().len() as u64, c0["runs"].as_u64().unwrap());
}

#[test]
fn a_worker_outside_a_private_swarm_refuses_unsigned_jobs_by_default_and_bad_lists_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = shoal();
    cmd.env_remove("SHOAL_ACCEPT_UNSIGNED");
    cmd.args(["worker", "--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"]).arg(dir.path().join("w"));
    let (worker, _, _) = Worker::spawn(&mut cmd);
    assert_eq!(worker.trust, "runs no jobs (accept_unsigned is off and no trusted_submitters are listed)");
    worker.stop();

    let bad = dir.path().join("bad");
    std::fs::write(&bad, "not-a-key\n").unwrap();
    let out = shoal()
        .args(["worker", "--listen", "127.0.0.1:0", "--trusted-submitters"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path().join("w2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad:1") && stderr.contains("shoal key show"), "{stderr}");
}

#[test]
fn a_submitter_kept_in_a_directory_keeps_what_it_learned_of_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let first = Worker::start(&dir.path().join("w0"), None);
    let second = Worker::start(&dir.path().join("w1"), Some(first.addr));
    let job = primes_job_file(dir.path());
    let kept = dir.path().join("submitter");
    let submit = || {
        let out = shoal()
            .arg("submit")
            .arg(&job)
            .args(["--json", "--bootstrap", &first.addr.to_string(), "--data-dir"])
            .arg(&kept)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Adaptive by default in this open swarm; the submitter runs tasks too (its runs anchor the
    // checks), so the workers that agreed with it gain trust, kept in the directory's book.
    let one = submit();
    let book = std::fs::read_to_string(kept.join("trust.book")).unwrap();
    assert!(!book.trim().is_empty(), "{one}");
    let two = submit();
    let again = std::fs::read_to_string(kept.join("trust.book")).unwrap();
    // Lines are `PEER STREAK CAUGHT CONFIRMED`: the second job started from the first's book, so
    // no peer's count of confirmed results went down (a fresh book would have lost them).
    let confirmed = |text: &str| -> std::collections::BTreeMap<String, u64> {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((f.first()?.to_string(), f.get(3)?.parse().ok()?))
            })
            .collect()
    };
    let (before, after) = (confirmed(&book), confirmed(&again));
    assert!(!before.is_empty(), "{book}");
    for (peer, n) in &before {
        assert!(after.get(peer).is_some_and(|m| m >= n), "{book}\n{again}");
    }
    assert_eq!(one["outputs"], two["outputs"]);
    assert_eq!(two["disagreements"], 0);
    second.stop();
    first.stop();
}
