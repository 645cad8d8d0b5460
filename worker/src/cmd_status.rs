//! `shoal status` and `shoal peers`: ask a running worker, through the control socket in its data
//! directory, what it is doing and whom it knows.
//!
//! The data directory is found like `shoal worker` finds it (`--data-dir`, `SHOAL_DATA_DIR`, the
//! config file's `data_dir`, the platform default), so both commands reach the worker started with
//! the same settings. Exit status: 0 with an answer, 2 when no worker runs there (a clear error
//! naming the directory) or the worker's reply cannot be read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::control::{self, PeerInfo, Request, Response, Status};

/// How long to wait for the worker at each step.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `shoal status`, `shoal peers` and `shoal credit`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The worker's data directory [env: SHOAL_DATA_DIR] (default: as `shoal worker`).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The worker's config file, to find its data_dir [env: SHOAL_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `shoal status`.
pub(crate) fn status(args: StatusArgs) -> anyhow::Result<u8> {
    let (dir, response) = ask(&args, Request::Status)?;
    let Response::Status(s) = response else { return unexpected(&dir, response) };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&s)?)?;
    } else {
        write!(out, "{}", status_text(&s))?;
    }
    Ok(0)
}

/// `shoal worker pause` (`pause`) and `shoal worker resume`.
pub(crate) fn pause(args: StatusArgs, pause: bool) -> anyhow::Result<u8> {
    let (dir, response) = ask(&args, if pause { Request::Pause } else { Request::Resume })?;
    let Response::Paused(paused) = response else { return unexpected(&dir, response) };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::json!({ "paused": paused }))?;
    } else if paused {
        writeln!(
            out,
            "paused: the worker at {} takes no new work, hands its queued tasks back and lets running ones \
             finish within its leave grace; `shoal worker resume` undoes it",
            dir.display()
        )?;
    } else {
        writeln!(
            out,
            "resumed: the worker at {} takes work again when its donation policy allows",
            dir.display()
        )?;
    }
    Ok(0)
}

/// `shoal peers`.
pub(crate) fn peers(args: StatusArgs) -> anyhow::Result<u8> {
    let (dir, response) = ask(&args, Request::Peers)?;
    let Response::Peers(peers) = response else { return unexpected(&dir, response) };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&peers)?)?;
    } else {
        write!(out, "{}", peers_text(&peers))?;
    }
    Ok(0)
}

fn ask(args: &StatusArgs, request: Request) -> anyhow::Result<(PathBuf, Response)> {
    let dir = crate::settings::load_data_dir(args.data_dir.as_deref(), args.config.as_deref())?;
    let socket = control::socket_path(&dir);
    match control::query(&socket, request, TIMEOUT) {
        Ok(r) => Ok((dir, r)),
        Err(e)
            if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            Err(no_worker(&dir))
        }
        Err(e) => Err(e).with_context(|| format!("cannot ask the worker at {}", socket.display())),
    }
}

fn no_worker(dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "no shoal worker is running with the data directory {} (nothing answers on {}); start one with \
         `shoal worker --data-dir {}`",
        dir.display(),
        control::socket_path(dir).display(),
        dir.display()
    )
}

fn unexpected(dir: &Path, response: Response) -> anyhow::Result<u8> {
    match response {
        Response::Error(e) => anyhow::bail!("the worker at {} refused the request: {e}", dir.display()),
        other => anyhow::bail!("the worker at {} answered something else: {other:?}", dir.display()),
    }
}

/// `key: value` lines, values aligned.
fn status_text(s: &Status) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("peer", s.peer_id.clone()),
        ("donating", donating_text(s.paused.as_deref())),
        ("version", s.version.clone()),
        ("pid", s.pid.to_string()),
        ("listening", s.listen.to_string()),
        ("data", s.data_dir.clone()),
        ("config", s.config.clone().unwrap_or_else(|| "(none)".into())),
        ("cores", s.cores.to_string()),
        ("memory donated", size_text(s.memory)),
        ("tasks running", s.running.to_string()),
        ("tasks queued", s.queued.to_string()),
        ("tasks done", s.tasks_done.to_string()),
        ("fuel used", s.fuel_used.to_string()),
        ("credit earned", format!("{} fuel (shoal credit lists the receipts)", s.credit_fuel)),
        ("jobs owned", s.jobs.to_string()),
        ("refused", refused_text(&s.refused)),
        ("sends dropped", s.sends_dropped.to_string()),
        ("handed back", s.handed_back.to_string()),
        ("peers known", s.peers.to_string()),
        ("reachability", reachability_text(&s.reachability)),
        ("uptime", duration_text(s.uptime_s)),
    ];
    if let Some(url) = &s.metrics {
        rows.push(("metrics", url.clone()));
    }
    if !s.caught_lying.is_empty() {
        let liars: Vec<String> = s.caught_lying.iter().map(|(p, n)| format!("{p} ({n}x)")).collect();
        rows.push(("caught lying", liars.join(", ")));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter().map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:"))).collect()
}

