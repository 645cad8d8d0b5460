//! Donation policies: *when* the volunteer's machine donates CPU, decided every few seconds from
//! probes of the machine, and the task that pauses and resumes the peer accordingly.
//!
//! The conditions, in the order their reasons win: the volunteer's own pause (`shoal worker
//! pause`, until `shoal worker resume`), the allowed `hours` (local time windows), and with
//! `run_when = "idle"` the power supply (no donating on battery) and input idleness (no keyboard or
//! mouse input for `idle_minutes`); then `max_other_cpu_percent` (other processes' share of the
//! machine's CPU over a sliding window). [`decide`] is a pure function of a [`Policy`] and a
//! [`Probes`] implementation, so tests inject fake machines; [`SystemProbes`] reads the real one
//! from paths that tests point at fake directories:
//! - idle time: the newest access/modify time of the input devices (`/dev/input/event*`, written by
//!   the kernel on every key press and mouse move) and the access time of terminals (`/dev/pts/*`,
//!   `/dev/tty*`: read when someone types), as BOINC does; with no input devices at all, the
//!   login manager's hint (`loginctl show-session ID -p IdleHint -p IdleSinceHint` for every
//!   session); with neither, the machine counts as idle (nobody can be using it);
//! - power: `/sys/class/power_supply/*/{type,online,status}`: on battery = a `Battery` whose status
//!   is `Discharging` and no `Mains` (or USB) supply online; no entries = on AC (a desktop or server);
//! - other processes' CPU: `/proc/stat`'s busy time (all but idle and iowait) minus this process's
//!   own `/proc/self/stat` utime + stime, as a share of all CPU time, between the newest sample and
//!   the oldest of the last [`CPU_WINDOW`] samples.
//!
//! Invariants: a probe that cannot read something errs towards donating (unknown idle time = idle,
//! no power supply = AC, no CPU figures yet = not busy), never towards failing the worker; the
//! policy task changes the peer's pause only when the decision changes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use shoal_node::{PauseReason, Peer};
use tracing::info;

/// How often the policy task looks at the machine.
pub(crate) const POLL: Duration = Duration::from_secs(2);
/// CPU samples in the sliding window of `max_other_cpu_percent` (`CPU_WINDOW` × [`POLL`] = 10 s).
pub(crate) const CPU_WINDOW: usize = 5;

/// When the worker donates, as far as the machine's use goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) enum RunWhen {
    /// Whenever the other conditions allow.
    #[default]
    Always,
    /// Only when nobody has used the keyboard or mouse for `idle_minutes` and the machine is on AC.
    Idle,
}

impl std::str::FromStr for RunWhen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(RunWhen::Always),
            "idle" => Ok(RunWhen::Idle),
            _ => Err(format!("`{s}` is not a run_when value: expected always or idle")),
        }
    }
}

impl TryFrom<String> for RunWhen {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A window of local time, `HH:MM-HH:MM`; one whose end is before its start wraps midnight
/// (`22:00-07:00`), one whose end equals its start is the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct HoursWindow {
    /// Minutes since midnight, inclusive.
    start: u16,
    /// Minutes since midnight, exclusive.
    end: u16,
}

impl HoursWindow {
    /// Whether `minute` (since midnight) is inside the window.
    pub(crate) fn contains(self, minute: u16) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Less => self.start <= minute && minute < self.end,
            std::cmp::Ordering::Greater => minute >= self.start || minute < self.end,
            std::cmp::Ordering::Equal => true,
        }
    }
}

impl std::str::FromStr for HoursWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a window of hours: expected HH:MM-HH:MM, e.g. 22:00-07:00");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Result<u16, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            // 24:00 is the end of the day.
            if (h < 24 && m < 60) || (h == 24 && m == 0) { Ok((h * 60 + m) % (24 * 60)) } else { Err(bad()) }
        };
        Ok(HoursWindow { start: minute(a)?, end: minute(b)? })
    }
}

impl TryFrom<String> for HoursWindow {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for HoursWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = (self.start, self.end);
        write!(f, "{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
    }
}

/// The volunteer's donation policy (the settings `run_when`, `idle_minutes`, `hours` and
/// `max_other_cpu_percent`; `max_cpu_percent` is the sandbox's, see `shoal_node::Config`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    pub(crate) run_when: RunWhen,
    /// With [`RunWhen::Idle`]: input idle this long counts as idle.
    pub(crate) idle_after: Duration,
    /// Local time windows when donating is allowed; empty = any time.
    pub(crate) hours: Vec<HoursWindow>,
    /// Pause while other processes use more than this percent of the machine's CPU.
    pub(crate) max_other_cpu_percent: Option<u32>,
}

