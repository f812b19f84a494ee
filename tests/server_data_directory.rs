//! `rwp-server` checks its data directory before it listens: a directory it
//! cannot use, or one another server holds, is reported in one line naming
//! it (exit status 1) and nothing is announced as listening. And
//! `--listen localhost:PORT` works.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{connect, data_dir, start_server, ServerCommand};
use rwp_proto::v1::ListJobsRequest;

/// Runs `rwp-server args` to its exit; panics if it is still running after
/// 60 s (it was meant to refuse to start).
fn run_to_exit(args: &[&str]) -> Output {
    let mut child =
        Command::new(binary("rwp-server")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("rwp-server {args:?} is still running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_says_another_server_holds_it() {
    let (_tmp, dir) = data_dir();
    let (_first, addr) = start_server(&dir, "127.0.0.1:0");
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stdout.contains("listening on"), "it said it listens before it failed: {stdout}");
    let want = format!("another rwp-server holds data directory {}", dir.display());
    assert!(stderr.contains(&want), "{stderr}");
    // The first server is untouched.
    connect(addr).await.list_jobs(ListJobsRequest::default()).await.unwrap();
}

#[test]
fn a_data_directory_it_cannot_create_is_reported_before_it_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let inside = file.join("data");
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--data-dir", inside.to_str().unwrap()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stdout.contains("listening on"), "it said it listens before it failed: {stdout}");
    assert!(stderr.contains(&format!("cannot create {}", inside.display())), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_takes_localhost() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = ServerCommand::new(&dir, "localhost:0").start();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    connect(addr).await.list_jobs(ListJobsRequest::default()).await.unwrap();
}
