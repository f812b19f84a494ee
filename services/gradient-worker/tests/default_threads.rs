//! A worker without a `threads` setting computes with as many libtorch
//! threads as the CPUs it may use (here: an affinity mask of one CPU), not
//! the machine's cores, and says so at start; a setting wins.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `rwp-worker` (through `launcher`, if any) against a port where no
/// server listens, and returns its "worker starting" log line.
fn starting_line(launcher: &[&str], flags: &[&str]) -> String {
    let worker = env!("CARGO_BIN_EXE_rwp-worker");
    let (program, args): (&str, Vec<&str>) = match launcher.split_first() {
        Some((first, rest)) => (first, rest.iter().copied().chain([worker]).collect()),
        None => (worker, Vec::new()),
    };
    let mut child = Command::new(program)
        .args(args)
        .args(["--server", "http://127.0.0.1:9", "--device", "cpu", "--name", "threads-test"])
        .args(flags)
        .env("RUST_LOG", "info")
        .env_remove("RWP_THREADS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rwp-worker starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        if line.contains("worker starting") {
            found = Some(line);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found.expect("the worker logs its start")
}

#[test]
fn without_a_setting_the_worker_uses_the_cpus_it_may_use() {
    let line = starting_line(&["taskset", "-c", "0"], &[]);
    assert!(line.contains("threads=1"), "{line}");
    assert!(line.contains("CPUs this process may use"), "{line}");
}

#[test]
fn the_threads_setting_wins() {
    let line = starting_line(&["taskset", "-c", "0"], &["--threads", "3"]);
    assert!(line.contains("threads=3"), "{line}");
    assert!(line.contains("the threads setting"), "{line}");
}
