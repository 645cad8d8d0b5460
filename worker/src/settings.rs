//! `shoal worker`'s settings, merged from four sources, highest precedence first: command-line
//! flags, `SHOAL_*` environment variables, a TOML config file, built-in defaults.
//!
//! Every setting can come from each source. The config file is `--config FILE`, else
//! `$SHOAL_CONFIG`, else `<config dir>/shoal/worker.toml` when that file exists (`<config dir>` is
//! `$XDG_CONFIG_HOME`, else `~/.config`). Relative paths in the file are relative to the file's
//! directory; relative paths in flags and variables to the working directory. An empty variable
//! counts as unset. A list (`bootstrap`) from a higher source replaces, never extends, a lower one.
//!
//! Invariants: merging ([`resolve`]) is a pure function of the flags, an environment lookup and the
//! file's text, so it is tested without touching the process environment; unknown file keys and
//! unparsable values are errors naming the key and line, or the variable.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use shoal_core::sched::TaskCaps;

use crate::logging::LogFormat;
use crate::policy::{HoursWindow, Policy, RunWhen};
use crate::trust::{ListSource, TrustSettings};
use crate::units::{parse_count, parse_duration, parse_size};
use shoal_net::Bootstrap;

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where the worker listens when nothing says otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:7600";
/// How long a joining worker waits for a bootstrap peer when nothing says otherwise.
pub(crate) const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long running tasks may finish on SIGINT/SIGTERM before the worker leaves anyway.
pub(crate) const DEFAULT_LEAVE_GRACE: Duration = Duration::from_secs(10);
/// Task memory donated per core when nothing says otherwise.
pub(crate) const DEFAULT_MEMORY_PER_CORE: u64 = 256 << 20;
/// The most fuel one task may ask for when nothing says otherwise (about an hour of a fast core).
pub(crate) const DEFAULT_MAX_TASK_FUEL: u64 = 10_000_000_000_000;
/// The longest wall-clock deadline one task may ask for when nothing says otherwise.
pub(crate) const DEFAULT_MAX_TASK_TIME: Duration = Duration::from_secs(3600);
/// The largest output one task may ask for when nothing says otherwise (the blob size cap).
pub(crate) const DEFAULT_MAX_TASK_OUTPUT: u64 = 1 << 30;
/// The most input bytes (all inputs together) one task may need when nothing says otherwise.
pub(crate) const DEFAULT_MAX_TASK_INPUT: u64 = 4 << 30;
/// Disk budget of the blob store (inputs and outputs) when nothing says otherwise.
pub(crate) const DEFAULT_BLOB_STORE_BUDGET: u64 = 4 << 30;
/// Disk budget of the compiled-module cache when nothing says otherwise.
pub(crate) const DEFAULT_MODULE_CACHE_BUDGET: u64 = 1 << 30;

/// Minutes of no keyboard or mouse input after which `run_when = "idle"` donates.
pub(crate) const DEFAULT_IDLE_MINUTES: f64 = 5.0;
/// Where the status page listens when `--http` is given without an address (loopback only).
pub(crate) const DEFAULT_HTTP: &str = "127.0.0.1:7680";

