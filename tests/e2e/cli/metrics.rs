//! Observability end to end: `shoal worker --metrics` serves Prometheus metrics whose values
//! follow a real job run on real worker processes, and `--log-format json` writes one JSON object
//! a line on stderr with the spans' peer, job and task ids.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::*;

/// Prime counting below 600,000 in 6 ranges, summed: 7 tasks, π(6·10^5) = 49,098.
const TASKS: f64 = 7.0;

fn small_primes_job(dir: &Path, first_args: &str) -> PathBuf {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm");
    let text = format!(
        "[modules]\nprimes = {:?}\nsum = {:?}\n\n[[task]]\nname = \"range-{{i}}\"\nfor = \"i in 0..6\"\n\
         module = \"primes\"\nargs = [{first_args}\"{{(i + 1) * 100000}}\"]\n\n[[task]]\n\
         name = \"total\"\nmodule = \"sum\"\ninputs = [{{ task = \"range-{{i}}\", for = \"i in 0..6\" }}]\n",
        wasm.join("primes.wasm"),
        wasm.join("sum.wasm"),
    );
    let path = dir.join("small-primes.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `shoal worker` with `extra` flags and `env`, reads its start lines up to the metrics
/// line (and `joined the swarm` with a bootstrap); returns it and its metrics address.
fn metrics_worker(
    dir: &Path,
    bootstrap: Option<SocketAddr>,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Worker, SocketAddr) {
    let mut cmd = shoal();
    cmd.arg("worker").args(["--listen", "127.0.0.1:0", "--cores", "1", "--memory", "256MiB"]).args(extra);
    cmd.arg("--data-dir").arg(dir).envs(env.iter().copied());
    if let Some(b) = bootstrap {
        cmd.arg("--bootstrap").arg(b.to_string());
    }
    let (mut w, _donating, _data) = Worker::spawn(&mut cmd);
    let line = w.next_line();
    let url = line.strip_prefix("metrics http://").unwrap_or_else(|| panic!("not a metrics line: {line}"));
    let addr: SocketAddr = url.strip_suffix("/metrics").unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0, "the bound port is printed, not the asked 0");
    if bootstrap.is_some() {
        assert_eq!(w.next_line(), "joined the swarm");
    }
    (w, addr)
}

/// `GET path` over plain HTTP/1.1: (status line, headers lower-cased, body).
fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_ascii_lowercase(), body.to_string())
}

/// The samples of a Prometheus text page: `name{labels}` → value. Checks each line's syntax.
fn parse(page: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in page.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in: {line}"
        );
        assert!(samples.insert(series.to_string(), value).is_none(), "duplicate series: {line}");
    }
    samples
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, headers, body) = get(addr, "/metrics", None);
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
    parse(&body)
}

fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        let mut names: Vec<&String> = m.keys().collect();
        names.sort();
        panic!("no series {series} in {names:?}")
    })
}

const REASONS: [&str; 10] = [
    "not_holder",
    "stale",
    "unknown_task",
    "early_dropped",
    "not_owner",
    "bad_signature",
    "duplicate",
    "queue_full",
    "unsolicited",
    "over_caps",
];