/// What the policy needs to know about the machine.
pub(crate) trait Probes {
    /// Time since the last keyboard or mouse input; `None` when it cannot be told.
    fn idle_for(&mut self) -> Option<Duration>;
    /// Whether the machine runs on battery.
    fn on_battery(&mut self) -> bool;
    /// Local time of day, minutes since midnight.
    fn minute_of_day(&mut self) -> u16;
    /// Percent of the machine's CPU other processes used over the recent window (takes a sample);
    /// `None` until there are two samples.
    fn other_cpu_percent(&mut self) -> Option<f64>;
}

/// Why the worker should not donate now, by the policy alone (the volunteer's own pause is the
/// caller's); `None`: donate.
pub(crate) fn decide(policy: &Policy, probes: &mut dyn Probes) -> Option<PauseReason> {
    // Sampled every time, so the sliding window stays current whatever else holds.
    let other = policy.max_other_cpu_percent.and_then(|_| probes.other_cpu_percent());
    if !policy.hours.is_empty() {
        let now = probes.minute_of_day();
        if !policy.hours.iter().any(|w| w.contains(now)) {
            return Some(PauseReason::OutsideHours);
        }
    }
    if policy.run_when == RunWhen::Idle {
        if probes.on_battery() {
            return Some(PauseReason::OnBattery);
        }
        if probes.idle_for().is_some_and(|idle| idle < policy.idle_after) {
            return Some(PauseReason::NotIdle);
        }
    }
    match (policy.max_other_cpu_percent, other) {
        (Some(max), Some(other)) if other > f64::from(max) => Some(PauseReason::MachineBusy),
        _ => None,
    }
}

/// CPU time counters, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuSample {
    /// All CPU time of the machine.
    total: u64,
    /// Its busy part (all but idle and iowait).
    busy: u64,
    /// This process's own (user + system).
    own: u64,
}

/// The real machine, read from these paths (tests point them at fake directories).
#[derive(Debug, Clone)]
pub(crate) struct SystemProbes {
    /// Input devices: `event*` files here (`/dev/input`).
    pub(crate) input_dir: PathBuf,
    /// Terminals: every file in these directories whose name starts with `tty` or is a number
    /// (`/dev`, `/dev/pts`).
    pub(crate) tty_dirs: Vec<PathBuf>,
    /// Power supplies (`/sys/class/power_supply`).
    pub(crate) power_dir: PathBuf,
    /// `/proc` (for `stat` and `self/stat`).
    pub(crate) proc_dir: PathBuf,
    /// Ask `loginctl` when there are no input devices.
    pub(crate) loginctl: bool,
    /// The clock (wall time; local time of day by the C library's time zone).
    pub(crate) now: fn() -> SystemTime,
    samples: VecDeque<CpuSample>,
}

impl SystemProbes {
    /// The real machine's paths.
    pub(crate) fn system() -> SystemProbes {
        SystemProbes::at(Path::new("/"), true)
    }

    /// The paths under `root` (`root/dev/input`, `root/sys/class/power_supply`, `root/proc`…).
    pub(crate) fn at(root: &Path, loginctl: bool) -> SystemProbes {
        SystemProbes {
            input_dir: root.join("dev/input"),
            tty_dirs: vec![root.join("dev"), root.join("dev/pts")],
            power_dir: root.join("sys/class/power_supply"),
            proc_dir: root.join("proc"),
            loginctl,
            now: SystemTime::now,
            samples: VecDeque::new(),
        }
    }