/// An environment lookup: the process environment in the binary, a map in tests.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The worker's command-line flags; `None` (or an empty list) means "not given".
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct WorkerFlags {
    /// TOML file of worker settings [env: SHOAL_CONFIG] (default: ~/.config/shoal/worker.toml if
    /// it exists).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// UDP address to listen on [env: SHOAL_LISTEN] (default: 0.0.0.0:7600).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// Address (IP:PORT) or name (HOST:PORT, resolved at every join attempt) of a peer already in
    /// the swarm; repeat for several [env: SHOAL_BOOTSTRAP, comma-separated].
    #[arg(long, value_name = "ADDR")]
    pub(crate) bootstrap: Vec<Bootstrap>,
    /// Tasks to run at once [env: SHOAL_CORES] (default: all cores but one).
    #[arg(long, value_name = "N")]
    pub(crate) cores: Option<u32>,
    /// Linear memory all running tasks may use together, e.g. 2GiB [env: SHOAL_MEMORY]
    /// (default: 256MiB per core).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) memory: Option<u64>,
    /// Where the identity key, blobs, compiled modules and the control socket live
    /// [env: SHOAL_DATA_DIR] (default: $XDG_DATA_HOME/shoal or ~/.local/share/shoal).
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// A file whose contents are the swarm secret (a private swarm: peers without it cannot join)
    /// [env: SHOAL_SWARM_SECRET].
    #[arg(long, value_name = "FILE")]
    pub(crate) swarm_secret: Option<PathBuf>,
    /// With --bootstrap: give up (exit 2) if no peer answers within this time, e.g. 30s
    /// [env: SHOAL_JOIN_TIMEOUT] (default: 30s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) join_timeout: Option<Duration>,
    /// On SIGINT/SIGTERM: queued tasks go back to their owners at once; running ones get this long
    /// to finish before the worker leaves anyway [env: SHOAL_LEAVE_GRACE] (default: 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) leave_grace: Option<Duration>,
    /// Find peers on the LAN, and be found, over mDNS; `--mdns=false` turns it off
    /// [env: SHOAL_MDNS] (default: off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) mdns: Option<bool>,
    /// Offer to relay for peers behind NATs that cannot be reached otherwise (only sensible on a
    /// publicly reachable worker); `--relay=false` turns it off [env: SHOAL_RELAY] (default: off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) relay: Option<bool>,
    /// As a relay: pairs of peers relayed at once [env: SHOAL_RELAY_CIRCUITS] (default: 256).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub(crate) relay_circuits: Option<u64>,
    /// As a relay: bytes one circuit may carry, e.g. 64MiB [env: SHOAL_RELAY_CIRCUIT_BYTES]
    /// (default: 64MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) relay_circuit_bytes: Option<u64>,
    /// As a relay: how long one circuit may last, e.g. 10m [env: SHOAL_RELAY_CIRCUIT_TIME]
    /// (default: 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) relay_circuit_time: Option<Duration>,
    /// As a relay: bytes per second forwarded in all, e.g. 8MiB [env: SHOAL_RELAY_RATE]
    /// (default: 8MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) relay_rate: Option<u64>,
    /// The most fuel one task may ask for, e.g. 1e12; a task asking more is refused and placed on
    /// another peer [env: SHOAL_MAX_TASK_FUEL] (default: 1e13).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub(crate) max_task_fuel: Option<u64>,
    /// The longest wall-clock time one task may ask for, e.g. 10m [env: SHOAL_MAX_TASK_TIME]
    /// (default: 1h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) max_task_time: Option<Duration>,
    /// The largest output one task may ask for, e.g. 64MiB [env: SHOAL_MAX_TASK_OUTPUT]
    /// (default: 1GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) max_task_output: Option<u64>,
    /// The most input bytes one task may need, all inputs together, e.g. 256MiB
    /// [env: SHOAL_MAX_TASK_INPUT] (default: 4GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) max_task_input: Option<u64>,
    /// Disk space for blobs (task inputs and outputs); the least recently used go first
    /// [env: SHOAL_BLOB_STORE_BUDGET] (default: 4GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) blob_store_budget: Option<u64>,
    /// Disk space for compiled modules; the least recently used go first
    /// [env: SHOAL_MODULE_CACHE_BUDGET] (default: 1GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) module_cache_budget: Option<u64>,
    /// When to donate: `always`, or `idle` (no keyboard or mouse input for --idle-minutes and on AC
    /// power) [env: SHOAL_RUN_WHEN] (default: always).
    #[arg(long, value_name = "WHEN", value_parser = parse_run_when)]
    pub(crate) run_when: Option<RunWhen>,
    /// With --run-when idle: minutes without input that count as idle, e.g. 10 or 0.5
    /// [env: SHOAL_IDLE_MINUTES] (default: 5).
    #[arg(long, value_name = "MINUTES", value_parser = parse_minutes)]
    pub(crate) idle_minutes: Option<f64>,
    /// Local time window when donating is allowed, e.g. 22:00-07:00 (wrapping midnight is fine);
    /// repeat for several [env: SHOAL_HOURS, comma-separated] (default: any time).
    #[arg(long, value_name = "HH:MM-HH:MM", value_parser = parse_hours)]
    pub(crate) hours: Vec<HoursWindow>,
    /// Percent of the time each task thread may compute, 1-100: a cgroup v2 cpu.max where the
    /// worker may set one, else tasks are duty-cycled (run a slice, sleep)
    /// [env: SHOAL_MAX_CPU_PERCENT] (default: 100).
    #[arg(long, value_name = "PERCENT", value_parser = parse_cpu_percent)]
    pub(crate) max_cpu_percent: Option<u32>,
    /// Pause while other processes use more than this percent of the machine's CPU, 0-100
    /// [env: SHOAL_MAX_OTHER_CPU_PERCENT] (default: no limit).
    #[arg(long, value_name = "PERCENT", value_parser = parse_other_cpu_percent)]
    pub(crate) max_other_cpu_percent: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9600 (port 0: any free
    /// port, printed on start; `off`: none) [env: SHOAL_METRICS] (default: off).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics)]
    pub(crate) metrics: Option<MetricsAt>,
    /// Log lines on stderr as text or as JSON objects, one a line (RUST_LOG chooses what is
    /// logged) [env: SHOAL_LOG_FORMAT] (default: text).
    #[arg(long, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormat>,
    /// Serve a live status page (read-only) at ADDR; `--http` alone: 127.0.0.1:7680, loopback
    /// only; `--http=off` turns it off [env: SHOAL_HTTP] (default: off).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_HTTP, value_parser = parse_http)]
    pub(crate) http: Option<HttpSetting>,
    /// A file of submitters' public keys (one a line, as `shoal key show` prints them) whose signed
    /// jobs this worker runs [env: SHOAL_TRUSTED_SUBMITTERS] (default: none).
    #[arg(long, value_name = "FILE")]
    pub(crate) trusted_submitters: Option<PathBuf>,
    /// A file of module hashes (one a line, hex): only these modules run here, whoever signed
    /// them [env: SHOAL_ALLOWED_MODULES] (default: any module).
    #[arg(long, value_name = "FILE")]
    pub(crate) allowed_modules: Option<PathBuf>,
    /// Run jobs not signed by a trusted submitter; `--accept-unsigned=false` refuses them
    /// [env: SHOAL_ACCEPT_UNSIGNED] (default: true in a swarm with a swarm secret, else false).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(crate) accept_unsigned: Option<bool>,
}

/// Where to serve metrics: an address, or `None` for "off" (so a flag or variable can turn off
/// metrics a config file turns on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetricsAt(pub(crate) Option<SocketAddr>);

/// `ADDR` or `off`.
fn parse_metrics(s: &str) -> Result<MetricsAt, String> {
    if matches!(s.trim().to_ascii_lowercase().as_str(), "off" | "none" | "no" | "false") {
        return Ok(MetricsAt(None));
    }
    s.trim()
        .parse()
        .map(|a| MetricsAt(Some(a)))
        .map_err(|_| format!("`{s}` is not an address for metrics: expected e.g. 127.0.0.1:9600, or off"))
}

/// The status page's address, or off (`--http`, `SHOAL_HTTP`, `http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpSetting(pub(crate) Option<SocketAddr>);

/// An address (`127.0.0.1:7680`), or a yes/no word: yes is [`DEFAULT_HTTP`], no is off.
pub(crate) fn parse_http(s: &str) -> Result<HttpSetting, String> {
    if let Ok(addr) = s.trim().parse() {
        return Ok(HttpSetting(Some(addr)));
    }
    match parse_bool(s) {
        Ok(true) => DEFAULT_HTTP.parse().map(|a| HttpSetting(Some(a))).map_err(|e| e.to_string()),
        Ok(false) => Ok(HttpSetting(None)),
        Err(_) => Err(format!("`{s}` is not an address: expected e.g. 127.0.0.1:7680, or on/off")),
    }
}

/// The merged settings a worker runs with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) bootstrap: Vec<Bootstrap>,
    pub(crate) cores: u32,
    pub(crate) memory: u64,
    pub(crate) data_dir: PathBuf,
    pub(crate) swarm_secret: Option<PathBuf>,
    pub(crate) join_timeout: Duration,
    pub(crate) leave_grace: Duration,
    pub(crate) mdns: bool,
    /// Whether and how much this worker relays.
    pub(crate) relay: shoal_net::RelayConfig,
    /// The volunteer's caps on one task.
    pub(crate) caps: TaskCaps,
    /// Disk budget of the blob store, bytes.
    pub(crate) blob_store_budget: u64,
    /// Disk budget of the compiled-module cache, bytes.
    pub(crate) module_cache_budget: u64,
    /// Where to serve Prometheus metrics (`None`: nowhere).
    pub(crate) metrics: Option<SocketAddr>,
    /// How log lines are written.
    pub(crate) log_format: LogFormat,
    /// The config file read, if any.
    pub(crate) config: Option<PathBuf>,
    /// When to donate (`run_when`, `idle_minutes`, `hours`, `max_other_cpu_percent`).
    pub(crate) policy: Policy,
    /// Percent of the time each task thread may compute.
    pub(crate) max_cpu_percent: u32,
    /// Where the status page listens; `None`: no page.
    pub(crate) http: Option<SocketAddr>,
    /// Whose and which tasks run here (read by [`crate::trust::policy`]).
    pub(crate) trust: TrustSettings,
}

/// A config file's path and text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConfigText<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

/// One source's values; `None` = this source does not set it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Layer {
    listen: Option<SocketAddr>,
    bootstrap: Option<Vec<Bootstrap>>,
    cores: Option<u32>,
    memory: Option<u64>,
    data_dir: Option<PathBuf>,
    swarm_secret: Option<PathBuf>,
    join_timeout: Option<Duration>,
    leave_grace: Option<Duration>,
    mdns: Option<bool>,
    relay: Option<bool>,
    relay_circuits: Option<u64>,
    relay_circuit_bytes: Option<u64>,
    relay_circuit_time: Option<Duration>,
    relay_rate: Option<u64>,
    max_task_fuel: Option<u64>,
    max_task_time: Option<Duration>,
    max_task_output: Option<u64>,
    max_task_input: Option<u64>,
    blob_store_budget: Option<u64>,
    module_cache_budget: Option<u64>,
    run_when: Option<RunWhen>,
    idle_minutes: Option<f64>,
    hours: Option<Vec<HoursWindow>>,
    max_cpu_percent: Option<u32>,
    max_other_cpu_percent: Option<u32>,
    metrics: Option<MetricsAt>,
    log_format: Option<LogFormat>,
    http: Option<HttpSetting>,
    trusted_submitters: Option<ListSource>,
    allowed_modules: Option<ListSource>,
    accept_unsigned: Option<bool>,
}