#[test]
fn worker_metrics_follow_a_job_run_on_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (first, m0) = metrics_worker(&dir.path().join("w0"), None, &["--metrics", "127.0.0.1:0"], &[]);
    // The second one through the environment variable.
    let (second, m1) =
        metrics_worker(&dir.path().join("w1"), Some(first.addr), &[], &[("SHOAL_METRICS", "127.0.0.1:0")]);

    // Before any job: every refusal reason is a series at 0, nothing has run.
    let before = scrape(m0);
    for reason in REASONS {
        assert_eq!(value(&before, &format!("shoal_refused_total{{reason=\"{reason}\"}}")), 0.0, "{reason}");
    }
    assert_eq!(value(&before, "shoal_tasks_run_total"), 0.0);
    assert_eq!(value(&before, "shoal_task_duration_seconds_count"), 0.0);
    assert_eq!(value(&before, "shoal_cores"), 1.0);
    assert_eq!(value(&before, "shoal_build_info{version=\"0.1.0\"}"), 1.0);

    // The submitter donates no cores: the workers run every task.
    let file = small_primes_job(dir.path(), "\"{i * 100000}\", ");
    let out = shoal()
        .arg("submit")
        .arg(&file)
        .args(["--bootstrap", &first.addr.to_string(), "--cores", "0", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "ok", "{summary}");

    let scraped = [scrape(m0), scrape(m1)];
    let total = |series: &str| scraped.iter().map(|m| value(m, series)).sum::<f64>();
    let (run, fuel) = (total("shoal_tasks_run_total"), total("shoal_fuel_used_total"));
    println!(
        "tasks run {run}, fuel {fuel}, bytes in {}, out {}, steals tried {} won {}",
        total("shoal_network_received_bytes_total"),
        total("shoal_network_sent_bytes_total"),
        total("shoal_steals_tried_total"),
        total("shoal_steals_won_total"),
    );
    assert!(run >= TASKS, "the workers ran every task of the job: {run}");
    assert!(fuel > 0.0, "{fuel}");
    assert_eq!(total("shoal_tasks_failed_total"), 0.0);
    for m in &scraped {
        let run = value(m, "shoal_tasks_run_total");
        assert_eq!(value(m, "shoal_task_duration_seconds_count"), run, "one duration per run");
        assert_eq!(value(m, "shoal_task_duration_seconds_bucket{le=\"+Inf\"}"), run);
        assert!(value(m, "shoal_task_duration_seconds_sum") > 0.0 || run == 0.0);
        assert!(value(m, "shoal_peers_known") >= 1.0);
        assert!(value(m, "shoal_network_received_bytes_total") > 0.0);
        assert!(value(m, "shoal_network_sent_bytes_total") > 0.0);
        assert!(value(m, "shoal_steals_won_total") <= value(m, "shoal_steals_tried_total"));
        assert!(value(m, "shoal_tasks_running") <= 1.0, "one core each");
        assert_eq!(value(m, "shoal_jobs_owned"), 0.0, "the submitter owned the job");
        // An honest swarm forges nothing and asks nothing over the default caps.
        for reason in ["bad_signature", "over_caps", "not_owner"] {
            assert_eq!(value(m, &format!("shoal_refused_total{{reason=\"{reason}\"}}")), 0.0, "{reason}");
        }
        // A worker that ran a task holds its module (a blob) in its store.
        if value(m, "shoal_tasks_run_total") > 0.0 {
            assert!(value(m, "shoal_blob_store_blobs") >= 1.0);
            assert!(value(m, "shoal_blob_store_bytes") > 0.0);
        }
    }
    // Each scrape samples the RTT of every connected peer: the two workers keep a connection.
    assert!(total("shoal_peer_rtt_seconds_count") >= 1.0);

    // OpenMetrics when asked for it; other paths are 404.
    let (status, headers, body) = get(m1, "/metrics", Some("application/openmetrics-text;version=1.0.0"));
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(headers.contains("content-type: application/openmetrics-text"), "{headers}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE shoal_tasks_run counter"), "{body}");
    let (status, _, _) = get(m1, "/nothing", None);
    assert!(status.contains("404"), "{status}");

    // `shoal status` names the page.
    let out =
        shoal().arg("status").arg("--data-dir").arg(dir.path().join("w1")).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["metrics"], format!("http://{m1}/metrics"), "{status}");

    for w in [second, first] {
        w.stop();
    }
}

#[test]
fn a_taken_metrics_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = shoal()
        .arg("worker")
        .args(["--listen", "127.0.0.1:0", "--metrics", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot serve metrics on {addr}")), "{stderr}");
}

#[test]
fn json_logs_are_one_object_a_line_with_the_peer_job_and_task_of_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut cmd = shoal();
    cmd.arg("worker").args(["--listen", "127.0.0.1:0", "--cores", "1", "--log-format", "json", "--data-dir"]);
    cmd.arg(dir.path().join("w")).env("RUST_LOG", "info");
    let (worker, _, _) = Worker::spawn_logging(&mut cmd, std::fs::File::create(&log).unwrap().into());

    // A job whose ranges have a bad argument: its tasks fail on the worker (an info event inside
    // each task's span) and the job fails.
    let file = small_primes_job(dir.path(), "\"{i * 100000}x\", ");
    let out = shoal()
        .arg("submit")
        .arg(&file)
        .args(["--bootstrap", &worker.addr.to_string(), "--cores", "0", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let id = worker.id.clone();
    worker.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for v in &lines {
        assert!(v.is_object(), "{v}");
        assert!(v["timestamp"].is_string() && v["target"].is_string(), "{v}");
        assert!(["ERROR", "WARN", "INFO"].contains(&v["level"].as_str().unwrap()), "RUST_LOG=info: {v}");
        assert!(v["fields"].is_object(), "{v}");
    }
    let started =
        lines.iter().find(|v| v["fields"]["message"] == "peer started").expect("a `peer started` line");
    let me = started["span"]["me"].as_str().unwrap();
    assert_eq!(started["span"]["name"], "peer");
    assert!(id.starts_with(me), "the peer span names this peer: {me} vs {id}");
    let failed = lines
        .iter()
        .find(|v| v["fields"]["message"].as_str().is_some_and(|m| m.starts_with("task failed")))
        .unwrap_or_else(|| panic!("a `task failed` line in {text}"));
    let spans = failed["spans"].as_array().unwrap();
    assert!(spans.iter().any(|s| s["name"] == "peer" && s["me"] == me), "{failed}");
    let task = spans.iter().find(|s| s["name"] == "task").unwrap_or_else(|| panic!("{failed}"));
    assert!(task["task"].as_u64().is_some_and(|i| i < 6), "a range failed: {failed}");
    assert_eq!(task["job"].as_str().unwrap().len(), 32, "the job id: {failed}");
    assert!(task["attempt"].is_number(), "{failed}");
}
