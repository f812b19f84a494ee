//! Helpers shared by the CLI tests: run the `rwp` binary with a deadline and
//! check that its errors are one clean line.

#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `rwp` binary built for these tests.
pub fn rwp_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rwp")
}

/// The environment variables of the CLI: the tests' own settings only.
const RWP_VARIABLES: [&str; 9] = [
    "RWP_SERVER",
    "RWP_TLS_CA",
    "RWP_TLS_CERT",
    "RWP_TLS_KEY",
    "RWP_TLS_DOMAIN",
    "RWP_TOKEN",
    "RWP_TOKEN_FILE",
    "RWP_RETRIES",
    "RWP_SERVER_CONFIG",
];

/// Runs `rwp args...` with no server configured by the environment, killing
/// it after `deadline`; returns its output and how long it took.
pub fn rwp_within(args: &[&str], deadline: Duration) -> (Output, Duration) {
    rwp_with_env(args, &[], deadline)
}

/// [`rwp_within`] with the environment variables `vars` set.
pub fn rwp_with_env(args: &[&str], vars: &[(&str, &str)], deadline: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut command = Command::new(rwp_bin());
    for name in RWP_VARIABLES {
        command.env_remove(name);
    }
    let mut child = command
        .args(args)
        .envs(vars.iter().copied())
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rwp");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).unwrap();
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            child.kill().unwrap();
            panic!("rwp {args:?} still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output { status, stdout: out_reader.join().unwrap(), stderr: err_reader.join().unwrap() };
    (output, start.elapsed())
}

/// Runs `rwp args...` (30 s at most).
pub fn rwp(args: &[&str]) -> Output {
    rwp_within(args, Duration::from_secs(30)).0
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that `o` failed with `code` and one `error: ...` line on stderr,
/// without a panic or a backtrace; returns that line.
pub fn assert_clean_error(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit status of a failure; stderr:\n{err}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "stack backtrace", "internal error"] {
        assert!(!err.contains(bad), "stderr mentions {bad:?}:\n{err}");
    }
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_owned()
}

/// Writes `text` to `dir/name` and returns its path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

pub mod mock;