impl Layer {
    fn from_flags(f: &WorkerFlags) -> Layer {
        Layer {
            listen: f.listen,
            bootstrap: (!f.bootstrap.is_empty()).then(|| f.bootstrap.clone()),
            cores: f.cores,
            memory: f.memory,
            data_dir: f.data_dir.clone(),
            swarm_secret: f.swarm_secret.clone(),
            join_timeout: f.join_timeout,
            leave_grace: f.leave_grace,
            mdns: f.mdns,
            relay: f.relay,
            relay_circuits: f.relay_circuits,
            relay_circuit_bytes: f.relay_circuit_bytes,
            relay_circuit_time: f.relay_circuit_time,
            relay_rate: f.relay_rate,
            max_task_fuel: f.max_task_fuel,
            max_task_time: f.max_task_time,
            max_task_output: f.max_task_output,
            max_task_input: f.max_task_input,
            blob_store_budget: f.blob_store_budget,
            module_cache_budget: f.module_cache_budget,
            run_when: f.run_when,
            idle_minutes: f.idle_minutes,
            hours: (!f.hours.is_empty()).then(|| f.hours.clone()),
            max_cpu_percent: f.max_cpu_percent,
            max_other_cpu_percent: f.max_other_cpu_percent,
            metrics: f.metrics,
            log_format: f.log_format,
            http: f.http,
            trusted_submitters: f.trusted_submitters.clone().map(ListSource::File),
            allowed_modules: f.allowed_modules.clone().map(ListSource::File),
            accept_unsigned: f.accept_unsigned,
        }
    }

    fn from_env(env: Env<'_>) -> anyhow::Result<Layer> {
        Ok(Layer {
            listen: env_parsed(env, "SHOAL_LISTEN", |s| {
                s.parse().map_err(|_| format!("`{s}` is not an address: expected e.g. 0.0.0.0:7600"))
            })?,
            bootstrap: env_parsed(env, "SHOAL_BOOTSTRAP", parse_addr_list)?,
            cores: env_parsed(env, "SHOAL_CORES", |s| {
                s.parse().map_err(|_| format!("`{s}` is not a number of cores"))
            })?,
            memory: env_parsed(env, "SHOAL_MEMORY", parse_size)?,
            data_dir: env_path(env, "SHOAL_DATA_DIR"),
            swarm_secret: env_path(env, "SHOAL_SWARM_SECRET"),
            join_timeout: env_parsed(env, "SHOAL_JOIN_TIMEOUT", parse_duration)?,
            leave_grace: env_parsed(env, "SHOAL_LEAVE_GRACE", parse_duration)?,
            mdns: env_parsed(env, "SHOAL_MDNS", parse_bool)?,
            relay: env_parsed(env, "SHOAL_RELAY", parse_bool)?,
            relay_circuits: env_parsed(env, "SHOAL_RELAY_CIRCUITS", parse_count)?,
            relay_circuit_bytes: env_parsed(env, "SHOAL_RELAY_CIRCUIT_BYTES", parse_size)?,
            relay_circuit_time: env_parsed(env, "SHOAL_RELAY_CIRCUIT_TIME", parse_duration)?,
            relay_rate: env_parsed(env, "SHOAL_RELAY_RATE", parse_size)?,
            max_task_fuel: env_parsed(env, "SHOAL_MAX_TASK_FUEL", parse_count)?,
            max_task_time: env_parsed(env, "SHOAL_MAX_TASK_TIME", parse_duration)?,
            max_task_output: env_parsed(env, "SHOAL_MAX_TASK_OUTPUT", parse_size)?,
            max_task_input: env_parsed(env, "SHOAL_MAX_TASK_INPUT", parse_size)?,
            blob_store_budget: env_parsed(env, "SHOAL_BLOB_STORE_BUDGET", parse_size)?,
            module_cache_budget: env_parsed(env, "SHOAL_MODULE_CACHE_BUDGET", parse_size)?,
            run_when: env_parsed(env, "SHOAL_RUN_WHEN", parse_run_when)?,
            idle_minutes: env_parsed(env, "SHOAL_IDLE_MINUTES", parse_minutes)?,
            hours: env_parsed(env, "SHOAL_HOURS", |s| {
                s.split(',').map(str::trim).filter(|w| !w.is_empty()).map(parse_hours).collect()
            })?,
            max_cpu_percent: env_parsed(env, "SHOAL_MAX_CPU_PERCENT", parse_cpu_percent)?,
            max_other_cpu_percent: env_parsed(env, "SHOAL_MAX_OTHER_CPU_PERCENT", parse_other_cpu_percent)?,
            metrics: env_parsed(env, "SHOAL_METRICS", parse_metrics)?,
            log_format: env_parsed(env, "SHOAL_LOG_FORMAT", str::parse)?,
            http: env_parsed(env, "SHOAL_HTTP", parse_http)?,
            trusted_submitters: env_path(env, "SHOAL_TRUSTED_SUBMITTERS").map(ListSource::File),
            allowed_modules: env_path(env, "SHOAL_ALLOWED_MODULES").map(ListSource::File),
            accept_unsigned: env_parsed(env, "SHOAL_ACCEPT_UNSIGNED", parse_bool)?,
        })
    }

    fn from_file(file: ConfigText<'_>) -> anyhow::Result<Layer> {
        let raw: FileSettings = toml::from_str(file.text).map_err(|e| file_error(file, &e))?;
        // Relative paths in a file mean "next to the file", wherever the worker is started from.
        let base = file.path.parent().unwrap_or_else(|| Path::new(""));
        Ok(Layer {
            listen: raw.listen,
            bootstrap: raw.bootstrap.map(|b| b.into_iter().map(|b| b.0).collect()),
            cores: raw.cores,
            memory: raw.memory.map(|m| m.0),
            data_dir: raw.data_dir.map(|p| base.join(p)),
            swarm_secret: raw.swarm_secret.map(|p| base.join(p)),
            join_timeout: raw.join_timeout.map(|d| d.0),
            leave_grace: raw.leave_grace.map(|d| d.0),
            mdns: raw.mdns,
            relay: raw.relay,
            relay_circuits: raw.relay_circuits.map(|n| n.0),
            relay_circuit_bytes: raw.relay_circuit_bytes.map(|m| m.0),
            relay_circuit_time: raw.relay_circuit_time.map(|d| d.0),
            relay_rate: raw.relay_rate.map(|m| m.0),
            max_task_fuel: raw.max_task_fuel.map(|n| n.0),
            max_task_time: raw.max_task_time.map(|d| d.0),
            max_task_output: raw.max_task_output.map(|m| m.0),
            max_task_input: raw.max_task_input.map(|m| m.0),
            blob_store_budget: raw.blob_store_budget.map(|m| m.0),
            module_cache_budget: raw.module_cache_budget.map(|m| m.0),
            run_when: raw.run_when,
            idle_minutes: raw.idle_minutes.map(|m| m.0),
            hours: raw.hours,
            max_cpu_percent: raw.max_cpu_percent.map(|p| p.0),
            max_other_cpu_percent: raw.max_other_cpu_percent.map(|p| p.0),
            metrics: raw.metrics.map(|m| m.0),
            log_format: raw.log_format,
            http: raw.http.map(|h| h.0),
            trusted_submitters: raw.trusted_submitters.map(|l| l.relative_to(base)),
            allowed_modules: raw.allowed_modules.map(|l| l.relative_to(base)),
            accept_unsigned: raw.accept_unsigned,
        })
    }
}

