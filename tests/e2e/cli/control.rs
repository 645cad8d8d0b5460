//! `shoal status` and `shoal peers` through a worker's control socket, and `shoal worker`'s
//! settings from a config file and the environment.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::*;

/// `cmd` without the caller's `SHOAL_*` variables or config file, so only what a test sets counts.
fn hermetic<'a>(cmd: &'a mut Command, config_home: &Path) -> &'a mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SHOAL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("XDG_CONFIG_HOME", config_home)
}

/// `shoal <cmd> --data-dir DIR [--json]`.
fn ask(cmd: &str, dir: &Path, json: bool) -> Output {
    let mut c = shoal();
    c.arg(cmd).arg("--data-dir").arg(dir);
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

fn ask_json(cmd: &str, dir: &Path) -> serde_json::Value {
    let out = ask(cmd, dir, true);
    assert!(out.status.success(), "shoal {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asks until `done` holds for the answer (membership news travels in the background).
fn ask_until(cmd: &str, dir: &Path, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = ask_json(cmd, dir);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "shoal {cmd} never got there: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_no_worker(dir: &Path) {
    for cmd in ["status", "peers"] {
        let out = ask(cmd, dir, false);
        assert_eq!(out.status.code(), Some(2), "shoal {cmd}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no shoal worker is running with the data directory"), "{stderr}");
        assert!(stderr.contains(&format!("`shoal worker --data-dir {}`", dir.display())), "{stderr}");
    }
}

#[test]
fn status_and_peers_answer_through_the_control_socket_until_the_worker_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (d0, d1) = (dir.path().join("w0"), dir.path().join("w1"));
    let first = Worker::start(&d0, None);
    let second = Worker::start(&d1, Some(first.addr));

    let socket = d0.join("control.sock");
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);

    let s = ask_until("status", &d0, |v| v["peers"].as_u64() >= Some(1));
    assert_eq!(s["peer_id"], first.id.as_str());
    assert_eq!(s["listen"], first.addr.to_string());
    assert_eq!(s["cores"], 1);
    assert_eq!(s["memory"], 256u64 << 20);
    for idle in ["running", "queued", "tasks_done", "fuel_used", "jobs"] {
        assert_eq!(s[idle], 0, "{idle}: {s}");
    }
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["uptime_s"].as_u64().is_some(), "{s}");
    assert_eq!(s["data_dir"], d0.display().to_string());

    let listed = |v: &serde_json::Value, w: &Worker| {
        v.as_array().unwrap().iter().any(|p| p["peer_id"] == w.id.as_str() && p["addr"] == w.addr.to_string())
    };
    let peers = ask_until("peers", &d0, |v| listed(v, &second));
    assert!(peers[0]["free_slots"].as_u64().is_some() && peers[0]["ready_tasks"].as_u64().is_some());
    ask_until("peers", &d1, |v| listed(v, &first));

    // Text for people.
    let text = String::from_utf8(ask("status", &d0, false).stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("peer:") && l.ends_with(&first.id)), "{text}");
    assert!(text.lines().any(|l| l.starts_with("memory donated:") && l.ends_with(" 256.00 MiB")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("jobs owned:")), "{text}");
    let text = String::from_utf8(ask("peers", &d0, false).stdout).unwrap();
    assert!(text.starts_with("PEER "), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(&second.id) && l.contains(&second.addr.to_string())),
        "{text}"
    );

    // Clients that send garbage, never send, or send too much do not stop it answering.
    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage.write_all(b"\x00\x01 not json\n").unwrap();
    let mut reply = String::new();
    garbage.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("{\"error\":\"bad request"), "{reply}");
    let silent = UnixStream::connect(&socket).unwrap();
    let mut flood = UnixStream::connect(&socket).unwrap();
    flood.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = flood.write_all(&vec![b'{'; 1 << 20]);
    let s = ask_json("status", &d0);
    assert_eq!(s["peer_id"], first.id.as_str());
    drop((silent, flood));

    // A second worker on the same data directory is refused.
    let out = shoal().args(["worker", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&d0).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another shoal worker is running with the data directory"), "{stderr}");
    assert_eq!(ask_json("status", &d0)["peer_id"], first.id.as_str(), "the first one still answers");

    for (w, d) in [(second, &d1), (first, &d0)] {
        w.stop();
        assert!(!d.join("control.sock").exists(), "the socket is removed on a clean exit");
        assert_no_worker(d);
    }
}

#[test]
fn a_killed_workers_socket_is_stale_and_the_next_worker_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("w");
    let w = Worker::start(&d, None);
    signal(&w.child, libc::SIGKILL);
    let mut child = w.child;
    child.wait().unwrap();
    assert!(d.join("control.sock").exists(), "SIGKILL leaves the socket file behind");
    assert_no_worker(&d);

    let again = Worker::start(&d, None);
    assert_eq!(again.id, w.id, "same data directory, same identity");
    assert_eq!(ask_json("status", &d)["listen"], again.addr.to_string());
    again.stop();
}

#[test]
fn settings_come_from_flags_then_environment_then_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        "# a volunteer's settings\nlisten = \"127.0.0.1:0\"\ncores = 3\nmemory = \"300MiB\"\n\
         data_dir = \"from-file\"\njoin_timeout = \"5s\"\n",
    )
    .unwrap();
    let mut cmd = shoal();
    hermetic(&mut cmd, dir.path())
        .env("SHOAL_CONFIG", &config)
        .env("SHOAL_CORES", "2")
        .env("SHOAL_MEMORY", "200MiB")
        .args(["worker", "--memory", "128MiB"]);
    let (w, donating, data) = Worker::spawn(&mut cmd);
    // cores: env (2) beats file (3); memory: flag (128MiB) beats env and file; the rest: file.
    assert!(donating.starts_with("donating 2 cores, 128 MiB of task memory"), "{donating}");
    let data_dir = dir.path().join("from-file");
    assert_eq!(data, data_dir.display().to_string(), "relative to the config file");
    assert_eq!(w.addr.ip().to_string(), "127.0.0.1");

    let s = ask_json("status", &data_dir);
    assert_eq!((s["cores"].as_u64(), s["memory"].as_u64()), (Some(2), Some(128 << 20)), "{s}");
    assert_eq!(s["config"], config.display().to_string());
    // `shoal status` finds the worker the same way: here through SHOAL_CONFIG's data_dir.
    let out = hermetic(&mut shoal(), dir.path())
        .env("SHOAL_CONFIG", &config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["peer_id"], w.id.as_str());

    w.stop();
}

#[test]
fn an_unknown_config_key_or_a_bad_variable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, "cores = 1\ncolour = \"blue\"\n").unwrap();
    let out = hermetic(&mut shoal(), dir.path())
        .args(["worker", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("w"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:2:1: unknown field `colour`", config.display())), "{stderr}");

    let out = hermetic(&mut shoal(), dir.path())
        .env("SHOAL_CORES", "lots")
        .args(["worker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("w"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHOAL_CORES") && stderr.contains("`lots`"), "{stderr}");

    let out = hermetic(&mut shoal(), dir.path())
        .args(["worker", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}
