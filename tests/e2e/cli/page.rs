//! The status page (`--http`) in a real browser: three `shoal worker --http 127.0.0.1:0`
//! processes and a `shoal submit --http 127.0.0.1:0`, driven through headless Chromium by
//! WebDriver (`chromedriver`, started here on a free port; `fantoccini` speaks to it over plain
//! HTTP on loopback). Checks that a worker's page lists the other workers, that the submitter's
//! page for the job shows its progress rising live to 100 % with every task of the DAG done, and
//! saves a screenshot to `target/e2e-out/status-page.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test says `skipped: …` and
//! returns.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use super::*;

/// How long any one wait of this test may take (each ends on a condition long before).
const PATIENCE: Duration = Duration::from_secs(120);

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// Processes to end when the test ends, however it ends.
#[derive(Default)]
struct Procs {
    workers: Vec<Worker>,
    others: Vec<std::process::Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        let children = self.workers.iter_mut().map(|w| &mut w.child).chain(self.others.iter_mut());
        for c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `shoal worker --http 127.0.0.1:0` (joining `bootstrap`); returns it and its page's URL.
fn page_worker(dir: &Path, bootstrap: Option<SocketAddr>) -> (Worker, String) {
    let mut cmd = shoal();
    cmd.arg("worker").args(["--listen", "127.0.0.1:0", "--cores", "1", "--http", "127.0.0.1:0"]);
    cmd.arg("--data-dir").arg(dir);
    if let Some(b) = bootstrap {
        cmd.arg("--bootstrap").arg(b.to_string());
    }
    let (mut w, _donating, _data) = Worker::spawn(&mut cmd);
    let http = w.next_line();
    let url = http.strip_prefix("http ").unwrap_or_else(|| panic!("expected `http URL`, got {http:?}"));
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/') && !url.contains(":0/"), "{url}");
    let url = url.to_string();
    if bootstrap.is_some() {
        assert_eq!(w.next_line(), "joined the swarm");
    }
    (w, url)
}

/// A job of 8 CPU-bound tasks (about a second each), mixed in two groups of four, then into one.
fn spin_job_file(dir: &Path) -> PathBuf {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/wasm");
    let text = format!(
        "[modules]\nspin = {:?}\necho = {:?}\n\n\
         [[task]]\nname = \"spin-{{i}}\"\nfor = \"i in 0..8\"\nmodule = \"spin\"\n\
         args = [\"{{400000000 + i}}\"]\nfuel = 100_000_000_000\n\n\
         [[task]]\nname = \"mix-{{j}}\"\nfor = \"j in 0..2\"\nmodule = \"echo\"\n\
         inputs = [{{ task = \"spin-{{j * 4 + k}}\", for = \"k in 0..4\" }}]\n\n\
         [[task]]\nname = \"all\"\nmodule = \"echo\"\ninputs = [{{ task = \"mix-{{j}}\", for = \"j in 0..2\" }}]\n",
        wasm.join("spin.wasm"),
        wasm.join("echo.wasm"),
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `script` in the page until `done` holds for its result; returns that result.
async fn wait_in_page(client: &Client, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = client.execute(script, Vec::new()).await.unwrap();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "the page never showed {what}: last {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the screenshots go: `target/e2e-out/`.
fn out_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("e2e-out");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_status_page_shows_the_swarm_and_a_jobs_progress_live_in_chromium() {
    let (Some(chromium), Some(chromedriver)) =
        (on_path(&["chromium", "chromium-browser", "google-chrome"]), on_path(&["chromedriver"]))
    else {
        println!("skipped: chromium/chromedriver not installed (apt-get install chromium chromium-driver)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs::default();
    let (first, first_url) = page_worker(&dir.path().join("w0"), None);
    let boot = first.addr;
    procs.workers.push(first);
    for i in 1..3 {
        let (w, _) = page_worker(&dir.path().join(format!("w{i}")), Some(boot));
        procs.workers.push(w);
    }
    let ids: Vec<String> = procs.workers.iter().map(|w| w.id.clone()).collect();

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.others.push(driver);
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let job_file = spin_job_file(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let submit = rt.block_on(async {
        let mut caps = serde_json::Map::new();
        let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"];
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client =
            ClientBuilder::new(connector).capabilities(caps).connect(&format!("http://127.0.0.1:{port}")).await.unwrap();

        // A worker's page lists the other two workers among its peers, and itself as this peer.
        client.goto(&first_url).await.unwrap();
        let peers_script = "return [...document.querySelectorAll('#peers td.id')].map(e => e.textContent)";
        let shown = wait_in_page(&client, "the other workers", peers_script, |v| {
            ids[1..].iter().all(|id| v.as_array().is_some_and(|a| a.iter().any(|x| x == id.as_str())))
        })
        .await;
        println!("worker page {first_url} lists peers {shown}");
        let me = client.execute("return document.querySelector('#me-rows td.id').textContent", vec![]).await.unwrap();
        assert_eq!(me, ids[0].as_str());

        // `shoal submit --http` serves the submitter's page and names it on stderr.
        let mut submit = shoal()
            .arg("submit")
            .arg(&job_file)
            .args(["--http", "127.0.0.1:0", "--bootstrap", &boot.to_string(), "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = submit.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = lines.recv_timeout(PATIENCE).expect("shoal submit printed no status page line");
        let page = line.strip_prefix("status page: ").unwrap_or_else(|| panic!("got {line:?}"));
        let job = page.split_once("#job=").map(|(_, id)| id.to_string()).unwrap_or_else(|| panic!("{page}"));
        assert_eq!(job.len(), 32, "{page}");
        println!("submitter page {page}");
        procs.others.push(submit);

        // Its page shows the job selected, its progress rising to 100 %, every task done.
        client.goto(page).await.unwrap();
        let pct_script = format!(
            "const j = document.querySelector('.job.selected[data-job=\"{job}\"] .pct'); return j ? j.textContent : null"
        );
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = client.execute(&pct_script, vec![]).await.unwrap();
            if let Some(pct) = v.as_str()
                && seen.last().map(String::as_str) != Some(pct)
            {
                seen.push(pct.to_string());
            }
            if v == "100 %" {
                break;
            }
            assert!(Instant::now() < deadline, "the job never reached 100 % on the page: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("progress seen on the page: {seen:?}");
        assert!(seen.len() >= 2, "the page showed the progress rising, not only the end: {seen:?}");
        let states = client
            .execute(
                &format!("return [...document.querySelectorAll('[data-job=\"{job}\"] circle.task')].map(c => c.dataset.state)"),
                vec![],
            )
            .await
            .unwrap();
        let states = states.as_array().unwrap();
        assert_eq!(states.len(), 11, "one dot per task: {states:?}");
        assert!(states.iter().all(|s| s == "done"), "{states:?}");
        let edges = client.execute("return document.querySelectorAll('.job.selected svg line').length", vec![]).await;
        assert_eq!(edges.unwrap(), 10, "8 spins into 2 mixes, 2 mixes into 1");

        let png = client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = out_dir().join("status-page.png");
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());

        // The worker's page now shows the runs it did.
        client.goto(&first_url).await.unwrap();
        wait_in_page(&client, "recent runs", "return document.querySelectorAll('#recent tr td.ok').length", |v| {
            v.as_u64() > Some(0)
        })
        .await;
        let png = client.screenshot().await.unwrap();
        let path = out_dir().join("status-page-worker.png");
        std::fs::write(&path, &png).unwrap();
        println!("screenshot: {}", path.display());
        client.close().await.unwrap();
        procs.others.pop().unwrap()
    });

    let out = submit.wait_with_output().unwrap();
    assert!(out.status.success(), "shoal submit failed");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["status"].as_str(), summary["tasks"].as_u64()), (Some("ok"), Some(11)), "{summary}");
    for w in std::mem::take(&mut procs.workers) {
        let lines = w.stop();
        assert_eq!(lines.last().map(String::as_str), Some("stopped"), "{lines:?}");
    }
}
