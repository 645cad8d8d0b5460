//! Workers on separate "machines": `shoal worker` processes in their own Linux network namespaces,
//! each with its own address on a bridged private subnet and 5 % inbound packet loss (nftables),
//! run a job submitted from a third namespace. Needs root and `ip` (CI has both); elsewhere it
//! says why it skipped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Namespaces and worker processes of one run, removed on drop even when the test fails.
struct Machines {
    names: Vec<String>,
    workers: Vec<Child>,
}

impl Drop for Machines {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Why namespaces cannot be used here, if they cannot.
fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("needs the `ip` command (iproute2)".into()),
    }
}

/// A hub namespace with a bridge, and one namespace per machine on `10.S.0.(i+1)/24`.
fn build(m: &mut Machines, tag: &str, machines: usize, subnet: u8) -> Result<Vec<String>, String> {
    let hub = format!("swh{tag}");
    ip(&["netns", "add", &hub])?;
    m.names.push(hub.clone());
    ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &hub, "link", "set", "br0", "up"])?;
    let mut addrs = Vec::new();
    for i in 0..machines {
        let ns = format!("swm{tag}{i}");
        let (a, b) = (format!("wa{tag}{i}"), format!("wb{tag}{i}"));
        ip(&["netns", "add", &ns])?;
        m.names.push(ns.clone());
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        ip(&["link", "set", &a, "netns", &ns])?;
        ip(&["link", "set", &b, "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", &b, "master", "br0"])?;
        ip(&["-n", &hub, "link", "set", &b, "up"])?;
        let addr = format!("10.{subnet}.0.{}", i + 1);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &a])?;
        ip(&["-n", &ns, "link", "set", &a, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        addrs.push(addr);
    }
    Ok(addrs)
}

/// Drops 5 % of inbound UDP in namespace `ns`.
fn lossy(ns: &str) -> Result<(), String> {
    let nft = |args: &[&str]| {
        let mut full = vec!["netns", "exec", ns, "nft"];
        full.extend_from_slice(args);
        ip(&full)
    };
    nft(&["add", "table", "inet", "shoal"])?;
    nft(&["add", "chain", "inet", "shoal", "input", "{ type filter hook input priority 0 ; }"])?;
    nft(&[
        "add", "rule", "inet", "shoal", "input", "meta", "l4proto", "udp", "numgen", "random", "mod", "20",
        "<", "1", "drop",
    ])
}

/// `shoal ARGS…` run inside namespace `ns`.
fn shoal_in(ns: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_shoal")]);
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
    let mut m = Machines { names: Vec::new(), workers: Vec::new() };
    let addrs = match build(&mut m, &tag, 3, subnet) {
        Ok(a) => a,
        Err(e) => {
            println!("skipped: could not build the namespaces: {e}");
            return;
        }
    };
    let machines: Vec<String> = (0..3).map(|i| format!("swm{tag}{i}")).collect();
    match machines.iter().try_for_each(|ns| lossy(ns)) {
        Ok(()) => println!("3 namespaces on 10.{subnet}.0.0/24, 5% inbound UDP loss each (nftables)"),
        Err(e) => println!("3 namespaces on 10.{subnet}.0.0/24, no packet loss ({e})"),
    }

    // Two workers on machines 0 and 1; the second joins through the first's address.
    let first: SocketAddr = format!("{}:7600", addrs[0]).parse().unwrap();
    let mut ids = Vec::new();
    for i in 0..2 {
        let mut cmd = shoal_in(&machines[i]);
        cmd.args(["worker", "--listen", &format!("{}:7600", addrs[i]), "--cores", "1", "--memory", "256MiB"]);
        cmd.arg("--data-dir").arg(dir.path().join(format!("w{i}")));
        if i > 0 {
            cmd.args(["--bootstrap", &first.to_string()]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        m.workers.push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let next = || rx.recv_timeout(Duration::from_secs(60)).unwrap();
        ids.push(next().strip_prefix("peer ").unwrap().to_string());
        assert_eq!(next(), format!("listening {}:7600", addrs[i]));
        if i > 0 {
            // donating…, data…, then the join.
            let joined = (0..3).map(|_| next()).any(|l| l == "joined the swarm");
            assert!(joined, "the second machine's worker joined the first");
        }
    }

    // The job comes from machine 2: its own peer joins through the first worker.
    let jobfile = super::primes_job_file(dir.path());
    let out = shoal_in(&machines[2])
        .args(["submit", jobfile.to_str().unwrap(), "--json", "--cores", "0", "--join-timeout", "30s"])
        .args(["--bootstrap", &first.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "submit failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["status"], "ok");
    assert_eq!(summary["peers_used"], 2, "both machines ran tasks: {summary}");
    // π(10^7) = 664,579, computed across the namespaces.
    let want = blake3::hash(b"664579\n").to_hex().to_string();
    assert_eq!(summary["outputs"][0]["blake3"], want.as_str(), "{summary}");
    assert_eq!(ids.len(), 2);
}
