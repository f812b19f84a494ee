//! Tasks reach workers on one stream per worker, and a lease is bound to
//! its stream: a worker killed while it holds a task has the task re-issued
//! as soon as its stream breaks, long before the lease would expire, and
//! the job still trains to the local trainer's bits. Open streams do not
//! hold up a server that is told to stop.

use std::process::Command;
use std::time::{Duration, Instant};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server, start_worker, start_worker_in, submit, wait_for_step, wait_for_success,
    ServerCommand,
};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_spec::Method;

/// Far longer than the test may take: only the stream can re-issue in time.
const LEASE_TIMEOUT_MS: &str = "120000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_has_its_task_reissued_at_once_not_at_lease_expiry() {
    let (_tmp, dir) = data_dir();
    let flags = ["--lease-timeout-ms", LEASE_TIMEOUT_MS, "--checkpoint-every", "2", "--torch-threads", "1"];
    let (_server, addr) = ServerCommand::new(&dir, "127.0.0.1:0").flags(&flags).start();
    let url = format!("http://{addr}");
    // It kills itself as it starts its fourth gradient task, lease in hand.
    let mut doomed = start_worker_in(&url, "doomed", &[], None, &[("RWP_TEST_FAULTS", "gradient:kill:after=3")]);
    let _steady = start_worker(addr, "steady");
    let mut client = connect(addr).await;
    let spec = small_job(71, Method::MArwp, 12);
    let id = submit(&mut client, "streamed", &spec).await;

    let started = Instant::now();
    let status = doomed.wait_status(Duration::from_secs(120)).expect("the worker kills itself");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status:?}");
    let killed = started.elapsed();
    let done = wait_for_success(&mut client, &id, Duration::from_secs(90)).await;
    let after_kill = started.elapsed() - killed;
    assert_eq!(done.step, 12);
    assert!(after_kill < Duration::from_secs(60), "re-issued at once, not at the 120 s lease expiry: {after_kill:?}");
    assert_bit_identical("a worker killed mid-task", &export(&mut client, &id).await, &spec);

    let logs = Command::new(binary("rwp")).args(["--server", &url, "logs", &id]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.lines().any(|l| l.contains("worker doomed's task stream closed while it held lease")),
        "the log says why the task went elsewhere:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_told_to_stop_mid_job_stops_promptly_with_workers_streaming() {
    let (_tmp, dir) = data_dir();
    let (mut server, addr) = start_server(&dir, "127.0.0.1:0");
    let _workers: Vec<_> = (0..2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let id = submit(&mut client, "interrupted", &small_job(72, Method::MArwp, 400)).await;
    wait_for_step(&mut client, &id, 3, Duration::from_secs(60)).await;
    let told = Instant::now();
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0), "rwp-server exits cleanly on SIGTERM");
    assert!(told.elapsed() < Duration::from_secs(10), "stopped in {:?}", told.elapsed());
}