/// The config file's format (see docs/worker.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<SocketAddr>,
    bootstrap: Option<Vec<FileBootstrap>>,
    cores: Option<u32>,
    memory: Option<FileSize>,
    data_dir: Option<PathBuf>,
    swarm_secret: Option<PathBuf>,
    join_timeout: Option<FileDuration>,
    leave_grace: Option<FileDuration>,
    mdns: Option<bool>,
    relay: Option<bool>,
    relay_circuits: Option<FileCount>,
    relay_circuit_bytes: Option<FileSize>,
    relay_circuit_time: Option<FileDuration>,
    relay_rate: Option<FileSize>,
    max_task_fuel: Option<FileCount>,
    max_task_time: Option<FileDuration>,
    max_task_output: Option<FileSize>,
    max_task_input: Option<FileSize>,
    blob_store_budget: Option<FileSize>,
    module_cache_budget: Option<FileSize>,
    run_when: Option<RunWhen>,
    idle_minutes: Option<FileMinutes>,
    hours: Option<Vec<HoursWindow>>,
    max_cpu_percent: Option<FileCpuPercent>,
    max_other_cpu_percent: Option<FileOtherCpuPercent>,
    metrics: Option<FileMetrics>,
    log_format: Option<LogFormat>,
    http: Option<FileHttp>,
    trusted_submitters: Option<ListSource>,
    allowed_modules: Option<ListSource>,
    accept_unsigned: Option<bool>,
}

/// Minutes in a config file: a non-negative number (`5`, `0.5`).
#[derive(Debug)]
struct FileMinutes(f64);

impl<'de> Deserialize<'de> for FileMinutes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        check_minutes(v).map(FileMinutes).map_err(serde::de::Error::custom)
    }
}

/// `max_cpu_percent` in a config file: 1..=100.
#[derive(Debug)]
struct FileCpuPercent(u32);

impl<'de> Deserialize<'de> for FileCpuPercent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        check_percent(v, 1).map(FileCpuPercent).map_err(serde::de::Error::custom)
    }
}

/// `max_other_cpu_percent` in a config file: 0..=100.
#[derive(Debug)]
struct FileOtherCpuPercent(u32);

impl<'de> Deserialize<'de> for FileOtherCpuPercent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        check_percent(v, 0).map(FileOtherCpuPercent).map_err(serde::de::Error::custom)
    }
}

fn check_minutes(v: f64) -> Result<f64, String> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("`{v}` is not a number of minutes (0 or more)"))
    }
}

fn check_percent(v: i64, min: i64) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(p) if v >= min && p <= 100 => Ok(p),
        _ => Err(format!("`{v}` is not a percentage from {min} to 100")),
    }
}

fn parse_run_when(s: &str) -> Result<RunWhen, String> {
    s.parse()
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of minutes"))?;
    check_minutes(v)
}

fn parse_hours(s: &str) -> Result<HoursWindow, String> {
    s.parse()
}

fn parse_cpu_percent(s: &str) -> Result<u32, String> {
    let v: i64 = s.trim().trim_end_matches('%').parse().map_err(|_| format!("`{s}` is not a percentage"))?;
    check_percent(v, 1)
}

fn parse_other_cpu_percent(s: &str) -> Result<u32, String> {
    let v: i64 = s.trim().trim_end_matches('%').parse().map_err(|_| format!("`{s}` is not a percentage"))?;
    check_percent(v, 0)
}

/// `metrics` in a config file: `"127.0.0.1:9600"` or `"off"`.
#[derive(Debug)]
struct FileMetrics(MetricsAt);

impl<'de> Deserialize<'de> for FileMetrics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_metrics(&s).map(FileMetrics).map_err(serde::de::Error::custom)
    }
}

/// The status page in a config file: an address (`"127.0.0.1:7680"`) or `true` / `false`.
#[derive(Debug)]
struct FileHttp(HttpSetting);