    /// The newest input time of the input devices and terminals; `None` when there are no input
    /// devices (terminals alone do not show a desktop user).
    fn last_input(&self) -> Option<SystemTime> {
        let mut devices = 0;
        let mut newest: Option<SystemTime> = None;
        let mut note = |t: std::io::Result<SystemTime>| {
            if let Ok(t) = t {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        };
        for entry in read_dir(&self.input_dir) {
            if entry.file_name().to_string_lossy().starts_with("event")
                && let Ok(meta) = std::fs::metadata(entry.path())
            {
                devices += 1;
                note(meta.accessed());
                note(meta.modified());
            }
        }
        if devices == 0 {
            return None;
        }
        for dir in &self.tty_dirs {
            for entry in read_dir(dir) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let tty =
                    name.starts_with("tty") || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()));
                if tty && let Ok(meta) = std::fs::metadata(entry.path()) {
                    note(meta.accessed());
                }
            }
        }
        newest
    }

    /// The login manager's idea: `Some(ZERO)` if a session is not idle, else the shortest time
    /// since a session became idle; `None` if `loginctl` has no sessions or cannot run.
    fn loginctl_idle(&self) -> Option<Duration> {
        let out =
            std::process::Command::new("loginctl").args(["list-sessions", "--no-legend"]).output().ok()?;
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        let mut idle: Option<Duration> = None;
        for id in ids {
            let out = std::process::Command::new("loginctl")
                .args(["show-session", &id, "-p", "IdleHint", "-p", "IdleSinceHint"])
                .output()
                .ok()?;
            let this = session_idle(&String::from_utf8_lossy(&out.stdout), (self.now)())?;
            idle = Some(idle.map_or(this, |i| i.min(this)));
        }
        idle
    }

    fn cpu_sample(&self) -> Option<CpuSample> {
        let stat = std::fs::read_to_string(self.proc_dir.join("stat")).ok()?;
        let own = std::fs::read_to_string(self.proc_dir.join("self/stat")).ok()?;
        let (total, busy) = machine_cpu(&stat)?;
        Some(CpuSample { total, busy, own: process_cpu(&own)? })
    }
}

impl Probes for SystemProbes {
    fn idle_for(&mut self) -> Option<Duration> {
        match self.last_input() {
            Some(t) => Some((self.now)().duration_since(t).unwrap_or(Duration::ZERO)),
            None if self.loginctl => self.loginctl_idle(),
            None => None,
        }
    }

    fn on_battery(&mut self) -> bool {
        let mut discharging = false;
        let mut mains_online = false;
        for entry in read_dir(&self.power_dir) {
            let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).unwrap_or_default();
            let kind = read("type");
            match kind.trim() {
                "Battery" => discharging |= read("status").trim().eq_ignore_ascii_case("discharging"),
                "Mains" | "USB" | "USB_C" | "USB_PD" => mains_online |= read("online").trim() == "1",
                _ => {}
            }
        }
        discharging && !mains_online
    }

    fn minute_of_day(&mut self) -> u16 {
        local_minute_of_day((self.now)())
    }

    fn other_cpu_percent(&mut self) -> Option<f64> {
        let sample = self.cpu_sample()?;
        self.samples.push_back(sample);
        while self.samples.len() > CPU_WINDOW {
            self.samples.pop_front();
        }
        let first = self.samples.front()?;
        let total = sample.total.checked_sub(first.total)?;
        if total == 0 {
            return None;
        }
        let busy = sample.busy.saturating_sub(first.busy);
        let own = sample.own.saturating_sub(first.own);
        Some(busy.saturating_sub(own) as f64 * 100.0 / total as f64)
    }
}

/// The entries of `dir`, none if it cannot be read.
fn read_dir(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok)
}

/// `(total, busy)` from `/proc/stat`'s `cpu` line: user nice system idle iowait irq softirq steal
/// (guest time is already in user).
fn machine_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|f| f.parse().unwrap_or(0)).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total, total.saturating_sub(idle)))
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the command name may hold spaces
/// and parentheses, so fields are counted after its last `)`).
pub(crate) fn process_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The idle time `loginctl show-session -p IdleHint -p IdleSinceHint` describes at `now`: zero if
/// not idle; `None` if it says nothing usable.
fn session_idle(text: &str, now: SystemTime) -> Option<Duration> {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=').map(str::trim));
    match field("IdleHint")? {
        "no" => Some(Duration::ZERO),
        "yes" => {
            let since: u64 = field("IdleSinceHint")?.parse().ok()?;
            let since = SystemTime::UNIX_EPOCH + Duration::from_micros(since);
            Some(now.duration_since(since).unwrap_or(Duration::ZERO))
        }
        _ => None,
    }
}

/// Minutes since local midnight at `t` (the C library's time zone: `TZ`, `/etc/localtime`).
fn local_minute_of_day(t: SystemTime) -> u16 {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let time = libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: `tm` is plain old data; localtime_r writes into it and reads only `time`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    let ok = !unsafe { libc::localtime_r(&time, &mut tm) }.is_null();
    if ok {
        u16::try_from(tm.tm_hour * 60 + tm.tm_min).unwrap_or(0)
    } else {
        u16::try_from((secs / 60) % (24 * 60)).unwrap_or(0)
    }
}

