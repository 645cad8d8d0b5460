//! The governor: a CPU share makes a task compute only that part of the time, without failing it
//! for the time it sleeps; a halt ends running tasks with `Halted` and refuses new ones.

use std::time::{Duration, Instant};

use crate::job;
use shoal_sandbox::{FailureKind, Limits, Sandbox, SandboxConfig};

const LOOPING: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

fn limits(deadline: Duration) -> Limits {
    Limits { fuel: u64::MAX / 2, deadline, ..Limits::default() }
}

#[test]
fn a_throttled_task_sleeps_three_quarters_of_the_time_and_its_deadline_counts_only_running() {
    let sb = Sandbox::new(SandboxConfig { max_concurrent_tasks: 2, ..SandboxConfig::default() }).unwrap();
    let m = sb.load(LOOPING.as_bytes()).unwrap();
    let l = limits(Duration::from_millis(300));
    let free = sb.run(&m, &[], &[], &l).unwrap_err();
    assert_eq!(free.kind, FailureKind::Deadline { limit: l.deadline });
    sb.governor().set_cpu_percent(25);
    let throttled = sb.run(&m, &[], &[], &l).unwrap_err();
    assert_eq!(throttled.kind, FailureKind::Deadline { limit: l.deadline });
    println!("300 ms of running: {:?} unthrottled, {:?} at 25 %", free.wall, throttled.wall);
    // 300 ms of computing at 25 % takes about 1.2 s of wall time.
    assert!(free.wall < Duration::from_millis(900), "{:?}", free.wall);
    assert!(throttled.wall >= Duration::from_millis(900), "{:?}", throttled.wall);
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