impl<'de> Deserialize<'de> for FileHttp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FileHttp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address such as \"127.0.0.1:7680\", or true / false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FileHttp, E> {
                parse_http(if v { "on" } else { "off" }).map(FileHttp).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileHttp, E> {
                parse_http(v).map(FileHttp).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A count in a config file: a number (`1_000_000`) or a string (`"1e12"`).
#[derive(Debug)]
struct FileCount(u64);

impl<'de> Deserialize<'de> for FileCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FileCount;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a count such as 1000000 or \"1e12\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FileCount, E> {
                Ok(FileCount(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileCount, E> {
                u64::try_from(v).map(FileCount).map_err(|_| E::custom(format!("count {v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileCount, E> {
                parse_count(v).map(FileCount).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in a config file: a string with a unit (`"2GiB"`) or a number of bytes.
#[derive(Debug)]
struct FileSize(u64);

/// A bootstrap peer in a config file: `"192.0.2.10:7600"` or `"seed.example.org:7600"`.
#[derive(Debug)]
struct FileBootstrap(Bootstrap);

impl<'de> Deserialize<'de> for FileBootstrap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(FileBootstrap).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for FileSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FileSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"2GiB\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FileSize, E> {
                Ok(FileSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileSize, E> {
                u64::try_from(v).map(FileSize).map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileSize, E> {
                parse_size(v).map(FileSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in a config file: a string with a unit (`"30s"`) or a number of seconds.
#[derive(Debug)]
struct FileDuration(Duration);

impl<'de> Deserialize<'de> for FileDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = FileDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"30s\" or a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FileDuration, E> {
                Ok(FileDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FileDuration, E> {
                u64::try_from(v)
                    .map(|s| FileDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("duration {v} is negative")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileDuration, E> {
                parse_duration(v).map(FileDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `path:line:column: message` for a file that does not parse.
fn file_error(file: ConfigText<'_>, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = file.text.get(..span.start).unwrap_or(file.text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            anyhow::anyhow!("{}:{line}:{column}: {msg}", file.path.display())
        }
        None => anyhow::anyhow!("{}: {msg}", file.path.display()),
    }
}

/// The value of a variable, `None` when unset or empty; a non-UTF-8 value is an error.
fn env_str(env: Env<'_>, name: &str) -> anyhow::Result<Option<String>> {
    match env(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| anyhow::anyhow!("{name}: the value is not UTF-8")),
    }
}

fn env_parsed<T>(
    env: Env<'_>,
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> anyhow::Result<Option<T>> {
    match env_str(env, name)? {
        None => Ok(None),
        Some(s) => parse(&s).map(Some).map_err(|e| anyhow::anyhow!("environment variable {name}: {e}")),
    }
}

fn env_path(env: Env<'_>, name: &str) -> Option<PathBuf> {
    env(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// `true`/`false` and their usual spellings (`1`/`0`, `yes`/`no`, `on`/`off`), any case.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("`{s}` is not a yes/no value: expected true or false")),
    }
}

/// `a:1,b:2` (spaces around items and empty items are ignored).
fn parse_addr_list(s: &str) -> Result<Vec<Bootstrap>, String> {
    s.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::parse).collect()
}

/// `$XDG_DATA_HOME/shoal`, else `~/.local/share/shoal`, else `./shoal-data`.
pub(crate) fn default_data_dir(env: Env<'_>) -> PathBuf {
    if let Some(d) = env("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("shoal");
    }
    match env("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/shoal"),
        None => PathBuf::from("shoal-data"),
    }
}

/// All cores but one (at least one).
pub(crate) fn default_cores(available: usize) -> u32 {
    u32::try_from(available.saturating_sub(1).max(1)).unwrap_or(u32::MAX)
}

/// Which config file to read: `(path, explicit)`. An explicit file (`--config`, `SHOAL_CONFIG`)
/// must exist; the default one is read only if it does.
pub(crate) fn config_path(flag: Option<&Path>, env: Env<'_>) -> Option<(PathBuf, bool)> {
    if let Some(p) = flag {
        return Some((p.to_path_buf(), true));
    }
    if let Some(p) = env_path(env, "SHOAL_CONFIG") {
        return Some((p, true));
    }
    let base = match env_path(env, "XDG_CONFIG_HOME") {
        Some(dir) => dir,
        None => env_path(env, "HOME")?.join(".config"),
    };
    Some((base.join("shoal").join("worker.toml"), false))
}

/// Merges the sources: flags > environment > file > defaults. `available_cores` is what the
/// machine has (for the default `cores`).
pub(crate) fn resolve(
    flags: &WorkerFlags,
    env: Env<'_>,
    file: Option<ConfigText<'_>>,
    available_cores: usize,
) -> anyhow::Result<Settings> {
    let flag = Layer::from_flags(flags);
    let var = Layer::from_env(env)?;
    let file_layer = file.map(Layer::from_file).transpose()?.unwrap_or_default();
    let layers = [flag, var, file_layer];
    macro_rules! pick {
        ($field:ident) => {
            layers.iter().find_map(|l| l.$field.clone())
        };
    }
    let cores = pick!(cores).unwrap_or_else(|| default_cores(available_cores));
    let swarm_secret = pick!(swarm_secret);
    let listen = match pick!(listen) {
        Some(a) => a,
        None => DEFAULT_LISTEN.parse().context("the default listen address")?,
    };
    Ok(Settings {
        listen,
        bootstrap: pick!(bootstrap).unwrap_or_default(),
        cores,
        memory: pick!(memory).unwrap_or(u64::from(cores.max(1)).saturating_mul(DEFAULT_MEMORY_PER_CORE)),
        data_dir: pick!(data_dir).unwrap_or_else(|| default_data_dir(env)),
        swarm_secret: swarm_secret.clone(),
        join_timeout: pick!(join_timeout).unwrap_or(DEFAULT_JOIN_TIMEOUT),
        leave_grace: pick!(leave_grace).unwrap_or(DEFAULT_LEAVE_GRACE),
        mdns: pick!(mdns).unwrap_or(false),
        relay: {
            let d = shoal_net::RelayConfig::default();
            shoal_net::RelayConfig {
                enabled: pick!(relay).unwrap_or(false),
                max_circuits: pick!(relay_circuits)
                    .map_or(d.max_circuits, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                circuit_bytes: pick!(relay_circuit_bytes).unwrap_or(d.circuit_bytes),
                circuit_time: pick!(relay_circuit_time).unwrap_or(d.circuit_time),
                bytes_per_sec: pick!(relay_rate).unwrap_or(d.bytes_per_sec),
                ..d
            }
        },
        caps: TaskCaps {
            max_fuel: Some(pick!(max_task_fuel).unwrap_or(DEFAULT_MAX_TASK_FUEL)),
            max_time_ms: Some(millis(pick!(max_task_time).unwrap_or(DEFAULT_MAX_TASK_TIME))),
            max_output: Some(pick!(max_task_output).unwrap_or(DEFAULT_MAX_TASK_OUTPUT)),
            max_input: Some(pick!(max_task_input).unwrap_or(DEFAULT_MAX_TASK_INPUT)),
            // The memory cap is the peer's memory per task slot, set by the node.
            max_memory: None,
        },
        blob_store_budget: pick!(blob_store_budget).unwrap_or(DEFAULT_BLOB_STORE_BUDGET),
        module_cache_budget: pick!(module_cache_budget).unwrap_or(DEFAULT_MODULE_CACHE_BUDGET),
        metrics: pick!(metrics).and_then(|m| m.0),
        log_format: pick!(log_format).unwrap_or_default(),
        config: file.map(|f| f.path.to_path_buf()),
        policy: Policy {
            run_when: pick!(run_when).unwrap_or_default(),
            idle_after: Duration::from_secs_f64(pick!(idle_minutes).unwrap_or(DEFAULT_IDLE_MINUTES) * 60.0),
            hours: pick!(hours).unwrap_or_default(),
            max_other_cpu_percent: pick!(max_other_cpu_percent),
        },
        max_cpu_percent: pick!(max_cpu_percent).unwrap_or(100),
        http: pick!(http).and_then(|h| h.0),
        trust: TrustSettings {
            trusted_submitters: pick!(trusted_submitters),
            allowed_modules: pick!(allowed_modules),
            accept_unsigned: pick!(accept_unsigned).unwrap_or(swarm_secret.is_some()),
        },
    })
}

/// Reads the config file chosen by [`config_path`]: `None` when there is none.
fn read_config(flag: Option<&Path>, env: Env<'_>) -> anyhow::Result<Option<(PathBuf, String)>> {
    let Some((path, explicit)) = config_path(flag, env) else { return Ok(None) };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the config file {}", path.display())),
    }
}

fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The settings of this process: its flags, its environment and its config file.
pub(crate) fn load(flags: &WorkerFlags) -> anyhow::Result<Settings> {
    let file = read_config(flags.config.as_deref(), &process_env)?;
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let text = file.as_ref().map(|(path, text)| ConfigText { path, text });
    resolve(flags, &process_env, text, available)
}

/// The data directory alone, by the same precedence (for `shoal status`, which must find the
/// worker `shoal worker` started with the same flags, environment and config file).
pub(crate) fn load_data_dir(data_dir: Option<&Path>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = data_dir {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = env_path(&process_env, "SHOAL_DATA_DIR") {
        return Ok(d);
    }
    if let Some((path, text)) = read_config(config, &process_env)?
        && let Some(d) = Layer::from_file(ConfigText { path: &path, text: &text })?.data_dir
    {
        return Ok(d);
    }
    Ok(default_data_dir(&process_env))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use std::collections::HashMap;

    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        move |k| map.get(k).cloned()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn file<'a>(text: &'a str) -> Option<ConfigText<'a>> {
        Some(ConfigText { path: Path::new("/etc/shoal/worker.toml"), text })
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        let s = resolve(&WorkerFlags::default(), &env_of(&[("HOME", "/home/v")]), None, 4).unwrap();
        assert_eq!(s.listen, addr("0.0.0.0:7600"));
        assert!(s.bootstrap.is_empty());
        assert_eq!(s.cores, 3);
        assert_eq!(s.memory, 3 * (256 << 20));
        assert_eq!(s.data_dir, PathBuf::from("/home/v/.local/share/shoal"));
        assert_eq!(s.swarm_secret, None);
        assert_eq!(s.join_timeout, Duration::from_secs(30));
        assert_eq!(s.leave_grace, Duration::from_secs(10));
        assert!(!s.mdns);
        assert_eq!(s.config, None);
        let s = resolve(&WorkerFlags::default(), &env_of(&[("XDG_DATA_HOME", "/d")]), None, 1).unwrap();
        assert_eq!((s.cores, s.data_dir), (1, PathBuf::from("/d/shoal")));
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default_for_every_setting() {
        let text = "listen = \"10.0.0.1:1\"\nbootstrap = [\"10.0.0.9:9\"]\ncores = 3\nmemory = \"3GiB\"\n\
                    data_dir = \"data\"\nswarm_secret = \"/s/file\"\njoin_timeout = \"3s\"\nleave_grace = 30\n\
                    mdns = true\n";
        let env = env_of(&[
            ("SHOAL_LISTEN", "10.0.0.2:2"),
            ("SHOAL_BOOTSTRAP", "10.0.0.7:7, 10.0.0.8:8,"),
            ("SHOAL_CORES", "2"),
            ("SHOAL_MEMORY", "2GiB"),
            ("SHOAL_DATA_DIR", "/env/data"),
            ("SHOAL_SWARM_SECRET", "/env/secret"),
            ("SHOAL_JOIN_TIMEOUT", "2s"),
            ("SHOAL_LEAVE_GRACE", "20s"),
            ("SHOAL_MDNS", "no"),
        ]);
        let flags = WorkerFlags {
            listen: Some(addr("10.0.0.3:3")),
            bootstrap: vec![Bootstrap::Addr(addr("10.0.0.6:6"))],
            cores: Some(1),
            memory: Some(1 << 30),
            data_dir: Some("/flag/data".into()),
            swarm_secret: Some("/flag/secret".into()),
            join_timeout: Some(Duration::from_secs(1)),
            leave_grace: Some(Duration::from_secs(10)),
            mdns: Some(true),
            config: None,
            ..WorkerFlags::default()
        };
        let s = resolve(&flags, &env, file(text), 8).unwrap();
        assert_eq!(s.listen, addr("10.0.0.3:3"));
        assert_eq!(s.bootstrap, vec![Bootstrap::Addr(addr("10.0.0.6:6"))]);
        assert_eq!((s.cores, s.memory), (1, 1 << 30));
        assert_eq!(s.data_dir, PathBuf::from("/flag/data"));
        assert_eq!(s.swarm_secret, Some(PathBuf::from("/flag/secret")));
        assert_eq!(s.join_timeout, Duration::from_secs(1));
        assert_eq!(s.leave_grace, Duration::from_secs(10));
        assert!(s.mdns);
        assert_eq!(s.config, Some(PathBuf::from("/etc/shoal/worker.toml")));

        let s = resolve(&WorkerFlags::default(), &env, file(text), 8).unwrap();
        assert_eq!(s.listen, addr("10.0.0.2:2"));
        let want = vec![Bootstrap::Addr(addr("10.0.0.7:7")), Bootstrap::Addr(addr("10.0.0.8:8"))];
        assert_eq!(s.bootstrap, want);
        assert_eq!((s.cores, s.memory), (2, 2 << 30));
        assert_eq!(s.data_dir, PathBuf::from("/env/data"));
        assert_eq!(s.swarm_secret, Some(PathBuf::from("/env/secret")));
        assert_eq!(s.join_timeout, Duration::from_secs(2));
        assert_eq!(s.leave_grace, Duration::from_secs(20));
        assert!(!s.mdns, "SHOAL_MDNS=no beats the file's mdns = true");

        let s = resolve(&WorkerFlags::default(), &env_of(&[]), file(text), 8).unwrap();
        assert_eq!(s.listen, addr("10.0.0.1:1"));
        assert_eq!(s.bootstrap, vec![Bootstrap::Addr(addr("10.0.0.9:9"))]);
        assert_eq!((s.cores, s.memory), (3, 3 << 30));
        // Relative to the file's directory.
        assert_eq!(s.data_dir, PathBuf::from("/etc/shoal/data"));
        assert_eq!(s.swarm_secret, Some(PathBuf::from("/s/file")));
        assert_eq!(s.join_timeout, Duration::from_secs(3));
        assert_eq!(s.leave_grace, Duration::from_secs(30));
        assert!(s.mdns);
        let flags = WorkerFlags { mdns: Some(false), ..WorkerFlags::default() };
        let on = env_of(&[("SHOAL_MDNS", "ON")]);
        assert!(!resolve(&flags, &on, file(text), 8).unwrap().mdns, "--mdns=false beats SHOAL_MDNS=on");
        assert!(resolve(&WorkerFlags::default(), &on, None, 8).unwrap().mdns);
    }

    #[test]
    fn unsigned_jobs_run_by_default_only_in_a_private_swarm_and_trust_lists_merge_like_the_rest() {
        let home = [("HOME", "/home/v")];
        let open = resolve(&WorkerFlags::default(), &env_of(&home), None, 4).unwrap();
        assert_eq!(open.trust, TrustSettings::default(), "no unsigned jobs, no lists");
        let secret = WorkerFlags { swarm_secret: Some("/s".into()), ..WorkerFlags::default() };
        assert!(resolve(&secret, &env_of(&home), None, 4).unwrap().trust.accept_unsigned);
        let strict = WorkerFlags { accept_unsigned: Some(false), ..secret };
        assert!(!resolve(&strict, &env_of(&home), None, 4).unwrap().trust.accept_unsigned, "said wins");

        let text =
            "trusted_submitters = [\"k1\", \"k2\"]\nallowed_modules = \"mods.txt\"\naccept_unsigned = true\n";
        let file = ConfigText { path: Path::new("/etc/shoal/worker.toml"), text };
        let s = resolve(&WorkerFlags::default(), &env_of(&home), Some(file), 4).unwrap();
        assert_eq!(s.trust.trusted_submitters, Some(ListSource::Inline(vec!["k1".into(), "k2".into()])));
        assert_eq!(s.trust.allowed_modules, Some(ListSource::File("/etc/shoal/mods.txt".into())));
        assert!(s.trust.accept_unsigned);
        let env = env_of(&[
            ("HOME", "/home/v"),
            ("SHOAL_TRUSTED_SUBMITTERS", "/env/keys"),
            ("SHOAL_ACCEPT_UNSIGNED", "no"),
        ]);
        let s = resolve(&WorkerFlags::default(), &env, Some(file), 4).unwrap();
        assert_eq!(s.trust.trusted_submitters, Some(ListSource::File("/env/keys".into())));
        assert!(!s.trust.accept_unsigned);
    }

    #[test]
    fn the_status_page_is_off_by_default_loopback_when_on_and_merges_like_the_rest() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: WorkerFlags,
        }
        let parse = |args: &[&str]| {
            let cli =
                <Cli as clap::Parser>::try_parse_from(std::iter::once("worker").chain(args.iter().copied()));
            cli.unwrap().flags
        };
        let none = env_of(&[]);
        assert_eq!(resolve(&WorkerFlags::default(), &none, None, 2).unwrap().http, None, "off by default");
        let on = parse(&["--http", "--cores", "1"]);
        assert_eq!(resolve(&on, &none, None, 2).unwrap().http, Some(addr("127.0.0.1:7680")));
        let at = parse(&["--http", "127.0.0.1:0"]);
        assert_eq!(resolve(&at, &none, None, 2).unwrap().http, Some(addr("127.0.0.1:0")));
        let file_on = file("http = \"0.0.0.0:8080\"");
        let env = env_of(&[("SHOAL_HTTP", "127.0.0.1:9")]);
        assert_eq!(
            resolve(&WorkerFlags::default(), &none, file_on, 2).unwrap().http,
            Some(addr("0.0.0.0:8080"))
        );
        assert_eq!(
            resolve(&WorkerFlags::default(), &env, file_on, 2).unwrap().http,
            Some(addr("127.0.0.1:9"))
        );
        assert_eq!(
            resolve(&at, &env, file_on, 2).unwrap().http,
            Some(addr("127.0.0.1:0")),
            "flag > env > file"
        );
        let off = parse(&["--http=off"]);
        assert_eq!(resolve(&off, &env, file_on, 2).unwrap().http, None, "--http=off beats the others");
        assert_eq!(
            resolve(&WorkerFlags::default(), &none, file("http = true"), 2).unwrap().http,
            Some(addr(DEFAULT_HTTP))
        );
        let e =
            resolve(&WorkerFlags::default(), &env_of(&[("SHOAL_HTTP", "everywhere")]), None, 2).unwrap_err();
        assert!(e.to_string().contains("SHOAL_HTTP: `everywhere` is not an address"), "{e}");
        let e = resolve(&WorkerFlags::default(), &none, file("http = 80"), 2).unwrap_err();
        assert!(e.to_string().starts_with("/etc/shoal/worker.toml:1:8:"), "{e}");
    }

    #[test]
    fn sources_mix_per_setting_and_memory_defaults_follow_the_chosen_cores() {
        let env = env_of(&[("SHOAL_CORES", "2"), ("SHOAL_MEMORY", "")]);
        let flags = WorkerFlags { join_timeout: Some(Duration::from_millis(500)), ..WorkerFlags::default() };
        let s = resolve(&flags, &env, file("cores = 5\nlisten = \"127.0.0.1:0\"\n"), 8).unwrap();
        assert_eq!(s.cores, 2, "env beats file");
        assert_eq!(s.memory, 2 * (256 << 20), "empty variable = unset; default per chosen core");
        assert_eq!(s.listen, addr("127.0.0.1:0"), "file beats default");
        assert_eq!(s.join_timeout, Duration::from_millis(500));
    }

    #[test]
    fn the_volunteers_caps_and_disk_budgets_come_from_every_source() {
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), None, 2).unwrap();
        assert_eq!(s.caps.max_fuel, Some(DEFAULT_MAX_TASK_FUEL));
        assert_eq!(s.caps.max_time_ms, Some(3_600_000));
        assert_eq!((s.caps.max_output, s.caps.max_input), (Some(1 << 30), Some(4 << 30)));
        assert_eq!((s.blob_store_budget, s.module_cache_budget), (4 << 30, 1 << 30));
        let text = "max_task_fuel = \"2e9\"\nmax_task_time = \"90s\"\nmax_task_output = \"1MiB\"\n\
                    max_task_input = 4096\nblob_store_budget = \"2GiB\"\nmodule_cache_budget = \"64MiB\"\n";
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), file(text), 2).unwrap();
        assert_eq!(s.caps.max_fuel, Some(2_000_000_000));
        assert_eq!(s.caps.max_time_ms, Some(90_000));
        assert_eq!((s.caps.max_output, s.caps.max_input), (Some(1 << 20), Some(4096)));
        assert_eq!((s.blob_store_budget, s.module_cache_budget), (2 << 30, 64 << 20));
        let env = env_of(&[("SHOAL_MAX_TASK_FUEL", "1_000"), ("SHOAL_MAX_TASK_INPUT", "1KiB")]);
        let flags = WorkerFlags { max_task_fuel: Some(7), ..WorkerFlags::default() };
        let s = resolve(&flags, &env, file(text), 2).unwrap();
        assert_eq!((s.caps.max_fuel, s.caps.max_input), (Some(7), Some(1024)), "flag > env > file");
        let e = resolve(&WorkerFlags::default(), &env_of(&[("SHOAL_MAX_TASK_FUEL", "lots")]), None, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHOAL_MAX_TASK_FUEL") && e.contains("not a count"), "{e}");
    }

    #[test]
    fn metrics_and_log_format_merge_flag_over_env_over_file_over_default() {
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), None, 2).unwrap();
        assert_eq!((s.metrics, s.log_format), (None, LogFormat::Text), "off and text by default");
        let text = "metrics = \"127.0.0.1:9601\"\nlog_format = \"json\"\n";
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), file(text), 2).unwrap();
        assert_eq!((s.metrics, s.log_format), (Some(addr("127.0.0.1:9601")), LogFormat::Json));
        let env = env_of(&[("SHOAL_METRICS", "0.0.0.0:9602"), ("SHOAL_LOG_FORMAT", "Text")]);
        let s = resolve(&WorkerFlags::default(), &env, file(text), 2).unwrap();
        assert_eq!((s.metrics, s.log_format), (Some(addr("0.0.0.0:9602")), LogFormat::Text), "env > file");
        let flags = WorkerFlags {
            metrics: Some(MetricsAt(Some(addr("127.0.0.1:0")))),
            log_format: Some(LogFormat::Json),
            ..WorkerFlags::default()
        };
        let s = resolve(&flags, &env, file(text), 2).unwrap();
        assert_eq!((s.metrics, s.log_format), (Some(addr("127.0.0.1:0")), LogFormat::Json), "flag > env");
        // `off` at a higher source turns off what a lower one turns on.
        let off = env_of(&[("SHOAL_METRICS", "off")]);
        assert_eq!(resolve(&WorkerFlags::default(), &off, file(text), 2).unwrap().metrics, None);
        let flags = WorkerFlags { metrics: Some(parse_metrics("OFF").unwrap()), ..WorkerFlags::default() };
        assert_eq!(resolve(&flags, &env, None, 2).unwrap().metrics, None);
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), file("metrics = \"off\""), 2).unwrap();
        assert_eq!(s.metrics, None);
        // Mistakes name the variable or the file's line.
        let bad = env_of(&[("SHOAL_METRICS", "9600")]);
        let e = resolve(&WorkerFlags::default(), &bad, None, 2).unwrap_err().to_string();
        assert!(e.contains("SHOAL_METRICS") && e.contains("`9600` is not an address"), "{e}");
        let bad = env_of(&[("SHOAL_LOG_FORMAT", "yaml")]);
        let e = resolve(&WorkerFlags::default(), &bad, None, 2).unwrap_err().to_string();
        assert!(e.contains("SHOAL_LOG_FORMAT") && e.contains("text or json"), "{e}");
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("cores = 1\nlog_format = \"xml\""), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.toml:2:") && e.contains("xml"), "{e}");
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("metrics = \"localhost\""), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.toml:1:") && e.contains("not an address for metrics"), "{e}");
    }

    #[test]
    fn the_flags_parse_from_the_command_line() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: WorkerFlags,
        }
        let cli = Cli::try_parse_from(["shoal", "--metrics", "127.0.0.1:0", "--log-format", "json"]).unwrap();
        assert_eq!(cli.flags.metrics, Some(MetricsAt(Some(addr("127.0.0.1:0")))));
        assert_eq!(cli.flags.log_format, Some(LogFormat::Json));
        assert!(Cli::try_parse_from(["shoal", "--log-format", "yaml"]).is_err());
        let e = Cli::try_parse_from(["shoal", "--metrics", "here"]).unwrap_err().to_string();
        assert!(e.contains("not an address for metrics"), "{e}");
    }

    #[test]
    fn file_sizes_and_durations_take_numbers_too() {
        let s = resolve(
            &WorkerFlags::default(),
            &env_of(&[]),
            file("memory = 1048576\njoin_timeout = 7\ncores = 1"),
            8,
        )
        .unwrap();
        assert_eq!((s.memory, s.join_timeout), (1 << 20, Duration::from_secs(7)));
    }

    #[test]
    fn unknown_keys_and_bad_values_in_the_file_name_key_and_line() {
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("cores = 2\n\ncolour = \"blue\"\n"), 8)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/shoal/worker.toml:3:1: unknown field `colour`"), "{e}");
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("memory = \"lots\""), 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.toml:1:") && e.contains("`lots` is not a size"), "{e}");
        let e =
            resolve(&WorkerFlags::default(), &env_of(&[]), file("memory = -1"), 8).unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("bootstrap = [\"nowhere\"]"), 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.toml:1:"), "{e}");
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("cores = 1\nmdns = \"often\""), 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("worker.toml:2:"), "{e}");
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("cores = "), 8).unwrap_err().to_string();
        assert!(e.contains("worker.toml:1:"), "{e}");
    }

    #[test]
    fn bootstrap_peers_may_be_names_in_every_source() {
        let name = |n: &str| Bootstrap::Name(n.into());
        let env = env_of(&[("SHOAL_BOOTSTRAP", "seed.example.org:7600, 10.0.0.1:1")]);
        let s = resolve(&WorkerFlags::default(), &env, None, 2).unwrap();
        assert_eq!(s.bootstrap, vec![name("seed.example.org:7600"), Bootstrap::Addr(addr("10.0.0.1:1"))]);
        let s =
            resolve(&WorkerFlags::default(), &env_of(&[]), file("bootstrap = [\"a.example:1\"]"), 2).unwrap();
        assert_eq!(s.bootstrap, vec![name("a.example:1")]);
        let e = resolve(&WorkerFlags::default(), &env_of(&[]), file("bootstrap = [\"a.example\"]"), 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected HOST:PORT"), "{e}");
    }

    #[test]
    fn a_bad_variable_is_an_error_naming_it() {
        for (var, value, says) in [
            ("SHOAL_CORES", "many", "not a number of cores"),
            ("SHOAL_MEMORY", "2XB", "`2XB` is not a size"),
            ("SHOAL_LISTEN", "localhost", "not an address"),
            ("SHOAL_BOOTSTRAP", "10.0.0.1:1,bad", "`bad` is not an address"),
            ("SHOAL_JOIN_TIMEOUT", "soon", "not a duration"),
            ("SHOAL_MDNS", "maybe", "`maybe` is not a yes/no value"),
        ] {
            let e =
                resolve(&WorkerFlags::default(), &env_of(&[(var, value)]), None, 2).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(says), "{var}: {e}");
        }
    }

    #[test]
    fn the_config_file_is_the_flag_then_the_variable_then_the_platform_default() {
        let env = env_of(&[("SHOAL_CONFIG", "/env.toml"), ("HOME", "/home/v")]);
        assert_eq!(config_path(Some(Path::new("/f.toml")), &env), Some(("/f.toml".into(), true)));
        assert_eq!(config_path(None, &env), Some(("/env.toml".into(), true)));
        let env = env_of(&[("HOME", "/home/v")]);
        assert_eq!(config_path(None, &env), Some(("/home/v/.config/shoal/worker.toml".into(), false)));
        let env = env_of(&[("HOME", "/home/v"), ("XDG_CONFIG_HOME", "/cfg")]);
        assert_eq!(config_path(None, &env), Some(("/cfg/shoal/worker.toml".into(), false)));
        assert_eq!(config_path(None, &env_of(&[])), None);
    }

    #[test]
    fn the_sample_files_in_deploy_and_docs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sample = std::fs::read_to_string(root.join("deploy/worker.toml")).unwrap();
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), file(&sample), 8).unwrap();
        assert_eq!((s.cores, s.memory, s.join_timeout), (2, 1 << 30, Duration::from_secs(60)));
        let doc = std::fs::read_to_string(root.join("docs/worker.md")).unwrap();
        let blocks: Vec<&str> =
            doc.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
        assert!(!blocks.is_empty());
        for b in blocks {
            let s = resolve(&WorkerFlags::default(), &env_of(&[]), file(b), 8).unwrap();
            assert_eq!(s.bootstrap.len(), 2, "{b}");
        }
    }

    #[test]
    fn donation_policies_come_from_every_source_flag_first() {
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), None, 2).unwrap();
        assert_eq!(s.policy.run_when, RunWhen::Always);
        assert_eq!(s.policy.idle_after, Duration::from_secs(300));
        assert!(s.policy.hours.is_empty());
        assert_eq!((s.max_cpu_percent, s.policy.max_other_cpu_percent), (100, None));
        let text = "run_when = \"idle\"\nidle_minutes = 10\nhours = [\"22:00-07:00\", \"12:00-13:00\"]\n\
                    max_cpu_percent = 25\nmax_other_cpu_percent = 50\n";
        let s = resolve(&WorkerFlags::default(), &env_of(&[]), file(text), 2).unwrap();
        assert_eq!(s.policy.run_when, RunWhen::Idle);
        assert_eq!(s.policy.idle_after, Duration::from_secs(600));
        let hours: Vec<String> = s.policy.hours.iter().map(ToString::to_string).collect();
        assert_eq!(hours, ["22:00-07:00", "12:00-13:00"]);
        assert_eq!((s.max_cpu_percent, s.policy.max_other_cpu_percent), (25, Some(50)));
        let env = env_of(&[
            ("SHOAL_RUN_WHEN", "always"),
            ("SHOAL_IDLE_MINUTES", "0.5"),
            ("SHOAL_HOURS", "08:00-18:00, 20:00-21:00"),
            ("SHOAL_MAX_CPU_PERCENT", "50%"),
            ("SHOAL_MAX_OTHER_CPU_PERCENT", "0"),
        ]);
        let s = resolve(&WorkerFlags::default(), &env, file(text), 2).unwrap();
        assert_eq!(s.policy.run_when, RunWhen::Always);
        assert_eq!(s.policy.idle_after, Duration::from_secs(30));
        assert_eq!(s.policy.hours.len(), 2);
        assert_eq!((s.max_cpu_percent, s.policy.max_other_cpu_percent), (50, Some(0)));
        let flags = WorkerFlags {
            run_when: Some(RunWhen::Idle),
            idle_minutes: Some(1.0),
            hours: vec!["00:00-01:00".parse().unwrap()],
            max_cpu_percent: Some(10),
            max_other_cpu_percent: Some(90),
            ..WorkerFlags::default()
        };
        let s = resolve(&flags, &env, file(text), 2).unwrap();
        assert_eq!(s.policy.run_when, RunWhen::Idle);
        assert_eq!(s.policy.idle_after, Duration::from_secs(60));
        assert_eq!(s.policy.hours, vec!["00:00-01:00".parse().unwrap()]);
        assert_eq!((s.max_cpu_percent, s.policy.max_other_cpu_percent), (10, Some(90)));
        for (bad, says) in [
            ("run_when = \"sometimes\"", "not a run_when value"),
            ("hours = [\"9-5\"]", "HH:MM-HH:MM"),
            ("max_cpu_percent = 0", "from 1 to 100"),
            ("max_other_cpu_percent = 101", "from 0 to 100"),
            ("idle_minutes = -1", "minutes"),
        ] {
            let e = resolve(&WorkerFlags::default(), &env_of(&[]), file(bad), 2).unwrap_err().to_string();
            assert!(e.contains("worker.toml:1:") && e.contains(says), "{bad}: {e}");
        }
        for (var, value, says) in [
            ("SHOAL_RUN_WHEN", "never", "not a run_when value"),
            ("SHOAL_HOURS", "22:00-07:00,late", "`late` is not a window"),
            ("SHOAL_MAX_CPU_PERCENT", "200", "from 1 to 100"),
            ("SHOAL_IDLE_MINUTES", "soon", "not a number of minutes"),
        ] {
            let e =
                resolve(&WorkerFlags::default(), &env_of(&[(var, value)]), None, 2).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(says), "{var}: {e}");
        }
    }
}