/// The volunteer's own pause (`shoal worker pause` / `resume`), shared by the control socket and
/// the policy task.
#[derive(Debug, Default)]
pub(crate) struct UserPause {
    paused: AtomicBool,
    changed: tokio::sync::Notify,
}

impl UserPause {
    /// Pauses (`true`) or resumes; the policy task applies it at once.
    pub(crate) fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}

/// Applies the policy to `peer` until the task is dropped: every [`POLL`], and at once when the
/// volunteer pauses or resumes.
pub(crate) async fn run(peer: Arc<Peer>, policy: Policy, probes: SystemProbes, user: Arc<UserPause>) {
    let mut probes = Some(probes);
    let mut last: Option<PauseReason> = None;
    loop {
        let reason = if user.is_paused() {
            Some(PauseReason::User)
        } else if let Some(mut p) = probes.take() {
            // Reading probes may block (a file system, `loginctl`): off the async threads.
            let policy = policy.clone();
            match tokio::task::spawn_blocking(move || (decide(&policy, &mut p), p)).await {
                Ok((reason, p)) => {
                    probes = Some(p);
                    reason
                }
                Err(_) => return,
            }
        } else {
            return;
        };
        if reason != last {
            match reason {
                Some(r) => info!(reason = r.name(), "donation paused: {r}"),
                None => info!("donating again"),
            }
            peer.set_paused(reason).await;
            last = reason;
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = user.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::fs::{File, FileTimes};

    use super::*;

    /// A machine whose every answer is set by the test.
    #[derive(Debug, Default)]
    struct Fake {
        idle: Option<Duration>,
        battery: bool,
        minute: u16,
        other: Option<f64>,
    }

    impl Probes for Fake {
        fn idle_for(&mut self) -> Option<Duration> {
            self.idle
        }
        fn on_battery(&mut self) -> bool {
            self.battery
        }
        fn minute_of_day(&mut self) -> u16 {
            self.minute
        }
        fn other_cpu_percent(&mut self) -> Option<f64> {
            self.other
        }
    }

    fn policy() -> Policy {
        Policy {
            run_when: RunWhen::Always,
            idle_after: Duration::from_secs(300),
            hours: vec![],
            max_other_cpu_percent: None,
        }
    }

    fn hm(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    #[test]
    fn always_with_no_other_setting_never_pauses() {
        let mut m = Fake { idle: Some(Duration::ZERO), battery: true, other: Some(100.0), ..Fake::default() };
        assert_eq!(decide(&policy(), &mut m), None);
    }

    #[test]
    fn idle_pauses_while_the_machine_is_used_or_on_battery_and_resumes_when_that_clears() {
        let p = Policy { run_when: RunWhen::Idle, ..policy() };
        let mut m = Fake { idle: Some(Duration::from_secs(10)), ..Fake::default() };
        assert_eq!(decide(&p, &mut m), Some(PauseReason::NotIdle));
        m.idle = Some(Duration::from_secs(301));
        assert_eq!(decide(&p, &mut m), None);
        m.battery = true;
        assert_eq!(decide(&p, &mut m), Some(PauseReason::OnBattery));
        m.battery = false;
        m.idle = None;
        assert_eq!(decide(&p, &mut m), None, "no way to tell: counts as idle");
    }

    #[test]
    fn hours_windows_including_one_wrapping_midnight() {
        let night: HoursWindow = "22:00-07:00".parse().unwrap();
        for (t, inside) in [
            (hm(22, 0), true),
            (hm(23, 59), true),
            (0, true),
            (hm(6, 59), true),
            (hm(7, 0), false),
            (hm(12, 0), false),
        ] {
            assert_eq!(night.contains(t), inside, "{night} at {t}");
        }
        let lunch: HoursWindow = "12:00-13:30".parse().unwrap();
        assert!(lunch.contains(hm(12, 0)) && lunch.contains(hm(13, 29)) && !lunch.contains(hm(13, 30)));
        assert!(!lunch.contains(hm(11, 59)));
        let all: HoursWindow = "00:00-24:00".parse().unwrap();
        assert!(all.contains(0) && all.contains(hm(23, 59)));
        assert_eq!(lunch.to_string(), "12:00-13:30");
        for bad in ["22-07", "25:00-07:00", "12:60-13:00", "noon", "12:00"] {
            let e = bad.parse::<HoursWindow>().unwrap_err();
            assert!(e.contains("HH:MM-HH:MM"), "{bad}: {e}");
        }

        let p = Policy { hours: vec![night, lunch], ..policy() };
        let mut m = Fake { minute: hm(3, 0), ..Fake::default() };
        assert_eq!(decide(&p, &mut m), None);
        m.minute = hm(12, 15);
        assert_eq!(decide(&p, &mut m), None);
        m.minute = hm(9, 0);
        assert_eq!(decide(&p, &mut m), Some(PauseReason::OutsideHours));
        m.minute = hm(22, 30);
        assert_eq!(decide(&p, &mut m), None, "the clock moved into the window");
    }

    #[test]
    fn a_busy_machine_pauses_and_resumes_below_the_threshold() {
        let p = Policy { max_other_cpu_percent: Some(50), ..policy() };
        let mut m = Fake { other: None, ..Fake::default() };
        assert_eq!(decide(&p, &mut m), None, "not known yet");
        m.other = Some(80.0);
        assert_eq!(decide(&p, &mut m), Some(PauseReason::MachineBusy));
        m.other = Some(20.0);
        assert_eq!(decide(&p, &mut m), None);
    }

    #[test]
    fn reasons_win_in_order_hours_then_battery_then_input_then_cpu() {
        let p = Policy {
            run_when: RunWhen::Idle,
            hours: vec!["01:00-02:00".parse().unwrap()],
            max_other_cpu_percent: Some(10),
            ..policy()
        };
        let mut m = Fake { idle: Some(Duration::ZERO), battery: true, minute: hm(5, 0), other: Some(90.0) };
        assert_eq!(decide(&p, &mut m), Some(PauseReason::OutsideHours));
        m.minute = hm(1, 30);
        assert_eq!(decide(&p, &mut m), Some(PauseReason::OnBattery));
        m.battery = false;
        assert_eq!(decide(&p, &mut m), Some(PauseReason::NotIdle));
        m.idle = Some(Duration::from_secs(3600));
        assert_eq!(decide(&p, &mut m), Some(PauseReason::MachineBusy));
        m.other = Some(5.0);
        assert_eq!(decide(&p, &mut m), None);
    }

    fn supply(root: &Path, name: &str, files: &[(&str, &str)]) {
        let dir = root.join("sys/class/power_supply").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, text) in files {
            std::fs::write(dir.join(f), format!("{text}\n")).unwrap();
        }
    }

    #[test]
    fn power_supply_directories_for_ac_battery_and_none() {
        let root = tempfile::tempdir().unwrap();
        let mut probes = SystemProbes::at(root.path(), false);
        assert!(!probes.on_battery(), "no power supply directory: a desktop on AC");
        std::fs::create_dir_all(root.path().join("sys/class/power_supply")).unwrap();
        assert!(!probes.on_battery(), "no entries: on AC");
        supply(root.path(), "BAT0", &[("type", "Battery"), ("status", "Discharging")]);
        assert!(probes.on_battery(), "a discharging battery, no mains");
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "0")]);
        assert!(probes.on_battery(), "mains present but offline");
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        assert!(!probes.on_battery(), "mains online");
        supply(root.path(), "AC", &[("type", "Mains"), ("online", "0")]);
        supply(root.path(), "BAT0", &[("type", "Battery"), ("status", "Charging")]);
        assert!(!probes.on_battery(), "a charging battery");
        supply(root.path(), "BAT0", &[("type", "Battery"), ("status", "Full")]);
        assert!(!probes.on_battery());
    }

    fn touch(path: &Path, ago: Duration) {
        let t = SystemTime::now() - ago;
        let f = File::options().create(true).truncate(false).write(true).open(path).unwrap();
        f.set_times(FileTimes::new().set_accessed(t).set_modified(t)).unwrap();
    }

    #[test]
    fn idle_time_is_the_age_of_the_newest_input_device_or_terminal_access() {
        let root = tempfile::tempdir().unwrap();
        let mut probes = SystemProbes::at(root.path(), false);
        assert_eq!(probes.idle_for(), None, "no input devices, no loginctl: cannot tell");
        let input = root.path().join("dev/input");
        let pts = root.path().join("dev/pts");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::create_dir_all(&pts).unwrap();
        // A terminal alone does not show a desktop user.
        touch(&pts.join("0"), Duration::from_secs(5));
        assert_eq!(probes.idle_for(), None);
        touch(&input.join("event0"), Duration::from_secs(600));
        touch(&input.join("event1"), Duration::from_secs(900));
        touch(&input.join("mice"), Duration::ZERO);
        touch(&pts.join("0"), Duration::from_secs(1200));
        let idle = probes.idle_for().unwrap();
        assert!(idle >= Duration::from_secs(599) && idle < Duration::from_secs(610), "{idle:?}");
        // Someone types in a terminal.
        touch(&pts.join("0"), Duration::from_secs(30));
        let idle = probes.idle_for().unwrap();
        assert!(idle >= Duration::from_secs(29) && idle < Duration::from_secs(40), "{idle:?}");
        // And moves the mouse.
        touch(&input.join("event1"), Duration::ZERO);
        assert!(probes.idle_for().unwrap() < Duration::from_secs(5));

        let p = Policy { run_when: RunWhen::Idle, idle_after: Duration::from_secs(60), ..policy() };
        assert_eq!(decide(&p, &mut probes), Some(PauseReason::NotIdle));
        touch(&input.join("event1"), Duration::from_secs(120));
        touch(&pts.join("0"), Duration::from_secs(120));
        assert_eq!(decide(&p, &mut probes), None, "idle for two minutes");
    }

    #[test]
    fn loginctl_idle_hints_are_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(session_idle("IdleHint=no\nIdleSinceHint=0\n", now), Some(Duration::ZERO));
        let since = (1_000_000u64 - 420) * 1_000_000;
        let text = format!("IdleHint=yes\nIdleSinceHint={since}\n");
        assert_eq!(session_idle(&text, now), Some(Duration::from_secs(420)));
        assert_eq!(session_idle("", now), None);
    }

    fn write_cpu(root: &Path, total_busy: (u64, u64), own: u64) {
        let (total, busy) = total_busy;
        let proc_dir = root.join("proc/self");
        std::fs::create_dir_all(&proc_dir).unwrap();
        // user nice system idle iowait irq softirq steal guest guest_nice
        let idle = total - busy;
        let stat = format!("cpu  {busy} 0 0 {} {} 0 0 0 0 0\ncpu0 1 2 3 4\n", idle - idle / 10, idle / 10);
        std::fs::write(root.join("proc/stat"), stat).unwrap();
        let me = format!(
            "42 (shoal worker) S 1 42 42 0 -1 4194304 100 0 0 0 {} {} 0 0 39 19 9 0",
            own / 2,
            own - own / 2
        );
        std::fs::write(proc_dir.join("stat"), me).unwrap();
    }

    #[test]
    fn other_processes_share_of_the_cpu_excludes_our_own_over_a_sliding_window() {
        let root = tempfile::tempdir().unwrap();
        let mut probes = SystemProbes::at(root.path(), false);
        assert_eq!(probes.other_cpu_percent(), None, "no /proc");
        write_cpu(root.path(), (1000, 500), 100);
        assert_eq!(probes.other_cpu_percent(), None, "one sample");
        // 400 ticks pass; 300 busy, of which 200 ours: others used 100 / 400 = 25 %.
        write_cpu(root.path(), (1400, 800), 300);
        let share = probes.other_cpu_percent().unwrap();
        assert!((share - 25.0).abs() < 0.01, "{share}");
        let p = Policy { max_other_cpu_percent: Some(20), ..policy() };
        // Others keep 25 % (within the window): busy.
        write_cpu(root.path(), (1800, 1100), 500);
        assert_eq!(decide(&p, &mut probes), Some(PauseReason::MachineBusy));
        // Then others go quiet; once the busy samples leave the window the share drops.
        let mut t = (1800, 1100, 500);
        let mut last = None;
        for _ in 0..CPU_WINDOW {
            t = (t.0 + 400, t.1 + 200, t.2 + 200);
            write_cpu(root.path(), (t.0, t.1), t.2);
            last = decide(&p, &mut probes);
        }
        assert_eq!(last, None, "others idle: donating again");
        assert_eq!(process_cpu("7 (a) b) c) R 1 2 3 4 5 6 7 8 9 10 11 12 13"), Some(11 + 12));
    }
}