/// `cone at 203.0.113.7:7600, 2 relays, relaying` from a status's `reachability`.
fn reachability_text(r: &crate::control::Reachability) -> String {
    let mut parts = vec![match r.observed.first() {
        Some(a) => format!("{} at {a}", r.nat),
        None => r.nat.clone(),
    }];
    if !r.relays.is_empty() {
        parts.push(format!("{} relay{}", r.relays.len(), if r.relays.len() == 1 { "" } else { "s" }));
    }
    if r.relaying {
        parts.push("relaying for others".into());
    }
    parts.join(", ")
}

/// `yes`, or `no: <why> (<reason>)` from a status's `paused`.
fn donating_text(paused: Option<&str>) -> String {
    use shoal_node::PauseReason as R;
    let Some(name) = paused else { return "yes".into() };
    let all = [R::User, R::NotIdle, R::OnBattery, R::OutsideHours, R::MachineBusy];
    match all.iter().find(|r| r.name() == name) {
        Some(r) => format!("no: {r} ({name})"),
        None => format!("no ({name})"),
    }
}

/// `N` when nothing was refused, else `N (reason n, …)` naming the non-zero reasons.
fn refused_text(by_reason: &std::collections::BTreeMap<String, u64>) -> String {
    let total = by_reason.values().fold(0u64, |a, &b| a.saturating_add(b));
    let nonzero: Vec<String> =
        by_reason.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    if nonzero.is_empty() { total.to_string() } else { format!("{total} ({})", nonzero.join(", ")) }
}

/// A table with a header row, columns aligned.
fn peers_text(peers: &[PeerInfo]) -> String {
    if peers.is_empty() {
        return "no peers known yet\n".to_string();
    }
    let mut rows = vec![["PEER", "ADDR", "FREE", "READY", "AGE", "PATH"].map(String::from)];
    for p in peers {
        let path = match (&p.path, &p.relay) {
            (Some(path), Some(relay)) => format!("{path} via {}", relay.chars().take(10).collect::<String>()),
            (Some(path), None) => path.clone(),
            (None, _) => "-".into(),
        };
        rows.push([
            p.peer_id.clone(),
            p.addr.to_string(),
            p.free_slots.to_string(),
            p.ready_tasks.to_string(),
            p.age.to_string(),
            path,
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

/// `256.00 MiB`, `1.50 GiB`, `1000 B` (indicatif's binary units).
fn size_text(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

/// `1h 2m 3s`, `1day 5s` (humantime's form, the one `--leave-grace` and friends read back).
fn duration_text(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn figures_for_people() {
        assert_eq!(size_text(256 << 20), "256.00 MiB");
        assert_eq!(size_text(3 << 29), "1.50 GiB");
        assert_eq!(size_text(1000), "1000 B");
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(59), "59s");
        assert_eq!(duration_text(3723), "1h 2m 3s");
        assert_eq!(duration_text(86_400 + 5), "1day 5s");
        for secs in [0, 59, 3723, 86_405] {
            assert_eq!(
                crate::units::parse_duration(&duration_text(secs)),
                Ok(std::time::Duration::from_secs(secs))
            );
        }
    }

    #[test]
    fn peers_are_an_aligned_table() {
        let p = |id: &str, addr: &str, free, path: Option<&str>, relay: Option<&str>| PeerInfo {
            peer_id: id.into(),
            addr: addr.parse().unwrap(),
            free_slots: free,
            ready_tasks: 0,
            age: 1,
            path: path.map(Into::into),
            relay: relay.map(Into::into),
        };
        let text = peers_text(&[
            p("aaaa", "127.0.0.1:7600", 12, Some("direct"), None),
            p("bb", "10.0.0.1:1", 3, None, None),
            p("cc", "10.0.0.2:1", 0, Some("relayed"), Some("relaypeer0123")),
        ]);
        assert_eq!(
            text,
            "PEER  ADDR            FREE  READY  AGE  PATH\n\
             aaaa  127.0.0.1:7600  12    0      1    direct\n\
             bb    10.0.0.1:1      3     0      1    -\n\
             cc    10.0.0.2:1      0     0      1    relayed via relaypeer0\n"
        );
        assert_eq!(peers_text(&[]), "no peers known yet\n");
    }
}
