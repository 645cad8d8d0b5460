//! `max_cpu_percent` enforced by the kernel: a cgroup v2 `cpu.max` on the worker process, where
//! the worker may use one; otherwise the sandbox duty-cycles the task threads (see
//! `shoal_sandbox::Governor`).
//!
//! The worker may use one when its own cgroup (from `/proc/self/cgroup`, line `0::PATH`) is
//! delegated to it — e.g. a systemd service with `Delegate=yes` — and it is the only process in
//! it: it then creates the child `shoal-worker`, moves itself there (cgroup v2 lets only leaves
//! hold processes), enables the `cpu` controller for its cgroup's children and writes
//! `QUOTA PERIOD` to the child's `cpu.max`, QUOTA = cores × percent % of PERIOD (100 ms): the same
//! total the duty cycle gives (each task thread `percent` % of the time), but counted by the
//! kernel for the whole process (its networking included) and exact over each period.
//!
//! Invariants: any step that fails undoes the earlier ones (the process moves back, the child is
//! removed) and the caller falls back to duty-cycling; nothing here can stop the worker.

use std::path::{Path, PathBuf};

/// The cgroup period written to `cpu.max`, in microseconds.
const PERIOD_US: u64 = 100_000;
/// The child cgroup the worker moves into.
const CHILD: &str = "shoal-worker";

/// Where the cgroup v2 hierarchy and this process's membership are read (tests use fake files).
#[derive(Debug, Clone)]
pub(crate) struct CgroupFs {
    /// The cgroup v2 mount (`/sys/fs/cgroup`).
    pub(crate) root: PathBuf,
    /// This process's membership (`/proc/self/cgroup`).
    pub(crate) self_cgroup: PathBuf,
}

impl CgroupFs {
    pub(crate) fn system() -> CgroupFs {
        CgroupFs { root: PathBuf::from("/sys/fs/cgroup"), self_cgroup: PathBuf::from("/proc/self/cgroup") }
    }
}

/// `cpu.max`'s line for `cores` task threads at `percent` % each.
fn cpu_max(cores: u32, percent: u32) -> String {
    let quota = u64::from(cores.max(1)) * u64::from(percent.clamp(1, 100)) * PERIOD_US / 100;
    format!("{} {PERIOD_US}", quota.max(1000))
}

/// Caps process `pid` at `cores` × `percent` % of a CPU with cgroup v2, if it may; returns the
/// cgroup it now runs in, or why not (for the log).
pub(crate) fn limit(fs: &CgroupFs, pid: u32, cores: u32, percent: u32) -> Result<PathBuf, String> {
    let membership = std::fs::read_to_string(&fs.self_cgroup)
        .map_err(|e| format!("cannot read {}: {e}", fs.self_cgroup.display()))?;
    let rel = membership
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("not on a cgroup v2 hierarchy (no `0::` line in /proc/self/cgroup)")?;
    let own = fs.root.join(rel.trim().trim_start_matches('/'));
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let controllers = read(&own.join("cgroup.controllers"))?;
    if !controllers.split_whitespace().any(|c| c == "cpu") {
        return Err(format!("the cpu controller is not available in {}", own.display()));
    }
    let procs = read(&own.join("cgroup.procs"))?;
    let others: Vec<&str> = procs.split_whitespace().filter(|p| *p != pid.to_string()).collect();
    if !others.is_empty() {
        return Err(format!(
            "{} holds other processes too (not delegated to the worker alone)",
            own.display()
        ));
    }
    let child = own.join(CHILD);
    std::fs::create_dir_all(&child).map_err(|e| format!("cannot create {}: {e}", child.display()))?;
    let undo = |why: String| {
        let _ = std::fs::write(own.join("cgroup.procs"), pid.to_string());
        let _ = std::fs::remove_dir(&child);
        why
    };
    let write = |p: PathBuf, text: &str| {
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
    };
    write(child.join("cgroup.procs"), &pid.to_string()).map_err(undo)?;
    write(own.join("cgroup.subtree_control"), "+cpu").map_err(undo)?;
    write(child.join("cpu.max"), &cpu_max(cores, percent)).map_err(undo)?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    /// A fake hierarchy where this process is alone in `/system.slice/shoal.service`.
    fn fake(procs: &str, controllers: &str) -> (tempfile::TempDir, CgroupFs, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("cg/system.slice/shoal.service");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(own.join("cgroup.procs"), procs).unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        let self_cgroup = dir.path().join("self_cgroup");
        std::fs::write(&self_cgroup, "0::/system.slice/shoal.service\n").unwrap();
        let fs = CgroupFs { root: dir.path().join("cg"), self_cgroup };
        (dir, fs, own)
    }

    #[test]
    fn a_delegated_cgroup_gets_a_child_with_the_quota_and_the_process_moves_there() {
        let (_dir, fs, own) = fake("4242\n", "cpuset cpu io memory pids\n");
        let child = limit(&fs, 4242, 2, 25).unwrap();
        assert_eq!(child, own.join("shoal-worker"));
        assert_eq!(std::fs::read_to_string(child.join("cgroup.procs")).unwrap(), "4242");
        assert_eq!(std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(), "+cpu");
        // Two task threads at 25 % each: half a CPU.
        assert_eq!(std::fs::read_to_string(child.join("cpu.max")).unwrap(), "50000 100000");
        assert_eq!(cpu_max(1, 25), "25000 100000");
        assert_eq!(cpu_max(4, 100), "400000 100000");
    }

    #[test]
    fn otherwise_it_says_why_and_leaves_nothing_behind() {
        let (_dir, fs, own) = fake("4242\n77\n", "cpu memory\n");
        let e = limit(&fs, 4242, 1, 25).unwrap_err();
        assert!(e.contains("other processes"), "{e}");
        assert!(!own.join("shoal-worker").exists());
        let (_dir, fs, _) = fake("4242\n", "memory pids\n");
        assert!(limit(&fs, 4242, 1, 25).unwrap_err().contains("cpu controller is not available"));
        let (dir, mut fs, _) = fake("4242\n", "cpu\n");
        std::fs::write(&fs.self_cgroup, "1:cpu:/\n").unwrap();
        assert!(limit(&fs, 4242, 1, 25).unwrap_err().contains("not on a cgroup v2 hierarchy"));
        fs.self_cgroup = dir.path().join("missing");
        assert!(limit(&fs, 4242, 1, 25).unwrap_err().contains("cannot read"));
        // A step that fails is undone: the process goes back, the child goes away.
        let (_dir, fs, own) = fake("4242\n", "cpu\n");
        std::fs::remove_file(own.join("cgroup.subtree_control")).unwrap();
        std::fs::create_dir(own.join("cgroup.subtree_control")).unwrap();
        let e = limit(&fs, 4242, 1, 25).unwrap_err();
        assert!(e.contains("cannot write") && e.contains("subtree_control"), "{e}");
        assert_eq!(std::fs::read_to_string(own.join("cgroup.procs")).unwrap(), "4242");
    }
}
