//! A straggler: a worker frozen with SIGSTOP while it holds a task. Its lease
//! lapses and the task is handed to another worker, the update completes
//! without it, and when it wakes up (SIGCONT) its late result is turned
//! away. The job ends bit-identical to the local trainer.

use std::time::Duration;

use rwp_integration_tests::cluster::{
    chaos_long, connect, data_dir, export, start_worker, submit, wait_for_step, wait_for_success, ServerCommand,
};
use rwp_integration_tests::in_process::{http_get, sample};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_spec::Method;

const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_loses_its_lease_and_the_step_completes() {
    let updates = if chaos_long() { 60 } else { 16 };
    let (tmp, dir) = data_dir();
    let log = tmp.path().join("server.log");
    let (server, addr) =
        ServerCommand::new(&dir, "127.0.0.1:0").log_to(&log).extra_flags(&["--metrics-listen", "127.0.0.1:0"]).start();
    let metrics = server.announced("rwp-server metrics on ");
    let straggler = start_worker(addr, "straggler");
    let mut client = connect(addr).await;
    let spec = small_job(41, Method::MArwp, updates);
    let id = submit(&mut client, "straggler", &spec).await;
    wait_for_step(&mut client, &id, 2, TIMEOUT).await;
    // Stopped, the straggler must hold a task; alone it almost always does,
    // but between a push and its next lease it holds none: then it goes on
    // for a moment and is stopped again.
    for _ in 0..100 {
        straggler.signal("STOP");
        if sample(&http_get(metrics, "/metrics").await, "rwp_leased_tasks").is_some_and(|n| n >= 1.0) {
            break;
        }
        straggler.signal("CONT");
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    let frozen_at = rwp_integration_tests::cluster::job(&mut client, &id).await.step;
    let _helper = start_worker(addr, "helper");
    wait_for_step(&mut client, &id, frozen_at + 3, TIMEOUT).await;
    straggler.signal("CONT");
    wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_bit_identical("straggler", &export(&mut client, &id).await, &spec);

    let text = std::fs::read_to_string(&log).unwrap();
    let reissued = text.lines().filter(|l| l.contains("lease expired, re-issuing")).count();
    assert!(reissued >= 1, "the frozen worker's lease was re-issued:\n{text}");
    println!("chaos: straggler frozen at step {frozen_at}; {reissued} lease(s) re-issued; bit-identical");
}
