//! The governor: a CPU share makes a task compute only that part of the time, without failing it
//! for the time it sleeps; a halt ends running tasks with `Halted` and refuses new ones.

use std::time::{Duration, Instant};

use crate::job;
use shoal_sandbox::{FailureKind, Limits, Sandbox, SandboxConfig};

const LOOPING: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

fn limits(deadline: Duration) -> Limits {
    Limits { fuel: u64::MAX / 2, deadline, ..Limits::default() }
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `m` on a fresh thread: its failure kind, wall time and the thread's CPU share (percent).
fn run_measured(
    sb: &Sandbox,
    m: &std::sync::Arc<shoal_sandbox::TaskModule>,
    l: &Limits,
) -> (FailureKind, Duration, f64) {
    let (sb, m, l) = (sb.clone(), m.clone(), l.clone());
    std::thread::spawn(move || {
        let (c0, t0) = (thread_cpu(), Instant::now());
        let f = sb.run(&m, &[], &[], &l).unwrap_err();
        let (cpu, wall) = (thread_cpu() - c0, t0.elapsed());
        (f.kind, wall, cpu.as_secs_f64() / wall.as_secs_f64() * 100.0)
    })
    .join()
    .unwrap()
}

#[test]
fn a_throttled_task_computes_a_quarter_of_the_time_and_its_deadline_counts_only_running() {
    let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 2, ..SandboxConfig::default() }).unwrap();
    let m = sb.load(LOOPING.as_bytes()).unwrap();
    let l = limits(Duration::from_millis(400));
    let (kind, free_wall, free_share) = run_measured(&sb, &m, &l);
    assert_eq!(kind, FailureKind::Deadline { limit: l.deadline });
    sb.governor().set_cpu_percent(25);
    let (kind, wall, share) = run_measured(&sb, &m, &l);
    assert_eq!(kind, FailureKind::Deadline { limit: l.deadline }, "the sleeps do not count against it");
    println!(
        "400 ms of running: unthrottled {free_wall:?} at {free_share:.0} % CPU; at 25 %: {wall:?} at {share:.0} % CPU"
    );
    assert!(wall >= l.deadline, "{wall:?}");
    assert!((5.0..=40.0).contains(&share), "the thread computed {share:.0} % of the time at 25 %");
    // A task that finishes gives the same output and fuel throttled or not.
    let spin = sb.load(&job("spin")).unwrap();
    let a = sb.run(&spin, &[], &["1000"], &Limits::default()).unwrap();
    sb.governor().set_cpu_percent(100);
    let b = sb.run(&spin, &[], &["1000"], &Limits::default()).unwrap();
    assert_eq!((a.output, a.fuel_used), (b.output, b.fuel_used));
}

#[test]
fn a_halt_ends_running_tasks_and_refuses_new_ones_until_lifted() {
    let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 2, ..SandboxConfig::default() }).unwrap();
    for percent in [100, 10] {
        sb.governor().set_cpu_percent(percent);
        let m = sb.load(LOOPING.as_bytes()).unwrap();
        let sb2 = sb.clone();
        let run = std::thread::spawn(move || sb2.run(&m, &[], &[], &limits(Duration::from_secs(30))));
        std::thread::sleep(Duration::from_millis(300));
        let halted_at = Instant::now();
        sb.governor().halt(true);
        let f = run.join().unwrap().unwrap_err();
        assert_eq!(f.kind, FailureKind::Halted, "at {percent} %");
        assert!(halted_at.elapsed() < Duration::from_secs(2), "at {percent} %: {:?}", halted_at.elapsed());
        assert!(!f.kind.is_deterministic(), "another peer may run it");
        let echo = sb.load(&job("echo")).unwrap();
        assert_eq!(sb.run(&echo, &[b"x"], &[], &Limits::default()).unwrap_err().kind, FailureKind::Halted);
        sb.governor().halt(false);
        assert_eq!(sb.run(&echo, &[b"x"], &[], &Limits::default()).unwrap().output, b"x");
    }
}
