//! Workers on separate "machines": `shoal worker` processes in their own Linux network namespaces,
//! each with its own address on a bridged private subnet and 5 % inbound packet loss (nftables),
//! run a job submitted from a third namespace. Needs root and `ip` (CI has both); elsewhere it
//! says why it skipped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shoal_tests::netns::{Netns, bridged, drop_inbound_udp, unavailable};

/// Worker processes of one run, killed on drop (before the namespaces go).
pub(super) struct Workers(pub(super) Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Workers {
    /// Starts `cmd` (its stdout piped) as one more worker; returns its stdout, line by line.
    pub(super) fn spawn(&mut self, cmd: &mut Command) -> std::sync::mpsc::Receiver<String> {
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        self.0.push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// `shoal ARGS…` run inside namespace `ns`.
pub(super) fn shoal_in(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_shoal-e2e")]);
    cmd.env_remove("SHOAL_CONFIG").env("XDG_CONFIG_HOME", "/nonexistent");
    cmd
}

#[test]
fn workers_in_separate_network_namespaces_run_a_job() {
    if let Some(why) = unavailable() {
        println!("skipped: {why}");
        return;
    }
    let tag = format!("{:x}", std::process::id() % 0xfffff);
    let subnet = 150 + (std::process::id() % 50) as u8;
    let dir = tempfile::tempdir().unwrap();
    let (_netns, machines): (Netns, _) = match bridged("sw", &tag, 3, subnet) {
        Ok(built) => built,
        Err(e) => {
            println!("skipped: could not build the namespaces: {e}");
            return;
        }
    };
    match machines.iter().try_for_each(|(ns, _)| drop_inbound_udp(ns, 20, None)) {
        Ok(()) => println!("3 namespaces on 10.{subnet}.0.0/24, 5% inbound UDP loss each (nftables)"),
        Err(e) => println!("3 namespaces on 10.{subnet}.0.0/24, no packet loss ({e})"),
    }
    let mut workers = Workers(Vec::new());
    // The workers run only jobs signed by the test's key, which the submitter signs with.
    let key = dir.path().join("submitter.key");
    let made = shoal_in(&machines[2].0).args(["key", "new", "--out"]).arg(&key).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let trusted = dir.path().join("trusted");
    std::fs::write(&trusted, &made.stdout).unwrap();

    // Two workers on machines 0 and 1; the second joins through the first's address.
    let first = SocketAddr::from((machines[0].1, 7600));
    let mut ids = Vec::new();
    for (i, (ns, addr)) in machines[..2].iter().enumerate() {
        let mut cmd = shoal_in(ns);
        cmd.args(["worker", "--listen", &format!("{addr}:7600"), "--cores", "1", "--memory", "256MiB"]);
        cmd.arg("--data-dir").arg(dir.path().join(format!("w{i}")));
        cmd.arg("--accept-unsigned=false").arg("--trusted-submitters").arg(&trusted);
        if i > 0 {
            cmd.args(["--bootstrap", &first.to_string()]);
        }
        // Their logs go to files, shown if the test fails (debug: placements, steals, claims).
        let log = std::fs::File::create(dir.path().join(format!("w{i}.log"))).unwrap();
        cmd.env("RUST_LOG", "info,shoal_node=debug,shoal_core=debug");
        let rx = workers.spawn(cmd.stdout(Stdio::piped()).stderr(log));
        let next = || rx.recv_timeout(Duration::from_secs(60)).unwrap();
        ids.push(next().strip_prefix("peer ").unwrap().to_string());
        assert_eq!(next(), format!("listening {addr}:7600"));
        if i > 0 {
            // donating…, data…, trust…, then the join.
            let joined = (0..4).map(|_| next()).any(|l| l == "joined the swarm");
            assert!(joined, "the second machine's worker joined the first");
        }
    }

    // The job comes from machine 2: its own peer joins through both workers' addresses, so that
    // both are in its view when it places the first tasks. Twenty ranges of 2.5·10^7 numbers:
    // about 3 s of work, several times the second or so membership takes to tell each worker the
    // other has queued tasks to steal (one worker can get every first placement).
    let small = super::primes_job_file(dir.path());
    let jobfile = dir.path().join("primes-5e8.toml");
    let text =
        std::fs::read_to_string(&small).unwrap().replace("1000000", "25000000").replace("0..10", "0..20");
    std::fs::write(&jobfile, text).unwrap();
    let second = SocketAddr::from((machines[1].1, 7600));
    let out = shoal_in(&machines[2].0)
        .env("RUST_LOG", "info,shoal_node=debug,shoal_core=debug")
        .args(["submit", jobfile.to_str().unwrap(), "--json", "--cores", "0", "--join-timeout", "30s"])
        .arg("--sign-key")
        .arg(&key)
        .args(["--bootstrap", &first.to_string(), "--bootstrap", &second.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "submit failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["status"], "ok");
    if summary["peers_used"].as_u64().unwrap_or(0) < 2 {
        let tail = |text: &str| {
            text.lines().rev().take(150).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        for i in 0..2 {
            let log = std::fs::read_to_string(dir.path().join(format!("w{i}.log"))).unwrap_or_default();
            println!("--- worker {i} log (last 150 lines) ---\n{}", tail(&log));
        }
        println!("--- submitter log (last 150 lines) ---\n{}", tail(&String::from_utf8_lossy(&out.stderr)));
        panic!("both machines ran tasks: {summary}");
    }
    // π(5·10^8) = 26,355,867, computed across the namespaces.
    let want = blake3::hash(b"26355867\n").to_hex().to_string();
    assert_eq!(summary["outputs"][0]["blake3"], want.as_str(), "{summary}");
    assert_eq!(ids.len(), 2);
}
